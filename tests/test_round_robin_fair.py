"""Round-robin shares the waiting backlog fairly (issue 16): the first agent to sign in takes
their share of the night's backlog, not all of it; each later arrival takes theirs; new
conversations go to the least loaded; capacity still binds."""

from __future__ import annotations

import uuid
from datetime import timedelta

from hub.db import Database
from hub.enums import ConversationStatus
from hub.inbox.actions.assignment import (
    DEFAULT_EXPECTED_WITHIN,
    do_auto_assign,
    do_hand_out_backlog,
)
from hub.inbox.models import Conversation, StaffUser
from tests.test_assignment import NOW, assignee_of, load_of, make_conversation, make_team
from tests.test_assignment import make_staff as make_agent

YESTERDAY = NOW - timedelta(days=1)


async def agent(db: Database, team: uuid.UUID, *, signed_in=YESTERDAY, capacity: int = 20):  # type: ignore[no-untyped-def]
    staff_id = await make_agent(db, team, capacity=capacity)
    async with db.transaction() as session:
        staff = await session.get(StaffUser, staff_id)
        assert staff is not None
        staff.last_login_at = signed_in
    return staff_id


async def night_backlog(db: Database, team: uuid.UUID, count: int) -> list[uuid.UUID]:
    """``count`` conversations that came in overnight, oldest first."""
    return [
        await make_conversation(db, team, age=timedelta(hours=12 - i / 10)) for i in range(count)
    ]


async def test_agents_coming_online_in_turn_split_the_backlog(db: Database) -> None:
    team = await make_team(db)
    ana, ben, cy = [await agent(db, team) for _ in range(3)]
    backlog = await night_backlog(db, team, 9)

    first = await do_hand_out_backlog(db, ana, {ana})
    # Ana is alone for now, but Ben and Cy worked yesterday: she takes a third, the oldest.
    assert first.conversation_ids == tuple(backlog[:3])
    second = await do_hand_out_backlog(db, ben, {ana, ben})
    assert second.conversation_ids == tuple(backlog[3:6])
    third = await do_hand_out_backlog(db, cy, {ana, ben, cy})
    assert third.conversation_ids == tuple(backlog[6:])

    assert [await load_of(db, a) for a in (ana, ben, cy)] == [3, 3, 3]


async def test_two_agents_split_an_odd_backlog_and_the_first_is_topped_up_as_she_resolves(
    db: Database,
) -> None:
    team = await make_team(db)
    ana, ben = await agent(db, team), await agent(db, team)
    backlog = await night_backlog(db, team, 11)

    assert len((await do_hand_out_backlog(db, ana, {ana})).conversation_ids) == 6
    # Coming online again (a second tab) gives her nothing more while Ben is expected.
    assert (await do_hand_out_backlog(db, ana, {ana})).conversation_ids == ()
    async with db.transaction() as session:
        for finished in backlog[:2]:
            done = await session.get(Conversation, finished)
            assert done is not None
            done.status = ConversationStatus.RESOLVED
    # The teams' work is now 9: her share is 5, so one more, the oldest waiting.
    topped = await do_hand_out_backlog(db, ana, {ana})
    assert topped.conversation_ids == (backlog[6],)

    assert len((await do_hand_out_backlog(db, ben, {ana, ben})).conversation_ids) == 4
    assert [await load_of(db, a) for a in (ana, ben)] == [5, 4]
    assert [await assignee_of(db, c) for c in backlog[7:]] == [ben] * 4


async def test_a_teammate_away_longer_than_the_window_holds_nothing_back(db: Database) -> None:
    team = await make_team(db)
    ana = await agent(db, team)
    await agent(db, team, signed_in=NOW - DEFAULT_EXPECTED_WITHIN - timedelta(hours=1))
    await agent(db, team, signed_in=None)  # never signed in
    backlog = await night_backlog(db, team, 5)

    assert (await do_hand_out_backlog(db, ana, {ana})).conversation_ids == tuple(backlog)


async def test_capacity_still_binds_and_the_rest_waits(db: Database) -> None:
    team = await make_team(db)
    ana, ben = await agent(db, team, capacity=3), await agent(db, team, capacity=3)
    backlog = await night_backlog(db, team, 10)

    await do_hand_out_backlog(db, ana, {ana})
    await do_hand_out_backlog(db, ben, {ana, ben})

    assert [await load_of(db, a) for a in (ana, ben)] == [3, 3]
    assert [await assignee_of(db, c) for c in backlog[6:]] == [None] * 4


async def test_a_new_conversation_goes_to_the_least_loaded_online_agent(db: Database) -> None:
    team = await make_team(db)
    busy = await agent(db, team)
    idle = await agent(db, team)
    for _ in range(3):
        await make_conversation(db, team, assignee_id=busy)
    async with db.transaction() as session:
        # Busy was assigned longest ago, which alone would have picked her before.
        for staff_id, ago in ((busy, timedelta(hours=5)), (idle, timedelta(minutes=1))):
            staff = await session.get(StaffUser, staff_id)
            assert staff is not None
            staff.last_assigned_at = NOW - ago

    picks = [
        (await do_auto_assign(db, await make_conversation(db, team), {busy, idle})).assignee_id
        for _ in range(4)
    ]

    assert picks == [idle, idle, idle, busy]
