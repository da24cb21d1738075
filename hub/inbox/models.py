"""Inbox models. PHI lives only in ``*_enc`` columns (see hub.db.Sealed)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hub.db import Base, Sealed, encrypted_column, new_id, utcnow
from hub.enums import (
    RECEIVE_ONLY,
    Channel,
    ConversationStatus,
    Direction,
    MessageStatus,
    Priority,
    Role,
    str_enum,
)

DEFAULT_CHANNEL_ORDER = ["sms", "email", "voice"]
"""Channel preference for a patient who has not stated one."""

team_member = Table(
    "inbox_team_member",
    Base.metadata,
    Column("team_id", ForeignKey("inbox_team.id", ondelete="CASCADE"), primary_key=True),
    Column("staff_id", ForeignKey("inbox_staff_user.id", ondelete="CASCADE"), primary_key=True),
)


class Team(Base):
    __tablename__ = "inbox_team"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    """Conversations no routing rule places go to the default team."""
    business_hours: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """{"mon": [["08:00", "17:00"]], ...} in the team's time zone; empty means always open."""
    holidays: Mapped[list[str]] = mapped_column(default=list)
    """ISO dates (YYYY-MM-DD) on which the team is closed all day."""
    after_hours_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    """Whether a patient writing outside business hours gets an automatic reply (once per
    conversation)."""
    after_hours_replies: Mapped[dict[str, str]] = mapped_column(default=dict)
    """The team's own after-hours text per language ({"en": ..., "es": ...}); a language
    without one gets the seeded ``after_hours`` template in that language."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    members: Mapped[list[StaffUser]] = relationship(
        secondary=team_member, back_populates="teams", lazy="selectin"
    )


class StaffUser(Sealed, Base):
    """A person who signs in. Staff addresses are work contacts, not patient PHI."""

    __tablename__ = "inbox_staff_user"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(str_enum(Role, "role"), default=Role.AGENT)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    max_open_conversations: Mapped[int] = mapped_column(Integer, default=20)
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    """Every time this person reads is shown in this zone (the clinic's when they were added)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    last_assigned_at: Mapped[datetime | None]
    """Round-robin picks the online agent with the oldest value (never assigned: first)."""
    password_changed_at: Mapped[datetime | None]
    second_factor: Mapped[bool] = mapped_column(Boolean, default=False)
    """A TOTP code (or a recovery code) is asked for after the password at every sign-in."""
    second_factor_since: Mapped[datetime | None]
    totp_secret_enc: Mapped[bytes | None] = encrypted_column()
    """The RFC 6238 shared secret: set when set-up starts, in force once ``second_factor``."""
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    """The 30-second time step of the last code accepted; that step and earlier ones are
    refused, so a code read over someone's shoulder cannot be replayed."""

    teams: Mapped[list[Team]] = relationship(
        secondary=team_member, back_populates="members", lazy="selectin"
    )


class RecoveryCode(Base):
    """A single-use code that stands in for a TOTP code (lost phone); stored hashed."""

    __tablename__ = "inbox_recovery_code"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    staff_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_staff_user.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None]


class Patient(Sealed, Base):
    __tablename__ = "inbox_patient"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name_enc: Mapped[bytes | None] = encrypted_column()
    phone_enc: Mapped[bytes | None] = encrypted_column()
    phone_bidx: Mapped[bytes | None] = mapped_column(LargeBinary(32), index=True)
    email_enc: Mapped[bytes | None] = encrypted_column()
    email_bidx: Mapped[bytes | None] = mapped_column(LargeBinary(32), index=True)
    language: Mapped[str] = mapped_column(String(16), default="en")
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    channel_order: Mapped[list[str]] = mapped_column(default=lambda: list(DEFAULT_CHANNEL_ORDER))
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    birth_date_enc: Mapped[bytes | None] = encrypted_column()
    """ISO date of birth ("1984-03-07"): the keypad PIN a clinic may ask before a phone
    cancellation is its month and day (MMDD)."""
    unreachable: Mapped[dict[str, str]] = mapped_column(default=dict)
    """Channel -> reason code ("landline", "bounced") for addresses a provider said won't work."""
    merged_into_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("inbox_patient.id", ondelete="CASCADE"), index=True
    )
    """Set when this (unverified) record was merged into another: it is kept for an undo,
    out of search and lists, and erased with the patient it was merged into."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def channels(self) -> list[Channel]:
        """The patient's channel order, names this hub does not know (or cannot send on)
        skipped."""
        known = {c.value: c for c in Channel if c not in RECEIVE_ONLY}
        return [known[name] for name in self.channel_order if name in known]


INBOX_COVERED = [
    "id",
    "priority",
    "assignee_id",
    "channel",
    "first_responded_at",
    "first_response_due_at",
    "last_inbound_at",
]
"""Columns the inbox list filters, ranks and counts unread by, carried in its indexes."""
BY_STATUS_COVERED = [*INBOX_COVERED, "team_id"]
"""The status-first indexes also carry the team: an agent's list reads them for its teams."""


