"""Keeping the delivery report's day rollup current, the way the run facts are
(``run_facts_actions``): triggers queue what changed in the changing transaction (migration
0033), the tick takes a bounded batch, recomputes each message's fact from its rows, moves the
day counts from the old fact's key to the new one's and dequeues at the version it read.

What is queued: an outbound message when it is made, deleted or changes in what the report
reads (status, error, provider, attempts, channel, conversation), when an attempt is recorded
for it (its provider, when the message has none) or a step run takes or drops it (its
journey); a conversation when its team changes (all its outbound messages move team).

A status callback thus writes one queue row of its own message, never a shared counter: any
number of callbacks at once, and the tick is the one writer of the counts (under its lock).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hub.db import Database, utcnow
from hub.inbox import queries as inbox_queries
from hub.reports import facts_queries as state_queries
from hub.reports import outcome_rollup_queries as rq
from hub.reports import rebuild_queries
from hub.reports import run_facts_queries as queue_q
from hub.reports.models import NO_JOURNEY
from hub.reports.outcome_models import DeliveryDay, DeliveryDirty, DeliveryMonth, MessageFact
from hub.reports.outcome_rollup import delivery_counts, difference
from hub.routing.hours import zone_of

DELIVERY_STATE_ID = 3
"""The delivery rollup's row in ``report_fact_state`` (the inbox facts have 1, runs 2)."""
DEFAULT_DELIVERY_BATCH = 2000
"""Messages recomputed per tick: bounds the tick's transaction; a day's status callbacks of a
busy clinic (tens of thousands) are absorbed in a few dozen ticks."""
REBUILD_BATCH = 5000
"""Messages per transaction of a rebuild in batches (SQLite)."""


@dataclass(frozen=True)
class DeliveryRefreshed:
    messages: int
    caught_up: bool
    """Nothing was left queued when this batch was read."""


async def do_refresh_delivery_rollup(
    db: Database, *, batch: int = DEFAULT_DELIVERY_BATCH, now: datetime | None = None
) -> DeliveryRefreshed:
    """One batch. Cheap when nothing changed: three small reads and no write."""
    started = now or utcnow()
    async with db.reader() as session:
        saved = await state_queries.state(session, DELIVERY_STATE_ID)
        zone = await inbox_queries.clinic_time_zone(session)
        if (
            saved is not None
            and saved.time_zone == zone
            and not await queue_q.anything_dirty(session, DeliveryDirty)
        ):
            return DeliveryRefreshed(0, True)
    async with db.transaction() as session:
        await state_queries.lock_state(session, DELIVERY_STATE_ID)
        saved = await state_queries.state(session, DELIVERY_STATE_ID)
        zone = await inbox_queries.clinic_time_zone(session)
        if saved is None or saved.time_zone != zone:
            # Every day was counted in the old zone (or nothing was ever built).
            await rq.wipe(session, MessageFact, DeliveryDay, DeliveryMonth)
            await rq.queue_every_message(session)
        await state_queries.save_state(session, zone, None, DELIVERY_STATE_ID)
        moved = await queue_q.dirty_batch(session, rq.CONVERSATION, batch + 1, DeliveryDirty)
        caught_up = len(moved) <= batch
        moved = moved[:batch]
        await rq.queue_conversations_messages(session, [c for c, _v in moved])
        await queue_q.clear_dirty(session, rq.CONVERSATION, moved, DeliveryDirty)

        read = await queue_q.dirty_batch(session, rq.MESSAGE, batch + 1, DeliveryDirty)
        caught_up = caught_up and len(read) <= batch
        read = read[:batch]
        ids = [m for m, _v in read]
        clinic_zone = zone_of(zone)
        new = [rq.message_fact(s, clinic_zone) for s in await rq.message_sources(session, ids)]
        old = await rq.message_facts_of(session, ids)
        await rq.replace_message_facts(session, ids, new)
        delta = difference(delivery_counts(new, NO_JOURNEY), delivery_counts(old, NO_JOURNEY))
        await rq.add_counts(session, DeliveryDay, delta)
        await queue_q.clear_dirty(session, rq.MESSAGE, read, DeliveryDirty)
        if caught_up:
            await state_queries.set_as_of(session, started, DELIVERY_STATE_ID)
    return DeliveryRefreshed(len(ids), caught_up)


async def do_rebuild_delivery_rollup(
    db: Database, *, batch: int = REBUILD_BATCH, set_based: bool | None = None
) -> int:
    """Drop every message fact and count them all again from the messages (after a restore,
    or to time it); returns how many messages were counted. ``set_based`` (the default on
    PostgreSQL): in SQL, in one transaction (``rebuild_queries``); otherwise queue every
    message and refresh until the queue is empty."""
    if set_based is None:
        set_based = db.dialect == "postgresql"
    if set_based:
        started = utcnow()
        async with db.transaction() as session:
            await state_queries.lock_state(session, DELIVERY_STATE_ID)
            zone = await inbox_queries.clinic_time_zone(session)
            counted = await rebuild_queries.rebuild_delivery(session, zone)
            await state_queries.save_state(session, zone, started, DELIVERY_STATE_ID)
        return counted
    async with db.transaction() as session:
        await state_queries.lock_state(session, DELIVERY_STATE_ID)
        await rq.wipe(session, MessageFact, DeliveryDay, DeliveryMonth)
        await rq.queue_every_message(session)
    total = 0
    while True:
        done = await do_refresh_delivery_rollup(db, batch=batch)
        total += done.messages
        if done.caught_up:
            return total


async def delivery_rollup_as_of(db: Database) -> tuple[str | None, datetime | None]:
    """(the zone the rollup was counted in, how current it is: now when nothing is queued,
    else the last instant every earlier change was in); (None, None) if never built."""
    now = utcnow()
    async with db.reader() as session:
        saved = await state_queries.state(session, DELIVERY_STATE_ID)
        if saved is None:
            return None, None
        zone = await inbox_queries.clinic_time_zone(session)
        if saved.time_zone == zone and not await queue_q.anything_dirty(session, DeliveryDirty):
            return zone, now
        return saved.time_zone, saved.as_of
