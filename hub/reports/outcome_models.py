"""Day rollups of the outcome reports (``journeys``, ``appointments``, ``delivery``): counts per
clinic-local day, so that a year's report sums a few hundred thousand narrow rows instead of
reading a million run facts or ten million messages. No PHI: ids, days, codes and counts.

The journeys' and appointments' rollups are derived from the run and appointment facts
(``report_run_fact``, ``report_appointment_fact``) in the tick's transaction that replaces those
facts: the refresh takes the old facts' share out and adds the new ones'
(``run_facts_actions``). The delivery rollup is derived from one narrow fact per outbound
message, recomputed from a queue that triggers fill (migration 0033) and drained by the tick
(``delivery_rollup_actions``). Only the tick writes these tables (under its lock), so the
counters never see two writers; status callbacks write only their own message's queue row.
"""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import Date, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import Base

ALL = "*"
"""Stands for "every step" or "any channel" in ``report_run_day``'s key."""
NO_PREVIOUS = date(1, 1, 1)
"""``prev_day`` of an enrollment's first flagged run (a NULL would not be unique); before any
period's start, so such a run always counts."""


class RunDay(Base):
    """Journey runs flagged in a funnel column, per journey, step (or ALL), channel (or ALL),
    due day and ``prev_day``: the due day of the enrollment's previous run flagged in the same
    column within the same step and channel scope (NO_PREVIOUS: none).

    The funnel counts an enrollment once per period, which a sum of days would not: the
    enrollments flagged in [start, end] are exactly the flagged runs due in it whose previous
    one was due before ``start`` (or was none), so a period's count is one sum over its days
    with ``prev_day < start``. An enrollment's runs span a few days, so there are few pairs."""

    __tablename__ = "report_run_day"

    journey_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    due_day: Mapped[date] = mapped_column(Date, primary_key=True)
    step_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    flag: Mapped[str] = mapped_column(String(16), primary_key=True)
    """The funnel column (a flag of ``report_run_fact``)."""
    prev_day: Mapped[date] = mapped_column(Date, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class ConfirmWait(Base):
    """Confirmed runs per journey, step, channel, due day and time to confirm, the time cut to
    what staff read (``outcome_rollup.wait_bucket``): the median's histogram."""

    __tablename__ = "report_confirm_wait"

    journey_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    due_day: Mapped[date] = mapped_column(Date, primary_key=True)
    step_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    wait_s: Mapped[int] = mapped_column(Integer, primary_key=True)
    """The bucket's lower bound in seconds."""
    count: Mapped[int] = mapped_column(Integer, default=0)


class AppointmentDay(Base):
    """Appointments per journey (NO_JOURNEY: all), clinic-local start day, status, reminder
    group and cancellation timing ("late", "in_time", "unknown"; "" when not cancelled),
    timed with ``OutcomeRollupState.late_cancel_hours``."""

    __tablename__ = "report_appointment_day"

    journey_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    start_day: Mapped[date] = mapped_column(Date, primary_key=True)
    status: Mapped[str] = mapped_column(String(24), primary_key=True)
    reminder_group: Mapped[str] = mapped_column(String(16), primary_key=True)
    cancel: Mapped[str] = mapped_column(String(8), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class MessageFact(Base):
    """What the delivery report counts of one outbound message, as last added to
    ``report_delivery_day``: the share to take back out when it changes. No foreign key: an
    erased message must still be found to be taken out."""

    __tablename__ = "report_message_fact"

    message_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    channel: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(32))
    """The message's provider, else its last attempt's; "" when never handed to one."""
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str] = mapped_column(String(32))
    """Kept only on failed or undelivered messages ("" otherwise and when none)."""
    team_id: Mapped[uuid.UUID]
    """The conversation's current team (``NO_TEAM``: none)."""
    journey_id: Mapped[uuid.UUID]
    """The journey whose step sent it (``NO_JOURNEY``: none)."""


class DeliveryDay(Base):
    """Outbound messages per clinic-local day of their making, journey (NO_JOURNEY: every
    message, journey or not; else that journey's), channel, team, provider, status and code."""

    __tablename__ = "report_delivery_day"

    journey_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    team_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    error_code: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class DeliveryDirty(Base):
    """A message (or every outbound message of a conversation, whose team changed) whose
    delivery fact must be recomputed; versioned like ``report_rollup_dirty``."""

    __tablename__ = "report_delivery_dirty"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    item_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)


class OutcomeRollupState(Base):
    """One row: the late-cancellation hours ``report_appointment_day`` was timed with (the
    clinic's zone is the run facts' state row's, ``report_fact_state`` id 2)."""

    __tablename__ = "report_outcome_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    late_cancel_hours: Mapped[int] = mapped_column(Integer)


# Month rows: a year's read sums twelve of these per key instead of 365 day rows. A month is
# read from them only when the period holds all of it; the days at a period's edges come from
# the day rows. Each is the sum of its month's day rows, except that ``RunMonth.prev_day`` is
# cut to the month's first day when it falls inside the month: a period that holds the whole
# month starts on or before that day, so such a run is never its enrollment's first in it.


class RunMonth(Base):
    """``RunDay`` by month (``month``: its first day)."""

    __tablename__ = "report_run_month"

    journey_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    step_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    flag: Mapped[str] = mapped_column(String(16), primary_key=True)
    prev_day: Mapped[date] = mapped_column(Date, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class ConfirmMonth(Base):
    """``ConfirmWait`` by month."""

    __tablename__ = "report_confirm_month"

    journey_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    step_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    wait_s: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class DeliveryMonth(Base):
    """``DeliveryDay`` by month."""

    __tablename__ = "report_delivery_month"

    journey_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    team_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    error_code: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
