"""Shared fixtures.

SQLite and the embedded Redis by default; PostgreSQL and a Redis server when
HUB_TEST_DATABASE_URL / HUB_TEST_REDIS_URL are set. The schema is migrated once per run into a
database made for the run; each test's ``db`` is a transaction rolled back afterwards. Tests
that need committed data (other processes, concurrency) take ``fresh_db_url`` instead.

Under pytest-xdist (``make test`` runs two workers) each worker has its own databases (named by
process) and its own Redis db: HUB_TEST_REDIS_URL's db for the first worker, the one below it
for the next (db 15, 14, ...), so one worker's flush never empties another's queues.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

from hub.config import Settings, parse_database_url
from hub.crypto import KeyRing
from hub.db import Database, create_engine
from hub.embedded_redis import EmbeddedRedis
from hub.migrations import upgrade_url

T = TypeVar("T")

pytest_plugins = ["tests.stack", "tests.browser"]

PG_URL = os.environ.get("HUB_TEST_DATABASE_URL") or None
REDIS_URL = os.environ.get("HUB_TEST_REDIS_URL") or None
ON_POSTGRES = PG_URL is not None


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, off any running event loop."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


async def _admin_execute(statement: str) -> None:
    import asyncpg

    assert PG_URL is not None
    dsn = PG_URL.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _pg_url_for(name: str) -> str:
    assert PG_URL is not None
    parts = urlsplit(parse_database_url(PG_URL))
    return urlunsplit(parts._replace(path=f"/{name}"))


class DatabaseFactory:
    """Creates migrated databases for the run and drops them at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.created: list[str] = []

    def create(self) -> str:
        if ON_POSTGRES:
            name = f"hub_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
            run_sync(_admin_execute(f'CREATE DATABASE "{name}"'))
            self.created.append(name)
            url = _pg_url_for(name)
        else:
            url = f"sqlite+aiosqlite:///{self.root / f'{uuid.uuid4().hex[:8]}.db'}"
        run_sync(upgrade_url(url))
        return url

    def drop_all(self) -> None:
        for name in self.created:
            run_sync(_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


TEST_MAIL_DOMAIN = "example.org"
"""Test mail comes from this domain; its SPF record (below) lists the loopback addresses."""


def default_test_dns() -> Any:
    """The DNS every test app's sender checks see, unless a test gives its own table: test
    mail from example.org is sent from this machine, which the domain's SPF allows, as a
    patient's real mail server is allowed by theirs. Any other domain has no records."""
    from fakes.dns import FakeResolver

    return FakeResolver().txt(TEST_MAIL_DOMAIN, "v=spf1 ip4:127.0.0.1 ip6:::1 -all")


@pytest.fixture(autouse=True)
def no_real_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches the internet's DNS (sender checks of inbound mail)."""
    monkeypatch.setattr("web.email.DnsResolver", default_test_dns)


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory.mktemp("db"))
    yield factory
    factory.drop_all()


@pytest.fixture(scope="session")
def database_url(database_factory: DatabaseFactory) -> str:
    """The run's migrated database (async URL)."""
    return database_factory.create()


@pytest.fixture
def fresh_db_url(database_factory: DatabaseFactory) -> str:
    """A migrated database of the test's own, for committed data and other processes."""
    return database_factory.create()


def _worker_redis_url(url: str) -> str:
    """This xdist worker's own db on the given Redis (see the module's docstring)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker.removeprefix("gw")) if worker.startswith("gw") else 0
    if index == 0:
        return url
    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0) - index
    if db < 0:
        raise pytest.UsageError(f"HUB_TEST_REDIS_URL's db leaves no Redis db for {worker}")
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    if REDIS_URL is not None:
        yield _worker_redis_url(REDIS_URL)
        return
    # A short directory: unix socket paths are limited to ~100 bytes.
    var = Path(tempfile.mkdtemp(prefix="hubr"))
    embedded = EmbeddedRedis(var)
    try:
        yield embedded.start()
    finally:
        embedded.stop()
        shutil.rmtree(var, ignore_errors=True)


@pytest.fixture
def fresh_redis(redis_url: str) -> None:
    """Sessions, login counters and queues live in Redis; start without the last test's."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.generate("t1")


@pytest.fixture
def settings(database_url: str, redis_url: str, ring: KeyRing, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        keys=ring,
        public_url="https://hub.test-clinic.example.org",
        var_dir=tmp_path / "var",
        log_format="text",
        clinic_name="Demo Clinic",
        clinic_phone="+15550109999",
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """Sessions inside one outer transaction that is rolled back after the test."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            outer = await conn.begin()
            yield Database.bound_to(conn)
            await outer.rollback()
    finally:
        await engine.dispose()


@pytest.fixture
async def committed_db(fresh_db_url: str) -> AsyncIterator[Database]:
    database = Database.connect(fresh_db_url)
    try:
        yield database
    finally:
        await database.dispose()


def hub_env(**overrides: str) -> dict[str, str]:
    """Environment for a `hub` subprocess: no inherited HUB_* settings besides the overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "TWILIO_"))}
    env.update(overrides)
    return env


def sync_url(async_url: str) -> str:
    """The user-facing URL form (as an operator would set HUB_DATABASE_URL)."""
    return async_url.replace("postgresql+asyncpg://", "postgresql://").replace(
        "sqlite+aiosqlite://", "sqlite://"
    )


async def make_staff(
    db: Database,
    email: str = "dana.agent@demo-clinic.example.org",
    *,
    role: str = "admin",
    teams: tuple[str, ...] = (),
    password: str = "correct horse battery",
) -> Any:
    """A staff member and the StaffContext they act with."""
    from hub.audit import Actor
    from hub.enums import Role
    from hub.inbox import actions
    from hub.inbox.access import StaffContext
    from hub.inbox.models import StaffUser
    from hub.inbox.schemas import NewStaffUser

    for team in teams:
        await actions.do_ensure_team(db, Actor.system("test"), team)
    staff_id = await actions.do_add_staff_user(
        db,
        Actor.system("test"),
        NewStaffUser(email, email.split("@")[0].title(), password, Role(role), list(teams)),
    )
    async with db.reader() as session:
        staff = await session.get(StaffUser, staff_id)
        assert staff is not None
        return StaffContext.of(staff)


@pytest.fixture
def set_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    """Set this process's clock (hub.db.utcnow) to a given instant; it runs on from there. Tests
    whose data has fixed dates use it so they mean the same thing whatever day they run."""
    from hub.clock import CLOCK_FILE_ENV

    path = tmp_path / "clock"
    monkeypatch.setenv(CLOCK_FILE_ENV, str(path))

    def set_to(at: datetime) -> None:
        path.write_text(repr((at - datetime.now(UTC)).total_seconds()))

    return set_to


async def stored_rows(db: Database) -> dict[str, int]:
    """Rows of everything a webhook may write, by table: compared before and after a request
    that must store nothing."""
    from sqlalchemy import func, select

    from hub.consent.models import ConsentRecord
    from hub.inbox.models import (
        Attachment,
        Conversation,
        DeliveryAttempt,
        InboundEvent,
        Message,
        Note,
        Patient,
    )
    from hub.outbox import OutboxEvent

    models = (
        Patient,
        Conversation,
        Message,
        Note,
        Attachment,
        InboundEvent,
        ConsentRecord,
        OutboxEvent,
        DeliveryAttempt,
    )
    async with db.reader() as session:
        return {
            m.__name__: int(await session.scalar(select(func.count()).select_from(m)) or 0)
            for m in models
        }
