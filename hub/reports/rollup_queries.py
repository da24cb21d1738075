"""SQL that keeps ``report_inbox_day``: the facts' shares in, read-modify-write per batch.

Only the refresh writes the rollup, under a lock on its state row (``lock_state``): two
refreshes at once would both read the same old facts and take their share out twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Date, String, Uuid, bindparam, delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from hub.reports import facts_queries
from hub.reports.facts_queries import STATE_ID, insert_for
from hub.reports.models import ConversationFact as F
from hub.reports.models import InboxDay
from hub.reports.rollup import (
    COUNTS,
    DAY,
    HISTOGRAMS,
    MONTH,
    BaseKey,
    Cell,
    RollKey,
    add_fact,
    merged,
    pack,
    variants,
)

SHARE_COLUMNS = (
    "channel",
    "team_id",
    "assignee_id",
    "opened_day",
    "first_response_s",
    "first_response_bh_s",
    "resolved_at",
    "resolved_day",
    "resolution_s",
    "resolution_bh_s",
    "due_at",
    "wait_end_at",
    "reopened",
)
"""What a fact's share of the day rollup is computed from (``rollup.add_fact``)."""
KEY_COLUMNS = ("grain", "day", "channel", "team_id", "assignee_id")
CHUNK = 1000
"""Rows per statement: keeps a statement under SQLite's bound-parameter limit."""


async def lock_state(session: AsyncSession) -> None:
    """Serialise writers of the rollup (``facts_queries.lock_state``)."""
    await facts_queries.lock_state(session, STATE_ID)


async def rollup_missing(session: AsyncSession) -> bool:
    """No row at all: never filled, or emptied for a rebuild (any fact adds rows)."""
    return await session.scalar(select(InboxDay.grain).limit(1)) is None


async def clear_rollup(session: AsyncSession) -> None:
    await session.execute(delete(InboxDay))


