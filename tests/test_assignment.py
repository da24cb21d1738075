"""Assignment: manual, claim-next, round-robin, backlog hand-out, capacity under concurrency,
and the first-response SLA order of the inbox."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from hub.audit import Actor, AuditEvent, verify
from hub.db import Database, utcnow
from hub.enums import Channel, ConversationStatus, Priority, Role
from hub.inbox.actions.assignment import (
    AssignmentRefused,
    AtCapacity,
    do_assign,
    do_auto_assign,
    do_claim_next,
    do_hand_out_backlog,
)
from hub.inbox.assignment_queries import SLA_ORDER, SlaState, inbox_order_by, sla_state
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Conversation, Patient, StaffUser, Team
from hub.outbox import OutboxEvent

NOW = utcnow()


async def make_team(db: Database, name: str | None = None) -> uuid.UUID:
    async with db.transaction() as session:
        team = Team(name=name or f"team-{uuid.uuid4().hex[:8]}")
        session.add(team)
        await session.flush()
        return team.id


async def make_staff(
    db: Database,
    *team_ids: uuid.UUID,
    capacity: int = 20,
    role: Role = Role.AGENT,
    active: bool = True,
    last_assigned_at: datetime | None = None,
    name: str = "Sam",
) -> uuid.UUID:
    async with db.transaction() as session:
        teams = [t for t in [await session.get(Team, i) for i in team_ids] if t is not None]
        staff = StaffUser(
            email=f"{uuid.uuid4().hex[:12]}@staff.clinic.example.org",
            display_name=name,
            password_hash="not-a-real-hash",
            role=role,
            active=active,
            max_open_conversations=capacity,
            last_assigned_at=last_assigned_at,
            teams=teams,
        )
        session.add(staff)
        await session.flush()
        return staff.id


async def make_conversation(
    db: Database,
    team_id: uuid.UUID | None,
    *,
    age: timedelta = timedelta(minutes=10),
    priority: Priority = Priority.NORMAL,
    due_in: timedelta = timedelta(hours=4),
    status: ConversationStatus = ConversationStatus.OPEN,
    assignee_id: uuid.UUID | None = None,
    responded: bool = False,
    idle: timedelta | None = None,
) -> uuid.UUID:
    async with db.transaction() as session:
        patient = Patient(verified=True)
        session.add(patient)
        await session.flush()
        conversation = Conversation(
            patient_id=patient.id,
            team_id=team_id,
            channel=Channel.SMS,
            status=status,
            priority=priority,
            assignee_id=assignee_id,
            created_at=NOW - age,
            last_activity_at=NOW - (age if idle is None else idle),
            first_response_due_at=NOW + due_in,
            first_responded_at=NOW if responded else None,
        )
        session.add(conversation)
        await session.flush()
        return conversation.id


async def assignee_of(db: Database, conversation_id: uuid.UUID) -> uuid.UUID | None:
    async with db.reader() as session:
        conversation = await session.get(Conversation, conversation_id)
        assert conversation is not None
        return conversation.assignee_id


async def load_of(db: Database, staff_id: uuid.UUID) -> int:
    async with db.reader() as session:
        stmt = select(func.count()).where(
            Conversation.assignee_id == staff_id,
            Conversation.status.in_([ConversationStatus.OPEN, ConversationStatus.PENDING]),
        )
        return int(await session.scalar(stmt) or 0)


# --- manual assignment ----------------------------------------------------------------------


async def test_assign_sets_assignee_audits_and_notifies(db: Database) -> None:
    team = await make_team(db)
    agent = await make_staff(db, team)
    coordinator = await make_staff(db, team, role=Role.COORDINATOR)
    conversation = await make_conversation(db, team)

    result = await do_assign(db, Actor.staff(coordinator), conversation, agent)

    assert (result.assignee_id, result.previous_assignee_id, result.changed) == (agent, None, True)
    async with db.reader() as session:
        conv = await session.get(Conversation, conversation)
        staff = await session.get(StaffUser, agent)
        assert conv is not None and staff is not None
        assert conv.assignee_id == agent
        assert conv.assigned_at is not None and conv.assigned_at == staff.last_assigned_at
        audit = (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.subject_id == str(conversation))
            )
        ).all()
        assert [(a.action, a.actor) for a in audit] == [
            ("conversation.assign", f"staff:{coordinator}")
        ]
        effect_id, alert_id = result.effect_ids
        alert = await session.get(OutboxEvent, alert_id)
        # The agent is emailed a link if they are offline (test_mentions_mail.py).
        assert alert is not None and alert.topic == "job:staff_alert"
        effect = await session.get(OutboxEvent, effect_id)
        assert effect is not None
        assert effect.topic == "notify:conversation:assigned"
        assert effect.payload == {
            "conversation_id": str(conversation),
            "team_id": str(team),
            "assignee_id": str(agent),
        }
    again = await do_assign(db, Actor.staff(coordinator), conversation, agent)
    assert not again.changed and again.effect_ids == ()


async def test_assign_refuses_inactive_and_other_team_staff(db: Database) -> None:
    team, other_team = await make_team(db), await make_team(db)
    admin = await make_staff(db, role=Role.ADMIN)
    inactive = await make_staff(db, team, active=False, name="Dana")
    outsider = await make_staff(db, other_team, name="Lee")
    conversation = await make_conversation(db, team)

    with pytest.raises(AssignmentRefused, match="Dana is deactivated") as refused:
        await do_assign(db, Actor.staff(admin), conversation, inactive)
    assert refused.value.code == "inactive"
    with pytest.raises(AssignmentRefused, match="Lee is not in this conversation's team") as r:
        await do_assign(db, Actor.staff(admin), conversation, outsider)
    assert r.value.code == "not_in_team"
    with pytest.raises(NotFound):
        await do_assign(db, Actor.staff(admin), conversation, uuid.uuid4())
    with pytest.raises(NotFound):
        await do_assign(db, Actor.staff(admin), uuid.uuid4(), outsider)
    assert await assignee_of(db, conversation) is None

    # A conversation without a team may go to any active staff member.
    teamless = await make_conversation(db, None)
    assert (await do_assign(db, Actor.staff(admin), teamless, outsider)).assignee_id == outsider


async def test_capacity_is_enforced_and_only_an_admin_overrides_it(db: Database) -> None:
    team = await make_team(db)
    agent = await make_staff(db, team, capacity=2, name="Kim")
    colleague = await make_staff(db, team)
    admin = await make_staff(db, role=Role.ADMIN)
    first, second, third = [await make_conversation(db, team) for _ in range(3)]
    # Resolved and snoozed conversations do not count toward the load.
    await make_conversation(db, team, status=ConversationStatus.RESOLVED, assignee_id=agent)
    await make_conversation(db, team, status=ConversationStatus.SNOOZED, assignee_id=agent)

    await do_assign(db, Actor.staff(colleague), first, agent)
    await do_assign(db, Actor.staff(colleague), second, agent)
    with pytest.raises(AtCapacity, match=r"Kim is at capacity: 2 open conversations, limit 2"):
        await do_assign(db, Actor.staff(colleague), third, agent)
    with pytest.raises(AssignmentRefused, match="only an admin") as refused:
        await do_assign(db, Actor.staff(colleague), third, agent, override_capacity=True)
    assert refused.value.code == "not_allowed"
    assert await assignee_of(db, third) is None

    result = await do_assign(db, Actor.staff(admin), third, agent, override_capacity=True)
    assert result.assignee_id == agent
    assert await load_of(db, agent) == 3


async def test_unassign_frees_capacity(db: Database) -> None:
    team = await make_team(db)
    agent = await make_staff(db, team, capacity=1)
    lead = await make_staff(db, team, role=Role.COORDINATOR)
    first, second = await make_conversation(db, team), await make_conversation(db, team)
    await do_assign(db, Actor.staff(lead), first, agent)
    with pytest.raises(AtCapacity):
        await do_assign(db, Actor.staff(lead), second, agent)

    unassigned = await do_assign(db, Actor.staff(lead), first, None)

    assert (unassigned.assignee_id, unassigned.freed_staff_id) == (None, agent)
    async with db.reader() as session:
        (effect_id,) = unassigned.effect_ids
        effect = await session.get(OutboxEvent, effect_id)
        assert effect is not None and effect.payload["assignee_id"] is None
    assert (await do_assign(db, Actor.staff(lead), second, agent)).assignee_id == agent


# --- round-robin, claim-next and backlog ----------------------------------------------------


async def test_round_robin_picks_the_online_agent_assigned_longest_ago(db: Database) -> None:
    team, other_team = await make_team(db), await make_team(db)
    hour = timedelta(hours=1)
    recent = await make_staff(db, team, last_assigned_at=NOW - hour)
    oldest = await make_staff(db, team, last_assigned_at=NOW - 5 * hour)
    offline = await make_staff(db, team)
    full = await make_staff(db, team, capacity=1)
    await make_conversation(db, team, assignee_id=full)
    inactive = await make_staff(db, team, active=False)
    coordinator = await make_staff(db, team, role=Role.COORDINATOR)
    elsewhere = await make_staff(db, other_team)
    online = {recent, oldest, full, inactive, coordinator, elsewhere}

    picks = [
        (await do_auto_assign(db, await make_conversation(db, team), online)).assignee_id
        for _ in range(4)
    ]

    assert picks == [oldest, recent, oldest, recent]
    assert offline not in picks


async def test_round_robin_prefers_never_assigned_and_leaves_backlog_when_full(
    db: Database,
) -> None:
    team = await make_team(db)
    veteran = await make_staff(db, team, capacity=1, last_assigned_at=NOW - timedelta(days=9))
    newcomer = await make_staff(db, team, capacity=1)
    first, second, third = [await make_conversation(db, team) for _ in range(3)]
    online = {veteran, newcomer}

    assert (await do_auto_assign(db, first, online)).assignee_id == newcomer
    assert (await do_auto_assign(db, second, online)).assignee_id == veteran
    nobody = await do_auto_assign(db, third, online)
    assert (nobody.assignee_id, nobody.effect_ids) == (None, ())
    assert await assignee_of(db, third) is None
    # Already assigned conversations are left as they are.
    assert (await do_auto_assign(db, first, online)).assignee_id is None
    assert await assignee_of(db, first) == newcomer


async def test_backlog_is_handed_out_urgent_overdue_then_oldest_up_to_capacity(
    db: Database,
) -> None:
    team, other_team = await make_team(db), await make_team(db)
    agent = await make_staff(db, team, capacity=4)
    await make_conversation(db, team, assignee_id=agent)
    oldest = await make_conversation(db, team, age=timedelta(hours=3))
    older = await make_conversation(db, team, age=timedelta(hours=2))
    overdue = await make_conversation(db, team, age=timedelta(minutes=5), due_in=-timedelta(1))
    urgent = await make_conversation(db, team, age=timedelta(minutes=1), priority=Priority.URGENT)
    await make_conversation(db, other_team, age=timedelta(days=1))
    await make_conversation(db, team, age=timedelta(days=1), status=ConversationStatus.SNOOZED)

    assert (await do_hand_out_backlog(db, agent, set())).conversation_ids == ()
    handed = await do_hand_out_backlog(db, agent, {agent})

    assert handed.conversation_ids == (urgent, overdue, oldest)
    assert len(handed.effect_ids) == 3
    assert await assignee_of(db, older) is None
    assert await load_of(db, agent) == 4
    assert (await do_hand_out_backlog(db, agent, {agent})).conversation_ids == ()


async def test_claim_next_takes_the_oldest_waiting_until_capacity(db: Database) -> None:
    team = await make_team(db)
    agent = await make_staff(db, team, capacity=2)
    old = await make_conversation(db, team, age=timedelta(hours=2))
    new = await make_conversation(db, team, age=timedelta(minutes=2))
    newest = await make_conversation(db, team, age=timedelta(minutes=1))

    assert (await do_claim_next(db, agent)).conversation_id == old
    assert (await do_claim_next(db, agent)).conversation_id == new
    at_capacity = await do_claim_next(db, agent)
    assert (at_capacity.conversation_id, at_capacity.effect_ids) == (None, ())
    assert await assignee_of(db, newest) is None

    other = await make_staff(db, team)
    assert (await do_claim_next(db, other)).conversation_id == newest
    assert (await do_claim_next(db, other)).conversation_id is None
    async with db.reader() as session:
        actors = (
            await session.scalars(
                select(AuditEvent.actor).where(AuditEvent.subject_id == str(newest))
            )
        ).all()
    assert actors == [f"staff:{other}"]
    with pytest.raises(AssignmentRefused, match="deactivated"):
        await do_claim_next(db, await make_staff(db, team, active=False))


# --- concurrency (committed database, real transactions) ------------------------------------


async def assignments_per_conversation(db: Database) -> Counter[str]:
    async with db.reader() as session:
        rows = await session.execute(
            select(AuditEvent.subject_id, func.count())
            .where(AuditEvent.action == "conversation.assign")
            .group_by(AuditEvent.subject_id)
        )
        return Counter({subject: int(n) for subject, n in rows.all()})


async def test_50_concurrent_claimers_on_20_conversations(committed_db: Database) -> None:
    """On PostgreSQL these are up to 20 simultaneous transactions (the pool); with the row
    locks taken out, claimers share conversations and agents go far above capacity."""
    db = committed_db
    team = await make_team(db)
    agents = [await make_staff(db, team, capacity=2) for _ in range(10)]
    conversations = [
        await make_conversation(db, team, age=timedelta(minutes=60 - i)) for i in range(20)
    ]

    claims = await asyncio.wait_for(
        asyncio.gather(*(do_claim_next(db, agents[i % len(agents)]) for i in range(50))),
        timeout=60,
    )

    claimed = [c.conversation_id for c in claims if c.conversation_id is not None]
    assert len(claimed) == len(set(claimed)) == min(20, 2 * len(agents))
    assert set(claimed) == set(conversations)
    async with db.reader() as session:
        rows = (await session.execute(select(Conversation.id, Conversation.assignee_id))).all()
        assert all(assignee is not None for _, assignee in rows)
        per_agent = Counter(assignee for _, assignee in rows)
        result = await verify(session)
        assert (result.ok, result.checked) == (True, len(claimed))
    assert per_agent == dict.fromkeys(agents, 2)
    assert await assignments_per_conversation(db) == Counter({str(c): 1 for c in conversations})


async def test_20_concurrent_auto_assigns_fill_4_agents_evenly(committed_db: Database) -> None:
    db = committed_db
    team = await make_team(db)
    agents = [await make_staff(db, team, capacity=5) for _ in range(4)]
    offline = await make_staff(db, team, capacity=5)
    conversations = [await make_conversation(db, team) for _ in range(20)]
    online = set(agents)

    results = await asyncio.wait_for(
        asyncio.gather(*(do_auto_assign(db, c, online) for c in conversations)), timeout=60
    )

    assert Counter(r.assignee_id for r in results) == dict.fromkeys(agents, 5)
    assert await load_of(db, offline) == 0
    assert await assignments_per_conversation(db) == Counter({str(c): 1 for c in conversations})


async def test_concurrent_manual_assigns_never_push_an_agent_over_capacity(
    committed_db: Database,
) -> None:
    db = committed_db
    team = await make_team(db)
    agent = await make_staff(db, team, capacity=3)
    lead = await make_staff(db, team, role=Role.COORDINATOR)
    conversations = [await make_conversation(db, team) for _ in range(10)]

    outcomes = await asyncio.wait_for(
        asyncio.gather(
            *(do_assign(db, Actor.staff(lead), c, agent) for c in conversations),
            return_exceptions=True,
        ),
        timeout=60,
    )

    refusals = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(o, AtCapacity) for o in refusals), refusals
    assert len(refusals) == 7
    assert await load_of(db, agent) == 3


async def test_mixed_concurrent_assignment_paths_keep_capacity(committed_db: Database) -> None:
    """Claims, round-robin, backlog hand-out and manual assigns at once: no deadlock, no
    conversation given out twice, every agent filled exactly to capacity."""
    db = committed_db
    team = await make_team(db)
    agents = [await make_staff(db, team, capacity=3) for _ in range(5)]
    lead = await make_staff(db, team, role=Role.COORDINATOR)
    backlog = [await make_conversation(db, team) for _ in range(30)]
    # Team-less conversations are reachable only by manual assignment, yet count as load.
    direct = [await make_conversation(db, None) for _ in range(6)]
    online = set(agents)
    calls: list[Coroutine[Any, Any, object]] = []
    for i, conversation in enumerate(backlog):
        agent = agents[i % len(agents)]
        calls.append(do_auto_assign(db, conversation, online))
        calls.append(do_claim_next(db, agent))
        if i % 3 == 0:
            calls.append(do_hand_out_backlog(db, agent, online))
        if i < len(direct):
            calls.append(do_assign(db, Actor.staff(lead), direct[i], agent))

    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout=90)

    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(e, AtCapacity) for e in errors), errors
    assert [await load_of(db, agent) for agent in agents] == [3] * len(agents)
    assigned = await assignments_per_conversation(db)
    assert set(assigned.values()) == {1}
    assert len(assigned) == 3 * len(agents)
    assert sum(1 for c in direct if str(c) in assigned) == len(direct) - len(errors)


# --- SLA ------------------------------------------------------------------------------------


def test_sla_state_flags_overdue_due_soon_ok_and_met() -> None:
    def conv(**kw: object) -> Conversation:
        defaults: dict[str, object] = {
            "status": ConversationStatus.OPEN,
            "first_response_due_at": NOW + timedelta(hours=2),
            "first_responded_at": None,
        }
        return Conversation(**{**defaults, **kw})

    assert sla_state(conv(first_response_due_at=NOW - timedelta(1)), NOW) is SlaState.OVERDUE
    soon = conv(first_response_due_at=NOW + timedelta(minutes=10))
    assert sla_state(soon, NOW) == "due_soon"
    assert sla_state(conv(), NOW) is SlaState.OK
    late_but_answered = conv(first_response_due_at=NOW - timedelta(1), first_responded_at=NOW)
    assert sla_state(late_but_answered, NOW) is SlaState.MET
    closed = conv(first_response_due_at=NOW - timedelta(1), status=ConversationStatus.RESOLVED)
    assert sla_state(closed, NOW) is SlaState.OK
    assert sla_state(conv(first_response_due_at=None), NOW) is SlaState.OK


async def test_inbox_sorts_urgent_then_overdue_then_recent_activity(db: Database) -> None:
    team = await make_team(db)
    minute = timedelta(minutes=1)
    quiet = await make_conversation(db, team, idle=30 * minute)
    busy = await make_conversation(db, team, idle=minute)
    overdue = await make_conversation(db, team, idle=50 * minute, due_in=-5 * minute)
    answered_late = await make_conversation(
        db, team, idle=2 * minute, due_in=-5 * minute, responded=True
    )
    urgent = await make_conversation(db, team, idle=90 * minute, priority=Priority.URGENT)
    expected = [urgent, overdue, busy, answered_late, quiet]

    async with db.reader() as session:
        base = select(Conversation.id).where(Conversation.team_id == team)
        by_app_clock = (await session.scalars(base.order_by(*inbox_order_by(NOW)))).all()
        by_db_clock = (await session.scalars(base.order_by(*SLA_ORDER))).all()

    assert list(by_app_clock) == expected
    assert list(by_db_clock) == expected
