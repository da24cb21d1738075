"""The inbox reports' rollups: one narrow row per conversation a patient wrote in, and the
incoming-message counts per clinic-local hour. Neither holds PHI: ids, instants, counts.

Both are kept current by the tick (``facts_actions.do_refresh_facts``) from a queue of changed
conversations that database triggers fill in the writer's own transaction (migration 0025), so
no change is missed whichever code path made it, and nothing on the inbox's paths calls us.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    Float,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import Base

NO_TEAM = uuid.UUID(int=0)
"""Stands for "no team" in the hourly rollup's key (a NULL would not be unique)."""


OPENED_READS = [
    "channel",
    "team_id",
    "assignee_id",
    "opened_day",
    "first_response_s",
    "first_response_bh_s",
    "resolved_at",
    "due_at",
    "wait_end_at",
]
"""What the inbox reports read of a conversation opened in the period (migration 0031)."""
RESOLVED_READS = [
    "channel",
    "team_id",
    "assignee_id",
    "resolution_s",
    "resolution_bh_s",
    "reopened",
]
"""The same for a conversation first resolved in the period."""


WAITING = "wait_end_at IS NULL AND due_at IS NOT NULL"
"""The facts whose missed target depends on now (``ix_report_conversation_fact_waiting``)."""


class ConversationFact(Base):
    """What the reports need of one conversation, recomputed whenever it changes. No foreign
    key: when a conversation is erased, the refresh must still find this row to take its
    messages back out of the hourly counts before deleting it."""

    __tablename__ = "report_conversation_fact"
    # The period indexes carry what the reports read (PostgreSQL: index-only scans).
    __table_args__ = (
        Index("ix_report_conversation_fact_opened", "opened_at", postgresql_include=OPENED_READS),
        Index(
            "ix_report_conversation_fact_team_opened",
            "team_id",
            "opened_at",
            postgresql_include=[c for c in OPENED_READS if c != "team_id"],
        ),
        Index("ix_report_conversation_fact_assignee_opened", "assignee_id", "opened_at"),
        Index(
            "ix_report_conversation_fact_resolved", "resolved_at", postgresql_include=RESOLVED_READS
        ),
        Index(
            "ix_report_conversation_fact_team_resolved",
            "team_id",
            "resolved_at",
            postgresql_include=[c for c in RESOLVED_READS if c != "team_id"],
        ),
        Index("ix_report_conversation_fact_assignee_resolved", "assignee_id", "resolved_at"),
        Index("ix_report_conversation_fact_assignee_inbound", "assignee_id", "last_inbound_at"),
        # Only conversations still waiting with a due time: their missed targets depend on now,
        # so the reports count them live (migration 0032).
        Index(
            "ix_report_conversation_fact_waiting",
            "due_at",
            postgresql_include=["opened_at", "channel", "team_id", "assignee_id"],
            postgresql_where=text(WAITING),
            sqlite_where=text(WAITING),
        ),
    )

    conversation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    team_id: Mapped[uuid.UUID | None]
    channel: Mapped[str] = mapped_column(String(16))
    assignee_id: Mapped[uuid.UUID | None]
    opened_at: Mapped[datetime]
    """The patient's first message in the conversation: the wait starts here."""
    opened_day: Mapped[date] = mapped_column(Date)
    """``opened_at``'s date in the clinic's zone (the "opened per day" line)."""
    first_response_at: Mapped[datetime | None]
    """The first message a person sent after ``opened_at`` (automatic sends are not one)."""
    first_response_s: Mapped[int | None] = mapped_column(Integer)
    first_response_bh_s: Mapped[int | None] = mapped_column(Integer)
    """The same wait counting only the team's open hours."""
    resolved_at: Mapped[datetime | None]
    """The first resolution after ``opened_at``."""
    resolution_s: Mapped[int | None] = mapped_column(Integer)
    resolved_day: Mapped[date | None] = mapped_column(Date)
    """``resolved_at``'s date in the clinic's zone (migration 0032): the day rollup's key,
    kept here so a fact's share is taken back out of the day it was counted in."""
    resolution_bh_s: Mapped[int | None] = mapped_column(Integer)
    due_at: Mapped[datetime | None]
    """The conversation's ``first_response_due_at``."""
    wait_end_at: Mapped[datetime | None]
    """When the patient stopped waiting: the first response or the first resolution, whichever
    came first. A breach is ``due_at`` passing before it (or before now, while None)."""
    reopened: Mapped[bool] = mapped_column(Boolean, default=False)
    """The first resolution was undone within 7 days."""
    last_inbound_at: Mapped[datetime | None]
    """The patient's last message (None only on a row from before migration 0031 that the
    migration could not fill: its conversation is gone and the refresh deletes it): an agent's
    heatmap reads only conversations a patient wrote in during the period."""
    inbound_hours: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """This conversation's share of ``report_inbound_hour`` ("day|hour|channel" -> count),
    counted under ``team_id``: what to take back out when it changes."""
    computed_at: Mapped[datetime]


class InboundHour(Base):
    """Incoming messages per clinic-local day and hour, team (of the conversation) and
    channel (of the message): the heatmap's source."""

    __tablename__ = "report_inbound_hour"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    hour: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    team_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    weekday: Mapped[int] = mapped_column(SmallInteger)
    """0 = Monday, of ``day``."""
    count: Mapped[int] = mapped_column(Integer, default=0)


