"""The reports at scale (issue 18, "Fast at scale"): every report of hub/reports/registry.py at
1,000,000 conversations, 10,000,000 messages and 1,000,000 journey runs, beside the inbox's
first page in the same run.

The data: a copy of inbox_scale's kept database (``CREATE DATABASE ... TEMPLATE``, minutes
instead of the quarter of an hour a fresh load takes) with two years of journeys written into
it by bench/scale_journeys.py (enrollments, appointments and their outcomes, step runs, the
reminders and replies as messages in the patients' conversations). Kept like the inbox's: a
later run reuses it while its parameters and schema revision match (a newer schema is migrated
in place).

Then, as the scheduler tick would: the report rollups are brought current from nothing (their
full rebuild, timed). A real `hub serve` is asked, over HTTP with an admin's API token, one
request at a time, ``GET /api/reports/{name}`` for each report over a 30-day and a 365-day
period, cycling through no filter, a team, the business-hours switch and both (the periods'
end days move, so no two neighbouring requests are the same), 200 of each after warm-up;
every report request is followed by an inbox first page (``GET /api/conversations?...`` as
inbox_scale asks it, with an agent's token): the baseline, interleaved so both see the same
load. Target: each report's p95 under 300 ms. Then N new events go through the hub's real
paths (signed inbound SMS webhooks, staff replies and resolutions over the API) and the
rollups catch up as the tick would: how long until they are current again (their lag).

The SQL each report runs is captured from the hub's own code and run again under EXPLAIN
(ANALYZE, BUFFERS): bench/results/reports-plans.txt.

    python -m bench.reports                                        # 1M / 10M / 1M runs
    python -m bench.reports --conversations 20000 --messages 200000 --runs 20000 --requests 40
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from bench import inbox_scale, scale_data, scale_journeys
from bench.common import (
    RESULTS_DIR,
    ROOT,
    _server_dsn,
    bench_database_url,
    database_name,
    exclusive,
    flush_redis,
    load_average,
    print_table,
    run_info,
    warn_if_busy,
    write_result,
)
from bench.inbox_scale import WARMUP, Client, filter_sets, make_token, summary
from bench.reports_work import (
    ROLLUPS,
    catch_up,
    explain_reports,
    make_admin_token,
    post_events,
    start_serve,
    table_counts,
)
from bench.scale_data import DEFAULT_HEAVY, Dataset, ScaleSpec, ensure_dataset, stored_dataset
from bench.scale_journeys import JourneySpec

NAME = "reports"
TARGET_MS = 300.0
PERIODS = (30, 365)
"""Days in the periods asked for."""
VARIANTS = ("no filter", "team", "business hours", "team + business hours")
DEFAULT_REQUESTS = 200
DEFAULT_BUDGET_S = 180.0
"""Per report and period: 200 requests of a report within its target take under a minute."""
DEFAULT_EVENTS = 1000
"""New inbound messages for the catch-up; half get a staff reply, a quarter are resolved."""
MAX_EVENTS = 1000
"""Senders +1 901..910 555-01xx: the next area code would be 911."""
ADMIN_EMAIL = "bench.admin@example.org"
CLINIC_ZONE = "America/New_York"
"""The zone the periods' days are picked in (the generator's teams keep their hours in it)."""
PLANS = RESULTS_DIR / f"{NAME}-plans.txt"
COPY_WAIT_S = 900.0
"""How long to wait for the inbox database to be free of connections before giving up."""
JOURNEY_TABLES = ("journey_step_run", "journey_enrollment", "journey_appointment")
STARTED = time.monotonic()


def say(text: str) -> None:
    print(f"reports [{time.monotonic() - STARTED:5.0f} s] {text}", file=sys.stderr, flush=True)


# -- the data ---------------------------------------------------------------------------------


async def _copy_database(source: str, target: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(_server_dsn(bench_database_url(), "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
        deadline = time.monotonic() + COPY_WAIT_S
        while True:
            try:
                await admin.execute(f'CREATE DATABASE "{target}" TEMPLATE "{source}"')
                return
            except asyncpg.ObjectInUseError:
                # PostgreSQL copies a template only while no one is connected to it.
                if time.monotonic() > deadline:
                    raise
                say(f"{source} is in use; waiting to copy it")
                await asyncio.sleep(10)
    finally:
        await admin.close()


def ensure_reports_dataset(
    spec: ScaleSpec, journeys: JourneySpec, *, regenerate: bool
) -> tuple[Dataset, dict[str, Any]]:
    """``hub_bench_reports``: inbox_scale's data (its kept database, copied) plus journeys."""
    default = ScaleSpec(inbox_scale.DEFAULT_CONVERSATIONS, inbox_scale.DEFAULT_MESSAGES)
    suffix = "" if spec == default and journeys == JourneySpec() else f"_{spec.conversations}"
    name = NAME + suffix
    inbox = asdict(spec)
    if not regenerate:
        # ensure_dataset migrates a kept database whose schema is older, then says it reuses it.
        found = asyncio.run(stored_dataset(name, spec))
        if found is not None:
            found = ensure_dataset(name, spec, say=say)
            info = asyncio.run(scale_journeys.stored_journeys(found.url, journeys, inbox))
            if info is not None:
                return found, info
    source = inbox_scale.NAME if spec == default else f"{NAME}_inbox_{spec.conversations}"
    if asyncio.run(stored_dataset(source, spec)) is None:
        if source == inbox_scale.NAME:
            # Never regenerate inbox_scale's kept database from here: that drops it under the
            # benchmarks and people that read it, and takes a quarter of an hour.
            raise SystemExit(
                f"{database_name(source)} does not hold inbox_scale's kept dataset at its "
                "recorded schema revision: run `python -m bench.inbox_scale` first"
            )
        ensure_dataset(source, spec, say=say)
    say(f"copying {database_name(source)} to {database_name(name)}")
    clock = time.perf_counter()
    # The copy is migrated, never the source: other benchmarks and helpers read it as it is.
    asyncio.run(_copy_database(database_name(source), database_name(name)))
    copy_s = round(time.perf_counter() - clock, 1)
    dataset = ensure_dataset(name, spec, say=say)
    now_s = datetime.fromisoformat(dataset.now).timestamp()
    loaded = asyncio.run(
        scale_journeys.load_journeys(dataset.url, dataset.ring_spec, now_s, journeys, say)
    )
    info = {"counts": dict(loaded.counts), "timings": {"copy_s": copy_s, **loaded.timings}}
    asyncio.run(scale_journeys.mark_journeys(dataset.url, journeys, inbox, info))
    return dataset, info


