"""A whole hub in real processes, with its own PostgreSQL and Redis, for fault injection.

`hub serve`, two `hub worker`s and the fake Twilio API (``python -m fakes.twilio``) run as
children in process groups of their own, against a PostgreSQL cluster (initdb into a temporary
directory, a free port, trust auth, fsync off) and a ``redis-server`` that belong to the harness
alone: they can be stopped and started again without touching the machine's shared servers.

The patient side is played from here: inbound texts are POSTed to the hub signed exactly as
Twilio signs them (and posted again, as Twilio does, until one answer is 200), and outbound
journey texts are counted where they land, at the fake Twilio API. :meth:`Hub.verify` checks
the end invariant every scenario shares: each inbound MessageSid stored once, each due outbound
message delivered once, nothing lost.

Sizes live in :data:`SIZES` (environment ``HUB_FAULTS_SCALE`` multiplies them) so a benchmark
can run the same scenarios larger.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import glob
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, insert, select

from bench.common import Process, clean_env, free_port, hub_command
from hub.audit import Actor
from hub.crypto import KeyRing
from hub.db import Base, Database, new_id
from hub.enums import Direction, MessageStatus
from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN, CLINIC_NUMBER, sign

# -- knobs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    inbound: int
    """Distinct inbound texts (MessageSids) per scenario."""
    outbound: int
    """Due journey texts per scenario."""


_SCALE = float(os.environ.get("HUB_FAULTS_SCALE") or 1)
SIZES = Sizes(inbound=int(150 * _SCALE), outbound=int(150 * _SCALE))
"""What CI runs (about 4 minutes for the whole suite on 2 loaded cores)."""
DEADLINE_S = 90.0 * max(1.0, _SCALE)
"""How long a scenario may take to reach its end state before it counts as lost."""
SETTLE_S = 2.0
"""After the counts are complete, how long they must hold still (a late duplicate shows)."""
RETRY_PAUSE_S = 0.2
"""Between a webhook's failed delivery and the next (Twilio waits longer; tests cannot)."""
ANSWER_LIMIT_S = 5.0
"""Longest a webhook may wait for an answer during an outage before it counts as a hang."""

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
REDIS_SERVER = "/usr/bin/redis-server"
JOURNEY_KEY = "faults_follow_up"
JOURNEY = f"""\
key: {JOURNEY_KEY}
name: Follow-up (fault tests)
purpose: care
anchor: enrollment
steps:
  - id: thanks
    offset: +0h
    template: visit_follow_up
    channels: [sms]
"""


def outbound_number(i: int) -> str:
    """Fictional 555-01xx numbers, 100 per area code (201 onwards)."""
    return f"+1{201 + i // 100}55501{i % 100:02d}"


def inbound_number(i: int) -> str:
    """Senders of inbound texts: 555-01xx in area codes 601 onwards, apart from recipients."""
    return f"+1{601 + i // 100}55501{i % 100:02d}"


def first_name(i: int) -> str:
    return f"Pat{i:04d}"


# -- servers of the harness's own -------------------------------------------------------------


def missing_binaries() -> str | None:
    """Why the harness cannot run here, or None."""
    if not glob.glob(PG_BIN_GLOB):
        return f"no PostgreSQL server binaries ({PG_BIN_GLOB})"
    if not Path(REDIS_SERVER).exists():
        return f"no {REDIS_SERVER}"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser (initdb refuses root)"
    return None


def _pg_bin() -> Path:
    def version(path: str) -> tuple[int, ...]:
        return tuple(int(p) for p in Path(path).parent.name.split(".") if p.isdigit())

    return Path(max(glob.glob(PG_BIN_GLOB), key=version))


def _wait(what: str, ready: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout}s")
        time.sleep(0.05)


class PostgresServer:
    """A throwaway cluster: stop and start it at will (same port, same data)."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        # Not under pytest's tmp_path: the postgres user must be able to reach it.
        self.root = Path(tempfile.mkdtemp(prefix="hub-faults-pg-"))
        self.data, self.sockets = self.root / "data", self.root / "sockets"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.sockets.mkdir()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-N",
                  "-E", "UTF8", "--locale=C")  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.sockets}'\nmax_connections = 300\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bin / tool), *args]
        if self._as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr[-2000:]}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """A redis-server of the harness's own, with no persistence: a restart loses every key,
    as a crashed Redis without AOF does."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.dir = log_dir / "redis"
        self.dir.mkdir()
        self.log_dir = log_dir
        self.process: Process | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def start(self) -> None:
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir)]  # fmt: skip
        self.process = Process("redis", argv, os.environ, self.log_dir)
        _wait("redis-server", self.ping)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


