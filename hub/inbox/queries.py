"""The inbox's SQL. Callers own the session and the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.enums import Channel, ConversationStatus, Direction
from hub.inbox.models import (
    Attachment,
    Conversation,
    DeliveryAttempt,
    InboundEvent,
    Message,
    Note,
    Patient,
    ReadMarker,
    StaffUser,
    Team,
)


async def lock_sender(session: AsyncSession, bidx: bytes) -> None:
    """Serialize intake per sender address until the transaction ends: two texts (or mails)
    from a new number arriving at once would otherwise each create a patient, and two from a
    patient without an open conversation would each open one. PostgreSQL: a transaction-level
    advisory lock keyed by the blind index; SQLite's writers are serialized already (BEGIN
    IMMEDIATE)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    key = int.from_bytes(bidx[:8], "big", signed=True)
    await session.execute(select(func.pg_advisory_xact_lock(key)))


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


async def last_inbound_channel(session: AsyncSession, conversation_id: uuid.UUID) -> Channel | None:
    """The channel the patient last wrote on in the conversation (None: they never wrote)."""
    stmt = (
        select(Message.channel)
        .where(Message.conversation_id == conversation_id, Message.direction == Direction.INBOUND)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
    )
    return (await session.scalars(stmt)).first()


async def staff_by_email(session: AsyncSession, email: str) -> StaffUser | None:
    stmt = select(StaffUser).where(StaffUser.email == email.strip().lower())
    return (await session.scalars(stmt)).first()


async def teams_named(session: AsyncSession, names: Sequence[str]) -> Sequence[Team]:
    if not names:
        return []
    return (await session.scalars(select(Team).where(Team.name.in_(names)))).all()


async def team_named(session: AsyncSession, name: str) -> Team | None:
    return (await session.scalars(select(Team).where(Team.name == name))).first()


async def clinic_time_zone(session: AsyncSession) -> str:
    """The clinic's zone: the default team's (else the first team's by name, else UTC)."""
    zone = await session.scalar(
        select(Team.time_zone).order_by(Team.is_default.desc(), Team.name).limit(1)
    )
    return zone or "UTC"


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


async def link_inbound_event(
    session: AsyncSession, event_id: uuid.UUID, message_id: uuid.UUID
) -> None:
    """Point a raw event at the message it became: one UPDATE, no read of the row first."""
    stmt = update(InboundEvent).where(InboundEvent.id == event_id).values(message_id=message_id)
    await session.execute(stmt.execution_options(synchronize_session=False))


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


async def attachments_of(
    session: AsyncSession, message_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Attachment]]:
    if not message_ids:
        return {}
    stmt = (
        select(Attachment)
        .where(Attachment.message_id.in_(message_ids))
        .order_by(Attachment.created_at)
    )
    found: dict[uuid.UUID, list[Attachment]] = {}
    for att in (await session.scalars(stmt)).all():
        found.setdefault(att.message_id, []).append(att)
    return found


async def notes_of(session: AsyncSession, conversation_id: uuid.UUID) -> Sequence[Note]:
    stmt = (
        select(Note)
        .where(Note.conversation_id == conversation_id)
        .order_by(Note.created_at, Note.id)
    )
    return (await session.scalars(stmt)).all()


async def staff_names(
    session: AsyncSession, ids: set[uuid.UUID | None]
) -> dict[uuid.UUID | None, str]:
    wanted = [i for i in ids if i is not None]
    if not wanted:
        return {}
    rows = await session.execute(
        select(StaffUser.id, StaffUser.display_name).where(StaffUser.id.in_(wanted))
    )
    return {row[0]: row[1] for row in rows.all()}


async def due_snoozed(session: AsyncSession, now: datetime) -> Sequence[Conversation]:
    stmt = (
        select(Conversation)
        .where(
            Conversation.status == ConversationStatus.SNOOZED,
            Conversation.snoozed_until <= now,
        )
        .with_for_update(skip_locked=True)
    )
    return (await session.scalars(stmt)).all()


