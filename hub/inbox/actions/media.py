"""Attachments fetched from a provider by a worker, stored encrypted."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from hub.crypto import KeyRing
from hub.db import Database
from hub.inbox.access import StaffContext
from hub.inbox.models import Attachment, AttachmentState, Message
from hub.outbox import add_effect

MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024
"""Largest file stored (Twilio caps MMS at 5 MB in total)."""
ALLOWED_CONTENT_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/heic",
        "image/heif",
        "application/pdf",
        "audio/mpeg",
        "audio/ogg",
        "audio/amr",
        "audio/mp4",
        "video/mp4",
        "video/3gpp",
        "text/vcard",
        "text/x-vcard",
        "text/plain",
    }
)
"""Types staff can safely open; anything else is refused and shown as such in the inbox."""


@dataclass(frozen=True)
class PendingAttachment:
    id: uuid.UUID
    source_url: str
    declared_type: str


async def do_pending_attachment(db: Database, attachment_id: uuid.UUID) -> PendingAttachment | None:
    async with db.reader() as session:
        att = await session.get(Attachment, attachment_id)
        if att is None or att.state is not AttachmentState.PENDING or not att.source_url:
            return None
        return PendingAttachment(att.id, att.source_url, att.content_type)


async def _finish(
    db: Database, attachment_id: uuid.UUID, apply: Callable[[Attachment], None]
) -> tuple[uuid.UUID, ...]:
    async with db.transaction() as session:
        att = await session.get(Attachment, attachment_id)
        if att is None or att.state is not AttachmentState.PENDING:
            return ()
        apply(att)
        message = await session.get(Message, att.message_id)
        assert message is not None
        effect = add_effect(
            session,
            "notify:message:updated",
            {"message_id": str(message.id), "conversation_id": str(message.conversation_id)},
        )
        return (effect.id,)


async def do_store_attachment(
    db: Database, ring: KeyRing, attachment_id: uuid.UUID, content_type: str, data: bytes
) -> tuple[uuid.UUID, ...]:
    def apply(att: Attachment) -> None:
        att.seal_bytes(ring, "data", data)
        att.content_type = content_type
        att.size_bytes = len(data)
        att.state = AttachmentState.STORED
        att.source_url = None  # the provider's copy is no longer needed

    return await _finish(db, attachment_id, apply)


async def do_fail_attachment(
    db: Database, attachment_id: uuid.UUID, reason: str
) -> tuple[uuid.UUID, ...]:
    def apply(att: Attachment) -> None:
        att.state = AttachmentState.FAILED
        att.error_reason = reason

    return await _finish(db, attachment_id, apply)


async def do_read_attachment(
    db: Database, ring: KeyRing, ctx: StaffContext, attachment_id: uuid.UUID
) -> tuple[str, bytes, str]:
    """(content type, bytes, a safe file name) of a stored attachment the person may see."""
    from hub.audit import record
    from hub.inbox.actions.conversations import visible_conversation
    from hub.inbox.exceptions import NotFound

    async with db.transaction() as session:
        att = await session.get(Attachment, attachment_id)
        if att is None or att.state is not AttachmentState.STORED:
            raise NotFound("no such attachment")
        message = await session.get(Message, att.message_id)
        assert message is not None
        await visible_conversation(session, ctx, message.conversation_id)
        data = att.unseal_bytes(ring, "data") or b""
        name = att.unseal(ring, "filename") or f"attachment-{att.id}"
        await record(session, ctx.actor, "attachment.read", "attachment", att.id)
    safe = "".join(c for c in name if c.isalnum() or c in "._- ")[:80] or "attachment"
    return att.content_type, data, safe
