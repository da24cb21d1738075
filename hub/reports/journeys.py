"""The ``journeys`` report: per journey and step, what the messages led to.

A run belongs to the period when it was due in it (whole days in the clinic's zone): a
coordinator asks "what did last week's reminders do". Its outcomes (delivered, confirmed,
cancelled, opted out, a reply) are the coordinator's funnel columns (``hub.journeys.reporting``),
which may come in after the period ends. With a channel chosen, only runs whose message went by
that channel count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from hub.db import Database
from hub.inbox.access import StaffContext
from hub.inbox.exceptions import NotFound
from hub.journeys import queries as journey_queries
from hub.journeys.actions import definition_of
from hub.journeys.models import Journey
from hub.reports import outcome_day_queries as dq
from hub.reports import outcome_queries as oq
from hub.reports.base import Column, Report, ReportFilters, Series, Table
from hub.reports.outcome_rollup import FLAGS, median_of, wait_bucket
from hub.reports.run_facts_actions import run_rollup_as_of
from hub.reports.tuning import tune_for_reports

COUNTED = FLAGS
"""Funnel columns the report reads (``hub.journeys.reporting.FUNNEL_COLUMNS``)."""

LABELS = {
    "reached": "Patients sent a step",
    "delivered": "Delivered",
    "confirmed": "Confirmed",
    "confirmation_rate": "Confirmation rate",
    "cancelled": "Cancelled",
    "no_reply": "No reply",
    "opted_out": "Opted out",
    "time_to_confirm_seconds": "Time to confirm (median)",
}
KINDS = {
    "reached": "count",
    "delivered": "count",
    "confirmed": "count",
    "confirmation_rate": "rate",
    "cancelled": "count",
    "no_reply": "count",
    "opted_out": "count",
    "time_to_confirm_seconds": "seconds",
}

_COUNT_COLUMNS = [
    Column("sent", "Sent", "count"),
    Column("delivered", "Delivered", "count"),
    Column("confirmed", "Confirmed", "count"),
    Column("cancelled", "Cancelled", "count"),
    Column("no_reply", "No reply", "count"),
    Column("opted_out", "Opted out", "count"),
    Column("failed", "Failed", "count"),
    Column("confirmation_rate", "Confirmation rate", "rate"),
    Column("time_to_confirm", "Time to confirm (median)", "seconds"),
]


@dataclass
class Outcomes:
    """One journey's or one step's figures (patients, each counted once per row)."""

    counts: dict[str, int]
    waits: dict[int, int]
    """Confirmations by seconds from the message to the confirmation, cut to what staff read
    (``outcome_rollup.wait_bucket``)."""

    @property
    def no_reply(self) -> int:
        return self.counts["sent"] - self.counts["replied"]

    @property
    def confirmation_rate(self) -> float | None:
        return rate(self.counts["confirmed"], self.counts["sent"])

    @property
    def time_to_confirm(self) -> int | None:
        return median_of(self.waits)

    def row(self) -> list[object]:
        c = self.counts
        return [
            c["sent"],
            c["delivered"],
            c["confirmed"],
            c["cancelled"],
            self.no_reply,
            c["opted_out"],
            c["failed"],
            self.confirmation_rate,
            self.time_to_confirm,
        ]


def rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _attempted(counts: dict[str, int]) -> bool:
    """A step (or journey) shown: something was sent, or failed to be."""
    return bool(counts["sent"] or counts["failed"])


def merged(histograms: Iterable[dict[int, int]]) -> dict[int, int]:
    total: dict[int, int] = {}
    for histogram in histograms:
        for wait, n in histogram.items():
            total[wait] = total.get(wait, 0) + n
    return total


def _histograms(
    confirmed: list[tuple[str, datetime, float]], low: datetime, high: datetime
) -> dict[str, dict[int, int]]:
    found: dict[str, dict[int, int]] = {}
    for step_id, due_at, wait in confirmed:
        if low <= due_at < high:
            step = found.setdefault(step_id, {})
            bucket = wait_bucket(wait)
            step[bucket] = step.get(bucket, 0) + 1
    return found


@dataclass
class JourneyOutcomes:
    journey: Journey
    total: Outcomes
    steps: list[tuple[str, Outcomes]]


async def journeys_in_scope(session: AsyncSession, key: str | None) -> list[Journey]:
    if key is None:
        return list(await journey_queries.all_journeys(session))
    journey = await journey_queries.journey_by_key(session, key)
    if journey is None:
        raise NotFound(f"no journey with key {key}")
    return [journey]


Read = tuple[list[dq.StepCounts], list[dict[str, dict[int, int]]]]
"""A journey's (counts, confirmation histograms by step) per period."""


