"""SQL of the saved cohort column mappings (``hub.journeys.models.CohortMapping``)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db import utcnow
from hub.journeys.models import CohortMapping


async def mapping_text(session: AsyncSession, header_key: str) -> str | None:
    return await session.scalar(
        select(CohortMapping.mapping).where(CohortMapping.header_key == header_key)
    )


async def save_mapping(
    session: AsyncSession, header_key: str, text: str, author_id: uuid.UUID | None
) -> None:
    """Insert or replace the mapping of ``header_key`` (the row is locked where the engine
    can, so two confirmations of one header write one after the other)."""
    stmt = select(CohortMapping).where(CohortMapping.header_key == header_key)
    found = await session.scalar(stmt.with_for_update())
    if found is None:
        session.add(CohortMapping(header_key=header_key, mapping=text, author_id=author_id))
    else:
        found.mapping, found.author_id, found.updated_at = text, author_id, utcnow()
