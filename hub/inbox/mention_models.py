"""Mentions of staff in internal notes, and the emails that tell an offline person about one.

Kept beside ``models.py`` rather than in it: several changes to the inbox's models were made at
once, and these two tables reference the inbox's rows without being referenced by them.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import Base, utcnow


class Mention(Base):
    """A staff member @mentioned in a note: one row per note and person, read once they open
    the mention or the conversation. The note's text stays in the (encrypted) note."""

    __tablename__ = "inbox_mention"
    __table_args__ = (Index("ix_inbox_mention_staff_created", "staff_id", "created_at"),)

    note_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_note.id", ondelete="CASCADE"), primary_key=True
    )
    staff_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_staff_user.id", ondelete="CASCADE"), primary_key=True
    )
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_conversation.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    read_at: Mapped[datetime | None]


class StaffAlert(Base):
    """The last email that told a person about a conversation (a mention or an assignment
    while they were offline): at most one per person and conversation in a window."""

    __tablename__ = "inbox_staff_alert"

    staff_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_staff_user.id", ondelete="CASCADE"), primary_key=True
    )
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_conversation.id", ondelete="CASCADE"), primary_key=True
    )
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
