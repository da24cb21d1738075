"""The ``csat`` report's rollup: one narrow fact per survey and its counts per clinic-local day
of the resolution and per month, so that a year's report sums a few thousand rows instead of
reading a hundred thousand surveys with their question and answer. No PHI: ids, days,
channels, scores and counts (the comments stay in ``journey_survey_answer``, sealed).

Kept like the delivery rollup (``outcome_models``): triggers queue a survey when anything the
report reads of it changes (migration 0034), the tick recomputes its fact and moves the counts
(``csat_rollup_actions``), and a report adds back what is still queued (``csat_queries``).
"""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import Boolean, Date, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import Base

NO_SCORE = 0
"""``score`` of a survey without an answer (scores are 1-5; a NULL would not be unique)."""


class CsatFact(Base):
    """What the report counts of one survey, as last added to ``report_csat_day``: the share
    to take back out when it changes. No foreign key: a deleted survey must still be found
    to be taken out."""

    __tablename__ = "report_csat_fact"

    survey_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    """The clinic-local day of the resolution."""
    team_id: Mapped[uuid.UUID]
    """The team at the resolution (``NO_TEAM``: none, or deleted since)."""
    agent_id: Mapped[uuid.UUID]
    """Who resolved it (``NOBODY``: no longer on staff)."""
    channel: Mapped[str] = mapped_column(String(16))
    out: Mapped[bool] = mapped_column(Boolean)
    """A question of its enrollment left the hub (``csat_queries.OUT_STATUSES``)."""
    score: Mapped[int] = mapped_column(SmallInteger)
    """Its first scored answer (``NO_SCORE``: none)."""


class CsatDay(Base):
    """Surveys per clinic-local day of the resolution, team, person, channel, question out
    and score."""

    __tablename__ = "report_csat_day"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    team_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    out: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    score: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class CsatMonth(Base):
    """``CsatDay`` by month (``month``: its first day), read when a period holds all of it."""

    __tablename__ = "report_csat_month"

    month: Mapped[date] = mapped_column(Date, primary_key=True)
    team_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    out: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    score: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class CsatDirty(Base):
    """A survey whose fact must be recomputed; versioned like ``report_delivery_dirty`` (the
    tick dequeues at the version it read, so a change meanwhile stays queued)."""

    __tablename__ = "report_csat_dirty"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    """Always ``survey``: the triggers find the survey of what changed."""
    item_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
