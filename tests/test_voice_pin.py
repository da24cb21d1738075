"""The keypad PIN before a phone cancellation (issue 15): caller ID can be spoofed, so a clinic
may ask for the patient's month and day of birth before pressing 2 cancels. End to end: a real
`hub worker` places the reminder call through the fake Twilio API, which plays the keypad."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hub.audit import AuditEvent
from hub.crypto import KeyRing
from hub.enums import Role
from hub.inbox.actions import voice_pin
from hub.inbox.actions.patients import build_patient, read_birth_date
from hub.inbox.models import Patient
from hub.inbox.schemas import NewPatient
from hub.journeys.bulk import ROW_ERRORS
from hub.journeys.cohort import parse_row
from hub.journeys.models import AppointmentStatus
from hub.templates.actions import do_seed_templates
from tests.browser import assert_accessible, sign_in_page
from tests.stack import Stack
from tests.test_voice_journey import (
    AVERY,
    SYSTEM,
    answered_call,
    daytime,
    enroll,
    gather_text,
    journey_state,
)
from tests.twilio_helpers import CLINIC_NUMBER

pytestmark = pytest.mark.slow

BORN = "1984-03-07"
PIN = "0307"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
ADMIN = "pat.admin@demo-clinic.example.org"
PASSWORD = "correct horse battery"


@pytest.fixture
async def voice_stack(stack: Stack) -> Stack:
    await do_seed_templates(stack.db)
    await daytime(stack)
    return stack


async def enroll_with_birth_date(stack: Stack, birth_date: str | None = BORN) -> uuid.UUID:
    """Avery, reminded by a call two days before the appointment; their date of birth on file
    (as a cohort file's birth_date column puts it there)."""
    patient_id = await enroll(
        stack, "voice_reminders", "voice", "Avery Sample", AVERY, ["voice", "sms"]
    )
    async with stack.db.transaction() as session:
        patient = await session.get(Patient, patient_id)
        assert patient is not None
        patient.seal(stack.ring, "birth_date", read_birth_date(birth_date))
    return patient_id


async def pin_events(stack: Stack) -> list[AuditEvent]:
    async with stack.db.reader() as session:
        stmt = select(AuditEvent).where(AuditEvent.action.like("voice.cancel_pin%"))
        return list((await session.scalars(stmt.order_by(AuditEvent.seq))).all())


async def test_with_the_pin_on_the_right_date_of_birth_cancels(voice_stack: Stack) -> None:
    stack, fake = voice_stack, voice_stack.fake
    await voice_pin.do_set_cancel_pin_required(stack.db, SYSTEM, True)
    avery = await enroll_with_birth_date(stack)
    call = await answered_call(stack)

    asked = await fake.press(call, "2")
    attrs, said = gather_text(asked.text)
    assert attrs["numDigits"] == "4" and "step=pin" in attrs["action"]
    assert "date of birth" in said and "0 3 0 7" in said  # the example is March 7th
    assert (await journey_state(stack, avery))["appointment"] is AppointmentStatus.BOOKED

    answer = await fake.press(call, PIN)
    assert "has been cancelled" in answer.text
    assert (await journey_state(stack, avery))["appointment"] is AppointmentStatus.CANCELLED
    events = await pin_events(stack)
    assert [e.action for e in events] == [voice_pin.ACCEPTED]
    assert (events[0].subject_type, events[0].subject_id) == ("patient", str(avery))
    assert events[0].actor == f"caller:{call.sid}" and PIN not in json.dumps(events[0].detail)


async def test_a_wrong_pin_cancels_nothing_says_so_and_three_lock_phone_cancelling(
    voice_stack: Stack,
) -> None:
    stack, fake = voice_stack, voice_stack.fake
    await voice_pin.do_set_cancel_pin_required(stack.db, SYSTEM, True)
    avery = await enroll_with_birth_date(stack)
    call = await answered_call(stack)
    await fake.press(call, "2")
    answer = await fake.press(call, "0308")
    assert "does not match our records, so nothing was cancelled" in answer.text
    assert "<Hangup />" in answer.text
    assert (await journey_state(stack, avery))["appointment"] is AppointmentStatus.BOOKED

    # Someone calling in with Avery's number (caller ID is only a claim): two more tries.
    voice_url = f"{stack.hub_url}/webhooks/twilio/voice"
    for guess in ("0101", "1231"):
        inbound = await fake.start_inbound_call(voice_url, AVERY, CLINIC_NUMBER)
        await fake.press(inbound, "1")
        await fake.press(inbound, "2")
        assert "does not match" in (await fake.press(inbound, guess)).text
    # Three wrong: even the right date is not taken by phone now.
    inbound = await fake.start_inbound_call(voice_url, AVERY, CLINIC_NUMBER)
    await fake.press(inbound, "1")
    await fake.press(inbound, "2")
    locked = await fake.press(inbound, PIN)
    assert "cannot take a cancellation by phone right now" in locked.text
    assert (await journey_state(stack, avery))["appointment"] is AppointmentStatus.BOOKED
    events = await pin_events(stack)
    assert [e.detail["outcome"] for e in events] == ["refused"] * 3 + ["locked"]
    assert [e.detail["call"] for e in events] == ["reminder", "menu", "menu", "menu"]


async def test_confirming_needs_no_pin(
    voice_stack: Stack,
) -> None:
    stack, fake = voice_stack, voice_stack.fake
    await voice_pin.do_set_cancel_pin_required(stack.db, SYSTEM, True)
    avery = await enroll_with_birth_date(stack)
    call = await answered_call(stack)
    assert "is confirmed" in (await fake.press(call, "1")).text
    assert (await journey_state(stack, avery))["appointment"] is AppointmentStatus.CONFIRMED

    assert await pin_events(stack) == []


async def test_without_the_setting_2_cancels_at_once(voice_stack: Stack) -> None:
    stack, fake = voice_stack, voice_stack.fake
    avery = await enroll_with_birth_date(stack)
    call = await answered_call(stack)
    assert "has been cancelled" in (await fake.press(call, "2")).text
    assert (await journey_state(stack, avery))["appointment"] is AppointmentStatus.CANCELLED
    assert await pin_events(stack) == []


async def test_without_a_date_of_birth_on_file_nothing_is_cancelled(voice_stack: Stack) -> None:
    stack, fake = voice_stack, voice_stack.fake
    await voice_pin.do_set_cancel_pin_required(stack.db, SYSTEM, True)
    avery = await enroll_with_birth_date(stack, None)
    call = await answered_call(stack)
    await fake.press(call, "2")
    answer = await fake.press(call, "0000")
    assert "cannot check your details by phone, so nothing was cancelled" in answer.text
    assert (await journey_state(stack, avery))["appointment"] is AppointmentStatus.BOOKED


def test_a_cohort_file_carries_the_date_of_birth(ring: KeyRing) -> None:
    raw = {"name": "Avery Sample", "phone": AVERY, "birth_date": BORN}
    assert parse_row(ring, "US", 2, raw).birth_date == BORN
    for bad in ("31/03/1984", "2999-01-01"):  # month 31 in a US (month-first) clinic
        with pytest.raises(ROW_ERRORS, match="birth_date"):
            parse_row(ring, "US", 2, {**raw, "birth_date": bad})
    assert voice_pin.pin_of(BORN) == PIN and voice_pin.pin_of(None) is None
    patient = build_patient(ring, NewPatient(phone=AVERY, birth_date=BORN), "US")
    assert patient.unseal(ring, "birth_date") == BORN and patient.birth_date_enc is not None
    assert BORN.encode() not in patient.birth_date_enc  # encrypted like the name


async def test_admins_switch_the_pin_on_in_the_browser(stack: Stack, browser: Any) -> None:
    await stack.add_staff(ADMIN, role=Role.ADMIN)
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await sign_in_page(page, stack.hub_url, ADMIN, PASSWORD)
    await page.goto(f"{stack.hub_url}/admin/phone")
    await page.get_by_role("heading", name="Phone cancellations").wait_for()
    box = page.get_by_label("Ask for the date of birth before a phone cancellation")
    assert not await box.is_checked()
    await assert_accessible(page)
    await box.check()
    await page.get_by_role("button", name="Save").click()
    await page.get_by_text("The date of birth is now asked for before a cancellation.").wait_for()
    assert await voice_pin.do_cancel_pin_required(stack.db)
    assert await page.get_by_label(
        "Ask for the date of birth before a phone cancellation"
    ).is_checked()
    await page.set_viewport_size({"width": 390, "height": 844})
    await assert_accessible(page)
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        await page.screenshot(path=str(SCREENSHOTS / "admin-phone-pin.png"), full_page=True)
    async with stack.db.reader() as session:
        audit = (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.subject_id == voice_pin.CANCEL_PIN_SETTING)
            )
        ).one()
    assert audit.actor.startswith("staff:") and audit.detail == {"value": True}
    await page.close()
