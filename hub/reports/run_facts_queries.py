"""SQL of the run facts refresh: the queue of changed enrollments, patients and appointments,
their rows, and the facts."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from hub.consent.models import ConsentRecord, ConsentState
from hub.enums import Direction
from hub.inbox.models import Conversation, Message
from hub.journeys.models import Appointment, Enrollment, StepRun
from hub.reports.facts_queries import among, any_of, insert_for, insert_many, rows_of
from hub.reports.models import AppointmentFact, RollupDirty, RunFact
from hub.reports.run_facts import EnrollmentSource, PatientEvents, RunRow

ENROLLMENT = "enrollment"
PATIENT = "patient"
APPOINTMENT = "appointment"
"""``report_rollup_dirty.kind`` values (the triggers of migration 0030 write the same)."""

Read = list[tuple[uuid.UUID, int]]


async def anything_dirty(session: AsyncSession, queue: Any = RollupDirty) -> bool:
    """Whether ``queue`` (this one, or another keyed by kind, item and version such as the
    delivery rollup's) holds anything. In key order, so PostgreSQL reads the primary key's
    index and stops at the first live entry: a bare LIMIT 1 is a sequential scan, which on a
    queue emptied all day walks every dead row first (22.8 ms measured on a bloated one)."""
    return await session.scalar(first_queued(queue)) is not None


def first_queued(queue: Any) -> Any:
    return select(queue.kind).order_by(queue.kind, queue.item_id).limit(1)


async def dirty_batch(
    session: AsyncSession, kind: str, limit: int, queue: Any = RollupDirty
) -> Read:
    rows = await session.execute(
        select(queue.item_id, queue.version).where(queue.kind == kind).limit(limit)
    )
    return [(r[0], r[1]) for r in rows]


async def clear_dirty(
    session: AsyncSession, kind: str, read: Read, queue: Any = RollupDirty
) -> None:
    """Only at the version read: a row changed meanwhile stays queued."""
    if read:
        key = tuple_(queue.item_id, queue.version)
        await session.execute(delete(queue).where(queue.kind == kind, among(session, key, read)))


async def queue(session: AsyncSession, kind: str, keys: Any) -> None:
    """Queue ``keys`` (a SELECT of one id column) as ``kind``."""
    ids = select(literal(kind), keys.c[0], literal(1)).where(keys.c[0].is_not(None))
    stmt = insert_for(session, RollupDirty).from_select(["kind", "item_id", "version"], ids)
    stmt = stmt.on_conflict_do_update(
        index_elements=["kind", "item_id"], set_={"version": RollupDirty.version + 1}
    )
    await session.execute(stmt)


async def queue_patients_enrollments(session: AsyncSession, patients: Sequence[uuid.UUID]) -> None:
    if patients:
        ids = (
            select(Enrollment.id).where(any_of(session, Enrollment.patient_id, patients)).subquery()
        )
        await queue(session, ENROLLMENT, ids)


async def queue_everything(session: AsyncSession) -> None:
    """Every enrollment and appointment (first build, a restore, the clinic's zone changed)."""
    await queue(session, ENROLLMENT, select(Enrollment.id).subquery())
    await queue(session, APPOINTMENT, select(Appointment.id).subquery())


async def _runs(session: AsyncSession, where: Any) -> dict[uuid.UUID, list[RunRow]]:
    rows = await rows_of(
        session,
        select(
            StepRun.enrollment_id,
            StepRun.id,
            StepRun.step_id,
            StepRun.status,
            StepRun.reason,
            StepRun.due_at,
            Message.created_at,
            Message.channel,
            Message.purpose,
            Message.status,
            Message.error_code,
        )
        .outerjoin(Message, Message.id == StepRun.message_id)
        .where(where),
    )
    found: dict[uuid.UUID, list[RunRow]] = defaultdict(list)
    for r in rows:
        found[r[0]].append(
            RunRow(
                r[1],
                r[2],
                r[3].value,
                r[4],
                r[5],
                r[6],
                r[7].value if r[7] is not None else None,
                r[8],
                r[9].value if r[9] is not None else None,
                r[10],
            )
        )
    return found


async def enrollment_sources(
    session: AsyncSession, ids: Sequence[uuid.UUID]
) -> list[EnrollmentSource]:
    """The enrollments ``ids`` that still exist, with their runs."""
    enrollments = (
        await rows_of(
            session,
            select(
                Enrollment.id,
                Enrollment.journey_id,
                Enrollment.version,
                Enrollment.patient_id,
                Enrollment.appointment_id,
                Enrollment.confirmed_at,
                Enrollment.cancelled_at,
            ).where(any_of(session, Enrollment.id, ids)),
        )
    ).all()
    runs = await _runs(session, any_of(session, StepRun.enrollment_id, ids))
    return [
        EnrollmentSource(e[0], e[1], e[2], e[3], e[4], e[5], e[6], runs.get(e[0], []))
        for e in enrollments
    ]


async def patient_events(
    session: AsyncSession, patients: Sequence[uuid.UUID]
) -> dict[uuid.UUID, PatientEvents]:
    inbound: dict[uuid.UUID, list[Any]] = defaultdict(list)
    revoked: dict[uuid.UUID, list[tuple[str, str, Any]]] = defaultdict(list)
    if patients:
        rows = await rows_of(
            session,
            select(Conversation.patient_id, Message.created_at)
            .join(Message, Message.conversation_id == Conversation.id)
            .where(
                any_of(session, Conversation.patient_id, patients),
                Message.direction == Direction.INBOUND,
            ),
        )
        for pid, at in rows:
            inbound[pid].append(at)
        consents = await rows_of(
            session,
            select(
                ConsentRecord.patient_id,
                ConsentRecord.channel,
                ConsentRecord.purpose,
                ConsentRecord.created_at,
            ).where(
                any_of(session, ConsentRecord.patient_id, patients),
                ConsentRecord.state == ConsentState.REVOKED,
            ),
        )
        for pid, channel, purpose, at in consents:
            revoked[pid].append((channel.value, purpose.value, at))
    return {p: PatientEvents(inbound.get(p, []), revoked.get(p, [])) for p in patients}


async def appointments_of_facts(
    session: AsyncSession, enrollments: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Appointments the enrollments' facts were counted under (before this refresh)."""
    rows = await rows_of(
        session,
        select(RunFact.appointment_id)
        .where(
            any_of(session, RunFact.enrollment_id, enrollments), RunFact.appointment_id.is_not(None)
        )
        .distinct(),
    )
    return {r[0] for r in rows if r[0] is not None}


async def replace_run_facts(
    session: AsyncSession, enrollments: Sequence[uuid.UUID], rows: Sequence[dict[str, Any]]
) -> None:
    await session.execute(
        delete(RunFact).where(any_of(session, RunFact.enrollment_id, enrollments))
    )
    await insert_many(session, RunFact, rows)


async def appointment_sources(
    session: AsyncSession, ids: Sequence[uuid.UUID]
) -> list[tuple[Any, ...]]:
    """(id, start, status, cancelled at, {journey ids}, [runs of all its enrollments]) of the
    appointments ``ids`` that still exist."""
    appointments = (
        await rows_of(
            session,
            select(
                Appointment.id, Appointment.start_at, Appointment.status, Appointment.cancelled_at
            ).where(any_of(session, Appointment.id, ids)),
        )
    ).all()
    enrollments = (
        await rows_of(
            session,
            select(Enrollment.appointment_id, Enrollment.id, Enrollment.journey_id).where(
                any_of(session, Enrollment.appointment_id, ids)
            ),
        )
    ).all()
    runs = await _runs(session, any_of(session, StepRun.enrollment_id, [e[1] for e in enrollments]))
    journeys: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
    of_appointment: dict[uuid.UUID, list[RunRow]] = defaultdict(list)
    for appointment_id, enrollment_id, journey_id in enrollments:
        if appointment_id is None:
            continue
        journeys[appointment_id].add(journey_id)
        of_appointment[appointment_id].extend(runs.get(enrollment_id, []))
    return [
        (a[0], a[1], a[2].value, a[3], journeys.get(a[0], set()), of_appointment.get(a[0], []))
        for a in appointments
    ]


async def replace_appointment_facts(
    session: AsyncSession, ids: Sequence[uuid.UUID], rows: Sequence[dict[str, Any]]
) -> None:
    await session.execute(
        delete(AppointmentFact).where(any_of(session, AppointmentFact.appointment_id, ids))
    )
    await insert_many(session, AppointmentFact, rows)
