"""Appointment outcomes from every feed: a cohort file, the enrollment API and a FHIR bundle
record arrived, fulfilled, no-show, cancelled (with when the cancellation came in) and entered
in error as FHIR defines them, and refuse a status they do not know, naming the row or field."""

from __future__ import annotations

import io
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database
from hub.inbox.models import Patient
from hub.journeys.cohort import launch
from hub.journeys.models import (
    Appointment,
    AppointmentStatus,
    Enrollment,
    EnrollmentStatus,
    RunStatus,
    StepRun,
)
from hub.journeys.outcomes import UnknownStatus, next_status, read_status
from tests.conftest import make_staff
from tests.outcome_helpers import KEY, SYSTEM, install, phone
from tests.staff_helpers import csrf_of, sign_in
from web.app import create_app

S = AppointmentStatus
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
START = datetime(2026, 12, 3, 19, tzinfo=UTC)
COORD = "cole.coord@demo-clinic.example.org"


@pytest.fixture(autouse=True)
def fixed_today(set_clock: Any) -> None:
    set_clock(NOW)


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("booked", None),
        ("Scheduled", None),
        ("", None),
        ("arrived", S.ARRIVED),
        ("checked-in", S.ARRIVED),
        ("Checked In", S.ARRIVED),
        ("fulfilled", S.FULFILLED),
        ("Completed", S.FULFILLED),
        ("noshow", S.NOSHOW),
        ("No Show", S.NOSHOW),
        ("no-show", S.NOSHOW),
        ("cancelled", S.CANCELLED),
        ("Canceled", S.CANCELLED),
        ("entered-in-error", S.ENTERED_IN_ERROR),
    ],
)
def test_feed_words_read_as_fhir_statuses(word: str, status: AppointmentStatus | None) -> None:
    assert read_status(word) is status


def test_an_unknown_status_is_refused_naming_the_field() -> None:
    with pytest.raises(UnknownStatus) as raised:
        read_status("Bumped", "appointment.status")
    assert str(raised.value).startswith('appointment.status "Bumped" is not an appointment status')


def test_booked_is_no_news_and_an_outcome_is_the_feed_s_last_word() -> None:
    assert next_status(S.CONFIRMED, None) is S.CONFIRMED
    assert next_status(S.CANCELLED, None) is S.CANCELLED
    assert next_status(S.NOSHOW, S.ARRIVED) is S.ARRIVED  # came late after all
    assert next_status(S.FULFILLED, S.ARRIVED) is S.FULFILLED  # a late "arrived"
    assert next_status(S.CONFIRMED, S.FULFILLED) is S.FULFILLED


async def stored(db: Database) -> dict[str, tuple[Any, ...]]:
    """external id -> (status, cancelled at, enrollment status, pending runs' statuses and
    reasons)."""
    async with db.reader() as session:
        appts = (await session.scalars(select(Appointment))).all()
        enrollments = {
            e.appointment_id: e for e in (await session.scalars(select(Enrollment))).all()
        }
        runs = (await session.scalars(select(StepRun))).all()
    found = {}
    for a in appts:
        e = enrollments[a.id]
        mine = sorted((r.step_id, r.status, r.reason) for r in runs if r.enrollment_id == e.id)
        found[a.external_id] = (a.status, a.cancelled_at, e.status, mine)
    return found


CSV_HEADER = "name,phone,appointment_id,appointment_start,status\n"


def cohort(*rows: tuple[int, str]) -> io.StringIO:
    lines = [
        f"Synthetic Patient {n},{phone(n)},csv-{n},{START.isoformat()},{status}\n"
        for n, status in rows
    ]
    return io.StringIO(CSV_HEADER + "".join(lines))


async def test_a_cohort_file_records_outcomes_and_refuses_a_status_it_does_not_know(
    db: Database, ring: KeyRing
) -> None:
    await install(db)
    file = cohort(
        (1, "Scheduled"), (2, "Checked In"), (3, "Completed"), (4, "No Show"), (5, "Canceled"),
        (6, "Bumped"),
    )  # fmt: skip
    report = await launch(db, ring, SYSTEM, KEY, file, region="US", now=NOW)
    assert (report.enrolled, report.error_count) == (5, 1)
    assert report.errors == [
        'line 7: status "Bumped" is not an appointment status; expected booked, arrived, '
        "fulfilled, noshow, cancelled or entered-in-error (or an EHR's words such as "
        "Scheduled, Checked In, Completed, No Show, Canceled)"
    ]
    found = await stored(db)
    assert {k: v[0] for k, v in found.items()} == {
        "csv-1": S.BOOKED,
        "csv-2": S.ARRIVED,
        "csv-3": S.FULFILLED,
        "csv-4": S.NOSHOW,
        "csv-5": S.CANCELLED,
    }
    assert found["csv-5"][1] == NOW  # when the cancellation came in
    assert found["csv-1"][1] is None
    # A no-show stops what was still to come, but is no cancellation.
    assert found["csv-4"][2] is EnrollmentStatus.COMPLETED
    assert {(s, r) for _, s, r in found["csv-4"][3]} == {
        (RunStatus.CANCELLED, "appointment missed (no-show)")
    }
    assert found["csv-5"][2] is EnrollmentStatus.CANCELLED
    assert found["csv-2"][2] is EnrollmentStatus.ACTIVE

    # The next export says how it went: outcomes overwrite, "Scheduled" changes nothing.
    later = NOW + timedelta(days=14)
    again = cohort((1, "No Show"), (2, "Completed"), (3, "Scheduled"), (5, "Scheduled"))
    report = await launch(db, ring, SYSTEM, KEY, again, region="US", now=later)
    assert (report.already, report.error_count) == (4, 0)
    found = await stored(db)
    assert [found[f"csv-{n}"][0] for n in (1, 2, 3, 5)] == [
        S.NOSHOW,
        S.FULFILLED,
        S.FULFILLED,
        S.CANCELLED,
    ]
    assert found["csv-1"][2] is EnrollmentStatus.COMPLETED
    assert found["csv-5"][1] == NOW  # cancelled once, at the first file


