"""Who works on a conversation: manual assignment, claim-next, round-robin and backlog.

Every path that gives a person a conversation first locks that person's staff row (see
``hub.inbox.assignment_queries`` for the lock order), then counts their open load, so no one
ends up above ``max_open_conversations`` however many requests arrive at once. Backlog
conversations are taken with SKIP LOCKED, so concurrent claimers never get the same one.

Each action commits one transaction and returns the outbox effect ids to release after it.
"Online" is a set of staff ids the web layer computes from socket.io presence; hub/ does not
know about sockets.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from math import ceil

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, record
from hub.db import Database, utcnow
from hub.enums import ConversationStatus, Role
from hub.errors import HubError
from hub.inbox import assignment_queries as aq
from hub.inbox.actions.mentions import alert_effect
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Conversation, StaffUser
from hub.outbox import add_effect

AUTO_ASSIGN_ROLES = frozenset({Role.AGENT})
"""Who round-robin and backlog hand-out give work to. Coordinators and admins join teams to
watch them; they take work by claiming it or being assigned it."""
DEFAULT_EXPECTED_WITHIN = timedelta(days=4)
"""A teammate who signed in this recently is expected back: while they are away, the backlog
keeps their share instead of handing it all to whoever came first. Four days spans a long
weekend; someone away longer holds nothing back."""
ROUND_ROBIN_ACTOR = Actor.system("round-robin")
BACKLOG_ACTOR = Actor.system("backlog")
ASSIGNED_TOPIC = "notify:conversation:assigned"


class AssignmentRefused(HubError):
    """The assignment breaks a rule; the message says which and what to do instead.

    ``code`` is one of "inactive", "not_in_team", "at_capacity", "not_allowed".
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class AtCapacity(AssignmentRefused):
    def __init__(self, staff: StaffUser, load: int) -> None:
        super().__init__(
            f"{staff.display_name} is at capacity: {load} open conversations, limit "
            f"{staff.max_open_conversations}. Choose someone else, or an admin can assign "
            "beyond the limit.",
            code="at_capacity",
        )


@dataclass(frozen=True)
class AssignResult:
    conversation_id: uuid.UUID
    assignee_id: uuid.UUID | None
    previous_assignee_id: uuid.UUID | None
    effect_ids: tuple[uuid.UUID, ...] = ()
    freed_staff_id: uuid.UUID | None = None
    """Someone whose open load went down: hand them backlog (``do_hand_out_backlog``)."""

    @property
    def changed(self) -> bool:
        return self.assignee_id != self.previous_assignee_id


@dataclass(frozen=True)
class Claimed:
    conversation_id: uuid.UUID | None
    """None: the agent is at capacity or nothing is waiting."""
    effect_ids: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True)
class AutoAssigned:
    assignee_id: uuid.UUID | None
    """None: no online agent of the team has room; the conversation waits in the backlog."""
    effect_ids: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True)
class HandedOut:
    conversation_ids: tuple[uuid.UUID, ...] = ()
    effect_ids: tuple[uuid.UUID, ...] = ()


def _assigned_effect(session: AsyncSession, conversation: Conversation) -> uuid.UUID:
    return add_effect(
        session,
        ASSIGNED_TOPIC,
        {
            "conversation_id": str(conversation.id),
            "team_id": str(conversation.team_id) if conversation.team_id else None,
            "assignee_id": str(conversation.assignee_id) if conversation.assignee_id else None,
        },
    ).id


async def _give(
    session: AsyncSession,
    conversation: Conversation,
    staff: StaffUser,
    actor: Actor,
    now: datetime,
) -> uuid.UUID:
    """Assign inside the caller's transaction; the staff row must already be locked."""
    previous = conversation.assignee_id
    conversation.assignee_id = staff.id
    conversation.assigned_at = now
    staff.last_assigned_at = now
    effect = _assigned_effect(session, conversation)
    detail = {"assignee": str(staff.id), "previous": str(previous) if previous else None}
    await record(session, actor, "conversation.assign", "conversation", conversation.id, detail)
    return effect


async def _is_admin(session: AsyncSession, actor: Actor) -> bool:
    if actor.kind != "staff":
        return False
    person = await aq.get_staff(session, uuid.UUID(actor.id))
    return person is not None and person.active and person.role is Role.ADMIN


