"""The tables as bulk enrollment (hub.journeys.bulk) reads and writes them: one query per chunk
for each lookup, records of the rows it may change, and one multi-row statement per table to
store them (COPY on PostgreSQL, executemany elsewhere), never an ORM object per row."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, cast

import asyncpg
from sqlalchemy import (
    JSON,
    ColumnElement,
    Row,
    Table,
    any_,
    bindparam,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from hub.crypto import KeyRing, associated_data
from hub.inbox.models import Patient
from hub.journeys.models import (
    Appointment,
    AppointmentStatus,
    Enrollment,
    EnrollmentStatus,
    RunStatus,
    StepRun,
)

ID_PARAM = "row_id"
"""Bind name of the primary key in executemany updates (must differ from every column)."""
PATIENT_COLUMNS = (
    "id",
    "name_enc",
    "phone_enc",
    "phone_bidx",
    "email_enc",
    "email_bidx",
    "language",
    "time_zone",
    "channel_order",
    "verified",
    "unreachable",
    "created_at",
    "updated_at",
    "birth_date_enc",
)
"""The order of a new patient's values for ``store_contacts``."""
_APPOINTMENT_COLUMNS = (
    "id",
    "patient_id",
    "source",
    "external_id",
    "start_at",
    "location_enc",
    "provider_enc",
    "status",
    "cancelled_at",
    "updated_at",
)
_ENROLLMENT_COLUMNS = (
    "id",
    "journey_id",
    "patient_id",
    "appointment_id",
    "dedupe_key",
    "anchor_at",
    "status",
    "cancelled_at",
    "created_at",
)
_RUN_COLUMNS = (
    "id",
    "enrollment_id",
    "step_id",
    "attempt",
    "due_at",
    "status",
    "reason",
    "updated_at",
)
"""What a new row sets; the other columns are nullable and start empty."""


@dataclass(slots=True)
class AppointmentRecord:
    id: uuid.UUID
    source: str
    external_id: str
    patient_id: uuid.UUID
    start_at: datetime
    location: str | None
    provider: str | None
    status: AppointmentStatus
    new: bool
    changed: bool = False
    cancelled_at: datetime | None = None


@dataclass(slots=True)
class RunRecord:
    id: uuid.UUID
    step_id: str
    due_at: datetime
    status: RunStatus
    reason: str | None
    claimed_until: datetime | None = None
    changed: bool = False


@dataclass(slots=True)
class EnrollmentRecord:
    id: uuid.UUID
    key: str
    anchor_at: datetime
    status: EnrollmentStatus
    runs: list[RunRecord] | None
    """None for a stored enrollment whose runs were not read (no row of the chunk changes it)."""
    cancelled_at: datetime | None = None
    new: bool = False
    changed: bool = False
    patient_id: uuid.UUID | None = None
    appointment_id: uuid.UUID | None = None
    version: int | None = None
    """The journey version a stored enrollment follows (None: the current one)."""


def table_of(model: type[Any]) -> Table:
    return cast(Table, model.__table__)


def _postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


@asynccontextmanager
async def planned_for_these_values(session: AsyncSession) -> AsyncIterator[None]:
    """Statements inside are planned for their actual parameters (PostgreSQL).

    The driver prepares each statement once per connection, and after five runs PostgreSQL may
    switch to a generic plan made while the tables were nearly empty (a launch fills them, and
    autovacuum has not analyzed them yet): a sequential scan comparing every row with a chunk's
    2,000 keys, which took 70 s of a 100,000-row launch. Planning anew costs a millisecond per
    lookup. Only the lookups, though: under the same setting every foreign-key check of the
    inserts that follow is planned anew too, which made them two and a half times slower."""
    postgres = _postgres(session)
    if postgres:
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    yield
    # Not in a finally: after an error the transaction is rolled back, setting and all.
    if postgres:
        await session.execute(text("SET LOCAL plan_cache_mode TO DEFAULT"))


def _one_of(
    session: AsyncSession, column: QueryableAttribute[Any], values: Collection[Any]
) -> ColumnElement[bool]:
    """``column IN (...)``; on PostgreSQL ``column = ANY($1)``: one array parameter rather
    than thousands of scalar ones to send and plan."""
    if _postgres(session):
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    return column.in_(list(values))


async def patients_by_blind_index(
    session: AsyncSession, phone_bidx: Collection[bytes], email_bidx: Collection[bytes]
) -> Sequence[Row[uuid.UUID, bytes | None, bytes | None, str]]:
    """(id, phone index, email index, time zone) of every patient matching any of the indexes,
    oldest first (the single-row path takes the oldest match too)."""
    stmt = (
        select(Patient.id, Patient.phone_bidx, Patient.email_bidx, Patient.time_zone)
        .where(
            or_(
                _one_of(session, Patient.phone_bidx, phone_bidx),
                _one_of(session, Patient.email_bidx, email_bidx),
            )
        )
        .order_by(Patient.created_at, Patient.id)
    )
    return (await session.execute(stmt)).all()


