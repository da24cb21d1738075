"""A patient's consent history exports as FHIR R4 Consent resources that validate.

Structure, cardinality and datatypes are checked by fhir.resources' R4B models (R4B's Consent
and Bundle are structurally R4's; fhir.resources 8 ships no R4 package). What those models
leave unchecked is checked here too: required code bindings, reference target types, and the
Consent invariants ppc-1..ppc-5 and the root/nested ``provision.type`` rule.
"""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.consent import Consent
from pydantic import BaseModel
from sqlalchemy import select

from hub.audit import Actor, AuditEvent
from hub.consent.actions import (
    ConsentChange,
    do_record_consent,
    restore_channel,
    revoke_channel,
)
from hub.consent.fhir import (
    ALTERNATE_REFERENCE,
    CHANNEL_SYSTEM,
    POLICY_SYSTEM,
    PURPOSE_OF_USE_SYSTEM,
    PURPOSE_SYSTEM,
    SOURCE_EXTENSION,
    bundle,
    consent_resources,
    do_export_consents,
)
from hub.consent.models import ConsentRecord, ConsentSource, ConsentState, Purpose
from hub.consent.rules import ConsentPolicy
from hub.crypto import KeyRing
from hub.db import Database, new_id
from hub.enums import Channel, Direction, MessageStatus
from hub.inbox import actions
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Message
from hub.inbox.schemas import NewPatient
from tests.conftest import make_staff

PRIVACY_SCOPES = {"patient-privacy", "research", "adr", "treatment"}
"""Scopes whose invariant (ppc-2..ppc-5) requires a patient."""


def _binding_problems(model: BaseModel, path: str = "") -> list[str]:
    """Required-binding codes and reference target types, which fhir.resources records in
    each field's schema but does not enforce."""
    problems: list[str] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None:
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        allowed_codes = extra.get("enum_values")
        if isinstance(allowed_codes, list) and value not in allowed_codes:
            problems.append(f"{path}{name}: {value!r} is not one of {allowed_codes}")
        allowed_types = extra.get("enum_reference_types")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(allowed_types, list) and "Resource" not in allowed_types:
                ref = getattr(item, "reference", None) or ""
                target = getattr(item, "type", None) or (
                    ref.split("/")[0] if "/" in ref and not ref.startswith("urn:") else None
                )
                if target is not None and target not in allowed_types:
                    problems.append(f"{path}{name}: may not refer to {target}")
            if isinstance(item, BaseModel):
                problems.extend(_binding_problems(item, f"{path}{name}."))
    return problems


def _invariant_problems(resource: dict[str, Any]) -> list[str]:
    problems = []
    if not (resource.get("policy") or resource.get("policyRule")):
        problems.append("ppc-1: neither policy nor policyRule")
    scopes = {c["code"] for c in resource["scope"].get("coding", [])}
    if scopes & PRIVACY_SCOPES and "patient" not in resource:
        problems.append("ppc-2..5: this scope needs a patient")
    root = resource.get("provision", {})
    if "type" in root:
        problems.append("provision.type is not permitted in the root rule")
    nested = list(root.get("provision", []))
    while nested:
        rule = nested.pop()
        if rule.get("type") not in ("permit", "deny"):
            problems.append("provision.type is required in every nested rule")
        nested.extend(rule.get("provision", []))
    return problems


def assert_valid_consent(resource: dict[str, Any]) -> Consent:
    model = Consent.model_validate(resource)
    assert _binding_problems(model) == []
    assert _invariant_problems(resource) == []
    return model


def assert_valid_bundle(doc: dict[str, Any]) -> None:
    json.loads(json.dumps(doc))  # plain JSON: no datetimes or UUIDs left in
    model = Bundle.model_validate(doc)
    assert _binding_problems(model) == []
    entries = doc.get("entry", [])
    assert len({e["fullUrl"] for e in entries}) == len(entries)  # bdl-7
    for entry in entries:
        assert_valid_consent(entry["resource"])


async def _new_patient(db: Database, ring: KeyRing, n: int) -> uuid.UUID:
    return await actions.do_create_patient(
        db,
        ring,
        Actor.system("test"),
        NewPatient(
            name=f"Synthetic Patient {n}",
            phone=f"+1555010{n:04d}",
            email=f"synthetic{n}@example.org",
            verified=True,
        ),
        region="US",
    )


