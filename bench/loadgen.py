"""Load generator for the webhook benchmarks (bench/ingest.py, bench/live.py), a process of its
own so its CPU is not the server's: signed Twilio inbound-SMS webhooks, built and signed before
the clock starts, sent over keep-alive HTTP/1.1 connections.

Each request is a form post shaped like Twilio's (hub/channels/twilio_sms/fixtures), signed
with X-Twilio-Signature exactly as Twilio (and tests/twilio_helpers.py) does, with its own
MessageSid. Senders: mostly patients the benchmark seeded (``phone(i)`` for ``i < known``), the
rest numbers the hub has not seen (their first text creates a patient). Each pool is walked in a
shuffled cycle, so one number never has two requests in flight. Some bodies are keywords: a
routing keyword (refill), journey replies (C, 1), HELP, STOP/START, an urgent phrase.

Closed loop (``--connections N``): N connections, each sends its next request when the answer
to the last one is in: the server's throughput at that concurrency. Open loop (``--rate R``):
requests are due at R per second whatever the answers; latency is counted from when a request
was due, so a server that falls behind shows it (no coordinated omission).

The HTTP client is a few lines over asyncio streams, not aiohttp's: with requests pre-built it
costs a fraction of a ClientSession per request, so on a small machine the figure is the
server's, not the client's. Any answer but 200, or a broken connection, is an error.

    python -m bench.loadgen run --target URL --public-url URL --auth-token T --out FILE ...
    python -m bench.loadgen baseline --port 0     # the bare aiohttp baseline server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

PATH = "/webhooks/twilio/sms"
CLINIC_NUMBER = "+15550100000"
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "fedcba9876543210" * 2
FIRST_AREA_CODE = 201
"""Numbers are +1 AAA 555-01xx (the fictional range), 100 per area code from this one up."""
MAX_NUMBERS = (999 - FIRST_AREA_CODE + 1) * 100
DEFAULT_KNOWN = 2_000
DEFAULT_NEW = 20_000
DEFAULT_KNOWN_SHARE = 0.8
"""Share of requests sent from seeded patients' numbers; the rest come from new numbers."""
DEFAULT_MAX_RATE = 4_000.0
"""Requests built per second of run: a closed loop that outruns this ends early (and says so)."""
READ_LIMIT = 1 << 20
CYCLE_REQUESTS = 20_000
"""Requests built for --cycle (a server that stores nothing sees them again and again)."""

ORDINARY_BODIES = (
    "Hi, can I move my appointment to Friday?",
    "Running about 10 minutes late, sorry",
    "Thank you!",
    "Is the clinic open on Saturday?",
    "Do I need to fast before my blood test tomorrow?",
    "Can someone call me back about my bill?",
    "What time is my appointment next week?",
    "Ok see you then",
    "My prescription ran out, who should I talk to?",
    "Can I bring my daughter to the same appointment?",
)
KEYWORD_BODIES = (
    (0.04, "Refill please for my lisinopril"),  # the routing rule's keyword
    (0.02, "C"),  # journey confirmation (no enrollment here: an ordinary message)
    (0.01, "1"),
    (0.005, "HELP"),  # queues the HELP reply
    (0.003, "STOP"),  # revokes SMS consent
    (0.003, "START"),
    (0.002, "I have chest pain since this morning"),  # urgent triage: the emergency reply
)


def phone(i: int) -> str:
    """The ``i``-th synthetic patient number, +1 AAA 555 01xx."""
    if not 0 <= i < MAX_NUMBERS:
        raise ValueError(f"phone index {i} out of range 0..{MAX_NUMBERS - 1}")
    return f"+1{FIRST_AREA_CODE + i // 100}55501{i % 100:02d}"


def message_sid(prefix: int, i: int) -> str:
    """Distinct per (prefix, i): MessageSid is SM + 32 hex digits."""
    return f"SM{prefix:08x}{i:024x}"


def sign(url: str, params: dict[str, str], token: str) -> str:
    from twilio.request_validator import RequestValidator

    return str(RequestValidator(token).compute_signature(url, params))


def pick_body(rng: random.Random) -> str:
    roll = rng.random()
    for share, body in KEYWORD_BODIES:
        if roll < share:
            return body
        roll -= share
    return rng.choice(ORDINARY_BODIES)


def _cycle(numbers: list[int], rng: random.Random) -> Iterator[int]:
    """Every number once per pass, in a fresh shuffled order each pass."""
    while True:
        order = list(numbers)
        rng.shuffle(order)
        yield from order


@dataclass(frozen=True)
class Plan:
    """Who texts what: the same plan gives the same requests in every process."""

    known: int = DEFAULT_KNOWN
    new: int = DEFAULT_NEW
    known_share: float = DEFAULT_KNOWN_SHARE
    first: int = 0
    """Index of the first number of the pools (another plan can take numbers above them)."""
    seed: int = 9

    def senders(self) -> Iterator[tuple[int, str]]:
        rng = random.Random(self.seed)
        known = _cycle(list(range(self.first, self.first + self.known)), rng)
        new_range = list(range(self.first + self.known, self.first + self.known + self.new))
        new = _cycle(new_range, rng) if new_range else known
        while True:
            use_known = self.known and rng.random() < self.known_share
            yield (next(known) if use_known else next(new)), pick_body(rng)


