"""Rights SQL: what one patient has (export, erasure), what has outlived retention (purge),
and the queue of provider-side deletions."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.channels.twilio_voice.events import PROVIDER as VOICE_PROVIDER
from hub.consent.models import ConsentSuppression
from hub.enums import Channel, ConversationStatus
from hub.inbox.models import (
    Attachment,
    Conversation,
    InboundEvent,
    Message,
    Note,
    Patient,
)
from hub.journeys.models import Appointment, Enrollment, Journey, SurveyAnswer
from hub.rights.models import ProviderDeletion, RetentionRun

RECORDING_SID_PREFIX = "RE"
"""Twilio's recording sids; a voicemail message's provider id is its recording's sid."""


# -- one patient ------------------------------------------------------------------------------


async def patient_for_update(session: AsyncSession, patient_id: uuid.UUID) -> Patient | None:
    return await session.get(Patient, patient_id, with_for_update=True)


async def conversations_of(session: AsyncSession, patient_id: uuid.UUID) -> Sequence[Conversation]:
    stmt = (
        select(Conversation)
        .where(Conversation.patient_id == patient_id)
        .order_by(Conversation.created_at, Conversation.id)
    )
    return (await session.scalars(stmt)).all()


async def messages_of_patient(session: AsyncSession, patient_id: uuid.UUID) -> Sequence[Message]:
    """Every message of every conversation of the patient, oldest first."""
    stmt = (
        select(Message)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Conversation.patient_id == patient_id)
        .order_by(Message.created_at, Message.id)
    )
    return (await session.scalars(stmt)).all()


async def appointments_of(session: AsyncSession, patient_id: uuid.UUID) -> Sequence[Appointment]:
    stmt = (
        select(Appointment)
        .where(Appointment.patient_id == patient_id)
        .order_by(Appointment.start_at, Appointment.id)
    )
    return (await session.scalars(stmt)).all()


async def survey_answers_of(
    session: AsyncSession, patient_id: uuid.UUID
) -> list[tuple[SurveyAnswer, str]]:
    """The patient's survey answers with the key of the journey that asked, oldest first."""
    stmt = (
        select(SurveyAnswer, Journey.key)
        .join(Enrollment, Enrollment.id == SurveyAnswer.enrollment_id)
        .join(Journey, Journey.id == Enrollment.journey_id)
        .where(Enrollment.patient_id == patient_id)
        .order_by(SurveyAnswer.created_at, SurveyAnswer.id)
    )
    return [(answer, key) for answer, key in (await session.execute(stmt)).all()]


async def unresolved_conversations(session: AsyncSession, patient_id: uuid.UUID) -> int:
    """Conversations staff have not resolved (open, pending or snoozed)."""
    stmt = select(func.count()).where(
        Conversation.patient_id == patient_id, Conversation.status != ConversationStatus.RESOLVED
    )
    return int(await session.scalar(stmt) or 0)


async def message_ids_of_patient(session: AsyncSession, patient_id: uuid.UUID) -> list[uuid.UUID]:
    stmt = (
        select(Message.id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Conversation.patient_id == patient_id)
    )
    return list((await session.scalars(stmt)).all())


