"""What one fact adds to the outcome reports' day rollups (``outcome_models``), computed from
the fact rows alone (no database access here): the refresh adds the new facts' counts and takes
the old ones' out, and a full rebuild adds every fact's, so both reach the same rows.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hub.reports.outcome_models import ALL, NO_PREVIOUS

FLAGS = ("sent", "delivered", "replied", "confirmed", "cancelled", "opted_out", "failed")
"""The run facts' funnel flags (``hub.journeys.reporting.FUNNEL_COLUMNS``)."""
UNDELIVERED = ("failed", "undelivered")
CANCELLED = "cancelled"

Counts = dict[tuple[Any, ...], int]
Row = Mapping[str, Any]


def wait_bucket(seconds: float) -> int:
    """The time to confirm cut to what ``hub.reports.words.span`` shows: whole seconds below a
    minute, whole minutes below a day, whole hours beyond. The lower bound, so a median read
    from buckets is the exact median cut the same way (the cut keeps order)."""
    s = max(0, math.floor(seconds))
    if s < 60:
        return s
    if s < 24 * 3600:
        return s - s % 60
    return s - s % 3600


def median_of(histogram: Mapping[int, int]) -> int | None:
    """The lower bound of the bucket holding the median as PostgreSQL's ``percentile_disc(0.5)``
    picks it (the lower middle of an even count); None when empty."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = math.ceil(total / 2)
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return bucket
    raise AssertionError("unreachable: the ranks add up to the total")


def _add(counts: Counts, key: tuple[Any, ...], n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def run_day_counts(rows: Iterable[Row]) -> Counts:
    """``report_run_day`` counts of run facts (all the runs of each enrollment given). Each
    flagged run is keyed by the due day of the enrollment's previous run flagged in the same
    column, in the same step scope (its step; every step) and channel scope (its channel, when
    it has one; any channel)."""
    by_enrollment: dict[uuid.UUID, list[Row]] = defaultdict(list)
    for row in rows:
        by_enrollment[row["enrollment_id"]].append(row)
    counts: Counts = {}
    for runs in by_enrollment.values():
        runs.sort(key=lambda r: (r["due_at"], r["run_id"]))
        for flag in FLAGS:
            last: dict[tuple[str, str], date] = {}
            for r in runs:
                if not r[flag]:
                    continue
                channels = (r["channel"], ALL) if r["channel"] is not None else (ALL,)
                for step in (r["step_id"], ALL):
                    for channel in channels:
                        prev = last.get((step, channel), NO_PREVIOUS)
                        key = (r["journey_id"], channel, r["due_day"], step, flag, prev)
                        _add(counts, key)
                        last[(step, channel)] = r["due_day"]
    return counts


def confirm_counts(rows: Iterable[Row]) -> Counts:
    """``report_confirm_wait`` counts: one per confirmed run, as the funnel's median reads
    them (a run, not a patient)."""
    counts: Counts = {}
    for r in rows:
        if r["confirmed"]:
            bucket = wait_bucket(r["confirm_s"] or 0.0)
            key = (r["journey_id"], r["due_day"], r["step_id"], r["channel"] or "", bucket)
            _add(counts, key)
    return counts


def is_late(start_at: datetime, cancelled_at: datetime, hours: int) -> bool:
    """Came in less than ``hours`` before the start (or after it)."""
    return start_at - cancelled_at < timedelta(hours=hours)


def cancel_timing(row: Row, hours: int) -> str:
    if row["status"] != CANCELLED:
        return ""
    if row["cancelled_at"] is None:
        return "unknown"  # cancelled before the hub recorded when cancellations came in
    return "late" if is_late(row["start_at"], row["cancelled_at"], hours) else "in_time"


def appointment_counts(rows: Iterable[Row], zone: ZoneInfo, hours: int) -> Counts:
    """``report_appointment_day`` counts of appointment facts, timed with ``hours``."""
    counts: Counts = {}
    for r in rows:
        day = r["start_at"].astimezone(zone).date()
        key = (r["journey_id"], day, r["status"], r["reminder_group"], cancel_timing(r, hours))
        _add(counts, key)
    return counts


def delivery_counts(rows: Iterable[Row], no_journey: uuid.UUID) -> Counts:
    """``report_delivery_day`` counts of message facts: each under ``no_journey`` (every
    message) and under its own journey, if any."""
    counts: Counts = {}
    for r in rows:
        rest = (r["day"], r["channel"], r["team_id"], r["provider"], r["status"], r["error_code"])
        _add(counts, (no_journey, *rest))
        if r["journey_id"] != no_journey:
            _add(counts, (r["journey_id"], *rest))
    return counts


def difference(new: Counts, old: Counts) -> Counts:
    """``new`` minus ``old``, without the keys that did not move."""
    delta = dict(new)
    for key, n in old.items():
        delta[key] = delta.get(key, 0) - n
    return {k: n for k, n in delta.items() if n}


def month_of(day: date) -> date:
    return day.replace(day=1)


def run_months(day_counts: Counts) -> Counts:
    """``report_run_month`` counts of ``report_run_day`` counts (or of a change to them)."""
    counts: Counts = {}
    for (journey, channel, day, step, flag, prev), n in day_counts.items():
        month = month_of(day)
        _add(counts, (journey, channel, month, step, flag, min(prev, month)), n)
    return counts


def wait_months(day_counts: Counts) -> Counts:
    counts: Counts = {}
    for (journey, day, step, channel, wait), n in day_counts.items():
        _add(counts, (journey, month_of(day), step, channel, wait), n)
    return counts


def delivery_months(day_counts: Counts) -> Counts:
    counts: Counts = {}
    for (journey, day, *rest), n in day_counts.items():
        _add(counts, (journey, month_of(day), *rest), n)
    return counts
