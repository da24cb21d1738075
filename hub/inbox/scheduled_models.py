"""A reply written now and sent later ("send later" in the composer, issue 16)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import Base, Sealed, encrypted_column, new_id, utcnow
from hub.enums import Channel, str_enum


class ScheduledState(enum.StrEnum):
    SCHEDULED = "scheduled"
    SENT = "sent"
    """Handed to the outbox as an ordinary queued message (``message_id``)."""
    FAILED = "failed"
    """Refused at its time (consent changed): the thread shows a failed message with why."""
    CANCELLED = "cancelled"


class ScheduledMessage(Sealed, Base):
    """Becomes an ordinary outbound message at ``send_at``, through the consent gate as it is
    then. The state moves once, under a row lock, which is what sends it exactly once."""

    __tablename__ = "inbox_scheduled_message"
    __table_args__ = (
        # The tick's "due now" scan reads only waiting rows.
        Index("ix_inbox_scheduled_message_state_send_at", "state", "send_at"),
        Index("ix_inbox_scheduled_message_conversation", "conversation_id", "state"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_conversation.id", ondelete="CASCADE")
    )
    author_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("inbox_staff_user.id", ondelete="SET NULL")
    )
    channel: Mapped[Channel] = mapped_column(str_enum(Channel, "channel"))
    body_enc: Mapped[bytes | None] = encrypted_column()
    send_at: Mapped[datetime]
    state: Mapped[ScheduledState] = mapped_column(
        str_enum(ScheduledState, "scheduled_state"), default=ScheduledState.SCHEDULED
    )
    message_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("inbox_message.id", ondelete="SET NULL")
    )
    """The message it became (queued, or failed with the gate's reason)."""
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_reason: Mapped[str | None] = mapped_column(Text)
    cancelled_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("inbox_staff_user.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
