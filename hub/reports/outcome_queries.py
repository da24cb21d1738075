"""SQL of the patient outcome reports (``journeys``, ``appointments``, ``delivery``).

The journey counts are the coordinator's funnel (``hub.journeys.reporting_queries``): the same
rows and the same column predicates, narrowed to a period and a channel, so a figure here and
the funnel's cell never disagree on what "confirmed" means.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from hub.consent.models import ConsentRecord, ConsentState
from hub.enums import Channel, Direction, MessageStatus
from hub.inbox.models import Conversation, DeliveryAttempt, Message
from hub.journeys.models import AppointmentStatus, Enrollment, StepRun
from hub.reports.models import NO_JOURNEY, AppointmentFact, RunFact

Bounds = tuple[datetime, datetime]

UNDELIVERED = (MessageStatus.FAILED, MessageStatus.UNDELIVERED)
SUCCEEDED = (MessageStatus.DELIVERED, MessageStatus.READ)
OPT_OUT_CODES = ("opted_out", "no_opt_in", "21610")
"""A send refused for want of consent: the gate's codes and Twilio's "unsubscribed"."""
COMPLAINT_EVIDENCE = "spam complaint:%"
"""Consent records a mailbox provider's feedback report wrote (``email_intake._complaint``)."""


async def _no_jit(session: AsyncSession) -> None:
    if session.get_bind().dialect.name == "postgresql":
        # As for the funnel: the planner's JIT costs more than these statements take.
        await session.execute(text("SET LOCAL jit = off"))


def _runs_in(bounds: Bounds, journey_id: uuid.UUID, channel: str | None) -> list[Any]:
    where = [
        RunFact.journey_id == journey_id,
        RunFact.due_at >= bounds[0],
        RunFact.due_at < bounds[1],
    ]
    if channel is not None:
        where.append(RunFact.channel == channel)
    return where


def _span(periods: Sequence[Bounds]) -> Bounds:
    return min(p[0] for p in periods), max(p[1] for p in periods)


Counts = tuple[dict[str, dict[str, int]], dict[str, int]]
"""({step: {column: enrollments}}, {column: enrollments over all steps})."""


async def funnel_counts(
    session: AsyncSession,
    journey_id: uuid.UUID,
    columns: Sequence[str],
    periods: Sequence[Bounds],
    channel: str | None,
) -> list[Counts]:
    """The counts of the runs due in each period (and whose message went by ``channel``), in
    one pass over the journey's run facts for all the periods (a report and its trend). Each
    column is a flag of ``report_run_fact``; patients are counted once per step and once in
    all, as the funnel counts them."""
    await _no_jit(session)
    span = _span(periods)
    counts = [
        func.count(func.distinct(RunFact.enrollment_id)).filter(
            RunFact.due_at >= low, RunFact.due_at < high, getattr(RunFact, c).is_(True)
        )
        for low, high in periods
        for c in columns
    ]
    where = _runs_in(span, journey_id, channel)
    width = len(columns)

    def split(values: Sequence[Any]) -> list[dict[str, int]]:
        return [
            {c: int(n) for c, n in zip(columns, values[k * width : (k + 1) * width], strict=True)}
            for k in range(len(periods))
        ]

    by_step: dict[str, list[dict[str, int]]] = {}
    if session.get_bind().dialect.name == "postgresql":
        # One pass: ROLLUP adds the all-steps row (step NULL) to the per-step ones.
        stmt = select(RunFact.step_id, *counts).where(*where).group_by(func.rollup(RunFact.step_id))
        found: dict[Any, list[dict[str, int]]] = {
            r[0]: split(r[1:]) for r in (await session.execute(stmt)).all()
        }
        totals = found.pop(None, None) or split([0] * len(counts))
        by_step = found
    else:
        stmt = select(RunFact.step_id, *counts).where(*where).group_by(RunFact.step_id)
        by_step = {r[0]: split(r[1:]) for r in (await session.execute(stmt)).all()}
        totals = split((await session.execute(select(*counts).where(*where))).one())
    return [
        ({step: per[k] for step, per in by_step.items()}, totals[k]) for k in range(len(periods))
    ]


