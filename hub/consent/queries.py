"""Consent SQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.consent.models import (
    ConsentRecord,
    ConsentSource,
    ConsentState,
    ConsentSuppression,
    Purpose,
)
from hub.enums import Channel
from hub.inbox.models import Patient


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
    suppressed = await _suppressions_of(session, [patient_id])
    return _with_suppressions(latest, suppressed.get((patient_id, channel), []), patient_id)


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
    for (pid, channel), kept in (await _suppressions_of(session, ids)).items():
        latest[(pid, channel)] = _with_suppressions(latest.get((pid, channel), {}), kept, pid)
    return latest


PHONE_CHANNELS = (Channel.SMS, Channel.VOICE, Channel.WHATSAPP)
"""Channels addressed by the phone number (their suppressions match its blind index)."""


async def _suppressions_of(
    session: AsyncSession, patient_ids: list[uuid.UUID]
) -> dict[tuple[uuid.UUID, Channel], list[ConsentSuppression]]:
    """Opt-outs of erased patients whose address these patients now have."""
    stmt = (
        select(Patient.id, ConsentSuppression)
        .join(
            ConsentSuppression,
            or_(
                and_(
                    ConsentSuppression.address_bidx == Patient.phone_bidx,
                    ConsentSuppression.channel.in_(PHONE_CHANNELS),
                ),
                and_(
                    ConsentSuppression.address_bidx == Patient.email_bidx,
                    ConsentSuppression.channel == Channel.EMAIL,
                ),
            ),
        )
        .where(Patient.id.in_(patient_ids))
    )
    found: dict[tuple[uuid.UUID, Channel], list[ConsentSuppression]] = {}
    for pid, kept in (await session.execute(stmt)).all():
        found.setdefault((pid, kept.channel), []).append(kept)
    return found


def _with_suppressions(
    latest: dict[Purpose, ConsentRecord],
    suppressions: list[ConsentSuppression],
    patient_id: uuid.UUID,
) -> dict[Purpose, ConsentRecord]:
    """A kept opt-out counts as this patient's own revocation unless they decided since. A
    later import does not lift it: an erased patient who said STOP must not be texted again
    because the clinic's system still lists them."""
    merged = dict(latest)
    for kept in suppressions:
        own = merged.get(kept.purpose)
        decided_since = own is not None and own.created_at > kept.created_at
        if decided_since and own is not None and own.source is not ConsentSource.IMPORT:
            continue
        merged[kept.purpose] = ConsentRecord(
            id=kept.id,
            patient_id=patient_id,
            channel=kept.channel,
            purpose=kept.purpose,
            state=ConsentState.REVOKED,
            source=kept.source,
            actor="system:erasure",
            evidence=kept.evidence,
            created_at=kept.created_at,
        )
    return merged


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
