"""Being the patient in the demo, in a real browser: from the sign-in page to the simulator,
a text goes to the clinic, the clinic's reply arrives by itself, and a call takes a key
press; at a laptop's and a phone's width, with axe-core (issue 17)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from hub.demo import DEMO_ADMIN_EMAIL
from tests.browser import assert_accessible
from tests.simulator_stack import browser_session, demo_hub, sign_in_as

pytestmark = pytest.mark.slow

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
AVERY = "+15550100101"


async def _fits(page: Any, width: int) -> None:
    wide = await page.evaluate("() => document.documentElement.scrollWidth")
    assert wide <= width, f"{wide}px wide at {width}px"


async def test_be_the_patient_from_the_sign_in_page(
    fresh_db_url: str, redis_url: str, aiohttp_server: Any, tmp_path: Path, browser: Any
) -> None:
    async with (
        demo_hub(fresh_db_url, redis_url, aiohttp_server, tmp_path) as hub,
        browser_session() as staff,
    ):
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{hub.url}/login")
        await page.get_by_role("button", name="Dana Demo (agent)").wait_for()
        await assert_accessible(page)
        await page.get_by_role("link", name="Be the patient").click()
        await page.wait_for_url("**/simulator")

        await page.get_by_label("Demo patient").select_option(AVERY)  # sends the picker
        await page.wait_for_url("**number=%2B15550100101**")
        await page.get_by_label("Text to the clinic").fill("Can I come at 4 instead?")
        await page.get_by_role("button", name="Send text").click()
        texts = page.locator(".sim-texts")
        await texts.get_by_text("Can I come at 4 instead?").wait_for()
        assert await page.get_by_label("Text to the clinic").input_value() == ""

        csrf = await sign_in_as(staff, hub.url, DEMO_ADMIN_EMAIL)
        listing = await (await staff.get(f"{hub.url}/api/conversations")).json()
        [row] = [r for r in listing["items"] if "Can I come at 4" in str(r.get("preview"))]
        answer = await staff.post(
            f"{hub.url}/api/conversations/{row['id']}/messages",
            json={"body": "Yes, 4pm works. See you then."},
            headers={"X-CSRF-Token": csrf},
        )
        assert answer.status < 300, await answer.text()
        # Nobody reloads: the poll brings the clinic's text in.
        await texts.get_by_text("Yes, 4pm works. See you then.").wait_for(timeout=30_000)

        mailed = await staff.post(
            f"{hub.url}/api/conversations/{row['id']}/messages",
            json={"body": "Here is the synthetic form to fill in.", "channel": "email"},
            headers={"X-CSRF-Token": csrf},
        )
        assert mailed.status < 300, await mailed.text()
        letter = page.locator(".sim-mail", has_text="Here is the synthetic form to fill in.")
        await letter.wait_for(timeout=30_000)
        await letter.get_by_text("Reply", exact=True).click()
        await letter.get_by_label("Your reply").fill("Done, thank you.")
        await letter.get_by_role("button", name="Send reply").click()
        await page.get_by_text("Delivered to the hub").wait_for()

        await page.get_by_role("button", name="Call the clinic").click()
        await page.get_by_text("Thank you for calling").first.wait_for()
        await page.get_by_role("button", name="Press 1").click()
        await page.get_by_text("You press 1").wait_for()
        await assert_accessible(page)
        await _fits(page, 1280)
        if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
            await page.screenshot(path=str(SCREENSHOTS / "simulator.png"), full_page=True)

        await page.set_viewport_size({"width": 390, "height": 844})
        await page.reload()
        await page.get_by_text("Yes, 4pm works. See you then.").wait_for()
        await assert_accessible(page)
        await _fits(page, 390)
        if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
            await page.evaluate("() => window.scrollTo(0, 0)")
            await page.screenshot(path=str(SCREENSHOTS / "simulator-phone.png"))
        await page.goto(f"{hub.url}/login")
        await assert_accessible(page)
        await _fits(page, 390)
        if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
            await page.screenshot(path=str(SCREENSHOTS / "login-demo.png"), full_page=True)
        assert errors == []