async def _check_assignable(
    session: AsyncSession, conversation: Conversation, staff: StaffUser
) -> None:
    if not staff.active:
        raise AssignmentRefused(
            f"{staff.display_name} is deactivated; choose an active colleague.", code="inactive"
        )
    if conversation.team_id is not None and not await aq.is_team_member(
        session, conversation.team_id, staff.id
    ):
        raise AssignmentRefused(
            f"{staff.display_name} is not in this conversation's team; add them to the team "
            "or move the conversation first.",
            code="not_in_team",
        )


async def do_assign(
    db: Database,
    actor: Actor,
    conversation_id: uuid.UUID,
    staff_id: uuid.UUID | None,
    *,
    override_capacity: bool = False,
) -> AssignResult:
    """A person assigns a conversation to a team member, or unassigns it (``staff_id=None``).

    Assigning to the current assignee changes nothing. Capacity is checked only when the
    conversation counts toward load (open or pending); an admin may pass
    ``override_capacity=True`` to go beyond the limit, e.g. to hand a patient to the one
    colleague who knows them.
    """
    async with db.transaction() as session:
        conversation = await aq.conversation_for_update(session, conversation_id)
        if conversation is None:
            raise NotFound(f"no conversation with id {conversation_id}")
        previous = conversation.assignee_id
        if staff_id == previous:
            return AssignResult(conversation_id, previous, previous)
        frees = previous if conversation.status in aq.LOAD_STATUSES else None
        if staff_id is None:
            conversation.assignee_id = None
            conversation.assigned_at = None
            effect = _assigned_effect(session, conversation)
            await record(
                session,
                actor,
                "conversation.unassign",
                "conversation",
                conversation_id,
                {"previous": str(previous)},
            )
            return AssignResult(conversation_id, None, previous, (effect,), frees)
        staff = await aq.staff_for_update(session, staff_id)
        if staff is None:
            raise NotFound(f"no staff user with id {staff_id}")
        await _check_assignable(session, conversation, staff)
        if conversation.status in aq.LOAD_STATUSES:
            load = await aq.open_load(session, staff.id)
            if load >= staff.max_open_conversations:
                if not override_capacity:
                    raise AtCapacity(staff, load)
                if not await _is_admin(session, actor):
                    raise AssignmentRefused(
                        f"{staff.display_name} is at capacity and only an admin may assign "
                        "beyond the limit; choose someone else.",
                        code="not_allowed",
                    )
        effects = [await _give(session, conversation, staff, actor, utcnow())]
        if actor.id != str(staff.id):  # whoever takes it themselves knows already
            effects.append(alert_effect(session, "assigned", staff.id, conversation.id))
    return AssignResult(conversation_id, staff.id, previous, tuple(effects), frees)