async def _inbound(db: Database, ring: KeyRing, patient_id: uuid.UUID, body: str) -> uuid.UUID:
    return await actions.do_record_inbound(
        db,
        ring,
        patient_id,
        Channel.SMS,
        body,
        provider="twilio_sms",
        provider_message_id=f"SM{uuid.uuid4().hex}",
    )


async def _failed_outbound(db: Database, conversation_of: uuid.UUID) -> uuid.UUID:
    async with db.transaction() as session:
        inbound = await session.get(Message, conversation_of)
        assert inbound is not None
        message = Message(
            conversation_id=inbound.conversation_id,
            direction=Direction.OUTBOUND,
            channel=Channel.SMS,
            provider="twilio_sms",
            provider_message_id=f"SM{uuid.uuid4().hex}",
            status=MessageStatus.FAILED,
            error_code="21610",
            purpose="reminders",
        )
        session.add(message)
        await session.flush()
        return message.id


def _by_key(resources: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in resources:
        channel = r["provision"]["action"][0]["coding"][0]["code"]
        purpose = r["provision"]["purpose"][0]["code"]
        found.setdefault((channel, purpose), []).append(r)
    return found


def _decision(resource: dict[str, Any]) -> str | None:
    nested = resource["provision"].get("provision")
    return None if nested is None else nested[0]["type"]


async def test_export_keeps_the_whole_history_as_valid_fhir(db: Database, ring: KeyRing) -> None:
    patient_id = await _new_patient(db, ring, 1)
    staff = await make_staff(db, "casey.agent@demo-clinic.example.org")
    await do_record_consent(
        db, staff, patient_id, Channel.EMAIL, [Purpose.SURVEYS], ConsentState.GRANTED, "phone"
    )
    stop_id = await _inbound(db, ring, patient_id, "STOP")
    async with db.transaction() as session:
        change = ConsentChange(ConsentSource.KEYWORD, f"patient:{patient_id}", "STOP", stop_id)
        await revoke_channel(session, patient_id, Channel.SMS, change)
    start_id = await _inbound(db, ring, patient_id, "START")
    async with db.transaction() as session:
        change = ConsentChange(ConsentSource.KEYWORD, f"patient:{patient_id}", "START", start_id)
        await restore_channel(session, patient_id, Channel.SMS, change)
    failed_id = await _failed_outbound(db, start_id)
    async with db.transaction() as session:
        change = ConsentChange(
            ConsentSource.PROVIDER, "provider:twilio_sms", "error 21610", failed_id
        )
        await revoke_channel(session, patient_id, Channel.SMS, change)

    viewer = Actor.staff(staff.staff_id)
    doc = await do_export_consents(db, viewer, patient_id)

    assert_valid_bundle(doc)
    assert doc["type"] == "collection"
    resources = [e["resource"] for e in doc["entry"]]
    # 1 staff grant + 4 STOP + 4 START (care, reminders granted; surveys, marketing back to
    # unknown) + 4 provider revocations: nothing overwritten, oldest first.
    assert len(resources) == 13
    times = [r["dateTime"] for r in resources]
    assert times == sorted(times)
    assert all(r["patient"] == {"reference": f"Patient/{patient_id}"} for r in resources)
    assert all(r["provision"]["period"]["start"] == r["dateTime"] for r in resources)

    by_key = _by_key(resources)
    for purpose in ("care", "reminders", "surveys", "marketing"):
        stop, start, provider = by_key[("sms", purpose)]
        assert [stop["status"], start["status"], provider["status"]] == [
            "inactive",
            "inactive",
            "active",
        ]
        assert _decision(stop) == "deny" and _decision(provider) == "deny"
        # each superseded record ends where the next one begins
        assert stop["provision"]["period"]["end"] == start["dateTime"]
        assert start["provision"]["period"]["end"] == provider["dateTime"]
        assert "end" not in provider["provision"]["period"]
        assert stop["performer"] == [{"reference": f"Patient/{patient_id}"}]
        assert stop["sourceReference"]["display"] == "STOP"
        assert stop["sourceReference"]["extension"] == [
            {
                "url": ALTERNATE_REFERENCE,
                "valueReference": {
                    "reference": f"Communication/{stop_id}",
                    "type": "Communication",
                },
            }
        ]
        assert provider["sourceReference"]["display"] == "error 21610"
        assert provider["sourceReference"]["extension"][0]["valueReference"]["reference"] == (
            f"Communication/{failed_id}"
        )
        assert provider["performer"][0]["type"] == "Organization"
        assert provider["performer"][0]["identifier"]["value"] == "twilio_sms"
        assert provider["extension"][0]["url"] == SOURCE_EXTENSION
        assert provider["extension"][0]["valueCoding"]["code"] == "provider"

    # START: care and reminders granted again; surveys and marketing had never been granted,
    # so they go back to "no choice" and the opt-in base rule decides.
    assert _decision(by_key[("sms", "care")][1]) == "permit"
    assert _decision(by_key[("sms", "surveys")][1]) is None
    assert by_key[("sms", "surveys")][1]["policyRule"]["coding"][0]["code"] == "opt-in"
    assert by_key[("sms", "care")][1]["policyRule"]["coding"][0]["code"] == "opt-out"

    [email_grant] = by_key[("email", "surveys")]
    assert email_grant["status"] == "active" and _decision(email_grant) == "permit"
    assert email_grant["performer"] == [{"reference": f"Practitioner/{staff.staff_id}"}]
    assert email_grant["sourceReference"] == {"display": "patient asked on the phone"}
    assert email_grant["extension"][0]["valueCoding"]["code"] == "staff"
    action = email_grant["provision"]["action"][0]["coding"][0]
    assert (action["system"], action["code"]) == (CHANNEL_SYSTEM, "email")
    purposes = {(c["system"], c["code"]) for c in email_grant["provision"]["purpose"]}
    assert purposes == {(PURPOSE_SYSTEM, "surveys"), (PURPOSE_OF_USE_SYSTEM, "HOPERAT")}
    assert email_grant["policyRule"]["coding"][0]["system"] == POLICY_SYSTEM

    async with db.reader() as session:
        event = (
            await session.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == "consent.export",
                    AuditEvent.subject_id == str(patient_id),
                )
            )
        ).one()
    assert event.actor == str(viewer)
    assert (event.subject_type, event.subject_id) == ("patient", str(patient_id))
    assert event.detail == {"consent_ids": [r["id"] for r in resources]}
    detail = json.dumps(event.detail)
    for phi in ("Synthetic Patient", "5550100001", "synthetic1@example.org", "STOP", "21610"):
        assert phi not in detail


