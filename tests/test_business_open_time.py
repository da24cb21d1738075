"""How long a team was open between two instants (``open_time_between``): the business-hours
length of a patient's wait in the Response times report, across weekends, holidays and the
New York clock changes of March and November 2026."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hub.routing.hours import HoursInvalid, add_open_time, open_time_between

NY = ZoneInfo("America/New_York")
WEEKDAYS_8_TO_17 = {d: [["08:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}
H = timedelta(hours=1)


def ny(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NY)


@pytest.mark.parametrize(
    ("start", "end", "hours", "holidays", "open_for"),
    [
        # Inside one day's hours.
        (ny(2026, 12, 8, 9, 0), ny(2026, 12, 8, 11, 30), WEEKDAYS_8_TO_17, [], 2.5 * H),
        # A text at 16:00 answered at 09:00 next morning waited two open hours.
        (ny(2026, 12, 8, 16, 0), ny(2026, 12, 9, 9, 0), WEEKDAYS_8_TO_17, [], 2 * H),
        # Written and answered while closed: no open time at all.
        (ny(2026, 12, 8, 18, 0), ny(2026, 12, 8, 23, 0), WEEKDAYS_8_TO_17, [], 0 * H),
        # Friday 16:00 to Monday 09:00: the weekend is closed.
        (ny(2026, 12, 11, 16, 0), ny(2026, 12, 14, 9, 0), WEEKDAYS_8_TO_17, [], 2 * H),
        # Christmas (Friday 25th) closed: Thursday 16:00 to Monday 28th 09:00.
        (ny(2026, 12, 24, 16, 0), ny(2026, 12, 28, 9, 0), WEEKDAYS_8_TO_17, ["2026-12-25"], 2 * H),
        # Always open: the clock, also across the March change (a 23-hour Sunday).
        (ny(2026, 3, 7, 12, 0), ny(2026, 3, 8, 12, 0), {}, [], 23 * H),
        # ...and the November one (a 25-hour Sunday).
        (ny(2026, 10, 31, 12, 0), ny(2026, 11, 1, 12, 0), {}, [], 25 * H),
        # An overnight desk 00:00-06:00 on Sunday 8 March: the clocks skip 02:00-03:00, five
        # real hours.
        (ny(2026, 3, 7, 20, 0), ny(2026, 3, 8, 12, 0), {"sun": [["00:00", "06:00"]]}, [], 5 * H),
        # The same desk on Sunday 1 November: 01:00-02:00 happens twice, seven real hours.
        (ny(2026, 10, 31, 20, 0), ny(2026, 11, 1, 12, 0), {"sun": [["00:00", "06:00"]]}, [], 7 * H),
        # Weekday hours on the Monday after the March change: nine hours, as any Monday.
        (ny(2026, 3, 6, 12, 0), ny(2026, 3, 9, 18, 0), WEEKDAYS_8_TO_17, [], 5 * H + 9 * H),
        # Always open except a holiday: that whole local day counts nothing.
        (ny(2026, 12, 24, 22, 0), ny(2026, 12, 26, 2, 0), {}, ["2026-12-25"], 4 * H),
        # Split shift with lunch closed.
        (
            ny(2026, 12, 8, 11, 0),
            ny(2026, 12, 8, 16, 0),
            {"tue": [["08:00", "12:00"], ["13:00", "17:00"]]},
            [],
            4 * H,
        ),
        # An end before the start is no time, not a negative one.
        (ny(2026, 12, 8, 11, 0), ny(2026, 12, 8, 10, 0), WEEKDAYS_8_TO_17, [], 0 * H),
    ],
)
def test_open_time_between(
    start: datetime,
    end: datetime,
    hours: dict[str, Any],
    holidays: list[str],
    open_for: timedelta,
) -> None:
    assert open_time_between(hours, holidays, "America/New_York", start, end) == open_for


@pytest.mark.parametrize(
    "start",
    [
        ny(2026, 3, 6, 15, 17),  # Friday before the March change
        ny(2026, 3, 7, 23, 59),
        ny(2026, 10, 30, 16, 45),  # Friday before the November change
        ny(2026, 10, 31, 23, 30),
        ny(2026, 12, 24, 16, 0),  # before a holiday
    ],
)
@pytest.mark.parametrize(
    "hours",
    [WEEKDAYS_8_TO_17, {}, {"sun": [["00:00", "06:00"]], "mon": [["08:00", "24:00"]]}],
)
@pytest.mark.parametrize("duration", [timedelta(minutes=1), 4 * H, 30 * H])
def test_inverse_of_add_open_time(
    start: datetime, hours: dict[str, Any], duration: timedelta
) -> None:
    """Adding N open hours and measuring the open time back gives N, whatever the calendar."""
    holidays = ["2026-12-25"]
    end = add_open_time(hours, holidays, "America/New_York", start, duration)
    assert end is not None
    assert open_time_between(hours, holidays, "America/New_York", start, end) == duration


def test_bad_hours_are_refused() -> None:
    with pytest.raises(HoursInvalid):
        open_time_between(
            {"mon": [["17:00", "08:00"]]}, [], "UTC", ny(2026, 1, 5, 9), ny(2026, 1, 5, 10)
        )
