"""The Reports page in a real browser, on a week of history made through the real actions with
the clock set to each moment (patients writing, staff replying and resolving, reminders sent
and answered, appointments reported): every report opens, its headline figures on screen equal
a recount done here from the raw rows, filters swap the report in place and stay in the
address, the phone layout fits 390 px, axe-core finds nothing serious, and times are in the
reader's zone. Screenshots go to docs/screenshots (rewritten only with HUB_UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import os
import re
import statistics
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from hub.audit import Actor
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, ConversationStatus, Direction, MessageStatus
from hub.inbox import actions
from hub.inbox.actions.conversations import do_set_status
from hub.inbox.event_models import ConversationEvent, StatusEvent
from hub.inbox.models import Conversation, Message, StaffUser, Team
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.models import AppointmentStatus
from hub.reports.facts_actions import do_rebuild_facts
from hub.reports.registry import REPORTS
from hub.reports.run_facts_actions import do_rebuild_run_facts
from hub.templates.actions import do_seed_templates
from tests.browser import assert_accessible, sign_in_page
from tests.conftest import make_staff
from tests.staff_helpers import PASSWORD
from tests.test_journeys_web import dispatch, phone, provider_says, text_in
from web.app import create_app

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_redis")]

SYSTEM = Actor.system("test")
ADMIN = "ada.reports@demo-clinic.example.org"
NY = ZoneInfo("America/New_York")
READER_ZONE = "America/Chicago"
FIRST, LAST = date(2026, 11, 2), date(2026, 11, 8)
"""The week on screen, in the clinic's zone; the trend compares it with Oct 26 .. Nov 1."""
QUERY = f"start={FIRST.isoformat()}&end={LAST.isoformat()}"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
REMINDERS = """\
key: week_reminders
name: Visit reminders
purpose: reminders
anchor: appointment_start
steps:
  - {id: sms_24h, offset: -24h, template: appointment_reminder, channel: sms,
     asks: confirmation, conditions: [skip_if_confirmed]}
"""


def ny(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=NY)


@dataclass(frozen=True)
class Step:
    at: datetime
    patient: int
    what: str
    """"in" (the patient writes), "reply" (a person answers) or "resolve"."""


INBOX = [
    Step(ny(11, 2, 9, 0), 1, "in"),
    Step(ny(11, 2, 9, 5), 1, "in"),
    Step(ny(11, 2, 9, 10), 1, "reply"),
    Step(ny(11, 3, 14, 30), 2, "in"),
    Step(ny(11, 3, 15, 10), 2, "reply"),
    Step(ny(11, 3, 15, 20), 2, "resolve"),
    Step(ny(11, 5, 23, 50), 3, "in"),
    Step(ny(11, 6, 2, 50), 3, "reply"),  # three hours, across midnight
    Step(ny(11, 8, 23, 30), 4, "in"),  # Nov 9 in UTC, the week's last day in New York
    Step(ny(11, 1, 12, 0), 5, "in"),  # the week before
    Step(ny(11, 1, 12, 20), 5, "reply"),
    Step(ny(11, 9, 0, 10), 6, "in"),  # after the week
]


@dataclass(frozen=True)
class Visit:
    start: datetime
    status: AppointmentStatus | None


VISITS = [
    Visit(ny(11, 2, 0, 30), AppointmentStatus.FULFILLED),
    Visit(ny(11, 4, 10, 0), AppointmentStatus.NOSHOW),
    Visit(ny(11, 8, 23, 30), AppointmentStatus.FULFILLED),
    Visit(ny(11, 1, 23, 30), AppointmentStatus.NOSHOW),  # the week before
    Visit(ny(11, 9, 0, 30), AppointmentStatus.NOSHOW),  # after the week
]
REMINDED_START = ny(11, 5, 12, 0)
"""Four patients' appointments, reminded 24 h before (noon in New York, outside quiet hours)."""
REMINDER_OUTCOMES = ["delivered", "delivered", "delivered", "undelivered"]


def in_week(moment: datetime) -> bool:
    return FIRST <= moment.astimezone(NY).date() <= LAST