async def confirmations(
    session: AsyncSession, journey_id: uuid.UUID, span: Bounds, channel: str | None
) -> list[tuple[str, datetime, float]]:
    """(step, due, seconds from its message to the confirmation) of each run counted
    confirmed among those due in ``span``."""
    stmt = select(RunFact.step_id, RunFact.due_at, RunFact.confirm_s).where(
        *_runs_in(span, journey_id, channel), RunFact.confirmed.is_(True)
    )
    return [(r[0], r[1], float(r[2] or 0)) for r in (await session.execute(stmt)).all()]


def _text(value: str) -> ColumnElement[str]:
    return literal_column(f"'{value}'", String)


def _appointments_in(bounds: Bounds, journey_id: uuid.UUID | None) -> list[ColumnElement[bool]]:
    return [
        AppointmentFact.journey_id == (journey_id or NO_JOURNEY),
        AppointmentFact.start_at >= bounds[0],
        AppointmentFact.start_at < bounds[1],
    ]


async def appointment_groups(
    session: AsyncSession, bounds: Bounds, journey_id: uuid.UUID | None, *, grouped: bool = True
) -> list[tuple[str, AppointmentStatus, int]]:
    """(reminder group, status, appointments starting in ``bounds``) from the appointment
    facts (``run_facts.reminder_group``); the group is "all" when not ``grouped`` (the
    baseline: the hub was not sending then). Entered-in-error ones have no facts."""
    await _no_jit(session)
    group = _text("all") if not grouped else AppointmentFact.reminder_group
    stmt = (
        select(group, AppointmentFact.status, func.count())
        .where(*_appointments_in(bounds, journey_id))
        .group_by(*([AppointmentFact.reminder_group] if grouped else []), AppointmentFact.status)
    )
    return [(r[0], AppointmentStatus(r[1]), int(r[2])) for r in (await session.execute(stmt)).all()]


async def cancellations(
    session: AsyncSession, bounds: Bounds, journey_id: uuid.UUID | None
) -> list[tuple[datetime, datetime | None]]:
    """(start, when the cancellation came in) of cancelled appointments starting in ``bounds``."""
    stmt = select(AppointmentFact.start_at, AppointmentFact.cancelled_at).where(
        *_appointments_in(bounds, journey_id),
        AppointmentFact.status == AppointmentStatus.CANCELLED.value,
    )
    return [(r[0], r[1]) for r in (await session.execute(stmt)).all()]


def _outbound_in(
    bounds: Bounds,
    channel: str | None,
    journey_id: uuid.UUID | None,
    team_id: uuid.UUID | None,
) -> list[ColumnElement[bool]]:
    where = [
        # Inline, so that the planner can use the partial index in a prepared statement too.
        Message.direction == _text(Direction.OUTBOUND.value),
        Message.created_at >= bounds[0],
        Message.created_at < bounds[1],
    ]
    if channel is not None:
        where.append(Message.channel == Channel(channel))
    if journey_id is not None:
        where.append(
            Message.id.in_(
                select(StepRun.message_id)
                .join(Enrollment, Enrollment.id == StepRun.enrollment_id)
                .where(Enrollment.journey_id == journey_id, StepRun.message_id.is_not(None))
            )
        )
    if team_id is not None:
        where.append(
            Message.conversation_id.in_(
                select(Conversation.id).where(Conversation.team_id == team_id)
            )
        )
    return where


