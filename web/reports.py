"""The Reports page: one tab per registered report, filters in the query string (so a view is
a link), headline figures with their trend in words, charts, tables and notes, a printable
view, and for admins the weekly summary switch.

Nothing here computes a figure: the filters are read (hub/reports/choices.py), the report's
registered builder is called with the viewer's StaffContext (an agent gets their own figures),
and the ``Report`` is written out. htmx swaps ``#report`` when a filter changes; without
script the same form reloads the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from hub.enums import Channel, Role
from hub.errors import HubError
from hub.inbox.access import StaffContext
from hub.reports import appointment_settings, weekly
from hub.reports.base import Report, ReportFilters, Table
from hub.reports.choices import (
    PERIODS,
    BadReportFilter,
    ReportChoices,
    do_report_choices,
    filters_query,
    parse_filters,
)
from hub.reports.registry import NEEDS_RING, REPORTS, visible_to
from hub.reports.words import headline, value_text
from web import reports_charts
from web.auth import current
from web.keys import DB, RING
from web.render import CHANNEL_NAMES, redirect_with, render

ALL_FILTERS = frozenset({"team", "channel", "journey", "agent", "business_hours"})
USES: dict[str, frozenset[str]] = {
    "responses": frozenset({"team", "channel", "agent", "business_hours"}),
    "volume": frozenset({"team", "channel", "agent"}),
    "csat": frozenset({"team", "channel", "agent"}),
    "journeys": frozenset({"journey", "channel"}),
    "appointments": frozenset({"journey"}),
    "delivery": frozenset({"journey", "channel", "team"}),
}
"""Which filters the page offers on each report (each builder ignores the others and says
so in a note); a report not listed here is offered every filter."""
NUMERIC_KINDS = frozenset({"count", "rate", "seconds", "score"})
TAB_ORDER = ("responses", "volume", "csat", "journeys", "appointments", "delivery")
"""The inbox's reports first, then the outcomes; a report not named here follows them."""


def report_names(ctx: StaffContext) -> list[str]:
    """The reports ``ctx`` may open: an agent only those that narrow to their own figures."""
    mine = visible_to(ctx.role is Role.AGENT)
    return [n for n in TAB_ORDER if n in mine] + [n for n in mine if n not in TAB_ORDER]


class NotYourReport(HubError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"The {name!r} report covers the whole clinic: coordinators and admins read it. "
            "Your own figures are under Response times, Volume and Satisfaction."
        )


class UnknownReport(HubError):
    def __init__(self, name: str) -> None:
        known = ", ".join(REPORTS) or "none yet"
        super().__init__(f"There is no report {name!r}. The reports are: {known}.")


@dataclass
class Built:
    report: Report
    choices: ReportChoices
    filters: ReportFilters


def is_coordinator(ctx: StaffContext) -> bool:
    return ctx.role in (Role.COORDINATOR, Role.ADMIN)


async def build_report(request: web.Request, name: str) -> Built:
    """The named report for the viewer and the query's filters; ``UnknownReport`` or
    ``BadReportFilter`` (or another ``HubError`` a builder raises about its filters)."""
    if name not in REPORTS:
        raise UnknownReport(name)
    ctx = current(request)
    if name not in report_names(ctx):
        raise NotYourReport(name)
    db = request.app[DB]
    choices = await do_report_choices(db, ctx)
    filters = parse_filters(request.query, choices, ctx)
    _title, build = REPORTS[name]
    if name in NEEDS_RING:  # it shows sealed text (CSAT comments) to those who may read it
        report = await build(db, filters, ctx, ring=request.app[RING])  # type: ignore[call-arg]
    else:
        report = await build(db, filters, ctx)
    return Built(report, choices, filters)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def cell_text(value: Any, kind: str, zone: str) -> str:
    """A table cell as people read it; times in the reader's zone."""
    if kind == "datetime" and value is not None:
        moment = value
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                return value
        if isinstance(moment, datetime):
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.astimezone(_zone(zone)).strftime("%b %-d %Y, %H:%M")
    if kind in NUMERIC_KINDS:
        return value_text(value, kind)
    return "" if value is None else str(value)


def table_view(table: Table, zone: str) -> dict[str, Any]:
    kinds = [c.kind for c in table.columns]
    return {
        "name": table.name,
        "title": table.title,
        "columns": table.columns,
        "numeric": [k in NUMERIC_KINDS for k in kinds],
        "rows": [
            [cell_text(v, kinds[i] if i < len(kinds) else "text", zone) for i, v in enumerate(row)]
            for row in table.rows
        ],
    }


def period_text(filters: ReportFilters) -> str:
    first, last = filters.start, filters.end
    span = "1 day" if filters.days == 1 else f"{filters.days} days"
    if first == last:
        return f"{first:%a %b} {first.day}, {first.year} ({filters.time_zone})"
    return (
        f"{first:%b} {first.day}, {first.year} to {last:%b} {last.day}, {last.year} "
        f"({span}, days in {filters.time_zone})"
    )


def _link(path: str, query: dict[str, str]) -> str:
    return f"{path}?{urlencode(query)}" if query else path


def body_context(built: Built, name: str, ctx: StaffContext) -> dict[str, Any]:
    """What _reports_body.html shows of a built report."""
    report, filters = built.report, built.filters
    query = filters_query(filters)
    charts = []
    for i, series in enumerate(report.series):
        charts.append(
            {
                "series": series,
                "drawing": reports_charts.shape(series),
                "table": reports_charts.table_rows(series),
                "uid": f"chart-{i}-{series.name}",
            }
        )
    tables = [table_view(t, ctx.time_zone) for t in report.tables]
    for t in tables:
        t["csv"] = _link(f"/api/reports/{name}.csv", {**query, "table": t["name"]})
    exports = []
    if is_coordinator(ctx):
        exports = [
            ("Conversations (CSV)", _link("/api/reports/export/conversations.csv", query)),
            ("Journey runs (CSV)", _link("/api/reports/export/journey-runs.csv", query)),
        ]
    return {
        "report": report,
        "figures": headline(report),
        "charts": charts,
        "tables": tables,
        "period": period_text(filters),
        "print_link": _link(f"/reports/{name}", {**query, "print": "1"}),
        "exports": exports,
    }


