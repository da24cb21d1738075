"""Journey dispatch throughput, end to end, beside RQ's own job rate on the same machine.

20,000 patients, each enrolled in the shipped appointment reminder journey with the text due
the day before already due, wait in PostgreSQL. The fake Twilio API runs in its own process
with 20 ms per call; the hub runs as `hub worker --processes 2` (whose main process claims due
runs and enqueues one dispatch job per batch). The clock starts when the due runs become
claimable and stops when the fake has recorded one message per run; then the recipients and
bodies are checked one by one: no duplicate, none missing, each body for its own patient.

The baseline, measured in the same run: two RQ worker processes like `hub worker`'s draining
no-op jobs (bench/noop.py). Target: at least 10 times that rate in messages per second.

    python -m bench.dispatch                 # 20,000 steps
    python -m bench.dispatch --steps 2000    # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from sqlalchemy import func, insert, inspect, select

from bench.common import (
    ROOT,
    Process,
    bench_redis_url,
    clean_env,
    exclusive,
    flush_redis,
    free_port,
    fresh_database,
    hub_command,
    load_average,
    print_table,
    run_info,
    stop_all,
    user_url,
    wait_for_workers,
    warn_if_busy,
    write_result,
)
from bench.noop import measure as measure_noop
from hub.audit import Actor
from hub.crypto import KeyRing
from hub.db import Base, Database, new_id

NAME = "dispatch"
DEFAULT_STEPS = 20_000
DEFAULT_LATENCY_MS = 20.0
DEFAULT_PROCESSES = 2
DEFAULT_NOOP_JOBS = 2_000
"""No-op jobs in the baseline: enough for a steady rate, few enough to take seconds."""
TARGET_RATIO = 10.0
"""Messages per second must reach this multiple of the no-op job rate."""
JOURNEY_KEY = "appointment_reminders"
STEP_ID = "sms_24h"
"""The step that is due: the text the day before, asking for a confirmation."""
ENROLLED_AGO = timedelta(hours=47)
"""Enrolled after the 72 h email was due (so it is planned as skipped, as the hub does)."""
APPOINTMENT_IN = timedelta(hours=22)
"""Appointments start 22-23 h from now: the 24 h text is one to two hours overdue."""
LOCATION = "Example Clinic, 1 Main Street"
INSERT_CHUNK = 2_000
STALL_TIMEOUT_S = 180.0
"""No new message at the fake for this long ends the run as incomplete."""
SETTLE_S = 2.0
"""After the last expected message, how long the count must hold still (late duplicates)."""
SETTLE_LIMIT_S = 60.0
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "fedcba9876543210" * 2
CLINIC_NUMBER = "+12015550100"
AREA_CODES = (201, 202, 203, 205, 206, 207, 208, 209, 210, 212)
"""Patients get +1 AAA 555 xxxx: fictional numbers, 10,000 per area code."""
ZONES = (
    "Pacific/Pago_Pago", "Pacific/Honolulu", "America/Anchorage", "America/Los_Angeles",
    "America/Denver", "America/Chicago", "America/New_York", "America/Halifax",
    "America/Sao_Paulo", "Atlantic/South_Georgia", "Atlantic/Cape_Verde", "Europe/London",
    "Europe/Paris", "Europe/Athens", "Europe/Moscow", "Asia/Dubai", "Asia/Karachi", "Asia/Dhaka",
    "Asia/Bangkok", "Asia/Shanghai", "Asia/Tokyo", "Australia/Brisbane", "Pacific/Noumea",
    "Pacific/Auckland", "Pacific/Tongatapu", "Pacific/Kiritimati",
)  # fmt: skip


def patient_phone(i: int) -> str:
    return f"+1{AREA_CODES[i // 10_000]}555{i % 10_000:04d}"


def first_name(i: int) -> str:
    return f"Pat{i:05d}"


def pick_zone(now: datetime) -> str:
    """The zone where it is nearest mid-morning, so the whole run is inside the send window
    (08:00-21:00 local); quiet hours would defer every message and measure nothing."""
    from hub.consent.rules import ConsentPolicy, in_window

    def hours(zone: str) -> float:
        local = now.astimezone(ZoneInfo(zone))
        return local.hour + local.minute / 60

    zone = min(ZONES, key=lambda z: abs(hours(z) - 10.5))
    policy = ConsentPolicy()
    assert in_window(policy, zone, now) and in_window(policy, zone, now + timedelta(hours=4))
    return zone


def _row(obj: Base) -> dict[str, Any]:
    """The column values set on a model instance (the rest take their column defaults)."""
    columns = obj.__table__.columns
    return {k: v for k, v in inspect(obj).dict.items() if k in columns}


async def seed(db: Database, ring: KeyRing, steps: int, now: datetime, zone: str) -> None:
    """What `hub journey launch appointment_reminders` would have written ENROLLED_AGO, built
    with the hub's own helpers (patients sealed and blind-indexed by build_patient, runs planned
    by the journey planner) and inserted in bulk. The journey is left paused: nothing is
    claimable until the clock starts. No consent rows: reminders need no opt-in."""
    from hub.inbox.actions.patients import build_patient
    from hub.inbox.models import Patient
    from hub.inbox.schemas import NewPatient
    from hub.journeys.actions import _plan_runs, do_install_journey, do_set_journey_status
    from hub.journeys.definitions import parse_journey
    from hub.journeys.models import Appointment, Enrollment, StepRun

    source = f"{JOURNEY_KEY}.yaml"
    text = resources.files("hub.journeys").joinpath("examples", source).read_text("utf-8")
    actor = Actor.system("bench:dispatch")
    journey_id = await do_install_journey(db, actor, text, source)
    await do_set_journey_status(db, actor, JOURNEY_KEY, "paused")
    definition = parse_journey(text, source)
    enrolled_at = now - ENROLLED_AGO
    for chunk in range(0, steps, INSERT_CHUNK):
        rows: dict[type[Base], list[dict[str, Any]]] = {
            Patient: [],
            Appointment: [],
            Enrollment: [],
            StepRun: [],
        }
        for i in range(chunk, min(steps, chunk + INSERT_CHUNK)):
            new = NewPatient(
                name=f"{first_name(i)} Example",
                phone=patient_phone(i),
                email=f"pat{i:05d}@example.org",
                time_zone=zone,
                verified=True,
            )
            patient = build_patient(ring, new, "US")
            patient.created_at = patient.updated_at = enrolled_at
            start = now + APPOINTMENT_IN + timedelta(minutes=i % 60)
            appointment = Appointment(
                id=new_id(),
                patient_id=patient.id,
                source="cohort",
                external_id=f"bench-{i:06d}",
                start_at=start,
                updated_at=enrolled_at,
            )
            appointment.seal(ring, "location", LOCATION)  # sealed, as do_enroll stores it
            enrollment = Enrollment(
                id=new_id(),
                journey_id=journey_id,
                patient_id=patient.id,
                appointment_id=appointment.id,
                dedupe_key=f"{patient.id}:appointment:{appointment.id}",
                anchor_at=start,
                created_at=enrolled_at,
            )
            # The private planner do_enroll itself uses: the rows are the hub's, not a copy.
            runs = _plan_runs(definition, enrollment, enrolled_at, zone)
            for run in runs:
                run.updated_at = enrolled_at
            for obj in (patient, appointment, enrollment, *runs):
                rows[type(obj)].append(_row(obj))
        async with db.transaction() as session:
            for model, values in rows.items():
                await session.execute(insert(model), values)
    # Enrolled ENROLLED_AGO: autovacuum would have analyzed these tables long since. Without
    # statistics the planner takes 20,000 rows for one and the claim query crawls.
    async with db.engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        tables = ", ".join(m.__tablename__ for m in (Patient, Appointment, Enrollment, StepRun))
        await autocommit.exec_driver_sql(f"VACUUM ANALYZE {tables}")


async def status_counts(db: Database) -> dict[str, dict[str, int]]:
    from hub.enums import Direction
    from hub.inbox.models import Message
    from hub.journeys.models import StepRun

    async with db.reader() as session:
        runs = await session.execute(
            select(StepRun.status, func.count())
            .where(StepRun.step_id == STEP_ID)
            .group_by(StepRun.status)
        )
        messages = await session.execute(
            select(Message.status, func.count())
            .where(Message.direction == Direction.OUTBOUND)
            .group_by(Message.status)
        )
        return {
            "step_runs": {str(s.value): int(n) for s, n in runs.all()},
            "messages": {str(s.value): int(n) for s, n in messages.all()},
        }


def worker_has_processes_option(env: dict[str, str]) -> bool:
    shown = subprocess.run(
        hub_command("worker", "--help"), cwd=ROOT, env=env, capture_output=True, text=True
    )
    return "--processes" in shown.stdout


def start_hub(
    env: dict[str, str], log_dir: Path, processes: int, fallback: bool
) -> tuple[str, list[Process]]:
    """`hub worker --processes N`; before that option existed, N `hub worker`s and the
    `hub serve` whose tick claimed due runs then."""
    if not fallback and worker_has_processes_option(env):
        argv = hub_command("worker", "--processes", str(processes))
        return "hub worker --processes", [Process("hub-worker", argv, env, log_dir)]
    workers = [
        Process(f"hub-worker-{n}", hub_command("worker"), env, log_dir) for n in range(processes)
    ]
    return "hub worker x N + hub serve", [
        *workers,
        Process("hub-serve", hub_command("serve"), env, log_dir),
    ]


def rq_busy(redis_url: str) -> int:
    """Jobs queued, running or scheduled on the hub's queues, the periodic tick left out (it
    comes back every second whatever the load)."""
    from redis import Redis
    from rq import Queue
    from rq.job import Job

    from worker.effects import QUEUE_NAMES

    connection = Redis.from_url(redis_url)
    try:
        busy = 0
        for name in QUEUE_NAMES.values():
            queue = Queue(name, connection=connection)
            ids = queue.get_job_ids() + queue.started_job_registry.get_job_ids()
            jobs = Job.fetch_many(ids, connection=connection)
            busy += sum(1 for job in jobs if job and not (job.func_name or "").endswith(".tick"))
            busy += queue.scheduled_job_registry.count
        return busy
    finally:
        connection.close()


async def fake_stats(http: aiohttp.ClientSession, fake_url: str) -> dict[str, int]:
    async with http.get(f"{fake_url}/_fake/stats") as response:
        data: dict[str, int] = await response.json()
        return data


async def watch(fake_url: str, steps: int, procs: list[Process], limit_s: float) -> dict[str, Any]:
    """Poll the fake's counters until ``steps`` messages arrived (or progress stops)."""
    started = last_change = time.perf_counter()
    first: float | None = None
    last_count, reported = 0, 0.0
    async with aiohttp.ClientSession() as http:
        while True:
            current = await fake_stats(http, fake_url)
            now, count = time.perf_counter(), current["messages"]
            if count and first is None:
                first = now - started
            if count != last_count:
                last_count, last_change = count, now
            if now - reported >= 10:
                say(f"{count}/{steps} messages after {now - started:.0f} s")
                reported = now
            if count >= steps:
                return {
                    "complete": True,
                    "seconds": now - started,
                    "first_s": first,
                    "stats": current,
                }
            dead = [p.name for p in procs if not p.alive()]
            if dead or now - last_change > STALL_TIMEOUT_S or now - started > limit_s:
                why = f"{dead} exited" if dead else f"no progress for {now - last_change:.0f} s"
                say(f"stopped waiting: {why}")
                return {
                    "complete": False,
                    "seconds": now - started,
                    "first_s": first,
                    "stats": current,
                }
            await asyncio.sleep(0.05)