async def _read(
    session: AsyncSession,
    journeys: list[Journey],
    periods: list[ReportFilters],
    columns: tuple[str, ...],
) -> list[Read]:
    bounds = [p.bounds() for p in periods]
    days = [(p.start, p.end) for p in periods]
    channel = periods[0].channel
    ids = [j.id for j in journeys]
    confirmed = "confirmed" in columns
    # The day rollups when they count the filters' days (the clinic's zone), else the facts.
    if await dq.runs_current(session, periods[0].time_zone):
        counted = await dq.funnel_from_days(session, ids, columns, days, channel)
        waits = await dq.confirm_histograms(session, ids, days, channel) if confirmed else {}
        return [(counted[j], waits.get(j) or [{} for _ in periods]) for j in ids]
    found: list[Read] = []
    for journey_id in ids:
        facts = await oq.funnel_counts(session, journey_id, columns, bounds, channel)
        histograms: list[dict[str, dict[int, int]]] = [{} for _ in periods]
        if confirmed:
            span = (min(b[0] for b in bounds), max(b[1] for b in bounds))
            rows = await oq.confirmations(session, journey_id, span, channel)
            histograms = [_histograms(rows, low, high) for low, high in bounds]
        found.append((facts, histograms))
    return found


def _outcomes(journey: Journey, read: Read, columns: tuple[str, ...]) -> list[JourneyOutcomes]:
    """The journey's figures in each period; the columns not read are 0."""
    missing = {c: 0 for c in COUNTED if c not in columns}
    order = [s.id for s in definition_of(journey).steps]
    results = []
    for (steps, total), step_waits in zip(*read, strict=True):
        steps = {s: {**missing, **c} for s, c in steps.items()}
        # Steps of earlier versions still running come after the current ones.
        ids = [s for s in order if s in steps] + sorted(set(steps) - set(order))
        results.append(
            JourneyOutcomes(
                journey,
                Outcomes({**missing, **total}, merged(step_waits.values())),
                [
                    (s, Outcomes(steps[s], step_waits.get(s, {})))
                    for s in ids
                    if _attempted(steps[s])
                ],
            )
        )
    return results


def _figures(results: list[JourneyOutcomes]) -> dict[str, object]:
    def total(key: str) -> int:
        return sum(r.total.counts[key] for r in results)

    waits = merged(r.total.waits for r in results)
    return {
        "reached": total("sent"),
        "delivered": total("delivered"),
        "confirmed": total("confirmed"),
        "confirmation_rate": rate(total("confirmed"), total("sent")),
        "cancelled": total("cancelled"),
        "no_reply": sum(r.total.no_reply for r in results),
        "opted_out": total("opted_out"),
        "time_to_confirm_seconds": median_of(waits),
    }


async def outcomes_of(
    db: Database, periods: list[ReportFilters], columns: tuple[str, ...] = COUNTED
) -> list[list[JourneyOutcomes]]:
    """Per period (same journey and channel filters), each journey's outcomes (read together:
    a report and its trend); ``columns`` a part of COUNTED (the others read 0) for a caller that
    needs only those (the delivery report's opt-outs)."""
    async with db.reader() as session:
        await tune_for_reports(session)
        journeys = await journeys_in_scope(session, periods[0].journey_key)
        read = await _read(session, journeys, periods, columns) if journeys else []
    found = [_outcomes(j, r, columns) for j, r in zip(journeys, read, strict=True)]
    return [[per_journey[k] for per_journey in found] for k in range(len(periods))]


async def build(db: Database, filters: ReportFilters, viewer: StaffContext) -> Report:
    """Per journey and step: sent, delivered, confirmed, cancelled, no reply, opted out,
    confirmation rate and the median time to confirm, beside the previous period."""
    # Read first: every change committed before it is in what follows.
    as_of = await run_rollup_as_of(db)
    results, before = await outcomes_of(db, [filters, filters.previous()])
    journeys = Table(
        "journeys",
        "Journeys",
        [Column("journey", "Journey"), *_COUNT_COLUMNS],
        [[r.journey.name, *r.total.row()] for r in results if _attempted(r.total.counts)],
    )
    steps = Table(
        "steps",
        "Steps",
        [Column("journey", "Journey"), Column("step", "Step"), *_COUNT_COLUMNS],
        [[r.journey.name, step_id, *o.row()] for r in results for step_id, o in r.steps],
    )
    shown = [r for r in results if r.total.counts["sent"]]
    chart = Series(
        "confirmation_rate",
        "Confirmation rate by journey",
        "bars",
        [r.journey.name for r in shown],
        [r.total.confirmation_rate for r in shown],
        unit="rate",
    )
    notes = [
        "A step counts in the period when it was due in it; what the patient did after its "
        "message (confirmed, cancelled, replied, opted out) counts on that step however late "
        "it came, until the next step's message.",
        "No reply: sent, and the patient did not write back before the next step's message. "
        "Time to confirm runs from the message the patient confirmed after; the median "
        "confirmation (the lower middle one of an even number) is shown to the second below a "
        "minute, to the minute below a day and to the hour beyond, cut down.",
    ]
    if filters.team_id is not None or filters.agent_id is not None:
        notes.append("Journeys are the clinic's: the team and agent filters do not apply here.")
    return Report(
        "journeys",
        "Journeys",
        filters,
        _figures(results),
        previous=_figures(before),
        labels=dict(LABELS),
        kinds=dict(KINDS),
        tables=[journeys, steps],
        series=[chart],
        notes=notes,
        as_of=as_of,
    )
