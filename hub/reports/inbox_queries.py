"""SQL of the inbox reports beside the day rollup's (``inbox_day_queries``): the heatmap's
hourly counts, one agent's heatmap from their facts, the live workload, names and the
conversation export's pages; and what every inbox read shares (``Scope``, ``Stats``).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from sqlalchemy import Integer, and_, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.enums import ConversationStatus
from hub.inbox.models import Conversation, StaffUser, Team
from hub.reports.facts import parse_hour_key
from hub.reports.models import ConversationFact as F
from hub.reports.models import InboundHour

BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0-1 h", 0, 3600),
    ("1-4 h", 3600, 4 * 3600),
    ("4-8 h", 4 * 3600, 8 * 3600),
    ("8-24 h", 8 * 3600, 24 * 3600),
    ("over 24 h", 24 * 3600, None),
)
"""First-response buckets: [low, high) seconds."""


GroupKey = tuple[str, Any]
"""("all", None), ("channel", "sms"), ("team", team id or None), ("agent", staff id or None)."""
ALL: GroupKey = ("all", None)


@dataclass(frozen=True)
class Scope:
    team_id: uuid.UUID | None = None
    channel: str | None = None
    agent_id: uuid.UUID | None = None


@dataclass
class Stats:
    count: int = 0
    measured: int = 0
    """Rows with the duration (answered, or resolved)."""
    p50: int | None = None
    p90: int | None = None
    unanswered_open: int = 0
    closed_unanswered: int = 0
    with_due: int = 0
    breaches: int = 0
    reopened: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))


def scoped(where: list[Any], scope: Scope) -> list[Any]:
    if scope.team_id is not None:
        where.append(F.team_id == scope.team_id)
    if scope.channel is not None:
        where.append(F.channel == scope.channel)
    if scope.agent_id is not None:
        where.append(F.assignee_id == scope.agent_id)
    return where


async def inbound_cells(
    session: AsyncSession, start: date, end: date, scope: Scope
) -> dict[tuple[int, int], int]:
    """Incoming messages per (weekday, hour) over the clinic-local days ``start``..``end``,
    from the hourly rollup (no agent filter: the rollup is not kept per agent)."""
    where: list[Any] = [InboundHour.day >= start, InboundHour.day <= end]
    if scope.team_id is not None:
        where.append(InboundHour.team_id == scope.team_id)
    if scope.channel is not None:
        where.append(InboundHour.channel == scope.channel)
    rows = await session.execute(
        select(InboundHour.weekday, InboundHour.hour, cast(func.sum(InboundHour.count), Integer))
        .where(*where)
        .group_by(InboundHour.weekday, InboundHour.hour)
    )
    return {(r[0], r[1]): r[2] for r in rows}


async def inbound_cells_of_agent(
    session: AsyncSession,
    days: tuple[date, date],
    bounds: tuple[datetime, datetime],
    scope: Scope,
) -> dict[tuple[date, int], int]:
    """Incoming messages per (clinic-local day, hour) over ``days``, in one agent's
    conversations, from each one's share of the hourly counts (``inbound_hours``, counted in
    the clinic's zone). ``bounds`` are ``days`` as instants: only the conversations a patient
    wrote in then are read, not every one the agent ever had."""
    low, high = bounds
    # The message's channel narrows, as in the rollup, not the conversation's.
    where = scoped([F.last_inbound_at >= low, F.opened_at < high], replace(scope, channel=None))
    start, end = days
    cells: dict[tuple[date, int], int] = defaultdict(int)
    for counts in await session.scalars(select(F.inbound_hours).where(*where)):
        for key, n in counts.items():
            day, hour, channel = parse_hour_key(key)
            if start <= day <= end and (scope.channel is None or channel == scope.channel):
                cells[(day, hour)] += n
    return dict(cells)


async def open_load(session: AsyncSession, scope: Scope) -> dict[uuid.UUID, int]:
    """Conversations not resolved, per assignee, now (live: an indexed count)."""
    where: list[Any] = [
        Conversation.assignee_id.is_not(None),
        Conversation.status != ConversationStatus.RESOLVED,
    ]
    if scope.team_id is not None:
        where.append(Conversation.team_id == scope.team_id)
    if scope.channel is not None:
        where.append(Conversation.channel == scope.channel)
    if scope.agent_id is not None:
        where.append(Conversation.assignee_id == scope.agent_id)
    rows = await session.execute(
        select(Conversation.assignee_id, func.count())
        .where(*where)
        .group_by(Conversation.assignee_id)
    )
    return {r[0]: r[1] for r in rows if r[0] is not None}


async def names(
    session: AsyncSession, staff_ids: set[uuid.UUID], team_ids: set[uuid.UUID]
) -> tuple[dict[uuid.UUID, str], dict[uuid.UUID, str]]:
    """Staff display names and team names (work names, not patient data)."""
    staff: dict[uuid.UUID, str] = {}
    teams: dict[uuid.UUID, str] = {}
    if staff_ids:
        rows = await session.execute(
            select(StaffUser.id, StaffUser.display_name).where(StaffUser.id.in_(staff_ids))
        )
        staff = {r[0]: r[1] for r in rows}
    if team_ids:
        rows = await session.execute(select(Team.id, Team.name).where(Team.id.in_(team_ids)))
        teams = {r[0]: r[1] for r in rows}
    return staff, teams


async def export_page(
    session: AsyncSession,
    low: datetime,
    high: datetime,
    scope: Scope,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Sequence[Any]:
    """Facts of conversations opened in [low, high), with the conversation's current status
    and patient id, in (opened, id) order after ``after``: one page of the export."""
    where = scoped([F.opened_at >= low, F.opened_at < high], scope)
    if after is not None:
        at, last = after
        where.append(or_(F.opened_at > at, and_(F.opened_at == at, F.conversation_id > last)))
    stmt = (
        select(F, Conversation.status, Conversation.patient_id)
        .join(Conversation, Conversation.id == F.conversation_id)
        .where(*where)
        .order_by(F.opened_at, F.conversation_id)
        .limit(limit)
    )
    return (await session.execute(stmt)).all()


@dataclass
class Resolved:
    """Conversations first resolved in a period: per assignee (None: unassigned), and how
    many of them were reopened within 7 days."""

    by_assignee: dict[uuid.UUID | None, int]
    reopened: int

    @property
    def total(self) -> int:
        return sum(self.by_assignee.values())


async def inbound_total(session: AsyncSession, start: date, end: date, scope: Scope) -> int:
    """Incoming messages over the clinic-local days ``start``..``end`` (the trend's figure)."""
    where: list[Any] = [InboundHour.day >= start, InboundHour.day <= end]
    if scope.team_id is not None:
        where.append(InboundHour.team_id == scope.team_id)
    if scope.channel is not None:
        where.append(InboundHour.channel == scope.channel)
    total = await session.scalar(select(cast(func.sum(InboundHour.count), Integer)).where(*where))
    return total or 0