async def seed(db: Database, ring: KeyRing, set_clock: Callable[[datetime], None]) -> None:
    admin = await make_staff(db, ADMIN, role="admin", teams=("Front desk",))
    async with db.transaction() as session:
        team = (await session.scalars(select(Team).where(Team.name == "Front desk"))).one()
        team.time_zone, team.is_default = "America/New_York", True
        await session.execute(
            update(StaffUser).where(StaffUser.email == ADMIN).values(time_zone=READER_ZONE)
        )
    await do_seed_templates(db)
    await journeys.do_install_journey(db, SYSTEM, REMINDERS, "week_reminders.yaml")

    patients: dict[int, uuid.UUID] = {}
    for step in sorted(INBOX, key=lambda s: s.at):
        set_clock(step.at.astimezone(UTC))
        if step.patient not in patients:
            patients[step.patient] = await actions.do_create_patient(
                db,
                ring,
                SYSTEM,
                NewPatient(name=f"Robin Example{step.patient}", phone=f"+1555010030{step.patient}"),
                region="US",
            )
        if step.what == "in":
            await actions.do_record_inbound(
                db, ring, patients[step.patient], Channel.SMS, "Can I move my visit?"
            )
            continue
        async with db.reader() as session:
            cid = (
                await session.scalars(
                    select(Conversation.id).where(Conversation.patient_id == patients[step.patient])
                )
            ).one()
        if step.what == "reply":
            await actions.do_reply(db, ring, admin, cid, "Yes, we can.")
        else:
            await do_set_status(db, admin, cid, ConversationStatus.RESOLVED)

    set_clock(ny(10, 20, 9).astimezone(UTC))
    for n, visit in enumerate(VISITS):
        pid = await actions.do_create_patient(
            db,
            ring,
            SYSTEM,
            NewPatient(name=f"Sam Example{n}", phone=f"+1555010040{n}"),
            region="US",
        )
        await journeys.do_enroll(
            db,
            SYSTEM,
            "week_reminders",
            pid,
            appointment=journeys.NewAppointment(f"v-{n}", visit.start, status=visit.status),
            now=visit.start - timedelta(hours=12),  # too late for the 24 h reminder
            ring=ring,
        )
    set_clock(ny(11, 1, 10).astimezone(UTC))
    for n in range(1, 5):
        pid = await actions.do_create_patient(
            db,
            ring,
            SYSTEM,
            NewPatient(name=f"Kim Example{n}", phone=phone(n), time_zone="America/New_York"),
            region="US",
        )
        await journeys.do_enroll(
            db,
            SYSTEM,
            "week_reminders",
            pid,
            appointment=journeys.NewAppointment(f"r-{n}", REMINDED_START),
            ring=ring,
        )
    due = (REMINDED_START - timedelta(hours=24)).astimezone(UTC)
    set_clock(due)
    tasks = await dispatch(db, ring, due)
    by_phone = {t.outbound.to_address: t for t in tasks.values()}
    for n, outcome in enumerate(REMINDER_OUTCOMES, start=1):
        code = "30007" if outcome == "undelivered" else ""
        await provider_says(db, by_phone[phone(n)], MessageStatus(outcome), code)
    set_clock(due + timedelta(minutes=30))
    await text_in(db, ring, 1, "C")
    set_clock(datetime.now(UTC))
    # What the tick does every second: bring the rollups the reports read up to date.
    await do_rebuild_facts(db)
    await do_rebuild_run_facts(db)


