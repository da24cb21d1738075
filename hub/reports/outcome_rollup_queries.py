"""SQL that keeps the outcome reports' day rollups: adding counts, reading back the facts they
come from, and the delivery rollup's queue and message facts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, delete, func, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from hub.enums import Direction
from hub.inbox.models import Conversation, DeliveryAttempt, Message
from hub.journeys.models import Enrollment, StepRun
from hub.reports.facts_queries import any_of, insert_for, insert_many, rows_of
from hub.reports.models import NO_JOURNEY, NO_TEAM, AppointmentFact, RunFact
from hub.reports.outcome_models import (
    AppointmentDay,
    ConfirmMonth,
    ConfirmWait,
    DeliveryDay,
    DeliveryDirty,
    DeliveryMonth,
    MessageFact,
    OutcomeRollupState,
    RunDay,
    RunMonth,
)
from hub.reports.outcome_rollup import (
    FLAGS,
    UNDELIVERED,
    Counts,
    delivery_months,
    run_months,
    wait_months,
)

KEYS: dict[type[Any], tuple[str, ...]] = {
    RunDay: ("journey_id", "channel", "due_day", "step_id", "flag", "prev_day"),
    ConfirmWait: ("journey_id", "due_day", "step_id", "channel", "wait_s"),
    AppointmentDay: ("journey_id", "start_day", "status", "reminder_group", "cancel"),
    DeliveryDay: (
        "journey_id",
        "day",
        "channel",
        "team_id",
        "provider",
        "status",
        "error_code",
    ),
}
KEYS[RunMonth] = tuple("month" if k == "due_day" else k for k in KEYS[RunDay])
KEYS[ConfirmMonth] = tuple("month" if k == "due_day" else k for k in KEYS[ConfirmWait])
KEYS[DeliveryMonth] = tuple("month" if k == "day" else k for k in KEYS[DeliveryDay])
"""Each rollup's key, in the order ``outcome_rollup``'s counts give it."""
MONTHS = {
    RunDay: (RunMonth, run_months),
    ConfirmWait: (ConfirmMonth, wait_months),
    DeliveryDay: (DeliveryMonth, delivery_months),
}
"""The month rows kept beside a day rollup, and how a day count maps to them."""
CHUNK = 400
MESSAGE = "message"
CONVERSATION = "conversation"
"""``report_delivery_dirty.kind`` values (the triggers of migration 0033 write the same)."""


async def add_counts(session: AsyncSession, model: type[Any], delta: Counts) -> None:
    """Add ``delta`` to the rollup's counters, and to its month rows if it has them; a counter
    that falls to zero is deleted, so an incrementally kept rollup holds the same rows as a
    rebuilt one."""
    await _add(session, model, delta)
    if model in MONTHS:
        months, of_days = MONTHS[model]
        await _add(session, months, {k: n for k, n in of_days(delta).items() if n})


async def _add(session: AsyncSession, model: type[Any], delta: Counts) -> None:
    names = KEYS[model]
    # In key order: two writers (a tick and a rebuild) lock rows in the same order, no deadlock.
    items = sorted(delta.items(), key=lambda kv: tuple(str(k) for k in kv[0]))
    if not items:
        return
    table = model.__table__
    stmt = insert_for(session, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(names), set_={"count": table.c.count + stmt.excluded.count}
    )
    rows = [{**dict(zip(names, key, strict=True)), "count": n} for key, n in items]
    # Executemany (``facts_queries.insert_many``): a VALUES list per chunk compiled a bind
    # parameter per value.
    await (await session.connection()).execute(stmt, rows)
    fell = [key for key, n in items if n < 0]
    for start in range(0, len(fell), CHUNK):
        columns = tuple_(*(getattr(model, name) for name in names))
        chunk = fell[start : start + CHUNK]
        await session.execute(delete(model).where(columns.in_(chunk), model.count == 0))


async def wipe(session: AsyncSession, *models: type[Any]) -> None:
    for model in models:
        await session.execute(delete(model))


_RUN_READS = (
    RunFact.run_id,
    RunFact.enrollment_id,
    RunFact.journey_id,
    RunFact.step_id,
    RunFact.channel,
    RunFact.due_at,
    RunFact.due_day,
    RunFact.confirm_s,
    *(getattr(RunFact, f) for f in FLAGS),
)
_APPOINTMENT_READS = (
    AppointmentFact.journey_id,
    AppointmentFact.start_at,
    AppointmentFact.status,
    AppointmentFact.reminder_group,
    AppointmentFact.cancelled_at,
)


async def run_facts_of(session: AsyncSession, enrollments: Sequence[uuid.UUID]) -> list[Any]:
    """The run facts of ``enrollments`` as stored (what the rollups counted of them)."""
    if not enrollments:
        return []
    stmt = select(*_RUN_READS).where(any_of(session, RunFact.enrollment_id, enrollments))
    return list((await rows_of(session, stmt)).mappings())


async def appointment_facts_of(
    session: AsyncSession, appointments: Sequence[uuid.UUID]
) -> list[Any]:
    if not appointments:
        return []
    stmt = select(*_APPOINTMENT_READS).where(
        any_of(session, AppointmentFact.appointment_id, appointments)
    )
    return list((await rows_of(session, stmt)).mappings())


async def enrollment_pages(session: AsyncSession, after: uuid.UUID | None, limit: int) -> list[Any]:
    """Enrollment ids with run facts, in order, after ``after``: a rebuild's pages."""
    stmt = select(RunFact.enrollment_id).distinct().order_by(RunFact.enrollment_id).limit(limit)
    if after is not None:
        stmt = stmt.where(RunFact.enrollment_id > after)
    return list(await session.scalars(stmt))


