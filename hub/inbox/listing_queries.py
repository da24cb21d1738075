"""The inbox list's SQL: one statement for a page's rows with everything a row shows and the
list's unread count, one for the tags (and the unread count apart for an empty page).
Callers own the session and the transaction.

A page was eight round trips (page, last messages, read markers, assignee names, patients,
row tags, the clinic's tags, the unread count); each one costs a network hop and a turn of
the event loop whatever its plan, so the rows' own data now comes joined to the page."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Integer,
    String,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from hub.db import Sealed, UTCDateTime
from hub.enums import Channel, ConversationStatus, Direction, Priority
from hub.inbox.models import (
    Conversation,
    Message,
    Patient,
    ReadMarker,
    StaffUser,
    Tag,
    conversation_tag,
)

BEFORE_EVERYTHING = datetime(1970, 1, 1, tzinfo=UTC)
"""Stands for "no staff reply yet" when looking for messages after the last one."""


@dataclass(frozen=True, slots=True)
class ListedConversation:
    """What a row shows of its conversation, read as columns: a whole ORM object per row cost
    more than the rest of the row (about 0.1 ms each, three per row)."""

    id: uuid.UUID
    status: ConversationStatus
    priority: Priority
    channel: Channel
    team_id: uuid.UUID | None
    assignee_id: uuid.UUID | None
    last_activity_at: datetime
    first_response_due_at: datetime | None
    first_responded_at: datetime | None
    last_inbound_at: datetime | None


@dataclass(frozen=True, slots=True)
class ListedPatient(Sealed):
    """The row's patient, sealed values still sealed (opened like the model's)."""

    __tablename__ = Patient.__tablename__

    id: uuid.UUID
    name_enc: bytes | None
    phone_enc: bytes | None
    verified: bool


@dataclass(frozen=True, slots=True)
class ListedPreview(Sealed):
    """The message a row previews, its body still sealed."""

    __tablename__ = Message.__tablename__

    id: uuid.UUID
    direction: Direction
    body_enc: bytes | None
    created_at: datetime
    sender_verified: bool | None
    sender_check: str | None


@dataclass(frozen=True)
class ListedRow:
    """A page row as read: sealed values still sealed (the caller opens only those it shows)."""

    conversation: ListedConversation
    rank: int
    patient: ListedPatient
    assignee_name: str | None
    read_at: datetime | None
    preview: ListedPreview | None
    """The patient's newest message; the newest of any kind when the patient never wrote."""
    staff_replied: bool
    """A person wrote to the patient since the previewed message (``author_id`` set)."""
    auto_replied: bool
    """The hub sent something by itself since the previewed message (after-hours and triage
    replies, journey steps, HELP answers: ``author_id`` NULL)."""
    waiting_since: datetime | None
    """The patient's oldest message after the newest staff reply (None: nothing unanswered)."""


CONVERSATION_FIELDS = fields(ListedConversation)
PATIENT_FIELDS = fields(ListedPatient)
PREVIEW_FIELDS = fields(ListedPreview)


def _columns(model: Any, cls: type) -> list[Any]:
    """``model``'s (or its alias's) columns named as ``cls``'s fields, in their order."""
    return [getattr(model, f.name) for f in fields(cls)]


def _listed_row(row: Any) -> ListedRow:
    c, p, m = len(CONVERSATION_FIELDS), len(PATIENT_FIELDS), len(PREVIEW_FIELDS)
    conversation = ListedConversation(*row[:c])
    rank = row[c]
    patient = ListedPatient(*row[c + 1 : c + 1 + p])
    assignee_name, read_at = row[c + 1 + p], row[c + 2 + p]
    at = c + 3 + p
    preview = ListedPreview(*row[at : at + m]) if row[at] is not None else None
    staff_replied, auto_replied, waiting_since = row[at + m : at + m + 3]
    return ListedRow(
        conversation,
        rank,
        patient,
        assignee_name,
        read_at,
        preview,
        staff_replied,
        auto_replied,
        waiting_since,
    )


def inbox_rank(now: datetime) -> Any:
    """0: urgent and not resolved; 1: first response overdue; 2: everything else."""
    return case(
        (
            and_(
                Conversation.priority == Priority.URGENT,
                Conversation.status != ConversationStatus.RESOLVED,
            ),
            0,
        ),
        (
            and_(
                Conversation.first_responded_at.is_(None), Conversation.first_response_due_at < now
            ),
            1,
        ),
        else_=2,
    )


