"""One automatic answer per inbound message, in the patient's language and on the channel
they wrote on (issue 14, point 3): through the real intake (and, last, a real `hub worker`
sending to the fake Twilio)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.channels.base import InboundMessage
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, Direction
from hub.inbox import actions
from hub.inbox.models import Conversation, Message, Team
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.dispatch import do_prepare_batch, providers_for
from hub.routing.actions import apply_routing, do_set_setting
from hub.templates.actions import do_seed_templates
from tests.stack import Stack, eventually
from tests.test_routing import (
    NY,
    WED_NIGHT_NY,
    WEEKDAYS_9_TO_5,
    make_conversation,
    make_patient,
    make_team,
    without_default_teams,
)
from tests.twilio_helpers import CLINIC_NUMBER, PATIENT_NUMBER

SYSTEM = Actor.system("test")
CLINIC = {"name": "Demo Clinic", "phone": "+15550109999"}
PHONE = "+15550100177"
CUSTOM_EN = "Hi {{ first_name }}, {{ clinic_name }} is closed; we answer from 9am."

ASK = """\
key: night_asks
name: Asks
purpose: reminders
anchor: appointment_start
steps:
  - id: ask
    offset: -24h
    template: appointment_reminder
    channel: sms
    asks: confirmation
    on_reply:
      confirm:
        do: [confirm_appointment, cancel_remaining_asks]
        reply: appointment_confirmed
