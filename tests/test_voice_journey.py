"""Reminder calls as a journey channel, end to end: a real `hub worker` dispatches the step and
places the call through the twilio SDK to the fake API, which fetches the call's TwiML from the
hub (signed) and plays the patient's keypad. The keypress goes through the same journey reply
handling as a text."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree

import pytest
from sqlalchemy import select

from fakes.twilio import FakeCall, FakeTwilio, start_fake_twilio
from hub.audit import Actor
from hub.channels.base import Outbound, WebhookRequest
from hub.channels.registry import connected_providers
from hub.channels.twilio_voice.adapter import TwilioVoiceAdapter
from hub.config import Settings
from hub.consent import actions as consent
from hub.consent.exceptions import ConsentRefused
from hub.consent.models import ConsentRecord, ConsentSource, ConsentState, Purpose
from hub.consent.schemas import Decision, Outcome
from hub.db import utcnow
from hub.enums import Channel, ConversationStatus, Direction, MessageStatus
from hub.inbox import actions
from hub.inbox.actions.voice_intake import MACHINE_NOTE, SPOKEN_NOTE
from hub.inbox.models import Conversation, DeliveryAttempt, Message, Note, Patient
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.models import Appointment, AppointmentStatus, Enrollment, RunStatus, StepRun
from hub.templates.actions import do_seed_templates
from tests.stack import WAIT_S, Stack, eventually
from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN, CLINIC_NUMBER

pytestmark = pytest.mark.slow

SYSTEM = Actor.system("test")
AVERY = "+15550100101"
BLAKE = "+15550100102"
SPOKEN_CLINIC_NUMBER = "5 5 5, 0 1 0, 9 9 9 9"


def reminders(key: str, channels: str) -> str:
    return f"""\
key: {key}
name: Reminders by {channels}
purpose: reminders
anchor: appointment_start
steps:
  - id: ask_48h
    offset: -48h
    template: appointment_reminder
    channels: [{channels}]
    asks: confirmation
    conditions: [skip_if_confirmed]
    on_reply:
      confirm:
        do: [confirm_appointment, cancel_remaining_asks, notify_staff]
        reply: appointment_confirmed
  - id: ask_24h
    offset: -24h
    template: appointment_reminder
    channels: [sms]
    asks: confirmation
    conditions: [skip_if_confirmed]
