"""Inbound SMS ingest: signed Twilio webhooks into one `hub serve` on PostgreSQL, beside a bare
aiohttp handler on the same machine in the same run.

The hub is set up as a clinic would run it: two teams, a routing rule (refill -> Pharmacy, the
rest -> Front desk), staff in those teams, 2,000 known patients (sealed and blind-indexed by
the hub's own helpers), and a staff member signed in through the login form with a socket.io
client on /staff receiving ``message:new``. The load generator (bench/loadgen.py, its own
process) holds 32 keep-alive connections in a closed loop, each sending its next pre-signed
webhook (distinct MessageSid; 80% from known patients, 20% from new numbers; some keywords)
when the last is answered. After a warm-up it measures for a fixed time: requests/s and
p50/p99 latency; any answer but 200 fails the run. Then every MessageSid sent must be stored
exactly once (raw event and message), and the socket must have had every ``message:new``.

The baseline: a bare aiohttp app in its own process that reads the same form the same way and
answers empty TwiML, driven by the same load generator (bench/loadgen.py). Target: at least a
quarter of its throughput, p99 under 50 ms.

    python -m bench.ingest                  # 20 s measured (+ 3 s warm-up) per server
    python -m bench.ingest --seconds 5      # a quick check
    python -m bench.ingest --profile        # + bench/results/ingest-profile.txt (pyinstrument)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, inspect, select, text

from bench import loadgen
from bench.common import (
    RESULTS_DIR,
    ROOT,
    Process,
    bench_redis_url,
    clean_env,
    exclusive,
    flush_redis,
    free_port,
    fresh_database,
    http_ok,
    hub_command,
    load_average,
    print_table,
    run_info,
    stop_all,
    user_url,
    warn_if_busy,
    write_result,
)
from hub.audit import Actor
from hub.crypto import KeyRing
from hub.db import Database

NAME = "ingest"
DEFAULT_SECONDS = 20.0
DEFAULT_WARMUP_S = 3.0
CONNECTIONS = 32
TARGET_RATIO = 0.25
"""The hub must reach this share of the bare handler's requests per second."""
TARGET_P99_MS = 50.0
PROFILE_PATH = RESULTS_DIR / "ingest-profile.txt"
STAFF_EMAIL = "casey.agent@example.org"
STAFF_PASSWORD = "bench password for casey"
TEAMS = ("Front desk", "Pharmacy")
OTHER_AGENTS = ("robin.agent@example.org", "sam.agent@example.org", "lee.agent@example.org")
"""Offline agents: round-robin considers them and skips them (as in a real clinic)."""
DRAIN_TIMEOUT_S = 60.0
"""After the load, how long the broadcasts may take to reach the socket."""
RUN_TIMEOUT_S = 600.0
INSERT_CHUNK = 2_000


def say(text: str) -> None:
    print(f"{NAME} [{time.monotonic() - STARTED:5.0f} s] {text}", file=sys.stderr, flush=True)


STARTED = time.monotonic()


# -- the clinic -------------------------------------------------------------------------------


async def seed_clinic(db: Database, ring: KeyRing, known: int) -> None:
    """Teams, routing rules and staff through the hub's actions; known patients built by the
    hub's helper and inserted in bulk (as `hub` would have stored them over time)."""
    from hub.inbox import actions
    from hub.inbox.actions.patients import build_patient
    from hub.inbox.models import Patient
    from hub.inbox.schemas import NewPatient, NewStaffUser
    from hub.routing.actions import do_create_rule

    actor = Actor.system(f"bench:{NAME}")
    for team in TEAMS:
        await actions.do_ensure_team(db, actor, team)
    await do_create_rule(
        db,
        actor,
        name="Refills to pharmacy",
        conditions={"body_keywords": ["refill"]},
        actions={"team": "Pharmacy", "add_tags": ["refill"]},
        stop_processing=True,
    )
    await do_create_rule(
        db, actor, name="Everything else", conditions={}, actions={"team": "Front desk"}
    )
    from hub.enums import Role

    for email in (STAFF_EMAIL, *OTHER_AGENTS):
        name = email.split("@")[0].replace(".", " ").title()
        await actions.do_add_staff_user(
            db, actor, NewStaffUser(email, name, STAFF_PASSWORD, Role.AGENT, list(TEAMS))
        )
    for chunk in range(0, known, INSERT_CHUNK):
        rows = []
        for i in range(chunk, min(known, chunk + INSERT_CHUNK)):
            new = NewPatient(
                name=f"Pat{i:05d} Example",
                phone=loadgen.phone(i),
                email=f"pat{i:05d}@example.org",
                time_zone="America/New_York",
                verified=True,
            )
            patient = build_patient(ring, new, "US")
            columns = Patient.__table__.columns
            rows.append({k: v for k, v in inspect(patient).dict.items() if k in columns})
        async with db.transaction() as session:
            await session.execute(insert(Patient), rows)
    async with db.engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql("VACUUM ANALYZE inbox_patient")


