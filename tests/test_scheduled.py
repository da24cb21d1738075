"""Send later (issue 16): a scheduled reply waits encrypted, can be cancelled while it waits,
becomes one queued message at its time through the consent gate as it stands then, and is
kept as a failed message with the reason when the gate refuses it. Audited."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from hub.audit import Actor, AuditEvent
from hub.consent.actions import do_record_consent
from hub.consent.exceptions import ConsentRefused
from hub.consent.models import ConsentState, Purpose
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, Direction, MessageStatus
from hub.inbox import actions
from hub.inbox.actions.scheduled import (
    AlreadyHandled,
    do_cancel_scheduled,
    do_list_scheduled,
    do_schedule_reply,
    do_send_due_scheduled,
)
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Message
from hub.inbox.scheduled_models import ScheduledMessage, ScheduledState
from hub.inbox.schemas import NewPatient
from hub.outbox import OutboxEvent
from tests.conftest import make_staff

SYSTEM = Actor.system("test")
TEXT = "Your lab results are ready; call us to talk them through."


async def conversation_with(db: Database, ring: KeyRing, phone: str = "+15550100151") -> uuid.UUID:
    patient_id = await actions.do_create_patient(
        db,
        ring,
        SYSTEM,
        NewPatient(name="Quinn Sample", phone=phone, email="quinn@example.org", verified=True),
        region="US",
    )
    message_id = await actions.do_record_inbound(db, ring, patient_id, Channel.SMS, "results?")
    async with db.reader() as session:
        message = await session.get(Message, message_id)
        assert message is not None
        return message.conversation_id


async def outbound(db: Database, conversation_id: uuid.UUID) -> list[Message]:
    async with db.reader() as session:
        stmt = select(Message).where(
            Message.conversation_id == conversation_id, Message.direction == Direction.OUTBOUND
        )
        return list((await session.scalars(stmt)).all())


async def test_a_scheduled_reply_waits_then_goes_once_as_a_queued_message(
    db: Database, ring: KeyRing
) -> None:
    staff = await make_staff(db)
    cid = await conversation_with(db, ring)
    now = utcnow()
    at = (now + timedelta(hours=2)).astimezone(datetime.now().astimezone().tzinfo)
    view = await do_schedule_reply(db, ring, staff, cid, f"  {TEXT} ", at, now=now)
    assert (view.body, view.channel, view.state) == (TEXT, Channel.SMS, ScheduledState.SCHEDULED)
    async with db.reader() as session:
        [changed] = (
            await session.scalars(select(OutboxEvent).where(OutboxEvent.id.in_(view.effect_ids)))
        ).all()
    # Colleagues' screens hear of it by ids alone, and fetch the list through the audited route.
    assert changed.topic == "notify:scheduled:changed"
    assert set(changed.payload) == {"conversation_id", "team_id"}
    assert changed.payload["conversation_id"] == str(cid)
    assert view.send_at == at.astimezone(UTC)

    listed = await do_list_scheduled(db, ring, staff, cid)
    assert [(s.id, s.body, s.author) for s in listed] == [(view.id, TEXT, staff.display_name)]
    async with db.reader() as session:
        reads = (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.action == "scheduled_message.list")
            )
        ).all()
    assert [(e.subject_id, e.actor, e.detail) for e in reads] == [
        (str(cid), str(staff.actor), {"scheduled": [str(view.id)]})
    ]
    async with db.reader() as session:
        row = await session.get(ScheduledMessage, view.id)
        assert row is not None and TEXT.encode() not in (row.body_enc or b"")

    # Not yet due: nothing is sent.
    assert await do_send_due_scheduled(db, ring, now=now + timedelta(hours=1)) == ()
    assert await outbound(db, cid) == []

    effects = await do_send_due_scheduled(db, ring, now=now + timedelta(hours=2, seconds=1))
    [message] = await outbound(db, cid)
    assert message.status is MessageStatus.QUEUED and message.unseal(ring, "body") == TEXT
    assert message.author_id == staff.staff_id and message.channel is Channel.SMS
    assert message.delivery_notes[0].startswith("scheduled for ")
    async with db.reader() as session:
        topics = {
            e.topic
            for e in (
                await session.scalars(select(OutboxEvent).where(OutboxEvent.id.in_(effects)))
            ).all()
        }
        row = await session.get(ScheduledMessage, view.id)
        assert row is not None
    assert topics == {"job:send_message", "notify:message:new"}
    assert (row.state, row.message_id) == (ScheduledState.SENT, message.id)
    assert row.body_enc is None  # the text is kept once, in the message

    # A later tick finds nothing left; the list no longer shows it; it cannot be cancelled.
    assert await do_send_due_scheduled(db, ring, now=now + timedelta(hours=3)) == ()
    assert len(await outbound(db, cid)) == 1
    assert await do_list_scheduled(db, ring, staff, cid) == []
    async with db.reader() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "scheduled_message.list")
        )
    assert count == 1  # nothing read, nothing recorded
    with pytest.raises(AlreadyHandled, match="already been sent"):
        await do_cancel_scheduled(db, ring, staff, view.id)


async def test_cancelled_is_never_sent_and_create_and_cancel_are_audited(
    db: Database, ring: KeyRing
) -> None:
    staff = await make_staff(db)
    cid = await conversation_with(db, ring)
    now = utcnow()
    view = await do_schedule_reply(db, ring, staff, cid, TEXT, now + timedelta(minutes=30))
    cancelled = await do_cancel_scheduled(db, ring, staff, view.id)
    assert (cancelled.state, cancelled.body) == (ScheduledState.CANCELLED, TEXT)
    async with db.reader() as session:
        row = await session.get(ScheduledMessage, view.id)
        assert row is not None and row.body_enc is None  # a reply that will never go
    assert await do_send_due_scheduled(db, ring, now=now + timedelta(hours=1)) == ()
    assert await outbound(db, cid) == []
    with pytest.raises(AlreadyHandled, match="already cancelled"):
        await do_cancel_scheduled(db, ring, staff, view.id)
    async with db.reader() as session:
        events = (
            await session.scalars(select(AuditEvent).where(AuditEvent.subject_id == str(view.id)))
        ).all()
    assert sorted(e.action for e in events) == [
        "scheduled_message.cancel",
        "scheduled_message.create",
    ]
    assert all(e.actor == str(staff.actor) for e in events)


async def test_a_reply_refused_at_its_time_is_a_failed_message_with_the_reason(
    db: Database, ring: KeyRing
) -> None:
    staff = await make_staff(db)
    cid = await conversation_with(db, ring)
    now = utcnow()
    view = await do_schedule_reply(db, ring, staff, cid, TEXT, now + timedelta(minutes=5))
    patient_id = await _patient_of(db, cid)
    await do_record_consent(
        db, staff, patient_id, Channel.SMS, [Purpose.CARE], ConsentState.REVOKED, "phone"
    )
    effects = await do_send_due_scheduled(db, ring, now=now + timedelta(minutes=6))
    [failed] = await outbound(db, cid)
    assert failed.status is MessageStatus.FAILED and failed.unseal(ring, "body") == TEXT
    assert failed.error_code == "opted_out"
    assert (failed.error_reason or "").startswith("scheduled reply not sent: patient opted out")
    assert len(effects) == 1  # message:new, so the thread shows it; no send job
    async with db.reader() as session:
        row = await session.get(ScheduledMessage, view.id)
        assert row is not None
    assert (row.state, row.message_id, row.error_code, row.body_enc) == (
        ScheduledState.FAILED,
        failed.id,
        "opted_out",
        None,
    )


async def _patient_of(db: Database, conversation_id: uuid.UUID) -> uuid.UUID:
    from hub.inbox.models import Conversation

    async with db.reader() as session:
        conversation = await session.get(Conversation, conversation_id)
        assert conversation is not None
        return conversation.patient_id


@pytest.mark.parametrize(
    ("when", "body", "error"),
    [
        (timedelta(seconds=20), TEXT, "has passed"),
        (timedelta(days=91), TEXT, "at most 90 days ahead"),
        (timedelta(hours=1), "", "needs some text"),
        (timedelta(hours=1), "x" * 1601, "1,601 characters and an SMS can carry at most 1,600"),
    ],
)
async def test_what_cannot_be_scheduled_is_refused_with_the_reason(
    db: Database, ring: KeyRing, when: timedelta, body: str, error: str
) -> None:
    staff = await make_staff(db)
    cid = await conversation_with(db, ring)
    with pytest.raises(ValueError, match=error):
        await do_schedule_reply(db, ring, staff, cid, body, utcnow() + when)
    assert await do_list_scheduled(db, ring, staff, cid) == []


async def test_a_time_without_offset_and_an_opted_out_channel_are_refused(
    db: Database, ring: KeyRing
) -> None:
    staff = await make_staff(db)
    cid = await conversation_with(db, ring)
    naive = datetime.now() + timedelta(hours=1)  # a time without its zone: the mistake under test
    with pytest.raises(ValueError, match="needs a time zone"):
        await do_schedule_reply(db, ring, staff, cid, TEXT, naive)
    await do_record_consent(
        db,
        staff,
        await _patient_of(db, cid),
        Channel.SMS,
        [Purpose.CARE],
        ConsentState.REVOKED,
        "phone",
    )
    with pytest.raises(ConsentRefused, match="opted out of SMS"):
        await do_schedule_reply(db, ring, staff, cid, TEXT, utcnow() + timedelta(hours=1))
    # Email is still open: chosen explicitly, it is kept.
    view = await do_schedule_reply(
        db, ring, staff, cid, TEXT, utcnow() + timedelta(hours=1), channel=Channel.EMAIL
    )
    assert view.channel is Channel.EMAIL


async def test_someone_outside_the_team_can_neither_see_nor_cancel(
    db: Database, ring: KeyRing
) -> None:
    staff = await make_staff(db)
    cid = await conversation_with(db, ring)
    view = await do_schedule_reply(db, ring, staff, cid, TEXT, utcnow() + timedelta(hours=1))
    outsider = await make_staff(
        db, "olu.other@demo-clinic.example.org", role="agent", teams=("Billing",)
    )
    with pytest.raises(NotFound):
        await do_list_scheduled(db, ring, outsider, cid)
    with pytest.raises(NotFound):
        await do_cancel_scheduled(db, ring, outsider, view.id)
    with pytest.raises(NotFound):
        await do_cancel_scheduled(db, ring, staff, uuid.uuid4())


async def test_two_ticks_at_once_send_a_due_reply_once(
    committed_db: Database, ring: KeyRing
) -> None:
    db = committed_db
    staff = await make_staff(db)
    cid = await conversation_with(db, ring)
    now = utcnow()
    for minutes in (2, 3, 4):
        await do_schedule_reply(
            db, ring, staff, cid, f"{TEXT} ({minutes})", now + timedelta(minutes=minutes)
        )
    later = now + timedelta(minutes=5)
    results = await asyncio.gather(*(do_send_due_scheduled(db, ring, now=later) for _ in range(4)))
    assert sum(len(r) for r in results) == 3 * 2  # one send job and one message:new each
    sent = await outbound(db, cid)
    assert sorted(m.unseal(ring, "body") for m in sent) == [f"{TEXT} ({n})" for n in (2, 3, 4)]


async def test_where_the_clinic_defers_care_replies_at_night_one_waits_for_the_morning(
    db: Database, ring: KeyRing
) -> None:
    from hub.consent.actions import do_set_policy

    staff = await make_staff(db)
    await do_set_policy(db, staff, {"automated_purposes": ["care", "reminders"]})
    cid = await conversation_with(db, ring)  # the patient's zone: UTC; window 08:00-21:00
    day = (utcnow() + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    view = await do_schedule_reply(
        db, ring, staff, cid, TEXT, day + timedelta(hours=22, minutes=30), now=day
    )
    assert await do_send_due_scheduled(db, ring, now=day + timedelta(hours=23)) == ()
    async with db.reader() as session:
        row = await session.get(ScheduledMessage, view.id)
        assert row is not None
    assert row.state is ScheduledState.SCHEDULED
    assert row.send_at == day + timedelta(days=1, hours=8)  # moved, not dropped
    assert await outbound(db, cid) == []

    await do_send_due_scheduled(db, ring, now=day + timedelta(days=1, hours=8, minutes=1))
    [message] = await outbound(db, cid)
    assert message.status is MessageStatus.QUEUED and message.unseal(ring, "body") == TEXT
