"""Reads for the staff workspace's handling controls (canned replies, people, teams)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence

from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.inbox.models import CannedResponse, StaffUser, Team, team_member


async def canned_for_team(
    session: AsyncSession, team_id: uuid.UUID | None
) -> Sequence[CannedResponse]:
    """The clinic-wide canned replies and the team's own, by title."""
    stmt = select(CannedResponse).order_by(CannedResponse.title)
    where: ColumnElement[bool] = CannedResponse.team_id.is_(None)
    if team_id is not None:
        where = where | (CannedResponse.team_id == team_id)
    return (await session.scalars(stmt.where(where))).all()


async def assignable_staff(session: AsyncSession, team_id: uuid.UUID | None) -> Sequence[StaffUser]:
    stmt = select(StaffUser).where(StaffUser.active).order_by(StaffUser.display_name)
    if team_id is not None:
        stmt = stmt.where(
            exists().where(team_member.c.staff_id == StaffUser.id, team_member.c.team_id == team_id)
        )
    return (await session.scalars(stmt)).all()


async def all_teams(session: AsyncSession) -> Sequence[Team]:
    return (await session.scalars(select(Team).order_by(Team.name))).all()


async def teams_for(
    session: AsyncSession, team_ids: Collection[uuid.UUID] | None
) -> Sequence[Team]:
    """Teams by name: all of them (``None``) or the given ones."""
    stmt = select(Team).order_by(Team.name)
    if team_ids is not None:
        stmt = stmt.where(Team.id.in_(list(team_ids)))
    return (await session.scalars(stmt)).all()


async def is_member(session: AsyncSession, staff_id: uuid.UUID, team_id: uuid.UUID) -> bool:
    found = await session.scalar(
        select(team_member.c.staff_id).where(
            team_member.c.staff_id == staff_id, team_member.c.team_id == team_id
        )
    )
    return found is not None
