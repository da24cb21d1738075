"""The inbox at scale: 1,000,000 conversations and 10,000,000 messages (bench/scale_data.py
loads them into PostgreSQL with COPY, once; later runs reuse the database), served by a real
`hub serve` and read over HTTP with an agent's API token, as the staff UI and API clients do:

- the first inbox page under 200 varied filter sets (view, status, team, channel, priority,
  overdue), ``GET /api/conversations?...``;
- the next page, following ``next_cursor`` (keyset) from those first pages;
- opening 200 distinct 200-message conversations, ``GET /api/conversations/{id}`` (every body
  decrypted by the hub; the bench checks each one came back).

p50/p95 of each, one request at a time (latency, not throughput), the time until the whole
response body has arrived. The baseline, in the same run and interleaved with it request by
request (so both see the same load from whatever else runs on the machine): the very same
requests against a 1,000-conversation database of the same shape, served by a second `hub
serve`, and the large one's ``GET /healthz``. A small inbox runs out of next pages quickly:
its cursor chains are followed again from the second page. Targets: p95 under 20 ms for list
pages, under 30 ms for the conversation.

The SQL each operation runs is captured from the hub's own code (SQLAlchemy's cursor events)
and run again under EXPLAIN (ANALYZE, BUFFERS): bench/results/inbox_scale-plans.txt. The
hottest path is profiled in-process with pyinstrument: bench/results/inbox_scale-profile.txt.

    python -m bench.inbox_scale                                   # 1M / 10M (reused if kept)
    python -m bench.inbox_scale --conversations 20000 --messages 200000   # a quick run
    python -m bench.inbox_scale --regenerate                      # load the data again
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    RESULTS_DIR,
    ROOT,
    Process,
    bench_redis_url,
    clean_env,
    exclusive,
    flush_redis,
    free_port,
    http_ok,
    hub_command,
    load_average,
    print_table,
    run_info,
    user_url,
    warn_if_busy,
    write_result,
)
from bench.scale_data import (
    AGENT_TEAMS,
    HEAVY_SIZE,
    Dataset,
    ScaleSpec,
    database_size,
    ensure_dataset,
)

NAME = "inbox_scale"
BASELINE_NAME = "inbox_tiny"
DEFAULT_CONVERSATIONS = 1_000_000
DEFAULT_MESSAGES = 10_000_000
BASELINE_SPEC = ScaleSpec(conversations=1_000, messages=10_000, heavy=40)
"""The same shape at a thousandth of the size (its 40 long threads are reopened in turn)."""
DEFAULT_REQUESTS = 200
WARMUP = 20
"""Requests of each kind before measuring: connection pool, statement caches, first pages."""
TARGET_LIST_MS = 20.0
TARGET_OPEN_MS = 30.0
PLANS = RESULTS_DIR / f"{NAME}-plans.txt"
PROFILE = RESULTS_DIR / f"{NAME}-profile.txt"
BIG_TABLES = ("inbox_conversation", "inbox_message", "inbox_patient")


def say(text: str) -> None:
    print(f"inbox_scale [{time.monotonic() - STARTED:5.0f} s] {text}", file=sys.stderr, flush=True)


STARTED = time.monotonic()


# -- what is asked ---------------------------------------------------------------------------


def filter_sets(team_ids: list[str], count: int, seed: int = 9) -> list[dict[str, str]]:
    """``count`` query strings an agent's inbox sends: mostly the default active view, the rest
    narrowed by view, status, one of the agent's teams, channel, priority or overdue."""
    rnd = random.Random(seed)
    teams = [team_ids[t] for t in AGENT_TEAMS]
    sets = []
    for n in range(count):
        q: dict[str, str] = {}
        kind = n % 10
        if kind in (1, 5):
            q["view"] = rnd.choice(("mine", "unassigned"))
        if kind in (2, 6):
            q["team"] = rnd.choice(teams)
        if kind == 3:
            q["status"] = rnd.choice(("open", "pending", "snoozed"))
        if kind == 4:
            q["channel"] = rnd.choice(("sms", "email", "voice", "chat"))
        if kind == 7:
            q["priority"] = rnd.choice(("urgent", "high"))
        if kind == 8:
            q["overdue"] = "1"
        if kind == 9:
            q.update(team=rnd.choice(teams), channel="sms", view="unassigned")
        sets.append(q)
    return sets


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


