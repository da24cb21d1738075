"""Bulk enrollment: one chunk of cohort rows (a few thousand) in one transaction.

The meaning is that of ``match_or_create_patient`` and ``do_enroll`` applied row by row, in file
order: a patient is matched by the blind index of their phone, else of their email (the oldest
match), or created; the same patient and appointment again changes nothing; a moved appointment
moves its pending step runs; a cancelled one cancels them. Only the shape of the work differs:
the chunk is resolved in memory against one lookup query per table, and each table's new rows
go out in one statement, so the database sees a dozen round trips per chunk instead of a dozen
per row.

Audit: one ``journey.enroll_cohort`` event per chunk that wrote anything, naming every created
patient and every new or changed enrollment with its patient. An event per patient would add
a row per patient to the hash chain (as many rows as the enrollments themselves, each hashed
under the chain lock); ids in the chunk's event keep each patient's trail in the tamper-evident
log all the same.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, record
from hub.contact import InvalidContact
from hub.crypto import KeyRing, associated_data
from hub.db import Database, utcnow
from hub.errors import HubError
from hub.inbox import search_queries
from hub.inbox.actions.patient_index import name_rows
from hub.inbox.exceptions import NotFound
from hub.inbox.models import DEFAULT_CHANNEL_ORDER, Patient
from hub.journeys import bulk_queries, queries
from hub.journeys.actions import PENDING, NewAppointment, definition_of
from hub.journeys.bulk_queries import AppointmentRecord, EnrollmentRecord, RunRecord
from hub.journeys.definitions import JourneyDefinition, PlannedStep, plan
from hub.journeys.models import AppointmentStatus, EnrollmentStatus, RunStatus
from hub.journeys.outcomes import CallOff, call_off, next_status
from hub.journeys.versions import older_definitions

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 2_000
"""Cohort rows per transaction: bounds memory, the size of each lookup and what a failure undoes."""
MAX_CHUNK_ATTEMPTS = 3
"""Tries of one chunk when a concurrent enrollment inserted the same appointment or enrollment
between its lookups and its writes (the next try finds and reuses them)."""
ENROLL_SLICE = 100
"""Rows enrolled in memory between yields to the event loop (well under a millisecond)."""
MAX_CACHED_PLANS = 10_000
"""Step plans kept per launch (a few MB at most) before the cache starts over."""
COHORT_SOURCE = "cohort"
"""Appointment source of cohort files: appointment ids are unique per source."""
CANCELLED_REASON = "appointment cancelled"
ROW_ERRORS = (InvalidContact, ValueError, KeyError, HubError)
"""What a bad row raises; the row is reported and the others go on."""
_CHANNEL_ORDER = list(DEFAULT_CHANNEL_ORDER)
_REACHABLE: dict[str, str] = {}
"""Shared by every created patient's row (never mutated): serialized once per chunk."""


@dataclass(frozen=True, slots=True)
class EnrollRow:
    """One cohort row, its contacts normalized and blind-indexed (``hub.journeys.cohort``
    reads them from a file)."""

    line: int
    name: str | None
    phone: str | None
    email: str | None
    phone_bidx: bytes | None
    email_bidx: bytes | None
    language: str
    time_zone: str
    appointment: NewAppointment | None
    birth_date: str | None = None
    """ISO, checked; stored on patients the file creates (the phone cancellation PIN)."""


@dataclass
class ParsedChunk:
    """A chunk of cohort rows ready to enroll, and the rows that could not be read."""

    rows: int
    lines: tuple[int, int]
    parsed: list[EnrollRow]
    errors: list[tuple[int, str]]


@dataclass
class ChunkResult:
    rows: int = 0
    enrolled: int = 0
    already: int = 0
    patients_created: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    """(line, what was wrong), in line order."""


