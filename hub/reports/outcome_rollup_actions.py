"""Keeping the journeys' and appointments' day rollups in step with the facts they come from.

The ``*_in`` functions run inside the run facts refresh's transaction
(``run_facts_actions.do_refresh_run_facts``), beside the facts they count, so a report never
reads a rollup that disagrees with the facts. ``do_rebuild_outcome_rollups`` counts them again
from all the facts (after a restore; and the tests' check that incremental equals rebuilt).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from hub.db import Database
from hub.inbox import queries as inbox_queries
from hub.reports import facts_queries as state_queries
from hub.reports import outcome_rollup_queries as rq
from hub.reports import rebuild_queries
from hub.reports.appointment_settings import load_appointment_settings
from hub.reports.outcome_models import AppointmentDay, ConfirmMonth, ConfirmWait, RunDay, RunMonth
from hub.reports.outcome_rollup import (
    appointment_counts,
    confirm_counts,
    difference,
    run_day_counts,
)
from hub.routing.hours import zone_of

REBUILD_PAGE = 2000
"""Enrollments (or appointment facts) read per statement by a rebuild."""
RUN_STATE_ID = 2
"""``run_facts_actions.RUN_STATE_ID`` (not imported: that module is above this one)."""


async def add_run_changes_in(session: AsyncSession, new: Sequence[Any], old: Sequence[Any]) -> None:
    """The enrollments' new run facts replace ``old`` (all the runs of the same enrollments)."""
    await rq.add_counts(session, RunDay, difference(run_day_counts(new), run_day_counts(old)))
    await rq.add_counts(session, ConfirmWait, difference(confirm_counts(new), confirm_counts(old)))


async def add_appointment_changes_in(
    session: AsyncSession, new: Sequence[Any], old: Sequence[Any], zone: ZoneInfo, hours: int
) -> None:
    delta = difference(appointment_counts(new, zone, hours), appointment_counts(old, zone, hours))
    await rq.add_counts(session, AppointmentDay, delta)


async def late_cancel_hours_in(session: AsyncSession, zone: ZoneInfo) -> int:
    """The hours the appointment rollup is timed with, recounting it first when an admin
    changed the setting since: which cancellations were late depends on it, and the rollup
    keeps only the verdict. The recount reads every appointment fact once (a few seconds at a
    million appointments, in one tick); until it commits, the report reads the facts
    (``outcome_day_queries.appointments_current``)."""
    hours = (await load_appointment_settings(session)).late_cancel_hours
    if await rq.late_cancel_hours_counted(session) != hours:
        await recount_appointment_days_in(session, zone, hours)
    return hours


async def appointment_hours_current(session: AsyncSession) -> bool:
    """The appointment rollup is timed with the late-cancellation hours set now."""
    hours = (await load_appointment_settings(session)).late_cancel_hours
    return await rq.late_cancel_hours_counted(session) == hours


async def recount_appointment_days_in(session: AsyncSession, zone: ZoneInfo, hours: int) -> None:
    await rq.wipe(session, AppointmentDay)
    if session.get_bind().dialect.name == "postgresql":
        # Set-based: a million facts in seconds, where the pages took minutes.
        await rebuild_queries.count_appointment_days(session, zone.key, hours)
        await rq.save_late_cancel_hours(session, hours)
        return
    after: tuple[uuid.UUID, uuid.UUID] | None = None
    while True:
        page = await rq.appointment_fact_page(session, after, REBUILD_PAGE)
        if not page:
            break
        await rq.add_counts(session, AppointmentDay, appointment_counts(page, zone, hours))
        after = (page[-1]["appointment_id"], page[-1]["journey_id"])
    await rq.save_late_cancel_hours(session, hours)


async def rebuild_run_days_in(session: AsyncSession) -> None:
    await rq.wipe(session, RunDay, ConfirmWait, RunMonth, ConfirmMonth)
    if session.get_bind().dialect.name == "postgresql":
        await rebuild_queries.count_run_days(session)
        return
    after: uuid.UUID | None = None
    while True:
        enrollments = await rq.enrollment_pages(session, after, REBUILD_PAGE)
        if not enrollments:
            return
        facts = await rq.run_facts_of(session, enrollments)
        await rq.add_counts(session, RunDay, run_day_counts(facts))
        await rq.add_counts(session, ConfirmWait, confirm_counts(facts))
        after = enrollments[-1]


async def do_rebuild_outcome_rollups(db: Database) -> None:
    """Count the journeys' and appointments' day rollups again from all the facts."""
    async with db.transaction() as session:
        # The run facts' writers' lock: a refresh meanwhile would move counts being rebuilt.
        await state_queries.lock_state(session, RUN_STATE_ID)
        zone = zone_of(await inbox_queries.clinic_time_zone(session))
        hours = (await load_appointment_settings(session)).late_cancel_hours
        await rebuild_run_days_in(session)
        await recount_appointment_days_in(session, zone, hours)