class FactDirty(Base):
    """A conversation whose facts must be recomputed. Triggers insert it (or bump
    ``version``) in the changing transaction; the refresh deletes it only at the version it
    read, so a change made while it worked is never lost."""

    __tablename__ = "report_fact_dirty"

    conversation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)


class FactTeamDirty(Base):
    """A team whose hours, holidays or zone changed: its conversations' business-hours
    durations are recomputed."""

    __tablename__ = "report_fact_team_dirty"

    team_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)


class FactState(Base):
    """One row: the clinic zone the rollups were counted in, and how current they are."""

    __tablename__ = "report_fact_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time_zone: Mapped[str] = mapped_column(String(64))
    as_of: Mapped[datetime | None]
    """Every change committed before this instant is in the rollups."""


NO_JOURNEY = uuid.UUID(int=0)
"""Stands for "any journey" in ``report_appointment_fact``'s key."""


class RunFact(Base):
    """What the outcome reports count of one journey step run, recomputed whenever the run,
    its message, its enrollment, or the patient's replies or consent change. Each flag is one
    funnel column (``hub.journeys.reporting_queries.column_predicate``) of this run alone."""

    __tablename__ = "report_run_fact"
    __table_args__ = (
        Index("ix_report_run_fact_journey_due", "journey_id", "due_at"),
        Index("ix_report_run_fact_enrollment", "enrollment_id"),
    )

    run_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    enrollment_id: Mapped[uuid.UUID]
    journey_id: Mapped[uuid.UUID]
    version: Mapped[int | None] = mapped_column(Integer)
    step_id: Mapped[str] = mapped_column(String(80))
    appointment_id: Mapped[uuid.UUID | None]
    channel: Mapped[str | None] = mapped_column(String(16))
    """The channel its message went by (None: no message)."""
    due_at: Mapped[datetime]
    due_day: Mapped[date] = mapped_column(Date)
    """``due_at``'s date in the clinic's zone."""
    status: Mapped[str] = mapped_column(String(16))
    sent: Mapped[bool] = mapped_column(Boolean)
    delivered: Mapped[bool] = mapped_column(Boolean)
    replied: Mapped[bool] = mapped_column(Boolean)
    confirmed: Mapped[bool] = mapped_column(Boolean)
    cancelled: Mapped[bool] = mapped_column(Boolean)
    opted_out: Mapped[bool] = mapped_column(Boolean)
    failed: Mapped[bool] = mapped_column(Boolean)
    confirm_s: Mapped[float | None] = mapped_column(Float)
    """Seconds from its message to the confirmation, when ``confirmed``."""
    computed_at: Mapped[datetime]


class AppointmentFact(Base):
    """One appointment's status and reminder group (``run_facts.reminder_group``), once under
    NO_JOURNEY and once per journey that enrolled it (the journey filter)."""

    __tablename__ = "report_appointment_fact"
    __table_args__ = (Index("ix_report_appointment_fact_journey_start", "journey_id", "start_at"),)

    appointment_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    journey_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    start_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(24))
    cancelled_at: Mapped[datetime | None]
    reminder_group: Mapped[str] = mapped_column(String(16))
    computed_at: Mapped[datetime]


class RollupDirty(Base):
    """Something whose run or appointment facts must be recomputed: an enrollment, a patient
    (all their enrollments: a reply or an opt-out) or an appointment. Filled by triggers in
    the changing transaction (migration 0030) and drained like ``report_fact_dirty``."""

    __tablename__ = "report_rollup_dirty"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    item_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)


# --- the inbox reports' day rollup (migration 0032) ----------------------------------------

ANY_CHANNEL = "*"
"""Stands for "every channel" in ``report_inbox_day``'s key."""
ANY_ID = uuid.UUID(int=(1 << 128) - 1)
"""Stands for "every team" or "every assignee" in ``report_inbox_day``'s key."""
NOBODY = uuid.UUID(int=0)
"""Stands for "unassigned" in ``report_inbox_day``'s key."""


class InboxDay(Base):
    """The inbox figures of the conversations opened (``opened`` .. ``settled_breaches``, the
    first-response histograms) or first resolved (``resolved``, ``reopened``, the resolution
    histograms) on one clinic-local day (``grain`` "d") or month (``grain`` "m", ``day`` its
    first day), per channel, team and assignee, and again with each of those replaced by
    "every" (ANY_CHANNEL, ANY_ID): a report's group or filter is one row per day or month, so
    no request merges per-agent rows into a clinic total. Histograms are packed by
    ``hub.reports.rollup.pack``; kept by ``facts_actions.do_refresh_facts``."""

    __tablename__ = "report_inbox_day"
    __table_args__ = (
        Index("ix_report_inbox_day_key", "channel", "team_id", "assignee_id", "grain", "day"),
    )

    grain: Mapped[str] = mapped_column(String(1), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    team_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    assignee_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    opened: Mapped[int] = mapped_column(Integer, default=0)
    measured: Mapped[int] = mapped_column(Integer, default=0)
    unanswered_open: Mapped[int] = mapped_column(Integer, default=0)
    closed_unanswered: Mapped[int] = mapped_column(Integer, default=0)
    with_due: Mapped[int] = mapped_column(Integer, default=0)
    settled_breaches: Mapped[int] = mapped_column(Integer, default=0)
    """Missed targets that can no longer change (the wait ended after the due time); those
    still waiting past it depend on now and are counted live from the facts."""
    resolved: Mapped[int] = mapped_column(Integer, default=0)
    reopened: Mapped[int] = mapped_column(Integer, default=0)
    first_response: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    first_response_bh: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    resolution: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    resolution_bh: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
