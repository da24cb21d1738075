"""The consent gate: may_send and choose_channel over purposes x states x channels x times,
quiet hours in the patient's zone (DST included), caps, fallback, deferral without loss."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.consent import actions as consent
from hub.consent.models import ConsentRecord, ConsentSource, ConsentState, Purpose
from hub.consent.policy import CapUsage, decide
from hub.consent.rules import ConsentPolicy
from hub.consent.schemas import Outcome
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, MessageStatus
from hub.inbox import actions
from hub.inbox.actions.automated import do_send_automated
from hub.inbox.models import Message, Patient
from hub.inbox.schemas import NewPatient, PatientView
from hub.outbox import OutboxEvent

ZONES = ("America/New_York", "Europe/Berlin", "Asia/Tokyo")
STATES = (None, ConsentState.GRANTED, ConsentState.REVOKED, ConsentState.UNKNOWN)
"""UNKNOWN is what START after STOP leaves for surveys and marketing, and what imports write:
neither an opt-in nor an opt-out."""
AUTOMATED = {Purpose.REMINDERS, Purpose.SURVEYS, Purpose.MARKETING}


def patient_in(tz: str) -> Patient:
    p = Patient(
        id=uuid.uuid4(),
        time_zone=tz,
        channel_order=["sms", "email", "voice"],
        unreachable={},
    )
    # decide() only asks whether an address exists; any bytes do.
    p.phone_enc = p.email_enc = b"x"
    return p


def record(p: Patient, channel: Channel, purpose: Purpose, state: ConsentState) -> ConsentRecord:
    return ConsentRecord(
        patient_id=p.id,
        channel=channel,
        purpose=purpose,
        state=state,
        source=ConsentSource.KEYWORD,
        actor="patient:x",
        evidence="STOP",
        created_at=datetime(2026, 11, 2, 15, 0, tzinfo=UTC),
    )


def local(tz: str, y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz))


def expected(
    purpose: Purpose, state: ConsentState | None, inside: bool, channel: Channel
) -> tuple[Outcome, str]:
    """An oracle written from the policy text, independent of the implementation."""
    if channel is Channel.WHATSAPP:
        # Received only: nothing can be sent on it, whatever the patient agreed to.
        return Outcome.REFUSED, "not_connected"
    if state is ConsentState.REVOKED:
        return Outcome.REFUSED, "opted_out"
    if purpose in (Purpose.SURVEYS, Purpose.MARKETING) and state is not ConsentState.GRANTED:
        return Outcome.REFUSED, "no_opt_in"
    if purpose in AUTOMATED and not inside:
        return Outcome.DEFERRED, "quiet_hours"
    if channel is Channel.VOICE and not inside:
        # Calls ring now; a staff reply is never placed as a call outside the window.
        return Outcome.REFUSED, "call_outside_window"
    return Outcome.ALLOWED, "ok"


TIMES = [
    ("inside", 12, 0, True),
    ("late", 22, 30, False),
    ("early", 7, 59, False),
    ("opening", 8, 0, True),
    ("closing", 21, 0, False),
]


@pytest.mark.parametrize(
    ("purpose", "state", "channel", "tz", "when"),
    list(
        itertools.product(
            [Purpose.CARE, Purpose.REMINDERS, Purpose.SURVEYS, Purpose.MARKETING],
            STATES,
            list(Channel),
            ZONES,
            TIMES,
        )
    ),
)
def test_may_send_table(
    purpose: Purpose,
    state: ConsentState | None,
    channel: Channel,
    tz: str,
    when: tuple[str, int, int, bool],
) -> None:
    _, hour, minute, inside = when
    p = patient_in(tz)
    at = local(tz, 2026, 11, 18, hour, minute)
    latest = {purpose: record(p, channel, purpose, state)} if state else {}
    decision = decide(p, channel, purpose, at, latest, ConsentPolicy(), CapUsage())
    assert (decision.outcome, decision.code) == expected(purpose, state, inside, channel), (
        decision.reason
    )
    if decision.deferred:
        assert decision.not_before is not None
        nb = decision.not_before.astimezone(ZoneInfo(tz))
        assert nb.time() == time(8, 0) and nb > at
        assert nb - at <= timedelta(hours=11)
    if decision.outcome is Outcome.ALLOWED and purpose is Purpose.CARE and not inside:
        assert decision.warnings and "outside 08:00-21:00" in decision.warnings[0]
    if decision.code == "opted_out":
        # The day the patient lived (15:00 UTC on Nov 2 is already Nov 3 in Tokyo).
        day = datetime(2026, 11, 2, 15, 0, tzinfo=UTC).astimezone(ZoneInfo(tz)).date()
        assert "opted out of" in decision.reason
        assert f"on {day:%Y-%m-%d} by replying STOP" in decision.reason


@pytest.mark.parametrize(
    ("source", "evidence"), [(ConsentSource.KEYWORD, "START"), (ConsentSource.IMPORT, "import")]
)
@pytest.mark.parametrize("channel", [Channel.SMS, Channel.EMAIL, Channel.VOICE, Channel.CHAT])
def test_an_unknown_record_is_no_opt_in_and_no_opt_out(
    source: ConsentSource, evidence: str, channel: Channel
) -> None:
    p = patient_in("America/New_York")
    at = local("America/New_York", 2026, 11, 18, 12, 0)
    for purpose in Purpose:
        if purpose is Purpose.SERVICE:
            continue
        unknown = record(p, channel, purpose, ConsentState.UNKNOWN)
        unknown.source, unknown.evidence = source, evidence
        decision = decide(p, channel, purpose, at, {purpose: unknown}, ConsentPolicy(), CapUsage())
        wanted = "no_opt_in" if purpose in (Purpose.SURVEYS, Purpose.MARKETING) else "ok"
        assert decision.code == wanted, (purpose, decision.reason)


@pytest.mark.parametrize(
    ("at", "next_utc"),
    [
        # Spring forward: 2026-03-08 02:00 EST -> 03:00 EDT. 07:30 local is before the window;
        # 08:00 that day is 12:00Z (UTC-4), not 13:00Z.
        (local("America/New_York", 2026, 3, 8, 7, 30), datetime(2026, 3, 8, 12, 0, tzinfo=UTC)),
        # The evening before the change: the next morning is already on EDT.
        (local("America/New_York", 2026, 3, 7, 22, 0), datetime(2026, 3, 8, 12, 0, tzinfo=UTC)),
        # Fall back: 2026-11-01 02:00 EDT -> 01:00 EST; next 08:00 is 13:00Z (UTC-5).
        (local("America/New_York", 2026, 10, 31, 23, 0), datetime(2026, 11, 1, 13, 0, tzinfo=UTC)),
        # Europe's change (2026-03-29): 06:00 CET is before the window; 08:00 CEST is 06:00Z.
        (local("Europe/Berlin", 2026, 3, 29, 6, 0), datetime(2026, 3, 29, 6, 0, tzinfo=UTC)),
    ],
)
def test_quiet_hours_across_dst(at: datetime, next_utc: datetime) -> None:
    p = patient_in(str(at.tzinfo))
    decision = decide(p, Channel.SMS, Purpose.REMINDERS, at, {}, ConsentPolicy(), CapUsage())
    assert decision.deferred and decision.not_before == next_utc


def test_caps_defer_to_the_next_day_and_the_week_window() -> None:
    p = patient_in("America/New_York")
    at = local("America/New_York", 2026, 11, 18, 10, 0)
    day = decide(
        p,
        Channel.SMS,
        Purpose.REMINDERS,
        at,
        {},
        ConsentPolicy(),
        CapUsage(today=1, week=1, oldest_in_week=at - timedelta(hours=1)),
    )
    assert day.deferred and day.code == "frequency_cap"
    assert day.not_before == local("America/New_York", 2026, 11, 19, 8, 0)
    oldest = local("America/New_York", 2026, 11, 13, 15, 0)
    week = decide(
        p,
        Channel.SMS,
        Purpose.REMINDERS,
        at,
        {},
        ConsentPolicy(),
        CapUsage(today=0, week=3, oldest_in_week=oldest),
    )
    assert week.deferred and week.not_before == oldest + timedelta(days=7)
    care = decide(p, Channel.SMS, Purpose.CARE, at, {}, ConsentPolicy(), CapUsage(today=9, week=9))
    assert care.allowed  # caps count automated messages, not replies


def test_policy_is_data_and_validated() -> None:
    policy = ConsentPolicy.from_data(
        {
            "send_window": ["09:00", "18:00"],
            "caps": {"per_day": 2, "per_week": 5},
            "opt_in_required": ["marketing"],
        }
    )
    assert policy.to_data()["send_window"] == ["09:00", "18:00"]
    p = patient_in("Asia/Tokyo")
    at = local("Asia/Tokyo", 2026, 11, 18, 8, 30)
    assert decide(p, Channel.SMS, Purpose.REMINDERS, at, {}, policy, CapUsage()).deferred
    assert decide(
        p,
        Channel.SMS,
        Purpose.SURVEYS,
        local("Asia/Tokyo", 2026, 11, 18, 12),
        {},
        policy,
        CapUsage(),
    ).allowed  # surveys no longer need opt-in here
    from hub.consent.rules import PolicyInvalid

    with pytest.raises(PolicyInvalid, match="send_window"):
        ConsentPolicy.from_data({"send_window": ["21:00", "08:00"]})
    with pytest.raises(PolicyInvalid, match="unknown policy fields: quiet"):
        ConsentPolicy.from_data({"quiet": True})


def test_unreachable_and_missing_addresses_refuse() -> None:
    p = patient_in("UTC")
    p.email_enc = None
    p.unreachable = {"sms": "landline"}
    at = datetime(2026, 11, 18, 12, tzinfo=UTC)
    assert decide(p, Channel.EMAIL, Purpose.CARE, at, {}).code == "no_address"
    landline = decide(p, Channel.SMS, Purpose.CARE, at, {})
    assert landline.code == "unreachable" and "landline" in landline.reason


# -- with the database -------------------------------------------------------------------

STAFF = Actor.system("test")


async def _patient(
    db: Database,
    ring: KeyRing,
    tz: str = "America/New_York",
    order: tuple[str, ...] = ("sms", "email", "voice"),
) -> uuid.UUID:
    return await actions.do_create_patient(
        db,
        ring,
        STAFF,
        NewPatient(
            name="Avery Sample",
            phone="+15550100101",
            email="avery@example.org",
            time_zone=tz,
            channel_order=list(order),
        ),
        region="US",
    )


def reminder_text(text: str = "Reminder: your visit is tomorrow at 10:00.") -> Any:
    async def render(session: Any, channel: Channel, patient: PatientView) -> str:
        return f"[{channel.value}] {text}"

    return render


async def test_choose_channel_walks_the_order_and_says_why(db: Database, ring: KeyRing) -> None:
    pid = await _patient(db, ring)
    async with db.transaction() as session:
        await consent.revoke_channel(
            session,
            pid,
            Channel.SMS,
            consent.ConsentChange(ConsentSource.KEYWORD, f"patient:{pid}", "STOP"),
        )
    at = local("America/New_York", 2026, 11, 18, 12)
    async with db.reader() as session:
        patient = await session.get(Patient, pid)
        assert patient is not None
        choice = await consent.choose_channel(session, patient, Purpose.REMINDERS, at)
        none = await consent.choose_channel(session, patient, Purpose.MARKETING, at)
    assert choice.decision is not None and choice.decision.channel is Channel.EMAIL
    assert [d.code for d in choice.passed_over] == ["opted_out"]
    assert none.decision is None
    assert [d.code for d in none.passed_over] == ["opted_out", "no_opt_in", "no_opt_in"]


async def test_stop_then_reminder_goes_by_email_with_the_reason_recorded(
    db: Database, ring: KeyRing
) -> None:
    pid = await _patient(db, ring)
    async with db.transaction() as session:
        await consent.revoke_channel(
            session,
            pid,
            Channel.SMS,
            consent.ConsentChange(ConsentSource.KEYWORD, f"patient:{pid}", "STOP"),
        )
    sent = await do_send_automated(
        db,
        ring,
        pid,
        purpose=Purpose.REMINDERS,
        render=reminder_text(),
        available={Channel.SMS, Channel.EMAIL},
        at=local("America/New_York", 2026, 11, 18, 12),
    )
    assert sent.outcome == "queued" and sent.channel is Channel.EMAIL
    async with db.reader() as session:
        message = await session.get(Message, sent.message_id)
    assert message is not None and message.channel is Channel.EMAIL
    assert message.unseal(ring, "body") == "[email] Reminder: your visit is tomorrow at 10:00."
    assert len(message.delivery_notes) == 1
    assert message.delivery_notes[0].startswith(
        "sms: refused (opted_out): patient opted out of SMS on "
    )
    assert "by replying STOP" in message.delivery_notes[0]


async def test_reminder_at_2230_goes_at_0800_next_day_once(db: Database, ring: KeyRing) -> None:
    pid = await _patient(db, ring)
    tz = "America/New_York"
    sent = await do_send_automated(
        db,
        ring,
        pid,
        purpose=Purpose.REMINDERS,
        render=reminder_text(),
        available={Channel.SMS},
        at=local(tz, 2026, 11, 18, 22, 30),
    )
    morning = local(tz, 2026, 11, 19, 8, 0)
    assert sent.outcome == "deferred" and sent.not_before == morning
    assert "deferred to 2026-11-19 08:00 America/New_York" in sent.reason

    claim = await actions.do_claim_send(
        db,
        ring,
        sent.message_id,
        provider="twilio_sms",
        public_url="https://hub.test",
        now=local(tz, 2026, 11, 18, 23, 0),
    )
    assert claim.task is None and claim.skipped == "not due yet"
    first = await actions.do_claim_send(
        db, ring, sent.message_id, provider="twilio_sms", public_url="https://hub.test", now=morning
    )
    second = await actions.do_claim_send(
        db, ring, sent.message_id, provider="twilio_sms", public_url="https://hub.test", now=morning
    )
    assert first.task is not None and first.task.outbound.to_address == "+15550100101"
    assert second.task is None and second.skipped == "already sending"


async def test_claim_rechecks_quiet_hours_and_defers_instead_of_dropping(
    db: Database, ring: KeyRing
) -> None:
    """A reminder queued at 20:59 whose job runs at 21:05 waits for the morning."""
    pid = await _patient(db, ring)
    tz = "America/New_York"
    sent = await do_send_automated(
        db,
        ring,
        pid,
        purpose=Purpose.REMINDERS,
        render=reminder_text(),
        available={Channel.SMS},
        at=local(tz, 2026, 11, 18, 20, 59),
    )
    assert sent.outcome == "queued"
    late = await actions.do_claim_send(
        db,
        ring,
        sent.message_id,
        provider="twilio_sms",
        public_url="https://hub.test",
        now=local(tz, 2026, 11, 18, 21, 5),
    )
    assert late.task is None and late.skipped and late.skipped.startswith("deferred:")
    assert late.effect_ids  # the job is put back for the morning
    async with db.reader() as session:
        message = await session.get(Message, sent.message_id)
    assert message is not None and message.status is MessageStatus.QUEUED
    assert message.next_attempt_at == local(tz, 2026, 11, 19, 8, 0)


async def test_template_error_fails_the_send_with_the_reason(db: Database, ring: KeyRing) -> None:
    from hub.errors import HubError

    async def broken(session: Any, channel: Channel, patient: PatientView) -> str:
        raise HubError("template appointment_reminder (sms, en) needs appointment.start")

    pid = await _patient(db, ring)
    sent = await do_send_automated(
        db,
        ring,
        pid,
        purpose=Purpose.REMINDERS,
        render=broken,
        available={Channel.SMS},
        at=local("America/New_York", 2026, 11, 18, 12),
    )
    assert sent.outcome == "failed"
    async with db.reader() as session:
        message = (await session.scalars(select(Message))).one()
        topics = [e.topic for e in (await session.scalars(select(OutboxEvent))).all()]
    assert "job:send_message" not in topics  # nothing will ever try to send it
    assert message.status is MessageStatus.FAILED and message.body_enc is None
    assert message.error_reason == (
        "not sent: template appointment_reminder (sms, en) needs appointment.start"
    )


async def test_caps_count_queued_automated_messages(db: Database, ring: KeyRing) -> None:
    pid = await _patient(db, ring)
    tz = "America/New_York"
    first = await do_send_automated(
        db,
        ring,
        pid,
        purpose=Purpose.REMINDERS,
        render=reminder_text(),
        available={Channel.SMS},
        at=local(tz, 2026, 11, 18, 10),
    )
    second = await do_send_automated(
        db,
        ring,
        pid,
        purpose=Purpose.REMINDERS,
        render=reminder_text(),
        available={Channel.SMS},
        at=local(tz, 2026, 11, 18, 11),
    )
    assert first.outcome == "queued"
    assert second.outcome == "deferred" and second.not_before == local(tz, 2026, 11, 19, 8)


async def test_a_real_template_missing_a_variable_fails_the_send(
    db: Database, ring: KeyRing
) -> None:
    """The shipped reminder needs the appointment's start time: without it nothing is sent."""
    from hub.inbox.actions.automated import template_renderer
    from hub.templates.actions import do_seed_templates

    await do_seed_templates(db)
    pid = await _patient(db, ring)
    clinic = {"name": "Demo Clinic", "phone": "+15550109999"}
    at = local("America/New_York", 2026, 11, 18, 12)
    broken = await do_send_automated(
        db,
        ring,
        pid,
        purpose=Purpose.REMINDERS,
        available={Channel.SMS},
        at=at,
        render=template_renderer(
            "appointment_reminder", appointment={"location": "Room 2"}, clinic=clinic
        ),
    )
    assert broken.outcome == "failed"
    assert "appointment_reminder (sms, en) needs appointment.start" in broken.reason
    good = await do_send_automated(
        db,
        ring,
        pid,
        purpose=Purpose.REMINDERS,
        available={Channel.SMS},
        at=at + timedelta(days=1),
        render=template_renderer(
            "appointment_reminder",
            clinic=clinic,
            appointment={
                "start": local("America/New_York", 2026, 11, 20, 10, 30),
                "location": "Room 2",
                "provider": "Dr. Demo",
            },
        ),
    )
    assert good.outcome == "queued"
    async with db.reader() as session:
        failed = await session.get(Message, broken.message_id)
        sent = await session.get(Message, good.message_id)
    assert failed is not None and failed.status is MessageStatus.FAILED
    assert failed.body_enc is None
    assert sent is not None
    body = sent.unseal(ring, "body") or ""
    assert "10:30" in body and "Avery" in body


async def test_a_send_whose_job_was_lost_is_requeued(db: Database, ring: KeyRing) -> None:
    from hub.inbox.actions.delivery import do_requeue_stalled

    pid = await _patient(db, ring)
    at = local("America/New_York", 2026, 11, 18, 12)
    sent = await do_send_automated(
        db,
        ring,
        pid,
        purpose=Purpose.REMINDERS,
        render=reminder_text(),
        available={Channel.SMS},
        at=at,
    )
    # Its job never ran (say Redis was flushed). Four minutes on: not yet; six: re-queued once.
    assert await do_requeue_stalled(db, now=at + timedelta(minutes=4)) == ()
    first = await do_requeue_stalled(db, now=at + timedelta(minutes=6))
    assert len(first) == 1
    assert await do_requeue_stalled(db, now=at + timedelta(minutes=7)) == ()
    claim = await actions.do_claim_send(
        db,
        ring,
        sent.message_id,
        provider="twilio_sms",
        public_url="https://hub.test",
        now=at + timedelta(minutes=7),
    )
    assert claim.task is not None
