"""SQL of the ``csat`` report: surveys by the day of the resolution they are about.

Counts come from the rollup (``csat_models``) when it was counted in the period's zone: its day
and month rows, less the stored facts of the surveys still queued, plus those surveys counted
afresh from their rows. So a figure is exact at any moment, whatever the tick has caught up
with; the raw read (``survey_counts``) is for a rollup counted in another zone, never built, or
being recounted whole.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    exists,
    func,
    literal,
    select,
    text,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from hub.enums import MessageStatus
from hub.inbox.models import Message, StaffUser, Team
from hub.journeys.csat_models import CsatSurvey
from hub.journeys.models import StepRun, SurveyAnswer
from hub.reports import facts_queries as state_queries
from hub.reports.csat_models import NO_SCORE, CsatDay, CsatDirty, CsatFact, CsatMonth
from hub.reports.models import NO_TEAM, NOBODY
from hub.reports.outcome_day_queries import split

OUT_STATUSES = (
    MessageStatus.SENDING,
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.READ,
)
"""A survey counts as sent once its question left the hub (as ``answers`` reads "went out"):
not while quiet hours hold it, nor when it failed."""
CSAT_STATE_ID = 4
"""The csat rollup's row in ``report_fact_state`` (inbox 1, runs 2, delivery 3)."""
MAX_QUEUED_READ = 5000
"""Queued surveys a read counts afresh beside the rollup; beyond (a recount of every survey
after a zone change) it reads the surveys. Normally a tick leaves none."""


@dataclass(frozen=True)
class Scope:
    """The period as UTC instants [low, high) of the resolution, and the narrowing."""

    low: datetime
    high: datetime
    team_id: uuid.UUID | None = None
    channel: str | None = None
    agent_id: uuid.UUID | None = None
    days: tuple[date, date] | None = None
    """The same period as clinic-local days, first and last (what the rollup counts in)."""


Counted = tuple[uuid.UUID | None, uuid.UUID | None, bool, int | None, int]
"""(team, agent, question went out, score or None, surveys)."""


def went_out() -> ColumnElement[bool]:
    """Whether a run of the survey's enrollment has a message that left the hub."""
    return exists().where(
        StepRun.enrollment_id == CsatSurvey.enrollment_id,
        Message.id == StepRun.message_id,
        Message.status.in_(OUT_STATUSES),
    )


def first_score() -> Any:
    """The survey's first scored answer (a CSAT enrollment has one step, so one at most; were
    there two, the first counts, as for the patient a later one is an ordinary message)."""
    return (
        select(SurveyAnswer.score)
        .where(
            SurveyAnswer.enrollment_id == CsatSurvey.enrollment_id, SurveyAnswer.score.is_not(None)
        )
        .order_by(SurveyAnswer.created_at, SurveyAnswer.id)
        .limit(1)
        .scalar_subquery()
    )


_S = TypeVar("_S", bound=Select[*tuple[Any, ...]])


def _scoped(stmt: _S, scope: Scope) -> _S:
    return stmt.where(
        CsatSurvey.resolved_at >= scope.low,
        CsatSurvey.resolved_at < scope.high,
        *_narrowed(CsatSurvey, scope),
    )


async def survey_counts(session: AsyncSession, scope: Scope) -> list[Counted]:
    """The counts read from the surveys themselves. One row per group: the report adds them
    up."""
    stmt = _scoped(
        select(
            CsatSurvey.team_id,
            CsatSurvey.agent_id,
            went_out().label("out"),
            first_score().label("score"),
            func.count(),
        ),
        scope,
    ).group_by(CsatSurvey.team_id, CsatSurvey.agent_id, "out", "score")
    return _counted(await session.execute(stmt))


def _counted(rows: Any) -> list[Counted]:
    found: list[Counted] = []
    for team, agent, out, score, n in rows:
        if n:
            team = None if team == NO_TEAM else team
            agent = None if agent == NOBODY else agent
            score = None if score in (None, NO_SCORE) else int(score)
            found.append((team, agent, bool(out), score, int(n)))
    return found


