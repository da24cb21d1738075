"""Replies to journey questions (which enrollment they answer, free-text answers, answers back
to the patient, questions that closed) and a failed step message falling back to the next
channel."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.channels.base import FailureClass, InboundMessage
from hub.consent import actions as consent
from hub.consent.models import ConsentSource, ConsentState, Purpose
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, MessageStatus
from hub.inbox import actions
from hub.inbox.actions.delivery import SendOutcome, do_record_outcomes
from hub.inbox.models import Message, Note
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.dispatch import do_prepare_batch, providers_for
from hub.journeys.models import Enrollment, RunStatus, StepRun, SurveyAnswer
from hub.templates.actions import do_seed_templates

NY = ZoneInfo("America/New_York")
SYSTEM = Actor.system("test")
CLINIC = {"name": "Demo Clinic", "phone": "+15550109999"}
PHONE = "+15550100101"

ASKS = """\
key: test_asks
name: Asks
purpose: reminders
anchor: appointment_start
steps:
  - id: ask
    offset: -24h
    template: appointment_reminder
    channels: [sms, email]
    asks: confirmation
    on_reply:
      confirm:
        do: [confirm_appointment, cancel_remaining_asks, notify_staff]
        reply: appointment_confirmed
"""


@pytest.fixture(autouse=True)
def today(set_clock: Any) -> None:
    set_clock(datetime(2026, 11, 20, 12, tzinfo=UTC))


@pytest.fixture
async def patient_id(db: Database, ring: KeyRing) -> uuid.UUID:
    await do_seed_templates(db)
    await journeys.do_install_journey(db, SYSTEM, ASKS, "asks.yaml")
    pid = await actions.do_create_patient(
        db,
        ring,
        SYSTEM,
        NewPatient(
            name="Avery Sample",
            phone=PHONE,
            email="avery@example.org",
            time_zone="America/New_York",
            channel_order=["sms", "email"],
        ),
        region="US",
    )
    async with db.transaction() as session:  # surveys need the patient's opt-in
        change = consent.ConsentChange(ConsentSource.STAFF, "staff:x", "asked in person")
        for channel in (Channel.SMS, Channel.EMAIL):
            session.add(
                change.record(
                    pid,
                    channel,
                    Purpose.SURVEYS,
                    ConsentState.GRANTED,
                    datetime(2026, 11, 1, tzinfo=UTC),
                )
            )
    return pid


async def dispatch(db: Database, ring: KeyRing, at: datetime) -> Any:
    claimed = await journeys.do_claim_due(db, now=at)
    return await do_prepare_batch(
        db,
        ring,
        claimed,
        providers=providers_for({Channel.SMS, Channel.EMAIL}, {}),
        clinic=CLINIC,
        public_url="https://hub.example.org",
        now=at,
    )


async def reply(db: Database, ring: KeyRing, body: str) -> None:
    inbound = InboundMessage(
        provider="twilio_sms",
        provider_message_id="SM" + uuid.uuid4().hex,
        channel=Channel.SMS,
        from_address=PHONE,
        to_address="+15550109999",
        body=body,
    )
    await actions.do_receive_inbound(db, ring, inbound, {}, help_text="help", clinic=CLINIC)


async def outbound_bodies(db: Database, ring: KeyRing) -> list[str]:
    async with db.reader() as session:
        messages = (
            await session.scalars(select(Message).order_by(Message.created_at, Message.id))
        ).all()
    return [m.unseal(ring, "body") or "" for m in messages if m.direction.value == "outbound"]


async def test_a_patient_with_two_appointments_confirms_the_newest_ask_then_the_other(
    db: Database, ring: KeyRing, patient_id: uuid.UUID
) -> None:
    first = datetime(2026, 11, 25, 10, tzinfo=NY)
    second = datetime(2026, 11, 26, 10, tzinfo=NY)
    for external, start in (("visit-a", first), ("visit-b", second)):
        await journeys.do_enroll(
            db,
            SYSTEM,
            "test_asks",
            patient_id,
            appointment=journeys.NewAppointment(external, start),
            now=datetime(2026, 11, 20, tzinfo=UTC),
        )
    # One ask a day (the daily cap): visit-a's on the 24th, visit-b's on the 25th.
    await dispatch(db, ring, datetime(2026, 11, 24, 10, 0, tzinfo=NY))
    await dispatch(db, ring, datetime(2026, 11, 25, 10, 0, tzinfo=NY))

    await reply(db, ring, "C")
    confirmed = await confirmed_visits(db)
    assert confirmed == {"visit-b"}  # the ask sent last is the one the patient is answering
    await reply(db, ring, "yes")
    assert await confirmed_visits(db) == {"visit-a", "visit-b"}
    await reply(db, ring, "C")  # nothing is open any more: just a message for staff
    assert await confirmed_visits(db) == {"visit-a", "visit-b"}

    bodies = await outbound_bodies(db, ring)
    assert sum("is confirmed" in b for b in bodies) == 2  # each confirmation answered once
    async with db.reader() as session:
        notes = (await session.scalars(select(Note))).all()
    assert [n.unseal(ring, "body") for n in notes] == [
        "The patient confirmed their appointment by reply."
    ] * 2


async def confirmed_visits(db: Database) -> set[str]:
    from hub.journeys.models import Appointment

    async with db.reader() as session:
        rows = (
            await session.execute(
                select(Appointment.external_id)
                .join(Enrollment, Enrollment.appointment_id == Appointment.id)
                .where(Enrollment.confirmed_at.is_not(None))
            )
        ).all()
    return {r[0] for r in rows}


async def test_a_question_closes_after_a_week(
    db: Database, ring: KeyRing, patient_id: uuid.UUID, set_clock: Any
) -> None:
    start = datetime(2026, 11, 25, 10, tzinfo=NY)
    await journeys.do_enroll(
        db,
        SYSTEM,
        "test_asks",
        patient_id,
        appointment=journeys.NewAppointment("visit-a", start),
        now=datetime(2026, 11, 20, tzinfo=UTC),
    )
    await dispatch(db, ring, start - timedelta(hours=24))
    set_clock(start - timedelta(hours=24) + timedelta(days=8))
    await reply(db, ring, "C")
    assert await confirmed_visits(db) == set()


async def test_a_low_score_gets_the_free_text_question_and_its_answer_is_kept_encrypted(
    db: Database, ring: KeyRing, patient_id: uuid.UUID
) -> None:
    from importlib import resources

    text = resources.files("hub.journeys").joinpath("examples", "post_visit_follow_up.yaml")
    await journeys.do_install_journey(db, SYSTEM, text.read_text(), "post_visit_follow_up.yaml")
    visit = datetime(2026, 11, 18, 15, tzinfo=NY)
    await journeys.do_enroll(
        db, SYSTEM, "post_visit_follow_up", patient_id, anchor_at=visit, now=visit
    )
    await dispatch(db, ring, visit + timedelta(days=1))
    await reply(db, ring, "5")
    batch = await dispatch(db, ring, visit + timedelta(days=1, hours=2))
    # 5 < 7: the follow-up goes, but the daily cap (the NPS question went today) holds it to
    # the next morning. A reply before then answers nothing: the question is not out yet.
    [follow_up] = batch.results
    assert follow_up.outcome == "deferred"
    await reply(db, ring, "Nothing else, thanks")
    morning = datetime(2026, 11, 20, 8, tzinfo=NY)
    claim = await actions.do_claim_send(
        db, ring, follow_up.message_id, provider="twilio_sms", public_url="https://x", now=morning
    )
    assert claim.task is not None
    words = "The wait at the front desk was long."
    await reply(db, ring, words)

    async with db.reader() as session:
        answers = (await session.scalars(select(SurveyAnswer).order_by(SurveyAnswer.id))).all()
        notes = (await session.scalars(select(Note))).all()
    assert [(a.step_id, a.score) for a in answers] == [("nps", 5), ("could_do_better", None)]
    assert answers[1].unseal(ring, "text") == words
    assert answers[1].text_enc is not None and words.encode() not in answers[1].text_enc
    assert "could_do_better" in (notes[-1].unseal(ring, "body") or "")
    assert "Thank you" in (await outbound_bodies(db, ring))[-1]  # survey_thanks answered


async def test_a_step_message_that_failed_for_good_falls_back_to_the_next_channel(
    db: Database, ring: KeyRing, patient_id: uuid.UUID
) -> None:
    start = datetime(2026, 11, 25, 10, tzinfo=NY)
    await journeys.do_enroll(
        db,
        SYSTEM,
        "test_asks",
        patient_id,
        appointment=journeys.NewAppointment("visit-a", start),
        now=datetime(2026, 11, 20, tzinfo=UTC),
    )
    at = start - timedelta(hours=24)
    first = await dispatch(db, ring, at)
    [task] = first.tasks
    assert task.outbound.channel is Channel.SMS
    landline = FailureClass("30006", "the number is a landline", transient=False)
    await do_record_outcomes(db, [SendOutcome(task, failure=landline)], retry_base_s=1)

    second = await dispatch(db, ring, at + timedelta(minutes=1))
    [fallback] = second.tasks
    assert fallback.outbound.channel is Channel.EMAIL
    assert fallback.outbound.to_address == "avery@example.org"
    async with db.reader() as session:
        runs = (await session.scalars(select(StepRun).order_by(StepRun.attempt))).all()
        failed = await session.get(Message, task.outbound.message_id)
    assert [(r.attempt, r.channel, r.status) for r in runs] == [
        (1, "sms", RunStatus.SENT),
        (2, "email", RunStatus.SENT),
    ]
    assert failed is not None and failed.status is MessageStatus.FAILED
    assert runs[1].reason == "sms: refused (tried): an earlier attempt of this step failed on it"

    # Email fails too: no channel is left, so no third attempt.
    await do_record_outcomes(db, [SendOutcome(fallback, failure=landline)], retry_base_s=1)
    assert (await dispatch(db, ring, at + timedelta(minutes=2))).tasks == ()


async def test_the_patient_card_lists_the_patients_journeys(
    db: Database, ring: KeyRing, patient_id: uuid.UUID
) -> None:
    from hub.inbox.actions.conversations import do_open_conversation
    from tests.conftest import make_staff

    start = datetime(2026, 11, 25, 10, tzinfo=NY)
    await journeys.do_enroll(
        db,
        SYSTEM,
        "test_asks",
        patient_id,
        appointment=journeys.NewAppointment("visit-a", start),
        now=datetime(2026, 11, 20, tzinfo=UTC),
    )
    await dispatch(db, ring, start - timedelta(hours=24))
    await reply(db, ring, "C")
    async with db.reader() as session:
        conversation = (await session.scalars(select(Message))).first()
    assert conversation is not None
    staff = await make_staff(db)
    view = await do_open_conversation(db, ring, staff, conversation.conversation_id)
    [line] = view.patient.journeys
    assert (line.journey, line.status, line.confirmed) == ("Asks", "active", True)
    assert line.appointment_at == start and line.next_step_at is None


async def progress_events(db: Database) -> list[dict[str, Any]]:
    from hub.outbox import OutboxEvent

    async with db.reader() as session:
        events = (
            await session.scalars(
                select(OutboxEvent).where(OutboxEvent.topic == "notify:journey:progress")
            )
        ).all()
    return [dict(e.payload) for e in events]


async def test_an_answer_tells_the_coordinators_screens_to_count_again(
    db: Database, ring: KeyRing, patient_id: uuid.UUID
) -> None:
    start = datetime(2026, 11, 25, 10, tzinfo=NY)
    await journeys.do_enroll(
        db,
        SYSTEM,
        "test_asks",
        patient_id,
        appointment=journeys.NewAppointment("visit-a", start),
        now=datetime(2026, 11, 20, tzinfo=UTC),
    )
    await dispatch(db, ring, start - timedelta(hours=24))
    before = len(await progress_events(db))
    await reply(db, ring, "Is there parking?")  # answers nothing: the funnel is unchanged
    assert len(await progress_events(db)) == before
    await reply(db, ring, "C")  # the Journeys page, open elsewhere, shows it confirmed
    after = await progress_events(db)
    assert after == [{"room": "journeys", "journey": "test_asks"}] * (before + 1)
