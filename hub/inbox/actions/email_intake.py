"""Inbound email, from the built-in SMTP receiver or the inbound-mail webhook.

Idempotent on Message-ID (a provider's retry or a second delivery changes nothing). Threads in
this order: the signed reply token in a recipient address; then In-Reply-To and References
against Message-IDs we know; then the sender's open conversation; else a new one. A forged or
expired token names no conversation, so such mail is threaded by the later rules. The text
shown is the reply without its quoted history; the original MIME is kept encrypted beside it.

Mail that no person wrote (out-of-office, lists, read receipts, mailer-daemon) never gets an
automatic answer, never counts as a journey reply and never opens a conversation; a delivery
status notification marks our message failed and, when permanent, the address unreachable,
instead of becoming a ticket; a spam complaint (feedback report) stops clinic-initiated mail to
the patient, with the report as evidence."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.channels.base import FailureClass, FailureEffect
from hub.channels.email_smtp.compose import hub_message_id_of
from hub.channels.email_smtp.parse import ParsedEmail, parse_email, reply_token_of
from hub.channels.email_smtp.sender_auth import NOT_CHECKED, SenderCheck
from hub.consent import queries as consent_queries
from hub.consent.actions import ConsentChange
from hub.consent.models import ConsentSource, ConsentState
from hub.contact import InvalidContact, normalize_email
from hub.crypto import KeyRing, associated_data
from hub.db import Database, new_id, utcnow
from hub.enums import (
    Channel,
    ConversationStatus,
    Direction,
    MessageStatus,
    Priority,
    can_advance,
)
from hub.inbox import queries
from hub.inbox.actions.delivery import fail_or_retry_in, message_new_effect
from hub.inbox.actions.email_out import UNSUBSCRIBABLE
from hub.inbox.actions.patient_index import index_name_in
from hub.inbox.actions.patients import FIRST_RESPONSE_TARGETS
from hub.inbox.email_ids import email_id_index
from hub.inbox.event_queries import record_status_change_in
from hub.inbox.models import (
    Attachment,
    AttachmentState,
    Conversation,
    InboundEvent,
    Message,
    Patient,
)
from hub.links import read_reply_token

log = logging.getLogger(__name__)

PROVIDER = "email"
"""Inbound email's provider name on messages and events (outbound is "email_smtp")."""
OUTBOUND_PROVIDER = "email_smtp"
ORIGINAL_NAME = "original.eml"
HELD = "held: it reads as a journey answer ({}); that was not applied"
"""The note on a held reply; staff read it under "Sender not verified"."""


@dataclass(frozen=True)
class EmailIntakeResult:
    outcome: str
    """"message" (stored in a conversation), "duplicate", "bounce", "complaint" (a feedback
    report), "ignored" (automatic mail for no conversation of ours)."""
    message_id: uuid.UUID | None = None
    conversation_id: uuid.UUID | None = None
    threaded_by: str | None = None
    """"token", "references", "sender" or "new"."""
    effect_ids: tuple[uuid.UUID, ...] = ()
    urgent: bool = False
    assign_to_staff_id: uuid.UUID | None = None


