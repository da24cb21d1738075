"""The retention purge: exactly what is older than the clinic keeps goes (messages only from
resolved conversations; files; recordings at Twilio too), once a day however many workers
race for it, resumable after a crash, audited once per run with its counts."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from rq.registry import FinishedJobRegistry
from sqlalchemy import func, select, update

from fakes.twilio import FakeTwilio, start_fake_twilio
from hub.audit import Actor, AuditEvent, verify
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import ConversationStatus
from hub.inbox.models import Attachment, Conversation, InboundEvent, Message, Note
from hub.rights.actions.deletions import do_take_due_deletions
from hub.rights.actions.retention import (
    LeaseLost,
    do_purge_batch,
    do_retention_due,
    do_set_retention,
    do_take_run,
    purge,
    run_day,
)
from hub.rights.models import ProviderDeletion, RetentionRun
from hub.rights.retention import RetentionInvalid, RetentionPolicy
from tests.rights_helpers import Seeded, hub_command, hub_environment, seed_patient
from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN
from web.app import create_app
from worker.effects import QUEUE_NAMES
from worker.rights import RIGHTS_CHECK_KEY, run_retention_purge, start_rights_work, sweep_deletions

POLICY = RetentionPolicy(messages_days=30, attachments_days=10, recordings_days=5)
ADMIN = Actor.staff("00000000-0000-7000-8000-0000000000ad")


async def _resolve(db: Database, seeded: Seeded) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(Conversation)
            .where(Conversation.id == seeded.conversation_id)
            .values(status=ConversationStatus.RESOLVED, resolved_at=utcnow())
        )


async def _clinic(db: Database, ring: KeyRing) -> dict[str, Seeded]:
    """Four patients: resolved 40 days ago, still open 40 days ago, resolved 7 days ago,
    yesterday."""
    now = utcnow()
    made = {}
    for key, days in [("old", 40), ("open", 40), ("week", 7), ("new", 1)]:
        made[key] = await seed_patient(
            db,
            ring,
            at=now - timedelta(days=days),
            name=f"Pat {key.title()}",
            phone=f"+1 555 014 {1000 + days + len(key)}",
            email=f"{key}@example.org",
        )
        if key != "open":
            await _resolve(db, made[key])
    return made


async def _left(db: Database, seeded: Seeded) -> dict[str, Any]:
    async with db.reader() as session:
        ids = list(seeded.messages.values())
        messages = await session.scalar(
            select(func.count()).select_from(Message).where(Message.id.in_(ids))
        )
        files = (
            await session.scalars(
                select(Attachment.content_type).where(Attachment.message_id.in_(ids))
            )
        ).all()
        notes = await session.scalar(
            select(func.count())
            .select_from(Note)
            .where(Note.conversation_id == seeded.conversation_id)
        )
        events = await session.scalar(
            select(func.count())
            .select_from(InboundEvent)
            .where(InboundEvent.provider_event_id.startswith(seeded.recording_sid))
        )
    return {"messages": messages, "files": sorted(files), "notes": notes, "voice_events": events}


@pytest.fixture
def job_settings(settings: Settings, fresh_db_url: str, ring: KeyRing) -> Settings:
    return replace(
        settings,
        database_url=fresh_db_url,
        keys=ring,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
    )


def test_retention_policy_reads_only_sane_day_counts() -> None:
    assert not RetentionPolicy.from_data(None).enabled
    policy = RetentionPolicy.from_data({"messages_days": 365, "recordings_days": None})
    assert policy.enabled and policy.days("messages") == 365 and policy.days("recordings") is None
    assert RetentionPolicy.from_data(policy.to_data()) == policy
    for bad in [{"messages_days": 0}, {"messages_days": "30"}, {"messages_days": True}, {"x": 1}]:
        with pytest.raises(RetentionInvalid):
            RetentionPolicy.from_data(bad)


async def test_nothing_is_due_while_retention_is_off(db: Database) -> None:
    three_am = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    assert not await do_retention_due(db, three_am)
    await do_set_retention(db, ADMIN, POLICY)
    assert await do_retention_due(db, three_am)
    assert not await do_retention_due(db, three_am.replace(hour=1))  # before the nightly hour


async def test_purge_deletes_exactly_the_old_items_and_their_recordings_at_twilio(
    committed_db: Database, job_settings: Settings, ring: KeyRing
) -> None:
    await do_set_retention(committed_db, ADMIN, POLICY)
    made = await _clinic(committed_db, ring)
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    runner, base = await start_fake_twilio(fake)
    for seeded in made.values():
        fake.add_recording(seeded.recording_sid)
    settings = replace(job_settings, twilio_api_base=base)
    try:
        said = await run_retention_purge(settings)
        again = await run_retention_purge(settings)
    finally:
        await runner.cleanup()

    every_file = ["application/pdf", "audio/mpeg", "image/jpeg"]
    assert await _left(committed_db, made["old"]) == {
        "messages": 0,
        "files": [],
        "notes": 0,
        "voice_events": 0,  # the raw webhooks (caller's number, transcript) went too
    }
    # Still open: every message stays, whatever its age; its files do not.
    assert await _left(committed_db, made["open"]) == {
        "messages": 4,
        "files": [],
        "notes": 1,
        "voice_events": 2,
    }
    # A week old: past the recordings' 5 days, inside the files' 10 and messages' 30.
    week = await _left(committed_db, made["week"])
    files = ["application/pdf", "image/jpeg"]
    assert week == {"messages": 4, "files": files, "notes": 1, "voice_events": 2}
    assert await _left(committed_db, made["new"]) == {
        "messages": 4,
        "files": every_file,
        "notes": 1,
        "voice_events": 2,
    }
    assert sorted(fake.deleted_recordings) == sorted(
        made[k].recording_sid for k in ("old", "open", "week")
    )
    assert fake.has_recording(made["new"].recording_sid)

    async with committed_db.reader() as session:
        events = (
            await session.scalars(select(AuditEvent).where(AuditEvent.action == "retention.purge"))
        ).all()
        assert (await verify(session)).ok
    [event] = events  # one per run, and the second run found today's done
    assert event.subject_id == run_day(utcnow())
    assert event.detail["counts"] == {
        "messages": 4,
        "notes": 1,
        "attachments": 3 + 2,  # the old patient's three with their messages, the open one's two
        "recordings": 2,
        "provider_deletions": 3,
    }
    assert "recordings: 2" in said and "provider deletions: 3" in said
    assert "done already" in again


async def test_two_workers_racing_purge_once_and_delete_each_recording_once(
    fresh_db_url: str, job_settings: Settings, ring: KeyRing
) -> None:
    setup = Database.connect(fresh_db_url)
    try:
        await do_set_retention(setup, ADMIN, POLICY)
        made = await _clinic(setup, ring)
    finally:
        await setup.dispose()
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, api_latency=0.05)
    runner, base = await start_fake_twilio(fake)
    for seeded in made.values():
        fake.add_recording(seeded.recording_sid)
    settings = replace(job_settings, twilio_api_base=base)
    try:
        said = await asyncio.gather(*(run_retention_purge(settings) for _ in range(3)))
    finally:
        await runner.cleanup()
    assert sum("done already or running elsewhere" in s for s in said) == 2, said
    deletes = [r for r in fake.requests if r.method == "DELETE"]
    assert len(deletes) == 3 and all(r.status == 204 for r in deletes)
    db = Database.connect(fresh_db_url)
    try:
        async with db.reader() as session:
            runs = await session.scalar(
                select(func.count()).where(AuditEvent.action == "retention.purge")
            )
        assert runs == 1
        assert (await _left(db, made["old"]))["messages"] == 0
    finally:
        await db.dispose()


async def test_a_run_whose_worker_died_is_resumed_and_counted_once(
    committed_db: Database, ring: KeyRing
) -> None:
    await do_set_retention(committed_db, ADMIN, RetentionPolicy(messages_days=30))
    old = [
        await seed_patient(
            committed_db, ring, at=utcnow() - timedelta(days=60), phone=f"+1 555 015 100{n}"
        )
        for n in range(3)
    ]
    for seeded in old:
        await _resolve(committed_db, seeded)
    day = run_day(utcnow())
    assert await do_take_run(committed_db, day, "worker-a")
    assert not await do_take_run(committed_db, day, "worker-b")  # the lease is held
    first = await do_purge_batch(committed_db, day, "worker-a", batch=5)
    assert first["messages"] == 5
    # worker-a dies here. Its lease runs out...
    async with committed_db.transaction() as session:
        await session.execute(
            update(RetentionRun).values(lease_until=utcnow() - timedelta(seconds=1))
        )
    report = await purge(committed_db, Actor.system("retention"), holder="worker-b", batch=5)
    assert report.ran
    assert report.counts["messages"] == 12 and report.counts["notes"] == 3
    with pytest.raises(LeaseLost):
        await do_purge_batch(committed_db, day, "worker-a")  # it came back too late
    async with committed_db.reader() as session:
        runs = (
            await session.scalars(select(AuditEvent).where(AuditEvent.action == "retention.purge"))
        ).all()
    assert [r.detail["counts"]["messages"] for r in runs] == [12]


async def test_a_failed_twilio_deletion_is_asked_again_after_a_backoff(
    committed_db: Database, job_settings: Settings, ring: KeyRing
) -> None:
    sid = "RE" + uuid.uuid4().hex
    async with committed_db.transaction() as session:
        session.add(ProviderDeletion(provider="twilio_voice", resource_sid=sid, reason="erasure"))
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    runner, base = await start_fake_twilio(fake)
    fake.add_recording(sid)
    fake.script_recording_deletes(503)
    settings = replace(job_settings, twilio_api_base=base)
    try:
        first = await sweep_deletions(settings, committed_db)
        assert first == {"failed": 1}
        assert fake.has_recording(sid)
        assert await do_take_due_deletions(committed_db) == []  # backing off
        async with committed_db.transaction() as session:
            row = (await session.scalars(select(ProviderDeletion))).one()
            assert row.attempts == 1 and row.last_error == "Twilio answered 503 (error 20503)"
            row.next_attempt_at = utcnow()  # the backoff has passed
        second = await sweep_deletions(settings, committed_db)
    finally:
        await runner.cleanup()
    assert second == {"deleted": 1}
    assert fake.deleted_recordings == [sid]
    async with committed_db.reader() as session:
        row = (await session.scalars(select(ProviderDeletion))).one()
    assert row.done_at is not None and row.attempts == 2


async def test_the_tick_starts_todays_purge_once_and_a_worker_runs_it(
    committed_db: Database,
    job_settings: Settings,
    ring: KeyRing,
    redis_url: str,
    fresh_redis: None,
    tmp_path: Path,
) -> None:
    await do_set_retention(committed_db, ADMIN, POLICY)
    old = await seed_patient(committed_db, ring, at=utcnow() - timedelta(days=40))
    await _resolve(committed_db, old)
    redis = Redis.from_url(redis_url)
    try:
        three_am = utcnow().replace(hour=3)
        assert await start_rights_work(committed_db, redis, three_am) == [
            "worker.jobs.retention_purge"
        ]
        queue = Queue(QUEUE_NAMES["default"], connection=redis)
        assert [j.func_name for j in queue.jobs] == ["worker.jobs.retention_purge"]
        # Every other tick this minute, from any worker, leaves it at that.
        assert await start_rights_work(committed_db, redis, three_am) == []
        redis.delete(RIGHTS_CHECK_KEY)
        # A minute later, the job not yet taken by a worker: not queued a second time.
        assert await start_rights_work(committed_db, redis, three_am) == []
        assert [j.func_name for j in queue.jobs] == ["worker.jobs.retention_purge"]

        # `hub worker` takes it, configured from its environment.
        env = hub_environment(replace(job_settings, redis_url=redis_url), tmp_path)
        code, _, err = await hub_command(env, "worker", "--burst")
        assert code == 0, err
        [job_id] = FinishedJobRegistry(queue=queue).get_job_ids()
        job = queue.fetch_job(job_id)
        assert job is not None and "messages: 4" in str(job.return_value())
    finally:
        redis.close()
    assert (await _left(committed_db, old))["messages"] == 0


async def test_hub_retention_set_and_show(
    committed_db: Database, job_settings: Settings, tmp_path: Path
) -> None:
    env = hub_environment(job_settings, tmp_path)
    code, said, err = await hub_command(env, "retention", "set", "--messages-days", "365")
    assert code == 0, err
    code, said, err = await hub_command(env, "retention", "set", "--recordings-days", "30")
    assert code == 0, err
    assert said.strip() == "messages: 365 days, attachments: kept, recordings: 30 days"
    code, said, err = await hub_command(env, "retention", "set", "--messages-days", "off")
    assert code == 0, err
    code, said, _ = await hub_command(env, "retention", "show")
    assert said.strip() == "messages: kept, attachments: kept, recordings: 30 days"
    code, _, err = await hub_command(env, "retention", "set", "--attachments-days", "99999999")
    assert code == 1 and "whole number of days from 1 to 36500" in err
    async with committed_db.reader() as session:
        changes = await session.scalar(
            select(func.count()).where(AuditEvent.action == "retention.set")
        )
    assert changes == 3


async def test_metrics_show_the_last_purge_and_deletions_owed(
    db: Database, settings: Settings, aiohttp_client: Any, fresh_redis: None
) -> None:
    finished = datetime(2026, 12, 6, 2, 0, 5, tzinfo=UTC)
    async with db.transaction() as session:
        session.add(
            RetentionRun(
                day="2026-12-06",
                started_at=finished - timedelta(seconds=5),
                finished_at=finished,
                counts={"messages": 12, "recordings": 2},
            )
        )
        session.add(RetentionRun(day="2026-12-07", started_at=finished, counts={"messages": 1}))
        session.add(ProviderDeletion(provider="twilio_voice", resource_sid="RE1", reason="erasure"))
    client = await aiohttp_client(create_app(settings, db=db))
    text = await (await client.get("/metrics")).text()
    [line] = [t for t in text.splitlines() if t.startswith("hub_retention_last_run_timestamp")]
    assert float(line.split()[1]) == finished.timestamp()
    assert 'hub_retention_last_run_deleted{kind="messages"} 12.0' in text  # not the unfinished
    assert 'hub_retention_last_run_deleted{kind="recordings"} 2.0' in text
    assert "hub_provider_deletions_pending 1.0" in text
