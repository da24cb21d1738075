"""The inbox day rollup's arithmetic (no database access): what one fact adds to
``report_inbox_day``, the packed histograms, and percentiles read from them.

Percentiles are exact at the resolution staff read (``hub.reports.words.span``): one
histogram bucket per second below a minute, per minute below a day, per hour beyond. The
figure is the lower bound of the bucket holding ``percentile_disc``'s rank, which is the
recounted value rounded down to that resolution. Waits of OVERFLOW or more share one bucket
(a histogram stays bounded); a rank that falls in it is read exactly from the facts.

A histogram is packed as its sorted bucket keys then their counts (int32, little-endian): a
report reads a group's rows (a few dozen days and months) as arrays without a parse and
merges them in C (``Histogram``); the tick moves a few buckets of a stored row in place
(``merged``).
"""

from __future__ import annotations

import math
import sys
import uuid
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import product
from typing import Any

import numpy as np

from hub.reports.models import ANY_CHANNEL, ANY_ID, NO_TEAM, NOBODY

DAY, MONTH = "d", "m"
"""``report_inbox_day.grain``."""

OVERFLOW = 90 * 86400
"""Waits at or beyond this share one histogram bucket (read exactly from the facts)."""

COUNTS = (
    "opened",
    "measured",
    "unanswered_open",
    "closed_unanswered",
    "with_due",
    "settled_breaches",
    "resolved",
    "reopened",
)
"""The rollup's count columns, in the order ``Cell.counts`` holds them."""
HISTOGRAMS = ("first_response", "first_response_bh", "resolution", "resolution_bh")
"""The rollup's histogram columns, in the order ``Cell.histograms`` holds them."""

RollKey = tuple[str, date, str, uuid.UUID, uuid.UUID]
"""(grain, day or first of month, channel, team, assignee), each of the last three possibly
"every" (ANY_CHANNEL, ANY_ID)."""


def shown(seconds: int) -> int:
    """``seconds`` rounded down to the resolution staff read it at."""
    if seconds < 60:
        return seconds
    if seconds < 86400:
        return seconds - seconds % 60
    return seconds - seconds % 3600


def bucket(seconds: int) -> int:
    """The histogram bucket (its lower bound) holding ``seconds``."""
    return OVERFLOW if seconds >= OVERFLOW else shown(seconds)


@dataclass
class Cell:
    """What a set of facts adds to one rollup row (negative: taken back out)."""

    counts: list[int] = field(default_factory=lambda: [0] * len(COUNTS))
    histograms: list[Counter[int]] = field(default_factory=lambda: [Counter() for _ in HISTOGRAMS])

    def add(self, other: Cell) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        for mine, theirs in zip(self.histograms, other.histograms, strict=True):
            for k, n in theirs.items():
                mine[k] += n

    def is_empty(self) -> bool:
        return not any(self.counts) and not any(any(h.values()) for h in self.histograms)


BaseKey = tuple[date, str, uuid.UUID, uuid.UUID]
"""(clinic-local day, channel, team, assignee): a rollup key before grains and "every"."""


def _add_opened(cell: Cell, fact: Mapping[str, Any], sign: int) -> None:
    counts = cell.counts
    answered = fact["first_response_s"] is not None
    resolved = fact["resolved_at"] is not None
    due, ended = fact["due_at"], fact["wait_end_at"]
    counts[0] += sign
    if answered:
        counts[1] += sign
        cell.histograms[0][bucket(fact["first_response_s"])] += sign
        cell.histograms[1][bucket(fact["first_response_bh_s"])] += sign
    elif resolved:
        counts[3] += sign
    else:
        counts[2] += sign
    if due is not None:
        counts[4] += sign
        if ended is not None and ended > due:
            counts[5] += sign


def _add_resolved(cell: Cell, fact: Mapping[str, Any], sign: int) -> None:
    cell.counts[6] += sign
    if fact["reopened"]:
        cell.counts[7] += sign
    for i, column in ((2, "resolution_s"), (3, "resolution_bh_s")):
        if fact[column] is not None:
            cell.histograms[i][bucket(fact[column])] += sign


def variants(channel: str, team: uuid.UUID, assignee: uuid.UUID) -> list[tuple[Any, ...]]:
    """The row keys one conversation is counted under: each dimension as itself and as
    "every"."""
    return list(product((channel, ANY_CHANNEL), (team, ANY_ID), (assignee, ANY_ID)))


def add_fact(base: dict[BaseKey, Cell], fact: Mapping[str, Any], sign: int) -> None:
    """Add (``sign`` 1) or take back out (-1) one fact's share, at its own days and keys."""
    dims = (fact["channel"], fact["team_id"] or NO_TEAM, fact["assignee_id"] or NOBODY)
    key = (fact["opened_day"], *dims)
    if key not in base:
        base[key] = Cell()
    _add_opened(base[key], fact, sign)
    if fact["resolved_at"] is not None:
        key = (fact["resolved_day"], *dims)
        if key not in base:
            base[key] = Cell()
        _add_resolved(base[key], fact, sign)


def spread(
    base: Mapping[BaseKey, Cell], into: dict[RollKey, Cell] | None = None
) -> dict[RollKey, Cell]:
    """Each day's cells under every row they count in: the day and its month, each dimension
    as itself and as "every". Facts are summed per day first, so a batch or a rebuild adds a
    cell per day and key, not per conversation."""
    acc: dict[RollKey, Cell] = {} if into is None else into
    for (day, channel, team, assignee), cell in base.items():
        for grain, at in ((DAY, day), (MONTH, day.replace(day=1))):
            for dims in variants(channel, team, assignee):
                key = (grain, at, *dims)
                if key not in acc:
                    acc[key] = Cell()
                acc[key].add(cell)
    return acc


