"""CSV exports, one row per conversation: ids, channel, team, assignee, timings, status. No
message text and no patient names (the patient is an id); staff and team names are work
names. Journey runs are exported by ``hub.reports.run_exports``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from hub.db import Database, utcnow
from hub.inbox.access import StaffContext
from hub.reports import inbox_queries as q
from hub.reports.base import ReportFilters, for_viewer

DEFAULT_EXPORT_BATCH = 2_000
"""Conversations read per statement: bounds the memory an export holds, whatever its length."""

CONVERSATION_COLUMNS = (
    "conversation_id",
    "patient_id",
    "channel",
    "team",
    "assignee",
    "status",
    "opened_at",
    "first_response_at",
    "first_response_s",
    "first_response_business_s",
    "resolved_at",
    "resolution_s",
    "resolution_business_s",
    "first_response_due_at",
    "target_missed",
    "reopened_within_7_days",
)
"""The export's header, in row order (times UTC ISO 8601, durations whole seconds)."""


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


async def conversation_rows(
    db: Database,
    filters: ReportFilters,
    viewer: StaffContext | None = None,
    *,
    batch: int = DEFAULT_EXPORT_BATCH,
) -> AsyncIterator[list[list[Any]]]:
    """Batches of rows (``CONVERSATION_COLUMNS`` order) of the conversations opened in the
    period, oldest first; one short read per batch (keyset, not OFFSET). Read from the
    report facts, so it agrees with the Response times report."""
    if viewer is not None:
        filters = for_viewer(filters, viewer)
    low, high = filters.bounds()
    scope = q.Scope(filters.team_id, filters.channel, filters.agent_id)
    now = utcnow()
    after: tuple[datetime, uuid.UUID] | None = None
    staff: dict[uuid.UUID, str] = {}
    teams: dict[uuid.UUID, str] = {}
    while True:
        async with db.reader() as session:
            found = await q.export_page(session, low, high, scope, after, batch)
            missing_staff = {f.assignee_id for f, *_ in found if f.assignee_id} - set(staff)
            missing_teams = {f.team_id for f, *_ in found if f.team_id} - set(teams)
            more_staff, more_teams = await q.names(session, missing_staff, missing_teams)
        staff.update(more_staff)
        teams.update(more_teams)
        rows = []
        for fact, status, patient_id in found:
            wait_end = fact.wait_end_at or now
            rows.append(
                [
                    str(fact.conversation_id),
                    str(patient_id),
                    fact.channel,
                    teams.get(fact.team_id) if fact.team_id else None,
                    staff.get(fact.assignee_id) if fact.assignee_id else None,
                    status.value,
                    _iso(fact.opened_at),
                    _iso(fact.first_response_at),
                    fact.first_response_s,
                    fact.first_response_bh_s,
                    _iso(fact.resolved_at),
                    fact.resolution_s,
                    fact.resolution_bh_s,
                    _iso(fact.due_at),
                    fact.due_at is not None and wait_end > fact.due_at,
                    fact.reopened,
                ]
            )
        if rows:
            yield rows
        if len(found) < batch:
            return
        last = found[-1][0]
        after = (last.opened_at, last.conversation_id)
