"""SQL for dispatch batches: everything a batch needs, loaded for all its runs at once."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import ColumnElement, Uuid, any_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from hub.crypto import KeyRing, associated_data
from hub.enums import Channel, Direction
from hub.inbox.models import Conversation, Message, Tag, patient_tag
from hub.journeys.models import Appointment, Enrollment, RunStatus, StepRun, SurveyAnswer

T = TypeVar("T")


def _among(session: AsyncSession, column: Any, ids: Iterable[uuid.UUID]) -> ColumnElement[bool]:
    """``column IN ids``. On PostgreSQL ``column = ANY(:ids)``, one array parameter: SQLAlchemy
    renders and binds an IN list element by element at every execution, which costs about four
    times what fetching the row does."""
    if session.get_bind().dialect.name == "postgresql":
        condition: ColumnElement[bool] = column == any_(
            bindparam(None, list(ids), type_=ARRAY(Uuid()))
        )
    else:
        condition = column.in_(list(ids))
    return condition


class ClaimedRun(NamedTuple):
    """A step run a batch holds, as plain values (it is written back with update_by_id)."""

    id: uuid.UUID
    enrollment_id: uuid.UUID
    step_id: str
    attempt: int
    claimed_until: datetime | None
    message_id: uuid.UUID | None
    channel: str | None
    reason: str | None


async def claimed_runs(
    session: AsyncSession, run_ids: Sequence[uuid.UUID], postgres: bool
) -> list[ClaimedRun]:
    """The batch's runs still claimed, locked. SKIP LOCKED: a duplicate of this batch running
    at the same time takes none of the rows this one holds (they come back "gone")."""
    stmt = select(
        StepRun.id,
        StepRun.enrollment_id,
        StepRun.step_id,
        StepRun.attempt,
        StepRun.claimed_until,
        StepRun.message_id,
        StepRun.channel,
        StepRun.reason,
    ).where(_among(session, StepRun.id, run_ids), StepRun.status == RunStatus.CLAIMED)
    if postgres:
        stmt = stmt.with_for_update(skip_locked=True)
    rows = (await session.execute(stmt.order_by(StepRun.due_at))).all()
    return [ClaimedRun(*row) for row in rows]


async def by_ids(
    session: AsyncSession, model: type[T], ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, T]:
    wanted = list(set(ids))
    if not wanted:
        return {}
    column: Any = model.id  # type: ignore[attr-defined]
    rows = (await session.scalars(select(model).where(_among(session, column, wanted)))).all()
    return {row.id: row for row in rows}  # type: ignore[attr-defined]


class EnrollmentFacts(NamedTuple):
    """What a dispatch reads of an enrollment and its appointment, as plain values (loading
    ORM objects of both cost more than the rest of the query)."""

    id: uuid.UUID
    journey_id: uuid.UUID
    patient_id: uuid.UUID
    confirmed_at: datetime | None
    created_at: datetime
    appointment_start: datetime | None
    """None when the enrollment has no appointment (the column itself is never null)."""
    appointment_id: uuid.UUID | None
    appointment_location_enc: bytes | None
    appointment_provider_enc: bytes | None
    version: int | None = None
    """The journey version it follows (None: the current one)."""

    def appointment_place(self, ring: KeyRing) -> tuple[str | None, str | None]:
        """The appointment's location and provider, unsealed (only a rendered template needs
        them, so they are decrypted there and not for every run claimed)."""
        return (
            self._unseal(ring, "location_enc", self.appointment_location_enc),
            self._unseal(ring, "provider_enc", self.appointment_provider_enc),
        )

    def _unseal(self, ring: KeyRing, column: str, blob: bytes | None) -> str | None:
        if blob is None or self.appointment_id is None:
            return None
        aad = associated_data(Appointment.__tablename__, column, self.appointment_id)
        return ring.decrypt_text(blob, aad)


async def enrollment_facts(
    session: AsyncSession, ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, EnrollmentFacts]:
    wanted = list(set(ids))
    if not wanted:
        return {}
    stmt = (
        select(
            Enrollment.id,
            Enrollment.journey_id,
            Enrollment.patient_id,
            Enrollment.confirmed_at,
            Enrollment.created_at,
            Appointment.start_at,
            Appointment.id,
            Appointment.location_enc,
            Appointment.provider_enc,
            Enrollment.version,
        )
        .outerjoin(Appointment, Appointment.id == Enrollment.appointment_id)
        .where(_among(session, Enrollment.id, wanted))
    )
    return {row[0]: EnrollmentFacts._make(row) for row in (await session.execute(stmt)).all()}


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
        .where(_among(session, Conversation.patient_id, ids))
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
        .where(
            _among(session, Conversation.patient_id, ids), Message.direction == Direction.INBOUND
        )
        .group_by(Conversation.patient_id)
    )
    return {pid: at for pid, at in (await session.execute(stmt)).all() if at is not None}


async def tag_indexes_of(
    session: AsyncSession, patient_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, set[bytes]]:
    """Each patient's tags by blind index (a tag condition compares indexes, so no tag name
    is decrypted to decide a send)."""
    ids = list(set(patient_ids))
    if not ids:
        return {}
    stmt = (
        select(patient_tag.c.patient_id, Tag.bidx)
        .join(Tag, Tag.id == patient_tag.c.tag_id)
        .where(_among(session, patient_tag.c.patient_id, ids))
    )
    found: dict[uuid.UUID, set[bytes]] = {}
    for patient_id, bidx in (await session.execute(stmt)).all():
        found.setdefault(patient_id, set()).add(bidx)
    return found


async def answers_of(
    session: AsyncSession, enrollment_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[SurveyAnswer]]:
    ids = list(set(enrollment_ids))
    answers: dict[uuid.UUID, list[SurveyAnswer]] = {eid: [] for eid in ids}
    if not ids:
        return answers
    stmt = select(SurveyAnswer).where(_among(session, SurveyAnswer.enrollment_id, ids))
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
        _among(session, StepRun.enrollment_id, {e for e, _ in wanted}), StepRun.channel.is_not(None)
    )
    for enrollment_id, step_id, channel in (await session.execute(stmt)).all():
        if channel and (enrollment_id, step_id) in wanted:
            found.setdefault((enrollment_id, step_id), set()).add(channel)
    return found
