"""The reply composer in a real browser (issue 16): the SMS counter agrees with the server's
segment math on one table of texts, typing shows the count and the encoding, more than three
segments warns, a PDF goes by MMS to the fake Twilio, and a scheduled reply shows in the
thread in the staff member's time and is gone once cancelled. At 1280 wide and 390x844, with
axe-core. Real `hub worker`, fake Twilio, aiosmtpd relay."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fakes.smtp import FakeSmtp
from hub.audit import Actor
from hub.enums import Role
from hub.inbox import actions
from hub.inbox.actions.scheduled import do_cancel_scheduled, do_schedule_reply
from hub.inbox.models import StaffUser
from hub.inbox.scheduled_models import ScheduledMessage, ScheduledState
from hub.inbox.schemas import NewPatient
from hub.outbox import release_events
from hub.templates.segments import segment_info
from tests.browser import assert_accessible, sign_in_page
from tests.stack import Stack, eventually
from tests.staff_helpers import PASSWORD
from tests.twilio_helpers import PATIENT_NUMBER
from web.keys import SINK

pytestmark = pytest.mark.slow

STAFF_EMAIL = "nia.nurse@demo-clinic.example.org"
STAFF_ZONE = "America/Chicago"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PDF = b"%PDF-1.4\n% synthetic care plan\n%%EOF\n"

TEXTS = [
    "",
    "Hello",
    "a" * 160,
    "a" * 161,
    "a" * 306,
    "a" * 307,
    "€" * 80,  # extension table: two septets each, 160 in one segment
    "€" * 81,
    "a" * 152 + "€",
    # 306 septets, yet three parts: the escape and its character never split across parts.
    "a" * 152 + "€" + "a" * 152,
    "a" * 151 + "€" + "a" * 152,
    "Café à 10h, ÄÖÜ ñ ¿? §",  # all in the GSM-7 basic table
    "ç",  # not GSM-7 (only capital Ç is): UCS-2
    "Ciao 👋",
    "😀" * 35,
    "😀" * 36,
    "a" * 66 + "😀" + "a" * 66,  # 134 units, three parts: a surrogate pair never splits
    "a" * 65 + "😀" + "a" * 66,
    "{[~]}|\\^\f",
    "line\r\nbreak\n",
    "Your appointment is on Tuesday at 9:00. Reply C to confirm. " * 8,
    "Tu cita es el martes. Responde C para confirmar ✓ " * 5,
]


async def test_the_browser_counts_segments_as_the_server_does(
    mail_stack: Stack, browser: Any
) -> None:
    page = await open_composer(mail_stack, browser)
    counted = await page.evaluate("(texts) => texts.map(window.HubCompose.segmentInfo)", TEXTS)
    expected = [
        {
            "encoding": i.encoding,
            "units": i.units,
            "segments": i.segments,
            "per_segment": i.per_segment,
            "non_gsm": list(i.non_gsm),
        }
        for i in map(segment_info, TEXTS)
    ]
    assert counted == expected
    await page.close()


async def open_composer(stack: Stack, browser: Any, width: int = 1280, height: int = 900) -> Any:
    await actions.do_create_patient(
        stack.db,
        stack.ring,
        Actor.system("test"),
        NewPatient(
            name="Rowan Sample", phone=PATIENT_NUMBER, email="rowan@example.org", verified=True
        ),
        region="US",
    )
    await stack.text_from_patient("Could you send me my care plan?")
    await stack.add_staff(STAFF_EMAIL, role=Role.ADMIN)
    async with stack.db.transaction() as session:
        staff = (
            await session.scalars(select(StaffUser).where(StaffUser.email == STAFF_EMAIL))
        ).one()
        staff.time_zone = STAFF_ZONE
    conversation = await stack.conversation()
    page = await browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    await sign_in_page(page, stack.hub_url, STAFF_EMAIL, PASSWORD)
    await page.goto(f"{stack.hub_url}/conversations/{conversation.id}")
    await page.locator("#reply-body").wait_for()
    return page


async def test_typing_counts_attaching_sends_mms_and_scheduling_shows_and_cancels(
    mail_stack: Stack, relay: FakeSmtp, browser: Any
) -> None:
    stack = mail_stack
    page = await open_composer(stack, browser)
    box = page.get_by_label("Reply to the patient")
    count, warning = page.locator("#reply-count"), page.locator("#reply-count-warning")

    await box.fill("See you on Tuesday at 9:00. " * 7)  # 196 characters of GSM-7
    assert await count.inner_text() == "2 SMS segments · GSM-7 · 195 of 1,600 characters"
    assert await warning.is_hidden()
    await box.fill("Merci 🙂")
    assert await count.inner_text() == (
        "1 SMS segment · UCS-2 because of “🙂” · 7 of 1,600 characters"
    )
    await box.fill("Please bring your medication list and insurance card. " * 9)
    assert (await count.inner_text()).startswith("4 SMS segments · GSM-7")
    assert "it goes as 4 SMS segments" in await warning.inner_text()
    await box.fill("x" * 1700)
    assert "Too long for SMS: 1,700 characters, at most 1,600" in await warning.inner_text()
    # By email there are no segments to count.
    await page.get_by_role("radio", name="Email").check()
    assert await count.is_hidden() and await warning.is_hidden()
    await page.get_by_role("radio", name="SMS").check()
    assert await count.is_visible()
    assert await box.get_attribute("aria-describedby") == "reply-count reply-count-warning"
    await assert_accessible(page)

    # A PDF by MMS: the fake Twilio gets a MediaUrl, and the message shows in the thread.
    await box.fill("Here is your care plan.")
    await page.set_input_files(
        "#reply-files",
        files=[{"name": "care-plan.pdf", "mimeType": "application/pdf", "buffer": PDF}],
    )
    assert "care-plan.pdf" in await page.locator("#reply-files-list").inner_text()
    await page.get_by_role("button", name="Send", exact=True).click()
    await stack.fake.wait_for(lambda f: len(f.messages) == 1, timeout=30)
    [sent] = stack.fake.messages
    assert sent.body == "Here is your care plan." and len(sent.media_urls) == 1
    await page.locator("#thread li.outbound").first.wait_for(timeout=10_000)
    assert "care-plan.pdf" in await page.locator("#thread li.outbound").last.inner_text()
    assert await box.input_value() == "" and await page.locator("#reply-files-list li").count() == 0

    # Send later: tomorrow 09:00 in the staff member's zone is offered; the row shows it.
    await box.fill("Checking in: how are you feeling today?")
    await page.locator("#send-later summary").click()
    picked = await page.locator("#send-at").input_value()
    assert picked.endswith("T09:00")
    await page.get_by_role("button", name="Schedule reply").click()
    row = page.locator("#scheduled .scheduled-item")
    await row.wait_for(timeout=10_000)
    text = await row.inner_text()
    assert "Checking in: how are you feeling today?" in text
    assert "Scheduled for" in text and ", 09:00 CST (your time); 15:00 for the patient" in text
    assert await box.input_value() == ""
    await assert_accessible(page)
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        await box.fill("Please bring your medication list and insurance card. " * 9)
        await page.locator("#send-later summary").click()
        await page.locator("#reply-form").scroll_into_view_if_needed()
        await page.screenshot(path=str(SCREENSHOTS / "compose.png"))

    # Opened from the list (htmx swaps the thread in, no page load): the list is there too.
    await page.goto(f"{stack.hub_url}/")
    await page.evaluate("() => { window.stillThisPage = true; }")
    await page.locator(".row-link").first.click()
    await page.wait_for_url("**/conversations/*")
    await row.wait_for(timeout=10_000)
    assert await page.evaluate("() => window.stillThisPage === true")
    assert "Checking in" in await row.inner_text()

    # On a phone: nothing wider than the screen, still accessible.
    await page.set_viewport_size({"width": 390, "height": 844})
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= 390
    await assert_accessible(page)
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        await page.locator("#reply-form").scroll_into_view_if_needed()
        await page.screenshot(path=str(SCREENSHOTS / "compose-phone.png"))

    # Edit takes it back into the box, at its time; scheduled again, it is one reply again.
    await row.get_by_role("button", name="Edit").click()
    await row.wait_for(state="detached", timeout=10_000)
    assert await box.input_value() == "Checking in: how are you feeling today?"
    assert await page.locator("#send-at").input_value() == picked
    await box.fill("Checking in: how is the new dose?")
    await page.get_by_role("button", name="Schedule reply").click()
    await row.wait_for(timeout=10_000)
    assert "how is the new dose?" in await row.inner_text()

    await row.get_by_role("button", name="Cancel").click()
    await row.wait_for(state="detached", timeout=10_000)

    async def cancelled() -> bool:
        async with stack.db.reader() as session:
            found = (await session.scalars(select(ScheduledMessage))).all()
            return [r.state for r in found] == [ScheduledState.CANCELLED] * 2

    await eventually(cancelled, "the scheduled reply to be cancelled")
    assert len(stack.fake.messages) == 1

    # A colleague schedules one in this conversation: it shows here without a reload, and
    # goes again when they cancel it.
    colleague = await stack.add_staff("olu.nurse@demo-clinic.example.org", role=Role.ADMIN)
    conversation = await stack.conversation()
    theirs = await do_schedule_reply(
        stack.db,
        stack.ring,
        colleague,
        conversation.id,
        "Dr. Lee will call you on Friday.",
        datetime.now(UTC) + timedelta(days=2),
    )
    await release_events(stack.db, stack.app[SINK], theirs.effect_ids)
    await row.wait_for(timeout=10_000)
    assert "Dr. Lee will call you" in await row.inner_text()
    gone = await do_cancel_scheduled(stack.db, stack.ring, colleague, theirs.id)
    await release_events(stack.db, stack.app[SINK], gone.effect_ids)
    await row.wait_for(state="detached", timeout=10_000)
    assert page.errors == []
    await page.close()
