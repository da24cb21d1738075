"""The inbox's SQL. Callers own the session and the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.enums import Channel, ConversationStatus
from hub.inbox.models import (
    Conversation,
    DeliveryAttempt,
    InboundEvent,
    Message,
    Patient,
    StaffUser,
    Team,
)


async def patients_by_phone_index(session: AsyncSession, bidx: bytes) -> Sequence[Patient]:
    stmt = select(Patient).where(Patient.phone_bidx == bidx).order_by(Patient.created_at)
    return (await session.scalars(stmt)).all()


async def patients_by_email_index(session: AsyncSession, bidx: bytes) -> Sequence[Patient]:
    stmt = select(Patient).where(Patient.email_bidx == bidx).order_by(Patient.created_at)
    return (await session.scalars(stmt)).all()


async def get_patient(session: AsyncSession, patient_id: uuid.UUID) -> Patient | None:
    return await session.get(Patient, patient_id)


async def open_conversation_of(session: AsyncSession, patient_id: uuid.UUID) -> Conversation | None:
    stmt = (
        select(Conversation)
        .where(
            Conversation.patient_id == patient_id,
            Conversation.status != ConversationStatus.RESOLVED,
        )
        .order_by(Conversation.last_activity_at.desc())
        .limit(1)
    )
    return (await session.scalars(stmt)).first()


async def messages_of(session: AsyncSession, conversation_id: uuid.UUID) -> Sequence[Message]:
    stmt = (
        select(Message)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.created_at, Message.id)
    )
    return (await session.scalars(stmt)).all()


async def staff_by_email(session: AsyncSession, email: str) -> StaffUser | None:
    stmt = select(StaffUser).where(StaffUser.email == email.strip().lower())
    return (await session.scalars(stmt)).first()


async def teams_named(session: AsyncSession, names: Sequence[str]) -> Sequence[Team]:
    if not names:
        return []
    return (await session.scalars(select(Team).where(Team.name.in_(names)))).all()


async def team_named(session: AsyncSession, name: str) -> Team | None:
    return (await session.scalars(select(Team).where(Team.name == name))).first()


async def insert_inbound_event(session: AsyncSession, row: dict[str, object]) -> bool:
    """Insert unless (provider, provider_event_id) exists; True when this call inserted it.

    ON CONFLICT DO NOTHING makes a concurrent duplicate wait for the first transaction and then
    do nothing, so N simultaneous retries of one webhook store one event.
    """
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(InboundEvent)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(InboundEvent)
    stmt = stmt.values(**row).on_conflict_do_nothing(
        index_elements=["provider", "provider_event_id"]
    )
    result = await session.execute(stmt)
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def inbound_event(
    session: AsyncSession, provider: str, provider_event_id: str
) -> InboundEvent | None:
    stmt = select(InboundEvent).where(
        InboundEvent.provider == provider, InboundEvent.provider_event_id == provider_event_id
    )
    return (await session.scalars(stmt)).first()


async def latest_conversation_of(
    session: AsyncSession, patient_id: uuid.UUID, channel: Channel
) -> Conversation | None:
    """The patient's most recently active conversation on a channel, whatever its status."""
    stmt = (
        select(Conversation)
        .where(Conversation.patient_id == patient_id, Conversation.channel == channel)
        .order_by(Conversation.last_activity_at.desc())
        .limit(1)
    )
    return (await session.scalars(stmt)).first()


async def message_for_update(session: AsyncSession, message_id: uuid.UUID) -> Message | None:
    stmt = select(Message).where(Message.id == message_id).with_for_update()
    return (await session.scalars(stmt)).first()


async def attempt_by_provider_id(
    session: AsyncSession, provider: str, provider_message_id: str
) -> DeliveryAttempt | None:
    stmt = (
        select(DeliveryAttempt)
        .where(
            DeliveryAttempt.provider == provider,
            DeliveryAttempt.provider_message_id == provider_message_id,
        )
        .with_for_update()
    )
    return (await session.scalars(stmt)).first()


async def attempt_of(
    session: AsyncSession, message_id: uuid.UUID, attempt: int
) -> DeliveryAttempt | None:
    stmt = (
        select(DeliveryAttempt)
        .where(DeliveryAttempt.message_id == message_id, DeliveryAttempt.attempt == attempt)
        .with_for_update()
    )
    return (await session.scalars(stmt)).first()
