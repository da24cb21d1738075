"""The inbox reports' statistics as they were read before the day rollup (migration 0032):
from one ``report_conversation_fact`` row per conversation in the period (PostgreSQL: GROUPING
SETS and ``percentile_disc``; SQLite: in Python). Kept only so bench/reports_rollup.py can
time the old read beside the new one in the same run; the hub no longer calls it."""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, literal, null, select, tuple_
from sqlalchemy.dialects.postgresql import array as pg_array
from sqlalchemy.ext.asyncio import AsyncSession

from hub.reports.inbox_queries import ALL, BUCKETS, GroupKey, Resolved, Scope, Stats
from hub.reports.models import ConversationFact as F


def _scoped(where: list[Any], scope: Scope) -> list[Any]:
    if scope.team_id is not None:
        where.append(F.team_id == scope.team_id)
    if scope.channel is not None:
        where.append(F.channel == scope.channel)
    if scope.agent_id is not None:
        where.append(F.assignee_id == scope.agent_id)
    return where


def percentile(values: Sequence[int], p: float) -> int | None:
    """``percentile_disc``: the smallest value with at least ``p`` of the values at or
    below it (the median of an even count is the lower middle value)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(p * len(ordered)) - 1, 0)]


def _bucket(seconds: int) -> int:
    for i, (_label, low, high) in enumerate(BUCKETS):
        if seconds >= low and (high is None or seconds < high):
            return i
    return 0  # a negative wait (clocks): counted as immediate


def _postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _keys_pg(grouped: bool) -> list[Any]:
    """The grouping columns and their GROUPING() flags; constants when not grouped (GROUPING()
    only accepts expressions the query groups by)."""
    if not grouped:
        return [null(), null(), null(), literal(1), literal(1), literal(1)]
    columns = [F.channel, F.team_id, F.assignee_id]
    return [*columns, *(func.grouping(c) for c in columns)]


def _grouped_pg(stmt: Any, grouped: bool) -> Any:
    if not grouped:
        return stmt
    sets = [(), (F.channel,), (F.team_id,), (F.assignee_id,)]
    return stmt.group_by(func.grouping_sets(*[tuple_(*s) for s in sets]))


def _group_keys(channel: Any, team: Any, agent: Any, g: tuple[int, int, int]) -> GroupKey:
    if g == (1, 1, 1):
        return ALL
    if g[0] == 0:
        return ("channel", channel)
    if g[1] == 0:
        return ("team", team)
    return ("agent", agent)


async def first_response_stats(
    session: AsyncSession,
    low: datetime,
    high: datetime,
    scope: Scope,
    *,
    business_hours: bool,
    now: datetime,
    grouped: bool = True,
) -> dict[GroupKey, Stats]:
    """Conversations opened in [low, high): waits, buckets, breaches; by channel, team and
    agent too when ``grouped``."""
    column = F.first_response_bh_s if business_hours else F.first_response_s
    where = _scoped([F.opened_at >= low, F.opened_at < high], scope)
    breach = and_(F.due_at.is_not(None), func.coalesce(F.wait_end_at, now) > F.due_at)
    if _postgres(session):
        return await _first_response_pg(session, column, where, breach, grouped)
    rows = await session.execute(
        select(
            F.channel,
            F.team_id,
            F.assignee_id,
            column,
            F.resolved_at.is_not(None),
            F.due_at.is_not(None),
            breach,
        ).where(*where)
    )
    values: dict[GroupKey, list[int]] = defaultdict(list)
    out: dict[GroupKey, Stats] = defaultdict(Stats)
    for channel, team, agent, seconds, resolved, has_due, breached in rows:
        keys = [ALL, ("channel", channel), ("team", team), ("agent", agent)] if grouped else [ALL]
        for key in keys:
            s = out[key]
            s.count += 1
            if seconds is None:
                if resolved:
                    s.closed_unanswered += 1
                else:
                    s.unanswered_open += 1
            else:
                s.measured += 1
                values[key].append(seconds)
                s.buckets[_bucket(seconds)] += 1
            s.with_due += bool(has_due)
            s.breaches += bool(breached)
    for key, s in out.items():
        s.p50, s.p90 = percentile(values[key], 0.5), percentile(values[key], 0.9)
    return dict(out)


async def _first_response_pg(
    session: AsyncSession, column: Any, where: list[Any], breach: Any, grouped: bool
) -> dict[GroupKey, Stats]:
    def count_if(condition: Any) -> Any:
        return func.count().filter(condition)

    bucket_columns = [
        count_if(and_(column >= low, column < high) if high is not None else column >= low)
        for _label, low, high in BUCKETS
    ]
    stmt = select(
        *_keys_pg(grouped),
        func.count(),
        func.count(column),
        _median_and_p90(column),
        count_if(and_(column.is_(None), F.resolved_at.is_(None))),
        count_if(and_(column.is_(None), F.resolved_at.is_not(None))),
        count_if(F.due_at.is_not(None)),
        count_if(breach),
        *bucket_columns,
    ).where(*where)
    stmt = _grouped_pg(stmt, grouped)
    out: dict[GroupKey, Stats] = {}
    for row in await session.execute(stmt):
        key = _group_keys(row[0], row[1], row[2], (row[3], row[4], row[5]))
        p50, p90 = _pair(row[8])
        out[key] = Stats(
            count=row[6],
            measured=row[7],
            p50=p50,
            p90=p90,
            unanswered_open=row[9],
            closed_unanswered=row[10],
            with_due=row[11],
            breaches=row[12],
            buckets=list(row[13:]),
        )
    return out


def _median_and_p90(column: Any) -> Any:
    """Both percentiles from one ordered-set aggregate: one sort per group, not two."""
    return func.percentile_disc(pg_array([0.5, 0.9])).within_group(column)


def _pair(values: Sequence[Any] | None) -> tuple[int | None, int | None]:
    if not values:
        return None, None
    low, high = values
    return (None if low is None else int(low)), (None if high is None else int(high))


async def resolution_stats(
    session: AsyncSession,
    low: datetime,
    high: datetime,
    scope: Scope,
    *,
    business_hours: bool,
    grouped: bool = True,
) -> dict[GroupKey, Stats]:
    """Conversations first resolved in [low, high): how long it took, how many were reopened
    within 7 days; by channel, team and agent too when ``grouped``."""
    column = F.resolution_bh_s if business_hours else F.resolution_s
    where = _scoped([F.resolved_at >= low, F.resolved_at < high], scope)
    if _postgres(session):
        stmt = _grouped_pg(
            select(
                *_keys_pg(grouped),
                func.count(),
                _median_and_p90(column),
                func.count().filter(F.reopened),
            ).where(*where),
            grouped,
        )
        out: dict[GroupKey, Stats] = {}
        for row in await session.execute(stmt):
            key = _group_keys(row[0], row[1], row[2], (row[3], row[4], row[5]))
            p50, p90 = _pair(row[7])
            out[key] = Stats(count=row[6], measured=row[6], p50=p50, p90=p90, reopened=row[8])
        return out
    rows = await session.execute(
        select(F.channel, F.team_id, F.assignee_id, column, F.reopened).where(*where)
    )
    values: dict[GroupKey, list[int]] = defaultdict(list)
    stats: dict[GroupKey, Stats] = defaultdict(Stats)
    for channel, team, agent, seconds, reopened in rows:
        keys = [ALL, ("channel", channel), ("team", team), ("agent", agent)] if grouped else [ALL]
        for key in keys:
            stats[key].count += 1
            stats[key].measured += 1
            stats[key].reopened += bool(reopened)
            if seconds is not None:
                values[key].append(seconds)
    for key, s in stats.items():
        s.p50, s.p90 = percentile(values[key], 0.5), percentile(values[key], 0.9)
    return dict(stats)


async def opened_per_day(
    session: AsyncSession, low: datetime, high: datetime, scope: Scope
) -> dict[date, int]:
    where = _scoped([F.opened_at >= low, F.opened_at < high], scope)
    rows = await session.execute(
        select(F.opened_day, func.count()).where(*where).group_by(F.opened_day)
    )
    return {r[0]: r[1] for r in rows}


async def opened_count(session: AsyncSession, low: datetime, high: datetime, scope: Scope) -> int:
    where = _scoped([F.opened_at >= low, F.opened_at < high], scope)
    return await session.scalar(select(func.count()).where(*where)) or 0


async def resolved_counts(
    session: AsyncSession, low: datetime, high: datetime, scope: Scope
) -> Resolved:
    """One read of the period's resolutions serves the total, the reopened count and the
    per-agent column of the workload table."""
    where = _scoped([F.resolved_at >= low, F.resolved_at < high], scope)
    rows = await session.execute(
        select(F.assignee_id, func.count(), func.count().filter(F.reopened))
        .where(*where)
        .group_by(F.assignee_id)
    )
    by_assignee: dict[uuid.UUID | None, int] = {}
    reopened = 0
    for assignee, count, reopened_here in rows:
        by_assignee[assignee] = count
        reopened += reopened_here
    return Resolved(by_assignee, reopened)
