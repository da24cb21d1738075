"""Consent history: one row per change, never updated; the latest row per purpose wins."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import Base, new_id, utcnow
from hub.enums import Channel, str_enum


class Purpose(enum.StrEnum):
    CARE = "care"
    """Staff replies and clinical follow-up: no prior opt-in needed, any revocation honoured."""
    REMINDERS = "reminders"
    """Appointment reminders and confirmations: like care."""
    SURVEYS = "surveys"
    """Needs explicit opt-in."""
    MARKETING = "marketing"
    """Needs explicit opt-in."""
    SERVICE = "service"
    """Answers carriers require (the HELP reply): allowed after opt-out, never recorded."""


RECORDED_PURPOSES = (Purpose.CARE, Purpose.REMINDERS, Purpose.SURVEYS, Purpose.MARKETING)


class ConsentState(enum.StrEnum):
    GRANTED = "granted"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class ConsentSource(enum.StrEnum):
    KEYWORD = "keyword"
    WEB_FORM = "web_form"
    STAFF = "staff"
    IMPORT = "import"
    UNSUBSCRIBE = "unsubscribe"
    VOICE_KEYPRESS = "voice_keypress"
    PROVIDER = "provider"
    """The provider refused a send because the recipient unsubscribed (Twilio 21610)."""


class ConsentRecord(Base):
    __tablename__ = "consent_record"
    __table_args__ = (
        Index("ix_consent_record_lookup", "patient_id", "channel", "purpose", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    patient_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_patient.id", ondelete="CASCADE")
    )
    channel: Mapped[Channel] = mapped_column(str_enum(Channel, "channel"))
    purpose: Mapped[Purpose] = mapped_column(str_enum(Purpose, "purpose"))
    state: Mapped[ConsentState] = mapped_column(str_enum(ConsentState, "consent_state"))
    source: Mapped[ConsentSource] = mapped_column(str_enum(ConsentSource, "consent_source"))
    actor: Mapped[str] = mapped_column(String(80))
    evidence: Mapped[str] = mapped_column(String(200))
    """What happened, without PHI: the keyword ("STOP") or the provider code ("error 21610")."""
    evidence_message_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("inbox_message.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsentSuppression(Base):
    """An opt-out that outlived its patient. Erasing a patient who had opted out keeps the
    revocation against the blind index of the address it was about (no name, no address), so
    a patient later created with that address (a re-import, a new text) is not contacted on
    that channel and purpose until they opt in again (``queries.latest_records``)."""

    __tablename__ = "consent_suppression"
    __table_args__ = (UniqueConstraint("address_bidx", "channel", "purpose"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    address_bidx: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    """The erased patient's phone blind index (SMS, voice, WhatsApp) or email blind index."""
    channel: Mapped[Channel] = mapped_column(str_enum(Channel, "channel"))
    purpose: Mapped[Purpose] = mapped_column(str_enum(Purpose, "purpose"))
    source: Mapped[ConsentSource] = mapped_column(str_enum(ConsentSource, "consent_source"))
    evidence: Mapped[str] = mapped_column(String(200))
    """The opt-out's own evidence ("STOP"), which holds no PHI."""
    created_at: Mapped[datetime]
    """When the patient opted out (not when they were erased)."""