async def do_receive_email(
    db: Database,
    ring: KeyRing,
    raw: bytes,
    *,
    recipients: Iterable[str] = (),
    reply_domain: str | None,
    clinic: Mapping[str, Any],
    retry_base_s: float = 30.0,
    sender: SenderCheck = NOT_CHECKED,
) -> EmailIntakeResult:
    """Store one inbound email. ``recipients``: the SMTP envelope's RCPT TO addresses (the
    webhook passes none and the headers are used). ``sender``: whether its From address was
    proven; mail that was not is kept and shown, but answers no journey question and
    changes no consent by itself (a forged From could otherwise cancel a patient's
    appointment). Raises MalformedEmail for input that is not an email (the caller answers
    4xx / SMTP 550 and stores nothing)."""
    # Parsing is CPU work (MIME walk, HTML sanitizing, quote detection): off the event loop.
    parsed = await asyncio.to_thread(parse_email, raw)
    # The idempotency key is the Message-ID's blind index (the id itself may name the sender);
    # mail without one is known by a digest of its bytes.
    key = (
        email_id_index(ring, parsed.message_id)
        if parsed.message_id
        else "sha256:" + hashlib.sha256(raw).hexdigest()
    )
    now = utcnow()
    async with db.transaction() as session:
        event_id = new_id()
        inserted = await queries.insert_inbound_event(
            session,
            {
                "id": event_id,
                "provider": PROVIDER,
                "provider_event_id": key[:255],
                "payload_enc": ring.encrypt(
                    raw, associated_data(InboundEvent.__tablename__, "payload_enc", event_id)
                ),
                "received_at": now,
            },
        )
        if not inserted:
            existing = await queries.inbound_event(session, PROVIDER, key[:255])
            message = (
                await session.get(Message, existing.message_id)
                if existing is not None and existing.message_id is not None
                else None
            )
            return EmailIntakeResult(
                "duplicate",
                message.id if message else None,
                message.conversation_id if message else None,
            )
        if parsed.bounce is not None:
            failed = await _bounce(session, parsed, reply_domain, now, retry_base_s)
            return EmailIntakeResult("bounce", effect_ids=tuple(failed))
        if parsed.complaint is not None:
            await _complaint(session, ring, parsed, event_id, reply_domain, sender)
            return EmailIntakeResult("complaint")

        addresses = [*recipients, *parsed.to, *parsed.cc, *parsed.delivered_to]
        conversation, threaded_by = await _thread(
            session, ring, parsed, addresses, reply_domain, now
        )
        patient: Patient | None = None
        new_patient = False
        if conversation is None:
            patient, new_patient, conversation = await _by_sender(session, ring, parsed, now)
            threaded_by = "sender" if conversation is not None else "new"
        if parsed.auto_submitted and conversation is None:
            log.info(
                "automatic mail for no conversation ignored", extra={"why": parsed.auto_reason}
            )
            return EmailIntakeResult("ignored")
        if patient is None:
            patient = (
                await session.get(Patient, conversation.patient_id)
                if conversation is not None
                else None
            )
        if patient is None:
            patient, new_patient = await _new_patient(session, ring, parsed)
        if conversation is None:
            conversation = Conversation(
                patient_id=patient.id,
                channel=Channel.EMAIL,
                status=ConversationStatus.OPEN,
                priority=Priority.NORMAL,
                created_at=now,
                first_response_due_at=now + FIRST_RESPONSE_TARGETS[Priority.NORMAL],
            )
            session.add(conversation)
        elif not parsed.auto_submitted and conversation.status is not ConversationStatus.OPEN:
            # An out-of-office answer to a reminder must not put a resolved thread back in
            # front of staff; a person writing does.
            before = conversation.status
            conversation.status = ConversationStatus.OPEN
            conversation.snoozed_until = None
            conversation.resolved_at = None
            record_status_change_in(session, conversation, before, now)
        conversation.last_activity_at = now
        if not parsed.auto_submitted:
            conversation.last_inbound_at = now
        await session.flush()

        message = Message(
            id=new_id(),
            conversation_id=conversation.id,
            direction=Direction.INBOUND,
            channel=Channel.EMAIL,
            provider=PROVIDER,
            provider_message_id=email_id_index(ring, parsed.message_id)
            if parsed.message_id
            else None,
            status=MessageStatus.RECEIVED,
            created_at=now,
            delivery_notes=_notes(parsed),
            sender_verified=sender.verified,
            sender_check=sender.reason[:24],
        )
        message.seal(ring, "body", parsed.visible_text)
        message.seal(ring, "subject", parsed.subject or None)
        message.seal(ring, "html", parsed.html)
        message.seal(ring, "provider_message_id", parsed.message_id)
        session.add(message)
        await session.flush()
        _attach(session, ring, message, parsed, raw, now)
        event = await session.get(InboundEvent, event_id)
        assert event is not None
        event.message_id = message.id

        effects: list[uuid.UUID] = []
        urgent, assign_to = False, None
        if not parsed.auto_submitted:
            from hub.journeys.answers import handle_reply_in, pending_answer_in
            from hub.routing import actions as routing

            answered = None
            if sender.verified:
                answered = await handle_reply_in(
                    session,
                    ring,
                    patient,
                    conversation,
                    parsed.visible_text,
                    Channel.EMAIL,
                    message.id,
                    now,
                    clinic=clinic,
                )
            else:
                held = await pending_answer_in(
                    session, patient.id, parsed.visible_text, Channel.EMAIL, now
                )
                if held is not None:
                    message.delivery_notes = [*message.delivery_notes, HELD.format(held)]
            if answered is not None:
                effects.extend(answered.effect_ids)
            routed = await routing.apply_routing(
                session,
                ring,
                patient=patient,
                conversation=conversation,
                message_body=f"{parsed.subject}\n{parsed.visible_text}",
                channel=Channel.EMAIL,
                is_new_patient=new_patient,
                clinic_name=str(clinic.get("name") or "The clinic"),
                now=now,
                answered=answered is not None,
                clinic=clinic,
            )
            effects.extend(routed.effect_ids)
            urgent, assign_to = routed.urgent, routed.assign_to_staff_id
        effects.append(message_new_effect(session, message, conversation))
        return EmailIntakeResult(
            "message",
            message.id,
            conversation.id,
            threaded_by,
            tuple(effects),
            urgent,
            assign_to,
        )


