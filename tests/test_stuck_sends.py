"""A send whose sender died between claiming it and recording Twilio's answer: the sweep asks
Twilio (the fake, through the real SDK) whether it has the message, records it when it does,
and sends it again when it does not. The patient gets it once either way."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from fakes.twilio import FakeTwilio, start_fake_twilio
from hub.audit import Actor
from hub.channels.registry import CHANNEL_PROVIDERS, resolve_adapter
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import MessageStatus
from hub.inbox import actions
from hub.inbox.models import Conversation, DeliveryAttempt, Message
from hub.inbox.schemas import NewPatient
from tests.conftest import make_staff
from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN, CLINIC_NUMBER, PATIENT_NUMBER
from worker.jobs import run_resolve_stuck_sends

pytestmark = pytest.mark.slow


@dataclass
class Hub:
    db: Database
    ring: KeyRing
    fake: FakeTwilio
    settings: Settings


@pytest.fixture
async def hub(fresh_db_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Hub]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    ring = KeyRing.generate("stuck1")
    # No status callbacks: they would tell the hub Twilio's id and hide what the sweep does.
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, post_callbacks=False)
    runner, base = await start_fake_twilio(fake)
    settings = Settings(
        database_url=fresh_db_url,
        redis_url=redis_url,
        keys=ring,
        public_url="http://127.0.0.1:9",
        var_dir=tmp_path / "var",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_base=base,
        twilio_from_number=CLINIC_NUMBER,
        send_stuck_s=60.0,
        log_format="text",
    )
    db = Database.connect(fresh_db_url)
    try:
        yield Hub(db, ring, fake, settings)
    finally:
        await runner.cleanup()
        await db.dispose()


async def queued_reply(hub: Hub) -> uuid.UUID:
    """A staff reply to a patient's SMS thread, queued for its first send."""
    staff = await make_staff(hub.db)
    patient_id = await actions.do_create_patient(
        hub.db,
        hub.ring,
        Actor.system("test"),
        NewPatient(name="Avery Sample", phone=PATIENT_NUMBER, verified=True),
        region="US",
    )
    async with hub.db.transaction() as session:
        conversation = Conversation(patient_id=patient_id, channel="sms")
        session.add(conversation)
        await session.flush()
        conversation_id = conversation.id
    queued = await actions.do_reply(
        hub.db, hub.ring, staff, conversation_id, "Your results are ready; please call us."
    )
    return queued.message_id


async def claimed_reply(hub: Hub, *, minutes_ago: float) -> actions.SendTask:
    """A staff reply whose first attempt was claimed ``minutes_ago`` (by a sender that died)."""
    message_id = await queued_reply(hub)
    claim = await actions.do_claim_send(
        hub.db,
        hub.ring,
        message_id,
        provider=CHANNEL_PROVIDERS,
        public_url=hub.settings.public_url,
        now=utcnow() - timedelta(minutes=minutes_ago),
    )
    assert claim.task is not None
    return claim.task


async def message_and_attempts(hub: Hub, message_id: uuid.UUID) -> tuple[Message, list[Any]]:
    async with hub.db.reader() as session:
        message = await session.get(Message, message_id)
        attempts = (
            await session.scalars(
                select(DeliveryAttempt)
                .where(DeliveryAttempt.message_id == message_id)
                .order_by(DeliveryAttempt.attempt)
            )
        ).all()
    assert message is not None
    return message, list(attempts)


async def test_a_send_twilio_has_is_recorded_not_sent_again(hub: Hub) -> None:
    task = await claimed_reply(hub, minutes_ago=5)
    adapter = resolve_adapter(task.provider, hub.settings)
    try:  # the dead sender's call reached Twilio; its answer was never recorded
        await adapter.send(task.outbound, task.decision)
    finally:
        await adapter.close()
    assert len(hub.fake.messages) == 1

    summary = await run_resolve_stuck_sends(hub.settings)

    assert "found at provider: 1" in summary
    assert len(hub.fake.messages) == 1
    message, attempts = await message_and_attempts(hub, task.outbound.message_id)
    assert message.provider_message_id == hub.fake.messages[0].sid
    assert [(a.attempt, a.provider_message_id) for a in attempts] == [(1, hub.fake.messages[0].sid)]
    # Twilio's callbacks went out while nobody knew the id; its status now is what counts.
    assert hub.fake.messages[0].status == "delivered"
    assert message.status is MessageStatus.DELIVERED and message.delivered_at is not None


async def test_a_send_twilio_never_got_goes_out_once(hub: Hub) -> None:
    task = await claimed_reply(hub, minutes_ago=5)

    summary = await run_resolve_stuck_sends(hub.settings)

    assert "sent again: 1" in summary
    assert [m.body for m in hub.fake.messages] == [task.outbound.body]
    message, attempts = await message_and_attempts(hub, task.outbound.message_id)
    assert message.provider_message_id == hub.fake.messages[0].sid
    first = attempts[0]
    assert (first.attempt, first.status, first.error_code) == (1, MessageStatus.FAILED, "lost")
    assert attempts[1].provider_message_id == hub.fake.messages[0].sid
    # A second sweep finds nothing left to do.
    assert await run_resolve_stuck_sends(hub.settings) == "stuck: 0"
    assert len(hub.fake.messages) == 1


async def test_a_send_still_within_its_call_is_left_alone(hub: Hub) -> None:
    task = await claimed_reply(hub, minutes_ago=0.1)  # its sender may still be waiting

    assert await run_resolve_stuck_sends(hub.settings) == "stuck: 0"

    assert hub.fake.messages == []
    message, _ = await message_and_attempts(hub, task.outbound.message_id)
    assert message.status is MessageStatus.SENDING


async def test_a_send_whose_answer_was_lost_is_asked_about_not_sent_twice(hub: Hub) -> None:
    """Twilio made the message but the connection dropped before its answer: sending again at
    once would text the patient twice. The attempt stays claimed; the sweep finds it at Twilio
    and records it, and nothing more is sent."""
    from worker.jobs import run_send_message

    message_id = await queued_reply(hub)
    hub.fake.lose_answers(PATIENT_NUMBER)

    outcome = await run_send_message(message_id, hub.settings)

    assert outcome.startswith("failed: network")
    assert len(hub.fake.messages) == 1  # Twilio has it
    message, attempts = await message_and_attempts(hub, message_id)
    assert message.status is MessageStatus.SENDING  # not failed, not queued for a retry
    assert [(a.attempt, a.status) for a in attempts] == [(1, MessageStatus.SENDING)]
    assert message.next_attempt_at is None

    # A retry job run anyway (a duplicate) finds the attempt claimed and sends nothing.
    assert await run_send_message(message_id, hub.settings) != "sent"
    assert len(hub.fake.messages) == 1

    async with hub.db.transaction() as session:  # the sweep's wait has passed
        [attempt] = (await session.scalars(select(DeliveryAttempt))).all()
        attempt.created_at = utcnow() - timedelta(minutes=5)
    summary = await run_resolve_stuck_sends(hub.settings)

    assert "found at provider: 1" in summary
    assert len(hub.fake.messages) == 1
    message, attempts = await message_and_attempts(hub, message_id)
    assert message.provider_message_id == hub.fake.messages[0].sid
