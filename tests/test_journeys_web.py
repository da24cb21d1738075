"""The coordinator's journey page through real HTTP and a real socket.io client: the funnel's
columns on real enrollments, sends, replies and opt-outs; the audited drill-down; the live
progress event; cohort upload; FHIR R4 enrollment; the survey report."""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import socketio
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from hub.audit import Actor, AuditEvent
from hub.channels.base import InboundMessage, SendReceipt, StatusUpdate
from hub.channels.twilio_sms.errors import classify
from hub.config import Settings
from hub.consent import actions as consent
from hub.consent.models import ConsentSource, ConsentState, Purpose
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, MessageStatus
from hub.inbox import actions
from hub.inbox.models import Patient
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys import reporting
from hub.journeys.dispatch import do_prepare_batch, providers_for
from hub.journeys.fhir import TIMEZONE_EXTENSION
from hub.journeys.models import Appointment, Enrollment, RunStatus, StepRun
from hub.outbox import release_events
from hub.templates.actions import do_seed_templates
from tests.conftest import make_staff
from tests.staff_helpers import csrf_of, session_cookie, sign_in
from web import journeys as journeys_web
from web.app import create_app
from web.keys import RING, SINK

pytestmark = pytest.mark.usefixtures("fresh_redis")

SYSTEM = Actor.system("test")
COORD = "cole.coord@demo-clinic.example.org"
AGENT = "alex.agent@demo-clinic.example.org"
ADMIN = "ada.admin@demo-clinic.example.org"
REMINDERS = """\
key: web_reminders
name: Web reminders
purpose: reminders
anchor: appointment_start
steps:
  - {id: sms_48h, offset: -48h, template: appointment_reminder, channel: sms,
     asks: confirmation, conditions: [skip_if_confirmed]}
  - {id: sms_24h, offset: -24h, template: appointment_reminder, channel: sms,
     asks: confirmation, conditions: [skip_if_confirmed]}
"""
SURVEY = """\
key: web_survey
name: Web survey
purpose: surveys
anchor: discharge
steps:
  - {id: nps, offset: +1d, template: nps_survey, channels: [sms], asks: survey,
     survey: {question: nps, scale: 0-10}}
"""
NAMES = ["Avery Sample", "Blake Placeholder", "Casey Fictional", "Devon Testperson"]
NAMES += ["Emery Example", "Finley Madeup", "Gray Synthetic"]


def phone(n: int) -> str:
    return f"+155501001{n:02d}"


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    return replace(settings, public_url="http://127.0.0.1")  # the test client sends the cookie


@pytest.fixture
async def client(db: Database, web_settings: Settings, aiohttp_client: Any) -> TestClient:
    await do_seed_templates(db)
    await journeys.do_install_journey(db, SYSTEM, REMINDERS, "web_reminders.yaml")
    await journeys.do_install_journey(db, SYSTEM, SURVEY, "web_survey.yaml")
    for email, role in ((COORD, "coordinator"), (AGENT, "agent"), (ADMIN, "admin")):
        await make_staff(db, email, role=role)
    app = create_app(web_settings, db=db)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


def noon_zone() -> str:
    """A zone where it is now about noon: automated sends are not held for quiet hours."""
    k = 12 - datetime.now(UTC).hour  # hours east of UTC; the Etc/ names have the sign flipped
    return "Etc/GMT" if k == 0 else f"Etc/GMT{'-' if k > 0 else '+'}{abs(k)}"


async def patient(db: Database, ring: KeyRing, n: int) -> uuid.UUID:
    new = NewPatient(
        name=NAMES[n - 1], phone=phone(n), email=f"p{n}@example.org", time_zone=noon_zone()
    )
    return await actions.do_create_patient(db, ring, SYSTEM, new, region="US")


async def text_in(db: Database, ring: KeyRing, n: int, body: str) -> None:
    message = InboundMessage(
        "twilio_sms", "SM" + uuid.uuid4().hex, Channel.SMS, phone(n), "+15550109999", body
    )
    await actions.do_receive_inbound(db, ring, message, {}, help_text="help")


