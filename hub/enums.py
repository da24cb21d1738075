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
