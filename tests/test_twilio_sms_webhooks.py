"""POST /webhooks/twilio/sms and /status through real HTTP, with SDK-computed signatures."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from hub.config import Settings
from hub.consent.exceptions import ConsentRefused
from hub.consent.models import ConsentRecord, ConsentSource, ConsentState, Purpose
from hub.db import Database
from hub.enums import ConversationStatus, Direction, MessageStatus
from hub.inbox import actions
from hub.inbox.access import StaffContext
from hub.inbox.models import (
    Attachment,
    AttachmentState,
    Conversation,
    InboundEvent,
    Message,
    Patient,
)
from tests.conftest import make_staff
from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN, CLINIC_NUMBER, fixture, sign
from web.app import create_app

PUBLIC = "https://hub.test-clinic.example.org"


@pytest.fixture
def twilio_settings(settings: Settings) -> Settings:
    return replace(
        settings,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from_number=CLINIC_NUMBER,
        public_url=PUBLIC,
    )


@pytest.fixture
async def client(db: Database, twilio_settings: Settings, aiohttp_client: Any) -> TestClient:
    # db first: fixtures tear down in reverse, and the app must stop before its connection.
    return await aiohttp_client(create_app(twilio_settings, db=db))  # type: ignore[no-any-return]


@pytest.fixture
async def staff(db: Database) -> StaffContext:
    return await make_staff(db)  # type: ignore[no-any-return]


async def post(
    client: TestClient,
    path: str,
    params: dict[str, str],
    *,
    signature: str | None = None,
    url: str | None = None,
) -> Any:
    headers = {}
    if signature is None:
        signature = sign(url or PUBLIC + path, params)
    if signature:
        headers["X-Twilio-Signature"] = signature
    return await client.post(path, data=params, headers=headers)


async def count(db: Database, model: Any) -> int:
    async with db.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.parametrize("name", ["inbound_sms", "inbound_sms_messaging_service", "inbound_mms"])
async def test_signed_fixture_is_stored_and_answered_with_twiml(
    client: TestClient, db: Database, name: str
) -> None:
    params = fixture(name)["params"]
    response = await post(client, "/webhooks/twilio/sms", params)
    assert response.status == 200, await response.text()
    assert response.content_type == "text/xml"
    assert "<Response" in await response.text()
    assert await count(db, Message) == 1
    assert await count(db, InboundEvent) == 1


@pytest.mark.parametrize(
    "tamper",
    ["body", "wrong_url", "missing_header", "other_token", "extra_field"],
)
async def test_bad_signature_is_403_and_stores_nothing(
    client: TestClient, db: Database, tamper: str
) -> None:
    params = dict(fixture("inbound_sms")["params"])
    path = "/webhooks/twilio/sms"
    if tamper == "body":
        signature = sign(PUBLIC + path, params)
        params["Body"] = "something else"
    elif tamper == "wrong_url":
        signature = sign("https://attacker.example.org" + path, params)
    elif tamper == "missing_header":
        signature = ""
    elif tamper == "other_token":
        signature = sign(PUBLIC + path, params, token="f" * 32)
    else:
        signature = sign(PUBLIC + path, params)
        params["Injected"] = "1"
    response = await post(client, path, params, signature=signature)
    assert response.status == 403
    assert await count(db, Message) == 0
    assert await count(db, Patient) == 0
    assert await count(db, InboundEvent) == 0
    metrics = await (await client.get("/metrics")).text()
    assert (
        'hub_webhook_rejected_total{kind="inbound",provider="twilio_sms",reason="signature"} 1.0'
    ) in metrics


async def test_signature_uses_the_public_url_not_the_proxy_facing_host(
    client: TestClient,
) -> None:
    params = fixture("inbound_sms")["params"]
    # The test server listens on 127.0.0.1:<port>; a signature over that address must fail.
    local = str(client.make_url("/webhooks/twilio/sms"))
    assert (await post(client, "/webhooks/twilio/sms", params, url=local)).status == 403
    assert (await post(client, "/webhooks/twilio/sms", params)).status == 200


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"From": ""}, "From is missing"),
        ({"NumMedia": "two"}, "NumMedia is not a whole number"),
        ({"Body": "x" * 1601}, "Body is longer than 1600 characters"),
        ({"MessageSid": "not-a-sid"}, "MessageSid is not a Twilio message sid"),
        ({"NumMedia": "1"}, "MediaUrl0 is missing"),
    ],
)
async def test_malformed_input_is_400_with_reason_and_stores_nothing(
    client: TestClient, db: Database, change: dict[str, str], reason: str
) -> None:
    params = {**fixture("inbound_sms")["params"], **change}
    response = await post(client, "/webhooks/twilio/sms", params)
    assert response.status == 400
    assert reason in await response.text()
    assert await count(db, Message) == 0 and await count(db, InboundEvent) == 0


async def test_wrong_content_type_is_400(client: TestClient, db: Database) -> None:
    response = await client.post(
        "/webhooks/twilio/sms",
        json=fixture("inbound_sms")["params"],
        headers={"X-Twilio-Signature": "x"},
    )
    assert response.status == 400
    assert "application/x-www-form-urlencoded" in await response.text()
    assert await count(db, Message) == 0


async def test_retry_with_same_message_sid_changes_nothing(
    client: TestClient, db: Database
) -> None:
    params = fixture("inbound_sms")["params"]
    for _ in range(3):
        response = await post(client, "/webhooks/twilio/sms", params)
        assert response.status == 200
    assert await count(db, Message) == 1
    assert await count(db, Conversation) == 1
    assert await count(db, Patient) == 1


async def test_unknown_number_makes_an_unverified_patient_and_mms_media_wait_for_a_worker(
    client: TestClient, db: Database, twilio_settings: Settings
) -> None:
    params = fixture("inbound_mms")["params"]
    assert (await post(client, "/webhooks/twilio/sms", params)).status == 200
    async with db.reader() as session:
        patient = (await session.scalars(select(Patient))).one()
        assert patient.verified is False
        assert patient.unseal(twilio_settings.key_ring(), "phone") == params["From"]
        atts = (await session.scalars(select(Attachment))).all()
        assert sorted(a.content_type for a in atts) == ["application/pdf", "image/jpeg"]
        assert all(a.state is AttachmentState.PENDING and a.data_enc is None for a in atts)


async def _receive(client: TestClient, body: str, sid: str | None = None) -> None:
    params = {
        **fixture("inbound_sms")["params"],
        "Body": body,
        "MessageSid": sid or "SM" + uuid.uuid4().hex,
    }
    params["SmsSid"] = params["SmsMessageSid"] = params["MessageSid"]
    response = await post(client, "/webhooks/twilio/sms", params)
    assert response.status == 200, await response.text()


async def _conversation(db: Database) -> Conversation:
    async with db.reader() as session:
        return (await session.scalars(select(Conversation))).one()


@pytest.mark.parametrize(
    "word",
    [
        "STOP",
        " stop ",
        "Unsubscribe",
        "cancel",
        "END",
        "quit",
        "REVOKE",
        "optout",
        "STOPALL",
        "Stop.",
    ],
)
async def test_stop_family_revokes_every_sms_purpose_and_keeps_the_message(
    client: TestClient, db: Database, twilio_settings: Settings, word: str, staff: StaffContext
) -> None:
    await _receive(client, word)
    conversation = await _conversation(db)
    ring = twilio_settings.key_ring()
    async with db.reader() as session:
        records = (await session.scalars(select(ConsentRecord))).all()
        message = (await session.scalars(select(Message))).one()
    assert {r.purpose for r in records} == {
        Purpose.CARE,
        Purpose.REMINDERS,
        Purpose.SURVEYS,
        Purpose.MARKETING,
    }
    assert all(
        r.state is ConsentState.REVOKED
        and r.source is ConsentSource.KEYWORD
        and r.evidence_message_id == message.id
        for r in records
    )
    assert message.unseal(ring, "body") == word  # still in the conversation
    with pytest.raises(ConsentRefused, match=r"patient opted out of SMS on .* by replying"):
        await actions.do_reply(db, ring, staff, conversation.id, "Your results are ready.")


async def test_start_restores_and_stop_start_history_is_kept(
    client: TestClient, db: Database, twilio_settings: Settings, staff: StaffContext
) -> None:
    ring = twilio_settings.key_ring()
    await _receive(client, "STOP")
    await _receive(client, "start")
    conversation = await _conversation(db)
    queued = await actions.do_reply(db, ring, staff, conversation.id, "Welcome back.")
    async with db.reader() as session:
        reply = await session.get(Message, queued.message_id)
        care = (
            await session.scalars(
                select(ConsentRecord)
                .where(ConsentRecord.purpose == Purpose.CARE)
                .order_by(ConsentRecord.created_at)
            )
        ).all()
    assert reply is not None and reply.status is MessageStatus.QUEUED
    assert [r.state for r in care] == [ConsentState.REVOKED, ConsentState.GRANTED]


async def test_yes_is_an_ordinary_reply_unless_opted_out(client: TestClient, db: Database) -> None:
    await _receive(client, "YES")
    assert await count(db, ConsentRecord) == 0


async def test_help_gets_the_clinic_help_text_even_after_stop(
    client: TestClient, db: Database, twilio_settings: Settings
) -> None:
    ring = twilio_settings.key_ring()
    await _receive(client, "STOP")
    await _receive(client, "help")
    async with db.reader() as session:
        outbound = (
            await session.scalars(select(Message).where(Message.direction == Direction.OUTBOUND))
        ).one()
    assert outbound.purpose == "service"
    assert outbound.unseal(ring, "body") == twilio_settings.help_text
    assert "reply STOP" in twilio_settings.help_text


async def test_messages_thread_into_the_open_conversation_and_reopen_resolved_ones(
    client: TestClient, db: Database
) -> None:
    await _receive(client, "first")
    await _receive(client, "second")
    conversation = await _conversation(db)
    async with db.transaction() as session:
        conv = await session.get(Conversation, conversation.id)
        assert conv is not None
        conv.status = ConversationStatus.RESOLVED
        conv.resolved_at = conv.last_activity_at
    await _receive(client, "third")
    reopened = await _conversation(db)
    assert reopened.id == conversation.id and reopened.status is ConversationStatus.OPEN
    assert await count(db, Message) == 3


async def test_old_resolved_conversation_is_not_reopened(client: TestClient, db: Database) -> None:
    from datetime import timedelta

    await _receive(client, "first")
    async with db.transaction() as session:
        conv = (await session.scalars(select(Conversation))).one()
        conv.status = ConversationStatus.RESOLVED
        conv.resolved_at = conv.last_activity_at - timedelta(days=30)
    await _receive(client, "much later")
    assert await count(db, Conversation) == 2


async def test_status_webhook_rejects_unsigned_and_unknown_statuses(client: TestClient) -> None:
    params = fixture("status_delivered")["params"]
    assert (await post(client, "/webhooks/twilio/status", params, signature="")).status == 403
    weird = {**params, "MessageStatus": "teleported", "SmsStatus": "teleported"}
    response = await post(client, "/webhooks/twilio/status", weird)
    assert response.status == 400
    assert "teleported" in await response.text()
    # A callback for a message we never sent is accepted (Twilio stops retrying) and ignored.
    assert (await post(client, "/webhooks/twilio/status", params)).status == 204


@pytest.mark.slow
async def test_five_concurrent_retries_store_one_message(
    aiohttp_client: Any, twilio_settings: Settings, fresh_db_url: str
) -> None:
    app = create_app(replace(twilio_settings, database_url=fresh_db_url))
    client: TestClient = await aiohttp_client(app)
    params = fixture("inbound_sms")["params"]
    responses = await asyncio.gather(
        *(post(client, "/webhooks/twilio/sms", params) for _ in range(5))
    )
    assert [r.status for r in responses] == [200] * 5
    db = Database.connect(fresh_db_url)
    try:
        assert await count(db, Message) == 1
        assert await count(db, InboundEvent) == 1
        assert await count(db, Patient) == 1
        assert await count(db, Conversation) == 1
    finally:
        await db.dispose()


async def test_texts_arriving_together_from_a_new_number_make_one_patient_and_one_thread(
    committed_db: Database, ring: Any
) -> None:
    """Twilio posts concurrently: six texts from one unknown number in flight at once (and
    then six from a second number) become one patient and one conversation each."""
    from hub.channels.base import InboundMessage
    from hub.enums import Channel

    def text(sender: str, n: int) -> InboundMessage:
        return InboundMessage(
            provider="twilio_sms",
            provider_message_id="SM" + uuid.uuid4().hex,
            channel=Channel.SMS,
            from_address=sender,
            to_address=CLINIC_NUMBER,
            body=f"synthetic text {n}",
        )

    senders = ("+15550100177", "+15550100178")
    await asyncio.gather(
        *(
            actions.do_receive_inbound(committed_db, ring, text(sender, n), {}, help_text="help")
            for sender in senders
            for n in range(6)
        )
    )
    assert await count(committed_db, Patient) == 2
    assert await count(committed_db, Conversation) == 2
    assert await count(committed_db, Message) == 12
