"""The SQL of calls into the inbox. Callers own the session and the transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import AuditEvent
from hub.inbox.models import InboundEvent


async def inbound_event_for_update(
    session: AsyncSession, provider: str, provider_event_id: str
) -> InboundEvent | None:
    """The event row, locked: a voicemail's recording action and its status callback meet on
    one row, and whichever comes second must see what the first did."""
    stmt = (
        select(InboundEvent)
        .where(
            InboundEvent.provider == provider,
            InboundEvent.provider_event_id == provider_event_id,
        )
        .with_for_update()
    )
    return (await session.scalars(stmt)).first()


async def audit_count_since(
    session: AsyncSession, action: str, subject_type: str, subject_id: str, since: datetime
) -> int:
    """How many ``action`` events name this subject since ``since`` (the subject index)."""
    stmt = (
        select(func.count())
        .select_from(AuditEvent)
        .where(
            AuditEvent.subject_type == subject_type,
            AuditEvent.subject_id == subject_id,
            AuditEvent.action == action,
            AuditEvent.at >= since,
        )
    )
    return int(await session.scalar(stmt) or 0)
