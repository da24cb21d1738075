"""SQL of the facts refresh: the queue of changed conversations, their rows, the rollups."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Integer, Uuid, any_, bindparam, delete, func, literal, select, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from hub.enums import Direction
from hub.inbox.event_models import ConversationEvent, StatusEvent
from hub.inbox.models import Conversation, Message, Team
from hub.reports.facts import HourKey, Source, TeamHours
from hub.reports.models import (
    ConversationFact,
    FactDirty,
    FactState,
    FactTeamDirty,
    InboundHour,
)

STATE_ID = 1


def insert_for(session: AsyncSession, model: Any) -> Any:
    """An INSERT with the dialect's ON CONFLICT."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(model)


async def insert_many(session: AsyncSession, model: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` as one executemany of the table's plain INSERT: the driver sends them
    against one prepared statement. A VALUES list compiles a bind parameter per value and an
    ORM bulk insert builds each row's parameters in Python: between them most of a rebuild's
    time."""
    if rows:
        connection = await session.connection()
        await connection.execute(model.__table__.insert(), list(rows))


def any_of(session: AsyncSession, column: Any, ids: Sequence[Any]) -> Any:
    """``column`` IN ``ids``. PostgreSQL gets one array parameter (``= ANY``): an expanded IN
    compiles and binds a parameter per id on every call (thousands per rebuild batch)."""
    if session.get_bind().dialect.name != "postgresql":
        return column.in_(list(ids))
    return column == any_(bindparam(None, list(ids), type_=ARRAY(Uuid())))


async def rows_of(session: AsyncSession, statement: Any) -> Any:
    """Run a SELECT of plain columns through Core: the ORM's result processing adds nothing
    to such rows, and cost a tenth of a rebuild batch."""
    return await (await session.connection()).execute(statement)


async def state(session: AsyncSession, state_id: int = STATE_ID) -> FactState | None:
    """``state_id``: which rollup's row (the run facts keep theirs beside this one)."""
    return await session.get(FactState, state_id)


async def lock_state(session: AsyncSession, state_id: int = STATE_ID) -> None:
    """Serialise the writers of one rollup until the transaction ends: the tick's refresh, a
    weekly mail's, a rebuild. Two at once would read the same queued rows, and the second
    would insert facts the first had just written (a duplicate key) or move counts twice.
    PostgreSQL: a lock on the rollup's state row, made first when missing (a first build has
    none to lock; a row without a zone reads as never built). SQLite has one writer at a
    time already (``BEGIN IMMEDIATE``)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    missing = pg_insert(FactState).values(id=state_id, time_zone="", as_of=None)
    await session.execute(missing.on_conflict_do_nothing(index_elements=["id"]))
    await session.execute(select(FactState.id).where(FactState.id == state_id).with_for_update())


async def save_state(
    session: AsyncSession, time_zone: str, as_of: Any, state_id: int = STATE_ID
) -> None:
    row = await session.get(FactState, state_id)
    if row is None:
        session.add(FactState(id=state_id, time_zone=time_zone, as_of=as_of))
    else:
        row.time_zone = time_zone
        if as_of is not None:
            row.as_of = as_of
    await session.flush()


async def anything_dirty(session: AsyncSession) -> bool:
    # In key order: PostgreSQL reads the primary key's index, not a heap of dead rows
    # (``run_facts_queries.anything_dirty``).
    first = select(FactDirty.conversation_id).order_by(FactDirty.conversation_id).limit(1)
    team = select(FactTeamDirty.team_id).order_by(FactTeamDirty.team_id).limit(1)
    return await session.scalar(first) is not None or await session.scalar(team) is not None


async def dirty_batch(session: AsyncSession, limit: int) -> list[tuple[uuid.UUID, int]]:
    rows = await session.execute(select(FactDirty.conversation_id, FactDirty.version).limit(limit))
    return [(r[0], r[1]) for r in rows]


async def clear_dirty(session: AsyncSession, read: Sequence[tuple[uuid.UUID, int]]) -> None:
    """Only at the version read: a conversation changed meanwhile stays queued."""
    if read:
        key = tuple_(FactDirty.conversation_id, FactDirty.version)
        await session.execute(delete(FactDirty).where(among(session, key, read)))


def among(session: AsyncSession, key: Any, read: Sequence[tuple[uuid.UUID, int]]) -> Any:
    """(id, version) ``key`` IN ``read``. PostgreSQL gets two array parameters zipped by
    ``unnest`` (a join): a literal list of row values is planned as one OR per row and tested
    against every queued row, so each batch of a rebuild cost as much as the queue was long."""
    if session.get_bind().dialect.name != "postgresql":
        return key.in_(list(read))
    ids = func.unnest(bindparam("read_ids", [i for i, _v in read], type_=ARRAY(Uuid())))
    versions = func.unnest(
        bindparam("read_versions", [v for _i, v in read], type_=ARRAY(Integer()))
    )
    return key.in_(select(ids, versions))


async def _queue(session: AsyncSession, ids: Any) -> None:
    """Queue the conversations ``ids`` (a SELECT of conversation ids)."""
    stmt = insert_for(session, FactDirty).from_select(["conversation_id", "version"], ids)
    stmt = stmt.on_conflict_do_update(
        index_elements=["conversation_id"], set_={"version": FactDirty.version + 1}
    )
    await session.execute(stmt)


async def queue_changed_teams(session: AsyncSession) -> int:
    """Queue every conversation of a team whose hours changed; returns how many teams."""
    teams = (await session.execute(select(FactTeamDirty.team_id, FactTeamDirty.version))).all()
    for team_id, version in teams:
        await _queue(
            session,
            select(ConversationFact.conversation_id, literal(1)).where(
                ConversationFact.team_id == team_id
            ),
        )
        await session.execute(
            delete(FactTeamDirty).where(
                FactTeamDirty.team_id == team_id, FactTeamDirty.version == version
            )
        )
    return len(teams)


async def queue_all(session: AsyncSession) -> None:
    """Queue every conversation with facts (the clinic's zone changed)."""
    # SQLite reads "SELECT ... ON CONFLICT" as a join without a WHERE: one keeps them apart.
    await _queue(
        session,
        select(ConversationFact.conversation_id, literal(1)).where(
            ConversationFact.conversation_id.is_not(None)
        ),
    )


async def queue_every_conversation(session: AsyncSession) -> None:
    await _queue(session, select(Conversation.id, literal(1)).where(Conversation.id.is_not(None)))


async def team_hours(session: AsyncSession) -> dict[uuid.UUID, TeamHours]:
    rows = await session.execute(
        select(Team.id, Team.business_hours, Team.holidays, Team.time_zone)
    )
    return {r[0]: TeamHours(r[1] or {}, r[2] or [], r[3]) for r in rows}


async def sources(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[Source]:
    """The current rows of the conversations ``ids`` that still exist."""
    conversations = (
        await rows_of(
            session,
            select(
                Conversation.id,
                Conversation.team_id,
                Conversation.assignee_id,
                Conversation.channel,
                Conversation.first_response_due_at,
            ).where(any_of(session, Conversation.id, ids)),
        )
    ).all()
    inbound: dict[uuid.UUID, list[tuple[Any, str]]] = defaultdict(list)
    sends: dict[uuid.UUID, list[Any]] = defaultdict(list)
    messages = await rows_of(
        session,
        select(Message.conversation_id, Message.created_at, Message.channel, Message.direction)
        .where(
            any_of(session, Message.conversation_id, ids),
            (Message.direction == Direction.INBOUND) | Message.author_id.is_not(None),
        )
        .order_by(Message.conversation_id, Message.created_at),
    )
    for cid, at, channel, direction in messages:
        if direction is Direction.INBOUND:
            inbound[cid].append((at, channel.value))
        else:
            sends[cid].append(at)
    events: dict[uuid.UUID, list[tuple[Any, StatusEvent]]] = defaultdict(list)
    rows = await rows_of(
        session,
        select(ConversationEvent.conversation_id, ConversationEvent.at, ConversationEvent.kind)
        .where(any_of(session, ConversationEvent.conversation_id, ids))
        .order_by(ConversationEvent.conversation_id, ConversationEvent.at, ConversationEvent.id),
    )
    for cid, at, kind in rows:
        events[cid].append((at, kind))
    return [
        Source(
            c[0],
            c[1],
            c[2],
            c[3].value,
            c[4],
            inbound.get(c[0], []),
            sends.get(c[0], []),
            events.get(c[0], []),
        )
        for c in conversations
    ]


async def facts_of(
    session: AsyncSession, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[uuid.UUID | None, dict[str, int]]]:
    """(team, hourly share) each conversation is counted under now."""
    rows = await rows_of(
        session,
        select(
            ConversationFact.conversation_id,
            ConversationFact.team_id,
            ConversationFact.inbound_hours,
        ).where(any_of(session, ConversationFact.conversation_id, ids)),
    )
    return {r[0]: (r[1], r[2] or {}) for r in rows}


async def replace_facts(
    session: AsyncSession, ids: Sequence[uuid.UUID], rows: Sequence[dict[str, Any]]
) -> None:
    await session.execute(
        delete(ConversationFact).where(any_of(session, ConversationFact.conversation_id, ids))
    )
    await insert_many(session, ConversationFact, rows)


async def add_to_hours(session: AsyncSession, deltas: dict[HourKey, int]) -> None:
    if not deltas:
        return
    values = [
        {"day": d, "hour": h, "team_id": t, "channel": c, "weekday": d.weekday(), "count": n}
        for (d, h, t, c), n in sorted(deltas.items(), key=lambda kv: str(kv[0]))
    ]
    table = InboundHour.__table__
    stmt = insert_for(session, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["day", "hour", "team_id", "channel"],
        set_={"count": table.c.count + stmt.excluded.count},
    )
    # Executemany, in key order (``insert_many``).
    await (await session.connection()).execute(stmt, values)
    # Only a cell that lost messages can be empty now; empty cells would slow the sums down.
    emptied = [k for k, n in deltas.items() if n < 0]
    if emptied:
        key = tuple_(InboundHour.day, InboundHour.hour, InboundHour.team_id, InboundHour.channel)
        await session.execute(delete(InboundHour).where(key.in_(emptied), InboundHour.count == 0))


async def set_as_of(session: AsyncSession, as_of: Any, state_id: int = STATE_ID) -> None:
    await session.execute(update(FactState).where(FactState.id == state_id).values(as_of=as_of))
