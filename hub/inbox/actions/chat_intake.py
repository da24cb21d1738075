"""The patient's side of the web chat: messages in (idempotent by the browser's client id),
the history a reconnecting browser catches up from, and its delivered / read receipts.

Every function takes the patient id a verified chat token named, and touches only that
patient's chat messages: a token for one patient can neither read nor mark another's."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.channels.base import StatusUpdate
from hub.channels.chat.adapter import (
    OFFLINE,
    PROVIDER,
    ChatInbound,
    chat_event_id,
    classify,
    provider_message_id,
)
from hub.crypto import KeyRing, associated_data
from hub.db import Database, new_id, utcnow
from hub.enums import Channel, ConversationStatus, Direction, MessageStatus, Priority
from hub.inbox import chat_queries, queries
from hub.inbox.actions.delivery import do_apply_status, message_new_effect
from hub.inbox.actions.intake import REOPEN_WINDOW
from hub.inbox.actions.patients import FIRST_RESPONSE_TARGETS
from hub.inbox.event_queries import record_status_change_in
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Conversation, InboundEvent, Message, Patient
from hub.routing import actions as routing

HISTORY_LIMIT = 200
"""Messages in one history answer; a browser further behind asks again from the last one."""


@dataclass(frozen=True)
class ChatItem:
    """One message as the patient's browser shows it."""

    id: uuid.UUID
    sender: str
    """"patient" or "clinic"."""
    body: str
    at: datetime
    author: str | None = None
    """The staff member's name on a clinic message they wrote."""
    client_id: str | None = None
    """The browser's id of a message the patient sent."""
    status: str | None = None
    """A clinic message's delivery status (the browser acknowledges what is not read yet)."""

    def __repr__(self) -> str:  # the body is PHI
        return f"ChatItem({self.id})"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "from": self.sender,
            "body": self.body,
            "at": self.at.isoformat(timespec="microseconds"),
            "author": self.author,
            "client_id": self.client_id,
            "status": self.status,
        }


def chat_item(ring: KeyRing, message: Message, author: str | None = None) -> ChatItem:
    inbound = message.direction is Direction.INBOUND
    client_id = None
    if inbound and message.provider == PROVIDER and message.provider_message_id:
        client_id = message.provider_message_id.partition(":")[2] or None
    return ChatItem(
        message.id,
        "patient" if inbound else "clinic",
        message.unseal(ring, "body") or "",
        message.created_at,
        None if inbound else author,
        client_id,
        None if inbound else message.status.value,
    )


@dataclass(frozen=True)
class ChatReceived:
    item: ChatItem
    conversation_id: uuid.UUID
    duplicate: bool
    effect_ids: tuple[uuid.UUID, ...] = ()
    assign_to_staff_id: uuid.UUID | None = None
    """A routing rule asked for this person; the caller assigns after commit (or round-robins)."""


async def do_receive_chat(
    db: Database,
    ring: KeyRing,
    patient_id: uuid.UUID,
    inbound: ChatInbound,
    *,
    clinic_name: str = "The clinic",
    clinic: dict[str, Any] | None = None,
) -> ChatReceived:
    """Store a patient's chat message, thread it, route it and answer journey questions, as
    SMS intake does. The same client id again (a resend after a reconnect) stores nothing and
    answers with the message stored the first time."""
    effects: list[uuid.UUID] = []
    async with db.transaction() as session:
        patient = await session.get(Patient, patient_id)
        if patient is None:
            raise NotFound("no such patient")
        event_id, event_key = new_id(), chat_event_id(patient_id, inbound.client_id)
        payload = json.dumps({"client_id": inbound.client_id, "body": inbound.body}).encode()
        inserted = await queries.insert_inbound_event(
            session,
            {
                "id": event_id,
                "provider": PROVIDER,
                "provider_event_id": event_key,
                "payload_enc": ring.encrypt(
                    payload, associated_data(InboundEvent.__tablename__, "payload_enc", event_id)
                ),
                "received_at": utcnow(),
            },
        )
        if not inserted:
            existing = await queries.inbound_event(session, PROVIDER, event_key)
            assert existing is not None and existing.message_id is not None
            first = await session.get(Message, existing.message_id)
            assert first is not None
            return ChatReceived(chat_item(ring, first), first.conversation_id, duplicate=True)

        now = utcnow()
        conversation = await _conversation_for(session, patient, now)
        message = Message(
            conversation_id=conversation.id,
            direction=Direction.INBOUND,
            channel=Channel.CHAT,
            provider=PROVIDER,
            provider_message_id=event_key,
            status=MessageStatus.RECEIVED,
            created_at=now,
        )
        message.seal(ring, "body", inbound.body)
        session.add(message)
        await session.flush()
        event = await session.get(InboundEvent, event_id)
        assert event is not None
        event.message_id = message.id

        # Imported here because journeys send through this package (as in SMS intake).
        from hub.journeys.answers import handle_reply_in

        answered = await handle_reply_in(
            session,
            ring,
            patient,
            conversation,
            inbound.body,
            Channel.CHAT,
            message.id,
            now,
            clinic=clinic or {"name": clinic_name},
        )
        if answered is not None:
            effects.extend(answered.effect_ids)
        routed = await routing.apply_routing(
            session,
            ring,
            patient=patient,
            conversation=conversation,
            message_body=inbound.body,
            channel=Channel.CHAT,
            is_new_patient=False,
            clinic_name=clinic_name,
            now=now,
            answered=answered is not None,
            clinic=clinic,
        )
        effects.extend(routed.effect_ids)
        effects.append(message_new_effect(session, message, conversation))
    return ChatReceived(
        chat_item(ring, message),
        conversation.id,
        duplicate=False,
        effect_ids=tuple(effects),
        assign_to_staff_id=routed.assign_to_staff_id,
    )


