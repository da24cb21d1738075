"""CSAT after resolution: which teams ask, and which resolution each survey is about.

The survey itself is a journey enrollment (``hub.journeys.csat``): its step run, message and
answer (``SurveyAnswer``: the score, and the words after it sealed as the comment) are the
journey engine's rows. These two tables hold only what the engine has no place for.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import Base, new_id, utcnow

DEFAULT_DELAY_MINUTES = 60
"""Wait between a resolution and its question: a conversation reopened within it is not
surveyed (a quick "one more thing" from the patient cancels it)."""
MAX_DELAY_MINUTES = 7 * 24 * 60
"""Longest delay an admin may set (a week: later, the patient no longer remembers the chat)."""


class CsatSetting(Base):
    """A team's CSAT switch (off unless a row says on) and its delay."""

    __tablename__ = "csat_setting"

    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_team.id", ondelete="CASCADE"), primary_key=True
    )
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    delay_minutes: Mapped[int] = mapped_column(Integer, default=DEFAULT_DELAY_MINUTES)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CsatSurvey(Base):
    """One survey per resolution of a conversation by a person: the team and the person at
    that moment (the report's grouping), and the enrollment that asks the question."""

    __tablename__ = "csat_survey"
    __table_args__ = (
        UniqueConstraint("conversation_id", "resolved_at"),
        Index("ix_csat_survey_resolved_at", "resolved_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_conversation.id", ondelete="CASCADE"), index=True
    )
    enrollment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("journey_enrollment.id", ondelete="CASCADE"), unique=True
    )
    team_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("inbox_team.id", ondelete="SET NULL")
    )
    agent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("inbox_staff_user.id", ondelete="SET NULL")
    )
    """Who resolved it."""
    channel: Mapped[str] = mapped_column(String(16))
    """The conversation's channel, which the question goes on."""
    resolved_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
