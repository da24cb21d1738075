"""Patients SQL that spans the inbox and journeys: what a merge moves and its record.
Callers own the session and the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.consent.models import ConsentRecord
from hub.enums import ConversationStatus
from hub.inbox.models import Conversation
from hub.inbox.patient_models import PatientExternalId, PatientMerge
from hub.journeys.models import Appointment, Enrollment, Journey, RunStatus, StepRun

MOVED_BY_PATIENT: dict[str, Any] = {
    "conversations": Conversation,
    "consent_records": ConsentRecord,
    "enrollments": Enrollment,
    "appointments": Appointment,
    "external_ids": PatientExternalId,
}
"""What a merge moves from the source to the target, by the name its record uses."""


async def ids_of_patient(session: AsyncSession, model: Any, patient_id: uuid.UUID) -> list[str]:
    stmt = select(model.id).where(model.patient_id == patient_id)
    return [str(i) for i in (await session.scalars(stmt)).all()]


async def move_rows(
    session: AsyncSession, model: Any, ids: Collection[str], patient_id: uuid.UUID
) -> None:
    if ids:
        await session.execute(
            update(model)
            .where(model.id.in_([uuid.UUID(i) for i in ids]))
            .values(patient_id=patient_id)
        )


async def merge_for_update(session: AsyncSession, merge_id: uuid.UUID) -> PatientMerge | None:
    return await session.get(PatientMerge, merge_id, with_for_update=True)


async def merges_of(session: AsyncSession, patient_id: uuid.UUID) -> Sequence[PatientMerge]:
    """Merges into this patient, newest first (its page offers the undo)."""
    stmt = (
        select(PatientMerge)
        .where(PatientMerge.target_id == patient_id)
        .order_by(PatientMerge.created_at.desc())
    )
    return (await session.scalars(stmt)).all()


async def open_conversations(session: AsyncSession, patient_id: uuid.UUID) -> int:
    stmt = select(func.count()).where(
        Conversation.patient_id == patient_id, Conversation.status != ConversationStatus.RESOLVED
    )
    return int(await session.scalar(stmt) or 0)


# -- journeys on the patient's page ------------------------------------------------------------


async def enrollments_of(
    session: AsyncSession, patient_id: uuid.UUID, limit: int = 50
) -> list[tuple[uuid.UUID, str, str, datetime | None, datetime | None, datetime | None, int]]:
    """(enrollment id, journey name, status, appointment start, confirmed at, next planned
    step, steps not yet sent) for the patient's page, newest enrollment first."""
    pending = (StepRun.status == RunStatus.PLANNED) | (StepRun.status == RunStatus.CLAIMED)
    next_due = (
        select(func.min(StepRun.due_at))
        .where(StepRun.enrollment_id == Enrollment.id, StepRun.status == RunStatus.PLANNED)
        .scalar_subquery()
    )
    waiting = (
        select(func.count())
        .where(StepRun.enrollment_id == Enrollment.id, pending)
        .scalar_subquery()
    )
    stmt = (
        select(
            Enrollment.id,
            Journey.name,
            Enrollment.status,
            Appointment.start_at,
            Enrollment.confirmed_at,
            next_due,
            waiting,
        )
        .join(Journey, Journey.id == Enrollment.journey_id)
        .outerjoin(Appointment, Appointment.id == Enrollment.appointment_id)
        .where(Enrollment.patient_id == patient_id)
        .order_by(Enrollment.created_at.desc())
        .limit(limit)
    )
    return [
        (eid, name, status.value, start, confirmed, due, int(n or 0))
        for eid, name, status, start, confirmed, due, n in (await session.execute(stmt)).all()
    ]


async def enrollment_with_key(
    session: AsyncSession, enrollment_id: uuid.UUID
) -> tuple[Enrollment, str] | None:
    """The enrollment and its journey's key (what the journeys' cancel is addressed by)."""
    stmt = (
        select(Enrollment, Journey.key)
        .join(Journey, Journey.id == Enrollment.journey_id)
        .where(Enrollment.id == enrollment_id)
    )
    row = (await session.execute(stmt)).first()
    return None if row is None else (row[0], row[1])
