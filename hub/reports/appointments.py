"""The ``appointments`` report: what became of the appointments that started in the period, as
the clinic's feed told the hub (cohort CSV, API, FHIR: ``hub.journeys.outcomes``), and the
no-show rate of those reminded beside those not reminded and the clinic's baseline period.

An appointment belongs to the period when it starts in it (whole days in the clinic's zone).
The no-show rate is no-shows over appointments with a known outcome (attended or no-show):
cancelled ones, and those the feed has not reported on, are left out of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from hub.db import Database
from hub.inbox.access import StaffContext
from hub.journeys.models import AppointmentStatus
from hub.journeys.outcomes import ATTENDED
from hub.reports import outcome_day_queries as dq
from hub.reports import outcome_queries as oq
from hub.reports.appointment_settings import (
    AppointmentSettings,
    AppointmentSettingsInvalid,
    do_get_appointment_settings,
    do_set_baseline,
    do_set_late_cancel_hours,
    load_appointment_settings,
)
from hub.reports.base import Column, Report, ReportFilters, Series, Table
from hub.reports.journeys import journeys_in_scope, rate
from hub.reports.outcome_rollup import is_late
from hub.reports.run_facts_actions import run_rollup_as_of
from hub.reports.tuning import tune_for_reports

__all__ = [
    "AppointmentSettings",
    "AppointmentSettingsInvalid",
    "build",
    "do_get_appointment_settings",
    "do_set_baseline",
    "do_set_late_cancel_hours",
    "load_appointment_settings",
]

GROUPS = {
    "reminded": "Reminded",
    "opted_out": "Not reminded: opted out or no consent",
    "unreachable": "Not reminded: unreachable",
    "too_late": "Not reminded: enrolled too late",
    "no_journey": "Not reminded: no reminder journey",
    "other": "Not reminded: other reasons",
}
"""``run_facts.reminder_group`` values in the order shown."""
NOT_REMINDED = tuple(g for g in GROUPS if g != "reminded")

LABELS = {
    "appointments": "Appointments",
    "attended": "Attended",
    "no_shows": "No-shows",
    "no_show_rate": "No-show rate",
    "no_show_rate_reminded": "No-show rate, reminded",
    "no_show_rate_not_reminded": "No-show rate, not reminded",
    "no_show_rate_baseline": "No-show rate, baseline period",
    "cancelled_late": "Cancelled late",
    "cancelled_in_time": "Cancelled in time",
    "slots_freed": "Slots freed by cancellations in time",
    "outcome_unknown": "Outcome not reported",
}
KINDS = {k: "rate" if "rate" in k else "count" for k in LABELS}

OBSERVATIONAL = (
    "This comparison is observational, not a trial: patients who opt out, cannot be "
    "reached or are enrolled late differ from those who are reminded (in age, distance, "
    "illness, how they book), so part of any difference in no-shows is theirs, not the "
    "reminders'. The baseline period differs in season and in who was booked."
)


@dataclass
class Tally:
    """Appointments of one group by what became of them."""

    attended: int = 0
    no_shows: int = 0
    cancelled: int = 0
    open: int = 0
    """Still booked or confirmed: the feed has not said how it went (or it is to come)."""

    def add(self, status: AppointmentStatus, n: int) -> None:
        if status in ATTENDED:
            self.attended += n
        elif status is AppointmentStatus.NOSHOW:
            self.no_shows += n
        elif status is AppointmentStatus.CANCELLED:
            self.cancelled += n
        else:
            self.open += n

    def add_all(self, other: Tally) -> None:
        self.attended += other.attended
        self.no_shows += other.no_shows
        self.cancelled += other.cancelled
        self.open += other.open

    @property
    def total(self) -> int:
        return self.attended + self.no_shows + self.cancelled + self.open

    @property
    def no_show_rate(self) -> float | None:
        return rate(self.no_shows, self.attended + self.no_shows)

    def row(self, label: str) -> list[object]:
        return [
            label,
            self.total,
            self.attended,
            self.no_shows,
            self.no_show_rate,
            self.cancelled,
            self.open,
        ]


@dataclass
class Period:
    groups: dict[str, Tally] = field(default_factory=lambda: {g: Tally() for g in GROUPS})
    late: int = 0
    in_time: int = 0
    unknown_time: int = 0
    """Cancelled before the hub recorded when cancellations came in."""

    def all(self) -> Tally:
        total = Tally()
        for tally in self.groups.values():
            total.add_all(tally)
        return total

    def not_reminded(self) -> Tally:
        total = Tally()
        for group in NOT_REMINDED:
            total.add_all(self.groups[group])
        return total


def _count_day(period: Period, group: str, status: str, cancel: str, n: int) -> None:
    period.groups[group].add(AppointmentStatus(status), n)
    if cancel == "late":
        period.late += n
    elif cancel == "in_time":
        period.in_time += n
    elif cancel == "unknown":
        period.unknown_time += n


async def _from_days(
    session: AsyncSession, filters: ReportFilters, hours: int
) -> tuple[bool, Period]:
    """The period from the day rollup, when it counts the filters' days with ``hours``."""
    period = Period()
    if not await dq.appointments_current(session, filters.time_zone, hours):
        return False, period
    journey_id = None
    if filters.journey_key is not None:
        journey_id = (await journeys_in_scope(session, filters.journey_key))[0].id
    for row in await dq.appointment_days(session, (filters.start, filters.end), journey_id):
        _count_day(period, *row)
    return True, period


