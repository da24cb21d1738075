"""The Response times and Volume reports equal a recount of the raw rows: a known week around
New York's March 2026 clock change, with business hours, reopenings, missed targets, two teams
and two agents; the previous period beside it; an agent sees only their own figures."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from hub.db import Database
from hub.enums import ConversationStatus
from hub.inbox.models import Conversation, StaffUser, Team
from hub.reports.base import ReportFilters
from hub.reports.exports import CONVERSATION_COLUMNS, conversation_rows
from hub.reports.inbox import JOURNEY_NOTE, build_responses, build_volume
from hub.reports.registry import REPORTS
from tests.conftest import make_staff
from tests.report_history import (
    NY,
    Counted,
    buckets,
    expected_responses,
    expected_volume,
    march_history,
    pct,
    period,
    recount,
    seed,
)
from tests.test_reports_facts import clinic, refresh_all

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
WEEK = (date(2026, 3, 6), date(2026, 3, 12))
BEFORE = (date(2026, 2, 27), date(2026, 3, 5))


@pytest.fixture
async def history(db: Database, set_clock: Any) -> dict[str, Any]:
    set_clock(NOW)
    c = await clinic(db)
    c["admin"] = await make_staff(db, "cora.admin@demo-clinic.example.org", role="admin")
    await seed(
        db,
        march_history(c["desk"], c["mail"], c["ana"].staff_id, c["ben"].staff_id),
        c["ana"].staff_id,
    )
    await refresh_all(db)
    c["counted"] = list((await recount(db)).values())
    return c


def week(**narrowing: Any) -> ReportFilters:
    return ReportFilters(WEEK[0], WEEK[1], NY, **narrowing)


def _group_rows(counted: list[Counted], key: Any, low: datetime, high: datetime) -> dict[Any, Any]:
    groups: dict[Any, list[Counted]] = defaultdict(list)
    for c in counted:
        if low <= c.opened < high or (c.resolved is not None and low <= c.resolved < high):
            groups[key(c)].append(c)
    rows = {}
    for name, members in groups.items():
        opened = [c for c in members if low <= c.opened < high]
        waits = [c.first_s for c in opened if c.first_s is not None]
        resolved = [c for c in members if c.resolved is not None and low <= c.resolved < high]
        rows[name] = [
            len(opened),
            len(waits),
            pct(waits, 0.5),
            pct(waits, 0.9),
            sum(c.breached(NOW) for c in opened),
            len(resolved),
            pct([c.resolution_s for c in resolved if c.resolution_s is not None], 0.5),
        ]
    return rows


def test_both_reports_are_registered() -> None:
    assert REPORTS["responses"][0] == "Response times"
    assert REPORTS["volume"][0] == "Volume and workload"


@pytest.mark.parametrize("business_hours", [False, True])
async def test_responses_equal_the_recount(
    db: Database, history: dict[str, Any], business_hours: bool
) -> None:
    report = await build_responses(db, week(business_hours=business_hours), history["admin"])
    counted = history["counted"]
    low, high = period(*WEEK, NY)
    assert report.figures == expected_responses(counted, low, high, NOW, bh=business_hours)
    plow, phigh = period(*BEFORE, NY)
    assert report.previous == expected_responses(counted, plow, phigh, NOW, bh=business_hours)
    assert report.previous["opened"] == 1 and report.figures["opened"] == 10
    (chart,) = report.series
    assert chart.values == buckets(counted, low, high, bh=business_hours)
    assert set(report.figures) <= set(report.labels)
    assert report.as_of is not None and abs(report.as_of - NOW) < timedelta(minutes=1)
    if not business_hours:
        tables = {t.name: {row[0]: row[1:] for row in t.rows} for t in report.tables}
        names: dict[Any, str] = {}
        async with db.reader() as session:
            for team in (await session.scalars(select(Team))).all():
                names[team.id] = team.name
            staff = {s.id: s.display_name for s in (await session.scalars(select(StaffUser)))}
        assert set(tables) == {"by_channel", "by_team", "by_agent"}, [t.name for t in report.tables]
        assert tables["by_channel"] == _group_rows(counted, lambda c: c.channel, low, high)
        assert tables["by_team"] == _group_rows(
            counted, lambda c: names[c.team_id] if c.team_id else "No team", low, high
        )
        assert tables["by_agent"] == _group_rows(
            counted, lambda c: staff[c.agent_id] if c.agent_id else "Unassigned", low, high
        )


async def test_the_business_hours_switch_changes_the_waits(
    db: Database, history: dict[str, Any]
) -> None:
    clock = await build_responses(db, week(), history["admin"])
    open_hours = await build_responses(db, week(business_hours=True), history["admin"])
    # The Friday text answered on Monday: 63.5 hours on the clock (shown as 2 d 15 h: the
    # report gives it to the hour beyond a day), 1.5 open hours.
    assert clock.figures["first_response_p90"] == 63 * 3600
    assert open_hours.figures["first_response_p90"] != clock.figures["first_response_p90"]
    assert any("open hours" in note for note in open_hours.notes)


async def test_team_and_channel_narrow_every_figure(db: Database, history: dict[str, Any]) -> None:
    counted = [
        c for c in history["counted"] if c.team_id == history["mail"] and c.channel == "email"
    ]
    report = await build_responses(
        db, week(team_id=history["mail"], channel="email"), history["admin"]
    )
    low, high = period(*WEEK, NY)
    assert report.figures == expected_responses(counted, low, high, NOW, bh=False)
    assert report.figures["opened"] == 2


async def test_an_agent_sees_only_their_own_figures(db: Database, history: dict[str, Any]) -> None:
    ana, ben = history["ana"], history["ben"]
    # Ana asks for Ben's figures: she gets her own, whatever she asked.
    report = await build_responses(db, week(agent_id=ben.staff_id), ana)
    assert report.filters.agent_id == ana.staff_id
    mine = [c for c in history["counted"] if c.agent_id == ana.staff_id]
    low, high = period(*WEEK, NY)
    assert report.figures == expected_responses(mine, low, high, NOW, bh=False)
    assert [r[0] for r in next(t for t in report.tables if t.name == "by_agent").rows] == [
        "Ana.Agent"
    ]
    volume = await build_volume(db, week(), ana)
    figures, heat = expected_volume(mine, low, high, NY)
    assert volume.figures == figures
    assert volume.series[0].values == heat
    assert [row[0] for row in volume.tables[0].rows] == ["Ana.Agent"]
    plow, phigh = period(*BEFORE, NY)
    assert volume.previous == expected_volume(mine, plow, phigh, NY)[0]
    # Her heatmap for one channel counts only the messages that came in on it.
    for channel in ("sms", "email"):
        narrowed = await build_volume(db, week(channel=channel), ana)
        only = [
            replace(c, inbound=[(at, ch) for at, ch in c.inbound if ch == channel]) for c in mine
        ]
        figures, heat = expected_volume(only, low, high, NY)
        assert narrowed.series[0].values == heat
        assert narrowed.figures["incoming_messages"] == figures["incoming_messages"]


async def test_volume_equals_the_recount(db: Database, history: dict[str, Any]) -> None:
    report = await build_volume(db, week(journey_key="reminders"), history["admin"])
    counted = history["counted"]
    low, high = period(*WEEK, NY)
    figures, heat = expected_volume(counted, low, high, NY)
    assert report.figures == figures
    assert figures["reopened"] == 1 and figures["incoming_messages"] == 13
    plow, phigh = period(*BEFORE, NY)
    assert report.previous == expected_volume(counted, plow, phigh, NY)[0]
    heatmap, line = report.series
    assert (heatmap.kind, heatmap.values, heatmap.row_labels[0]) == ("heatmap", heat, "Mon")
    days = [WEEK[0] + timedelta(days=i) for i in range(7)]
    assert line.labels == [d.isoformat() for d in days]
    assert line.values == [
        sum(
            low <= c.opened < high and c.opened.astimezone(ZoneInfo(NY)).date() == d
            for c in counted
        )
        for d in days
    ]
    assert JOURNEY_NOTE in report.notes
    async with db.reader() as session:
        conversations = (await session.scalars(select(Conversation))).all()
    open_now: dict[Any, int] = defaultdict(int)
    for c in conversations:
        if c.assignee_id and c.status is not ConversationStatus.RESOLVED:
            open_now[c.assignee_id] += 1
    resolved_by: dict[Any, int] = defaultdict(int)
    for c in counted:
        if c.agent_id and c.resolved is not None and low <= c.resolved < high:
            resolved_by[c.agent_id] += 1
    names = {history["ana"].staff_id: "Ana.Agent", history["ben"].staff_id: "Ben.Agent"}
    expected = {
        names[sid]: [open_now.get(sid, 0), resolved_by.get(sid, 0)]
        for sid in set(open_now) | set(resolved_by)
    }
    assert {row[0]: row[1:] for row in report.tables[0].rows} == expected


async def test_the_conversation_export_matches_the_report(
    db: Database, history: dict[str, Any]
) -> None:
    rows = [row async for batch in conversation_rows(db, week(), batch=3) for row in batch]
    low, high = period(*WEEK, NY)
    opened = {str(c.conversation_id): c for c in history["counted"] if low <= c.opened < high}
    assert len(rows) == len(opened) == 10
    for row in rows:
        record = dict(zip(CONVERSATION_COLUMNS, row, strict=True))
        c = opened[record["conversation_id"]]
        assert record["opened_at"] == c.opened.isoformat()
        assert record["first_response_s"] == c.first_s
        assert record["first_response_business_s"] == c.first_bh_s
        assert record["target_missed"] == c.breached(NOW)
        assert record["reopened_within_7_days"] == c.reopened
        assert record["status"] == c.status.value
    assert not {"body", "name", "patient_name", "text"} & set(CONVERSATION_COLUMNS)
    # An agent's export holds only their conversations.
    mine = [row async for batch in conversation_rows(db, week(), history["ana"]) for row in batch]
    assert {row[0] for row in mine} == {
        k for k, c in opened.items() if c.agent_id == history["ana"].staff_id
    }