async def appointment_fact_page(
    session: AsyncSession, after: tuple[uuid.UUID, uuid.UUID] | None, limit: int
) -> list[Any]:
    stmt = (
        select(AppointmentFact.appointment_id, *_APPOINTMENT_READS)
        .order_by(AppointmentFact.appointment_id, AppointmentFact.journey_id)
        .limit(limit)
    )
    if after is not None:
        key = tuple_(AppointmentFact.appointment_id, AppointmentFact.journey_id)
        stmt = stmt.where(key > tuple_(literal(after[0]), literal(after[1])))
    return list((await session.execute(stmt)).mappings())


async def late_cancel_hours_counted(session: AsyncSession) -> int | None:
    row = await session.get(OutcomeRollupState, 1)
    return row.late_cancel_hours if row is not None else None


async def save_late_cancel_hours(session: AsyncSession, hours: int) -> None:
    row = await session.get(OutcomeRollupState, 1)
    if row is None:
        session.add(OutcomeRollupState(id=1, late_cancel_hours=hours))
    else:
        row.late_cancel_hours = hours
    await session.flush()


# The delivery rollup's queue and facts.


async def queue_messages(session: AsyncSession, ids: Any) -> None:
    """Queue the messages of ``ids`` (a SELECT of one id column)."""
    rows = select(literal(MESSAGE), ids.c[0], literal(1)).where(ids.c[0].is_not(None))
    stmt = insert_for(session, DeliveryDirty).from_select(["kind", "item_id", "version"], rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["kind", "item_id"], set_={"version": DeliveryDirty.version + 1}
    )
    await session.execute(stmt)


async def queue_every_message(session: AsyncSession) -> None:
    """Every outbound message, and every one with a fact (the clinic's zone changed)."""
    outbound = select(Message.id).where(Message.direction == Direction.OUTBOUND)
    await queue_messages(session, outbound.union(select(MessageFact.message_id)).subquery())


async def queue_conversations_messages(
    session: AsyncSession, conversations: Sequence[uuid.UUID]
) -> None:
    if conversations:
        ids = select(Message.id).where(
            Message.conversation_id.in_(conversations), Message.direction == Direction.OUTBOUND
        )
        await queue_messages(session, ids.subquery())


async def message_facts_of(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[Any]:
    stmt = select(MessageFact).where(any_of(session, MessageFact.message_id, ids))
    return [
        {c: getattr(f, c) for c in ("day", *KEYS[DeliveryDay][2:], "journey_id")}
        for f in await session.scalars(stmt)
    ]


async def message_sources(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[Any]:
    """(id, made, channel, provider, status, error code, team, journey) of the outbound
    messages ``ids`` that exist, as ``outcome_queries.delivery_groups`` reads them: the provider
    of its last attempt when the message has none, the conversation's current team, the
    journey of the step that sent it."""
    last_attempt = (
        select(DeliveryAttempt.provider)
        .where(
            DeliveryAttempt.message_id == Message.id,
            DeliveryAttempt.attempt == Message.send_attempts,
        )
        .limit(1)
        .scalar_subquery()
    )
    # A step's message is its own; were one shared, it counts under the first journey.
    journey = (
        select(Enrollment.journey_id)
        .select_from(StepRun)
        .join(Enrollment, Enrollment.id == StepRun.enrollment_id)
        .where(StepRun.message_id == Message.id)
        .order_by(Enrollment.journey_id)
        .limit(1)
        .scalar_subquery()
    )
    stmt = (
        select(
            Message.id,
            Message.created_at,
            Message.channel,
            func.coalesce(Message.provider, last_attempt),
            Message.status,
            Message.error_code,
            Conversation.team_id,
            journey,
        )
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(and_(any_of(session, Message.id, ids), Message.direction == Direction.OUTBOUND))
    )
    return list((await rows_of(session, stmt)).all())


def message_fact(source: Any, zone: Any) -> dict[str, Any]:
    message_id, made, channel, provider, status, error_code, team_id, journey_id = source
    failed = status.value in UNDELIVERED
    return {
        "message_id": message_id,
        "day": made.astimezone(zone).date(),
        "channel": channel.value,
        "provider": provider or "",
        "status": status.value,
        "error_code": (error_code or "") if failed else "",
        "team_id": team_id or NO_TEAM,
        "journey_id": journey_id or NO_JOURNEY,
    }


async def replace_message_facts(
    session: AsyncSession, ids: Sequence[uuid.UUID], rows: Sequence[dict[str, Any]]
) -> None:
    await session.execute(delete(MessageFact).where(any_of(session, MessageFact.message_id, ids)))
    await insert_many(session, MessageFact, rows)