# -- the hub, over HTTP ----------------------------------------------------------------------


async def make_token(dataset: Dataset) -> str:
    """An API token for the benchmark agent, made by the hub's own action."""
    from hub.audit import Actor
    from hub.db import Database
    from hub.inbox.actions.staff import do_create_token

    db = Database.connect(dataset.url)
    try:
        return await do_create_token(
            db, Actor.system("bench:inbox_scale"), dataset.agent_email, "bench", days=1
        )
    finally:
        await db.dispose()


def start_serve(dataset: Dataset, log_dir: Path, label: str) -> tuple[Process, str]:
    port = free_port()
    env = clean_env(
        HUB_DATABASE_URL=user_url(dataset.url),
        HUB_REDIS_URL=bench_redis_url(),
        HUB_KEYS=dataset.ring_spec,
        HUB_PUBLIC_URL=f"http://127.0.0.1:{port}",
        HUB_HOST="127.0.0.1",
        HUB_PORT=str(port),
        HUB_VAR_DIR=str(log_dir / f"var-{label}"),
        HUB_LOG_FORMAT="text",
    )
    serve = Process(f"hub-serve-{label}", hub_command("serve"), env, log_dir)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while not http_ok(f"{base}/healthz"):
        if not serve.alive() or time.monotonic() > deadline:
            serve.stop()
            raise SystemExit(f"hub serve did not come up:\n{serve.tail()}")
        time.sleep(0.1)
    return serve, base


