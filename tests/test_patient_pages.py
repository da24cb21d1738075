"""The patient API and pages through real HTTP: search (JSON and the htmx fragment), read and
edit a profile with the cohort import's validation, merge an unknown number and undo it,
start a conversation through the consent gate (409 with the reason, nothing written), cancel
an enrollment; every read and change audited without PHI."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from hub.audit import Actor, AuditEvent
from hub.channels.base import InboundMessage
from hub.config import Settings
from hub.consent import actions as consent
from hub.consent.models import RECORDED_PURPOSES, ConsentRecord, ConsentSource
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel
from hub.inbox import actions
from hub.inbox.models import Conversation, Message, Patient
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.models import Enrollment, RunStatus, StepRun
from hub.outbox import OutboxEvent
from tests.conftest import make_staff, stored_rows
from tests.staff_helpers import csrf_of, sign_in
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fresh_redis")

SYSTEM = Actor.system("test")
ADMIN = "ada.admin@demo-clinic.example.org"
AGENT = "alex.agent@demo-clinic.example.org"
JOURNEY = """\
key: desk_reminders
name: Desk reminders
purpose: reminders
anchor: appointment_start
steps:
  - {id: sms_24h, offset: -24h, template: appointment_reminder, channel: sms}
"""


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    return replace(settings, public_url="http://127.0.0.1")


@pytest.fixture
async def client(db: Database, web_settings: Settings, aiohttp_client: Any) -> TestClient:
    await make_staff(db, ADMIN, role="admin", teams=("front",))
    await make_staff(db, AGENT, role="agent", teams=("front",))
    return await aiohttp_client(create_app(web_settings, db=db))  # type: ignore[no-any-return]


async def signed_in(client: TestClient, email: str) -> dict[str, str]:
    response = await sign_in(client, email)
    assert response.status == 303
    return {"X-CSRF-Token": await csrf_of(client, "/account")}


async def patient(db: Database, ring: KeyRing, name: str, phone: str) -> uuid.UUID:
    new = NewPatient(name=name, phone=phone, verified=True, time_zone="America/New_York")
    return await actions.do_create_patient(db, ring, SYSTEM, new, region="US")


async def text_in(db: Database, ring: KeyRing, phone: str, body: str) -> uuid.UUID:
    message = InboundMessage(
        "twilio_sms", "SM" + uuid.uuid4().hex, Channel.SMS, phone, "+15550109999", body
    )
    result = await actions.do_receive_inbound(db, ring, message, {}, help_text="help")
    assert result.patient_id is not None
    return result.patient_id


async def opt_out(db: Database, patient_id: uuid.UUID) -> None:
    change = consent.ConsentChange(ConsentSource.STAFF, "test", "asked by phone")
    async with db.transaction() as session:
        await consent.revoke_channel(session, patient_id, Channel.SMS, change)


async def audit_rows(db: Database, action: str) -> list[AuditEvent]:
    async with db.reader() as session:
        stmt = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        return list((await session.scalars(stmt)).all())


async def test_search_api_and_fragment(client: TestClient, db: Database, ring: KeyRing) -> None:
    pid = await patient(db, ring, "Zoë Quintero", "+15550100121")
    await signed_in(client, ADMIN)
    response = await client.get("/api/patients", params={"q": "zoe quin"})
    assert response.status == 200
    body = await response.json()
    assert [i["id"] for i in body["items"]] == [str(pid)] and body["by"] == ["name"]
    assert body["items"][0]["phone"] == "+15550100121"

    fragment = await client.get("/patients/search?q=555-010-0121", headers={"HX-Request": "true"})
    html = await fragment.text()
    assert fragment.status == 200 and html.lstrip().startswith("<ul")
    assert "Zoë Quintero" in html and "<html" not in html
    empty = await client.get("/patients/search?q=", headers={"HX-Request": "true"})
    assert "<li" not in await empty.text()  # an empty box shows no list and no "no patients"
    # Without htmx the address opens the list page with the same query.
    page = await client.get("/patients/search?q=zoe", allow_redirects=False)
    assert page.status == 303 and page.headers["Location"] == "/patients?q=zoe"
    full = await client.get("/patients?q=zoe")
    assert "Zoë Quintero" in await full.text()

    (event,) = [
        e for e in await audit_rows(db, "patient.search") if str(pid) in e.detail["matches"]
    ][:1]
    assert "zo" not in str(event.detail).lower()


async def test_profile_edit_validates_like_the_cohort_import(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    pid = await patient(db, ring, "Avery Sample", "+15550100122")
    headers = await signed_in(client, ADMIN)
    url = f"/api/patients/{pid}"

    bad = await client.patch(url, json={"phone": "138 0013 8000"}, headers=headers)
    assert bad.status == 422
    assert "not a valid number in United States" in (await bad.json())["error"]["message"]
    bad = await client.patch(url, json={"language": "SPA"}, headers=headers)
    assert bad.status == 422 and "not a language code" in (await bad.json())["error"]["message"]
    bad = await client.patch(url, json={"time_zone": "Mars/Olympus"}, headers=headers)
    assert bad.status == 422 and "not a zone name" in (await bad.json())["error"]["message"]
    bad = await client.patch(url, json={"colour": "red"}, headers=headers)
    assert bad.status == 422 and "unknown field colour" in (await bad.json())["error"]["message"]

    ok = await client.patch(
        url,
        json={
            "name": "Avery Renamed",
            "phone": "138 0013 8000",
            "country": "China",
            "language": "es",
            "time_zone": "Europe/Madrid",
            "channel_order": ["email", "sms"],
            "tags": ["VIP"],
            "external_ids": [{"system": "MRN", "value": "A-77"}],
        },
        headers=headers,
    )
    assert ok.status == 200, await ok.text()
    read = await (await client.get(url)).json()
    card = read["card"]
    assert (card["name"], card["phone"], card["language"]) == (
        "Avery Renamed",
        "+8613800138000",
        "es",
    )
    assert card["channel_order"] == ["email", "sms"] and card["tags"] == ["vip"]
    assert read["external_ids"] == [{"system": "MRN", "value": "A-77"}]

    # Another patient's number is refused: the intake would not know whose a text is.
    other = await patient(db, ring, "Blake Placeholder", "+15550100123")
    clash = await client.patch(
        f"/api/patients/{other}", json={"phone": "+86 138 0013 8000"}, headers=headers
    )
    assert clash.status == 409 and "merge" in (await clash.json())["error"]["message"]

    (update, *_) = await audit_rows(db, "patient.update")
    assert update.subject_id == str(pid)
    assert set(update.detail["fields"]) >= {"name", "phone", "external_ids"}
    assert "Avery" not in str(update.detail) and "138" not in str(update.detail)


async def test_agents_see_contact_in_part_and_cannot_edit_strangers(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    pid = await patient(db, ring, "Casey Fictional", "+15550100124")
    headers = await signed_in(client, AGENT)
    read = await (await client.get(f"/api/patients/{pid}")).json()
    assert read["contact_masked"] and read["card"]["phone"] == "+1 ••• ••• ••24"
    refused = await client.patch(f"/api/patients/{pid}", json={"name": "X"}, headers=headers)
    assert refused.status == 403 and "admin" in (await refused.json())["error"]["message"]
    page = await client.get(f"/patients/{pid}")
    html = await page.text()
    assert page.status == 200 and "+15550100124" not in html and "shown in part" in html


async def test_start_a_conversation_through_the_consent_gate(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    pid = await patient(db, ring, "Devon Testperson", "+15550100125")
    headers = await signed_in(client, AGENT)
    url = f"/api/patients/{pid}/conversations"
    started = await client.post(url, json={"channel": "sms", "body": "Hello"}, headers=headers)
    assert started.status == 202, await started.text()
    data = await started.json()
    async with db.reader() as session:
        conversation = await session.get(Conversation, uuid.UUID(data["conversation_id"]))
        assert conversation is not None and conversation.team_id is not None
        assert conversation.status.value == "pending" and conversation.patient_id == pid
    # Now the agent shares a conversation with the patient: the number is theirs to see.
    read = await (await client.get(f"/api/patients/{pid}")).json()
    assert read["card"]["phone"] == "+15550100125" and len(read["conversations"]) == 1
    (hit,) = (await (await client.get("/api/patients", params={"q": "devon"})).json())["items"]
    assert hit["phone"] == "+15550100125" and not hit["contact_masked"]
    assert [c["team"] for c in hit["conversations"]] == ["front"]

    await opt_out(db, pid)
    before = await stored_rows(db)
    refused = await client.post(url, json={"channel": "sms", "body": "Again"}, headers=headers)
    problem = (await refused.json())["error"]
    assert refused.status == 409 and problem["code"] and "opted out" in problem["message"]
    assert await stored_rows(db) == before  # nothing written, nothing queued for a provider

    email = await client.post(url, json={"channel": "email", "body": "Hi"}, headers=headers)
    assert email.status == 422 and "email is not set up" in (await email.json())["error"]["message"]


async def test_merge_an_unknown_number_and_undo_it(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    target = await patient(db, ring, "Emery Example", "+15550100126")
    source = await text_in(db, ring, "+15550100127", "this is Emery on my work phone")
    await opt_out(db, source)
    headers = await signed_in(client, ADMIN)

    refused = await client.post(
        f"/api/patients/{source}/merge", json={"source_id": str(target)}, headers=headers
    )
    assert refused.status == 409 and "known patient" in (await refused.json())["error"]["message"]

    merged = await client.post(
        f"/api/patients/{target}/merge", json={"source_id": str(source)}, headers=headers
    )
    assert merged.status == 200, await merged.text()
    result = await merged.json()
    assert result["moved"]["conversations"] == 1
    assert result["moved"]["consent_records"] == len(RECORDED_PURPOSES)
    async with db.reader() as session:
        moved = await session.scalar(
            select(func.count()).select_from(Conversation).where(Conversation.patient_id == target)
        )
        revoked = await session.scalar(
            select(func.count())
            .select_from(ConsentRecord)
            .where(ConsentRecord.patient_id == target)
        )
        events = (await session.scalars(select(OutboxEvent))).all()
    assert moved == 1 and revoked == len(RECORDED_PURPOSES)
    assert any(e.payload.get("patient_changed") for e in events)
    # The unknown number's record is out of search; the number finds the patient it joined.
    found = await (await client.get("/api/patients", params={"q": "555 010 0127"})).json()
    assert [i["id"] for i in found["items"]] == []
    # A new text from that number is the target's (the target had a phone: its own stays).
    target_view = await (await client.get(f"/api/patients/{target}")).json()
    assert target_view["card"]["phone"] == "+15550100126"
    assert target_view["merges"][0]["moved"]["conversations"] == 1

    agent_headers = await signed_in(client, AGENT)
    undo_url = f"/api/patients/{target}/merges/{result['merge_id']}/undo"
    nope = await client.post(undo_url, headers=agent_headers)
    assert nope.status == 403 and "admin" in (await nope.json())["error"]["message"]

    headers = await signed_in(client, ADMIN)
    undone = await client.post(undo_url, headers=headers)
    assert undone.status == 200
    async with db.reader() as session:
        back = await session.get(Patient, source)
        assert back is not None and back.merged_into_id is None and back.phone_bidx is not None
        owners = {c.patient_id for c in (await session.scalars(select(Conversation))).all()}
        revoked = await session.scalar(
            select(func.count())
            .select_from(ConsentRecord)
            .where(ConsentRecord.patient_id == source)
        )
    assert owners == {source} and revoked == len(RECORDED_PURPOSES)
    again = await client.post(undo_url, headers=headers)
    assert again.status == 409 and "undone already" in (await again.json())["error"]["message"]
    actions_seen = {e.action for e in await audit_rows(db, "patient.merge")}
    actions_seen |= {e.action for e in await audit_rows(db, "patient.merge.undo")}
    assert actions_seen == {"patient.merge", "patient.merge.undo"}


async def test_cancel_this_enrollment(client: TestClient, db: Database, ring: KeyRing) -> None:
    from datetime import UTC, datetime, timedelta

    from hub.templates.actions import do_seed_templates

    await do_seed_templates(db)
    await journeys.do_install_journey(db, SYSTEM, JOURNEY, "desk.yaml")
    pid = await patient(db, ring, "Finley Madeup", "+15550100128")
    enrolled = await journeys.do_enroll(
        db, SYSTEM, "desk_reminders", pid, anchor_at=datetime.now(UTC) + timedelta(days=3)
    )
    headers = await signed_in(client, ADMIN)
    view = await (await client.get(f"/api/patients/{pid}")).json()
    (line,) = view["enrollments"]
    assert line["status"] == "active" and line["pending_steps"] == 1
    url = f"/api/patients/{pid}/enrollments/{enrolled.enrollment_id}/cancel"
    done = await client.post(url, headers=headers)
    assert done.status == 200 and (await done.json())["steps_cancelled"] == 1
    async with db.reader() as session:
        enrollment = await session.get(Enrollment, enrolled.enrollment_id)
        runs = (await session.scalars(select(StepRun))).all()
    assert enrollment is not None and enrollment.status.value == "cancelled"
    assert [r.status for r in runs] == [RunStatus.CANCELLED]
    again = await client.post(url, headers=headers)
    assert again.status == 409 and "cancelled already" in (await again.json())["error"]["message"]


async def test_patient_page_edit_and_start_by_form(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    pid = await patient(db, ring, "Gray Synthetic", "+15550100129")
    await signed_in(client, ADMIN)
    csrf = await csrf_of(client, f"/patients/{pid}")
    page = await client.get(f"/patients/{pid}")
    html = await page.text()
    assert page.status == 200 and "Gray Synthetic" in html and 'id="start-channels"' in html
    saved = await client.post(
        f"/patients/{pid}",
        data={
            "csrf_token": csrf,
            "name": "Gray Synthetic",
            "phone": "+15550100129",
            "email": "not-an-address",
            "language": "en",
            "time_zone": "America/New_York",
            "channel_order": "sms",
        },
    )
    assert saved.status == 422 and "Not saved: not an email address" in await saved.text()
    sent = await client.post(
        f"/patients/{pid}/conversations",
        data={"csrf_token": csrf, "channel": "sms", "body": "Your results are ready"},
        allow_redirects=False,
    )
    assert sent.status == 303 and sent.headers["Location"].startswith("/conversations/")
    async with db.reader() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 1
    page = await client.get(f"/patients/{pid}", params={"mq": "RESULTS"})
    html = await page.text()
    assert page.status == 200 and "1 message found among the 1 read" in html
    assert "Your results are ready" in html


async def test_the_list_pages_newest_first(
    client: TestClient, db: Database, ring: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [await patient(db, ring, f"Page Person{n}", f"+1555010014{n}") for n in range(3)]
    await signed_in(client, ADMIN)
    first = await (await client.get("/api/patients", params={"limit": "2"})).json()
    assert [i["id"] for i in first["items"]] == [str(ids[2]), str(ids[1])]
    assert first["more"] and first["next_before"] == str(ids[1])
    rest = await (
        await client.get("/api/patients", params={"limit": "2", "before": first["next_before"]})
    ).json()
    assert [i["id"] for i in rest["items"]] == [str(ids[0])] and rest["next_before"] is None
    bad = await client.get("/api/patients", params={"limit": "0"})
    assert bad.status == 400 and "between 1 and 100" in (await bad.json())["error"]["message"]
    # The page: "Older patients" follows the last one shown.
    monkeypatch.setattr("hub.patients.profile.DEFAULT_LIST_LIMIT", 2)
    html = await (await client.get("/patients?status=known")).text()
    assert "Page Person2" in html and "Page Person0" not in html
    assert f'href="/patients?status=known&amp;before={ids[1]}">Older patients' in html
    older = await (await client.get(f"/patients?status=known&before={ids[1]}")).text()
    assert "Page Person0" in older and "Older patients" not in older
