"""SQL of CSAT after resolution (the journey side: settings, surveys, their conversations)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.enums import Direction
from hub.inbox.event_models import ConversationEvent, StatusEvent
from hub.inbox.models import Message
from hub.journeys.csat_models import CsatSetting, CsatSurvey
from hub.journeys.models import Enrollment, EnrollmentStatus


async def settings(session: AsyncSession) -> dict[uuid.UUID, CsatSetting]:
    return {s.team_id: s for s in (await session.scalars(select(CsatSetting))).all()}


async def setting_of(session: AsyncSession, team_id: uuid.UUID) -> CsatSetting | None:
    return await session.get(CsatSetting, team_id)


async def survey_of_enrollment(
    session: AsyncSession, enrollment_id: uuid.UUID
) -> CsatSurvey | None:
    stmt = select(CsatSurvey).where(CsatSurvey.enrollment_id == enrollment_id)
    return (await session.scalars(stmt)).first()


async def active_surveys(
    session: AsyncSession,
    *,
    conversation_id: uuid.UUID | None = None,
    patient_id: uuid.UUID | None = None,
    team_id: uuid.UUID | None = None,
) -> Sequence[tuple[CsatSurvey, Enrollment]]:
    """Surveys whose enrollment still runs, of one conversation, patient or team."""
    stmt = (
        select(CsatSurvey, Enrollment)
        .join(Enrollment, Enrollment.id == CsatSurvey.enrollment_id)
        .where(Enrollment.status == EnrollmentStatus.ACTIVE)
    )
    if conversation_id is not None:
        stmt = stmt.where(CsatSurvey.conversation_id == conversation_id)
    if patient_id is not None:
        # By the enrollment's patient (indexed): intake asks on every message it takes.
        stmt = stmt.where(Enrollment.patient_id == patient_id)
    if team_id is not None:
        stmt = stmt.where(CsatSurvey.team_id == team_id)
    return [(s, e) for s, e in (await session.execute(stmt)).all()]


async def inbound_since(
    session: AsyncSession, conversation_id: uuid.UUID, since: datetime, but: uuid.UUID
) -> bool:
    """Whether the patient wrote in the conversation since ``since``, apart from message ``but``."""
    stmt = select(func.count()).where(
        Message.conversation_id == conversation_id,
        Message.direction == Direction.INBOUND,
        Message.created_at >= since,
        Message.id != but,
    )
    return bool(await session.scalar(stmt))


async def message_count(session: AsyncSession, conversation_id: uuid.UUID) -> int:
    stmt = select(func.count()).where(Message.conversation_id == conversation_id)
    return int(await session.scalar(stmt) or 0)


async def forget_reopen(session: AsyncSession, conversation_id: uuid.UUID, at: datetime) -> None:
    """Take back the reopening intake recorded at ``at``: the message was only the answer, and
    the resolution stands (the reports' reopen rate must not count it)."""
    await session.execute(
        delete(ConversationEvent).where(
            ConversationEvent.conversation_id == conversation_id,
            ConversationEvent.kind == StatusEvent.REOPENED,
            ConversationEvent.at == at,
        )
    )
