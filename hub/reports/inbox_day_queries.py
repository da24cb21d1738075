"""The inbox reports' figures from the day rollup (``report_inbox_day``).

A period of clinic-local days reads its whole months from the month rows and only its edge
days from the day rows (``rollup.pieces``). A group (the clinic, one channel, team or agent,
within the filters) is its own row per day or month, so a figure sums a few dozen rows and a
percentile merges their histograms (``rollup.Histogram``). Two things are read from the facts:
missed targets still waiting (they depend on now, through a partial index on the waiting
facts) and a percentile that falls in the histograms' overflow bucket (waits of 90 days or
more, rare).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.reports.inbox_queries import ALL, BUCKETS, GroupKey, Resolved, Scope, Stats, scoped
from hub.reports.models import ANY_CHANNEL, ANY_ID, NO_TEAM, NOBODY, InboxDay
from hub.reports.models import ConversationFact as F
from hub.reports.rollup import (
    DAY,
    MONTH,
    OVERFLOW,
    Histogram,
    Rank,
    pieces,
    shown,
)

Days = tuple[date, date]
"""A period's first and last clinic-local day."""
Bounds = tuple[datetime, datetime]
"""The same period as UTC instants [from, to) (``ReportFilters.bounds``)."""
DIMENSIONS = ("channel", "team", "agent")


def _period(days: Days) -> Any:
    ranges, months = pieces(*days)
    parts = [and_(InboxDay.grain == DAY, InboxDay.day >= a, InboxDay.day <= b) for a, b in ranges]
    if months:
        parts.append(and_(InboxDay.grain == MONTH, InboxDay.day.in_(months)))
    return or_(*parts)


def _fixed(scope: Scope) -> dict[str, Any]:
    return {"channel": scope.channel, "team": scope.team_id, "agent": scope.agent_id}


def _variant(scope: Scope, group: str | None) -> Any:
    """The rows of one group dimension (None: the clinic) within ``scope``: a filtered
    dimension is its value, the grouped one any value but "every", the others "every"."""
    columns = {
        "channel": (InboxDay.channel, ANY_CHANNEL),
        "team": (InboxDay.team_id, ANY_ID),
        "agent": (InboxDay.assignee_id, ANY_ID),
    }
    where = []
    for dim, value in _fixed(scope).items():
        column, every = columns[dim]
        if value is not None:
            where.append(column == value)
        elif dim == group:
            where.append(column != every)
        else:
            where.append(column == every)
    return and_(*where)


def _groups_of(row: Any, scope: Scope, grouped: bool) -> list[GroupKey]:
    """The report groups a rollup row stands for. The read fetched only the rows of
    ``_rows_where``: at most one dimension the filters leave free is not "every", and it
    names the row's group; a row with none is the clinic's (within the filters), which is also
    the one group of each dimension a filter fixed."""
    fixed = _fixed(scope)
    values = {"channel": row.channel, "team": row.team_id, "agent": row.assignee_id}
    every = {"channel": ANY_CHANNEL, "team": ANY_ID, "agent": ANY_ID}
    for d in DIMENSIONS:
        if fixed[d] is None and values[d] != every[d]:
            return [(d, _shown_key(values[d]))]
    if not grouped:
        return [ALL]
    return [ALL, *((d, fixed[d]) for d in DIMENSIONS if fixed[d] is not None)]


def _shown_key(value: Any) -> Any:
    return None if value in (NO_TEAM, NOBODY) else value


def _rows_where(scope: Scope, grouped: bool) -> Any:
    return or_(*(_variant(scope, g) for g in (None, *(DIMENSIONS if grouped else ()))))


@dataclass
class _Group:
    stats: Stats = field(default_factory=Stats)
    parts: list[bytes | None] = field(default_factory=list)
    """The packed histograms of its rows."""