class Conversation(Base):
    __tablename__ = "inbox_conversation"
    __table_args__ = (
        # Covering (migration 0009): the inbox list ranks and counts from the index alone.
        Index(
            "ix_inbox_conversation_status_activity",
            "status",
            "last_activity_at",
            postgresql_include=BY_STATUS_COVERED,
        ),
        # The list reads each status and rank in activity order (migration 0029): urgent
        # conversations and unanswered ones are few, each read from an index of its own.
        Index(
            "ix_inbox_conversation_urgent_activity",
            "status",
            "last_activity_at",
            postgresql_include=BY_STATUS_COVERED,
            postgresql_where=text("priority = 'urgent'"),
            sqlite_where=text("priority = 'urgent'"),
        ),
        Index(
            "ix_inbox_conversation_unanswered_activity",
            "status",
            "last_activity_at",
            postgresql_include=BY_STATUS_COVERED,
            postgresql_where=text("first_responded_at IS NULL"),
            sqlite_where=text("first_responded_at IS NULL"),
        ),
        Index(
            "ix_inbox_conversation_team_status",
            "team_id",
            "status",
            "last_activity_at",
            postgresql_include=INBOX_COVERED,
        ),
        Index("ix_inbox_conversation_patient_status", "patient_id", "status"),
        # Agents' open loads (round-robin) and the "mine" view (migration 0010).
        Index("ix_inbox_conversation_assignee_status", "assignee_id", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    patient_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_patient.id", ondelete="RESTRICT")
    )
    status: Mapped[ConversationStatus] = mapped_column(
        str_enum(ConversationStatus, "conversation_status"), default=ConversationStatus.OPEN
    )
    priority: Mapped[Priority] = mapped_column(
        str_enum(Priority, "priority"), default=Priority.NORMAL
    )
    team_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("inbox_team.id", ondelete="SET NULL")
    )
    assignee_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("inbox_staff_user.id", ondelete="SET NULL"), index=True
    )
    channel: Mapped[Channel] = mapped_column(str_enum(Channel, "channel"))
    channel_address: Mapped[str | None] = mapped_column(String(64))
    """The clinic-side address the patient wrote to (our number or mailbox); replies use it."""
    assigned_at: Mapped[datetime | None]
    last_inbound_at: Mapped[datetime | None]
    after_hours_replied_at: Mapped[datetime | None]
    """Set when the after-hours auto-reply went out: once per conversation, not per message."""
    snoozed_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_activity_at: Mapped[datetime] = mapped_column(default=utcnow)
    first_response_due_at: Mapped[datetime | None]
    first_responded_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]


class Tag(Sealed, Base):
    """A tag name the clinic uses, sealed once and pointed at by conversations and patients.
    Tags are PHI ("oncology", "hiv-followup"); the blind index of the normalized name keeps
    "find by tag" an index lookup and makes each name one row."""

    __tablename__ = "inbox_tag"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    bidx: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    name_enc: Mapped[bytes | None] = encrypted_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


