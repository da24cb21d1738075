"""What every benchmark shares: where it ran (machine, commit, date), a fresh PostgreSQL database
and a flushed Redis db, processes started and stopped by their own id, peak memory, and the
result file ``bench/results/<name>.json`` that ``bench/run.py`` collects into RESULTS.md.

Benchmarks never touch the hub's or the tests' databases: the server and a database-name prefix
come from HUB_BENCH_DATABASE_URL, the Redis db from HUB_BENCH_REDIS_URL.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/hub_bench"
"""Server and name prefix of benchmark databases: benchmark NAME gets ``hub_bench_NAME``."""
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
"""The Redis db benchmarks flush and use: far from db 0 (the hub) and 15 (the tests)."""
READY_TIMEOUT_S = 90.0
"""Processes that are not serving by then are taken as broken (their log is shown)."""
STOP_TIMEOUT_S = 20.0
"""How long a stopped process may take to exit on SIGTERM before its group is killed."""


def bench_database_url() -> str:
    return os.environ.get("HUB_BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL


def bench_redis_url() -> str:
    return os.environ.get("HUB_BENCH_REDIS_URL") or DEFAULT_REDIS_URL


# -- where and when ---------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


async def _postgres_version(database_url: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(_server_dsn(database_url, "postgres"))
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def _redis_version(redis_url: str) -> str:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


async def machine_info(database_url: str, redis_url: str) -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": _ram_gb(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "postgresql": await _postgres_version(database_url),
        "redis": _redis_version(redis_url),
    }


def git_info() -> dict[str, Any]:
    """Commit and whether the tree has uncommitted changes (read-only: no index refresh)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    # The results a run writes are not changes to what it measured.
    changes = git(
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":!bench/results",
        ":!bench/RESULTS.md",
    )
    return {"commit": commit, "dirty": bool(changes)}


def load_average() -> float:
    """The 1-minute load average: other work on the machine skews every figure taken now."""
    return round(os.getloadavg()[0], 2)


def warn_if_busy(what: str) -> None:
    cores = os.cpu_count() or 1
    if (load := load_average()) > cores / 2:
        print(f"{what}: the machine is busy (load {load} on {cores} cores); figures will be low")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


async def run_info(database_url: str | None = None, redis_url: str | None = None) -> dict[str, Any]:
    """Date, commit and machine, stored with every result."""
    machine = await machine_info(
        database_url or bench_database_url(), redis_url or bench_redis_url()
    )
    return {"date": now_iso(), **git_info(), "load_average": load_average(), "machine": machine}


