"""SQL for dispatch batches: everything a batch needs, loaded for all its runs at once."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.enums import Channel, Direction
from hub.inbox.models import Conversation, Message
from hub.journeys.models import RunStatus, StepRun, SurveyAnswer

T = TypeVar("T")


async def claimed_runs(
    session: AsyncSession, run_ids: Sequence[uuid.UUID], postgres: bool
) -> list[StepRun]:
    """The batch's runs still claimed, locked. SKIP LOCKED: a duplicate of this batch running
    at the same time takes none of the rows this one holds (they come back "gone")."""
    stmt = select(StepRun).where(StepRun.id.in_(list(run_ids)), StepRun.status == RunStatus.CLAIMED)
    if postgres:
        stmt = stmt.with_for_update(skip_locked=True)
    return list((await session.scalars(stmt.order_by(StepRun.due_at))).all())


async def by_ids(
    session: AsyncSession, model: type[T], ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, T]:
    wanted = list(set(ids))
    if not wanted:
        return {}
    column: Any = model.id  # type: ignore[attr-defined]
    rows = (await session.scalars(select(model).where(column.in_(wanted)))).all()
    return {row.id: row for row in rows}  # type: ignore[attr-defined]


async def latest_conversations(
    session: AsyncSession, patient_ids: Iterable[uuid.UUID]
) -> dict[tuple[uuid.UUID, Channel], Conversation]:
    """Each patient's most recently active conversation per channel."""
    ids = list(set(patient_ids))
    found: dict[tuple[uuid.UUID, Channel], Conversation] = {}
    if not ids:
        return found
    stmt = (
        select(Conversation)
        .where(Conversation.patient_id.in_(ids))
        .order_by(Conversation.last_activity_at)
    )
    for conversation in (await session.scalars(stmt)).all():
        found[(conversation.patient_id, conversation.channel)] = conversation
    return found


async def last_inbound_at(
    session: AsyncSession, patient_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, datetime]:
    """When each patient last wrote to the clinic (any channel)."""
    ids = list(set(patient_ids))
    if not ids:
        return {}
    stmt = (
        select(Conversation.patient_id, func.max(Message.created_at))
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Conversation.patient_id.in_(ids), Message.direction == Direction.INBOUND)
        .group_by(Conversation.patient_id)
    )
    return {pid: at for pid, at in (await session.execute(stmt)).all() if at is not None}


async def answers_of(
    session: AsyncSession, enrollment_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[SurveyAnswer]]:
    ids = list(set(enrollment_ids))
    answers: dict[uuid.UUID, list[SurveyAnswer]] = {eid: [] for eid in ids}
    if not ids:
        return answers
    stmt = select(SurveyAnswer).where(SurveyAnswer.enrollment_id.in_(ids))
    for answer in (await session.scalars(stmt)).all():
        answers[answer.enrollment_id].append(answer)
    return answers


async def tried_channels(
    session: AsyncSession, keys: Iterable[tuple[uuid.UUID, str]]
) -> dict[tuple[uuid.UUID, str], set[str]]:
    """Channels earlier attempts of these (enrollment, step) pairs went out on."""
    wanted = set(keys)
    found: dict[tuple[uuid.UUID, str], set[str]] = {}
    if not wanted:
        return found
    stmt = select(StepRun.enrollment_id, StepRun.step_id, StepRun.channel).where(
        StepRun.enrollment_id.in_({e for e, _ in wanted}), StepRun.channel.is_not(None)
    )
    for enrollment_id, step_id, channel in (await session.execute(stmt)).all():
        if channel and (enrollment_id, step_id) in wanted:
            found.setdefault((enrollment_id, step_id), set()).add(channel)
    return found
