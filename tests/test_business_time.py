"""Response-time targets count the team's open hours and holidays (issue 14, point 7): a text
at 21:44 is due four open hours after the team opens, not at 01:44."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from hub.enums import Priority
from hub.inbox.models import Conversation
from hub.routing.hours import add_open_time
from tests.stack import Stack
from tests.test_auto_replies import closed_front_desk

NY = ZoneInfo("America/New_York")
WEEKDAYS_8_TO_17 = {d: [["08:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}
FOUR_HOURS = timedelta(hours=4)


def ny(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=NY)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("start", "hours", "holidays", "due"),
    [
        # Tuesday 21:44: closed; opens Wednesday 08:00, four open hours later is 12:00.
        (ny(2026, 12, 8, 21, 44), WEEKDAYS_8_TO_17, [], ny(2026, 12, 9, 12, 0)),
        # Inside hours with time left today.
        (ny(2026, 12, 8, 9, 30), WEEKDAYS_8_TO_17, [], ny(2026, 12, 8, 13, 30)),
        # 15:00: two hours today, two tomorrow morning.
        (ny(2026, 12, 8, 15, 0), WEEKDAYS_8_TO_17, [], ny(2026, 12, 9, 10, 0)),
        # Friday evening: Monday 12:00.
        (ny(2026, 12, 11, 18, 0), WEEKDAYS_8_TO_17, [], ny(2026, 12, 14, 12, 0)),
        # Thursday 24 Dec 16:00, closed on Christmas: one hour Thursday, three on Monday 28th.
        (ny(2026, 12, 24, 16, 0), WEEKDAYS_8_TO_17, ["2026-12-25"], ny(2026, 12, 28, 11, 0)),
        # Always open (no hours): the clock.
        (ny(2026, 12, 8, 21, 44), {}, [], ny(2026, 12, 9, 1, 44)),
        # Always open but a holiday: nothing counts on that day.
        (ny(2026, 12, 24, 22, 0), {}, ["2026-12-25"], ny(2026, 12, 26, 2, 0)),
        # Split shift: 08:00-12:00 and 13:00-17:00; 11:00 + 4h = 16:00 (lunch is not counted).
        (
            ny(2026, 12, 8, 11, 0),
            {"tue": [["08:00", "12:00"], ["13:00", "17:00"]]},
            [],
            ny(2026, 12, 8, 16, 0),
        ),
        # The night the clocks go back (1 Nov 2026): an overnight desk open 00:00-06:00 has
        # seven real hours that night; 4 h from 00:00 EDT is 03:00 EST.
        (ny(2026, 11, 1, 0, 0), {"sun": [["00:00", "06:00"]]}, [], ny(2026, 11, 1, 3, 0)),
    ],
)
def test_four_open_hours(
    start: datetime, hours: dict[str, Any], holidays: list[str], due: datetime
) -> None:
    got = add_open_time(hours, holidays, "America/New_York", start, FOUR_HOURS)
    assert got == due.astimezone(UTC)


def test_a_team_that_never_opens_has_no_open_time() -> None:
    every_day = [f"2026-12-{d:02d}" for d in range(1, 32)] + [
        (datetime(2027, 1, 1) + timedelta(days=i)).date().isoformat() for i in range(400)
    ]
    assert (
        add_open_time({}, every_day, "UTC", datetime(2026, 12, 1, tzinfo=UTC), FOUR_HOURS) is None
    )


AT_21_44 = ny(2026, 12, 8, 21, 44)
"""A Tuesday evening in New York, after the team's 08:00-17:00."""


async def texted_at_21_44(stack: Stack, body: str) -> Conversation:
    """The patient texts the front desk (weekdays 08:00-17:00, New York) at 21:44."""
    assert stack.clock_file is not None
    stack.clock_file.write_text(repr((AT_21_44 - datetime.now(UTC)).total_seconds()))
    await closed_front_desk(stack.db, business_hours=WEEKDAYS_8_TO_17)
    await stack.text_from_patient(body)
    async with stack.db.reader() as session:
        return (await session.scalars(select(Conversation))).one()


@pytest.mark.slow
async def test_a_text_at_21_44_is_due_four_open_hours_after_opening(stack: Stack) -> None:
    """Through the real webhook and intake: the conversation's first-response deadline, which
    the inbox's SLA countdown shows, is Wednesday 12:00, not Wednesday 01:44."""
    conversation = await texted_at_21_44(stack, "Can I get a refill of my prescription?")
    assert conversation.priority is Priority.NORMAL
    assert conversation.first_response_due_at is not None
    due = conversation.first_response_due_at.astimezone(NY)
    assert due.replace(second=0, microsecond=0) == ny(2026, 12, 9, 12, 0)


@pytest.mark.slow
async def test_an_urgent_text_at_night_is_due_on_the_clock(stack: Stack) -> None:
    conversation = await texted_at_21_44(stack, "I have chest pain and can't breathe")
    assert conversation.priority is Priority.URGENT
    assert conversation.first_response_due_at is not None
    late = conversation.first_response_due_at - AT_21_44
    assert timedelta(minutes=14) < late <= timedelta(minutes=16)
