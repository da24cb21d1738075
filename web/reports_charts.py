"""The geometry of a report's charts, for the SVG macros in templates/_chart.html.

Worked out here rather than in Jinja arithmetic: the macros only draw. Every chart is sized
to be read on a 390 px phone without zooming (a 360-unit wide drawing), except the heatmap,
whose 24 hours need more: it keeps its size inside a scrolling region. Values are written
beside each bar and in each heatmap cell, so the colour is never the only signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hub.reports.base import Series
from hub.reports.words import is_number, value_text

WIDTH = 360
"""Drawing width of bars and lines: a phone's width, so text stays at its size there."""
LABEL_CHARS = 18
"""A bar's label longer than this is shortened (the full label is in its tooltip and table)."""
HEAT_LEVELS = 5
"""Shades of the heatmap beside "none"."""


def _number(value: Any) -> float:
    return float(value) if is_number(value) else 0.0


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


@dataclass
class Bar:
    label: str
    short: str
    text: str
    y: int
    width: int


@dataclass
class Bars:
    height: int
    bars: list[Bar]
    summary: str


BAR_ROW = 24
BAR_X = 122
BAR_SPAN = 180


def bars(series: Series) -> Bars:
    """A bar per label, longest first as given (a distribution keeps its bucket order)."""
    values = [_number(v) for v in series.values]
    # Rates are drawn against 100%, so two reports' bars of the same rate are the same length.
    top = 1.0 if series.unit == "rate" else max(values, default=0) or 1
    shown = [
        Bar(
            label=str(label),
            short=_short(str(label)),
            text=value_text(raw, series.unit),
            y=6 + BAR_ROW * i,
            width=round(BAR_SPAN * value / top) if value > 0 else 0,
        )
        for i, (label, raw, value) in enumerate(
            zip(series.labels, series.values, values, strict=False)
        )
    ]
    if not shown:
        summary = "No data."
    else:
        high = max(range(len(shown)), key=lambda i: values[i])
        summary = f"{len(shown)} values; the largest is {shown[high].label} at {shown[high].text}."
    return Bars(height=12 + BAR_ROW * len(shown), bars=shown, summary=summary)


@dataclass
class Cell:
    x: int
    y: int
    level: int
    text: str
    title: str


@dataclass
class Heatmap:
    width: int
    height: int
    columns: list[tuple[int, str]]
    """(x, label) of the column labels shown (every third hour when there are 24)."""
    rows: list[tuple[int, str]]
    cells: list[Cell] = field(default_factory=list)
    summary: str = ""


HEAT_CELL_W = 26
HEAT_CELL_H = 24
HEAT_LEFT = 40
HEAT_TOP = 18


def heatmap(series: Series) -> Heatmap:
    rows = [list(r) if isinstance(r, list | tuple) else [] for r in series.values]
    flat = [_number(v) for row in rows for v in row]
    top = max(flat, default=0)
    ncols = len(series.labels)
    every = 3 if ncols > 12 else 1
    shape = Heatmap(
        width=HEAT_LEFT + HEAT_CELL_W * ncols + 2,
        height=HEAT_TOP + HEAT_CELL_H * len(rows) + 2,
        columns=[
            (HEAT_LEFT + HEAT_CELL_W * i + HEAT_CELL_W // 2, str(label))
            for i, label in enumerate(series.labels)
            if i % every == 0
        ],
        rows=[
            (HEAT_TOP + HEAT_CELL_H * i + HEAT_CELL_H // 2 + 4, str(label))
            for i, label in enumerate(series.row_labels)
        ],
    )
    best: tuple[float, str] = (0.0, "")
    for r, row in enumerate(rows):
        row_label = series.row_labels[r] if r < len(series.row_labels) else str(r)
        for c, raw in enumerate(row[:ncols]):
            value = _number(raw)
            level = 0 if value <= 0 or top <= 0 else max(1, math.ceil(HEAT_LEVELS * value / top))
            text = value_text(raw, series.unit)
            where = f"{row_label} {series.labels[c]}"
            shape.cells.append(
                Cell(
                    x=HEAT_LEFT + HEAT_CELL_W * c,
                    y=HEAT_TOP + HEAT_CELL_H * r,
                    level=level,
                    text=text if value > 0 else "",
                    title=f"{where}: {text}",
                )
            )
            if value > best[0]:
                best = (value, f"{where} with {text}")
    shape.summary = f"Busiest: {best[1]}." if best[1] else "Nothing in this period."
    return shape


@dataclass
class Line:
    height: int
    segments: list[str]
    """SVG polyline point lists; a day without a value breaks the line."""
    dots: list[tuple[float, float, str]]
    x_labels: list[tuple[float, str]]
    top_text: str
    summary: str


LINE_HEIGHT = 180
LINE_LEFT = 44
LINE_RIGHT = WIDTH - 12
LINE_TOP = 12
LINE_BOTTOM = 150


def line(series: Series) -> Line:
    n = len(series.values)
    numbers = [_number(v) for v in series.values]
    top = max(numbers, default=0) or 1
    step = (LINE_RIGHT - LINE_LEFT) / max(n - 1, 1)

    def at(i: int) -> tuple[float, float]:
        x = LINE_LEFT + step * i if n > 1 else (LINE_LEFT + LINE_RIGHT) / 2
        y = LINE_BOTTOM - (LINE_BOTTOM - LINE_TOP) * numbers[i] / top
        return round(x, 1), round(y, 1)

    segments: list[str] = []
    current: list[str] = []
    dots = []
    for i, raw in enumerate(series.values):
        if not is_number(raw):
            if current:
                segments.append(" ".join(current))
            current = []
            continue
        x, y = at(i)
        current.append(f"{x},{y}")
        label = str(series.labels[i]) if i < len(series.labels) else str(i)
        dots.append((x, y, f"{label}: {value_text(raw, series.unit)}"))
    if current:
        segments.append(" ".join(current))
    picks = sorted({0, n // 2, n - 1}) if n else []
    x_labels = [(at(i)[0], str(series.labels[i])) for i in picks if i < len(series.labels)]
    if dots:
        high = max(range(n), key=lambda i: numbers[i])
        summary = (
            f"{n} points from {series.labels[0]} to {series.labels[-1]}; the highest is "
            f"{value_text(series.values[high], series.unit)} on {series.labels[high]}."
        )
    else:
        summary = "No data."
    return Line(
        height=LINE_HEIGHT,
        segments=segments,
        dots=dots if n <= 62 else [],
        x_labels=x_labels,
        top_text=value_text(top if dots else 0, series.unit),
        summary=summary,
    )


def shape(series: Series) -> Any:
    """The drawing of a series, by its kind (an unknown kind is drawn as bars)."""
    if series.kind == "heatmap":
        return heatmap(series)
    if series.kind == "line":
        return line(series)
    return bars(series)


def table_rows(series: Series) -> tuple[list[str], list[list[str]]]:
    """The chart's numbers as a table (its accessible alternative): header, rows."""
    if series.kind == "heatmap":
        header = ["", *[str(label) for label in series.labels]]
        rows = []
        for r, row in enumerate(series.values):
            name = series.row_labels[r] if r < len(series.row_labels) else str(r)
            cells = list(row) if isinstance(row, list | tuple) else []
            rows.append([str(name), *[value_text(v, series.unit) for v in cells]])
        return header, rows
    header = ["", series.title]
    return header, [
        [str(label), value_text(value, series.unit)]
        for label, value in zip(series.labels, series.values, strict=False)
    ]
