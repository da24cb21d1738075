"""Business hours: is a team open at an instant, and when does it next open.

Pure functions over a team's stored hours (``Team.business_hours``, ``holidays``,
``time_zone``), so routing, the inbox and journeys read them the same way.

Hours are wall-clock times in the team's IANA time zone. The instant is converted into that
zone with zoneinfo (never by adding a fixed offset), which is what keeps DST change days right:
"08:00-17:00" means 08:00-17:00 local on the day the clocks move too.

Choices, so that an admin can predict the answer:
- An interval never crosses midnight. An overnight shift is two intervals, ``["22:00", "24:00"]``
  on one day and ``["00:00", "06:00"]`` on the next; each day stays self-contained, so a
  holiday closes exactly its own date. ``"24:00"`` is accepted as an end (end of the day).
- Intervals are half-open: open at 08:00:00, closed at 17:00:00.
- Empty ``business_hours`` means open around the clock, except on holidays (a holiday is
  "closed all day" whatever the hours say).
- A day that is not listed is closed all day.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Keys of ``business_hours``, in ``date.weekday()`` order."""
NEXT_OPEN_HORIZON_DAYS = 400
"""How far ``next_open`` looks ahead (a year of holidays plus slack) before answering None."""
MINUTES_PER_DAY = 24 * 60

_CLOCK = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")

Intervals = dict[int, list[tuple[int, int]]]
"""Weekday (0 = Monday) -> sorted [start, end) intervals in minutes since local midnight."""


class HoursInvalid(ValueError):
    """Stored or submitted hours are malformed; the message names the field and the fix."""


def _minutes(value: object, path: str, *, is_end: bool) -> int:
    match = _CLOCK.match(value) if isinstance(value, str) else None
    if match is None:
        raise HoursInvalid(f'{path}: expected a time like "08:30", got {value!r}')
    minutes = int(match[1]) * 60 + int(match[2])
    if minutes > MINUTES_PER_DAY or (minutes == MINUTES_PER_DAY and not is_end):
        raise HoursInvalid(f"{path}: {value} is not a time of day (24:00 may only end a day)")
    return minutes


def parse_business_hours(hours: Mapping[str, Any]) -> Intervals:
    """Check and convert ``{"mon": [["08:00", "17:00"]], ...}``; raises HoursInvalid."""
    if not isinstance(hours, Mapping):
        raise HoursInvalid('business_hours: expected an object like {"mon": [["08:00", "17:00"]]}')
    parsed: Intervals = {}
    for day, intervals in hours.items():
        if day not in DAYS:
            raise HoursInvalid(f"business_hours.{day}: unknown day; expected one of {DAYS}")
        if not isinstance(intervals, list):
            raise HoursInvalid(f'business_hours.{day}: expected a list like [["08:00", "17:00"]]')
        spans: list[tuple[int, int]] = []
        for i, pair in enumerate(intervals):
            path = f"business_hours.{day}[{i}]"
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise HoursInvalid(f'{path}: expected ["start", "end"], got {pair!r}')
            start = _minutes(pair[0], path, is_end=False)
            end = _minutes(pair[1], path, is_end=True)
            if start >= end:
                raise HoursInvalid(
                    f"{path}: start {pair[0]} is not before end {pair[1]}; write an overnight "
                    'shift as two intervals ("22:00"-"24:00", then "00:00"-"06:00" next day)'
                )
            spans.append((start, end))
        parsed[DAYS.index(day)] = sorted(spans)
    return parsed


def parse_holidays(holidays: Iterable[str]) -> frozenset[date]:
    days: set[date] = set()
    for i, value in enumerate(holidays):
        try:
            days.add(date.fromisoformat(value))
        except (TypeError, ValueError):
            raise HoursInvalid(
                f"holidays[{i}]: expected a date like 2026-12-25, got {value!r}"
            ) from None
    return frozenset(days)