def _buckets(merged: Histogram) -> list[int]:
    """The first-response buckets from the histograms: their edges are whole minutes, so
    each is exact. A negative wait (clocks) counts as immediate, as on the facts."""
    below = [
        merged.at_most(high - 1) if high is not None else merged.total
        for _label, _low, high in BUCKETS
    ]
    return [n - (below[i - 1] if i else 0) for i, n in enumerate(below)]


def _fact_group(key: GroupKey) -> list[Any]:
    dim, value = key
    column = {"channel": F.channel, "team": F.team_id, "agent": F.assignee_id}.get(dim)
    if column is None:
        return []
    return [column.is_(None) if value is None else column == value]


async def _exact(
    session: AsyncSession, column: Any, cohort: list[Any], key: GroupKey, rank: Rank | None
) -> int | None:
    """A percentile's value: the bucket's lower bound, or read from the facts in the overflow."""
    if rank is None:
        return None
    if rank.overflow_rank is None:
        return rank.value
    seconds = await session.scalar(
        select(column)
        .where(*cohort, *_fact_group(key), column >= OVERFLOW)
        .order_by(column)
        .offset(rank.overflow_rank - 1)
        .limit(1)
    )
    return None if seconds is None else shown(seconds)


async def _live_breaches(
    session: AsyncSession, bounds: Bounds, scope: Scope, now: datetime, grouped: bool
) -> dict[GroupKey, int]:
    """Conversations opened in the period still waiting past their due time, now (the
    conditions imply the partial index's ``WAITING``)."""
    low, high = bounds
    where = scoped([F.opened_at >= low, F.opened_at < high], scope)
    rows = await session.execute(
        select(F.channel, F.team_id, F.assignee_id, func.count())
        .where(F.wait_end_at.is_(None), F.due_at.is_not(None), F.due_at < now, *where)
        .group_by(F.channel, F.team_id, F.assignee_id)
    )
    out: dict[GroupKey, int] = defaultdict(int)
    for channel, team, agent, n in rows:
        keys = [ALL, ("channel", channel), ("team", team), ("agent", agent)] if grouped else [ALL]
        for key in keys:
            out[key] += n
    return out


async def first_response_rows(
    session: AsyncSession, days: Days, scope: Scope, *, business_hours: bool, grouped: bool
) -> Sequence[Any]:
    """The rollup rows of the conversations opened on ``days``, for every group."""
    histogram = InboxDay.first_response_bh if business_hours else InboxDay.first_response
    rows = await session.execute(
        select(
            InboxDay.channel,
            InboxDay.team_id,
            InboxDay.assignee_id,
            InboxDay.opened,
            InboxDay.measured,
            InboxDay.unanswered_open,
            InboxDay.closed_unanswered,
            InboxDay.with_due,
            InboxDay.settled_breaches,
            histogram.label("histogram"),
        ).where(_period(days), _rows_where(scope, grouped), InboxDay.opened > 0)
    )
    return rows.all()


def first_response_groups(
    rows: Sequence[Any], scope: Scope, grouped: bool
) -> dict[GroupKey, tuple[Stats, Rank | None, Rank | None]]:
    """Each group's counts, buckets and percentile ranks from its rows (no database)."""
    groups: dict[GroupKey, _Group] = defaultdict(_Group)
    for row in rows:
        for key in _groups_of(row, scope, grouped):
            g = groups[key]
            s = g.stats
            s.count += row.opened
            s.measured += row.measured
            s.unanswered_open += row.unanswered_open
            s.closed_unanswered += row.closed_unanswered
            s.with_due += row.with_due
            s.breaches += row.settled_breaches
            g.parts.append(row.histogram)
    out = {}
    for key, g in groups.items():
        merged = Histogram(g.parts)
        g.stats.buckets = _buckets(merged)
        p50, p90 = merged.percentiles((0.5, 0.9))
        out[key] = (g.stats, p50, p90)
    return out


