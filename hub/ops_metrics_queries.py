"""The counts behind the operations metrics in /metrics. Every statement is bounded: a range of
the (time-ordered) primary key, or an index on a small subset (failed runs, pending effects)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from hub.enums import Channel, Direction, MessageStatus
from hub.inbox.models import DeliveryAttempt, Message
from hub.journeys.models import RunStatus, StepRun
from hub.outbox import OutboxEvent


def _id_range(
    column: InstrumentedAttribute[uuid.UUID], lo: uuid.UUID, hi: uuid.UUID | None
) -> list[ColumnElement[bool]]:
    where = [column >= lo]
    if hi is not None:
        where.append(column < hi)
    return where


async def outbound_message_counts(
    session: AsyncSession, lo: uuid.UUID, hi: uuid.UUID | None
) -> list[tuple[str, str, bool, int]]:
    """(channel, status, has sent_at, count) of outbound messages whose id is in [lo, hi)."""
    sent = Message.sent_at.is_not(None)
    stmt = (
        select(Message.channel, Message.status, sent, func.count())
        .where(Message.direction == Direction.OUTBOUND, *_id_range(Message.id, lo, hi))
        .group_by(Message.channel, Message.status, sent)
    )
    return [
        (Channel(ch).value, MessageStatus(st).value, bool(s), int(n))
        for ch, st, s, n in (await session.execute(stmt)).all()
    ]


async def provider_error_counts(
    session: AsyncSession, lo: uuid.UUID, hi: uuid.UUID | None
) -> list[tuple[str, str, int]]:
    """(provider, error code, count) of hand-overs to a provider that ended in an error, for
    attempts whose id is in [lo, hi)."""
    stmt = (
        select(DeliveryAttempt.provider, DeliveryAttempt.error_code, func.count())
        .where(
            DeliveryAttempt.error_code.is_not(None),
            *_id_range(DeliveryAttempt.id, lo, hi),
        )
        .group_by(DeliveryAttempt.provider, DeliveryAttempt.error_code)
    )
    return [(str(p), str(c), int(n)) for p, c, n in (await session.execute(stmt)).all()]


async def failed_step_counts(session: AsyncSession) -> list[tuple[str | None, int]]:
    """(error code of the run's message, count) of journey step runs that failed at dispatch.
    Failed runs are few and ``ix_journey_step_run_due`` leads with the status."""
    stmt = (
        select(Message.error_code, func.count())
        .select_from(StepRun)
        .outerjoin(Message, Message.id == StepRun.message_id)
        .where(StepRun.status == RunStatus.FAILED)
        .group_by(Message.error_code)
    )
    return [(code, int(n)) for code, n in (await session.execute(stmt)).all()]


async def oldest_pending_effect(session: AsyncSession) -> datetime | None:
    """When the oldest side effect still waiting for release was recorded (None: none waits);
    ``ix_outbox_event_pending`` answers it from its first entry."""
    stmt = select(func.min(OutboxEvent.created_at)).where(OutboxEvent.released_at.is_(None))
    value = await session.scalar(stmt)
    return value if value is None or isinstance(value, datetime) else None