async def count_where(session: AsyncSession, model: Any, *where: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def delete_where(session: AsyncSession, model: Any, *where: Any) -> int:
    """Delete matching rows; how many went."""
    result: Any = await session.execute(delete(model).where(*where))
    return int(result.rowcount or 0)


async def suppressions_for(
    session: AsyncSession, bidx: bytes, channel: Channel
) -> Sequence[ConsentSuppression]:
    stmt = select(ConsentSuppression).where(
        ConsentSuppression.address_bidx == bidx, ConsentSuppression.channel == channel
    )
    return (await session.scalars(stmt)).all()


# -- messages' files and raw events -----------------------------------------------------------


async def recording_sids_of(session: AsyncSession, message_ids: Sequence[uuid.UUID]) -> list[str]:
    """The Twilio recordings behind these messages (voicemails)."""
    if not message_ids:
        return []
    stmt = select(Message.provider_message_id).where(
        Message.id.in_(message_ids),
        Message.channel == Channel.VOICE,
        Message.provider == VOICE_PROVIDER,
        Message.provider_message_id.startswith(RECORDING_SID_PREFIX),
    )
    return [sid for sid in (await session.scalars(stmt)).all() if sid]


async def delete_inbound_events(
    session: AsyncSession, message_ids: Sequence[uuid.UUID], recording_sids: Sequence[str]
) -> int:
    """The provider's raw webhooks behind these messages (they hold the sender's address and
    words): linked ones, and a voicemail's transcript, which is keyed by its recording."""
    gone = 0
    if message_ids:
        gone += await delete_where(session, InboundEvent, InboundEvent.message_id.in_(message_ids))
    if recording_sids:
        keys = [*recording_sids, *(f"{sid}/transcript" for sid in recording_sids)]
        gone += await delete_where(
            session,
            InboundEvent,
            InboundEvent.provider == VOICE_PROVIDER,
            InboundEvent.provider_event_id.in_(keys),
        )
    return gone


# -- retention --------------------------------------------------------------------------------


async def expired_messages(session: AsyncSession, before: datetime, limit: int) -> list[uuid.UUID]:
    """Messages older than ``before`` in resolved conversations (an open one is still being
    worked on, whatever its age)."""
    stmt = (
        select(Message.id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Conversation.status == ConversationStatus.RESOLVED, Message.created_at < before)
        .order_by(Message.created_at)
        .limit(limit)
    )
    return list((await session.scalars(stmt)).all())


async def expired_notes(session: AsyncSession, before: datetime, limit: int) -> list[uuid.UUID]:
    stmt = (
        select(Note.id)
        .join(Conversation, Conversation.id == Note.conversation_id)
        .where(Conversation.status == ConversationStatus.RESOLVED, Note.created_at < before)
        .order_by(Note.created_at)
        .limit(limit)
    )
    return list((await session.scalars(stmt)).all())


async def expired_attachments(
    session: AsyncSession, before: datetime, limit: int, *, recordings: bool
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(attachment id, message id) of files older than ``before``: voicemail recordings, or
    every other attachment."""
    is_recording = Message.channel == Channel.VOICE
    stmt = (
        select(Attachment.id, Attachment.message_id)
        .join(Message, Message.id == Attachment.message_id)
        .where(Attachment.created_at < before, is_recording if recordings else ~is_recording)
        .order_by(Attachment.created_at)
        .limit(limit)
    )
    return [(a, m) for a, m in (await session.execute(stmt)).all()]


async def retention_run_for_update(session: AsyncSession, day: str) -> RetentionRun | None:
    return await session.get(RetentionRun, day, with_for_update=True)


async def last_finished_run(session: AsyncSession) -> RetentionRun | None:
    stmt = (
        select(RetentionRun)
        .where(RetentionRun.finished_at.is_not(None))
        .order_by(RetentionRun.day.desc())
        .limit(1)
    )
    return (await session.scalars(stmt)).first()


# -- provider deletions -----------------------------------------------------------------------


async def queued_sids(session: AsyncSession, provider: str, sids: Sequence[str]) -> set[str]:
    if not sids:
        return set()
    stmt = select(ProviderDeletion.resource_sid).where(
        ProviderDeletion.provider == provider, ProviderDeletion.resource_sid.in_(sids)
    )
    return set((await session.scalars(stmt)).all())


async def due_deletions(
    session: AsyncSession, now: datetime, limit: int, *, skip_locked: bool
) -> Sequence[ProviderDeletion]:
    stmt = (
        select(ProviderDeletion)
        .where(ProviderDeletion.done_at.is_(None), ProviderDeletion.next_attempt_at <= now)
        .order_by(ProviderDeletion.next_attempt_at)
        .limit(limit)
    )
    if skip_locked:
        stmt = stmt.with_for_update(skip_locked=True)
    return (await session.scalars(stmt)).all()


async def deletions_by_id(
    session: AsyncSession, ids: Sequence[uuid.UUID]
) -> Sequence[ProviderDeletion]:
    stmt = select(ProviderDeletion).where(ProviderDeletion.id.in_(ids)).with_for_update()
    return (await session.scalars(stmt)).all()


async def pending_deletions(session: AsyncSession) -> int:
    return await count_where(session, ProviderDeletion, ProviderDeletion.done_at.is_(None))