conversation_tag = Table(
    "inbox_conversation_tag",
    Base.metadata,
    Column(
        "conversation_id",
        ForeignKey("inbox_conversation.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("tag_id", ForeignKey("inbox_tag.id", ondelete="CASCADE"), primary_key=True),
    # The primary key serves "tags of these conversations"; this serves "conversations with
    # this tag" (the inbox filter).
    Index("ix_inbox_conversation_tag_tag", "tag_id", "conversation_id"),
)

patient_tag = Table(
    "inbox_patient_tag",
    Base.metadata,
    Column("patient_id", ForeignKey("inbox_patient.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("inbox_tag.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_inbox_patient_tag_tag", "tag_id", "patient_id"),
)


class Message(Sealed, Base):
    __tablename__ = "inbox_message"
    __table_args__ = (
        UniqueConstraint("provider", "provider_message_id"),
        Index("ix_inbox_message_conversation_created", "conversation_id", "created_at"),
        # Only rows with an error: counting failures by code never reads every message.
        Index(
            "ix_inbox_message_error_code",
            "error_code",
            postgresql_where=text("error_code IS NOT NULL"),
            sqlite_where=text("error_code IS NOT NULL"),
        ),
        # The delivery report: what was sent in a period, read from the index alone.
        Index(
            "ix_inbox_message_outbound_created",
            "created_at",
            postgresql_where=text("direction = 'outbound'"),
            sqlite_where=text("direction = 'outbound'"),
            postgresql_include=["channel", "status", "provider", "error_code"],
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_conversation.id", ondelete="CASCADE")
    )
    direction: Mapped[Direction] = mapped_column(str_enum(Direction, "direction"))
    channel: Mapped[Channel] = mapped_column(str_enum(Channel, "channel"))
    body_enc: Mapped[bytes | None] = encrypted_column()
    subject_enc: Mapped[bytes | None] = encrypted_column()
    """Email only: the subject line."""
    html_enc: Mapped[bytes | None] = encrypted_column()
    """Email only: the HTML part (sanitized, for inbound mail)."""
    author_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("inbox_staff_user.id", ondelete="SET NULL")
    )
    provider: Mapped[str | None] = mapped_column(String(32))
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    """The provider's id; for inbound email the blind index of its Message-ID (see
    hub.inbox.email_ids), never the Message-ID itself."""
    provider_message_id_enc: Mapped[bytes | None] = encrypted_column()
    """Inbound email only: its Message-ID, sent back in a reply's In-Reply-To and References."""
    status: Mapped[MessageStatus] = mapped_column(str_enum(MessageStatus, "message_status"))
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_reason: Mapped[str | None] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(String(16), default="care")
    delivery_notes: Mapped[list[str]] = mapped_column(default=list)
    """Why this channel and time: channels passed over ("sms: refused (opted_out): ...") and
    deferrals. No PHI: reasons only."""
    sender_verified: Mapped[bool | None] = mapped_column(Boolean)
    """Inbound email only: whether its From address was proven (SPF/DKIM aligned under DMARC,
    or a trusted relay's verdict). Unverified mail never acts on a journey or consent."""
    sender_check: Mapped[str | None] = mapped_column(String(24))
    """Inbound email only: the check's reason code (``hub.channels.email_smtp.sender_auth``)."""
    send_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="message", lazy="raise", cascade="all, delete-orphan"
    )


class Note(Sealed, Base):
    """An internal note: staff-only, never sent to the patient."""

    __tablename__ = "inbox_note"
    __table_args__ = (Index("ix_inbox_note_conversation_created", "conversation_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_conversation.id", ondelete="CASCADE")
    )
    author_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("inbox_staff_user.id", ondelete="SET NULL")
    )
    body_enc: Mapped[bytes | None] = encrypted_column()
    mentions: Mapped[list[str]] = mapped_column(default=list)
    """Staff ids @mentioned in the note (each is notified)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CannedResponse(Base):
    """A saved reply. Placeholders: {{ first_name }}, {{ clinic_name }}. Not PHI: clinic text."""

    __tablename__ = "inbox_canned_response"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("inbox_team.id", ondelete="CASCADE")
    )
    title: Mapped[str] = mapped_column(String(120))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReadMarker(Base):
    """When a staff member last opened a conversation: drives unread counts."""

    __tablename__ = "inbox_read_marker"

    staff_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_staff_user.id", ondelete="CASCADE"), primary_key=True
    )
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_conversation.id", ondelete="CASCADE"), primary_key=True
    )
    read_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A bearer token for an API client, acting with the rights of its staff user."""

    __tablename__ = "inbox_api_token"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    staff_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_staff_user.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(120))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    """SHA-256 of the token; the token itself is shown once and never stored."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class DeliveryAttempt(Base):
    """One hand-over of an outbound message to a provider. (message, attempt) is unique, which
    is what makes a duplicated or retried send job unable to call the provider twice."""

    __tablename__ = "inbox_delivery_attempt"
    __table_args__ = (
        UniqueConstraint("message_id", "attempt"),
        UniqueConstraint("provider", "provider_message_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_message.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(32))
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[MessageStatus] = mapped_column(str_enum(MessageStatus, "message_status"))
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AttachmentState(enum.StrEnum):
    PENDING = "pending"
    STORED = "stored"
    FAILED = "failed"


class Attachment(Sealed, Base):
    __tablename__ = "inbox_attachment"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_message.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[AttachmentState] = mapped_column(
        str_enum(AttachmentState, "attachment_state"), default=AttachmentState.STORED
    )
    source_url: Mapped[str | None] = mapped_column(Text)
    """Where the provider holds the file until a worker fetches it (an authenticated URL)."""
    error_reason: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    filename_enc: Mapped[bytes | None] = encrypted_column()
    data_enc: Mapped[bytes | None] = encrypted_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    message: Mapped[Message] = relationship(back_populates="attachments", lazy="raise")


class InboundEvent(Sealed, Base):
    """A provider's raw inbound event, kept encrypted. Its unique key is the idempotency gate:
    a retried webhook finds its row and changes nothing."""

    __tablename__ = "channel_inbound_event"
    __table_args__ = (UniqueConstraint("provider", "provider_event_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    provider: Mapped[str] = mapped_column(String(32))
    provider_event_id: Mapped[str] = mapped_column(String(128))
    payload_enc: Mapped[bytes | None] = encrypted_column()
    message_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("inbox_message.id", ondelete="SET NULL")
    )
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