def _aad(appointment_id: uuid.UUID, column: str) -> bytes:
    return associated_data(Appointment.__tablename__, column, appointment_id)


def _unseal(
    ring: KeyRing, appointment_id: uuid.UUID, column: str, blob: bytes | None
) -> str | None:
    return None if blob is None else ring.decrypt_text(blob, _aad(appointment_id, column))


def _seal(ring: KeyRing, appointment_id: uuid.UUID, column: str, value: str | None) -> bytes | None:
    return None if value is None else ring.encrypt_text(value, _aad(appointment_id, column))


async def appointments_by_external(
    session: AsyncSession, ring: KeyRing, source: str, external_ids: Collection[str]
) -> list[AppointmentRecord]:
    """Stored appointments with those ids, location and provider unsealed (a re-launch
    compares them with the file's)."""
    if not external_ids:
        return []
    stmt = select(
        Appointment.id,
        Appointment.external_id,
        Appointment.patient_id,
        Appointment.start_at,
        Appointment.location_enc,
        Appointment.provider_enc,
        Appointment.status,
        Appointment.cancelled_at,
    ).where(Appointment.source == source, _one_of(session, Appointment.external_id, external_ids))
    return [
        AppointmentRecord(
            id_,
            source,
            external_id,
            patient_id,
            start,
            _unseal(ring, id_, "location_enc", location),
            _unseal(ring, id_, "provider_enc", provider),
            status,
            False,
            cancelled_at=cancelled_at,
        )
        for id_, external_id, patient_id, start, location, provider, status, cancelled_at in (
            await session.execute(stmt)
        )
    ]


async def enrollments_by_keys(
    session: AsyncSession, journey_id: uuid.UUID, dedupe_keys: Collection[str]
) -> list[EnrollmentRecord]:
    """The journey's enrollments with those keys, their runs not read."""
    if not dedupe_keys:
        return []
    stmt = select(
        Enrollment.id,
        Enrollment.dedupe_key,
        Enrollment.anchor_at,
        Enrollment.status,
        Enrollment.version,
    ).where(
        Enrollment.journey_id == journey_id, _one_of(session, Enrollment.dedupe_key, dedupe_keys)
    )
    return [
        EnrollmentRecord(id_, key, anchor, status, None, version=version)
        for id_, key, anchor, status, version in await session.execute(stmt)
    ]


async def runs_in_status(
    session: AsyncSession, enrollment_ids: Collection[uuid.UUID], statuses: Sequence[RunStatus]
) -> list[tuple[uuid.UUID, RunRecord]]:
    """(enrollment id, run) for those enrollments' runs in ``statuses``, soonest first."""
    if not enrollment_ids:
        return []
    stmt = (
        select(
            StepRun.enrollment_id,
            StepRun.id,
            StepRun.step_id,
            StepRun.due_at,
            StepRun.status,
            StepRun.reason,
            StepRun.claimed_until,
        )
        .where(
            _one_of(session, StepRun.enrollment_id, enrollment_ids), StepRun.status.in_(statuses)
        )
        .order_by(StepRun.due_at)
    )
    return [
        (enrollment_id, RunRecord(run_id, step_id, due_at, status, reason, claimed_until))
        for enrollment_id, run_id, step_id, due_at, status, reason, claimed_until in (
            await session.execute(stmt)
        )
    ]


async def store_contacts(
    session: AsyncSession,
    ring: KeyRing,
    patients: Sequence[tuple[Any, ...]],
    appointments: Iterable[AppointmentRecord],
    stamp: datetime,
) -> None:
    """New patients (values in PATIENT_COLUMNS order), new and changed appointments."""
    await _insert(session, Patient, PATIENT_COLUMNS, patients)
    new, changed = [], []
    for a in appointments:
        if a.new:
            new.append(
                (
                    a.id,
                    a.patient_id,
                    a.source,
                    a.external_id,
                    a.start_at,
                    _seal(ring, a.id, "location_enc", a.location),
                    _seal(ring, a.id, "provider_enc", a.provider),
                    a.status,
                    a.cancelled_at,
                    stamp,
                )
            )
        elif a.changed:
            changed.append(
                {
                    ID_PARAM: a.id,
                    "start_at": a.start_at,
                    "location_enc": _seal(ring, a.id, "location_enc", a.location),
                    "provider_enc": _seal(ring, a.id, "provider_enc", a.provider),
                    "status": a.status,
                    "cancelled_at": a.cancelled_at,
                    "updated_at": stamp,
                }
            )
    await _insert(session, Appointment, _APPOINTMENT_COLUMNS, new)
    await _update(session, Appointment, changed)