async def mark_read(
    session: AsyncSession, staff_id: uuid.UUID, conversation_id: uuid.UUID, at: datetime
) -> None:
    """Upsert the staff member's read marker. A read-then-insert let two simultaneous opens of
    one conversation by one person (two tabs, a double click) both insert, and the second
    answered 500 on the primary key (seen in bench/rotation.py)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(ReadMarker)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(ReadMarker)
    stmt = stmt.values(staff_id=staff_id, conversation_id=conversation_id, read_at=at)
    stmt = stmt.on_conflict_do_update(
        index_elements=["staff_id", "conversation_id"], set_={"read_at": stmt.excluded.read_at}
    )
    await session.execute(stmt)


async def patient_has_conversation_in(
    session: AsyncSession, patient_id: uuid.UUID, visible: Any
) -> bool:
    stmt = select(Conversation.id).where(Conversation.patient_id == patient_id, visible).limit(1)
    return (await session.scalars(stmt)).first() is not None


async def stalled_outbound(
    session: AsyncSession, due_before: datetime, limit: int
) -> Sequence[Message]:
    """Queued messages whose send time passed long ago: their job was lost (Redis flushed,
    a worker killed before RQ recorded it). Sending is idempotent, so they are re-queued."""
    from sqlalchemy import and_, or_

    from hub.enums import Direction, MessageStatus

    stmt = (
        select(Message)
        .where(
            Message.direction == Direction.OUTBOUND,
            Message.status == MessageStatus.QUEUED,
            or_(
                and_(Message.next_attempt_at.is_(None), Message.created_at < due_before),
                Message.next_attempt_at < due_before,
            ),
        )
        .order_by(Message.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (await session.scalars(stmt)).all()


async def patients_by_id(session: AsyncSession, ids: set[uuid.UUID]) -> dict[uuid.UUID, Patient]:
    """One query for a page's patients (instead of one per row)."""
    if not ids:
        return {}
    found = (await session.scalars(select(Patient).where(Patient.id.in_(ids)))).all()
    return {p.id: p for p in found}


async def messages_for_update(
    session: AsyncSession, message_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Message]:
    stmt = (
        select(Message)
        .where(Message.id.in_(list(message_ids)))
        .order_by(Message.id)
        .with_for_update()
    )
    return {m.id: m for m in (await session.scalars(stmt)).all()}


async def attempts_for_update(
    session: AsyncSession, message_ids: Sequence[uuid.UUID]
) -> dict[tuple[uuid.UUID, int], DeliveryAttempt]:
    stmt = (
        select(DeliveryAttempt)
        .where(DeliveryAttempt.message_id.in_(list(message_ids)))
        .order_by(DeliveryAttempt.message_id, DeliveryAttempt.attempt)
        .with_for_update()
    )
    return {(a.message_id, a.attempt): a for a in (await session.scalars(stmt)).all()}


async def stuck_sending(
    session: AsyncSession, claimed_before: datetime, limit: int
) -> Sequence[tuple[Message, DeliveryAttempt]]:
    """Messages handed to a sender that never reported back: the attempt was claimed long
    ago and has no provider id. Either the provider has them (the sender died after the call)
    or not (it died before); only the provider can say which."""
    from hub.enums import Direction, MessageStatus

    stmt = (
        select(Message, DeliveryAttempt)
        .join(
            DeliveryAttempt,
            (DeliveryAttempt.message_id == Message.id)
            & (DeliveryAttempt.attempt == Message.send_attempts),
        )
        .where(
            Message.direction == Direction.OUTBOUND,
            Message.status == MessageStatus.SENDING,
            Message.provider_message_id.is_(None),
            DeliveryAttempt.provider_message_id.is_(None),
            DeliveryAttempt.created_at < claimed_before,
        )
        .order_by(DeliveryAttempt.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)  # both rows; skipping busy ones never waits
    )
    return [(m, a) for m, a in (await session.execute(stmt)).all()]


async def email_thread(
    session: AsyncSession,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    before: datetime,
    limit: int,
) -> list[Message]:
    """The conversation's email messages up to ``before`` (``message_id`` excluded), oldest
    first: the chain an outbound email's In-Reply-To and References come from."""
    from hub.enums import Channel

    stmt = (
        select(Message)
        .where(
            Message.conversation_id == conversation_id,
            Message.channel == Channel.EMAIL,
            Message.id != message_id,
            Message.created_at <= before,
        )
        .order_by(Message.created_at.desc())
        .limit(limit)
    )
    return list(reversed((await session.scalars(stmt)).all()))


async def message_by_email_ids(
    session: AsyncSession,
    hub_ids: Sequence[uuid.UUID],
    email_ids: Sequence[str],
    providers: Sequence[str],
    *,
    lock: bool = False,
) -> Message | None:
    """The newest message that is one of ours by id (a Message-ID we made from it) or whose
    Message-ID is one of ``email_ids`` (mail we sent or received)."""
    from sqlalchemy import or_

    conditions: list[Any] = []
    if hub_ids:
        conditions.append(Message.id.in_(list(hub_ids)))
    if email_ids:
        conditions.append(
            Message.provider.in_(list(providers)) & Message.provider_message_id.in_(list(email_ids))
        )
    if not conditions:
        return None
    stmt = select(Message).where(or_(*conditions)).order_by(Message.created_at.desc()).limit(1)
    if lock:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()
