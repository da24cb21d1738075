"""Everything held about one patient as a FHIR R4 ``collection`` Bundle: the Patient, every
message as a Communication, the consent history (the mapping of ``hub.consent.fhir``, not a
second one), appointments and survey answers (QuestionnaireResponse). Pure: the caller reads
and decrypts; nothing here touches the database.

Mapping (R4 4.0.1, https://hl7.org/fhir/R4/):

- Every entry's ``fullUrl`` is ``urn:uuid:<id>`` and references inside the bundle use it, so
  the bundle stands alone. Ids are the hub's own (UUIDs, valid FHIR ids).
- Communication: ``status`` completed (received, sent, delivered, read), in-progress (queued,
  sending) or not-done (failed, undelivered; ``statusReason`` says why). ``sent`` is when the
  message left (inbound: when the hub took it in, the nearest time it knows); ``received`` is
  when it arrived (inbound: the same; outbound: the provider's delivery report, when there was
  one). ``medium``: the v3 ParticipationMode code plus the hub's channel code (SMS has no v3
  code of its own: WRITTEN). ``payload``: the text (``contentString``), then each attachment
  as ``contentAttachment`` with contentType, size and title, inlined as ``data`` only when it
  is at most ``DEFAULT_INLINE_ATTACHMENT_BYTES``, otherwise referenced by the hub's URL (staff
  sign-in needed). ``category``: the hub's purpose code (care, reminders, surveys...).
- Appointment: R4 asks for both ``start`` and ``end`` or neither (app-2); the hub knows only
  the start, so ``end`` repeats it and ``comment`` says so. The patient is the one participant.
- QuestionnaireResponse: one per answer, ``questionnaire`` naming the journey and its step.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hub.consent.fhir import CHANNEL_SYSTEM, HUB_FHIR_BASE, PURPOSE_SYSTEM

DEFAULT_INLINE_ATTACHMENT_BYTES = 64 * 1024
"""Attachments up to this size travel inside the bundle (base64); larger ones are referenced."""

PATIENT_ID_SYSTEM = f"{HUB_FHIR_BASE}/NamingSystem/patient-id"
MESSAGE_ID_SYSTEM = f"{HUB_FHIR_BASE}/NamingSystem/message-id"
QUESTIONNAIRE_BASE = f"{HUB_FHIR_BASE}/Questionnaire"
APPOINTMENT_SOURCE_SYSTEM = f"{HUB_FHIR_BASE}/NamingSystem/appointment-source"
MODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
LANGUAGE_SYSTEM = "urn:ietf:bcp:47"

MEDIUM = {
    "sms": ("WRITTEN", "written"),
    "whatsapp": ("ONLINEWRIT", "online written"),
    "email": ("EMAILWRIT", "email"),
    "voice": ("PHONE", "telephone"),
    "chat": ("ONLINEWRIT", "online written"),
}
"""Hub channel -> v3 ParticipationMode (code, display)."""
COMMUNICATION_STATUS = {
    "received": "completed",
    "sent": "completed",
    "delivered": "completed",
    "read": "completed",
    "queued": "in-progress",
    "sending": "in-progress",
    "failed": "not-done",
    "undelivered": "not-done",
}
APPOINTMENT_STATUS = {
    "booked": ("booked", "needs-action"),
    "confirmed": ("booked", "accepted"),
    "cancelled": ("cancelled", "declined"),
    "arrived": ("arrived", "accepted"),
    "fulfilled": ("fulfilled", "accepted"),
    "noshow": ("noshow", "accepted"),
    "entered_in_error": ("entered-in-error", "needs-action"),
}
"""Hub appointment status -> (Appointment.status, the patient participant's status)."""


@dataclass(frozen=True)
class PatientRecord:
    id: uuid.UUID
    name: str | None
    phone: str | None
    email: str | None
    language: str


@dataclass(frozen=True)
class AttachmentRecord:
    id: uuid.UUID
    content_type: str
    size: int
    filename: str | None
    data: bytes | None
    """Decrypted, only when small enough to inline (or None: not fetched yet, or too big)."""
    created_at: datetime


@dataclass(frozen=True)
class MessageRecord:
    id: uuid.UUID
    direction: str
    channel: str
    status: str
    purpose: str
    body: str | None
    subject: str | None
    error_reason: str | None
    author_id: uuid.UUID | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    attachments: tuple[AttachmentRecord, ...] = ()


@dataclass(frozen=True)
class AppointmentRecord:
    id: uuid.UUID
    source: str
    external_id: str
    start_at: datetime
    status: str


@dataclass(frozen=True)
class AnswerRecord:
    id: uuid.UUID
    journey_key: str
    step_id: str
    score: int | None
    text: str | None
    created_at: datetime


def instant(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("export times must be timezone-aware")
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def urn(ident: object) -> str:
    return f"urn:uuid:{ident}"


def patient_resource(p: PatientRecord) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(p.id),
        "identifier": [{"system": PATIENT_ID_SYSTEM, "value": str(p.id)}],
    }
    if p.name:
        resource["name"] = [{"text": p.name}]
    telecom = []
    if p.phone:
        telecom.append({"system": "phone", "value": p.phone, "use": "mobile"})
    if p.email:
        telecom.append({"system": "email", "value": p.email})
    if telecom:
        resource["telecom"] = telecom
    resource["communication"] = [
        {
            "language": {"coding": [{"system": LANGUAGE_SYSTEM, "code": p.language}]},
            "preferred": True,
        }
    ]
    return resource


def _attachment(a: AttachmentRecord, public_url: str, inline_limit: int) -> dict[str, Any]:
    out: dict[str, Any] = {"contentType": a.content_type, "size": a.size}
    if a.data is not None and len(a.data) <= inline_limit:
        out["data"] = base64.b64encode(a.data).decode("ascii")
    else:
        out["url"] = f"{public_url.rstrip('/')}/attachments/{a.id}"
    if a.filename:
        out["title"] = a.filename
    out["creation"] = instant(a.created_at)
    return out


def communication_resource(
    m: MessageRecord,
    patient_ref: str,
    *,
    organization: str,
    public_url: str,
    inline_limit: int = DEFAULT_INLINE_ATTACHMENT_BYTES,
) -> dict[str, Any]:
    code, display = MEDIUM.get(m.channel, ("ELECTRONIC", "electronic data"))
    clinic = {"display": organization}
    staff = {"reference": f"Practitioner/{m.author_id}"} if m.author_id else clinic
    inbound = m.direction == "inbound"
    resource: dict[str, Any] = {
        "resourceType": "Communication",
        "id": str(m.id),
        "identifier": [{"system": MESSAGE_ID_SYSTEM, "value": str(m.id)}],
        "status": COMMUNICATION_STATUS.get(m.status, "unknown"),
    }
    if resource["status"] == "not-done" and m.error_reason:
        resource["statusReason"] = {"text": m.error_reason}
    resource["category"] = [{"coding": [{"system": PURPOSE_SYSTEM, "code": m.purpose}]}]
    resource["medium"] = [
        {
            "coding": [
                {"system": MODE_SYSTEM, "code": code, "display": display},
                {"system": CHANNEL_SYSTEM, "code": m.channel},
            ]
        }
    ]
    resource["subject"] = {"reference": patient_ref}
    if m.subject:
        resource["topic"] = {"text": m.subject}
    sent = m.created_at if inbound else m.sent_at
    received = m.created_at if inbound else m.delivered_at
    if sent is not None:
        resource["sent"] = instant(sent)
    if received is not None:
        resource["received"] = instant(received)
    resource["recipient"] = [clinic if inbound else {"reference": patient_ref}]
    resource["sender"] = {"reference": patient_ref} if inbound else staff
    payload: list[dict[str, Any]] = []
    if m.body:
        payload.append({"contentString": m.body})
    payload += [
        {"contentAttachment": _attachment(a, public_url, inline_limit)} for a in m.attachments
    ]
    if payload:
        resource["payload"] = payload
    return resource


def appointment_resource(a: AppointmentRecord, patient_ref: str) -> dict[str, Any]:
    status, taking_part = APPOINTMENT_STATUS.get(a.status, ("booked", "needs-action"))
    return {
        "resourceType": "Appointment",
        "id": str(a.id),
        "identifier": [
            {"system": f"{APPOINTMENT_SOURCE_SYSTEM}/{a.source}", "value": a.external_id}
        ],
        "status": status,
        "start": instant(a.start_at),
        "end": instant(a.start_at),
        "comment": "The clinic's schedule gave the start time only; the end repeats it.",
        "participant": [{"actor": {"reference": patient_ref}, "status": taking_part}],
    }


def answer_resource(a: AnswerRecord, patient_ref: str) -> dict[str, Any]:
    answer: dict[str, Any] = (
        {"valueInteger": a.score} if a.score is not None else {"valueString": a.text or ""}
    )
    return {
        "resourceType": "QuestionnaireResponse",
        "id": str(a.id),
        "questionnaire": f"{QUESTIONNAIRE_BASE}/{a.journey_key}",
        "status": "completed",
        "subject": {"reference": patient_ref},
        "authored": instant(a.created_at),
        "source": {"reference": patient_ref},
        "item": [{"linkId": a.step_id, "answer": [answer]}],
    }


def _point_inside(value: Any, local: dict[str, str]) -> Any:
    """References to resources that are in the bundle, rewritten to their ``urn:uuid``."""
    if isinstance(value, dict):
        out = {k: _point_inside(v, local) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in local:
            out["reference"] = local[ref]
        return out
    if isinstance(value, list):
        return [_point_inside(v, local) for v in value]
    return value


def patient_bundle(
    patient: PatientRecord,
    messages: Sequence[MessageRecord],
    consents: Iterable[dict[str, Any]],
    appointments: Sequence[AppointmentRecord],
    answers: Sequence[AnswerRecord],
    *,
    organization: str,
    public_url: str,
    timestamp: datetime,
    inline_limit: int = DEFAULT_INLINE_ATTACHMENT_BYTES,
) -> dict[str, Any]:
    """The ``collection`` Bundle; ``consents`` are ``hub.consent.fhir.consent_resources``
    made with ``patient_reference=urn(patient.id)``."""
    ref = urn(patient.id)
    resources = [patient_resource(patient)]
    resources += [
        communication_resource(
            m, ref, organization=organization, public_url=public_url, inline_limit=inline_limit
        )
        for m in messages
    ]
    resources += list(consents)
    resources += [appointment_resource(a, ref) for a in appointments]
    resources += [answer_resource(a, ref) for a in answers]
    local = {f"{r['resourceType']}/{r['id']}": urn(r["id"]) for r in resources}
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "collection",
        "timestamp": instant(timestamp),
        "entry": [
            {"fullUrl": urn(r["id"]), "resource": _point_inside(r, local)} for r in resources
        ],
    }
