"""Reads for the weekly summary mail."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.enums import Role
from hub.inbox.models import StaffUser


async def active_admins(session: AsyncSession) -> Sequence[StaffUser]:
    """Who gets the weekly summary: every active admin, by name."""
    stmt = (
        select(StaffUser)
        .where(StaffUser.active, StaffUser.role == Role.ADMIN)
        .order_by(StaffUser.display_name)
    )
    return (await session.scalars(stmt)).all()
