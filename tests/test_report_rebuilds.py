"""The report rollups' full rebuilds and refreshes racing each other: the delivery rollup
rebuilt in SQL (PostgreSQL) gives every row the batches give; two refreshes of the same rollup
at once (the tick's and a weekly mail's) end with the figures one would, and no error; the
queues' emptiness check reads an index, not a bloated heap."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, text

from hub.crypto import KeyRing
from hub.db import Database
from hub.reports import facts_queries, run_facts_queries
from hub.reports import outcome_rollup_queries as rq
from hub.reports.delivery_rollup_actions import (
    do_rebuild_delivery_rollup,
    do_refresh_delivery_rollup,
)
from hub.reports.facts_actions import do_refresh_facts
from hub.reports.models import ConversationFact, InboundHour, InboxDay, RollupDirty, RunFact
from hub.reports.outcome_models import DeliveryDay, DeliveryDirty, DeliveryMonth, MessageFact
from hub.reports.run_facts_actions import do_refresh_run_facts
from tests.test_outcome_rollup import make_history, rollup_rows


async def table_rows(db: Database, *models: type[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of ``models``, every column but when it was computed, in order."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with db.reader() as session:
        for model in models:
            columns = [c for c in model.__table__.columns if c.name != "computed_at"]
            rows = await session.execute(select(*columns))
            out[model.__tablename__] = sorted((tuple(r) for r in rows), key=str)
    return out


DELIVERY = (MessageFact, DeliveryDay, DeliveryMonth)


async def test_the_delivery_rebuild_in_sql_gives_every_row_the_batches_give(
    db: Database, ring: KeyRing, set_clock: Any
) -> None:
    if db.dialect != "postgresql":
        pytest.skip("SQLite rebuilds in batches (no time zones in its SQL)")
    await make_history(db, ring, set_clock)
    kept = await table_rows(db, *DELIVERY)
    assert all(kept.values()), {t: len(r) for t, r in kept.items()}
    counted = await do_rebuild_delivery_rollup(db, set_based=False)
    batches = await table_rows(db, *DELIVERY)
    assert batches == kept
    assert await do_rebuild_delivery_rollup(db, set_based=True) == counted
    assert await table_rows(db, *DELIVERY) == kept
    # Current at once: nothing left queued, counted in the clinic's zone.
    assert (await do_refresh_delivery_rollup(db)).messages == 0


async def _queue_everything(db: Database) -> None:
    async with db.transaction() as session:
        await facts_queries.queue_every_conversation(session)
        await run_facts_queries.queue_everything(session)
        await rq.queue_every_message(session)


async def _until_current(refresh: Callable[[], Awaitable[Any]]) -> None:
    for _ in range(100):
        if (await refresh()).caught_up:
            return
    raise AssertionError("the refresh never caught up")


async def _twice_at_once(refresh: Callable[[], Awaitable[Any]]) -> int:
    """Two refreshes at a time until both say the rollup is current; returns how many rounds."""
    for rounds in range(1, 100):
        done = await asyncio.gather(refresh(), refresh())
        if all(d.caught_up for d in done):
            return rounds
    raise AssertionError("the refreshes never caught up")


async def test_two_refreshes_at_once_end_with_the_figures_of_one(
    committed_db: Database, ring: KeyRing, set_clock: Any
) -> None:
    db = committed_db
    await make_history(db, ring, set_clock)
    await _until_current(lambda: do_refresh_facts(db))
    inbox = (ConversationFact, InboundHour, InboxDay)
    models = (*inbox, RunFact, *DELIVERY)
    kept, kept_rollups = await table_rows(db, *models), await rollup_rows(db)
    assert kept["report_conversation_fact"] and kept["report_run_fact"]
    await _queue_everything(db)
    # Batches of two: both refreshes read the same queued rows, and the second writes facts
    # of the same conversations, enrollments and messages as the first.
    await _twice_at_once(lambda: do_refresh_facts(db, batch=2))
    await _twice_at_once(lambda: do_refresh_run_facts(db, batch=2))
    await _twice_at_once(lambda: do_refresh_delivery_rollup(db, batch=2))
    assert await table_rows(db, *models) == kept
    assert await rollup_rows(db) == kept_rollups


async def test_the_queues_emptiness_is_read_from_their_index(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("EXPLAIN of PostgreSQL")
    async with db.transaction() as session:
        # Bloated as by a day of ticks: a sequential scan would walk every dead row first.
        for n in range(3):
            await session.execute(
                insert(DeliveryDirty),
                [{"kind": "message", "item_id": uuid.uuid4(), "version": n} for _ in range(2000)],
            )
            await session.execute(delete(DeliveryDirty))
        await session.execute(text("ANALYZE report_delivery_dirty"))
        dialect = session.get_bind().dialect
        for queue in (DeliveryDirty, RollupDirty):
            statement = run_facts_queries.first_queued(queue).compile(
                dialect=dialect, compile_kwargs={"literal_binds": True}
            )
            plan = "\n".join(await session.scalars(text(f"EXPLAIN {statement}")))
            assert "Index Only Scan using pk_" in plan, plan
            assert not await run_facts_queries.anything_dirty(session, queue)
