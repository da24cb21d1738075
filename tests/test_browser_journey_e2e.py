"""Issue 17's walk from end to end, in a real browser against `hub demo` (its stand-ins, its
simulator and a real `hub worker`): the demo's coordinator builds a three-step reminder
journey in the builder, previews its three texts, launches it from an EHR-style export
through the mapping screen and its dry run, then a reminder arrives in the patient simulator
for the file's patient, the patient answers "C" there, and the Journeys page, never
reloaded, counts one confirmed. At 1280 wide, axe-core on each screen on the way. The
screenshot goes to test-artifacts/ and, with HUB_UPDATE_SCREENSHOTS=1, to
docs/screenshots/journey-e2e-simulator.png.

Time: the file's appointment is tomorrow, a minute or two before now on the patient's clock,
so the first step ("1 day before") is due at once (within the planner's grace) and the
worker's scheduler tick sends it; the patient's zone is one where it is daytime now, so the
send window never defers it."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.browser import ARTIFACTS, assert_accessible
from tests.simulator_stack import demo_hub

pytestmark = pytest.mark.slow

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
KEY = "visit_reminders"
SECTION = f"#journey-{KEY}"
LAUNCH_BOX = f"{SECTION} [data-field=launch]"
STEPS = [
    # (name, amount, unit, template, asks)
    ("day_before", "1", "d", "appointment_reminder", "confirmation"),
    ("morning_of", "3", "h", "appointment_reminder_today", "cancellation"),
    ("last_call", "1", "h", "appointment_reminder", "confirmation"),
]
ZONES = (
    "Pacific/Honolulu", "America/Los_Angeles", "America/New_York", "America/Sao_Paulo",
    "Europe/London", "Europe/Berlin", "Asia/Dubai", "Asia/Kolkata", "Asia/Tokyo",
    "Australia/Sydney",
)  # fmt: skip
"""Offsets no more than five hours apart all round the clock: one of them is in daytime."""


def daytime_zone(now: datetime) -> str:
    """A zone where it is 10:00-18:59 now: inside the clinic's send window (08:00-21:00)
    with room to spare for the test's own minutes."""
    return next(z for z in ZONES if 10 <= now.astimezone(ZoneInfo(z)).hour < 19)


def ehr_export(now: datetime) -> tuple[bytes, datetime]:
    """An EHR-style export (synthetic): its own column names, US dates and 12-hour times.
    The number is written with its +1: a cohort row's national number must be a valid one,
    which no 555 number is. Line 3 has no number. Returns the file and the appointment, in
    the patient's zone."""
    zone = daytime_zone(now)
    visit = (now.astimezone(ZoneInfo(zone)) + timedelta(days=1, minutes=-2)).replace(
        second=0, microsecond=0
    )
    day, at = visit.strftime("%m/%d/%Y"), visit.strftime("%-I:%M %p")
    text = (
        "Patient Name,MRN,Phone Number,Appointment Date,Appointment Time,Time Zone,Provider\r\n"
        f"Rowan Example,M-1001,+1 555 010 0147,{day},{at},{zone},Dr. Placeholder\r\n"
        f"Sky Synthetic,M-1002,,{day},{at},{zone},Dr. Placeholder\r\n"
    )
    return text.encode(), visit


async def fill_step(page: Any, i: int, step: tuple[str, ...]) -> None:
    sid, amount, unit, template, asks = step
    await page.locator(f'[name="s{i}.id"]').fill(sid)
    await page.locator(f'[name="s{i}.amount"]').fill(amount)
    await page.locator(f'[name="s{i}.unit"]').select_option(unit)
    await page.locator(f'[name="s{i}.when"]').select_option("before")
    await page.locator(f'[name="s{i}.template"]').select_option(template)
    await page.locator(f'[name="s{i}.channel1"]').select_option("sms")
    await page.locator(f'[name="s{i}.asks"]').select_option(asks)


