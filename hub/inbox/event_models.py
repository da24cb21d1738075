"""When a conversation was resolved and reopened: the status history the reports read.

The conversation row keeps only its current status and last ``resolved_at``; a reopen clears
that, so without this table nobody could tell later that a resolution did not hold.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import Base, new_id, utcnow
from hub.enums import str_enum


class StatusEvent(enum.StrEnum):
    RESOLVED = "resolved"
    REOPENED = "reopened"


class ConversationEvent(Base):
    """One resolution or reopening, written in the transaction that changed the status."""

    __tablename__ = "inbox_conversation_event"
    __table_args__ = (
        Index("ix_inbox_conversation_event_conversation_at", "conversation_id", "at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_conversation.id", ondelete="CASCADE")
    )
    kind: Mapped[StatusEvent] = mapped_column(str_enum(StatusEvent, "status_event"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    staff_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("inbox_staff_user.id", ondelete="SET NULL")
    )
    """Who changed it; None when a patient's message reopened it."""
