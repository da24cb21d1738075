"""What the staff workspace needs beyond one conversation: the handling choices it offers,
moving a conversation to another team, and the same action applied to many selected rows.

A bulk action is the single-row action applied row by row, each in its own transaction and
under the same visibility rule, so one row the person may not touch (or one that changed
meanwhile) is named in the answer and never stops or undoes the others.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub.audit import record
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import ConversationStatus
from hub.errors import HubError
from hub.inbox import workspace_queries as wq
from hub.inbox.access import StaffContext
from hub.inbox.actions.assignment import do_assign
from hub.inbox.actions.conversations import _event, do_set_status, visible_conversation
from hub.inbox.actions.tags import add_conversation_tags_in, normalize_tags
from hub.inbox.exceptions import NotFound
from hub.inbox.models import CannedResponse, StaffUser, Team
from hub.outbox import add_effect

DEFAULT_BULK_LIMIT = 200
"""Rows one bulk action may touch: a page of the list is 50, so four pages at most."""

BULK_ACTIONS = ("assign", "move", "tag", "resolve")


@dataclass(frozen=True)
class HandlingChoices:
    canned: Sequence[CannedResponse]
    assignable: Sequence[StaffUser]
    """Active staff of the conversation's team (everyone when it has no team)."""
    teams: Sequence[Team]
    """Teams a conversation may be moved to."""


async def do_handling_choices(
    db: Database, team_id: uuid.UUID | None, *, with_canned: bool = True
) -> HandlingChoices:
    """``with_canned=False`` for the list's bulk bar, which offers people and teams only."""
    async with db.reader() as session:
        return HandlingChoices(
            canned=await wq.canned_for_team(session, team_id) if with_canned else (),
            assignable=await wq.assignable_staff(session, team_id),
            teams=await wq.all_teams(session),
        )


async def do_visible_teams(db: Database, ctx: StaffContext) -> Sequence[Team]:
    """The teams a person may filter the list by: their own (an admin: all)."""
    async with db.reader() as session:
        return await wq.teams_for(session, None if ctx.is_admin else ctx.team_ids)


async def do_move_team(
    db: Database, ctx: StaffContext, conversation_id: uuid.UUID, team_id: uuid.UUID
) -> tuple[uuid.UUID, ...]:
    """Hand a conversation to another team's queue.

    The assignee stays only if they are a member of the new team; otherwise the conversation
    waits unassigned in that team's queue. Both teams' lists hear of it: the old one drops the
    row, the new one shows it.
    """
    async with db.transaction() as session:
        conversation = await visible_conversation(session, ctx, conversation_id, lock=True)
        team = await session.get(Team, team_id)
        if team is None:
            raise NotFound("that team no longer exists")
        old_team = conversation.team_id
        if old_team == team.id:
            return ()
        conversation.team_id = team.id
        if conversation.assignee_id is not None and not await wq.is_member(
            session, conversation.assignee_id, team.id
        ):
            conversation.assignee_id = None
            conversation.assigned_at = None
        effects = [
            add_effect(session, "notify:conversation:updated", _event(conversation, moved=True))
        ]
        if old_team is not None:
            event = {**_event(conversation, moved=True), "team_id": str(old_team)}
            effects.append(add_effect(session, "notify:conversation:updated", event))
        await record(
            session,
            ctx.actor,
            "conversation.team",
            "conversation",
            conversation_id,
            {"from": str(old_team) if old_team else None, "to": str(team.id)},
        )
    return tuple(e.id for e in effects)


async def do_add_tags(
    db: Database, ring: KeyRing, ctx: StaffContext, conversation_id: uuid.UUID, tags: list[str]
) -> tuple[uuid.UUID, ...]:
    """Add tags, keeping the ones already there (a bulk tag must not wipe a row's own)."""
    names = normalize_tags(tags)
    if not names:
        raise ValueError("type a tag to add")
    async with db.transaction() as session:
        conversation = await visible_conversation(session, ctx, conversation_id, lock=True)
        await add_conversation_tags_in(session, ring, conversation.id, names)
        effect = add_effect(
            session, "notify:conversation:updated", _event(conversation, tags_changed=True)
        )
        await record(session, ctx.actor, "conversation.tags", "conversation", conversation_id)
    return (effect.id,)


@dataclass
class BulkResult:
    done: list[uuid.UUID] = field(default_factory=list)
    refused: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    """(conversation, why) for each row left as it was."""
    effect_ids: list[uuid.UUID] = field(default_factory=list)
    freed_staff: set[uuid.UUID] = field(default_factory=set)

    def summary(self, verb: str) -> str:
        text = f"{verb} {len(self.done)} conversation{'s' if len(self.done) != 1 else ''}."
        if self.refused:
            reasons = sorted({why for _, why in self.refused})
            text += f" {len(self.refused)} left as they were: {'; '.join(reasons)}."
        return text


async def do_bulk(
    db: Database,
    ring: KeyRing,
    ctx: StaffContext,
    action: str,
    ids: Sequence[uuid.UUID],
    *,
    staff_id: uuid.UUID | None = None,
    team_id: uuid.UUID | None = None,
    tags: Sequence[str] = (),
) -> BulkResult:
    if action not in BULK_ACTIONS:
        raise ValueError(f"unknown action; use one of {', '.join(BULK_ACTIONS)}")
    if not ids:
        raise ValueError("select at least one conversation first")
    if len(ids) > DEFAULT_BULK_LIMIT:
        raise ValueError(f"select at most {DEFAULT_BULK_LIMIT} conversations at a time")
    if action == "move" and team_id is None:
        raise ValueError("choose the team to move them to")
    if action == "tag" and not normalize_tags(list(tags)):
        raise ValueError("type a tag to add")
    result = BulkResult()
    for cid in dict.fromkeys(ids):
        try:
            if action == "assign":
                async with db.reader() as session:
                    await visible_conversation(session, ctx, cid)
                assigned = await do_assign(db, ctx.actor, cid, staff_id)
                result.effect_ids.extend(assigned.effect_ids)
                if assigned.freed_staff_id is not None:
                    result.freed_staff.add(assigned.freed_staff_id)
            elif action == "move":
                assert team_id is not None
                result.effect_ids.extend(await do_move_team(db, ctx, cid, team_id))
            elif action == "tag":
                result.effect_ids.extend(await do_add_tags(db, ring, ctx, cid, list(tags)))
            else:
                result.effect_ids.extend(
                    await do_set_status(db, ctx, cid, ConversationStatus.RESOLVED)
                )
        except NotFound:
            result.refused.append((cid, "not visible to you"))
        except (HubError, ValueError) as exc:
            result.refused.append((cid, str(exc)))
        else:
            result.done.append(cid)
    return result


def check_time_zone(name: str) -> str:
    """An IANA zone name, or a plain-words error naming what was typed."""
    name = name.strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{name!r} is not a time zone; pick one such as America/Chicago or Europe/Paris"
        ) from None
    return name


async def do_set_my_time_zone(db: Database, ctx: StaffContext, name: str) -> str:
    zone = check_time_zone(name)
    async with db.transaction() as session:
        staff = await session.get(StaffUser, ctx.staff_id)
        if staff is None:
            raise NotFound("your account no longer exists")
        staff.time_zone = zone
        await record(session, ctx.actor, "staff.time_zone", "staff", ctx.staff_id, {"zone": zone})
    return zone
