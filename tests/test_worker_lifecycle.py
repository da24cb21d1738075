"""`hub worker` as operations meets it: SIGTERM in the middle of a batch lets the batch finish
(every message sent once and recorded) and then exits cleanly; a Redis restart that loses
every queued job loses no due step."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue
from sqlalchemy import func, select

from hub.audit import Actor
from hub.inbox import actions
from hub.inbox.models import Message
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.templates.actions import do_seed_templates
from tests.stack import WAIT_S, Stack, eventually, free_port
from worker.main import COMMAND_CHANNEL_WAKE_S, HubWorker

pytestmark = pytest.mark.slow

SYSTEM = Actor.system("test")
FOLLOW_UP = """\
key: lifecycle
name: Follow-up
purpose: care
anchor: enrollment
steps:
  - id: thanks
    offset: +0h
    template: visit_follow_up
    channels: [sms]
"""


async def enroll_paused(stack: Stack, patients: int, first: int = 0) -> None:
    """Enroll while the journey is paused, so the next tick takes them all in one batch."""
    await journeys.do_set_journey_status(stack.db, SYSTEM, "lifecycle", "paused")
    for n in range(first, first + patients):
        pid = await actions.do_create_patient(
            stack.db,
            stack.ring,
            SYSTEM,
            NewPatient(name=f"Synthetic Person {n}", phone=f"+1555030{n:04d}", verified=True),
            region="US",
        )
        await journeys.do_enroll(stack.db, SYSTEM, "lifecycle", pid)


async def recorded(stack: Stack) -> int:
    async with stack.db.reader() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(Message)
                .where(Message.provider_message_id.is_not(None))
            )
            or 0
        )


async def test_sigterm_mid_batch_finishes_the_batch_then_exits(stack: Stack) -> None:
    patients = 100
    await do_seed_templates(stack.db)
    await journeys.do_install_journey(stack.db, SYSTEM, FOLLOW_UP, "lifecycle.yaml")
    await enroll_paused(stack, patients)
    stack.fake.api_latency = 0.3  # the batch takes a while at the provider
    await journeys.do_set_journey_status(stack.db, SYSTEM, "lifecycle", "active")
    await stack.fake.wait_for(lambda f: 0 < len(f.messages) < patients, timeout=WAIT_S)

    worker = stack.worker
    assert worker is not None
    worker.send_signal(signal.SIGTERM)
    code = await _exit_code(worker)

    assert code == 0
    assert len(stack.fake.messages) == patients
    assert len({m.to for m in stack.fake.messages}) == patients
    assert await recorded(stack) == patients  # finished and recorded, nothing left stuck
    stack.worker = None


def test_a_stopping_worker_waits_at_most_a_second_on_its_command_channel(redis_url: str) -> None:
    """What made a SIGTERM'd `hub worker` hang a minute after its last job: stopping rq's
    command-channel thread waits for its current read, which lasted up to 60 s when the
    thread had already taken the unsubscribe reply. The race is set up over and over (the
    pause puts the thread in its read; it is not a wait for work)."""
    connection = redis.Redis.from_url(redis_url)
    worker = HubWorker([Queue("hub-test", connection=connection)], connection=connection)
    slowest = 0.0
    try:
        for pause in (0.0, 0.01, 0.3, 0.5) * 4:
            worker.subscribe()
            time.sleep(pause)
            started = time.monotonic()
            worker.unsubscribe()
            slowest = max(slowest, time.monotonic() - started)
    finally:
        connection.close()
    assert slowest < 3 * COMMAND_CHANNEL_WAKE_S, f"a stop waited {slowest:.1f} s"


async def _exit_code(process: subprocess.Popen[bytes]) -> int:
    import asyncio

    return await asyncio.wait_for(asyncio.to_thread(process.wait), timeout=WAIT_S)


def _redis_server() -> str:
    from hub.embedded_redis import redis_server_executable

    return shutil.which("redis-server") or redis_server_executable()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A Redis of this test's own (the shared one must not be restarted under other tests)."""
    port = free_port()
    server = RedisServer(port, tmp_path)
    server.start()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.stop()


class RedisServer:
    def __init__(self, port: int, directory: Path) -> None:
        self.port, self.directory = port, directory
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                _redis_server(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        try:
            for _ in range(200):
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    import time

                    time.sleep(0.05)
            raise RuntimeError("redis-server did not start")
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


async def test_a_redis_restart_that_loses_every_job_loses_no_due_step(
    stack: Stack, redis_url: str
) -> None:
    await do_seed_templates(stack.db)
    await journeys.do_install_journey(stack.db, SYSTEM, FOLLOW_UP, "lifecycle.yaml")
    await enroll_paused(stack, 20)
    await journeys.do_set_journey_status(stack.db, SYSTEM, "lifecycle", "active")
    await stack.fake.wait_for(lambda f: len(f.messages) == 20, timeout=WAIT_S)

    # Redis goes away with everything in it (no persistence), then comes back empty.
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    server = RedisServer(port, Path(stack.worker_log).parent)
    killer = redis.Redis(port=port)
    killer.shutdown(nosave=True)
    killer.close()
    await enroll_paused(stack, 20, first=20)
    await journeys.do_set_journey_status(stack.db, SYSTEM, "lifecycle", "active")
    server.start()
    try:
        await stack.fake.wait_for(lambda f: len(f.messages) == 40, timeout=120)
        await eventually(lambda: _equals(recorded(stack), 40), "every send recorded", timeout=120)
        assert len({m.to for m in stack.fake.messages}) == 40
        assert stack.worker is not None and stack.worker.poll() is None  # still running
    finally:
        stack.stop_worker()
        server.stop()


async def _equals(value: object, expected: int) -> bool:
    return bool(await value == expected)  # type: ignore[misc]