async def first_response_stats(
    session: AsyncSession,
    days: Days,
    bounds: Bounds,
    scope: Scope,
    *,
    business_hours: bool,
    now: datetime,
    grouped: bool = True,
) -> dict[GroupKey, Stats]:
    """Conversations opened on ``days``: waits, buckets, missed targets; by channel, team
    and agent too when ``grouped``."""
    rows = await first_response_rows(
        session, days, scope, business_hours=business_hours, grouped=grouped
    )
    groups = first_response_groups(rows, scope, grouped)
    for key, n in (await _live_breaches(session, bounds, scope, now, grouped)).items():
        if key not in groups:
            groups[key] = (Stats(), None, None)
        groups[key][0].breaches += n
    column = F.first_response_bh_s if business_hours else F.first_response_s
    low, high = bounds
    cohort = scoped([F.opened_at >= low, F.opened_at < high], scope)
    out = {}
    for key, (s, p50, p90) in groups.items():
        s.p50 = await _exact(session, column, cohort, key, p50)
        s.p90 = await _exact(session, column, cohort, key, p90)
        out[key] = s
    return out


async def resolution_stats(
    session: AsyncSession,
    days: Days,
    bounds: Bounds,
    scope: Scope,
    *,
    business_hours: bool,
    grouped: bool = True,
) -> dict[GroupKey, Stats]:
    """Conversations first resolved on ``days``: how long it took, how many were reopened
    within 7 days; by channel, team and agent too when ``grouped``."""
    histogram = InboxDay.resolution_bh if business_hours else InboxDay.resolution
    rows = await session.execute(
        select(
            InboxDay.channel,
            InboxDay.team_id,
            InboxDay.assignee_id,
            InboxDay.resolved,
            InboxDay.reopened,
            histogram.label("histogram"),
        ).where(_period(days), _rows_where(scope, grouped), InboxDay.resolved > 0)
    )
    groups: dict[GroupKey, _Group] = defaultdict(_Group)
    for row in rows:
        for key in _groups_of(row, scope, grouped):
            g = groups[key]
            g.stats.count += row.resolved
            g.stats.measured += row.resolved
            g.stats.reopened += row.reopened
            g.parts.append(row.histogram)
    column = F.resolution_bh_s if business_hours else F.resolution_s
    low, high = bounds
    cohort = scoped([F.resolved_at >= low, F.resolved_at < high], scope)
    out = {}
    for key, g in groups.items():
        s = g.stats
        p50, p90 = Histogram(g.parts).percentiles((0.5, 0.9))
        s.p50 = await _exact(session, column, cohort, key, p50)
        s.p90 = await _exact(session, column, cohort, key, p90)
        out[key] = s
    return out


async def opened_per_day(session: AsyncSession, days: Days, scope: Scope) -> dict[date, int]:
    start, end = days
    rows = await session.execute(
        select(InboxDay.day, InboxDay.opened).where(
            InboxDay.grain == DAY,
            InboxDay.day >= start,
            InboxDay.day <= end,
            _variant(scope, None),
            InboxDay.opened > 0,
        )
    )
    return {r[0]: r[1] for r in rows}


async def opened_count(session: AsyncSession, days: Days, scope: Scope) -> int:
    total = await session.scalar(
        select(func.sum(InboxDay.opened)).where(_period(days), _variant(scope, None))
    )
    return int(total or 0)


async def resolved_counts(session: AsyncSession, days: Days, scope: Scope) -> Resolved:
    """One read of the period's resolutions serves the total, the reopened count and the
    per-agent column of the workload table."""
    rows = await session.execute(
        select(InboxDay.assignee_id, func.sum(InboxDay.resolved), func.sum(InboxDay.reopened))
        .where(_period(days), _variant(scope, "agent"), InboxDay.resolved > 0)
        .group_by(InboxDay.assignee_id)
    )
    by_assignee: dict[uuid.UUID | None, int] = {}
    reopened = 0
    for assignee, count, reopened_here in rows:
        by_assignee[None if assignee == NOBODY else assignee] = int(count)
        reopened += int(reopened_here)
    return Resolved(by_assignee, reopened)
