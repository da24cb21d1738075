"""A whole hub for end-to-end tests: the web app on a real port, a real `hub worker` process,
the local fake Twilio, a real Redis, and a committed database."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from fakes.smtp import FakeSmtp
from fakes.twilio import FakeTwilio, start_fake_twilio
from hub.clock import CLOCK_FILE_ENV, advance
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import MessageStatus, Role
from hub.inbox import actions
from hub.inbox.access import StaffContext
from hub.inbox.models import Conversation, Message
from hub.outbox import release_events
from hub.reports import weekly
from hub.settings_store import put_setting_in
from tests.conftest import hub_env, make_staff, sync_url
from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN, CLINIC_NUMBER, PATIENT_NUMBER
from web.app import create_app
from web.keys import SINK
from worker.tick import TICK_DONE_KEY

WAIT_S = 30.0
CLINIC_EMAIL = "clinic@demo-clinic.example.org"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(
    check: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT_S
) -> Any:
    """Poll a condition (database state written by another process) until true or timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Stack:
    settings: Settings
    db: Database
    ring: KeyRing
    fake: FakeTwilio
    app: Any
    staff: StaffContext
    worker_log: Path
    hub_url: str

    clock_file: Path | None = None
    patient_number: str = PATIENT_NUMBER
    worker_env: dict[str, str] | None = None
    log_file: Any = None
    worker: subprocess.Popen[bytes] | None = None

    def start_worker(self) -> None:
        # Its own process group, so a test can SIGKILL the worker and the job it is running.
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "hub", "worker"],
            env=self.worker_env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill_worker(self) -> None:
        """SIGKILL the worker and everything under it. RQ runs each job in a work horse with
        a process group of its own, so the worker's group alone would miss the running job."""
        import psutil

        assert self.worker is not None
        root = psutil.Process(self.worker.pid)
        tree = [root, *root.children(recursive=True)]
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(tree, timeout=10)
        self.worker.wait()
        self.worker = None

    def stop_worker(self) -> None:
        if self.worker is None:
            return
        self.worker.terminate()
        try:
            self.worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill_worker()
        self.worker = None

    def advance_clock(self, delta: timedelta) -> datetime:
        """Move every process's clock (this one's and the worker's) forward; returns the new
        now."""
        assert self.clock_file is not None
        advance(self.clock_file, delta)
        return utcnow()

    def at_next_noon(self) -> datetime:
        """Move every process's clock forward to the next 12:00 UTC (the test patients'
        zone): a test that sends expects daytime, and quiet hours (08:00-21:00) would
        otherwise decide it whenever the suite runs in the evening."""
        now = utcnow()
        noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
        if noon <= now:
            noon += timedelta(days=1)
        return self.advance_clock(noon - now)

    async def ticked_at(self, at: datetime) -> None:
        """Wait until a scheduler tick has done its work with a clock at or past ``at``."""
        client = redis.Redis.from_url(self.settings.redis_url or "")

        async def done() -> bool:
            raw = client.get(TICK_DONE_KEY)
            return raw is not None and datetime.fromisoformat(raw.decode()) >= at

        try:
            await eventually(done, f"a tick at {at.isoformat()}")
        finally:
            client.close()

    async def add_staff(
        self, email: str, *, role: Role = Role.AGENT, teams: tuple[str, ...] = ()
    ) -> StaffContext:
        return await make_staff(self.db, email, role=role.value, teams=teams)  # type: ignore[no-any-return]

    async def text_from_patient(
        self, body: str, *, media: tuple[tuple[str, bytes], ...] = (), number: str = PATIENT_NUMBER
    ) -> None:
        status, text = await self.fake.send_inbound(
            f"{self.hub_url}/webhooks/twilio/sms", number, CLINIC_NUMBER, body, media=media
        )
        assert status == 200, text

    async def conversation(self) -> Conversation:
        async with self.db.reader() as session:
            return (await session.scalars(select(Conversation))).one()

    async def reply(self, body: str) -> uuid.UUID:
        conversation = await self.conversation()
        queued = await actions.do_reply(self.db, self.ring, self.staff, conversation.id, body)
        await release_events(self.db, self.app[SINK], queued.effect_ids)
        return queued.message_id

    async def message(self, message_id: uuid.UUID) -> Message:
        async with self.db.reader() as session:
            found = await session.get(Message, message_id)
            assert found is not None
            return found

    async def status_is(self, message_id: uuid.UUID, *statuses: MessageStatus) -> bool:
        return (await self.message(message_id)).status in statuses