async def _thread(
    session: AsyncSession,
    ring: KeyRing,
    parsed: ParsedEmail,
    addresses: list[str],
    reply_domain: str | None,
    now: datetime,
) -> tuple[Conversation | None, str | None]:
    if reply_domain:
        token = reply_token_of(addresses, reply_domain)
        conversation_id = read_reply_token(ring, token, now) if token else None
        if conversation_id is not None:
            found = await session.get(Conversation, conversation_id)
            if found is not None:
                return found, "token"
        if token is not None and conversation_id is None:
            log.warning("email with a reply token that is forged or expired; threading by headers")
    ids = [i for i in (parsed.in_reply_to, *reversed(parsed.references)) if i]
    if ids:
        ours = [
            hub_id
            for hub_id in (hub_message_id_of(f"<{i}>", reply_domain or "") for i in ids)
            if hub_id is not None
        ]
        # Our own Message-IDs are stored as sent, a patient's as their blind index.
        found_message = await queries.message_by_email_ids(
            session,
            ours,
            [*ids, *(email_id_index(ring, i) for i in ids)],
            (PROVIDER, OUTBOUND_PROVIDER),
        )
        if found_message is not None:
            return await session.get(Conversation, found_message.conversation_id), "references"
    return None, None


async def _by_sender(
    session: AsyncSession, ring: KeyRing, parsed: ParsedEmail, now: datetime
) -> tuple[Patient | None, bool, Conversation | None]:
    """The sender's patient record and open email conversation, if any."""
    address = _address(parsed)
    if address is None:
        return None, False, None
    bidx = ring.blind_index("email", address)
    await queries.lock_sender(session, bidx)  # to the commit: covers creating either
    matches = await queries.patients_by_email_index(session, bidx)
    if not matches:
        return None, False, None
    patient = matches[0]
    conversation = await queries.latest_conversation_of(session, patient.id, Channel.EMAIL)
    if conversation is not None and conversation.status is ConversationStatus.RESOLVED:
        conversation = None
    return patient, False, conversation


async def _new_patient(
    session: AsyncSession, ring: KeyRing, parsed: ParsedEmail
) -> tuple[Patient, bool]:
    address = _address(parsed)
    patient = Patient(verified=False, channel_order=["email", "sms", "voice"])
    patient.id = new_id()
    if address is not None:
        patient.seal(ring, "email", address)
        patient.email_bidx = ring.blind_index("email", address)
    if parsed.from_name:
        patient.seal(ring, "name", parsed.from_name)
    session.add(patient)
    await session.flush()
    await index_name_in(session, ring, patient.id, parsed.from_name)
    return patient, True


def _address(parsed: ParsedEmail) -> str | None:
    try:
        return normalize_email(parsed.from_address) if parsed.from_address else None
    except InvalidContact:
        return None


def _notes(parsed: ParsedEmail) -> list[str]:
    notes = list(parsed.dropped)
    if parsed.auto_submitted:
        notes.append(f"automatic mail ({parsed.auto_reason}): no automatic answer was sent")
    return notes


def _attach(
    session: AsyncSession,
    ring: KeyRing,
    message: Message,
    parsed: ParsedEmail,
    raw: bytes,
    now: datetime,
) -> None:
    items = [(a.filename, a.content_type, a.data) for a in parsed.attachments]
    # The whole original, for the record and for anyone who needs the quoted history.
    items.append((ORIGINAL_NAME, "message/rfc822", raw))
    for filename, content_type, data in items:
        attachment = Attachment(
            id=new_id(),
            message_id=message.id,
            state=AttachmentState.STORED,
            content_type=content_type[:128],
            size_bytes=len(data),
            created_at=now,
        )
        attachment.seal(ring, "filename", filename)
        attachment.seal_bytes(ring, "data", data)
        session.add(attachment)


async def _our_message(
    session: AsyncSession, ids: Iterable[str], reply_domain: str | None
) -> Message | None:
    """The first of ``ids`` (a report's, most trusted first) that names mail we sent. One
    lookup each: a returned mail's References also name our earlier mail in the thread, and
    the newest of all of them is not the one that failed."""
    for email_id in ids:
        hub_id = hub_message_id_of(f"<{email_id}>", reply_domain or "")
        found = await queries.message_by_email_ids(
            session, [hub_id] if hub_id else [], [email_id], (OUTBOUND_PROVIDER,), lock=True
        )
        if found is not None and found.direction is Direction.OUTBOUND:
            return found
    return None


