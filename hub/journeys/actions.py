"""Journey actions: install a definition, enroll (idempotent), claim due step runs in batches,
dispatch a run exactly once, and act on replies."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, record
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Patient
from hub.journeys import queries
from hub.journeys.definitions import JourneyDefinition, parse_journey, plan
from hub.journeys.lifecycle import STOPPED_REASON, restart_in
from hub.journeys.models import (
    Appointment,
    AppointmentStatus,
    Enrollment,
    EnrollmentStatus,
    Journey,
    JourneyStatus,
    RunStatus,
    StepRun,
)
from hub.journeys.outcomes import CallOff, call_off, next_status
from hub.journeys.versions import definition_for, save_version_in

CLAIM_LEASE = timedelta(minutes=5)
"""A batch owns its claimed runs this long; if it dies, another batch takes them after."""
DEFAULT_BATCH = 500
"""Step runs claimed per dispatch batch (one job: its fixed cost, a work horse with its own
engine, is shared by this many messages)."""
PENDING = (RunStatus.PLANNED, RunStatus.CLAIMED)


@dataclass(frozen=True)
class NewAppointment:
    external_id: str
    start_at: datetime
    source: str = "api"
    location: str | None = None
    provider: str | None = None
    cancelled: bool = False
    status: AppointmentStatus | None = None
    """What the feed reports (``hub.journeys.outcomes.read_status``); None: still booked."""

    @property
    def reported(self) -> AppointmentStatus | None:
        return AppointmentStatus.CANCELLED if self.cancelled else self.status


@dataclass(frozen=True)
class EnrollResult:
    enrollment_id: uuid.UUID
    created: bool
    planned: int
    skipped: int
    moved: int = 0
    cancelled: int = 0


def definition_of(journey: Journey) -> JourneyDefinition:
    """The parsed definition. Intake asks on every inbound message and dispatch on every step,
    so parses are cached by the stored text (a re-installed journey has new text)."""
    return _parsed(journey.key, journey.definition)


@lru_cache(maxsize=256)
def _parsed(key: str, text: str) -> JourneyDefinition:
    return parse_journey(text, f"journey {key}")


async def do_install_journey(db: Database, actor: Actor, text: str, source: str) -> uuid.UUID:
    """Store a journey definition after validating it: a new journey, or a new version of one
    whose text changed (running enrollments keep theirs: ``hub.journeys.versions``)."""
    definition = parse_journey(text, source)
    async with db.transaction() as session:
        saved = await save_version_in(session, actor, text, definition)
        journey = await queries.journey_by_key(session, saved.key)
        assert journey is not None
        return journey.id


def _plan_runs(
    definition: JourneyDefinition, enrollment: Enrollment, now: datetime, zone: str
) -> list[StepRun]:
    runs = []
    for planned in plan(definition, enrollment.anchor_at, now, zone=zone):
        runs.append(
            StepRun(
                enrollment_id=enrollment.id,
                step_id=planned.step_id,
                attempt=1,
                due_at=planned.due_at,
                status=RunStatus.SKIPPED if planned.skipped else RunStatus.PLANNED,
                reason=planned.skip_reason,
            )
        )
    return runs


async def do_enroll(
    db: Database,
    actor: Actor,
    journey_key: str,
    patient_id: uuid.UUID,
    *,
    appointment: NewAppointment | None = None,
    anchor_at: datetime | None = None,
    now: datetime | None = None,
    ring: KeyRing | None = None,
) -> EnrollResult:
    """Enroll a patient. The same patient and appointment again changes nothing, except that
    a moved appointment moves its pending steps and a cancelled one cancels them. ``ring``
    seals the appointment's location and provider (needed when either is given)."""
    now = now or utcnow()
    async with db.transaction() as session:
        journey = await queries.journey_by_key(session, journey_key)
        if journey is None:
            raise NotFound(f"no journey with key {journey_key}")
        patient = await session.get(Patient, patient_id)
        if patient is None:
            raise NotFound(f"no patient with id {patient_id}")
        definition = definition_of(journey)
        appt = None
        if appointment is not None:
            appt = await _upsert_appointment(session, ring, patient_id, appointment, now)
            anchor = appt.start_at
            key = f"{patient_id}:appointment:{appt.id}"
        else:
            anchor = anchor_at or now
            key = f"{patient_id}:{definition.anchor}:{anchor.isoformat()}"
        enrollment = await queries.enrollment_by_key(session, journey.id, key)
        if enrollment is not None:
            # A moved appointment re-plans with the version the enrollment follows.
            pinned = await definition_for(session, journey, enrollment.version)
            return await _refresh(session, pinned, enrollment, appt, patient, now)
        enrollment = Enrollment(
            journey_id=journey.id,
            patient_id=patient_id,
            appointment_id=appt.id if appt else None,
            dedupe_key=key,
            anchor_at=anchor,
        )
        session.add(enrollment)
        await session.flush()
        runs = _plan_runs(definition, enrollment, now, patient.time_zone)
        session.add_all(runs)
        off = call_off(appt.status) if appt is not None else None
        if off is not None:
            _end_enrollment(enrollment, off, now)
            for run in runs:
                run.status, run.reason = RunStatus.CANCELLED, off.reason
        await record(
            session,
            actor,
            "journey.enroll",
            "patient",
            patient_id,
            {"journey": journey.key, "enrollment": str(enrollment.id)},
        )
        skipped = sum(r.status is RunStatus.SKIPPED for r in runs)
        return EnrollResult(enrollment.id, True, len(runs) - skipped, skipped)


