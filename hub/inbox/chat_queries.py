"""The web chat's SQL: a patient's chat messages (across their conversations), one of them by
id, and recent offline notices. Callers own the session and the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.enums import Channel, ConversationStatus, Direction, MessageStatus
from hub.inbox.models import Conversation, Message, StaffUser

SHOWN_OUTBOUND = (
    MessageStatus.SENDING,
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.READ,
)
"""Clinic messages a patient sees in the chat: handed to the relay or beyond. Queued ones are
not (a deferred message must not appear early)."""


def _patients_chat(patient_id: uuid.UUID, offline_code: str) -> list[ColumnElement[bool]]:
    return [
        Conversation.patient_id == patient_id,
        Message.channel == Channel.CHAT,
        or_(
            Message.direction == Direction.INBOUND,
            Message.status.in_(SHOWN_OUTBOUND),
            # Failed only because the patient was away: it waits for them in the chat.
            Message.error_code == offline_code,
        ),
    ]


async def chat_message_of(
    session: AsyncSession, patient_id: uuid.UUID, message_id: uuid.UUID, offline_code: str
) -> Message | None:
    """One message of the patient's chat; None for any other message (another patient's)."""
    stmt = (
        select(Message)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Message.id == message_id, *_patients_chat(patient_id, offline_code))
    )
    return (await session.scalars(stmt)).first()


async def chat_messages(
    session: AsyncSession,
    patient_id: uuid.UUID,
    offline_code: str,
    *,
    after: Message | None,
    limit: int,
) -> list[tuple[Message, str | None]]:
    """The patient's chat messages with the author's name, oldest first: those after
    ``after``, or the newest ``limit`` when it is None."""
    stmt = (
        select(Message, StaffUser.display_name)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .outerjoin(StaffUser, StaffUser.id == Message.author_id)
        .where(*_patients_chat(patient_id, offline_code))
    )
    if after is None:
        stmt = stmt.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit)
        rows = list((await session.execute(stmt)).all())
        rows.reverse()
    else:
        stmt = (
            stmt.where(
                or_(
                    Message.created_at > after.created_at,
                    and_(Message.created_at == after.created_at, Message.id > after.id),
                )
            )
            .order_by(Message.created_at, Message.id)
            .limit(limit)
        )
        rows = list((await session.execute(stmt)).all())
    return [(m, name) for m, name in rows]


async def conversation_for_chat(
    session: AsyncSession, patient_id: uuid.UUID
) -> Conversation | None:
    """Where the patient's chat goes: their conversation that is not resolved, else their
    latest, on any channel. A chat link is sent from a conversation (which the invite made
    the most recently active), so the chat continues that conversation, not a second one."""
    stmt = (
        select(Conversation)
        .where(Conversation.patient_id == patient_id)
        .order_by(
            (Conversation.status == ConversationStatus.RESOLVED).asc(),
            Conversation.last_activity_at.desc(),
        )
        .limit(1)
    )
    return (await session.scalars(stmt)).first()


async def automated_since(
    session: AsyncSession, conversation_id: uuid.UUID, since: datetime
) -> Sequence[Message]:
    """Messages the clinic sent without an author in the conversation since ``since`` (the
    offline notices among them are told apart by their delivery note)."""
    stmt = select(Message).where(
        Message.conversation_id == conversation_id,
        Message.direction == Direction.OUTBOUND,
        Message.author_id.is_(None),
        Message.channel != Channel.CHAT,
        Message.created_at >= since,
    )
    return (await session.scalars(stmt)).all()