async def _conversation_for(session: AsyncSession, patient: Patient, now: datetime) -> Conversation:
    """The conversation the chat continues (chat_queries.conversation_for_chat), reopened when
    it was resolved recently, or a new one (the same reopening rule as SMS threading)."""
    conversation = await chat_queries.conversation_for_chat(session, patient.id)
    if (
        conversation is not None
        and conversation.status is ConversationStatus.RESOLVED
        and (conversation.resolved_at is None or now - conversation.resolved_at > REOPEN_WINDOW)
    ):
        conversation = None
    if conversation is None:
        conversation = Conversation(
            patient_id=patient.id,
            channel=Channel.CHAT,
            status=ConversationStatus.OPEN,
            priority=Priority.NORMAL,
            created_at=now,
            first_response_due_at=now + FIRST_RESPONSE_TARGETS[Priority.NORMAL],
        )
        session.add(conversation)
    elif conversation.status is not ConversationStatus.OPEN:
        before = conversation.status
        conversation.status = ConversationStatus.OPEN
        conversation.snoozed_until = None
        conversation.resolved_at = None
        record_status_change_in(session, conversation, before, now)
    conversation.last_activity_at = now
    conversation.last_inbound_at = now
    await session.flush()
    return conversation


@dataclass(frozen=True)
class ChatHistory:
    items: list[ChatItem]
    more: bool
    """More messages follow the last one: ask again from its id."""


async def do_chat_history(
    db: Database,
    ring: KeyRing,
    patient_id: uuid.UUID,
    after: uuid.UUID | None,
    *,
    limit: int = HISTORY_LIMIT,
) -> ChatHistory:
    """The patient's chat after ``after`` (a message id their browser shows), oldest first;
    the newest ``limit`` when ``after`` is None or not one of their messages."""
    async with db.reader() as session:
        cursor = None
        if after is not None:
            cursor = await chat_queries.chat_message_of(session, patient_id, after, OFFLINE)
        rows = await chat_queries.chat_messages(
            session, patient_id, OFFLINE, after=cursor, limit=limit + 1
        )
        if cursor is None:
            more, rows = False, rows[-limit:]
        else:
            more, rows = len(rows) > limit, rows[:limit]
        return ChatHistory([chat_item(ring, m, name) for m, name in rows], more)


@dataclass(frozen=True)
class RelayedMessage:
    """What the chat relay needs to emit a clinic message: whose room, and the message."""

    patient_id: uuid.UUID
    item: ChatItem
    status: MessageStatus
    send_attempts: int


async def do_load_relayed(
    db: Database, ring: KeyRing, message_id: uuid.UUID
) -> RelayedMessage | None:
    async with db.reader() as session:
        message = await session.get(Message, message_id)
        if message is None or message.direction is not Direction.OUTBOUND:
            return None
        if message.channel is not Channel.CHAT:
            return None
        conversation = await session.get(Conversation, message.conversation_id)
        assert conversation is not None
        author = None
        if message.author_id is not None:
            names = await queries.staff_names(session, {message.author_id})
            author = names.get(message.author_id)
        return RelayedMessage(
            conversation.patient_id,
            chat_item(ring, message, author),
            message.status,
            message.send_attempts,
        )


RECEIPTS = frozenset({MessageStatus.DELIVERED, MessageStatus.READ})


async def do_chat_receipt(
    db: Database, patient_id: uuid.UUID, message_id: uuid.UUID, status: MessageStatus
) -> tuple[uuid.UUID, ...]:
    """The patient's browser showed (delivered) or the patient saw (read) a clinic message.
    Statuses move forward only, exactly as a provider's callback would move them; a message
    of someone else's chat changes nothing."""
    if status not in RECEIPTS:
        raise ValueError("a chat receipt is delivered or read")
    async with db.reader() as session:
        message = await chat_queries.chat_message_of(session, patient_id, message_id, OFFLINE)
        if message is None or message.direction is not Direction.OUTBOUND:
            return ()
        attempt = message.send_attempts
    if attempt == 0:
        return ()
    update = StatusUpdate(
        PROVIDER, provider_message_id(message_id, attempt), status, None, message_id, attempt
    )
    return await do_apply_status(db, update, classify, retry_base_s=0)


async def do_chat_patient(db: Database, patient_id: uuid.UUID) -> bool:
    """Whether the patient a token names still exists (a merged or erased one does not)."""
    async with db.reader() as session:
        return await queries.get_patient(session, patient_id) is not None


async def do_chat_conversation(db: Database, patient_id: uuid.UUID) -> uuid.UUID | None:
    """The conversation staff see the patient's chat in (for typing indicators)."""
    async with db.reader() as session:
        conversation = await chat_queries.conversation_for_chat(session, patient_id)
        return conversation.id if conversation else None


async def do_chat_patient_of(db: Database, conversation_id: uuid.UUID) -> uuid.UUID | None:
    """The patient of a chat conversation (staff typing there is shown in their chat)."""
    async with db.reader() as session:
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None:
            return None
        # A chat continues the conversation it was invited from (any channel): typing there
        # shows in the patient's chat when that is where the chat goes.
        current = await chat_queries.conversation_for_chat(session, conversation.patient_id)
        return (
            conversation.patient_id
            if current is not None and current.id == conversation.id
            else None
        )
