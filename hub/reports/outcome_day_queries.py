"""SQL of the outcome reports read from the day rollups (``outcome_models``). A period is whole
clinic-local days, the same days the rollups count in, so a sum over its days is exact; where
the rollups were counted otherwise (another zone, other late-cancellation hours) the reports
read the facts instead (``outcome_queries``), so a figure is never approximate.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from hub.reports import facts_queries as state_queries
from hub.reports import outcome_rollup_queries as rq
from hub.reports.models import NO_JOURNEY
from hub.reports.outcome_models import (
    ALL,
    AppointmentDay,
    ConfirmMonth,
    ConfirmWait,
    DeliveryDay,
    DeliveryMonth,
    RunDay,
    RunMonth,
)
from hub.reports.outcome_rollup import UNDELIVERED

Days = tuple[date, date]
"""First and last day of a period, inclusive."""
RUN_STATE_ID = 2
"""``run_facts_actions.RUN_STATE_ID`` (not imported: that module is above this one)."""
DELIVERY_STATE_ID = 3


async def _zone_of(session: AsyncSession, state_id: int) -> str | None:
    saved = await state_queries.state(session, state_id)
    return saved.time_zone if saved is not None else None


async def runs_current(session: AsyncSession, zone: str) -> bool:
    """The run and appointment day rollups count days in ``zone``."""
    return await _zone_of(session, RUN_STATE_ID) == zone


async def appointments_current(session: AsyncSession, zone: str, hours: int) -> bool:
    return await runs_current(session, zone) and (
        await rq.late_cancel_hours_counted(session) == hours
    )


async def delivery_current(session: AsyncSession, zone: str) -> bool:
    return await _zone_of(session, DELIVERY_STATE_ID) == zone


StepCounts = tuple[dict[str, dict[str, int]], dict[str, int]]
"""({step: {column: enrollments}}, {column: enrollments over all steps})."""


def split(days: Days) -> tuple[list[Days], Days | None]:
    """The period as its edge days (read from day rows) and the first days of the months it
    holds whole (read from month rows), if any."""
    start, end = days
    first = start if start.day == 1 else (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    after = end + timedelta(days=1)
    last = after.replace(day=1) - timedelta(days=1)  # the last day of the last whole month
    if first > last:
        return [days], None
    edges = [(start, first - timedelta(days=1))] if start < first else []
    if last < end:
        edges.append((after.replace(day=1), end))
    return edges, (first, last.replace(day=1))


def _parts(day_model: Any, month_model: Any, day_column: str, days: Days) -> list[Any]:
    """The period as (model, condition) pairs to UNION: its edge days on the day rows, the
    months it holds whole on the month rows."""
    edges, months = split(days)
    parts = [
        (day_model, and_(getattr(day_model, day_column) >= a, getattr(day_model, day_column) <= b))
        for a, b in edges
    ]
    if months is not None:
        parts.append(
            (month_model, and_(month_model.month >= months[0], month_model.month <= months[1]))
        )
    return parts


async def funnel_from_days(
    session: AsyncSession,
    journeys: Sequence[uuid.UUID],
    columns: Sequence[str],
    periods: Sequence[Days],
    channel: str | None,
) -> dict[uuid.UUID, list[StepCounts]]:
    """``outcome_queries.funnel_counts`` from ``report_run_day`` and ``report_run_month``, for
    every journey and period in one statement: per period, the flagged runs due in it whose
    previous flagged run (same enrollment, step scope, channel scope) was due before it, so
    each enrollment once."""
    selects = [
        select(literal(k).label("k"), m.journey_id, m.step_id, m.flag, m.count).where(
            m.journey_id.in_(list(journeys)),
            m.channel == (channel or ALL),
            m.flag.in_(list(columns)),
            m.prev_day < start,
            where,
        )
        for k, (start, end) in enumerate(periods)
        for m, where in _parts(RunDay, RunMonth, "due_day", (start, end))
    ]
    rows = union_all(*selects).subquery()
    stmt = select(rows.c.k, rows.c.journey_id, rows.c.step_id, rows.c.flag, func.sum(rows.c.count))
    stmt = stmt.group_by(rows.c.k, rows.c.journey_id, rows.c.step_id, rows.c.flag)
    found: dict[tuple[uuid.UUID, int], dict[str, dict[str, int]]] = defaultdict(
        lambda: defaultdict(lambda: {c: 0 for c in columns})
    )
    for k, journey_id, step_id, flag, n in await session.execute(stmt):
        found[(journey_id, k)][step_id][flag] = int(n)
    results: dict[uuid.UUID, list[StepCounts]] = {}
    for journey_id in journeys:
        results[journey_id] = []
        for k in range(len(periods)):
            steps = dict(found.get((journey_id, k), {}))
            totals = steps.pop(ALL, None) or {c: 0 for c in columns}
            results[journey_id].append((steps, totals))
    return results


async def confirm_histograms(
    session: AsyncSession,
    journeys: Sequence[uuid.UUID],
    periods: Sequence[Days],
    channel: str | None,
) -> dict[uuid.UUID, list[dict[str, dict[int, int]]]]:
    """Per journey and period, {step: {time to confirm, cut: confirmed runs}} of the runs due
    in it."""
    selects = []
    for k, days in enumerate(periods):
        for m, where in _parts(ConfirmWait, ConfirmMonth, "due_day", days):
            part = select(literal(k).label("k"), m.journey_id, m.step_id, m.wait_s, m.count)
            part = part.where(m.journey_id.in_(list(journeys)), where)
            if channel is not None:
                part = part.where(m.channel == channel)
            selects.append(part)
    rows = union_all(*selects).subquery()
    stmt = select(
        rows.c.k, rows.c.journey_id, rows.c.step_id, rows.c.wait_s, func.sum(rows.c.count)
    ).group_by(rows.c.k, rows.c.journey_id, rows.c.step_id, rows.c.wait_s)
    found: dict[uuid.UUID, list[dict[str, dict[int, int]]]] = {
        j: [defaultdict(dict) for _ in periods] for j in journeys
    }
    for k, journey_id, step_id, wait_s, n in await session.execute(stmt):
        found[journey_id][k][step_id][int(wait_s)] = int(n)
    return {j: [dict(h) for h in per] for j, per in found.items()}


async def appointment_days(
    session: AsyncSession, days: Days, journey_id: uuid.UUID | None
) -> list[tuple[str, str, str, int]]:
    """(reminder group, status, cancellation timing, appointments) starting in ``days``."""
    stmt = (
        select(
            AppointmentDay.reminder_group,
            AppointmentDay.status,
            AppointmentDay.cancel,
            func.sum(AppointmentDay.count),
        )
        .where(
            AppointmentDay.journey_id == (journey_id or NO_JOURNEY),
            AppointmentDay.start_day >= days[0],
            AppointmentDay.start_day <= days[1],
        )
        .group_by(AppointmentDay.reminder_group, AppointmentDay.status, AppointmentDay.cancel)
    )
    return [(r[0], r[1], r[2], int(r[3])) for r in await session.execute(stmt)]


def _delivery_parts(
    days: Days, channel: str | None, journey_id: uuid.UUID | None, team_id: uuid.UUID | None
) -> list[tuple[Any, ColumnElement[bool]]]:
    parts = []
    for m, where in _parts(DeliveryDay, DeliveryMonth, "day", days):
        conditions = [where, m.journey_id == (journey_id or NO_JOURNEY)]
        if channel is not None:
            conditions.append(m.channel == channel)
        if team_id is not None:
            conditions.append(m.team_id == team_id)
        parts.append((m, and_(*conditions)))
    return parts


async def delivery_days(
    session: AsyncSession,
    days: Days,
    channel: str | None,
    journey_id: uuid.UUID | None,
    team_id: uuid.UUID | None,
) -> list[tuple[str, str | None, str, int]]:
    """``outcome_queries.delivery_groups`` from the delivery day and month rows."""
    rows = union_all(
        *(
            select(m.channel, m.provider, m.status, m.count).where(where)
            for m, where in _delivery_parts(days, channel, journey_id, team_id)
        )
    ).subquery()
    stmt = select(rows.c.channel, rows.c.provider, rows.c.status, func.sum(rows.c.count))
    stmt = stmt.group_by(rows.c.channel, rows.c.provider, rows.c.status)
    return [(r[0], r[1] or None, r[2], int(r[3])) for r in await session.execute(stmt)]


async def error_days(
    session: AsyncSession,
    days: Days,
    channel: str | None,
    journey_id: uuid.UUID | None,
    team_id: uuid.UUID | None,
) -> list[tuple[str, str, int]]:
    """``outcome_queries.error_groups`` from the delivery day and month rows."""
    rows = union_all(
        *(
            select(m.channel, m.error_code, m.count).where(where, m.status.in_(UNDELIVERED))
            for m, where in _delivery_parts(days, channel, journey_id, team_id)
        )
    ).subquery()
    stmt = select(rows.c.channel, rows.c.error_code, func.sum(rows.c.count))
    stmt = stmt.group_by(rows.c.channel, rows.c.error_code)
    return [(r[0], r[1], int(r[2])) for r in await session.execute(stmt)]
