"""SQL for journey versions and the lifecycle (stop, resume after stop, cancel one patient)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import distinct, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.journeys.models import (
    Enrollment,
    EnrollmentStatus,
    JourneyVersion,
    RunStatus,
    StepRun,
)

PENDING = (RunStatus.PLANNED, RunStatus.CLAIMED)


async def version_text(session: AsyncSession, journey_id: uuid.UUID, version: int) -> str | None:
    stmt = select(JourneyVersion.definition).where(
        JourneyVersion.journey_id == journey_id, JourneyVersion.version == version
    )
    return (await session.scalars(stmt)).first()


async def versions_of(session: AsyncSession, journey_id: uuid.UUID) -> Sequence[JourneyVersion]:
    stmt = (
        select(JourneyVersion)
        .where(JourneyVersion.journey_id == journey_id)
        .order_by(JourneyVersion.version.desc())
    )
    return (await session.scalars(stmt)).all()


async def pin_followers(session: AsyncSession, journey_id: uuid.UUID, version: int) -> None:
    """Enrollments that follow the current version keep it: they are pinned to ``version``."""
    await session.execute(
        update(Enrollment)
        .where(Enrollment.journey_id == journey_id, Enrollment.version.is_(None))
        .values(version=version)
        .execution_options(synchronize_session=False)
    )


async def active_by_version(session: AsyncSession, journey_id: uuid.UUID) -> dict[int | None, int]:
    """Active enrollments per pinned version (None: the current one)."""
    stmt = (
        select(Enrollment.version, func.count())
        .where(Enrollment.journey_id == journey_id, Enrollment.status == EnrollmentStatus.ACTIVE)
        .group_by(Enrollment.version)
    )
    return {version: count for version, count in (await session.execute(stmt)).all()}


async def active_on_older(
    session: AsyncSession, journey_id: uuid.UUID, current: int, limit: int
) -> Sequence[Enrollment]:
    stmt = (
        select(Enrollment)
        .where(
            Enrollment.journey_id == journey_id,
            Enrollment.status == EnrollmentStatus.ACTIVE,
            Enrollment.version.is_not(None),
            Enrollment.version != current,
        )
        .order_by(Enrollment.id)
        .limit(limit)
    )
    return (await session.scalars(stmt)).all()


async def runs_of_enrollments(
    session: AsyncSession, enrollment_ids: Sequence[uuid.UUID]
) -> Sequence[StepRun]:
    stmt = select(StepRun).where(StepRun.enrollment_id.in_(enrollment_ids))
    return (await session.scalars(stmt.order_by(StepRun.attempt))).all()


async def pending_counts(session: AsyncSession, journey_id: uuid.UUID) -> tuple[int, int]:
    """(scheduled messages, patients) that stopping the journey would cancel."""
    stmt = (
        select(func.count(StepRun.id), func.count(distinct(Enrollment.patient_id)))
        .join(Enrollment, Enrollment.id == StepRun.enrollment_id)
        .where(
            Enrollment.journey_id == journey_id,
            Enrollment.status == EnrollmentStatus.ACTIVE,
            StepRun.status.in_(PENDING),
        )
    )
    messages, patients = (await session.execute(stmt)).one()
    return int(messages), int(patients)


async def stopped_runs(
    session: AsyncSession, journey_id: uuid.UUID, reason: str
) -> Sequence[StepRun]:
    """Runs the journey's stop cancelled, of enrollments it stopped."""
    stmt = (
        select(StepRun)
        .join(Enrollment, Enrollment.id == StepRun.enrollment_id)
        .where(
            Enrollment.journey_id == journey_id,
            Enrollment.status == EnrollmentStatus.STOPPED,
            StepRun.status == RunStatus.CANCELLED,
            StepRun.reason == reason,
        )
    )
    return (await session.scalars(stmt)).all()


async def reopen_stopped(session: AsyncSession, journey_id: uuid.UUID) -> int:
    result = await session.execute(
        update(Enrollment)
        .where(Enrollment.journey_id == journey_id, Enrollment.status == EnrollmentStatus.STOPPED)
        .values(status=EnrollmentStatus.ACTIVE)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
