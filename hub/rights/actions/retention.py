"""The retention purge: once a day, in batches, delete what is older than the clinic keeps.

One run per UTC day (``RetentionRun``, keyed by the day). Whoever holds the run's lease works;
each batch is its own transaction, re-checks the lease, deletes at most
``DEFAULT_PURGE_BATCH`` rows of one kind, queues their recordings for deletion at the
provider and adds its counts to the run. A worker that dies mid-run leaves the lease to expire,
and the next job resumes: the batches re-select what is still old, so nothing is deleted twice
or skipped. The run ends with one audit event carrying the totals.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, record
from hub.channels.twilio_voice.events import PROVIDER as VOICE_PROVIDER
from hub.db import Database, utcnow
from hub.inbox.models import Attachment, Message, Note
from hub.rights import queries
from hub.rights.actions.deletions import queue_deletions_in
from hub.rights.models import RetentionRun
from hub.rights.retention import (
    DEFAULT_PURGE_HOUR_UTC,
    SETTING_KEY,
    RetentionInvalid,
    RetentionPolicy,
)
from hub.settings_store import put_setting_in, setting_value

DEFAULT_PURGE_BATCH = 500
"""Rows deleted per transaction: short locks, and a crash loses at most one batch's work."""
PURGE_LEASE = timedelta(minutes=2)
"""A run's lease; every batch renews it, so only a dead or stuck worker lets it expire."""


class LeaseLost(Exception):
    """Another worker took the run over (this one was too slow to renew its lease)."""


@dataclass
class PurgeReport:
    day: str
    ran: bool
    """False when another worker holds today's run, or it is already done."""
    counts: dict[str, int] = field(default_factory=dict)


def run_day(now: datetime) -> str:
    return now.date().isoformat()


async def load_retention(session: AsyncSession) -> RetentionPolicy:
    """The stored policy; a damaged one keeps everything (deleting on a guess is worse)."""
    try:
        return RetentionPolicy.from_data(await setting_value(session, SETTING_KEY))
    except RetentionInvalid:
        return RetentionPolicy()


async def do_get_retention(db: Database) -> RetentionPolicy:
    async with db.reader() as session:
        return await load_retention(session)


async def do_set_retention(db: Database, actor: Actor, policy: RetentionPolicy) -> None:
    async with db.transaction() as session:
        await put_setting_in(session, SETTING_KEY, policy.to_data())
        await record(session, actor, "retention.set", "setting", SETTING_KEY, policy.to_data())


async def do_retention_due(db: Database, now: datetime | None = None) -> bool:
    """Whether today's purge should be started (a cheap read for the tick; the run's own
    lease decides who does it)."""
    now = now or utcnow()
    if now.hour < DEFAULT_PURGE_HOUR_UTC:
        return False
    async with db.reader() as session:
        if not (await load_retention(session)).enabled:
            return False
        run = await session.get(RetentionRun, run_day(now))
    if run is None:
        return True
    return run.finished_at is None and (run.lease_until is None or run.lease_until <= now)


async def do_take_run(db: Database, day: str, holder: str) -> bool:
    """Take (or keep) the lease of ``day``'s run; False when it is finished or another live
    worker holds it. Two workers starting at once: the day's key lets one insert win."""
    now = utcnow()
    try:
        async with db.transaction() as session:
            run = await queries.retention_run_for_update(session, day)
            if run is None:
                session.add(
                    RetentionRun(
                        day=day, started_at=now, holder=holder, lease_until=now + PURGE_LEASE
                    )
                )
                await session.flush()
                return True
            if run.finished_at is not None:
                return False
            if run.holder != holder and run.lease_until is not None and run.lease_until > now:
                return False
            run.holder, run.lease_until = holder, now + PURGE_LEASE
            return True
    except IntegrityError:
        return False  # another worker inserted the day's run first


async def _held(session: AsyncSession, day: str, holder: str, now: datetime) -> RetentionRun:
    run = await queries.retention_run_for_update(session, day)
    if run is None or run.holder != holder or run.finished_at is not None:
        raise LeaseLost(day)
    run.lease_until = now + PURGE_LEASE
    return run