def build_request(
    host: str, url: str, token: str, sid: str, sender: str, body: str, to: str = CLINIC_NUMBER
) -> bytes:
    """One signed webhook as the bytes Twilio's proxy would send."""
    params = {
        "ToCountry": "US",
        "ToState": "NJ",
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "ToCity": "",
        "FromZip": "",
        "SmsSid": sid,
        "FromState": "NJ",
        "SmsStatus": "received",
        "FromCity": "",
        "Body": body,
        "FromCountry": "US",
        "To": to,
        "ToZip": "",
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": sender,
        "ApiVersion": "2010-04-01",
    }
    form = urlencode(params).encode()
    head = (
        f"POST {urlsplit(url).path} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "User-Agent: TwilioProxy/1.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(form)}\r\n"
        f"X-Twilio-Signature: {sign(url, params, token)}\r\n"
        "Accept: */*\r\n"
        "\r\n"
    )
    return head.encode() + form


def build_requests(
    target: str, public_url: str, token: str, plan: Plan, count: int, sid_prefix: int
) -> list[bytes]:
    host = urlsplit(target).netloc
    url = public_url.rstrip("/") + PATH
    senders = plan.senders()
    built = []
    for i in range(count):
        number, body = next(senders)
        built.append(
            build_request(host, url, token, message_sid(sid_prefix, i), phone(number), body)
        )
    return built


# -- the client -------------------------------------------------------------------------------


class HttpError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection that sends a request and reads its whole answer."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, limit=READ_LIMIT
            )
        assert self._reader is not None
        try:
            self._writer.write(raw)
            head = await self._reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, close = 0, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    raise HttpError("chunked answers are not expected from a webhook")
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            body = await self._reader.readexactly(length) if length else b""
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


@dataclass
class Outcome:
    """Per request: when it was due (open loop) or sent, when it was sent, when answered."""

    due: list[float] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    unsent: int = 0
    """Open loop, stopped early: requests that were due but not yet sent."""

    def add(self, due: float, sent: float, done: float, status: int) -> None:
        self.due.append(due)
        self.sent.append(sent)
        self.done.append(done)
        self.status.append(status)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def _send(conn: Connection, raw: bytes, due: float, outcome: Outcome) -> None:
    sent = time.perf_counter()
    try:
        status, _body = await conn.request(raw)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, HttpError) as exc:
        outcome.error(type(exc).__name__)
        status = 0
    outcome.add(due, sent, time.perf_counter(), status)
    if status != 200:
        outcome.error(f"status {status}")


async def closed_loop(
    host: str,
    port: int,
    requests: list[bytes],
    connections: int,
    until: float,
    stop: asyncio.Event,
    *,
    cycle: bool = False,
) -> Outcome:
    outcome = Outcome()
    feed = itertools.cycle(requests) if cycle else iter(requests)

    async def one() -> None:
        conn = Connection(host, port)
        try:
            while not stop.is_set() and time.perf_counter() < until:
                raw = next(feed, None)
                if raw is None:
                    outcome.error("ran out of pre-built requests")
                    return
                await _send(conn, raw, time.perf_counter(), outcome)
        finally:
            conn.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return outcome