"""


async def daytime(stack: Stack) -> datetime:
    """Move every clock to the next 15:00 UTC: reminders wait for the 08:00-21:00 window."""
    now = utcnow()
    target = now.replace(hour=15, minute=0, second=0, microsecond=0)
    if target <= now:
        target += timedelta(days=1)
    return stack.advance_clock(target - now)


async def enroll(
    stack: Stack, key: str, channels: str, name: str, phone: str, order: list[str]
) -> uuid.UUID:
    """A patient (time zone UTC) enrolled for an appointment two days out: the 48-hour ask is
    due now."""
    if not await _installed(stack, key):
        await journeys.do_install_journey(stack.db, SYSTEM, reminders(key, channels), f"{key}.yml")
    patient_id = await actions.do_create_patient(
        stack.db,
        stack.ring,
        SYSTEM,
        NewPatient(name=name, phone=phone, channel_order=order, verified=True),
        region="US",
    )
    start = utcnow() + timedelta(hours=48)
    appointment = journeys.NewAppointment(f"visit-{name.split()[0]}", start, location="Room 4")
    await journeys.do_enroll(
        stack.db, SYSTEM, key, patient_id, appointment=appointment, ring=stack.ring
    )
    return patient_id


async def _installed(stack: Stack, key: str) -> bool:
    from hub.journeys.models import Journey

    async with stack.db.reader() as session:
        return (
            await session.scalars(select(Journey).where(Journey.key == key))
        ).first() is not None


@pytest.fixture
async def voice_stack(stack: Stack) -> Stack:
    await do_seed_templates(stack.db)
    await daytime(stack)
    return stack


async def answered_call(stack: Stack, index: int = 0) -> FakeCall:
    fake = stack.fake
    await fake.wait_for(lambda f: len(f.calls) > index and f.calls[index].twiml, timeout=WAIT_S)
    return fake.calls[index]


def gather_text(document: str) -> tuple[dict[str, str], str]:
    """(the first Gather's attributes, what it says)."""
    root = ElementTree.fromstring(document)
    gather = root.find("Gather")
    assert gather is not None, document
    return dict(gather.attrib), " ".join(s.text or "" for s in gather.iter("Say"))


async def journey_state(stack: Stack, patient_id: uuid.UUID) -> dict[str, Any]:
    """What a reply did to the patient's journey, whatever channel it came on."""
    async with stack.db.reader() as session:
        enrollment = (
            await session.scalars(select(Enrollment).where(Enrollment.patient_id == patient_id))
        ).one()
        appointment = await session.get(Appointment, enrollment.appointment_id)
        assert appointment is not None
        runs = (
            await session.scalars(select(StepRun).where(StepRun.enrollment_id == enrollment.id))
        ).all()
        conversations = (
            await session.scalars(select(Conversation).where(Conversation.patient_id == patient_id))
        ).all()
        notes = (
            await session.scalars(
                select(Note).where(Note.conversation_id.in_([c.id for c in conversations]))
            )
        ).all()
    return {
        "enrollment": (enrollment.status, enrollment.confirmed_at is not None),
        "appointment": appointment.status,
        "runs": sorted(
            (r.step_id, r.attempt, r.status, r.reason if r.status is RunStatus.CANCELLED else None)
            for r in runs
        ),
        "notes": [n.unseal(stack.ring, "body") for n in notes],
        "conversations": [c.status for c in conversations],
    }


async def messages_of(stack: Stack, patient_id: uuid.UUID) -> list[Message]:
    async with stack.db.reader() as session:
        return list(
            (
                await session.scalars(
                    select(Message)
                    .join(Conversation, Conversation.id == Message.conversation_id)
                    .where(Conversation.patient_id == patient_id)
                    .order_by(Message.created_at, Message.id)
                )
            ).all()
        )


async def test_a_voice_step_calls_and_pressing_1_confirms_exactly_like_an_sms_c(
    voice_stack: Stack,
) -> None:
    stack, fake = voice_stack, voice_stack.fake
    avery = await enroll(stack, "voice_reminders", "voice", "Avery Sample", AVERY, ["voice", "sms"])
    blake = await enroll(stack, "sms_reminders", "sms", "Blake Sample", BLAKE, ["sms", "voice"])

    call = await answered_call(stack)
    await fake.wait_for(lambda f: len(f.messages) == 1, timeout=WAIT_S)
    assert (call.to, call.from_, call.direction) == (AVERY, CLINIC_NUMBER, "outbound-api")
    placed = [r for r in fake.requests if r.path.endswith("/Calls.json") and r.method == "POST"]
    assert [r.status for r in placed] == [201]  # through the SDK's calls.create
    assert call.form["MachineDetection"] == ["DetectMessageEnd"]
    assert "/webhooks/twilio/voice/status?m=" in call.form["StatusCallback"][0]
    assert call.webhooks[0].status == 200  # the TwiML fetch was signed and accepted
    attrs, said = gather_text(call.twiml[0])
    assert attrs["numDigits"] == "1" and "/webhooks/twilio/voice/gather?m=" in attrs["action"]
    assert said.startswith("Hello Avery. This is The clinic, calling to remind you of your")
    assert "To confirm, press 1." in said and "press 9" in said
    assert fake.messages[0].to == BLAKE  # the SMS twin

    answer = await fake.press(call, "1")
    assert answer.status == 200 and "is confirmed" in answer.text and "<Hangup />" in answer.text
    await stack.text_from_patient("C", number=BLAKE)
    await fake.wait_for(lambda f: len(f.messages) == 2, timeout=WAIT_S)
    assert "is confirmed" in fake.messages[1].body and fake.messages[1].to == BLAKE

    voice_state, sms_state = await journey_state(stack, avery), await journey_state(stack, blake)
    assert voice_state == sms_state
    assert voice_state["appointment"] is AppointmentStatus.CONFIRMED
    assert ("ask_24h", 1, RunStatus.CANCELLED, "the patient confirmed") in voice_state["runs"]
    assert voice_state["notes"] == ["The patient confirmed their appointment by reply."]

    # The answer was read out on the call: one call in all, and the inbox shows each step.
    messages = await messages_of(stack, avery)
    reminder = messages[0]
    await eventually(
        lambda: stack.status_is(reminder.id, MessageStatus.DELIVERED), "the call to complete"
    )
    assert len(fake.calls) == 1
    bodies = [(m.direction, m.unseal(stack.ring, "body")) for m in messages]
    assert bodies[1] == (Direction.INBOUND, "Pressed 1 on the reminder call.")
    assert bodies[2][0] is Direction.OUTBOUND and "is confirmed" in (bodies[2][1] or "")
    assert (
        messages[2].status is MessageStatus.DELIVERED and SPOKEN_NOTE in messages[2].delivery_notes
    )


async def test_pressing_9_stops_reminder_calls_but_not_texts(voice_stack: Stack) -> None:
    stack, fake = voice_stack, voice_stack.fake
    avery = await enroll(stack, "voice_reminders", "voice", "Avery Sample", AVERY, ["voice", "sms"])
    call = await answered_call(stack)
    answer = await fake.press(call, "9")
    assert "You will not receive any more calls from us" in answer.text

    async with stack.db.reader() as session:
        records = (await session.scalars(select(ConsentRecord))).all()
        patient = await session.get(Patient, avery)
        assert patient is not None
        calls = await consent.may_send(session, patient, Channel.VOICE, Purpose.REMINDERS)
        texts = await consent.may_send(session, patient, Channel.SMS, Purpose.CARE)
    assert records and {(r.channel, r.state, r.source, r.evidence) for r in records} == {
        (
            Channel.VOICE,
            ConsentState.REVOKED,
            ConsentSource.VOICE_KEYPRESS,
            "pressed 9 on the reminder call",
        )
    }
    assert calls.code == "opted_out" and "opted out of calls" in calls.reason
    assert "by keypress on a call" in calls.reason
    assert texts.allowed
    state = await journey_state(stack, avery)
    assert state["enrollment"][1] is False  # 9 is not a confirmation
    conversation = await stack.conversation()
    with pytest.raises(ConsentRefused, match="opted out of calls"):
        await actions.do_reply(
            stack.db, stack.ring, stack.staff, conversation.id, "Call back?", channel=Channel.VOICE
        )


async def test_unanswered_calls_are_retried_then_the_step_falls_back_to_a_text(
    voice_stack: Stack,
) -> None:
    stack, fake = voice_stack, voice_stack.fake
    fake.script_call(AVERY, "no-answer", times=4)
    avery = await enroll(
        stack, "fallback_reminders", "voice, sms", "Avery Sample", AVERY, ["voice", "sms"]
    )
    await fake.wait_for(lambda f: len(f.messages) == 1, timeout=WAIT_S)
    assert [c.status for c in fake.calls] == ["no-answer"] * 4
    assert all(c.twiml == [] for c in fake.calls)  # nobody picked up: no TwiML was fetched
    assert "remind" in fake.messages[0].body and fake.messages[0].to == AVERY

    messages = await messages_of(stack, avery)
    voice = next(m for m in messages if m.channel is Channel.VOICE)
    assert (voice.status, voice.error_code) == (MessageStatus.UNDELIVERED, "no-answer")
    assert voice.error_reason == "the patient did not answer the call (after 4 attempts)"
    async with stack.db.reader() as session:
        attempts = (
            await session.scalars(
                select(DeliveryAttempt)
                .where(DeliveryAttempt.message_id == voice.id)
                .order_by(DeliveryAttempt.attempt)
            )
        ).all()
        runs = (
            await session.scalars(
                select(StepRun).where(StepRun.step_id == "ask_48h").order_by(StepRun.attempt)
            )
        ).all()
    assert [(a.attempt, a.status, a.provider_message_id) for a in attempts] == [
        (n + 1, MessageStatus.UNDELIVERED, call.sid) for n, call in enumerate(fake.calls)
    ]
    assert [(r.attempt, r.channel) for r in runs] == [(1, "voice"), (2, "sms")]


async def test_an_answering_machine_hears_the_clinic_and_a_number_only(voice_stack: Stack) -> None:
    stack, fake = voice_stack, voice_stack.fake
    fake.script_call(AVERY, "machine")
    avery = await enroll(stack, "voice_reminders", "voice", "Avery Sample", AVERY, ["voice", "sms"])
    call = await answered_call(stack)
    assert call.webhooks[0].params["AnsweredBy"] == "machine_end_beep"
    left = call.twiml[0]
    assert "this is a message from The clinic." in left and SPOKEN_CLINIC_NUMBER in left
    for phi in ("Avery", "Sample", "appointment", "Room 4", "<Gather"):
        assert phi not in left
    reminder = (await messages_of(stack, avery))[0]
    await eventually(lambda: stack.status_is(reminder.id, MessageStatus.DELIVERED), "completed")
    assert MACHINE_NOTE in (await stack.message(reminder.id)).delivery_notes


async def test_a_patient_who_calls_in_can_confirm_from_the_menu(voice_stack: Stack) -> None:
    stack, fake = voice_stack, voice_stack.fake
    avery = await enroll(stack, "voice_reminders", "voice", "Avery Sample", AVERY, ["voice", "sms"])
    reminder_call = await answered_call(stack)
    await fake.no_input(reminder_call)  # listened, pressed nothing
    assert "We did not receive an answer" in reminder_call.last_twiml
    reminder = (await messages_of(stack, avery))[0]
    await eventually(lambda: stack.status_is(reminder.id, MessageStatus.DELIVERED), "completed")

    voice_url = f"{stack.hub_url}/webhooks/twilio/voice"
    stranger = await fake.start_inbound_call(voice_url, "+15550100188", CLINIC_NUMBER)
    await fake.press(stranger, "1")
    assert "could not find an appointment" in stranger.last_twiml
    assert "<Record " in stranger.last_twiml

    inbound = await fake.start_inbound_call(voice_url, AVERY, CLINIC_NUMBER)
    await fake.press(inbound, "1")
    assert "appointment waiting for your confirmation" in inbound.last_twiml
    assert "Room 4" not in inbound.last_twiml  # caller ID is no proof of who is calling
    answer = await fake.press(inbound, "1")
    assert "is confirmed" in answer.text
    state = await journey_state(stack, avery)
    assert state["appointment"] is AppointmentStatus.CONFIRMED
    assert state["conversations"] == [ConversationStatus.OPEN]
    assert [c.direction for c in fake.calls] == ["outbound-api", "inbound", "inbound"]


# -- the adapter against the fake API, without a hub -----------------------------------------


@pytest.fixture
async def fake_api() -> AsyncIterator[tuple[FakeTwilio, str]]:
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    runner, base = await start_fake_twilio(fake)
    try:
        yield fake, base
    finally:
        await runner.cleanup()


async def test_find_sent_recognises_the_one_call_placed_since_the_claim(
    fake_api: tuple[FakeTwilio, str],
) -> None:
    fake, base = fake_api
    fake.script_call(AVERY, "busy", times=2)  # never answered: nothing is fetched from the hub
    adapter = TwilioVoiceAdapter(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        public_url="http://127.0.0.1:9",
        api_base=base,
        from_number=CLINIC_NUMBER,
    )
    outbound = Outbound(uuid.uuid4(), 1, Channel.VOICE, AVERY, "script")
    decision = Decision(
        Outcome.ALLOWED, uuid.uuid4(), Channel.VOICE, Purpose.REMINDERS, utcnow(), "ok", "allowed"
    )
    since = datetime.now(UTC)
    try:
        assert await adapter.find_sent(outbound, since) is None
        receipt = await adapter.send(outbound, decision)
        assert receipt.provider_message_id == fake.calls[0].sid
        assert fake.calls[0].url == (
            f"http://127.0.0.1:9/webhooks/twilio/voice/outbound?m={outbound.message_id}&a=1"
        )
        found = await adapter.find_sent(outbound, since)
        assert found is not None and found.provider_message_id == receipt.provider_message_id
        await adapter.send(outbound, decision)  # two calls: which one is ours cannot be told
        assert await adapter.find_sent(outbound, since) is None
    finally:
        await adapter.close()


def test_call_statuses_feed_the_delivery_policy(settings: Settings) -> None:
    adapter = TwilioVoiceAdapter(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, public_url="x")
    sid, ref = "CA" + "9" * 32, {"m": str(uuid.uuid4()), "a": "2"}
    seen = {}
    for status in ("ringing", "completed", "busy", "no-answer", "failed", "canceled"):
        params = {"CallSid": sid, "CallStatus": status}
        update = adapter.parse_status(WebhookRequest("u", params, query=ref))
        failure = adapter.classify_error(update.error_code) if update.error_code else None
        seen[status] = (update.status, failure.transient if failure else None)
    assert seen == {
        "ringing": (MessageStatus.SENDING, None),
        "completed": (MessageStatus.DELIVERED, None),
        "busy": (MessageStatus.UNDELIVERED, True),
        "no-answer": (MessageStatus.UNDELIVERED, True),
        "failed": (MessageStatus.FAILED, False),
        "canceled": (MessageStatus.FAILED, False),
    }
    assert Channel.VOICE not in connected_providers(settings)
    twilio = replace(settings, twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN)
    assert Channel.VOICE not in connected_providers(twilio)  # no number to call from
    calling = replace(twilio, twilio_from_number=CLINIC_NUMBER)
    assert connected_providers(calling)[Channel.VOICE] == "twilio_voice"
