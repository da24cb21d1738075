"""The journey builder through real HTTP: build and save a journey in the form, errors that name
the step and field, the preview timeline, versions and the move of running enrollments, YAML
import and export, stop with its confirmation, and cancelling one patient from the drill-down."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from hub.audit import Actor
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database
from hub.inbox import actions
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.builder import fields_of, to_yaml
from hub.journeys.definitions import load_examples
from hub.journeys.models import Enrollment, EnrollmentStatus, RunStatus, StepRun
from hub.journeys.parse import parse_journey
from hub.templates.actions import do_seed_templates
from tests.conftest import make_staff
from tests.staff_helpers import csrf_of, sign_in
from web import journey_versions_api
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fresh_redis")

SYSTEM = Actor.system("test")
COORD = "cole.coord@demo-clinic.example.org"
AGENT = "alex.agent@demo-clinic.example.org"


@pytest.fixture
async def client(db: Database, settings: Settings, aiohttp_client: Any) -> TestClient:
    await do_seed_templates(db)
    for email, role in ((COORD, "coordinator"), (AGENT, "agent")):
        await make_staff(db, email, role=role)
    app = create_app(replace(settings, public_url="http://127.0.0.1"), db=db)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


def step(i: int, sid: str, amount: str, unit: str, channel: str, **extra: str) -> dict[str, str]:
    p = f"s{i}."
    fields = {
        p + "id": sid,
        p + "amount": amount,
        p + "unit": unit,
        p + "when": "before",
        p + "relative_to": "anchor",
        p + "template": "appointment_reminder",
        p + "channel1": channel,
    }
    return fields | {p + k: v for k, v in extra.items()}


def three_steps(csrf: str, **extra: str) -> dict[str, str]:
    return {
        "csrf_token": csrf,
        "key": "clinic_reminders",
        "name": "Clinic reminders",
        "purpose": "reminders",
        "anchor": "appointment_start",
        "step_count": "3",
        **step(0, "email_3d", "3", "d", "email", asks="confirmation", skip_if_confirmed="1"),
        **step(1, "sms_1d", "1", "d", "sms", asks="confirmation", skip_if_confirmed="1"),
        **step(2, "sms_2h", "2", "h", "sms", template="appointment_reminder_today"),
        "sample_date": "2030-03-14",
        "sample_time": "09:30",
        "sample_zone": "America/Chicago",
        "sample_language": "en",
        **extra,
    }


def test_the_form_round_trips_every_shipped_journey() -> None:
    for definition in load_examples().values():
        assert parse_journey(to_yaml(fields_of(definition)), "form") == definition


async def test_build_preview_and_save_a_journey(client: TestClient, db: Database) -> None:
    await sign_in(client, AGENT)
    assert (await client.get("/journeys/new")).status == 404
    await client.post("/logout", data={"csrf_token": await csrf_of(client)})
    await sign_in(client, COORD)
    csrf = await csrf_of(client, "/journeys/new")

    added = await client.post(
        "/journeys/new",
        data=three_steps(csrf, op="add"),
        headers={"HX-Request": "true"},
    )
    html = await added.text()
    assert added.status == 200 and html.startswith("<form")  # the form alone, swapped in place
    assert 'name="step_count" value="4"' in html and "Step 4 (step_4)" in html

    preview = await client.post(
        "/journeys/new", data=three_steps(csrf, op="preview"), headers={"HX-Request": "true"}
    )
    html = await preview.text()
    assert html.count('class="timeline-step"') == 3
    # Dates in the sample patient's zone: 3 days, 1 day and 2 hours before 09:30 in Chicago.
    assert "Mon Mar 11 2030, 09:30 CDT" in html and "Thu Mar 14 2030, 07:30 CDT" in html
    assert "Alex" in html and re.search(r"\d segments? \(\d+ characters, GSM-7\)", html)

    wrong = three_steps(csrf, op="save")
    wrong["s1.template"] = "apointment_reminder"
    refused = await client.post("/journeys/new", data=wrong)
    html = await refused.text()
    assert refused.status == 422
    assert (
        'Step 2 (sms_1d), template: no template "apointment_reminder" '
        "(did you mean &#34;appointment_reminder&#34;?)"
    ) in html or 'Step 2 (sms_1d), template: no template "apointment_reminder"' in html.replace(
        "&#34;", '"'
    )
    assert (await client.get("/journeys/clinic_reminders/edit")).status == 404

    saved = await client.post("/journeys/new", data=three_steps(csrf, op="save"))
    assert saved.status == 200 and str(saved.url).endswith("/journeys/clinic_reminders/edit")
    html = await saved.text()
    assert "saved as version 1" in html and 'data-field="version">version 1' in html
    exported = await client.get("/journeys/clinic_reminders/definition.yaml")
    text = await exported.text()
    assert "attachment" in exported.headers["Content-Disposition"]
    definition = parse_journey(text, "export")
    assert [s.id for s in definition.steps] == ["email_3d", "sms_1d", "sms_2h"]
    assert definition.steps[2].offset == timedelta(hours=-2)


async def _patient(db: Database, ring: KeyRing) -> uuid.UUID:
    return await actions.do_create_patient(
        db,
        ring,
        SYSTEM,
        NewPatient(name="Avery Sample", phone="+15550100101", time_zone="America/New_York"),
        region="US",
    )


async def test_edit_makes_a_version_and_running_enrollments_move_only_when_asked(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    await sign_in(client, COORD)
    csrf = await csrf_of(client, "/journeys/new")
    await client.post("/journeys/new", data=three_steps(csrf, op="save"))
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    await journeys.do_enroll(
        db,
        SYSTEM,
        "clinic_reminders",
        await _patient(db, ring),
        appointment=journeys.NewAppointment("a-1", start),
    )
    edit = three_steps(csrf, op="save", **{"s1.amount": "2"})
    edit["s1.id"] = "sms_2d"
    saved = await client.post("/journeys/clinic_reminders/edit", data=edit)
    html = await saved.text()
    assert "Saved as version 2" in html and 'data-field="version">version 2' in html
    assert "Move 1 running enrollment to version 2" in html
    async with db.reader() as session:
        [enrollment] = (await session.scalars(select(Enrollment))).all()
        assert enrollment.version == 1

    confirm = await client.get("/journeys/clinic_reminders/migrate")
    assert "1 running enrollment on older versions will follow version 2" in await confirm.text()
    moved = await client.post("/journeys/clinic_reminders/migrate", data={"csrf_token": csrf})
    assert "1 enrollment now follow version 2" in await moved.text()
    async with db.reader() as session:
        runs = {r.step_id: r.status for r in (await session.scalars(select(StepRun))).all()}
    assert runs == {
        "email_3d": RunStatus.PLANNED,
        "sms_1d": RunStatus.CANCELLED,
        "sms_2d": RunStatus.PLANNED,
        "sms_2h": RunStatus.PLANNED,
    }


async def test_import_names_the_line_and_export_gives_it_back(client: TestClient) -> None:
    await sign_in(client, COORD)
    csrf = await csrf_of(client, "/journeys/new")
    bad = "key: imported\npurpose: reminders\nanchor: appointment_start\nsteps:\n" + (
        "  - id: one\n    offset: 24 hours\n    template: appointment_reminder\n"
    )
    form = FormData({"csrf_token": csrf, "back": "/journeys/new"})
    form.add_field("definition", bad.encode(), filename="imported.yaml")
    html = await (await client.post("/journeys/import", data=form)).text()
    assert "Not imported: imported.yaml line 6: steps[0].offset" in html.replace("&#34;", '"')
    good = bad.replace("24 hours", "-24h")
    form = FormData({"csrf_token": csrf, "back": "/journeys/new"})
    form.add_field("definition", good.encode(), filename="imported.yaml")
    page = await client.post("/journeys/import", data=form)
    assert str(page.url).endswith("/journeys/imported/edit")
    assert "imported.yaml imported as a new journey" in await page.text()
    assert await (await client.get("/journeys/imported/definition.yaml")).text() == good


async def test_stop_names_what_it_cancels_and_a_patient_is_cancelled_from_the_list(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    await sign_in(client, COORD)
    csrf = await csrf_of(client, "/journeys/new")
    await client.post("/journeys/new", data=three_steps(csrf, op="save"))
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    result = await journeys.do_enroll(
        db,
        SYSTEM,
        "clinic_reminders",
        await _patient(db, ring),
        appointment=journeys.NewAppointment("a-1", start),
    )
    confirm = await client.get("/journeys/clinic_reminders/stop")
    html = await confirm.text()
    assert "Stopping cancels 3 scheduled messages for 1 patient." in html
    assert "Stop and cancel 3 messages" in html

    listing = await client.get("/journeys/clinic_reminders/steps/sms_1d/waiting")
    html = await listing.text()
    action = f"/journeys/clinic_reminders/enrollments/{result.enrollment_id}/cancel"
    assert action in html
    back = "/journeys/clinic_reminders/steps/sms_1d/waiting?page=1"
    page = await client.post(action, data={"csrf_token": csrf, "back": back})
    assert "3 scheduled messages will not be sent" in await page.text()
    async with db.reader() as session:
        enrollment = await session.get(Enrollment, result.enrollment_id)
        assert enrollment is not None and enrollment.status is EnrollmentStatus.CANCELLED
    html = await (await client.get("/journeys/clinic_reminders/stop")).text()
    assert "No message is scheduled" in html
    stopped = await client.post("/journeys/clinic_reminders/stop", data={"csrf_token": csrf})
    assert "is stopped: 0 scheduled messages for 0 patients were cancelled" in (
        await stopped.text()
    )


API_YAML = """\
key: api_reminders
purpose: reminders
anchor: appointment_start
steps:
  - id: sms_24h
    offset: -24h
    template: appointment_reminder
    channel: sms
