"""Enumerations stored as constrained strings (portable, and cheap to extend by migration)."""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import Enum


class Channel(enum.StrEnum):
    SMS = "sms"
    EMAIL = "email"
    VOICE = "voice"
    CHAT = "chat"
    WHATSAPP = "whatsapp"


RECEIVE_ONLY = {
    Channel.WHATSAPP: "WhatsApp is not connected on this hub yet; reply by another channel",
}
"""Channels whose inbound messages are stored as what they are, but which the hub cannot send
on (no adapter), with the reason staff and the consent gate give. WhatsApp arrives through the
Twilio number: stored as SMS, replies would go out as texts the patient never wrote to, and
Twilio refuses a whatsapp: address on the SMS API. Never in a channel order or a journey."""


class Role(enum.StrEnum):
    AGENT = "agent"
    COORDINATOR = "coordinator"
    ADMIN = "admin"


class ConversationStatus(enum.StrEnum):
    OPEN = "open"
    PENDING = "pending"
    SNOOZED = "snoozed"
    RESOLVED = "resolved"


class Priority(enum.StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class MessageStatus(enum.StrEnum):
    RECEIVED = "received"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    UNDELIVERED = "undelivered"
    FAILED = "failed"


FORWARD_RANK = {
    MessageStatus.QUEUED: 0,
    MessageStatus.SENDING: 1,
    MessageStatus.SENT: 2,
    MessageStatus.DELIVERED: 3,
    MessageStatus.READ: 4,
}
FAILED_STATUSES = frozenset({MessageStatus.UNDELIVERED, MessageStatus.FAILED})


def can_advance(old: MessageStatus, new: MessageStatus) -> bool:
    """Delivery status only moves forward: a late or repeated callback never regresses it.

    queued < sending < sent < delivered < read; undelivered and failed are terminal and can be
    reached only before delivery.
    """
    if old == new or old in FAILED_STATUSES or old not in FORWARD_RANK:
        return False
    if new in FAILED_STATUSES:
        return FORWARD_RANK[old] < FORWARD_RANK[MessageStatus.DELIVERED]
    return new in FORWARD_RANK and FORWARD_RANK[new] > FORWARD_RANK[old]


def str_enum(cls: type[enum.StrEnum], name: str) -> Any:
    """A VARCHAR with a CHECK constraint instead of a native enum type."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=max(len(m.value) for m in cls) + 8,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )
