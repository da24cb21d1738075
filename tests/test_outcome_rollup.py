"""The outcome reports' day rollups (hub/reports/outcome_models.py) equal a recount of the raw
rows: the funnel's patients counted once over days (an enrollment whose runs straddle the
period's start), the median time to confirm cut to what staff read, a conversation moving team,
the late-cancellation hours changing, status callbacks arriving together; and a full rebuild
gives the same rows as the incremental refresh."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from sqlalchemy import Connection, select, update

from hub.crypto import KeyRing
from hub.db import Database, create_engine
from hub.enums import Direction, MessageStatus, Role
from hub.inbox.access import StaffContext
from hub.inbox.models import Conversation, Message, Team
from hub.journeys import actions as journeys
from hub.journeys.models import AppointmentStatus
from hub.migrations import alembic_config
from hub.reports import appointments, delivery
from hub.reports import journeys as journey_report
from hub.reports import outcome_day_queries as dq
from hub.reports import outcome_queries as oq
from hub.reports.appointment_settings import do_set_late_cancel_hours
from hub.reports.base import ReportFilters
from hub.reports.delivery_rollup_actions import do_rebuild_delivery_rollup
from hub.reports.outcome_models import (
    AppointmentDay,
    ConfirmMonth,
    ConfirmWait,
    DeliveryDay,
    DeliveryMonth,
    RunDay,
    RunMonth,
)
from hub.reports.outcome_rollup_actions import do_rebuild_outcome_rollups
from hub.reports.run_facts_actions import do_rebuild_run_facts
from tests import outcome_recount as recount
from tests.outcome_helpers import (
    KEY,
    SYSTEM,
    ZONE,
    dispatch,
    email,
    install,
    patient,
    phone,
    provider_says,
    text_in,
)

NY = ZoneInfo(ZONE)
START = datetime(2026, 12, 3, 14, tzinfo=NY)
"""The appointments' start: the day-before step is due on 2 December, the two-hours one on 3."""
ADMIN = StaffContext(uuid.uuid4(), Role.ADMIN, frozenset())
PERIODS = [
    (date(2026, 12, 3), date(2026, 12, 9)),  # starts between an enrollment's two runs
    (date(2026, 12, 2), date(2026, 12, 8)),  # holds both
    (date(2026, 12, 2), date(2026, 12, 2)),
    (date(2026, 11, 26), date(2026, 12, 2)),
    (date(2026, 12, 4), date(2026, 12, 10)),  # nothing due
]


def week(start: date, end: date, **kw: Any) -> ReportFilters:
    return ReportFilters(start, end, ZONE, **kw)


async def add_team(db: Database, name: str, *, default: bool) -> uuid.UUID:
    async with db.transaction() as session:
        team = Team(name=name, time_zone=ZONE, is_default=default)
        session.add(team)
        await session.flush()
        return team.id


async def enroll(
    db: Database, ring: KeyRing, pid: uuid.UUID, n: int, now: datetime, **kw: Any
) -> None:
    booking = journeys.NewAppointment(f"rollup-{n}", START, **kw)
    await journeys.do_enroll(db, SYSTEM, KEY, pid, appointment=booking, now=now, ring=ring)


@pytest.fixture
async def history(db: Database, ring: KeyRing, set_clock: Any) -> dict[str, Any]:
    return await make_history(db, ring, set_clock)


async def make_history(db: Database, ring: KeyRing, set_clock: Any) -> dict[str, Any]:
    """Five patients of a New York clinic: two steps sent to most, a delivery, a failure, a
    bounce-free email, a confirmation, a cancellation 30 hours before the start."""
    enrolled = datetime(2026, 11, 20, 12, tzinfo=UTC)
    set_clock(enrolled)
    teams = {
        "front": await add_team(db, "Front desk", default=True),
        "billing": await add_team(db, "Billing", default=False),
    }
    await install(db)
    p = {n: await patient(db, ring, n) for n in (1, 2, 3, 4)}
    p[5] = await patient(db, ring, 5, by_phone=False, by_email=True)
    for n in p:
        await enroll(db, ring, p[n], n, enrolled)
    await enroll(db, ring, p[4], 4, START - timedelta(hours=30), cancelled=True)

    day_before = START - timedelta(hours=24)
    set_clock(day_before)
    tasks = await dispatch(db, ring, day_before)
    await provider_says(db, tasks[phone(1)], MessageStatus.DELIVERED)
    await provider_says(db, tasks[phone(2)], MessageStatus.DELIVERED)
    await provider_says(db, tasks[phone(3)], MessageStatus.UNDELIVERED, "30006")
    await provider_says(db, tasks[email(5)], MessageStatus.SENT)
    set_clock(day_before + timedelta(minutes=7, seconds=30))
    await text_in(db, ring, 1, "C")

    two_hours = START - timedelta(hours=2)
    set_clock(two_hours)
    tasks = await dispatch(db, ring, two_hours)
    await provider_says(db, tasks[phone(2)], MessageStatus.DELIVERED)
    set_clock(two_hours + timedelta(minutes=1))
    await text_in(db, ring, 2, "C")
    set_clock(START + timedelta(hours=4))
    await enroll(db, ring, p[1], 1, START + timedelta(hours=4), status=AppointmentStatus.FULFILLED)
    await enroll(db, ring, p[2], 2, START + timedelta(hours=4), status=AppointmentStatus.NOSHOW)
    await recount.refresh_rollups(db)
    async with db.reader() as session:
        # The rollups count New York days: the reports read them, not the facts.
        assert await dq.runs_current(session, ZONE)
        assert await dq.delivery_current(session, ZONE)
    return {"patients": p, "teams": teams}


