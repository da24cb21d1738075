"""Mentions: who a note names with ``@``, the person's list of them with read state, and the
email that tells someone offline that they were mentioned or given a conversation. Also what
the reply box's ``/`` offers (the canned replies of a conversation's team).

A mention is written as ``@`` and the person's display name ("@Dana Agent") or the part of
their email address before the ``@`` ("@dana.agent"), the form the staff picker inserts. Only
people who can open the conversation can be mentioned: anyone else would be sent to a page
that answers "not found".

The alert email says only that something happened and links to the conversation: no patient
name, no message text. It is sent by the worker (``worker/staff_mail.py``) after the commit,
only when the person has no live staff socket, at most once per person and conversation in
``DEFAULT_ALERT_EVERY``, and at most once per person in ``DEFAULT_ALERT_PAUSE``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import record
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.inbox import mention_queries as mq
from hub.inbox import workspace_queries as wq
from hub.inbox.access import StaffContext
from hub.inbox.denials import note_denied
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Conversation, Note
from hub.outbox import add_effect

DEFAULT_ALERT_EVERY = timedelta(minutes=15)
"""At most one alert email per person and conversation in this window: a lively thread of
notes naming someone who is away sends one email, not one per note."""
DEFAULT_ALERT_PAUSE = timedelta(minutes=1)
"""After an alert email, none to the same person about any conversation for this long: a bulk
assignment of twenty conversations sends one email, whose link leads into the hub where the
other nineteen are waiting too."""
DEFAULT_MENTION_PAGE = 50
"""Mentions listed at once (the page and the API); older ones are reached with ``before``."""
ALERT_TOPIC = "job:staff_alert"
MENTION_TOPIC = "notify:mention"
ALERT_KINDS = ("mention", "assigned")
_NAME_CHARS = frozenset("_-")


@dataclass(frozen=True)
class StaffEntry:
    """Someone who can be mentioned, as the picker shows them."""

    id: uuid.UUID
    name: str
    handle: str
    """The part of their email address before the ``@`` (``@dana.agent``)."""

    @classmethod
    def of(cls, row: tuple[uuid.UUID, str, str]) -> StaffEntry:
        staff_id, name, email = row
        return cls(staff_id, name, email.split("@", 1)[0].lower())


@dataclass(frozen=True)
class MentionView:
    note_id: uuid.UUID
    conversation_id: uuid.UUID
    author: str | None
    body: str
    created_at: datetime
    read: bool
    patient: str | None = None
    """The patient's name (None: not known yet, an unnamed number)."""

    def __repr__(self) -> str:  # the note's text and the patient's name are PHI
        return f"MentionView(note={self.note_id}, read={self.read})"


@dataclass(frozen=True)
class MentionList:
    items: list[MentionView]
    unread: int


@dataclass(frozen=True)
class AlertTarget:
    """Where the worker sends an alert: the person's work address (not PHI)."""

    email: str
    sent_at: datetime


async def _visible(
    session: AsyncSession, ctx: StaffContext, conversation_id: uuid.UUID
) -> Conversation:
    # conversations.visible_conversation's rule; that module imports this one (do_add_note).
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None or not ctx.can_see(conversation):
        if conversation is not None:
            note_denied(ctx.actor, "conversation", conversation_id)
        raise NotFound("no such conversation")
    return conversation


def _ends_name(text: str, at: int) -> bool:
    """Whether a name that ends just before ``at`` ends there (not inside a longer word)."""
    return at >= len(text) or not (text[at].isalnum() or text[at] in _NAME_CHARS)


def find_mentioned(body: str, staff: Sequence[StaffEntry]) -> list[uuid.UUID]:
    """The people a note names, in the order named, each once. At each ``@`` that does not sit
    inside a word or an email address, the longest display name or handle that follows wins:
    with a "Sam" and a "Sam Lee", "@Sam Lee" names Sam Lee only."""
    text = body.lower()
    keys = sorted(
        {(key, s.id) for s in staff for key in (s.name.strip().lower(), s.handle) if key},
        key=lambda pair: -len(pair[0]),
    )
    found: dict[uuid.UUID, None] = {}
    for at, char in enumerate(text):
        if char != "@" or (at > 0 and (text[at - 1].isalnum() or text[at - 1] in "._-")):
            continue
        rest = at + 1
        for key, staff_id in keys:
            if text.startswith(key, rest) and _ends_name(text, rest + len(key)):
                found[staff_id] = None
                break
    return list(found)


def alert_effect(
    session: AsyncSession, kind: str, staff_id: uuid.UUID, conversation_id: uuid.UUID
) -> uuid.UUID:
    """Ask the worker to email the person if they are offline (see the module docstring)."""
    assert kind in ALERT_KINDS
    return add_effect(
        session,
        ALERT_TOPIC,
        {
            "alert": f"{kind}:{staff_id}:{conversation_id}",
            "kind": kind,
            "staff_id": str(staff_id),
            "conversation_id": str(conversation_id),
        },
    ).id


async def record_mentions_in(
    session: AsyncSession,
    ctx: StaffContext,
    conversation: Conversation,
    note: Note,
    body: str,
) -> list[uuid.UUID]:
    """Inside the note's transaction (the note flushed): store who it mentions, and queue the
    live ``mention`` event and the offline alert for each. The author is never among them."""
    if "@" not in body:
        return []
    entries = [StaffEntry.of(row) for row in await mq.staff_who_see(session, conversation.team_id)]
    mentioned = [i for i in find_mentioned(body, entries) if i != ctx.staff_id]
    note.mentions = [str(i) for i in mentioned]
    mq.add_mentions(session, note, mentioned, note.created_at or utcnow())
    effects = []
    for staff_id in mentioned:
        effects.append(
            add_effect(
                session,
                MENTION_TOPIC,
                {
                    "conversation_id": str(conversation.id),
                    "note_id": str(note.id),
                    "staff_id": str(staff_id),
                    "room": f"staff:{staff_id}",
                },
            ).id
        )
        effects.append(alert_effect(session, "mention", staff_id, conversation.id))
    return effects