async def delivery_groups(
    session: AsyncSession,
    bounds: Bounds,
    channel: str | None,
    journey_id: uuid.UUID | None,
    team_id: uuid.UUID | None,
) -> list[tuple[str, str | None, MessageStatus, int]]:
    """(channel, provider, status, messages) of outbound messages made in ``bounds``. The
    provider is the one its last attempt went to: a provider that refused the send at once
    never gave the message its id, so those few are looked up in their attempts; None:
    never handed to one."""
    await _no_jit(session)
    where = _outbound_in(bounds, channel, journey_id, team_id)
    # The bulk reads the index alone (ix_inbox_message_outbound_created covers it).
    stmt = (
        select(Message.channel, Message.provider, Message.status, func.count())
        .where(*where, Message.provider.is_not(None))
        .group_by(Message.channel, Message.provider, Message.status)
    )
    found = [(r[0].value, r[1], r[2], int(r[3])) for r in (await session.execute(stmt)).all()]
    attempted = (
        select(Message.channel, DeliveryAttempt.provider, Message.status, func.count())
        .select_from(Message)
        .outerjoin(
            DeliveryAttempt,
            and_(
                DeliveryAttempt.message_id == Message.id,
                DeliveryAttempt.attempt == Message.send_attempts,
            ),
        )
        .where(*where, Message.provider.is_(None))
        .group_by(Message.channel, DeliveryAttempt.provider, Message.status)
    )
    found += [(r[0].value, r[1], r[2], int(r[3])) for r in (await session.execute(attempted))]
    return found


async def error_groups(
    session: AsyncSession,
    bounds: Bounds,
    channel: str | None,
    journey_id: uuid.UUID | None,
    team_id: uuid.UUID | None,
) -> list[tuple[str, str, int]]:
    """(channel, error code, messages) of outbound messages made in ``bounds`` that ended
    failed or undelivered; "" for those that ended so with no code recorded (counted too: a
    manager should see failures the provider gave no reason for)."""
    code = func.coalesce(Message.error_code, "")
    stmt = (
        select(Message.channel, code, func.count())
        .where(*_outbound_in(bounds, channel, journey_id, team_id), Message.status.in_(UNDELIVERED))
        .group_by(Message.channel, code)
    )
    return [(r[0].value, r[1], int(r[2])) for r in (await session.execute(stmt)).all()]


async def complaints(session: AsyncSession, bounds: Bounds) -> int:
    """Spam complaints that stopped mail in ``bounds``: one report writes a record per purpose
    it revokes, all with the same evidence (which names the report's inbound event)."""
    stmt = select(func.count(func.distinct(ConsentRecord.evidence))).where(
        ConsentRecord.evidence.like(COMPLAINT_EVIDENCE),
        ConsentRecord.state == ConsentState.REVOKED,
        ConsentRecord.created_at >= bounds[0],
        ConsentRecord.created_at < bounds[1],
    )
    return int(await session.scalar(stmt) or 0)


def run_rows(
    low: datetime,
    high: datetime,
    journey_id: uuid.UUID | None,
    after: tuple[datetime, uuid.UUID],
    *,
    inclusive: bool = False,
) -> Select[Any]:
    """Journey runs due in [low, high) in (due, id) order, after ``after`` unless
    ``inclusive`` (the first page; keyset paging after it): ids, step, status, channels,
    reason, message status, failure code and times. No message text, no names."""
    columns: tuple[Any, ...] = (
        Enrollment.journey_id,
        Enrollment.version,
        StepRun.step_id,
        StepRun.enrollment_id,
        Enrollment.appointment_id,
        StepRun.id,
        StepRun.due_at,
        StepRun.status,
        Message.channel,
        StepRun.channel,
        StepRun.reason,
        Message.status,
        Message.error_code,
        Message.sent_at,
        Message.delivered_at,
    )
    stmt = (
        select(*columns)
        .select_from(StepRun)
        .join(Enrollment, Enrollment.id == StepRun.enrollment_id)
        .outerjoin(Message, Message.id == StepRun.message_id)
        .where(StepRun.due_at >= low, StepRun.due_at < high)
        .order_by(StepRun.due_at, StepRun.id)
    )
    if not inclusive:
        stmt = stmt.where(
            or_(StepRun.due_at > after[0], and_(StepRun.due_at == after[0], StepRun.id > after[1]))
        )
    if journey_id is not None:
        stmt = stmt.where(Enrollment.journey_id == journey_id)
    return stmt
