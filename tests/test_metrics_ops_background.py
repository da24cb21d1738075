"""Operations metrics kept outside the database rows of a request: refused sign-ins (Redis),
RQ queue depth and age, the tick's lag, the outbox's lag. Each moves when the thing happens."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient
from rq import Queue, SimpleWorker
from sqlalchemy import select

from hub.audit import Actor
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.inbox.actions.staff import do_deactivate_staff
from hub.outbox import OutboxEvent, add_effect
from tests.conftest import make_staff
from tests.metrics_helpers import scrape, twilio_settings, value
from tests.second_factor_helpers import code_for, submit_code, turn_on
from tests.staff_helpers import PASSWORD, sign_in
from web import metrics_ops
from web.app import create_app
from web.sessions import MAX_FAILS_PER_ACCOUNT
from worker.effects import QUEUE_NAMES
from worker.tick import TICK_FINISHED_KEY, run_tick

pytestmark = pytest.mark.usefixtures("fresh_redis")

SYSTEM = Actor.system("metrics-test")


@pytest.fixture(autouse=True)
def no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each scrape reads the stores afresh (in production, scrapes within 2 s share a read)."""
    monkeypatch.setattr(metrics_ops, "DEFAULT_REFRESH_S", 0.0)


@pytest.fixture
async def client(db: Database, settings: Settings, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(twilio_settings(settings), db=db))  # type: ignore[no-any-return]


@pytest.fixture
async def plain_client(db: Database, settings: Settings, aiohttp_client: Any) -> TestClient:
    # Plain http, as the test client speaks: under https the sign-in cookies are Secure.
    plain = replace(settings, public_url="http://127.0.0.1")
    return await aiohttp_client(create_app(plain, db=db))  # type: ignore[no-any-return]


# -- sign-ins --------------------------------------------------------------------------------


async def test_refused_sign_ins_are_counted_by_reason_in_redis(
    plain_client: TestClient, db: Database, ring: KeyRing, redis_url: str
) -> None:
    agent = "rowan.agent@demo-clinic.example.org"
    gone = "sam.left@demo-clinic.example.org"
    await make_staff(db, agent, role="agent")
    await make_staff(db, gone, role="agent")
    await do_deactivate_staff(db, SYSTEM, gone, _NoSessions())
    expected = {"bad_password": 0, "unknown_account": 0, "locked": 0, "deactivated": 0}

    assert (await sign_in(plain_client, agent, "wrong password")).status == 401
    expected["bad_password"] += 1
    for _ in range(2):
        assert (await sign_in(plain_client, "nobody@elsewhere.example.org", "x")).status == 401
        expected["unknown_account"] += 1
    for _ in range(MAX_FAILS_PER_ACCOUNT - 1):
        assert (await sign_in(plain_client, agent, "wrong password")).status == 401
        expected["bad_password"] += 1
    assert (await sign_in(plain_client, agent, PASSWORD)).status == 429  # locked now
    expected["locked"] += 1
    assert (await sign_in(plain_client, gone, PASSWORD)).status == 403
    expected["deactivated"] += 1

    text, samples = await scrape(plain_client)
    for reason, n in expected.items():
        assert value(samples, "hub_sign_in_failures_total", reason=reason) == n, reason
    assert value(samples, "hub_sign_in_failures_total", reason="second_factor") == 0
    assert "rowan" not in text and "elsewhere" not in text
    # Kept in Redis, so another `hub serve` (or this one after a restart) shows the same.
    other = redis.Redis.from_url(redis_url)
    try:
        stored = {
            k.decode(): int(v) for k, v in other.hgetall(metrics_ops.SIGN_IN_FAILURES_KEY).items()
        }
    finally:
        other.close()
    assert stored == {k: n for k, n in expected.items() if n}


async def test_a_wrong_second_factor_code_is_counted(
    plain_client: TestClient, db: Database, ring: KeyRing
) -> None:
    email = "quinn.admin@demo-clinic.example.org"
    ctx = await make_staff(db, email, role="admin")
    secret, _codes = await turn_on(db, ring, ctx)
    response = await sign_in(plain_client, email)
    assert response.status == 303
    wrong = "000000" if code_for(secret) != "000000" else "111111"
    assert (await submit_code(plain_client, wrong)).status == 401

    _, samples = await scrape(plain_client)
    assert value(samples, "hub_sign_in_failures_total", reason="second_factor") == 1
    assert value(samples, "hub_sign_in_failures_total", reason="bad_password") == 0


class _NoSessions:
    async def destroy_all_for(self, staff_id: uuid.UUID, keep: str | None = None) -> None:
        return None


