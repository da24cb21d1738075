"""SQL of the facts refresh: the queue of changed conversations, their rows, the rollups."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, literal, select, tuple_, update
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


async def state(session: AsyncSession, state_id: int = STATE_ID) -> FactState | None:
    """``state_id``: which rollup's row (the run facts keep theirs beside this one)."""
    return await session.get(FactState, state_id)


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
    found = await session.scalar(select(FactDirty.conversation_id).limit(1))
    team = await session.scalar(select(FactTeamDirty.team_id).limit(1))
    return found is not None or team is not None


async def dirty_batch(session: AsyncSession, limit: int) -> list[tuple[uuid.UUID, int]]:
    rows = await session.execute(select(FactDirty.conversation_id, FactDirty.version).limit(limit))
    return [(r[0], r[1]) for r in rows]


async def clear_dirty(session: AsyncSession, read: Sequence[tuple[uuid.UUID, int]]) -> None:
    """Only at the version read: a conversation changed meanwhile stays queued."""
    if read:
        key = tuple_(FactDirty.conversation_id, FactDirty.version)
        await session.execute(delete(FactDirty).where(key.in_(list(read))))


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
        await session.execute(
            select(
                Conversation.id,
                Conversation.team_id,
                Conversation.assignee_id,
                Conversation.channel,
                Conversation.first_response_due_at,
            ).where(Conversation.id.in_(ids))
        )
    ).all()
    inbound: dict[uuid.UUID, list[tuple[Any, str]]] = defaultdict(list)
    sends: dict[uuid.UUID, list[Any]] = defaultdict(list)
    messages = await session.execute(
        select(Message.conversation_id, Message.created_at, Message.channel, Message.direction)
        .where(
            Message.conversation_id.in_(ids),
            (Message.direction == Direction.INBOUND) | Message.author_id.is_not(None),
        )
        .order_by(Message.conversation_id, Message.created_at)
    )
    for cid, at, channel, direction in messages:
        if direction is Direction.INBOUND:
            inbound[cid].append((at, channel.value))
        else:
            sends[cid].append(at)
    events: dict[uuid.UUID, list[tuple[Any, StatusEvent]]] = defaultdict(list)
    rows = await session.execute(
        select(ConversationEvent.conversation_id, ConversationEvent.at, ConversationEvent.kind)
        .where(ConversationEvent.conversation_id.in_(ids))
        .order_by(ConversationEvent.conversation_id, ConversationEvent.at, ConversationEvent.id)
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
    rows = await session.execute(
        select(
            ConversationFact.conversation_id,
            ConversationFact.team_id,
            ConversationFact.inbound_hours,
        ).where(ConversationFact.conversation_id.in_(ids))
    )
    return {r[0]: (r[1], r[2] or {}) for r in rows}


async def replace_facts(
    session: AsyncSession, ids: Sequence[uuid.UUID], rows: Sequence[dict[str, Any]]
) -> None:
    await session.execute(delete(ConversationFact).where(ConversationFact.conversation_id.in_(ids)))
    if rows:
        await session.execute(insert_for(session, ConversationFact).values(list(rows)))


async def add_to_hours(session: AsyncSession, deltas: dict[HourKey, int]) -> None:
    if not deltas:
        return
    values = [
        {"day": d, "hour": h, "team_id": t, "channel": c, "weekday": d.weekday(), "count": n}
        for (d, h, t, c), n in sorted(deltas.items(), key=lambda kv: str(kv[0]))
    ]
    stmt = insert_for(session, InboundHour).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["day", "hour", "team_id", "channel"],
        set_={"count": InboundHour.count + stmt.excluded.count},
    )
    await session.execute(stmt)
    # Only a cell that lost messages can be empty now; empty cells would slow the sums down.
    emptied = [k for k, n in deltas.items() if n < 0]
    if emptied:
        key = tuple_(InboundHour.day, InboundHour.hour, InboundHour.team_id, InboundHour.channel)
        await session.execute(delete(InboundHour).where(key.in_(emptied), InboundHour.count == 0))


async def set_as_of(session: AsyncSession, as_of: Any, state_id: int = STATE_ID) -> None:
    await session.execute(update(FactState).where(FactState.id == state_id).values(as_of=as_of))