def _page_ids(
    where: Sequence[Any], now: datetime, after: tuple[int, datetime, uuid.UUID] | None, limit: int
) -> Any:
    """Keyset page ordered by (rank, last activity desc, id desc), as a subquery of ids.

    The rank depends on ``now``, so no index yields this order: every conversation matching
    the filters is ranked and sorted. The page is picked from index columns alone (an
    index-only scan of the covering inbox indexes, migration 0009) and only its rows are read
    from the table; sorting whole rows read 4,000 heap pages for one agent's 8,600 active
    conversations at 1M conversations (bench/inbox_scale.py)."""
    rank = inbox_rank(now).label("rank")
    picked = select(Conversation.id, Conversation.last_activity_at, rank).where(*where)
    if after is not None:
        r, t, i = after
        rank_expr = inbox_rank(now)
        # The rank (a CASE) appears twice, not three times: it is computed for every row.
        picked = picked.where(
            or_(
                rank_expr > r,
                and_(
                    rank_expr == r,
                    or_(
                        Conversation.last_activity_at < t,
                        and_(Conversation.last_activity_at == t, Conversation.id < i),
                    ),
                ),
            )
        )
    return (
        picked.order_by(rank, Conversation.last_activity_at.desc(), Conversation.id.desc())
        .limit(limit)
        .subquery("page")
    )


UNREAD_CAP = 100
"""The list's unread count stops here (shown as "99+"): counting every unread conversation
of a large clinic read each one on every page, 5 ms of an 8,400-conversation list at 1M
conversations (bench/workspace.py), for a badge nobody reads past two digits."""


def _ranked_branches(
    where: Sequence[Any],
    statuses: Sequence[ConversationStatus],
    now: datetime,
    after: tuple[int, datetime, uuid.UUID] | None,
    limit: int,
) -> Any:
    """The same page as ``_page_ids``, read in time proportional to the page, not the list
    (PostgreSQL): one branch per status and rank, each an index scan in last-activity order
    that stops after ``limit`` rows (the rank's condition decides which index: the partial
    ones of migration 0029 for urgent and unanswered conversations), merged and cut.

    ``_page_ids`` ranks every conversation matching the filters: 8,600 of an agent's teams'
    active ones at 1M conversations, 13 ms of a page that takes 1 ms at 1k
    (bench/workspace.py). ``where`` must not hold a status condition: a status list on the
    index's first column hides its order from the planner, and every branch sorts again."""
    # Inline, not a parameter: asyncpg prepares each statement, and after five runs PostgreSQL
    # may keep one generic plan, which cannot use the partial index for "priority = $1". At 1M
    # conversations that plan took 5-6 ms where the planned one took 3 (bench/workspace.py).
    urgent = Conversation.priority == literal_column(f"'{Priority.URGENT.value}'", String)
    overdue = and_(
        Conversation.first_responded_at.is_(None), Conversation.first_response_due_at < now
    )
    # NOT overdue, spelled out: "due < now" is NULL (not false) without a deadline.
    on_time = or_(
        Conversation.first_responded_at.is_not(None),
        Conversation.first_response_due_at.is_(None),
        Conversation.first_response_due_at >= now,
    )
    branches = []
    for status in statuses:
        # inbox_rank's cases, one status at a time: a resolved conversation is never rank 0.
        ranks: dict[int, list[Any]] = (
            {1: [overdue], 2: [on_time]}
            if status is ConversationStatus.RESOLVED
            else {0: [urgent], 1: [~urgent, overdue], 2: [~urgent, on_time]}
        )
        for rank, conditions in ranks.items():
            keyset: list[Any] = []
            if after is not None:
                r, t, i = after
                if rank < r:
                    continue
                if rank == r:
                    keyset.append(
                        or_(
                            Conversation.last_activity_at < t,
                            and_(Conversation.last_activity_at == t, Conversation.id < i),
                        )
                    )
            branches.append(
                select(
                    Conversation.id,
                    Conversation.last_activity_at,
                    literal(rank, Integer).label("rank"),
                )
                .where(*where, Conversation.status == status, *conditions, *keyset)
                .order_by(Conversation.last_activity_at.desc(), Conversation.id.desc())
                .limit(limit)
            )
    if not branches:  # a cursor past the last rank
        branches.append(
            select(Conversation.id, Conversation.last_activity_at, literal(2, Integer)).where(
                false()
            )
        )
    ranked = union_all(*branches).subquery("ranked")
    return (
        select(ranked.c.id, ranked.c.last_activity_at, ranked.c.rank)
        .order_by(ranked.c.rank, ranked.c.last_activity_at.desc(), ranked.c.id.desc())
        .limit(limit)
        .subquery("page")
    )


