"""Consent SQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

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


async def policy_data(session: AsyncSession, key: str) -> Any:
    from hub.routing.models import HubSetting

    row = await session.get(HubSetting, key)
    return None if row is None else row.value


async def automated_sends(
    session: AsyncSession,
    patient_id: uuid.UUID,
    purposes: Iterable[str],
    since: datetime,
    exclude_message_id: uuid.UUID | None = None,
) -> list[datetime]:
    """Creation times of automated messages to the patient since ``since`` that were or will
    be delivered (failed ones do not count against the caps)."""
    from hub.enums import Direction, MessageStatus
    from hub.inbox.models import Conversation, Message

    stmt = (
        select(Message.created_at)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            Conversation.patient_id == patient_id,
            Message.direction == Direction.OUTBOUND,
            Message.purpose.in_(list(purposes)),
            Message.created_at >= since,
            Message.status.not_in([MessageStatus.FAILED, MessageStatus.UNDELIVERED]),
        )
        .order_by(Message.created_at)
    )
    if exclude_message_id is not None:
        stmt = stmt.where(Message.id != exclude_message_id)
    return list((await session.scalars(stmt)).all())


async def patient_history(session: AsyncSession, patient_id: uuid.UUID) -> list[ConsentRecord]:
    """Every consent record of a patient, oldest first (one query, for the FHIR export)."""
    stmt = (
        select(ConsentRecord)
        .where(ConsentRecord.patient_id == patient_id)
        .order_by(ConsentRecord.created_at, ConsentRecord.id)
    )
    return list((await session.scalars(stmt)).all())


async def latest_records_of(
    session: AsyncSession, patient_ids: Iterable[uuid.UUID]
) -> dict[tuple[uuid.UUID, Channel], dict[Purpose, ConsentRecord]]:
    """``latest_records`` for many patients and every channel in one query (a dispatch batch)."""
    ids = list(set(patient_ids))
    latest: dict[tuple[uuid.UUID, Channel], dict[Purpose, ConsentRecord]] = {}
    if not ids:
        return latest
    stmt = (
        select(ConsentRecord)
        .where(ConsentRecord.patient_id.in_(ids))
        .order_by(ConsentRecord.created_at, ConsentRecord.id)
    )
    for record in (await session.scalars(stmt)).all():
        latest.setdefault((record.patient_id, record.channel), {})[record.purpose] = record
    return latest


async def automated_sends_of(
    session: AsyncSession,
    patient_ids: Iterable[uuid.UUID],
    purposes: Iterable[str],
    since: datetime,
) -> dict[uuid.UUID, list[datetime]]:
    """``automated_sends`` for many patients in one query, oldest first per patient."""
    from hub.enums import Direction, MessageStatus
    from hub.inbox.models import Conversation, Message

    ids = list(set(patient_ids))
    times: dict[uuid.UUID, list[datetime]] = {pid: [] for pid in ids}
    if not ids:
        return times
    stmt = (
        select(Conversation.patient_id, Message.created_at)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            Conversation.patient_id.in_(ids),
            Message.direction == Direction.OUTBOUND,
            Message.purpose.in_(list(purposes)),
            Message.created_at >= since,
            Message.status.not_in([MessageStatus.FAILED, MessageStatus.UNDELIVERED]),
        )
        .order_by(Message.created_at)
    )
    for patient_id, created_at in (await session.execute(stmt)).all():
        times[patient_id].append(created_at)
    return times