@contextlib.asynccontextmanager
async def running_stack(
    db_url: str,
    redis_url: str,
    aiohttp_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    relay: FakeSmtp | None = None,
) -> AsyncIterator[Stack]:
    """The whole hub; with ``relay``, email is connected too (sent through that SMTP server)."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()  # no jobs left over from other tests for this worker to pick up
    client.close()
    ring = KeyRing.generate("e2e1")
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    runner, fake_base = await start_fake_twilio(fake)
    port = free_port()
    hub_url = f"http://127.0.0.1:{port}"
    mail: dict[str, Any] = {}
    mail_env: dict[str, str] = {}
    if relay is not None:
        mail = {"smtp_url": relay.url, "email_from": f"Demo Clinic <{CLINIC_EMAIL}>"}
        mail_env = {"HUB_SMTP_URL": relay.url, "HUB_EMAIL_FROM": mail["email_from"]}
    settings = Settings(
        database_url=db_url,
        redis_url=redis_url,
        keys=ring,
        public_url=hub_url,
        port=port,
        var_dir=tmp_path / "var",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_base=fake_base,
        twilio_from_number=CLINIC_NUMBER,
        send_retry_base_s=0.2,
        journey_lease_s=2.0,
        send_stuck_s=5.0,
        log_format="text",
        **mail,
    )
    db = Database.connect(db_url)
    app = create_app(settings)
    await aiohttp_server(app, port=port)
    staff = await make_staff(db)
    async with db.transaction() as session:
        # The admins' weekly summary is due on any Monday after 08:00: left on, a run on a
        # Monday would find one more mail at the relay than the test sent
        # (tests/test_reports_weekly.py tests the mail itself).
        await put_setting_in(session, weekly.ENABLED_KEY, False)
    worker_log = tmp_path / "worker.log"
    clock_file = tmp_path / "clock"
    clock_file.write_text("0")
    monkeypatch.setenv(CLOCK_FILE_ENV, str(clock_file))
    env = hub_env(
        HUB_DATABASE_URL=sync_url(db_url),
        HUB_REDIS_URL=redis_url,
        HUB_KEYS=ring.to_spec(),
        HUB_PUBLIC_URL=hub_url,
        HUB_VAR_DIR=str(tmp_path / "var"),
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_API_BASE=fake_base,
        TWILIO_FROM_NUMBER=CLINIC_NUMBER,
        HUB_SEND_RETRY_BASE_SECONDS="0.2",
        HUB_JOURNEY_LEASE_SECONDS="2",
        HUB_SEND_STUCK_SECONDS="5",
        HUB_LOG_LEVEL="DEBUG",
        HUB_CLOCK_FILE=str(clock_file),
        **mail_env,
    )
    with worker_log.open("ab") as log_file:
        stack = Stack(settings, db, ring, fake, app, staff, worker_log, hub_url, clock_file)
        stack.worker_env, stack.log_file = env, log_file
        stack.start_worker()
        try:
            yield stack
        finally:
            stack.stop_worker()
            await runner.cleanup()
            await db.dispose()


@pytest.fixture
async def stack(
    fresh_db_url: str,
    redis_url: str,
    aiohttp_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Stack]:
    async with running_stack(
        fresh_db_url, redis_url, aiohttp_server, tmp_path, monkeypatch
    ) as stack:
        yield stack


@pytest.fixture
async def relay() -> AsyncIterator[FakeSmtp]:
    """The clinic's SMTP relay (aiosmtpd): keeps every mail the hub sends."""
    server = FakeSmtp()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def mail_stack(
    fresh_db_url: str,
    redis_url: str,
    aiohttp_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    relay: FakeSmtp,
) -> AsyncIterator[Stack]:
    """The whole hub with email connected through ``relay``."""
    async with running_stack(
        fresh_db_url, redis_url, aiohttp_server, tmp_path, monkeypatch, relay=relay
    ) as stack:
        yield stack