async def inbox_recount(db: Database) -> dict[str, Any]:
    """The inbox figures of the week, from the message and conversation rows."""
    async with db.reader() as session:
        messages = (
            await session.execute(
                select(
                    Message.conversation_id,
                    Message.created_at,
                    Message.direction,
                    Message.author_id,
                ).order_by(Message.created_at)
            )
        ).all()
        status = dict((await session.execute(select(Conversation.id, Conversation.status))).all())
        resolutions = (
            await session.execute(
                select(ConversationEvent.conversation_id, ConversationEvent.at)
                .where(ConversationEvent.kind == StatusEvent.RESOLVED)
                .order_by(ConversationEvent.at)
            )
        ).all()
    first_in: dict[uuid.UUID, datetime] = {}
    sends: dict[uuid.UUID, list[datetime]] = {}
    incoming = 0
    for cid, at, direction, author in messages:
        at = _utc(at)
        if direction is Direction.INBOUND:
            first_in.setdefault(cid, at)
            incoming += in_week(at)
        elif author is not None:
            sends.setdefault(cid, []).append(at)
    opened = [cid for cid, at in first_in.items() if in_week(at)]
    # Resolved in the week: the first resolution at or after the patient's first message.
    first_resolved: dict[uuid.UUID, datetime] = {}
    for cid, at in resolutions:
        if cid in first_in and _utc(at) >= first_in[cid]:
            first_resolved.setdefault(cid, _utc(at))
    resolved = sum(in_week(at) for at in first_resolved.values())
    waits, unanswered = [], 0
    for cid in opened:
        reply = next((s for s in sends.get(cid, []) if s >= first_in[cid]), None)
        if reply is not None:
            waits.append((reply - first_in[cid]).total_seconds())
        elif status[cid] is not ConversationStatus.RESOLVED:
            unanswered += 1
    before = [
        cid
        for cid, at in first_in.items()
        if FIRST - timedelta(days=7) <= at.astimezone(NY).date() < FIRST
    ]
    return {
        "opened": len(opened),
        "opened_before": len(before),
        "incoming": incoming,
        "median": statistics.median(waits),
        "answered": len(waits),
        "unanswered": unanswered,
        "resolved": resolved,
    }


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)  # SQLite gives naive UTC back


async def figure(page: Any, key: str) -> str:
    return str(await page.inner_text(f'[data-figure="{key}"] [data-field="value"]')).strip()


async def trend(page: Any, key: str) -> str:
    return str(await page.inner_text(f'[data-figure="{key}"] [data-field="trend"]')).strip()


async def shot(page: Any, name: str) -> None:
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        await page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