async def store_enrollments(
    session: AsyncSession,
    journey_id: uuid.UUID,
    enrollments: Iterable[EnrollmentRecord],
    stamp: datetime,
) -> None:
    """New enrollments with their runs; changed enrollments and runs of stored ones."""
    new, new_runs, changed, changed_runs = [], [], [], []
    for e in enrollments:
        if e.new:
            new.append(
                (
                    e.id,
                    journey_id,
                    e.patient_id,
                    e.appointment_id,
                    e.key,
                    e.anchor_at,
                    e.status,
                    e.cancelled_at,
                    stamp,
                )
            )
            new_runs += [
                (r.id, e.id, r.step_id, 1, r.due_at, r.status, r.reason, stamp)
                for r in e.runs or ()
            ]
            continue
        if e.changed:
            changed.append(
                {
                    ID_PARAM: e.id,
                    "anchor_at": e.anchor_at,
                    "status": e.status,
                    "cancelled_at": e.cancelled_at,
                }
            )
        changed_runs += [
            {
                ID_PARAM: r.id,
                "due_at": r.due_at,
                "claimed_until": r.claimed_until,
                "status": r.status,
                "reason": r.reason,
                "updated_at": stamp,
            }
            for r in e.runs or ()
            if r.changed
        ]
    await _insert(session, Enrollment, _ENROLLMENT_COLUMNS, new)
    await _update(session, Enrollment, changed)
    await _insert(session, StepRun, _RUN_COLUMNS, new_runs)
    await _update(session, StepRun, changed_runs)


async def _insert(
    session: AsyncSession,
    model: type[Any],
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """Insert ``rows`` (values in the order of ``columns``): PostgreSQL's COPY on PostgreSQL,
    one executemany elsewhere. Runs inside the session's transaction, which must have begun."""
    if not rows:
        return
    connection = await session.connection()
    table = table_of(model)
    if connection.dialect.name != "postgresql":
        await connection.execute(
            insert(table), [dict(zip(columns, row, strict=True)) for row in rows]
        )
        return
    # COPY rather than INSERT: asyncpg writes each record with its binary codecs, where an
    # INSERT of arrays (unnest) or an executemany spends more client time per value than the
    # server spends storing it. Same transaction, same constraints and triggers.
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    if driver is None or not driver.is_in_transaction():
        raise RuntimeError("COPY outside a transaction: run a statement in the session first")
    converters = _copy_converters(table, tuple(columns))
    if converters:
        rows = _converted(rows, converters)
    try:
        await driver.copy_records_to_table(table.name, records=rows, columns=list(columns))
    except asyncpg.IntegrityConstraintViolationError as exc:
        # What an INSERT through SQLAlchemy raises, so callers handle one exception.
        raise IntegrityError(f"COPY {table.name}", None, exc) from exc


@lru_cache(maxsize=32)
def _copy_converters(
    table: Table, columns: tuple[str, ...]
) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
    """(position, converter) for the values asyncpg's binary COPY does not take as they are:
    JSON goes as its text. (Enum members are str, which COPY takes as their value.)"""
    return tuple(
        (n, _json_text) for n, name in enumerate(columns) if isinstance(table.c[name].type, JSON)
    )


def _converted(
    rows: Sequence[tuple[Any, ...]], converters: tuple[tuple[int, Callable[[Any], Any]], ...]
) -> list[tuple[Any, ...]]:
    # Rows often share one object (every new patient's default channel order): convert each
    # object once. Ids are stable here: the rows hold every value until the call returns.
    done: dict[int, Any] = {}
    out = []
    for row in rows:
        values = list(row)
        for n, convert in converters:
            key = id(values[n])
            if key not in done:
                done[key] = convert(values[n])
            values[n] = done[key]
        out.append(tuple(values))
    return out


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


async def _update(session: AsyncSession, model: type[Any], rows: Sequence[dict[str, Any]]) -> None:
    """One executemany UPDATE by primary key: each row holds ``ID_PARAM`` and the same columns."""
    if not rows:
        return
    table = table_of(model)
    # No .values(): Core sets the columns named by the rows' other keys.
    stmt = update(table).where(table.c.id == bindparam(ID_PARAM))
    connection = await session.connection()
    await connection.execute(stmt, rows)


async def analyze_journey_tables(session: AsyncSession) -> None:
    """Fresh planner statistics after a large launch (PostgreSQL only): without them the
    tick's claim query was planned for near-empty tables and scanned every step run per claim
    (25 s per batch at 20,000 runs) until autovacuum caught up."""
    from sqlalchemy import text

    await session.execute(text("ANALYZE journey_step_run, journey_enrollment, inbox_patient"))