async def build_and_preview(page: Any) -> None:
    """The builder: three steps, the first answering a "C" with the confirmation text."""
    await page.get_by_label("Key (a-z, 0-9, _; cannot change later)").fill(KEY)
    await page.get_by_label("Name", exact=True).fill("Visit reminders")
    await page.get_by_label("Purpose (which consent it needs)").select_option("reminders")
    await fill_step(page, 0, STEPS[0])
    first = page.locator("fieldset.builder-step[data-step='0']")
    await first.get_by_text("What replies do").click()
    confirms = first.locator("fieldset", has_text="When the patient confirms")
    await confirms.get_by_label("confirm the appointment").check()
    await confirms.get_by_label("stop asking to confirm").check()
    await confirms.get_by_label("and answer with").select_option("appointment_confirmed")
    for i in (1, 2):
        await page.get_by_role("button", name="Add a step").click()
        await page.locator(f'[name="s{i}.id"]').wait_for()
        await fill_step(page, i, STEPS[i])
    await page.locator('[name="s2.skip_if_confirmed"]').check()

    await page.get_by_label("Appointment date").fill("2027-03-16")
    await page.get_by_label("Time", exact=True).fill("09:30")
    await page.get_by_label("Patient's time zone").fill("America/New_York")
    await page.get_by_role("button", name="Preview").click()
    steps = page.locator("#journey-preview .timeline-step")
    await steps.nth(2).wait_for()
    assert await steps.count() == 3
    texts = [
        await steps.nth(n).locator("[data-channel=sms] [data-field=body]").inner_text()
        for n in range(3)
    ]
    assert texts[0].startswith(
        "Hi Alex, reminder of your Demo Clinic appointment on Tuesday, March 16 at 9:30 AM "
    )
    assert "Reply C to confirm" in texts[0]
    assert texts[1].startswith("Hi Alex, see you today at 9:30") and "Reply 2" in texts[1]
    assert texts[2] == texts[0]  # the same template for the same sample
    dues = [await steps.nth(n).locator("[data-field=due]").inner_text() for n in range(3)]
    assert dues == [
        "Mon Mar 15 2027, 09:30 EDT",
        "Tue Mar 16 2027, 06:30 EDT",
        "Tue Mar 16 2027, 08:30 EDT",
    ]
    assert "only if" in await steps.nth(2).locator(".hint").inner_text()
    await assert_accessible(page)


async def upload_and_check(page: Any, cohort: bytes) -> Any:
    """The mapping screen's suggestions and the dry run's counts; nobody is enrolled yet."""
    section = page.locator(SECTION)
    await section.locator("input[type=file]").set_input_files(
        files=[{"name": "appointments-export.csv", "mimeType": "text/csv", "buffer": cohort}]
    )
    await section.get_by_role("button", name="Upload and check").click()
    box = section.locator("[data-field=launch]")
    await box.locator(".launch-mapping").wait_for(timeout=15_000)
    suggested = {
        "Patient Name": "name",
        "MRN": "mrn",
        "Phone Number": "phone",
        "Appointment Date": "appointment_date",
        "Appointment Time": "appointment_time",
        "Time Zone": "time_zone",
        "Provider": "provider",
    }
    for column, field in suggested.items():
        assert await box.get_by_label(column, exact=True).input_value() == field, column
    assert await box.get_by_label("Dates are written").input_value() == "month-first"
    assert await box.get_by_label("Values are separated by").input_value() == ","
    assert "Suggested from the column names." in await box.inner_text()

    preview = box.locator(".launch-preview")
    await preview.wait_for()
    said = " ".join((await preview.inner_text()).split())
    assert "2 rows: 1 would be enrolled (1 new patient), 0 already enrolled." in said
    assert "1 row cannot be enrolled" in said and "line 3: needs a phone or an email" in said
    rows = preview.locator("table.launch-steps tbody tr")
    assert await rows.count() == 3
    cells = [[c.strip() for c in (await rows.nth(n).inner_text()).split("\t")] for n in range(3)]
    # step, planned, would be sent, fallback, no translation, no channel, due before enrollment
    assert cells == [[s[0], "1", "1", "0", "0", "0", "0"] for s in STEPS], cells
    assert "Rowan" not in said and "0100147" not in said  # counts, never a patient
    await assert_accessible(page, include=LAUNCH_BOX)
    return box


