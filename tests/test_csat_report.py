"""The ``csat`` report against a recount: a known history of surveys (sent, held by quiet
hours, failed, answered with and without words) over two teams, two people and two channels,
across the edges of the period in the clinic's zone; each figure is counted again here in plain
Python over the rows the test wrote. Agents see their own; comments are for coordinators
(their teams) and admins, and reading them is audited."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from hub.audit import Actor, AuditEvent
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, ConversationStatus, Direction, MessageStatus
from hub.inbox.access import StaffContext
from hub.inbox.models import Conversation, Message, Patient, Team
from hub.journeys.csat import CSAT_KEY, CsatChoice, do_set_team_csat
from hub.journeys.csat_models import CsatSurvey
from hub.journeys.models import Enrollment, EnrollmentStatus, RunStatus, StepRun, SurveyAnswer
from hub.journeys.queries import journey_by_key
from hub.reports.base import ReportFilters
from hub.reports.csat import build
from hub.reports.registry import NEEDS_RING, REPORTS
from tests.conftest import make_staff

NY = ZoneInfo("America/New_York")
SYSTEM = Actor.system("test")
START, END = date(2026, 11, 1), date(2026, 11, 7)
"""The period: a week in New York, whose first day begins on daylight time (UTC-4) and whose
last ends on standard time (UTC-5)."""


@dataclass(frozen=True)
class Spec:
    resolved_at: datetime
    team: str
    agent: str
    channel: Channel
    message: MessageStatus | None
    """The question's message status; None: no message (cancelled before it was due)."""
    score: int | None = None
    comment: str | None = None


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


HISTORY = [
    # In the period.
    Spec(at(1, 4, 30), "North", "ann", Channel.SMS, MessageStatus.DELIVERED, 5),  # Nov 1 00:30
    Spec(at(2, 15), "North", "ann", Channel.SMS, MessageStatus.DELIVERED, 4, "kind and quick"),
    Spec(at(3, 15), "North", "ann", Channel.SMS, MessageStatus.SENT, 2, "waited two days"),
    Spec(at(3, 16), "North", "ben", Channel.EMAIL, MessageStatus.DELIVERED, 3),
    Spec(at(4, 10), "South", "ben", Channel.SMS, MessageStatus.DELIVERED),  # no answer
    Spec(at(4, 11), "South", "ben", Channel.SMS, MessageStatus.QUEUED),  # held by quiet hours
    Spec(at(5, 9), "South", "ben", Channel.EMAIL, MessageStatus.FAILED),  # refused, no consent
    Spec(at(5, 10), "South", "cat", Channel.SMS, None),  # reopened before it was due
    Spec(at(6, 18), "South", "cat", Channel.SMS, MessageStatus.READ, 1, "nobody called back"),
    Spec(at(8, 4, 59), "North", "cat", Channel.EMAIL, MessageStatus.DELIVERED, 5, "great"),
    # Nov 7 23:59 in New York: still in the period.
    # Just outside: Nov 8 00:00 New York, and Oct 31 23:59 (the previous period).
    Spec(at(8, 5), "North", "ann", Channel.SMS, MessageStatus.DELIVERED, 1, "after the period"),
    Spec(at(1, 3, 59), "North", "ann", Channel.SMS, MessageStatus.DELIVERED, 2, "before it"),
    Spec(at(1, 2), "South", "ben", Channel.SMS, MessageStatus.DELIVERED, 4),  # Oct 31 22:00
]
OUT = {MessageStatus.SENDING, MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ}


def recount(specs: list[Spec], start: date, end: date, **only: Any) -> dict[str, Any]:
    """The figures, counted over ``specs`` as a person would: by the local day of resolution."""
    chosen = [
        s
        for s in specs
        if start <= s.resolved_at.astimezone(NY).date() <= end
        and all(getattr(s, k) == v for k, v in only.items())
    ]
    scores = [s.score for s in chosen if s.score is not None]
    sent = sum(1 for s in chosen if s.message in OUT or s.score is not None)
    return {
        "csat": sum(1 for x in scores if x >= 4) / len(scores) if scores else None,
        "mean_score": sum(scores) / len(scores) if scores else None,
        "responses": len(scores),
        "sent": sent,
        "response_rate": len(scores) / sent if sent else None,
        "surveys": len(chosen),
    }


@dataclass
class World:
    staff: dict[str, StaffContext]
    teams: dict[str, uuid.UUID]
    conversations: dict[Spec, uuid.UUID]


