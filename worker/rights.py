"""Patient-rights work the workers do: the nightly retention purge, and deleting files at the
provider (voicemail recordings at Twilio) that erasure or the purge queued.

The tick only starts them (``start_rights_work``), at most once a minute, as jobs on the
default queue, so a slow provider never holds up claims and sends. Neither job relies on
being the only one: the purge takes its day's lease in the database, and deletions are leased
row by row."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import datetime
from typing import Protocol, runtime_checkable

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from hub.audit import Actor
from hub.channels.base import ChannelError
from hub.channels.registry import resolve_adapter
from hub.config import Settings
from hub.db import Database, utcnow
from hub.errors import HubError
from hub.rights.actions.deletions import (
    DeletionAnswer,
    DueDeletion,
    do_any_due_deletion,
    do_record_deletions,
    do_take_due_deletions,
)
from hub.rights.actions.retention import do_retention_due, purge, run_day
from worker.effects import QUEUE_NAMES
from worker.runtime import job_runtime

log = logging.getLogger(__name__)

RIGHTS_CHECK_KEY = "hub:rights:checked"
RIGHTS_CHECK_EVERY_S = 60
"""How often the tick looks for rights work (a purge to start, deletions due)."""
DELETE_CONCURRENCY = 8
"""Deletions in flight at the provider at once."""
PURGE_JOB = "worker.jobs.retention_purge"
DELETIONS_JOB = "worker.jobs.delete_provider_files"


@runtime_checkable
class RecordingDeleter(Protocol):
    async def delete_recording(self, sid: str) -> None: ...

    async def close(self) -> None: ...


async def sweep_deletions(settings: Settings, db: Database) -> Counter[str]:
    """Ask providers to delete what is due, until nothing due is left; counts by outcome."""
    outcome: Counter[str] = Counter()
    gate = asyncio.Semaphore(DELETE_CONCURRENCY)
    adapters: dict[str, RecordingDeleter] = {}

    async def one(item: DueDeletion) -> DeletionAnswer:
        async with gate:
            try:
                if item.provider not in adapters:
                    made = resolve_adapter(item.provider, settings)
                    if not isinstance(made, RecordingDeleter):
                        await made.close()
                        return DeletionAnswer(item.id, False, f"{item.provider} holds no files")
                    adapters[item.provider] = made
                await adapters[item.provider].delete_recording(item.resource_sid)
            except (ChannelError, HubError) as exc:
                return DeletionAnswer(item.id, False, str(exc)[:500])
            return DeletionAnswer(item.id, True)

    try:
        while due := await do_take_due_deletions(db):
            answers = await asyncio.gather(*(one(item) for item in due))
            await do_record_deletions(db, answers)
            outcome.update("deleted" if a.done else "failed" for a in answers)
            if not any(a.done for a in answers):
                break  # the provider refuses everything now: the backoff asks again later
    finally:
        for adapter in adapters.values():
            await adapter.close()
    if outcome["failed"]:
        log.warning("provider deletions failed", extra={"failed": outcome["failed"]})
    return outcome


async def run_delete_provider_files(settings: Settings | None = None) -> str:
    async with job_runtime(settings) as rt:
        outcome = await sweep_deletions(rt.settings, rt.db)
    return f"deleted: {outcome['deleted']}, failed: {outcome['failed']}"


async def run_retention_purge(settings: Settings | None = None) -> str:
    async with job_runtime(settings) as rt:
        report = await purge(rt.db, Actor.system("retention"))
        outcome = await sweep_deletions(rt.settings, rt.db)
    if not report.ran:
        return f"retention {report.day}: done already or running elsewhere"
    log.info("retention purge", extra={"day": report.day, **report.counts})
    counted = ", ".join(f"{k}: {v}" for k, v in sorted(report.counts.items())) or "nothing old"
    return f"retention {report.day}: {counted}; provider deletions: {outcome['deleted']}"


def _waiting(redis: Redis, job_id: str) -> bool:
    """Whether the day's purge job is queued or running (a finished or failed one may be
    started again: its run's lease decides whether there is anything left to do)."""
    try:
        status = Job.fetch(job_id, connection=redis).get_status()
    except NoSuchJobError:
        return False
    return status in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED)


async def start_rights_work(db: Database, redis: Redis, now: datetime | None = None) -> list[str]:
    """Called by every tick; at most once a minute (across workers) it enqueues today's purge
    when due and a deletion sweep when deletions wait. Returns the jobs it enqueued."""
    if not redis.set(RIGHTS_CHECK_KEY, "1", nx=True, ex=RIGHTS_CHECK_EVERY_S):
        return []
    now = now or utcnow()
    queue = Queue(QUEUE_NAMES["default"], connection=redis)
    started = []
    job_id = f"hub-retention-{run_day(now)}"
    if await do_retention_due(db, now) and not _waiting(redis, job_id):
        queue.enqueue(PURGE_JOB, job_id=job_id, failure_ttl=86400)
        started.append(PURGE_JOB)
    if await do_any_due_deletion(db, now):
        queue.enqueue(DELETIONS_JOB)
        started.append(DELETIONS_JOB)
    return started