"""


async def test_the_definition_api_saves_versions_and_is_documented(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    await sign_in(client, COORD)
    headers = {"X-CSRF-Token": await csrf_of(client), "Content-Type": "application/yaml"}
    url = "/api/journeys/api_reminders/definition"
    bad = await client.put(url, data=API_YAML.replace("-24h", "24h"), headers=headers)
    problem = (await bad.json())["error"]
    assert bad.status == 422 and (problem["line"], problem["field"]) == (6, "steps[0].offset")
    assert "needs a sign" in problem["message"]
    created = await client.put(url, data=API_YAML, headers=headers)
    assert created.status == 201 and (await created.json())["version"] == 1
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    await journeys.do_enroll(
        db,
        SYSTEM,
        "api_reminders",
        await _patient(db, ring),
        appointment=journeys.NewAppointment("a-1", start),
    )
    edited = await client.put(url, data=API_YAML.replace("-24h", "-48h"), headers=headers)
    assert await edited.json() == {"key": "api_reminders", "version": 2, "changed": True}
    versions = await (await client.get("/api/journeys/api_reminders/versions")).json()
    assert [(v["version"], v["active_enrollments"]) for v in versions["versions"]] == [
        (2, 0),
        (1, 1),
    ]
    first = await (await client.get(f"{url}?version=1")).json()
    assert first["definition"] == API_YAML
    moved = await client.post("/api/journeys/api_reminders/migrate", headers=headers)
    assert (await moved.json())["moved"] == 1
    other = await client.put(url, data=API_YAML.replace("api_reminders", "other"), headers=headers)
    assert other.status == 422 and "a key cannot change" in (await other.json())["error"]["message"]

    paths = (await (await client.get("/api/openapi.json")).json())["paths"]
    for route in journey_versions_api.routes():
        assert route.method.lower() in paths[route.path], route.path


async def test_a_stopped_journey_is_resumed_from_the_page(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    await sign_in(client, COORD)
    csrf = await csrf_of(client, "/journeys/new")
    await client.post("/journeys/new", data=three_steps(csrf, op="save"))
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    await journeys.do_enroll(
        db,
        SYSTEM,
        "clinic_reminders",
        await _patient(db, ring),
        appointment=journeys.NewAppointment("a-1", start),
    )
    await client.post("/journeys/clinic_reminders/stop", data={"csrf_token": csrf})
    page = await (await client.get("/journeys")).text()
    section = page[page.index('id="journey-clinic_reminders"') :]
    assert 'value="active">Resume</button>' in section and "Stop…" not in section[:3000]
    resumed = await client.post(
        "/journeys/clinic_reminders/status", data={"csrf_token": csrf, "status": "active"}
    )
    assert "Journey is now active." in await resumed.text()
    async with db.reader() as session:
        runs = (await session.scalars(select(StepRun))).all()
        [enrollment] = (await session.scalars(select(Enrollment))).all()
    assert enrollment.status is EnrollmentStatus.ACTIVE
    assert {r.status for r in runs} == {RunStatus.PLANNED}


async def test_remove_a_step_and_preview_an_invalid_form(client: TestClient) -> None:
    await sign_in(client, COORD)
    csrf = await csrf_of(client, "/journeys/new")
    removed = await client.post(
        "/journeys/new", data=three_steps(csrf, op="remove-1"), headers={"HX-Request": "true"}
    )
    html = await removed.text()
    assert 'name="step_count" value="2"' in html
    assert 'value="email_3d"' in html and 'value="sms_2h"' in html and "sms_1d" not in html
    # Steps out of order: the preview names the step and the one it would precede.
    wrong = three_steps(csrf, op="preview", **{"s1.amount": "5"})
    html = await (
        await client.post("/journeys/new", data=wrong, headers={"HX-Request": "true"})
    ).text()
    assert "Step 2 (sms_1d), when: this step would go out before step 1" in html
    assert "timeline-step" not in html
