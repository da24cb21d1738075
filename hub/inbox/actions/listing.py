"""The inbox list: filters, SLA-first order, keyset pagination, unread state."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hub.audit import record
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, ConversationStatus, Priority
from hub.inbox import queries
from hub.inbox.access import StaffContext
from hub.inbox.actions.tags import (
    clinic_tags_in,
    conversation_tags_in,
    normalize_tag,
    tagged_filter,
)
from hub.inbox.models import Conversation
from hub.inbox.schemas import ConversationRow, unverified_words

DEFAULT_PAGE = 25
MAX_PAGE = 100
PREVIEW_CHARS = 90
VIEWS = ("all", "mine", "unassigned")
OPEN_STATUSES = (ConversationStatus.OPEN, ConversationStatus.PENDING)


class BadFilter(ValueError):
    pass


@dataclass(frozen=True)
class InboxFilters:
    view: str = "all"
    team_id: uuid.UUID | None = None
    status: str = "active"
    """"active" (open + pending), one status, or "any"."""
    channel: Channel | None = None
    priority: Priority | None = None
    overdue: bool = False
    tag: str | None = None
    """Only conversations with this tag (compared as tags are stored: see normalize_tag)."""

    @classmethod
    def parse(cls, q: dict[str, str]) -> InboxFilters:
        try:
            view = q.get("view") or "all"
            if view not in VIEWS:
                raise BadFilter(f"view must be one of {', '.join(VIEWS)}")
            status = q.get("status") or "active"
            if status not in ("active", "any") and status not in {
                s.value for s in ConversationStatus
            }:
                raise BadFilter("status must be active, any, open, pending, snoozed or resolved")
            return cls(
                view=view,
                team_id=uuid.UUID(q["team"]) if q.get("team") else None,
                status=status,
                channel=Channel(q["channel"]) if q.get("channel") else None,
                priority=Priority(q["priority"]) if q.get("priority") else None,
                overdue=q.get("overdue") in ("1", "true", "yes"),
                tag=normalize_tag(q["tag"]) if q.get("tag") else None,
            )
        except (ValueError, KeyError) as exc:
            if isinstance(exc, BadFilter):
                raise
            raise BadFilter(f"bad filter: {exc}") from None

    def clauses(self, ctx: StaffContext, ring: KeyRing, now: datetime) -> list[Any]:
        where: list[Any] = [ctx.visible_filter()]
        if self.view == "mine":
            where.append(Conversation.assignee_id == ctx.staff_id)
        elif self.view == "unassigned":
            where.append(Conversation.assignee_id.is_(None))
        if self.team_id is not None:
            where.append(Conversation.team_id == self.team_id)
        if self.status == "active":
            where.append(Conversation.status.in_(OPEN_STATUSES))
        elif self.status != "any":
            where.append(Conversation.status == ConversationStatus(self.status))
        if self.channel is not None:
            where.append(Conversation.channel == self.channel)
        if self.priority is not None:
            where.append(Conversation.priority == self.priority)
        if self.overdue:
            where.append(Conversation.first_responded_at.is_(None))
            where.append(Conversation.first_response_due_at < now)
        if self.tag is not None:
            where.append(tagged_filter(ring, self.tag))
        return where


def encode_cursor(rank: int, at: datetime, conversation_id: uuid.UUID) -> str:
    raw = json.dumps([rank, at.isoformat(), str(conversation_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        rank, at, cid = json.loads(raw)
        rank, at, cid = int(rank), datetime.fromisoformat(at), uuid.UUID(cid)
        # Cursors come back from the browser: one we never made must not reach the database
        # as a naive time or a rank no integer column holds (an error there is a 500).
        if at.tzinfo is None or not -(2**31) < rank < 2**31:
            raise ValueError("not a cursor this hub made")
        return rank, at.astimezone(UTC), cid
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadFilter("the page cursor is damaged; start from the first page") from exc


@dataclass(frozen=True)
class InboxPage:
    rows: list[ConversationRow]
    next_cursor: str | None
    unread: int
    now: datetime
    tag_names: tuple[str, ...] = ()
    """Every tag name at the clinic, for the filter's picker (none for a single-row render)."""


async def do_list_inbox(
    db: Database,
    ring: KeyRing,
    ctx: StaffContext,
    filters: InboxFilters,
    *,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
    only: uuid.UUID | None = None,
) -> InboxPage:
    """A page of the inbox. ``only`` renders a single row (live updates) under the same rules."""
    now = utcnow()
    limit = max(1, min(limit, MAX_PAGE))
    after = decode_cursor(cursor) if cursor else None
    where = filters.clauses(ctx, ring, now)
    if only is not None:
        where.append(Conversation.id == only)
    async with db.transaction() as session:
        page = await queries.inbox_page(session, where, now, after, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        ids = [c.id for c, _ in page]
        last = await queries.last_messages(session, ids)
        markers = await queries.read_markers(session, ctx.staff_id, ids)
        names = await queries.staff_names(session, {c.assignee_id for c, _ in page})
        patients = await queries.patients_by_id(session, {c.patient_id for c, _ in page})
        tags = await conversation_tags_in(session, ring, ids)
        tag_names = tuple(await clinic_tags_in(session, ring)) if only is None else ()
        rows = []
        for conversation, _rank in page:
            patient = patients[conversation.patient_id]
            message = last.get(conversation.id)
            body = message.unseal(ring, "body") if message is not None else None
            read_at = markers.get(conversation.id)
            rows.append(
                ConversationRow(
                    id=conversation.id,
                    patient_id=patient.id,
                    patient_name=patient.unseal(ring, "name"),
                    patient_phone=patient.unseal(ring, "phone"),
                    status=conversation.status,
                    priority=conversation.priority,
                    channel=conversation.channel,
                    team_id=conversation.team_id,
                    assignee_id=conversation.assignee_id,
                    assignee_name=names.get(conversation.assignee_id),
                    tags=tags.get(conversation.id, []),
                    last_activity_at=conversation.last_activity_at,
                    first_response_due_at=conversation.first_response_due_at,
                    first_responded_at=conversation.first_responded_at,
                    preview=(body[:PREVIEW_CHARS] + "…")
                    if body and len(body) > PREVIEW_CHARS
                    else body,
                    unread=conversation.last_inbound_at is not None
                    and (read_at is None or read_at < conversation.last_inbound_at),
                    sender_unverified=unverified_words(message) if message else None,
                )
            )
        unread = await queries.unread_count(session, ctx.staff_id, filters.clauses(ctx, ring, now))
        if rows:
            # The list shows names and message previews: a view of PHI like any other.
            await record(
                session,
                ctx.actor,
                "inbox.list",
                "conversation",
                "list",
                {"conversations": [str(i) for i in ids]},
            )
    next_cursor = None
    if more and page:
        c, r = page[-1]
        next_cursor = encode_cursor(r, c.last_activity_at, c.id)
    return InboxPage(rows, next_cursor, unread, now, tag_names)
