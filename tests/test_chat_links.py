"""Chat links and the offline fallback through a real aiohttp server: the patient's chat page,
staff's "Send chat link", and the notice that follows a reply the patient was away for."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from hub.audit import AuditEvent
from hub.channels.chat.adapter import DEFAULT_CHAT_OFFLINE_S, OFFLINE, ChatInbound
from hub.consent.actions import ConsentChange, revoke_channel
from hub.consent.models import ConsentSource
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, Direction, MessageStatus
from hub.inbox import actions
from hub.inbox.access import StaffContext
from hub.inbox.actions.chat_fallback import NOTICE_NOTE, notify_offline_in
from hub.inbox.actions.chat_intake import do_receive_chat
from hub.inbox.models import Conversation, Message
from hub.links import chat_token, read_chat_token
from hub.templates.actions import do_seed_templates
from tests import test_auto_replies as auto
from tests import test_chat
from tests.staff_helpers import csrf_of, sign_in
from tests.test_chat import (
    Patient,
    StaffSocket,
    chat_conversation,
    connected,
    message_row,
    new_cid,
    new_patient,
    staff_reply,
)
from web.chat import ChatPresence
from web.keys import DB, REDIS

pytestmark = pytest.mark.usefixtures("fresh_redis")

# The chat tests' fixtures, shared.
web_settings, client = test_chat.web_settings, test_chat.client
staff, patients = test_chat.staff, test_chat.patients


@pytest.fixture
def chat_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until web/auth.py lists /chat/ among the paths open without signing in (the link is the
    key), let the page through the auth middleware."""
    import web.auth

    if "/chat/" not in web.auth.PUBLIC_PREFIXES:
        monkeypatch.setattr(web.auth, "PUBLIC_PREFIXES", (*web.auth.PUBLIC_PREFIXES, "/chat/"))


# --- offline fallback -----------------------------------------------------------------------


async def wrote_and_left(
    client: TestClient, ring: KeyRing, patient_id: uuid.UUID, left_s_ago: float
) -> uuid.UUID:
    """The patient wrote in the chat and closed it ``left_s_ago`` seconds ago."""
    app = client.app
    await do_receive_chat(app[DB], ring, patient_id, ChatInbound(new_cid(), "Please call me back"))
    key = ChatPresence.PREFIX + str(patient_id)
    await app[REDIS].hset(key, "last", time.time() - left_s_ago)
    return await chat_conversation(app[DB], patient_id)


async def test_a_reply_to_an_absent_patient_goes_by_sms_with_a_link_back(
    client: TestClient, db: Database, ring: KeyRing, staff: StaffContext, patients: list[Patient]
) -> None:
    patient_id = await new_patient(db, ring)
    token = chat_token(ring, patient_id, utcnow())
    conversation_id = await wrote_and_left(client, ring, patient_id, DEFAULT_CHAT_OFFLINE_S + 60)

    async with StaffSocket(client) as desk:
        reply_id = await staff_reply(client, staff, conversation_id, "We tried to call you")
        await desk.next("message:status", message_id=str(reply_id), status="failed")
        await desk.next("message:new", message_id=str(reply_id))
        notice = await desk.next("message:new", conversation_id=str(conversation_id))
        second = await staff_reply(client, staff, conversation_id, "Call us when you can")
        await desk.next("message:status", message_id=str(second), status="failed")

    reply = await message_row(db, reply_id)
    assert (reply.status, reply.error_code) == (MessageStatus.FAILED, OFFLINE)
    assert reply.error_reason == "the patient is not in the chat; a link to it went by sms"
    sms = await message_row(db, notice["message_id"])
    assert (sms.channel, sms.status, sms.author_id) == (Channel.SMS, MessageStatus.QUEUED, None)
    assert sms.delivery_notes[0] == NOTICE_NOTE
    body = sms.unseal(ring, "body") or ""
    assert body.startswith("You have a new message from Demo Clinic in your chat: ")
    link = body.rsplit(" ", 1)[1]
    assert link.startswith("http://127.0.0.1/chat/")
    assert read_chat_token(ring, link.rsplit("/", 1)[1], utcnow()) == patient_id
    assert "We tried to call you" not in body  # the notice never carries the reply itself
    # One notice an hour, however many replies; and one per failed reply, however often the
    # failure is handled.
    assert "in the last hour" in ((await message_row(db, second)).error_reason or "")
    async with db.transaction() as session:
        failed = await session.get(Message, reply_id)
        conversation = await session.get(Conversation, conversation_id)
        assert failed is not None and conversation is not None
        again = await notify_offline_in(
            session, ring, failed, conversation, public_url="http://x", clinic_name="X"
        )
    assert again == []

    # The reply waits in the chat: the link shows it.
    back = await connected(client, token, patients)
    assert [m["body"] for m in (await back.history())[-2:]] == [
        "We tried to call you",
        "Call us when you can",
    ]


async def test_no_notice_where_consent_or_channels_do_not_allow_one(
    client: TestClient, db: Database, ring: KeyRing, staff: StaffContext
) -> None:
    patient_id = await new_patient(db, ring)
    conversation_id = await wrote_and_left(client, ring, patient_id, DEFAULT_CHAT_OFFLINE_S + 60)
    async with db.transaction() as session:
        await revoke_channel(
            session, patient_id, Channel.SMS, ConsentChange(ConsentSource.KEYWORD, "t", "STOP")
        )
    async with StaffSocket(client) as desk:
        reply_id = await staff_reply(client, staff, conversation_id, "Are you there?")
        await desk.next("message:status", message_id=str(reply_id), status="failed")
    reply = await message_row(db, reply_id)
    assert reply.error_reason == "the patient is not in the chat, and no other channel may be used"
    assert any("opted out" in note for note in reply.delivery_notes)  # email: not connected here
    async with db.reader() as session:
        outbound = (
            await session.scalars(
                select(Message).where(
                    Message.conversation_id == conversation_id,
                    Message.direction == Direction.OUTBOUND,
                )
            )
        ).all()
    assert [m.id for m in outbound] == [reply_id]


