"""A care coordinator at the journey page, in a real browser (Playwright driving Debian's
chromium) against a real `hub serve` and `hub worker`: patients are enrolled while the page is
open, the tick and the worker send their step, and the funnel redraws by itself. The screenshot
goes to test-artifacts/journeys.png and docs/screenshots/journeys.png."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.enums import MessageStatus, Role
from hub.inbox import actions
from hub.inbox.models import Message
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.templates.actions import do_seed_templates
from tests.browser import ARTIFACTS, assert_accessible, sign_in_page
from tests.stack import Stack, eventually
from tests.staff_helpers import PASSWORD

pytestmark = pytest.mark.slow

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "screenshots" / "journeys.png"
SYSTEM = Actor.system("test")
FOLLOW_UP = """\
key: visit_follow_up
name: Visit follow-up
purpose: care
anchor: enrollment
steps:
  - {id: thanks, offset: +0h, template: visit_follow_up, channels: [sms]}
  - {id: check_in, offset: +7d, template: visit_follow_up, channels: [sms],
     conditions: [only_if_no_reply]}
"""
NAMES = ["Avery Sample", "Blake Placeholder", "Casey Fictional", "Devon Testperson"]


async def enroll(stack: Stack, n: int) -> None:
    patient_id = await actions.do_create_patient(
        stack.db,
        stack.ring,
        SYSTEM,
        NewPatient(name=NAMES[n - 1], phone=f"+155501001{n:02d}", verified=True),
        region="US",
    )
    await journeys.do_enroll(stack.db, SYSTEM, "visit_follow_up", patient_id)


def cell(column: str) -> str:
    return f"#journey-visit_follow_up tbody tr:first-child td[data-column='{column}']"


async def test_the_funnel_redraws_live_as_the_worker_sends(stack: Stack, browser: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await do_seed_templates(stack.db)
    await journeys.do_install_journey(stack.db, SYSTEM, FOLLOW_UP, "follow_up.yaml")
    await stack.add_staff("cole.coord@demo-clinic.example.org", role=Role.COORDINATOR)
    stack.fake.script("+15550100104", outcomes=[["sent", "undelivered:30007"]])
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    await sign_in_page(page, stack.hub_url, "cole.coord@demo-clinic.example.org", PASSWORD)
    await page.goto(f"{stack.hub_url}/journeys")
    await page.wait_for_function("() => window.hubJourneysLive === true", timeout=10_000)
    assert await page.inner_text(cell("sent")) == "0"
    await page.evaluate("() => { window.notReloaded = true; }")

    for n in range(1, 5):
        await enroll(stack, n)
    # serve's tick claims the steps, the worker sends them and reports progress: no reload.
    await page.wait_for_function(
        f"() => document.querySelector(\"{cell('sent')}\")?.textContent.trim() === '4'",
        timeout=30_000,
    )
    assert await page.evaluate("() => window.notReloaded === true")
    assert await page.inner_text(cell("enrolled")) == "4"
    bars = page.locator("#journey-visit_follow_up svg.step-chart").first.locator("rect.bar-sent")
    assert int(await bars.get_attribute("width") or 0) == 170  # every enrolled patient: full

    await stack.text_from_patient("Thank you, all good!", number="+15550100101")

    async def carrier_refused() -> bool:
        async with stack.db.reader() as session:
            statuses = (await session.scalars(select(Message.status))).all()
        return MessageStatus.UNDELIVERED in statuses

    await eventually(carrier_refused, "the carrier's refusal of Devon's message")
    await page.reload()  # replies and delivery reports are not progress events
    assert await page.inner_text(cell("replied")) == "1"
    assert await page.inner_text(cell("failed")) == "1"
    failures = await page.inner_text("#journey-visit_follow_up .failures")
    assert "the carrier filtered the message as spam [30007]: 1" in failures
    if "journey_drilldown" in stack.app.router.named_resources():  # once web/routes.py has it
        await page.locator(cell("replied")).locator("a").click()
        await page.wait_for_selector("table.patients-table")
        listed = await page.inner_text("table.patients-table")
        assert "Avery Sample" in listed and "••01" in listed and "5550100101" not in listed
        await page.go_back()
    await assert_accessible(page)
    await page.screenshot(path=str(ARTIFACTS / "journeys.png"), full_page=True)
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":  # else every run rewrote the docs' copy
        shutil.copyfile(ARTIFACTS / "journeys.png", SCREENSHOT)
    assert errors == []
    await page.close()