async def _upsert_appointment(
    session: AsyncSession,
    ring: KeyRing | None,
    patient_id: uuid.UUID,
    new: NewAppointment,
    now: datetime,
) -> Appointment:
    if new.start_at.utcoffset() is None:
        raise ValueError("appointment start must be timezone-aware")
    if ring is None and (new.location or new.provider):
        raise ValueError("an appointment's location and provider are sealed: pass the key ring")
    appt = await queries.appointment_by_external(session, new.source, new.external_id)
    if appt is None:
        appt = Appointment(
            patient_id=patient_id,
            source=new.source,
            external_id=new.external_id,
            start_at=new.start_at,
        )
        session.add(appt)
    elif appt.patient_id != patient_id:
        raise ValueError(f"appointment {new.external_id} belongs to another patient")
    appt.start_at = new.start_at
    if ring is None:  # neither is given (checked above): the booking names no place
        appt.location_enc = appt.provider_enc = None
    else:
        # Resealed only when changed: the same booking again must leave the row as it was.
        for field in ("location", "provider"):
            value = getattr(new, field) or None
            if appt.unseal(ring, field) != value:
                appt.seal(ring, field, value)
    status = next_status(appt.status or AppointmentStatus.BOOKED, new.reported)
    if status is AppointmentStatus.CANCELLED and appt.status is not AppointmentStatus.CANCELLED:
        appt.cancelled_at = now
    appt.status = status
    await session.flush()
    return appt


def _end_enrollment(enrollment: Enrollment, off: CallOff, now: datetime) -> None:
    if off.cancels:
        enrollment.status, enrollment.cancelled_at = EnrollmentStatus.CANCELLED, now
    else:
        enrollment.status = EnrollmentStatus.COMPLETED


async def _refresh(
    session: AsyncSession,
    definition: JourneyDefinition,
    enrollment: Enrollment,
    appt: Appointment | None,
    patient: Patient,
    now: datetime,
) -> EnrollResult:
    pending = list(await queries.runs_of(session, enrollment.id, PENDING))
    moved = cancelled = 0
    off = call_off(appt.status) if appt is not None else None
    if off is not None:
        if enrollment.status is EnrollmentStatus.ACTIVE:
            _end_enrollment(enrollment, off, now)
        for run in pending:
            run.status, run.reason = RunStatus.CANCELLED, off.reason
            cancelled += 1
    elif appt is not None and appt.start_at != enrollment.anchor_at:
        enrollment.anchor_at = appt.start_at
        due = {p.step_id: p for p in plan(definition, appt.start_at, now, zone=patient.time_zone)}
        for run in pending:
            planned = due.get(run.step_id)
            if planned is None:
                continue
            run.due_at, run.claimed_until = planned.due_at, None
            run.status = RunStatus.SKIPPED if planned.skipped else RunStatus.PLANNED
            run.reason = planned.skip_reason
            moved += 1
    return EnrollResult(enrollment.id, False, len(pending), 0, moved, cancelled)


