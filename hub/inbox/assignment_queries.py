"""SQL for assignment, and the one definition of "overdue" in SQL and in Python.

Callers own the session and the transaction. Row locks are taken on PostgreSQL only: SQLite
runs every transaction with BEGIN IMMEDIATE, so writers are already serialised and a plain
select sees everything committed before it.

Locks are ``FOR NO KEY UPDATE`` rather than ``FOR UPDATE``: assignment changes no key, and the
weaker lock does not conflict with the ``KEY SHARE`` lock that inserting a row which references
the staff user or the conversation takes (a new message, a read marker). An inbound message is
never held up by an agent claiming its conversation.

Lock order (keeps the actions deadlock-free): a transaction waits for at most one conversation
row and only before it holds any staff row; staff rows are locked in id order; backlog
conversations are taken with SKIP LOCKED, which never waits; the audit head is locked last.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import raiseload

from hub.enums import ConversationStatus, Priority, Role
from hub.inbox.models import Conversation, StaffUser, team_member

LOAD_STATUSES = (ConversationStatus.OPEN, ConversationStatus.PENDING)
"""Statuses that count toward an agent's open load (snoozed and resolved do not)."""
DUE_SOON_WINDOW = timedelta(minutes=30)
"""An unanswered conversation is "due soon" when its first response is due within this time."""

_S = TypeVar("_S", bound=Select[Any])


class SlaState(enum.StrEnum):
    OVERDUE = "overdue"
    DUE_SOON = "due_soon"
    OK = "ok"
    MET = "met"


def sla_state(conversation: Conversation, now: datetime) -> SlaState:
    """The first-response SLA flag shown on a conversation.

    A resolved conversation that was never answered is not overdue: nobody is waiting on it
    any more, and flagging it would bury the ones that are (same rule as ``_overdue``).
    """
    if conversation.first_responded_at is not None:
        return SlaState.MET
    due = conversation.first_response_due_at
    if due is None or conversation.status is ConversationStatus.RESOLVED:
        return SlaState.OK
    if due < now:
        return SlaState.OVERDUE
    if due - now <= DUE_SOON_WINDOW:
        return SlaState.DUE_SOON
    return SlaState.OK


def _urgent_first() -> ColumnElement[int]:
    return case((Conversation.priority == Priority.URGENT, 0), else_=1)


def _overdue_first(now: datetime | None) -> ColumnElement[int]:
    # With no ``now`` the database clock decides (to the second on SQLite, which compares the
    # stored text with CURRENT_TIMESTAMP): good enough for sorting a list.
    clock: Any = func.current_timestamp() if now is None else now
    overdue = and_(
        Conversation.first_responded_at.is_(None),
        Conversation.first_response_due_at < clock,
        Conversation.status != ConversationStatus.RESOLVED,
    )
    return case((overdue, 0), else_=1)


def inbox_order_by(now: datetime | None = None) -> list[ColumnElement[Any]]:
    """ORDER BY for inbox lists: urgent first, then overdue first response, then the most
    recently active. Pass ``now`` for the application clock (tests), or leave it out for the
    database clock (``SLA_ORDER``). Use: ``select(Conversation)...order_by(*SLA_ORDER)``."""
    return [
        _urgent_first(),
        _overdue_first(now),
        Conversation.last_activity_at.desc(),
        Conversation.id.desc(),
    ]


SLA_ORDER = inbox_order_by()
"""Inbox list order on the database clock: ``stmt.order_by(*SLA_ORDER)``."""


def backlog_order(now: datetime) -> list[ColumnElement[Any]]:
    """Which waiting conversation is handed out next: urgent, then overdue, then oldest."""
    return [
        _urgent_first(),
        _overdue_first(now),
        Conversation.created_at.asc(),
        Conversation.id.asc(),
    ]


def _on_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _locked(session: AsyncSession, stmt: _S, *, skip_locked: bool = False) -> _S:
    if not _on_postgres(session):
        return stmt
    return stmt.with_for_update(key_share=True, skip_locked=skip_locked)


_NO_TEAMS = raiseload(StaffUser.teams)
"""StaffUser.teams is selectin-loaded, which would pull in every team and all its members;
membership is checked with SQL here instead."""


async def get_staff(session: AsyncSession, staff_id: uuid.UUID) -> StaffUser | None:
    return (
        await session.scalars(select(StaffUser).options(_NO_TEAMS).where(StaffUser.id == staff_id))
    ).first()


async def staff_for_update(session: AsyncSession, staff_id: uuid.UUID) -> StaffUser | None:
    """The staff row, locked: everyone who assigns to this person waits here, so a capacity
    check and the assignment that follows it cannot interleave with another."""
    stmt = _locked(session, select(StaffUser).options(_NO_TEAMS).where(StaffUser.id == staff_id))
    return (await session.scalars(stmt.execution_options(populate_existing=True))).first()


async def conversation_for_update(
    session: AsyncSession, conversation_id: uuid.UUID
) -> Conversation | None:
    stmt = _locked(session, select(Conversation).where(Conversation.id == conversation_id))
    return (await session.scalars(stmt.execution_options(populate_existing=True))).first()


async def is_team_member(session: AsyncSession, team_id: uuid.UUID, staff_id: uuid.UUID) -> bool:
    stmt = select(team_member.c.staff_id).where(
        team_member.c.team_id == team_id, team_member.c.staff_id == staff_id
    )
    return (await session.scalar(stmt)) is not None


