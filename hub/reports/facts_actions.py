"""Keeping the inbox report rollups current: a bounded batch per tick, a full rebuild on demand.

The queue (``report_fact_dirty``) is filled by triggers in every transaction that changes
what a fact depends on, so the refresh never has to guess what changed: it takes a batch,
recomputes those conversations from their rows, moves their share of the hourly counts and
of the day rollup (``report_inbox_day``: old share out, new share in, summed per row), and
dequeues each at the version it read, all in one transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from hub.db import Database, utcnow
from hub.inbox import queries as inbox_queries
from hub.reports import facts_queries as q
from hub.reports import rollup_queries as rq
from hub.reports.facts import HourKey, compute_fact, hour_deltas
from hub.reports.models import NO_TEAM
from hub.reports.rollup import shares
from hub.routing.hours import zone_of

DEFAULT_FACTS_BATCH = 500
"""Conversations recomputed per tick: bounds the tick's transaction (tens of milliseconds);
a backlog of N conversations is absorbed in N / DEFAULT_FACTS_BATCH ticks."""


REBUILD_BATCH = 5000
"""Conversations per transaction of a full rebuild: fewer round trips than the tick's batch
(a fifth of a 1,000 one's time went to them), while a statement's id list stays far below
the drivers' bound-parameter limits."""


@dataclass(frozen=True)
class Refreshed:
    conversations: int
    """How many conversations were recomputed."""
    caught_up: bool
    """Nothing was left queued when this batch was read."""


async def do_refresh_facts(
    db: Database,
    *,
    batch: int = DEFAULT_FACTS_BATCH,
    now: datetime | None = None,
) -> Refreshed:
    """One batch. Cheap when nothing changed: four small reads and no write."""
    started = now or utcnow()
    async with db.reader() as session:
        saved = await q.state(session)
        zone = await inbox_queries.clinic_time_zone(session)
        if saved is not None and saved.time_zone == zone and not await q.anything_dirty(session):
            return Refreshed(0, True)
    async with db.transaction() as session:
        await rq.lock_state(session)
        saved = await q.state(session)
        zone = await inbox_queries.clinic_time_zone(session)
        if saved is None or saved.time_zone != zone:
            # Every hourly cell and "opened" day was counted in the old zone.
            await q.queue_all(session)
        await q.save_state(session, zone, None)
        await q.queue_changed_teams(session)
        read = await q.dirty_batch(session, batch + 1)
        caught_up = len(read) <= batch
        read = read[:batch]
        ids = [cid for cid, _version in read]
        clinic_zone = zone_of(zone)
        hours = await q.team_hours(session)
        old = await q.facts_of(session, ids)
        # An empty day rollup is being rebuilt (``do_rebuild_facts`` emptied it, or it was
        # never filled): it is counted from all the facts once the queue is drained, so no
        # share is moved meanwhile. A rebuild cut short is thus finished by the next ticks.
        missing = await rq.rollup_missing(session)
        counted = [] if missing else await rq.old_shares(session, ids)
        rows = []
        deltas: dict[HourKey, int] = {}
        for source in await q.sources(session, ids):
            fact = compute_fact(
                source, hours.get(source.team_id) if source.team_id else None, clinic_zone, started
            )
            if fact is not None:
                rows.append(fact)
        new = {r["conversation_id"]: (r["team_id"], r["inbound_hours"]) for r in rows}
        for cid in ids:
            change = hour_deltas(_share(old.get(cid)), _share(new.get(cid)))
            for key, n in change.items():
                deltas[key] = deltas.get(key, 0) + n
        if not missing:
            # Old and new shares summed per key first: a conversation that did not move
            # cancels out, and each touched row is written once.
            days = shares(counted, -1)
            for cell_key, cell in shares(rows).items():
                if cell_key in days:
                    days[cell_key].add(cell)
                else:
                    days[cell_key] = cell
            await rq.add_to_rollup(session, days)
        await q.replace_facts(session, ids, rows)
        await q.add_to_hours(session, {k: v for k, v in deltas.items() if v})
        await q.clear_dirty(session, read)
        if caught_up and missing:
            await rq.rebuild_rollup(session)
        if caught_up:
            # Every change committed before ``started`` was queued when the batch was read,
            # and this batch held all of the queue.
            await q.set_as_of(session, started)
    return Refreshed(len(ids), caught_up)


def _share(
    share: tuple[uuid.UUID | None, dict[str, int]] | None,
) -> tuple[uuid.UUID, dict[str, int]] | None:
    if share is None:
        return None
    team, counts = share
    return (team or NO_TEAM, counts)


async def do_rebuild_facts(db: Database, *, batch: int = REBUILD_BATCH) -> int:
    """Queue every conversation and refresh until the queue is empty (after a restore, or to
    time a full rebuild); returns how many conversations were recomputed."""
    async with db.transaction() as session:
        await rq.lock_state(session)
        await q.save_state(session, await inbox_queries.clinic_time_zone(session), None)
        await q.queue_every_conversation(session)
        # Counted again from all the facts by the refresh that drains the queue: one pass,
        # instead of moving every conversation's share batch by batch.
        await rq.clear_rollup(session)
    total = 0
    while True:
        done = await do_refresh_facts(db, batch=batch)
        total += done.conversations
        if done.caught_up:
            return total


async def rollup_as_of(db: Database) -> datetime | None:
    """How current the rollups are: now when nothing is queued, else the last instant every
    earlier change was in (None: never built)."""
    now = utcnow()
    async with db.reader() as session:
        saved = await q.state(session)
        if saved is None:
            return None
        zone = await inbox_queries.clinic_time_zone(session)
        if saved.time_zone == zone and not await q.anything_dirty(session):
            return now
        return saved.as_of
