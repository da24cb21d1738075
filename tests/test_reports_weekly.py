"""The weekly summary mail to admins, sent by the worker through a real SMTP relay (aiosmtpd):
due on Monday 08:00 in the clinic's zone (across a DST change), once per week however many
workers look, figures only, switched off by an admin, and given back when the relay refuses."""

# ruff: noqa: F811  (pytest passes the imported fixture by its name)
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis
from rq import Queue
from sqlalchemy import select

from fakes.smtp import FakeSmtp
from hub.audit import Actor
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database
from hub.inbox import actions
from hub.inbox.models import Team
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.models import AppointmentStatus
from hub.reports import weekly
from hub.reports.words import trend, value_text
from hub.settings_store import put_setting_in, setting_value
from hub.templates.actions import do_seed_templates
from tests.conftest import make_staff

# The staff-mail tests' fixture (their relay and settings), shared rather than copied.
from tests.test_mentions_mail import mail_settings  # noqa: F401
from worker.weekly_summary import WEEKLY_CHECK_KEY, run_weekly_summary, start_weekly_summary

SYSTEM = Actor.system("test")
ZONE = ZoneInfo("America/New_York")
ADMINS = ("ada.admin@staff.example.org", "abe.admin@staff.example.org")
MONDAY_8 = datetime(2026, 11, 2, 13, 0, tzinfo=UTC)
"""Monday Nov 2 2026, 08:00 in New York: EST, the day after clocks went back (a week earlier
08:00 was 12:00 UTC)."""
JOURNEY = """\
key: week_reminders
name: Week reminders
purpose: reminders
anchor: appointment_start
steps:
  - {id: sms_24h, offset: -24h, template: appointment_reminder, channel: sms,
     asks: confirmation, conditions: [skip_if_confirmed]}
"""


@dataclass(frozen=True)
class Seeded:
    local_start: datetime
    status: AppointmentStatus | None


APPOINTMENTS = [
    # The week (Mon Oct 26 .. Sun Nov 1, New York days):
    Seeded(datetime(2026, 10, 26, 0, 30, tzinfo=ZONE), AppointmentStatus.FULFILLED),
    Seeded(datetime(2026, 10, 29, 10, 0, tzinfo=ZONE), AppointmentStatus.NOSHOW),
    Seeded(datetime(2026, 11, 1, 23, 30, tzinfo=ZONE), AppointmentStatus.FULFILLED),  # Nov 2 UTC
    # The week before (Oct 19 .. Oct 25):
    Seeded(datetime(2026, 10, 25, 23, 30, tzinfo=ZONE), AppointmentStatus.NOSHOW),  # Oct 26 UTC
    Seeded(datetime(2026, 10, 20, 9, 0, tzinfo=ZONE), None),
    # This week: in neither.
    Seeded(datetime(2026, 11, 2, 0, 30, tzinfo=ZONE), AppointmentStatus.NOSHOW),
]


async def seed(db: Database, ring: KeyRing) -> None:
    for email in ADMINS:
        await make_staff(db, email, role="admin", teams=("Front desk",))
    await make_staff(db, "alex.agent@staff.example.org", role="agent", teams=("Front desk",))
    gone = await make_staff(db, "old.admin@staff.example.org", role="admin")
    async with db.transaction() as session:
        team = (await session.scalars(select(Team).where(Team.name == "Front desk"))).one()
        team.time_zone, team.is_default = "America/New_York", True
        from hub.inbox.models import StaffUser

        left = await session.get(StaffUser, gone.staff_id)
        assert left is not None
        left.active = False
    await do_seed_templates(db)
    await journeys.do_install_journey(db, SYSTEM, JOURNEY, "week_reminders.yaml")
    for n, a in enumerate(APPOINTMENTS):
        patient = await actions.do_create_patient(
            db,
            ring,
            SYSTEM,
            NewPatient(name=f"Rowan Example{n}", phone=f"+1555010020{n}"),
            region="US",
        )
        await journeys.do_enroll(
            db,
            SYSTEM,
            "week_reminders",
            patient,
            appointment=journeys.NewAppointment(f"wk-{n}", a.local_start, status=a.status),
            now=a.local_start - timedelta(days=3),
            ring=ring,
        )


