"""The reports over the API: ``/api/reports/{name}`` (the Report as JSON), ``{name}.csv`` (one
of its tables), and the two row exports (one row per conversation, one per journey run),
streamed and audited. The same filters as the page, as query parameters."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import date, datetime
from enum import Enum
from typing import Any

from aiohttp import web

from hub.audit import do_audit_export
from hub.db import Database
from hub.errors import HubError
from hub.reports import exports, run_exports
from hub.reports.base import ReportFilters
from hub.reports.choices import (
    CHANNELS,
    MAX_PERIOD_DAYS,
    PERIODS,
    do_report_choices,
    filters_query,
    parse_filters,
)
from hub.reports.registry import REPORTS
from web.api import error
from web.auth import _apply_headers as apply_security_headers
from web.auth import current
from web.keys import DB
from web.reports import NotYourReport, UnknownReport, build_report, is_coordinator

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""A text cell starting with one of these is read as a formula by spreadsheets (CSV
injection): it is written with a leading apostrophe. Numbers are written as numbers."""


def _name(request: web.Request) -> str:
    return request.match_info["name"]


async def _built(request: web.Request) -> Any:
    try:
        return await build_report(request, _name(request))
    except UnknownReport as exc:
        raise web.HTTPNotFound(text=str(exc)) from None
    except NotYourReport as exc:
        raise web.HTTPForbidden(text=str(exc)) from None
    except HubError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


async def api_report(request: web.Request) -> web.Response:
    try:
        built = await _built(request)
    except web.HTTPException as exc:
        return error(exc.status, exc.text or "")
    return web.json_response(built.report.as_json())


def csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_line(values: Iterable[Any]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow([csv_cell(v) for v in values])
    return out.getvalue()


async def api_report_csv(request: web.Request) -> web.Response:
    """One table of the report as CSV: raw values (rates 0..1, seconds, UTC times)."""
    ctx = current(request)
    try:
        built = await _built(request)
    except web.HTTPException as exc:
        return error(exc.status, exc.text or "")
    report = built.report
    if not report.tables:
        return error(
            404,
            f"The {report.name} report has no table to download; its figures "
            f"are at /api/reports/{report.name}.",
        )
    wanted = request.query.get("table", "").strip()
    table = next((t for t in report.tables if t.name == wanted), None) if wanted else None
    if wanted and table is None:
        names = ", ".join(t.name for t in report.tables)
        return error(404, f"The {report.name} report has no table {wanted!r}; its tables: {names}.")
    table = table or report.tables[0]
    text = csv_line(c.key for c in table.columns) + "".join(csv_line(r) for r in table.rows)
    await do_audit_export(
        request.app[DB],
        ctx.actor,
        f"reports.{report.name}",
        "report",
        report.name,
        {"table": table.name, "filters": filters_query(built.filters), "rows": len(table.rows)},
    )
    filename = f"{report.name}-{table.name}-{built.filters.start}-{built.filters.end}.csv"
    return web.Response(
        text=text,
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


Batches = Callable[[Database, ReportFilters], AsyncIterator[list[list[Any]]]]
"""An export's rows, a batch at a time (hub/reports/exports.py, run_exports.py)."""


async def _export(
    request: web.Request, what: str, header: Sequence[str], source: Batches
) -> web.StreamResponse:
    """Stream ``source``'s rows as CSV and record the export (who, which, filters, rows)."""
    ctx = current(request)
    if not is_coordinator(ctx):
        return error(403, "Exports are for coordinators and admins.")
    db = request.app[DB]
    try:
        choices = await do_report_choices(db, ctx)
        filters = parse_filters(request.query, choices, ctx)
    except HubError as exc:
        return error(400, str(exc))
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{what}-{filters.start}-'
            f'{filters.end}.csv"',
        }
    )
    # Headers leave with prepare(), before the security middleware would add its own.
    apply_security_headers(request, response)
    await response.prepare(request)
    rows = 0
    complete = False
    try:
        await response.write(csv_line(header).encode())
        async for batch in source(db, filters):
            await response.write("".join(csv_line(row) for row in batch).encode())
            rows += len(batch)
        await response.write_eof()
        complete = True
    finally:
        # Written whether or not the download finished: what left the hub is what counts.
        await do_audit_export(
            db,
            ctx.actor,
            f"reports.{what}",
            "report",
            what,
            {"filters": filters_query(filters), "rows": rows, "complete": complete},
        )
    return response


