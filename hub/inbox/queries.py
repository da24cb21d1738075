"""The inbox's SQL. Callers own the session and the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.enums import ConversationStatus
from hub.inbox.models import Conversation, Message, Patient, StaffUser, Team


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