async def test_each_report_shows_the_recounted_figures(
    fresh_db_url: str,
    settings: Settings,
    aiohttp_server: Any,
    browser: Any,
    set_clock: Callable[[datetime], None],
) -> None:
    db = Database.connect(fresh_db_url)
    ring = settings.key_ring()
    try:
        await seed(db, ring, set_clock)
        app_settings = replace(settings, database_url=fresh_db_url, public_url="http://127.0.0.1")
        server = await aiohttp_server(create_app(app_settings))
        url = str(server.make_url("")).rstrip("/")
        inbox = await inbox_recount(db)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await sign_in_page(page, url, ADMIN, PASSWORD)

        # Volume: what came in, with the week before as the trend.
        await page.goto(f"{url}/reports/volume?{QUERY}")
        assert inbox["opened"] >= 4 and inbox["opened_before"] == 1
        assert await figure(page, "opened") == str(inbox["opened"])
        up = round((inbox["opened"] - inbox["opened_before"]) / inbox["opened_before"] * 100)
        assert await trend(page, "opened") == f"▲ up {up}% on the previous 7 days (1)"
        assert await figure(page, "incoming_messages") == str(inbox["incoming"])
        assert await figure(page, "resolved") == str(inbox["resolved"]) == "1"
        heat = page.locator('[data-series="incoming_heatmap"] svg[role="img"]')
        assert "Busiest:" in str(await heat.locator("desc").text_content())
        period = await page.inner_text('[data-field="period"]')
        assert "Nov 2, 2026 to Nov 8, 2026 (7 days, days in America/New_York)" in period
        # "as of" is written in the reader's zone (Chicago: CST in November), not the clinic's.
        assert re.search(r"Figures as of \w{3} \w{3} \d+ 2026, \d\d:\d\d CST", period), period
        await assert_accessible(page)
        await shot(page, "reports-volume-wide.png")

        # Response times: the median of the answered conversations' waits.
        await page.goto(f"{url}/reports/responses?{QUERY}")
        assert inbox["answered"] == 3
        assert await figure(page, "opened") == str(inbox["opened"])
        assert await figure(page, "first_response_median") == f"{int(inbox['median'] // 60)} min"
        assert await figure(page, "not_answered_yet") == str(inbox["unanswered"])
        await assert_accessible(page)

        # A filter swaps the report in place, and the address keeps it.
        await page.evaluate("() => { window.stillHere = true; }")
        await page.select_option("#f-channel", "email")
        await page.get_by_role("button", name="Show").click()
        await page.wait_for_url(re.compile(r"channel=email"))
        await page.locator('[data-figure="opened"]').wait_for()
        assert await figure(page, "opened") == "0"  # every conversation here is SMS
        assert await page.evaluate("() => window.stillHere === true")
        await page.get_by_role("link", name="Last 7 days").click()
        await page.wait_for_url(re.compile(r"period=last7"))
        assert "channel=email" in page.url and await page.evaluate("() => window.stillHere")

        # Journeys and delivery: four reminders, three delivered, one confirmed.
        sent = len(REMINDER_OUTCOMES)
        delivered = REMINDER_OUTCOMES.count("delivered")
        await page.goto(f"{url}/reports/journeys?{QUERY}")
        assert await figure(page, "reached") == str(sent)
        assert await figure(page, "delivered") == str(delivered)
        assert await figure(page, "confirmed") == "1"
        assert await figure(page, "confirmation_rate") == f"{round(100 / sent)}%"
        await assert_accessible(page)
        await page.goto(f"{url}/reports/delivery?{QUERY}")
        assert await figure(page, "handed_over") == str(sent)
        assert await figure(page, "delivered") == str(delivered)
        assert await figure(page, "failed") == str(sent - delivered)
        assert await figure(page, "delivery_rate") == f"{round(100 * delivered / sent)}%"
        assert "30007" in await page.inner_text("#report-body")
        await assert_accessible(page)

        # Appointments: by the day they start in New York, whatever the UTC date.
        starts = [(v.start, v.status) for v in VISITS] + [(REMINDED_START, None)] * 4
        week = [s for at, s in starts if in_week(at)]
        no_shows = week.count(AppointmentStatus.NOSHOW)
        known = sum(s in (AppointmentStatus.NOSHOW, AppointmentStatus.FULFILLED) for s in week)
        await page.goto(f"{url}/reports/appointments?{QUERY}")
        assert await figure(page, "appointments") == str(len(week)) == "7"
        assert await figure(page, "no_shows") == str(no_shows)
        assert await figure(page, "no_show_rate") == f"{round(100 * no_shows / known)}%"
        assert "observational" in await page.inner_text(".report-notes")
        await assert_accessible(page)
        await shot(page, "reports-appointments-wide.png")

        # Every registered report opens (CSAT: no survey was sent, and it says so).
        for name in REPORTS:
            response = await page.goto(f"{url}/reports/{name}?{QUERY}")
            assert response is not None and response.status == 200, name
        if "csat" in REPORTS:
            await page.goto(f"{url}/reports/csat?{QUERY}")
            assert await figure(page, "sent") == "0"

        # The phone: nothing wider than the screen, charts readable, nothing serious for axe.
        await page.set_viewport_size({"width": 390, "height": 844})
        for name in REPORTS:
            await page.goto(f"{url}/reports/{name}?{QUERY}")
            wide = await page.evaluate("() => document.documentElement.scrollWidth")
            assert wide <= 390, f"{name} is {wide}px wide on a phone"
            await assert_accessible(page)
        await page.goto(f"{url}/reports/volume?{QUERY}")
        await shot(page, "reports-volume-phone.png")
        await page.goto(f"{url}/reports/responses?{QUERY}&print=1")
        assert await page.locator("header.top").count() == 0
        await assert_accessible(page)
        await page.set_viewport_size({"width": 1280, "height": 900})
        await page.emulate_media(media="print")
        await shot(page, "reports-print.png")
        assert errors == []
        await page.close()
    finally:
        set_clock(datetime.now(UTC))
        await db.dispose()