async def _complaint(
    session: AsyncSession,
    ring: KeyRing,
    parsed: ParsedEmail,
    event_id: uuid.UUID,
    reply_domain: str | None,
    sender: SenderCheck,
) -> None:
    """A mailbox provider's feedback loop says the patient marked our mail as spam: no more
    clinic-initiated mail to that address (reminders, surveys, marketing: what the one-click
    unsubscribe covers). Care answers in a conversation the patient writes in still go, as
    they do after an unsubscribe; staff see the complaint on the mail it was about."""
    complaint = parsed.complaint
    assert complaint is not None
    message = await _our_message(session, complaint.mentioned_ids, reply_domain)
    patient_id: uuid.UUID | None = None
    if message is not None:
        conversation = await session.get(Conversation, message.conversation_id)
        patient_id = conversation.patient_id if conversation is not None else None
    elif complaint.recipient:
        # Providers often redact the recipient; when they do not, it names the patient.
        try:
            bidx = ring.blind_index("email", normalize_email(complaint.recipient))
        except InvalidContact:
            bidx = None
        matches = await queries.patients_by_email_index(session, bidx) if bidx else []
        patient_id = matches[0].id if len(matches) == 1 else None
    if patient_id is None or not complaint.unwanted or not sender.verified:
        # An unverified report is anyone's word: it must not stop a patient's reminders.
        log.info(
            "feedback report recorded without a consent change",
            extra={
                "feedback_type": complaint.feedback_type,
                "ours": patient_id is not None,
                "sender": sender.reason,
            },
        )
        return
    # Evidence without PHI: the report kind and where the report itself is kept (encrypted,
    # as the inbound event), and the mail it was about.
    change = ConsentChange(
        ConsentSource.PROVIDER,
        f"provider:{complaint.reporter or 'unknown'}"[:80],
        f"spam complaint: RFC 5965 feedback report ({complaint.feedback_type}), "
        f"inbound event {event_id}",
        evidence_message_id=message.id if message is not None else None,
    )
    latest = await consent_queries.latest_records(session, patient_id, Channel.EMAIL)
    now = utcnow()
    for purpose in sorted(UNSUBSCRIBABLE):
        current = latest.get(purpose)
        if current is None or current.state is not ConsentState.REVOKED:
            session.add(
                change.record(patient_id, Channel.EMAIL, purpose, ConsentState.REVOKED, now)
            )
    if message is not None:
        message.delivery_notes = [
            *message.delivery_notes,
            "the recipient reported this mail as spam: clinic-initiated email to them stopped",
        ]
    await session.flush()
    log.info("spam complaint: clinic-initiated email stopped", extra={"event_id": str(event_id)})


async def _bounce(
    session: AsyncSession,
    parsed: ParsedEmail,
    reply_domain: str | None,
    now: datetime,
    retry_base_s: float,
) -> list[uuid.UUID]:
    bounce = parsed.bounce
    assert bounce is not None
    if not bounce.mentioned_ids:
        log.info("bounce without the original's Message-ID ignored")
        return []
    message = await _our_message(session, bounce.mentioned_ids, reply_domain)
    if message is None:
        log.info("bounce for a message we did not send ignored")
        return []
    what = f"{bounce.status or 'unknown status'}: {(bounce.diagnostic or '').strip()[:200]}"
    if not bounce.permanent:
        message.delivery_notes = [*message.delivery_notes, f"delivery delayed ({what})"]
        return []
    if not can_advance(message.status, MessageStatus.FAILED):
        # Already failed (another server's report of the same loss): status moves forward
        # only, and a journey step must not fall back to its next channel twice.
        log.info("bounce for a message already past it ignored")
        return []
    attempt = await queries.attempt_of(session, message.id, message.send_attempts)
    if attempt is None:
        return []
    # A server that gave up on a temporary condition (a 4.x.x with "failed": its queue
    # expired) failed this mail for good, but says nothing against the address itself.
    gave_up = (bounce.status or "").startswith("4.")
    failure = FailureClass(
        f"bounce_{bounce.status or 'failed'}"[:32],
        f"the recipient's mail server {'gave up on' if gave_up else 'returned'} it ({what})",
        transient=False,
        effect=FailureEffect.NONE if gave_up else FailureEffect.UNREACHABLE,
        unreachable_reason=None if gave_up else "hard_bounce",
    )
    return await fail_or_retry_in(
        session, message, attempt, failure, MessageStatus.FAILED, retry_base_s
    )
