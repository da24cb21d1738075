"""The inbox reports' read from the day rollup beside the old read from the facts, on the same
data in the same run (issue 18, "Fast at scale"; migration 0032).

A scratch database (dropped at the end unless ``--keep``) is migrated and given N synthetic
conversation facts over a year (default 1,000,000: 3 channels, 5 teams of 6 agents, a tenth
unassigned, waits log-uniform from a minute to days, a few beyond the 90-day overflow), written
by one INSERT ... SELECT over generate_series. The rollup is then built from them the way a full
rebuild does (``rollup_queries.rebuild_rollup``, timed). For 30- and 365-day periods, with no
filter, a team, an agent, the business-hours switch: each report's statements exactly as
``hub.reports.inbox`` calls them, the old path (bench/inbox_facts_read.py, the facts read per
request) beside the new one (hub.reports.inbox_day_queries), alternating; p50/p95 per case.
Every new figure is checked against the old one rounded down to the resolution staff read.

The Python part of the new read (unpacking and bisecting the histograms) is timed apart: the
rows a 365-day, all-groups read fetches are re-read and bisected without the database.

    python -m bench.reports_rollup                      # 1M facts, 20 requests per case
    python -m bench.reports_rollup --facts 50000 --requests 5
    python -m bench.reports_rollup --keep ... ; python -m bench.reports_rollup --reuse
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import text

from bench import inbox_facts_read as old
from bench.common import _server_dsn, bench_database_url, print_table, run_info, write_result
from hub.config import parse_database_url
from hub.db import Database
from hub.migrations import upgrade_url
from hub.reports import inbox_day_queries as new
from hub.reports.inbox_queries import Scope, Stats
from hub.reports.rollup import shares, shown
from hub.reports.rollup_queries import SHARE_COLUMNS, add_to_rollup, lock_state, rebuild_rollup
from hub.reports.tuning import tune_for_reports

ZONE = "America/New_York"
FIRST_DAY = date(2025, 12, 1)
TEAMS = [f"00000000-0000-7000-8000-{i:012d}" for i in range(1, 6)]
AGENTS = [f"00000000-0000-7000-9000-{i:012d}" for i in range(1, 31)]

FACTS_SQL = """
INSERT INTO report_conversation_fact (
    conversation_id, team_id, channel, assignee_id, opened_at, opened_day, first_response_at,
    first_response_s, first_response_bh_s, resolved_at, resolved_day, resolution_s,
    resolution_bh_s, due_at, wait_end_at, reopened, last_inbound_at, inbound_hours, computed_at)
SELECT id, team, channel, agent, opened, (opened AT TIME ZONE :zone)::date,
       opened + make_interval(secs => fr), fr, (fr * 0.4)::int,
       CASE WHEN res IS NULL THEN NULL ELSE opened + make_interval(secs => res) END,
       CASE WHEN res IS NULL THEN NULL
            ELSE ((opened + make_interval(secs => res)) AT TIME ZONE :zone)::date END,
       res, (res * 0.4)::int, due, opened + make_interval(secs => least(fr, coalesce(res, fr))),
       reopened, opened, '{}', now()
