"""Routing SQL. Callers own the session and the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import raiseload

from hub.inbox.models import Team
from hub.routing.models import HubSetting, RoutingRule, TriagePhrase

_TEAM_ONLY = raiseload(Team.members)
"""Team.members is selectin-loaded: every member, then each member's teams, several queries
per team on every inbound message. Routing reads the team's own columns only."""


async def rules_in_order(
    session: AsyncSession, *, enabled_only: bool = False, for_update: bool = False
) -> Sequence[RoutingRule]:
    """Rules in evaluation order; ties (never left by the actions) broken by age, then id."""
    stmt = select(RoutingRule).order_by(
        RoutingRule.position, RoutingRule.created_at, RoutingRule.id
    )
    if enabled_only:
        stmt = stmt.where(RoutingRule.enabled.is_(True))
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).all()


async def rule_for_update(session: AsyncSession, rule_id: uuid.UUID) -> RoutingRule | None:
    stmt = select(RoutingRule).where(RoutingRule.id == rule_id).with_for_update()
    return (await session.scalars(stmt)).first()


async def triage_phrases(
    session: AsyncSession, *, enabled_only: bool = False
) -> Sequence[TriagePhrase]:
    stmt = select(TriagePhrase).order_by(TriagePhrase.phrase)
    if enabled_only:
        stmt = stmt.where(TriagePhrase.enabled.is_(True))
    return (await session.scalars(stmt)).all()


async def setting(session: AsyncSession, key: str) -> HubSetting | None:
    return await session.get(HubSetting, key)


async def default_team(session: AsyncSession) -> Team | None:
    """The team flagged default; the oldest one if an admin flagged several."""
    stmt = (
        select(Team)
        .options(_TEAM_ONLY)
        .where(Team.is_default.is_(True))
        .order_by(Team.created_at, Team.id)
        .limit(1)
    )
    return (await session.scalars(stmt)).first()


async def team(session: AsyncSession, team_id: uuid.UUID) -> Team | None:
    return await session.get(Team, team_id, options=[_TEAM_ONLY])


async def team_named(session: AsyncSession, name: str) -> Team | None:
    return (
        await session.scalars(select(Team).options(_TEAM_ONLY).where(Team.name == name))
    ).first()
