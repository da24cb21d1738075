"""A patient's consent history as FHIR R4 Consent resources (JSON), one per consent record.

Nothing is merged or dropped: every record becomes its own Consent, the newest per (channel,
purpose) ``active`` and every earlier one ``inactive`` with its period closed where its
successor begins. Mapping to R4 4.0.1 (https://hl7.org/fhir/R4/consent.html):

- ``status``: active (latest per channel and purpose) | inactive ("terminated or replaced").
- ``scope``: consentscope#patient-privacy ("agreement to collect, access, use or disclose
  information": here the patient's contact details for messaging). ppc-2 then requires
  ``patient``, which is always present.
- ``category``: LOINC 59284-0 "Patient Consent" (from the extensible consent-category value
  set) plus the hub's own "communication-preferences" so these can be told from other consents.
- ``policyRule`` (satisfies ppc-1): the clinic's base rule for the purpose, from its
  ``ConsentPolicy.opt_in_required``: "opt-in" (no contact without a grant; by default surveys
  and marketing) or "opt-out" (contact unless revoked; care and reminders). No code in the
  extensible consent-policy value set (regulations such as HIPAA authorisations) says this.
  The hub keeps one current policy, not its history: every record is exported under the
  policy in force at export time.
- ``provision``: R4 defines the root rule as an exception to ``policyRule`` and says
  ``provision.type`` is "not permitted in root rule, required in all nested rules". So the root
  rule carries what the record is about: ``period`` (start = the record's time, end = when the
  next record for the same channel and purpose replaced it), ``action`` (contact by a channel,
  hub communication-channel code; the consent-action binding is an example binding) and
  ``purpose`` (hub communication-purpose code plus its v3 PurposeOfUse equivalent, as the
  extensible binding asks). One nested rule holds the decision: granted -> permit, revoked ->
  deny. An ``unknown`` record has no nested rule: the patient made no choice, so the base
  ``policyRule`` applies (which is exactly how ``may_send`` reads it). "proposed" or "draft"
  would claim a pending agreement that does not exist.
- ``dateTime``: when the hub recorded the change.
- ``performer``: who made the change: ``patient:<id>`` -> Patient, ``staff:<id>`` (or
  ``api:<id>``, a staff member's token) -> Practitioner, ``provider:<name>`` -> an
  Organization known only by display and identifier (R4 performer allows no Device).
  Anything else is kept as a display.
- ``organization``: the custodian (the clinic), by display or ``Organization/<id>`` reference.
- ``sourceReference``: the evidence. Its display is the evidence text ("STOP", "error 21610");
  the message it came from is a Communication, which R4 does not allow as a target of
  ``sourceReference`` (Consent | DocumentReference | Contract | QuestionnaireResponse), so it
  is carried by the ``alternate-reference`` extension (FHIR extensions pack), made for
  exactly that case. Evidence without a message (a staff reason) is the display alone.
- extension ``.../StructureDefinition/consent-source``: how the change was captured (keyword
  reply, web form, staff, import, one-click unsubscribe, voice keypress, provider report);
  R4 Consent has no element for it.
- ``text``: a generated narrative (dom-6).
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, record
from hub.consent import queries
from hub.consent.actions import load_policy
from hub.consent.models import ConsentRecord, ConsentSource, ConsentState, Purpose
from hub.consent.rules import ConsentPolicy
from hub.db import Database, utcnow
from hub.enums import Channel
from hub.inbox import queries as inbox_queries
from hub.inbox.exceptions import NotFound

HUB_FHIR_BASE = "https://hub.example/fhir"
"""Root of the hub's code systems and extensions: identifiers that must never change once
exported (they need not resolve)."""
CHANNEL_SYSTEM = f"{HUB_FHIR_BASE}/CodeSystem/communication-channel"
PURPOSE_SYSTEM = f"{HUB_FHIR_BASE}/CodeSystem/communication-purpose"
POLICY_SYSTEM = f"{HUB_FHIR_BASE}/CodeSystem/consent-policy"
CATEGORY_SYSTEM = f"{HUB_FHIR_BASE}/CodeSystem/consent-category"
SOURCE_SYSTEM = f"{HUB_FHIR_BASE}/CodeSystem/consent-source"
SOURCE_EXTENSION = f"{HUB_FHIR_BASE}/StructureDefinition/consent-source"
PROVIDER_SYSTEM = f"{HUB_FHIR_BASE}/NamingSystem/messaging-provider"

SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
LOINC_SYSTEM = "http://loinc.org"
PURPOSE_OF_USE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ALTERNATE_REFERENCE = "http://hl7.org/fhir/StructureDefinition/alternate-reference"
XHTML_NS = "http://www.w3.org/1999/xhtml"

DEFAULT_ORGANIZATION = "The clinic"
"""Custodian shown when the caller names none (the same default as ``Settings.clinic_name``)."""

CHANNEL_DISPLAY = {
    Channel.SMS: "SMS",
    Channel.EMAIL: "Email",
    Channel.VOICE: "Voice call",
    Channel.CHAT: "Web chat",
    Channel.WHATSAPP: "WhatsApp",
}
PURPOSE_DISPLAY = {
    Purpose.CARE: "Care communication",
    Purpose.REMINDERS: "Appointment reminders",
    Purpose.SURVEYS: "Surveys",
    Purpose.MARKETING: "Marketing",
    Purpose.SERVICE: "Service messages",
}
PURPOSE_OF_USE = {
    Purpose.CARE: ("TREAT", "treatment"),
    Purpose.REMINDERS: ("TREAT", "treatment"),
    Purpose.SURVEYS: ("HOPERAT", "healthcare operations"),
    Purpose.MARKETING: ("HMARKT", "healthcare marketing"),
}
"""v3 PurposeOfUse equivalents (HIPAA counts reminders as treatment and satisfaction surveys
as operations); SERVICE has none."""
SOURCE_DISPLAY = {
    ConsentSource.KEYWORD: "Keyword reply",
    ConsentSource.WEB_FORM: "Web form",
    ConsentSource.STAFF: "Recorded by staff",
    ConsentSource.IMPORT: "Import",
    ConsentSource.UNSUBSCRIBE: "One-click unsubscribe",
    ConsentSource.VOICE_KEYPRESS: "Voice keypress",
    ConsentSource.PROVIDER: "Reported by the messaging provider",
}
DECISION = {ConsentState.GRANTED: "permit", ConsentState.REVOKED: "deny"}
"""Nested provision type per state; UNKNOWN has none (the base policyRule applies)."""


def _instant(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("consent times must be timezone-aware")
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def _performer(actor: str, patient_id: uuid.UUID, patient_ref: str) -> dict[str, Any]:
    kind, _, ident = actor.partition(":")
    who = _uuid(ident)
    if kind == "patient" and who is not None:
        return {"reference": patient_ref if who == patient_id else f"Patient/{who}"}
    if kind in ("staff", "api") and who is not None:  # "api": a staff member's API token
        return {"reference": f"Practitioner/{who}"}
    if kind == "provider" and ident:
        return {
            "type": "Organization",
            "identifier": {"system": PROVIDER_SYSTEM, "value": ident},
            "display": f"Messaging provider {ident}",
        }
    return {"display": actor}


def _organization(organization: str) -> dict[str, str]:
    if organization.startswith("Organization/"):
        return {"reference": organization}
    return {"display": organization}


def _source(rec: ConsentRecord) -> dict[str, Any] | None:
    display = rec.evidence.strip()
    if rec.evidence_message_id is None:
        return {"display": display} if display else None
    message = {"reference": f"Communication/{rec.evidence_message_id}", "type": "Communication"}
    return {
        "extension": [{"url": ALTERNATE_REFERENCE, "valueReference": message}],
        # alternate-reference implies a display on the outer Reference
        "display": display or "message",
    }


def _narrative(rec: ConsentRecord, superseded_at: datetime | None, opt_in: bool) -> dict[str, str]:
    if rec.state is ConsentState.UNKNOWN:
        state = f"no choice on record (the {'opt-in' if opt_in else 'opt-out'} rule applies)"
    else:
        state = rec.state.value
    text = (
        f"{CHANNEL_DISPLAY[rec.channel]}, {PURPOSE_DISPLAY[rec.purpose].lower()}: {state} "
        f"on {_instant(rec.created_at)} ({SOURCE_DISPLAY[rec.source].lower()}"
        + (f": {rec.evidence.strip()}" if rec.evidence.strip() else "")
        + ")."
        + (f" Replaced on {_instant(superseded_at)}." if superseded_at else " Current.")
    )
    return {"status": "generated", "div": f'<div xmlns="{XHTML_NS}">{html.escape(text)}</div>'}


def _consent(
    rec: ConsentRecord,
    *,
    superseded_at: datetime | None,
    patient_ref: str,
    organization: str,
    policy: ConsentPolicy,
) -> dict[str, Any]:
    opt_in = rec.purpose in policy.opt_in_required
    period = {"start": _instant(rec.created_at)}
    if superseded_at is not None:
        period["end"] = _instant(superseded_at)
    purposes = [_coding(PURPOSE_SYSTEM, rec.purpose.value, PURPOSE_DISPLAY[rec.purpose])]
    if rec.purpose in PURPOSE_OF_USE:
        code, display = PURPOSE_OF_USE[rec.purpose]
        purposes.append(_coding(PURPOSE_OF_USE_SYSTEM, code, display))
    channel = CHANNEL_DISPLAY[rec.channel]
    provision: dict[str, Any] = {
        "period": period,
        "action": [
            {
                "coding": [_coding(CHANNEL_SYSTEM, rec.channel.value, channel)],
                "text": f"Contact the patient by {channel}",
            }
        ],
        "purpose": purposes,
    }
    if rec.state in DECISION:
        provision["provision"] = [{"type": DECISION[rec.state]}]
    resource: dict[str, Any] = {
        "resourceType": "Consent",
        "id": str(rec.id),
        "text": _narrative(rec, superseded_at, opt_in),
        "extension": [
            {
                "url": SOURCE_EXTENSION,
                "valueCoding": _coding(SOURCE_SYSTEM, rec.source.value, SOURCE_DISPLAY[rec.source]),
            }
        ],
        "status": "inactive" if superseded_at is not None else "active",
        "scope": {
            "coding": [_coding(SCOPE_SYSTEM, "patient-privacy", "Privacy Consent")],
        },
        "category": [
            {"coding": [_coding(LOINC_SYSTEM, "59284-0", "Patient Consent")]},
            {
                "coding": [
                    _coding(CATEGORY_SYSTEM, "communication-preferences", "Consent to be contacted")
                ]
            },
        ],
        "patient": {"reference": patient_ref},
        "dateTime": _instant(rec.created_at),
        "performer": [_performer(rec.actor, rec.patient_id, patient_ref)],
        "organization": [_organization(organization)],
    }
    if (source := _source(rec)) is not None:
        resource["sourceReference"] = source
    resource["policyRule"] = {
        "coding": [
            _coding(
                POLICY_SYSTEM,
                "opt-in" if opt_in else "opt-out",
                "Explicit grant required" if opt_in else "Allowed unless revoked",
            )
        ]
    }
    resource["provision"] = provision
    return resource


def consent_resources(
    patient_id: uuid.UUID,
    records: Iterable[ConsentRecord],
    *,
    patient_reference: str | None = None,
    organization: str = DEFAULT_ORGANIZATION,
    policy: ConsentPolicy | None = None,
) -> list[dict[str, Any]]:
    """One R4 Consent per record, oldest first; see the module docstring for the mapping.

    ``patient_reference`` replaces ``Patient/<patient_id>`` (e.g. the id on the clinic's FHIR
    server); ``organization`` is the custodian's name, or an ``Organization/<id>`` reference;
    ``policy`` (default: the default ConsentPolicy) decides each purpose's base rule.
    Raises ValueError when a record belongs to another patient or has no id or time zone.
    """
    ordered = list(records)
    for rec in ordered:
        if rec.id is None:
            raise ValueError("a consent record has no id yet: flush it before exporting")
        if rec.patient_id != patient_id:
            raise ValueError(f"consent record {rec.id} belongs to another patient")
    ordered.sort(key=lambda r: (r.created_at, r.id))
    superseded_at: dict[uuid.UUID, datetime] = {}
    latest: dict[tuple[Channel, Purpose], ConsentRecord] = {}
    for rec in ordered:
        key = (rec.channel, rec.purpose)
        if (previous := latest.get(key)) is not None:
            superseded_at[previous.id] = rec.created_at
        latest[key] = rec
    patient_ref = patient_reference or f"Patient/{patient_id}"
    return [
        _consent(
            rec,
            superseded_at=superseded_at.get(rec.id),
            patient_ref=patient_ref,
            organization=organization,
            policy=policy or ConsentPolicy(),
        )
        for rec in ordered
    ]


def bundle(
    patient_id: uuid.UUID,
    records: Iterable[ConsentRecord],
    *,
    patient_reference: str | None = None,
    organization: str = DEFAULT_ORGANIZATION,
    policy: ConsentPolicy | None = None,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """A ``collection`` Bundle of :func:`consent_resources`, each entry under ``urn:uuid:``."""
    resources = consent_resources(
        patient_id,
        records,
        patient_reference=patient_reference,
        organization=organization,
        policy=policy,
    )
    result: dict[str, Any] = {"resourceType": "Bundle", "type": "collection"}
    if timestamp is not None:
        result["timestamp"] = _instant(timestamp)
    if resources:  # FHIR JSON has no empty arrays
        result["entry"] = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources]
    return result


async def _patient_history(session: AsyncSession, patient_id: uuid.UUID) -> list[ConsentRecord]:
    return await queries.patient_history(session, patient_id)


async def do_export_consents(
    db: Database,
    actor: Actor,
    patient_id: uuid.UUID,
    *,
    organization: str = DEFAULT_ORGANIZATION,
) -> dict[str, Any]:
    """The patient's full consent history as a FHIR Bundle, audited as ``consent.export``.

    Raises NotFound for an unknown patient.
    """
    async with db.transaction() as session:
        if await inbox_queries.get_patient(session, patient_id) is None:
            raise NotFound(f"no patient with id {patient_id}")
        history = await _patient_history(session, patient_id)
        policy = await load_policy(session)
        result = bundle(
            patient_id, history, organization=organization, policy=policy, timestamp=utcnow()
        )
        await record(
            session,
            actor,
            "consent.export",
            "patient",
            patient_id,
            {"consent_ids": [str(r.id) for r in history]},
        )
    return result
