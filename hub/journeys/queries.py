"""Journey SQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.journeys.models import (
    Appointment,
    Enrollment,
    EnrollmentStatus,
    Journey,
    JourneyStatus,
    RunStatus,
    StepRun,
    SurveyAnswer,
)


async def journey_by_key(session: AsyncSession, key: str) -> Journey | None:
    return (await session.scalars(select(Journey).where(Journey.key == key))).first()


async def appointment_by_external(
    session: AsyncSession, source: str, external_id: str
) -> Appointment | None:
    stmt = select(Appointment).where(
        Appointment.source == source, Appointment.external_id == external_id
    )
    return (await session.scalars(stmt)).first()


async def enrollment_by_key(
    session: AsyncSession, journey_id: uuid.UUID, dedupe_key: str
) -> Enrollment | None:
    stmt = select(Enrollment).where(
        Enrollment.journey_id == journey_id, Enrollment.dedupe_key == dedupe_key
    )
    return (await session.scalars(stmt)).first()


async def runs_of(
    session: AsyncSession, enrollment_id: uuid.UUID, statuses: Sequence[RunStatus] | None = None
) -> Sequence[StepRun]:
    stmt = select(StepRun).where(StepRun.enrollment_id == enrollment_id)
    if statuses is not None:
        stmt = stmt.where(StepRun.status.in_(statuses))
    return (await session.scalars(stmt.order_by(StepRun.due_at))).all()


async def claim_due(
    session: AsyncSession, now: datetime, limit: int, postgres: bool
) -> Sequence[StepRun]:
    """Due runs of active enrollments in active journeys, and runs whose batch's lease ran
    out (that batch died). SKIP LOCKED lets many claimers take disjoint batches."""
    stmt = (
        select(StepRun)
        .join(Enrollment, Enrollment.id == StepRun.enrollment_id)
        .join(Journey, Journey.id == Enrollment.journey_id)
        .where(
            StepRun.due_at <= now,
            Enrollment.status == EnrollmentStatus.ACTIVE,
            Journey.status == JourneyStatus.ACTIVE,
            or_(
                StepRun.status == RunStatus.PLANNED,
                and_(StepRun.status == RunStatus.CLAIMED, StepRun.claimed_until < now),
            ),
        )
        .order_by(StepRun.due_at)
        .limit(limit)
    )
    if postgres:
        stmt = stmt.with_for_update(of=StepRun, skip_locked=True)
    return (await session.scalars(stmt)).all()


async def run_for_update(session: AsyncSession, run_id: uuid.UUID) -> StepRun | None:
    stmt = select(StepRun).where(StepRun.id == run_id).with_for_update()
    return (await session.scalars(stmt)).first()


async def active_enrollments_of(
    session: AsyncSession, patient_id: uuid.UUID
) -> Sequence[Enrollment]:
    stmt = select(Enrollment).where(
        Enrollment.patient_id == patient_id, Enrollment.status == EnrollmentStatus.ACTIVE
    )
    return (await session.scalars(stmt)).all()


async def survey_answers(session: AsyncSession, enrollment_id: uuid.UUID) -> list[SurveyAnswer]:
    stmt = select(SurveyAnswer).where(SurveyAnswer.enrollment_id == enrollment_id)
    return list((await session.scalars(stmt)).all())


async def patient_replied_since(
    session: AsyncSession, patient_id: uuid.UUID, since: datetime
) -> bool:
    from hub.enums import Direction
    from hub.inbox.models import Conversation, Message

    stmt = (
        select(Message.id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            Conversation.patient_id == patient_id,
            Message.direction == Direction.INBOUND,
            Message.created_at >= since,
        )
        .limit(1)
    )
    return (await session.scalars(stmt)).first() is not None


async def all_journeys(session: AsyncSession) -> Sequence[Journey]:
    return (await session.scalars(select(Journey).order_by(Journey.name))).all()


async def enrollments_of_journey(
    session: AsyncSession, journey_id: uuid.UUID
) -> Sequence[Enrollment]:
    return (
        await session.scalars(select(Enrollment).where(Enrollment.journey_id == journey_id))
    ).all()


async def patient_enrollments(
    session: AsyncSession, patient_id: uuid.UUID, limit: int = 10
) -> list[tuple[str, str, datetime | None, datetime | None, datetime | None]]:
    """(journey name, enrollment status, appointment start, confirmed at, next planned step)
    for the patient card, newest enrollment first."""
    from sqlalchemy import func

    next_due = (
        select(func.min(StepRun.due_at))
        .where(StepRun.enrollment_id == Enrollment.id, StepRun.status == RunStatus.PLANNED)
        .scalar_subquery()
    )
    stmt = (
        select(
            Journey.name,
            Enrollment.status,
            Appointment.start_at,
            Enrollment.confirmed_at,
            next_due,
        )
        .join(Journey, Journey.id == Enrollment.journey_id)
        .outerjoin(Appointment, Appointment.id == Enrollment.appointment_id)
        .where(Enrollment.patient_id == patient_id)
        .order_by(Enrollment.created_at.desc())
        .limit(limit)
    )
    return [
        (name, status.value, start, confirmed, due)
        for name, status, start, confirmed, due in (await session.execute(stmt)).all()
    ]


async def run_of_message(session: AsyncSession, message_id: uuid.UUID) -> StepRun | None:
    return (await session.scalars(select(StepRun).where(StepRun.message_id == message_id))).first()


async def attempts_of_step(
    session: AsyncSession, enrollment_id: uuid.UUID, step_id: str
) -> list[StepRun]:
    stmt = select(StepRun).where(StepRun.enrollment_id == enrollment_id, StepRun.step_id == step_id)
    return list((await session.scalars(stmt.order_by(StepRun.attempt))).all())
