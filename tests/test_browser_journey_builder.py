"""A care coordinator builds a three-step reminder journey in a real browser (Playwright driving
Debian's chromium, against a real `hub serve`): steps added in place by htmx, a preview that
shows the three rendered texts dated in the sample patient's zone, save; an edit makes version
2 while an existing enrollment keeps version 1; stop asks first, naming what it cancels. At
1280 wide and on a 390x844 phone, with axe-core. Screenshots: docs/screenshots/
journey-builder.png and journey-preview.png (HUB_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.enums import Role
from hub.inbox import actions
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.models import Enrollment
from hub.templates.actions import do_seed_templates
from tests.browser import assert_accessible, sign_in_page
from tests.stack import Stack
from tests.staff_helpers import PASSWORD

pytestmark = pytest.mark.slow

COORD = "cole.coord@demo-clinic.example.org"
SYSTEM = Actor.system("test")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
CHICAGO = ZoneInfo("America/Chicago")
VISIT_DAY = date.today() + timedelta(days=30)
STEPS = [
    # (name, amount, unit, channel, template, asks)
    ("email_3d", "3", "d", "email", "appointment_reminder", "confirmation"),
    ("sms_1d", "1", "d", "sms", "appointment_reminder", "confirmation"),
    ("sms_2h", "2", "h", "sms", "appointment_reminder_today", "cancellation"),
]


def expected_due(amount: str, unit: str) -> str:
    visit = datetime.combine(VISIT_DAY, time(9, 30), tzinfo=CHICAGO)
    if unit == "d":  # whole days keep the wall time in the patient's zone
        local = datetime.combine(VISIT_DAY - timedelta(days=int(amount)), time(9, 30), CHICAGO)
    else:
        local = (visit.astimezone(UTC) - timedelta(hours=int(amount))).astimezone(CHICAGO)
    return local.strftime("%a %b %-d %Y, %H:%M %Z")


async def fill_step(page: Any, i: int, step: tuple[str, ...]) -> None:
    sid, amount, unit, channel, template, asks = step
    await page.locator(f'[name="s{i}.id"]').fill(sid)
    await page.locator(f'[name="s{i}.amount"]').fill(amount)
    await page.locator(f'[name="s{i}.unit"]').select_option(unit)
    await page.locator(f'[name="s{i}.when"]').select_option("before")
    await page.locator(f'[name="s{i}.template"]').select_option(template)
    await page.locator(f'[name="s{i}.channel1"]').select_option(channel)
    await page.locator(f'[name="s{i}.asks"]').select_option(asks)


async def test_a_coordinator_builds_previews_saves_edits_and_stops_a_journey(
    stack: Stack, browser: Any
) -> None:
    await do_seed_templates(stack.db)
    await stack.add_staff(COORD, role=Role.COORDINATOR)
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in_page(page, stack.hub_url, COORD, PASSWORD)
    await page.goto(f"{stack.hub_url}/journeys")
    await page.get_by_role("link", name="New journey").click()
    await page.wait_for_url("**/journeys/new")

    await page.get_by_label("Key (a-z, 0-9, _; cannot change later)").fill("clinic_reminders")
    await page.get_by_label("Name", exact=True).fill("Clinic reminders")
    await page.get_by_label("Purpose (which consent it needs)").select_option("reminders")
    await fill_step(page, 0, STEPS[0])
    await page.evaluate("() => { window.notReloaded = true; }")
    for i in (1, 2):
        await page.get_by_role("button", name="Add a step").click()
        await page.locator(f'[name="s{i}.id"]').wait_for()
        await fill_step(page, i, STEPS[i])
    assert await page.evaluate("() => window.notReloaded === true")  # swapped in place
    assert await page.locator('[name="s0.id"]').input_value() == "email_3d"  # kept

    await page.get_by_label("Appointment date").fill(VISIT_DAY.isoformat())
    await page.get_by_label("Time", exact=True).fill("09:30")
    await page.get_by_label("Patient's time zone").fill("America/Chicago")
    await page.get_by_role("button", name="Preview").click()
    steps = page.locator("#journey-preview .timeline-step")
    await steps.nth(2).wait_for()
    assert await steps.count() == 3
    for n, (_, amount, unit, channel, _, _) in enumerate(STEPS):
        item = steps.nth(n)
        assert await item.locator("[data-field=due]").inner_text() == expected_due(amount, unit)
        text = await item.locator(f"[data-channel={channel}] [data-field=body]").inner_text()
        assert "Alex" in text or "appointment" in text.lower()
        if channel == "sms":
            assert "GSM-7" in await item.locator("[data-field=segments]").inner_text()
    await assert_accessible(page)
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        preview = page.locator("section", has=page.locator("#preview-title"))
        await preview.screenshot(path=str(SCREENSHOTS / "journey-preview.png"))

    await page.get_by_role("button", name="Save journey").click()
    await page.wait_for_url("**/journeys/clinic_reminders/edit")
    assert await page.locator("[data-field=version]").inner_text() == "version 1"
    await assert_accessible(page)
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        await page.screenshot(path=str(SCREENSHOTS / "journey-builder.png"))

    patient = await actions.do_create_patient(
        stack.db,
        stack.ring,
        SYSTEM,
        NewPatient(name="Avery Sample", phone="+15550100101", time_zone="America/Chicago"),
        region="US",
    )
    start = datetime.combine(VISIT_DAY, time(9, 30), tzinfo=CHICAGO)
    await journeys.do_enroll(
        stack.db,
        SYSTEM,
        "clinic_reminders",
        patient,
        appointment=journeys.NewAppointment("appt-1", start),
    )
    await page.locator('[name="s1.amount"]').fill("2")
    await page.locator('[name="s1.id"]').fill("sms_2d")
    await page.get_by_role("button", name="Save as a new version").click()
    await page.locator(".flash", has_text="Saved as version 2").wait_for()
    assert await page.locator("[data-field=version]").inner_text() == "version 2"
    assert await page.locator("tr[data-version='1'] [data-field=active]").inner_text() == "1"
    assert await page.locator("tr[data-version='2'] [data-field=active]").inner_text() == "0"
    async with stack.db.reader() as session:
        [enrollment] = (await session.scalars(select(Enrollment))).all()
    assert enrollment.version == 1  # the running enrollment keeps its version

    await page.set_viewport_size({"width": 390, "height": 844})
    await assert_accessible(page)
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= 390
    await page.get_by_role("button", name="Preview").click()
    await page.locator("#journey-preview .timeline-step").nth(2).wait_for()
    await assert_accessible(page)
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= 390

    await page.goto(f"{stack.hub_url}/journeys")
    await page.locator("#journey-clinic_reminders").get_by_role("link", name="Stop…").click()
    sentence = page.locator("[data-field=sentence]")
    assert (await sentence.inner_text()).startswith(
        "Stopping cancels 3 scheduled messages for 1 patient."
    )
    await assert_accessible(page)
    await page.get_by_role("button", name="Stop and cancel 3 messages").click()
    await page.locator(".flash", has_text="is stopped: 3 scheduled messages").wait_for()
    status = page.locator("#journey-clinic_reminders [data-field=status]")
    assert await status.inner_text() == "stopped"
    assert errors == []
    await page.close()