def hub_env(db_url: str, redis_url: str, ring: KeyRing, port: int, var_dir: Path) -> dict[str, str]:
    return clean_env(
        HUB_DATABASE_URL=user_url(db_url),
        HUB_REDIS_URL=redis_url,
        HUB_KEYS=ring.to_spec(),
        HUB_PUBLIC_URL=f"http://127.0.0.1:{port}",
        HUB_PORT=str(port),
        HUB_VAR_DIR=str(var_dir),
        HUB_CLINIC_NAME="Example Clinic",
        TWILIO_ACCOUNT_SID=loadgen.ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=loadgen.AUTH_TOKEN,
        # No worker runs: replies (HELP, urgent) stay queued; nothing ever calls this.
        TWILIO_API_BASE="http://127.0.0.1:9",
        TWILIO_FROM_NUMBER=loadgen.CLINIC_NUMBER,
    )


def start_hub_serve(
    env: dict[str, str], log_dir: Path, port: int, profile: Path | None = None
) -> Process:
    argv = hub_command("serve")
    if profile is not None:
        # pyinstrument runs the same `python -m hub serve` and writes its report when the
        # server exits on SIGTERM.
        argv = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(profile)]
        argv += ["-m", "hub", "serve"]
    process = Process("hub-serve", argv, env, log_dir)
    deadline = time.monotonic() + 90
    while not http_ok(f"http://127.0.0.1:{port}/healthz"):
        if not process.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"hub serve did not start:\n{process.tail()}")
        time.sleep(0.1)
    return process


@dataclass
class StaffSocket:
    """A staff member signed in through the login form, on socket.io /staff."""

    on_message: Callable[[float, dict[str, Any]], None] | None = None
    received: dict[str, float] = field(default_factory=dict)
    """message_id -> perf_counter() when its message:new arrived."""
    events: int = 0
    sio: Any = None

    async def connect(self, base_url: str, email: str, password: str) -> None:
        import aiohttp
        import socketio
        from yarl import URL

        jar = aiohttp.CookieJar(unsafe=True)  # cookies of an IP-address host
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.get(f"{base_url}/login") as page:
                assert page.status == 200, page.status
            csrf = jar.filter_cookies(URL(f"{base_url}/login"))["hub_login_csrf"].value
            form = {"email": email, "password": password, "csrf_token": csrf, "next": "/"}
            async with http.post(f"{base_url}/login", data=form, allow_redirects=False) as done:
                if done.status not in (302, 303):
                    raise RuntimeError(f"staff sign-in failed: {done.status}")
            session = jar.filter_cookies(URL(f"{base_url}/"))["hub_session"].value
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("message:new", self._message_new, namespace="/staff")
        await self.sio.connect(
            base_url,
            namespaces=["/staff"],
            headers={"Cookie": f"hub_session={session}"},
            transports=["websocket"],
            socketio_path="socket.io",
        )

    async def _message_new(self, data: dict[str, Any]) -> None:
        now = time.perf_counter()
        self.events += 1
        self.received.setdefault(str(data.get("message_id")), now)
        if self.on_message is not None:
            self.on_message(now, data)

    async def close(self) -> None:
        if self.sio is not None:
            await self.sio.disconnect()


# -- load -------------------------------------------------------------------------------------


async def run_loadgen(
    name: str, log_dir: Path, target: str, extra: list[str], limit_s: float = RUN_TIMEOUT_S
) -> dict[str, Any]:
    """bench/loadgen.py in its own process; its figures once it has exited."""
    out = log_dir / f"{name}.json"
    argv = [sys.executable, "-m", "bench.loadgen", "run", "--target", target, "--out", str(out)]
    process = Process(name, [*argv, *extra], clean_env(), log_dir)
    deadline = time.monotonic() + limit_s
    try:
        while process.alive():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} still running after {limit_s:.0f} s")
            await asyncio.sleep(0.1)
    finally:
        process.stop()
    if process.popen.returncode != 0 or not out.exists():
        raise RuntimeError(f"{name} failed (exit {process.popen.returncode}):\n{process.tail()}")
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a running process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def transactions(db: Database) -> int:
    """Committed and rolled-back transactions of this database so far (PostgreSQL's own
    statistics, updated by each backend within a second or so)."""
    async with db.reader() as session:
        found = await session.scalar(
            text(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                "WHERE datname = current_database()"
            )
        )
        return int(found or 0)


def sent_sids(result: dict[str, Any]) -> set[str]:
    return {loadgen.message_sid(result["sid_prefix"], i) for i in range(result["sent"])}


