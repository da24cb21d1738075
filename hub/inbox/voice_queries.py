"""The SQL of calls into the inbox. Callers own the session and the transaction."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

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
