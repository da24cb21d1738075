"""What a claimed send hands the provider, and what each claimer is told when it gets nothing
to send: tables for what `make mutate` found the suite did not hold (docs/testing.md)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.channels.registry import CHANNEL_PROVIDERS
from hub.consent.actions import do_record_consent
from hub.consent.models import ConsentState, Purpose
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, MessageStatus
from hub.inbox import actions
from hub.inbox.actions.outgoing import OutgoingFile
from hub.inbox.models import Conversation, DeliveryAttempt, Message
from hub.inbox.schemas import NewPatient
from hub.outbox import OutboxEvent
from tests.conftest import ON_POSTGRES, make_staff

pytestmark = pytest.mark.usefixtures("fresh_redis")


# --- what a claimed send hands the provider ---------------------------------------------------

CLINIC = "+15550100999"
PATIENT = "+15550100123"
PATIENTS: dict[uuid.UUID, uuid.UUID] = {}
"""Queued message -> its patient (the fixture's)."""


@pytest.fixture
async def queued(db: Database, ring: KeyRing) -> AsyncIterator[uuid.UUID]:
    yield await queue_reply(db, ring)


async def queue_reply(db: Database, ring: KeyRing) -> uuid.UUID:
    """A staff reply by text, queued for the send job."""
    staff = await make_staff(db)
    patient_id = await actions.do_create_patient(
        db,
        ring,
        Actor.system("test"),
        NewPatient(name="Avery Sample", phone=PATIENT, verified=True),
        region="US",
    )
    async with db.transaction() as session:
        conversation = Conversation(patient_id=patient_id, channel="sms", channel_address=CLINIC)
        session.add(conversation)
        await session.flush()
        conversation_id = conversation.id
    reply = await actions.do_reply(db, ring, staff, conversation_id, "Your results are ready.")
    PATIENTS[reply.message_id] = patient_id
    return reply.message_id


async def test_the_first_claim_hands_over_what_the_patient_gets(
    db: Database, ring: KeyRing, queued: uuid.UUID
) -> None:
    claim = await actions.do_claim_send(
        db, ring, queued, provider=CHANNEL_PROVIDERS, public_url="https://hub.example.org"
    )
    assert claim.task is not None
    out = claim.task.outbound
    assert (out.message_id, out.attempt, out.channel) == (queued, 1, Channel.SMS)
    assert (out.to_address, out.from_address, out.body) == (
        PATIENT,
        CLINIC,
        "Your results are ready.",
    )
    assert out.status_callback_url == (
        f"https://hub.example.org/webhooks/twilio/status?m={queued}&a=1"
    )
    assert claim.task.provider == CHANNEL_PROVIDERS[Channel.SMS]
    assert claim.task.decision.allowed
    # The staff screen hears the message is on its way.
    assert await _effects(db, claim.effect_ids) == [("notify:message:status", str(queued))]
    async with db.reader() as session:
        attempts = (await session.scalars(select(DeliveryAttempt))).all()
        message = await session.get(Message, queued)
    assert [(a.message_id, a.attempt) for a in attempts] == [(queued, 1)]
    assert attempts[0].created_at is not None
    assert message is not None and message.send_attempts == 1
    # A duplicate job gets nothing to send.
    again = await actions.do_claim_send(
        db, ring, queued, provider=CHANNEL_PROVIDERS, public_url="https://hub.example.org"
    )
    assert again.task is None and again.skipped is not None


async def test_a_photo_sent_without_words_reaches_the_patient_without_words(
    db: Database, ring: KeyRing
) -> None:
    """Staff may send a file alone: the text goes with an empty body and the photo's link,
    never a stand-in for the missing words."""
    staff = await make_staff(db)
    patient_id = await actions.do_create_patient(
        db,
        ring,
        Actor.system("test"),
        NewPatient(name="Avery Sample", phone=PATIENT, verified=True),
        region="US",
    )
    async with db.transaction() as session:
        conversation = Conversation(patient_id=patient_id, channel="sms", channel_address=CLINIC)
        session.add(conversation)
        await session.flush()
        conversation_id = conversation.id
    photo = OutgoingFile("wound-care.png", "image/png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    reply = await actions.do_reply(db, ring, staff, conversation_id, "", files=[photo])
    claim = await actions.do_claim_send(
        db, ring, reply.message_id, provider=CHANNEL_PROVIDERS, public_url="https://hub.example.org"
    )
    assert claim.task is not None
    out = claim.task.outbound
    assert (out.body, out.to_address, out.from_address) == ("", PATIENT, CLINIC)
    [link] = out.media_urls
    assert link.startswith("https://hub.example.org/media/")


async def test_a_channel_not_connected_fails_the_message_in_plain_words(
    db: Database, ring: KeyRing, queued: uuid.UUID
) -> None:
    claim = await actions.do_claim_send(
        db, ring, queued, provider={Channel.EMAIL: "smtp"}, public_url="https://hub.example.org"
    )
    assert claim.task is None
    assert claim.skipped == "the sms channel is not connected on this hub"
    # Staff see the failure at once.
    assert await _effects(db, claim.effect_ids) == [("notify:message:status", str(queued))]
    async with db.reader() as session:
        message = await session.get(Message, queued)
    assert message is not None
    assert (message.status, message.error_code, message.error_reason) == (
        MessageStatus.FAILED,
        "channel_unavailable",
        "the sms channel is not connected on this hub",
    )


async def test_a_missing_message_is_reported_not_found(db: Database, ring: KeyRing) -> None:
    claim = await actions.do_claim_send(
        db, ring, uuid.uuid4(), provider=CHANNEL_PROVIDERS, public_url="https://hub.example.org"
    )
    assert (claim.task, claim.effect_ids, claim.skipped) == (None, (), "not found")


async def _effects(db: Database, ids: tuple[uuid.UUID, ...]) -> list[tuple[str, str | None]]:
    """The outbox rows behind ``ids``: what is released after commit, and for which message."""
    async with db.reader() as session:
        rows = [await session.get(OutboxEvent, effect_id) for effect_id in ids]
    return [(r.topic, r.payload.get("message_id")) for r in rows if r is not None]


async def test_a_send_after_an_opt_out_fails_and_staff_see_why(
    db: Database, ring: KeyRing, queued: uuid.UUID
) -> None:
    staff = await make_staff(db, "ria.admin@demo-clinic.example.org")
    await do_record_consent(
        db,
        staff,
        PATIENTS[queued],
        Channel.SMS,
        [Purpose.CARE],
        ConsentState.REVOKED,
        "phone",
    )
    claim = await actions.do_claim_send(
        db, ring, queued, provider=CHANNEL_PROVIDERS, public_url="https://hub.example.org"
    )
    assert claim.task is None
    async with db.reader() as session:
        message = await session.get(Message, queued)
        attempts = (await session.scalars(select(DeliveryAttempt))).all()
    assert message is not None and attempts == []
    assert message.status is MessageStatus.FAILED
    assert message.error_code and message.error_reason
    assert claim.skipped == f"refused: {message.error_reason}"
    assert await _effects(db, claim.effect_ids) == [("notify:message:status", str(queued))]


async def test_a_job_that_runs_early_puts_itself_back(
    db: Database, ring: KeyRing, queued: uuid.UUID
) -> None:
    now = utcnow()
    async with db.transaction() as session:
        message = await session.get(Message, queued)
        assert message is not None
        message.next_attempt_at = now + timedelta(hours=1)
    claim = await actions.do_claim_send(
        db, ring, queued, provider=CHANNEL_PROVIDERS, public_url="https://hub.example.org", now=now
    )
    assert (claim.task, claim.skipped) == (None, "not due yet")
    assert await _effects(db, claim.effect_ids) == [("job:send_message", str(queued))]
    async with db.reader() as session:
        event = await session.get(OutboxEvent, claim.effect_ids[0])
        message = await session.get(Message, queued)
    assert event is not None and event.payload["delay_s"] == pytest.approx(3600, abs=1)
    assert message is not None and message.status is MessageStatus.QUEUED


async def test_a_reminder_at_night_waits_for_morning_and_is_never_dropped(
    db: Database, ring: KeyRing, set_clock: Callable[[datetime], None]
) -> None:
    # The reply is made now, through quiet hours: at noon, whatever time the suite runs.
    set_clock(datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0))
    staff = await make_staff(db)
    patient_id = await actions.do_create_patient(
        db,
        ring,
        Actor.system("test"),
        NewPatient(name="Avery Sample", phone=PATIENT, verified=True),
        region="US",
    )
    async with db.transaction() as session:
        conversation = Conversation(patient_id=patient_id, channel="sms", channel_address=CLINIC)
        session.add(conversation)
        await session.flush()
        conversation_id = conversation.id
    reply = await actions.do_reply(
        db, ring, staff, conversation_id, "See you tomorrow at 9.", purpose=Purpose.REMINDERS
    )
    night = utcnow().replace(hour=3, minute=0, second=0, microsecond=0)
    claim = await actions.do_claim_send(
        db,
        ring,
        reply.message_id,
        provider=CHANNEL_PROVIDERS,
        public_url="https://hub.example.org",
        now=night,
    )
    assert claim.task is None
    day = night.strftime("%Y-%m-%d")
    assert claim.skipped == (
        f"deferred: it is {day} 03:00 UTC for the patient, outside 08:00-21:00; "
        f"deferred to {day} 08:00 UTC"
    )
    async with db.reader() as session:
        message = await session.get(Message, reply.message_id)
        assert message is not None
        event = await session.get(OutboxEvent, claim.effect_ids[0])
    assert message.status is MessageStatus.QUEUED
    assert message.next_attempt_at == night.replace(hour=8)
    assert message.error_reason == "waiting: " + claim.skipped.removeprefix("deferred: ")
    assert event is not None and event.topic == "job:send_message"
    assert event.payload["message_id"] == str(reply.message_id)
    assert event.payload["delay_s"] == 5 * 3600


async def test_a_claimed_email_carries_its_reply_address_and_unsubscribe_link(
    db: Database, ring: KeyRing, set_clock: Callable[[datetime], None]
) -> None:
    # The reply is made now, through quiet hours: at noon, whatever time the suite runs.
    set_clock(datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0))
    staff = await make_staff(db)
    patient_id = await actions.do_create_patient(
        db,
        ring,
        Actor.system("test"),
        NewPatient(name="Avery Sample", phone=PATIENT, email="avery@example.org", verified=True),
        region="US",
    )
    async with db.transaction() as session:
        conversation = Conversation(
            patient_id=patient_id, channel="email", channel_address="front-desk@example.org"
        )
        session.add(conversation)
        await session.flush()
        conversation_id = conversation.id
    reply = await actions.do_reply(
        db, ring, staff, conversation_id, "See you tomorrow at 9.", purpose=Purpose.REMINDERS
    )
    noon = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
    claim = await actions.do_claim_send(
        db,
        ring,
        reply.message_id,
        provider=CHANNEL_PROVIDERS,
        public_url="https://hub.example.org",
        reply_domain="reply.demo-clinic.example.org",
        now=noon,
    )
    assert claim.task is not None
    out = claim.task.outbound
    assert (out.channel, out.to_address, out.status_callback_url) == (
        Channel.EMAIL,
        "avery@example.org",
        None,
    )
    assert out.reply_to is not None and out.reply_to.startswith("reply+")
    assert out.reply_to.endswith("@reply.demo-clinic.example.org")
    assert out.unsubscribe_url is not None
    assert out.unsubscribe_url.startswith("https://hub.example.org/unsubscribe/")
    assert claim.task.provider == CHANNEL_PROVIDERS[Channel.EMAIL]


