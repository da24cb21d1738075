"""The outcome reports' rollups (one fact row per step run, one per appointment) catch up with
every kind of change through the tick's refresh, and then equal a recount of the raw rows
(tests/outcome_recount.py): a step sent, a delivery receipt, a confirmation, a reply, an
opt-out, an appointment's outcome, a deletion; in bounded batches, with the lag reported."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, select

from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import MessageStatus, Role
from hub.inbox.access import StaffContext
from hub.journeys import actions as journeys
from hub.journeys.models import Appointment, AppointmentStatus, Enrollment
from hub.reports import appointments, delivery
from hub.reports import journeys as journey_report
from hub.reports.base import ReportFilters
from hub.reports.models import AppointmentFact, RollupDirty, RunFact
from hub.reports.run_facts_actions import do_refresh_run_facts, run_rollup_as_of
from tests import outcome_recount as recount
from tests.outcome_helpers import (
    KEY,
    SYSTEM,
    ZONE,
    clinic_team,
    dispatch,
    install,
    patient,
    phone,
    provider_says,
    text_in,
)

NY = ZoneInfo(ZONE)
START = datetime(2026, 12, 3, 14, tzinfo=NY)
WEEK = ReportFilters(date(2026, 12, 1), date(2026, 12, 7), ZONE)
ADMIN = StaffContext(uuid.uuid4(), Role.ADMIN, frozenset())


async def enroll(db: Database, ring: KeyRing, pid: uuid.UUID, n: int, **kw: Any) -> None:
    booking = journeys.NewAppointment(f"facts-{n}", START, **kw)
    await journeys.do_enroll(
        db, SYSTEM, KEY, pid, appointment=booking, now=datetime(2026, 11, 20, tzinfo=UTC), ring=ring
    )


async def queued(db: Database) -> set[tuple[str, uuid.UUID]]:
    async with db.reader() as session:
        return {(r.kind, r.item_id) for r in await session.scalars(select(RollupDirty))}


async def assert_reports_equal_recount(db: Database) -> dict[str, Any]:
    """The journeys, appointments and delivery (opt-out) figures equal the recount."""
    rows = await recount.everything(db)
    [journey_id] = {e.journey_id for e in rows["enrollments"]}
    counted = recount.journey_figures(rows, journey_id, *WEEK.bounds())
    report = await journey_report.build(db, WEEK, ADMIN)
    total = counted["total"]
    assert report.figures["reached"] == total["sent"]
    assert report.figures["delivered"] == total["delivered"]
    assert report.figures["confirmed"] == total["confirmed"]
    assert report.figures["cancelled"] == total["cancelled"]
    assert report.figures["no_reply"] == total["sent"] - total["replied"]
    assert report.figures["opted_out"] == total["opted_out"]
    assert report.figures["time_to_confirm_seconds"] == counted["time_to_confirm"]
    steps = {row[1]: row[2:9] for row in report.tables[1].rows}
    for step_id, c in counted["steps"].items():
        if c["sent"] or c["failed"]:
            expected = [c[k] for k in ("sent", "delivered", "confirmed", "cancelled")]
            expected += [c["sent"] - c["replied"], c["opted_out"], c["failed"]]
            assert steps[step_id] == expected, step_id
    booked = await appointments.build(db, WEEK, ADMIN)
    appointment_counted = recount.appointment_figures(rows, *WEEK.bounds())
    for key, value in booked.figures.items():
        if key in appointment_counted:
            assert value == pytest.approx(appointment_counted[key]), key
    groups = {row[0]: row[1] for row in booked.tables[0].rows}
    for group, label in appointments.GROUPS.items():
        assert groups[label] == sum(appointment_counted["groups"].get(group, {}).values()), group
    sent = await delivery.build(db, WEEK, ADMIN)
    assert sent.figures["opt_out_rate"] == pytest.approx(
        total["opted_out"] / total["sent"] if total["sent"] else None
    )
    return counted


async def caught_up(db: Database) -> None:
    """Refresh as the tick does; the queue is then empty and the reports current."""
    assert await queued(db), "the change queued nothing"
    before = await run_rollup_as_of(db)
    assert before is None or before < utcnow() - timedelta(milliseconds=1)
    await recount.refresh_rollups(db)
    assert await queued(db) == set()
    report = await journey_report.build(db, WEEK, ADMIN)
    assert report.as_of is not None and report.as_of > utcnow() - timedelta(seconds=5)


@pytest.fixture
async def clinic(db: Database, ring: KeyRing, set_clock: Any) -> dict[int, uuid.UUID]:
    set_clock(datetime(2026, 11, 20, 12, tzinfo=UTC))
    await clinic_team(db)  # the reports then read the day rollups the refresh keeps
    await install(db)
    p = {n: await patient(db, ring, n) for n in (1, 2, 3, 4)}
    for n in p:
        await enroll(db, ring, p[n], n)
    return p


async def test_the_rollups_follow_each_kind_of_change(
    db: Database, ring: KeyRing, set_clock: Any, clinic: dict[int, uuid.UUID]
) -> None:
    p = clinic
    assert await run_rollup_as_of(db) is None  # never built
    await caught_up(db)
    assert (await assert_reports_equal_recount(db))["total"]["sent"] == 0

    # Step runs change (planned -> claimed -> sent) and messages are made.
    day_before = START - timedelta(hours=24)
    set_clock(day_before)
    tasks = await dispatch(db, ring, day_before)
    await caught_up(db)
    assert (await assert_reports_equal_recount(db))["total"]["sent"] == 4

    # A delivery receipt changes only the message: its run's enrollment is queued.
    await provider_says(db, tasks[phone(1)], MessageStatus.DELIVERED)
    await provider_says(db, tasks[phone(4)], MessageStatus.UNDELIVERED, "30006")
    kinds = {kind for kind, _ in await queued(db)}
    assert "enrollment" in kinds
    await caught_up(db)
    counted = await assert_reports_equal_recount(db)
    assert (counted["total"]["delivered"], counted["total"]["failed"]) == (1, 1)

    # A confirmation (the enrollment and the appointment change, and the patient wrote in).
    set_clock(day_before + timedelta(hours=1))
    await text_in(db, ring, 1, "C")
    await caught_up(db)
    counted = await assert_reports_equal_recount(db)
    assert counted["total"]["confirmed"] == 1 and counted["time_to_confirm"] is not None

    # A plain reply changes nothing of the journey's rows: only the patient is queued.
    set_clock(day_before + timedelta(hours=2))
    await text_in(db, ring, 3, "Is there parking?")
    assert ("patient", p[3]) in await queued(db)
    await caught_up(db)
    assert (await assert_reports_equal_recount(db))["total"]["replied"] == 2

    # An opt-out: a consent record revoked (and an inbound message).
    set_clock(day_before + timedelta(hours=3))
    await text_in(db, ring, 2, "STOP")
    await caught_up(db)
    assert (await assert_reports_equal_recount(db))["total"]["opted_out"] == 1

    # The clinic's feed reports outcomes: the appointments change, nothing else.
    set_clock(START + timedelta(hours=4))
    for n, outcome in ((1, AppointmentStatus.FULFILLED), (3, AppointmentStatus.NOSHOW)):
        await enroll(db, ring, p[n], n, status=outcome)
    assert {kind for kind, _ in await queued(db)} >= {"appointment"}
    await caught_up(db)
    booked = await appointments.build(db, WEEK, ADMIN)
    assert (booked.figures["attended"], booked.figures["no_shows"]) == (1, 1)
    await assert_reports_equal_recount(db)

    # Deleting an enrollment takes its runs out; deleting an appointment takes it out.
    async with db.transaction() as session:
        gone = await session.scalar(select(Enrollment.id).where(Enrollment.patient_id == p[4]))
        await session.execute(delete(Enrollment).where(Enrollment.id == gone))
        await session.execute(
            delete(Appointment).where(Appointment.patient_id == p[3], Appointment.id.is_not(None))
        )
    await caught_up(db)
    async with db.reader() as session:
        assert not list(await session.scalars(select(RunFact).where(RunFact.enrollment_id == gone)))
        facts = list(await session.scalars(select(AppointmentFact)))
    assert len({f.appointment_id for f in facts}) == 3
    counted = await assert_reports_equal_recount(db)
    assert counted["total"]["failed"] == 0


async def test_a_backlog_is_absorbed_in_bounded_batches_and_the_lag_is_reported(
    db: Database, ring: KeyRing, set_clock: Any, clinic: dict[int, uuid.UUID]
) -> None:
    await recount.refresh_rollups(db)
    day_before = START - timedelta(hours=24)
    set_clock(day_before)
    changed_at = utcnow()
    await dispatch(db, ring, day_before)
    # Four enrollments changed: one per batch, the last batch sees the queue empty.
    ticks = []
    while True:
        done = await do_refresh_run_facts(db, batch=1)
        ticks.append(done)
        if done.caught_up:
            break
        # Part of the change is in: the reports say they are as of before it.
        lag = await run_rollup_as_of(db)
        assert lag is not None and lag < changed_at
    assert [t.enrollments for t in ticks] == [1, 1, 1, 1]
    current = await run_rollup_as_of(db)
    assert current is not None and current > changed_at
    assert (await assert_reports_equal_recount(db))["total"]["sent"] == 4
    # Nothing changed since: a refresh reads and writes nothing.
    assert (await do_refresh_run_facts(db)).enrollments == 0