async def dispatch(db: Database, ring: KeyRing, at: datetime) -> dict[uuid.UUID, Any]:
    """Claim and prepare what is due; returns each prepared send task by message id."""
    prepared = await do_prepare_batch(
        db,
        ring,
        await journeys.do_claim_due(db, now=at),
        providers=providers_for({Channel.SMS, Channel.EMAIL}, {}),
        clinic={"name": "Demo Clinic", "phone": "+15550109999"},
        public_url="http://127.0.0.1",
        now=at,
    )
    return {t.outbound.message_id: t for t in prepared.tasks}


async def provider_says(db: Database, task: Any, status: MessageStatus, code: str = "") -> None:
    """The provider accepts the send, then calls back with the final status."""
    sid = "SM" + uuid.uuid4().hex
    receipt = SendReceipt(task.provider, sid, MessageStatus.SENT)
    await actions.do_record_outcomes(db, [actions.SendOutcome(task, receipt)], retry_base_s=0)
    update = StatusUpdate(task.provider, sid, status, error_code=code or None)
    await actions.do_apply_status(db, update, classify, retry_base_s=0)


def appointment(n: int, start: datetime, **kw: Any) -> journeys.NewAppointment:
    return journeys.NewAppointment(f"appt-{n}", start, location="Room 2", **kw)


@pytest.fixture
async def funnel_data(db: Database, ring: KeyRing, client: TestClient) -> dict[int, uuid.UUID]:
    """Seven patients, one per outcome of the first reminder (see test_funnel_columns)."""
    now = datetime.now(UTC).replace(microsecond=0)
    start = now + timedelta(hours=48, minutes=-1)  # sms_48h is due a minute ago
    ids = {n: await patient(db, ring, n) for n in range(1, 8)}
    for n in range(1, 7):
        await journeys.do_enroll(
            db,
            SYSTEM,
            "web_reminders",
            ids[n],
            appointment=appointment(n, start, cancelled=n == 6),
            now=now - timedelta(days=1),
            ring=ring,
        )
    late = appointment(7, now + timedelta(hours=30))  # enrolled after sms_48h was due
    await journeys.do_enroll(
        db, SYSTEM, "web_reminders", ids[7], appointment=late, now=now, ring=ring
    )
    stop = consent.ConsentChange(ConsentSource.KEYWORD, "patient", "STOP")
    async with db.transaction() as session:  # Devon opted out before anything was sent
        await consent.revoke_channel(session, ids[4], Channel.SMS, stop)
    tasks = await dispatch(db, ring, now)
    by_phone = {t.outbound.to_address: t for t in tasks.values()}
    await provider_says(db, by_phone[phone(1)], MessageStatus.DELIVERED)
    await provider_says(db, by_phone[phone(5)], MessageStatus.UNDELIVERED, "30007")
    await text_in(db, ring, 1, "C")
    await text_in(db, ring, 2, "2")
    async with db.transaction() as session:  # Casey unsubscribes after the reminder
        change = consent.ConsentChange(ConsentSource.UNSUBSCRIBE, "patient", "unsubscribe link")
        await consent.revoke_channel(session, ids[3], Channel.SMS, change)
    return ids


