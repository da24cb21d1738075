"""Send later: a reply written now, kept encrypted, and turned into an ordinary queued message
at its time by the scheduler tick, through the consent gate as it stands then. A reply the
gate refuses at that time becomes a failed message in the thread with the reason (its text
kept), never a silent drop."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import record
from hub.consent import actions as consent
from hub.consent.exceptions import ConsentRefused
from hub.consent.models import Purpose
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, Direction, MessageStatus
from hub.errors import HubError
from hub.inbox import queries, scheduled_queries
from hub.inbox.access import StaffContext
from hub.inbox.actions.conversations import visible_conversation
from hub.inbox.actions.delivery import message_new_effect, queue_outbound
from hub.inbox.actions.outgoing import check_reply
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Conversation, Message, Patient
from hub.inbox.scheduled_models import ScheduledMessage, ScheduledState
from hub.outbox import add_effect

MIN_LEAD = timedelta(minutes=1)
"""A reply scheduled sooner than this is refused: "send now" is the button for that."""
MAX_AHEAD = timedelta(days=90)
"""Furthest ahead a reply can be scheduled; a longer wait is a journey's job."""
DUE_BATCH = 200
"""Due replies one tick turns into messages; the rest wait for the next tick (a second)."""


class AlreadyHandled(HubError):
    """The scheduled reply was sent, refused or cancelled already; the message says which."""


@dataclass(frozen=True)
class ScheduledView:
    id: uuid.UUID
    conversation_id: uuid.UUID
    channel: Channel
    body: str
    send_at: datetime
    state: ScheduledState
    author: str | None
    created_at: datetime
    message_id: uuid.UUID | None = None
    error_reason: str | None = None
    patient_time_zone: str = "UTC"
    """So staff read when it arrives for the patient too."""
    warnings: tuple[str, ...] = ()
    """Allowed, but staff should know (the time falls outside the patient's send window)."""
    effect_ids: tuple[uuid.UUID, ...] = ()
    """Outbox effects to release after commit (colleagues' screens hear of the change)."""

    def __repr__(self) -> str:  # the body is PHI
        return f"ScheduledView({self.id}, {self.state.value})"


def _view(
    ring: KeyRing,
    row: ScheduledMessage,
    author: str | None,
    patient_zone: str,
    warnings: tuple[str, ...] = (),
) -> ScheduledView:
    return ScheduledView(
        id=row.id,
        conversation_id=row.conversation_id,
        channel=row.channel,
        body=row.unseal(ring, "body") or "",
        send_at=row.send_at,
        state=row.state,
        author=author,
        created_at=row.created_at,
        message_id=row.message_id,
        error_reason=row.error_reason,
        patient_time_zone=patient_zone,
        warnings=warnings,
    )


def _changed_effect(session: AsyncSession, conversation: Conversation) -> uuid.UUID:
    """``scheduled:changed`` for the conversation's team room: ids only, so screens showing
    it fetch the list again through the audited, access-checked route."""
    return add_effect(
        session,
        "notify:scheduled:changed",
        {
            "conversation_id": str(conversation.id),
            "team_id": str(conversation.team_id) if conversation.team_id else None,
        },
    ).id


def _check_time(send_at: datetime, now: datetime) -> datetime:
    if send_at.tzinfo is None:
        raise ValueError("the time to send needs a time zone (an offset such as +01:00)")
    try:
        send_at = send_at.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 with an offset
        raise ValueError("the time to send is out of range") from None
    if send_at < now + MIN_LEAD:
        raise ValueError("the time chosen has passed; choose a later time, or send the reply now")
    if send_at > now + MAX_AHEAD:
        raise ValueError(f"a reply can be scheduled at most {MAX_AHEAD.days} days ahead")
    return send_at


async def do_schedule_reply(
    db: Database,
    ring: KeyRing,
    ctx: StaffContext,
    conversation_id: uuid.UUID,
    body: str,
    send_at: datetime,
    *,
    channel: Channel | None = None,
    now: datetime | None = None,
) -> ScheduledView:
    """Keep a reply to send at ``send_at`` (an aware time). The channel is chosen as for a
    reply sent now; a channel the gate refuses today is refused now too, with the reason,
    rather than failing unseen later (the gate is asked again at the time)."""
    now = now or utcnow()
    body = body.strip()
    check_reply(body, (), channel)
    send_at = _check_time(send_at, now)
    async with db.transaction() as session:
        conversation = await visible_conversation(session, ctx, conversation_id)
        patient = await session.get(Patient, conversation.patient_id)
        assert patient is not None
        if channel is None:
            channel = await queries.last_inbound_channel(session, conversation.id)
            channel = channel or conversation.channel
            check_reply(body, (), channel)
        decision = await consent.may_send(session, patient, channel, Purpose.CARE, send_at)
        if not (decision.allowed or decision.deferred):
            raise ConsentRefused(decision.reason, code=decision.code)
        row = ScheduledMessage(
            conversation_id=conversation.id,
            author_id=ctx.staff_id,
            channel=channel,
            send_at=send_at,
            state=ScheduledState.SCHEDULED,
            created_at=now,
        )
        row.seal(ring, "body", body)
        session.add(row)
        await session.flush()
        await record(
            session,
            ctx.actor,
            "scheduled_message.create",
            "scheduled_message",
            row.id,
            {"conversation": str(conversation.id), "send_at": send_at.isoformat()},
        )
        effect = _changed_effect(session, conversation)
        view = _view(ring, row, ctx.display_name, patient.time_zone, decision.warnings)
        return replace(view, effect_ids=(effect,))


