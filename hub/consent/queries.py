"""Consent SQL."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.consent.models import ConsentRecord, Purpose
from hub.enums import Channel


async def latest_records(
    session: AsyncSession, patient_id: uuid.UUID, channel: Channel
) -> dict[Purpose, ConsentRecord]:
    """The newest record per purpose for one patient and channel."""
    stmt = (
        select(ConsentRecord)
        .where(ConsentRecord.patient_id == patient_id, ConsentRecord.channel == channel)
        .order_by(ConsentRecord.created_at, ConsentRecord.id)
    )
    latest: dict[Purpose, ConsentRecord] = {}
    for record in (await session.scalars(stmt)).all():
        latest[record.purpose] = record
    return latest


async def history(
    session: AsyncSession, patient_id: uuid.UUID, channel: Channel, purpose: Purpose
) -> list[ConsentRecord]:
    stmt = (
        select(ConsentRecord)
        .where(
            ConsentRecord.patient_id == patient_id,
            ConsentRecord.channel == channel,
            ConsentRecord.purpose == purpose,
        )
        .order_by(ConsentRecord.created_at, ConsentRecord.id)
    )
    return list((await session.scalars(stmt)).all())
