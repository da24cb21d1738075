"""A care coordinator launches the shipped post-visit survey from the Journeys page, in a real
browser (Playwright driving Debian's chromium) against a real `hub serve`: the upload shows the
dry run first (the survey needs an opt-in nobody in the file has, a row that cannot be read),
nothing is enrolled until "Enroll" is pressed, and "Cancel" drops the file. On a phone-sized
screen the dry run and its buttons fit. The screenshot goes to test-artifacts/ and, with
HUB_UPDATE_SCREENSHOTS=1, to docs/screenshots/journey-launch.png."""

from __future__ import annotations

import os
import shutil
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from hub.audit import Actor
from hub.enums import Role
from hub.journeys import actions as journeys
from hub.journeys.models import Enrollment
from hub.templates.actions import do_seed_templates
from tests.browser import ARTIFACTS, assert_accessible
from tests.stack import Stack
from tests.staff_helpers import PASSWORD

pytestmark = pytest.mark.slow

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
SYSTEM = Actor.system("test")
COORDINATOR = "cole.coord@demo-clinic.example.org"
KEY = "post_visit_follow_up"
# Synthetic patients (555 numbers, fictional names); line 5 has no way to reach the patient.
COHORT = b"""phone,name,language,time_zone
+15550100101,Avery Sample,en,America/New_York
+15550100102,Blake Placeholder,es,America/New_York
+15550100103,Casey Fictional,vi,America/New_York
,Devon Testperson,en,America/New_York
"""
SECTION = f"#journey-{KEY}"
LAUNCH_BOX = f"{SECTION} [data-field=launch]"  # the funnel chart above is not this test's


async def enrollments(stack: Stack) -> int:
    async with stack.db.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(Enrollment)) or 0)


async def sign_in(page: Any, stack: Stack) -> None:
    await page.goto(f"{stack.hub_url}/login")
    await page.get_by_label("Email").fill(COORDINATOR)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{stack.hub_url}/")
    await page.goto(f"{stack.hub_url}/journeys")


async def upload(page: Any) -> Any:
    section = page.locator(SECTION)
    await section.locator("input[type=file]").set_input_files(
        files=[{"name": "survey-cohort.csv", "mimeType": "text/csv", "buffer": COHORT}]
    )
    await section.get_by_role("button", name="Upload and check").click()
    await section.locator(".launch-preview").wait_for(timeout=15_000)
    return section


