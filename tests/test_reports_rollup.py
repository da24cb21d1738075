"""The inbox reports read the day rollup (``report_inbox_day``) and still equal a recount of
the raw rows: over a week and over months (whole months from the month rows, the edges from
the day rows), after conversations are reassigned, moved, reopened and erased, with waits in
the histograms' overflow; the tick's incremental rollup equals a full rebuild's; missed targets
still waiting follow the clock without a refresh."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from hub.db import Database
from hub.enums import ConversationStatus
from hub.inbox.event_models import ConversationEvent, StatusEvent
from hub.inbox.models import Conversation, StaffUser, Team
from hub.reports.base import ReportFilters
from hub.reports.facts_actions import do_rebuild_facts, do_refresh_facts
from hub.reports.facts_queries import queue_every_conversation
from hub.reports.inbox import build_responses, build_volume
from hub.reports.models import InboxDay
from hub.reports.rollup import (
    OVERFLOW,
    Histogram,
    merged,
    pack,
    pieces,
    shown,
    unpack,
)
from hub.reports.rollup_queries import clear_rollup
from tests.conftest import make_staff
from tests.report_history import (
    NY,
    Spec,
    expected_responses,
    expected_volume,
    march_history,
    ny,
    pct,
    period,
    recount,
    seed,
)
from tests.test_reports_facts import clinic, refresh_all
from tests.test_reports_inbox import _group_rows

NOW = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)
DAY = 86400


def test_a_percentile_is_the_recount_rounded_down_to_what_staff_read() -> None:
    rnd = random.Random(18)
    for trial in range(300):
        values = [
            rnd.choice([rnd.randint(-5, 59), rnd.randint(60, DAY), rnd.randint(DAY, 120 * DAY)])
            for _ in range(rnd.randint(1, 40))
        ]
        # Split over a few rows, as a period's days and months are.
        rows: list[dict[int, int]] = [{} for _ in range(1 + trial % 4)]
        for v in values:
            bucket = OVERFLOW if v >= OVERFLOW else shown(v)
            row = rows[rnd.randrange(len(rows))]
            row[bucket] = row.get(bucket, 0) + 1
        merged = Histogram(pack(r) for r in rows)
        assert merged.total == len(values)
        for p in (0.5, 0.9):
            (rank,) = merged.percentiles([p])
            assert rank is not None
            if rank.overflow_rank is None:
                got = rank.value
            else:
                got = shown(sorted(v for v in values if v >= OVERFLOW)[rank.overflow_rank - 1])
            assert got == pct(values, p), (values, p)
    assert Histogram([b"", None]).percentiles([0.5]) == [None]
    assert Histogram([]).at_most(10) == 0
    assert unpack(pack({60: 2, -3: 1, 3600: 0})) == {-3: 1, 60: 2}


def test_a_stored_histogram_takes_a_tick_s_changes_in_place() -> None:
    rnd = random.Random(5)
    for _ in range(200):
        stored = {rnd.randint(-3, 5000): rnd.randint(1, 4) for _ in range(rnd.randint(0, 30))}
        delta: dict[int, int] = {}
        for _ in range(rnd.randint(0, 10)):
            key = rnd.choice([*stored, rnd.randint(-3, 5000)]) if stored else rnd.randint(0, 9)
            # Taking a conversation out can empty a bucket; never below empty.
            delta[key] = rnd.choice([-stored.get(key, 0), 1, 2]) if key in stored else 1
        want = {k: n for k in {*stored, *delta} if (n := stored.get(k, 0) + delta.get(k, 0))}
        blob = merged(pack(stored), delta)
        assert unpack(blob) == want
        assert blob == pack(want)  # the same bytes a rebuild writes


def test_a_period_is_its_whole_months_and_its_edge_days() -> None:
    rnd = random.Random(7)
    for _ in range(500):
        start = date(2025, 1, 1) + timedelta(days=rnd.randrange(700))
        end = start + timedelta(days=rnd.choice([0, 6, 29, 30, 89, 364, rnd.randrange(800)]))
        ranges, months = pieces(start, end)
        covered = [a + timedelta(days=i) for a, b in ranges for i in range((b - a).days + 1)]
        for first in months:
            at = first
            while at.month == first.month:
                covered.append(at)
                at += timedelta(days=1)
        assert sorted(covered) == [start + timedelta(days=i) for i in range((end - start).days + 1)]
        assert len(covered) == len(set(covered))
        # No whole month is read day by day.
        assert not any(a.day == 1 and (b + timedelta(days=1)).day == 1 for a, b in ranges)


def months_history(desk: Any, mail: Any, ana: Any, ben: Any) -> list[Spec]:
    """Conversations over January to April 2026: across month ends, waits beyond the 90-day
    overflow (no team: their open time is the clock), answered and resolved in later months."""
    resolved = StatusEvent.RESOLVED
    specs = [
        Spec(
            [ny(2026, 1, 20, 10)],
            [ny(2026, 1, 20, 10) + timedelta(days=100, minutes=7)],
            events=[(ny(2026, 1, 20, 10) + timedelta(days=120, hours=5), resolved)],
            agent=ana,
        ),
        Spec(
            [ny(2026, 1, 25, 9)],
            [ny(2026, 1, 25, 9) + timedelta(days=93, seconds=50)],
            agent=ana,
            due=ny(2026, 1, 26, 9),
        ),
        Spec(
            [ny(2026, 1, 31, 23, 30)],
            [ny(2026, 2, 1, 0, 10)],
            events=[(ny(2026, 2, 1, 1), resolved)],
            team=mail,
            agent=ben,
            due=ny(2026, 2, 1, 0, 0),
        ),
        Spec(
            [ny(2026, 2, 27, 16)],
            [ny(2026, 3, 2, 8, 45)],
            events=[(ny(2026, 4, 2, 9), resolved)],
            team=desk,
            agent=ana,
        ),
    ]
    rnd = random.Random(2026)
    for i in range(24):
        opened = ny(2026, 2, 1 + i, 8) + timedelta(minutes=rnd.randrange(600))
        wait = timedelta(seconds=rnd.choice([30, 400, 5000, 30000, 100000, 300000]) + i)
        specs.append(
            Spec(
                [opened],
                [opened + wait],
                events=[(opened + wait * 2, resolved)] if i % 3 else [],
                team=(desk, mail, None)[i % 3],
                agent=(ana, ben, None)[i % 3 if i % 5 else 0],
                due=opened + timedelta(hours=4) if i % 2 else None,
            )
        )
    return specs


@pytest.fixture
async def months(db: Database, set_clock: Any) -> dict[str, Any]:
    set_clock(NOW)
    c = await clinic(db)
    c["admin"] = await make_staff(db, "cora.admin@demo-clinic.example.org", role="admin")
    ana, ben = c["ana"].staff_id, c["ben"].staff_id
    c["ids"] = await seed(db, months_history(c["desk"], c["mail"], ana, ben), ana)
    c["ids"] += await seed(db, march_history(c["desk"], c["mail"], ana, ben), ana)
    await refresh_all(db)
    return c


PERIODS = [
    (date(2026, 2, 1), date(2026, 3, 31)),
    (date(2026, 1, 15), date(2026, 4, 10)),
    (date(2026, 3, 6), date(2026, 3, 12)),
    (date(2025, 6, 1), date(2026, 5, 31)),
]


async def assert_reports_equal_recount(db: Database, admin: Any) -> None:
    counted = list((await recount(db)).values())
    async with db.reader() as session:
        names: dict[Any, str] = {t.id: t.name for t in await session.scalars(select(Team))}
        names.update({s.id: s.display_name for s in await session.scalars(select(StaffUser))})
    for start, end in PERIODS:
        low, high = period(start, end, NY)
        for bh in (False, True):
            report = await build_responses(
                db, ReportFilters(start, end, NY, business_hours=bh), admin
            )
            assert report.figures == expected_responses(counted, low, high, NOW, bh=bh), (start, bh)
            if not bh:
                tables = {t.name: {row[0]: row[1:] for row in t.rows} for t in report.tables}
        by_channel = _group_rows(counted, lambda c: c.channel, low, high)
        # On the clock (the recount's table gives clock waits); breaches at the report's now.
        assert tables["by_channel"] == by_channel, (start, end)
        assert tables["by_team"] == _group_rows(
            counted, lambda c: names.get(c.team_id, "No team"), low, high
        )
        assert tables["by_agent"] == _group_rows(
            counted, lambda c: names.get(c.agent_id, "Unassigned"), low, high
        )
        volume = await build_volume(db, ReportFilters(start, end, NY), admin)
        assert volume.figures == expected_volume(counted, low, high, NY)[0]
        plow, phigh = period(*_previous(start, end), NY)
        assert volume.previous == expected_volume(counted, plow, phigh, NY)[0]


def _previous(start: date, end: date) -> tuple[date, date]:
    span = end - start + timedelta(days=1)
    return start - span, end - span


async def snapshot(db: Database) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    async with db.reader() as session:
        rows = (await session.scalars(select(InboxDay))).all()
    # fmt: off
    return {
        (r.grain, r.day, r.channel, r.team_id, r.assignee_id): (
            r.opened,
            r.measured,
            r.unanswered_open,
            r.closed_unanswered,
            r.with_due,
            r.settled_breaches,
            r.resolved,
            r.reopened,
            unpack(r.first_response),
            unpack(r.first_response_bh),
            unpack(r.resolution),
            unpack(r.resolution_bh),
        )
        for r in rows
    }
    # fmt: on


async def test_months_and_edges_equal_the_recount(db: Database, months: dict[str, Any]) -> None:
    await assert_reports_equal_recount(db, months["admin"])
    # The overflow is really reached: the 100-day wait is a 90th percentile read from facts.
    report = await build_responses(
        db, ReportFilters(date(2026, 1, 20), date(2026, 1, 25), NY), months["admin"]
    )
    assert report.figures["first_response_p90"] == 100 * DAY
    assert report.figures["first_response_median"] == 93 * DAY


async def test_incremental_changes_equal_the_recount_and_a_rebuild(
    db: Database, months: dict[str, Any]
) -> None:
    ids = months["ids"]
    async with db.transaction() as session:
        # Reassigned, moved to another team, erased.
        await session.execute(
            update(Conversation)
            .where(Conversation.id == ids[6])
            .values(assignee_id=months["ben"].staff_id)
        )
        await session.execute(
            update(Conversation).where(Conversation.id == ids[8]).values(team_id=months["mail"])
        )
        await session.execute(delete(Conversation).where(Conversation.id == ids[2]))
    await refresh_all(db)
    await assert_reports_equal_recount(db, months["admin"])
    async with db.transaction() as session:
        # Resolved in February, reopened five days later: "reopened within 7 days".
        target = ids[5]
        await session.execute(
            update(Conversation)
            .where(Conversation.id == target)
            .values(status=ConversationStatus.OPEN, resolved_at=None)
        )
        events = (
            await session.scalars(
                select(ConversationEvent.at).where(ConversationEvent.conversation_id == target)
            )
        ).all()
        assert events, "the chosen conversation was resolved"
        session.add(
            ConversationEvent(
                conversation_id=target,
                kind=StatusEvent.REOPENED,
                at=max(events) + timedelta(days=5),
            )
        )
    await refresh_all(db)
    await assert_reports_equal_recount(db, months["admin"])
    incremental = await snapshot(db)
    assert incremental
    await do_rebuild_facts(db)
    assert await snapshot(db) == incremental
    await assert_reports_equal_recount(db, months["admin"])
    # A rebuild cut short after its first batch: the next ticks finish it.
    async with db.transaction() as session:
        await clear_rollup(session)
        await queue_every_conversation(session)
    assert not (await do_refresh_facts(db, batch=3)).caught_up
    assert await snapshot(db) == {}
    await refresh_all(db)
    assert await snapshot(db) == incremental


async def test_a_target_still_waiting_is_missed_when_the_clock_passes_it(
    db: Database, set_clock: Any
) -> None:
    set_clock(datetime(2026, 3, 10, 14, tzinfo=UTC))
    c = await clinic(db)
    admin = await make_staff(db, "cora.admin@demo-clinic.example.org", role="admin")
    await seed(
        db, [Spec([ny(2026, 3, 10, 9)], team=c["desk"], due=ny(2026, 3, 10, 12))], c["ana"].staff_id
    )
    await refresh_all(db)
    day = ReportFilters(date(2026, 3, 10), date(2026, 3, 10), NY)
    assert (await build_responses(db, day, admin)).figures["sla_breaches"] == 0
    set_clock(datetime(2026, 3, 10, 16, 30, tzinfo=UTC))  # 12:30 in New York: past due
    late = await build_responses(db, day, admin)
    assert (late.figures["sla_breaches"], late.figures["sla_breach_rate"]) == (1, 1.0)
    by_team = next(t for t in late.tables if t.name == "by_team")
    assert [row[5] for row in by_team.rows] == [1]


def test_a_group_s_histograms_merge_into_one() -> None:
    rnd = random.Random(31)
    for _ in range(300):
        rows = []
        for _ in range(rnd.randint(1, 5)):
            row: dict[int, int] = {}
            for _ in range(rnd.randint(1, 40)):
                low, high = rnd.choice([(-90, 59), (60, 2 * DAY), (DAY, 200 * DAY)])
                wait = rnd.randint(low, high)
                key = OVERFLOW if wait >= OVERFLOW else shown(wait)
                row[key] = row.get(key, 0) + rnd.randint(1, 5)
            rows.append(row)
        merged = Histogram(pack(r) for r in rows)
        want: dict[int, int] = {}
        for row in rows:
            for key, n in row.items():
                want[key] = want.get(key, 0) + n
        keys = sorted(want)
        assert merged.keys.tolist() == keys
        assert merged.totals.tolist() == list(accumulate(want[k] for k in keys))
    odd = Histogram([pack({61: 2, 60: 1}), pack({-100_000: 1, 61: 1})])
    assert odd.keys.tolist() == [-100_000, 60, 61]
    assert odd.totals.tolist() == [1, 2, 5]
