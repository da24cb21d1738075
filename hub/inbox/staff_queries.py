"""SQL for managing staff accounts and their API tokens (list, deactivate, revoke).

Callers own the session and the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.enums import ConversationStatus, Role
from hub.inbox.models import ApiToken, Conversation, StaffUser, Team


async def all_staff(session: AsyncSession) -> Sequence[StaffUser]:
    return (await session.scalars(select(StaffUser).order_by(StaffUser.email))).all()


async def all_team_ids(session: AsyncSession) -> Sequence[uuid.UUID]:
    return (await session.scalars(select(Team.id))).all()


async def active_admins(session: AsyncSession) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(StaffUser)
        .where(StaffUser.active.is_(True), StaffUser.role == Role.ADMIN)
    )
    return int(count or 0)


async def tokens_of(session: AsyncSession, staff_id: uuid.UUID | None) -> Sequence[ApiToken]:
    stmt = select(ApiToken).order_by(ApiToken.created_at)
    if staff_id is not None:
        stmt = stmt.where(ApiToken.staff_id == staff_id)
    return (await session.scalars(stmt)).all()


async def revoke_tokens_of(session: AsyncSession, staff_id: uuid.UUID, now: datetime) -> int:
    """Revoke every token of a person that is not revoked yet; returns how many."""
    result = await session.execute(
        update(ApiToken)
        .where(ApiToken.staff_id == staff_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def unresolved_assigned_to(
    session: AsyncSession, staff_id: uuid.UUID
) -> Sequence[Conversation]:
    """Conversations still waiting on a person (open, pending or snoozed), locked on PostgreSQL.

    Called with the person's staff row already locked, against the order in
    ``hub.inbox.assignment_queries``, and still deadlock-free: a transaction that holds a
    conversation and waits for this staff row is assigning that conversation *to* them, so it
    is not assigned to them yet and this query neither matches nor waits for it."""
    stmt = (
        select(Conversation)
        .where(
            Conversation.assignee_id == staff_id,
            Conversation.status != ConversationStatus.RESOLVED,
        )
        .order_by(Conversation.id)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(key_share=True)
    return (await session.scalars(stmt)).all()
