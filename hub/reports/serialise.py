"""A Report as JSON-ready data (the API) and as CSV rows (exports)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.reports.base import Report


def plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def report_json(report: Report) -> dict[str, Any]:
    filters = dataclasses.asdict(report.filters)
    body: dict[str, Any] = plain(
        {
            "name": report.name,
            "title": report.title,
            "filters": filters,
            "figures": report.figures,
            "previous": report.previous,
            "labels": report.labels,
            "kinds": report.kinds,
            "tables": [
                {
                    "name": t.name,
                    "title": t.title,
                    "columns": [dataclasses.asdict(c) for c in t.columns],
                    "rows": t.rows,
                }
                for t in report.tables
            ],
            "series": [dataclasses.asdict(s) for s in report.series],
            "notes": report.notes,
            "as_of": report.as_of,
        }
    )
    return body