async def settle(fake_url: str, redis_url: str) -> dict[str, int]:
    """Once the hub has no job left and the count holds still, read it: a late duplicate
    would show here."""
    deadline = time.monotonic() + SETTLE_LIMIT_S
    async with aiohttp.ClientSession() as http:
        previous = await fake_stats(http, fake_url)
        while True:
            await asyncio.sleep(SETTLE_S)
            current = await fake_stats(http, fake_url)
            if (current == previous and not rq_busy(redis_url)) or time.monotonic() > deadline:
                return current
            previous = current


async def check_messages(fake_url: str, steps: int) -> dict[str, int]:
    """Every message, read back through the fake's list API with the twilio SDK: one per
    patient, each body addressed to its own patient."""
    from twilio.http.async_http_client import AsyncTwilioHttpClient
    from twilio.rest import Client

    expected = {patient_phone(i): first_name(i) for i in range(steps)}
    async with AsyncTwilioHttpClient() as http:
        client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=http)
        client.api.base_url = fake_url
        listed = await client.messages.list_async(page_size=1000)
    seen: dict[str, int] = {}
    wrong_body = 0
    for message in listed:
        seen[message.to] = seen.get(message.to, 0) + 1
        name = expected.get(message.to)
        wrong_body += name is None or f"Hi {name}," not in (message.body or "")
    return {
        "listed": len(listed),
        "missing": sum(1 for to in expected if to not in seen),
        "duplicates": sum(n - 1 for n in seen.values()),
        "unexpected_recipients": sum(1 for to in seen if to not in expected),
        "wrong_body": wrong_body,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from hub.journeys.actions import do_set_journey_status

    redis_url = bench_redis_url()
    warn_if_busy("dispatch")
    info = await run_info(redis_url=redis_url)
    log_dir = Path(tempfile.mkdtemp(prefix="hub-bench-dispatch-"))
    say(f"baseline: {args.noop_jobs} no-op jobs on {args.processes} RQ worker processes")
    noop = measure_noop(
        jobs=args.noop_jobs, processes=args.processes, redis_url=redis_url, log_dir=log_dir
    )
    say(f"baseline: {noop['jobs_per_s']} jobs/s")
    db_url = await fresh_database(NAME)
    flush_redis(redis_url)
    ring = KeyRing.generate("bench1")
    now = datetime.now(UTC)
    zone = pick_zone(now)
    db = Database.connect(db_url)
    procs: list[Process] = []
    try:
        say(f"seeding {args.steps} patients with a due {STEP_ID} step (time zone {zone})")
        clock = time.perf_counter()
        await seed(db, ring, args.steps, now, zone)
        seed_s = time.perf_counter() - clock
        fake_argv = [sys.executable, "-m", "fakes.twilio", "--port", "0", "--no-callbacks"]
        fake_argv += ["--latency-ms", f"{args.latency_ms:g}"]
        credentials = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN}
        procs.append(Process("fake-twilio", fake_argv, clean_env(**credentials), log_dir))
        fake_url = procs[0].first_line()
        port = free_port()
        env = clean_env(
            HUB_DATABASE_URL=user_url(db_url),
            HUB_REDIS_URL=redis_url,
            HUB_KEYS=ring.to_spec(),
            HUB_PUBLIC_URL=f"http://127.0.0.1:{port}",
            HUB_PORT=str(port),
            HUB_VAR_DIR=str(log_dir / "var"),
            HUB_CLINIC_NAME="Example Clinic",
            TWILIO_API_BASE=fake_url,
            TWILIO_FROM_NUMBER=CLINIC_NUMBER,
            **credentials,
        )
        mode, hub_procs = start_hub(env, log_dir, args.processes, args.fallback)
        procs += hub_procs
        say(f"starting {mode} (logs in {log_dir})")
        health = f"http://127.0.0.1:{port}/healthz" if len(hub_procs) > args.processes else None
        wait_for_workers(redis_url, args.processes, hub_procs, health_url=health)
        # The runs were due all along; resuming the journey makes them claimable at once.
        await do_set_journey_status(db, Actor.system("bench:dispatch"), JOURNEY_KEY, "active")
        load = [load_average()]
        watched = await watch(fake_url, args.steps, procs, args.timeout)
        load.append(load_average())
        final = await settle(fake_url, redis_url) if watched["complete"] else watched["stats"]
        checked = await check_messages(fake_url, args.steps)
        counts = await status_counts(db)
    finally:
        stop_all(procs)
        await db.dispose()

    seconds = watched["seconds"]
    rate = (args.steps if watched["complete"] else final["messages"]) / seconds
    exact = final["messages"] == args.steps and not any(checked[k] for k in CHECKS)
    ratio = rate / noop["jobs_per_s"]
    return {
        "value": round(rate, 1),
        "unit": "messages/s",
        "baseline": noop["jobs_per_s"],
        "baseline_unit": "no-op RQ jobs/s",
        "ratio": round(ratio, 2),
        "target": f">= {TARGET_RATIO:g}x baseline",
        "passed": bool(watched["complete"] and exact and ratio >= TARGET_RATIO),
        "details": {
            "steps": args.steps,
            "complete": watched["complete"],
            "exactly_once": exact,
            "seconds": round(seconds, 2),
            "first_message_s": None if watched["first_s"] is None else round(watched["first_s"], 2),
            "hub": mode,
            "processes": args.processes,
            "latency_ms": args.latency_ms,
            "fake": final,
            "check": checked,
            **counts,
            "load_average": {"start": load[0], "end": load[1]},
            "seed_s": round(seed_s, 1),
            "time_zone": zone,
            "noop": noop,
            "peak_rss_mb": {p.name: p.peak_rss_mb for p in procs},
            "logs": str(log_dir),
        },
        "run": info,
    }


