"""How the staff pages write times, waits, deadlines, numbers and sizes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jinja2
import pytest

from hub.enums import Role
from hub.inbox.access import StaffContext
from web.render import age, countdown, filesize, make_environment, phone

NOW = datetime(2026, 12, 7, 15, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("since", "shown"),
    [
        (timedelta(seconds=10), "1 min"),
        (timedelta(minutes=59), "59 min"),
        (timedelta(minutes=60), "1 h"),
        (timedelta(hours=3, minutes=5), "3 h 5 min"),
        (timedelta(days=2), "2 d"),
        (timedelta(days=2, hours=4, minutes=30), "2 d 4 h"),
    ],
)
def test_age_reads_at_a_glance(since: timedelta, shown: str) -> None:
    assert age(NOW - since, NOW) == shown


def test_countdown_says_time_left_or_how_late() -> None:
    assert countdown(NOW + timedelta(minutes=14, seconds=30), NOW) == "reply due in 14 min"
    assert countdown(NOW - timedelta(hours=1, minutes=2), NOW) == "reply overdue by 1 h 2 min"


def test_phone_and_file_size() -> None:
    assert phone("+15550100123") == "+1 555-010-0123"
    assert phone("not a number") == "not a number"
    assert [filesize(n) for n in (1, 512, 2048, 5 * 1024 * 1024)] == [
        "1 byte",
        "512 bytes",
        "2.0 KB",
        "5.0 MB",
    ]


def _render(text: str, me: StaffContext | None, **context: object) -> str:
    env: jinja2.Environment = make_environment()
    return env.from_string(text).render(me=me, **context)


def test_times_are_written_in_the_readers_zone() -> None:
    reader = StaffContext(uuid.uuid4(), Role.AGENT, frozenset(), time_zone="America/Chicago")
    assert _render("{{ t|localtime }}", reader, t=NOW) == "Dec 7, 09:05"
    assert _render("{{ t|localtime('input') }}", reader, t=NOW) == "2026-12-07T09:05"
    assert _render("{{ t|localtime('long') }}", reader, t=NOW) == "Mon Dec 7 2026, 09:05 CST"
    # A given zone (the patient's) wins over the reader's; no reader means UTC.
    assert _render("{{ t|localtime('time', zone='Europe/Paris') }}", reader, t=NOW) == "16:05"
    assert _render("{{ t|localtime }}", None, t=NOW) == "Dec 7, 15:05"
    # A naive time is a stored UTC time (SQLite gives them back naive).
    assert _render("{{ t|localtime }}", reader, t=NOW.replace(tzinfo=None)) == "Dec 7, 09:05"