@pytest.fixture
async def client(db: Database, settings: Settings, aiohttp_client: Any) -> TestClient:
    await install(db)
    await make_staff(db, COORD, role="coordinator")
    app = create_app(replace(settings, public_url="http://127.0.0.1"), db=db)
    client: TestClient = await aiohttp_client(app)
    await sign_in(client, COORD)
    return client


async def patients(db: Database) -> int:
    async with db.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(Patient)) or 0)


async def test_the_api_records_outcomes_and_refuses_an_unknown_status(
    client: TestClient, db: Database
) -> None:
    headers = {"X-CSRF-Token": await csrf_of(client, "/journeys")}
    url = f"/api/journeys/{KEY}/enrollments"

    def body(n: int, status: str | None) -> dict[str, Any]:
        appointment = {"id": f"api-{n}", "start": START.isoformat()}
        return {"patient": {"phone": phone(n)}, "appointment": {**appointment, "status": status}}

    for n, word in enumerate(("booked", "arrived", "fulfilled", "noshow", "cancelled"), 1):
        answer = await client.post(url, json=body(n, word), headers=headers)
        assert answer.status == 201, await answer.text()
    noshow_later = await client.post(url, json=body(1, "No Show"), headers=headers)
    assert noshow_later.status == 200
    found = await stored(db)
    assert {k: v[0] for k, v in found.items()} == {
        "api-1": S.NOSHOW,
        "api-2": S.ARRIVED,
        "api-3": S.FULFILLED,
        "api-4": S.NOSHOW,
        "api-5": S.CANCELLED,
    }
    assert found["api-5"][1] is not None

    before = await patients(db)
    refused = await client.post(url, json=body(9, "done"), headers=headers)
    message = (await refused.json())["error"]["message"]
    assert refused.status == 422
    assert 'appointment.status "done" is not an appointment status' in message
    assert await patients(db) == before  # nothing written for the refused enrollment


def bundle(*statuses: str) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    for n, status in enumerate(statuses, 1):
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.UUID(int=n)}",
                "resource": {
                    "resourceType": "Patient",
                    "id": f"p{n}",
                    "telecom": [{"system": "phone", "value": phone(n), "use": "mobile"}],
                },
            }
        )
        entries.append(
            {
                "resource": {
                    "resourceType": "Appointment",
                    "id": f"fhir-{n}",
                    "status": status,
                    "start": START.isoformat(timespec="seconds"),
                    "participant": [{"actor": {"reference": f"urn:uuid:{uuid.UUID(int=n)}"}}],
                }
            }
        )
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


async def test_a_fhir_bundle_records_outcomes_as_fhir_defines_them(
    client: TestClient, db: Database
) -> None:
    headers = {"X-CSRF-Token": await csrf_of(client, "/journeys")}
    url = f"/api/journeys/{KEY}/enrollments/fhir"
    codes = ("booked", "arrived", "checked-in", "fulfilled", "noshow", "cancelled")
    answer = await client.post(url, json=bundle(*codes, "entered-in-error"), headers=headers)
    assert answer.status == 200, await answer.text()
    found = await stored(db)
    assert {k: v[0] for k, v in found.items()} == {
        "fhir-1": S.BOOKED,
        "fhir-2": S.ARRIVED,
        "fhir-3": S.ARRIVED,
        "fhir-4": S.FULFILLED,
        "fhir-5": S.NOSHOW,
        "fhir-6": S.CANCELLED,
        "fhir-7": S.ENTERED_IN_ERROR,
    }
    assert found["fhir-6"][1] is not None and found["fhir-1"][1] is None
    # The booked one's outcome comes in a later bundle.
    later = bundle("fulfilled")
    assert (await client.post(url, json=later, headers=headers)).status == 200
    assert (await stored(db))["fhir-1"][0] is S.FULFILLED

    refused = await client.post(url, json=bundle("booked", "done"), headers=headers)
    error = (await refused.json())["error"]
    assert refused.status == 400 and error["field"] == "entry[3].resource.status"
    assert "'done' is not an Appointment status code" in error["message"]
