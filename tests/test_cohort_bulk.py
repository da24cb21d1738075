"""Cohort launches through the bulk path: one transaction per chunk, the meaning of
``do_enroll`` row by row (matching, idempotence, moved and cancelled appointments), bad rows
reported by line while the others are enrolled."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text, update

from hub.audit import Actor, AuditEvent, verify
from hub.crypto import KeyRing
from hub.db import Database
from hub.inbox import actions as inbox
from hub.inbox.models import Patient
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys import bulk_queries
from hub.journeys.cohort import (
    MAX_ROW_ERRORS_KEPT,
    CohortInvalid,
    LaunchReport,
    count_rows,
    launch,
)
from hub.journeys.models import Appointment, Enrollment, RunStatus, StepRun
from tests.conftest import ON_POSTGRES

NY = ZoneInfo("America/New_York")
SYSTEM = Actor.system("test")
KEY = "appointment_reminders"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
HEADER = "name,phone,email,time_zone,appointment_id,appointment_start,status\n"


@pytest.fixture
async def journey(db: Database) -> str:
    shipped = resources.files("hub.journeys").joinpath("examples", f"{KEY}.yaml")
    await journeys.do_install_journey(db, SYSTEM, shipped.read_text(encoding="utf-8"), "shipped")
    return KEY


async def run(
    db: Database, ring: KeyRing, text: str, *, now: datetime = NOW, **options: Any
) -> LaunchReport:
    return await launch(
        db, ring, SYSTEM, KEY, io.StringIO(text, newline=""), region="US", now=now, **options
    )


async def count(db: Database, model: type[Any]) -> int:
    async with db.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def counts(db: Database) -> tuple[int, int, int, int]:
    return (
        await count(db, Patient),
        await count(db, Appointment),
        await count(db, Enrollment),
        await count(db, StepRun),
    )


async def enrollment_of(db: Database, external_id: str) -> tuple[Enrollment, list[StepRun]]:
    async with db.reader() as session:
        enrollment = (
            await session.scalars(
                select(Enrollment)
                .join(Appointment, Appointment.id == Enrollment.appointment_id)
                .where(Appointment.external_id == external_id)
            )
        ).one()
        runs = (
            await session.scalars(
                select(StepRun)
                .where(StepRun.enrollment_id == enrollment.id)
                .order_by(StepRun.step_id)
            )
        ).all()
        return enrollment, list(runs)


async def cohort_audit_events(db: Database) -> list[AuditEvent]:
    async with db.reader() as session:
        stmt = select(AuditEvent).where(AuditEvent.action == "journey.enroll_cohort")
        return list((await session.scalars(stmt.order_by(AuditEvent.seq))).all())


COHORT = (
    HEADER + "Avery Sample,+1 201 555 0101,avery@example.org,America/New_York,A-1,"
    "2026-12-02T09:00:00-05:00,booked\n"
    "Blake Placeholder,(201) 555-0102,,America/Chicago,A-2,2026-12-03T14:30:00-06:00,\n"
    "Casey Fictional,,casey@example.org,UTC,A-3,2026-12-04T10:00:00+00:00,booked\n"
)


async def test_a_relaunch_enrolls_nothing_and_creates_no_patient(
    db: Database, ring: KeyRing, journey: str
) -> None:
    first = await run(db, ring, COHORT)
    assert (first.rows, first.enrolled, first.already, first.patients_created) == (3, 3, 0, 3)
    assert first.errors == [] and first.error_count == 0
    assert await counts(db) == (3, 3, 3, 9)  # three planned steps each

    again = await run(db, ring, COHORT, now=NOW + timedelta(hours=1))
    assert (again.rows, again.enrolled, again.already, again.patients_created) == (3, 0, 3, 0)
    assert await counts(db) == (3, 3, 3, 9)

    # One audit event for the chunk that wrote, naming each created patient and enrollment;
    # the re-launch wrote nothing and audited nothing. The chain still verifies.
    events = await cohort_audit_events(db)
    assert len(events) == 1
    async with db.reader() as session:
        patients = {str(p) for p in (await session.scalars(select(Patient.id))).all()}
        pairs = {
            (str(e), str(p))
            for e, p in (await session.execute(select(Enrollment.id, Enrollment.patient_id)))
        }
        assert (await verify(session)).ok
    assert set(events[0].detail["patients_created"]) == patients
    # Ids are time-ordered UUIDv7s, as hub.db.new_id makes them.
    ids = [uuid.UUID(p) for p in patients] + [uuid.UUID(e) for e, _ in pairs]
    assert {(i.version, i.variant) for i in ids} == {(7, uuid.RFC_4122)}
    assert {tuple(pair) for pair in events[0].detail["enrolled"]} == pairs
    assert events[0].detail["lines"] == [2, 4]


async def test_existing_patients_are_matched_by_phone_then_by_email(
    db: Database, ring: KeyRing, journey: str
) -> None:
    def new(phone: str | None, email: str | None) -> NewPatient:
        return NewPatient(name="Existing", phone=phone, email=email, time_zone="America/New_York")

    by_phone = await inbox.do_create_patient(
        db, ring, SYSTEM, new("+12015550111", None), region="US"
    )
    by_email = await inbox.do_create_patient(
        db, ring, SYSTEM, new(None, "dana@example.org"), region="US"
    )
    both = await inbox.do_create_patient(
        db, ring, SYSTEM, new("+12015550113", "erin@example.org"), region="US"
    )
    text = (
        HEADER
        + ",201-555-0111,,UTC,M-1,2026-12-02T09:00:00-05:00,\n"  # phone, other spelling
        + ",+1 201 555 0198,Dana@Example.ORG,UTC,M-2,2026-12-02T10:00:00-05:00,\n"  # email
        + ",(201) 555-0113,dana@example.org,UTC,M-3,2026-12-02T11:00:00-05:00,\n"  # phone wins
        + "Fran Fictional,+1 201 555 0114,fran@example.org,America/Denver,M-4,"
        "2026-12-02T12:00:00-05:00,\n"
    )
    report = await run(db, ring, text)
    assert (report.enrolled, report.patients_created, report.error_count) == (4, 1, 0)
    assert (await enrollment_of(db, "M-1"))[0].patient_id == by_phone
    assert (await enrollment_of(db, "M-2"))[0].patient_id == by_email
    assert (await enrollment_of(db, "M-3"))[0].patient_id == both

    # The created patient is sealed as the inbox seals one: it reads back, and staff find it
    # by any spelling of the number.
    created = (await enrollment_of(db, "M-4"))[0].patient_id
    view = await inbox.do_read_patient(db, ring, SYSTEM, created)
    assert (view.name, view.phone, view.email) == (
        "Fran Fictional",
        "+12015550114",
        "fran@example.org",
    )
    assert (view.time_zone, view.verified) == ("America/Denver", True)
    found = await inbox.do_find_patients_by_phone(db, ring, SYSTEM, "201.555.0114", region="US")
    assert [p.id for p in found] == [created]


def outcome(enrollment: Enrollment, runs: list[StepRun]) -> tuple[Any, ...]:
    return (
        enrollment.status,
        enrollment.anchor_at,
        enrollment.cancelled_at,
        [(r.step_id, r.status, r.due_at, r.claimed_until, r.reason) for r in runs],
    )


async def test_moved_and_cancelled_appointments_in_a_relaunch_match_do_enroll(
    db: Database, ring: KeyRing, journey: str
) -> None:
    """The same story through the bulk path (appointment B-1) and through ``do_enroll`` row by
    row (S-1): enrolled, the e-mail sent and the first text claimed, moved, then cancelled."""
    first, moved = datetime(2026, 12, 2, 9, tzinfo=NY), datetime(2026, 12, 8, 15, tzinfo=NY)
    single = await inbox.do_create_patient(
        db,
        ring,
        SYSTEM,
        NewPatient(phone="+12015550121", time_zone="America/New_York", verified=True),
        region="US",
    )

    async def both(start: datetime, status: str, now: datetime) -> None:
        line = f",+12015550122,,America/New_York,B-1,{start.isoformat()},{status}\n"
        report = await run(db, ring, HEADER + line, now=now)
        assert report.error_count == 0
        appointment = journeys.NewAppointment(
            "S-1", start, source="cohort", cancelled=status == "cancelled"
        )
        await journeys.do_enroll(db, SYSTEM, KEY, single, appointment=appointment, now=now)

    await both(first, "booked", NOW)
    async with db.transaction() as session:
        await session.execute(
            update(StepRun).where(StepRun.step_id == "email_72h").values(status=RunStatus.SENT)
        )
        await session.execute(
            update(StepRun)
            .where(StepRun.step_id == "sms_24h")
            .values(status=RunStatus.CLAIMED, claimed_until=NOW + timedelta(minutes=5))
        )

    await both(moved, "booked", NOW + timedelta(hours=1))
    bulk, runs = await enrollment_of(db, "B-1")
    assert outcome(bulk, runs) == outcome(*await enrollment_of(db, "S-1"))
    assert bulk.anchor_at == moved
    by_step = {r.step_id: r for r in runs}
    assert by_step["email_72h"].status is RunStatus.SENT  # already sent: left alone
    assert by_step["email_72h"].due_at == first - timedelta(hours=72)
    assert by_step["sms_24h"].status is RunStatus.PLANNED  # the claim is void, due again
    assert by_step["sms_24h"].claimed_until is None
    assert by_step["sms_24h"].due_at == datetime(2026, 12, 7, 15, tzinfo=NY)
    assert by_step["sms_2h"].due_at == moved - timedelta(hours=2)

    await both(moved, "cancelled", NOW + timedelta(hours=2))
    bulk, runs = await enrollment_of(db, "B-1")
    assert outcome(bulk, runs) == outcome(*await enrollment_of(db, "S-1"))
    assert bulk.status.value == "cancelled"
    assert [(r.step_id, r.status.value, r.reason) for r in runs] == [
        ("email_72h", "sent", None),
        ("sms_24h", "cancelled", "appointment cancelled"),
        ("sms_2h", "cancelled", "appointment cancelled"),
    ]
    async with db.reader() as session:
        appointment = (
            await session.scalars(select(Appointment).where(Appointment.external_id == "B-1"))
        ).one()
    assert (appointment.start_at, appointment.status.value) == (moved, "cancelled")
    assert await count(db, Enrollment) == 2


async def test_bad_rows_are_reported_by_line_and_the_others_enrolled(
    db: Database, ring: KeyRing, journey: str
) -> None:
    start = "2026-12-02T09:00:00-05:00"
    text = (
        HEADER
        + f"Avery Sample,+12015550131,,UTC,C-1,{start},\n"  # line 2
        + f"Bad Phone,not a number,,UTC,C-2,{start},\n"  # line 3
        + f'"Casey\nFictional",+12015550133,,UTC,C-3,{start},\n'  # lines 4-5: one record
        + "Bad Date,+12015550134,,UTC,C-4,2026-12-34 09:00,\n"  # line 6
        + f"Bad Zone,+12015550135,,Mars/Olympus,C-5,{start},\n"  # line 7
        + f"Someone Else,+12015550136,,UTC,C-1,{start},\n"  # line 8
        + f"Nobody,,,UTC,C-7,{start},\n"  # line 9
        + f"Devon Testperson,,devon@example.org,UTC,C-8,{start},\n"  # line 10
        + f"Long Id,+12015550137,,UTC,C-{'9' * 120},{start},\n"  # line 11: the column holds 120
    )
    report = await run(db, ring, text)
    assert report.errors == [
        "line 3: not a phone number",
        'line 6: the appointment date "2026-12-34" is not a date',
        'line 7: unknown time zone "Mars/Olympus"; expected an IANA name like America/New_York',
        "line 8: appointment C-1 belongs to another patient",
        "line 9: needs a phone or an email",
        "line 11: appointment_id is longer than 120 characters",
    ]
    assert (report.rows, report.enrolled, report.patients_created) == (9, 3, 3)
    assert report.error_count == 6
    # A bad row leaves nothing behind, not even its patient.
    assert await counts(db) == (3, 3, 3, 9)
    assert count_rows(io.StringIO(text, newline="")) == 9

    # An appointment id without a date column is the file's error, before any row enrolls.
    with pytest.raises(CohortInvalid, match="Appointment id but none to the appointment's date"):
        await run(db, ring, "phone,appointment_id\n+12015550139,C-9\n")
    empty_date = await run(db, ring, HEADER + ",+12015550139,,UTC,C-9,,\n")
    assert empty_date.errors == ["line 2: appointment C-9 has no date"]


async def test_chunks_see_the_patients_and_appointments_of_earlier_chunks(
    db: Database, ring: KeyRing, journey: str
) -> None:
    text = (
        HEADER
        + "Avery Sample,+12015550141,avery@example.org,UTC,D-1,2026-12-02T09:00:00Z,\n"
        + "Avery Sample,,avery@example.org,UTC,D-2,2026-12-03T09:00:00Z,\n"  # same chunk
        + "Avery Sample,201-555-0141,,UTC,D-3,2026-12-04T09:00:00Z,\n"  # next chunk
        + "Blake Placeholder,+12015550142,,UTC,D-4,2026-12-05T09:00:00Z,\n"
        + "Avery Sample,+12015550141,,UTC,D-1,2026-12-06T09:00:00Z,\n"  # third: D-1 moves
    )
    progress: list[int] = []
    report = await run(db, ring, text, chunk_rows=2, on_progress=progress.append)
    assert progress == [2, 2, 1]
    assert (report.rows, report.enrolled, report.already, report.patients_created) == (5, 4, 1, 2)
    assert await counts(db) == (2, 4, 4, 12)
    patients = {(await enrollment_of(db, f"D-{n}"))[0].patient_id for n in (1, 2, 3)}
    assert len(patients) == 1
    moved, runs = await enrollment_of(db, "D-1")
    assert moved.anchor_at == datetime(2026, 12, 6, 9, tzinfo=UTC)
    assert {r.due_at for r in runs if r.step_id == "sms_2h"} == {
        datetime(2026, 12, 6, 7, tzinfo=UTC)
    }
    assert len(await cohort_audit_events(db)) == 3


async def test_only_the_first_row_errors_are_listed_but_all_are_counted(
    db: Database, ring: KeyRing, journey: str
) -> None:
    bad = MAX_ROW_ERRORS_KEPT + 5
    text = "phone\n" + "not a number\n" * bad + "+12015550151\n"
    report = await run(db, ring, text, chunk_rows=40)
    assert (report.rows, report.enrolled, report.error_count) == (bad + 1, 1, bad)
    assert len(report.errors) == MAX_ROW_ERRORS_KEPT
    assert report.errors[0] == "line 2: not a phone number"
    assert report.errors[-1] == f"line {MAX_ROW_ERRORS_KEPT + 1}: not a phone number"


async def test_a_file_that_is_not_csv_stops_at_its_line_keeping_the_chunks_before(
    db: Database, ring: KeyRing, journey: str
) -> None:
    text = (
        "phone,appointment_id,appointment_start\n"
        "+12015550171,F-1,2026-12-02T09:00:00Z,an extra value is ignored\n"
        "+12015550172,F-2,2026-12-02T09:00:00Z\n"
        f"+12015550173,F-3,{'9' * 200_000}\n"  # beyond the csv module's field limit
    )
    too_long = r"^line 4: not valid CSV \(a value is longer than 131,072 characters\); save"
    with pytest.raises(CohortInvalid, match=too_long):
        await run(db, ring, text, chunk_rows=2)
    assert await counts(db) == (2, 2, 2, 6)
    with pytest.raises(CohortInvalid, match=r"^line 2: not valid CSV"):
        count_rows(io.StringIO(f"phone\n{'9' * 200_000}\n", newline=""))


@pytest.mark.postgres
@pytest.mark.skipif(not ON_POSTGRES, reason="SQLite has one writer: launches cannot interleave")
async def test_concurrent_launches_of_one_cohort_enroll_each_row_once(
    committed_db: Database, ring: KeyRing
) -> None:
    shipped = resources.files("hub.journeys").joinpath("examples", f"{KEY}.yaml")
    await journeys.do_install_journey(
        committed_db, SYSTEM, shipped.read_text(encoding="utf-8"), "shipped"
    )
    rows, launches = 200, 3
    text = HEADER + "".join(
        f",+1201555{n:04d},,UTC,E-{n},2026-12-02T09:00:00Z,\n" for n in range(rows)
    )
    reports = await asyncio.gather(
        *(run(committed_db, ring, text, chunk_rows=20) for _ in range(launches))
    )
    assert sum(r.error_count for r in reports) == 0, reports
    assert sum(r.enrolled for r in reports) == rows
    assert sum(r.already for r in reports) == rows * (launches - 1)
    assert sum(r.patients_created for r in reports) == rows
    assert await counts(committed_db) == (rows, rows, rows, rows * 3)


@pytest.mark.postgres
@pytest.mark.skipif(not ON_POSTGRES, reason="plan_cache_mode is PostgreSQL's")
async def test_only_the_lookups_are_planned_per_call(db: Database) -> None:
    """Custom plans keep a launch's lookups off stale generic plans; left on for the inserts,
    they would re-plan every foreign-key check (2.5 times slower)."""
    show = text("SHOW plan_cache_mode")
    async with db.transaction() as session:
        before = await session.scalar(show)
        async with bulk_queries.planned_for_these_values(session):
            assert await session.scalar(show) == "force_custom_plan"
        assert await session.scalar(show) == before != "force_custom_plan"


def test_count_rows_counts_records_not_lines() -> None:
    text = 'phone,name\n+12015550161,"two\nlines"\n\n+12015550162,one\n'
    assert count_rows(io.StringIO(text, newline="")) == 2
    assert count_rows(io.StringIO("")) == 0
