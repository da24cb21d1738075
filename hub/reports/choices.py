"""What a person may narrow a report by, and their query string read into ``ReportFilters``.

The page, the API and the CSV all read filters here, so a bad one gets the same plain answer
wherever it is typed: an end before the start, a team the person cannot see, a period longer
than a report covers.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub.db import Database, utcnow
from hub.enums import Channel, Role
from hub.errors import HubError
from hub.inbox import queries as inbox_queries
from hub.inbox import workspace_queries as wq
from hub.inbox.access import StaffContext
from hub.journeys import queries as journey_queries
from hub.reports.base import ReportFilters

DEFAULT_PERIOD_DAYS = 30
"""A report opened without dates covers the last this many days, today included."""
MAX_PERIOD_DAYS = 366
"""Longest period one report covers (a leap year); longer asks are refused, not cut."""
EARLIEST = date(2000, 1, 1)
LATEST = date(2100, 12, 31)
"""Dates outside these are typing mistakes, refused before any date arithmetic overflows."""
FILTER_KEYS = ("start", "end", "period", "team", "channel", "journey", "agent", "business_hours")
"""Query parameters a report reads; any other is left alone (``print``, ``table``...)."""
PERIODS = {
    "last7": "Last 7 days",
    "last30": "Last 30 days",
    "last90": "Last 90 days",
    "this_month": "This month",
    "last_month": "Last month",
}
"""Quick picks (``?period=``), resolved against today in the clinic's zone each time the link
is opened, so a saved link keeps meaning "the last 30 days"."""
CHANNELS = tuple(c.value for c in Channel)
YES = frozenset({"1", "true", "on", "yes"})
NO = frozenset({"", "0", "false", "off", "no"})


class BadReportFilter(HubError):
    """A filter a person typed that no report can use; the message says what to change."""


@dataclass(frozen=True)
class ReportChoices:
    """The clinic's zone and what this viewer may pick in each filter."""

    time_zone: str
    teams: dict[uuid.UUID, str]
    agents: dict[uuid.UUID, str]
    """Active staff, for coordinators and admins; an agent sees only their own figures."""
    journeys: dict[str, str]

    def today(self, now: datetime | None = None) -> date:
        return (now or utcnow()).astimezone(ZoneInfo(self.time_zone)).date()


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC"
    return name


async def do_report_choices(db: Database, ctx: StaffContext) -> ReportChoices:
    async with db.reader() as session:
        zone = _zone(await inbox_queries.clinic_time_zone(session))
        teams = await wq.teams_for(session, None if ctx.is_admin else ctx.team_ids)
        staff = [] if ctx.role is Role.AGENT else await wq.assignable_staff(session, None)
        journeys = await journey_queries.all_journeys(session)
    return ReportChoices(
        time_zone=zone,
        teams={t.id: t.name for t in teams},
        agents={s.id: s.display_name for s in staff},
        journeys={j.key: j.name for j in journeys},
    )


def period_dates(period: str, today: date) -> tuple[date, date]:
    """A quick pick's first and last day."""
    if period == "last7":
        return today - timedelta(days=6), today
    if period == "last30":
        return today - timedelta(days=29), today
    if period == "last90":
        return today - timedelta(days=89), today
    if period == "this_month":
        return today.replace(day=1), today
    if period == "last_month":
        last = today.replace(day=1) - timedelta(days=1)
        return last.replace(day=1), last
    known = ", ".join(PERIODS)
    raise BadReportFilter(f"period {period!r} is not one of the quick picks ({known}).")


def _date(query: Mapping[str, str], name: str) -> date | None:
    raw = query.get(name, "").strip()
    if not raw:
        return None
    try:
        if len(raw) != 10:
            raise ValueError(raw)
        day = date.fromisoformat(raw)
    except ValueError:
        raise BadReportFilter(f"{name} must be a date written like 2026-11-01.") from None
    if not EARLIEST <= day <= LATEST:
        raise BadReportFilter(
            f"{name} {raw} is outside the years {EARLIEST.year} to {LATEST.year}."
        )
    return day


def _uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise BadReportFilter(f"{what} {raw!r} is not an id from the {what} list.") from None


def parse_filters(
    query: Mapping[str, str],
    choices: ReportChoices,
    ctx: StaffContext,
    *,
    today: date | None = None,
) -> ReportFilters:
    """The query string as filters, or ``BadReportFilter`` saying what is wrong."""
    today = today or choices.today()
    start, end = _date(query, "start"), _date(query, "end")
    period = query.get("period", "").strip()
    if start is None and end is None:
        start, end = period_dates(period or "last30", today)
    elif start is None:
        assert end is not None
        start = end - timedelta(days=DEFAULT_PERIOD_DAYS - 1)
    elif end is None:
        end = max(today, start)
    if end < start:
        raise BadReportFilter(
            f"The end date ({end.isoformat()}) is before the start date ({start.isoformat()})."
        )
    days = (end - start).days + 1
    if days > MAX_PERIOD_DAYS:
        raise BadReportFilter(
            f"A report covers at most {MAX_PERIOD_DAYS} days; {start.isoformat()} to "
            f"{end.isoformat()} is {days} days. Pick a shorter period."
        )
    if start - timedelta(days=days) < EARLIEST:
        raise BadReportFilter(f"Reports start in {EARLIEST.year} at the earliest.")

    team_id = None
    if raw := query.get("team", "").strip():
        team_id = _uuid(raw, "team")
        if team_id not in choices.teams:
            raise BadReportFilter(f"There is no team {raw} among the teams you can see.")
    channel = query.get("channel", "").strip() or None
    if channel is not None and channel not in CHANNELS:
        raise BadReportFilter(
            f"channel {channel!r} is not one of {', '.join(CHANNELS)}.",
        )
    journey = query.get("journey", "").strip() or None
    if journey is not None and journey not in choices.journeys:
        raise BadReportFilter(f"There is no journey {journey!r}.")
    agent_id = None
    if raw := query.get("agent", "").strip():
        agent_id = _uuid(raw, "agent")
        if ctx.role is Role.AGENT:
            if agent_id != ctx.staff_id:
                raise BadReportFilter("You see your own figures only; leave agent empty.")
        elif agent_id not in choices.agents:
            raise BadReportFilter(f"There is no active staff member {raw}.")
    switch = query.get("business_hours", "").strip().lower()
    if switch not in YES | NO:
        raise BadReportFilter("business_hours must be 1 (business hours only) or 0.")
    return ReportFilters(
        start=start,
        end=end,
        time_zone=choices.time_zone,
        team_id=team_id,
        channel=channel,
        journey_key=journey,
        agent_id=agent_id,
        business_hours=switch in YES,
    )


def filters_query(filters: ReportFilters) -> dict[str, str]:
    """The filters back as query parameters (links, CSV, print view)."""
    out = {"start": filters.start.isoformat(), "end": filters.end.isoformat()}
    if filters.team_id:
        out["team"] = str(filters.team_id)
    if filters.channel:
        out["channel"] = filters.channel
    if filters.journey_key:
        out["journey"] = filters.journey_key
    if filters.agent_id:
        out["agent"] = str(filters.agent_id)
    if filters.business_hours:
        out["business_hours"] = "1"
    return out