async def rollup_zone(session: AsyncSession) -> str | None:
    """The clinic zone the rollup counted days in; None if it was never built."""
    saved = await state_queries.state(session, CSAT_STATE_ID)
    return saved.time_zone if saved is not None and saved.time_zone else None


def _narrowed(model: Any, scope: Scope) -> list[ColumnElement[bool]]:
    where = []
    if scope.team_id is not None:
        where.append(model.team_id == scope.team_id)
    if scope.channel is not None:
        where.append(model.channel == scope.channel)
    if scope.agent_id is not None:
        where.append(model.agent_id == scope.agent_id)
    return where


async def plan_each_read(session: AsyncSession) -> None:
    """PostgreSQL, for this transaction: plan each statement for its own values. The driver
    prepares statements, and from a statement's sixth run PostgreSQL may keep a plan made for
    any values, which for the rollup read (a list of queued ids, a range of days) scans the
    surveys: 1.4 s instead of 40 ms at 200k surveys (bench/csat_rollup.py)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


async def queued_surveys(session: AsyncSession, limit: int) -> list[uuid.UUID] | None:
    """The surveys the tick has yet to recount, in key order (the primary key's index, not a
    heap of dead queue rows); None when more than ``limit`` are (a recount of every survey
    is under way: the surveys are read instead)."""
    stmt = select(CsatDirty.item_id).order_by(CsatDirty.kind, CsatDirty.item_id)
    found = list(await session.scalars(stmt.limit(limit + 1)))
    return found if len(found) <= limit else None


async def rollup_counts(
    session: AsyncSession, scope: Scope, queued: Sequence[uuid.UUID]
) -> list[Counted]:
    """``survey_counts`` from the rollup (counted in the zone of ``scope.days``): its day rows
    at the period's edges and month rows for the months it holds whole, less the facts of the
    ``queued`` surveys (read before), plus those surveys counted from their rows.

    One statement, so the counters and the facts are of one snapshot (the tick changes both in
    one transaction): a queued survey the tick recounts meanwhile is taken out as it was
    counted and added as it is. A survey queued after ``queued`` was read counts as it was
    then."""
    assert scope.days is not None
    edges, months = split(scope.days)
    d = CsatDay
    parts: list[Any] = [
        select(d.team_id, d.agent_id, d.out, d.score, d.count).where(
            and_(d.day >= a, d.day <= b, *_narrowed(d, scope))
        )
        for a, b in edges
    ]
    if months is not None:
        m = CsatMonth
        parts.append(
            select(m.team_id, m.agent_id, m.out, m.score, m.count).where(
                and_(m.month >= months[0], m.month <= months[1], *_narrowed(m, scope))
            )
        )
    if queued:
        f = CsatFact
        parts.append(
            select(f.team_id, f.agent_id, f.out, f.score, literal(-1)).where(
                f.survey_id.in_(list(queued)),
                f.day >= scope.days[0],
                f.day <= scope.days[1],
                *_narrowed(f, scope),
            )
        )
        parts.append(
            _scoped(
                select(
                    CsatSurvey.team_id,
                    CsatSurvey.agent_id,
                    went_out(),
                    first_score(),
                    literal(1),
                ).where(CsatSurvey.id.in_(list(queued))),
                scope,
            )
        )
    rows = union_all(*parts).subquery()
    team, agent, out, score, n = rows.c
    stmt = select(team, agent, out, score, func.sum(n)).group_by(team, agent, out, score)
    return _counted(await session.execute(stmt))


async def comments(
    session: AsyncSession, scope: Scope, teams: Collection[uuid.UUID] | None, limit: int
) -> Sequence[tuple[SurveyAnswer, uuid.UUID]]:
    """The newest answers with a comment, and their conversation; ``teams`` None: any team."""
    stmt = _scoped(
        select(SurveyAnswer, CsatSurvey.conversation_id)
        .join(CsatSurvey, CsatSurvey.enrollment_id == SurveyAnswer.enrollment_id)
        .where(
            SurveyAnswer.text_enc.is_not(None),
            SurveyAnswer.score.is_not(None),
            # Redundant (an answer follows its resolution) but it bounds the walk down the
            # comments' index (migration 0034) to the answers since the period began.
            SurveyAnswer.created_at >= scope.low,
        ),
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