"""


async def closed_front_desk(db: Database, **fields: Any) -> Team:
    """The default team, closed at WED_NIGHT_NY, answering after hours."""
    fields.setdefault("after_hours_replies", {"en": CUSTOM_EN})
    fields.setdefault("business_hours", WEEKDAYS_9_TO_5)
    async with db.transaction() as session:
        await without_default_teams(session)
        return await make_team(
            session,
            "Front desk",
            is_default=True,
            time_zone=NY,
            after_hours_enabled=True,
            **fields,
        )


async def text_in(db: Database, ring: KeyRing, body: str, phone: str = PHONE) -> uuid.UUID:
    inbound = InboundMessage(
        provider="twilio_sms",
        provider_message_id="SM" + uuid.uuid4().hex,
        channel=Channel.SMS,
        from_address=phone,
        to_address="+15550109999",
        body=body,
    )
    result = await actions.do_receive_inbound(
        db, ring, inbound, {}, help_text="Demo Clinic: reply STOP to opt out.", clinic=CLINIC
    )
    assert result.conversation_id is not None
    return result.conversation_id


async def outbound(db: Database, ring: KeyRing) -> list[tuple[Channel, str]]:
    async with db.reader() as session:
        rows = (
            await session.scalars(
                select(Message)
                .where(Message.direction == Direction.OUTBOUND)
                .order_by(Message.created_at, Message.id)
            )
        ).all()
    return [(m.channel, m.unseal(ring, "body") or "") for m in rows]


async def patient(db: Database, ring: KeyRing, language: str = "en", **fields: Any) -> uuid.UUID:
    return await actions.do_create_patient(
        db,
        ring,
        SYSTEM,
        NewPatient(
            name="Avery Sample",
            phone=PHONE,
            language=language,
            time_zone=NY,
            channel_order=["sms", "email"],
            verified=True,
            **fields,
        ),
        region="US",
    )


@pytest.fixture(autouse=True)
async def seeded(db: Database, set_clock: Any) -> None:
    set_clock(WED_NIGHT_NY)
    await do_seed_templates(db)


async def test_a_confirmation_at_night_is_answered_once_not_also_after_hours(
    db: Database, ring: KeyRing
) -> None:
    await closed_front_desk(db)
    pid = await patient(db, ring)
    await journeys.do_install_journey(db, SYSTEM, ASK, "ask.yaml")
    await journeys.do_enroll(
        db,
        SYSTEM,
        "night_asks",
        pid,
        appointment=journeys.NewAppointment("visit-1", WED_NIGHT_NY + timedelta(hours=20)),
        now=WED_NIGHT_NY - timedelta(days=1),
    )
    ask_at = WED_NIGHT_NY - timedelta(hours=4)  # 18:00 in New York: the reminder goes
    claimed = await journeys.do_claim_due(db, now=ask_at)
    prepared = await do_prepare_batch(
        db,
        ring,
        claimed,
        providers=providers_for({Channel.SMS}, {}),
        clinic=CLINIC,
        public_url="https://hub.example.org",
        now=ask_at,
    )
    assert prepared is not None
    before = await outbound(db, ring)
    assert len(before) == 1

    await text_in(db, ring, "C")
    after = (await outbound(db, ring))[1:]
    assert len(after) == 1, after
    assert "confirmed" in after[0][1] and "closed" not in after[0][1]


async def test_help_gets_its_answer_and_no_after_hours_reply(db: Database, ring: KeyRing) -> None:
    await closed_front_desk(db)
    await patient(db, ring)
    await text_in(db, ring, "HELP")
    assert [body for _, body in await outbound(db, ring)] == ["Demo Clinic: reply STOP to opt out."]
    # The next, ordinary message in that conversation gets the after-hours reply.
    await text_in(db, ring, "Is the clinic open on Saturday?")
    assert [body for _, body in await outbound(db, ring)][1:] == [
        "Hi Avery, Demo Clinic is closed; we answer from 9am."
    ]


@pytest.mark.parametrize(
    ("language", "custom", "expected"),
    [
        # The clinic wrote English only: a Spanish speaker gets the shipped Spanish text.
        ("es", {"en": CUSTOM_EN}, "Gracias por su mensaje, Avery. En este momento Demo Clinic"),
        ("es-MX", {"en": CUSTOM_EN}, "Gracias por su mensaje, Avery. En este momento Demo Clinic"),
        # The team's own Spanish text wins over the shipped one.
        (
            "es",
            {"en": CUSTOM_EN, "es": "Hola {{ first_name }}, abrimos a las 9."},
            "Hola Avery, abrimos a las 9.",
        ),
        # No text of either kind in Vietnamese: the clinic's default language, its own words.
        ("vi", {"en": CUSTOM_EN}, "Hi Avery, Demo Clinic is closed; we answer from 9am."),
        # No custom text at all: the shipped English.
        ("en", {}, "Thanks for your message, Avery. Demo Clinic is closed right now"),
    ],
)
async def test_after_hours_reply_is_in_the_patients_language(
    db: Database, ring: KeyRing, language: str, custom: dict[str, str], expected: str
) -> None:
    await closed_front_desk(db, after_hours_replies=custom)
    await patient(db, ring, language=language)
    await text_in(db, ring, "Can I change my appointment?")
    replies = await outbound(db, ring)
    assert len(replies) == 1 and replies[0][0] is Channel.SMS
    assert replies[0][1].startswith(expected), replies[0][1]


async def test_urgent_reply_is_in_the_patients_language(db: Database, ring: KeyRing) -> None:
    await do_set_setting(db, SYSTEM, "triage.reply", "{{ clinic_name }}: call 911 now.")
    await closed_front_desk(db)
    await patient(db, ring, language="es")
    await text_in(db, ring, "I have chest pain")
    replies = [body for _, body in await outbound(db, ring)]
    # Only the emergency answer (no after-hours text on top), in Spanish.
    assert len(replies) == 1 and "911" in replies[0]
    assert "emergencia" in replies[0].lower(), replies[0]


async def test_an_email_is_answered_by_email_even_in_a_thread_that_began_by_text(
    db: Database, ring: KeyRing
) -> None:
    await closed_front_desk(db)
    async with db.transaction() as session:
        someone = await make_patient(session, ring, email="blake@example.org")
        thread = await make_conversation(session, someone, channel=Channel.SMS)

        outcome = await apply_routing(
            session,
            ring,
            patient=someone,
            conversation=thread,
            message_body="Subject\nCan I bring my son?",
            channel=Channel.EMAIL,
            is_new_patient=False,
            clinic_name="Demo Clinic",
            now=WED_NIGHT_NY,
        )
        assert outcome.replies == ["after_hours"]
        reply = await session.get(Message, outcome.reply_message_ids[0])
        assert reply is not None and reply.channel is Channel.EMAIL
        assert reply.conversation_id == thread.id


@pytest.mark.slow
async def test_a_spanish_speaker_texting_at_night_gets_the_spanish_reply_by_sms(
    stack: Stack,
) -> None:
    stack.clock_file.write_text(repr((WED_NIGHT_NY - datetime.now(UTC)).total_seconds()))  # type: ignore[union-attr]
    await do_seed_templates(stack.db)
    await closed_front_desk(stack.db)
    await actions.do_create_patient(
        stack.db,
        stack.ring,
        SYSTEM,
        NewPatient(name="Lucía Ejemplo", phone=PATIENT_NUMBER, language="es", time_zone=NY),
        region="US",
    )
    await stack.text_from_patient("¿Puedo cambiar mi cita?")

    await eventually(lambda: _has_messages(stack), "the after-hours text at the fake Twilio")
    (sent,) = stack.fake.messages
    assert (sent.to, sent.from_) == (PATIENT_NUMBER, CLINIC_NUMBER)
    assert sent.body.startswith("Gracias por su mensaje, Lucía.")
    async with stack.db.reader() as session:
        conversation = (await session.scalars(select(Conversation))).one()
    assert conversation.after_hours_replied_at is not None


async def _has_messages(stack: Stack) -> bool:
    return bool(stack.fake.messages)


async def test_the_emergency_text_may_be_written_per_language(db: Database, ring: KeyRing) -> None:
    await do_set_setting(
        db,
        SYSTEM,
        "triage.reply",
        {"en": "Call 911 now.", "es": "Llame al 911 ahora, {{ first_name }}."},
    )
    await closed_front_desk(db)
    await patient(db, ring, language="es-MX")
    await text_in(db, ring, "tengo dolor de pecho, chest pain")
    assert [body for _, body in await outbound(db, ring)] == ["Llame al 911 ahora, Avery."]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"es": ""}, r"triage.reply.es: expected the non-empty text"),
        ({"klingon!": "x"}, r"triage.reply.klingon!: expected a language code"),
        ({"es": "Llame {{ phone }}"}, r"triage.reply.es: unknown placeholder"),
        ({}, r"triage.reply: expected the text"),
    ],
)
async def test_a_bad_emergency_text_is_refused_naming_the_language(
    db: Database, value: object, error: str
) -> None:
    from hub.routing.rules import RuleInvalid

    with pytest.raises(RuleInvalid, match=error):
        await do_set_setting(db, SYSTEM, "triage.reply", value)


async def test_an_urgent_whatsapp_message_gets_the_emergency_answer_by_text(
    db: Database, ring: KeyRing
) -> None:
    """The hub cannot send on WhatsApp yet; the emergency answer goes by SMS to the same
    number rather than being refused and lost."""
    await closed_front_desk(db)
    await patient(db, ring)
    inbound = InboundMessage(
        provider="twilio_sms",
        provider_message_id="SM" + uuid.uuid4().hex,
        channel=Channel.WHATSAPP,
        from_address=PHONE,
        to_address="+15550109999",
        body="I have chest pain",
    )
    await actions.do_receive_inbound(db, ring, inbound, {}, help_text="help", clinic=CLINIC)
    replies = await outbound(db, ring)
    assert len(replies) == 1 and replies[0][0] is Channel.SMS
    assert "911" in replies[0][1]