async def test_a_patient_without_records_exports_an_empty_bundle(
    db: Database, ring: KeyRing
) -> None:
    patient_id = await _new_patient(db, ring, 2)
    doc = await do_export_consents(db, Actor.staff(new_id()), patient_id)
    assert_valid_bundle(doc)
    assert "entry" not in doc  # FHIR JSON has no empty arrays


async def test_unknown_patient_is_not_found_and_not_audited(db: Database) -> None:
    with pytest.raises(NotFound):
        await do_export_consents(db, Actor.staff(new_id()), new_id())
    async with db.reader() as session:
        events = await session.scalars(
            select(AuditEvent).where(AuditEvent.action == "consent.export")
        )
        assert events.all() == []


def _record(
    patient_id: uuid.UUID,
    channel: Channel = Channel.SMS,
    purpose: Purpose = Purpose.SURVEYS,
    state: ConsentState = ConsentState.GRANTED,
    source: ConsentSource = ConsentSource.WEB_FORM,
    *,
    actor: str | None = None,
    evidence: str = "web form",
    message_id: uuid.UUID | None = None,
    at: datetime | None = None,
) -> ConsentRecord:
    return ConsentRecord(
        id=new_id(),
        patient_id=patient_id,
        channel=channel,
        purpose=purpose,
        state=state,
        source=source,
        actor=actor or f"patient:{patient_id}",
        evidence=evidence,
        evidence_message_id=message_id,
        created_at=at or datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
    )