async def test_a_coordinator_builds_launches_and_sees_the_patient_confirm(
    fresh_db_url: str, redis_url: str, aiohttp_server: Any, tmp_path: Path, browser: Any
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    async with demo_hub(fresh_db_url, redis_url, aiohttp_server, tmp_path) as hub:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        await page.goto(f"{hub.url}/login")
        await assert_accessible(page)
        await page.get_by_role("button", name="Cole Demo (coordinator)").click()
        await page.wait_for_url(f"{hub.url}/")
        await page.goto(f"{hub.url}/journeys")
        await assert_accessible(page)
        await page.get_by_role("link", name="New journey").click()
        await page.wait_for_url("**/journeys/new")
        await assert_accessible(page)
        await build_and_preview(page)
        await page.get_by_role("button", name="Save journey").click()
        await page.wait_for_url(f"**/journeys/{KEY}/edit")
        assert await page.locator("[data-field=version]").inner_text() == "version 1"
        await assert_accessible(page)

        await page.goto(f"{hub.url}/journeys")
        cohort, visit = ehr_export(datetime.now(UTC))
        box = await upload_and_check(page, cohort)
        await box.get_by_role("button", name="Enroll 1 patient").click()
        await page.wait_for_function(
            f"() => !document.querySelector('{LAUNCH_BOX} .launch-preview')", timeout=15_000
        )
        report = " ".join((await box.inner_text()).split())
        assert "1 enrolled, 1 not enrolled." in report, report
        summary = page.locator(f"{SECTION} [data-field=summary]")
        await summary.get_by_text("1 enrolled · 1 active · 0 confirmed").wait_for(timeout=15_000)
        await page.evaluate("() => { window.notReloaded = true; }")

        # The patient: a new number typed into the simulator, as the file wrote it.
        phone = await context.new_page()
        phone.on("pageerror", lambda exc: errors.append(str(exc)))
        await phone.goto(f"{hub.url}/simulator")
        await phone.get_by_text("Or someone new").click()
        await phone.get_by_label("Phone number").fill("555-010-0147")  # none of the demo's
        await phone.get_by_role("button", name="Be this patient").click()
        await phone.wait_for_url("**/simulator?**")
        texts = phone.locator(".sim-texts")
        reminder = texts.locator("li.clinic", has_text="Hi Rowan, reminder of your")
        await reminder.wait_for(timeout=30_000)  # the worker's tick sends, the poll shows it
        said = await reminder.locator("p").inner_text()
        # The file's time, read in the patient's zone from its own column.
        when = f"{visit:%A, %B %-d at %-I:%M %p}"
        assert said.startswith(f"Hi Rowan, reminder of your Demo Clinic appointment on {when}.")
        assert "Reply C to confirm" in said
        await assert_accessible(phone)

        await phone.get_by_label("Text to the clinic").fill("C")
        await phone.get_by_role("button", name="Send text").click()
        await texts.locator("li.mine p").get_by_text("C", exact=True).wait_for()
        answer = texts.locator("li.clinic", has_text="is confirmed")
        await answer.wait_for(timeout=30_000)
        assert (await answer.locator("p").inner_text()).startswith(
            f"Thanks Rowan, your appointment on {when} is confirmed. See you then! - Demo Clinic"
        )
        await phone.screenshot(path=str(ARTIFACTS / "journey-e2e-simulator.png"), full_page=True)

        # The coordinator's page, open all along: the funnel moves by itself.
        await page.wait_for_function(
            f"""() => document.querySelector('{SECTION} [data-field=summary]')
                .textContent.includes('1 confirmed')""",
            timeout=15_000,
        )
        assert await page.evaluate("() => window.notReloaded === true")
        first = page.locator(f"{SECTION} tbody[data-field=rows] tr", has_text="day_before")
        assert await first.locator("td[data-column=confirmed]").inner_text() == "1"
        assert await first.locator("td[data-column=sent]").inner_text() == "1"
        await assert_accessible(page)
        assert errors == []
        if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
            shutil.copyfile(
                ARTIFACTS / "journey-e2e-simulator.png",
                SCREENSHOTS / "journey-e2e-simulator.png",
            )
        await context.close()
