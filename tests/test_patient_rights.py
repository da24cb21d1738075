"""A patient's right of access (`hub patient export`, the API) and erasure (`hub patient
erase`): everything out, decrypted and valid FHIR; then nothing left that can be read."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import select

from fakes.twilio import FakeTwilio, start_fake_twilio
from hub.audit import AuditEvent, verify
from hub.config import Settings
from hub.consent import queries as consent_queries
from hub.consent.actions import may_send
from hub.consent.models import ConsentState, Purpose
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, ConversationStatus
from hub.inbox import actions
from hub.inbox.models import Conversation, Patient
from hub.inbox.schemas import NewPatient
from hub.rights.actions.erase import OpenConversations, do_erase_patient
from hub.rights.actions.export import do_export_patient
from hub.rights.fhir import DEFAULT_INLINE_ATTACHMENT_BYTES
from hub.rights.models import ProviderDeletion
from tests.conftest import make_staff
from tests.rights_helpers import (
    EMAIL,
    MARKERS,
    PHONE,
    PHONE_E164,
    STAFF,
    hub_command,
    hub_environment,
    readable_markers,
    seed_patient,
)
from tests.staff_helpers import sign_in
from tests.test_phi_at_rest import _dump
from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN
from web.app import create_app


def _resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


async def test_export_holds_every_record_decrypted_as_valid_fhir(
    db: Database, ring: KeyRing
) -> None:
    seeded = await seed_patient(db, ring)
    bundle = await do_export_patient(
        db, ring, STAFF, seeded.patient_id, organization="Demo Clinic", public_url="https://h.test"
    )
    Bundle.model_validate(bundle)  # R4B's models: structure, cardinality, datatypes
    assert bundle["type"] == "collection"
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["fullUrl"] == f"urn:uuid:{resource['id']}"
    patient_ref = f"urn:uuid:{seeded.patient_id}"

    [patient] = _resources(bundle, "Patient")
    assert patient["name"] == [{"text": "Rowan Markerfield"}]
    assert {t["system"]: t["value"] for t in patient["telecom"]} == {
        "phone": PHONE_E164,
        "email": EMAIL.lower(),
    }
    assert patient["communication"][0]["language"]["coding"][0]["code"] == "en"
    assert patient["identifier"][0]["value"] == str(seeded.patient_id)

    communications = {c["id"]: c for c in _resources(bundle, "Communication")}
    assert set(communications) == {str(m) for m in seeded.messages.values()}
    for key, message_id in seeded.messages.items():
        c = communications[str(message_id)]
        assert c["payload"][0] == {"contentString": seeded.bodies[key]}  # decrypted
        assert c["subject"] == {"reference": patient_ref}
        assert c["status"] == "completed"
        assert c["sent"].endswith("Z") and c["received"].endswith("Z")
    outbound = communications[str(seeded.messages["outbound"])]
    assert outbound["recipient"] == [{"reference": patient_ref}]
    assert outbound["received"] > outbound["sent"]  # the delivery report came later
    inbound = communications[str(seeded.messages["inbound"])]
    assert inbound["sender"] == {"reference": patient_ref}
    assert inbound["medium"][0]["coding"][1]["code"] == "sms"
    voicemail = communications[str(seeded.messages["voicemail"])]
    assert voicemail["medium"][0]["coding"][0]["code"] == "PHONE"

    files = [
        p["contentAttachment"] for p in communications[str(seeded.messages["photo"])]["payload"][1:]
    ]
    small, big = sorted(files, key=lambda f: f["size"])
    assert small["contentType"] == "image/jpeg" and small["title"] == "rash.jpg"
    assert base64.b64decode(small["data"]) == b"MARKER-photo-bytes"
    assert big["size"] > DEFAULT_INLINE_ATTACHMENT_BYTES and "data" not in big
    assert big["url"].startswith("https://h.test/attachments/")

    consents = _resources(bundle, "Consent")
    assert len(consents) == 4  # STOP revokes every recorded purpose on SMS
    assert all(c["patient"] == {"reference": patient_ref} for c in consents)
    evidence = consents[0]["sourceReference"]["extension"][0]["valueReference"]["reference"]
    assert evidence == f"urn:uuid:{seeded.messages['inbound']}"  # points inside the bundle

    [appointment] = _resources(bundle, "Appointment")
    assert appointment["participant"][0]["actor"] == {"reference": patient_ref}
    answers = {
        q["item"][0]["linkId"]: q["item"][0]["answer"][0]
        for q in _resources(bundle, "QuestionnaireResponse")
    }
    assert answers == {
        "score": {"valueInteger": 9},
        "comment": {"valueString": "MARKER-survey loved the nurse"},
    }

    async with db.reader() as session:
        event = (
            await session.scalars(select(AuditEvent).where(AuditEvent.action == "patient.export"))
        ).one()
    assert event.subject_id == str(seeded.patient_id)
    assert event.detail["counts"]["messages"] == 4
    assert not any(m in json.dumps(event.detail) for m in MARKERS)


@pytest.fixture
def admin_web(settings: Settings) -> Settings:
    return replace(settings, public_url="http://127.0.0.1")


async def test_admins_export_over_the_api_and_agents_are_told_nothing(
    db: Database, ring: KeyRing, admin_web: Settings, aiohttp_client: Any, fresh_redis: None
) -> None:
    client: TestClient = await aiohttp_client(create_app(replace(admin_web, keys=ring), db=db))
    seeded = await seed_patient(db, ring)
    await make_staff(db, "ada.admin@demo-clinic.example.org", role="admin")
    await make_staff(db, "alex.agent@demo-clinic.example.org", role="agent")

    await sign_in(client, "alex.agent@demo-clinic.example.org")
    refused = await client.get(f"/api/patients/{seeded.patient_id}/export")
    assert refused.status == 404
    await client.post("/logout", allow_redirects=False)

    await sign_in(client, "ada.admin@demo-clinic.example.org")
    response = await client.get(f"/api/patients/{seeded.patient_id}/export")
    assert response.status == 200, await response.text()
    assert response.content_type == "application/fhir+json"
    assert response.headers["Cache-Control"] == "no-store"
    bundle = await response.json()
    Bundle.model_validate(bundle)
    texts = [c["payload"][0]["contentString"] for c in _resources(bundle, "Communication")]
    assert sorted(texts) == sorted(seeded.bodies.values())
    missing = await client.get("/api/patients/00000000-0000-7000-8000-0000000000aa/export")
    assert missing.status == 404
    async with db.reader() as session:
        actors = (
            await session.scalars(
                select(AuditEvent.actor).where(AuditEvent.action == "patient.export")
            )
        ).all()
    assert len(actors) == 1 and actors[0].startswith("staff:")


async def test_erase_refuses_while_a_conversation_is_open_and_changes_nothing(
    db: Database, ring: KeyRing
) -> None:
    seeded = await seed_patient(db, ring)
    with pytest.raises(OpenConversations, match="resolve it first, or erase anyway with --force"):
        await do_erase_patient(db, STAFF, seeded.patient_id)
    assert [
        p.id for p in await actions.do_find_patients_by_phone(db, ring, STAFF, PHONE, region="US")
    ] == [seeded.patient_id]
    async with db.transaction() as session:
        conversation = await session.get(Conversation, seeded.conversation_id)
        assert conversation is not None
        conversation.status = ConversationStatus.RESOLVED
    done = await do_erase_patient(db, STAFF, seeded.patient_id)  # resolved: no --force needed
    assert done.counts["messages"] == 4


async def test_an_erased_patients_opt_out_outlives_them(db: Database, ring: KeyRing) -> None:
    seeded = await seed_patient(db, ring)
    done = await do_erase_patient(db, STAFF, seeded.patient_id, force=True)
    assert done.suppressions == 4  # SMS: care, reminders, surveys, marketing
    # The clinic's system still lists them: a re-import makes a new patient, same number.
    again = await actions.do_create_patient(
        db, ring, STAFF, NewPatient(name="Rowan M.", phone=PHONE, email=EMAIL), region="US"
    )
    async with db.reader() as session:
        patient = await session.get(Patient, again)
        assert patient is not None
        sms = await may_send(session, patient, Channel.SMS, Purpose.REMINDERS)
        mail = await may_send(session, patient, Channel.EMAIL, Purpose.CARE)
        # Journey batches read many patients' consents at once: the same answer there.
        batch = await consent_queries.latest_records_of(session, [again])
    assert batch[(again, Channel.SMS)][Purpose.REMINDERS].state is ConsentState.REVOKED
    assert (again, Channel.EMAIL) not in batch
    assert sms.code == "opted_out" and "by replying STOP" in sms.reason
    assert mail.code != "opted_out"  # they never opted out of email


@pytest.mark.slow
async def test_hub_patient_export_and_erase_leave_nothing_readable(
    committed_db: Database, fresh_db_url: str, settings: Settings, ring: KeyRing, tmp_path: Path
) -> None:
    settings = replace(settings, database_url=fresh_db_url, keys=ring)
    seeded = await seed_patient(committed_db, ring)
    other = await seed_patient(
        committed_db,
        ring,
        name="Sasha Keepwell",
        phone="+1 555 013 9911",
        email="sasha.keepwell@example.org",
        marker="KEEP-",
    )
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    runner, base = await start_fake_twilio(fake)
    fake.add_recording(seeded.recording_sid)
    fake.add_recording(other.recording_sid)
    env = hub_environment(
        settings,
        tmp_path,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_API_BASE=base,
    )
    try:
        out = tmp_path / "export.json"
        code, _, err = await hub_command(
            env, "patient", "export", str(seeded.patient_id), "--out", str(out)
        )
        assert code == 0, err
        assert os.stat(out).st_mode & 0o077 == 0  # PHI in clear: the operator's eyes only
        bundle = json.loads(out.read_text())
        Bundle.model_validate(bundle)
        assert len(_resources(bundle, "Communication")) == 4

        code, _, err = await hub_command(env, "patient", "erase", str(seeded.patient_id))
        assert code == 1
        assert "1 conversation staff have not resolved" in err and "--force" in err
        assert "Traceback" not in err
        assert await readable_markers(committed_db, ring) != []  # nothing was erased

        code, said, err = await hub_command(
            env, "patient", "erase", str(seeded.patient_id), "--force"
        )
        assert code == 0, err
        assert f"patient {seeded.patient_id} erased" in said
        assert "recordings at Twilio: 1 deleted now" in said
    finally:
        await runner.cleanup()

    assert fake.deleted_recordings == [seeded.recording_sid]
    assert fake.has_recording(other.recording_sid)
    assert await readable_markers(committed_db, ring) == []
    kept = await readable_markers(committed_db, ring, ("Keepwell", "KEEP-"))
    assert "inbox_message.body_enc" in kept  # the other patient is untouched
    await committed_db.dispose()
    dump = _dump(fresh_db_url)
    for marker in MARKERS:
        assert marker.encode() not in dump
    assert (
        await actions.do_find_patients_by_phone(committed_db, ring, STAFF, PHONE, region="US") == []
    )
    assert await actions.do_find_patients_by_email(committed_db, ring, STAFF, EMAIL) == []
    async with committed_db.reader() as session:
        assert await session.get(Patient, seeded.patient_id) is None
        [tombstone] = (
            await session.scalars(select(AuditEvent).where(AuditEvent.action == "patient.erase"))
        ).all()
        deletion = (await session.scalars(select(ProviderDeletion))).one()
        result = await verify(session)
    assert tombstone.subject_id == str(seeded.patient_id)
    assert tombstone.actor == "system:cli:patient-erase"
    assert tombstone.detail["counts"]["messages"] == 4
    assert tombstone.detail["counts"]["attachments"] == 3
    assert tombstone.detail["forced_open_conversations"] == 1
    assert deletion.done_at is not None and deletion.resource_sid == seeded.recording_sid
    assert result.ok
    code, said, err = await hub_command(env, "audit", "verify")
    assert code == 0 and "audit chain intact" in said, err
    code, _, err = await hub_command(env, "patient", "erase", str(seeded.patient_id), "--force")
    assert code == 1 and "already erased" in err
