"""Decrypted views handed across the domain boundary (never persisted, never logged)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from hub.channels.email_smtp.sender_auth import REASON_WORDS
from hub.crypto import KeyRing
from hub.enums import Channel, ConversationStatus, Direction, MessageStatus, Priority, Role
from hub.inbox.models import Attachment, Message


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
class AttachmentView:
    id: uuid.UUID
    content_type: str
    size_bytes: int
    state: str
    filename: str | None
    error_reason: str | None

    @classmethod
    def of(cls, ring: KeyRing, att: Attachment) -> AttachmentView:
        return cls(
            att.id,
            att.content_type,
            att.size_bytes,
            att.state.value,
            att.unseal(ring, "filename"),
            att.error_reason,
        )


@dataclass(frozen=True)
class MessageView:
    id: uuid.UUID
    conversation_id: uuid.UUID
    direction: Direction
    channel: Channel
    body: str | None
    status: MessageStatus
    created_at: datetime
    author: str | None = None
    error_reason: str | None = None
    purpose: str = "care"
    attachments: list[AttachmentView] = field(default_factory=list)
    subject: str | None = None
    """Email only: the subject line the patient wrote (or the clinic sent)."""
    sender_unverified: str | None = None
    """Inbound email whose From address was not proven: why, in plain words."""
    held: str | None = None
    """What such a message would have done to a journey, had its sender been verified."""

    def __repr__(self) -> str:
        return f"MessageView(id={self.id}, status={self.status})"

    @classmethod
    def of(
        cls,
        ring: KeyRing,
        m: Message,
        author: str | None = None,
        attachments: list[AttachmentView] | None = None,
    ) -> MessageView:
        return cls(
            m.id,
            m.conversation_id,
            m.direction,
            m.channel,
            m.unseal(ring, "body"),
            m.status,
            m.created_at,
            author,
            m.error_reason,
            m.purpose,
            attachments or [],
            m.unseal(ring, "subject") if m.channel is Channel.EMAIL else None,
            unverified_words(m),
            held_note(m),
        )


def held_note(m: Message) -> str | None:
    """The note an unverified mail's held journey answer left, as a sentence."""
    if m.sender_verified is not False:
        return None
    note = next((n for n in m.delivery_notes if n.startswith("held: ")), None)
    return note.removeprefix("held: ").capitalize() + "." if note else None


def unverified_words(m: Message) -> str | None:
    """Why the sender of an inbound mail is not proven; None when it is, or was not asked."""
    return unverified_reason(m.sender_verified, m.sender_check)


def unverified_reason(verified: bool | None, check: str | None) -> str | None:
    """``unverified_words`` from the two columns (a list row reads columns, not messages)."""
    if verified is not False:
        return None
    return REASON_WORDS.get(check or "", REASON_WORDS["not_checked"])


@dataclass(frozen=True)
class NoteView:
    id: uuid.UUID
    body: str
    author: str | None
    created_at: datetime

    def __repr__(self) -> str:
        return f"NoteView(id={self.id})"


@dataclass(frozen=True)
class ChannelOption:
    channel: Channel
    available: bool
    reason: str | None
    """Why it cannot be used now: "patient opted out of SMS on ...", "no email address"."""


@dataclass(frozen=True)
class JourneyLine:
    """One enrollment on the patient card."""

    journey: str
    status: str
    appointment_at: datetime | None
    confirmed: bool
    next_step_at: datetime | None


@dataclass(frozen=True)
class PatientCard:
    id: uuid.UUID
    name: str | None
    phone: str | None
    email: str | None
    language: str
    time_zone: str
    channel_order: list[str]
    tags: list[str]
    verified: bool
    unreachable: dict[str, str]
    consent: dict[str, dict[str, str]]
    """channel -> purpose -> granted | revoked | unknown."""
    channels: list[ChannelOption]
    journeys: list[JourneyLine] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"PatientCard(id={self.id})"

    @property
    def first_name(self) -> str:
        return self.name.split()[0] if self.name and self.name.split() else ""


@dataclass(frozen=True)
class ConversationView:
    id: uuid.UUID
    status: ConversationStatus
    priority: Priority
    channel: Channel
    team_id: uuid.UUID | None
    assignee_id: uuid.UUID | None
    tags: list[str]
    created_at: datetime
    last_activity_at: datetime
    first_response_due_at: datetime | None
    first_responded_at: datetime | None
    snoozed_until: datetime | None
    messages: list[MessageView]
    notes: list[NoteView]
    patient: PatientCard
    reply_channel: Channel | None = None
    """Where a reply goes unless staff choose: the channel the patient last wrote on here."""

    def __repr__(self) -> str:
        return f"ConversationView(id={self.id})"


@dataclass(frozen=True)
class ConversationRow:
    """One line of the inbox list."""

    id: uuid.UUID
    patient_id: uuid.UUID
    patient_name: str | None
    patient_phone: str | None
    status: ConversationStatus
    priority: Priority
    channel: Channel
    team_id: uuid.UUID | None
    assignee_id: uuid.UUID | None
    assignee_name: str | None
    tags: list[str]
    last_activity_at: datetime
    first_response_due_at: datetime | None
    first_responded_at: datetime | None
    preview: str | None
    """The patient's newest message (cut to a line), never the clinic's own automatic answer
    to it; the clinic's newest message only where the patient has not written at all."""
    unread: bool
    sender_unverified: str | None = None
    """The previewed message is mail whose sender was not proven: why, in plain words."""
    preview_from_patient: bool = True
    """False when the preview is the clinic's message (the patient never wrote here)."""
    answered_automatically: bool = False
    """The patient's newest message got an automatic answer (after-hours or triage reply, a
    journey's answer, HELP) and no person has answered it since: the patient still waits."""
    waiting_since: datetime | None = None
    """When the patient's oldest message that no person has answered arrived; None when every
    message has a staff reply after it, or the conversation is resolved."""
    patient_verified: bool = True
    """False for a number or address no one has confirmed belongs to a known patient."""

    def __repr__(self) -> str:
        return f"ConversationRow(id={self.id})"

    def sla_due_at(self) -> datetime | None:
        """The first-response deadline while it still counts (no staff reply yet, not
        resolved); business hours are already in it."""
        if self.first_responded_at is not None or self.status is ConversationStatus.RESOLVED:
            return None
        return self.first_response_due_at

    def overdue(self, now: datetime) -> bool:
        return (
            self.first_responded_at is None
            and self.first_response_due_at is not None
            and self.first_response_due_at < now
        )


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
    birth_date: str | None = None
    """ISO date ("1984-03-07"): its month and day are the phone cancellation PIN."""

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