async def _period(db: Database, filters: ReportFilters, hours: int) -> Period:
    bounds = filters.bounds()
    async with db.reader() as session:
        await tune_for_reports(session)
        done, period = await _from_days(session, filters, hours)
        if done:
            return period
        journey = None
        if filters.journey_key is not None:
            journey = (await journeys_in_scope(session, filters.journey_key))[0]
        journey_id = journey.id if journey else None
        for group, status, n in await oq.appointment_groups(session, bounds, journey_id):
            period.groups[group].add(status, n)
        for start_at, cancelled_at in await oq.cancellations(session, bounds, journey_id):
            if cancelled_at is None:
                period.unknown_time += 1
            elif is_late(start_at, cancelled_at, hours):
                period.late += 1
            else:
                period.in_time += 1
    return period


async def _baseline(db: Database, filters: ReportFilters, settings: AppointmentSettings) -> Tally:
    total = Tally()
    if settings.baseline is None:
        return total
    start, end = settings.baseline
    bounds = ReportFilters(start, end, filters.time_zone).bounds()
    async with db.reader() as session:
        await tune_for_reports(session)
        if await dq.runs_current(session, filters.time_zone):
            for _, status, _cancel, n in await dq.appointment_days(session, (start, end), None):
                total.add(AppointmentStatus(status), n)
            return total
        for _, status, n in await oq.appointment_groups(session, bounds, None, grouped=False):
            total.add(status, n)
    return total


def _figures(period: Period, baseline: Tally) -> dict[str, object]:
    everything = period.all()
    return {
        "appointments": everything.total,
        "attended": everything.attended,
        "no_shows": everything.no_shows,
        "no_show_rate": everything.no_show_rate,
        "no_show_rate_reminded": period.groups["reminded"].no_show_rate,
        "no_show_rate_not_reminded": period.not_reminded().no_show_rate,
        "no_show_rate_baseline": baseline.no_show_rate,
        "cancelled_late": period.late,
        "cancelled_in_time": period.in_time,
        "slots_freed": period.in_time,
        "outcome_unknown": everything.open,
    }


_GROUP_COLUMNS = [
    Column("group", "Appointments"),
    Column("appointments", "Total", "count"),
    Column("attended", "Attended", "count"),
    Column("no_shows", "No-shows", "count"),
    Column("no_show_rate", "No-show rate", "rate"),
    Column("cancelled", "Cancelled", "count"),
    Column("open", "Outcome not reported", "count"),
]


async def build(db: Database, filters: ReportFilters, viewer: StaffContext) -> Report:
    """Outcomes (attended, no-show, cancelled late or in time), no-show rates of reminded and
    not reminded appointments and of the baseline period, slots freed."""
    # Read first: every change committed before it is in what follows.
    as_of = await run_rollup_as_of(db)
    settings = await do_get_appointment_settings(db)
    hours = settings.late_cancel_hours
    period = await _period(db, filters, hours)
    before = await _period(db, filters.previous(), hours)
    baseline = await _baseline(db, filters, settings)
    rows = [period.groups["reminded"].row(GROUPS["reminded"])]
    rows.append(period.not_reminded().row("Not reminded (all)"))
    rows += [period.groups[g].row(GROUPS[g]) for g in NOT_REMINDED]
    if settings.baseline is not None:
        first, last = settings.baseline
        rows.append(baseline.row(f"Baseline {first.isoformat()} to {last.isoformat()}"))
    everything = period.all()
    outcomes = Table(
        "outcomes",
        "Outcomes",
        [Column("outcome", "Outcome"), Column("appointments", "Appointments", "count")],
        [
            ["Attended", everything.attended],
            ["No-show", everything.no_shows],
            [f"Cancelled late (under {hours} h before the start)", period.late],
            [f"Cancelled in time ({hours} h or more before)", period.in_time],
            ["Cancelled, time not recorded", period.unknown_time],
            ["Outcome not reported yet", everything.open],
        ],
    )
    labels = ["Reminded", "Not reminded", "Baseline"]
    values = [
        period.groups["reminded"].no_show_rate,
        period.not_reminded().no_show_rate,
        baseline.no_show_rate,
    ]
    notes = [
        OBSERVATIONAL,
        "Reminded: at least one step's message was made before the start and did not fail. "
        "The no-show rate counts appointments whose outcome the clinic's feed reported "
        "(attended or no-show); cancelled ones and those not reported are left out.",
        f"A cancellation is late when it came in less than {hours} hours before the start; "
        "one in time frees the slot for another patient.",
    ]
    if settings.baseline is None:
        notes.append("No baseline period is set: an admin can set one on this report.")
    if filters.channel or filters.team_id or filters.agent_id:
        notes.append(
            "Appointments are the clinic's: the channel, team and agent filters do not apply."
        )
    return Report(
        "appointments",
        "Appointments",
        filters,
        _figures(period, baseline),
        previous=_figures(before, baseline),
        labels=dict(LABELS),
        kinds=dict(KINDS),
        tables=[
            Table("reminders", "Reminded and not reminded", _GROUP_COLUMNS, rows),
            outcomes,
        ],
        series=[Series("no_show_rate", "No-show rate", "bars", labels, values, unit="rate")],
        notes=notes,
        as_of=as_of,
    )
