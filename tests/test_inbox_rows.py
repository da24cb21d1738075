"""What an inbox row says (issue 16, "Rows"): the patient's own words rather than the clinic's
after-hours answer to them, "answered automatically" until a person answers, how long the
patient has waited, and the first-response deadline. Through the real intake and routing."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.config import Settings
from hub.crypto import KeyRing, associated_data
from hub.db import Database
from hub.enums import Channel, ConversationStatus, Direction
from hub.inbox import actions
from hub.inbox.actions.conversations import do_set_status
from hub.inbox.actions.listing import InboxFilters, do_list_inbox
from hub.inbox.actions.staff import do_create_token
from hub.inbox.models import Conversation, Message
from hub.inbox.schemas import ConversationRow, NewPatient
from hub.templates.actions import do_seed_templates
from tests.conftest import make_staff
from tests.test_auto_replies import closed_front_desk, patient, text_in
from tests.test_routing import WED_NIGHT_NY
from web.app import create_app

SYSTEM = Actor.system("test")
QUESTION = "Can I move my appointment on Friday to 3pm?"


@pytest.fixture(autouse=True)
async def seeded(db: Database, set_clock: Any) -> None:
    set_clock(WED_NIGHT_NY)
    await do_seed_templates(db)


async def row_of(db: Database, ring: KeyRing, staff: Any, cid: uuid.UUID) -> ConversationRow:
    page = await do_list_inbox(db, ring, staff, InboxFilters(status="any"))
    [row] = [r for r in page.rows if r.id == cid]
    return row


async def messages_of(db: Database, cid: uuid.UUID) -> list[Message]:
    async with db.reader() as session:
        stmt = select(Message).where(Message.conversation_id == cid).order_by(Message.created_at)
        return list((await session.scalars(stmt)).all())


async def test_after_hours_reply_leaves_the_patients_question_and_waiting_on_the_row(
    db: Database, ring: KeyRing, set_clock: Any
) -> None:
    await closed_front_desk(db)
    await patient(db, ring)
    staff = await make_staff(db)
    cid = await text_in(db, ring, QUESTION)
    sent = await messages_of(db, cid)
    assert [m.direction for m in sent] == [Direction.INBOUND, Direction.OUTBOUND]
    assert sent[1].author_id is None  # the hub's own after-hours answer is the newest message

    row = await row_of(db, ring, staff, cid)
    assert row.preview == QUESTION and row.preview_from_patient
    assert row.answered_automatically
    assert row.waiting_since == sent[0].created_at
    async with db.reader() as session:
        conversation = await session.get(Conversation, cid)
        assert conversation is not None
    # Business hours are in the deadline already: the desk opens at 9:00 New York time.
    assert row.sla_due_at() == conversation.first_response_due_at
    assert row.sla_due_at() is not None and row.sla_due_at() > WED_NIGHT_NY + timedelta(hours=10)
    assert not row.overdue(WED_NIGHT_NY)

    # A person answers: no longer automatic, no longer waiting, the deadline met.
    set_clock(WED_NIGHT_NY + timedelta(hours=11))
    await actions.do_reply(db, ring, staff, cid, "Yes, Friday at 3pm works. See you then.")
    row = await row_of(db, ring, staff, cid)
    assert row.preview == QUESTION
    assert not row.answered_automatically
    assert row.waiting_since is None
    assert row.sla_due_at() is None

    # The patient writes twice more: waiting since the first of the two.
    set_clock(WED_NIGHT_NY + timedelta(hours=12))
    await text_in(db, ring, "Thanks! Should I bring my insurance card?")
    set_clock(WED_NIGHT_NY + timedelta(hours=13))
    await text_in(db, ring, "Also, is there parking?")
    newest = await messages_of(db, cid)
    inbound = [m for m in newest if m.direction is Direction.INBOUND]
    row = await row_of(db, ring, staff, cid)
    assert row.preview == "Also, is there parking?"
    assert row.waiting_since == inbound[1].created_at
    assert not row.answered_automatically  # the after-hours reply went once, before


async def test_a_conversation_the_patient_never_wrote_in_previews_the_clinics_message(
    db: Database, ring: KeyRing
) -> None:
    pid = await patient(db, ring)
    staff = await make_staff(db)
    await actions.do_record_inbound(db, ring, pid, Channel.SMS, "first question")
    async with db.transaction() as session:
        [conversation] = (
            await session.scalars(select(Conversation).where(Conversation.patient_id == pid))
        ).all()
        # Only the clinic's reminder is left in it (as a journey-opened conversation holds).
        inbound = (
            await session.scalars(select(Message).where(Message.conversation_id == conversation.id))
        ).one()
        inbound.direction = Direction.OUTBOUND
        inbound.seal(ring, "body", "Reminder: your visit is tomorrow at 9:00.")
    row = await row_of(db, ring, staff, conversation.id)
    assert row.preview == "Reminder: your visit is tomorrow at 9:00."
    assert not row.preview_from_patient
    assert not row.answered_automatically and row.waiting_since is None


async def test_a_resolved_conversation_is_not_waiting(db: Database, ring: KeyRing) -> None:
    await closed_front_desk(db)
    await patient(db, ring)
    staff = await make_staff(db)
    cid = await text_in(db, ring, QUESTION)
    await do_set_status(db, staff, cid, ConversationStatus.RESOLVED)
    row = await row_of(db, ring, staff, cid)
    assert row.preview == QUESTION and row.waiting_since is None and row.sla_due_at() is None


async def test_only_the_rows_shown_are_decrypted(
    db: Database, ring: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row fetched to learn whether a next page exists is not opened: neither its
    patient's name nor its message."""
    staff = await make_staff(db)
    cids = []
    for n in range(3):
        pid = await actions.do_create_patient(
            db,
            ring,
            SYSTEM,
            NewPatient(name=f"Rowan Sample{n}", phone=f"+1555010012{n}"),
            region="US",
        )
        await actions.do_record_inbound(db, ring, pid, Channel.SMS, f"question {n}")
        async with db.reader() as session:
            cids.append(
                (
                    await session.scalars(
                        select(Conversation.id).where(Conversation.patient_id == pid)
                    )
                ).one()
            )
    opened: list[bytes] = []
    real = KeyRing.decrypt

    def spy(self: KeyRing, blob: bytes, aad: bytes) -> bytes:
        opened.append(aad)
        return real(self, blob, aad)

    monkeypatch.setattr(KeyRing, "decrypt", spy)
    page = await do_list_inbox(db, ring, staff, InboxFilters(), limit=2)
    assert len(page.rows) == 2 and page.next_cursor is not None
    shown = {r.id for r in page.rows}
    [hidden] = [c for c in cids if c not in shown]
    async with db.reader() as session:
        conversation = await session.get(Conversation, hidden)
        assert conversation is not None
        message_id = (
            await session.scalars(select(Message.id).where(Message.conversation_id == hidden))
        ).one()
    assert associated_data("inbox_message", "body_enc", message_id) not in opened
    assert associated_data("inbox_patient", "name_enc", conversation.patient_id) not in opened
    assert len([a for a in opened if b"inbox_message.body_enc" in a]) == 2


async def test_the_api_rows_carry_the_same(
    db: Database, ring: KeyRing, settings: Settings, aiohttp_client: Any
) -> None:
    """`GET /api/conversations` items hold what the row shows, under the same names."""
    await closed_front_desk(db)
    await patient(db, ring)
    staff = await make_staff(db)
    cid = await text_in(db, ring, QUESTION)
    token = await do_create_token(db, SYSTEM, "dana.agent@demo-clinic.example.org", "rows test")
    client = await aiohttp_client(create_app(settings, db=db))
    response = await client.get(
        "/api/conversations", params={"status": "any"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 200
    [item] = [i for i in (await response.json())["items"] if i["id"] == str(cid)]
    row = await row_of(db, ring, staff, cid)
    assert item["preview"] == QUESTION and item["preview_from_patient"] is True
    assert item["answered_automatically"] is True and item["patient_verified"] is True
    assert row.waiting_since is not None
    assert item["waiting_since"] == row.waiting_since.isoformat()
