"""Journeys in the database: idempotent enrollment, planned runs, claims under a lease,
exactly-once dispatch on the consented channel, and replies that confirm, cancel or score."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from hub.audit import Actor, AuditEvent
from hub.channels.base import InboundMessage
from hub.consent import actions as consent
from hub.consent.models import ConsentSource
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, MessageStatus
from hub.inbox import actions
from hub.inbox.models import Message, Note
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.dispatch import Dispatched, PreparedBatch, do_prepare_batch, providers_for
from hub.journeys.models import (
    AppointmentStatus,
    Enrollment,
    EnrollmentStatus,
    RunStatus,
    StepRun,
    SurveyAnswer,
)
from hub.templates.actions import do_seed_templates

NY = ZoneInfo("America/New_York")
SYSTEM = Actor.system("test")
CLINIC = {"name": "Demo Clinic", "phone": "+15550109999"}
CONNECTED = {Channel.SMS, Channel.EMAIL}

REMINDERS = """\
key: test_reminders
name: Test reminders
purpose: reminders
anchor: appointment_start
steps:
  - id: email_72h
    offset: -72h
    template: appointment_reminder
    channel: email
    asks: confirmation
    conditions: [skip_if_confirmed]
  - id: sms_24h
    offset: -24h
    template: appointment_reminder
    channels: [sms, email]
    asks: confirmation
    conditions: [skip_if_confirmed]
"""

SURVEY = """\
key: test_survey
name: Test survey
purpose: surveys
anchor: discharge
steps:
  - id: nps
    offset: +1d
    template: nps_survey
    channels: [sms]
    asks: survey
    survey: {question: nps, scale: 0-10}
