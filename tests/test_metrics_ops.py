"""The operations metrics in /metrics move when the thing happens: a send is delivered or
fails, a provider answers an error, a journey step cannot be sent, a status webhook is
processed. Each figure is compared with a recount of the raw rows the test made."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from aiohttp.test_utils import TestClient
from sqlalchemy import delete, select, update

from hub.audit import Actor
from hub.channels.base import SendReceipt
from hub.channels.registry import CHANNEL_PROVIDERS
from hub.channels.twilio_sms.errors import classify
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, Direction, MessageStatus
from hub.inbox import actions
from hub.inbox.models import Conversation, DeliveryAttempt, Message
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.dispatch import do_prepare_batch, providers_for
from hub.journeys.models import RunStatus, StepRun
from hub.ops_metrics import SETTLED_AFTER, id_floor
from hub.templates.actions import do_seed_templates
from hub.templates.models import MessageTemplate, TemplateVariant
from tests.conftest import make_staff
from tests.metrics_helpers import (
    PUBLIC,
    background_done,
    scrape,
    scrape_after_first_count,
    twilio_settings,
    value,
)
from tests.twilio_helpers import CLINIC_NUMBER, fixture, sign
from web import metrics_ops
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fresh_redis")

SYSTEM = Actor.system("metrics-test")
NAMES = ("Avery Sample", "Blair Example", "Casey Placeholder", "Devon Testcase", "Emery Dummy")


@pytest.fixture(autouse=True)
def no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each scrape reads the stores afresh (in production, scrapes within 2 s share a read)."""
    monkeypatch.setattr(metrics_ops, "DEFAULT_REFRESH_S", 0.0)


@pytest.fixture
async def client(db: Database, settings: Settings, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(twilio_settings(settings), db=db))  # type: ignore[no-any-return]


# -- sends and provider errors ----------------------------------------------------------------


async def _reply(db: Database, ring: KeyRing, staff: Any, i: int) -> uuid.UUID:
    patient_id = await actions.do_create_patient(
        db,
        ring,
        SYSTEM,
        NewPatient(name=NAMES[i], phone=f"+1555010{i:04d}", verified=True),
        region="US",
    )
    async with db.transaction() as session:
        conversation = Conversation(patient_id=patient_id, channel="sms")
        session.add(conversation)
        await session.flush()
        conversation_id = conversation.id
    queued = await actions.do_reply(db, ring, staff, conversation_id, "Your results are ready.")
    return queued.message_id


async def _claim(db: Database, ring: KeyRing, message_id: uuid.UUID) -> Any:
    claim = await actions.do_claim_send(
        db, ring, message_id, provider=CHANNEL_PROVIDERS, public_url=PUBLIC
    )
    assert claim.task is not None, claim.skipped
    return claim.task


async def _status(client: TestClient, name: str, sid: str, **changes: str) -> None:
    params = {**fixture(name)["params"], "MessageSid": sid, "SmsSid": sid, **changes}
    path = "/webhooks/twilio/status"
    headers = {"X-Twilio-Signature": sign(PUBLIC + path, params)}
    response = await client.post(path, data=params, headers=headers)
    assert response.status == 204, await response.text()


def _sid() -> str:
    return "SM" + uuid.uuid4().hex


async def _recount(
    db: Database,
) -> tuple[dict[str, int], dict[tuple[str, str], int], dict[tuple[str, str], int]]:
    """Made, outcomes reached and provider errors, straight from the rows."""
    async with db.reader() as session:
        messages = (
            await session.scalars(select(Message).where(Message.direction == Direction.OUTBOUND))
        ).all()
        attempts = (await session.scalars(select(DeliveryAttempt))).all()
    made: dict[str, int] = {}
    outcomes: dict[tuple[str, str], int] = {}
    errors: dict[tuple[str, str], int] = {}
    for m in messages:
        channel = m.channel.value
        made[channel] = made.get(channel, 0) + 1
        reached = {
            "sent": m.sent_at is not None
            or m.status in (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ),
            "delivered": m.status in (MessageStatus.DELIVERED, MessageStatus.READ),
            "failed": m.status is MessageStatus.FAILED,
            "undelivered": m.status is MessageStatus.UNDELIVERED,
        }
        for outcome, yes in reached.items():
            outcomes[(channel, outcome)] = outcomes.get((channel, outcome), 0) + int(yes)
    for a in attempts:
        if a.error_code is not None:
            errors[(a.provider, a.error_code)] = errors.get((a.provider, a.error_code), 0) + 1
    return made, outcomes, errors


