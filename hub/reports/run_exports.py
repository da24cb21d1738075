"""One row per journey step run for the CSV export: ids, step, status, channel, a reason code
and times. No message text and no names: a reason is reduced to a code, since a provider's
free text could quote an address."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from hub.db import Database
from hub.journeys import queries as journey_queries
from hub.journeys.definitions import SKIPPED_BEFORE_ENROLLMENT
from hub.journeys.lifecycle import CANCELLED_BY_STAFF, STOPPED_REASON
from hub.journeys.outcomes import CALL_OFF
from hub.journeys.step_choice import FALLBACK_NOTE
from hub.reports import outcome_queries as oq
from hub.reports.base import ReportFilters
from hub.reports.journeys import journeys_in_scope

DEFAULT_EXPORT_BATCH = 2_000
"""Runs read per statement: bounds the memory an export holds, whatever its length."""

RUN_COLUMNS = (
    "journey",
    "version",
    "step",
    "enrollment_id",
    "appointment_id",
    "run_id",
    "due_at",
    "status",
    "channel",
    "reason_code",
    "message_status",
    "sent_at",
    "delivered_at",
)
"""The export's header, in row order."""

_KNOWN = {
    SKIPPED_BEFORE_ENROLLMENT: "due_before_enrollment",
    STOPPED_REASON: "journey_stopped",
    CANCELLED_BY_STAFF: "cancelled_by_staff",
    "the patient confirmed": "patient_confirmed",
    "the patient cancelled": "patient_cancelled",
    "the patient answered": "patient_answered",
    "the patient already confirmed": "already_confirmed",
    "the patient has replied since enrolling": "already_replied",
    "the journey no longer has this step": "step_removed",
    **{off.reason: off.code for off in CALL_OFF.values()},
}
_DECISION = re.compile(r"\((\w+)\)")


def reason_code(reason: str | None, error_code: str | None) -> str | None:
    """A short code for why a run went as it did: the message's failure code, else a known
    reason's code, else the first consent decision code in the reason ("opted_out")."""
    if error_code:
        return error_code
    if not reason:
        return None
    if reason in _KNOWN:
        return _KNOWN[reason]
    if reason.startswith("no ") and " variant of " in reason:
        return "no_translation"
    found = _DECISION.search(reason)
    if found:
        return found.group(1)
    if FALLBACK_NOTE in reason:
        return "fallback_language"
    return "other"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


async def journey_run_rows(
    db: Database, filters: ReportFilters, *, batch: int = DEFAULT_EXPORT_BATCH
) -> AsyncIterator[list[list[Any]]]:
    """Batches of rows (``RUN_COLUMNS`` order, times as UTC ISO) of the runs due in the
    period, in due order; one short read per batch, so an export of a year holds one batch."""
    low, high = filters.bounds()
    async with db.reader() as session:
        journeys = {j.id: j for j in await journey_queries.all_journeys(session)}
        only = None
        if filters.journey_key is not None:
            only = (await journeys_in_scope(session, filters.journey_key))[0].id
    after: tuple[datetime, uuid.UUID] = (low, uuid.UUID(int=0))
    first = True
    while True:
        stmt = oq.run_rows(low, high, only, after, inclusive=first).limit(batch)
        async with db.reader() as session:
            found = (await session.execute(stmt)).all()
        first = False
        rows = []
        for r in found:
            (journey_id, version, step_id, enrollment_id, appointment_id, run_id, due_at) = r[:7]
            status, message_channel, run_channel, reason, message_status = r[7:12]
            error_code, sent_at, delivered_at = r[12:]
            channel = message_channel.value if message_channel is not None else run_channel
            if filters.channel is not None and channel != filters.channel:
                continue
            journey = journeys.get(journey_id)
            rows.append(
                [
                    journey.key if journey else str(journey_id),
                    version if version is not None else (journey.version if journey else None),
                    step_id,
                    str(enrollment_id),
                    str(appointment_id) if appointment_id else None,
                    str(run_id),
                    _iso(due_at),
                    status.value,
                    channel,
                    reason_code(reason, error_code),
                    message_status.value if message_status is not None else None,
                    _iso(sent_at),
                    _iso(delivered_at),
                ]
            )
        if rows:
            yield rows
        if len(found) < batch:
            return
        after = (found[-1][6], found[-1][5])
