"""What a staff reply may carry: its length on each channel, and files. Both are checked
before anything is stored, so a reply is sent whole or refused with the reason (never cut
short). Files are kept encrypted like inbound attachments and handed to the channel at send
time: signed links Twilio fetches for MMS, MIME parts for email."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.channels.base import OutboundFile
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, Direction
from hub.inbox import queries
from hub.inbox.actions.media import ALLOWED_CONTENT_TYPES, MAX_ATTACHMENT_BYTES
from hub.inbox.models import Attachment, AttachmentState, Message
from hub.links import media_token, read_media_token

MMS_CONTENT_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "application/pdf"})
"""What goes by MMS: the image types every US carrier renders, and PDF, which Twilio accepts."""
MAX_FILES = 10
"""Twilio sends at most 10 media items with one message."""
MAX_FILENAME_CHARS = 120
MAGIC = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "application/pdf": (b"%PDF-",),
}
"""First bytes of the types sent by MMS: a file named .pdf that is not one is refused here,
not by the patient's phone."""
ATTACHING_CHANNELS = frozenset({Channel.SMS, Channel.EMAIL})
MAX_SMS_CHARS = 1600
"""Twilio's limit for one SMS body (it splits it into up to 10-11 segments)."""
MAX_TEXT_CHARS = 20_000
"""Longest reply by email or chat: a long letter, and a bound on what one request stores."""


def max_chars(channel: Channel | None) -> int:
    return MAX_SMS_CHARS if channel in (Channel.SMS, Channel.WHATSAPP) else MAX_TEXT_CHARS


def check_reply(body: str, files: Sequence[OutgoingFile], channel: Channel | None) -> None:
    """Raise ValueError, in words staff can act on, for a reply that cannot go on
    ``channel`` as it is (too long, no content, files it cannot carry)."""
    if not body and not files:
        raise ValueError("a reply needs some text")
    limit = max_chars(channel)
    if len(body) > limit:
        where = "an SMS" if limit == MAX_SMS_CHARS else "a reply"
        advice = "Shorten it, or send it by email" if limit == MAX_SMS_CHARS else "Shorten it"
        raise ValueError(
            f"this reply is {len(body):,} characters and {where} can carry at most "
            f"{limit:,}. {advice}; nothing was sent"
        )
    check_files(files, channel)


@dataclass(frozen=True)
class OutgoingFile:
    filename: str
    content_type: str
    data: bytes = field(repr=False)


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 1024 * 1024 else f"{max(1, n // 1024)} KB"


def check_files(files: Sequence[OutgoingFile], channel: Channel | None = None) -> None:
    """Raise ValueError, in words staff can act on, for files that cannot be sent (on
    ``channel`` when known). Called before anything is written."""
    if not files:
        return
    if len(files) > MAX_FILES:
        raise ValueError(f"at most {MAX_FILES} files can go with one reply; remove some")
    total = sum(len(f.data) for f in files)
    if total > MAX_ATTACHMENT_BYTES:
        raise ValueError(
            f"the attached files come to {_size(total)}; at most "
            f"{_size(MAX_ATTACHMENT_BYTES)} in all can be sent. Remove or shrink a file"
        )
    for f in files:
        name = f.filename or "the file"
        if not f.data:
            raise ValueError(f"{name} is empty; attach it again")
        if f.content_type not in ALLOWED_CONTENT_TYPES:
            raise ValueError(
                f"{name} is a kind of file that cannot be sent ({f.content_type or 'unknown'}); "
                "send an image, a PDF, audio, video or plain text"
            )
        magic = MAGIC.get(f.content_type)
        if magic and not f.data.startswith(magic):
            raise ValueError(f"{name} is not the {f.content_type} file its name says; check it")
    if channel is None:
        return
    if channel not in ATTACHING_CHANNELS:
        raise ValueError(
            f"files cannot be sent by {channel.value}; choose SMS (images and PDF) or email"
        )
    if channel is Channel.SMS:
        for f in files:
            if f.content_type not in MMS_CONTENT_TYPES:
                raise ValueError(
                    f"{f.filename or 'the file'} ({f.content_type}) cannot go by SMS, which "
                    "carries JPEG, PNG and GIF images and PDF; send it by email instead"
                )


def _clean_name(name: str) -> str:
    return "".join(c for c in name if c.isprintable() and c not in "/\\")[:MAX_FILENAME_CHARS]


def attach_in(
    session: AsyncSession, ring: KeyRing, message: Message, files: Sequence[OutgoingFile]
) -> None:
    """Store ``files`` encrypted with ``message``, inside the caller's transaction."""
    for f in files:
        att = Attachment(
            message_id=message.id,
            state=AttachmentState.STORED,
            content_type=f.content_type,
            size_bytes=len(f.data),
        )
        att.seal(ring, "filename", _clean_name(f.filename) or None)
        att.seal_bytes(ring, "data", f.data)
        session.add(att)


async def media_extras(
    session: AsyncSession,
    ring: KeyRing,
    message: Message,
    *,
    public_url: str,
    now: datetime,
) -> dict[str, Any]:
    """Keyword arguments for ``Outbound``: the message's files as signed links (SMS) or as
    MIME parts (email). Empty for a message without files."""
    if message.direction is not Direction.OUTBOUND or message.channel not in ATTACHING_CHANNELS:
        return {}
    stored = [
        a
        for a in (await queries.attachments_of(session, [message.id])).get(message.id, [])
        if a.state is AttachmentState.STORED
    ]
    if not stored:
        return {}
    if message.channel is Channel.SMS:
        base = public_url.rstrip("/")
        return {"media_urls": tuple(f"{base}/media/{media_token(ring, a.id, now)}" for a in stored)}
    return {
        "attachments": tuple(
            OutboundFile(
                a.unseal(ring, "filename") or f"attachment-{a.id}",
                a.content_type,
                a.unseal_bytes(ring, "data") or b"",
            )
            for a in stored
        )
    }


@dataclass(frozen=True)
class MediaFile:
    content_type: str
    data: bytes = field(repr=False)


async def do_read_media(db: Database, ring: KeyRing, token: str, now: datetime) -> MediaFile | None:
    """The file a genuine, unexpired media link names, for the provider fetching it; None
    for anything else (a forged or old link, or a patient's inbound file: links are only
    ever made for outbound ones, and only those are served by them)."""
    attachment_id: uuid.UUID | None = read_media_token(ring, token, now)
    if attachment_id is None:
        return None
    async with db.reader() as session:
        att = await session.get(Attachment, attachment_id)
        if att is None or att.state is not AttachmentState.STORED:
            return None
        message = await session.get(Message, att.message_id)
        if message is None or message.direction is not Direction.OUTBOUND:
            return None
        return MediaFile(att.content_type, att.unseal_bytes(ring, "data") or b"")