def kill_trees(processes: Iterable[Process]) -> None:
    """SIGKILL processes and every descendant at once: RQ runs each job in a work horse with
    a process group of its own, so a process group alone would miss the running job."""
    import psutil

    tree: list[psutil.Process] = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(process.pid)
            tree += [root, *root.children(recursive=True)]
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(tree, timeout=10)
    for process in processes:
        process.stop()  # reaps it and closes its log


# -- inbound texts ----------------------------------------------------------------------------


@dataclass
class Delivery:
    """One POST of a webhook and what came of it."""

    sid: str
    started: float
    ended: float
    status: int | None
    error: str | None = None
    retry_after: str | None = None


@dataclass
class Inbound:
    """Signed inbound texts and every attempt to deliver them."""

    hub_url: str
    public_url: str
    count: int
    attempts: list[Delivery] = field(default_factory=list)
    forms: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i in range(self.count):
            sid = "SM" + uuid.uuid4().hex
            body = f"Question {i} about my visit"
            self.forms[sid] = {
                "MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid, "SmsStatus": "received",
                "AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01",
                "From": inbound_number(i), "To": CLINIC_NUMBER, "Body": body,
                "NumSegments": "1", "NumMedia": "0",
            }  # fmt: skip

    @property
    def sids(self) -> list[str]:
        return list(self.forms)

    async def post(self, http: aiohttp.ClientSession, sid: str) -> Delivery:
        """One delivery, signed like Twilio's over HUB_PUBLIC_URL + path and every field."""
        url = f"{self.public_url}/webhooks/twilio/sms"
        params = self.forms[sid]
        headers = {"X-Twilio-Signature": sign(url, params)}
        started = time.monotonic()
        try:
            async with http.post(
                f"{self.hub_url}/webhooks/twilio/sms", data=params, headers=headers
            ) as response:
                await response.read()
                retry_after = response.headers.get("Retry-After")
                record = Delivery(
                    sid, started, time.monotonic(), response.status, None, retry_after
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            record = Delivery(sid, started, time.monotonic(), None, type(exc).__name__)
        self.attempts.append(record)
        return record

    async def deliver(
        self, http: aiohttp.ClientSession, sid: str, deadline: float | None = None
    ) -> None:
        """Post until answered 200, as Twilio retries a webhook that failed."""
        deadline = deadline or time.monotonic() + DEADLINE_S
        while (await self.post(http, sid)).status != 200:
            if time.monotonic() > deadline:
                raise AssertionError(f"webhook {sid[:8]}... never answered 200: {self.failed()}")
            await asyncio.sleep(RETRY_PAUSE_S)

    async def deliver_all(
        self,
        http: aiohttp.ClientSession,
        sids: Iterable[str] | None = None,
        *,
        concurrency: int = 8,
        pace_s: float = 0.0,
    ) -> None:
        """Deliver each text (``pace_s`` apart per lane, ``concurrency`` lanes)."""
        pending = list(self.sids if sids is None else sids)

        async def lane() -> None:
            while pending:
                await self.deliver(http, pending.pop(0))
                if pace_s:
                    await asyncio.sleep(pace_s)

        await asyncio.gather(*(lane() for _ in range(concurrency)))

    def failed(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for a in self.attempts:
            if a.status != 200:
                key = str(a.status) if a.status is not None else (a.error or "error")
                counts[key] = counts.get(key, 0) + 1
        return counts


# -- the hub ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What the end of a scenario looked like."""

    inbound_rows: int
    inbound_duplicates: int
    inbound_missing: int
    fake_messages: int
    delivered_once: int
    outbound_missing: int
    outbound_duplicates: int
    unexpected: int
    statuses: dict[str, int]


class Hub:
    """One scenario's hub: a fresh database in the shared cluster, a Redis of its own, the
    fake Twilio, `hub serve` and two `hub worker`s."""

    def __init__(self, postgres: PostgresServer, template: str, log_dir: Path) -> None:
        self.postgres = postgres
        self.log_dir = log_dir
        self.db_name = f"faults_{uuid.uuid4().hex[:12]}"
        self._template = template
        self.ring = KeyRing.generate("faults1")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.redis = RedisServer(log_dir)
        self.fake: Process | None = None
        self.fake_url = ""
        self.serve: Process | None = None
        self.workers: list[Process] = []
        self.db: Database | None = None
        self.env: dict[str, str] = {}
        self._generation = 0
        self.expected: dict[str, str] = {}
        """Outbound recipients and the first name their text must carry."""

    async def start(self, *, fake_args: Iterable[str] = (), workers: int = 2) -> None:
        import asyncpg

        from hub.config import parse_database_url

        admin = await asyncpg.connect(self.postgres.url())
        try:
            await admin.execute(f'CREATE DATABASE "{self.db_name}" TEMPLATE "{self._template}"')
        finally:
            await admin.close()
        self.db = Database.connect(parse_database_url(self.postgres.url(self.db_name)))
        credentials = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN}
        argv = [sys.executable, "-m", "fakes.twilio", "--port", "0", *fake_args]
        self.fake = Process("fake-twilio", argv, clean_env(**credentials), self.log_dir)
        self.fake_url = self.fake.first_line()
        self.env = clean_env(
            HUB_DATABASE_URL=self.postgres.url(self.db_name),
            HUB_REDIS_URL=self.redis.url,
            HUB_KEYS=self.ring.to_spec(),
            HUB_PUBLIC_URL=self.url,
            HUB_HOST="127.0.0.1",
            HUB_PORT=str(self.port),
            HUB_INBOUND_SMTP_PORT=str(free_port()),
            HUB_VAR_DIR=str(self.log_dir / "var"),
            HUB_CLINIC_NAME="Example Clinic",
            HUB_SEND_RETRY_BASE_SECONDS="0.2",
            HUB_JOURNEY_LEASE_SECONDS="5",
            HUB_SEND_STUCK_SECONDS="5",
            HUB_LOG_FORMAT="text",
            TWILIO_API_BASE=self.fake_url,
            TWILIO_FROM_NUMBER=CLINIC_NUMBER,
            **credentials,
        )
        self.start_serve()
        for _ in range(workers):
            self.start_worker()
        await self.wait_ready(workers)

    def _name(self, what: str) -> str:
        self._generation += 1
        return f"{what}-{self._generation}"

    def start_serve(self) -> Process:
        self.serve = Process(self._name("serve"), hub_command("serve"), self.env, self.log_dir)
        return self.serve

    def start_worker(self) -> Process:
        worker = Process(self._name("worker"), hub_command("worker"), self.env, self.log_dir)
        self.workers.append(worker)
        return worker

    def tick_running(self) -> bool:
        """Whether a scheduler tick holds its lock right now."""
        from redis import Redis

        from worker.tick import TICK_LOCK

        client = Redis.from_url(self.redis.url)
        try:
            return bool(client.exists(TICK_LOCK))
        finally:
            client.close()

    def orphan_tick_lock(self) -> bytes:
        """Hold the tick lock as a tick SIGKILLed mid-way does: a token no live tick has, with
        the lock's full TTL (unless a dead tick's lock is there already). Returns the dead
        lock's token."""
        from redis import Redis

        from worker.tick import TICK_LOCK, TICK_LOCK_TTL_S

        client = Redis.from_url(self.redis.url)
        try:
            client.set(TICK_LOCK, uuid.uuid4().hex, nx=True, ex=TICK_LOCK_TTL_S)
            token = client.get(TICK_LOCK)
            assert token is not None
            return bytes(token)
        finally:
            client.close()

    async def tick_took_over(self, dead_token: bytes, at: datetime) -> bool:
        """Whether a live tick has held the lock (or finished) since a dead one left it."""
        from redis import Redis

        from worker.tick import TICK_LOCK

        client = Redis.from_url(self.redis.url)
        try:
            holder = client.get(TICK_LOCK)
        finally:
            client.close()
        return (holder is not None and holder != dead_token) or await self.ticked_since(at)

    async def ticked_since(self, at: datetime) -> bool:
        """Whether a scheduler tick that started after ``at`` has completed."""
        from redis import Redis

        from worker.tick import TICK_DONE_KEY

        client = Redis.from_url(self.redis.url)
        try:
            raw = client.get(TICK_DONE_KEY)
        finally:
            client.close()
        return raw is not None and datetime.fromisoformat(raw.decode()) > at

    @contextlib.asynccontextmanager
    async def inbound_held(self) -> AsyncIterator[Callable[[], Awaitable[int]]]:
        """A slow database: inbound webhooks wait on a table lock until the block ends (their
        transactions then go on). Yields a function counting the webhooks waiting."""
        import asyncpg

        conn = await asyncpg.connect(self.postgres.url(self.db_name))
        try:
            transaction = conn.transaction()
            await transaction.start()
            # Blocks the insert of each raw event; reads (and this lock's holder) go on.
            await conn.execute("LOCK TABLE channel_inbound_event IN SHARE ROW EXCLUSIVE MODE")

            async def waiting() -> int:
                return int(
                    await conn.fetchval(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted"
                        " AND relation = 'channel_inbound_event'::regclass"
                    )
                )

            try:
                yield waiting
            finally:
                await transaction.rollback()
        finally:
            await conn.close()

    def kill_workers(self) -> None:
        kill_trees(self.workers)
        self.workers = []

    async def wait_ready(self, workers: int) -> None:
        """Until `hub serve` answers /healthz and ``workers`` RQ workers are registered."""
        from redis import Redis
        from rq import Worker

        deadline = time.monotonic() + 90
        connection = Redis.from_url(self.redis.url)
        try:
            async with aiohttp.ClientSession() as http:
                while True:
                    for process in (self.serve, *self.workers):
                        if process is not None and not process.alive():
                            raise RuntimeError(f"{process.name} exited:\n{process.tail()}")
                    registered = Worker.count(connection=connection)
                    if registered >= workers and await self.healthy(http):
                        return
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"hub not ready in 90 s ({registered} workers)")
                    await asyncio.sleep(0.1)
        finally:
            connection.close()

    async def healthy(self, http: aiohttp.ClientSession) -> bool:
        try:
            async with http.get(f"{self.url}/healthz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def stop(self) -> None:
        for process in [*self.workers, self.serve, self.fake]:
            if process is not None:
                process.stop()
        self.redis.stop()
        if self.db is not None:
            await self.db.dispose()

    def logs(self, lines: int = 10) -> str:
        """Where the logs are and the errors in them, for a failure message."""
        found = [
            f"{path.name}: {line}"
            for path in sorted(self.log_dir.glob("*.log"))
            for line in path.read_text(errors="replace").splitlines()
            if " ERROR " in line or " WARNING " in line
        ]
        return f"logs in {self.log_dir}; last errors:\n" + "\n".join(found[-lines:])

    # -- outbound ----------------------------------------------------------------------------

    async def seed_outbound(self, count: int) -> None:
        """``count`` patients enrolled in a journey whose text is due now. The journey stays
        paused (nothing claimable) until :meth:`release_outbound`. Rows are built by the hub's
        own helpers (sealed, blind-indexed, planned) and inserted in bulk."""
        from bench.dispatch import pick_zone
        from hub.inbox.actions.patients import build_patient
        from hub.inbox.models import Patient
        from hub.inbox.schemas import NewPatient
        from hub.journeys.actions import _plan_runs, do_install_journey, do_set_journey_status
        from hub.journeys.definitions import parse_journey
        from hub.journeys.models import Enrollment, StepRun

        assert self.db is not None
        actor = Actor.system("faults")
        journey_id = await do_install_journey(self.db, actor, JOURNEY, "faults.yaml")
        await do_set_journey_status(self.db, actor, JOURNEY_KEY, "paused")
        definition = parse_journey(JOURNEY, "faults.yaml")
        now = datetime.now(UTC)
        # Where it is mid-morning: quiet hours would defer every text and test nothing.
        zone = pick_zone(now)
        rows: dict[type[Base], list[dict[str, Any]]] = {Patient: [], Enrollment: [], StepRun: []}
        for i in range(count):
            new = NewPatient(
                name=f"{first_name(i)} Example",
                phone=outbound_number(i),
                time_zone=zone,
                verified=True,
            )
            patient = build_patient(self.ring, new, "US")
            enrollment = Enrollment(
                id=new_id(),
                journey_id=journey_id,
                patient_id=patient.id,
                dedupe_key=f"{patient.id}:enrollment:{now.isoformat()}",
                anchor_at=now - timedelta(minutes=1),
                created_at=now,
            )
            runs = _plan_runs(definition, enrollment, now, zone)
            for obj in (patient, enrollment, *runs):
                if getattr(obj, "id", None) is None:  # column defaults apply at flush only
                    obj.id = new_id()
                rows[type(obj)].append(_row(obj))
            self.expected[outbound_number(i)] = first_name(i)
        async with self.db.transaction() as session:
            for model, values in rows.items():
                if values:
                    await session.execute(insert(model), values)

    async def release_outbound(self) -> None:
        """Resume the journey: its due texts become claimable by the next tick."""
        from hub.journeys.actions import do_set_journey_status

        assert self.db is not None
        await do_set_journey_status(self.db, Actor.system("faults"), JOURNEY_KEY, "active")

    async def fake_count(self, http: aiohttp.ClientSession) -> int:
        async with http.get(f"{self.fake_url}/_fake/stats") as response:
            return int((await response.json())["messages"])

    async def fake_faults(self, http: aiohttp.ClientSession) -> dict[str, int]:
        async with http.get(f"{self.fake_url}/_fake/faults") as response:
            data: dict[str, int] = await response.json()
            return data

    async def fake_messages(self, http: aiohttp.ClientSession) -> list[dict[str, Any]]:
        """Every message the fake Twilio holds, through its list API (as an operator would)."""
        token = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        auth = {"Authorization": f"Basic {token}"}
        path: str | None = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json?PageSize=1000"
        found: list[dict[str, Any]] = []
        while path:
            async with http.get(self.fake_url + path, headers=auth) as response:
                assert response.status == 200, await response.text()
                page = await response.json()
            found += page["messages"]
            path = page.get("next_page_uri")
        return found

    # -- the end invariant -------------------------------------------------------------------

    async def inbound_counts(self) -> dict[str, int]:
        from hub.inbox.models import Message

        assert self.db is not None
        async with self.db.reader() as session:
            rows = await session.execute(
                select(Message.provider_message_id, func.count())
                .where(Message.direction == Direction.INBOUND)
                .group_by(Message.provider_message_id)
            )
            return {str(sid): int(n) for sid, n in rows.all()}

    async def outbound_statuses(self) -> dict[str, int]:
        from hub.inbox.models import Message

        assert self.db is not None
        async with self.db.reader() as session:
            rows = await session.execute(
                select(Message.status, func.count())
                .where(Message.direction == Direction.OUTBOUND)
                .group_by(Message.status)
            )
            return {str(s.value): int(n) for s, n in rows.all()}

    async def describe(self) -> str:
        """Where the texts are, for a failure message."""
        from hub.journeys.models import StepRun

        assert self.db is not None
        async with aiohttp.ClientSession() as http:
            fake = await self.fake_count(http)
        async with self.db.reader() as session:
            runs = dict((await session.execute(
                select(StepRun.status, func.count()).group_by(StepRun.status)
            )).all())  # fmt: skip
        inbound = sum((await self.inbound_counts()).values())
        runs_text = ", ".join(f"{k}: {v}" for k, v in runs.items())
        return (
            f"fake Twilio holds {fake}/{len(self.expected)}; outbound rows "
            f"{await self.outbound_statuses()}; step runs {runs_text}; inbound rows {inbound}"
        )

    async def recorded(self) -> int:
        """Outbound rows that carry Twilio's id (the hub knows the text is with Twilio)."""
        from hub.inbox.models import Message

        assert self.db is not None
        async with self.db.reader() as session:
            return int(
                await session.scalar(
                    select(func.count())
                    .select_from(Message)
                    .where(
                        Message.direction == Direction.OUTBOUND,
                        Message.provider_message_id.is_not(None),
                    )
                )
                or 0
            )

    async def settled(
        self,
        http: aiohttp.ClientSession,
        inbound: Inbound | None,
        final: tuple[MessageStatus, ...],
    ) -> bool:
        """Every text where it should end: the fake holds one per due step, the hub has
        Twilio's id for each (and, if ``final`` names statuses, each is in one of them), and
        each inbound text is stored."""
        if await self.fake_count(http) < len(self.expected):
            return False
        if await self.recorded() < len(self.expected):
            return False
        if final:
            statuses = await self.outbound_statuses()
            if sum(statuses.get(s.value, 0) for s in final) < len(self.expected):
                return False
        if inbound is not None:
            counts = await self.inbound_counts()
            return all(sid in counts for sid in inbound.sids)
        return True

    async def verify(
        self,
        inbound: Inbound | None,
        *,
        final: tuple[MessageStatus, ...] = (),
        timeout: float = DEADLINE_S,
    ) -> Outcome:
        """Wait for the end state, let it hold still for SETTLE_S, then count exactly. Without
        ``final``, a text counts as done once the hub has Twilio's id for it: a status callback
        posted while the hub could not take it is not sent again (Twilio does not retry
        them), so "sending" can be where a delivered text ends."""
        async with aiohttp.ClientSession() as http:
            await eventually(
                lambda: self.settled(http, inbound, final),
                "every inbound text stored and every due text sent",
                timeout,
                self,
            )
            before = await self.fake_count(http)
            await asyncio.sleep(SETTLE_S)
            assert await self.fake_count(http) == before, "a text reached Twilio after the end"
            messages = await self.fake_messages(http)
        per_to: dict[str, list[dict[str, Any]]] = {}
        for message in messages:
            per_to.setdefault(message["to"], []).append(message)
        wrong = [
            to
            for to, name in self.expected.items()
            for m in per_to.get(to, [])
            if f"Hi {name}," not in m["body"]
        ]
        assert not wrong, f"texts carrying another patient's name: {len(wrong)}"
        counts = await self.inbound_counts() if inbound is not None else {}
        sids = inbound.sids if inbound is not None else []
        from hub.inbox.models import Message

        assert self.db is not None
        async with self.db.reader() as session:
            recorded = set(
                (
                    await session.scalars(
                        select(Message.provider_message_id).where(
                            Message.direction == Direction.OUTBOUND
                        )
                    )
                ).all()
            )
        outcome = Outcome(
            inbound_rows=sum(counts.values()),
            inbound_duplicates=sum(n - 1 for n in counts.values() if n > 1),
            inbound_missing=sum(1 for sid in sids if sid not in counts),
            fake_messages=len(messages),
            delivered_once=sum(1 for to in self.expected if len(per_to.get(to, [])) == 1),
            outbound_missing=sum(1 for to in self.expected if to not in per_to),
            outbound_duplicates=sum(len(v) - 1 for v in per_to.values() if len(v) > 1),
            unexpected=sum(1 for to in per_to if to not in self.expected),
            statuses=await self.outbound_statuses(),
        )
        # The hub knows Twilio's id for every text Twilio holds: nothing half-recorded.
        assert recorded >= {m["sid"] for m in messages}, "a text Twilio holds the hub lost"
        return outcome

    def assert_exact(self, outcome: Outcome, inbound: Inbound | None) -> None:
        for process in (self.serve, *self.workers):
            assert process is not None and process.alive(), f"{process} exited: {self.logs()}"
        n_in = inbound.count if inbound is not None else 0
        n_out = len(self.expected)
        assert (outcome.inbound_rows, outcome.inbound_duplicates, outcome.inbound_missing) == (
            n_in,
            0,
            0,
        ), outcome
        assert (
            outcome.fake_messages,
            outcome.delivered_once,
            outcome.outbound_missing,
            outcome.outbound_duplicates,
            outcome.unexpected,
        ) == (n_out, n_out, 0, 0, 0), outcome
        assert sum(outcome.statuses.values()) == n_out, outcome


def _row(obj: Base) -> dict[str, Any]:
    from sqlalchemy import inspect

    columns = obj.__table__.columns
    return {k: v for k, v in inspect(obj).dict.items() if k in columns}


async def eventually(
    check: Callable[[], Awaitable[Any]], what: str, timeout: float, hub: Hub | None = None
) -> Any:
    """Poll state written by other processes until true; on timeout, say what and show logs."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            state = f"; {await hub.describe()}\n{hub.logs()}" if hub is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{state}")
        await asyncio.sleep(0.05)


def migrate_template(postgres: PostgresServer, name: str) -> None:
    """One migrated, seeded database that each scenario's database is copied from."""
    from tests.conftest import run_sync

    async def build() -> None:
        import asyncpg

        from hub.config import parse_database_url
        from hub.migrations import upgrade_url
        from hub.templates.actions import do_seed_templates

        admin = await asyncpg.connect(postgres.url())
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = parse_database_url(postgres.url(name))
        await upgrade_url(url)
        db = Database.connect(url)
        try:
            await do_seed_templates(db)
        finally:
            await db.dispose()

    run_sync(build())


@contextlib.asynccontextmanager
async def running_hub(
    postgres: PostgresServer,
    template: str,
    log_dir: Path,
    *,
    outbound: int,
    fake_args: Iterable[str] = (),
) -> AsyncIterator[Hub]:
    hub = Hub(postgres, template, log_dir)
    try:
        await hub.start(fake_args=fake_args)
        await hub.seed_outbound(outbound)
        yield hub
    finally:
        await hub.stop()


def shuffled(items: Iterable[str], seed: int) -> list[str]:
    out = list(items)
    random.Random(seed).shuffle(out)
    return out


def interrupt(process: Process) -> None:
    """SIGTERM only the process itself (not its group), as a supervisor or systemd would."""
    os.kill(process.pid, signal.SIGTERM)