def shares(facts: Iterable[Mapping[str, Any]], sign: int = 1) -> dict[RollKey, Cell]:
    base: dict[BaseKey, Cell] = {}
    for fact in facts:
        add_fact(base, fact, sign)
    return spread(base)


# --- packing --------------------------------------------------------------------------------

_SWAP = sys.byteorder != "little"
"""Packed histograms are little-endian whatever the machine (a database moves)."""
_CODE = "i"
"""int32: bucket keys stay within +-68 years of seconds, counts within 2 billion; half the
bytes of int64 for a year's read (a clinic's month holds thousands of buckets)."""


def _packed(keys: array[int], counts: array[int]) -> bytes:
    out = array(_CODE, keys)
    out.extend(counts)
    if _SWAP:
        out.byteswap()
    return out.tobytes()


def pack(histogram: Mapping[int, int]) -> bytes:
    keys = sorted(k for k, n in histogram.items() if n)
    return _packed(array(_CODE, keys), array(_CODE, (histogram[k] for k in keys)))


def _halves(blob: bytes | None) -> tuple[array[int], array[int]]:
    packed = array(_CODE)
    if blob:
        packed.frombytes(blob)
        if _SWAP:
            packed.byteswap()
    n = len(packed) // 2
    return packed[:n], packed[n:]


def unpack(blob: bytes | None) -> Counter[int]:
    keys, counts = _halves(blob)
    return Counter(dict(zip(keys, counts, strict=True)))


def merged(blob: bytes | None, delta: Mapping[int, int]) -> bytes:
    """A stored histogram with ``delta`` added: a tick changes a few buckets of rows that may
    hold thousands, so each is found by bisection and moved in place (C memmove), not by
    rebuilding the row in Python."""
    keys, counts = _halves(blob)
    for key, n in sorted(delta.items()):
        if not n:
            continue
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            if counts[i] + n:
                counts[i] += n
            else:
                del keys[i]
                del counts[i]
        else:
            keys.insert(i, key)
            counts.insert(i, n)
    return _packed(keys, counts) if keys else b""


class Histogram:
    """A group's packed histograms (its days and months) merged for rank queries: how many
    waits are at or below a value, and where a percentile falls.

    A year's clinic-wide read merges half a million buckets; numpy sorts and sums them in C
    (a few milliseconds), where walking them in Python took most of the report's time."""

    __slots__ = ("keys", "totals")

    def __init__(self, blobs: Iterable[bytes | None]) -> None:
        # A blob is its n keys then their n counts, int32 little-endian (``pack``).
        halves = [np.frombuffer(b, dtype="<i4").reshape(2, -1) for b in blobs if b]
        keys = np.concatenate([h[0] for h in halves]) if halves else np.empty(0, np.int32)
        counts = np.concatenate([h[1] for h in halves]) if halves else np.empty(0, np.int32)
        if not len(keys):
            self.keys, self.totals = keys, counts.astype(np.int64)
            return
        order = np.argsort(keys, kind="stable")
        keys, wide = keys[order], counts[order].astype(np.int64)
        starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        self.keys = keys[starts]
        self.totals = np.cumsum(np.add.reduceat(wide, starts))

    @property
    def total(self) -> int:
        return int(self.totals[-1]) if len(self.totals) else 0

    def at_most(self, seconds: int) -> int:
        i = int(np.searchsorted(self.keys, seconds, side="right"))
        return int(self.totals[i - 1]) if i else 0

    def percentiles(self, ps: Sequence[float]) -> list[Rank | None]:
        """``percentile_disc`` at each of ``ps``, at the histograms' resolution: the smallest
        bucket with at least that share of the waits at or below it."""
        total = self.total
        out: list[Rank | None] = []
        for p in ps:
            if not total:
                out.append(None)
                continue
            rank = max(math.ceil(p * total) - 1, 0) + 1
            value = int(self.keys[int(np.searchsorted(self.totals, rank, side="left"))])
            if value == OVERFLOW:
                out.append(Rank(value, rank - self.at_most(OVERFLOW - 1)))
            else:
                out.append(Rank(value))
        return out


@dataclass(frozen=True)
class Rank:
    """Where a percentile falls: ``value`` (a bucket's lower bound), and when that bucket is
    the overflow, the rank among the waits in it (1-based) to read from the facts."""

    value: int
    overflow_rank: int | None = None


# --- periods ----------------------------------------------------------------------------------


def month_after(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def pieces(start: date, end: date) -> tuple[list[tuple[date, date]], list[date]]:
    """The days ``start``..``end`` as day ranges (the partial months at either edge) and
    whole months (their first days): what a period reads of the rollup."""
    months: list[date] = []
    first = start if start.day == 1 else month_after(start)
    day_ranges: list[tuple[date, date]] = []
    if first > end:
        return [(start, end)], []
    if start < first:
        day_ranges.append((start, first - timedelta(days=1)))
    at = first
    while month_after(at) - timedelta(days=1) <= end:
        months.append(at)
        at = month_after(at)
    if at <= end:
        day_ranges.append((at, end))
    return day_ranges, months