@pytest.fixture
async def world(db: Database, ring: KeyRing) -> World:
    staff = {
        "ann": await make_staff(db, "ann@demo-clinic.example.org", role="agent", teams=("North",)),
        "ben": await make_staff(db, "ben@demo-clinic.example.org", role="agent", teams=("South",)),
        "cat": await make_staff(db, "cat@demo-clinic.example.org", role="agent", teams=("South",)),
        "coordinator": await make_staff(
            db, "cora@demo-clinic.example.org", role="coordinator", teams=("North",)
        ),
        "admin": await make_staff(db, "ada@demo-clinic.example.org", role="admin"),
    }
    async with db.reader() as session:
        teams = {t.name: t.id for t in (await session.scalars(select(Team))).all()}
    await do_set_team_csat(db, SYSTEM, teams["North"], CsatChoice(True, 60))
    conversations: dict[Spec, uuid.UUID] = {}
    async with db.transaction() as session:
        journey = await journey_by_key(session, CSAT_KEY)
        assert journey is not None
        patient = Patient(verified=True, channel_order=["sms", "email"])
        session.add(patient)
        await session.flush()
        for spec in HISTORY:
            conversations[spec] = await _write(
                session, ring, journey.id, patient.id, spec, teams, staff
            )
    return World(staff, teams, conversations)


async def _write(
    session: Any,
    ring: KeyRing,
    journey_id: uuid.UUID,
    patient_id: uuid.UUID,
    spec: Spec,
    teams: dict[str, uuid.UUID],
    staff: dict[str, StaffContext],
) -> uuid.UUID:
    """The rows a survey leaves, as the hub writes them."""
    conversation = Conversation(
        patient_id=patient_id,
        channel=spec.channel,
        team_id=teams[spec.team],
        status=ConversationStatus.RESOLVED,
        created_at=spec.resolved_at - timedelta(hours=2),
        resolved_at=spec.resolved_at,
    )
    session.add(conversation)
    await session.flush()
    enrollment = Enrollment(
        journey_id=journey_id,
        patient_id=patient_id,
        dedupe_key=f"conversation:{conversation.id}:{spec.resolved_at.isoformat()}",
        anchor_at=spec.resolved_at,
        status=EnrollmentStatus.ACTIVE if spec.message else EnrollmentStatus.CANCELLED,
    )
    session.add(enrollment)
    await session.flush()
    due = spec.resolved_at + timedelta(hours=1)
    run = StepRun(
        enrollment_id=enrollment.id,
        step_id=spec.channel.value,
        due_at=due,
        status=RunStatus.CANCELLED,
    )
    if spec.message is not None:
        message = Message(
            conversation_id=conversation.id,
            direction=Direction.OUTBOUND,
            channel=spec.channel,
            status=spec.message,
            purpose="surveys",
            created_at=due,
        )
        message.seal(ring, "body", "How did we do? Reply with a number from 1 to 5")
        session.add(message)
        await session.flush()
        failed = spec.message is MessageStatus.FAILED
        run.status, run.message_id = (RunStatus.FAILED if failed else RunStatus.SENT), message.id
    session.add(run)
    session.add(
        CsatSurvey(
            conversation_id=conversation.id,
            enrollment_id=enrollment.id,
            team_id=teams[spec.team],
            agent_id=staff[spec.agent].staff_id,
            channel=spec.channel.value,
            resolved_at=spec.resolved_at,
        )
    )
    if spec.score is not None:
        answer = SurveyAnswer(
            enrollment_id=enrollment.id,
            step_id=spec.channel.value,
            score=spec.score,
            created_at=due + timedelta(minutes=20),
        )
        if spec.comment:
            answer.seal(ring, "text", spec.comment)
        session.add(answer)
    await session.flush()
    return conversation.id


def filters(**more: Any) -> ReportFilters:
    return ReportFilters(START, END, "America/New_York", **more)


async def comment_reads(db: Database) -> list[AuditEvent]:
    async with db.reader() as session:
        stmt = select(AuditEvent).where(AuditEvent.action == "report.csat.comments.read")
        return list((await session.scalars(stmt)).all())


def close(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value), key
        else:
            assert got[key] == value, key