async def _take_backlog(
    session: AsyncSession, staff: StaffUser, at_most: int, actor: Actor
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Give a locked staff member waiting conversations of their teams, up to their room."""
    room = staff.max_open_conversations - await aq.open_load(session, staff.id)
    now = utcnow()
    taken: list[uuid.UUID] = []
    effects: list[uuid.UUID] = []
    for conversation in await aq.waiting_for(session, staff.id, now, min(room, at_most)):
        effects.append(await _give(session, conversation, staff, actor, now))
        taken.append(conversation.id)
    return taken, effects


async def do_claim_next(db: Database, staff_id: uuid.UUID) -> Claimed:
    """The person takes the next waiting conversation of their teams (urgent first, then
    overdue, then oldest). Safe to call from many requests at once: the person's own claims
    take turns on their staff row, and claimers never receive the same conversation."""
    async with db.transaction() as session:
        staff = await aq.staff_for_update(session, staff_id)
        if staff is None:
            raise NotFound(f"no staff user with id {staff_id}")
        if not staff.active:
            raise AssignmentRefused(
                f"{staff.display_name} is deactivated and cannot take conversations.",
                code="inactive",
            )
        taken, effects = await _take_backlog(session, staff, 1, Actor.staff(staff.id))
    return Claimed(taken[0] if taken else None, tuple(effects))


def _round_robin_key(staff: StaffUser) -> tuple[bool, datetime, uuid.UUID]:
    never = datetime.min.replace(tzinfo=UTC)
    return (staff.last_assigned_at is not None, staff.last_assigned_at or never, staff.id)


async def _fair_level(
    session: AsyncSession,
    team_ids: Collection[uuid.UUID],
    online_staff_ids: Collection[uuid.UUID],
    now: datetime,
) -> int:
    """The open load each agent of these teams would carry if the teams' work (what agents
    hold plus what waits) were split evenly among the agents at work or expected back.

    Automatic hand-out fills nobody above it: the first agent to sign in takes their share of
    a night's backlog, not all of it, and each later arrival takes theirs. As people resolve
    conversations they are topped up to it again, so the backlog drains in turns."""
    waiting, agents, load = await aq.share_basis(
        session, team_ids, online_staff_ids, AUTO_ASSIGN_ROLES, now - DEFAULT_EXPECTED_WITHIN
    )
    return ceil((waiting + load) / max(agents, 1))


async def do_auto_assign(
    db: Database, conversation_id: uuid.UUID, online_staff_ids: Collection[uuid.UUID]
) -> AutoAssigned:
    """Round-robin for a newly routed conversation: among the team's active, online agents
    below both their capacity and the team's fair level (``_fair_level``), the least loaded,
    then the one assigned longest ago (never assigned first; ties by id).

    Leaves the conversation alone when it is not open, already assigned, has no team, or no
    one has room; it then waits in the backlog for ``do_hand_out_backlog``/``do_claim_next``.
    """
    # Look before locking: on a busy day every online agent of the team is at capacity, and
    # each inbound message would queue on their locked rows (holding a pooled connection
    # that webhooks need) only to find no room. Skipping here leaves the conversation in the
    # backlog exactly as the locked check would; room freed a moment later is handed out by
    # do_hand_out_backlog, which runs after whatever freed it.
    async with db.reader() as session:
        seen = await session.get(Conversation, conversation_id)
        if seen is not None and (
            seen.assignee_id is not None
            or seen.team_id is None
            or seen.status is not ConversationStatus.OPEN
            or not await aq.team_has_room(
                session, seen.team_id, online_staff_ids, AUTO_ASSIGN_ROLES
            )
        ):
            return AutoAssigned(None)
    async with db.transaction() as session:
        conversation = await aq.conversation_for_update(session, conversation_id)
        if conversation is None:
            raise NotFound(f"no conversation with id {conversation_id}")
        if (
            conversation.assignee_id is not None
            or conversation.team_id is None
            or conversation.status is not ConversationStatus.OPEN
        ):
            return AutoAssigned(None)
        candidates = await aq.team_candidates_for_update(
            session, conversation.team_id, online_staff_ids, AUTO_ASSIGN_ROLES
        )
        loads = await aq.open_loads(session, [s.id for s in candidates])
        now = utcnow()
        level = await _fair_level(session, [conversation.team_id], online_staff_ids, now)
        with_room = [
            s for s in candidates if loads.get(s.id, 0) < min(s.max_open_conversations, level)
        ]
        if not with_room:
            return AutoAssigned(None)
        chosen = min(with_room, key=lambda s: (loads.get(s.id, 0), *_round_robin_key(s)))
        effect = await _give(session, conversation, chosen, ROUND_ROBIN_ACTOR, now)
    return AutoAssigned(chosen.id, (effect,))


async def do_hand_out_backlog(
    db: Database, staff_id: uuid.UUID, online_staff_ids: Collection[uuid.UUID]
) -> HandedOut:
    """Fill an online agent from their teams' backlog, in claim order, up to their capacity
    or their fair share of the teams' work, whichever is lower (``_fair_level``).

    Call it when the agent's load goes down (resolve, unassign, reassign away, snooze) or when
    they come online. Offline, inactive or non-agent staff get nothing.
    """
    if staff_id not in online_staff_ids:
        return HandedOut()
    async with db.transaction() as session:
        staff = await aq.staff_for_update(session, staff_id)
        if staff is None or not staff.active or staff.role not in AUTO_ASSIGN_ROLES:
            return HandedOut()
        level = await _fair_level(
            session, await aq.team_ids_of(session, staff.id), online_staff_ids, utcnow()
        )
        share = level - await aq.open_load(session, staff.id)
        taken, effects = await _take_backlog(session, staff, share, BACKLOG_ACTOR)
    return HandedOut(tuple(taken), tuple(effects))