def form_context(
    request: web.Request, name: str, choices: ReportChoices | None, ctx: StaffContext
) -> dict[str, Any]:
    """The filter form as typed (a refused value is shown back beside its error)."""
    raw = {k: request.query.get(k, "") for k in ("start", "end", "period", *ALL_FILTERS)}
    kept = {k: v for k, v in raw.items() if v and k not in ("start", "end", "period", "print")}
    uses = USES.get(name, ALL_FILTERS)
    if ctx.role is Role.AGENT:
        uses = uses - {"agent"}
    return {
        "raw": raw,
        "uses": uses,
        "quick": [
            (key, label, _link(f"/reports/{name}", {**kept, "period": key}))
            for key, label in PERIODS.items()
        ],
        "teams": choices.teams if choices else {},
        "agents": choices.agents if choices else {},
        "journeys": choices.journeys if choices else {},
        "channels": [(c.value, CHANNEL_NAMES.get(c.value, c.value)) for c in Channel],
    }


async def _weekly_context(request: web.Request, ctx: StaffContext) -> dict[str, Any] | None:
    if not ctx.is_admin:
        return None
    found = await weekly.do_weekly_settings(request.app[DB])
    return {"enabled": found.enabled, "last_sent": found.last_sent}


async def report_page(request: web.Request) -> web.Response:
    ctx = current(request)
    names = report_names(ctx)
    name = request.match_info.get("name") or (names[0] if names else "")
    tabs = [(n, REPORTS[n][0]) for n in names]
    base: dict[str, Any] = {
        "nav": "reports",
        "tabs": tabs,
        "name": name,
        "title": "Reports",
        "error": None,
        "empty": False,
        "report": None,
        "weekly": None,
        "form": None,
        "appointment_settings": None,
    }
    if not names:
        base["empty"] = True
        return render(request, "reports.html", **base)
    if name not in REPORTS:
        base["error"] = str(UnknownReport(name))
        base["title"] = "No such report"
        return render(request, "reports.html", status=404, **base)
    if name not in names:
        base["error"] = str(NotYourReport(name))
        base["title"] = "Not your report"
        return render(request, "reports.html", status=403, **base)
    base["title"] = REPORTS[name][0]
    base["weekly"] = await _weekly_context(request, ctx)
    if name == "appointments" and ctx.is_admin:
        base["appointment_settings"] = await appointment_settings.do_get_appointment_settings(
            request.app[DB]
        )
    try:
        built = await build_report(request, name)
    except HubError as exc:  # a bad filter: the form stays, with what to change
        choices = await do_report_choices(request.app[DB], ctx)
        base.update(form=form_context(request, name, choices, ctx), error=str(exc))
        return render(request, "reports.html", status=422, **base)
    base.update(
        form=form_context(request, name, built.choices, ctx), **body_context(built, name, ctx)
    )
    if request.query.get("print") == "1":
        return render(request, "reports_print.html", **base)
    return render(request, "reports.html", **base)


async def save_weekly(request: web.Request) -> web.StreamResponse:
    ctx = current(request)
    if not ctx.is_admin:
        raise web.HTTPNotFound()
    form = await request.post()
    enabled = str(form.get("enabled", "")) == "1"
    await weekly.do_set_weekly_enabled(request.app[DB], ctx.actor, enabled)
    words = "on: admins get it on Mondays at 08:00" if enabled else "off"
    raise redirect_with("/reports", "ok", f"The weekly summary mail is {words}.")


def _form_date(form: Any, key: str) -> date | None:
    raw = str(form.get(key, "")).strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadReportFilter(f"{raw!r} is not a date like 2025-01-31.") from None


async def save_appointment_settings(request: web.Request) -> web.StreamResponse:
    """The appointments report's baseline period and late-cancellation threshold (admins)."""
    ctx = current(request)
    if not ctx.is_admin:
        raise web.HTTPNotFound()
    form = await request.post()
    back = "/reports/appointments"
    db = request.app[DB]
    try:
        if form.get("clear") == "1":
            await appointment_settings.do_set_baseline(db, ctx.actor, None)
            raise redirect_with(back, "ok", "The baseline period is cleared.")
        start, end = _form_date(form, "baseline_start"), _form_date(form, "baseline_end")
        if (start is None) != (end is None):
            raise BadReportFilter("Give both the first and the last day of the baseline.")
        if start is not None and end is not None:
            await appointment_settings.do_set_baseline(db, ctx.actor, (start, end))
        hours = str(form.get("late_cancel_hours", "")).strip()
        if hours:
            if not hours.isdigit():
                raise BadReportFilter(
                    f"Late cancellation hours must be a whole number, not {hours!r}."
                )
            await appointment_settings.do_set_late_cancel_hours(db, ctx.actor, int(hours))
    except HubError as exc:
        raise redirect_with(back, "error", f"Not saved: {exc}.") from None
    raise redirect_with(back, "ok", "The appointments report settings are saved.")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/reports", report_page, name="reports"),
        web.post("/reports/weekly-summary", save_weekly, name="reports_weekly"),
        web.post(
            "/reports/appointments/settings",
            save_appointment_settings,
            name="reports_appointment_settings",
        ),
        web.get("/reports/{name}", report_page, name="report"),
    ]
