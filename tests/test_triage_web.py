"""Routing through the real webhook: urgent triage answers in the same request cycle and puts
the conversation at the top; admin-edited rules place messages in teams."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from hub.config import Settings
from hub.db import Database
from hub.enums import Direction, MessageStatus, Priority
from hub.inbox.actions.tags import tags_of_conversation_in
from hub.inbox.models import Conversation, Message, Team
from tests.conftest import make_staff
from tests.staff_helpers import csrf_of, sign_in
from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN, fixture, sign
from web.app import create_app
from web.keys import RING

PUBLIC = "http://127.0.0.1"


pytestmark = pytest.mark.usefixtures("fresh_redis")


@pytest.fixture
async def client(db: Database, settings: Settings, aiohttp_client: Any) -> TestClient:
    app_settings = replace(
        settings,
        public_url=PUBLIC,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from_number="+15550109999",
    )
    return await aiohttp_client(create_app(app_settings, db=db))  # type: ignore[no-any-return]


async def text(client: TestClient, body: str, sender: str = "+15550100101") -> None:
    sid = "SM" + uuid.uuid4().hex
    params = {
        **fixture("inbound_sms")["params"],
        "Body": body,
        "From": sender,
        "MessageSid": sid,
        "SmsSid": sid,
        "SmsMessageSid": sid,
    }
    response = await client.post(
        "/webhooks/twilio/sms",
        data=params,
        headers={"X-Twilio-Signature": sign(PUBLIC + "/webhooks/twilio/sms", params)},
    )
    assert response.status == 200, await response.text()


async def test_chest_pain_is_urgent_on_top_and_answered_in_the_same_request(
    client: TestClient, db: Database
) -> None:
    await make_staff(db, "ada.admin@demo-clinic.example.org", role="admin")
    await text(client, "Can I move my appointment to Friday?", sender="+15550100102")
    await text(client, "Do you have parking?", sender="+15550100103")
    await text(client, "I have chest pain and my left arm feels numb", sender="+15550100101")

    # Answered in the same request: the emergency reply was committed with the message.
    async with db.reader() as session:
        urgent = (
            await session.scalars(
                select(Conversation).where(Conversation.priority == Priority.URGENT)
            )
        ).one()
        replies = (
            await session.scalars(
                select(Message).where(
                    Message.conversation_id == urgent.id, Message.direction == Direction.OUTBOUND
                )
            )
        ).all()
    assert len(replies) == 1
    assert replies[0].status is MessageStatus.QUEUED and replies[0].purpose == "care"
    async with db.reader() as session:
        tags = await tags_of_conversation_in(session, client.server.app[RING], urgent.id)
    assert "urgent" in tags
    assert urgent.first_response_due_at is not None
    assert (urgent.first_response_due_at - urgent.created_at).total_seconds() <= 15 * 60

    await sign_in(client, "ada.admin@demo-clinic.example.org")
    listed = await (await client.get("/api/conversations")).json()
    assert listed["items"][0]["id"] == str(urgent.id)
    assert listed["items"][0]["priority"] == "urgent"
    assert len(listed["items"]) == 3


async def test_admin_rule_routes_billing_questions_to_billing(
    client: TestClient, db: Database
) -> None:
    await make_staff(db, "ada.admin@demo-clinic.example.org", role="admin", teams=("Billing",))
    await sign_in(client, "ada.admin@demo-clinic.example.org")
    csrf = await csrf_of(client, "/admin/routing")
    saved = await client.post(
        "/admin/routing/rules",
        data={
            "csrf_token": csrf,
            "name": "Billing questions",
            "enabled": "1",
            "conditions": '{"body_keywords": ["bill", "invoice"]}',
            "actions": '{"team": "Billing", "add_tags": ["billing"], "priority": "high"}',
        },
        allow_redirects=False,
    )
    assert saved.status == 303
    bad = await client.post(
        "/admin/routing/rules",
        data={
            "csrf_token": csrf,
            "name": "Broken",
            "conditions": '{"body_regex": "(unclosed"}',
            "actions": "{}",
        },
    )
    assert "body_regex" in await bad.text()

    await text(client, "I have a question about my bill from March")
    async with db.reader() as session:
        conversation = (await session.scalars(select(Conversation))).one()
        billing = (await session.scalars(select(Team).where(Team.name == "Billing"))).one()
        tags = await tags_of_conversation_in(session, client.server.app[RING], conversation.id)
    assert conversation.team_id == billing.id
    assert tags == ["billing"] and conversation.priority is Priority.HIGH
