"""The ``csat`` report's rollup against a direct recount: the history of
``test_csat_report`` changed step by step as the hub changes it (a new resolution, a question
held then sent, one failed, answers, a second answer, a reopen that calls a survey off, a team
change, a deletion, a zone change), each figure read from the rollup compared with the same
figure counted from the surveys, their questions and answers, both with the tick caught up
and with the changes still queued. Caught up, the rollup holds exactly what a rebuild
counts."""

# ruff: noqa: F811  (pytest passes the imported fixture by its name)
from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, MessageStatus
from hub.inbox.models import Conversation, Message, Team
from hub.journeys.csat import REOPENED, cancel_in
from hub.journeys.csat_models import CsatSurvey
from hub.journeys.models import SurveyAnswer
from hub.journeys.queries import journey_by_key
from hub.reports import csat_queries as q
from hub.reports.base import ReportFilters
from hub.reports.csat import _scope, build
from hub.reports.csat_models import CsatDay, CsatDirty, CsatFact, CsatMonth
from hub.reports.csat_rollup_actions import do_rebuild_csat_rollup, do_refresh_csat_rollup
from tests.test_csat_report import (
    END,
    HISTORY,
    START,
    Spec,
    World,
    _write,
    at,
    close,
    filters,
    recount,
    world,  # noqa: F401
)

ZONE = "America/New_York"
PERIODS = [
    (START, END),
    (date(2026, 10, 25), date(2026, 10, 31)),
    (date(2026, 10, 1), date(2026, 11, 30)),  # whole months: read from the month rows
    (date(2026, 10, 20), date(2026, 11, 8)),  # edges on day rows, a whole month between
]


async def set_zone(db: Database, zone: str) -> None:
    async with db.transaction() as session:
        await session.execute(update(Team).values(time_zone=zone))


async def refresh(db: Database) -> None:
    """What the tick does, until it has caught up."""
    for _ in range(20):
        if (await do_refresh_csat_rollup(db, batch=5)).caught_up:
            return
    raise AssertionError("the csat rollup never caught up")


async def queued(db: Database) -> int:
    async with db.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(CsatDirty)) or 0)


def tally(rows: list[q.Counted]) -> Counter[tuple[Any, ...]]:
    found: Counter[tuple[Any, ...]] = Counter()
    for team, agent, out, score, n in rows:
        found[(team, agent, out, score)] += n
    return +found


async def agree(db: Database, world: World, zone: str = ZONE) -> None:
    """Every period and narrowing: the rollup's counts are the surveys' counts."""
    narrowings: list[dict[str, Any]] = [
        {},
        {"team_id": world.teams["North"]},
        {"channel": "email"},
        {"agent_id": world.staff["ben"].staff_id},
    ]
    async with db.reader() as session:
        assert await q.rollup_zone(session) == zone
        queued = await q.queued_surveys(session, q.MAX_QUEUED_READ)
        assert queued is not None
        for start, end in PERIODS:
            for narrow in narrowings:
                scope = _scope(ReportFilters(start, end, zone, **narrow))
                direct = tally(await q.survey_counts(session, scope))
                assert tally(await q.rollup_counts(session, scope, queued)) == direct, (
                    start,
                    narrow,
                )