async def test_funnel_columns(client: TestClient, funnel_data: dict[int, uuid.UUID]) -> None:
    await sign_in(client, COORD)
    funnel = await (await client.get("/api/journeys/web_reminders/funnel")).json()
    first, second = funnel["steps"]
    assert first["counts"] == {
        "enrolled": 7,
        "waiting": 0,
        "skipped": 1,  # Gray: due before enrollment
        "untranslated": 0,
        "stopped": 1,  # Finley: appointment cancelled
        "sent": 4,  # Avery, Blake, Casey, Emery
        "fallback": 0,
        "delivered": 1,  # Avery
        "replied": 2,  # Avery (C), Blake (2)
        "confirmed": 1,
        "cancelled": 1,
        "opted_out": 1,  # Casey, after the reminder; Devon's opt-out came before it
        "failed": 2,  # Devon (no channel), Emery (carrier)
    }
    assert first["failures"] == [
        {"reason": "no usable channel: sms refused (opted_out)", "count": 1},
        {"reason": "the carrier filtered the message as spam [30007]", "count": 1},
    ]
    # Avery's confirmation called off the remaining ask; Blake's and Finley's cancellations all.
    assert (second["counts"]["waiting"], second["counts"]["stopped"]) == (4, 3)
    assert first["runs"] == {"sent": 4, "failed": 1, "skipped": 1, "cancelled": 1}
    assert [c["key"] for c in funnel["columns"]] == list(first["counts"])
    assert "Avery" not in str(funnel) and "5550100" not in str(funnel)

    page = await (await client.get("/journeys")).text()
    assert 'class="step-chart"' in page and "/static/journeys.js" in page
    assert 'href="/journeys/web_reminders/steps/sms_48h/replied"' in page
    assert "the carrier filtered the message as spam [30007]: <strong>1</strong>" in page


async def test_a_reply_counts_on_the_last_step_received(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    pid = await patient(db, ring, 1)
    start = appointment(1, now + timedelta(hours=24, minutes=-2))  # both steps are due
    await journeys.do_enroll(
        db,
        SYSTEM,
        "web_reminders",
        pid,
        appointment=start,
        now=now - timedelta(days=3),
        ring=ring,
    )
    assert len(await dispatch(db, ring, now - timedelta(hours=24, minutes=1))) == 1
    assert len(await dispatch(db, ring, now - timedelta(minutes=1))) == 1
    await text_in(db, ring, 1, "Running late, sorry")
    funnel = await reporting.do_funnel(db, "web_reminders")
    assert [(s.counts["sent"], s.counts["replied"]) for s in funnel.steps] == [(1, 0), (1, 1)]
    shared = reporting.FunnelCache(db, max_age=60)  # many screens, one count
    first, second = await asyncio.gather(*(shared.get("web_reminders") for _ in range(2)))
    assert first is second and first.steps == funnel.steps


async def test_drilldown_lists_patients_audits_and_is_for_coordinators(
    client: TestClient, db: Database, ring: KeyRing, funnel_data: dict[int, uuid.UUID]
) -> None:
    await sign_in(client, AGENT)
    path = "/journeys/web_reminders/steps/sms_48h/replied"
    assert (await client.get(path)).status == 404
    assert (await client.get(f"/api{path}")).status == 404
    await client.post("/logout", data={"csrf_token": await csrf_of(client)})

    await sign_in(client, ADMIN)
    page = await client.get("/journeys/web_reminders/steps/sms_48h/replied")
    html = await page.text()
    assert page.status == 200 and "2 patients" in html
    assert "Avery Sample" in html and "Blake Placeholder" in html and "Casey" not in html
    assert "+1 ••• ••• ••01" in html and phone(1) not in html and "p1@example.org" not in html
    assert html.count('href="/conversations/') == 2  # an admin may open every conversation
    failed = await (await client.get("/api/journeys/web_reminders/steps/sms_48h/failed")).json()
    assert failed["total"] == 2
    assert {p["reason"] for p in failed["rows"]} == {
        "no usable channel: sms refused (opted_out)",
        "the carrier filtered the message as spam [30007]",
    }
    assert (await client.get("/journeys/web_reminders/steps/sms_48h/bogus")).status == 404
    assert (await client.get("/journeys/web_reminders/steps/nope/sent")).status == 404
    async with db.reader() as session:
        audited = (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.action == "journey.patients.read")
            )
        ).all()
    assert {e.subject_id for e in audited} == {
        str(funnel_data[n]) for n in (1, 2, 4, 5)
    }  # the replied page, then the failed list
    assert all(e.detail["journey"] == "web_reminders" for e in audited)

    coordinator = await make_staff(db, "cy.coord@demo-clinic.example.org", role="coordinator")
    one = await reporting.do_drilldown(
        db, ring, coordinator, "web_reminders", "sms_48h", "sent", page=2, per_page=3
    )
    assert (one.total, one.pages, len(one.rows)) == (4, 2, 1)
    assert one.rows[0].conversation_id is None  # not in the coordinator's teams