async def stored_counts(db: Database, sids: set[str]) -> dict[str, Any]:
    """Every MessageSid sent, stored once as a raw event and once as a message (and nothing
    else: the database is this run's own)."""
    from hub.enums import Direction
    from hub.inbox.models import InboundEvent, Message, Patient

    async with db.reader() as session:
        events = (await session.scalars(select(InboundEvent.provider_event_id))).all()
        messages = (
            await session.scalars(
                select(Message.provider_message_id).where(Message.direction == Direction.INBOUND)
            )
        ).all()
        patients = await session.scalar(select(func.count()).select_from(Patient))
    return {
        "sent": len(sids),
        "events": len(events),
        "events_distinct": len(set(events)),
        "messages": len(messages),
        "messages_distinct": len(set(messages)),
        "missing": len(sids - set(events)) + len(sids - {m for m in messages if m}),
        "unexpected": len(set(events) - sids),
        "patients": int(patients or 0),
    }


def exactly_once(counts: dict[str, Any]) -> bool:
    n = counts["sent"]
    return bool(
        n > 0
        and counts["events"] == counts["events_distinct"] == n
        and counts["messages"] == counts["messages_distinct"] == n
        and counts["missing"] == 0
        and counts["unexpected"] == 0
    )


async def inbound_message_ids(db: Database) -> set[str]:
    from hub.enums import Direction
    from hub.inbox.models import Message

    async with db.reader() as session:
        ids = await session.scalars(
            select(Message.id).where(Message.direction == Direction.INBOUND)
        )
        return {str(i) for i in ids}


