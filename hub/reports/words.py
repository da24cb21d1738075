"""Figures written for people: a value in its kind ("42%", "3 h 5 min", "1,204") and its trend
in words ("up 12% on the previous 30 days"). Shared by the Reports page and the weekly mail so
both say the same thing about the same number."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.reports.base import Report

NO_DATA = "—"
"""What an empty figure shows (no conversation, no send in the period)."""
SAME_WITHIN = 0.5
"""A change smaller than this (percent, or percentage points for a rate) reads "about the same":
a 0.2% wobble is not news."""


def figure_kind(report: Report, key: str) -> str:
    """The figure's kind as the report declares it, else read from its key's wording (a
    builder that names a figure ``*_rate`` or ``*_seconds`` need not declare it)."""
    declared = report.kinds.get(key)
    if declared:
        return declared
    name = key.lower()
    if name.endswith(("_rate", "rate", "_share")) or name.startswith("rate_"):
        return "rate"
    if name.endswith(("_seconds", "_s")) or "_time" in name or name.startswith("time_"):
        return "seconds"
    timed = ("response", "resolution", "confirm", "duration", "wait")
    if name.endswith(("_median", "_p50", "_p90", "_mean")) and any(w in name for w in timed):
        return "seconds"
    if "score" in name and ("mean" in name or "average" in name):
        return "score"
    return "count"


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def span(seconds: float) -> str:
    """A duration as staff read it: "45 s", "12 min", "3 h 5 min", "2 d 4 h"."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def value_text(value: Any, kind: str) -> str:
    """One value in its kind; anything that is not a number is written as it is."""
    if value is None:
        return NO_DATA
    if not is_number(value):
        return str(value)
    if kind == "rate":
        percent = value * 100
        return f"{percent:.1f}%" if 0 < abs(percent) < 10 else f"{percent:.0f}%"
    if kind == "seconds":
        return span(value)
    if kind == "score":
        return f"{value:.2f}"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


@dataclass(frozen=True)
class Trend:
    direction: str
    """"up", "down" or "same"."""
    words: str
    """E.g. "up 12% on the previous 30 days"."""


def period_words(days: int) -> str:
    return "the previous day" if days == 1 else f"the previous {days} days"


def trend(now: Any, before: Any, kind: str, days: int) -> Trend | None:
    """How ``now`` compares with the previous period's ``before``; None when either is not a
    number (nothing to compare). A rate moves in percentage points, anything else in percent."""
    if not (is_number(now) and is_number(before)):
        return None
    against = period_words(days)
    if kind == "rate":
        points = (now - before) * 100
        if abs(points) < SAME_WITHIN:
            return Trend("same", f"about the same as {against}")
        direction = "up" if points > 0 else "down"
        return Trend(direction, f"{direction} {abs(points):.0f} points on {against}")
    if before == 0:
        if now == 0:
            return Trend("same", f"the same as {against}")
        return Trend("up", f"up from none in {against}")
    percent = (now - before) / abs(before) * 100
    if abs(percent) < SAME_WITHIN:
        return Trend("same", f"about the same as {against}")
    direction = "up" if percent > 0 else "down"
    return Trend(direction, f"{direction} {abs(percent):.0f}% on {against}")


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    kind: str
    value: Any
    text: str
    before_text: str | None
    trend: Trend | None


def headline(report: Report) -> list[Figure]:
    """The report's headline figures in its order, each written with its trend."""
    figures = []
    for key, value in report.figures.items():
        if isinstance(value, dict | list | tuple):
            continue  # a breakdown belongs in a table or a chart, not in a headline
        kind = figure_kind(report, key)
        before = report.previous.get(key) if key in report.previous else None
        figures.append(
            Figure(
                key=key,
                label=report.labels.get(key) or key.replace("_", " ").capitalize(),
                kind=kind,
                value=value,
                text=value_text(value, kind),
                before_text=value_text(before, kind) if key in report.previous else None,
                trend=trend(value, before, kind, report.filters.days)
                if key in report.previous
                else None,
            )
        )
    return figures