async def test_the_journey_api_is_documented(client: TestClient) -> None:
    paths = (await (await client.get("/api/openapi.json")).json())["paths"]
    for route in journeys_web.routes():
        if route.path.startswith("/api/"):
            assert route.method.lower() in paths[route.path], route.path


async def test_progress_event_reaches_coordinators_live(client: TestClient, db: Database) -> None:
    sockets: dict[str, tuple[socketio.AsyncClient, asyncio.Queue[Any]]] = {}
    for email in (COORD, AGENT):
        await sign_in(client, email)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        sio = socketio.AsyncClient(reconnection=False)
        sio.on("journey:progress", queue.put_nowait, namespace="/staff")
        await sio.connect(
            str(client.make_url("/")),
            namespaces=["/staff"],
            headers={"Cookie": f"hub_session={session_cookie(client)}"},
            transports=["websocket"],
        )
        sockets[email] = (sio, queue)
        client.session.cookie_jar.clear()
    try:
        async with db.transaction() as session:
            effect = reporting.journey_progress_effect(session, "web_reminders")
        assert await release_events(db, client.app[SINK], [effect]) == 1
        event = await asyncio.wait_for(sockets[COORD][1].get(), 5)
        # A round trip after the event: had the agent been in the room, theirs came first.
        agent, agent_events = sockets[AGENT]
        assert await agent.call("heartbeat", {}, namespace="/staff", timeout=5) == {"ok": True}
    finally:
        for sio, _ in sockets.values():
            await sio.disconnect()
    assert event == {"room": "journeys", "journey": "web_reminders"}
    assert agent_events.empty()


COHORT = """\
name,phone,email,time_zone,appointment_id,appointment_start,location
Avery Sample,+1 (555) 010-0101,a@example.org,America/New_York,A-1,2030-12-02T09:00:00-05:00,Room 2
Blake Placeholder,(201) 555-0102,,America/Chicago,A-2,2030-12-03T14:30:00-06:00,Room 1
Casey Fictional,not a number,,UTC,A-3,2030-12-04T10:00:00+00:00,Room 3
"""


async def enrollments(db: Database) -> int:
    async with db.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(Enrollment)) or 0)


def cohort_form(content: bytes, csrf: str | None = None) -> FormData:
    form = FormData()
    if csrf:
        form.add_field("csrf_token", csrf)
    form.add_field("cohort", io.BytesIO(content), filename="cohort.csv", content_type="text/csv")
    return form


def confirm_url(html: str) -> str:
    found = re.search(r'action="(/journeys/web_[a-z]+/cohort/[A-Za-z0-9_-]{32})"', html)
    assert found, "the dry run offers no Enroll button"
    return found.group(1)


