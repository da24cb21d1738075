"""Decrypted views handed across the domain boundary (never persisted, never logged)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from hub.enums import Channel, Direction, MessageStatus, Role


@dataclass(frozen=True)
class PatientView:
    id: uuid.UUID
    name: str | None
    phone: str | None
    email: str | None
    language: str
    time_zone: str
    channel_order: list[str]
    tags: list[str]
    verified: bool

    def __repr__(self) -> str:  # keep PHI out of tracebacks and debug output
        return f"PatientView(id={self.id})"


@dataclass(frozen=True)
class MessageView:
    id: uuid.UUID
    conversation_id: uuid.UUID
    direction: Direction
    channel: Channel
    body: str | None
    status: MessageStatus
    created_at: datetime

    def __repr__(self) -> str:
        return f"MessageView(id={self.id}, status={self.status})"


@dataclass(frozen=True)
class NewPatient:
    name: str | None = None
    phone: str | None = None
    email: str | None = None
    language: str = "en"
    time_zone: str = "UTC"
    channel_order: list[str] = field(default_factory=lambda: ["sms", "email", "voice"])
    tags: list[str] = field(default_factory=list)
    verified: bool = False

    def __repr__(self) -> str:
        return "NewPatient(...)"


@dataclass(frozen=True)
class NewStaffUser:
    email: str
    display_name: str
    password: str
    role: Role = Role.AGENT
    teams: list[str] = field(default_factory=list)
    must_change_password: bool = False

    def __repr__(self) -> str:
        return f"NewStaffUser(email={self.email!r}, role={self.role})"
