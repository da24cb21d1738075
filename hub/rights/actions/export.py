"""``do_export_patient``: one patient's whole record, decrypted, as a FHIR Bundle."""

from __future__ import annotations

import uuid
from typing import Any

from hub.audit import Actor, record
from hub.consent import queries as consent_queries
from hub.consent.actions import load_policy
from hub.consent.fhir import consent_resources
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.inbox import queries as inbox_queries
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Attachment, Message
from hub.rights import queries
from hub.rights.fhir import (
    DEFAULT_INLINE_ATTACHMENT_BYTES,
    AnswerRecord,
    AppointmentRecord,
    AttachmentRecord,
    MessageRecord,
    PatientRecord,
    patient_bundle,
    urn,
)


def _attachment(ring: KeyRing, a: Attachment, inline_limit: int) -> AttachmentRecord:
    small = a.data_enc is not None and a.size_bytes <= inline_limit
    return AttachmentRecord(
        id=a.id,
        content_type=a.content_type,
        size=a.size_bytes,
        filename=a.unseal(ring, "filename"),
        data=a.unseal_bytes(ring, "data") if small else None,
        created_at=a.created_at,
    )


def _message(ring: KeyRing, m: Message, files: list[AttachmentRecord]) -> MessageRecord:
    return MessageRecord(
        id=m.id,
        direction=m.direction.value,
        channel=m.channel.value,
        status=m.status.value,
        purpose=m.purpose,
        body=m.unseal(ring, "body"),
        subject=m.unseal(ring, "subject"),
        error_reason=m.error_reason,
        author_id=m.author_id,
        created_at=m.created_at,
        sent_at=m.sent_at,
        delivered_at=m.delivered_at,
        attachments=tuple(files),
    )


async def do_export_patient(
    db: Database,
    ring: KeyRing,
    actor: Actor,
    patient_id: uuid.UUID,
    *,
    organization: str,
    public_url: str,
    inline_limit: int = DEFAULT_INLINE_ATTACHMENT_BYTES,
) -> dict[str, Any]:
    """Every record of the patient as a FHIR R4 collection Bundle (see hub.rights.fhir),
    audited as ``patient.export`` with counts only. Raises NotFound for an unknown patient."""
    async with db.transaction() as session:
        patient = await inbox_queries.get_patient(session, patient_id)
        if patient is None:
            raise NotFound(f"no patient with id {patient_id}")
        messages = await queries.messages_of_patient(session, patient_id)
        files = await inbox_queries.attachments_of(session, [m.id for m in messages])
        history = await consent_queries.patient_history(session, patient_id)
        consents = consent_resources(
            patient_id,
            history,
            patient_reference=urn(patient_id),
            organization=organization,
            policy=await load_policy(session),
        )
        appointments = await queries.appointments_of(session, patient_id)
        answers = await queries.survey_answers_of(session, patient_id)
        message_records = [
            _message(ring, m, [_attachment(ring, a, inline_limit) for a in files.get(m.id, [])])
            for m in messages
        ]
        bundle = patient_bundle(
            PatientRecord(
                id=patient.id,
                name=patient.unseal(ring, "name"),
                phone=patient.unseal(ring, "phone"),
                email=patient.unseal(ring, "email"),
                language=patient.language,
            ),
            message_records,
            consents,
            [
                AppointmentRecord(a.id, a.source, a.external_id, a.start_at, a.status.value)
                for a in appointments
            ],
            [
                AnswerRecord(a.id, key, a.step_id, a.score, a.unseal(ring, "text"), a.created_at)
                for a, key in answers
            ],
            organization=organization,
            public_url=public_url,
            timestamp=utcnow(),
            inline_limit=inline_limit,
        )
        counts = {
            "messages": len(message_records),
            "attachments": sum(len(m.attachments) for m in message_records),
            "consents": len(consents),
            "appointments": len(appointments),
            "survey_answers": len(answers),
        }
        await record(session, actor, "patient.export", "patient", patient_id, {"counts": counts})
    return bundle
