"""SQL for the second factor: a person's recovery codes. Callers own the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.inbox.models import RecoveryCode


async def unused_recovery_codes(
    session: AsyncSession, staff_id: uuid.UUID
) -> Sequence[RecoveryCode]:
    stmt = (
        select(RecoveryCode)
        .where(RecoveryCode.staff_id == staff_id, RecoveryCode.used_at.is_(None))
        .order_by(RecoveryCode.id)
    )
    return (await session.scalars(stmt)).all()


async def count_unused_recovery_codes(session: AsyncSession, staff_id: uuid.UUID) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(RecoveryCode)
        .where(RecoveryCode.staff_id == staff_id, RecoveryCode.used_at.is_(None))
    )
    return int(count or 0)


async def delete_recovery_codes(session: AsyncSession, staff_id: uuid.UUID) -> None:
    """Every code of a person, used or not: a new set (or none) replaces the whole set."""
    await session.execute(delete(RecoveryCode).where(RecoveryCode.staff_id == staff_id))


async def use_recovery_code(session: AsyncSession, code_id: uuid.UUID, at: datetime) -> bool:
    """Mark a code used unless another sign-in used it first; True when this one did."""
    result = await session.execute(
        update(RecoveryCode)
        .where(RecoveryCode.id == code_id, RecoveryCode.used_at.is_(None))
        .values(used_at=at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