def _unread(staff_id: uuid.UUID, where: Sequence[Any]) -> Any:
    """The number of conversations of the list with a patient message the reader has not
    opened since, up to UNREAD_CAP. Counted on its own: as a window over the page's ranking
    scan (one scan instead of two) it cost more in PostgreSQL at 1M conversations."""
    unread = (
        select(literal(1))
        .select_from(Conversation)
        .outerjoin(
            ReadMarker,
            and_(ReadMarker.conversation_id == Conversation.id, ReadMarker.staff_id == staff_id),
        )
        .where(
            *where,
            Conversation.last_inbound_at.is_not(None),
            or_(ReadMarker.read_at.is_(None), ReadMarker.read_at < Conversation.last_inbound_at),
        )
        .limit(UNREAD_CAP)
        .subquery("unread")
    )
    return select(func.count()).select_from(unread)


# The page statement's aliases of the message table, made once: each one made per request built
# a proxy of every message column again: half the function calls of a 25-row page.
PREVIEW = aliased(Message, name="preview_message")
_NEWEST_INBOUND = aliased(Message)
_NEWEST_ANY = aliased(Message)
_STAFF_REPLY = aliased(Message)
_BY_A_PERSON = aliased(Message)
_BY_THE_HUB = aliased(Message)
_WAITING = aliased(Message)


def _newest_message_id(*, inbound_only: bool) -> Any:
    """The id of the conversation's newest message (the patient's, with ``inbound_only``):
    one backward probe of ix_inbox_message_conversation_created per row of the page."""
    m = _NEWEST_INBOUND if inbound_only else _NEWEST_ANY
    stmt = select(m.id).where(m.conversation_id == Conversation.id)
    if inbound_only:
        stmt = stmt.where(m.direction == Direction.INBOUND)
    return (
        stmt.order_by(m.created_at.desc(), m.id.desc())
        .limit(1)
        .correlate(Conversation)
        .scalar_subquery()
    )


def _staff_reply_at() -> Any:
    """The newest outbound message a person wrote (``author_id`` set), looked for only where
    the conversation has had a first response: a never-answered thread is not walked from its
    newest message to its oldest for nothing (a chat invitation is no answer)."""
    m = _STAFF_REPLY
    newest = (
        select(func.max(m.created_at))
        .where(
            m.conversation_id == Conversation.id,
            m.direction == Direction.OUTBOUND,
            m.author_id.is_not(None),
        )
        .correlate(Conversation)
        .scalar_subquery()
    )
    return case((Conversation.first_responded_at.is_(None), null()), else_=newest)


def _answered_since(preview: Any, *, by_a_person: bool) -> Any:
    """Whether the clinic sent something since the previewed message (a person, or the hub by
    itself: ``author_id`` NULL), reading only the messages after it."""
    m = _BY_A_PERSON if by_a_person else _BY_THE_HUB
    authored = m.author_id.is_not(None) if by_a_person else m.author_id.is_(None)
    return (
        exists()
        .where(
            m.conversation_id == Conversation.id,
            m.created_at >= preview.created_at,
            m.direction == Direction.OUTBOUND,
            authored,
        )
        .correlate(Conversation, preview)
    )


def _waiting_since() -> Any:
    m = _WAITING
    answered = func.coalesce(_staff_reply_at(), literal(BEFORE_EVERYTHING, UTCDateTime()))
    return (
        select(func.min(m.created_at))
        .where(
            m.conversation_id == Conversation.id,
            m.direction == Direction.INBOUND,
            m.created_at > answered,
        )
        .correlate(Conversation)
        .scalar_subquery()
    )