async def _purge_messages(
    session: AsyncSession, before: datetime, limit: int, now: datetime
) -> dict[str, int]:
    ids = await queries.expired_messages(session, before, limit)
    if not ids:
        return {}
    sids = await queries.recording_sids_of(session, ids)
    files = await queries.count_where(session, Attachment, Attachment.message_id.in_(ids))
    await queries.delete_inbound_events(session, ids, sids)
    gone = await queries.delete_where(session, Message, Message.id.in_(ids))
    queued = await queue_deletions_in(session, VOICE_PROVIDER, sids, "retention", now)
    return {"messages": gone, "attachments": files, "provider_deletions": queued}


async def _purge_notes(session: AsyncSession, before: datetime, limit: int) -> dict[str, int]:
    ids = await queries.expired_notes(session, before, limit)
    if not ids:
        return {}
    return {"notes": await queries.delete_where(session, Note, Note.id.in_(ids))}


async def _purge_files(
    session: AsyncSession, before: datetime, limit: int, now: datetime, *, recordings: bool
) -> dict[str, int]:
    found = await queries.expired_attachments(session, before, limit, recordings=recordings)
    if not found:
        return {}
    gone = await queries.delete_where(session, Attachment, Attachment.id.in_([a for a, _ in found]))
    if not recordings:
        return {"attachments": gone}
    sids = await queries.recording_sids_of(session, sorted({m for _, m in found}))
    queued = await queue_deletions_in(session, VOICE_PROVIDER, sids, "retention", now)
    return {"recordings": gone, "provider_deletions": queued}


async def do_purge_batch(
    db: Database, day: str, holder: str, *, batch: int = DEFAULT_PURGE_BATCH
) -> dict[str, int]:
    """Delete one batch of the first kind that still has old rows; {} when none has.
    Raises LeaseLost when this worker no longer holds the run."""
    now = utcnow()
    async with db.transaction() as session:
        run = await _held(session, day, holder, now)
        policy = await load_retention(session)
        done: dict[str, int] = {}
        if (days := policy.days("messages")) is not None:
            before = now - timedelta(days=days)
            done = await _purge_messages(session, before, batch, now)
            done = done or await _purge_notes(session, before, batch)
        if not done and (days := policy.days("recordings")) is not None:
            before = now - timedelta(days=days)
            done = await _purge_files(session, before, batch, now, recordings=True)
        if not done and (days := policy.days("attachments")) is not None:
            before = now - timedelta(days=days)
            done = await _purge_files(session, before, batch, now, recordings=False)
        if done:
            totals = dict(run.counts or {})
            for kind, n in done.items():
                totals[kind] = int(totals.get(kind, 0)) + n
            run.counts = totals  # a new dict: JSON columns see reassignment, not mutation
        return done


async def do_finish_run(db: Database, actor: Actor, day: str, holder: str) -> dict[str, int]:
    """Close the run and write its one audit event; the run's totals."""
    now = utcnow()
    async with db.transaction() as session:
        run = await _held(session, day, holder, now)
        run.finished_at, run.lease_until = now, None
        counts = {k: int(v) for k, v in (run.counts or {}).items()}
        policy = await load_retention(session)
        await record(
            session,
            actor,
            "retention.purge",
            "retention",
            day,
            {"counts": counts, "policy": policy.to_data()},
        )
    return counts


@dataclass(frozen=True)
class RetentionFigures:
    """For /metrics: the last finished run and the deletions still owed by providers."""

    last_finished_at: datetime | None
    last_counts: dict[str, int]
    pending_provider_deletions: int


async def do_retention_figures(db: Database) -> RetentionFigures:
    async with db.reader() as session:
        run = await queries.last_finished_run(session)
        pending = await queries.pending_deletions(session)
    if run is None:
        return RetentionFigures(None, {}, pending)
    counts = {k: int(v) for k, v in (run.counts or {}).items()}
    return RetentionFigures(run.finished_at, counts, pending)


async def purge(
    db: Database,
    actor: Actor,
    *,
    now: datetime | None = None,
    holder: str | None = None,
    batch: int = DEFAULT_PURGE_BATCH,
) -> PurgeReport:
    """Today's run, from wherever it stands to its end (not a transaction itself: each batch
    is one)."""
    day = run_day(now or utcnow())
    holder = holder or uuid.uuid4().hex
    if not await do_take_run(db, day, holder):
        return PurgeReport(day, ran=False)
    try:
        while await do_purge_batch(db, day, holder, batch=batch):
            pass
        return PurgeReport(day, ran=True, counts=await do_finish_run(db, actor, day, holder))
    except LeaseLost:
        return PurgeReport(day, ran=False)