@contextlib.contextmanager
def exclusive(what: str) -> Iterator[None]:
    """One benchmark at a time against these PostgreSQL and Redis servers from this machine:
    another run would drop the database and flush the Redis db under this one, and skew its
    figures anyway. A second run waits here (saying for whom) instead."""
    key = hashlib.sha256(f"{bench_database_url()} {bench_redis_url()}".encode()).hexdigest()
    path = Path(tempfile.gettempdir()) / f"hub-bench-{key[:16]}.lock"
    with path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            print(f"{what}: waiting for another benchmark run ({lock.read().strip()})", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        lock.truncate()
        lock.write(f"{what}, pid {os.getpid()}, since {now_iso()}")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# -- databases ----------------------------------------------------------------------------------


def _server_dsn(url: str, database: str) -> str:
    """``url`` pointed at another database of the same server, in asyncpg's form."""
    parts = urlsplit(url.replace("postgresql+asyncpg://", "postgresql://"))
    return urlunsplit(parts._replace(path=f"/{database}"))


def database_name(name: str, url: str | None = None) -> str:
    if not re.fullmatch(r"[a-z0-9_]{1,30}", name):
        raise ValueError(f"benchmark database name {name!r}: use a-z, 0-9 and _")
    prefix = urlsplit(url or bench_database_url()).path.strip("/") or "hub_bench"
    return f"{prefix}_{name}"


async def fresh_database(name: str, *, seed_templates: bool = True) -> str:
    """Drop and create the benchmark's own database, migrate it with the hub's Alembic helpers
    and seed the shipped templates (what `hub migrate` does). Returns the async URL."""
    import asyncpg

    from hub.config import parse_database_url
    from hub.db import Database
    from hub.migrations import upgrade_url

    base = bench_database_url()
    db_name = database_name(name, base)
    admin = await asyncpg.connect(_server_dsn(base, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{db_name}"')
    finally:
        await admin.close()
    url = parse_database_url(_server_dsn(base, db_name))
    await upgrade_url(url)
    if seed_templates:
        from hub.templates.actions import do_seed_templates

        db = Database.connect(url)
        try:
            await do_seed_templates(db)
        finally:
            await db.dispose()
    return url


def user_url(async_url: str) -> str:
    """The form an operator puts in HUB_DATABASE_URL."""
    return async_url.replace("postgresql+asyncpg://", "postgresql://")


def flush_redis(url: str | None = None) -> str:
    """Empty the benchmark's Redis db (queues, workers, locks of an earlier run)."""
    import redis

    url = url or bench_redis_url()
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


# -- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """GET ``url`` answers 200 (a health check)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def clean_env(**overrides: str) -> dict[str, str]:
    """Environment for a child: nothing inherited from the caller's HUB_*/TWILIO_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "TWILIO_"))}
    env.update(overrides)
    return env


def hub_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hub", *args]


class Process:
    """A child in its own process group (so its forks stop with it), output to a log file."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: TextIO = self.log_path.open("w")
        self.popen = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.peak_rss_mb: float | None = None
        """The process's own high-water RSS, known once it has exited (from wait4)."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self._reap(block=False) is None

    def first_line(self, timeout: float = 30.0) -> str:
        """The first line the process prints (e.g. the URL a server listens on)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text()
            if "\n" in text:
                return text.split("\n", 1)[0].strip()
            if not self.alive():
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} printed nothing within {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _reap(self, *, block: bool) -> int | None:
        if self.popen.returncode is not None:
            return self.popen.returncode
        try:
            pid, status, usage = os.wait4(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return self.popen.poll()
        if pid == 0:
            return None
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        self.peak_rss_mb = round(usage.ru_maxrss / 1024, 1)  # KiB on Linux
        return self.popen.returncode

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM the process (a supervisor stops its own children; RQ workers finish their
        job), SIGKILL its whole group after ``timeout``."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.alive():
            self._signal_group(signal.SIGKILL)
            self._reap(block=True)
        self._signal_group(signal.SIGKILL)  # forks left behind by a parent that exited
        self._log.close()
        return self.popen.returncode

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)  # the group this process leads (start_new_session)


def wait_for_workers(
    redis_url: str,
    count: int,
    processes: Sequence[Process],
    *,
    queue: str | None = None,
    health_url: str | None = None,
) -> None:
    """Until ``count`` RQ workers (on ``queue``, if given) are registered in Redis and
    ``health_url`` answers; a process that exits meanwhile ends the wait with its log."""
    from redis import Redis
    from rq import Queue, Worker

    connection = Redis.from_url(redis_url)
    on = Queue(queue, connection=connection) if queue else None
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while True:
            dead = [p for p in processes if not p.alive()]
            if dead:
                raise RuntimeError(f"{dead[0].name} exited:\n{dead[0].tail()}")
            if Worker.count(connection=connection, queue=on) >= count and (
                health_url is None or http_ok(health_url)
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"workers not ready in {READY_TIMEOUT_S}s:\n{processes[0].tail()}"
                )
            time.sleep(0.05)
    finally:
        connection.close()


def stop_all(processes: Sequence[Process]) -> None:
    for process in reversed(processes):
        process.stop()


def peak_rss_mb(pid: int | None = None) -> float | None:
    """High-water RSS in MB: of a running process (VmHWM), or of this process."""
    if pid is None:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


# -- results ----------------------------------------------------------------------------------


def write_result(name: str, result: Mapping[str, Any], run: Mapping[str, Any]) -> Path:
    """``bench/results/<name>.json``: the result, plus where and when it was measured."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    data = {"name": name, **result, "run": dict(run)}
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return path


def read_result(name: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * width for width in widths))