@dataclass(frozen=True)
class LaunchJourney:
    id: uuid.UUID
    key: str
    definition: JourneyDefinition
    plans: dict[tuple[datetime, datetime, str, int | None], list[PlannedStep]] = field(
        default_factory=dict, compare=False, repr=False
    )
    """Plans by (anchor, enrollment time, zone, version): a clinic's appointments fall on a few
    thousand slots, so most rows of a large cohort share their plan with an earlier row."""
    older: dict[int, JourneyDefinition] = field(default_factory=dict, compare=False, repr=False)
    """Earlier versions, for moving the appointment of an enrollment that keeps one."""

    def plan(
        self, anchor: datetime, now: datetime, zone: ZoneInfo, version: int | None = None
    ) -> list[PlannedStep]:
        definition = self.older.get(version, self.definition) if version else self.definition
        key = (anchor, now, zone.key, version if definition is not self.definition else None)
        found = self.plans.get(key)
        if found is None:
            if len(self.plans) >= MAX_CACHED_PLANS:
                self.plans.clear()
            found = self.plans[key] = plan(definition, anchor, now, zone=zone)
        return found


async def load_journey(db: Database, key: str) -> LaunchJourney:
    async with db.reader() as session:
        journey = await queries.journey_by_key(session, key)
        if journey is None:
            raise NotFound(f"no journey with key {key}")
        older = await older_definitions(session, journey)
        return LaunchJourney(journey.id, journey.key, definition_of(journey), older=older)


def describe(exc: Exception) -> str:
    return f"missing column {exc}" if isinstance(exc, KeyError) else str(exc)


async def do_enroll_chunk(
    db: Database,
    ring: KeyRing,
    actor: Actor,
    journey: LaunchJourney,
    chunk: ParsedChunk,
    *,
    now: datetime,
    while_writing: Callable[[], object] | None = None,
    on_committed: Callable[[ChunkWork], Awaitable[None]] | None = None,
) -> ChunkResult:
    """Match or create the chunk's patients and enroll them, in one transaction. Bad rows are
    returned with their line; the others are written. ``while_writing`` is called when the
    enrollments and step runs start on their way to the database, the chunk's longest wait:
    the caller may start CPU work then (as a task that yields), such as parsing the next chunk.
    ``on_committed`` is given the chunk's work once it is stored (the launch's own judging of
    what its steps will do, ``hub.journeys.preview.judged_launch``)."""
    for attempt in range(1, MAX_CHUNK_ATTEMPTS + 1):
        work = ChunkWork(ring, journey, now)
        try:
            async with db.transaction() as session:
                async with bulk_queries.planned_for_these_values(session):
                    items = await work.load(session, chunk.parsed)
                # The database stores patients and appointments while the rows are enrolled
                # in memory (one connection, one statement at a time: only the CPU overlaps).
                contacts = asyncio.ensure_future(
                    bulk_queries.store_contacts(
                        session, ring, work.new_patients, work.appointments.values(), work.stamp
                    )
                )
                try:
                    await work.enroll_all(items)
                except BaseException:
                    await _cancelled(contacts)
                    raise
                await contacts
                await search_queries.insert_terms(session, work.name_terms)
                if while_writing is not None:
                    while_writing()
                await bulk_queries.store_enrollments(
                    session, journey.id, work.enrollments.values(), work.stamp
                )
                await work.audit(session, actor, chunk.lines)
            break
        except IntegrityError:
            if attempt == MAX_CHUNK_ATTEMPTS:
                raise
            log.warning(
                "cohort chunk met a concurrent enrollment; trying it again",
                extra={"lines": list(chunk.lines), "attempt": attempt},
            )
    if on_committed is not None:
        await on_committed(work)
    return ChunkResult(
        rows=chunk.rows,
        enrolled=work.enrolled,
        already=work.already,
        patients_created=len(work.new_patients),
        errors=sorted(chunk.errors + work.errors),
    )


@dataclass(slots=True)
class _Patient:
    id: uuid.UUID
    zone: ZoneInfo


@dataclass(frozen=True, slots=True)
class _Resolved:
    line: int
    patient: _Patient
    appointment: AppointmentRecord | None
    start_at: datetime | None
    """The appointment's start and status as this row left them (a later row may change them)."""
    off: CallOff | None
    """The appointment's status stops the enrollment's pending steps (cancelled, no-show)."""
    key: str
    """The enrollment's dedupe key: what ``do_enroll`` would compute for this row."""

    def changes(self, anchor_at: datetime) -> bool:
        """Whether the row cancels its enrollment's pending runs or moves them."""
        return self.off is not None or (self.start_at is not None and self.start_at != anchor_at)