def in_week(a: Seeded, first: datetime, days: int = 7) -> bool:
    day = a.local_start.astimezone(ZONE).date()
    return first.date() <= day < (first + timedelta(days=days)).date()


@pytest.fixture
async def seeded(committed_db: Database, mail_settings: Settings) -> Database:
    await seed(committed_db, mail_settings.key_ring())
    async with committed_db.transaction() as session:  # the hub ran before the weeks read
        await put_setting_in(session, weekly.SINCE_KEY, "2026-10-01")
    return committed_db


def test_the_week_is_read_in_the_clinic_zone_across_dst() -> None:
    week = weekly.week_of(MONDAY_8, "America/New_York")
    assert week.due_at == MONDAY_8
    assert (week.filters.start.isoformat(), week.filters.end.isoformat()) == (
        "2026-10-26",
        "2026-11-01",
    )
    before = weekly.week_of(MONDAY_8 - timedelta(days=7), "America/New_York")
    assert before.due_at == datetime(2026, 10, 26, 12, 0, tzinfo=UTC)  # 08:00 EDT
    # Sunday night in New York is still the week before, though Monday in UTC.
    sunday_night = datetime(2026, 11, 2, 4, 30, tzinfo=UTC)
    assert weekly.week_of(sunday_night, "America/New_York").monday.isoformat() == "2026-10-26"


async def test_the_admins_get_the_week_beside_the_week_before_once(
    seeded: Database,
    mail_settings: Settings,
    relay: FakeSmtp,
) -> None:
    minute_early = MONDAY_8 - timedelta(minutes=1)
    assert await weekly.do_weekly_due(seeded, minute_early) is None
    assert (await run_weekly_summary(mail_settings, minute_early)).startswith("not sent")
    assert relay.messages == []

    assert await run_weekly_summary(mail_settings, MONDAY_8) == "sent to 2 of 2 admins"
    assert sorted(m.rcpt_tos[0] for m in relay.messages) == sorted(ADMINS)
    mail = relay.messages[0]
    assert mail.message["Subject"] == "Weekly summary: Oct 26 to Nov 1"
    assert mail.message["Auto-Submitted"] == "auto-generated"
    text = mail.message.get_content().replace("\r\n", "\n")

    # The recount, from the rows this test made: appointments by the day they start in New York.
    this = [a for a in APPOINTMENTS if in_week(a, datetime(2026, 10, 26))]
    last = [a for a in APPOINTMENTS if in_week(a, datetime(2026, 10, 19))]
    assert (len(this), len(last)) == (3, 2)
    no_shows = sum(a.status is AppointmentStatus.NOSHOW for a in this)
    no_shows_before = sum(a.status is AppointmentStatus.NOSHOW for a in last)
    change = round((len(this) - len(last)) / len(last) * 100)
    assert (
        f"  Appointments: {len(this)} (was {len(last)}); up {change}% on the previous 7 days"
        in (text)
    )
    assert (
        f"  No-shows: {no_shows} (was {no_shows_before}); about the same as the previous 7 days"
        in (text)
    )
    known = [a for a in this if a.status is not None]
    rate = round(no_shows / len(known) * 100)
    assert f"  No-show rate: {rate}% (was 100%); down {100 - rate} points" in text
    assert "the week of Mon Oct 26 to Sun Nov 1, 2026" in text
    assert f"{mail_settings.public_url}/reports" in text
    for phi in (b"Rowan", b"+1555010020", b"5550100", b"alex.agent", b"Old"):
        assert phi not in mail.raw

    # Once a week: the same Monday again, or a worker that ticks later that week, sends nothing.
    assert (await run_weekly_summary(mail_settings, MONDAY_8)).startswith("not sent")
    later = MONDAY_8 + timedelta(days=3)
    assert (await run_weekly_summary(mail_settings, later)).startswith("not sent")
    assert len(relay.messages) == 2
    assert (await weekly.do_weekly_settings(seeded)).last_sent == "2026-11-02"
    # The next Monday's is due again.
    assert await weekly.do_weekly_due(seeded, MONDAY_8 + timedelta(days=7)) is not None