async def open_loop(
    host: str,
    port: int,
    requests: list[bytes],
    connections: int,
    rate: float,
    until: float,
    stop: asyncio.Event,
) -> Outcome:
    """Request i is due at start + i / rate; a free connection takes the oldest due one."""
    outcome = Outcome()
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

    async def pace() -> None:
        start = time.perf_counter()
        for i, raw in enumerate(requests):
            due = start + i / rate
            if due >= until or stop.is_set():
                break
            if (wait := due - time.perf_counter()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                if stop.is_set():
                    break
            queue.put_nowait((due, raw))
        else:
            outcome.error("ran out of pre-built requests")
        for _ in range(connections):
            queue.put_nowait(None)

    async def one() -> None:
        conn = Connection(host, port)
        try:
            while (item := await queue.get()) is not None:
                if stop.is_set():  # a server that fell behind is not made to catch up
                    outcome.unsent += 1
                    break
                await _send(conn, item[1], item[0], outcome)
        finally:
            conn.close()

    await asyncio.gather(pace(), *(one() for _ in range(connections)))
    outcome.unsent += sum(1 for item in queue._queue if item is not None)  # type: ignore[attr-defined]
    return outcome


def summarize(outcome: Outcome, start: float, end: float) -> dict[str, Any]:
    """Figures over the requests sent inside [start, end); latency from due to answered."""
    inside = [i for i, due in enumerate(outcome.due) if start <= due < end]
    latencies = [(outcome.done[i] - outcome.due[i]) * 1000 for i in inside]
    service = [(outcome.done[i] - outcome.sent[i]) * 1000 for i in inside]
    last = max((outcome.done[i] for i in inside), default=start)
    # A closed loop's window ends at ``end``; answers still coming after it belong to it.
    seconds = max(end, last) - start
    ok = sum(1 for i in inside if outcome.status[i] == 200)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return {
        "requests": len(inside),
        "ok": ok,
        "seconds": round(seconds, 3),
        "requests_per_s": round(len(inside) / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": ms(percentile(latencies, 50)),
        "p90_ms": ms(percentile(latencies, 90)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(max(latencies, default=None)),
        "service_p50_ms": ms(percentile(service, 50)),
        "service_p99_ms": ms(percentile(service, 99)),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = Plan(
        known=args.known, new=args.new, known_share=args.known_share, first=args.first_number
    )
    duration = args.warmup + args.seconds
    rate_for_budget = args.rate if args.rate else args.max_rate
    count = args.requests or int(duration * rate_for_budget * 1.05) + args.connections
    if args.cycle:
        count = min(count, CYCLE_REQUESTS)
    built_at = time.perf_counter()
    requests = build_requests(
        args.target, args.public_url, args.auth_token, plan, count, args.sid_prefix
    )
    build_s = time.perf_counter() - built_at
    parts = urlsplit(args.target)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    start = time.perf_counter()
    print(f"loadgen started: {count} requests built in {build_s:.1f} s", flush=True)
    until = start + duration
    if args.rate:
        outcome = await open_loop(host, port, requests, args.connections, args.rate, until, stop)
    else:
        outcome = await closed_loop(
            host, port, requests, args.connections, until, stop, cycle=args.cycle
        )
    ended = time.perf_counter()
    measured_from = start + args.warmup
    sent = len(outcome.status)
    return {
        "mode": f"open loop at {args.rate:g}/s" if args.rate else "closed loop",
        "cycled": bool(args.cycle and sent > count),
        "connections": args.connections,
        "warmup_s": args.warmup,
        "planned_s": args.seconds,
        "stopped_early": stop.is_set(),
        "built": count,
        "build_s": round(build_s, 2),
        "sent": sent,
        "sid_prefix": args.sid_prefix,
        "answered_200": sum(1 for s in outcome.status if s == 200),
        "errors": outcome.errors,
        "error_count": sum(1 for s in outcome.status if s != 200),
        "due_unsent": outcome.unsent,
        "measured": summarize(outcome, measured_from, min(until, ended)),
        "total_s": round(ended - start, 3),
    }


# -- the baseline server ----------------------------------------------------------------------


def baseline_app() -> Any:
    """A bare aiohttp app doing what the webhook must do at the least: read the form the same
    way the hub does (size cap, parse_qsl, one value per field) and answer empty TwiML."""
    from aiohttp import web
    from twilio.twiml.messaging_response import MessagingResponse

    async def handler(request: web.Request) -> web.Response:
        raw = await request.content.read(64 * 1024 + 1)
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
        params = dict(pairs)
        if "MessageSid" not in params or len(params) != len(pairs):
            return web.Response(status=400, text="bad form\n")
        return web.Response(text=str(MessagingResponse()), content_type="text/xml")

    app = web.Application()
    app.router.add_post(PATH, handler)
    return app


async def serve_baseline(host: str, port: int) -> None:
    from aiohttp import web

    runner = web.AppRunner(baseline_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None and server.sockets  # type: ignore[attr-defined]
    bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    print(f"http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="send signed webhooks and write figures to --out")
    go.add_argument("--target", required=True, help="base URL to connect to")
    go.add_argument("--public-url", help="base URL the signatures cover (default: --target)")
    go.add_argument("--auth-token", default=AUTH_TOKEN)
    go.add_argument("--connections", type=int, default=32)
    go.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second")
    go.add_argument("--seconds", type=float, default=20.0, help="measured time")
    go.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    go.add_argument("--requests", type=int, default=0, help="requests to build (default: enough)")
    go.add_argument("--max-rate", type=float, default=DEFAULT_MAX_RATE)
    go.add_argument("--known", type=int, default=DEFAULT_KNOWN)
    go.add_argument("--new", type=int, default=DEFAULT_NEW)
    go.add_argument("--known-share", type=float, default=DEFAULT_KNOWN_SHARE)
    go.add_argument("--first-number", type=int, default=0)
    go.add_argument("--sid-prefix", type=int, default=1, help="keeps MessageSids of runs apart")
    go.add_argument(
        "--cycle",
        action="store_true",
        help="closed loop: send the built requests again when all are sent (the baseline only: "
        "a server that stores them would take the repeats as duplicates)",
    )
    go.add_argument("--out", type=Path, required=True)
    base = sub.add_parser("baseline", help="serve the bare aiohttp baseline; print its URL")
    base.add_argument("--host", default="127.0.0.1")
    base.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.command == "baseline":
        asyncio.run(serve_baseline(args.host, args.port))
        return
    args.public_url = args.public_url or args.target
    if args.cycle and args.rate:
        parser.error("--cycle is for the closed loop only")
    if args.first_number + args.known + args.new > MAX_NUMBERS:
        parser.error(f"at most {MAX_NUMBERS} numbers")
    result = asyncio.run(run(args))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(0)


if __name__ == "__main__":
    main()
