"""The inbox list: filters, SLA-first order, keyset pagination, unread state, and what each
row shows (the patient's newest message, whether only the hub answered it, how long the
patient has waited, the first-response deadline)."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import record
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, ConversationStatus, Direction, Priority
from hub.inbox import listing_queries
from hub.inbox.access import StaffContext
from hub.inbox.actions.tags import normalize_tag, tagged_filter
from hub.inbox.models import Conversation
from hub.inbox.schemas import ConversationRow, unverified_reason

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

    def statuses(self) -> tuple[ConversationStatus, ...]:
        if self.status == "active":
            return OPEN_STATUSES
        if self.status == "any":
            return tuple(ConversationStatus)
        return (ConversationStatus(self.status),)

    def clauses(self, ctx: StaffContext, ring: KeyRing, now: datetime) -> list[Any]:
        """Every condition but the status (``statuses``): the list reads each status apart."""
        where: list[Any] = [ctx.visible_filter()]
        if self.view == "mine":
            where.append(Conversation.assignee_id == ctx.staff_id)
        elif self.view == "unassigned":
            where.append(Conversation.assignee_id.is_(None))
        if self.team_id is not None:
            where.append(Conversation.team_id == self.team_id)
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

    @property
    def unread_more(self) -> bool:
        """The count stopped at its cap: there are at least that many, maybe more."""
        return self.unread >= listing_queries.UNREAD_CAP

    @property
    def unread_label(self) -> str:
        """The badge's words: "" for none, "99+" once the count reaches its cap."""
        if self.unread_more:
            return f"{listing_queries.UNREAD_CAP - 1}+"
        return str(self.unread) if self.unread else ""


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
    """A page of the inbox. ``only`` renders a single row (live updates) under the same rules.

    Two statements (rows with the list's unread count, tags; the count apart for an empty
    page) plus the audit event; nothing is decrypted for the row fetched only to learn
    whether another page follows."""
    now = utcnow()
    limit = max(1, min(limit, MAX_PAGE))
    after = decode_cursor(cursor) if cursor else None
    where = filters.clauses(ctx, ring, now)
    async with db.transaction() as session:
        listed, unread = await listing_queries.inbox_rows(
            session,
            ctx.staff_id,
            where,
            now,
            statuses=filters.statuses(),
            after=after,
            only=only,
            limit=limit + 1,
        )
        more = len(listed) > limit
        listed = listed[:limit]
        ids = [r.conversation.id for r in listed]
        tags, tag_names = await _tags_in(session, ring, ids, picker=only is None)
        rows = [_row(ring, r, tags.get(r.conversation.id, [])) for r in listed]
        if unread is None:  # an empty page: the list may still hold unread conversations
            unread = await listing_queries.unread_count(
                session, ctx.staff_id, where, filters.statuses()
            )
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
    if more and listed:
        last = listed[-1]
        next_cursor = encode_cursor(
            last.rank, last.conversation.last_activity_at, last.conversation.id
        )
    return InboxPage(rows, next_cursor, unread, now, tag_names)


async def _tags_in(
    session: AsyncSession, ring: KeyRing, ids: list[uuid.UUID], *, picker: bool
) -> tuple[dict[uuid.UUID, list[str]], tuple[str, ...]]:
    """Each listed conversation's tags, sorted, and (with ``picker``) every tag name at the
    clinic; each name decrypted once."""
    if not ids and not picker:
        return {}, ()
    names: dict[uuid.UUID, str] = {}
    found: dict[uuid.UUID, list[str]] = {}
    for tag, conversation_id in await listing_queries.tag_rows(session, ids, every_tag=picker):
        if tag.id not in names:
            names[tag.id] = tag.unseal(ring, "name") or ""
        if conversation_id is not None:
            found.setdefault(conversation_id, []).append(names[tag.id])
    by_row = {cid: sorted(tags) for cid, tags in found.items()}
    return by_row, tuple(sorted(set(names.values()))) if picker else ()


def _row(ring: KeyRing, r: listing_queries.ListedRow, tags: list[str]) -> ConversationRow:
    conversation, patient, message = r.conversation, r.patient, r.preview
    body = message.unseal(ring, "body") if message is not None else None
    from_patient = message is None or message.direction is Direction.INBOUND
    # Automatic when the hub answered the patient's newest message and no person has since.
    answered_automatically = (
        message is not None and from_patient and bool(r.auto_replied) and not r.staff_replied
    )
    resolved = conversation.status is ConversationStatus.RESOLVED
    return ConversationRow(
        id=conversation.id,
        patient_id=patient.id,
        patient_name=patient.unseal(ring, "name"),
        patient_phone=patient.unseal(ring, "phone"),
        status=conversation.status,
        priority=conversation.priority,
        channel=conversation.channel,
        team_id=conversation.team_id,
        assignee_id=conversation.assignee_id,
        assignee_name=r.assignee_name,
        tags=tags,
        last_activity_at=conversation.last_activity_at,
        first_response_due_at=conversation.first_response_due_at,
        first_responded_at=conversation.first_responded_at,
        preview=(body[:PREVIEW_CHARS] + "…") if body and len(body) > PREVIEW_CHARS else body,
        unread=conversation.last_inbound_at is not None
        and (r.read_at is None or r.read_at < conversation.last_inbound_at),
        sender_unverified=(
            unverified_reason(message.sender_verified, message.sender_check)
            if message is not None
            else None
        ),
        preview_from_patient=from_patient,
        answered_automatically=answered_automatically,
        waiting_since=None if resolved else r.waiting_since,
        patient_verified=patient.verified,
    )
