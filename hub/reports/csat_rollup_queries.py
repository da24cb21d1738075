"""SQL that keeps the ``csat`` report's rollup (``csat_models``): its queue, each survey's
fact read from its rows, and the day and month counters."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import date, tzinfo
from typing import Any

from sqlalchemy import delete, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from hub.journeys.csat_models import CsatSurvey
from hub.reports.csat_models import NO_SCORE, CsatDay, CsatDirty, CsatFact, CsatMonth
from hub.reports.csat_queries import first_score, went_out
from hub.reports.facts_queries import insert_for
from hub.reports.models import NO_TEAM, NOBODY

SURVEY = "survey"
"""``report_csat_dirty.kind`` (the triggers of migration 0034 write the same)."""
CHUNK = 400
"""Rows per INSERT (SQLite binds at most 32,766 parameters a statement)."""
DIMENSIONS = ("team_id", "agent_id", "channel", "out", "score")
"""A count's key after its day (or month), in ``Key`` order."""

Key = tuple[date, uuid.UUID, uuid.UUID, str, bool, int]
"""(day, team, person who resolved, channel, question out, score or NO_SCORE)."""


async def queue_every_survey(session: AsyncSession) -> None:
    """Every survey, and every one with a fact (first build, a restore, the zone changed)."""
    ids = select(CsatSurvey.id).union(select(CsatFact.survey_id)).subquery()
    # A WHERE, or SQLite reads the upsert's ON as a join's.
    rows = select(literal(SURVEY), ids.c[0], literal(1)).where(ids.c[0].is_not(None))
    stmt = insert_for(session, CsatDirty).from_select(["kind", "item_id", "version"], rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["kind", "item_id"], set_={"version": CsatDirty.version + 1}
    )
    await session.execute(stmt)


async def survey_facts(
    session: AsyncSession, ids: Sequence[uuid.UUID], zone: tzinfo
) -> list[dict[str, Any]]:
    """The facts of the surveys ``ids`` that exist, read from their rows as ``csat_queries``
    counts them, their day in ``zone``."""
    stmt = select(
        CsatSurvey.id,
        CsatSurvey.resolved_at,
        CsatSurvey.team_id,
        CsatSurvey.agent_id,
        CsatSurvey.channel,
        went_out(),
        first_score(),
    ).where(CsatSurvey.id.in_(ids))
    return [
        {
            "survey_id": survey_id,
            "day": resolved_at.astimezone(zone).date(),
            "team_id": team_id or NO_TEAM,
            "agent_id": agent_id or NOBODY,
            "channel": channel,
            "out": bool(out),
            "score": NO_SCORE if score is None else int(score),
        }
        for survey_id, resolved_at, team_id, agent_id, channel, out, score in (
            await session.execute(stmt)
        )
    ]


async def stored_facts(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    """The facts of ``ids`` as last counted."""
    stmt = select(CsatFact).where(CsatFact.survey_id.in_(ids))
    return [
        {c: getattr(f, c) for c in ("survey_id", "day", *DIMENSIONS)}
        for f in await session.scalars(stmt)
    ]


async def replace_facts(
    session: AsyncSession, ids: Sequence[uuid.UUID], rows: Sequence[dict[str, Any]]
) -> None:
    await session.execute(delete(CsatFact).where(CsatFact.survey_id.in_(ids)))
    for start in range(0, len(rows), CHUNK):
        await session.execute(
            insert_for(session, CsatFact).values(list(rows[start : start + CHUNK]))
        )


async def add_counts(session: AsyncSession, delta: Mapping[Key, int]) -> None:
    """Add ``delta`` to the day rows and to their months'; a counter that falls to zero is
    deleted, so a rollup kept batch by batch holds the same rows as one built at once."""
    months: dict[Key, int] = {}
    for (day, *dims), n in delta.items():
        key: Key = (day.replace(day=1), *dims)  # type: ignore[assignment]
        months[key] = months.get(key, 0) + n
    await _add(session, CsatDay, "day", {k: n for k, n in delta.items() if n})
    await _add(session, CsatMonth, "month", {k: n for k, n in months.items() if n})


async def _add(session: AsyncSession, model: Any, first: str, delta: Mapping[Key, int]) -> None:
    names = (first, *DIMENSIONS)
    # In key order: two writers lock rows in the same order, no deadlock.
    items = sorted(delta.items(), key=lambda kv: tuple(str(k) for k in kv[0]))
    for start in range(0, len(items), CHUNK):
        chunk = items[start : start + CHUNK]
        rows = [{**dict(zip(names, key, strict=True)), "count": n} for key, n in chunk]
        stmt = insert_for(session, model).values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=list(names), set_={"count": model.count + stmt.excluded.count}
        )
        await session.execute(stmt)
        fell = [key for key, n in chunk if n < 0]
        if fell:
            columns = tuple_(*(getattr(model, name) for name in names))
            await session.execute(delete(model).where(columns.in_(fell), model.count == 0))


async def wipe(session: AsyncSession) -> None:
    for model in (CsatFact, CsatDay, CsatMonth):
        await session.execute(delete(model))
