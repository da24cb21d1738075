"""Journey versions and lifecycle: an edit applies to new enrollments while running ones keep
their version until moved explicitly; stop says what it cancels, resume after stop plans again
(skipping what fell due meanwhile), and one patient's enrollment can be called off."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from hub.audit import Actor, AuditEvent
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel
from hub.inbox import actions
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys import reporting
from hub.journeys.cohort import launch
from hub.journeys.definitions import JourneyInvalid
from hub.journeys.dispatch import do_prepare_batch, providers_for
from hub.journeys.lifecycle import do_cancel_enrollment, do_stop_outlook
from hub.journeys.models import Enrollment, EnrollmentStatus, RunStatus, StepRun
from hub.journeys.versions import do_migrate_enrollments, do_save_journey, do_versions
from hub.templates.actions import do_seed_templates

NY = ZoneInfo("America/New_York")
SYSTEM = Actor.system("test")
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
VISIT = datetime(2026, 11, 27, 10, 0, tzinfo=NY)

V1 = """\
key: versioned
name: Versioned reminders
purpose: reminders
anchor: appointment_start
steps:
  - id: email_72h
    offset: -72h
    template: appointment_reminder
    channel: email
    asks: confirmation
"""
V2 = """\
key: versioned
name: Versioned reminders
purpose: reminders
anchor: appointment_start
steps:
  - id: sms_48h
    offset: -48h
    template: appointment_reminder
    channel: sms
    asks: confirmation
  - id: sms_2h
    offset: -2h
    template: appointment_reminder_today
    channel: sms
    asks: cancellation
