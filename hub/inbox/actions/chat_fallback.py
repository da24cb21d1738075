"""Reaching a chat patient on their other channels: the "chat with us" invite staff send, and
the short notice that follows a staff reply the patient was not in the chat to see. Both carry
a fresh signed link to the chat and pass the consent gate like any other message."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import record
from hub.channels.chat.adapter import OFFLINE, OFFLINE_FAILURE, PROVIDER, RelayNote
from hub.consent import actions as consent
from hub.consent.exceptions import ConsentRefused
from hub.consent.models import Purpose
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, MessageStatus, can_advance
from hub.inbox import chat_queries, queries
from hub.inbox.access import StaffContext
from hub.inbox.actions.delivery import QueuedMessage, fail_or_retry_in, queue_outbound
from hub.inbox.actions.patients import view_patient
from hub.inbox.models import Conversation, Message, Patient
from hub.links import chat_token

INVITE_TEMPLATE = "chat_invite"
OFFLINE_NOTICE = "You have a new message from {clinic} in your chat: {link}"
OFFLINE_SUBJECT = "New message from {clinic}"
NOTICE_NOTE = "chat offline notice"
"""Delivery note on an offline notice, and on the reply it was sent for (no PHI)."""
OFFLINE_NOTICE_QUIET = timedelta(hours=1)
"""At most one offline notice per conversation in this time: a patient who is away while
staff write three replies gets one text, not three."""


def chat_link(ring: KeyRing, patient_id: uuid.UUID, public_url: str, now: datetime) -> str:
    return f"{public_url.rstrip('/')}/chat/{chat_token(ring, patient_id, now)}"


async def notify_offline_in(
    session: AsyncSession,
    ring: KeyRing,
    message: Message,
    conversation: Conversation,
    *,
    public_url: str,
    clinic_name: str,
    available: Iterable[Channel] | None = None,
    now: datetime | None = None,
) -> list[uuid.UUID]:
    """Inside the transaction that marks ``message`` failed: when it is a person's chat reply
    that failed because the patient was away (``chat_offline``), queue a short notice with a
    link back to the chat on the patient's first allowed other channel. ``available``: the
    channels this hub can send on. Returns the notice's effects (none when nothing is sent;
    the failed message's reason then says why)."""
    if message.channel is not Channel.CHAT or message.error_code != OFFLINE:
        return []
    if message.author_id is None and message.purpose != Purpose.CARE.value:
        return []  # a journey step: it falls back by its own channel policy
    if NOTICE_NOTE in message.delivery_notes:
        return []  # this failure was handled already
    now = now or utcnow()
    since = now - OFFLINE_NOTICE_QUIET
    recent = await chat_queries.automated_since(session, conversation.id, since)
    if any(NOTICE_NOTE in m.delivery_notes for m in recent):
        message.error_reason = (
            "the patient is not in the chat; a link to it was sent to them in the last hour"
        )
        return []
    patient = await session.get(Patient, conversation.patient_id)
    assert patient is not None
    usable = set(Channel if available is None else available) - {Channel.CHAT}
    choice = await consent.choose_channel(session, patient, Purpose.CARE, now, available=usable)
    decision = choice.decision
    if decision is None:
        message.error_reason = "the patient is not in the chat, and no other channel may be used"
        message.delivery_notes = [*message.delivery_notes, *choice.reasons]
        return []
    body = OFFLINE_NOTICE.format(
        clinic=clinic_name, link=chat_link(ring, patient.id, public_url, now)
    )
    notice, effects = await queue_outbound(
        session,
        ring,
        conversation,
        body,
        decision,
        author_id=None,
        purpose=Purpose.CARE,
        channel=decision.channel,
    )
    notice.delivery_notes = [NOTICE_NOTE, *choice.reasons]
    if decision.channel is Channel.EMAIL:
        notice.seal(ring, "subject", OFFLINE_SUBJECT.format(clinic=clinic_name))
    message.error_reason = (
        f"the patient is not in the chat; a link to it went by {decision.channel.value}"
    )
    message.delivery_notes = [*message.delivery_notes, NOTICE_NOTE]
    return effects


async def do_chat_offline(
    db: Database,
    ring: KeyRing,
    note: RelayNote,
    *,
    public_url: str,
    clinic_name: str,
    available: Iterable[Channel] | None = None,
) -> tuple[uuid.UUID, ...]:
    """The chat relay found the patient away too long: the send fails (``chat_offline``, not
    retried) and, in the same commit, the notice goes out. A repeated or late report changes
    nothing, and neither does one about a message the patient has already received."""
    async with db.transaction() as session:
        # Attempt before message: the order status callbacks lock in.
        attempt = await queries.attempt_of(session, note.message_id, note.attempt)
        message = await queries.message_for_update(session, note.message_id)
        if attempt is None or message is None or message.send_attempts != note.attempt:
            return ()
        failed = MessageStatus.FAILED
        if not (can_advance(attempt.status, failed) and can_advance(message.status, failed)):
            return ()
        attempt.provider_message_id = attempt.provider_message_id or note.encode()
        if message.provider_message_id is None:
            message.provider, message.provider_message_id = PROVIDER, note.encode()
        effects = await fail_or_retry_in(session, message, attempt, OFFLINE_FAILURE, failed, 0)
        conversation = await session.get(Conversation, message.conversation_id)
        assert conversation is not None
        effects += await notify_offline_in(
            session,
            ring,
            message,
            conversation,
            public_url=public_url,
            clinic_name=clinic_name,
            available=available,
        )
    return tuple(effects)


async def do_send_chat_invite(
    db: Database,
    ring: KeyRing,
    ctx: StaffContext,
    conversation_id: uuid.UUID,
    *,
    public_url: str,
    clinic: dict[str, Any],
    channel: Channel | None = None,
) -> QueuedMessage:
    """Send the patient the ``chat_invite`` template with a fresh chat link, on ``channel``
    or else the conversation's own (or, from a chat conversation, the patient's first
    other channel). Refused, with the reason, without consent. Audited."""
    # Imported here because templates sit beside the inbox, and automated sends do the same.
    from hub.inbox.actions.conversations import visible_conversation
    from hub.templates.actions import render_template, template_context

    async with db.transaction() as session:
        conversation = await visible_conversation(session, ctx, conversation_id, lock=True)
        patient = await session.get(Patient, conversation.patient_id)
        assert patient is not None
        if channel is None:
            preferred = [conversation.channel, *patient.channels()]
            channel = next((c for c in preferred if c is not Channel.CHAT), Channel.SMS)
        if channel is Channel.CHAT:
            raise ValueError("a chat link goes by SMS or email, not inside the chat")
        decision = await consent.may_send(session, patient, channel, Purpose.CARE)
        if not decision.allowed:
            raise ConsentRefused(decision.reason, code=decision.code)
        now = utcnow()
        links = {"chat": chat_link(ring, patient.id, public_url, now)}
        context = template_context(view_patient(ring, patient), None, clinic, links=links)
        rendered = await render_template(session, INVITE_TEMPLATE, channel.value, context)
        message, effects = await queue_outbound(
            session,
            ring,
            conversation,
            rendered.body,
            decision,
            author_id=ctx.staff_id,
            purpose=Purpose.CARE,
            urgent=True,
            channel=channel,
        )
        if rendered.subject:
            message.seal(ring, "subject", rendered.subject)
        if rendered.html:
            message.seal(ring, "html", rendered.html)
        await record(
            session,
            ctx.actor,
            "chat_link.send",
            "patient",
            patient.id,
            {"conversation": str(conversation_id), "channel": channel.value},
        )
    return QueuedMessage(message.id, tuple(effects))
