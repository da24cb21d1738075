"""A full disk or a read-only database: signed webhooks get 503 with Retry-After and store
nothing, /healthz says why, and the provider's retry after the fault clears is stored once.

The disk is made "full" with SQLite's ``PRAGMA max_page_count`` set to the pages the file has
(SQLite then raises SQLITE_FULL exactly as on a full disk), with a text long enough to need a
new page. Read-only is a database file the process may not write (chmod, or the immutable
attribute when the tests run as root, who ignores file modes), or on PostgreSQL a database set
to ``default_transaction_read_only`` as after a failover to a replica.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from hub.config import Settings
from hub.db import Database
from hub.storage_faults import (
    DISK_FULL,
    READ_ONLY,
    StorageWatch,
    storage_fault,
    storage_watch,
)
from tests.conftest import ON_POSTGRES, stored_rows
from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN, CLINIC_NUMBER, fixture, sign
from web.app import create_app

PUBLIC = "https://hub.test-clinic.example.org"
EMAIL_SECRET = "whsec-storage-faults"
VOICE_FIXTURES = Path(__file__).resolve().parent.parent / "hub/channels/twilio_voice/fixtures"
# A long text in a script of three UTF-8 bytes a character: its ciphertext cannot fit in any
# page the database already has, so storing it needs a new one.
LONG_BODY = "请把我的预约改到星期五下午可以吗谢谢" * 80

sqlite_only = pytest.mark.skipif(ON_POSTGRES, reason="SQLite's own file and page limit")


@pytest.fixture
def fault_settings(settings: Settings, fresh_db_url: str) -> Settings:
    return replace(
        settings,
        database_url=fresh_db_url,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from_number=CLINIC_NUMBER,
        public_url=PUBLIC,
        email_webhook_secret=EMAIL_SECRET,
    )


@pytest.fixture
async def fault_db(fault_settings: Settings) -> AsyncIterator[Database]:
    """Committed data, as a real hub has: a fault must leave nothing half-written behind."""
    database = Database.connect(fault_settings.database_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def client(fault_db: Database, fault_settings: Settings, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(fault_settings, db=fault_db))  # type: ignore[no-any-return]


def sms(body: str = "Can I move my appointment to Friday?") -> dict[str, str]:
    params = dict(fixture("inbound_sms")["params"])
    params["Body"] = body
    return params


def mail(body: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Rowan Testpatient <rowan.testpatient@mail.example.org>"
    message["To"] = "clinic@demo-clinic.example.org"
    message["Subject"] = "My appointment"
    message["Message-ID"] = "<storage-fault-1@mail.example.org>"
    message.set_content(body)
    return bytes(message)


def recording() -> dict[str, str]:
    data = json.loads((VOICE_FIXTURES / "record_action.json").read_text())
    return dict(data["params"])


async def post_webhook(client: TestClient, kind: str, body: str = LONG_BODY) -> Any:
    """One signed delivery, byte for byte what the provider sends again on a retry."""
    if kind == "email":
        raw = mail(body)
        digest = hmac.new(EMAIL_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        headers = {"X-Hub-Signature-256": f"sha256={digest}"}
        return await client.post("/webhooks/email/inbound", data=raw, headers=headers)
    path, params = (
        ("/webhooks/twilio/sms", sms(body))
        if kind == "sms"
        else ("/webhooks/twilio/voice/recording", recording())
    )
    headers = {"X-Twilio-Signature": sign(PUBLIC + path, params)}
    return await client.post(path, data=params, headers=headers)


async def assert_refused_for_now(response: Any) -> None:
    assert response.status == 503, await response.text()
    assert response.headers["Retry-After"].isdigit()
    body = await response.text()
    assert "try again" in body


async def health(client: TestClient) -> tuple[int, dict[str, Any]]:
    response = await client.get("/healthz")
    return response.status, await response.json()


def sqlite_file(database: Database) -> Path:
    assert database.engine.url.database is not None
    return Path(database.engine.url.database)


@contextlib.asynccontextmanager
async def pages_capped(database: Database) -> AsyncIterator[None]:
    """Every new connection may not grow the file past the pages it has now: a full disk."""
    path = sqlite_file(database)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("VACUUM")  # no free pages left inside the file to fill first
        pages = conn.execute("PRAGMA page_count").fetchone()[0]

    def cap(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.cursor().execute(f"PRAGMA max_page_count={pages}")

    await database.engine.dispose()
    event.listen(database.engine.sync_engine, "connect", cap)
    try:
        yield
    finally:
        event.remove(database.engine.sync_engine, "connect", cap)
        await database.engine.dispose()  # the space is back for every connection


@contextlib.asynccontextmanager
async def file_read_only(database: Database) -> AsyncIterator[None]:
    """The database file may not be written by this process (as after a chmod or a
    read-only remount), for connections opened from now on."""
    path = sqlite_file(database)
    if os.geteuid() == 0:  # root ignores file modes; the immutable attribute binds root too
        made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if made.returncode != 0:
            pytest.skip(f"cannot make a file read-only as root here: {made.stderr!r}")
        undo = ["chattr", "-i", str(path)]
    else:
        mode = path.stat().st_mode
        path.chmod(0o444)
        undo = []
    await database.engine.dispose()
    try:
        yield
    finally:
        if undo:
            subprocess.run(undo, check=True)
        else:
            path.chmod(mode)


async def test_storage_fault_names_each_cause() -> None:
    def sqlite_error(message: str, code: int) -> sqlite3.OperationalError:
        exc = sqlite3.OperationalError(message)
        exc.sqlite_errorcode = code
        return exc

    class PgError(Exception):
        def __init__(self, sqlstate: str) -> None:
            self.sqlstate = sqlstate

    assert storage_fault(sqlite_error("database or disk is full", 13)) == DISK_FULL
    assert storage_fault(sqlite_error("attempt to write a readonly database", 8)) == READ_ONLY
    assert storage_fault(sqlite_error("disk I/O error", 778)) == "I/O error"  # IOERR_WRITE
    assert storage_fault(sqlite_error("database is locked", 5)) is None
    wrapped = OperationalError("INSERT ...", {}, PgError("53100"))
    assert storage_fault(wrapped) == DISK_FULL
    assert storage_fault(OperationalError("INSERT ...", {}, PgError("25006"))) == READ_ONLY
    assert storage_fault(OperationalError("INSERT ...", {}, PgError("23505"))) is None
    assert storage_fault(ValueError("not a database error")) is None


async def test_a_remembered_fault_lapses_after_the_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("hub.storage_faults.time.monotonic", lambda: now[0])
    watch = StorageWatch(hold_s=60)
    watch.record(DISK_FULL)
    now[0] += 59
    assert watch.fault == DISK_FULL
    now[0] += 2
    assert watch.fault is None


@sqlite_only
@pytest.mark.parametrize("kind", ["sms", "email"])
async def test_full_disk_is_503_with_retry_after_and_the_retry_is_stored_once(
    client: TestClient, fault_db: Database, kind: str
) -> None:
    assert (await health(client))[0] == 200
    before = await stored_rows(fault_db)
    async with pages_capped(fault_db):
        for _ in range(2):  # the provider retries while the disk is still full
            await assert_refused_for_now(await post_webhook(client, kind))
        assert await stored_rows(fault_db) == before
        status, body = await health(client)
        assert status == 503
        assert body["checks"]["database"] == "error: disk full"
        assert body["checks"]["redis"] == "ok"

    response = await post_webhook(client, kind)  # room again: the provider's next retry
    assert response.status == 200, await response.text()
    stored = await stored_rows(fault_db)
    assert stored["Message"] == before["Message"] + 1
    assert (await post_webhook(client, kind)).status == 200  # a late duplicate changes nothing
    assert await stored_rows(fault_db) == stored
    healthy = {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}
    assert await health(client) == (200, healthy)


@sqlite_only
@pytest.mark.parametrize("kind", ["sms", "email", "voice"])
async def test_read_only_database_file_is_503_and_health_says_read_only(
    client: TestClient, fault_db: Database, kind: str
) -> None:
    before = await stored_rows(fault_db)
    async with file_read_only(fault_db):
        # Seen before any write fails: a monitor hears of it before the first patient does.
        status, body = await health(client)
        assert (status, body["checks"]["database"]) == (503, "error: read-only")
        await assert_refused_for_now(await post_webhook(client, kind, "Is Friday possible?"))
        assert await stored_rows(fault_db) == before
        status, body = await health(client)
        assert (status, body["checks"]["database"]) == (503, "error: read-only")

    await fault_db.engine.dispose()
    assert (await post_webhook(client, kind, "Is Friday possible?")).status == 200
    stored = await stored_rows(fault_db)
    assert stored["Message"] == before["Message"] + 1
    assert (await health(client))[0] == 200


@sqlite_only
async def test_a_read_only_connection_is_named_and_forgotten_at_the_next_committed_write(
    client: TestClient, fault_db: Database
) -> None:
    """A connection SQLite opened read-only while the file itself looks writable: /healthz
    names it from the failure, and stops the moment a write commits again (not after the
    hold, which would keep a recovered hub out of its load balancer for a minute)."""

    def read_only(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.cursor().execute("PRAGMA query_only=ON")

    await fault_db.engine.dispose()
    event.listen(fault_db.engine.sync_engine, "connect", read_only)
    try:
        await assert_refused_for_now(await post_webhook(client, "sms", "Friday?"))
        assert (await health(client))[1]["checks"]["database"] == "error: read-only"
    finally:
        event.remove(fault_db.engine.sync_engine, "connect", read_only)
    await fault_db.engine.dispose()
    assert storage_watch(fault_db.engine).fault == READ_ONLY
    assert (await post_webhook(client, "sms", "Friday?")).status == 200
    assert storage_watch(fault_db.engine).fault is None
    assert (await health(client))[0] == 200


@pytest.mark.postgres
@pytest.mark.skipif(not ON_POSTGRES, reason="needs PostgreSQL (HUB_TEST_DATABASE_URL)")
async def test_read_only_postgres_is_503_and_health_says_read_only(
    client: TestClient, fault_db: Database, fault_settings: Settings
) -> None:
    from tests.conftest import _admin_execute

    name = urlsplit(fault_settings.database_url).path.lstrip("/")
    before = await stored_rows(fault_db)
    await _admin_execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    try:
        await fault_db.engine.dispose()  # new sessions take the database's new default
        async with fault_db.reader() as session:
            assert await session.scalar(text("SHOW transaction_read_only")) == "on"
        status, body = await health(client)
        assert (status, body["checks"]["database"]) == (503, "error: read-only")
        for kind in ("sms", "email"):
            await assert_refused_for_now(await post_webhook(client, kind, "Friday?"))
        assert await stored_rows(fault_db) == before
    finally:
        await _admin_execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
    await fault_db.engine.dispose()
    assert (await post_webhook(client, "sms", "Friday?")).status == 200
    assert (await stored_rows(fault_db))["Message"] == before["Message"] + 1
    assert (await health(client))[0] == 200


async def test_metrics_give_the_free_space_a_disk_alert_watches(
    client: TestClient, fault_settings: Settings
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    fault_settings.var_dir.mkdir(parents=True, exist_ok=True)
    text_body = await (await client.get("/metrics")).text()
    free = {
        sample.labels["volume"]: sample.value
        for family in text_string_to_metric_families(text_body)
        if family.name == "hub_storage_free_bytes"
        for sample in family.samples
    }
    expected_volumes = {"var"} if ON_POSTGRES else {"database", "var"}
    assert set(free) == expected_volumes
    assert all(value > 0 for value in free.values())


async def test_a_person_meets_an_outage_as_a_page_in_words(
    settings: Settings, aiohttp_client: Any
) -> None:
    """A browser gets an HTML page (a title, the language, what to do) where a program gets
    JSON, for an outage (503) and for a fault (500) alike."""
    from aiohttp import web

    from web.keys import METRICS, SETTINGS
    from web.metrics import Metrics
    from web.middleware import error_middleware

    async def locked(request: web.Request) -> web.Response:
        raise OperationalError("UPDATE x", {}, sqlite3.OperationalError("database is locked"))

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app.router.add_get("/locked", locked)
    app.router.add_get("/broken", broken)
    client = await aiohttp_client(app)
    for path, status, title in (
        ("/locked", 503, "Try again in a moment"),
        ("/broken", 500, "Something went wrong"),
    ):
        page = await client.get(path, headers={"Accept": "text/html"})
        assert page.status == status
        assert page.content_type == "text/html"
        html = await page.text()
        assert f"<title>{title}</title>" in html and '<html lang="en">' in html
        program = await client.get(path, headers={"Accept": "application/json"})
        assert (await program.json())["error"]["status"] == status
    assert (await client.get("/locked")).headers["Retry-After"].isdigit()