FROM (
    SELECT gen_random_uuid() AS id,
           (ARRAY[:teams])[1 + a / 6] ::uuid AS team,
           (ARRAY['sms', 'email', 'chat'])[1 + c] AS channel,
           CASE WHEN i % 10 = 0 THEN NULL ELSE (ARRAY[:agents])[1 + a]::uuid END AS agent,
           CAST(:start AS timestamptz)
               + make_interval(secs => floor(random() * 365 * 86400)) AS opened,
           CASE WHEN i % 1000 = 7 THEN (95 * 86400 + i % 86400)
                ELSE floor(exp(ln(30) + random() * ln(4 * 86400 / 30.0)))::int END AS fr,
           CASE WHEN i % 7 = 0 THEN NULL
                ELSE floor(exp(ln(300) + random() * ln(20 * 86400 / 300.0)))::int END AS res,
           CASE WHEN i % 3 = 0 THEN NULL
                ELSE CAST(:start AS timestamptz)
                     + make_interval(secs => floor(random() * 365 * 86400)) END AS due,
           i % 20 = 0 AS reopened
    FROM (
        SELECT i, floor(random() * 30)::int AS a, floor(random() * 3)::int AS c
        FROM generate_series(1, :n) AS i
    ) AS g
) AS f
"""


async def _scratch(name: str) -> str:
    admin = await asyncpg.connect(_server_dsn(bench_database_url(), "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = parse_database_url(_server_dsn(bench_database_url(), name))
    await upgrade_url(url)
    return url


async def _drop(name: str) -> None:
    admin = await asyncpg.connect(_server_dsn(bench_database_url(), "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _load(db: Database, n: int) -> dict[str, float]:
    start = datetime.combine(FIRST_DAY, datetime.min.time(), tzinfo=UTC)
    began = time.perf_counter()
    async with db.transaction() as session:
        sql = FACTS_SQL.replace(":teams", ", ".join(f"'{t}'" for t in TEAMS))
        sql = sql.replace(":agents", ", ".join(f"'{a}'" for a in AGENTS))
        await session.execute(text(sql), {"zone": ZONE, "start": start, "n": n})
        await session.execute(
            text("INSERT INTO report_fact_state (id, time_zone, as_of) VALUES (1, :z, now())"),
            {"z": ZONE},
        )
    loaded = time.perf_counter() - began
    began = time.perf_counter()
    async with db.transaction() as session:
        await lock_state(session)
        rows = await rebuild_rollup(session)
    built = time.perf_counter() - began
    async with db.transaction() as session:
        await session.execute(text("ANALYZE"))
    return {
        "facts_load_s": round(loaded, 1),
        "rollup_build_s": round(built, 1),
        "rollup_rows": rows,
    }


Read = Callable[[Any, tuple[date, date], Scope, bool], Awaitable[Any]]


def _bounds(days: tuple[date, date]) -> tuple[datetime, datetime]:
    from hub.reports.base import ReportFilters

    return ReportFilters(days[0], days[1], ZONE).bounds()


def _previous(days: tuple[date, date]) -> tuple[date, date]:
    span = days[1] - days[0] + timedelta(days=1)
    return days[0] - span, days[1] - span


NOW = datetime(2026, 12, 1, tzinfo=UTC)


async def old_responses(s: Any, days: tuple[date, date], scope: Scope, bh: bool) -> Any:
    (low, high), (plow, phigh) = _bounds(days), _bounds(_previous(days))
    first = await old.first_response_stats(s, low, high, scope, business_hours=bh, now=NOW)
    resolved = await old.resolution_stats(s, low, high, scope, business_hours=bh)
    await old.first_response_stats(s, plow, phigh, scope, business_hours=bh, now=NOW, grouped=False)
    await old.resolution_stats(s, plow, phigh, scope, business_hours=bh, grouped=False)
    return first, resolved


async def new_responses(s: Any, days: tuple[date, date], scope: Scope, bh: bool) -> Any:
    pdays = _previous(days)
    bounds, pbounds = _bounds(days), _bounds(pdays)
    first = await new.first_response_stats(s, days, bounds, scope, business_hours=bh, now=NOW)
    resolved = await new.resolution_stats(s, days, bounds, scope, business_hours=bh)
    await new.first_response_stats(
        s, pdays, pbounds, scope, business_hours=bh, now=NOW, grouped=False
    )
    await new.resolution_stats(s, pdays, pbounds, scope, business_hours=bh, grouped=False)
    return first, resolved


async def old_volume(s: Any, days: tuple[date, date], scope: Scope, _bh: bool) -> Any:
    (low, high), (plow, phigh) = _bounds(days), _bounds(_previous(days))
    per_day = await old.opened_per_day(s, low, high, scope)
    resolved = await old.resolved_counts(s, low, high, scope)
    before = (
        await old.opened_count(s, plow, phigh, scope),
        await old.resolved_counts(s, plow, phigh, scope),
    )
    return per_day, resolved.by_assignee, resolved.reopened, before[0], before[1].by_assignee


async def new_volume(s: Any, days: tuple[date, date], scope: Scope, _bh: bool) -> Any:
    pdays = _previous(days)
    per_day = await new.opened_per_day(s, days, scope)
    resolved = await new.resolved_counts(s, days, scope)
    before = (await new.opened_count(s, pdays, scope), await new.resolved_counts(s, pdays, scope))
    return per_day, resolved.by_assignee, resolved.reopened, before[0], before[1].by_assignee


def _rounded(groups: dict[Any, Stats]) -> dict[Any, Stats]:
    for s in groups.values():
        s.p50 = None if s.p50 is None else shown(s.p50)
        s.p90 = None if s.p90 is None else shown(s.p90)
    return groups


async def _timed(
    db: Database, read: Read, days: tuple[date, date], scope: Scope, bh: bool
) -> tuple[float, Any]:
    began = time.perf_counter()
    async with db.reader() as session:
        await tune_for_reports(session)
        out = await read(session, days, scope, bh)
    return (time.perf_counter() - began) * 1000, out


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))], 1)


async def _python_share(db: Database, days: tuple[date, date]) -> dict[str, float]:
    """The Python side of a 365-day, all-groups first-response read (the rows grouped, their
    histograms unpacked and bisected), apart from the database's."""
    async with db.reader() as session:
        began = time.perf_counter()
        rows = await new.first_response_rows(
            session, days, Scope(), business_hours=False, grouped=True
        )
        fetched = time.perf_counter() - began
    times = []
    for _ in range(10):
        began = time.perf_counter()
        groups = new.first_response_groups(rows, Scope(), True)
        times.append((time.perf_counter() - began) * 1000)
    return {
        "rows": len(rows),
        "groups": len(groups),
        "histogram_entries": sum(len(r.histogram or b"") // 8 for r in rows),
        "sql_ms": round(fetched * 1000, 1),
        "python_ms_p50": _p(times, 0.5),
        "python_ms_max": round(max(times), 1),
    }


async def _tick_share(db: Database, changed: int) -> dict[str, float]:
    """What a tick adds to the refresh for ``changed`` conversations: their old shares out and
    new ones in (here: each reassigned to another agent), summed and written. Rolled back."""
    # A reader's transaction is rolled back at its end: the rollup is left as it was.
    async with db.reader() as session:
        rows = (
            await session.execute(
                text(
                    f"SELECT {', '.join(SHARE_COLUMNS)} FROM report_conversation_fact "
                    "ORDER BY opened_at DESC LIMIT :n"
                ),
                {"n": changed},
            )
        ).all()
        old_facts = [dict(zip(SHARE_COLUMNS, r, strict=True)) for r in rows]
        new_facts = [
            {**f, "assignee_id": uuid.UUID(AGENTS[i % 30])} for i, f in enumerate(old_facts)
        ]
        began = time.perf_counter()
        await lock_state(session)
        deltas = shares(old_facts, -1)
        for key, cell in shares(new_facts).items():
            if key in deltas:
                deltas[key].add(cell)
            else:
                deltas[key] = cell
        await add_to_rollup(session, deltas)
        spent = time.perf_counter() - began
    return {"conversations": changed, "rows_touched": len(deltas), "ms": round(spent * 1000, 1)}


NAME = "reports_rollup"
TARGET_MS = 300.0


def table(facts: int, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cases as bench/RESULTS.md rows: the rollup read beside the facts read it replaced,
    both timed in the same run (database reads and the report's arithmetic, not HTTP)."""
    rows = []
    for case in cases:
        old50, old95 = case["facts_ms"]
        new50, new95 = case["rollup_ms"]
        rows.append(
            {
                "label": f"{case['report']} read, {case['days']} days, "
                f"{case['filter']}, {facts:,} conversation facts (no HTTP)",
                "figure": f"p50 {new50} ms, p95 {new95} ms",
                "baseline": f"the per-conversation facts read: p50 {old50} ms, p95 {old95} ms",
                "ratio": f"{new95 / old95:.2f}x the facts read's p95",
                "target": f"p95 < {TARGET_MS:.0f} ms",
                "passed": new95 < TARGET_MS,
            }
        )
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--database", default="hub_h1_scratch")
    parser.add_argument("--keep", action="store_true", help="leave the scratch database")
    parser.add_argument(
        "--reuse", action="store_true", help="read a scratch database a --keep run left"
    )
    args = parser.parse_args()
    if args.reuse:
        url = parse_database_url(_server_dsn(bench_database_url(), args.database))
        db = Database.connect(url)
        async with db.reader() as session:
            kept = await session.scalar(text("SELECT count(*) FROM report_conversation_fact"))
        built = {"facts_load_s": None, "rollup_build_s": None, "rollup_rows": None, "reused": kept}
        args.facts = kept
    else:
        db = Database.connect(await _scratch(args.database))
    try:
        if not args.reuse:
            built = await _load(db, args.facts)
            print(
                f"{args.facts:,} facts in {built['facts_load_s']} s; rollup rebuilt in "
                f"{built['rollup_build_s']} s ({built['rollup_rows']:,} rows)"
            )
        end = date(2026, 11, 28)
        cases = []
        for span in (30, 365):
            days = (end - timedelta(days=span - 1), end)
            for label, scope, bh in (
                ("all", Scope(), False),
                ("team", Scope(team_id=uuid.UUID(TEAMS[1])), False),
                ("agent", Scope(agent_id=uuid.UUID(AGENTS[4])), False),
                ("business hours", Scope(), True),
            ):
                cases.append((span, days, label, scope, bh))
        rows = [["report", "days", "filter", "facts p50", "facts p95", "rollup p50", "rollup p95"]]
        results = []
        for name, before, after in (
            ("responses", old_responses, new_responses),
            ("volume", old_volume, new_volume),
        ):
            for span, days, label, scope, bh in cases:
                if name == "volume" and bh:
                    continue
                times: dict[str, list[float]] = {"facts": [], "rollup": []}
                for i in range(args.requests + 1):
                    t_old, got_old = await _timed(db, before, days, scope, bh)
                    t_new, got_new = await _timed(db, after, days, scope, bh)
                    if i == 0:
                        if name == "responses":
                            got_old = tuple(_rounded(g) for g in got_old)
                        assert got_new == got_old, (name, span, label)
                        continue  # warm-up
                    times["facts"].append(t_old)
                    times["rollup"].append(t_new)
                figures = {k: (_p(v, 0.5), _p(v, 0.95)) for k, v in times.items()}
                rows.append(
                    [
                        name,
                        str(span),
                        label,
                        *(str(x) for k in ("facts", "rollup") for x in figures[k]),
                    ]
                )
                results.append(
                    {
                        "report": name,
                        "days": span,
                        "filter": label,
                        **{f"{k}_ms": v for k, v in figures.items()},
                    }
                )
        print_table(rows)
        python = await _python_share(db, (end - timedelta(days=364), end))
        print(
            f"365 days, all groups: {python['rows']} rows ({python['histogram_entries']:,} "
            f"histogram buckets) fetched in {python['sql_ms']} ms, grouped and bisected in "
            f"{python['python_ms_p50']} ms of Python (max {python['python_ms_max']})"
        )
        tick = await _tick_share(db, 500)
        print(
            f"a tick's rollup work for {tick['conversations']} changed conversations: "
            f"{tick['rows_touched']:,} rows in {tick['ms']} ms"
        )
        write_result(
            NAME,
            {
                "facts": args.facts,
                **built,
                "cases": results,
                "python": python,
                "tick": tick,
                "rows": table(args.facts, results),
            },
            await run_info(),
        )
    finally:
        await db.dispose()
        if not (args.keep or args.reuse):
            await _drop(args.database)


if __name__ == "__main__":
    asyncio.run(main())