async def do_mention_candidates(
    db: Database, ctx: StaffContext, conversation_id: uuid.UUID
) -> list[StaffEntry]:
    """Who the ``@`` picker offers in a conversation: whoever can open it, but not oneself."""
    async with db.reader() as session:
        conversation = await _visible(session, ctx, conversation_id)
        rows = await mq.staff_who_see(session, conversation.team_id)
    return [e for e in map(StaffEntry.of, rows) if e.id != ctx.staff_id]


@dataclass(frozen=True)
class CannedChoice:
    id: uuid.UUID
    title: str


async def do_canned_choices(
    db: Database, ctx: StaffContext, conversation_id: uuid.UUID
) -> list[CannedChoice]:
    """The canned replies the reply box's ``/`` offers in a conversation: the clinic's and its
    team's own (another team's wording is theirs), by title."""
    async with db.reader() as session:
        conversation = await _visible(session, ctx, conversation_id)
        rows = await wq.canned_for_team(session, conversation.team_id)
    return [CannedChoice(r.id, r.title) for r in rows]


async def do_list_mentions(
    db: Database,
    ring: KeyRing,
    ctx: StaffContext,
    *,
    limit: int = DEFAULT_MENTION_PAGE,
    before: datetime | None = None,
    unread_only: bool = False,
) -> MentionList:
    """The notes that mention the person, newest first, in conversations they can still see,
    with the unread count. Reading the notes' text is audited like opening them."""
    async with db.transaction() as session:
        rows = await mq.mentions_of(
            session,
            ctx.staff_id,
            ctx.visible_filter(),
            limit=max(0, min(limit, DEFAULT_MENTION_PAGE)),
            before=before,
            unread_only=unread_only,
        )
        items = [
            MentionView(
                mention.note_id,
                mention.conversation_id,
                author,
                note.unseal(ring, "body") or "",
                mention.created_at,
                mention.read_at is not None,
                patient.unseal(ring, "name"),
            )
            for mention, note, author, patient in rows
        ]
        unread = await mq.unread_count(session, ctx.staff_id, ctx.visible_filter())
        if items:
            await record(
                session,
                ctx.actor,
                "mention.list",
                "staff",
                ctx.staff_id,
                {"notes": [str(i.note_id) for i in items]},
            )
    return MentionList(items, unread)


async def do_unread_mentions(db: Database, ctx: StaffContext) -> int:
    """The badge's number: no note is read for it."""
    async with db.reader() as session:
        return await mq.unread_count(session, ctx.staff_id, ctx.visible_filter())


async def do_open_mention(db: Database, ctx: StaffContext, note_id: uuid.UUID) -> uuid.UUID:
    """Mark one of the person's mentions read; the conversation to open. NotFound when the note
    does not mention them or they can no longer see its conversation."""
    async with db.transaction() as session:
        mention = await mq.mention(session, ctx.staff_id, note_id)
        if mention is None:
            raise NotFound("no such mention")
        await _visible(session, ctx, mention.conversation_id)
        await mq.mark_read(session, ctx.staff_id, utcnow(), note_ids=[note_id])
        return mention.conversation_id


async def do_mark_mentions_read(
    db: Database, ctx: StaffContext, note_ids: Iterable[uuid.UUID]
) -> int:
    """Mark these of the person's mentions read (others' are untouched); how many changed."""
    ids = list(note_ids)
    if not ids:
        return 0
    async with db.transaction() as session:
        return await mq.mark_read(session, ctx.staff_id, utcnow(), note_ids=ids)


async def mark_conversation_mentions_read_in(
    session: AsyncSession, staff_id: uuid.UUID, conversation_id: uuid.UUID, at: datetime
) -> None:
    """Opening a conversation reads every note in it, so its mentions of the reader too."""
    await mq.mark_read(session, staff_id, at, conversation_id=conversation_id)


async def do_claim_alert(
    db: Database,
    staff_id: uuid.UUID,
    conversation_id: uuid.UUID,
    *,
    now: datetime | None = None,
    every: timedelta = DEFAULT_ALERT_EVERY,
    pause: timedelta = DEFAULT_ALERT_PAUSE,
) -> AlertTarget | None:
    """For the worker, once it knows the person is offline: the address to email, or None when
    they were emailed about this conversation within ``every`` or about any within ``pause``,
    are deactivated, or can no longer see it. A claim that is not followed by a sent email is
    undone with ``do_unclaim_alert``."""
    now = now or utcnow()
    async with db.transaction() as session:
        staff = await mq.staff_for_alert(session, staff_id)
        conversation = await session.get(Conversation, conversation_id)
        if staff is None or not staff.active or conversation is None:
            return None
        if not StaffContext.of(staff).can_see(conversation):
            return None
        last = await mq.last_alert_at(session, staff_id)
        if last is not None and last > now - pause:
            return None
        if not await mq.claim_alert(session, staff_id, conversation_id, now, now - every):
            return None
        return AlertTarget(staff.email, now)


async def do_unclaim_alert(
    db: Database, staff_id: uuid.UUID, conversation_id: uuid.UUID, sent_at: datetime
) -> None:
    async with db.transaction() as session:
        await mq.unclaim_alert(session, staff_id, conversation_id, sent_at)