async def test_the_launch_shows_its_dry_run_and_enrolls_only_when_confirmed(
    stack: Stack, browser: Any
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await do_seed_templates(stack.db)
    shipped = resources.files("hub.journeys").joinpath("examples", f"{KEY}.yaml")
    await journeys.do_install_journey(stack.db, SYSTEM, shipped.read_text("utf-8"), "shipped")
    await stack.add_staff(COORDINATOR, role=Role.COORDINATOR)
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in(page, stack)

    section = await upload(page)
    box = section.locator("[data-field=launch]")
    text = await box.inner_text()
    assert (
        "Step nps needs a surveys opt-in: 0 of 3 patients have one on a channel it may use; "
        "it would fail for all 3." in text
    )
    assert "1 row cannot be enrolled" in text and "line 5: needs a phone or an email" in text
    assert "Avery" not in text and "0100101" not in text  # counts and reasons, no patient
    enroll = box.get_by_role("button", name="Enroll 3 patients")
    await enroll.wait_for()
    assert await box.locator("td[data-column=no_channel]").first.inner_text() == "3"
    assert await enrollments(stack) == 0  # the dry run enrolled nobody
    await assert_accessible(page, include=LAUNCH_BOX)
    await page.screenshot(path=str(ARTIFACTS / "journey-launch.png"), full_page=False)
    await section.screenshot(path=str(ARTIFACTS / "journey-launch-section.png"))

    await enroll.click()
    report = box.locator("p.flash").first
    await report.wait_for(timeout=15_000)
    await page.wait_for_function(
        f"() => !document.querySelector('{SECTION} .launch-preview')", timeout=15_000
    )
    said = await box.inner_text()
    assert "3 enrolled, 1 not enrolled. 4 rows: 0 already enrolled, 3 new patients." in said
    assert "line 5: needs a phone or an email" in said
    assert "warn" in (await report.get_attribute("class") or "")  # never shown as a success
    assert await enrollments(stack) == 3

    # On a phone: the same file (the patients exist now; a discharge journey enrolls them
    # again, anchored at the new enrollment time), readable without sideways scrolling of the
    # page, and Cancel drops it.
    phone = await browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in(phone, stack)
    section = await upload(phone)
    box = section.locator("[data-field=launch]")
    assert "3 would be enrolled (0 new patients)" in await box.inner_text()
    widths = await phone.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways on a phone: {widths}"
    cancel = box.get_by_role("button", name="Cancel")
    enroll = box.get_by_role("button", name="Enroll 3 patients")
    for button in (cancel, enroll):
        shape = await button.bounding_box()
        assert shape is not None and shape["x"] >= 0 and shape["x"] + shape["width"] <= 390
        assert shape["height"] >= 24  # WCAG 2.2 target size (minimum)
    await phone.screenshot(path=str(ARTIFACTS / "journey-launch-phone.png"), full_page=True)
    await cancel.click()
    await box.get_by_text("Cancelled: nothing was enrolled").wait_for(timeout=15_000)
    await assert_accessible(phone, include=LAUNCH_BOX)
    assert await enrollments(stack) == 3
    assert errors == []

    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":  # the docs' pictures, on purpose only
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(
            ARTIFACTS / "journey-launch-section.png", SCREENSHOTS / "journey-launch.png"
        )
    await phone.close()
    await page.close()


# An EHR-style export (synthetic): its own column names, semicolons, day-first dates, a home
# phone beside the mobile one; line 4 has no number the clinic may text.
EHR_DAY = next(d for d in (date.today() + timedelta(days=n) for n in range(3, 40)) if d.day > 12)
EHR_EXPORT = (
    "\ufeffPatient Name;MRN;Mobile Phone;Home Phone;Appt Date;Appt Time;Department\r\n"
    f"Avery Sample;M-1;+1 201 555 0101;;{EHR_DAY:%d/%m/%Y};09:30;Family Medicine\r\n"
    f"Blake Placeholder;M-2;(201) 555-0102;;{EHR_DAY:%d/%m/%Y};2:30 PM;Family Medicine\r\n"
    f"Casey Fictional;M-3;;+1 201 555 0103;{EHR_DAY:%d/%m/%Y};10:00;Family Medicine\r\n"
).encode()
REMINDERS = "appointment_reminders"
REMINDERS_BOX = f"#journey-{REMINDERS} [data-field=launch]"


async def map_and_check(page: Any, button: str = "Enroll 2 patients") -> Any:
    """Upload the export, see the suggested mapping, say dates are day first, check again
    (until ``button`` offers to go on). Once enrolled through, the mapping is remembered: the
    same columns open day first."""
    section = page.locator(f"#journey-{REMINDERS}")
    await section.locator("input[type=file]").set_input_files(
        files=[{"name": "epic-export.csv", "mimeType": "text/csv", "buffer": EHR_EXPORT}]
    )
    await section.get_by_role("button", name="Upload and check").click()
    box = section.locator("[data-field=launch]")
    await box.locator(".launch-mapping").wait_for(timeout=15_000)
    assert await box.get_by_label("Mobile Phone").input_value() == "phone"
    assert await box.get_by_label("Home Phone").input_value() == ""
    assert await box.get_by_label("Appt Date").input_value() == "appointment_date"
    assert await box.get_by_label("Values are separated by").input_value() == ";"
    order = box.get_by_label("Dates are written")
    said = await box.inner_text()
    if "As last confirmed for a file with these columns" not in said:
        assert await order.input_value() == "month-first"  # the clinic is in the US
        date_said = f'the appointment date "{EHR_DAY:%d/%m/%Y}" is not a date when read month'
        assert date_said in said
        await order.select_option("day-first")
        await box.get_by_role("button", name="Check again").click()
    await box.get_by_role("button", name=button).wait_for(timeout=15_000)
    assert await order.input_value() == "day-first"
    said = await box.inner_text()
    assert "1 row cannot be enrolled" in said and "line 4: needs a phone or an email" in said
    assert "is not a date" not in said
    return box


async def test_a_coordinator_maps_an_ehr_export_and_sees_the_row_not_enrolled(
    stack: Stack, browser: Any
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await do_seed_templates(stack.db)
    shipped = resources.files("hub.journeys").joinpath("examples", f"{REMINDERS}.yaml")
    await journeys.do_install_journey(stack.db, SYSTEM, shipped.read_text("utf-8"), "shipped")
    await stack.add_staff(COORDINATOR, role=Role.COORDINATOR)
    errors: list[str] = []
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in(page, stack)
    box = await map_and_check(page)
    assert "Suggested from the column names." in await box.inner_text()  # nothing remembered
    await assert_accessible(page, include=REMINDERS_BOX)
    await box.screenshot(path=str(ARTIFACTS / "cohort-mapping.png"))
    assert await enrollments(stack) == 0

    await box.get_by_role("button", name="Enroll 2 patients").click()
    await page.wait_for_function(
        f"() => !document.querySelector('{REMINDERS_BOX} .launch-preview')", timeout=15_000
    )
    report = box.locator("p.flash").first
    assert "warn" in (await report.get_attribute("class") or "")
    said = await box.inner_text()
    assert "2 enrolled, 1 not enrolled." in said and "line 4: needs a phone or an email" in said
    assert await enrollments(stack) == 2
    await assert_accessible(page, include=REMINDERS_BOX)

    # On a phone: the mapping screen fits without sideways scrolling, and Cancel drops it.
    phone = await browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in(phone, stack)
    # Enrolled above: the mapping is remembered, the patients already enrolled.
    box = await map_and_check(phone, "Update 2 enrolled patients")
    assert "As last confirmed for a file with these columns" in await box.inner_text()
    widths = await phone.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways on a phone: {widths}"
    for name in ("Check again", "Cancel"):
        shape = await box.get_by_role("button", name=name).bounding_box()
        assert shape is not None and shape["x"] >= 0 and shape["x"] + shape["width"] <= 390
    await assert_accessible(phone, include=REMINDERS_BOX)
    await box.screenshot(path=str(ARTIFACTS / "cohort-mapping-phone.png"))
    await box.get_by_role("button", name="Cancel").click()
    await box.get_by_text("Cancelled: nothing was enrolled").wait_for(timeout=15_000)
    assert await enrollments(stack) == 2
    assert errors == []
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTIFACTS / "cohort-mapping.png", SCREENSHOTS / "cohort-mapping.png")
    await phone.close()
    await page.close()