async def test_patients_are_counted_once_whatever_days_the_period_takes(
    db: Database, history: dict[str, Any]
) -> None:
    rows = await recount.everything(db)
    [journey_id] = {e.journey_id for e in rows["enrollments"]}
    sent: dict[tuple[date, date], int] = {}
    for start, end in PERIODS:
        for channel in (None, "sms", "email"):
            days = [(start, end)]
            bounds = [week(start, end).bounds()]
            async with db.reader() as session:
                from_days = (
                    await dq.funnel_from_days(session, [journey_id], recount_keys(), days, channel)
                )[journey_id]
                from_facts = await oq.funnel_counts(
                    session, journey_id, recount_keys(), bounds, channel
                )
            assert from_days[0][1] == from_facts[0][1], (start, channel)
            for step, counts in from_facts[0][0].items():
                assert from_days[0][0].get(step, dict.fromkeys(counts, 0)) == counts
        counted = recount.journey_figures(rows, journey_id, *week(start, end).bounds())
        report = await journey_report.build(db, week(start, end), ADMIN)
        total = counted["total"]
        assert report.figures["reached"] == total["sent"]
        assert report.figures["confirmed"] == total["confirmed"]
        assert report.figures["no_reply"] == total["sent"] - total["replied"]
        assert report.figures["time_to_confirm_seconds"] == counted["time_to_confirm"]
        sent[(start, end)] = total["sent"]
    # Patients sent both steps: counted on 2 and on 3 December alone, once over both days.
    both, second, first = PERIODS[1], PERIODS[0], PERIODS[2]
    assert sent[second] > 0 and sent[both] < sent[first] + sent[second]


async def test_the_median_time_to_confirm_is_cut_to_what_staff_read(
    db: Database, history: dict[str, Any]
) -> None:
    # Confirmations 7 min 30 s (cut to 7 min) and 1 min after their messages: the lower middle.
    report = await journey_report.build(db, week(*PERIODS[1]), ADMIN)
    assert report.figures["time_to_confirm_seconds"] == 60
    steps = {row[1]: row[-1] for row in report.tables[1].rows}
    assert steps == {"day_before": 7 * 60, "two_hours": 60}


async def test_a_full_rebuild_gives_the_rows_the_refresh_kept(
    db: Database, history: dict[str, Any]
) -> None:
    kept = await rollup_rows(db)
    assert all(kept[m] for m in kept), {m.__name__: len(r) for m, r in kept.items()}
    await do_rebuild_run_facts(db)
    await do_rebuild_outcome_rollups(db)
    rows = await recount.everything(db)
    outbound = [m for m in rows["messages"] if m.direction == Direction.OUTBOUND]
    assert await do_rebuild_delivery_rollup(db) == len(outbound)
    assert await rollup_rows(db) == kept


def _down_and_up(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, "0032")
    command.upgrade(cfg, "0033")


async def test_the_migration_fills_what_the_refresh_would_have_kept(
    committed_db: Database, fresh_db_url: str, ring: KeyRing, set_clock: Any
) -> None:
    await make_history(committed_db, ring, set_clock)
    kept = await rollup_rows(committed_db)
    engine = create_engine(fresh_db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_down_and_up)
    finally:
        await engine.dispose()
    filled = await rollup_rows(committed_db)
    # Set-based from the facts; on PostgreSQL from the messages too. The rest: the first tick.
    for model in (RunDay, RunMonth, ConfirmWait, ConfirmMonth):
        assert filled[model] == kept[model], model.__tablename__
    if committed_db.dialect == "postgresql":
        for model in (AppointmentDay, DeliveryDay, DeliveryMonth):
            assert filled[model] == kept[model], model.__tablename__
    else:
        assert not filled[AppointmentDay] and not filled[DeliveryDay]
    await recount.refresh_rollups(committed_db)
    assert await rollup_rows(committed_db) == kept