async def test_cohort_upload_shows_the_dry_run_and_enrolls_only_when_confirmed(
    client: TestClient, db: Database
) -> None:
    await sign_in(client, COORD)
    csrf = await csrf_of(client, "/journeys")
    # A plain form post (no script): the page comes back with the dry run and its buttons.
    page = await client.post(
        "/journeys/web_reminders/cohort", data=cohort_form(COHORT.encode(), csrf)
    )
    html = await page.text()
    assert page.status == 200
    assert "Dry run: what this file would do" in html
    assert "3 rows: <strong>2</strong> would be enrolled (2 new patients)" in html
    assert "1 row cannot be enrolled" in html and "line 4: not a phone number" in html
    assert "Enroll 2 patients</button>" in html and "Cancel</button>" in html
    assert "Avery" not in html and "5550100" not in html  # counts and reasons, no patient
    assert await enrollments(db) == 0

    enrolled = await client.post(confirm_url(html), data={"csrf_token": csrf})
    html = await enrolled.text()
    assert enrolled.status == 200
    # Row errors are never shown as a success: a warning, with the rows by line.
    assert '<p class="flash warn"><strong>2 enrolled, 1 not enrolled.</strong> 3 rows:' in html
    assert "flash ok" not in html and "line 4: not a phone number" in html
    assert await enrollments(db) == 2
    json_headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}
    twice = await client.post(confirm_url(await page.text()), headers=json_headers)
    assert (
        twice.status == 410 and "Upload the file again" in (await twice.json())["error"]["message"]
    )

    # The page's script: the same upload, answered in JSON with the box's HTML.
    again = await client.post(
        "/journeys/web_reminders/cohort", data=cohort_form(COHORT.encode()), headers=json_headers
    )
    answer = await again.json()
    preview = answer["preview"]
    assert (preview["rows"], preview["enroll"], preview["already"]) == (3, 0, 2)
    assert preview["errors"] == ["line 4: not a phone number"]
    assert "Update 2 enrolled patients" in answer["html"]
    cancel = await client.post(
        f"/journeys/web_reminders/cohort/{answer['token']}/cancel", headers=json_headers
    )
    assert (await cancel.json())["cancelled"] is True
    after_cancel = await client.post(
        f"/journeys/web_reminders/cohort/{answer['token']}", headers=json_headers
    )
    assert after_cancel.status == 410
    no_csrf = await client.post("/journeys/web_reminders/cohort", data=cohort_form(b"x"))
    assert no_csrf.status == 403


async def test_the_dry_run_warns_with_counts_and_keeps_the_file_for_its_owner_only(
    client: TestClient, db: Database
) -> None:
    survey = "phone,name,language\n" + "".join(
        f"{phone(n)},Patient {n},{'vi' if n > 2 else 'en'}\n" for n in range(1, 5)
    )
    await sign_in(client, COORD)
    headers = {"X-CSRF-Token": await csrf_of(client, "/journeys"), "Accept": "application/json"}
    answer = await (
        await client.post(
            "/journeys/web_survey/cohort", data=cohort_form(survey.encode()), headers=headers
        )
    ).json()
    assert answer["preview"]["warnings"] == [
        "Step nps needs a surveys opt-in: 0 of 4 patients have one on a channel it may use; "
        "it would fail for all 4."
    ]
    assert answer["preview"]["steps"][0]["no_channel"] == 4
    assert "needs a surveys opt-in" in answer["html"] and "Enroll 4 patients" in answer["html"]

    # The admin may launch too, but not with the coordinator's upload (it names them).
    await sign_in(client, ADMIN)
    other = {"X-CSRF-Token": await csrf_of(client, "/journeys"), "Accept": "application/json"}
    stolen = await client.post(f"/journeys/web_survey/cohort/{answer['token']}", headers=other)
    assert stolen.status == 410
    assert await enrollments(db) == 0
    await sign_in(client, COORD)
    mine = {"X-CSRF-Token": await csrf_of(client, "/journeys"), "Accept": "application/json"}
    done = await client.post(f"/journeys/web_survey/cohort/{answer['token']}", headers=mine)
    assert (await done.json())["enrolled"] == 4
    assert await enrollments(db) == 4


async def test_cohort_upload_refuses_big_and_bad_files(client: TestClient, db: Database) -> None:
    await sign_in(client, COORD)
    headers = {"X-CSRF-Token": await csrf_of(client, "/journeys"), "Accept": "application/json"}
    url = "/journeys/web_reminders/cohort"
    big = COHORT.encode() + b"x" * (journeys_web.MAX_COHORT_BYTES + 1)
    too_big = await client.post(url, data=cohort_form(big), headers=headers)
    assert too_big.status == 413
    assert "larger than 20 MB" in (await too_big.json())["error"]["message"]

    async def streamed() -> Any:  # no Content-Length: the size is counted while reading
        yield b'--b\r\nContent-Disposition: form-data; name="cohort"; filename="c.csv"\r\n\r\n'
        for _ in range(21):
            yield b"phone\n" + b"5" * (1024 * 1024)
        yield b"\r\n--b--\r\n"

    chunked = await client.post(
        url, data=streamed(), headers={**headers, "Content-Type": "multipart/form-data; boundary=b"}
    )
    assert chunked.status == 413
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    binary = await client.post(url, data=cohort_form(png), headers=headers)
    assert (
        binary.status == 400 and "not a CSV text file" in (await binary.json())["error"]["message"]
    )
    headless = await client.post(url, data=cohort_form(b"name,city\nAvery,Town\n"), headers=headers)
    assert headless.status == 400
    assert "phone or an email column" in (await headless.json())["error"]["message"]
    empty = await client.post(url, data=cohort_form(b""), headers=headers)
    assert empty.status == 400
    assert await enrollments(db) == 0


