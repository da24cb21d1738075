"""Keeping the outcome reports' rollups current, the way the inbox's are
(``facts_actions``): triggers queue what changed in the changing transaction, the tick takes a
bounded batch, recomputes it from its rows and dequeues it at the version it read.

What is queued (migration 0030): an enrollment when one of its runs, its runs' messages
(status, error) or its own confirmation, cancellation or appointment change; a patient when
they write in or revoke a consent (their enrollments' reply and opt-out flags); an appointment
when it or its enrollments change. A refresh recomputes an enrollment's runs together (a run's
window ends at the next step's message) and the appointments of every enrollment it touched.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from hub.db import Database, utcnow
from hub.inbox import queries as inbox_queries
from hub.journeys.models import AppointmentStatus
from hub.reports import facts_queries as state_queries
from hub.reports import outcome_rollup_actions as rollups
from hub.reports import outcome_rollup_queries as rq
from hub.reports import run_facts_queries as q
from hub.reports.models import NO_JOURNEY, AppointmentFact, RunFact
from hub.reports.outcome_models import (
    AppointmentDay,
    ConfirmMonth,
    ConfirmWait,
    RunDay,
    RunMonth,
)
from hub.reports.run_facts import compute_runs, reminder_group
from hub.routing.hours import zone_of

RUN_STATE_ID = 2
"""The run facts' row in ``report_fact_state`` (the inbox facts have 1)."""
DEFAULT_RUN_FACTS_BATCH = 500
"""Enrollments (and as many queued patients and appointments) recomputed per tick: bounds the
tick's transaction; a backlog of N enrollments is absorbed in N / DEFAULT_RUN_FACTS_BATCH ticks."""

REBUILD_BATCH = 5000
"""Enrollments per transaction of a full rebuild: half the time of batches of 1,000 (fewer
round trips), the id lists still far below the drivers' bound-parameter limits."""


@dataclass(frozen=True)
class RunsRefreshed:
    enrollments: int
    appointments: int
    caught_up: bool
    """Nothing was left queued when this batch was read."""


async def do_refresh_run_facts(
    db: Database, *, batch: int = DEFAULT_RUN_FACTS_BATCH, now: datetime | None = None
) -> RunsRefreshed:
    """One batch, with the day rollups counted from the facts it replaces
    (``outcome_rollup_actions``). Cheap when nothing changed: five small reads, no write."""
    started = now or utcnow()
    async with db.reader() as session:
        saved = await state_queries.state(session, RUN_STATE_ID)
        zone = await inbox_queries.clinic_time_zone(session)
        if (
            saved is not None
            and saved.time_zone == zone
            and not await q.anything_dirty(session)
            and await rollups.appointment_hours_current(session)
        ):
            return RunsRefreshed(0, 0, True)
    async with db.transaction() as session:
        await state_queries.lock_state(session, RUN_STATE_ID)
        saved = await state_queries.state(session, RUN_STATE_ID)
        zone = await inbox_queries.clinic_time_zone(session)
        if saved is None or saved.time_zone != zone:
            # Every "due day" was counted in the old zone (or nothing was ever built).
            await _start_over_in(session)
        # Never current yet (a first build, a rebuild: ``do_rebuild_run_facts``): the day
        # rollups are empty and counted once from all the facts when the queue is drained,
        # instead of batch by batch. A rebuild cut short is thus finished by the next ticks.
        counting = saved is not None and saved.as_of is not None
        await state_queries.save_state(session, zone, None, RUN_STATE_ID)
        clinic_zone = zone_of(zone)
        hours = await rollups.late_cancel_hours_in(session, clinic_zone)
        patients = await q.dirty_batch(session, q.PATIENT, batch + 1)
        caught_up = len(patients) <= batch
        patients = patients[:batch]
        await q.queue_patients_enrollments(session, [p for p, _v in patients])
        await q.clear_dirty(session, q.PATIENT, patients)

        read = await q.dirty_batch(session, q.ENROLLMENT, batch + 1)
        caught_up = caught_up and len(read) <= batch
        read = read[:batch]
        ids = [e for e, _v in read]
        sources = await q.enrollment_sources(session, ids)
        events = await q.patient_events(session, list({s.patient_id for s in sources}))
        rows = [
            row
            for s in sources
            for row in compute_runs(s, events[s.patient_id], clinic_zone, started)
        ]
        touched = await q.appointments_of_facts(session, ids)
        touched |= {s.appointment_id for s in sources if s.appointment_id is not None}
        old_runs = await rq.run_facts_of(session, ids) if counting else []
        await q.replace_run_facts(session, ids, rows)
        if counting:
            await rollups.add_run_changes_in(session, rows, old_runs)
        await q.clear_dirty(session, q.ENROLLMENT, read)

        queued = await q.dirty_batch(session, q.APPOINTMENT, batch + 1)
        caught_up = caught_up and len(queued) <= batch
        queued = queued[:batch]
        appointments = sorted(touched | {a for a, _v in queued})
        new_appointments = await _appointment_rows(session, appointments, started)
        if counting:
            old_appointments = await rq.appointment_facts_of(session, appointments)
            await rollups.add_appointment_changes_in(
                session, new_appointments, old_appointments, clinic_zone, hours
            )
        await q.replace_appointment_facts(session, appointments, new_appointments)
        await q.clear_dirty(session, q.APPOINTMENT, queued)
        if caught_up and not counting:
            await rollups.rebuild_run_days_in(session)
            await rollups.recount_appointment_days_in(session, clinic_zone, hours)
        if caught_up:
            # Every change committed before ``started`` was queued when the batch was read,
            # and this batch held all of the queue.
            await state_queries.set_as_of(session, started, RUN_STATE_ID)
    return RunsRefreshed(len(ids), len(appointments), caught_up)


