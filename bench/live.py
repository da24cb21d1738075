"""Live latency: from the webhook's answer to the staff screen's ``message:new``, while the hub
takes 200 inbound texts a second.

The clinic is bench/ingest.py's (teams, routing rules, known patients, one `hub serve` on
PostgreSQL, a staff member signed in on socket.io /staff). Background load: the load generator
(bench/loadgen.py, its own process) posting signed webhooks open loop at 200 per second over up
to 32 connections. Probes: this process sends one signed webhook at a time from a probe
patient's number (each probe patient has an open conversation, opened before the clock
started), and on the same monotonic clock notes when the answer arrived and when the staff
socket got ``message:new`` for that conversation. Latency = socket event - webhook answer;
p50/p99 over the probes. Afterwards every MessageSid sent (background and probes) must be stored
exactly once.

Beside it, measured in the same run before the load: the transport alone, a ``message:new``
published through socket.io's Redis manager (as `hub worker` does) to the same socket. Target:
p99 under 100 ms.

    python -m bench.live                 # 500 probes at 10 per second (about a minute of load)
    python -m bench.live --probes 100    # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench import loadgen
from bench.common import (
    ROOT,
    Process,
    bench_redis_url,
    clean_env,
    exclusive,
    flush_redis,
    free_port,
    fresh_database,
    load_average,
    print_table,
    run_info,
    stop_all,
    warn_if_busy,
    write_result,
)
from bench.ingest import (
    STAFF_EMAIL,
    STAFF_PASSWORD,
    StaffSocket,
    exactly_once,
    hub_env,
    seed_clinic,
    sent_sids,
    start_hub_serve,
    stored_counts,
)
from hub.crypto import KeyRing
from hub.db import Database

NAME = "live"
DEFAULT_PROBES = 500
DEFAULT_PROBE_RATE = 10.0
"""Probes per second: one at a time, far below the background rate they measure under."""
DEFAULT_RATE = 200.0
CONNECTIONS = 32
PROBE_NUMBERS = 50
"""Probe patients; each probe reuses one, so its conversation is open and its id known."""
PROBE_SID_PREFIX = 7
BACKGROUND_SID_PREFIX = 2
WARMUP_S = 3.0
"""Background load before the first probe."""
PROBE_SLACK = 4.0
"""Probing may take this many times its planned time (answers slower than the pacing) before
the run stops and fails; the background load runs that long at most."""
EVENT_TIMEOUT_S = 10.0
"""A probe whose message:new has not come by then counts as lost (and fails the run)."""
TRANSPORT_SAMPLES = 200
TARGET_P99_MS = 100.0


def say(text: str) -> None:
    print(f"{NAME} [{time.monotonic() - STARTED:5.0f} s] {text}", file=sys.stderr, flush=True)


STARTED = time.monotonic()


def ms(values: list[float], q: float) -> float | None:
    found = loadgen.percentile(values, q)
    return None if found is None else round(found * 1000, 2)


class Prober:
    """Sends probes one at a time and pairs each answer with its conversation's message:new."""

    def __init__(self, socket: StaffSocket, hub_url: str) -> None:
        self.socket = socket
        self.hub_url = hub_url
        self.waiting: dict[str, asyncio.Future[float]] = {}
        socket.on_message = self._seen
        host, port = hub_url.removeprefix("http://").split(":")
        self.conn = loadgen.Connection(host, int(port))
        self.url = f"{hub_url}{loadgen.PATH}"
        self.sent = 0

    def _seen(self, at: float, data: dict[str, Any]) -> None:
        future = self.waiting.pop(str(data.get("conversation_id")), None)
        if future is not None and not future.done():
            future.set_result(at)

    def request(self, number: int, body: str) -> bytes:
        sid = loadgen.message_sid(PROBE_SID_PREFIX, self.sent)
        self.sent += 1
        host = self.hub_url.removeprefix("http://")
        return loadgen.build_request(
            host, self.url, loadgen.AUTH_TOKEN, sid, loadgen.phone(number), body
        )

    async def probe(self, raw: bytes, conversation_id: str | None) -> tuple[float, float | None]:
        """(answer time, event time or None if lost), on this process's perf_counter."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if conversation_id is not None:
            self.waiting[conversation_id] = future
        status, _ = await self.conn.request(raw)
        answered = time.perf_counter()
        if status != 200:
            raise RuntimeError(f"probe answered {status}")
        if conversation_id is None:
            return answered, None
        try:
            return answered, await asyncio.wait_for(future, EVENT_TIMEOUT_S)
        except TimeoutError:
            self.waiting.pop(conversation_id, None)
            return answered, None


async def probe_conversations(db: Database, ring: KeyRing, numbers: list[int]) -> dict[int, str]:
    """Each probe number's conversation (one each: opened by the setup text)."""
    from hub.inbox.models import Conversation, Patient

    found = {}
    async with db.reader() as session:
        for number in numbers:
            index = ring.blind_index("phone", loadgen.phone(number))
            rows = (
                await session.execute(
                    select(Conversation.id)
                    .join(Patient, Patient.id == Conversation.patient_id)
                    .where(Patient.phone_bidx == index)
                )
            ).all()
            if len(rows) != 1:
                raise RuntimeError(f"probe number {number}: {len(rows)} conversations, not 1")
            found[number] = str(rows[0][0])
    return found


