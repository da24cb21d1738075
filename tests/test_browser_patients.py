"""Patients in a real browser: search by a name typed without its accent, merge an unknown
number into the patient it belongs to, edit the profile, start a conversation; at 1280 wide
and on a 390x844 phone, with axe-core finding no serious or critical violation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from hub.audit import Actor
from hub.enums import Role
from hub.inbox import actions
from hub.inbox.schemas import NewPatient
from tests.browser import assert_accessible, sign_in_page
from tests.stack import Stack
from tests.staff_helpers import PASSWORD

pytestmark = pytest.mark.slow

ADMIN = "pat.desk@demo-clinic.example.org"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
UNKNOWN = "+15550100139"


async def snap(page: Any, name: str) -> None:
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        await page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


async def no_sideways_scroll(page: Any) -> None:
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width}px wide on a 390px phone"


async def test_search_merge_edit_and_start_a_conversation(stack: Stack, browser: Any) -> None:
    stack.at_next_noon()  # the conversation it starts is sent, so inside the patient's day
    await stack.add_staff(ADMIN, role=Role.ADMIN, teams=("Front desk",))
    for name, phone, email in (
        ("Zoë Quintero", "+15550100131", "zoe.q@example.org"),
        ("Zoltan Quimby", "+15550100132", None),
        ("Avery Sample", "+15550100133", "avery@example.com"),
    ):
        new = NewPatient(name=name, phone=phone, email=email, verified=True)
        await actions.do_create_patient(stack.db, stack.ring, Actor.system("t"), new, region="US")
    await stack.text_from_patient("Hi, it's Zoe, texting from my new phone", number=UNKNOWN)

    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in_page(page, stack.hub_url, ADMIN, PASSWORD)

    await page.get_by_role("link", name="Patients", exact=True).click()
    box = page.get_by_label("Search patients")
    results = page.locator("#patient-results li.patient-hit")
    assert await results.count() == 4  # the newest patients, the unknown number among them
    await box.fill("zoe qui")  # no Enter: the list follows the typing (htmx)
    await page.wait_for_function(
        "() => document.querySelectorAll('#patient-results li.patient-hit').length === 1"
    )
    assert page.url.endswith("/patients")
    assert await results.count() == 1
    assert "Zoltan" not in await page.locator("#patient-results").inner_text()
    await assert_accessible(page)

    # The unknown number: listed under "Unknown numbers", merged into Zoë from its page.
    await page.goto(f"{stack.hub_url}/patients?status=unknown")
    await page.locator("#patient-results a.patient-link").first.click()
    await page.get_by_label("Find the patient").fill("quintero")
    await page.get_by_role("button", name="Find").click()
    await page.get_by_role("button", name="Merge into Zoë Quintero").click()
    await page.locator(".flash", has_text="Merged: 1 conversation").wait_for()
    assert await page.locator("h1").inner_text() == "Zoë Quintero"
    assert "Undo this merge" in await page.content()

    # Found again, now with the conversation that came with the number (the screenshot).
    await page.goto(f"{stack.hub_url}/patients?q=quin")
    hit = page.locator("#patient-results li.patient-hit", has_text="Zoë Quintero")
    assert "SMS · open" in await hit.locator(".patient-convs").inner_text()
    await snap(page, "search.png")
    await page.set_viewport_size({"width": 390, "height": 844})
    await no_sideways_scroll(page)
    await assert_accessible(page)
    await page.set_viewport_size({"width": 1280, "height": 900})
    await hit.locator("a.patient-link").click()
    await page.locator("h1", has_text="Zoë Quintero").wait_for()

    # Edit the profile: a national number without its country is refused, in words.
    await page.get_by_label("Phone", exact=True).fill("138 0013 8000")
    await page.get_by_role("button", name="Save profile").click()
    await page.locator("#patient-error", has_text="not a valid number in United States").wait_for()
    await page.get_by_label("Phone", exact=True).fill("+1 555 010 0131")
    await page.get_by_label("Tags (comma-separated)").fill("Spanish speaker")
    await page.get_by_role("button", name="Save profile").click()
    await page.locator(".flash", has_text="Saved.").wait_for()
    assert "spanish speaker" in await page.locator(".patient-head").inner_text()

    await snap(page, "patient.png")
    await assert_accessible(page)
    await page.set_viewport_size({"width": 390, "height": 844})
    await no_sideways_scroll(page)
    await assert_accessible(page)
    await snap(page, "patient-mobile.png")
    await page.set_viewport_size({"width": 1280, "height": 900})

    # Start a conversation: the SMS option is the gate's answer, and sending opens it.
    options = page.locator("#start-channels li")
    assert "available" in await options.filter(has_text="SMS").inner_text()
    assert "cannot be used" in await options.filter(has_text="Email").inner_text()
    await page.get_by_label("SMS").check()
    await page.get_by_label("Message to Zoë Quintero").fill("Your lab results are in.")
    await page.get_by_role("button", name="Send", exact=True).click()
    await page.wait_for_url("**/conversations/**")
    assert errors == []
    await page.close()