async def do_list_scheduled(
    db: Database, ring: KeyRing, ctx: StaffContext, conversation_id: uuid.UUID
) -> list[ScheduledView]:
    """A conversation's replies waiting to be sent (read by a person: audited). Every opening
    of a conversation asks, and nearly always there are none: that answer is a read alone,
    with no write transaction to wait for."""
    async with db.reader() as session:
        conversation = await visible_conversation(session, ctx, conversation_id)
        patient = await session.get(Patient, conversation.patient_id)
        assert patient is not None
        rows = await scheduled_queries.waiting_in(session, conversation_id)
        authors = await queries.staff_names(session, {r.author_id for r in rows})
        views = [_view(ring, r, authors.get(r.author_id), patient.time_zone) for r in rows]
    if views:
        async with db.transaction() as session:
            await record(
                session,
                ctx.actor,
                "scheduled_message.list",
                "conversation",
                conversation_id,
                {"scheduled": [str(v.id) for v in views]},
            )
    return views


async def do_cancel_scheduled(
    db: Database, ring: KeyRing, ctx: StaffContext, scheduled_id: uuid.UUID
) -> ScheduledView:
    """Cancel a reply still waiting. One that went (or was refused) meanwhile cannot be: the
    error says what became of it."""
    async with db.transaction() as session:
        row = await scheduled_queries.scheduled_for_update(session, scheduled_id)
        if row is None:
            raise NotFound("no such scheduled reply")
        try:
            conversation = await visible_conversation(session, ctx, row.conversation_id)
        except NotFound:
            raise NotFound("no such scheduled reply") from None
        patient = await session.get(Patient, conversation.patient_id)
        assert patient is not None
        if row.state is not ScheduledState.SCHEDULED:
            raise AlreadyHandled(
                {
                    ScheduledState.SENT: "this reply has already been sent; it is in the thread",
                    ScheduledState.FAILED: "this reply was due and could not be sent; "
                    "the thread shows why",
                    ScheduledState.CANCELLED: "this reply was already cancelled",
                }[row.state]
            )
        authors = await queries.staff_names(session, {row.author_id})
        view = replace(
            _view(ring, row, authors.get(row.author_id), patient.time_zone),
            state=ScheduledState.CANCELLED,
            effect_ids=(_changed_effect(session, conversation),),
        )
        row.state = ScheduledState.CANCELLED
        row.cancelled_by = ctx.staff_id
        # The text of a reply that will never go is not kept (retention would never reach it).
        row.body_enc = None
        await record(
            session,
            ctx.actor,
            "scheduled_message.cancel",
            "scheduled_message",
            row.id,
            {"conversation": str(row.conversation_id)},
        )
    return view


async def do_send_due_scheduled(
    db: Database, ring: KeyRing, *, now: datetime | None = None, limit: int = DUE_BATCH
) -> tuple[uuid.UUID, ...]:
    """Turn replies whose time has come into messages (the scheduler tick calls this). Each
    row leaves ``scheduled`` in the transaction that writes its message, under a row lock:
    two ticks at once cannot both send it."""
    now = now or utcnow()
    effects: list[uuid.UUID] = []
    async with db.transaction() as session:
        for row in await scheduled_queries.due_for_update(session, now, limit):
            conversation = await session.get(Conversation, row.conversation_id)
            assert conversation is not None
            patient = await session.get(Patient, conversation.patient_id)
            assert patient is not None
            body = row.unseal(ring, "body") or ""
            decision = await consent.may_send(session, patient, row.channel, Purpose.CARE, now)
            if decision.deferred and decision.not_before is not None:
                # A clinic whose policy defers care replies (quiet hours as for journeys):
                # the reply waits for the window like any deferred send, never dropped.
                row.send_at = decision.not_before
                continue
            if decision.allowed:
                message, queued = await queue_outbound(
                    session,
                    ring,
                    conversation,
                    body,
                    decision,
                    author_id=row.author_id,
                    purpose=Purpose.CARE,
                    urgent=True,
                    channel=row.channel,
                )
                message.delivery_notes = [
                    f"scheduled for {row.send_at:%Y-%m-%d %H:%M} UTC",
                    *decision.warnings,
                ]
                if conversation.first_responded_at is None:
                    conversation.first_responded_at = message.created_at
                row.state = ScheduledState.SENT
                effects += queued
            else:
                # Kept in the thread as a failed message, text and reason together, so staff
                # see what did not go and can send it another way.
                message = Message(
                    conversation_id=conversation.id,
                    direction=Direction.OUTBOUND,
                    channel=row.channel,
                    author_id=row.author_id,
                    status=MessageStatus.FAILED,
                    purpose=Purpose.CARE.value,
                    error_code=decision.code,
                    error_reason=f"scheduled reply not sent: {decision.reason}",
                    created_at=now,
                )
                message.seal(ring, "body", body)
                session.add(message)
                conversation.last_activity_at = now
                await session.flush()
                row.state = ScheduledState.FAILED
                row.error_code, row.error_reason = decision.code, message.error_reason
                effects.append(message_new_effect(session, message, conversation))
            row.message_id = message.id
            # The text lives on in the message alone, where retention and erasure find it.
            row.body_enc = None
    return tuple(effects)