UNSEALED = b"dry run: not stored"
"""A new patient's value in a dry run, which writes nothing: whether there is one is all that
is asked of it (encrypting 100,000 names and addresses cost the dry run a tenth of its time)."""


class ChunkWork:
    """One attempt at one chunk: what the database holds, then the rows applied in order. The
    launch dry run (``hub.journeys.preview``) runs the same steps without the writes."""

    def __init__(
        self, ring: KeyRing, journey: LaunchJourney, now: datetime, *, writes: bool = True
    ) -> None:
        self.ring, self.journey, self.now = ring, journey, now
        self.writes = writes
        """False for the dry run: new patients' values are never stored, so not encrypted."""
        self.stamp = utcnow()
        self.new_id = _Ids()
        self.by_phone: dict[bytes, _Patient] = {}
        self.by_email: dict[bytes, _Patient] = {}
        self.appointments: dict[str, AppointmentRecord] = {}
        self.enrollments: dict[str, EnrollmentRecord] = {}
        self.new_patients: list[tuple[Any, ...]] = []
        self.name_terms: list[tuple[uuid.UUID, bytes]] = []
        """The new patients' search terms (written with them, so they are found at once)."""
        self.created_from: dict[uuid.UUID, EnrollRow] = {}
        """The row each new patient is made from (what the dry run judges them by)."""
        self.errors: list[tuple[int, str]] = []
        self.enrolled = self.already = 0

    async def load(self, session: AsyncSession, rows: Sequence[EnrollRow]) -> list[_Resolved]:
        # Appointments before patients: each statement sees what has committed by then, so a
        # concurrent launch of the same rows that commits in between leaves this chunk with
        # patients but no appointments, and its appointment inserts then collide and retry.
        # The other order would match new patients against the other launch's appointments
        # and report "belongs to another patient".
        external = {r.appointment.external_id for r in rows if r.appointment}
        for appt in await bulk_queries.appointments_by_external(
            session, self.ring, COHORT_SOURCE, external
        ):
            self.appointments[appt.external_id] = appt
        found = await bulk_queries.patients_by_blind_index(
            session,
            {r.phone_bidx for r in rows if r.phone_bidx},
            {r.email_bidx for r in rows if r.email_bidx},
        )
        for patient_id, phone_bidx, email_bidx, zone in found:
            patient = _Patient(patient_id, _stored_zone(zone))
            if phone_bidx is not None:
                self.by_phone.setdefault(phone_bidx, patient)
            if email_bidx is not None:
                self.by_email.setdefault(email_bidx, patient)
        resolved = []
        for row in rows:
            try:
                resolved.append(self._resolve(row))
            except ROW_ERRORS as exc:
                self.errors.append((row.line, describe(exc)))
        await self._load_enrollments(session, resolved)
        return resolved

    def _resolve(self, row: EnrollRow) -> _Resolved:
        patient = self.by_phone.get(row.phone_bidx) if row.phone_bidx else None
        if patient is None and row.email_bidx:
            patient = self.by_email.get(row.email_bidx)
        new = row.appointment
        appt = self.appointments.get(new.external_id) if new else None
        if new and appt and (patient is None or appt.patient_id != patient.id):
            raise ValueError(f"appointment {new.external_id} belongs to another patient")
        if patient is None:
            patient = self._create_patient(row)
        if new is None:
            key = f"{patient.id}:{self.journey.definition.anchor}:{self.now.isoformat()}"
            return _Resolved(row.line, patient, None, None, None, key)
        if appt is None:
            appt = AppointmentRecord(
                self.new_id(),
                COHORT_SOURCE,
                new.external_id,
                patient.id,
                new.start_at,
                new.location,
                new.provider,
                AppointmentStatus.BOOKED,
                new=True,
            )
            self.appointments[new.external_id] = appt
        elif (appt.start_at, appt.location, appt.provider) != (
            new.start_at,
            new.location,
            new.provider,
        ):
            appt.start_at, appt.location, appt.provider = new.start_at, new.location, new.provider
            appt.changed = True
        status = next_status(appt.status, new.reported)
        if status is not appt.status:
            if status is AppointmentStatus.CANCELLED:
                appt.cancelled_at = self.now
            appt.status, appt.changed = status, True
        key = f"{patient.id}:appointment:{appt.id}"
        return _Resolved(row.line, patient, appt, appt.start_at, call_off(appt.status), key)

    def _create_patient(self, row: EnrollRow) -> _Patient:
        patient = _Patient(self.new_id(), _zone(row.time_zone))
        self.created_from[patient.id] = row
        if self.writes:
            self.name_terms += name_rows(self.ring, patient.id, row.name)
        self.new_patients.append(  # in bulk_queries.PATIENT_COLUMNS order
            (
                patient.id,
                self.seal(patient.id, "name_enc", row.name),
                self.seal(patient.id, "phone_enc", row.phone),
                row.phone_bidx,
                self.seal(patient.id, "email_enc", row.email),
                row.email_bidx,
                row.language,
                row.time_zone,
                _CHANNEL_ORDER,
                True,
                _REACHABLE,
                self.stamp,
                self.stamp,
                self.seal(patient.id, "birth_date_enc", row.birth_date),
            )
        )
        # Later rows of the chunk with the same phone or email meet this patient.
        if row.phone_bidx:
            self.by_phone.setdefault(row.phone_bidx, patient)
        if row.email_bidx:
            self.by_email.setdefault(row.email_bidx, patient)
        return patient

    def seal(self, patient_id: uuid.UUID, column: str, value: str | None) -> bytes | None:
        """``Sealed.seal`` without an ORM object: the same key ring and row-bound AAD."""
        if value is None:
            return None
        if not self.writes:
            return UNSEALED
        aad = associated_data(Patient.__tablename__, column, patient_id)
        return self.ring.encrypt_text(value, aad)

    async def _load_enrollments(self, session: AsyncSession, resolved: list[_Resolved]) -> None:
        # An appointment created by this chunk has a new id: no enrollment can name it yet.
        keys = {r.key for r in resolved if not (r.appointment and r.appointment.new)}
        for enrollment in await bulk_queries.enrollments_by_keys(session, self.journey.id, keys):
            self.enrollments[enrollment.key] = enrollment
        # Runs are read only where some row cancels or moves the anchor: a re-launch of an
        # unchanged cohort reads no runs at all.
        touched: dict[uuid.UUID, list[RunRecord]] = {}
        for item in resolved:
            stored = self.enrollments.get(item.key)
            if stored is not None and item.changes(stored.anchor_at):
                stored.runs = touched.setdefault(stored.id, [])
        for enrollment_id, run in await bulk_queries.runs_in_status(session, touched, PENDING):
            touched[enrollment_id].append(run)

    async def enroll_all(self, items: Sequence[_Resolved]) -> None:
        """``enroll`` each row in order, yielding to the event loop every ENROLL_SLICE rows so
        that the patients' and appointments' writes progress meanwhile."""
        for n, item in enumerate(items, start=1):
            self.enroll(item)
            if n % ENROLL_SLICE == 0:
                await asyncio.sleep(0)

    def enroll(self, item: _Resolved) -> None:
        enrollment = self.enrollments.get(item.key)
        if enrollment is None:
            self.enrollments[item.key] = self._new_enrollment(item)
            self.enrolled += 1
        else:
            self.already += 1
            self._refresh(enrollment, item)

    def _new_enrollment(self, item: _Resolved) -> EnrollmentRecord:
        anchor = item.start_at or self.now
        runs = [
            RunRecord(
                self.new_id(),
                planned.step_id,
                planned.due_at,
                RunStatus.SKIPPED if planned.skipped else RunStatus.PLANNED,
                planned.skip_reason,
            )
            for planned in self.journey.plan(anchor, self.now, item.patient.zone)
        ]
        enrollment = EnrollmentRecord(
            self.new_id(),
            item.key,
            anchor,
            EnrollmentStatus.ACTIVE,
            runs,
            new=True,
            patient_id=item.patient.id,
            appointment_id=item.appointment.id if item.appointment else None,
        )
        if item.off is not None:
            _end(enrollment, item.off, self.now)
            for run in runs:
                run.status, run.reason = RunStatus.CANCELLED, item.off.reason
        return enrollment

    def _refresh(self, enrollment: EnrollmentRecord, item: _Resolved) -> None:
        if not item.changes(enrollment.anchor_at):
            return
        assert enrollment.runs is not None, "runs are read for every enrollment a row changes"
        pending = [run for run in enrollment.runs if run.status in PENDING]
        if item.off is not None:
            if enrollment.status is EnrollmentStatus.ACTIVE:
                _end(enrollment, item.off, self.now)
                enrollment.changed = True
            for run in pending:
                run.status, run.reason, run.changed = RunStatus.CANCELLED, item.off.reason, True
            return
        assert item.start_at is not None
        enrollment.anchor_at, enrollment.changed = item.start_at, True
        # An enrollment pinned to an earlier version moves with that version's steps.
        planned_steps = self.journey.plan(
            item.start_at, self.now, item.patient.zone, enrollment.version
        )
        due = {p.step_id: p for p in planned_steps}
        for run in pending:
            planned = due.get(run.step_id)
            if planned is None:
                continue
            run.due_at, run.claimed_until, run.reason = planned.due_at, None, planned.skip_reason
            run.status = RunStatus.SKIPPED if planned.skipped else RunStatus.PLANNED
            run.changed = True

    async def audit(self, session: AsyncSession, actor: Actor, lines: tuple[int, int]) -> None:
        """The chunk's event, if it wrote anything (last: it takes the audit chain's lock)."""
        new = [e for e in self.enrollments.values() if e.new]
        changed = [
            e
            for e in self.enrollments.values()
            if not e.new and (e.changed or any(r.changed for r in e.runs or ()))
        ]
        if not (self.new_patients or new or changed):
            return
        detail = {
            "source": COHORT_SOURCE,
            "journey": self.journey.key,
            "lines": list(lines),
            "patients_created": [str(p[0]) for p in self.new_patients],
            "enrolled": [[str(e.id), str(e.patient_id)] for e in new],
            "changed": [str(e.id) for e in changed],
        }
        await record(session, actor, "journey.enroll_cohort", "journey", self.journey.id, detail)


