"""Sealed tags behave as tags did: one name per spelling, the inbox filtered by them, and no
tag name in the events the outbox stores."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import func, select

from hub.audit import Actor
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel
from hub.inbox import actions
from hub.inbox.actions.conversations import do_set_tags
from hub.inbox.actions.listing import InboxFilters, do_list_inbox
from hub.inbox.actions.tags import clinic_tags_in, tags_of_conversation_in
from hub.inbox.models import Message, Tag
from hub.inbox.schemas import NewPatient
from hub.outbox import OutboxEvent
from tests.conftest import make_staff

SYSTEM = Actor.system("test")


async def _conversation(db: Database, ring: KeyRing, phone: str, tags: list[str]) -> uuid.UUID:
    patient_id = await actions.do_create_patient(
        db, ring, SYSTEM, NewPatient(name="Sam Synthetic", phone=phone, tags=tags), region="US"
    )
    message_id = await actions.do_record_inbound(db, ring, patient_id, Channel.SMS, "hello")
    async with db.reader() as session:
        message = await session.get(Message, message_id)
        assert message is not None
        return message.conversation_id


async def test_tags_are_one_name_per_spelling_and_filter_the_inbox(
    db: Database, ring: KeyRing
) -> None:
    staff = await make_staff(db)
    tagged = await _conversation(db, ring, "+15550100201", ["VIP "])
    other = await _conversation(db, ring, "+15550100202", [])
    effects = await do_set_tags(db, ring, staff, tagged, ["Oncology", " oncology", "vip", ""])
    await do_set_tags(db, ring, staff, other, ["billing"])

    async with db.reader() as session:
        assert await tags_of_conversation_in(session, ring, tagged) == ["oncology", "vip"]
        # The patient's "VIP " and the conversation's "vip" are one name, stored once.
        assert await session.scalar(select(func.count()).select_from(Tag)) == 3
        assert await clinic_tags_in(session, ring) == ["billing", "oncology", "vip"]
        events = await session.scalars(select(OutboxEvent).where(OutboxEvent.id.in_(effects)))
        payloads = [json.dumps(e.payload) for e in events.all()]
    assert payloads and all("oncology" not in p and "vip" not in p for p in payloads)

    page = await do_list_inbox(db, ring, staff, InboxFilters.parse({"tag": " ONCOLOGY"}))
    assert [r.id for r in page.rows] == [tagged]
    assert page.rows[0].tags == ["oncology", "vip"]
    assert page.tag_names == ("billing", "oncology", "vip")
    assert (await do_list_inbox(db, ring, staff, InboxFilters.parse({"tag": "nope"}))).rows == []

    # Replacing the tags removes the ones left out.
    await do_set_tags(db, ring, staff, tagged, ["vip"])
    page = await do_list_inbox(db, ring, staff, InboxFilters.parse({"tag": "oncology"}))
    assert page.rows == []