# --- pages ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("chat_public")
async def test_the_chat_page_opens_with_a_good_link_and_says_so_otherwise(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    patient_id = await new_patient(db, ring)
    token = chat_token(ring, patient_id, utcnow())
    page = await client.get(f"/chat/{token}")
    html = await page.text()
    assert page.status == 200
    assert f'data-token="{token}"' in html and 'src="/static/chat-widget.js"' in html
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "<script>" not in html  # no inline script (CSP)
    bad = await client.get(f"/chat/{token[:-2]}xx")
    assert bad.status == 404 and "not valid" in await bad.text()
    old = await client.get(f"/chat/{chat_token(ring, patient_id, utcnow() - timedelta(days=8))}")
    assert old.status == 404 and "expired" in await old.text()
    for name in ("chat.js", "chat-widget.js", "chat.css", "vendor/socket.io.min.js"):
        assert (await client.get(f"/static/{name}")).status == 200, name


async def test_staff_send_a_chat_link_by_sms(
    client: TestClient, db: Database, ring: KeyRing, staff: StaffContext, patients: list[Patient]
) -> None:
    await do_seed_templates(db)
    patient_id = await new_patient(db, ring)
    await actions.do_record_inbound(db, ring, patient_id, Channel.SMS, "Can we chat instead?")
    async with db.reader() as session:
        conversation_id = (
            await session.scalars(
                select(Conversation.id).where(Conversation.patient_id == patient_id)
            )
        ).one()
    await sign_in(client, "ada.admin@demo-clinic.example.org")
    csrf = await csrf_of(client)
    posted = await client.post(
        f"/conversations/{conversation_id}/chat-invite",
        data={"csrf_token": csrf},
        allow_redirects=False,
    )
    assert (
        posted.status == 303 and posted.headers["Location"] == f"/conversations/{conversation_id}"
    )
    async with db.reader() as session:
        invite = (
            await session.scalars(
                select(Message).where(
                    Message.conversation_id == conversation_id,
                    Message.direction == Direction.OUTBOUND,
                )
            )
        ).one()
        audited = (
            await session.scalars(select(AuditEvent).where(AuditEvent.action == "chat_link.send"))
        ).one()
    assert (invite.channel, invite.status, invite.author_id) == (
        Channel.SMS,
        MessageStatus.QUEUED,
        staff.staff_id,
    )
    text = invite.unseal(ring, "body") or ""
    assert text.startswith("Demo Clinic: chat with us: http://127.0.0.1/chat/")
    assert read_chat_token(ring, text.rsplit("/", 1)[1], utcnow()) == patient_id
    assert audited.subject_id == str(patient_id)
    # A chat link is not sent inside the chat.
    refused = await client.post(
        f"/conversations/{conversation_id}/chat-invite",
        data={"csrf_token": csrf, "channel": "chat"},
        allow_redirects=False,
    )
    assert refused.status == 303
    assert "not set up" in refused.cookies["hub_flash"].value or "not inside" in (
        refused.cookies["hub_flash"].value
    )


# --- one conversation across channels --------------------------------------------------------


async def test_a_chat_from_an_invite_continues_the_conversation_it_was_sent_from(
    client: TestClient,
    db: Database,
    ring: KeyRing,
    staff: StaffContext,
    patients: list[Patient],
    set_clock: Any,
) -> None:
    """The patient texts at night (one after-hours reply), staff send a chat link from that
    conversation, the patient writes in the chat: the chat lands in the same conversation,
    gets no second after-hours reply, and a reply with no channel picked goes to the chat."""
    set_clock(auto.WED_NIGHT_NY)
    await do_seed_templates(db)
    await auto.closed_front_desk(db)
    await auto.patient(db, ring)
    conversation_id = await auto.text_in(db, ring, "Can we chat instead?")
    assert [ch for ch, _ in await auto.outbound(db, ring)] == [Channel.SMS]  # after hours

    await sign_in(client, "ada.admin@demo-clinic.example.org")
    posted = await client.post(
        f"/conversations/{conversation_id}/chat-invite",
        data={"csrf_token": await csrf_of(client)},
        allow_redirects=False,
    )
    assert posted.status == 303
    link = (await auto.outbound(db, ring))[-1][1]
    chatting = await connected(client, link.rsplit("/", 1)[1], patients)
    await chatting.say("Hi, it's me in the chat now")

    async with db.reader() as session:
        threads = (await session.scalars(select(Conversation))).all()
        chat = (await session.scalars(select(Message).where(Message.channel == Channel.CHAT))).one()
    assert [t.id for t in threads] == [conversation_id]
    assert chat.conversation_id == conversation_id
    # Still one automatic answer in all: the after-hours text, not another one in the chat.
    sent = await auto.outbound(db, ring)
    assert sum("closed" in body for _, body in sent) == 1 and len(sent) == 2

    queued = await actions.do_reply(db, ring, staff, conversation_id, "Sure, ask away.")
    assert (await message_row(db, queued.message_id)).channel is Channel.CHAT