def test_every_channel_purpose_state_and_source_validates() -> None:
    """The export's input space is small and closed, so tests can cover all of it."""
    patient_id = new_id()
    actors = ["patient:{p}", f"staff:{new_id()}", f"api:{new_id()}", "provider:twilio_sms", "t"]
    combos = itertools.product(Channel, Purpose, ConsentState, ConsentSource)
    for n, (channel, purpose, state, source) in enumerate(combos):
        rec = _record(
            patient_id,
            channel,
            purpose,
            state,
            source,
            actor=actors[n % len(actors)].format(p=patient_id),
            evidence=["STOP", "", "error 21610"][n % 3],
            message_id=new_id() if n % 2 else None,
        )
        [resource] = consent_resources(patient_id, [rec])
        assert_valid_consent(resource)
        assert resource["status"] == "active"
        assert _decision(resource) == {"granted": "permit", "revoked": "deny"}.get(state.value)


def test_latest_unknown_is_active_and_defers_to_the_clinic_policy() -> None:
    patient_id = new_id()
    granted = _record(patient_id, at=datetime(2026, 3, 1, tzinfo=UTC))
    unknown = _record(
        patient_id,
        state=ConsentState.UNKNOWN,
        source=ConsentSource.IMPORT,
        actor="system:import",
        evidence="import batch 7",
        at=datetime(2026, 3, 2, tzinfo=UTC),
    )
    first, latest = consent_resources(patient_id, [unknown, granted])  # any order in
    assert (first["id"], latest["id"]) == (str(granted.id), str(unknown.id))
    assert first["status"] == "inactive" and latest["status"] == "active"
    assert "provision" not in latest["provision"]  # no decision: the base rule applies
    assert latest["policyRule"]["coding"][0]["code"] == "opt-in"
    assert latest["performer"] == [{"display": "system:import"}]
    assert "no choice on record" in latest["text"]["div"]

    lenient = ConsentPolicy(opt_in_required=frozenset({Purpose.MARKETING}))
    _, latest = consent_resources(patient_id, [granted, unknown], policy=lenient)
    assert latest["policyRule"]["coding"][0]["code"] == "opt-out"


def test_patient_reference_and_custodian_can_be_named() -> None:
    patient_id = new_id()
    rec = _record(patient_id, evidence="<script>", at=datetime.now(UTC) - timedelta(days=1))
    doc = bundle(
        patient_id,
        [rec],
        patient_reference="Patient/ehr-4711",
        organization="Organization/clinic-1",
        timestamp=datetime(2026, 3, 2, 12, 0, tzinfo=UTC),
    )
    assert_valid_bundle(doc)
    [entry] = doc["entry"]
    consent = entry["resource"]
    assert entry["fullUrl"] == f"urn:uuid:{rec.id}"
    assert doc["timestamp"] == "2026-03-02T12:00:00Z"
    assert consent["patient"] == {"reference": "Patient/ehr-4711"}
    assert consent["performer"] == [{"reference": "Patient/ehr-4711"}]
    assert consent["organization"] == [{"reference": "Organization/clinic-1"}]
    assert "&lt;script&gt;" in consent["text"]["div"]
    named = consent_resources(patient_id, [rec], organization="Synthetic Family Clinic")
    assert named[0]["organization"] == [{"display": "Synthetic Family Clinic"}]


def test_records_of_another_patient_are_refused() -> None:
    with pytest.raises(ValueError, match="another patient"):
        consent_resources(new_id(), [_record(new_id())])


def test_validation_catches_what_fhir_resources_lets_through() -> None:
    """The extra checks above are not vacuous."""
    patient_id = new_id()
    [resource] = consent_resources(
        patient_id, [_record(patient_id, message_id=new_id(), evidence="START")]
    )
    wrong_target = {**resource, "sourceReference": {"reference": "Communication/x"}}
    assert _binding_problems(Consent.model_validate(wrong_target))
    wrong_code = {**resource, "status": "granted"}
    assert _binding_problems(Consent.model_validate(wrong_code))
    root_typed = {**resource, "provision": {**resource["provision"], "type": "permit"}}
    assert _invariant_problems(root_typed)
    no_rule = {k: v for k, v in resource.items() if k != "policyRule"}
    assert _invariant_problems(no_rule)
