"""Inbound messages from providers: idempotent, keyword-aware, threaded into conversations."""

from __future__ import annotations

import enum
import json
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.channels.base import InboundMessage
from hub.consent import actions as consent
from hub.consent.models import ConsentSource, Purpose
from hub.crypto import KeyRing, associated_data
from hub.db import Database, new_id, utcnow
from hub.enums import Channel, ConversationStatus, Direction, MessageStatus, Priority
from hub.inbox import queries
from hub.inbox.actions.delivery import message_new_effect, queue_outbound
from hub.inbox.actions.patients import FIRST_RESPONSE_TARGETS
from hub.inbox.event_queries import record_status_change_in
from hub.inbox.models import (
    Attachment,
    AttachmentState,
    Conversation,
    InboundEvent,
    Message,
    Patient,
)
from hub.outbox import add_effect
from hub.routing import actions as routing

REOPEN_WINDOW = timedelta(days=7)
"""A message within this time of a resolution reopens that conversation instead of a new one."""

STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})
KEYWORD_CHANNELS = frozenset({Channel.SMS, Channel.WHATSAPP})
"""Channels whose opt-out words change consent. WhatsApp's opt-out is per business, so a STOP
there revokes WhatsApp only, never the patient's texts (and a HELP gets no answer: nothing can
be sent on WhatsApp yet)."""


class Keyword(enum.StrEnum):
    STOP = "stop"
    START = "start"
    HELP = "help"


def detect_keyword(body: str) -> tuple[Keyword, str] | None:
    """A carrier keyword when the whole message is that one word (any case, any spacing).
    NFKC first, so full-width letters from CJK keyboards and compatibility characters (the
    Kelvin sign for K) read as the letters they show: an opt-out is honoured as it looks."""
    word = unicodedata.normalize("NFKC", body).strip().rstrip(".!").strip().upper()
    if word in STOP_WORDS:
        return Keyword.STOP, word
    if word in START_WORDS:
        return Keyword.START, word
    if word in HELP_WORDS:
        return Keyword.HELP, word
    return None


@dataclass(frozen=True)
class IntakeResult:
    message_id: uuid.UUID | None
    conversation_id: uuid.UUID | None
    patient_id: uuid.UUID | None
    duplicate: bool
    keyword: Keyword | None
    effect_ids: tuple[uuid.UUID, ...]
    urgent: bool = False
    assign_to_staff_id: uuid.UUID | None = None
    """A routing rule asked for this person; the caller assigns after commit (or round-robins)."""
    assignee_id: uuid.UUID | None = None
    """Who has the conversation now: round-robin leaves an assigned conversation alone."""


async def patient_for_phone(
    session: AsyncSession, ring: KeyRing, phone: str
) -> tuple[Patient, bool]:
    """The sender's patient (a new, unverified one for an unknown number). Holds the sender's
    lock to the end of the transaction, so it also covers finding or opening the conversation."""
    bidx = ring.blind_index("phone", phone)
    await queries.lock_sender(session, bidx)
    matches = await queries.patients_by_phone_index(session, bidx)
    if matches:
        # Shared family phones map to several patients; the earliest record is the account
        # holder until staff split the thread (the inbox shows all matches).
        return matches[0], False
    patient = Patient(verified=False, channel_order=["sms", "email", "voice"])
    patient.seal(ring, "phone", phone)
    patient.phone_bidx = bidx
    session.add(patient)
    await session.flush()
    return patient, True