async def open_load(session: AsyncSession, staff_id: uuid.UUID) -> int:
    """Conversations assigned to the person that are open or pending."""
    return (await open_loads(session, [staff_id])).get(staff_id, 0)


async def open_loads(
    session: AsyncSession, staff_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, int]:
    if not staff_ids:
        return {}
    stmt = (
        select(Conversation.assignee_id, func.count())
        .where(
            Conversation.assignee_id.in_(list(staff_ids)),
            Conversation.status.in_(LOAD_STATUSES),
        )
        .group_by(Conversation.assignee_id)
    )
    return {row[0]: int(row[1]) for row in (await session.execute(stmt)).all() if row[0]}


async def team_has_room(
    session: AsyncSession,
    team_id: uuid.UUID,
    online_staff_ids: Collection[uuid.UUID],
    roles: Collection[Role],
) -> bool:
    """Whether some active, online member of the team with one of ``roles`` is below their
    capacity: one unlocked read, answered from what is committed now."""
    if not online_staff_ids or not roles:
        return False
    load = (
        select(func.count())
        .select_from(Conversation)
        .where(
            Conversation.assignee_id == StaffUser.id,
            Conversation.status.in_(LOAD_STATUSES),
        )
        .correlate(StaffUser)
        .scalar_subquery()
    )
    members = select(team_member.c.staff_id).where(team_member.c.team_id == team_id)
    stmt = (
        select(StaffUser.id)
        .where(
            StaffUser.id.in_(members),
            StaffUser.id.in_(list(online_staff_ids)),
            StaffUser.active.is_(True),
            StaffUser.role.in_(list(roles)),
            load < StaffUser.max_open_conversations,
        )
        .limit(1)
    )
    return (await session.scalar(stmt)) is not None


async def team_candidates_for_update(
    session: AsyncSession,
    team_id: uuid.UUID,
    online_staff_ids: Collection[uuid.UUID],
    roles: Collection[Role],
) -> Sequence[StaffUser]:
    """Active, online members of the team with one of ``roles``, locked in id order.

    Locking every candidate (not just the one picked) is what makes concurrent round-robin
    calls for the same team take turns: each sees the loads and last_assigned_at the previous
    one committed. The set is small (the team's online agents) and held for milliseconds.
    """
    if not online_staff_ids or not roles:
        return []
    members = select(team_member.c.staff_id).where(team_member.c.team_id == team_id)
    stmt = (
        select(StaffUser)
        .options(_NO_TEAMS)
        .where(
            StaffUser.id.in_(members),
            StaffUser.id.in_(list(online_staff_ids)),
            StaffUser.active.is_(True),
            StaffUser.role.in_(list(roles)),
        )
        .order_by(StaffUser.id)
    )
    stmt = _locked(session, stmt)
    return (await session.scalars(stmt.execution_options(populate_existing=True))).all()


async def waiting_for(
    session: AsyncSession, staff_id: uuid.UUID, now: datetime, limit: int
) -> Sequence[Conversation]:
    """Up to ``limit`` unassigned open conversations of the person's teams, in backlog order,
    locked with SKIP LOCKED: a conversation another transaction is taking right now is passed
    over instead of waited for, and one it has already taken no longer matches the filter
    (PostgreSQL re-checks it on the locked row)."""
    if limit <= 0:
        return []
    teams = select(team_member.c.team_id).where(team_member.c.staff_id == staff_id)
    stmt = (
        select(Conversation)
        .where(
            Conversation.team_id.in_(teams),
            Conversation.assignee_id.is_(None),
            Conversation.status == ConversationStatus.OPEN,
        )
        .order_by(*backlog_order(now))
        .limit(limit)
    )
    stmt = _locked(session, stmt, skip_locked=True)
    return (await session.scalars(stmt.execution_options(populate_existing=True))).all()


async def team_ids_of(session: AsyncSession, staff_id: uuid.UUID) -> list[uuid.UUID]:
    stmt = select(team_member.c.team_id).where(team_member.c.staff_id == staff_id)
    return list((await session.scalars(stmt)).all())


async def share_basis(
    session: AsyncSession,
    team_ids: Collection[uuid.UUID],
    online_staff_ids: Collection[uuid.UUID],
    roles: Collection[Role],
    expected_since: datetime,
) -> tuple[int, int, int]:
    """What a fair share of these teams' work is computed from: (conversations waiting
    unassigned, agents at work or expected back, the open load those agents hold).

    Expected back: active members with one of ``roles`` who are online, or who signed in
    since ``expected_since``; their share of the backlog is kept for them until they come."""
    if not team_ids:
        return 0, 0, 0
    waiting = await session.scalar(
        select(func.count())
        .select_from(Conversation)
        .where(
            Conversation.team_id.in_(list(team_ids)),
            Conversation.assignee_id.is_(None),
            Conversation.status == ConversationStatus.OPEN,
        )
    )
    members = select(team_member.c.staff_id).where(team_member.c.team_id.in_(list(team_ids)))
    agents = (
        await session.scalars(
            select(StaffUser.id).where(
                StaffUser.id.in_(members),
                StaffUser.active.is_(True),
                StaffUser.role.in_(list(roles)),
                or_(
                    StaffUser.id.in_(list(online_staff_ids)),
                    StaffUser.last_login_at >= expected_since,
                ),
            )
        )
    ).all()
    load = sum((await open_loads(session, agents)).values())
    return int(waiting or 0), len(agents), load
