"""``do_erase_patient``: delete every record of one patient in one transaction, keep what the
law and the patient's own choices need (an audit tombstone, their opt-outs as blind-indexed
suppressions), and queue their recordings for deletion at the provider.

Deletion, not crypto-shredding: the key ring is the clinic's, not per patient, so there is no
patient key to destroy. Rows are deleted; their ciphertexts linger only where any deleted row
does (free database pages until they are reused or vacuumed, the WAL, backups until they age
out), see docs/patient-rights.md.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, record
from hub.channels.twilio_voice.events import PROVIDER as VOICE_PROVIDER
from hub.consent import queries as consent_queries
from hub.consent.models import ConsentRecord, ConsentState, ConsentSuppression
from hub.consent.queries import PHONE_CHANNELS
from hub.db import Database, utcnow
from hub.enums import Channel
from hub.errors import HubError
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Attachment, Conversation, Message, Note, Patient
from hub.journeys.models import Appointment, Enrollment, SurveyAnswer
from hub.rights import queries
from hub.rights.actions.deletions import queue_deletions_in


class OpenConversations(HubError):
    """The patient still has conversations staff are working on."""


@dataclass(frozen=True)
class Erasure:
    patient_id: uuid.UUID
    counts: dict[str, int] = field(default_factory=dict)
    recordings: tuple[str, ...] = ()
    """Provider recording sids queued for deletion."""
    suppressions: int = 0


async def _keep_opt_outs(session: AsyncSession, patient: Patient) -> int:
    """Each revoked (channel, purpose) becomes a suppression against the address's blind
    index; choices other than a revocation go with the patient."""
    kept = 0
    for channel in Channel:
        # Chat has no address to keep a choice against: its link went with the patient.
        bidx = patient.phone_bidx if channel in PHONE_CHANNELS else None
        if channel is Channel.EMAIL:
            bidx = patient.email_bidx
        if bidx is None:
            continue
        latest = await consent_queries.latest_records(session, patient.id, channel)
        revoked = [r for r in latest.values() if r.state is ConsentState.REVOKED]
        if not revoked:
            continue
        have = {s.purpose for s in await queries.suppressions_for(session, bidx, channel)}
        for rec in revoked:
            if rec.purpose in have:
                continue
            session.add(
                ConsentSuppression(
                    address_bidx=bidx,
                    channel=channel,
                    purpose=rec.purpose,
                    source=rec.source,
                    evidence=rec.evidence,
                    created_at=rec.created_at,
                )
            )
            kept += 1
    await session.flush()
    return kept


async def do_erase_patient(
    db: Database, actor: Actor, patient_id: uuid.UUID, *, force: bool = False
) -> Erasure:
    """Erase the patient, or raise OpenConversations (nothing changed) while staff still
    work on one of their conversations and ``force`` is not set. NotFound when there is no
    such patient (already erased, or never was)."""
    async with db.transaction() as session:
        patient = await queries.patient_for_update(session, patient_id)
        if patient is None:
            raise NotFound(f"no patient with id {patient_id} (already erased, or never added)")
        unresolved = await queries.unresolved_conversations(session, patient_id)
        if unresolved and not force:
            raise OpenConversations(
                f"patient {patient_id} has {unresolved} conversation"
                f"{'' if unresolved == 1 else 's'} staff have not resolved; resolve "
                f"{'it' if unresolved == 1 else 'them'} first, or erase anyway with --force"
            )
        suppressions = await _keep_opt_outs(session, patient)
        conversations = select(Conversation.id).where(Conversation.patient_id == patient_id)
        messages = select(Message.id).where(Message.conversation_id.in_(conversations))
        enrollments = select(Enrollment.id).where(Enrollment.patient_id == patient_id)
        message_ids = await queries.message_ids_of_patient(session, patient_id)
        sids = await queries.recording_sids_of(session, message_ids)
        counts = {
            "attachments": await queries.count_where(
                session, Attachment, Attachment.message_id.in_(messages)
            ),
            "inbound_events": await queries.delete_inbound_events(session, message_ids, sids),
            "notes": await queries.delete_where(
                session, Note, Note.conversation_id.in_(conversations)
            ),
            # Attachments and delivery attempts go with their message (ON DELETE CASCADE).
            "messages": await queries.delete_where(session, Message, Message.id.in_(messages)),
            "conversations": await queries.delete_where(
                session, Conversation, Conversation.patient_id == patient_id
            ),
            "consent_records": await queries.delete_where(
                session, ConsentRecord, ConsentRecord.patient_id == patient_id
            ),
            "survey_answers": await queries.delete_where(
                session, SurveyAnswer, SurveyAnswer.enrollment_id.in_(enrollments)
            ),
            # Step runs go with their enrollment.
            "enrollments": await queries.delete_where(
                session, Enrollment, Enrollment.patient_id == patient_id
            ),
            "appointments": await queries.delete_where(
                session, Appointment, Appointment.patient_id == patient_id
            ),
            "recordings": len(sids),
        }
        session.expunge(patient)
        await queries.delete_where(session, Patient, Patient.id == patient_id)
        await queue_deletions_in(session, VOICE_PROVIDER, sids, "erasure", utcnow())
        # The tombstone: who erased whom, when, and how much; ids and numbers only.
        await record(
            session,
            actor,
            "patient.erase",
            "patient",
            patient_id,
            {
                "counts": counts,
                "forced_open_conversations": unresolved if force else 0,
                "suppressions_kept": suppressions,
            },
        )
    return Erasure(patient_id, counts, tuple(sids), suppressions)