async def test_every_figure_equals_the_recount(db: Database, ring: KeyRing, world: World) -> None:
    report = await build(db, filters(), world.staff["admin"], ring=ring)
    close(report.figures, recount(HISTORY, START, END))
    close(report.previous, recount(HISTORY, date(2026, 10, 25), date(2026, 10, 31)))
    assert report.figures["surveys"] == 10 and report.figures["responses"] == 6
    [series] = report.series
    assert (series.kind, series.labels) == ("buckets", ["1", "2", "3", "4", "5"])
    in_period = [s for s in HISTORY if START <= s.resolved_at.astimezone(NY).date() <= END]
    assert series.values == [sum(1 for s in in_period if s.score == n) for n in range(1, 6)]

    by_team = {row[1]: row[2:] for row in report.tables[0].rows}
    for team in ("North", "South"):
        want = recount(HISTORY, START, END, team=team)
        assert by_team[team] == [
            want[k] for k in ("sent", "responses", "response_rate", "csat", "mean_score")
        ]
    by_agent = {row[0]: row[2:] for row in report.tables[1].rows}
    for name in ("ann", "ben", "cat"):
        want = recount(HISTORY, START, END, agent=name)
        got = by_agent[world.staff[name].staff_id]
        assert got[:2] == [want["sent"], want["responses"]]
        assert got[3] == want["csat"]


@pytest.mark.parametrize(
    ("narrowing", "only"),
    [
        ({"channel": "email"}, {"channel": Channel.EMAIL}),
        ({"team": "South"}, {"team": "South"}),
        ({"agent": "ben"}, {"agent": "ben"}),
    ],
)
async def test_filters_narrow_to_the_same_recount(
    db: Database, ring: KeyRing, world: World, narrowing: dict[str, str], only: dict[str, Any]
) -> None:
    more: dict[str, Any] = {}
    if "channel" in narrowing:
        more["channel"] = narrowing["channel"]
    if "team" in narrowing:
        more["team_id"] = world.teams[narrowing["team"]]
    if "agent" in narrowing:
        more["agent_id"] = world.staff[narrowing["agent"]].staff_id
    report = await build(db, filters(**more), world.staff["admin"], ring=ring)
    close(report.figures, recount(HISTORY, START, END, **only))


async def test_admins_read_every_comment_and_the_read_is_audited(
    db: Database, ring: KeyRing, world: World
) -> None:
    report = await build(db, filters(), world.staff["admin"], ring=ring)
    [comments] = [t for t in report.tables if t.name == "comments"]
    in_period = [
        s for s in HISTORY if START <= s.resolved_at.astimezone(NY).date() <= END and s.comment
    ]
    in_period.sort(key=lambda s: s.resolved_at, reverse=True)  # newest answer first
    assert comments.rows == [
        [s.resolved_at + timedelta(hours=1, minutes=20), s.score, s.comment, world.conversations[s]]
        for s in in_period
    ]
    [event] = await comment_reads(db)
    assert event.actor == str(world.staff["admin"].actor)
    assert event.detail["comments"] == 4
    assert set(event.detail["conversations"]) == {str(world.conversations[s]) for s in in_period}
    # The API's body: dates as ISO text, ids as strings.
    body = json.loads(json.dumps(report.as_json()))
    assert body["tables"][2]["rows"][0][0] == comments.rows[0][0].isoformat()


async def test_a_coordinator_reads_the_comments_of_their_teams_only(
    db: Database, ring: KeyRing, world: World
) -> None:
    report = await build(db, filters(), world.staff["coordinator"], ring=ring)
    close(report.figures, recount(HISTORY, START, END))  # figures: every team
    [comments] = [t for t in report.tables if t.name == "comments"]
    assert sorted(r[2] for r in comments.rows) == ["great", "kind and quick", "waited two days"]


async def test_agents_see_their_own_figures_and_no_comments(
    db: Database, ring: KeyRing, world: World
) -> None:
    ben = world.staff["ben"]
    # Asking for another person's figures still gives their own.
    report = await build(db, filters(agent_id=world.staff["ann"].staff_id), ben, ring=ring)
    close(report.figures, recount(HISTORY, START, END, agent="ben"))
    assert [t.name for t in report.tables] == ["by_team", "by_agent"]
    assert await comment_reads(db) == []
    assert "comment" not in json.dumps(report.as_json()["tables"])


async def test_it_is_registered_and_says_what_the_journey_filter_does(
    db: Database, ring: KeyRing, world: World
) -> None:
    assert REPORTS["csat"][0] == "Satisfaction" and "csat" in NEEDS_RING
    report = await REPORTS["csat"][1](
        db, filters(journey_key="post_visit_follow_up"), world.staff["admin"]
    )
    assert any("journey filter does not apply" in n for n in report.notes)
    # Without the key ring, comments cannot be opened: the table is left out, said in a note.
    assert "comments" not in [t.name for t in report.tables]
    assert any("without the key ring" in n for n in report.notes)