async def inbox_rows(
    session: AsyncSession,
    staff_id: uuid.UUID,
    where: Sequence[Any],
    now: datetime,
    *,
    statuses: Sequence[ConversationStatus],
    after: tuple[int, datetime, uuid.UUID] | None,
    only: uuid.UUID | None,
    limit: int,
) -> tuple[list[ListedRow], int | None]:
    """A page of the inbox in one statement, and the unread count of the whole list filtered
    by ``where`` and ``statuses`` (None for an empty page: ask ``unread_count``). ``only``
    narrows the rows to that one conversation, never the count.
    The page's ids (see ``_page_ids``) are joined to the conversation, its patient, the
    assignee's name, the reader's read marker and the message to preview; per row, a few
    index probes of its own messages (never a scan of others')."""
    listed = [*where, Conversation.status.in_(statuses)]
    postgres = session.get_bind().dialect.name == "postgresql"
    if only is not None:
        page = _page_ids([*listed, Conversation.id == only], now, after, limit)
    elif postgres:
        page = _ranked_branches(where, statuses, now, after, limit)
    else:  # SQLite: a small clinic's list, and no index-ordered merge to gain from
        page = _page_ids(listed, now, after, limit)
    # The list's count whatever ``only`` and the cursor pick; computed once (an uncorrelated
    # subquery), it saves a round trip.
    unread = _unread(staff_id, listed).correlate(None).scalar_subquery()
    preview = PREVIEW
    inbound = _newest_message_id(inbound_only=True)
    newest = _newest_message_id(inbound_only=False)
    stmt = (
        select(
            *_columns(Conversation, ListedConversation),
            page.c.rank,
            *_columns(Patient, ListedPatient),
            StaffUser.display_name,
            ReadMarker.read_at,
            *_columns(preview, ListedPreview),
            _answered_since(preview, by_a_person=True).label("staff_replied"),
            _answered_since(preview, by_a_person=False).label("auto_replied"),
            _waiting_since().label("waiting_since"),
            unread.label("unread_total"),
        )
        .select_from(Conversation)
        .join(page, page.c.id == Conversation.id)
        .join(Patient, Patient.id == Conversation.patient_id)
        .outerjoin(StaffUser, StaffUser.id == Conversation.assignee_id)
        .outerjoin(
            ReadMarker,
            and_(ReadMarker.conversation_id == Conversation.id, ReadMarker.staff_id == staff_id),
        )
        # COALESCE stops at its first value: the newest of any kind is looked for only in a
        # conversation the patient never wrote in.
        .outerjoin(preview, preview.id == func.coalesce(inbound, newest))
        .order_by(page.c.rank, page.c.last_activity_at.desc(), page.c.id.desc())
    )
    if postgres:
        # One plan for every page, made once per connection: re-planning this statement (nine
        # branches, each weighing its indexes) cost more than running it, 1.2 ms of 2.2 at 1M
        # conversations, and planning grows with the tables. The plan does not depend on the
        # values: each branch reads its index in activity order and stops at the page's size.
        await session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
    found = (await session.execute(stmt)).all()
    return [_listed_row(row) for row in found], int(found[0][-1]) if found else None


async def tag_rows(
    session: AsyncSession, conversation_ids: Sequence[uuid.UUID], *, every_tag: bool
) -> list[tuple[Tag, uuid.UUID | None]]:
    """The tags of ``conversation_ids`` as (tag, conversation id) pairs and, with
    ``every_tag``, each of the clinic's other tags once with None (the filter's picker): one
    statement for both."""
    link = and_(
        conversation_tag.c.tag_id == Tag.id,
        conversation_tag.c.conversation_id.in_(list(conversation_ids)),
    )
    stmt = select(Tag, conversation_tag.c.conversation_id)
    if every_tag:
        stmt = stmt.outerjoin(conversation_tag, link)
    else:
        stmt = stmt.join(conversation_tag, link)
    return [(tag, cid) for tag, cid in (await session.execute(stmt)).all()]


async def unread_count(
    session: AsyncSession,
    staff_id: uuid.UUID,
    where: Sequence[Any],
    statuses: Sequence[ConversationStatus],
) -> int:
    listed = [*where, Conversation.status.in_(statuses)]
    return int(await session.scalar(_unread(staff_id, listed)) or 0)
