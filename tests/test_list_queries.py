"""The inbox list in at most three statements a page (issue 16, "Quality"): rows with
everything a row shows and the list's unread count, tags with the clinic's tag names (and the
unread count apart, only for an empty page). Every filter and
the keyset cursor still narrow the list as before. The audit event the list writes (the
chain's head and the new row) is counted apart: it is the same for every view of PHI."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from hub.audit import AuditEvent
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, ConversationStatus, Direction, MessageStatus, Priority
from hub.inbox import queries
from hub.inbox.actions.listing import InboxFilters, InboxPage, do_list_inbox
from hub.inbox.actions.tags import set_conversation_tags_in
from hub.inbox.models import Conversation, Message
from tests.conftest import make_staff
from tests.test_routing import make_patient

MAX_STATEMENTS = 3
"""What a page of the list may cost, whatever the filters (it was 8)."""
WITH_ROWS = 2
"""A page that lists something: its rows carry the list's unread count too."""
AUDIT_TABLES = ("audit_head", "audit_event")
TRANSACTION_CONTROL = ("SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "COMMIT", "SET LOCAL")
"""The test's rolled-back outer transaction makes each of the hub's a savepoint; SET LOCAL is
the transaction's own setting (PostgreSQL: the list's plan is kept), no read."""


@contextmanager
def counted() -> Iterator[list[str]]:
    """Statements sent to the database meanwhile, the audit chain's own and transaction
    control left out."""
    seen: list[str] = []

    def listen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith(TRANSACTION_CONTROL):
            return
        if not any(table in statement for table in AUDIT_TABLES):
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", listen)


@dataclass
class Inbox:
    staff: Any
    nursing: uuid.UUID
    billing: uuid.UUID
    ids: dict[str, uuid.UUID]


@pytest.fixture
async def inbox(db: Database, ring: KeyRing) -> Inbox:
    """Twelve conversations of an agent's two teams, each row different in what a filter
    looks at, plus one of a team the agent is not in."""
    staff = await make_staff(
        db, "rows.agent@example.org", role="agent", teams=("Nursing", "Billing")
    )
    other = await make_staff(db, "rows.other@example.org", role="agent", teams=("Pharmacy",))
    [nursing, billing] = sorted(staff.team_ids, key=lambda t: t.int)
    [pharmacy] = other.team_ids
    now = utcnow()
    ids: dict[str, uuid.UUID] = {}
    async with db.transaction() as session:
        for n in range(12):
            patient = await make_patient(session, ring, name=f"Quinn Sample{n}")
            at = now - timedelta(minutes=10 * (n + 1))
            conversation = Conversation(
                patient_id=patient.id,
                channel=Channel.EMAIL if n % 3 == 0 else Channel.SMS,
                status=ConversationStatus.PENDING if n % 4 == 1 else ConversationStatus.OPEN,
                priority=Priority.URGENT if n == 5 else Priority.NORMAL,
                team_id=nursing if n % 2 else billing,
                assignee_id=staff.staff_id if n % 3 == 1 else None,
                created_at=at,
                last_activity_at=at,
                last_inbound_at=at,
                # Two are past their first-response deadline.
                first_response_due_at=at + timedelta(minutes=-1 if n in (2, 7) else 240),
            )
            session.add(conversation)
            await session.flush()
            for k, direction in enumerate((Direction.INBOUND, Direction.OUTBOUND)):
                message = Message(
                    conversation_id=conversation.id,
                    direction=direction,
                    channel=conversation.channel,
                    status=MessageStatus.RECEIVED
                    if direction is Direction.INBOUND
                    else MessageStatus.SENT,
                    author_id=None,
                    created_at=at + timedelta(seconds=k),
                )
                message.seal(ring, "body", f"message {n}.{k}")
                session.add(message)
            if n % 4 == 0:
                await set_conversation_tags_in(session, ring, conversation.id, ["forms", "vip"])
            if n == 3:
                await queries.mark_read(session, staff.staff_id, conversation.id, now)
            ids[f"c{n}"] = conversation.id
        patient = await make_patient(session, ring, name="Elsewhere Sample")
        hidden = Conversation(
            patient_id=patient.id,
            channel=Channel.SMS,
            status=ConversationStatus.OPEN,
            priority=Priority.URGENT,
            team_id=pharmacy,
            created_at=now,
            last_activity_at=now,
        )
        session.add(hidden)
        await session.flush()
        ids["hidden"] = hidden.id
    return Inbox(staff, nursing, billing, ids)


async def listed(
    db: Database, ring: KeyRing, staff: Any, query: dict[str, str], **kw: Any
) -> tuple[InboxPage, list[str]]:
    with counted() as seen:
        page = await do_list_inbox(db, ring, staff, InboxFilters.parse(query), **kw)
    return page, seen


FILTERS: list[tuple[str, Any]] = [
    ("default", lambda i: ({}, 12)),
    ("mine", lambda i: ({"view": "mine"}, 4)),
    ("unassigned", lambda i: ({"view": "unassigned"}, 8)),
    ("team", lambda i: ({"team": str(i.nursing)}, 6)),
    ("status", lambda i: ({"status": "pending"}, 3)),
    ("channel", lambda i: ({"channel": "email"}, 4)),
    ("priority", lambda i: ({"priority": "urgent"}, 1)),
    ("tag", lambda i: ({"tag": "VIP"}, 3)),
    ("overdue", lambda i: ({"overdue": "1"}, 2)),
    ("several", lambda i: ({"team": str(i.billing), "view": "unassigned", "channel": "sms"}, 2)),
]


@pytest.mark.parametrize(("name", "make"), FILTERS, ids=[f[0] for f in FILTERS])
async def test_a_page_is_three_statements_under_every_filter(
    db: Database, ring: KeyRing, inbox: Inbox, name: str, make: Any
) -> None:
    query, expected = make(inbox)
    page, statements = await listed(db, ring, inbox.staff, query)
    assert len(statements) <= WITH_ROWS <= MAX_STATEMENTS, f"{name}: {statements}"
    assert len(page.rows) == expected, name
    assert inbox.ids["hidden"] not in {r.id for r in page.rows}
    assert page.tag_names == ("forms", "vip")
    # Every row filled in from the one statement.
    for row in page.rows:
        assert row.patient_name and row.patient_name.startswith("Quinn Sample")
        n = row.patient_name.removeprefix("Quinn Sample")
        assert row.preview == f"message {n}.0" and row.answered_automatically
        assert row.tags == (["forms", "vip"] if int(n) % 4 == 0 else [])
        assert row.assignee_name == ("Rows.Agent" if int(n) % 3 == 1 else None)
        assert row.unread is (n != "3")
    # Urgent first, then overdue, then the newest.
    if name == "default":
        order = [r.patient_name for r in page.rows]
        assert order[:3] == ["Quinn Sample5", "Quinn Sample2", "Quinn Sample7"]
        assert page.unread == 11


async def test_keyset_pages_cost_the_same_and_cover_the_list_once(
    db: Database, ring: KeyRing, inbox: Inbox
) -> None:
    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        page, statements = await listed(db, ring, inbox.staff, {}, cursor=cursor, limit=5)
        assert len(statements) <= WITH_ROWS
        assert page.unread == 11  # the whole list's, on every page
        seen.extend(r.id for r in page.rows)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 12


async def test_one_row_for_a_live_update_costs_no_more(
    db: Database, ring: KeyRing, inbox: Inbox
) -> None:
    page, statements = await listed(db, ring, inbox.staff, {}, only=inbox.ids["c4"])
    assert len(statements) <= MAX_STATEMENTS
    assert [r.id for r in page.rows] == [inbox.ids["c4"]] and page.rows[0].tags == ["forms", "vip"]
    assert page.unread == 11  # the count is the list's, not the one row's
    page, statements = await listed(db, ring, inbox.staff, {}, only=inbox.ids["hidden"])
    assert page.rows == [] and page.unread == 11
    assert len(statements) <= MAX_STATEMENTS


async def test_the_list_is_still_audited(db: Database, ring: KeyRing, inbox: Inbox) -> None:
    page, _ = await listed(db, ring, inbox.staff, {"view": "mine"})
    async with db.reader() as session:
        last = (
            await session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "inbox.list")
                .order_by(AuditEvent.seq.desc())
            )
        ).first()
    assert last is not None
    assert sorted(last.detail["conversations"]) == sorted(str(r.id) for r in page.rows)