# --- when two claimers meet ---------------------------------------------------------------------


async def _claim(db: Database, ring: KeyRing, message_id: uuid.UUID) -> actions.ClaimResult:
    return await actions.do_claim_send(
        db, ring, message_id, provider=CHANNEL_PROVIDERS, public_url="https://hub.example.org"
    )


async def _state(db: Database, message_id: uuid.UUID) -> tuple[Any, ...]:
    async with db.reader() as session:
        message = await session.get(Message, message_id)
        attempts = (await session.scalars(select(DeliveryAttempt))).all()
        effects = (await session.scalars(select(OutboxEvent))).all()
    assert message is not None
    return (
        message.status,
        message.send_attempts,
        [a.attempt for a in attempts],
        sum(e.topic == "notify:message:status" for e in effects),
    )


async def test_an_attempt_another_claimer_took_is_not_sent_again(
    db: Database, ring: KeyRing, queued: uuid.UUID
) -> None:
    """The unique (message, attempt) row is the last guard: a claimer that finds the message
    still queued but attempt 1 already written (another claimer got there without waiting for
    the message's row lock) hands nothing to the provider, and its transaction changes
    nothing. Both engines' locks keep two live claimers from meeting here (the next test), so
    the other claimer's row is written directly."""
    async with db.transaction() as session:
        session.add(
            DeliveryAttempt(
                message_id=queued, attempt=1, provider="twilio_sms", status=MessageStatus.SENDING
            )
        )
    before = await _state(db, queued)
    assert before == (MessageStatus.QUEUED, 0, [1], 0)
    claim = await _claim(db, ring, queued)
    assert claim == actions.ClaimResult(None, (), skipped="already claimed")
    assert await _state(db, queued) == before


@pytest.mark.postgres
@pytest.mark.skipif(not ON_POSTGRES, reason="SQLite has one writer: claimers cannot overlap")
async def test_concurrent_claimers_hand_the_provider_one_send(
    committed_db: Database, ring: KeyRing
) -> None:
    """Eight send jobs for one message (a duplicated enqueue, a retried job) race on
    PostgreSQL: one takes attempt 1, the others are told it is taken, and the patient gets one
    text."""
    message_id = await queue_reply(committed_db, ring)
    claims = await asyncio.gather(*(_claim(committed_db, ring, message_id) for _ in range(8)))
    winners = [c for c in claims if c.task is not None]
    assert len(winners) == 1
    assert winners[0].task is not None and winners[0].task.outbound.attempt == 1
    # The row lock makes the losers wait and see the claim; without it the unique attempt row
    # would refuse them instead. Either way none of them has anything to send.
    assert {c.skipped for c in claims if c.task is None} <= {"already sending", "already claimed"}
    assert all(c.effect_ids == () for c in claims if c.task is None)
    assert await _state(committed_db, message_id) == (MessageStatus.SENDING, 1, [1], 1)
