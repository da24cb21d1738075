"""SQL for mentions (who was named in which note, read or not) and the offline-alert throttle.

Callers own the session and the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.enums import Role
from hub.inbox.mention_models import Mention, StaffAlert
from hub.inbox.models import Conversation, Note, Patient, StaffUser, team_member


async def active_staff(session: AsyncSession) -> list[tuple[uuid.UUID, str, str]]:
    """(id, display name, email) of everyone who can be mentioned."""
    stmt = (
        select(StaffUser.id, StaffUser.display_name, StaffUser.email)
        .where(StaffUser.active.is_(True))
        .order_by(StaffUser.display_name, StaffUser.email)
    )
    return [(r[0], r[1], r[2]) for r in (await session.execute(stmt)).all()]


async def staff_who_see(
    session: AsyncSession, team_id: uuid.UUID | None
) -> list[tuple[uuid.UUID, str, str]]:
    """(id, display name, email) of the active staff who can open a conversation of this team:
    its members and every admin (the access rule of ``StaffContext.can_see``)."""
    members = select(team_member.c.staff_id).where(team_member.c.team_id == team_id)
    stmt = (
        select(StaffUser.id, StaffUser.display_name, StaffUser.email)
        .where(
            StaffUser.active.is_(True),
            or_(StaffUser.role == Role.ADMIN, StaffUser.id.in_(members)),
        )
        .order_by(StaffUser.display_name, StaffUser.email)
    )
    return [(r[0], r[1], r[2]) for r in (await session.execute(stmt)).all()]


def add_mentions(
    session: AsyncSession,
    note: Note,
    staff_ids: Collection[uuid.UUID],
    at: datetime,
) -> None:
    session.add_all(
        Mention(
            note_id=note.id,
            staff_id=staff_id,
            conversation_id=note.conversation_id,
            created_at=at,
        )
        for staff_id in staff_ids
    )


async def mentions_of(
    session: AsyncSession,
    staff_id: uuid.UUID,
    visible: ColumnElement[bool],
    *,
    limit: int,
    before: datetime | None = None,
    unread_only: bool = False,
) -> list[tuple[Mention, Note, str | None, Patient]]:
    """The person's mentions in conversations they can still see, newest first, with the note,
    its author's name and the conversation's patient."""
    stmt = (
        select(Mention, Note, StaffUser.display_name, Patient)
        .join(Note, Note.id == Mention.note_id)
        .join(Conversation, Conversation.id == Mention.conversation_id)
        .join(Patient, Patient.id == Conversation.patient_id)
        .outerjoin(StaffUser, StaffUser.id == Note.author_id)
        .where(Mention.staff_id == staff_id, visible)
        .order_by(Mention.created_at.desc(), Mention.note_id.desc())
        .limit(limit)
    )
    if before is not None:
        stmt = stmt.where(Mention.created_at < before)
    if unread_only:
        stmt = stmt.where(Mention.read_at.is_(None))
    return [(r[0], r[1], r[2], r[3]) for r in (await session.execute(stmt)).all()]


async def unread_count(
    session: AsyncSession, staff_id: uuid.UUID, visible: ColumnElement[bool]
) -> int:
    stmt = (
        select(func.count())
        .select_from(Mention)
        .join(Conversation, Conversation.id == Mention.conversation_id)
        .where(Mention.staff_id == staff_id, Mention.read_at.is_(None), visible)
    )
    return int(await session.scalar(stmt) or 0)


async def mention(session: AsyncSession, staff_id: uuid.UUID, note_id: uuid.UUID) -> Mention | None:
    return await session.get(Mention, (note_id, staff_id))


async def mark_read(
    session: AsyncSession,
    staff_id: uuid.UUID,
    at: datetime,
    *,
    conversation_id: uuid.UUID | None = None,
    note_ids: Collection[uuid.UUID] = (),
) -> int:
    """Mark the person's unread mentions in a conversation (or these notes) read; how many."""
    where: list[ColumnElement[bool]] = [Mention.staff_id == staff_id, Mention.read_at.is_(None)]
    if conversation_id is not None:
        where.append(Mention.conversation_id == conversation_id)
    if note_ids:
        where.append(Mention.note_id.in_(list(note_ids)))
    result: Any = await session.execute(
        update(Mention)
        .where(*where)
        .values(read_at=at)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


async def staff_for_alert(session: AsyncSession, staff_id: uuid.UUID) -> StaffUser | None:
    """The person's row, locked on PostgreSQL: alert claims for one person take turns, so the
    per-person pause (``last_alert_at``) holds for jobs running at once."""
    stmt = select(StaffUser).where(StaffUser.id == staff_id)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(key_share=True)
    return (await session.scalars(stmt)).first()


async def last_alert_at(session: AsyncSession, staff_id: uuid.UUID) -> datetime | None:
    """When the person was last emailed about any conversation."""
    return await session.scalar(
        select(func.max(StaffAlert.sent_at)).where(StaffAlert.staff_id == staff_id)
    )


async def claim_alert(
    session: AsyncSession,
    staff_id: uuid.UUID,
    conversation_id: uuid.UUID,
    now: datetime,
    since: datetime,
) -> bool:
    """Record an email to the person about the conversation unless one went after ``since``:
    True when this caller may send it. One statement, so two jobs at once cannot both win."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(StaffAlert)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(StaffAlert)
    stmt = stmt.values(staff_id=staff_id, conversation_id=conversation_id, sent_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=["staff_id", "conversation_id"],
        set_={"sent_at": stmt.excluded.sent_at},
        where=StaffAlert.sent_at <= since,
    ).returning(StaffAlert.staff_id)
    return (await session.execute(stmt)).first() is not None


async def unclaim_alert(
    session: AsyncSession, staff_id: uuid.UUID, conversation_id: uuid.UUID, sent_at: datetime
) -> None:
    """Forget a claimed email that could not be sent, so the next try is not held back (only
    this claim: a later one that did go out stays)."""
    await session.execute(
        delete(StaffAlert).where(
            StaffAlert.staff_id == staff_id,
            StaffAlert.conversation_id == conversation_id,
            StaffAlert.sent_at == sent_at,
        )
    )