async def test_sends_outcomes_and_provider_errors_follow_what_happened_to_each_message(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    staff = await make_staff(db)
    ids = [await _reply(db, ring, staff, i) for i in range(5)]

    # 0: sent, then delivered by the carrier's receipt.
    delivered = _sid()
    await actions.do_record_sent(
        db, await _claim(db, ring, ids[0]), SendReceipt("twilio_sms", delivered, MessageStatus.SENT)
    )
    await _status(client, "status_delivered", delivered)
    # 1: sent, then the carrier says undelivered: the recipient blocked the number (final).
    blocked = _sid()
    await actions.do_record_sent(
        db, await _claim(db, ring, ids[1]), SendReceipt("twilio_sms", blocked, MessageStatus.SENT)
    )
    await _status(client, "status_undelivered_30003", blocked, ErrorCode="30004")
    # 2: Twilio refuses the send itself as spam (final).
    await actions.do_record_send_failure(
        db, await _claim(db, ring, ids[2]), classify("30007"), retry_base_s=0
    )
    # 3: the handset is off (retried), then the second attempt is sent.
    await actions.do_record_send_failure(
        db, await _claim(db, ring, ids[3]), classify("30003"), retry_base_s=0
    )
    await actions.do_record_sent(
        db, await _claim(db, ring, ids[3]), SendReceipt("twilio_sms", _sid(), MessageStatus.SENT)
    )
    # 4: still queued.

    text, samples = await scrape_after_first_count(client)
    made, outcomes, errors = await _recount(db)
    # What the history above says, and what the rows say, and what /metrics says agree.
    assert made == {"sms": 5}
    assert outcomes == {
        ("sms", "sent"): 3,
        ("sms", "delivered"): 1,
        ("sms", "failed"): 1,
        ("sms", "undelivered"): 1,
    }
    assert errors == {
        ("twilio_sms", "30004"): 1,
        ("twilio_sms", "30007"): 1,
        ("twilio_sms", "30003"): 1,
    }
    assert value(samples, "hub_sends_total", channel="sms") == made["sms"]
    for (channel, outcome), n in outcomes.items():
        assert value(samples, "hub_send_outcomes_total", channel=channel, outcome=outcome) == n
    for (provider, code), n in errors.items():
        assert value(samples, "hub_provider_errors_total", provider=provider, code=code) == n
    # The delivery receipts were webhooks: their processing time was measured.
    assert (
        value(samples, "hub_webhook_processing_seconds_count", provider="twilio_sms", kind="status")
        == 2
    )
    assert (
        value(samples, "hub_webhook_processing_seconds_sum", provider="twilio_sms", kind="status")
        or 0
    ) > 0
    for name in NAMES:
        assert name.split()[0] not in text
    assert "5550100" not in text


def _old_id(at: datetime) -> uuid.UUID:
    """A UUIDv7 as a process made it at ``at`` (version 7, RFC 4122 variant, random tail)."""
    tail = uuid.uuid4().int & ((1 << 62) - 1)
    return uuid.UUID(int=id_floor(at).int | (0x7 << 76) | (0b10 << 62) | tail)


async def test_settled_messages_are_counted_once_and_never_taken_back(
    client: TestClient, db: Database, ring: KeyRing, redis_url: str
) -> None:
    staff = await make_staff(db)
    recent = await _reply(db, ring, staff, 0)
    async with db.transaction() as session:
        conversation_id = (await session.get(Message, recent)).conversation_id  # type: ignore[union-attr]
        long_ago = datetime.now(UTC) - SETTLED_AFTER - timedelta(days=30)
        for i, status in enumerate((MessageStatus.DELIVERED, MessageStatus.FAILED)):
            session.add(
                Message(
                    id=_old_id(long_ago + timedelta(minutes=i)),
                    conversation_id=conversation_id,
                    direction=Direction.OUTBOUND,
                    channel=Channel.SMS,
                    status=status,
                    sent_at=long_ago if status is MessageStatus.DELIVERED else None,
                    delivered_at=long_ago if status is MessageStatus.DELIVERED else None,
                    error_code="30007" if status is MessageStatus.FAILED else None,
                    created_at=long_ago,
                    updated_at=long_ago,
                )
            )

    # The first scrape starts counting the settled messages beside it; until that is stored,
    # no send series is shown (rather than a total that would then jump).
    _, samples = await scrape(client)
    assert value(samples, "hub_sends_total", channel="sms") is None
    await background_done(client)
    _, samples = await scrape(client)
    assert value(samples, "hub_sends_total", channel="sms") == 3
    assert value(samples, "hub_send_outcomes_total", channel="sms", outcome="delivered") == 1
    assert value(samples, "hub_send_outcomes_total", channel="sms", outcome="failed") == 1
    # The settled two were counted into the base Redis keeps; the live part is the recent one.
    client_redis = redis.Redis.from_url(redis_url)
    try:
        assert client_redis.get(metrics_ops.SEND_BASE_KEY) is not None
    finally:
        client_redis.close()

    # A new send is counted on top; an erased settled message does not take its count back.
    await _reply(db, ring, staff, 1)
    async with db.transaction() as session:
        await session.execute(delete(Message).where(Message.created_at == long_ago))
    _, samples = await scrape(client)
    assert value(samples, "hub_sends_total", channel="sms") == 4
    assert value(samples, "hub_send_outcomes_total", channel="sms", outcome="delivered") == 1


# -- journey steps -----------------------------------------------------------------------------

NY = ZoneInfo("America/New_York")
VISIT = datetime(2026, 11, 25, 10, tzinfo=NY)
DAY_OF = """\
key: day_of
name: Day-of heads-up
purpose: reminders
anchor: appointment_start
steps:
  - {id: sms_2h, offset: -2h, template: appointment_reminder_today, channel: sms}
"""
# As a text stored before the save check existed: fails for every appointment without a place.
LEGACY = "See you at {{ appointment.start | time }}, {{ appointment.location }}. {{ clinic.name }}"


async def test_journey_steps_that_cannot_be_sent_are_counted_by_reason(
    client: TestClient, db: Database, ring: KeyRing, set_clock: Any
) -> None:
    set_clock(VISIT - timedelta(days=1))
    await do_seed_templates(db)
    await journeys.do_install_journey(db, SYSTEM, DAY_OF, "day_of.yaml")
    async with db.transaction() as session:
        template_id = await session.scalar(
            select(MessageTemplate.id).where(MessageTemplate.key == "appointment_reminder_today")
        )
        await session.execute(
            update(TemplateVariant)
            .where(
                TemplateVariant.template_id == template_id,
                TemplateVariant.channel == Channel.SMS,
            )
            .values(body=LEGACY)
        )
    # Two patients with a phone (their text fails to render), three with none (no channel).
    addresses = [NewPatient(name=NAMES[i], phone=f"+1555010{i:04d}") for i in range(2)] + [
        NewPatient(name=NAMES[i], email=f"p{i}@example.org") for i in range(2, 5)
    ]
    for i, new in enumerate(addresses):
        pid = await actions.do_create_patient(
            db, ring, SYSTEM, replace(new, time_zone="America/New_York"), region="US"
        )
        await journeys.do_enroll(
            db,
            SYSTEM,
            "day_of",
            pid,
            appointment=journeys.NewAppointment(f"visit-{i}", VISIT),
            now=datetime(2026, 11, 20, 12, tzinfo=UTC),
        )
    at = VISIT - timedelta(hours=2)
    set_clock(at)
    await do_prepare_batch(
        db,
        ring,
        await journeys.do_claim_due(db, now=at),
        providers=providers_for({Channel.SMS}, {}),
        clinic={"name": "Demo Clinic", "phone": CLINIC_NUMBER},
        public_url=PUBLIC,
        now=at,
    )

    async with db.reader() as session:
        rows = (
            await session.execute(
                select(StepRun.status, Message.error_code).outerjoin(
                    Message, Message.id == StepRun.message_id
                )
            )
        ).all()
    recount: dict[str, int] = {}
    for status, code in rows:
        if status is RunStatus.FAILED:
            recount[code or "unknown"] = recount.get(code or "unknown", 0) + 1
    assert recount == {"template_render": 2, "no_channel": 3}
    _, samples = await scrape(client)
    for reason, n in recount.items():
        assert value(samples, "hub_journey_step_failures_total", reason=reason) == n