async def api_export_conversations(request: web.Request) -> web.StreamResponse:
    return await _export(
        request, "conversations", exports.CONVERSATION_COLUMNS, exports.conversation_rows
    )


async def api_export_journey_runs(request: web.Request) -> web.StreamResponse:
    return await _export(
        request, "journey-runs", run_exports.RUN_COLUMNS, run_exports.journey_run_rows
    )


FILTER_PARAMS = [
    {"name": n, "in": "query", "required": False, "description": d, "schema": s}
    for n, d, s in [
        (
            "start",
            "First day of the period (YYYY-MM-DD, a day in the clinic's zone); default: the "
            f"last 30 days. At most {MAX_PERIOD_DAYS} days",
            {"type": "string", "format": "date"},
        ),
        ("end", "Last day of the period, included", {"type": "string", "format": "date"}),
        (
            "period",
            "A quick pick instead of start/end, resolved against today",
            {"enum": list(PERIODS)},
        ),
        ("team", "A team id", {"type": "string", "format": "uuid"}),
        ("channel", "A channel", {"enum": list(CHANNELS)}),
        ("journey", "A journey key", {"type": "string"}),
        (
            "agent",
            "A staff id (agents always get their own figures)",
            {"type": "string", "format": "uuid"},
        ),
        (
            "business_hours",
            "1: durations count only each team's open hours",
            {"enum": ["0", "1"]},
        ),
    ]
]


def openapi_paths(op: Any) -> dict[str, Any]:
    """The reports' part of /api/openapi.json (web/openapi.py merges it in)."""
    names = list(REPORTS)
    listing = "; ".join(f"`{n}` ({REPORTS[n][0]})" for n in names)
    name_param = {
        "name": "name",
        "in": "path",
        "required": True,
        "description": f"The report: {listing}",
        "schema": {"enum": names} if names else {"type": "string"},
    }
    export = "Coordinators and admins; streamed; recorded in the audit log (who, filters, rows). "
    return {
        "/api/reports/{name}": {
            "get": op(
                "A report for a period as JSON: `figures` (counts, rates 0..1, seconds) with "
                "`labels` and `kinds`, `previous` (the same figures for the period just "
                "before), `tables` (columns and rows), `series` (chart data), `notes`, and "
                "`as_of` (when its rollups were last brought up to date; null: counted live). "
                "Agents get their own figures. Unknown name: 404 listing the names",
                params=[name_param, *FILTER_PARAMS],
                errors=(400, 401, 404),
            )
        },
        "/api/reports/{name}.csv": {
            "get": op(
                "One table of a report as CSV (text/csv): the first unless `table` names "
                "another; raw values (rates 0..1, seconds, UTC ISO times). 404 for a report "
                "without tables",
                params=[
                    name_param,
                    *FILTER_PARAMS,
                    {
                        "name": "table",
                        "in": "query",
                        "required": False,
                        "description": "A table's `name` from the JSON answer",
                        "schema": {"type": "string"},
                    },
                ],
                errors=(400, 401, 404),
            )
        },
        "/api/reports/export/conversations.csv": {
            "get": op(
                "One row per conversation opened in the period (text/csv): "
                + ", ".join(exports.CONVERSATION_COLUMNS)
                + ". No message text, no patient data. "
                + export,
                params=FILTER_PARAMS,
                errors=(400, 401, 403),
            )
        },
        "/api/reports/export/journey-runs.csv": {
            "get": op(
                "One row per journey step run due in the period (text/csv): "
                + ", ".join(run_exports.RUN_COLUMNS)
                + ". No message text, no patient data. "
                + export,
                params=FILTER_PARAMS,
                errors=(400, 401, 403),
            )
        },
    }


def routes() -> list[web.RouteDef]:
    # The exports first; a name never holds a dot or a slash, so the JSON and CSV routes of a
    # report cannot take each other's requests.
    return [
        web.get(
            "/api/reports/export/conversations.csv",
            api_export_conversations,
            name="api_export_conversations",
        ),
        web.get(
            "/api/reports/export/journey-runs.csv",
            api_export_journey_runs,
            name="api_export_journey_runs",
        ),
        web.get("/api/reports/{name:[^/.]+}.csv", api_report_csv, name="api_report_csv"),
        web.get("/api/reports/{name:[^/.]+}", api_report, name="api_report"),
    ]
