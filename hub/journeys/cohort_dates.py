"""Dates and times as cohort files write them: the clinic's date order (babel), numeric dates
read day first or month first, ISO and written-out dates, 12- and 24-hour times, and the
appointment's start in the patient's zone. Errors say what was wrong with the value in plain
words (``hub.journeys.mapping`` reads the columns; this reads what is in them)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import date, datetime, time
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError


class DateOrder(StrEnum):
    DAY_FIRST = "day-first"
    MONTH_FIRST = "month-first"
    YEAR_FIRST = "year-first"


DATE_ORDER_LABELS = {
    DateOrder.MONTH_FIRST: "month first (12/31/2027)",
    DateOrder.DAY_FIRST: "day first (31/12/2027)",
    DateOrder.YEAR_FIRST: "year first (2027/12/31)",
}
"""How each order reads on the mapping screen and in the command's output."""


_DATE_ISO = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})")
_DATE_NUMERIC = re.compile(r"(\d{1,2})[-/.](\d{1,2})[-/.](\d{4}|\d{2})")
_DATE_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})")
_DATE_WORDS = re.compile(
    r"(\d{1,2})[ -]([A-Za-z]{3,9})\.?[ ,-]*(\d{4})|([A-Za-z]{3,9})\.? (\d{1,2}),? (\d{4})"
)
_TIME = re.compile(r"(\d{1,2})(?:[:.](\d{2}))?(?:[:.](\d{2}))?\s*([AaPp])\.?\s*[Mm]?\.?")
_TIME_24 = re.compile(r"(\d{1,2})[:.h](\d{2})(?:[:.](\d{2})(?:\.\d+)?)?|(\d{2})(\d{2})")
_MONTHS = {
    name: n
    for n, names in enumerate(
        (
            ("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
            ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
            ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}  # fmt: skip


def date_order_of(region: str) -> DateOrder:
    """The order a clinic in ``region`` writes dates in, from its likeliest locale's short
    date pattern (US M/d/yy, GB dd/MM/y, DE dd.MM.yy, JP y/MM/dd)."""
    try:
        pattern = Locale.parse(f"und_{region}").date_formats["short"].pattern
    except (UnknownLocaleError, ValueError):
        return DateOrder.MONTH_FIRST
    first = next((c for c in pattern if c in "dMy"), "M")
    return {"d": DateOrder.DAY_FIRST, "y": DateOrder.YEAR_FIRST}.get(first, DateOrder.MONTH_FIRST)


def read_date(text: str, order: DateOrder, what: str) -> date:
    """A date as EHR exports write it: ISO, YYYYMMDD, 31/12/2027 or 12/31/2027 by ``order``,
    14-Mar-2027, Mar 14, 2027. Raises ValueError naming ``what`` and the value."""
    value = text.strip()
    try:
        return _date(value, order)
    except ValueError:
        pass
    hint = ""
    for other in (DateOrder.DAY_FIRST, DateOrder.MONTH_FIRST):
        if other is not order and _DATE_NUMERIC.fullmatch(value):
            try:
                _date(value, other)
            except ValueError:
                continue
            hint = (
                f" when read {_order_words(order)}; if the file writes the {_first(other)} "
                f'first, choose "{_order_words(other)}"'
            )
    raise ValueError(f'the {what} "{value}" is not a date{hint}')


def _order_words(order: DateOrder) -> str:
    return order.value.replace("-", " ")


def _first(order: DateOrder) -> str:
    return order.value.split("-")[0]


def _date(value: str, order: DateOrder) -> date:
    if m := _DATE_ISO.fullmatch(value):
        return date(int(m[1]), int(m[2]), int(m[3]))
    if m := _DATE_COMPACT.fullmatch(value):
        return date(int(m[1]), int(m[2]), int(m[3]))
    if m := _DATE_NUMERIC.fullmatch(value):
        a, b, year = int(m[1]), int(m[2]), int(m[3])
        year += 2000 if len(m[3]) == 2 else 0
        day, month = (a, b) if order is DateOrder.DAY_FIRST else (b, a)
        return date(year, month, day)
    if m := _DATE_WORDS.fullmatch(value):
        day_text, month_name, year_text = (m[1], m[2], m[3]) if m[1] else (m[5], m[4], m[6])
        if month_name.casefold() not in _MONTHS:
            raise ValueError("unknown month")
        return date(int(year_text), _MONTHS[month_name.casefold()], int(day_text))
    raise ValueError("not a date")


def read_time(text: str, what: str) -> time:
    """A time of day: 14:30, 14:30:00, 2:30 PM, 2pm, 1430, 14h30. Raises ValueError naming
    ``what`` and the value."""
    value = text.strip()
    try:
        if m := _TIME.fullmatch(value):
            hour = int(m[1])
            if 1 <= hour <= 12:
                hour = hour % 12 + (12 if m[4] in "Pp" else 0)
                return time(hour, int(m[2] or 0), int(m[3] or 0))
        elif m := _TIME_24.fullmatch(value):
            if m[4]:  # 1430
                return time(int(m[4]), int(m[5]))
            return time(int(m[1]), int(m[2]), int(m[3] or 0))
    except ValueError:
        pass
    raise ValueError(f'the {what} "{value}" is not a time of day (like 14:30 or 2:30 PM)')


def zone_named(name: str) -> ZoneInfo:
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f'unknown time zone "{name}"; expected an IANA name like America/New_York'
        ) from None


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def read_start(raw: Mapping[str, str], order: DateOrder, zone: str) -> datetime | None:
    """The appointment's start from a canonical row: ``appointment_start`` (ISO with or
    without its offset, or "12/31/2027 2:30 PM"), or ``appointment_date`` and
    ``appointment_time``; a time without an offset is the wall time in ``zone``. None when the
    row has no appointment date."""
    joined = (raw.get("appointment_start") or "").strip()
    if joined:
        try:
            start = datetime.fromisoformat(joined)
        except ValueError:
            day_text, _, time_text = joined.replace("T", " ", 1).partition(" ")
            day = read_date(day_text, order, "appointment date")
            at = read_time(time_text, "appointment time") if time_text.strip() else time()
            start = datetime.combine(day, at)
    else:
        day_text = (raw.get("appointment_date") or "").strip()
        if not day_text:
            if (raw.get("appointment_time") or "").strip():
                raise ValueError("the appointment date is empty but its time is given")
            return None
        day = read_date(day_text, order, "appointment date")
        time_text = (raw.get("appointment_time") or "").strip()
        at = read_time(time_text, "appointment time") if time_text else time()
        start = datetime.combine(day, at)
    if start.utcoffset() is None:
        start = start.replace(tzinfo=zone_named(zone))
    return start


def read_birth_date_text(text: str | None, order: DateOrder) -> str | None:
    """A date of birth as ISO text; its value is never repeated in the error (it is PHI)."""
    if not text or not text.strip():
        return None
    try:
        return _date(text.strip(), order).isoformat()
    except ValueError:
        raise ValueError(
            f"birth_date is not a date ({_order_words(order)}, or like 1984-03-07)"
        ) from None