async def test_messages_move_with_their_conversation_to_another_team(
    db: Database, history: dict[str, Any]
) -> None:
    front, billing = history["teams"]["front"], history["teams"]["billing"]
    period = PERIODS[1]
    async with db.reader() as session:
        conversation = await session.scalar(
            select(Conversation.id).where(Conversation.patient_id == history["patients"][2])
        )
        ours = len(
            list(
                await session.scalars(
                    select(Message.id).where(
                        Message.conversation_id == conversation,
                        Message.direction == Direction.OUTBOUND,
                    )
                )
            )
        )
    assert ours == 2

    async def handed(team: uuid.UUID) -> int:
        report = await delivery.build(db, week(*period, team_id=team), ADMIN)
        return int(report.figures["handed_over"])

    before = {front: await handed(front), billing: await handed(billing)}
    for to, away in ((billing, front), (front, billing)):
        async with db.transaction() as session:
            await session.execute(
                update(Conversation).where(Conversation.id == conversation).values(team_id=to)
            )
        await recount.refresh_rollups(db)
        now = {front: await handed(front), billing: await handed(billing)}
        assert now[to] == before[to] + ours and now[away] == before[away] - ours
        before = now
    await assert_delivery_equals_recount(db)


async def test_changing_the_late_cancellation_hours_recounts_the_appointments(
    db: Database, history: dict[str, Any]
) -> None:
    filters = week(*PERIODS[1])
    rows = await recount.everything(db)
    counted = recount.appointment_figures(rows, *filters.bounds(), late_hours=24)
    report = await appointments.build(db, filters, ADMIN)
    assert (report.figures["cancelled_late"], report.figures["cancelled_in_time"]) == (0, 1)
    assert report.figures["no_shows"] == counted["no_shows"] == 1

    await do_set_late_cancel_hours(db, SYSTEM, 48)
    # Before the tick recounts, the report reads the facts: still exact.
    report = await appointments.build(db, filters, ADMIN)
    assert (report.figures["cancelled_late"], report.figures["cancelled_in_time"]) == (1, 0)
    await recount.refresh_rollups(db)
    async with db.reader() as session:
        assert await dq.appointments_current(session, ZONE, 48)
    report = await appointments.build(db, filters, ADMIN)
    counted = recount.appointment_figures(rows, *filters.bounds(), late_hours=48)
    for key in ("cancelled_late", "cancelled_in_time", "appointments", "no_show_rate"):
        assert report.figures[key] == pytest.approx(counted[key]), key


async def test_status_callbacks_arriving_together_are_all_counted(
    committed_db: Database, ring: KeyRing, set_clock: Any
) -> None:
    db = committed_db  # its own connections: the callbacks and ticks really overlap
    await make_history(db, ring, set_clock)
    async with db.reader() as session:
        pending = list(
            await session.scalars(
                select(Message.id).where(
                    Message.direction == Direction.OUTBOUND, Message.status == MessageStatus.SENT
                )
            )
        )
    assert pending

    async def callback(message_id: uuid.UUID, status: MessageStatus) -> None:
        async with db.transaction() as session:
            await session.execute(
                update(Message).where(Message.id == message_id).values(status=status)
            )

    async def ticks() -> None:  # one tick at a time, as the tick's lock has it
        for _ in range(3):
            await recount.refresh_rollups(db)

    # Callbacks land while the tick works: what a tick misses stays queued for the next one.
    statuses = [MessageStatus.FAILED, MessageStatus.DELIVERED, MessageStatus.READ]
    work = [callback(m, statuses[i % 3]) for i, m in enumerate(pending)]
    await asyncio.gather(ticks(), *work)
    await recount.refresh_rollups(db)
    await assert_delivery_equals_recount(db)
    # The callbacks failed a third of them with no code: listed, not dropped.
    whole = await delivery.build(db, week(date(2026, 11, 26), date(2026, 12, 10)), ADMIN)
    assert any(r[1] == "" and r[2] == "No code recorded" for r in whole.tables[1].rows), (
        whole.tables[1].rows
    )


def recount_keys() -> tuple[str, ...]:
    return journey_report.COUNTED


async def rollup_rows(db: Database) -> dict[type[Any], set[tuple[Any, ...]]]:
    found = {}
    async with db.reader() as session:
        for model in (
            RunDay,
            RunMonth,
            ConfirmWait,
            ConfirmMonth,
            AppointmentDay,
            DeliveryDay,
            DeliveryMonth,
        ):
            columns = [c for c in model.__table__.columns]
            rows = (await session.execute(select(*columns))).all()
            found[model] = {tuple(r) for r in rows}
    return found


async def assert_delivery_equals_recount(db: Database) -> None:
    for start, end in PERIODS:
        rows = await recount.everything(db)
        counted = recount.delivery_figures(rows, *week(start, end).bounds())
        report = await delivery.build(db, week(start, end), ADMIN)
        for key in ("delivered", "failed", "delivery_rate", "not_sent", "emails"):
            assert report.figures[key] == pytest.approx(counted[key]), (start, key)
        providers = {
            (row[0], row[1]): {"delivered": row[3], "failed": row[4], "pending": row[5]}
            for row in report.tables[0].rows
        }
        for key, tally in counted["providers"].items():
            nonzero = {k: v for k, v in tally.items() if v}
            assert {k: v for k, v in providers[key].items() if v} == nonzero, key
        codes = {(row[0], row[1]): row[3] for row in report.tables[1].rows}
        assert codes == counted["codes"]
