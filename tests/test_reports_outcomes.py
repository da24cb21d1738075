"""The patient outcome reports (journeys, appointments, delivery) over one known week: ten
synthetic patients reminded (or not) through the real dispatch, provider answers, replies (C,
2, STOP), a bounce and a spam complaint, and the clinic's feed reporting outcomes. Every figure
is checked twice: against the number this history must give, and against a recount in plain
Python over every row of the raw tables (tests/outcome_recount.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hub.channels.email_smtp.sender_auth import SenderCheck
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import MessageStatus, Role
from hub.inbox.access import StaffContext
from hub.inbox.actions.email_intake import do_receive_email
from hub.journeys import actions as journeys
from hub.journeys.models import AppointmentStatus
from hub.reports import appointments, delivery
from hub.reports import journeys as journey_report
from hub.reports.base import ReportFilters
from hub.reports.outcome_day_queries import delivery_current, runs_current
from hub.reports.registry import REPORTS
from hub.reports.run_exports import RUN_COLUMNS, journey_run_rows
from tests import outcome_recount as recount
from tests.outcome_helpers import (
    KEY,
    SYSTEM,
    ZONE,
    accepted,
    clinic_team,
    dispatch,
    email,
    install,
    mail_server_refuses,
    patient,
    phone,
    provider_says,
    text_in,
)

NY = ZoneInfo(ZONE)
START = datetime(2026, 12, 3, 14, tzinfo=NY)
"""Every appointment of the week is at this slot (each its own booking)."""
WEEK = ReportFilters(date(2026, 12, 1), date(2026, 12, 7), ZONE)
ADMIN = StaffContext(uuid.uuid4(), Role.ADMIN, frozenset())
ARF = Path(__file__).resolve().parent.parent / "hub/channels/email_smtp/fixtures/automatic"
FIXTURE_ID = "0192f3a0-7c1e-7d2a-9b1c-3f4e5a6b7c8d"
S = AppointmentStatus


def booking(n: int, start: datetime = START, **kw: Any) -> journeys.NewAppointment:
    return journeys.NewAppointment(f"outcome-{n}", start, **kw)


async def enroll(
    db: Database, ring: KeyRing, pid: uuid.UUID, n: int, now: datetime, **kw: Any
) -> None:
    start = kw.pop("start", START)
    await journeys.do_enroll(
        db, SYSTEM, KEY, pid, appointment=booking(n, start, **kw), now=now, ring=ring
    )


@pytest.fixture(params=["day_rollups", "facts"])
async def week(
    db: Database, ring: KeyRing, set_clock: Any, request: pytest.FixtureRequest
) -> dict[str, Any]:
    """The known week (see the module docstring); returns the patients by number. Read from
    the day rollups (the clinic's zone is the filters') or, without a team in that zone, from
    the facts."""
    enrolled = datetime(2026, 11, 20, 12, tzinfo=UTC)
    set_clock(enrolled)
    if request.param == "day_rollups":
        await clinic_team(db)
    await install(db)
    p = {n: await patient(db, ring, n) for n in (1, 2, 3, 4, 5, 6, 7, 10)}
    p[8] = await patient(db, ring, 8, by_phone=False, by_email=True)
    p[9] = await patient(db, ring, 9, by_phone=False, by_email=True)
    p[11] = await patient(db, ring, 11)
    p[12] = await patient(db, ring, 12)
    for n in (1, 2, 3, 4, 5, 6, 8, 9, 10):
        await enroll(db, ring, p[n], n, enrolled)
    # The baseline: October, before the hub (enrolled late, so nothing was sent).
    await enroll(db, ring, p[11], 11, enrolled, start=datetime(2026, 10, 5, 9, tzinfo=NY))
    await enroll(db, ring, p[12], 12, enrolled, start=datetime(2026, 10, 6, 9, tzinfo=NY))
    set_clock(datetime(2026, 11, 21, 15, tzinfo=UTC))
    await text_in(db, ring, 5, "STOP")  # patient 5 opts out of texts before any reminder
    await enroll(db, ring, p[4], 4, datetime(2026, 11, 25, tzinfo=UTC), cancelled=True)
    await enroll(db, ring, p[10], 10, datetime(2026, 12, 1, tzinfo=UTC), status=S.ENTERED_IN_ERROR)

    day_before = START - timedelta(hours=24)
    set_clock(day_before)
    tasks = await dispatch(db, ring, day_before)
    for n in (1, 2, 3):
        await provider_says(db, tasks[phone(n)], MessageStatus.DELIVERED)
    await provider_says(db, tasks[phone(6)], MessageStatus.UNDELIVERED, "30006")
    await accepted(db, tasks[email(8)])
    await mail_server_refuses(db, tasks[email(9)], 550, "5.1.1 no such user")
    set_clock(day_before + timedelta(hours=1))
    await text_in(db, ring, 1, "C")
    set_clock(day_before + timedelta(hours=4))
    await text_in(db, ring, 3, "2")  # 20 hours before the start: a late cancellation
    set_clock(day_before + timedelta(hours=6))
    arf = (ARF / "arf_abuse.eml").read_bytes()
    ours = tasks[email(8)].outbound.message_id
    result = await do_receive_email(
        db,
        ring,
        arf.replace(FIXTURE_ID.encode(), str(ours).encode()),
        reply_domain="reply.demo-clinic.example.org",
        clinic={"name": "Demo Clinic"},
        sender=SenderCheck(True, "dkim_pass"),
    )
    assert result.outcome == "complaint"

    two_hours = START - timedelta(hours=2)
    set_clock(two_hours)
    tasks = await dispatch(db, ring, two_hours)
    await provider_says(db, tasks[phone(2)], MessageStatus.DELIVERED)
    set_clock(START - timedelta(hours=1))
    await enroll(db, ring, p[7], 7, START - timedelta(hours=1))  # enrolled too late

    after = START + timedelta(hours=4)
    set_clock(after)
    for n, outcome in ((1, S.FULFILLED), (2, S.NOSHOW), (5, S.NOSHOW), (6, S.FULFILLED)):
        await enroll(db, ring, p[n], n, after, status=outcome)
    for n, outcome in ((7, S.NOSHOW), (8, S.ARRIVED), (8, S.FULFILLED), (9, S.NOSHOW)):
        await enroll(db, ring, p[n], n, after, status=outcome)
    for n, outcome in ((11, S.NOSHOW), (12, S.FULFILLED)):
        await enroll(
            db,
            ring,
            p[n],
            n,
            after,
            status=outcome,
            start=datetime(2026, 10, 5 + n - 11, 9, tzinfo=NY),
        )
    await recount.refresh_rollups(db)  # what the tick does
    async with db.reader() as session:
        assert await runs_current(session, ZONE) == (request.param == "day_rollups")
        assert await delivery_current(session, ZONE) == (request.param == "day_rollups")
    return p


def same(report: dict[str, Any], counted: dict[str, Any]) -> None:
    for key, value in report.items():
        if key in counted:
            assert value == pytest.approx(counted[key]), key


async def test_appointments_report_equals_the_recount(db: Database, week: dict[str, Any]) -> None:
    await appointments.do_set_baseline(db, SYSTEM, (date(2026, 10, 1), date(2026, 10, 31)))
    report = await REPORTS["appointments"][1](db, WEEK, ADMIN)
    figures = report.figures
    # This week: 9 appointments (the booking entered in error is none), 3 attended (1, 6, 8),
    # 4 no-shows (2, 5, 7, 9), 3 cancelled (3 late by reply, 4 in time by the feed).
    assert figures["appointments"] == 9
    assert (figures["attended"], figures["no_shows"]) == (3, 4)
    assert (figures["cancelled_late"], figures["cancelled_in_time"]) == (1, 1)
    assert figures["slots_freed"] == 1
    # Reminded: 1, 2, 3, 8 (one no-show of three with an outcome); not reminded: 5 opted
    # out, 6 and 9 unreachable, 7 too late, 4 called off (three no-shows of four).
    assert figures["no_show_rate_reminded"] == pytest.approx(1 / 3)
    assert figures["no_show_rate_not_reminded"] == pytest.approx(3 / 4)
    assert figures["no_show_rate_baseline"] == pytest.approx(1 / 2)
    rows = await recount.everything(db)
    counted = recount.appointment_figures(rows, *WEEK.bounds())
    same(figures, counted)
    assert counted["groups"]["reminded"] == {"attended": 2, "no_show": 1, "cancelled": 1}
    assert counted["groups"]["opted_out"] == {"no_show": 1}
    assert counted["groups"]["unreachable"] == {"attended": 1, "no_show": 1}
    assert counted["groups"]["too_late"] == {"no_show": 1}
    assert counted["groups"]["other"] == {"cancelled": 1}
    table = {row[0]: row[1:] for row in report.tables[0].rows}
    assert table["Reminded"] == [4, 2, 1, pytest.approx(1 / 3), 1, 0]
    assert table["Not reminded: unreachable"] == [2, 1, 1, 0.5, 0, 0]
    assert table["Baseline 2026-10-01 to 2026-10-31"][:4] == [2, 1, 1, 0.5]
    assert any("observational" in note for note in report.notes)
    same(report.previous, recount.appointment_figures(rows, *WEEK.previous().bounds()))
    # With a 12-hour threshold the reply 20 hours ahead came in time: two slots freed.
    await appointments.do_set_late_cancel_hours(db, SYSTEM, 12)
    stricter = await REPORTS["appointments"][1](db, WEEK, ADMIN)
    assert (stricter.figures["cancelled_late"], stricter.figures["cancelled_in_time"]) == (0, 2)
    assert stricter.figures == {
        **figures,
        "cancelled_late": 0,
        "cancelled_in_time": 2,
        "slots_freed": 2,
    }


async def test_journeys_report_equals_the_recount(db: Database, week: dict[str, Any]) -> None:
    report = await REPORTS["journeys"][1](db, WEEK, ADMIN)
    rows = await recount.everything(db)
    [journey_id] = {e.journey_id for e in rows["enrollments"]}
    counted = recount.journey_figures(rows, journey_id, *WEEK.bounds())
    total = counted["total"]
    # Sent the day before: 1, 2, 3, 6, 8, 9; delivered 1, 2, 3; 1 confirmed (after an hour),
    # 3 cancelled, 1 and 3 replied, 8 complained (an opt-out); 5, 6 and 9 failed.
    assert counted["steps"]["day_before"] == {
        "sent": 6,
        "delivered": 3,
        "confirmed": 1,
        "cancelled": 1,
        "replied": 2,
        "opted_out": 1,
        "failed": 3,
    }
    assert report.figures == {
        "reached": total["sent"],
        "delivered": total["delivered"],
        "confirmed": total["confirmed"],
        "confirmation_rate": pytest.approx(total["confirmed"] / total["sent"]),
        "cancelled": total["cancelled"],
        "no_reply": total["sent"] - total["replied"],
        "opted_out": total["opted_out"],
        "time_to_confirm_seconds": counted["time_to_confirm"],
    }
    assert report.figures["time_to_confirm_seconds"] == pytest.approx(3600, abs=60)
    steps = {row[1]: row[2:] for row in report.tables[1].rows}
    for step_id, c in counted["steps"].items():
        assert steps[step_id][:7] == [
            c["sent"],
            c["delivered"],
            c["confirmed"],
            c["cancelled"],
            c["sent"] - c["replied"],
            c["opted_out"],
            c["failed"],
        ], step_id
    # By channel: the e-mails alone (8 and 9).
    by_email = await journey_report.build(db, ReportFilters(*_week(), channel="email"), ADMIN)
    assert (by_email.figures["reached"], by_email.figures["opted_out"]) == (2, 1)
    # The week before saw none of it.
    assert report.previous["reached"] == 0 and report.previous["confirmation_rate"] is None


def _week() -> tuple[date, date, str]:
    return WEEK.start, WEEK.end, WEEK.time_zone


async def test_delivery_report_equals_the_recount(db: Database, week: dict[str, Any]) -> None:
    report = await delivery.build(db, WEEK, ADMIN)
    rows = await recount.everything(db)
    counted = recount.delivery_figures(rows, *WEEK.bounds())
    f = report.figures
    # Texts: 4 delivered, 1 to a landline (30006); mail: 1 accepted, 1 refused (550).
    assert (f["delivered"], f["failed"]) == (5, 2)
    assert f["delivery_rate"] == pytest.approx(5 / 7)
    assert (f["emails"], f["email_bounces"], f["email_complaints"]) == (2, 1, 1)
    for key in ("delivered", "failed", "delivery_rate", "not_sent", "emails"):
        assert f[key] == pytest.approx(counted[key]), key
    assert (f["email_bounces"], f["email_complaints"]) == (
        counted["email_bounces"],
        counted["email_complaints"],
    )
    providers = {(r[0], r[1]): r[2:] for r in report.tables[0].rows}
    assert providers == {
        k: [
            sum(v.values()),
            v.get("delivered", 0),
            v.get("failed", 0),
            v.get("pending", 0),
            pytest.approx(v.get("delivered", 0) / (v.get("delivered", 0) + v.get("failed", 0))),
        ]
        for k, v in counted["providers"].items()
    }
    errors = {(r[0], r[1]): (r[2], r[3]) for r in report.tables[1].rows}
    assert {k: n for k, (_, n) in errors.items()} == counted["codes"]
    assert errors[("sms", "30006")][0].startswith("The number is a landline")
    assert errors[("email", "smtp_550")][0].startswith("The mailbox does not exist")
    opt_outs = {r[0]: r[1:] for r in report.tables[2].rows}
    assert opt_outs["Outcome reminders"] == [6, 1, pytest.approx(1 / 6)]
    texts = await delivery.build(db, ReportFilters(*_week(), channel="sms"), ADMIN)
    assert (texts.figures["emails"], texts.figures["email_complaints"]) == (0, 0)


async def test_journey_run_export_has_every_run_of_the_period_and_no_phi(
    db: Database, ring: KeyRing, week: dict[str, Any]
) -> None:
    batches = [b async for b in journey_run_rows(db, WEEK, batch=3)]
    rows = [r for b in batches for r in b]
    assert all(len(b) <= 3 for b in batches) and len(batches) > 2
    low, high = WEEK.bounds()
    raw = await recount.everything(db)
    due = sorted((r.due_at, r.id) for r in raw["runs"] if low <= r.due_at < high)
    assert [row[RUN_COLUMNS.index("run_id")] for row in rows] == [str(i) for _, i in due]
    text = repr(rows)
    for n in range(1, 13):
        assert f"Synthetic Patient {n}" not in text and phone(n) not in text
        assert email(n) not in text
    by_run = {
        row[RUN_COLUMNS.index("run_id")]: dict(zip(RUN_COLUMNS, row, strict=True)) for row in rows
    }
    codes = {r["reason_code"] for r in by_run.values()}
    assert {"30006", "smtp_550", "no_channel", "patient_confirmed"} <= codes
    assert {r["journey"] for r in by_run.values()} == {KEY}