async def test_a_new_hub_mails_no_week_it_was_not_running_for(committed_db: Database) -> None:
    # First looked on a Wednesday: that week's Monday mail would cover five days before the
    # hub existed, so the first mail is the Monday after a whole week.
    wednesday = MONDAY_8 - timedelta(days=5)
    assert await weekly.do_weekly_due(committed_db, wednesday) is None
    async with committed_db.reader() as session:
        assert await setting_value(session, weekly.SINCE_KEY) == "2026-10-28"
    assert await weekly.do_weekly_due(committed_db, MONDAY_8) is None
    later = await weekly.do_weekly_due(committed_db, MONDAY_8 + timedelta(days=7))
    assert later is not None and later.filters.start.isoformat() == "2026-11-02"
    # The first look stays the first: a later one does not move it.
    async with committed_db.reader() as session:
        assert await setting_value(session, weekly.SINCE_KEY) == "2026-10-28"


async def test_the_tick_enqueues_one_job_per_week(
    seeded: Database,
    mail_settings: Settings,
) -> None:
    client = redis.Redis.from_url(mail_settings.redis_url or "")
    try:
        assert not await start_weekly_summary(seeded, client, MONDAY_8 - timedelta(minutes=1))
        client.delete(WEEKLY_CHECK_KEY)
        assert await start_weekly_summary(seeded, client, MONDAY_8)
        # Within the minute another worker's tick does not even look.
        assert not await start_weekly_summary(seeded, client, MONDAY_8)
        [job] = Queue("hub-default", connection=client).get_jobs()
        assert job.func_name == "worker.weekly_summary.send_weekly_summary"
        assert job.id == "hub-weekly-summary-2026-11-02"
    finally:
        client.close()


async def test_switched_off_nothing_is_sent(
    seeded: Database,
    mail_settings: Settings,
    relay: FakeSmtp,
) -> None:
    admin = Actor.staff(uuid.uuid4())
    await weekly.do_set_weekly_enabled(seeded, admin, False)
    assert await weekly.do_weekly_due(seeded, MONDAY_8) is None
    assert (await run_weekly_summary(mail_settings, MONDAY_8)).startswith("not sent")
    assert relay.messages == []
    await weekly.do_set_weekly_enabled(seeded, admin, True)
    assert await run_weekly_summary(mail_settings, MONDAY_8) == "sent to 2 of 2 admins"


async def test_a_relay_refusing_everyone_gives_the_week_back(
    seeded: Database,
    mail_settings: Settings,
    relay: FakeSmtp,
) -> None:
    for email in ADMINS:
        relay.refuse(email, 451, "4.3.0 try again later")
    with pytest.raises(RuntimeError, match="refused every recipient"):
        await run_weekly_summary(mail_settings, MONDAY_8)
    assert (await weekly.do_weekly_settings(seeded)).last_sent is None
    assert await weekly.do_weekly_due(seeded, MONDAY_8) is not None  # a later tick tries again

    relay._refusals.pop(ADMINS[0])  # the first admin's mailbox is back; the other's is not
    assert await run_weekly_summary(mail_settings, MONDAY_8) == "sent to 1 of 2 admins"
    assert (await weekly.do_weekly_settings(seeded)).last_sent == "2026-11-02"


@pytest.mark.parametrize(
    ("now", "before", "kind", "words"),
    [
        (46, 41, "count", "up 12% on the previous 7 days"),
        (30, 40, "seconds", "down 25% on the previous 7 days"),
        (0.42, 0.30, "rate", "up 12 points on the previous 7 days"),  # points, not percent
        (0.301, 0.30, "rate", "about the same as the previous 7 days"),
        (3, 0, "count", "up from none in the previous 7 days"),
        (0, 0, "count", "the same as the previous 7 days"),
    ],
)
def test_trends_are_written_as_people_read_them(
    now: float, before: float, kind: str, words: str
) -> None:
    found = trend(now, before, kind, 7)
    assert found is not None and found.words == words
    assert trend(None, before, kind, 7) is None  # nothing measured: no trend, not "down 100%"


def test_values_are_written_in_their_kind() -> None:
    assert [value_text(v, k) for v, k in [(1204, "count"), (0.336, "rate"), (0.042, "rate")]] == [
        "1,204",
        "34%",
        "4.2%",
    ]
    assert [value_text(s, "seconds") for s in (45, 600, 11100, 183600)] == [
        "45 s",
        "10 min",
        "3 h 5 min",
        "2 d 3 h",
    ]
    assert value_text(None, "count") == "—"