def _end(enrollment: EnrollmentRecord, off: CallOff, now: datetime) -> None:
    """As ``actions._end_enrollment`` does for one enrollment."""
    if off.cancels:
        enrollment.status, enrollment.cancelled_at = EnrollmentStatus.CANCELLED, now
    else:
        enrollment.status = EnrollmentStatus.COMPLETED


async def _cancelled(task: asyncio.Future[None]) -> None:
    """Stop ``task`` and wait until it has stopped: the connection must be idle before the
    transaction rolls back."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved: the caller's own error is the one to report


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidContact(f"unknown time zone {name!r}; expected an IANA name") from None


def _stored_zone(name: str) -> ZoneInfo:
    try:
        return _zone(name)
    except InvalidContact:
        # A stored patient's zone was checked when they were created; UTC if it went away.
        return _zone("UTC")


class _Ids:
    """UUIDv7s laid out as ``hub.db.new_id`` lays them out (48-bit milliseconds, version,
    random bits), made a batch at a time: a chunk needs six per row, and new_id's per-call cost
    was a fifth of a launch's CPU time."""

    BATCH = 4_096

    def __init__(self) -> None:
        self._ready: list[uuid.UUID] = []

    def __call__(self) -> uuid.UUID:
        if not self._ready:
            self._ready = _uuid7s(self.BATCH)
        return self._ready.pop()


_RAND_B = (1 << 62) - 1


def _uuid7s(count: int) -> list[uuid.UUID]:
    head = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | 0b10 << 62
    noise = os.urandom(10 * count)
    made = []
    for start in range(0, 10 * count, 10):
        bits = int.from_bytes(noise[start : start + 10])  # 12 bits rand_a, 62 bits rand_b
        made.append(uuid.UUID(int=head | (bits >> 68) << 64 | bits & _RAND_B))
    made.reverse()  # pop() hands them out in the order made
    return made
