"""Reads and locks of scheduled replies (hub.inbox.actions.scheduled decrypts and decides)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.inbox.scheduled_models import ScheduledMessage, ScheduledState


async def due_for_update(
    session: AsyncSession, now: datetime, limit: int
) -> list[ScheduledMessage]:
    """Waiting replies whose time has come, oldest first, locked. Rows another tick holds are
    skipped (PostgreSQL), and a row it has already handled no longer says "scheduled": each
    reply is taken by one transaction only."""
    stmt = (
        select(ScheduledMessage)
        .where(ScheduledMessage.state == ScheduledState.SCHEDULED, ScheduledMessage.send_at <= now)
        .order_by(ScheduledMessage.send_at, ScheduledMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.scalars(stmt)).all())


async def waiting_in(session: AsyncSession, conversation_id: uuid.UUID) -> list[ScheduledMessage]:
    """A conversation's replies still to be sent, soonest first."""
    stmt = (
        select(ScheduledMessage)
        .where(
            ScheduledMessage.conversation_id == conversation_id,
            ScheduledMessage.state == ScheduledState.SCHEDULED,
        )
        .order_by(ScheduledMessage.send_at, ScheduledMessage.id)
    )
    return list((await session.scalars(stmt)).all())


async def scheduled_for_update(
    session: AsyncSession, scheduled_id: uuid.UUID
) -> ScheduledMessage | None:
    stmt = select(ScheduledMessage).where(ScheduledMessage.id == scheduled_id).with_for_update()
    return (await session.scalars(stmt)).first()