async def drained(socket: StaffSocket, expected: set[str], limit_s: float) -> int:
    """Wait until the socket has had message:new for every expected message (or time out)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if expected <= socket.received.keys():
            break
        await asyncio.sleep(0.1)
    return len(expected & socket.received.keys())


def load_args(args: argparse.Namespace) -> list[str]:
    return [
        "--connections",
        str(CONNECTIONS),
        "--seconds",
        f"{args.seconds:g}",
        "--warmup",
        f"{args.warmup:g}",
    ]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    redis_url = bench_redis_url()
    warn_if_busy(NAME)
    info = await run_info(redis_url=redis_url)
    log_dir = Path(tempfile.mkdtemp(prefix=f"hub-bench-{NAME}-"))
    procs: list[Process] = []
    say(f"logs in {log_dir}")

    baseline_server = Process(
        "baseline", [sys.executable, "-m", "bench.loadgen", "baseline"], clean_env(), log_dir
    )
    try:
        baseline_url = baseline_server.first_line()
        say(f"baseline: bare aiohttp handler at {baseline_url}")
        load_before = load_average()
        baseline = await run_loadgen(
            "loadgen-baseline", log_dir, baseline_url, [*load_args(args), "--cycle"]
        )
    finally:
        baseline_server.stop()
    b = baseline["measured"]
    say(f"baseline: {b['requests_per_s']:,.0f} requests/s, p50 {b['p50_ms']} ms, p99 {b['p99_ms']}")

    db_url = await fresh_database(NAME)
    flush_redis(redis_url)
    ring = KeyRing.generate("bench1")
    db = Database.connect(db_url)
    socket = StaffSocket()
    try:
        say(f"seeding the clinic: {args.known} known patients, teams, rules, staff")
        await seed_clinic(db, ring, args.known)
        port = free_port()
        env = hub_env(db_url, redis_url, ring, port, log_dir / "var")
        hub_url = f"http://127.0.0.1:{port}"
        if args.profile:
            PROFILE_PATH.parent.mkdir(parents=True, exist_ok=True)
        procs.append(start_hub_serve(env, log_dir, port, PROFILE_PATH if args.profile else None))
        await socket.connect(hub_url, STAFF_EMAIL, STAFF_PASSWORD)
        say(f"hub serve at {hub_url}, staff socket connected; loading it")
        load_mid = load_average()
        serve_pid = procs[0].pid
        cpu_before, xact_before = cpu_seconds(serve_pid), await transactions(db)
        hub = await run_loadgen(
            "loadgen-hub", log_dir, hub_url, [*load_args(args), "--known", str(args.known)]
        )
        cpu_after = cpu_seconds(serve_pid)
        h = hub["measured"]
        say(f"hub: {h['requests_per_s']:,.0f} requests/s, p50 {h['p50_ms']} ms, p99 {h['p99_ms']}")
        expected = await inbound_message_ids(db)
        broadcast = await drained(socket, expected, DRAIN_TIMEOUT_S)
        await socket.close()
        counts = await stored_counts(db, sent_sids(hub))
        await asyncio.sleep(1)  # PostgreSQL's statistics lag by up to its stats interval
        xact_after = await transactions(db)
        load_after = load_average()
    finally:
        stop_all(procs)
        await db.dispose()

    ratio = h["requests_per_s"] / b["requests_per_s"] if b["requests_per_s"] else 0.0
    sent = max(1, hub["sent"])
    once = exactly_once(counts)
    clean = hub["error_count"] == 0 and not hub["errors"] and baseline["error_count"] == 0
    all_broadcast = broadcast == len(expected)
    p99 = h["p99_ms"] if h["p99_ms"] is not None else float("inf")
    fast = ratio >= TARGET_RATIO and p99 < TARGET_P99_MS
    passed = bool(clean and once and all_broadcast and fast)
    cpu_ms = round((cpu_after - cpu_before) * 1000 / sent, 2)
    figure = (
        f"{h['requests_per_s']:,.0f} requests/s, p50 {h['p50_ms']:.1f} ms, p99 {p99:.1f} ms "
        f"(hub serve: {cpu_ms:g} ms CPU per request)"
    )
    if not clean:
        figure += f" ({hub['error_count']} errors: {hub['errors']})"
    if not once:
        figure += " (NOT stored exactly once)"
    if not all_broadcast:
        figure += f" ({len(expected) - broadcast} message:new missing)"
    description = (
        f"Signed Twilio inbound-SMS webhooks (distinct MessageSids; {args.known:,} known "
        "patients and new numbers, some keywords) from a load generator process "
        f"(`bench/loadgen.py`, {CONNECTIONS} keep-alive connections, closed loop, "
        f"{args.warmup:g} s warm-up then {args.seconds:g} s measured) into one `hub serve` on "
        "PostgreSQL with routing rules (refill -> Pharmacy, the rest -> Front desk) and a "
        "signed-in staff socket.io client receiving every `message:new`; afterwards every "
        "MessageSid is checked stored exactly once. Baseline: a bare aiohttp handler in its "
        "own process that parses the same form and answers empty TwiML, same load generator."
    )
    return {
        "passed": passed,
        "description": description,
        "rows": [
            {
                "label": f"inbound SMS ingest, {CONNECTIONS} connections",
                "figure": figure,
                "baseline": (
                    f"{b['requests_per_s']:,.0f} requests/s, p50 {b['p50_ms']:.1f} ms, "
                    f"p99 {b['p99_ms']:.1f} ms (bare aiohttp)"
                ),
                "ratio": f"{ratio:.2f}x",
                "target": f">= {TARGET_RATIO:g}x baseline, p99 < {TARGET_P99_MS:g} ms",
                "passed": passed,
            }
        ],
        "details": {
            "hub": hub,
            "baseline": baseline,
            "ratio": round(ratio, 3),
            "stored": counts,
            "exactly_once": once,
            "message_new": {"expected": len(expected), "received": broadcast},
            "socket_events": socket.events,
            "hub_serve_cpu_ms_per_request": cpu_ms,
            "db_transactions_per_request": round((xact_after - xact_before) / sent, 2),
            "known_patients": args.known,
            "load_average": {"baseline": load_before, "hub": load_mid, "end": load_after},
            "peak_rss_mb": {p.name: p.peak_rss_mb for p in procs},
            "profile": str(PROFILE_PATH.relative_to(ROOT)) if args.profile else None,
            "logs": str(log_dir),
        },
        "run": info,
    }


def report(result: dict[str, Any]) -> None:
    row = result["rows"][0]
    print_table(
        [
            ["figure", "baseline (same run)", "ratio", "target", "result"],
            [
                row["figure"],
                row["baseline"],
                row["ratio"],
                row["target"],
                "pass" if row["passed"] else "FAIL",
            ],
        ]
    )
    d = result["details"]
    s = d["stored"]
    print(
        f"stored: {s['events']:,} events / {s['messages']:,} messages for {s['sent']:,} "
        f"MessageSids sent (missing {s['missing']}, unexpected {s['unexpected']}); "
        f"{s['patients']:,} patients; message:new received {d['message_new']['received']:,} "
        f"of {d['message_new']['expected']:,}; hub serve CPU "
        f"{d['hub_serve_cpu_ms_per_request']} ms and {d['db_transactions_per_request']} "
        "database transactions per request"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="measured time")
    parser.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S)
    parser.add_argument("--known", type=int, default=loadgen.DEFAULT_KNOWN)
    parser.add_argument(
        "--profile", action="store_true", help=f"profile hub serve into {PROFILE_PATH.name}"
    )
    args = parser.parse_args()
    if args.seconds <= 0 or args.warmup < 0:
        parser.error("--seconds must be positive, --warmup not negative")
    with exclusive(NAME):
        result = asyncio.run(run(args))
    path = write_result(NAME, {k: v for k, v in result.items() if k != "run"}, result["run"])
    report(result)
    print(f"written to {path.relative_to(ROOT)}")
    if args.profile:
        print(f"profile of hub serve under the load: {PROFILE_PATH.relative_to(ROOT)}")
    if not result["passed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