"""


@pytest.fixture(autouse=True)
def fixed_today(set_clock: Any) -> None:
    set_clock(NOW)


async def _patient(db: Database, ring: KeyRing, n: int) -> uuid.UUID:
    return await actions.do_create_patient(
        db,
        ring,
        SYSTEM,
        NewPatient(
            name=f"Sample {n}",
            phone=f"+1555010{n:04d}"[:12],
            email=f"sample{n}@example.org",
            time_zone="America/New_York",
            channel_order=["sms", "email"],
        ),
        region="US",
    )


async def _enroll(db: Database, ring: KeyRing, patient: uuid.UUID, appt: str) -> uuid.UUID:
    result = await journeys.do_enroll(
        db,
        SYSTEM,
        "versioned",
        patient,
        appointment=journeys.NewAppointment(appt, VISIT, location="Room 2", provider="Dr. Demo"),
        now=NOW,
        ring=ring,
    )
    return result.enrollment_id


async def _runs(db: Database, enrollment_id: uuid.UUID) -> dict[str, StepRun]:
    async with db.reader() as session:
        stmt = select(StepRun).where(StepRun.enrollment_id == enrollment_id)
        return {r.step_id: r for r in (await session.scalars(stmt)).all()}


@pytest.fixture
async def two_patients(db: Database, ring: KeyRing) -> tuple[uuid.UUID, uuid.UUID]:
    await do_seed_templates(db)
    await do_save_journey(db, SYSTEM, V1, "versioned.yaml")
    return await _patient(db, ring, 101), await _patient(db, ring, 102)


async def test_an_edit_applies_to_new_enrollments_and_running_ones_keep_theirs(
    db: Database, ring: KeyRing, two_patients: tuple[uuid.UUID, uuid.UUID]
) -> None:
    first, second = two_patients
    old = await _enroll(db, ring, first, "appt-1")
    saved = await do_save_journey(db, SYSTEM, V2, "builder")
    assert (saved.version, saved.changed) == (2, True)
    again = await do_save_journey(db, SYSTEM, V2, "builder")
    assert (again.version, again.changed) == (2, False)  # the same text is no new version
    new = await _enroll(db, ring, second, "appt-2")
    assert set(await _runs(db, old)) == {"email_72h"}
    assert set(await _runs(db, new)) == {"sms_48h", "sms_2h"}
    journey, rows, text = await do_versions(db, "versioned")
    assert text == V2 and journey.version == 2
    # The funnel still shows the step only version 1 has, while an enrollment runs it.
    funnel = await reporting.do_funnel(db, "versioned")
    assert [(s.step_id, s.counts["enrolled"]) for s in funnel.steps] == [
        ("sms_48h", 1),
        ("sms_2h", 1),
        ("email_72h", 1),
    ]
    assert [(r.version, r.current, r.active) for r in rows] == [(2, True, 1), (1, False, 1)]

    # The old enrollment's step is dispatched with the version it was enrolled under.
    at = datetime(2026, 11, 24, 10, 0, tzinfo=NY)
    claimed = await journeys.do_claim_due(db, now=at)
    prepared = await do_prepare_batch(
        db,
        ring,
        claimed,
        providers=providers_for({Channel.SMS, Channel.EMAIL}, {}),
        clinic={"name": "Demo Clinic", "phone": "+15550109999"},
        public_url="https://hub.example.org",
        now=at,
    )
    assert [r.outcome for r in prepared.results] == ["sending"]
    assert (await _runs(db, old))["email_72h"].status is RunStatus.SENT


async def test_moving_running_enrollments_to_the_current_version(
    db: Database, ring: KeyRing, two_patients: tuple[uuid.UUID, uuid.UUID]
) -> None:
    first, _ = two_patients
    old = await _enroll(db, ring, first, "appt-1")
    await do_save_journey(db, SYSTEM, V2, "builder")
    moved = await do_migrate_enrollments(db, SYSTEM, "versioned", now=NOW)
    assert (moved.moved, moved.added, moved.cancelled) == (1, 2, 1)
    runs = await _runs(db, old)
    assert runs["email_72h"].status is RunStatus.CANCELLED
    assert runs["email_72h"].reason == "the step was removed in version 2"
    assert runs["sms_48h"].status is RunStatus.PLANNED
    assert runs["sms_48h"].due_at == datetime(2026, 11, 25, 10, 0, tzinfo=NY)
    async with db.reader() as session:
        assert (await session.get(Enrollment, old)).version is None  # type: ignore[union-attr]
    _, rows, _ = await do_versions(db, "versioned")
    assert [(r.version, r.active) for r in rows] == [(2, 1), (1, 0)]
    assert (await do_migrate_enrollments(db, SYSTEM, "versioned", now=NOW)).moved == 0


async def test_an_invalid_edit_or_another_key_is_refused_and_nothing_changes(
    db: Database, two_patients: tuple[uuid.UUID, uuid.UUID]
) -> None:
    with pytest.raises(JourneyInvalid, match=r"steps\[0\]\.template: no template \"nope\""):
        await do_save_journey(db, SYSTEM, V2.replace("appointment_reminder\n", "nope\n"), "b")
    with pytest.raises(JourneyInvalid, match="a key cannot change"):
        await do_save_journey(
            db, SYSTEM, V2.replace("key: versioned", "key: other"), "b", expected_key="versioned"
        )
    journey, rows, _ = await do_versions(db, "versioned")
    assert journey.version == 1 and len(rows) == 1


async def test_stop_says_what_it_cancels_and_resume_after_stop_plans_again(
    db: Database, ring: KeyRing, two_patients: tuple[uuid.UUID, uuid.UUID]
) -> None:
    await do_save_journey(db, SYSTEM, V2, "builder")
    enrollments = [await _enroll(db, ring, p, f"appt-{p}") for p in two_patients]
    outlook = await do_stop_outlook(db, "versioned")
    assert (outlook.messages, outlook.patients) == (4, 2)
    assert outlook.sentence.startswith("Stopping cancels 4 scheduled messages for 2 patients.")
    await journeys.do_set_journey_status(db, SYSTEM, "versioned", "stopped", now=NOW)
    assert (await do_stop_outlook(db, "versioned")).messages == 0
    assert {r.status for r in (await _runs(db, enrollments[0])).values()} == {RunStatus.CANCELLED}
    with pytest.raises(ValueError, match="resume it first"):
        await journeys.do_set_journey_status(db, SYSTEM, "versioned", "paused")
    # Resumed after the 48-hour text fell due: it is skipped, the 2-hour one planned again.
    later = datetime(2026, 11, 26, 12, tzinfo=UTC)
    await journeys.do_set_journey_status(db, SYSTEM, "versioned", "active", now=later)
    runs = await _runs(db, enrollments[0])
    assert (runs["sms_48h"].status, runs["sms_48h"].reason) == (
        RunStatus.SKIPPED,
        "due while the journey was stopped",
    )
    assert runs["sms_2h"].status is RunStatus.PLANNED
    async with db.reader() as session:
        statuses = {e.status for e in (await session.scalars(select(Enrollment))).all()}
    assert statuses == {EnrollmentStatus.ACTIVE}


async def test_cancel_one_patients_enrollment(
    db: Database, ring: KeyRing, two_patients: tuple[uuid.UUID, uuid.UUID]
) -> None:
    first, second = two_patients
    mine = await _enroll(db, ring, first, "appt-1")
    other = await _enroll(db, ring, second, "appt-2")
    assert await do_cancel_enrollment(db, SYSTEM, "versioned", mine) == 1
    assert await do_cancel_enrollment(db, SYSTEM, "versioned", mine) == 0
    assert (await _runs(db, mine))["email_72h"].reason == "cancelled by staff"
    assert (await _runs(db, other))["email_72h"].status is RunStatus.PLANNED
    async with db.reader() as session:
        event = (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.action == "journey.enrollment.cancel")
            )
        ).one()
    assert event.subject_id == str(first)


async def test_a_cohort_file_moves_a_pinned_enrollment_with_its_own_version(
    db: Database, ring: KeyRing, two_patients: tuple[uuid.UUID, uuid.UUID]
) -> None:
    def csv(start: datetime) -> io.StringIO:
        text = (
            "phone,name,time_zone,appointment_id,appointment_start\n"
            f"+15550100107,Sample 7,America/New_York,appt-7,{start.isoformat()}\n"
        )
        return io.StringIO(text, newline="")

    first = await launch(db, ring, SYSTEM, "versioned", csv(VISIT), region="US", now=NOW)
    assert first.enrolled == 1
    await do_save_journey(db, SYSTEM, V2, "builder")  # version 2 has no email_72h
    moved = VISIT + timedelta(days=2)
    await launch(db, ring, SYSTEM, "versioned", csv(moved), region="US", now=NOW)
    async with db.reader() as session:
        [run] = (await session.scalars(select(StepRun))).all()
    # The reminder of version 1 moved with the appointment, three days before the new time.
    assert (run.step_id, run.status) == ("email_72h", RunStatus.PLANNED)
    assert run.due_at == datetime(2026, 11, 26, 10, 0, tzinfo=NY)
