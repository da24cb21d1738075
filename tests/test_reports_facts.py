"""The inbox report rollups (one fact row per conversation, incoming counts per clinic-local
hour) equal a recount of the raw rows once the tick's refresh has run, and stay equal as
conversations change, move, disappear, and as a team's hours or the clinic's zone change."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select, update

from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, ConversationStatus, Direction, MessageStatus
from hub.inbox.actions import do_reply
from hub.inbox.actions.conversations import do_set_status
from hub.inbox.event_models import ConversationEvent, StatusEvent
from hub.inbox.models import Conversation, Message, Team
from hub.reports.facts_actions import do_refresh_facts, rollup_as_of
from hub.reports.models import NO_TEAM, ConversationFact, FactDirty, FactTeamDirty, InboundHour
from tests.conftest import make_staff
from tests.report_history import NY, WEEKDAYS_8_TO_17, march_history, ny, recount, seed
from tests.test_auto_replies import text_in
from tests.test_routing import make_team, without_default_teams

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


async def clinic(db: Database) -> dict[str, Any]:
    """The front desk (default team: the clinic's zone is New York), a mail team, two agents."""
    async with db.transaction() as session:
        await without_default_teams(session)
        desk = await make_team(
            session, "Front desk", is_default=True, time_zone=NY, business_hours=WEEKDAYS_8_TO_17
        )
        mail = await make_team(session, "Mail", time_zone=NY)
    ana = await make_staff(
        db, "ana.agent@demo-clinic.example.org", role="agent", teams=(desk.name,)
    )
    ben = await make_staff(
        db, "ben.agent@demo-clinic.example.org", role="agent", teams=(desk.name,)
    )
    return {"desk": desk.id, "mail": mail.id, "ana": ana, "ben": ben}


async def refresh_all(db: Database) -> None:
    for _ in range(50):
        if (await do_refresh_facts(db)).caught_up:
            return
    raise AssertionError("the refresh never caught up")


async def assert_rollups_equal_recount(db: Database, zone: str = NY) -> None:
    counted = await recount(db)
    async with db.reader() as session:
        facts = {f.conversation_id: f for f in (await session.scalars(select(ConversationFact)))}
        cells = {
            (h.day, h.hour, h.team_id, h.channel): h.count
            for h in (await session.scalars(select(InboundHour)))
        }
    assert set(facts) == set(counted)
    for cid, c in counted.items():
        f = facts[cid]
        got = (
            f.team_id, f.assignee_id, f.channel, f.opened_at, f.first_response_at,
            f.first_response_s, f.first_response_bh_s, f.resolved_at, f.resolution_s,
            f.resolution_bh_s, f.reopened, f.due_at,
            f.opened_at.astimezone(ZoneInfo(zone)).date() == f.opened_day,
        )  # fmt: skip
        want = (
            c.team_id, c.agent_id, c.channel, c.opened, c.answered, c.first_s, c.first_bh_s,
            c.resolved, c.resolution_s, c.resolution_bh_s, c.reopened, c.due, True,
        )  # fmt: skip
        assert got == want, cid
    tz = ZoneInfo(zone)
    expected: Counter[tuple[Any, ...]] = Counter()
    for c in counted.values():
        for at, channel in c.inbound:
            local = at.astimezone(tz)
            expected[(local.date(), local.hour, c.team_id or NO_TEAM, channel)] += 1
    assert cells == dict(expected)


async def test_refresh_equals_recount_and_only_changes_are_queued(db: Database) -> None:
    c = await clinic(db)
    await seed(
        db,
        march_history(c["desk"], c["mail"], c["ana"].staff_id, c["ben"].staff_id),
        c["ana"].staff_id,
    )
    async with db.reader() as session:
        queued = set(await session.scalars(select(FactDirty.conversation_id)))
    # Queued: the 11 conversations a patient or a person wrote in, not the reminder nobody
    # answered (automatic sends queue nothing).
    assert len(queued) == 11
    await refresh_all(db)
    await assert_rollups_equal_recount(db)
    async with db.reader() as session:
        assert (await session.scalar(select(FactDirty.conversation_id))) is None
        facts = (await session.scalars(select(ConversationFact))).all()
    assert len(facts) == 11  # the unanswered reminder has no facts
    # The Friday text answered on Monday waited 1.5 open hours but 63.5 clock hours (the
    # clocks went forward on Sunday).
    friday = next(f for f in facts if f.opened_at == ny(2026, 3, 6, 16, 0))
    assert (friday.first_response_bh_s, friday.first_response_s) == (5400, 63.5 * 3600)

    # An automatic send changes no fact and queues nothing; a person's reply does.
    target = friday.conversation_id
    async with db.transaction() as session:
        session.add(
            Message(
                conversation_id=target, direction=Direction.OUTBOUND, channel=Channel.SMS,
                status=MessageStatus.SENT, created_at=ny(2026, 3, 9, 8, 0),
            )
        )  # fmt: skip
    assert (await do_refresh_facts(db)).conversations == 0
    async with db.transaction() as session:
        session.add(
            Message(
                conversation_id=target, direction=Direction.OUTBOUND, channel=Channel.SMS,
                author_id=c["ben"].staff_id, status=MessageStatus.SENT,
                created_at=ny(2026, 3, 9, 8, 10),
            )
        )  # fmt: skip
    assert (await do_refresh_facts(db)).conversations == 1
    await assert_rollups_equal_recount(db)


async def test_rollups_catch_up_after_changes(db: Database) -> None:
    c = await clinic(db)
    ids = await seed(
        db,
        march_history(c["desk"], c["mail"], c["ana"].staff_id, c["ben"].staff_id),
        c["ana"].staff_id,
    )
    await refresh_all(db)
    async with db.transaction() as session:
        # Moved to the mail team and to Ben; a new message; one conversation erased.
        await session.execute(
            update(Conversation)
            .where(Conversation.id == ids[1])
            .values(team_id=c["mail"], assignee_id=c["ben"].staff_id)
        )
        session.add(
            Message(
                conversation_id=ids[2], direction=Direction.INBOUND, channel=Channel.SMS,
                status=MessageStatus.RECEIVED, created_at=ny(2026, 3, 10, 7, 30),
            )
        )  # fmt: skip
        await session.execute(delete(Conversation).where(Conversation.id == ids[0]))
    await refresh_all(db)
    await assert_rollups_equal_recount(db)

    # The front desk now opens at 09:00: every business-hours duration of its conversations is
    # recounted by the next refresh, and nothing else needs to change.
    async with db.transaction() as session:
        await session.execute(
            update(Team)
            .where(Team.id == c["desk"])
            .values(business_hours={d: [["09:00", "17:00"]] for d in WEEKDAYS_8_TO_17})
        )
    async with db.reader() as session:
        assert await session.scalar(select(FactTeamDirty.team_id)) == c["desk"]
    await refresh_all(db)
    await assert_rollups_equal_recount(db)

    # The clinic moves to London: every hourly cell and "opened" day is recounted there.
    async with db.transaction() as session:
        await session.execute(
            update(Team).where(Team.id == c["desk"]).values(time_zone="Europe/London")
        )
    await refresh_all(db)
    await assert_rollups_equal_recount(db, "Europe/London")


async def test_a_bounded_batch_and_the_lag(db: Database, set_clock: Any) -> None:
    set_clock(NOW)
    c = await clinic(db)
    await seed(
        db,
        march_history(c["desk"], c["mail"], c["ana"].staff_id, c["ben"].staff_id),
        c["ana"].staff_id,
    )
    first = await do_refresh_facts(db, batch=4)
    assert (first.conversations, first.caught_up) == (4, False)
    assert await rollup_as_of(db) is None  # never complete yet: no instant to vouch for
    while not (await do_refresh_facts(db, batch=4)).caught_up:
        pass
    caught_up = await rollup_as_of(db)
    assert caught_up is not None and abs(caught_up - NOW) < timedelta(minutes=1)
    await assert_rollups_equal_recount(db)
    # A change not yet refreshed: the lag shows the last complete refresh, not now.
    set_clock(NOW + timedelta(hours=1))
    async with db.transaction() as session:
        cid = (await session.scalars(select(Conversation.id).limit(1))).one()
        await session.execute(
            update(Conversation).where(Conversation.id == cid).values(assignee_id=None)
        )
    lagging = await rollup_as_of(db)
    assert lagging is not None and lagging < NOW + timedelta(minutes=30)
    await refresh_all(db)
    current = await rollup_as_of(db)
    assert current is not None and current > NOW + timedelta(minutes=30)


async def test_resolve_and_reopen_through_the_actions(
    db: Database, ring: KeyRing, set_clock: Any
) -> None:
    c = await clinic(db)
    ana = c["ana"]
    start = datetime(2026, 3, 9, 14, 0, tzinfo=UTC)  # Monday 10:00 in New York
    set_clock(start)
    cid = await text_in(db, ring, "Can I move my appointment?")
    async with db.transaction() as session:
        await session.execute(
            update(Conversation).where(Conversation.id == cid).values(assignee_id=ana.staff_id)
        )
    set_clock(start + timedelta(hours=1))
    await do_reply(db, ring, ana, cid, "Yes: which day suits you?")
    set_clock(start + timedelta(hours=2))
    await do_set_status(db, ana, cid, ConversationStatus.RESOLVED)
    set_clock(start + timedelta(days=2))
    assert await text_in(db, ring, "Thursday please") == cid  # reopened, not a new one
    set_clock(start + timedelta(days=2, hours=1))
    await do_set_status(db, ana, cid, ConversationStatus.RESOLVED)
    async with db.reader() as session:
        history = (
            await session.execute(
                select(ConversationEvent.kind, ConversationEvent.staff_id)
                .where(ConversationEvent.conversation_id == cid)
                .order_by(ConversationEvent.at)
            )
        ).all()
    assert [tuple(h) for h in history] == [
        (StatusEvent.RESOLVED, ana.staff_id),
        (StatusEvent.REOPENED, None),
        (StatusEvent.RESOLVED, ana.staff_id),
    ]
    await refresh_all(db)
    await assert_rollups_equal_recount(db)
    async with db.reader() as session:
        fact = await session.get(ConversationFact, cid)
    assert fact is not None and fact.reopened
    assert fact.first_response_s is not None and fact.resolution_s is not None
    assert abs(fact.first_response_s - 3600) <= 2 and abs(fact.resolution_s - 7200) <= 2
