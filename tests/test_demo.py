"""`hub demo` in an empty directory: migrates, loads synthetic data, serves, runs a worker."""

from __future__ import annotations

import asyncio
import json
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Worker
from sqlalchemy import select

from hub.audit import Actor
from hub.db import Database
from hub.demo import DEMO_ADMIN_EMAIL, DEMO_LIVE_TEXTS, DEMO_PATIENTS, load_demo_data
from hub.inbox import actions
from hub.inbox.models import InboundEvent
from hub.inbox.passwords import verify_password
from tests.conftest import hub_env, run_sync
from tests.stack import free_port

STARTUP_TIMEOUT_S = 60


def _lines(proc: subprocess.Popen[str]) -> tuple[queue.Queue[str], threading.Thread]:
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.put(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return out, thread


def _wait_for_line(lines: queue.Queue[str], pattern: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    seen = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        seen.append(line)
        if m := re.search(pattern, line):
            return m
    raise AssertionError(f"no line matching {pattern!r} in {seen!r}")


def _get_json(url: str, timeout: float) -> dict[str, object]:
    """GET until the server answers (it binds after printing its banner)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())  # type: ignore[no-any-return]
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def demo_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hubd"))  # short: holds the Redis unix socket
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_demo_runs_serve_and_worker_and_prints_a_working_password(demo_dir: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub", "demo"],
        cwd=demo_dir,
        env=hub_env(HUB_PORT=str(port), HUB_LOG_FORMAT="text"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines, pump = _lines(proc)
    try:
        url = _wait_for_line(lines, r"Hub demo: (http://\S+)/", STARTUP_TIMEOUT_S).group(1)
        assert url == f"http://127.0.0.1:{port}"
        password = _wait_for_line(lines, r"Password: (\S+)", 5).group(1)
        assert "/simulator" in _wait_for_line(lines, r"Be the patient.*: (\S+)", 5).group(1)
        assert _wait_for_line(lines, r"patients loaded this run: (\d+)", 5).group(1) == str(
            len(DEMO_PATIENTS)
        )
        assert "local stand-in" in _wait_for_line(lines, r"Twilio: (.*)", 5).group(1)
        mail_line = _wait_for_line(lines, r"Email: (.*)", 5).group(1)
        assert "local stand-in" in mail_line and "var/demo-mail/" in mail_line

        health = _get_json(f"{url}/healthz", STARTUP_TIMEOUT_S)
        assert health == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}

        sock = demo_dir / "var" / "redis" / "redis.sock"
        client = redis.Redis.from_url(f"unix://{sock}")
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not Worker.all(connection=client) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(Worker.all(connection=client)) == 1, "the demo worker did not register"
        client.close()

        db_url = f"sqlite+aiosqlite:///{demo_dir / 'var' / 'hub.db'}"
        keys = (demo_dir / "var" / "dev-keys.txt").read_text()

        async def check() -> None:
            from hub.crypto import KeyRing
            from hub.inbox import queries

            db = Database.connect(db_url)
            try:
                async with db.reader() as session:
                    admin = await queries.staff_by_email(session, DEMO_ADMIN_EMAIL)
                    # A demo password, kept under var/ so it survives restarts: not one-time.
                    assert admin is not None and not admin.must_change_password
                    assert verify_password(admin.password_hash, password)
                ring = KeyRing.parse(keys)
                found = await actions.do_find_patients_by_phone(
                    db, ring, Actor.system("test"), "555-010-0101", region="US"
                )
                assert [p.name for p in found] == ["Avery Sample"]
                # The live texts went through the fake Twilio and the signed webhook.
                deadline = time.monotonic() + STARTUP_TIMEOUT_S
                while True:
                    async with db.reader() as session:
                        events = (await session.scalars(select(InboundEvent))).all()
                    if len(events) == len(DEMO_LIVE_TEXTS) or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.1)
                assert len(events) == len(DEMO_LIVE_TEXTS)
                newcomer = await actions.do_find_patients_by_phone(
                    db, ring, Actor.system("test"), DEMO_LIVE_TEXTS[1][0], region="US"
                )
                assert [p.verified for p in newcomer] == [False]

                # Email works in the demo: a staff answer by email goes out through the
                # worker to the local relay, which keeps it on disk.
                from hub.enums import Channel
                from hub.inbox.access import StaffContext
                from hub.inbox.models import Conversation

                async with db.reader() as session:
                    admin = await queries.staff_by_email(session, DEMO_ADMIN_EMAIL)
                    assert admin is not None
                    conversation = await session.scalar(
                        select(Conversation).where(Conversation.patient_id == found[0].id)
                    )
                assert conversation is not None
                await actions.do_reply(
                    db,
                    ring,
                    StaffContext.of(admin),
                    conversation.id,
                    "Your synthetic results are ready.",
                    channel=Channel.EMAIL,
                )
                mail_dir = demo_dir / "var" / "demo-mail"
                answer = b"Your synthetic results are ready."

                def answered() -> list[bytes]:
                    # Other mail lands here too (the admins' weekly summary on a Monday).
                    found = [p.read_bytes() for p in mail_dir.glob("*.eml")]
                    return [m for m in found if answer in m]

                deadline = time.monotonic() + STARTUP_TIMEOUT_S
                while not answered() and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                [mail] = answered()
                assert b"front-desk@demo-clinic.example.org" in mail
            finally:
                await db.dispose()

        run_sync(check())
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            pump.join(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
    assert proc.returncode == 0, proc.returncode
    assert not (demo_dir / "var" / "redis" / "redis.sock").exists(), "embedded Redis left running"


async def test_demo_data_loads_once(db: Database, ring) -> None:  # type: ignore[no-untyped-def]
    first = await load_demo_data(db, ring, "US")
    second = await load_demo_data(db, ring, "US")
    assert first.patients_created == len(DEMO_PATIENTS)
    assert second.patients_created == 0
    # Without a file to keep them in, a start sets new passwords (tests/test_simulator.py
    # checks that `hub demo`, which keeps them, does not).
    assert first.admin_password != second.admin_password