# -- the hub, over HTTP -----------------------------------------------------------------------


def last_day(dataset: Dataset) -> date:
    """The data's last whole day in the clinic's zone: periods end on or before it."""
    now = datetime.fromisoformat(dataset.now).astimezone(ZoneInfo(CLINIC_ZONE))
    return now.date() - timedelta(days=1)


def asks(
    report: str, days: int, n: int, end: date, team_ids: list[str]
) -> tuple[str, dict[str, str]]:
    """The n-th request for ``report`` over ``days``: its variant and query string."""
    variant = VARIANTS[n % len(VARIANTS)]
    last = end - timedelta(days=(n // len(VARIANTS)) % 28)
    q = {"start": (last - timedelta(days=days - 1)).isoformat(), "end": last.isoformat()}
    if "team" in variant:
        q["team"] = team_ids[(n // len(VARIANTS)) % len(team_ids)]
    if "business" in variant:
        q["business_hours"] = "1"
    return variant, q


class Measured:
    def __init__(self) -> None:
        self.times: dict[tuple[str, int], list[float]] = {}
        self.by_variant: dict[tuple[str, int, str], list[float]] = {}
        self.refused: dict[str, str] = {}
        """report/variant -> the 4xx it answered (a filter the report does not take)."""
        self.inbox: list[float] = []
        self.health: list[float] = []
        self.as_of_lag_s: list[float] = []
        self.cut: dict[str, int] = {}
        """report/days -> requests measured, where the time budget cut the run short."""


async def measure(
    admin: Client,
    agent: Client,
    dataset: Dataset,
    reports: list[str],
    requests: int,
    budget_s: float,
) -> Measured:
    """Each report and period in turn, ``requests`` after warm-up, each followed by an inbox
    first page. A report slower than ``budget_s`` allows is cut short (its warm-up after a
    quarter of the budget, its requests after the budget, never below two of each variant):
    a 10-second report would otherwise hold the run for hours and prove nothing more."""
    m = Measured()
    inbox_asks = filter_sets(dataset.team_ids, 4 * (requests + WARMUP))
    k = 0
    end = last_day(dataset)
    for report in reports:
        for days in PERIODS:
            say(f"{report}, {days} days: {requests} requests after {WARMUP} warm-up")
            started, warmup, n, measured = time.monotonic(), WARMUP, 0, 0
            while measured < requests:
                spent = time.monotonic() - started
                if len(VARIANTS) <= n < warmup and spent > budget_s / 4:
                    warmup = n
                if measured >= 2 * len(VARIANTS) and spent > budget_s:
                    m.cut[f"{report}/{days}"] = measured
                    break
                if all(f"{report}/{v}" in m.refused for v in VARIANTS):
                    break
                variant, q = asks(report, days, n, end, dataset.team_ids)
                n += 1
                if f"{report}/{variant}" in m.refused:
                    continue
                try:
                    ms, body = await admin.get(f"/api/reports/{report}", q)
                except RuntimeError as exc:
                    # A filter this report does not take is a 4xx: noted, that variant dropped.
                    if not re.search(r": 4\d\d b['\"]", str(exc)):
                        raise
                    m.refused[f"{report}/{variant}"] = str(exc)[:300]
                    continue
                timed = n > warmup
                if timed:
                    measured += 1
                    m.times.setdefault((report, days), []).append(ms)
                    m.by_variant.setdefault((report, days, variant), []).append(ms)
                    if isinstance(body, dict) and body.get("as_of"):
                        as_of = datetime.fromisoformat(body["as_of"])
                        m.as_of_lag_s.append((datetime.now(UTC) - as_of).total_seconds())
                ms, _page = await agent.get("/api/conversations", inbox_asks[k % len(inbox_asks)])
                k += 1
                if timed:
                    m.inbox.append(ms)
                    if measured % 4 == 0:
                        m.health.append((await agent.get("/healthz"))[0])
    return m


# -- the run ----------------------------------------------------------------------------------


def _scale(spec: ScaleSpec, counts: dict[str, int]) -> str:
    def n(value: int) -> str:
        return f"{value / 1e6:.2g}M" if value >= 100_000 else f"{value:,}"

    return (
        f"{n(counts['inbox_conversation'])} conversations, {n(counts['inbox_message'])} "
        f"messages, {n(counts['journey_step_run'])} journey runs"
    )


def _rows(m: Measured, reports: list[str], scale: str) -> list[dict[str, Any]]:
    inbox, health = summary(m.inbox), summary(m.health)
    rows = []
    for report in reports:
        for days in PERIODS:
            times = m.times.get((report, days))
            if not times:
                continue
            s = summary(times)
            worst = max(
                (v for v in VARIANTS if (report, days, v) in m.by_variant),
                key=lambda v: summary(m.by_variant[(report, days, v)])["p95_ms"],
            )
            worst_p95 = summary(m.by_variant[(report, days, worst)])["p95_ms"]
            cut = f" ({len(times)} requests: time budget)" if f"{report}/{days}" in m.cut else ""
            rows.append(
                {
                    "label": f"GET /api/reports/{report}, {days} days, {scale}{cut}",
                    "figure": f"p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms "
                    f"(slowest: {worst}, p95 {worst_p95:.1f} ms)",
                    "baseline": f"inbox first page p50 {inbox['p50_ms']:.1f} ms, p95 "
                    f"{inbox['p95_ms']:.1f} ms; GET /healthz p50 {health['p50_ms']:.1f} ms",
                    "ratio": f"{s['p95_ms'] / inbox['p95_ms']:.1f}x the inbox page's p95",
                    "target": f"p95 < {TARGET_MS:g} ms",
                    "passed": s["p95_ms"] < TARGET_MS,
                }
            )
    return rows


def _rollup_rows(
    full: dict[str, Any], lag: dict[str, Any], events: dict[str, Any], rebuilt: bool
) -> list[dict[str, Any]]:
    from worker.tick import TICK_INTERVAL_S

    rows = []
    if full and rebuilt:
        rows.append(
            {
                "label": "report rollups: full rebuild, every conversation recomputed",
                "figure": ", ".join(f"{k} {v['seconds']:,.1f} s" for k, v in full.items()),
                "baseline": "",
                "ratio": "",
                "target": "reported (no target)",
                "passed": True,
            }
        )
    for label, done in lag.items():
        lag_s = (done["calls"] - 1) * TICK_INTERVAL_S + done["seconds"]
        rows.append(
            {
                "label": f"report rollups: {label} current again after {events['inbound']} "
                f"inbound texts, {events['replies']} replies, {events['resolved']} resolutions",
                "figure": f"lag about {lag_s:,.1f} s: {done['calls']} tick batch(es), "
                f"{done['seconds']:,.2f} s of work",
                "baseline": "",
                "ratio": "",
                "target": "reported (no target)",
                "passed": True,
            }
        )
    return rows


async def run(
    args: argparse.Namespace, dataset: Dataset, generated: dict[str, Any]
) -> dict[str, Any]:
    from hub.reports.registry import REPORTS

    warn_if_busy(NAME)
    flush_redis()
    reports = [r for r in REPORTS if not args.reports or r in args.reports]
    if not reports:
        raise SystemExit("no report is registered in hub/reports/registry.py yet")
    log_dir = Path(tempfile.mkdtemp(prefix="hub-bench-reports-"))
    counts = await table_counts(dataset.url)
    scale = _scale(dataset.spec, counts)
    load = [load_average()]
    how = "brought current tick by tick" if args.skip_rebuild else "rebuilt in full"
    say(f"rollups {how}: {', '.join(r[0] for r in ROLLUPS) or 'none'}")
    full = await catch_up(dataset, full=not args.skip_rebuild)
    if await scale_data._stored_revision(dataset.url) != scale_data.head_revision():
        # A migration landed while the rollups were rebuilt: `hub serve` would refuse.
        say("a newer schema landed meanwhile: migrating")
        await scale_data._upgrade_in_place(dataset.url, dataset.ring_spec)
        await catch_up(dataset, full=False)
    tokens = [await make_admin_token(dataset, ADMIN_EMAIL), await make_token(dataset)]
    serve, base = start_serve(dataset, log_dir)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2)) as http:
            admin, agent = Client(http, base, tokens[0]), Client(http, base, tokens[1])
            m = await measure(admin, agent, dataset, reports, args.requests, args.budget)
            load.append(load_average())
            say(f"{args.events} new events through the hub's HTTP paths")
            events = await post_events(http, base, admin, dataset, args.events)
    finally:
        serve.stop()
    say("the rollups catch up")
    lag = await catch_up(dataset, full=False)
    say("query plans")
    # Its plan summary flags sequential scans of these; the journey tables are big here too.
    inbox_scale.BIG_TABLES = (*inbox_scale.BIG_TABLES, *JOURNEY_TABLES)  # type: ignore[assignment]
    plans = await explain_reports(
        dataset,
        reports,
        admin_email=ADMIN_EMAIL,
        zone=CLINIC_ZONE,
        end=last_day(dataset),
        periods=PERIODS,
        path=PLANS,
    )
    rows = _rows(m, reports, scale) + _rollup_rows(full, lag, events, not args.skip_rebuild)
    description = (
        f"inbox_scale's data copied ({counts['inbox_conversation']:,} conversations, "
        f"{counts['inbox_message']:,} messages after the journeys' own) with two years of "
        f"journeys written into it ({counts['journey_enrollment']:,} enrollments, "
        f"{counts['journey_step_run']:,} step runs, {counts['journey_appointment']:,} "
        "appointments with outcomes, the reminders and replies as messages); the report "
        "rollups brought current from empty as the tick would (timed); a real `hub serve` "
        "answering an admin's API token, one request at a time: `GET /api/reports/{name}` for "
        f"every registered report ({', '.join(reports)}) over 30- and 365-day periods, "
        f"cycling through no filter, a team, the business-hours switch and both, {args.requests} "
        f"per report and period after {WARMUP} warm-up requests, each followed by an inbox "
        "first page (inbox_scale's filter sets, an agent's token): the baseline, interleaved "
        f"(a report slower than {args.budget:g} s per report and period allows is cut short "
        "and says so). "
        f"Then {args.events} signed inbound texts, staff replies and resolutions through the "
        "hub's HTTP paths, and the rollups' catch-up timed (their lag). Query plans: "
        f"`bench/results/{PLANS.name}`."
    )
    return {
        "passed": all(r["passed"] for r in rows),
        "description": description,
        "rows": rows,
        "details": {
            "counts": counts,
            "generated": generated,
            "per_variant": {f"{r}/{d}/{v}": summary(t) for (r, d, v), t in m.by_variant.items()},
            "refused": m.refused,
            "cut_by_budget": m.cut,
            "inbox_first_page": summary(m.inbox),
            "healthz": summary(m.health),
            "as_of_lag_s": summary(m.as_of_lag_s) if m.as_of_lag_s else None,
            "rollups_full": full,
            "rollups_catch_up": lag,
            "events": events,
            "plans_summary": inbox_scale.plans_summary({k: v for k, v in plans.items() if v}),
            "load_average": {"start": load[0], "end": load[1]},
            "serve_peak_rss_mb": serve.peak_rss_mb,
            "logs": str(log_dir),
        },
    }


def report(result: dict[str, Any]) -> None:
    table = [["figure", "measured", "baseline (same run)", "target", "result"]]
    for r in result["rows"]:
        table.append(
            [r["label"], r["figure"], r["baseline"], r["target"], "pass" if r["passed"] else "FAIL"]
        )
    print_table(table)
    for label, line in result["details"]["plans_summary"].items():
        print(f"plan: {label}: {line}")
    for what, why in result["details"]["refused"].items():
        print(f"refused: {what}: {why}")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reports",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--conversations", type=int, default=inbox_scale.DEFAULT_CONVERSATIONS)
    parser.add_argument("--messages", type=int, default=inbox_scale.DEFAULT_MESSAGES)
    parser.add_argument("--heavy", type=int, default=DEFAULT_HEAVY)
    parser.add_argument("--runs", type=int, default=JourneySpec().runs, help="journey step runs")
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET_S,
        help="seconds one report and period may take before it is cut short",
    )
    parser.add_argument("--reports", nargs="*", help="only these reports")
    parser.add_argument("--regenerate", action="store_true", help="copy and load again")
    parser.add_argument("--prepare", action="store_true", help="only build the data, then stop")
    parser.add_argument(
        "--skip-rebuild",
        action="store_true",
        help="bring the rollups current tick by tick instead of timing their full rebuild",
    )
    args = parser.parse_args()
    if not 1 <= args.events <= MAX_EVENTS:
        parser.error(f"--events: 1 to {MAX_EVENTS} (the new senders' fictional numbers)")
    with exclusive(NAME):
        spec = ScaleSpec(args.conversations, args.messages, heavy=args.heavy)
        # Before any event loop: the inbox generator forks its worker processes.
        dataset, generated = ensure_reports_dataset(
            spec, JourneySpec(runs=args.runs), regenerate=args.regenerate
        )
        if args.prepare:
            print(f"{dataset.url.rsplit('/', 1)[-1]} ready: {generated}")
            return
        info = asyncio.run(run_info(dataset.url))
        result = asyncio.run(run(args, dataset, generated))
    path = write_result(NAME, result, info)
    report(result)
    print(f"written to {path.relative_to(ROOT)}; plans in {PLANS.relative_to(ROOT)}")
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
