"""A person at the staff inbox, in a real browser (Playwright driving Debian's chromium):
sign in, see a patient's SMS arrive live, open it, reply, watch the tick reach delivered.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hub.enums import Role
from tests.browser import ARTIFACTS, assert_accessible, sign_in_page
from tests.stack import Stack
from tests.staff_helpers import PASSWORD

pytestmark = pytest.mark.slow

LIVE_WITHIN_S = 1.0


async def test_live_inbox_reply_and_delivery_tick(stack: Stack, browser: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await stack.add_staff("nia.nurse@demo-clinic.example.org", role=Role.ADMIN)
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    await sign_in_page(page, stack.hub_url, "nia.nurse@demo-clinic.example.org", PASSWORD)
    # Wait for the live connection before the patient writes, so the test measures delivery.
    await page.wait_for_function("() => window.hubSocketConnected === true", timeout=10_000)

    await stack.text_from_patient("Hi, can I get my flu shot this week?")
    answered = time.monotonic()
    row = page.locator("#conversation-list li[data-conversation-id]").first
    await row.wait_for(state="visible", timeout=LIVE_WITHIN_S * 1000)
    live_after = time.monotonic() - answered
    assert live_after < LIVE_WITHIN_S
    assert "flu shot" in await row.inner_text()
    assert (await page.evaluate("document.title")).startswith("(1)")
    await assert_accessible(page)
    await page.screenshot(path=str(ARTIFACTS / "inbox.png"), full_page=True)

    await row.locator("a").click()
    await page.wait_for_selector("#reply-body")
    await page.get_by_label("Reply to the patient").fill("Yes: Thursday 10:00 works. See you then.")
    await page.get_by_role("button", name="Send").click()
    tick = page.locator("#thread li.outbound .tick").last
    await tick.wait_for(timeout=10_000)
    await page.wait_for_function(
        "() => [...document.querySelectorAll('#thread li.outbound .tick')]"
        ".some(t => t.dataset.status === 'delivered')",
        timeout=20_000,
    )
    await assert_accessible(page)
    await page.screenshot(path=str(ARTIFACTS / "conversation.png"), full_page=True)

    sent = [m for m in stack.fake.messages if m.to == stack.patient_number]
    assert [m.body for m in sent] == ["Yes: Thursday 10:00 works. See you then."]
    assert errors == []
    await page.close()
