"""The outcome reports' reads (``journeys``, ``appointments``, ``delivery``) from the day
rollups of migration 0033 beside the reads they replace, at the issue's scale, in one run.

A scratch PostgreSQL database (``hub_h2_scratch``, dropped at the end) is migrated and
filled set-based with synthetic rows shaped like two years of a busy clinic: ``--runs`` run
facts (5 journeys, 2-3 steps an enrollment, a day apart), ``--appointments`` appointments
(each a NO_JOURNEY fact, two in three a journey's too), ``--messages`` messages (70% outbound,
6 teams, 3 channels; the delivery report's old read scans them). The rollups are then counted
from those rows with the migration's own statements (run days, waits, delivery days) and the
appointment days the same way, so their row counts are what such a clinic would hold.

Each report's read is what its ``build`` asks the database (the period and the previous one,
every journey for the journeys report): the old functions (``outcome_queries``) and the new
ones (``outcome_day_queries``), alternated, ``--requests`` times each over 30 and 365 days,
the period's end moving a day each time, and what both found is compared on every request (the
"same figures" column). No HTTP and no figure-making: bench/reports.py times whole requests.

    python -m bench.outcome_rollup                                   # 1M runs, 10M messages
    python -m bench.outcome_rollup --runs 50000 --messages 200000 --appointments 30000
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

import asyncpg
from sqlalchemy import func, select

from bench.common import (
    ROOT,
    _server_dsn,
    bench_database_url,
    load_average,
    print_table,
    run_info,
    warn_if_busy,
    write_result,
)
from hub.config import parse_database_url
from hub.db import Database
from hub.migrations import upgrade_url
from hub.reports import outcome_day_queries as dq
from hub.reports import outcome_queries as oq
from hub.reports.base import ReportFilters
from hub.reports.outcome_models import (
    AppointmentDay,
    ConfirmWait,
    DeliveryDay,
    DeliveryMonth,
    RunDay,
    RunMonth,
)
from hub.reports.outcome_rollup import FLAGS, is_late, wait_bucket
from hub.reports.tuning import tune_for_reports

ZONE = "America/New_York"
LAST_DAY = date(2026, 11, 30)
JOURNEYS = [uuid.UUID(int=i + 1) for i in range(5)]
TEAMS = [uuid.UUID(int=100 + i) for i in range(6)]
OPT_OUT = ("sent", "opted_out")
SCRATCH = "hub_h2_scratch"
"""The scratch database on the benchmark's server, dropped at the end."""


