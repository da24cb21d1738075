"""The inbox reports for managers: ``responses`` (how fast patients hear back) and ``volume``
(how much comes in and who carries it). Figures are defined in ``hub.reports.facts`` and
docs/reports.md; they are read from the rollups the tick keeps (``Report.as_of``)."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from hub.db import Database, utcnow
from hub.enums import Role
from hub.inbox.access import StaffContext
from hub.reports import inbox_day_queries as d
from hub.reports import inbox_queries as q
from hub.reports.base import Column, Report, ReportFilters, Series, Table, for_viewer
from hub.reports.facts_actions import rollup_as_of
from hub.reports.inbox_queries import ALL, BUCKETS, Scope, Stats
from hub.reports.tuning import tune_for_reports

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
JOURNEY_NOTE = "The journey filter does not apply to inbox figures and was ignored."
AGENT_NOTE = "You see your own figures: conversations assigned to you."


def _scope(filters: ReportFilters) -> Scope:
    return Scope(filters.team_id, filters.channel, filters.agent_id)


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _notes(filters: ReportFilters, viewer: StaffContext) -> list[str]:
    notes = []
    if filters.journey_key is not None:
        notes.append(JOURNEY_NOTE)
    if viewer.role is Role.AGENT:
        notes.append(AGENT_NOTE)
    return notes


RESPONSE_LABELS = {
    "opened": "Conversations opened",
    "first_response_median": "Median first response",
    "first_response_p90": "90th percentile first response",
    "not_answered_yet": "Not answered yet",
    "closed_without_reply": "Resolved without a reply",
    "sla_breaches": "First-response target missed",
    "sla_breach_rate": "Share that missed the target",
    "resolved": "Conversations resolved",
    "resolution_median": "Median resolution time",
    "resolution_p90": "90th percentile resolution time",
}


def _response_figures(first: Stats | None, resolved: Stats | None) -> dict[str, Any]:
    first = first or Stats()
    resolved = resolved or Stats()
    return {
        "opened": first.count,
        "first_response_median": first.p50,
        "first_response_p90": first.p90,
        "not_answered_yet": first.unanswered_open,
        "closed_without_reply": first.closed_unanswered,
        "sla_breaches": first.breaches,
        "sla_breach_rate": _rate(first.breaches, first.with_due),
        "resolved": resolved.count,
        "resolution_median": resolved.p50,
        "resolution_p90": resolved.p90,
    }


RESPONSE_COLUMNS = [
    Column("opened", "Opened", "count"),
    Column("answered", "Answered", "count"),
    Column("first_response_median", "Median first response", "seconds"),
    Column("first_response_p90", "90th percentile first response", "seconds"),
    Column("sla_breaches", "Target missed", "count"),
    Column("resolved", "Resolved", "count"),
    Column("resolution_median", "Median resolution", "seconds"),
]


def _group_table(
    name: str,
    title: str,
    first_col: Column,
    dimension: str,
    first: dict[q.GroupKey, Stats],
    resolved: dict[q.GroupKey, Stats],
    label: dict[Any, str],
) -> Table:
    keys = {k[1] for k in [*first, *resolved] if k[0] == dimension}
    rows: list[list[Any]] = []
    for key in keys:
        f, r = first.get((dimension, key), Stats()), resolved.get((dimension, key), Stats())
        shown = label.get(key, str(key))
        rows.append([shown, f.count, f.measured, f.p50, f.p90, f.breaches, r.count, r.p50])
    rows.sort(key=lambda row: (-row[1], row[0]))
    return Table(name, title, [first_col, *RESPONSE_COLUMNS], rows)


async def build_responses(db: Database, filters: ReportFilters, viewer: StaffContext) -> Report:
    filters = for_viewer(filters, viewer)
    as_of = await rollup_as_of(db)
    now = utcnow()
    scope = _scope(filters)
    bh = filters.business_hours
    days, bounds = (filters.start, filters.end), filters.bounds()
    earlier = filters.previous()
    pdays, pbounds = (earlier.start, earlier.end), earlier.bounds()
    async with db.reader() as session:
        await tune_for_reports(session)
        first = await d.first_response_stats(
            session, days, bounds, scope, business_hours=bh, now=now
        )
        resolved = await d.resolution_stats(session, days, bounds, scope, business_hours=bh)
        before = await d.first_response_stats(
            session, pdays, pbounds, scope, business_hours=bh, now=now, grouped=False
        )
        before_resolved = await d.resolution_stats(
            session, pdays, pbounds, scope, business_hours=bh, grouped=False
        )
        staff_ids = {k[1] for k in [*first, *resolved] if k[0] == "agent" and k[1]}
        team_ids = {k[1] for k in [*first, *resolved] if k[0] == "team" and k[1]}
        staff, teams = await q.names(session, staff_ids, team_ids)
    overall = first.get(ALL, Stats())
    notes = _notes(filters, viewer)
    if bh:
        notes.append(
            "Durations count only the open hours of each conversation's team (its hours, "
            "holidays and time zone); a conversation with no team counts every hour."
        )
    notes.append(
        "First responses are counted for conversations opened in the period; resolution "
        "times for conversations first resolved in it."
    )
    return Report(
        name="responses",
        title="Response times",
        filters=filters,
        figures=_response_figures(overall, resolved.get(ALL)),
        previous=_response_figures(before.get(ALL), before_resolved.get(ALL)),
        labels=dict(RESPONSE_LABELS),
        tables=[
            _group_table(
                "by_channel",
                "By channel",
                Column("channel", "Channel"),
                "channel",
                first,
                resolved,
                {},
            ),
            _group_table(
                "by_team",
                "By team",
                Column("team", "Team"),
                "team",
                first,
                resolved,
                {**teams, None: "No team"},
            ),
            _group_table(
                "by_agent",
                "By agent",
                Column("agent", "Agent"),
                "agent",
                first,
                resolved,
                {**staff, None: "Unassigned"},
            ),
        ],
        series=[
            Series(
                "first_response_buckets",
                "Time to first response",
                "buckets",
                [label for label, _low, _high in BUCKETS] + ["not answered yet"],
                [*overall.buckets, overall.unanswered_open],
            )
        ],
        notes=notes,
        as_of=as_of,
    )


VOLUME_LABELS = {
    "opened": "Conversations opened",
    "resolved": "Conversations resolved",
    "reopened": "Reopened within 7 days",
    "reopened_rate": "Share reopened within 7 days",
    "incoming_messages": "Incoming messages",
}


def _volume_figures(opened: int, resolved: q.Resolved, incoming: int) -> dict[str, Any]:
    return {
        "opened": opened,
        "resolved": resolved.total,
        "reopened": resolved.reopened,
        "reopened_rate": _rate(resolved.reopened, resolved.total),
        "incoming_messages": incoming,
    }


async def _incoming(
    session: Any, filters: ReportFilters, before: ReportFilters, scope: Scope
) -> tuple[dict[tuple[int, int], int], int]:
    """The period's (weekday, hour) cells and the previous period's total."""
    if scope.agent_id is None:
        rolled = await q.inbound_cells(session, filters.start, filters.end, scope)
        return rolled, await q.inbound_total(session, before.start, before.end, scope)
    # Both periods in one read of the agent's facts.
    days = (before.start, filters.end)
    bounds = (before.bounds()[0], filters.bounds()[1])
    by_day = await q.inbound_cells_of_agent(session, days, bounds, scope)
    cells: dict[tuple[int, int], int] = defaultdict(int)
    earlier = 0
    for (day, hour), n in by_day.items():
        if day >= filters.start:
            cells[(day.weekday(), hour)] += n
        else:
            earlier += n
    return dict(cells), earlier


async def build_volume(db: Database, filters: ReportFilters, viewer: StaffContext) -> Report:
    filters = for_viewer(filters, viewer)
    as_of = await rollup_as_of(db)
    scope = _scope(filters)
    days = (filters.start, filters.end)
    before = filters.previous()
    pdays = (before.start, before.end)
    async with db.reader() as session:
        await tune_for_reports(session)
        per_day = await d.opened_per_day(session, days, scope)
        resolved = await d.resolved_counts(session, days, scope)
        cells, incoming_before = await _incoming(session, filters, before, scope)
        # The trend needs totals only: no per-day, per-agent or per-hour reads.
        previous = _volume_figures(
            await d.opened_count(session, pdays, scope),
            await d.resolved_counts(session, pdays, scope),
            incoming_before,
        )
        load = await q.open_load(session, scope)
        resolved_by = {k: n for k, n in resolved.by_assignee.items() if k is not None}
        staff, _teams = await q.names(session, set(load) | set(resolved_by), set())
    figures = _volume_figures(sum(per_day.values()), resolved, sum(cells.values()))
    line_days = [filters.start + timedelta(days=i) for i in range(filters.days)]
    workload: list[list[Any]] = [
        [staff.get(sid, str(sid)), load.get(sid, 0), resolved_by.get(sid, 0)]
        for sid in set(load) | set(resolved_by)
    ]
    workload.sort(key=lambda row: (-row[1], -row[2], row[0]))
    return Report(
        name="volume",
        title="Volume and workload",
        filters=filters,
        figures=figures,
        previous=previous,
        labels=dict(VOLUME_LABELS),
        tables=[
            Table(
                "workload",
                "Workload per agent",
                [
                    Column("agent", "Agent"),
                    Column("open_now", "Open now (assigned)", "count"),
                    Column("resolved", "Resolved in period", "count"),
                ],
                workload,
            )
        ],
        series=[
            Series(
                "incoming_heatmap",
                "Incoming messages by weekday and hour",
                "heatmap",
                [f"{h:02d}" for h in range(24)],
                [[cells.get((w, h), 0) for h in range(24)] for w in range(7)],
                row_labels=list(WEEKDAYS),
            ),
            Series(
                "opened_per_day",
                "Conversations opened per day",
                "line",
                [day.isoformat() for day in line_days],
                [per_day.get(day, 0) for day in line_days],
            ),
        ],
        notes=[
            *_notes(filters, viewer),
            "Reopened: a conversation first resolved in the period that a patient's message or "
            "a person reopened within 7 days. Open now counts conversations assigned now and "
            "not resolved, whatever the period.",
        ],
        as_of=as_of,
    )