async def old_shares(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    """The stored facts of ``ids`` as the rollup counted them."""
    if not ids:
        return []
    columns = [getattr(F, c) for c in SHARE_COLUMNS]
    rows = await session.execute(select(*columns).where(F.conversation_id.in_(ids)))
    return [dict(zip(SHARE_COLUMNS, r, strict=True)) for r in rows]


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


KEY_ARRAYS: tuple[ARRAY[Any], ...] = (
    ARRAY(String()),
    ARRAY(Date()),
    ARRAY(String()),
    ARRAY(Uuid()),
    ARRAY(Uuid()),
)
"""The key columns' types as PostgreSQL arrays (``_among``)."""


def _among(session: AsyncSession, key: Any, keys: Sequence[Any]) -> Any:
    """``key`` IN ``keys``. PostgreSQL gets the keys as five array parameters zipped by
    ``unnest`` (a semi-join): a literal list of a thousand row values took ~250 ms to plan as
    a thousand ORed index scans, for 5 ms of execution."""
    if session.get_bind().dialect.name != "postgresql":
        return key.in_(list(keys))
    columns = [
        func.unnest(bindparam(f"key_{i}", [k[i] for k in keys], type_=t)).label(name)
        for i, (name, t) in enumerate(zip(KEY_COLUMNS, KEY_ARRAYS, strict=True))
    ]
    return key.in_(select(*columns))


def row_values(key: RollKey, cell: Cell, stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """The row for ``key`` once ``cell`` is added to what is ``stored`` (None: no row yet)."""
    row: dict[str, Any] = dict(zip(KEY_COLUMNS, key, strict=True))
    for i, name in enumerate(COUNTS):
        row[name] = (stored[name] if stored else 0) + cell.counts[i]
    for i, name in enumerate(HISTOGRAMS):
        if stored:
            row[name] = merged(stored[name], cell.histograms[i])
        else:
            row[name] = pack(cell.histograms[i])
    return row


def is_empty(row: Mapping[str, Any]) -> bool:
    return not any(row[c] for c in COUNTS) and not any(row[h] for h in HISTOGRAMS)


async def add_to_rollup(session: AsyncSession, deltas: Mapping[RollKey, Cell]) -> None:
    """Add ``deltas`` (already summed per key): one read of the rows they touch, one upsert,
    one delete of the rows that became empty."""
    keys = [k for k, cell in deltas.items() if not cell.is_empty()]
    if not keys:
        return
    key_columns = [getattr(InboxDay, c) for c in KEY_COLUMNS]
    key = tuple_(*key_columns)
    values = (*COUNTS, *HISTOGRAMS)
    stored: dict[Any, dict[str, Any]] = {}
    for part in _chunks(keys):
        rows = await session.execute(
            select(*key_columns, *(getattr(InboxDay, c) for c in values)).where(
                _among(session, key, part)
            )
        )
        for r in rows:
            stored[tuple(r[:5])] = dict(zip(values, r[5:], strict=True))
    kept: list[dict[str, Any]] = []
    emptied: list[dict[str, Any]] = []
    for k in sorted(keys, key=str):
        row = row_values(k, deltas[k], stored.get(k))
        (emptied if is_empty(row) else kept).append(row)
    if kept:
        stmt = insert_for(session, InboxDay.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=list(KEY_COLUMNS),
            set_={c: getattr(stmt.excluded, c) for c in (*COUNTS, *HISTOGRAMS)},
        )
        # Executemany through Core: the driver batches the rows, without compiling a VALUES
        # list per row or building each row's parameters through the ORM.
        await (await session.connection()).execute(stmt, kept)
    gone = [tuple(r[c] for c in KEY_COLUMNS) for r in emptied]
    for part in _chunks(gone):
        await session.execute(delete(InboxDay).where(_among(session, key, part)))


async def rebuild_rollup(session: AsyncSession) -> int:
    """Replace the whole rollup by the shares of every stored fact (a full rebuild: one pass
    over the facts instead of a read-modify-write per batch); returns the rows written."""
    await clear_rollup(session)
    columns = [getattr(F, c) for c in SHARE_COLUMNS]
    facts = await session.stream(select(*columns).execution_options(yield_per=5000))
    base: dict[BaseKey, Cell] = {}
    async for part in facts.partitions():
        for r in part:
            add_fact(base, dict(zip(SHARE_COLUMNS, r, strict=True)), 1)
    # Unsorted: no other writer can wait on these rows (the state row is locked).
    rows = [row_values(k, c, None) for k, c in _days_then_months(base).items()]
    rows = [r for r in rows if not is_empty(r)]
    await copy_rows(session, InboxDay, rows)
    return len(rows)


def _days_then_months(base: Mapping[BaseKey, Cell]) -> dict[RollKey, Cell]:
    """``rollup.spread``, each month summed from its day rows: one addition per day row
    instead of one per cell and "every" variant again (a third of a rebuild's count)."""
    days: dict[RollKey, Cell] = {}
    for (day, channel, team, assignee), cell in base.items():
        for dims in variants(channel, team, assignee):
            key = (DAY, day, *dims)
            if key not in days:
                days[key] = Cell()
            days[key].add(cell)
    months: dict[RollKey, Cell] = {}
    for (_grain, day, channel, team, assignee), cell in days.items():
        key = (MONTH, day.replace(day=1), channel, team, assignee)
        if key not in months:
            months[key] = Cell()
        months[key].add(cell)
    return {**days, **months}


async def copy_rows(session: AsyncSession, model: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert a rebuild's many rows. PostgreSQL: COPY, binary (half the time of an
    executemany at a hundred thousand rows); only for tables of plain column types, which
    asyncpg encodes from the Python values as they are (no JSON, no enums)."""
    if not rows or session.get_bind().dialect.name != "postgresql":
        await facts_queries.insert_many(session, model, rows)
        return
    columns = list(rows[0])
    raw = await (await session.connection()).get_raw_connection()
    await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
        model.__tablename__, records=[tuple(r[c] for c in columns) for r in rows], columns=columns
    )
