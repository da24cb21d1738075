"""What an outbound email carries besides its text: the subject and HTML stored with the
message, a Reply-To that threads answers back by a signed token, In-Reply-To and References
from the conversation's earlier mail, Auto-Submitted for clinic-initiated mail, and the RFC 8058
one-click unsubscribe link on journey and survey mail."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.consent.models import Purpose
from hub.crypto import KeyRing
from hub.enums import Channel, Direction
from hub.inbox import queries
from hub.inbox.email_ids import email_id_of
from hub.inbox.models import Conversation, Message
from hub.links import Unsubscribe, reply_token, unsubscribe_token

UNSUBSCRIBABLE = frozenset({Purpose.REMINDERS, Purpose.SURVEYS, Purpose.MARKETING})
"""Purposes whose mail carries a one-click unsubscribe (care replies and service answers
do not: a patient cannot opt out of their own conversation)."""
THREAD_REFERENCES = 20
"""Earlier Message-IDs carried in References (clients need the chain, not the whole history)."""


async def email_extras(
    session: AsyncSession,
    ring: KeyRing,
    message: Message,
    conversation: Conversation,
    *,
    reply_domain: str | None,
    public_url: str,
    now: datetime,
) -> dict[str, Any]:
    """Keyword arguments for ``Outbound`` when ``message`` goes by email."""
    if message.channel is not Channel.EMAIL:
        return {}
    thread = await queries.email_thread(
        session, conversation.id, message.id, message.created_at, THREAD_REFERENCES
    )
    subject = message.unseal(ring, "subject")
    if subject is None:
        last = next((s for s in (m.unseal(ring, "subject") for m in reversed(thread)) if s), None)
        if last:
            subject = last if last.lower().startswith("re:") else f"Re: {last}"
    return build_extras(
        ring,
        message,
        conversation,
        subject=subject,
        html=message.unseal(ring, "html"),
        reply_domain=reply_domain,
        public_url=public_url,
        now=now,
        thread=thread,
    )


def build_extras(
    ring: KeyRing,
    message: Message,
    conversation: Conversation,
    *,
    subject: str | None,
    html: str | None,
    reply_domain: str | None,
    public_url: str,
    now: datetime,
    thread: list[Message] | None = None,
) -> dict[str, Any]:
    """``email_extras`` for a message whose thread the caller already has (a new journey
    message has none)."""
    thread = thread or []
    known = [(m, email_id_of(ring, m)) for m in thread]
    ids = [i for _, i in known if i]
    inbound_ids = [i for m, i in known if i and m.direction is Direction.INBOUND]
    purpose = Purpose(message.purpose)
    unsubscribe = None
    if purpose in UNSUBSCRIBABLE:
        what = Unsubscribe(conversation.patient_id, purpose.value, message.id)
        unsubscribe = f"{public_url}/unsubscribe/{unsubscribe_token(ring, what)}"
    return {
        "subject": subject,
        "html": html,
        "reply_to": (
            f"reply+{reply_token(ring, conversation.id, now)}@{reply_domain}"
            if reply_domain
            else None
        ),
        "in_reply_to": f"<{inbound_ids[-1]}>" if inbound_ids else None,
        "references": tuple(f"<{i}>" for i in ids[-THREAD_REFERENCES:]),
        "automated": message.author_id is None,
        "unsubscribe_url": unsubscribe,
    }