async def _claim(
    session: AsyncSession, now: datetime, batch: int, lease: timedelta, postgres: bool
) -> list[StepRun]:
    runs = list(await queries.claim_due(session, now, batch, postgres))
    for run in runs:
        run.status, run.claimed_until = RunStatus.CLAIMED, now + lease
    return runs


async def do_claim_due(
    db: Database, *, now: datetime | None = None, batch: int = DEFAULT_BATCH
) -> list[uuid.UUID]:
    """Take a batch of due step runs under a lease; many claimers never take the same run."""
    now = now or utcnow()
    async with db.transaction() as session:
        runs = await _claim(session, now, batch, CLAIM_LEASE, db.dialect == "postgresql")
        return [r.id for r in runs]


async def do_schedule_due(
    db: Database,
    *,
    now: datetime | None = None,
    batch: int = DEFAULT_BATCH,
    max_batches: int = 20,
    lease: timedelta = CLAIM_LEASE,
    on_batch: Callable[[uuid.UUID], Awaitable[None]] | None = None,
) -> tuple[uuid.UUID, ...]:
    """The scheduler tick: claim due runs in batches and, in the same transaction, write one
    dispatch job per batch to the outbox (released after commit). A claim whose job is lost is
    taken again when its lease ends, so a due step is never lost. ``on_batch`` releases each
    batch's job as soon as its claim commits, so workers start while the tick claims more."""
    from hub.outbox import add_effect

    now = now or utcnow()
    effects: list[uuid.UUID] = []
    for _ in range(max_batches):
        async with db.transaction() as session:
            runs = await _claim(session, now, batch, lease, db.dialect == "postgresql")
            effect = None
            if runs:
                effect = add_effect(
                    session,
                    "job:dispatch_batch",
                    {"run_ids": ",".join(str(r.id) for r in runs), "queue": "bulk"},
                ).id
                effects.append(effect)
        if effect is not None and on_batch is not None:
            await on_batch(effect)
        if len(runs) < batch:
            break
    return tuple(effects)


async def do_set_journey_status(
    db: Database, actor: Actor, key: str, status: str, *, now: datetime | None = None
) -> None:
    """Pause (due steps wait), resume, or stop (pending steps are cancelled). Resuming a
    stopped journey plans its cancelled steps again, skipping those that fell due meanwhile."""
    new = JourneyStatus(status)
    now = now or utcnow()
    async with db.transaction() as session:
        journey = await queries.journey_by_key(session, key)
        if journey is None:
            raise NotFound(f"no journey with key {key}")
        if journey.status is JourneyStatus.STOPPED and new is JourneyStatus.PAUSED:
            raise ValueError("a stopped journey cannot be paused; resume it first")
        was = journey.status
        journey.status = new
        detail: dict[str, object] = {}
        if new is JourneyStatus.STOPPED and was is not JourneyStatus.STOPPED:
            for enrollment in await queries.enrollments_of_journey(session, journey.id):
                if enrollment.status is EnrollmentStatus.ACTIVE:
                    enrollment.status = EnrollmentStatus.STOPPED
                for run in await queries.runs_of(session, enrollment.id, PENDING):
                    run.status, run.reason = RunStatus.CANCELLED, STOPPED_REASON
        elif was is JourneyStatus.STOPPED and new is JourneyStatus.ACTIVE:
            replanned, skipped = await restart_in(session, journey, now)
            detail = {"after_stop": True, "replanned": replanned, "skipped": skipped}
        await record(session, actor, f"journey.{new.value}", "journey", journey.id, detail)