# -- queues, tick, outbox ----------------------------------------------------------------------


async def test_a_waiting_job_shows_as_depth_and_age_and_a_failed_one_is_counted(
    client: TestClient, redis_url: str
) -> None:
    connection = redis.Redis.from_url(redis_url)
    try:
        bulk = Queue(QUEUE_NAMES["bulk"], connection=connection)
        _, samples = await scrape(client)
        for name in QUEUE_NAMES.values():
            assert value(samples, "hub_rq_queue_depth", queue=name) == 0
            assert value(samples, "hub_rq_oldest_job_age_seconds", queue=name) == 0

        first = bulk.enqueue("builtins.int", "not a number")
        bulk.enqueue("builtins.int", "42")
        _, samples = await scrape(client)
        assert value(samples, "hub_rq_queue_depth", queue="hub-bulk") == bulk.count == 2
        assert 0 <= (value(samples, "hub_rq_oldest_job_age_seconds", queue="hub-bulk") or -1) < 60

        # Seven minutes later, nobody has taken it (rq stamps enqueued_at; we move it back).
        first.enqueued_at = datetime.now(UTC) - timedelta(minutes=7)
        first.save()
        _, samples = await scrape(client)
        age = value(samples, "hub_rq_oldest_job_age_seconds", queue="hub-bulk") or 0
        assert 7 * 60 <= age < 8 * 60

        # A worker takes both: one fails ("not a number"), the queue empties.
        SimpleWorker([bulk], connection=connection).work(burst=True)
        _, samples = await scrape(client)
        assert value(samples, "hub_rq_queue_depth", queue="hub-bulk") == 0
        assert value(samples, "hub_rq_oldest_job_age_seconds", queue="hub-bulk") == 0
        failed = bulk.failed_job_registry.get_job_count(cleanup=False)
        assert failed == 1
        assert value(samples, "hub_rq_failed_jobs", queue="hub-bulk") == failed
    finally:
        connection.close()


@pytest.mark.slow
async def test_tick_lag_is_infinite_before_any_tick_small_after_one_and_grows_when_it_stops(
    fresh_db_url: str, redis_url: str, settings: Settings, aiohttp_client: Any
) -> None:
    settings = replace(settings, database_url=fresh_db_url)
    db = Database.connect(fresh_db_url)
    try:
        client = await aiohttp_client(create_app(settings, db=db))
        _, samples = await scrape(client)
        assert value(samples, "hub_tick_lag_seconds") == float("inf")
        assert value(samples, "hub_tick_last_finished_timestamp_seconds") == 0

        assert "batches" in await run_tick(settings)
        _, samples = await scrape(client)
        assert 0 <= (value(samples, "hub_tick_lag_seconds") or -1) < 30
        connection = redis.Redis.from_url(redis_url)
        try:
            seconds, _ = connection.time()
            finished = float(connection.get(TICK_FINISHED_KEY) or 0)
            assert abs(finished - seconds) < 30
            assert value(samples, "hub_tick_last_finished_timestamp_seconds") == finished
            # The worker stops: the last tick finished five minutes ago by Redis's clock.
            connection.set(TICK_FINISHED_KEY, repr(finished - 300))
        finally:
            connection.close()
        _, samples = await scrape(client)
        assert 300 <= (value(samples, "hub_tick_lag_seconds") or 0) < 330
    finally:
        await db.dispose()


async def test_outbox_lag_is_the_age_of_the_oldest_unreleased_effect(
    client: TestClient, db: Database
) -> None:
    _, samples = await scrape(client)
    assert value(samples, "hub_outbox_lag_seconds") == 0
    now = utcnow()
    async with db.transaction() as session:
        # An effect no sink can release (as one whose consumer is gone), recorded 3 minutes
        # ago; one released long ago does not count.
        stuck = add_effect(session, "test:nobody-listens", {})
        stuck.created_at = now - timedelta(minutes=3)
        done = add_effect(session, "test:nobody-listens", {})
        done.created_at, done.released_at = now - timedelta(hours=1), now - timedelta(minutes=59)
    async with db.reader() as session:
        pending = (
            await session.scalars(select(OutboxEvent).where(OutboxEvent.released_at.is_(None)))
        ).all()
    oldest = min(e.created_at for e in pending)
    _, samples = await scrape(client)
    lag = value(samples, "hub_outbox_lag_seconds") or 0
    expected = (utcnow() - oldest).total_seconds()
    assert expected - 5 <= lag <= expected
    assert value(samples, "hub_outbox_pending") == len(pending) == 1
