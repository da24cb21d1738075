"""The queue of files to delete at a provider (voicemail recordings at Twilio).

Erasure and the purge queue a recording in the transaction that deletes the hub's copy; a
sweep (the worker, and the erase command right after committing) takes due rows with a lease,
asks the provider, and records the answer: deleted (or already gone) ends the row, anything
else is asked again after a backoff. So a provider outage delays a deletion, never loses it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from hub.db import Database, utcnow
from hub.rights import queries
from hub.rights.models import ProviderDeletion

DEFAULT_DELETION_BATCH = 50
"""Deletions one sweep takes at once."""
DELETION_LEASE = timedelta(minutes=5)
"""A taken deletion is not taken again for this long (the sweep holding it may still answer)."""
DELETION_BACKOFF_BASE = timedelta(minutes=1)
"""First wait after a failed deletion; doubled per attempt up to ``DELETION_BACKOFF_MAX``."""
DELETION_BACKOFF_MAX = timedelta(hours=12)
"""Longest wait between attempts: a deletion is retried at least twice a day until it works."""


@dataclass(frozen=True)
class DueDeletion:
    id: uuid.UUID
    provider: str
    resource_sid: str


@dataclass(frozen=True)
class DeletionAnswer:
    id: uuid.UUID
    done: bool
    """Deleted, or the provider no longer has it."""
    error: str | None = None
    """Why not (a status or error code; never content)."""


async def queue_deletions_in(
    session: AsyncSession, provider: str, sids: Sequence[str], reason: str, now: datetime
) -> int:
    """Queue these files for deletion inside the caller's transaction; how many were new."""
    known = await queries.queued_sids(session, provider, sids)
    fresh = sorted(set(sids) - known)
    session.add_all(
        ProviderDeletion(
            provider=provider, resource_sid=sid, reason=reason, next_attempt_at=now, created_at=now
        )
        for sid in fresh
    )
    await session.flush()
    return len(fresh)


async def do_take_due_deletions(
    db: Database, *, limit: int = DEFAULT_DELETION_BATCH
) -> list[DueDeletion]:
    """Due deletions, leased to the caller so a concurrent sweep leaves them alone."""
    now = utcnow()
    async with db.transaction() as session:
        rows = await queries.due_deletions(
            session, now, limit, skip_locked=db.dialect == "postgresql"
        )
        for row in rows:
            row.next_attempt_at = now + DELETION_LEASE
        return [DueDeletion(r.id, r.provider, r.resource_sid) for r in rows]


def backoff(attempts: int) -> timedelta:
    wait: timedelta = DELETION_BACKOFF_BASE * 2 ** min(max(attempts - 1, 0), 20)
    return min(wait, DELETION_BACKOFF_MAX)


async def do_record_deletions(db: Database, answers: Sequence[DeletionAnswer]) -> None:
    if not answers:
        return
    now = utcnow()
    by_id = {a.id: a for a in answers}
    async with db.transaction() as session:
        for row in await queries.deletions_by_id(session, list(by_id)):
            answer = by_id[row.id]
            row.attempts += 1
            if answer.done:
                row.done_at, row.last_error = now, None
            else:
                row.last_error = answer.error
                row.next_attempt_at = now + backoff(row.attempts)


async def do_any_due_deletion(db: Database, now: datetime) -> bool:
    async with db.reader() as session:
        return bool(await queries.due_deletions(session, now, 1, skip_locked=False))


async def do_count_pending_deletions(db: Database) -> int:
    async with db.reader() as session:
        return await queries.pending_deletions(session)
