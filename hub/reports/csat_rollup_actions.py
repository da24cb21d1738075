"""Keeping the ``csat`` report's rollup current, the way the delivery rollup is
(``delivery_rollup_actions``): triggers queue a survey in the changing transaction (migration
0034), the tick takes a bounded batch, recomputes each survey's fact from its rows, moves the
day and month counts from the old fact's key to the new one's and dequeues at the version it
read.

What queues a survey: its own row made, changed (team, person, channel, resolution) or
deleted; a run of its enrollment taking or dropping a message; that message's status crossing
into or out of "left the hub"; an answer of its enrollment recorded, changed or deleted. So a
status callback of a question writes one queue row, and only when the survey's "sent" can
change (queued to sending, sent to failed), never a shared counter.

The report adds back what is still queued (``csat_queries.rollup_counts``), so the tick's
pace is the report's speed, not its correctness.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hub.db import Database, utcnow
from hub.inbox import queries as inbox_queries
from hub.reports import csat_rollup_queries as cq
from hub.reports import facts_queries as state_queries
from hub.reports import run_facts_queries as queue_q
from hub.reports.csat_models import CsatDirty
from hub.reports.csat_queries import CSAT_STATE_ID
from hub.routing.hours import zone_of

DEFAULT_CSAT_BATCH = 2000
"""Surveys recomputed per tick: bounds the tick's transaction (a clinic resolves a few
hundred conversations a day, so a day's changes take one tick)."""


@dataclass(frozen=True)
class CsatRefreshed:
    surveys: int
    caught_up: bool
    """Nothing was left queued when this batch was read."""


def counts(facts: Iterable[Mapping[str, Any]], sign: int = 1) -> Counter[cq.Key]:
    """What ``facts`` add to the day rows (``sign`` -1: what they take out)."""
    found: Counter[cq.Key] = Counter()
    for f in facts:
        found[(f["day"], *(f[d] for d in cq.DIMENSIONS))] += sign
    return found


async def do_refresh_csat_rollup(
    db: Database, *, batch: int = DEFAULT_CSAT_BATCH, now: datetime | None = None
) -> CsatRefreshed:
    """One batch. Cheap when nothing changed: three small reads and no write."""
    started = now or utcnow()
    async with db.reader() as session:
        saved = await state_queries.state(session, CSAT_STATE_ID)
        zone = await inbox_queries.clinic_time_zone(session)
        if (
            saved is not None
            and saved.time_zone == zone
            and not await queue_q.anything_dirty(session, CsatDirty)
        ):
            return CsatRefreshed(0, True)
    async with db.transaction() as session:
        await state_queries.lock_state(session, CSAT_STATE_ID)
        saved = await state_queries.state(session, CSAT_STATE_ID)
        zone = await inbox_queries.clinic_time_zone(session)
        if saved is None or saved.time_zone != zone:
            # Every day was counted in the old zone (or nothing was ever built).
            await cq.wipe(session)
            await cq.queue_every_survey(session)
        await state_queries.save_state(session, zone, None, CSAT_STATE_ID)
        read = await queue_q.dirty_batch(session, cq.SURVEY, batch + 1, CsatDirty)
        caught_up = len(read) <= batch
        read = read[:batch]
        ids = [s for s, _v in read]
        new = await cq.survey_facts(session, ids, zone_of(zone))
        old = await cq.stored_facts(session, ids)
        await cq.replace_facts(session, ids, new)
        delta = counts(new)
        delta.update(counts(old, -1))
        await cq.add_counts(session, delta)
        await queue_q.clear_dirty(session, cq.SURVEY, read, CsatDirty)
        if caught_up:
            await state_queries.set_as_of(session, started, CSAT_STATE_ID)
    return CsatRefreshed(len(ids), caught_up)


async def do_rebuild_csat_rollup(db: Database, *, batch: int = 5000) -> int:
    """Drop every fact and count every survey again (after a restore, or to time it);
    returns how many surveys were counted."""
    async with db.transaction() as session:
        await state_queries.lock_state(session, CSAT_STATE_ID)
        await cq.wipe(session)
        await cq.queue_every_survey(session)
    total = 0
    while True:
        done = await do_refresh_csat_rollup(db, batch=batch)
        total += done.surveys
        if done.caught_up:
            return total