def _migration() -> Any:
    path = ROOT / "hub/migrations/versions/0033_outcome_day_rollup.py"
    spec = importlib.util.spec_from_file_location("outcome_day_rollup", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ids(values: list[uuid.UUID]) -> str:
    return "ARRAY[" + ",".join(f"'{v}'::uuid" for v in values) + "]"


def synthesis(runs: int, appointments: int, messages: int) -> list[str]:
    """The scratch data, set-based (triggers and foreign keys off: replica role)."""
    enrollments = runs * 2 // 5
    conversations = max(messages // 10, 1)
    first = LAST_DAY - timedelta(days=729)
    j, t = _ids(JOURNEYS), _ids(TEAMS)
    local = f"AT TIME ZONE '{ZONE}'"
    return [
        "SET session_replication_role = replica",
        f"INSERT INTO inbox_team (id, name, time_zone, is_default, business_hours, holidays, "
        f"after_hours_enabled, after_hours_replies, created_at) SELECT ({t})[i], 'team ' || i, "
        f"'{ZONE}', i = 1, '{{}}', '[]', false, '{{}}', now() FROM generate_series(1, 6) i",
        # Enrollments: a start instant over two years; steps a day apart (2 or 3 of them).
        f"CREATE TEMP TABLE e AS SELECT md5('e' || i)::uuid AS id, ({j})[1 + i % 5] AS journey, "
        f"TIMESTAMPTZ '{first}' + (i::float / {enrollments} * 730) * INTERVAL '1 day' AS at, "
        f"2 + i % 2 AS steps FROM generate_series(1, {enrollments}) i",
        "INSERT INTO report_run_fact (run_id, enrollment_id, journey_id, version, step_id, "
        "appointment_id, channel, due_at, due_day, status, sent, delivered, replied, confirmed, "
        "cancelled, opted_out, failed, confirm_s, computed_at) "
        "SELECT gen_random_uuid(), e.id, e.journey, 1, 'step_' || k, NULL, "
        "(ARRAY['sms','email','voice'])[1 + (k + abs(hashtext(e.id::text))) % 3], "
        "e.at + (k - 1) * INTERVAL '1 day', "
        f"CAST((e.at + (k - 1) * INTERVAL '1 day') {local} AS date), 'sent', "
        "r < 0.92, r < 0.8, r2 < 0.3, r2 < 0.2, r2 > 0.97, r3 < 0.02, r >= 0.92, "
        "CASE WHEN r2 < 0.2 THEN r3 * 20000 END, now() "
        "FROM e CROSS JOIN LATERAL generate_series(1, e.steps) k "
        "CROSS JOIN LATERAL (SELECT random() + k * 0 AS r, random() + k * 0 AS r2, "
        "random() + k * 0 AS r3) x",
        "INSERT INTO report_appointment_fact (appointment_id, journey_id, start_at, status, "
        "cancelled_at, reminder_group, computed_at) "
        "SELECT a.id, u.journey, a.start_at, a.status, a.cancelled_at, a.grp, now() FROM ("
        f"SELECT md5('a' || i)::uuid AS id, TIMESTAMPTZ '{first}' + random() * INTERVAL "
        "'730 days' AS start_at, (ARRAY['booked','fulfilled','noshow','cancelled','arrived'])"
        "[1 + i % 5] AS status, CASE WHEN i % 5 = 3 AND i % 7 > 0 THEN TIMESTAMPTZ "
        f"'{first}' + random() * INTERVAL '730 days' END AS cancelled_at, "
        "(ARRAY['reminded','reminded','reminded','opted_out','unreachable','too_late',"
        f"'no_journey','other'])[1 + i % 8] AS grp, i FROM generate_series(1, {appointments}) i"
        f") a CROSS JOIN LATERAL (SELECT '{uuid.UUID(int=0)}'::uuid AS journey UNION ALL "
        f"SELECT ({j})[1 + a.i % 5] WHERE a.i % 3 > 0) u",
        "INSERT INTO inbox_patient (id, language, time_zone, channel_order, verified, "
        f"created_at, updated_at, unreachable) SELECT md5('p' || i)::uuid, 'en', '{ZONE}', "
        f"'[]', false, now(), now(), '{{}}' FROM generate_series(1, {conversations}) i",
        "INSERT INTO inbox_conversation (id, patient_id, team_id, status, priority, channel, "
        "created_at, last_activity_at) SELECT md5('c' || i)::uuid, md5('p' || i)::uuid, "
        f"({t})[1 + i % 6], 'open', 'normal', 'sms', now(), now() "
        f"FROM generate_series(1, {conversations}) i",
        "INSERT INTO inbox_message (id, conversation_id, direction, channel, status, "
        "provider, error_code, send_attempts, purpose, delivery_notes, created_at, updated_at) "
        f"SELECT gen_random_uuid(), md5('c' || (1 + i % {conversations}))::uuid, "
        "CASE WHEN i % 10 < 7 THEN 'outbound' ELSE 'inbound' END, ch, "
        "CASE WHEN i % 10 >= 7 THEN 'received' WHEN r < 0.8 THEN 'delivered' "
        "WHEN r < 0.9 THEN 'sent' WHEN r < 0.97 THEN 'undelivered' ELSE 'failed' END, "
        "CASE WHEN r < 0.995 THEN (CASE ch WHEN 'email' THEN 'smtp' ELSE 'twilio' END) END, "
        "CASE WHEN r >= 0.9 THEN (ARRAY['30003','30005','30006','30007','bounce_hard',"
        "'smtp_550','21610','opted_out'])[1 + (i / 7) % 8] END, 1, 'care', '[]', "
        f"TIMESTAMPTZ '{first}' + (i::float / {messages} * 730) * INTERVAL '1 day', now() "
        f"FROM generate_series(1, {messages}) i CROSS JOIN LATERAL (SELECT random() + i * 0 "
        "AS r, (ARRAY['sms','sms','email','voice'])[1 + i % 4] AS ch) x",
        # The message facts as the tick makes them; one in ten sent by a journey's step.
        "INSERT INTO report_message_fact (message_id, day, channel, provider, status, "
        "error_code, team_id, journey_id) SELECT m.id, "
        f"CAST(m.created_at {local} AS date), m.channel, COALESCE(m.provider, ''), m.status, "
        "CASE WHEN m.status IN ('failed', 'undelivered') THEN COALESCE(m.error_code, '') "
        f"ELSE '' END, c.team_id, CASE WHEN random() < 0.1 THEN ({j})[1 + floor(random() * 5)"
        f"::int] ELSE '{uuid.UUID(int=0)}'::uuid END "
        "FROM inbox_message m JOIN inbox_conversation c ON c.id = m.conversation_id "
        "WHERE m.direction = 'outbound'",
        "SET session_replication_role = DEFAULT",
    ]


APPOINTMENT_DAYS = (
    "INSERT INTO report_appointment_day (journey_id, start_day, status, reminder_group, "
    "cancel, count) SELECT journey_id, CAST(start_at AT TIME ZONE '"
    + ZONE
    + "' AS date) AS d, status, reminder_group, CASE WHEN status <> 'cancelled' THEN '' "
    "WHEN cancelled_at IS NULL THEN 'unknown' WHEN start_at - cancelled_at < INTERVAL "
    "'24 hours' THEN 'late' ELSE 'in_time' END AS c, COUNT(*) FROM report_appointment_fact "
    "GROUP BY journey_id, d, status, reminder_group, c"
)
"""``outcome_rollup.appointment_counts`` at the default 24 hours."""


async def build(url: str, runs: int, appointments: int, messages: int) -> dict[str, float]:
    migration = _migration()
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    took: dict[str, float] = {}
    try:
        for statement in synthesis(runs, appointments, messages):
            started = time.perf_counter()
            await conn.execute(statement)
            took[statement.split("(")[0][:40]] = time.perf_counter() - started
        started = time.perf_counter()
        for statement in [
            *migration.run_day_fill(True),
            migration.DELIVERY_DAY_FILL,
            *migration.month_fill(True, delivery=False),
            *migration.month_fill(True, delivery=True),
        ]:
            await conn.execute(statement)
        await conn.execute(APPOINTMENT_DAYS)
        took["rollups from the rows (set-based)"] = time.perf_counter() - started
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return took


def _period(end: date, days: int) -> ReportFilters:
    return ReportFilters(end - timedelta(days=days - 1), end, ZONE)


def _nonzero(steps: dict[str, dict[str, int]], total: dict[str, int]) -> Any:
    kept = {s: {c: n for c, n in cs.items() if n} for s, cs in steps.items()}
    return {s: cs for s, cs in kept.items() if cs}, {c: n for c, n in total.items() if n}


# Each read returns what it found, in one shape for the old and the new: the run compares them.


async def journeys_old(session: Any, f: ReportFilters, columns: tuple[str, ...] = FLAGS) -> Any:
    periods = [f.bounds(), f.previous().bounds()]
    found: dict[Any, Any] = {}
    for journey in JOURNEYS:
        counted = await oq.funnel_counts(session, journey, columns, periods, None)
        for k, (steps, total) in enumerate(counted):
            found[(journey, k)] = _nonzero(steps, total)
        if "confirmed" in columns:
            rows = await oq.confirmations(session, journey, (periods[1][0], periods[0][1]), None)
            for k, (low, high) in enumerate(periods):
                histogram: dict[str, dict[int, int]] = {}
                for step, due, wait in rows:
                    if low <= due < high:
                        step_waits = histogram.setdefault(step, {})
                        bucket = wait_bucket(wait)
                        step_waits[bucket] = step_waits.get(bucket, 0) + 1
                found[("waits", journey, k)] = histogram
    return found


async def journeys_new(session: Any, f: ReportFilters, columns: tuple[str, ...] = FLAGS) -> Any:
    days = [(f.start, f.end), (f.previous().start, f.previous().end)]
    counted = await dq.funnel_from_days(session, JOURNEYS, columns, days, None)
    found: dict[Any, Any] = {
        (journey, k): _nonzero(*per[k]) for journey, per in counted.items() for k in range(2)
    }
    if "confirmed" in columns:
        waits = await dq.confirm_histograms(session, JOURNEYS, days, None)
        for journey, per in waits.items():
            for k, histogram in enumerate(per):
                found[("waits", journey, k)] = histogram
    return found


async def appointments_old(session: Any, f: ReportFilters) -> Any:
    found: dict[Any, int] = {}
    for k, p in enumerate((f, f.previous())):
        for group, status, n in await oq.appointment_groups(session, p.bounds(), None):
            found[(k, group, status.value)] = n
        for start, cancelled in await oq.cancellations(session, p.bounds(), None):
            timing = "unknown" if cancelled is None else "late"
            if cancelled is not None and not is_late(start, cancelled, 24):
                timing = "in_time"
            found[(k, timing)] = found.get((k, timing), 0) + 1
    return found


async def appointments_new(session: Any, f: ReportFilters) -> Any:
    found: dict[Any, int] = {}
    for k, p in enumerate((f, f.previous())):
        for group, status, timing, n in await dq.appointment_days(session, (p.start, p.end), None):
            found[(k, group, status)] = found.get((k, group, status), 0) + n
            if timing:
                found[(k, timing)] = found.get((k, timing), 0) + n
    return found


async def delivery_old(session: Any, f: ReportFilters) -> Any:
    found: dict[Any, Any] = {}
    for k, p in enumerate((f, f.previous())):
        for ch, provider, status, n in await oq.delivery_groups(session, p.bounds(), *NONE):
            key = (k, ch, provider, status.value)
            found[key] = found.get(key, 0) + n
        for ch, code, n in await oq.error_groups(session, p.bounds(), *NONE):
            found[(k, "error", ch, code)] = n
    return {**found, **await journeys_old(session, f, OPT_OUT)}


async def delivery_new(session: Any, f: ReportFilters) -> Any:
    found: dict[Any, Any] = {}
    for k, p in enumerate((f, f.previous())):
        for ch, provider, status, n in await dq.delivery_days(session, (p.start, p.end), *NONE):
            found[(k, ch, provider, status)] = n
        for ch, code, n in await dq.error_days(session, (p.start, p.end), *NONE):
            found[(k, "error", ch, code)] = n
    return {**found, **await journeys_new(session, f, OPT_OUT)}


NONE = (None, None, None)
"""No channel, journey or team filter."""


READS = {
    "journeys": (journeys_old, journeys_new),
    "appointments": (appointments_old, appointments_new),
    "delivery": (delivery_old, delivery_new),
}


async def timed(
    db: Database, read: Callable[..., Awaitable[Any]], f: ReportFilters
) -> tuple[float, Any]:
    started = time.perf_counter()
    async with db.reader() as session:
        await tune_for_reports(session)
        found = await read(session, f)
    return (time.perf_counter() - started) * 1000, found


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


async def measure(url: str, requests: int) -> dict[str, Any]:
    db = Database.connect(url)
    figures: dict[str, Any] = {}
    try:
        async with db.reader() as session:
            for model in (
                RunDay,
                RunMonth,
                ConfirmWait,
                AppointmentDay,
                DeliveryDay,
                DeliveryMonth,
            ):
                figures[f"rows {model.__tablename__}"] = await session.scalar(
                    select(func.count()).select_from(model)
                )
        for name, (old, new) in READS.items():
            for days in (30, 365):
                old_ms: list[float] = []
                new_ms: list[float] = []
                same = True
                for i in range(requests + 2):  # the first two warm the cache
                    f = _period(LAST_DAY - timedelta(days=i), days)
                    (o, old_found), (n, new_found) = (
                        await timed(db, old, f),
                        await timed(db, new, f),
                    )
                    same = same and old_found == new_found
                    if i >= 2:
                        old_ms.append(o)
                        new_ms.append(n)
                figures[f"{name} {days}d"] = {
                    "same_figures": same,
                    "old_p50_ms": round(statistics.median(old_ms), 1),
                    "old_p95_ms": round(p95(old_ms), 1),
                    "new_p50_ms": round(statistics.median(new_ms), 1),
                    "new_p95_ms": round(p95(new_ms), 1),
                }
    finally:
        await db.dispose()
    return figures


TARGET_MS = 300.0


def table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The reads as bench/RESULTS.md rows: each beside the read it replaced, timed in the same
    run (database reads and the report's arithmetic, not HTTP)."""
    rows = []
    for key, value in result["figures"].items():
        if not isinstance(value, dict):
            continue
        new95 = value["new_p95_ms"]
        rows.append(
            {
                "label": f"{key} read, {result['runs']:,} runs, "
                f"{result['messages']:,} messages (no HTTP)",
                "figure": f"p50 {value['new_p50_ms']:.1f} ms, p95 {new95:.1f} ms",
                "baseline": f"the facts and messages read: p50 {value['old_p50_ms']:.1f} ms, "
                f"p95 {value['old_p95_ms']:.1f} ms; same figures: {value['same_figures']}",
                "ratio": f"{new95 / value['old_p95_ms']:.2f}x the old read's p95",
                "target": f"p95 < {TARGET_MS:.0f} ms",
                "passed": new95 < TARGET_MS and bool(value["same_figures"]),
            }
        )
    return rows


async def main(args: argparse.Namespace) -> None:
    warn_if_busy("outcome rollup read")
    base = bench_database_url()
    name = SCRATCH
    admin = await asyncpg.connect(_server_dsn(base, "postgres"))
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = parse_database_url(_server_dsn(base, name))
    try:
        await upgrade_url(url)
        load_before = load_average()
        built = await build(url, args.runs, args.appointments, args.messages)
        figures = await measure(url, args.requests)
        run = await run_info(url)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    result = {
        "runs": args.runs,
        "appointments": args.appointments,
        "messages": args.messages,
        "requests": args.requests,
        "build_s": {k: round(v, 1) for k, v in built.items()},
        "load_before": load_before,
        "load_after": load_average(),
        "figures": figures,
    }
    rows = [["read", "old p50", "old p95", "new p50", "new p95", "same figures"]]
    for key, value in figures.items():
        if isinstance(value, dict):
            rows.append(
                [key]
                + [
                    f"{value[k]:.1f} ms"
                    for k in ("old_p50_ms", "old_p95_ms", "new_p50_ms", "new_p95_ms")
                ]
                + [str(value["same_figures"])]
            )
        else:
            print(f"{key}: {value}")
    print_table(rows)
    write_result("outcome_rollup", {**result, "rows": table(result)}, run)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--appointments", type=int, default=600_000)
    parser.add_argument("--messages", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=30)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
