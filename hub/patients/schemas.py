"""Decrypted views of patients for search results and the patient page (never persisted,
never logged: each ``__repr__`` keeps PHI out of tracebacks)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from hub.enums import Channel, ConversationStatus, Direction
from hub.inbox.schemas import PatientCard


@dataclass(frozen=True)
class ConversationLine:
    """One of a patient's conversations the viewer may open."""

    id: uuid.UUID
    channel: Channel
    status: ConversationStatus
    team: str | None
    last_activity_at: datetime


@dataclass(frozen=True)
class PatientHit:
    id: uuid.UUID
    name: str | None
    phone: str | None
    email: str | None
    contact_masked: bool
    """Phone and email are shown in part: the viewer shares no conversation with the patient
    (admins see them whole)."""
    verified: bool
    conversations: list[ConversationLine]

    def __repr__(self) -> str:
        return f"PatientHit(id={self.id})"


@dataclass(frozen=True)
class SearchResult:
    hits: list[PatientHit]
    by: list[str]
    """What the query was read as: name, phone, email, external_id."""
    more: bool
    """More patients matched than are shown: the query could be narrower."""


@dataclass(frozen=True)
class MessageHit:
    id: uuid.UUID
    conversation_id: uuid.UUID
    channel: Channel
    direction: Direction
    created_at: datetime
    snippet: str

    def __repr__(self) -> str:
        return f"MessageHit(id={self.id})"


@dataclass(frozen=True)
class MessageSearch:
    hits: list[MessageHit]
    scanned: int
    """Messages decrypted and read (the newest, at most ``bound``)."""
    bound: int
    complete: bool
    """Every message the viewer may see was read; otherwise older ones were not."""


@dataclass(frozen=True)
class ExternalId:
    system: str
    value: str

    def __repr__(self) -> str:
        return f"ExternalId(system={self.system!r})"


@dataclass(frozen=True)
class EnrollmentLine:
    id: uuid.UUID
    journey: str
    status: str
    appointment_at: datetime | None
    confirmed: bool
    next_step_at: datetime | None
    pending_steps: int

    @property
    def cancellable(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class MergeLine:
    """A merge into this patient, for the undo button."""

    id: uuid.UUID
    source_id: uuid.UUID
    created_at: datetime
    moved: dict[str, int]
    undone_at: datetime | None


@dataclass(frozen=True)
class PatientProfile:
    card: PatientCard
    """Contact masked as on ``contact_masked``; channels are the reply box's options."""
    contact_masked: bool
    may_edit: bool
    external_ids: list[ExternalId]
    conversations: list[ConversationLine]
    enrollments: list[EnrollmentLine]
    merges: list[MergeLine] = field(default_factory=list)
    merged_into: uuid.UUID | None = None

    def __repr__(self) -> str:
        return f"PatientProfile(id={self.card.id})"


@dataclass(frozen=True)
class PatientChanges:
    """A profile edit: None leaves a field as it is; "" clears phone, email or name."""

    name: str | None = None
    phone: str | None = None
    email: str | None = None
    country: str | None = None
    """Where the patient lives, for reading a national phone number (default: the clinic's)."""
    language: str | None = None
    time_zone: str | None = None
    channel_order: list[str] | None = None
    tags: list[str] | None = None
    external_ids: list[tuple[str, str]] | None = None
    """(assigning authority, value) pairs; the list replaces the patient's."""
    verified: bool | None = None

    def __repr__(self) -> str:
        return "PatientChanges(...)"

    def fields(self) -> list[str]:
        """Which fields the edit names (for the audit row: names, never values)."""
        names = ("name", "phone", "email", "language", "time_zone", "channel_order", "tags")
        named = [n for n in names if getattr(self, n) is not None]
        named += ["external_ids"] if self.external_ids is not None else []
        return named + (["verified"] if self.verified is not None else [])
