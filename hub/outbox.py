"""Transactional outbox: side effects recorded with the change, released after it commits.

An action calls ``add_effect`` inside its transaction; nothing leaves the process then. After the
commit the caller (or the relay loop, after a crash) hands pending rows to an ``EffectSink`` and
marks them released. Delivery is at least once, so every effect carries its event id and
consumers are idempotent on it. Payloads hold ids only, never PHI.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Index, Integer, String, Text, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import Base, Database, new_id, utcnow

log = logging.getLogger(__name__)

DEFAULT_RELAY_BATCH = 200
"""Outbox rows claimed per relay transaction."""
MAX_RELAY_ATTEMPTS = 20
"""After this many failed releases a row is left for an operator (visible in /metrics)."""


class OutboxEvent(Base):
    __tablename__ = "outbox_event"
    __table_args__ = (Index("ix_outbox_event_pending", "released_at", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    topic: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    released_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class EffectSink(Protocol):
    """Where released effects go: RQ for jobs, socket.io for broadcasts (see web/, worker/)."""

    async def release(self, event_id: uuid.UUID, topic: str, payload: dict[str, Any]) -> None: ...


def add_effect(session: AsyncSession, topic: str, payload: dict[str, Any]) -> OutboxEvent:
    event = OutboxEvent(id=new_id(), topic=topic, payload=payload)
    session.add(event)
    return event


async def release_events(db: Database, sink: EffectSink, ids: Iterable[uuid.UUID]) -> int:
    """Fast path after a commit: release exactly the events that transaction wrote."""
    ids = list(ids)
    if not ids:
        return 0
    return await _release(db, sink, select(OutboxEvent).where(OutboxEvent.id.in_(ids)))


async def relay_pending(db: Database, sink: EffectSink, batch: int = DEFAULT_RELAY_BATCH) -> int:
    """Slow path: release whatever a crashed or failed fast path left behind."""
    stmt = (
        select(OutboxEvent)
        .where(OutboxEvent.released_at.is_(None), OutboxEvent.attempts < MAX_RELAY_ATTEMPTS)
        .order_by(OutboxEvent.created_at)
        .limit(batch)
    )
    return await _release(db, sink, stmt)


async def _release(db: Database, sink: EffectSink, stmt: Any) -> int:
    released = 0
    async with db.transaction() as session:
        if db.dialect == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        events = (await session.scalars(stmt)).all()
        for event in events:
            if event.released_at is not None:
                continue
            try:
                await sink.release(event.id, event.topic, event.payload)
            except Exception as exc:  # a failed release is retried by relay_pending
                event.attempts += 1
                event.last_error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("outbox release failed", extra={"event_id": str(event.id)})
                continue
            event.released_at = utcnow()
            released += 1
    return released


async def count_pending(session: AsyncSession) -> int:
    result = await session.scalar(
        select(func.count()).select_from(OutboxEvent).where(OutboxEvent.released_at.is_(None))
    )
    return int(result or 0)


KEEP_RELEASED = timedelta(days=1)
"""Released outbox rows are kept this long (to look into a recent delivery), then deleted."""


async def purge_released(db: Database, now: datetime) -> None:
    """Released rows are history only; the tick trims them so the table stays small."""
    async with db.transaction() as session:
        await session.execute(
            delete(OutboxEvent).where(OutboxEvent.released_at < now - KEEP_RELEASED)
        )
