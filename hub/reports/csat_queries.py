"""SQL of the ``csat`` report: surveys by the day of the resolution they are about."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, and_, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.enums import MessageStatus
from hub.inbox.models import Message, StaffUser, Team
from hub.journeys.csat_models import CsatSurvey
from hub.journeys.models import StepRun, SurveyAnswer

OUT_STATUSES = (
    MessageStatus.SENDING,
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.READ,
)
"""A survey counts as sent once its question left the hub (as ``answers`` reads "went out"):
not while quiet hours hold it, nor when it failed."""


@dataclass(frozen=True)
class Scope:
    """The period as UTC instants [low, high) of the resolution, and the narrowing."""

    low: datetime
    high: datetime
    team_id: uuid.UUID | None = None
    channel: str | None = None
    agent_id: uuid.UUID | None = None


_S = TypeVar("_S", bound=Select[*tuple[Any, ...]])


def _scoped(stmt: _S, scope: Scope) -> _S:
    stmt = stmt.where(CsatSurvey.resolved_at >= scope.low, CsatSurvey.resolved_at < scope.high)
    if scope.team_id is not None:
        stmt = stmt.where(CsatSurvey.team_id == scope.team_id)
    if scope.channel is not None:
        stmt = stmt.where(CsatSurvey.channel == scope.channel)
    if scope.agent_id is not None:
        stmt = stmt.where(CsatSurvey.agent_id == scope.agent_id)
    return stmt


async def survey_counts(
    session: AsyncSession, scope: Scope
) -> Sequence[tuple[uuid.UUID | None, uuid.UUID | None, bool, int | None, int]]:
    """(team, agent, question went out, score or None, surveys) for the scope. One row per
    group: the report adds them up (a CSAT enrollment has one step, so one answer at most)."""
    went_out = exists().where(
        StepRun.enrollment_id == CsatSurvey.enrollment_id,
        Message.id == StepRun.message_id,
        Message.status.in_(OUT_STATUSES),
    )
    stmt = _scoped(
        select(
            CsatSurvey.team_id,
            CsatSurvey.agent_id,
            went_out.label("out"),
            SurveyAnswer.score,
            func.count(),
        )
        .select_from(CsatSurvey)
        .outerjoin(
            SurveyAnswer,
            and_(
                SurveyAnswer.enrollment_id == CsatSurvey.enrollment_id,
                SurveyAnswer.score.is_not(None),
            ),
        ),
        scope,
    ).group_by(CsatSurvey.team_id, CsatSurvey.agent_id, "out", SurveyAnswer.score)
    rows = (await session.execute(stmt)).all()
    return [(team, agent, bool(out), score, int(n)) for team, agent, out, score, n in rows]


async def comments(
    session: AsyncSession, scope: Scope, teams: Collection[uuid.UUID] | None, limit: int
) -> Sequence[tuple[SurveyAnswer, uuid.UUID]]:
    """The newest answers with a comment, and their conversation; ``teams`` None: any team."""
    stmt = _scoped(
        select(SurveyAnswer, CsatSurvey.conversation_id)
        .join(CsatSurvey, CsatSurvey.enrollment_id == SurveyAnswer.enrollment_id)
        .where(SurveyAnswer.text_enc.is_not(None), SurveyAnswer.score.is_not(None)),
        scope,
    )
    if teams is not None:
        stmt = stmt.where(CsatSurvey.team_id.in_(list(teams)))
    stmt = stmt.order_by(SurveyAnswer.created_at.desc(), SurveyAnswer.id).limit(limit)
    return [(answer, cid) for answer, cid in (await session.execute(stmt)).all()]


async def names(
    session: AsyncSession, teams: Collection[uuid.UUID], people: Collection[uuid.UUID]
) -> tuple[dict[uuid.UUID, str], dict[uuid.UUID, str]]:
    """Team names and staff display names (work names, not patient data)."""
    team_names: dict[uuid.UUID, str] = {}
    staff_names: dict[uuid.UUID, str] = {}
    if teams:
        rows = await session.execute(select(Team.id, Team.name).where(Team.id.in_(list(teams))))
        team_names = {i: n for i, n in rows.all()}
    if people:
        rows = await session.execute(
            select(StaffUser.id, StaffUser.display_name).where(StaffUser.id.in_(list(people)))
        )
        staff_names = {i: n for i, n in rows.all()}
    return team_names, staff_names