async def do_receive_inbound(
    db: Database,
    ring: KeyRing,
    inbound: InboundMessage,
    raw: Mapping[str, str],
    *,
    help_text: str,
    clinic_name: str = "The clinic",
    clinic: Mapping[str, Any] | None = None,
) -> IntakeResult:
    effects: list[uuid.UUID] = []
    async with db.transaction() as session:
        event_id = new_id()
        payload = json.dumps(dict(raw), sort_keys=True).encode()
        inserted = await queries.insert_inbound_event(
            session,
            {
                "id": event_id,
                "provider": inbound.provider,
                "provider_event_id": inbound.provider_message_id,
                "payload_enc": ring.encrypt(
                    payload, associated_data(InboundEvent.__tablename__, "payload_enc", event_id)
                ),
                "received_at": utcnow(),
            },
        )
        if not inserted:
            existing = await queries.inbound_event(
                session, inbound.provider, inbound.provider_message_id
            )
            message = None
            if existing is not None and existing.message_id is not None:
                message = await session.get(Message, existing.message_id)
            return IntakeResult(
                message.id if message else None,
                message.conversation_id if message else None,
                None,
                duplicate=True,
                keyword=None,
                effect_ids=(),
            )

        now = utcnow()
        patient, new_patient = await patient_for_phone(session, ring, inbound.from_address)

        conversation = await queries.latest_conversation_of(session, patient.id, inbound.channel)
        if (
            conversation is not None
            and conversation.status is ConversationStatus.RESOLVED
            and (conversation.resolved_at is None or now - conversation.resolved_at > REOPEN_WINDOW)
        ):
            conversation = None
        if conversation is None:
            conversation = Conversation(
                patient_id=patient.id,
                channel=inbound.channel,
                channel_address=inbound.to_address,
                status=ConversationStatus.OPEN,
                priority=Priority.NORMAL,
                created_at=now,
                first_response_due_at=now + FIRST_RESPONSE_TARGETS[Priority.NORMAL],
            )
            session.add(conversation)
        else:
            if conversation.status is not ConversationStatus.OPEN:
                before = conversation.status
                conversation.status = ConversationStatus.OPEN
                conversation.snoozed_until = None
                conversation.resolved_at = None
                record_status_change_in(session, conversation, before, now)
            conversation.channel_address = inbound.to_address
        conversation.last_activity_at = now
        conversation.last_inbound_at = now
        await session.flush()

        message = Message(
            conversation_id=conversation.id,
            direction=Direction.INBOUND,
            channel=inbound.channel,
            provider=inbound.provider,
            provider_message_id=inbound.provider_message_id,
            status=MessageStatus.RECEIVED,
            created_at=now,
        )
        message.seal(ring, "body", inbound.body)
        session.add(message)
        await session.flush()
        for media in inbound.media:
            attachment = Attachment(
                message_id=message.id,
                state=AttachmentState.PENDING,
                source_url=media.url,
                content_type=media.content_type[:128],
                size_bytes=0,
                created_at=now,
            )
            session.add(attachment)
            await session.flush()
            effects.append(
                add_effect(session, "job:fetch_media", {"attachment_id": str(attachment.id)}).id
            )
        await queries.link_inbound_event(session, event_id, message.id)

        found = detect_keyword(inbound.body) if inbound.channel in KEYWORD_CHANNELS else None
        keyword = found[0] if found else None
        if found is not None:
            keyword, word = found
            change = consent.ConsentChange(
                ConsentSource.KEYWORD, f"patient:{patient.id}", word, message.id
            )
            if keyword is Keyword.STOP:
                await consent.revoke_channel(session, patient.id, inbound.channel, change)
            elif keyword is Keyword.START:
                # YES is also a confirmation word for reminders: it only restores consent when
                # the patient is opted out; otherwise it is an ordinary reply.
                if await consent.is_opted_out(session, patient.id, inbound.channel):
                    await consent.restore_channel(session, patient.id, inbound.channel, change)
                else:
                    keyword = None
            elif keyword is Keyword.HELP:
                decision = await consent.may_send(
                    session, patient, inbound.channel, Purpose.SERVICE
                )
                if decision.allowed:
                    _reply, reply_effects = await queue_outbound(
                        session,
                        ring,
                        conversation,
                        help_text,
                        decision,
                        author_id=None,
                        purpose=Purpose.SERVICE,
                        urgent=True,
                    )
                    effects.extend(reply_effects)

        journey_handled = False
        # A patient created by this very text is enrolled in nothing: no question to answer.
        if keyword is None and not new_patient:
            # Journey replies: C / 1 confirms, 2 cancels, a number answers a survey. Imported
            # here because journeys send through this package (a module-level import would
            # be circular).
            from hub.journeys.answers import handle_reply_in

            answered = await handle_reply_in(
                session,
                ring,
                patient,
                conversation,
                inbound.body,
                inbound.channel,
                message.id,
                now,
                clinic=clinic or {"name": clinic_name},
            )
            if answered is not None:
                effects.extend(answered.effect_ids)
                journey_handled = True

        # Routing runs before the broadcast so message:new reaches the routed team's room; the
        # emergency reply to an urgent message is queued in this same transaction.
        routed = await routing.apply_routing(
            session,
            ring,
            patient=patient,
            conversation=conversation,
            message_body=inbound.body,
            channel=inbound.channel,
            is_new_patient=new_patient,
            clinic_name=clinic_name,
            now=now,
            # A HELP got its answer and a journey reply its handling: nothing more on top.
            answered=keyword is Keyword.HELP or journey_handled,
            clinic=clinic,
        )
        effects.extend(routed.effect_ids)
        effects.append(message_new_effect(session, message, conversation))
    return IntakeResult(
        message.id,
        conversation.id,
        patient.id,
        False,
        keyword,
        tuple(effects),
        urgent=routed.urgent,
        assign_to_staff_id=routed.assign_to_staff_id,
        assignee_id=conversation.assignee_id,
    )