async def transport_floor(
    socket: StaffSocket, redis_url: str, ring: KeyRing, staff_room: str
) -> list[float]:
    """message:new through socket.io's Redis manager straight to the socket: what any event
    costs on this machine before the hub does anything."""
    from worker.effects import RedisNotifier

    notifier = RedisNotifier(redis_url, ring)
    seen: dict[str, asyncio.Future[float]] = {}
    previous = socket.on_message

    def on_message(at: float, data: dict[str, Any]) -> None:
        future = seen.pop(str(data.get("conversation_id")), None)
        if future is not None and not future.done():
            future.set_result(at)

    socket.on_message = on_message
    samples = []
    try:
        for _ in range(TRANSPORT_SAMPLES):
            marker = str(uuid.uuid4())
            future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            seen[marker] = future
            sent = time.perf_counter()
            payload = {"message_id": marker, "conversation_id": marker, "team_id": None}
            await notifier.emit("message:new", payload, staff_room)
            samples.append(await asyncio.wait_for(future, EVENT_TIMEOUT_S) - sent)
            await asyncio.sleep(0.005)
    finally:
        socket.on_message = previous
        await notifier.aclose()
    return samples


async def staff_id_of(db: Database, email: str) -> str:
    from hub.inbox.models import StaffUser

    async with db.reader() as session:
        found = await session.scalar(select(StaffUser.id).where(StaffUser.email == email))
        assert found is not None
        return str(found)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    redis_url = bench_redis_url()
    warn_if_busy(NAME)
    info = await run_info(redis_url=redis_url)
    log_dir = Path(tempfile.mkdtemp(prefix=f"hub-bench-{NAME}-"))
    say(f"logs in {log_dir}")
    db_url = await fresh_database(NAME)
    flush_redis(redis_url)
    ring = KeyRing.generate("bench1")
    db = Database.connect(db_url)
    procs: list[Process] = []
    socket = StaffSocket()
    first_probe_number = args.known + loadgen.DEFAULT_NEW
    numbers = list(range(first_probe_number, first_probe_number + PROBE_NUMBERS))
    try:
        say(f"seeding the clinic: {args.known} known patients, teams, rules, staff")
        await seed_clinic(db, ring, args.known)
        port = free_port()
        hub_url = f"http://127.0.0.1:{port}"
        procs.append(
            start_hub_serve(hub_env(db_url, redis_url, ring, port, log_dir / "var"), log_dir, port)
        )
        await socket.connect(hub_url, STAFF_EMAIL, STAFF_PASSWORD)
        staff_room = f"staff:{await staff_id_of(db, STAFF_EMAIL)}"
        say("transport floor: message:new through Redis to the socket, no load")
        floor = await transport_floor(socket, redis_url, ring, staff_room)

        prober = Prober(socket, hub_url)
        for number in numbers:  # opens each probe patient's conversation
            await prober.probe(prober.request(number, "Hello, this is a new number"), None)
        conversations = await probe_conversations(db, ring, numbers)
        probe_s = args.probes / args.probe_rate
        limit_s = probe_s * PROBE_SLACK + 20
        seconds = WARMUP_S + limit_s + 10  # stopped as soon as the probes are done
        out = log_dir / "loadgen.json"
        background = Process(
            "loadgen",
            [
                sys.executable, "-m", "bench.loadgen", "run", "--target", hub_url,
                "--rate", f"{args.rate:g}", "--connections", str(CONNECTIONS),
                "--seconds", f"{seconds:g}", "--warmup", "0", "--known", str(args.known),
                "--sid-prefix", str(BACKGROUND_SID_PREFIX), "--out", str(out),
            ],
            clean_env(),
            log_dir,
        )  # fmt: skip
        procs.append(background)
        say(background.first_line(timeout=120))
        load_start = load_average()
        await asyncio.sleep(WARMUP_S)
        say(f"{args.probes} probes at {args.probe_rate:g}/s under {args.rate:g}/s background")
        latencies: list[float] = []
        lost = early = 0
        began = time.perf_counter()
        done = 0
        for k in range(args.probes):
            if not background.alive() or time.perf_counter() - began > limit_s:
                say(f"stopped after {k} probes: the hub is too far behind the pacing")
                break
            due = began + k / args.probe_rate
            if (wait := due - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            number = numbers[k % len(numbers)]
            raw = prober.request(number, f"Probe {k}: is my appointment still on?")
            answered, event = await prober.probe(raw, conversations[number])
            done += 1
            if event is None:
                lost += 1
                continue
            early += event < answered
            latencies.append(event - answered)
        probing_s = time.perf_counter() - began
        load_end = load_average()
        background.stop()  # SIGTERM: it stops sending and writes its figures
        if not out.exists():
            raise RuntimeError(f"the load generator wrote no figures:\n{background.tail()}")
        bg = json.loads(out.read_text())
        await socket.close()
        probe_sids = {loadgen.message_sid(PROBE_SID_PREFIX, i) for i in range(prober.sent)}
        counts = await stored_counts(db, sent_sids(bg) | probe_sids)
        prober.conn.close()
    finally:
        stop_all(procs)
        await db.dispose()

    p50, p99 = ms(latencies, 50), ms(latencies, 99)
    once = exactly_once(counts)
    bg_rate = bg["measured"]["requests_per_s"]
    steady = bg["error_count"] == 0 and bg_rate >= 0.95 * args.rate
    passed = bool(
        latencies
        and lost == 0
        and once
        and steady
        and p99 is not None
        and p99 < TARGET_P99_MS
        and done == len(latencies) == args.probes
    )
    figure = f"p50 {p50} ms, p99 {p99} ms over {len(latencies)} probes"
    if done < args.probes:
        figure += f" (only {done} of {args.probes} sent in time)"
    if lost:
        figure += f" ({lost} message:new never came)"
    figure += f"; background {bg_rate:,.0f} of {args.rate:g} texts/s"
    if bg["error_count"]:
        figure += f" ({bg['error_count']} errors)"
    if not once:
        figure += " (NOT stored exactly once)"
    description = (
        "Time from the webhook's answer to the staff socket.io client's `message:new` for "
        f"that conversation, measured by one process on one clock for {args.probes} probe "
        f"texts (one at a time, {args.probe_rate:g}/s) while a load generator process posts "
        f"signed inbound-SMS webhooks open loop at {args.rate:g}/s into the same "
        "`hub serve` (PostgreSQL, routing rules, known and new patients); every MessageSid is "
        "then checked stored exactly once. Baseline: the transport alone, `message:new` "
        "published through socket.io's Redis manager (as `hub worker` does) to the same "
        "socket, before the load."
    )
    return {
        "passed": passed,
        "description": description,
        "rows": [
            {
                "label": f"live latency at {args.rate:g} inbound texts/s",
                "figure": figure,
                "baseline": (
                    f"p50 {ms(floor, 50)} ms, p99 {ms(floor, 99)} ms (Redis -> socket.io only)"
                ),
                "ratio": "",
                "target": f"p99 < {TARGET_P99_MS:g} ms",
                "passed": passed,
            }
        ],
        "details": {
            "probes": args.probes,
            "probes_sent": done,
            "probe_rate": args.probe_rate,
            "probing_s": round(probing_s, 2),
            "latency_ms": {
                "p50": p50,
                "p90": ms(latencies, 90),
                "p99": p99,
                "max": round(max(latencies) * 1000, 2) if latencies else None,
                "event_before_answer": early,
            },
            "lost": lost,
            "transport_floor_ms": {"p50": ms(floor, 50), "p99": ms(floor, 99)},
            "background": bg,
            "stored": counts,
            "exactly_once": once,
            "load_average": {"start": load_start, "end": load_end},
            "peak_rss_mb": {p.name: p.peak_rss_mb for p in procs},
            "logs": str(log_dir),
        },
        "run": info,
    }


def report(result: dict[str, Any]) -> None:
    row = result["rows"][0]
    print_table(
        [
            ["figure", "baseline (same run)", "target", "result"],
            [row["figure"], row["baseline"], row["target"], "pass" if row["passed"] else "FAIL"],
        ]
    )
    d = result["details"]
    bg = d["background"]["measured"]
    print(
        f"background: {bg['requests']:,} texts, answered p50 {bg['p50_ms']} ms, p99 "
        f"{bg['p99_ms']} ms; stored exactly once: {d['exactly_once']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--probes", type=int, default=DEFAULT_PROBES)
    parser.add_argument("--probe-rate", type=float, default=DEFAULT_PROBE_RATE)
    parser.add_argument(
        "--rate", type=float, default=DEFAULT_RATE, help="background texts per second"
    )
    parser.add_argument("--known", type=int, default=loadgen.DEFAULT_KNOWN)
    args = parser.parse_args()
    if args.probes < 1 or args.probe_rate <= 0:
        parser.error("--probes and --probe-rate must be positive")
    with exclusive(NAME):
        result = asyncio.run(run(args))
    path = write_result(NAME, {k: v for k, v in result.items() if k != "run"}, result["run"])
    report(result)
    print(f"written to {path.relative_to(ROOT)}")
    if not result["passed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