async def _appointment_rows(
    session: AsyncSession, ids: list[uuid.UUID], now: datetime
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for (
        appointment_id,
        start_at,
        status,
        cancelled_at,
        journeys,
        runs,
    ) in await q.appointment_sources(session, ids):
        if status == AppointmentStatus.ENTERED_IN_ERROR.value:
            continue  # never an appointment, as far as the reports go
        group = reminder_group(start_at, runs)
        for journey_id in [NO_JOURNEY, *sorted(journeys)]:
            rows.append(
                {
                    "appointment_id": appointment_id,
                    "journey_id": journey_id,
                    "start_at": start_at,
                    "status": status,
                    "cancelled_at": cancelled_at,
                    "reminder_group": group,
                    "computed_at": now,
                }
            )
    return rows


async def _start_over_in(session: AsyncSession) -> None:
    """The facts and their day rollups start over together: nothing to take out of them (a
    refresh then reads no old facts, and replaces none), and everything is queued."""
    rollups_of_facts = (RunDay, RunMonth, ConfirmWait, ConfirmMonth, AppointmentDay)
    await rq.wipe(session, RunFact, AppointmentFact, *rollups_of_facts)
    await q.queue_everything(session)


async def do_rebuild_run_facts(db: Database, *, batch: int = REBUILD_BATCH) -> int:
    """Drop every run and appointment fact and their day rollups, queue every enrollment and
    appointment and refresh until the queue is empty (after a restore, or to time a full
    rebuild); returns how many enrollments were recomputed. Until it is done the rollups are
    not current (``run_rollup_as_of`` is None), and the last batch counts the day rollups
    from all the facts."""
    async with db.transaction() as session:
        await state_queries.lock_state(session, RUN_STATE_ID)
        zone = await inbox_queries.clinic_time_zone(session)
        await state_queries.save_state(session, zone, None, RUN_STATE_ID)
        await state_queries.set_as_of(session, None, RUN_STATE_ID)
        await _start_over_in(session)
    total = 0
    while True:
        done = await do_refresh_run_facts(db, batch=batch)
        total += done.enrollments
        if done.caught_up:
            return total


async def run_rollup_as_of(db: Database) -> datetime | None:
    """How current the run facts are: now when nothing is queued, else the last instant every
    earlier change was in (None: never built)."""
    now = utcnow()
    async with db.reader() as session:
        saved = await state_queries.state(session, RUN_STATE_ID)
        if saved is None:
            return None
        zone = await inbox_queries.clinic_time_zone(session)
        if saved.time_zone == zone and not await q.anything_dirty(session):
            return now
        return saved.as_of