def _expected_order(rows: list[Conversation], now: Any) -> list[uuid.UUID]:
    """The inbox's order computed here, not by the hub: urgent and not resolved first, then
    past the first-response deadline without an answer, then the rest; newest activity first,
    then the larger id (PostgreSQL and SQLite compare UUIDs byte by byte, as ``int`` does)."""

    def rank(c: Conversation) -> int:
        if c.priority is Priority.URGENT and c.status is not ConversationStatus.RESOLVED:
            return 0
        due = c.first_response_due_at
        if c.first_responded_at is None and due is not None and due < now:
            return 1
        return 2

    ordered = sorted(rows, key=lambda c: (rank(c), -c.last_activity_at.timestamp(), -c.id.int))
    return [c.id for c in ordered]


@pytest.mark.parametrize("status", ["active", "any", "resolved", "pending"])
async def test_every_page_follows_the_rank_order_whatever_the_status(
    db: Database, ring: KeyRing, inbox: Inbox, status: str
) -> None:
    """On PostgreSQL the list reads each status and rank apart and merges them
    (listing_queries._ranked_branches); walked two rows a page, the pages must give exactly the
    order a full ranking gives, ties on the same instant included, and a resolved urgent
    conversation is not ranked as urgent."""
    now = utcnow()
    same = now - timedelta(minutes=3)
    async with db.transaction() as session:
        for n, (priority, answered, due) in enumerate(
            [
                (Priority.URGENT, True, None),  # resolved: never rank 0
                (Priority.NORMAL, False, -5),  # resolved without an answer, overdue: rank 1
                (Priority.NORMAL, True, 60),
                (Priority.HIGH, False, None),  # no deadline at all: rank 2
            ]
        ):
            patient = await make_patient(session, ring, name=f"Resolved Sample{n}")
            session.add(
                Conversation(
                    patient_id=patient.id,
                    channel=Channel.SMS,
                    status=ConversationStatus.RESOLVED,
                    priority=priority,
                    team_id=inbox.nursing,
                    created_at=same,
                    last_activity_at=same,  # one instant for all: the id breaks the tie
                    first_responded_at=same if answered else None,
                    first_response_due_at=None if due is None else now + timedelta(minutes=due),
                )
            )
        rows = list((await session.scalars(select(Conversation))).all())
    statuses = InboxFilters(status=status).statuses()
    visible = [c for c in rows if c.team_id in inbox.staff.team_ids and c.status in statuses]
    assert visible, status
    expected = _expected_order(visible, now)
    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        page, _ = await listed(db, ring, inbox.staff, {"status": status}, cursor=cursor, limit=2)
        seen.extend(r.id for r in page.rows)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected


async def test_the_unread_count_stops_at_its_cap_and_says_so(
    db: Database, ring: KeyRing, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hub.inbox import listing_queries

    page, _ = await listed(db, ring, inbox.staff, {})
    assert (page.unread, page.unread_more, page.unread_label) == (11, False, "11")
    monkeypatch.setattr(listing_queries, "UNREAD_CAP", 5)
    page, _ = await listed(db, ring, inbox.staff, {})
    assert (page.unread, page.unread_more, page.unread_label) == (5, True, "4+")
    page, _ = await listed(db, ring, inbox.staff, {}, only=inbox.ids["hidden"])
    assert page.rows == [] and page.unread == 5  # the empty page's count, capped alike