async def rollup_rows(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    async with db.reader() as session:
        found = {}
        for model in (CsatFact, CsatDay, CsatMonth):
            rows = (await session.execute(select(*model.__table__.columns))).all()
            found[model.__tablename__] = sorted(tuple(r) for r in rows)
        return found


async def test_the_report_reads_the_rollup_and_equals_the_recount(
    db: Database, ring: KeyRing, world: World
) -> None:
    await set_zone(db, ZONE)
    await refresh(db)
    assert await queued(db) == 0
    await agree(db, world)
    report = await build(db, filters(), world.staff["admin"], ring=ring)
    close(report.figures, recount(HISTORY, START, END))
    close(report.previous, recount(HISTORY, date(2026, 10, 25), date(2026, 10, 31)))
    ben = await build(db, filters(), world.staff["ben"], ring=ring)
    close(ben.figures, recount(HISTORY, START, END, agent="ben"))
    # It is the rollup that is read: a count changed behind the tick's back shows.
    async with db.transaction() as session:
        await session.execute(
            update(CsatDay).where(CsatDay.day == START).values(count=CsatDay.count + 1)
        )
    again = await build(db, filters(), world.staff["admin"], ring=ring)
    assert again.figures["surveys"] == report.figures["surveys"] + 1


async def _survey_of(db: Database, world: World, spec: Spec) -> tuple[Any, Any]:
    async with db.reader() as session:
        survey = await session.scalar(
            select(CsatSurvey).where(CsatSurvey.conversation_id == world.conversations[spec])
        )
        assert survey is not None
        message_id = await session.scalar(
            select(Message.id).where(Message.conversation_id == survey.conversation_id)
        )
        return survey, message_id


async def _set_status(db: Database, message_id: Any, status: MessageStatus) -> None:
    async with db.transaction() as session:
        await session.execute(update(Message).where(Message.id == message_id).values(status=status))


@pytest.mark.parametrize("ticking", [True, False], ids=["ticked", "queued"])
async def test_every_change_keeps_the_rollup_exact(
    db: Database, ring: KeyRing, world: World, ticking: bool
) -> None:
    await set_zone(db, ZONE)
    await refresh(db)

    async def step() -> None:
        if ticking:
            await refresh(db)
        await agree(db, world)

    held, unanswered, answered, read = HISTORY[5], HISTORY[4], HISTORY[1], HISTORY[8]
    # A new resolution, its question not yet due; another whose question is held.
    new = [
        Spec(at(2, 20), "South", "cat", Channel.SMS, None),
        Spec(at(3, 21), "North", "ann", Channel.EMAIL, MessageStatus.QUEUED),
    ]
    async with db.transaction() as session:
        journey = await journey_by_key(session, "csat")
        assert journey is not None
        patient_id = await session.scalar(
            select(Conversation.patient_id).where(
                Conversation.id == world.conversations[HISTORY[0]]
            )
        )
        assert patient_id is not None
        for spec in new:
            world.conversations[spec] = await _write(
                session, ring, journey.id, patient_id, spec, world.teams, world.staff
            )
    await step()
    # The held question is sent; a sent one fails (the carrier refused it late).
    _s, message_id = await _survey_of(db, world, new[1])
    await _set_status(db, message_id, MessageStatus.SENDING)
    await _set_status(db, message_id, MessageStatus.SENT)
    _s, message_id = await _survey_of(db, world, HISTORY[2])
    await _set_status(db, message_id, MessageStatus.UNDELIVERED)
    await step()
    # A delivery receipt changes nothing the report reads.
    _s, message_id = await _survey_of(db, world, read)
    await _set_status(db, message_id, MessageStatus.DELIVERED)
    await step()
    # Answered; answered twice (the first answer counts); an answer taken back.
    survey, _m = await _survey_of(db, world, unanswered)
    first, _m = await _survey_of(db, world, answered)
    async with db.transaction() as session:
        later = utcnow()
        session.add(SurveyAnswer(enrollment_id=survey.enrollment_id, step_id="sms", score=4))
        session.add(
            SurveyAnswer(
                enrollment_id=first.enrollment_id, step_id="again", score=1, created_at=later
            )
        )
    await step()
    async with db.transaction() as session:
        await session.execute(
            update(SurveyAnswer)
            .where(SurveyAnswer.enrollment_id == survey.enrollment_id)
            .values(score=2)
        )
    await step()
    async with db.transaction() as session:
        await session.execute(
            delete(SurveyAnswer).where(
                SurveyAnswer.enrollment_id == first.enrollment_id, SurveyAnswer.step_id != "again"
            )
        )
    await step()
    # Reopened: the survey whose question quiet hours hold is called off (its message fails).
    survey, _m = await _survey_of(db, world, held)
    async with db.transaction() as session:
        called_off = await cancel_in(
            session, REOPENED, utcnow(), conversation_id=survey.conversation_id, close_asks=True
        )
        assert called_off == 1
    await step()
    # The team of a survey changes; a survey goes with its conversation.
    survey, _m = await _survey_of(db, world, HISTORY[0])
    async with db.transaction() as session:
        await session.execute(
            update(CsatSurvey)
            .where(CsatSurvey.id == survey.id)
            .values(
                team_id=world.teams["South"], resolved_at=survey.resolved_at + timedelta(days=3)
            )
        )
        await session.execute(
            delete(Conversation).where(Conversation.id == world.conversations[HISTORY[3]])
        )
    await step()

    await refresh(db)
    assert await queued(db) == 0
    await agree(db, world)
    kept = await rollup_rows(db)
    assert await do_rebuild_csat_rollup(db) == len(HISTORY) + len(new) - 1
    assert await rollup_rows(db) == kept


async def test_a_zone_change_recounts_every_day(db: Database, ring: KeyRing, world: World) -> None:
    await set_zone(db, ZONE)
    await refresh(db)
    await agree(db, world)
    await set_zone(db, "Asia/Tokyo")
    # Until the tick recounts, the report reads the surveys in the new zone's days.
    tokyo = ReportFilters(START, END, "Asia/Tokyo")
    report = await build(db, tokyo, world.staff["admin"], ring=ring)
    async with db.reader() as session:
        assert await q.rollup_zone(session) == ZONE
        direct = tally(await q.survey_counts(session, _scope(tokyo)))
    assert report.figures["surveys"] == sum(direct.values())
    await refresh(db)
    await agree(db, world, "Asia/Tokyo")
    assert (await build(db, tokyo, world.staff["admin"], ring=ring)).figures == report.figures