STARTED = time.monotonic()
CHECKS = ("missing", "duplicates", "unexpected_recipients", "wrong_body")


def say(text: str) -> None:
    print(f"dispatch [{time.monotonic() - STARTED:5.0f} s] {text}", file=sys.stderr, flush=True)


def report(result: dict[str, Any]) -> None:
    d = result["details"]
    print_table(
        [
            ["figure", "baseline (same run)", "ratio", "target", "result"],
            [
                f"{result['value']:,.1f} messages/s",
                f"{result['baseline']:,.1f} no-op RQ jobs/s ({d['processes']} processes)",
                f"{result['ratio']:.2f}x",
                result["target"],
                "pass" if result["passed"] else "FAIL",
            ],
        ]
    )
    check = ", ".join(f"{k} {d['check'][k]}" for k in CHECKS)
    first = d["first_message_s"]
    done = "" if d["complete"] else "INCOMPLETE (the hub stopped making progress): "
    print(
        f"{done}{d['steps']:,} steps, {d['seconds']:.1f} s with {d['hub']} ({d['processes']} "
        f"processes), fake Twilio at {d['latency_ms']:g} ms per call; "
        + ("no message at all" if first is None else f"first message after {first:.1f} s")
        + f". At the fake: {d['fake']['messages']:,} messages, "
        f"{d['fake']['distinct_to']:,} recipients, {d['fake']['distinct_body']:,} bodies; "
        f"{check}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch", description=__doc__)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--processes", type=int, default=DEFAULT_PROCESSES)
    parser.add_argument("--latency-ms", type=float, default=DEFAULT_LATENCY_MS)
    parser.add_argument("--noop-jobs", type=int, default=DEFAULT_NOOP_JOBS)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds, whole run")
    parser.add_argument(
        "--fallback", action="store_true", help="N `hub worker`s + `hub serve` (the old layout)"
    )
    args = parser.parse_args()
    if not 0 < args.steps <= len(AREA_CODES) * 10_000:
        parser.error(f"--steps: 1 to {len(AREA_CODES) * 10_000}")
    with exclusive(NAME):
        result = asyncio.run(run(args))
    path = write_result(NAME, {k: v for k, v in result.items() if k != "run"}, result["run"])
    report(result)
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
