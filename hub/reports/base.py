"""What every report takes (``ReportFilters``) and gives back (``Report``).

The web layer never computes a figure: it parses filters, calls the registered ``build`` and
renders or serialises the ``Report``. A figure is recountable: tests compute it again straight
from the raw tables and compare, so a report may read rollups only where the rollup is exact.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from hub.db import Database
from hub.enums import Role
from hub.inbox.access import StaffContext


@dataclass(frozen=True)
class ReportFilters:
    """A period of whole days in the clinic's zone, ``start`` to ``end`` inclusive, and the
    narrowing a person chose. ``agent_id`` is forced to an agent's own id by ``for_viewer``."""

    start: date
    end: date
    time_zone: str
    """The clinic's zone: days, weekdays and hours of the period and of a heatmap are read in it."""
    team_id: uuid.UUID | None = None
    channel: str | None = None
    journey_key: str | None = None
    agent_id: uuid.UUID | None = None
    business_hours: bool = False
    """Durations count only each team's open hours (its hours and holidays, in its zone)."""

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def previous(self) -> ReportFilters:
        """The same number of days just before this period: the trend's comparison."""
        from datetime import timedelta

        span = timedelta(days=self.days)
        return _replace(self, start=self.start - span, end=self.end - span)

    def bounds(self) -> tuple[datetime, datetime]:
        """The period as UTC instants [from, to): local midnight of ``start`` to local midnight
        after ``end``, each resolved in the clinic's zone (a DST day is 23 or 25 hours)."""
        from datetime import UTC, time, timedelta
        from zoneinfo import ZoneInfo

        zone = ZoneInfo(self.time_zone)
        low = datetime.combine(self.start, time(0), tzinfo=zone).astimezone(UTC)
        high = datetime.combine(self.end + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
        return low, high


def _replace(filters: ReportFilters, **changes: Any) -> ReportFilters:
    from dataclasses import replace

    return replace(filters, **changes)


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: str = "text"
    """"text", "count", "rate" (0..1), "seconds", "datetime" (UTC ISO), "score"."""


@dataclass
class Table:
    """A table of the report: shown on the page and served as CSV (``/api/reports/{name}.csv``
    serves the report's first table unless ``?table=`` names another)."""

    name: str
    title: str
    columns: list[Column]
    rows: list[list[Any]] = field(default_factory=list)


@dataclass
class Series:
    """A chart's data: ``kind`` is "bars" (one value per label), "buckets" (a distribution),
    "heatmap" (rows x columns, ``values`` a list of rows) or "line" (values over days)."""

    name: str
    title: str
    kind: str
    labels: list[str]
    values: list[Any]
    row_labels: list[str] = field(default_factory=list)
    unit: str = "count"


@dataclass
class Report:
    name: str
    title: str
    filters: ReportFilters
    figures: dict[str, Any]
    """Headline figures by key (counts, rates 0..1, seconds, None where there is no data)."""
    previous: dict[str, Any] = field(default_factory=dict)
    """The same figures for ``filters.previous()`` (the trend), where the report has a trend."""
    labels: dict[str, str] = field(default_factory=dict)
    """A plain-words label for each figure key."""
    kinds: dict[str, str] = field(default_factory=dict)
    """Each figure's kind, as ``Column.kind`` ("count", "rate", "seconds", "score"): how the
    page and the weekly mail write it. A key without one is read by its name (see
    ``hub.reports.words.figure_kind``)."""
    tables: list[Table] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Sentences shown under the report (e.g. that a comparison is observational)."""
    as_of: datetime | None = None
    """When the rollups this report read were last brought up to date (None: read live)."""

    def as_json(self) -> dict[str, Any]:
        """The API's body: every figure, table and series, ISO dates, UUIDs as strings."""
        from hub.reports.serialise import report_json

        return report_json(self)


Builder = Callable[[Database, ReportFilters, StaffContext], Awaitable[Report]]
"""A report's build: reads what ``StaffContext`` may see (an agent: their own figures)."""


def for_viewer(filters: ReportFilters, viewer: StaffContext) -> ReportFilters:
    """The filters narrowed to what ``viewer`` may see: an agent sees only their own figures,
    whatever agent the request named. Every builder calls this first."""
    if viewer.role is Role.AGENT:
        return _replace(filters, agent_id=viewer.staff_id)
    return filters