def fhir_bundle(start: str = "2030-12-02T09:00:00-05:00", status: str = "booked") -> dict[str, Any]:
    patients = [
        ("urn:uuid:3f1b2c4d-0000-4000-8000-000000000001", "p1", "Avery", phone(1), None),
        ("https://ehr.example.org/fhir/Patient/p2", "p2", "Blake", None, "blake@example.org"),
    ]
    entries: list[dict[str, Any]] = []
    for full_url, pid, given, tel, mail in patients:
        telecom = [{"system": "phone", "value": tel, "use": "mobile"}] if tel else []
        telecom += [{"system": "email", "value": mail}] if mail else []
        resource = {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"system": "urn:mrn", "value": f"MRN-{pid}"}],
            "name": [{"use": "official", "family": "Sample", "given": [given]}],
            "telecom": telecom,
            "communication": [{"language": {"coding": [{"code": "es"}]}, "preferred": True}],
            "extension": [{"url": TIMEZONE_EXTENSION, "valueCode": "America/New_York"}],
        }
        entries.append({"fullUrl": full_url, "resource": resource})
    for n, reference in ((1, patients[0][0]), (2, "Patient/p2")):
        entries.append(
            {
                "fullUrl": f"urn:uuid:3f1b2c4d-0000-4000-8000-00000000010{n}",
                "resource": {
                    "resourceType": "Appointment",
                    "id": f"fhir-appt-{n}",
                    "status": status,
                    "start": start,
                    "end": start.replace("09:00", "09:30"),
                    "participant": [
                        {"actor": {"reference": reference}, "status": "accepted"},
                        {
                            "actor": {"display": "Dr. Demo", "type": "Practitioner"},
                            "status": "accepted",
                        },
                    ],
                },
            }
        )
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


async def test_fhir_bundle_enrolls_idempotently_moves_and_cancels(
    client: TestClient, db: Database
) -> None:
    from fhir.resources.R4B.bundle import Bundle

    Bundle.model_validate(fhir_bundle())  # the fixture is valid FHIR
    await sign_in(client, COORD)
    headers = {"X-CSRF-Token": await csrf_of(client, "/journeys")}
    url = "/api/journeys/web_reminders/enrollments/fhir"

    first = await client.post(url, json=fhir_bundle(), headers=headers)
    body = await first.json()
    assert first.status == 200, body
    assert (body["enrolled"], body["patients_created"], body["error"]) == (2, 2, 0)
    again = await (await client.post(url, json=fhir_bundle(), headers=headers)).json()
    assert (again["enrolled"], again["already"], again["patients_created"]) == (0, 2, 0)
    assert await enrollments(db) == 2
    async with db.reader() as session:
        appts = (await session.scalars(select(Appointment).order_by(Appointment.external_id))).all()
        people = (await session.scalars(select(Patient))).all()
    ring = client.server.app[RING]
    assert [(a.source, a.external_id, a.unseal(ring, "provider")) for a in appts] == [
        ("fhir", "fhir-appt-1", "Dr. Demo"),
        ("fhir", "fhir-appt-2", "Dr. Demo"),
    ]
    assert {(p.language, p.time_zone) for p in people} == {("es", "America/New_York")}

    moved = await (
        await client.post(url, json=fhir_bundle("2030-12-05T09:00:00-05:00"), headers=headers)
    ).json()
    assert moved["moved"] == 2
    async with db.reader() as session:
        due = (
            await session.scalars(select(StepRun.due_at).where(StepRun.step_id == "sms_24h"))
        ).all()
    assert set(due) == {datetime(2030, 12, 4, 14, tzinfo=UTC)}
    cancelled = await (
        await client.post(
            url, json=fhir_bundle("2030-12-05T09:00:00-05:00", "cancelled"), headers=headers
        )
    ).json()
    assert cancelled["cancelled"] == 2
    async with db.reader() as session:
        statuses = set((await session.scalars(select(StepRun.status))).all())
    assert statuses == {RunStatus.CANCELLED}


