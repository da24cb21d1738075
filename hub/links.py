"""Signed tokens in addresses and links: the email reply token (``reply+<token>@domain``) that
names a conversation, and the unsubscribe token that names a patient, a purpose and the mail
it came in.

Written here rather than with a general signing library because a reply token must fit an
email local part (64 characters with ``reply+``) and survive mail systems that lower-case
addresses: so fixed binary fields, a truncated HMAC-SHA256, and lower-case base32.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hub.crypto import KeyRing

MAC_BYTES = 10
"""80 bits of HMAC: forging one takes 2**80 tries against a server that answers slowly."""
REPLY_TOKEN_LIFETIME = timedelta(days=365)
"""Patients answer old mail; after this, threading falls back to In-Reply-To and the sender."""

_PURPOSE_CODES = {"care": 0, "reminders": 1, "surveys": 2, "marketing": 3, "service": 4}
_PURPOSES = {v: k for k, v in _PURPOSE_CODES.items()}


def _encode(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=").lower()


def _decode(token: str) -> bytes | None:
    text = token.strip().upper()
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        return None


def _sign(ring: KeyRing, purpose: str, payload: bytes) -> str:
    mac = hmac.new(ring.link_key(purpose), payload, hashlib.sha256).digest()[:MAC_BYTES]
    return _encode(payload + mac)


def _verify(ring: KeyRing, purpose: str, token: str, size: int) -> bytes | None:
    raw = _decode(token)
    if raw is None or len(raw) != size + MAC_BYTES:
        return None
    payload, mac = raw[:size], raw[size:]
    expected = hmac.new(ring.link_key(purpose), payload, hashlib.sha256).digest()[:MAC_BYTES]
    return payload if hmac.compare_digest(mac, expected) else None


def reply_token(ring: KeyRing, conversation_id: uuid.UUID, now: datetime) -> str:
    """48 characters naming the conversation until ``REPLY_TOKEN_LIFETIME`` from ``now``."""
    expires = int((now + REPLY_TOKEN_LIFETIME).timestamp() // 3600)
    return _sign(ring, "reply", conversation_id.bytes + struct.pack(">I", expires))


def read_reply_token(ring: KeyRing, token: str, now: datetime) -> uuid.UUID | None:
    """The conversation a genuine, unexpired token names; None for anything else."""
    payload = _verify(ring, "reply", token, 20)
    if payload is None:
        return None
    (expires,) = struct.unpack(">I", payload[16:])
    if datetime.fromtimestamp(expires * 3600, UTC) < now:
        return None
    return uuid.UUID(bytes=payload[:16])


@dataclass(frozen=True)
class Unsubscribe:
    patient_id: uuid.UUID
    purpose: str
    message_id: uuid.UUID
    """The mail the link came in (evidence for the consent record)."""


def unsubscribe_token(ring: KeyRing, what: Unsubscribe) -> str:
    code = _PURPOSE_CODES[what.purpose]
    return _sign(ring, "unsubscribe", what.patient_id.bytes + bytes([code]) + what.message_id.bytes)


def read_unsubscribe_token(ring: KeyRing, token: str) -> Unsubscribe | None:
    """Unsubscribe links do not expire: RFC 8058 expects them to work whenever used."""
    payload = _verify(ring, "unsubscribe", token, 33)
    if payload is None or payload[16] not in _PURPOSES:
        return None
    return Unsubscribe(
        uuid.UUID(bytes=payload[:16]), _PURPOSES[payload[16]], uuid.UUID(bytes=payload[17:])
    )


CHAT_TOKEN_LIFETIME = timedelta(days=7)
"""How long a "chat with us" link opens the patient's chat; a new invite or an offline notice
carries a fresh one."""


def chat_token(ring: KeyRing, patient_id: uuid.UUID, now: datetime) -> str:
    """48 characters naming the patient until ``CHAT_TOKEN_LIFETIME`` from ``now`` (to the
    minute). Its own purpose key, so a reply or unsubscribe token never opens a chat."""
    expires = int((now + CHAT_TOKEN_LIFETIME).timestamp() // 60)
    return _sign(ring, "chat", patient_id.bytes + struct.pack(">I", expires))


def _open_chat_token(ring: KeyRing, token: str) -> tuple[uuid.UUID, datetime] | None:
    payload = _verify(ring, "chat", token, 20)
    if payload is None:
        return None
    (expires,) = struct.unpack(">I", payload[16:])
    return uuid.UUID(bytes=payload[:16]), datetime.fromtimestamp(expires * 60, UTC)


def chat_token_expiry(ring: KeyRing, token: str) -> datetime | None:
    """When a genuine token stops (or stopped) working; None for anything else."""
    opened = _open_chat_token(ring, token)
    return opened[1] if opened else None


def read_chat_token(ring: KeyRing, token: str, now: datetime) -> uuid.UUID | None:
    """The patient a genuine, unexpired chat token names; None for anything else."""
    opened = _open_chat_token(ring, token)
    if opened is None or opened[1] < now:
        return None
    return opened[0]


MEDIA_LINK_LIFETIME = timedelta(hours=4)
"""How long the link Twilio fetches an outbound MMS file from works. Twilio fetches it while it
sends (and again for a retried attempt, which gets a fresh link); a link found later in a log
or a carrier's records opens nothing."""


def media_token(ring: KeyRing, attachment_id: uuid.UUID, now: datetime) -> str:
    """40 characters naming an outbound attachment until ``MEDIA_LINK_LIFETIME`` from ``now``
    (to the minute), under its own purpose key."""
    expires = int((now + MEDIA_LINK_LIFETIME).timestamp() // 60)
    return _sign(ring, "media", attachment_id.bytes + struct.pack(">I", expires))


def read_media_token(ring: KeyRing, token: str, now: datetime) -> uuid.UUID | None:
    """The attachment a genuine, unexpired media token names; None for anything else."""
    payload = _verify(ring, "media", token, 20)
    if payload is None:
        return None
    (expires,) = struct.unpack(">I", payload[16:])
    if datetime.fromtimestamp(expires * 60, UTC) < now:
        return None
    return uuid.UUID(bytes=payload[:16])