class Client:
    """One staff client, one request at a time, timed until the body has arrived."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http, self.base = http, base
        self.headers = {"Authorization": f"Bearer {token}"}

    async def get(self, path: str, params: dict[str, str] | None = None) -> tuple[float, Any]:
        started = time.perf_counter()
        async with self.http.get(self.base + path, params=params, headers=self.headers) as response:
            raw = await response.read()
            elapsed = (time.perf_counter() - started) * 1000
            if response.status != 200:
                raise RuntimeError(f"GET {path} {params}: {response.status} {raw[:300]!r}")
        import json

        return elapsed, json.loads(raw) if raw[:1] in (b"{", b"[") else raw


class Target:
    """One served database and what is asked of it."""

    def __init__(self, label: str, client: Client, dataset: Dataset, requests: int) -> None:
        self.label, self.client, self.dataset = label, client, dataset
        self.filters = filter_sets(dataset.team_ids, requests + WARMUP)
        heavy = list(dataset.heavy_ids)
        random.Random(3).shuffle(heavy)
        self.opened = [heavy[n % len(heavy)] for n in range(requests + WARMUP)]
        self.times: dict[str, list[float]] = {k: [] for k in ("first", "next", "open", "health")}
        self.page2: list[tuple[dict[str, str], str, int]] = []
        self.cursors: list[tuple[dict[str, str], str, int]] = []
        """(filters, cursor, the page number it leads to), followed in turn."""
        self.depths: list[int] = []
        self.next_rows: list[int] = []
        """Rows each measured next page held (a small inbox's later pages are short)."""
        self.bodies = 0

    async def first_page(self, n: int, record: bool = True) -> None:
        q = self.filters[n]
        ms, page = await self.client.get("/api/conversations", q)
        if record:
            self.times["first"].append(ms)
            if page["next_cursor"]:
                self.page2.append((q, page["next_cursor"], 2))

    async def next_page(self) -> None:
        """One page deeper along the next filter set's cursor chain; when every chain has
        ended (a small inbox runs out fast), start again from the second pages."""
        if not self.cursors:
            self.cursors = list(self.page2)
        q, cursor, depth = self.cursors.pop(0)
        ms, page = await self.client.get("/api/conversations", {**q, "cursor": cursor})
        self.times["next"].append(ms)
        self.depths.append(depth)
        self.next_rows.append(len(page["items"]))
        if page["next_cursor"]:
            self.cursors.append((q, page["next_cursor"], depth + 1))

    async def open(self, n: int, record: bool = True) -> None:
        cid = self.opened[n]
        ms, view = await self.client.get(f"/api/conversations/{cid}")
        messages = view["messages"]
        if len(messages) != HEAVY_SIZE or not all(m["body"] for m in messages):
            raise RuntimeError(f"conversation {cid}: {len(messages)} messages, some empty")
        if record:
            self.times["open"].append(ms)
            self.bodies += len(messages)

    async def health(self) -> None:
        ms, _body = await self.client.get("/healthz")
        self.times["health"].append(ms)

    def result(self) -> dict[str, Any]:
        return {
            "first_page": summary(self.times["first"]),
            "next_page": summary(self.times["next"]),
            "open": summary(self.times["open"]),
            "healthz": summary(self.times["health"]),
            "next_page_depths": {"min": min(self.depths), "max": max(self.depths)},
            "bodies_decrypted": self.bodies,
        }


async def measure_http(targets: list[Target], requests: int) -> None:
    """Each request goes to every target in turn, so the baseline and the figure share
    whatever else the machine is doing at that moment."""
    for n in range(WARMUP):
        for t in targets:
            await t.first_page(n, record=False)
            await t.open(n, record=False)
    say("first pages")
    for n in range(WARMUP, WARMUP + requests):
        for t in targets:
            await t.first_page(n)
    if not all(t.page2 for t in targets):
        raise RuntimeError("no filter set has a second page: the dataset is too small")
    say("next pages")
    for _ in range(requests):
        for t in targets:
            await t.next_page()
    say(f"opening {requests} conversations of {HEAVY_SIZE} messages")
    for n in range(WARMUP, WARMUP + requests):
        for t in targets:
            await t.open(n)
    for _ in range(requests):
        for t in targets:
            await t.health()


async def measure_both(
    dataset: Dataset, tiny: Dataset, log_dir: Path, requests: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    tokens = [await make_token(dataset), await make_token(tiny)]
    procs: list[Process] = []
    try:
        serve, base = start_serve(dataset, log_dir, "scale")
        procs.append(serve)
        serve_tiny, base_tiny = start_serve(tiny, log_dir, "tiny")
        procs.append(serve_tiny)
        connector = aiohttp.TCPConnector(limit=2)
        async with aiohttp.ClientSession(connector=connector) as http:
            big = Target("scale", Client(http, base, tokens[0]), dataset, requests)
            small = Target("tiny", Client(http, base_tiny, tokens[1]), tiny, requests)
            await measure_http([big, small], requests)
    finally:
        for proc in procs:
            proc.stop()
    results = big.result(), small.result()
    for proc, result in zip(procs, results, strict=True):
        result["serve_peak_rss_mb"] = proc.peak_rss_mb
    return results


# -- query plans -----------------------------------------------------------------------------


class Captured:
    """Every statement the hub's code sends while ``active``, with its parameters."""

    def __init__(self) -> None:
        self.active = False
        self.statements: list[tuple[str, Any]] = []

    def listen(self, conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if self.active:
            self.statements.append((statement, parameters))


async def _staff_context(db: Any, email: str) -> Any:
    from sqlalchemy import select

    from hub.inbox.access import StaffContext
    from hub.inbox.models import StaffUser

    async with db.reader() as session:
        staff = (await session.scalars(select(StaffUser).where(StaffUser.email == email))).one()
        return StaffContext.of(staff)


PLAN_NODE = re.compile(
    r"(?:->\s+|^)(?P<node>[A-Z][A-Za-z ]+?)(?: using (?P<index>\S+))?"
    r"(?: on (?P<table>\S+)(?: \S+)?)?\s+\(cost=\S+ rows=\d+ width=\d+\)"
    r" \(actual time=\S+ rows=(?P<rows>\d+) loops=(?P<loops>\d+)\)",
    re.M,
)


def _plan_summary(plan: str) -> dict[str, Any]:
    """The plan's nodes with the rows each produced, sequential scans of the large tables,
    the most rows any scan read, and the execution time."""
    nodes = [m.groupdict() for m in PLAN_NODE.finditer(plan)]
    seq_big = [n["table"] for n in nodes if n["node"] == "Seq Scan" and n["table"] in BIG_TABLES]
    scanned = [int(n["rows"]) * int(n["loops"]) for n in nodes if "Scan" in n["node"]]
    time_ms = re.search(r"Execution Time: ([\d.]+) ms", plan)
    return {
        "nodes": [
            f"{n['node']}{' using ' + n['index'] if n['index'] else ''}"
            f"{' on ' + n['table'] if n['table'] else ''} ({int(n['rows']) * int(n['loops'])} rows)"
            for n in nodes
        ],
        "seq_scans_of_big_tables": seq_big,
        "most_rows_scanned": max(scanned, default=0),
        "execution_ms": float(time_ms.group(1)) if time_ms else None,
    }


async def explain_operations(dataset: Dataset) -> dict[str, Any]:
    """Run each operation once through the hub's functions, capture its SQL, then EXPLAIN
    (ANALYZE, BUFFERS) each SELECT with the same parameters. Writes PLANS."""
    from sqlalchemy import event

    from hub.crypto import KeyRing
    from hub.db import Database
    from hub.inbox.actions.conversations import do_open_conversation
    from hub.inbox.actions.listing import InboxFilters, do_list_inbox

    ring = KeyRing.parse(dataset.ring_spec)
    db = Database.connect(dataset.url)
    captured = Captured()
    event.listen(db.engine.sync_engine, "before_cursor_execute", captured.listen)
    try:
        ctx = await _staff_context(db, dataset.agent_email)
        first = await do_list_inbox(db, ring, ctx, InboxFilters())
        operations: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            (
                "inbox first page (default view: active, the agent's teams)",
                lambda: do_list_inbox(db, ring, ctx, InboxFilters()),
            ),
            (
                "inbox first page (team + unassigned + sms)",
                lambda: do_list_inbox(
                    db,
                    ring,
                    ctx,
                    InboxFilters(
                        view="unassigned",
                        team_id=uuid.UUID(dataset.team_ids[AGENT_TEAMS[0]]),
                        channel=_channel("sms"),
                    ),
                ),
            ),
            (
                "inbox next page (keyset, default view)",
                lambda: do_list_inbox(db, ring, ctx, InboxFilters(), cursor=first.next_cursor),
            ),
            (
                f"open a {HEAVY_SIZE}-message conversation",
                lambda: do_open_conversation(db, ring, ctx, uuid.UUID(dataset.heavy_ids[0])),
            ),
        ]
        out: list[str] = []
        summaries: dict[str, list[dict[str, Any]]] = {}
        for label, call in operations:
            captured.statements.clear()
            captured.active = True
            await call()
            captured.active = False
            selects = [
                (s, p) for s, p in captured.statements if s.lstrip().upper().startswith("SELECT")
            ]
            out.append(
                f"=== {label}: {len(captured.statements)} statements, "
                f"{len(selects)} SELECTs explained\n"
            )
            summaries[label] = []
            for statement, parameters in selects:
                async with db.engine.connect() as conn:
                    result = await conn.exec_driver_sql(
                        "EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters
                    )
                    plan = "\n".join(row[0] for row in result.all())
                    await conn.rollback()
                out.append(f"--- {_one_line(statement)}\n{plan}\n")
                summaries[label].append({"sql": _one_line(statement)[:160], **_plan_summary(plan)})
        PLANS.write_text("\n".join(out))
        return summaries
    finally:
        await db.dispose()


def _channel(value: str) -> Any:
    from hub.enums import Channel

    return Channel(value)


def _one_line(sql: str) -> str:
    return " ".join(sql.split())


def plans_summary(plans: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """One line per operation: its SELECTs' total time, its slowest one and how it reads,
    and anything that would not scale (a sequential scan of a large table, a scan of many
    rows)."""
    lines = {}
    for label, statements in plans.items():
        total = sum(s["execution_ms"] or 0 for s in statements)
        slowest = max(statements, key=lambda s: s["execution_ms"] or 0)
        seq = sorted({t for s in statements for t in s["seq_scans_of_big_tables"]})
        most = max(s["most_rows_scanned"] for s in statements)
        access = [n for n in slowest["nodes"] if "Scan" in n]
        lines[label] = (
            f"{len(statements)} SELECTs, {total:.2f} ms in all; slowest {slowest['execution_ms']} "
            f"ms: {'; '.join(access) or 'no scan'}; "
            + (f"SEQUENTIAL SCAN of {', '.join(seq)}" if seq else "no sequential scan")
            + f"; at most {most:,} rows read by one scan"
        )
    return lines


# -- profile ---------------------------------------------------------------------------------


async def profile_hot_path(dataset: Dataset, rounds: int = 40) -> str:
    """pyinstrument over in-process calls of the slowest operation's action (opening a long
    thread, and the first page beside it), on the same data."""
    from pyinstrument import Profiler

    from hub.crypto import KeyRing
    from hub.db import Database
    from hub.inbox.actions.conversations import do_open_conversation
    from hub.inbox.actions.listing import InboxFilters, do_list_inbox

    ring = KeyRing.parse(dataset.ring_spec)
    db = Database.connect(dataset.url)
    try:
        ctx = await _staff_context(db, dataset.agent_email)
        for cid in dataset.heavy_ids[:5]:
            await do_open_conversation(db, ring, ctx, uuid.UUID(cid))
        profiler = Profiler(async_mode="enabled", interval=0.0005)
        profiler.start()
        for n in range(rounds):
            await do_open_conversation(
                db, ring, ctx, uuid.UUID(dataset.heavy_ids[n % len(dataset.heavy_ids)])
            )
            await do_list_inbox(db, ring, ctx, InboxFilters())
        profiler.stop()
        text: str = profiler.output_text(unicode=False, color=False, show_all=False)
        PROFILE.write_text(text)
        return text
    finally:
        await db.dispose()


# -- the run ---------------------------------------------------------------------------------


def _row(
    label: str,
    big: dict[str, float],
    tiny: dict[str, float],
    health: dict[str, float],
    target_ms: float,
) -> dict[str, Any]:
    return {
        "label": label,
        "figure": f"p50 {big['p50_ms']:.1f} ms, p95 {big['p95_ms']:.1f} ms",
        "baseline": f"1k conversations: p50 {tiny['p50_ms']:.1f} ms, p95 {tiny['p95_ms']:.1f} ms; "
        f"GET /healthz p50 {health['p50_ms']:.1f} ms",
        "ratio": f"{big['p95_ms'] / tiny['p95_ms']:.2f}x baseline p95",
        "target": f"p95 < {target_ms:g} ms",
        "passed": big["p95_ms"] < target_ms,
    }


async def run(
    args: argparse.Namespace, dataset: Dataset, tiny: Dataset
) -> tuple[dict[str, Any], dict[str, Any]]:
    warn_if_busy(NAME)
    flush_redis()
    spec = dataset.spec
    log_dir = Path(tempfile.mkdtemp(prefix="hub-bench-inbox-"))
    info = await run_info(dataset.url)
    load = [load_average()]
    say(f"{spec.conversations:,} conversations beside the 1,000-conversation baseline")
    big, small = await measure_both(dataset, tiny, log_dir, args.requests)
    load.append(load_average())
    say("query plans")
    plans = await explain_operations(dataset)
    if args.profile:
        say("profile")
        await profile_hot_path(dataset)
    sizes = await database_size(dataset.url)
    scale = (
        f"{spec.conversations / 1e6:g}M conversations"
        if spec.conversations >= 100_000
        else f"{spec.conversations:,} conversations"
    )
    rows = [
        _row(
            f"inbox first page (filters), {scale}",
            big["first_page"],
            small["first_page"],
            big["healthz"],
            TARGET_LIST_MS,
        ),
        _row(
            f"inbox next page (keyset), {scale}",
            big["next_page"],
            small["next_page"],
            big["healthz"],
            TARGET_LIST_MS,
        ),
        _row(
            f"open a {HEAVY_SIZE}-message conversation (decrypted), {scale}",
            big["open"],
            small["open"],
            big["healthz"],
            TARGET_OPEN_MS,
        ),
    ]
    description = (
        f"{spec.conversations:,} conversations and {spec.messages:,} messages (every body sealed "
        "on its own, two years of skewed history) loaded into PostgreSQL with COPY; a real `hub "
        "serve` answering one agent's API token over HTTP, one request at a time, "
        f"{args.requests} of each kind after {WARMUP} warm-up requests: first inbox pages under "
        "varied filters, next pages by keyset cursor, and opening distinct "
        f"{HEAVY_SIZE}-message threads with every body decrypted and checked. Times run until the "
        "whole response body has arrived. Baseline, interleaved request by request with the "
        "figure so both share the machine's load: the same requests against a 1,000-"
        "conversation database of the same shape, and `GET /healthz` of the same process. "
        f"Query plans: `bench/results/{PLANS.name}`."
    )
    result = {
        "passed": all(r["passed"] for r in rows),
        "description": description,
        "rows": rows,
        "details": {
            "spec": {
                "conversations": spec.conversations,
                "messages": spec.messages,
                "heavy_threads": spec.heavy,
            },
            "scale": big,
            "baseline_1k": small,
            "plans_summary": plans_summary(plans),
            "plans": plans,
            "generated_this_run": dataset.generated,
            "generation_s": dataset.timings,
            "data_generated_at": dataset.now,
            "sizes_bytes": sizes,
            "load_average": {"start": load[0], "end": load[1]},
            "logs": str(log_dir),
        },
    }
    return result, info


def report(result: dict[str, Any]) -> None:
    rows = [["figure", "measured", "baseline (same run)", "target", "result"]]
    for r in result["rows"]:
        rows.append(
            [r["label"], r["figure"], r["baseline"], r["target"], "pass" if r["passed"] else "FAIL"]
        )
    print_table(rows)
    for label, statements in result["details"]["plans"].items():
        worst = max((s["execution_ms"] or 0 for s in statements), default=0)
        seq = sorted({t for s in statements for t in s["seq_scans_of_big_tables"]})
        print(
            f"plan: {label}: {len(statements)} SELECTs, slowest {worst:.2f} ms"
            + (f", SEQ SCAN of {', '.join(seq)}" if seq else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.inbox_scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--conversations", type=int, default=DEFAULT_CONVERSATIONS)
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES)
    parser.add_argument("--heavy", type=int, default=500, help="200-message threads to plant")
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    parser.add_argument("--regenerate", action="store_true", help="load the data again")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    args = parser.parse_args()
    with exclusive(NAME):
        spec = ScaleSpec(args.conversations, args.messages, heavy=args.heavy)
        # Before any event loop: the generator forks its worker processes.
        dataset = ensure_dataset(NAME, spec, regenerate=args.regenerate, say=say)
        tiny = ensure_dataset(BASELINE_NAME, BASELINE_SPEC, regenerate=args.regenerate, say=say)
        result, info = asyncio.run(run(args, dataset, tiny))
    path = write_result(NAME, result, info)
    report(result)
    print(f"written to {path.relative_to(ROOT)}; plans in {PLANS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