async def test_fhir_bundle_errors(client: TestClient, db: Database) -> None:
    await sign_in(client, COORD)
    headers = {"X-CSRF-Token": await csrf_of(client, "/journeys")}
    url = "/api/journeys/web_reminders/enrollments/fhir"
    no_offset = fhir_bundle("2030-12-02T09:00:00")
    bad = await client.post(url, json=no_offset, headers=headers)
    error = (await bad.json())["error"]
    assert bad.status == 400 and error["field"] == "entry[2].resource.start"
    assert "offset" in error["message"]
    wrong_status = fhir_bundle(status="confirmed")
    assert (await (await client.post(url, json=wrong_status, headers=headers)).json())["error"][
        "field"
    ] == "entry[2].resource.status"
    not_json = await client.post(
        url, data=b"{", headers={**headers, "Content-Type": "application/fhir+json"}
    )
    assert not_json.status == 400
    assert await enrollments(db) == 0

    unusable = fhir_bundle()
    unusable["entry"][0]["resource"]["telecom"] = []  # Avery can be reached no way
    unusable["entry"][3]["resource"]["participant"][0]["actor"]["reference"] = "Patient/unknown"
    answer = await client.post(url, json=unusable, headers=headers)
    body = await answer.json()
    assert answer.status == 422 and body["error"] == 2
    assert [(e["entry"], e["message"]) for e in body["entries"]] == [
        (2, "patient urn:uuid:3f1b2c4d-0000-4000-8000-000000000001 has no phone or email"),
        (3, "participant Patient/unknown is not a Patient entry of this bundle"),
    ]
    assert await enrollments(db) == 0
    partly = fhir_bundle()
    partly["entry"][0]["resource"]["telecom"] = []
    body = await (await client.post(url, json=partly, headers=headers)).json()
    assert (body["enrolled"], body["error"]) == (1, 1)
    nope = await client.post("/api/journeys/nope/enrollments/fhir", json=partly, headers=headers)
    assert nope.status == 404


async def test_survey_report_on_the_page(client: TestClient, db: Database, ring: KeyRing) -> None:
    discharge = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1, minutes=5)
    for n in range(1, 5):
        pid = await patient(db, ring, n)
        async with db.transaction() as session:  # surveys need an explicit opt-in
            change = consent.ConsentChange(ConsentSource.STAFF, "staff:x", "asked in person")
            session.add(
                change.record(pid, Channel.SMS, Purpose.SURVEYS, ConsentState.GRANTED, discharge)
            )
        await journeys.do_enroll(
            db, SYSTEM, "web_survey", pid, anchor_at=discharge, now=discharge, ring=ring
        )
    await dispatch(db, ring, datetime.now(UTC))
    for n, score in ((1, "10"), (2, "8"), (3, "3")):
        await text_in(db, ring, n, score)
    await sign_in(client, COORD)
    html = await (await client.get("/journeys")).text()
    assert "3 answered of 4 asked" in html and "response rate 75%" in html
    assert "NPS <strong>0.0</strong>" in html
    assert "/api/journeys/web_survey/survey.csv?from=" in html
    assert 'aria-label="Scores: 0: 0, 1: 0, 2: 0, 3: 1' in html
    old = await (await client.get("/journeys?from=2020-01-01&to=2020-01-31")).text()
    assert "0 answered of 0 asked" in old
    report = await (await client.get("/api/journeys/web_survey/survey")).json()
    assert report["questions"][0]["distribution"] == {"3": 1, "8": 1, "10": 1}