def zone_of(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise HoursInvalid(
            f"time_zone: unknown time zone {name!r}; expected an IANA name like America/New_York"
        ) from None


def _local(at: datetime, time_zone: str) -> datetime:
    if at.tzinfo is None:
        raise ValueError("a naive datetime cannot be placed in business hours; pass an aware one")
    return at.astimezone(zone_of(time_zone))


def _open_on(intervals: Intervals, always: bool, local: datetime) -> bool:
    if always:
        return True
    minute = local.hour * 60 + local.minute
    return any(s <= minute < e for s, e in intervals.get(local.weekday(), []))


def is_open(
    business_hours: Mapping[str, Any], holidays: Iterable[str], time_zone: str, at: datetime
) -> bool:
    """Whether the team is open at the aware instant ``at``; raises HoursInvalid on bad hours."""
    intervals = parse_business_hours(business_hours)
    local = _local(at, time_zone)
    if local.date() in parse_holidays(holidays):
        return False
    return _open_on(intervals, not intervals, local)


def _first_instant(day: date, minute: int, zone: zoneinfo.ZoneInfo) -> datetime:
    """The first instant (UTC) whose local wall time is at or after ``day`` ``minute``: the
    wall time itself, its first occurrence when clocks go back, the gap's end when they jump."""
    wall = datetime.combine(day, time(minute // 60, minute % 60))
    instant = min(wall.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1))
    while instant.astimezone(zone).replace(tzinfo=None) < wall:
        instant += timedelta(minutes=1)  # only inside a gap: at most its length (an hour)
    return instant


def _open_spans(
    intervals: Intervals, day: date, zone: zoneinfo.ZoneInfo
) -> Iterator[tuple[datetime, datetime]]:
    """The team's open spans on ``day`` as UTC instants [opens, closes): the whole day when
    it has no hours at all; a span to midnight closes at the next day's first instant."""
    spans = [(0, MINUTES_PER_DAY)] if not intervals else intervals.get(day.weekday(), [])
    for start, end in spans:
        closes = (
            _first_instant(day + timedelta(days=1), 0, zone)
            if end == MINUTES_PER_DAY
            else _first_instant(day, end, zone)
        )
        yield _first_instant(day, start, zone), closes


def next_open(
    business_hours: Mapping[str, Any], holidays: Iterable[str], time_zone: str, at: datetime
) -> datetime | None:
    """The first instant at or after ``at`` when the team is open (in UTC), or None when it
    never opens within NEXT_OPEN_HORIZON_DAYS (no intervals at all, or a year of holidays).

    An opening time inside a spring-forward gap (02:30 on the day 02:00 jumps to 03:00)
    resolves to the end of the gap (03:00 local), the first instant ``is_open`` says yes.
    """
    if is_open(business_hours, holidays, time_zone, at):
        return at.astimezone(UTC)
    intervals = parse_business_hours(business_hours)
    closed_days = parse_holidays(holidays)
    zone = zone_of(time_zone)
    local = _local(at, time_zone)
    for offset in range(NEXT_OPEN_HORIZON_DAYS):
        day = local.date() + timedelta(days=offset)
        if day in closed_days:
            continue
        starts = [0] if not intervals else [s for s, _e in intervals.get(day.weekday(), [])]
        for start in starts:
            candidate = _first_instant(day, start, zone)
            if candidate > at:
                return candidate
    return None


def add_open_time(
    business_hours: Mapping[str, Any],
    holidays: Iterable[str],
    time_zone: str,
    start: datetime,
    duration: timedelta,
) -> datetime | None:
    """The instant (UTC) at which ``duration`` of the team's open time has passed since
    ``start``: a 4-hour target for a text at 21:44 on a weekday, with hours 08:00-17:00, ends
    at 12:00 the next working day, not at 01:44. None when the team never opens within
    NEXT_OPEN_HORIZON_DAYS. Raises HoursInvalid on bad hours."""
    intervals = parse_business_hours(business_hours)
    closed_days = parse_holidays(holidays)
    zone = zone_of(time_zone)
    local = _local(start, time_zone)
    left = duration
    for offset in range(NEXT_OPEN_HORIZON_DAYS):
        day = local.date() + timedelta(days=offset)
        if day in closed_days:
            continue
        for opens, closes in _open_spans(intervals, day, zone):
            opens = max(opens, start.astimezone(UTC))
            if closes <= opens:
                continue
            if closes - opens >= left:
                return opens + left
            left -= closes - opens
    return None


def open_time_between(
    business_hours: Mapping[str, Any],
    holidays: Iterable[str],
    time_zone: str,
    start: datetime,
    end: datetime,
) -> timedelta:
    """How much of [start, end) the team was open: the business-hours length of a wait (a
    text at 16:00 answered at 09:00 next morning waited two open hours with 08:00-17:00).
    The inverse of ``add_open_time``: ``open_time_between(s, add_open_time(s, d)) == d``.
    Zero when ``end`` is not after ``start``. Raises HoursInvalid on bad hours."""
    if end <= start:
        return timedelta(0)
    intervals = parse_business_hours(business_hours)
    closed_days = parse_holidays(holidays)
    zone = zone_of(time_zone)
    low, high = start.astimezone(UTC), end.astimezone(UTC)
    day, last = _local(start, time_zone).date(), _local(end, time_zone).date()
    total = timedelta(0)
    while day <= last:
        if day not in closed_days:
            for opens, closes in _open_spans(intervals, day, zone):
                overlap = min(closes, high) - max(opens, low)
                if overlap > timedelta(0):
                    total += overlap
        day += timedelta(days=1)
    return total