"""

VISIT = datetime(2026, 11, 27, 10, 0, tzinfo=NY)  # a Friday 10:00 in New York


@pytest.fixture(autouse=True)
def fixed_today(set_clock: Any) -> None:
    """The dates below are fixed; "now" (an inbound reply's time) is the Friday before them."""
    set_clock(datetime(2026, 11, 20, 12, tzinfo=UTC))


@pytest.fixture
async def setup(db: Database, ring: KeyRing) -> dict[str, Any]:
    await do_seed_templates(db)
    await journeys.do_install_journey(db, SYSTEM, REMINDERS, "test_reminders.yaml")
    await journeys.do_install_journey(db, SYSTEM, SURVEY, "test_survey.yaml")
    patient_id = await actions.do_create_patient(
        db,
        ring,
        SYSTEM,
        NewPatient(
            name="Avery Sample",
            phone="+15550100101",
            email="avery@example.org",
            time_zone="America/New_York",
            channel_order=["sms", "email"],
        ),
        region="US",
    )
    return {"patient_id": patient_id}


def appointment(start: datetime = VISIT, **kw: Any) -> journeys.NewAppointment:
    return journeys.NewAppointment("appt-1001", start, location="Room 2", provider="Dr. Demo", **kw)


async def runs(db: Database) -> dict[str, StepRun]:
    async with db.reader() as session:
        return {r.step_id: r for r in (await session.scalars(select(StepRun))).all()}


async def prepare(
    db: Database, ring: KeyRing, run_ids: list[uuid.UUID], at: datetime
) -> PreparedBatch:
    return await do_prepare_batch(
        db,
        ring,
        run_ids,
        providers=providers_for(CONNECTED, {}),
        clinic=CLINIC,
        public_url="https://hub.example.org",
        now=at,
    )


async def dispatch_due(db: Database, ring: KeyRing, at: datetime) -> list[Dispatched]:
    claimed = await journeys.do_claim_due(db, now=at)
    return list((await prepare(db, ring, claimed, at)).results)


async def test_enrollment_plans_local_times_and_is_idempotent(
    db: Database, ring: KeyRing, setup: dict[str, Any]
) -> None:
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    first = await journeys.do_enroll(
        db,
        SYSTEM,
        "test_reminders",
        setup["patient_id"],
        appointment=appointment(),
        now=now,
        ring=ring,
    )
    again = await journeys.do_enroll(
        db,
        SYSTEM,
        "test_reminders",
        setup["patient_id"],
        appointment=appointment(),
        now=now,
        ring=ring,
    )
    assert first.created and not again.created and first.enrollment_id == again.enrollment_id
    planned = await runs(db)
    assert planned["email_72h"].due_at == datetime(2026, 11, 24, 10, 0, tzinfo=NY)
    assert planned["sms_24h"].due_at == datetime(2026, 11, 26, 10, 0, tzinfo=NY)
    assert {r.status for r in planned.values()} == {RunStatus.PLANNED}


async def test_moved_appointment_moves_pending_steps_and_cancelled_cancels(
    db: Database, ring: KeyRing, setup: dict[str, Any]
) -> None:
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    await journeys.do_enroll(
        db,
        SYSTEM,
        "test_reminders",
        setup["patient_id"],
        appointment=appointment(),
        now=now,
        ring=ring,
    )
    moved = await journeys.do_enroll(
        db,
        SYSTEM,
        "test_reminders",
        setup["patient_id"],
        appointment=appointment(VISIT + timedelta(days=3)),
        now=now,
        ring=ring,
    )
    assert moved.moved == 2
    assert (await runs(db))["sms_24h"].due_at == datetime(2026, 11, 29, 10, 0, tzinfo=NY)
    cancelled = await journeys.do_enroll(
        db,
        SYSTEM,
        "test_reminders",
        setup["patient_id"],
        appointment=appointment(VISIT + timedelta(days=3), cancelled=True),
        now=now,
        ring=ring,
    )
    assert cancelled.cancelled == 2
    assert {r.status for r in (await runs(db)).values()} == {RunStatus.CANCELLED}


async def test_due_steps_go_out_once_on_their_channel(
    db: Database, ring: KeyRing, setup: dict[str, Any]
) -> None:
    await journeys.do_enroll(
        db,
        SYSTEM,
        "test_reminders",
        setup["patient_id"],
        appointment=appointment(),
        now=datetime(2026, 11, 20, tzinfo=UTC),
        ring=ring,
    )
    assert await journeys.do_claim_due(db, now=datetime(2026, 11, 24, 9, 59, tzinfo=NY)) == []
    at = datetime(2026, 11, 24, 10, 0, tzinfo=NY)
    claimed = await journeys.do_claim_due(db, now=at)
    assert len(claimed) == 1
    assert await journeys.do_claim_due(db, now=at) == []  # already claimed, lease running
    first = await prepare(db, ring, claimed, at)
    again = await prepare(db, ring, claimed, at)
    assert [r.outcome for r in first.results] == ["sending"]
    assert [r.outcome for r in again.results] == ["gone"] and again.tasks == ()
    async with db.reader() as session:
        messages = (await session.scalars(select(Message))).all()
    # The batch claimed the message's first attempt in the same commit: it sends it next.
    assert [(m.channel, m.status, m.purpose, m.send_attempts) for m in messages] == [
        (Channel.EMAIL, MessageStatus.SENDING, "reminders", 1)
    ]
    [task] = first.tasks
    assert task.outbound.message_id == messages[0].id and task.outbound.to_address == (
        "avery@example.org"
    )
    assert "Friday" in task.outbound.body == (messages[0].unseal(ring, "body") or "")


async def test_a_batch_that_died_is_taken_over_after_its_lease(
    db: Database, ring: KeyRing, setup: dict[str, Any]
) -> None:
    await journeys.do_enroll(
        db,
        SYSTEM,
        "test_reminders",
        setup["patient_id"],
        appointment=appointment(),
        now=datetime(2026, 11, 20, tzinfo=UTC),
        ring=ring,
    )
    at = datetime(2026, 11, 24, 10, 0, tzinfo=NY)
    claimed = await journeys.do_claim_due(db, now=at)  # ...and this batch never dispatches
    later = at + journeys.CLAIM_LEASE + timedelta(seconds=1)
    assert await journeys.do_claim_due(db, now=later) == claimed


async def test_sms_revoked_goes_by_email_and_all_revoked_fails_with_reasons(
    db: Database, ring: KeyRing, setup: dict[str, Any]
) -> None:
    pid = setup["patient_id"]
    async with db.transaction() as session:
        await consent.revoke_channel(
            session,
            pid,
            Channel.SMS,
            consent.ConsentChange(ConsentSource.KEYWORD, f"patient:{pid}", "STOP"),
        )
    await journeys.do_enroll(
        db,
        SYSTEM,
        "test_reminders",
        pid,
        appointment=appointment(),
        now=datetime(2026, 11, 20, tzinfo=UTC),
        ring=ring,
    )
    await dispatch_due(db, ring, datetime(2026, 11, 26, 10, tzinfo=NY))
    run = (await runs(db))["sms_24h"]
    assert run.status is RunStatus.SENT and run.channel == "email"
    assert run.reason and "sms: refused (opted_out)" in run.reason

    async with db.transaction() as session:
        await consent.revoke_channel(
            session,
            pid,
            Channel.EMAIL,
            consent.ConsentChange(ConsentSource.UNSUBSCRIBE, f"patient:{pid}", "unsubscribe link"),
        )
    await journeys.do_enroll(
        db,
        SYSTEM,
        "test_reminders",
        pid,
        appointment=journeys.NewAppointment("appt-2002", VISIT + timedelta(days=7)),
        now=datetime(2026, 11, 20, tzinfo=UTC),
        ring=ring,
    )
    results = await dispatch_due(db, ring, datetime(2026, 12, 3, 10, tzinfo=NY))
    failed = [d for d in results if d.outcome == "failed"]
    assert len(failed) == 2
    assert all("no channel in the patient's order may be used" in (d.reason or "") for d in failed)
    assert any("email: refused (opted_out)" in (d.reason or "") for d in failed)


def inbound(body: str) -> InboundMessage:
    return InboundMessage(
        provider="twilio_sms",
        provider_message_id="SM" + uuid.uuid4().hex,
        channel=Channel.SMS,
        from_address="+15550100101",
        to_address="+15550109999",
        body=body,
    )


async def test_c_by_sms_confirms_and_skips_the_remaining_asks(
    db: Database, ring: KeyRing, setup: dict[str, Any]
) -> None:
    pid = setup["patient_id"]
    await journeys.do_enroll(
        db,
        SYSTEM,
        "test_reminders",
        pid,
        appointment=appointment(),
        now=datetime(2026, 11, 20, tzinfo=UTC),
        ring=ring,
    )
    await dispatch_due(db, ring, datetime(2026, 11, 24, 10, tzinfo=NY))  # the email asks
    await actions.do_receive_inbound(db, ring, inbound("C"), {}, help_text="help")
    async with db.reader() as session:
        enrollment = (await session.scalars(select(Enrollment))).one()
    assert enrollment.confirmed_at is not None
    # The remaining ask is cancelled at once (and says why), not merely skipped when due.
    sms = (await runs(db))["sms_24h"]
    assert (sms.status, sms.reason) == (RunStatus.CANCELLED, "the patient confirmed")
    assert await dispatch_due(db, ring, datetime(2026, 11, 26, 10, tzinfo=NY)) == []


async def test_2_by_sms_cancels_and_tells_staff(
    db: Database, ring: KeyRing, setup: dict[str, Any]
) -> None:
    pid = setup["patient_id"]
    await journeys.do_enroll(
        db,
        SYSTEM,
        "test_reminders",
        pid,
        appointment=appointment(),
        now=datetime(2026, 11, 20, tzinfo=UTC),
        ring=ring,
    )
    await dispatch_due(db, ring, datetime(2026, 11, 24, 10, tzinfo=NY))
    await actions.do_receive_inbound(db, ring, inbound(" 2 "), {}, help_text="help")
    async with db.reader() as session:
        enrollment = (await session.scalars(select(Enrollment))).one()
        from hub.journeys.models import Appointment

        appt = (await session.scalars(select(Appointment))).one()
        notes = (await session.scalars(select(Note))).all()
    assert enrollment.status is EnrollmentStatus.CANCELLED
    assert appt.status is AppointmentStatus.CANCELLED
    assert (await runs(db))["sms_24h"].status is RunStatus.CANCELLED
    assert "cancelled their appointment" in (notes[0].unseal(ring, "body") or "")


async def test_survey_score_is_stored_once(
    db: Database, ring: KeyRing, setup: dict[str, Any]
) -> None:
    pid = setup["patient_id"]
    discharge = datetime(2026, 11, 18, 15, tzinfo=NY)
    from hub.consent.models import ConsentState, Purpose

    async with db.transaction() as session:  # surveys need an explicit opt-in
        change = consent.ConsentChange(ConsentSource.STAFF, "staff:x", "asked in person")
        session.add(
            change.record(pid, Channel.SMS, Purpose.SURVEYS, ConsentState.GRANTED, discharge)
        )
    await journeys.do_enroll(
        db, SYSTEM, "test_survey", pid, anchor_at=discharge, now=discharge, ring=ring
    )
    sent = await dispatch_due(db, ring, datetime(2026, 11, 19, 15, tzinfo=NY))
    assert [d.outcome for d in sent] == ["sending"], [d.reason for d in sent]
    await actions.do_receive_inbound(db, ring, inbound("9"), {}, help_text="help")
    await actions.do_receive_inbound(db, ring, inbound("10"), {}, help_text="help")
    async with db.reader() as session:
        answers = (await session.scalars(select(SurveyAnswer))).all()
    assert [(a.step_id, a.score) for a in answers] == [("nps", 9)]


async def test_only_if_no_reply_skips_after_the_patient_wrote(
    db: Database, ring: KeyRing, setup: dict[str, Any]
) -> None:
    recall = """\
key: test_recall
name: Recall
purpose: care
anchor: enrollment
steps:
  - id: first
    offset: +0h
    template: screening_recall
    channels: [sms]
  - id: nudge
    offset: +14d
    template: screening_recall
    channels: [sms]
    conditions: [only_if_no_reply]
"""
    await journeys.do_install_journey(db, SYSTEM, recall, "recall.yaml")
    start = datetime.now(UTC).replace(microsecond=0)
    await journeys.do_enroll(
        db,
        SYSTEM,
        "test_recall",
        setup["patient_id"],
        anchor_at=start,
        now=start,
        ring=ring,
    )
    await dispatch_due(db, ring, start)
    await actions.do_receive_inbound(
        db, ring, inbound("I'll call you Monday"), {}, help_text="help"
    )
    await dispatch_due(db, ring, start + timedelta(days=15))
    nudge = (await runs(db))["nudge"]
    assert nudge.status is RunStatus.SKIPPED
    assert nudge.reason == "the patient has replied since enrolling"


async def test_coordinators_enroll_by_api_watch_the_funnel_and_stop(
    db: Database,
    ring: KeyRing,
    setup: dict[str, Any],
    settings: Any,
    aiohttp_client: Any,
    fresh_redis: None,
) -> None:
    from dataclasses import replace

    from tests.conftest import make_staff
    from tests.staff_helpers import csrf_of, sign_in
    from web.app import create_app

    client = await aiohttp_client(
        create_app(replace(settings, public_url="http://127.0.0.1"), db=db)
    )
    await make_staff(db, "cole.coord@demo-clinic.example.org", role="coordinator")
    await make_staff(db, "alex.agent@demo-clinic.example.org", role="agent")
    await sign_in(client, "alex.agent@demo-clinic.example.org")
    assert (await client.get("/journeys")).status == 404  # agents do not run journeys
    await client.post("/logout", data={"csrf_token": await csrf_of(client)})

    await sign_in(client, "cole.coord@demo-clinic.example.org")
    csrf = await csrf_of(client, "/journeys")
    body = {
        "patient": {"phone": "+1 555 010 0101"},
        "appointment": {"id": "appt-77", "start": "2026-12-02T09:00:00-05:00"},
    }
    first = await client.post(
        "/api/journeys/test_reminders/enrollments", json=body, headers={"X-CSRF-Token": csrf}
    )
    again = await client.post(
        "/api/journeys/test_reminders/enrollments", json=body, headers={"X-CSRF-Token": csrf}
    )
    assert (first.status, again.status) == (201, 200)
    funnel = await (await client.get("/api/journeys/test_reminders/funnel")).json()
    assert funnel["enrollments"]["enrolled"] == 1
    assert [s["runs"] for s in funnel["steps"]] == [{"planned": 1}, {"planned": 1}]
    page = await (await client.get("/journeys")).text()
    assert "Test reminders" in page and "1 enrolled" in page

    stopped = await client.post(
        "/journeys/test_reminders/status", data={"csrf_token": csrf, "status": "stopped"}
    )
    assert stopped.status == 200
    funnel = await (await client.get("/api/journeys/test_reminders/funnel")).json()
    assert funnel["status"] == "stopped"
    assert [s["runs"] for s in funnel["steps"]] == [{"cancelled": 1}, {"cancelled": 1}]
    assert await journeys.do_claim_due(db, now=datetime(2027, 1, 1, tzinfo=UTC)) == []


async def test_survey_report_and_csv(
    db: Database,
    ring: KeyRing,
    setup: dict[str, Any],
    settings: Any,
    aiohttp_client: Any,
    fresh_redis: None,
    set_clock: Any,
) -> None:
    from dataclasses import replace

    from hub.consent.models import ConsentState, Purpose
    from tests.conftest import make_staff
    from tests.staff_helpers import sign_in
    from web.app import create_app

    set_clock(datetime(2026, 11, 20, 17, tzinfo=UTC))  # noon in New York: the survey goes now
    pid = setup["patient_id"]
    discharge = utcnow().replace(microsecond=0) - timedelta(days=1, minutes=5)
    async with db.transaction() as session:
        change = consent.ConsentChange(ConsentSource.STAFF, "staff:x", "asked in person")
        session.add(
            change.record(pid, Channel.SMS, Purpose.SURVEYS, ConsentState.GRANTED, discharge)
        )
    await journeys.do_enroll(
        db, SYSTEM, "test_survey", pid, anchor_at=discharge, now=discharge, ring=ring
    )
    await dispatch_due(db, ring, utcnow())
    await actions.do_receive_inbound(db, ring, inbound("6"), {}, help_text="help")

    client = await aiohttp_client(
        create_app(replace(settings, public_url="http://127.0.0.1"), db=db)
    )
    await make_staff(db, "cole.coord@demo-clinic.example.org", role="coordinator")
    await sign_in(client, "cole.coord@demo-clinic.example.org")
    report = await (await client.get("/api/journeys/test_survey/survey")).json()
    [question] = report["questions"]
    assert (question["asked"], question["answered"], question["response_rate"]) == (1, 1, 1.0)
    assert question["distribution"] == {"6": 1} and question["nps"] == -100.0
    csv_text = await (await client.get("/api/journeys/test_survey/survey.csv")).text()
    lines = csv_text.strip().splitlines()
    assert lines[0] == "journey,question,score,answered_at,enrollment_id"
    assert lines[1].startswith("test_survey,nps,6,")
    assert "Avery" not in csv_text and "5550100101" not in csv_text
    async with db.reader() as session:  # the download, not the JSON view, is an export
        [export] = await session.scalars(
            select(AuditEvent).where(AuditEvent.action.like("%export"))
        )
    assert (export.action, export.subject_id, export.detail["rows"]) == (
        "survey.export",
        "test_survey",
        1,
    )
    assert export.actor.startswith("staff:")
    bad = await client.get("/api/journeys/test_survey/survey?from=yesterday")
    assert bad.status == 400
