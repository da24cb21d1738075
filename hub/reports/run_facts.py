"""One enrollment's run facts and one appointment's reminder group, computed from their rows
(no database access here).

Each flag is a funnel column (``hub.journeys.reporting_queries.column_predicate``) of one run:
an event (a reply, a confirmation, a cancellation, an opt-out) counts on the run whose message
was the last one the patient had received when it happened, i.e. from the run's message up to
the enrollment's next step message (``next_at``, the funnel's window function: messages in
(made, run id) order). The reports count patients, so they count distinct enrollments over
these rows, exactly as the funnel does over its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from hub.journeys.definitions import SKIPPED_BEFORE_ENROLLMENT

DELIVERED = ("delivered", "read")
UNDELIVERED = ("failed", "undelivered")
OPT_OUT_CODES = ("opted_out", "no_opt_in", "21610")
"""A send refused for want of consent: the gate's codes and Twilio's "unsubscribed"."""


@dataclass(frozen=True)
class RunRow:
    """A step run with its message's columns (None without a message)."""

    run_id: uuid.UUID
    step_id: str
    status: str
    reason: str | None
    due_at: datetime
    sent_at: datetime | None
    channel: str | None
    purpose: str | None
    message_status: str | None
    error_code: str | None


@dataclass(frozen=True)
class EnrollmentSource:
    enrollment_id: uuid.UUID
    journey_id: uuid.UUID
    version: int | None
    patient_id: uuid.UUID
    appointment_id: uuid.UUID | None
    confirmed_at: datetime | None
    cancelled_at: datetime | None
    runs: Sequence[RunRow]


@dataclass(frozen=True)
class PatientEvents:
    inbound: Sequence[datetime]
    """When each message the patient sent (in any conversation) came in."""
    revoked: Sequence[tuple[str, str, datetime]]
    """(channel, purpose, when) of each consent the patient revoked."""


def _next_message_at(runs: Sequence[RunRow]) -> dict[uuid.UUID, datetime | None]:
    with_message = sorted(
        (r for r in runs if r.sent_at is not None), key=lambda r: (r.sent_at, r.run_id)
    )
    following: dict[uuid.UUID, datetime | None] = {}
    for i, run in enumerate(with_message):
        following[run.run_id] = with_message[i + 1].sent_at if i + 1 < len(with_message) else None
    return following


def _within(
    run: RunRow, until: datetime | None, at: datetime | None, *, strictly_after: bool = False
) -> bool:
    """``at`` fell in the run's window: from its message (after it, when strictly) up to the
    enrollment's next step message."""
    if run.status != "sent" or at is None or run.sent_at is None:
        return False
    if at < run.sent_at or (strictly_after and at == run.sent_at):
        return False
    return until is None or at < until


def compute_runs(
    source: EnrollmentSource, events: PatientEvents, clinic_zone: ZoneInfo, now: datetime
) -> list[dict[str, Any]]:
    """The fact rows of the enrollment's runs."""
    following = _next_message_at(source.runs)
    rows = []
    for run in source.runs:
        sent = run.status == "sent"
        until = following.get(run.run_id)
        confirmed = _within(run, until, source.confirmed_at)
        wait = None
        if confirmed and source.confirmed_at is not None and run.sent_at is not None:
            wait = (source.confirmed_at - run.sent_at).total_seconds()
        rows.append(
            {
                "run_id": run.run_id,
                "enrollment_id": source.enrollment_id,
                "journey_id": source.journey_id,
                "version": source.version,
                "step_id": run.step_id,
                "appointment_id": source.appointment_id,
                "channel": run.channel,
                "due_at": run.due_at,
                "due_day": run.due_at.astimezone(clinic_zone).date(),
                "status": run.status,
                "sent": sent,
                "delivered": sent and run.message_status in DELIVERED,
                "replied": any(
                    _within(run, until, at, strictly_after=True) for at in events.inbound
                ),
                "confirmed": confirmed,
                "cancelled": _within(run, until, source.cancelled_at),
                "opted_out": any(
                    channel == run.channel and purpose == run.purpose and _within(run, until, at)
                    for channel, purpose, at in events.revoked
                ),
                "failed": run.status == "failed" or (sent and run.message_status in UNDELIVERED),
                "confirm_s": wait,
                "computed_at": now,
            }
        )
    return rows


def reminder_group(start_at: datetime, runs: Sequence[RunRow]) -> str:
    """Why an appointment was or was not reminded, first match wins: "reminded" (a step's
    message made before the start and not failed), "opted_out" (a step before the start was
    refused for consent), "unreachable" (one failed: no address, undeliverable), "too_late"
    (steps before the start were due before the enrollment), "no_journey" (no step due before
    the start), else "other" (called off, skipped by a condition, deferred past the start)."""
    if any(
        r.status == "sent"
        and r.sent_at is not None
        and r.sent_at < start_at
        and r.message_status not in UNDELIVERED
        for r in runs
    ):
        return "reminded"
    before = [r for r in runs if r.due_at < start_at]
    if any(
        "(opted_out)" in (r.reason or "")
        or "(no_opt_in)" in (r.reason or "")
        or r.error_code in OPT_OUT_CODES
        for r in before
    ):
        return "opted_out"
    if any(r.status == "failed" or r.message_status in UNDELIVERED for r in before):
        return "unreachable"
    if any(r.status == "skipped" and r.reason == SKIPPED_BEFORE_ENROLLMENT for r in before):
        return "too_late"
    return "other" if before else "no_journey"
