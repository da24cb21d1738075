"""The web chat through a real aiohttp server and real socket.io clients: who may connect,
messages both ways (staff replies go through the chat adapter and the relay, in process),
typing, read receipts, catching up after a reconnect, and the limits. Links and the offline
fallback: test_chat_links.py."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import socketio
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from hub.audit import Actor
from hub.channels.chat.adapter import (
    MAX_CHAT_CHARS,
    ChatAdapter,
)
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, Direction, MessageStatus
from hub.inbox import actions
from hub.inbox.access import StaffContext
from hub.inbox.models import Conversation, InboundEvent, Message
from hub.inbox.schemas import NewPatient
from hub.links import chat_token, read_chat_token, reply_token
from hub.outbox import release_events
from tests.conftest import make_staff
from tests.staff_helpers import session_cookie, sign_in
from web.app import create_app
from web.chat import typing_to_patient
from web.keys import DB, RING, SETTINGS, SINK

pytestmark = pytest.mark.usefixtures("fresh_redis")

FIXTURE = Path(__file__).resolve().parent.parent / "hub/channels/chat/fixtures/message.json"
WAIT_S = 5.0


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    return replace(settings, public_url="http://127.0.0.1")


@pytest.fixture
async def client(db: Database, web_settings: Settings, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(web_settings, db=db))  # type: ignore[no-any-return]


@pytest.fixture
async def staff(db: Database) -> StaffContext:
    return await make_staff(db, "ada.admin@demo-clinic.example.org", role="admin")  # type: ignore[no-any-return]


async def new_patient(db: Database, ring: KeyRing, name: str = "Avery Sample") -> uuid.UUID:
    return await actions.do_create_patient(
        db,
        ring,
        Actor.system("test"),
        NewPatient(
            name=name,
            phone=f"+1555010{uuid.uuid4().int % 10000:04d}",
            email=f"{name.split()[0].lower()}@patients.example.org",
        ),
        region="US",
    )


class Patient:
    """A patient's browser: a socket.io client on /chat and what it has received."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.errors: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.typing: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sio.on("message", self.messages.put_nowait, namespace="/chat")
        self.sio.on("error", self.errors.put_nowait, namespace="/chat")
        self.sio.on("typing", self.typing.put_nowait, namespace="/chat")

    async def connect(self, client: TestClient, token: str | None) -> None:
        await self.sio.connect(
            str(client.make_url("/")),
            namespaces=["/chat"],
            auth={"token": token} if token is not None else None,
            transports=["websocket"],
        )

    async def call(self, event: str, data: Any) -> Any:
        return await self.sio.call(event, data, namespace="/chat", timeout=WAIT_S)

    async def say(self, body: str, client_id: str | None = None) -> Any:
        return await self.call("message", {"body": body, "client_id": client_id or new_cid()})

    async def history(self, after: str | None = None) -> list[dict[str, Any]]:
        answer = await self.call("history", {"after": after})
        return answer["messages"]  # type: ignore[no-any-return]


def new_cid() -> str:
    return f"c-{uuid.uuid4().hex}"


@pytest.fixture
async def patients() -> AsyncIterator[list[Patient]]:
    made: list[Patient] = []
    yield made
    for p in made:
        if p.sio.connected:
            await p.sio.disconnect()


async def connected(client: TestClient, token: str, made: list[Patient]) -> Patient:
    patient = Patient()
    made.append(patient)
    await patient.connect(client, token)
    return patient


class StaffSocket:
    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        for name in ("message:new", "message:status", "chat:typing"):
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            self.events[name] = queue
            self.sio.on(name, queue.put_nowait, namespace="/staff")

    async def __aenter__(self) -> StaffSocket:
        await sign_in(self.client, "ada.admin@demo-clinic.example.org")
        await self.sio.connect(
            str(self.client.make_url("/")),
            namespaces=["/staff"],
            headers={"Cookie": f"hub_session={session_cookie(self.client)}"},
            transports=["websocket"],
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sio.disconnect()

    async def next(self, name: str, **match: str) -> dict[str, Any]:
        """The next ``name`` event whose fields equal ``match`` (others are skipped)."""
        while True:
            event = await asyncio.wait_for(self.events[name].get(), WAIT_S)
            if all(event.get(k) == v for k, v in match.items()):
                return event


async def staff_reply(
    client: TestClient, ctx: StaffContext, conversation_id: uuid.UUID, body: str
) -> uuid.UUID:
    """A staff reply on the chat, sent the way the worker's send job does (in process: the
    chat adapter hands it to the app's relay)."""
    app = client.app
    db, ring, settings = app[DB], app[RING], app[SETTINGS]
    queued = await actions.do_reply(db, ring, ctx, conversation_id, body, channel=Channel.CHAT)
    await release_events(db, app[SINK], queued.effect_ids)
    await send_in_process(app, queued.message_id, settings)
    return queued.message_id


async def send_in_process(app: Any, message_id: uuid.UUID, settings: Settings) -> None:
    db = app[DB]
    claim = await actions.do_claim_send(
        db,
        app[RING],
        message_id,
        provider={Channel.CHAT: "chat"},
        public_url=settings.public_url,
    )
    await release_events(db, app[SINK], claim.effect_ids)
    assert claim.task is not None, claim.skipped
    adapter = ChatAdapter.from_settings(settings)
    try:
        receipt = await adapter.send(claim.task.outbound, claim.task.decision)
    finally:
        await adapter.close()
    await release_events(db, app[SINK], await actions.do_record_sent(db, claim.task, receipt))


async def message_row(db: Database, message_id: uuid.UUID | str) -> Message:
    async with db.reader() as session:
        found = await session.get(Message, uuid.UUID(str(message_id)))
        assert found is not None
        return found


async def chat_conversation(db: Database, patient_id: uuid.UUID) -> uuid.UUID:
    async with db.reader() as session:
        return (
            await session.scalars(
                select(Conversation.id).where(
                    Conversation.patient_id == patient_id, Conversation.channel == Channel.CHAT
                )
            )
        ).one()


async def count_inbound(db: Database) -> int:
    async with db.reader() as session:
        stmt = select(func.count()).select_from(Message).where(Message.channel == Channel.CHAT)
        return int(await session.scalar(stmt.where(Message.direction == Direction.INBOUND)) or 0)


# --- who may connect -----------------------------------------------------------------------


async def refused(client: TestClient, auth: Any) -> list[Any]:
    sio = socketio.AsyncClient(reconnection=False)
    reasons: list[Any] = []
    sio.on("connect_error", reasons.append, namespace="/chat")
    with pytest.raises(socketio.exceptions.ConnectionError, match="failed to connect: /chat"):
        await sio.connect(
            str(client.make_url("/")), namespaces=["/chat"], auth=auth, transports=["websocket"]
        )
    return reasons


async def test_a_socket_without_a_token_is_refused(client: TestClient) -> None:
    assert await refused(client, None) == [{"message": "invalid token"}]
    assert await refused(client, {}) == [{"message": "invalid token"}]
    assert await refused(client, {"token": 42}) == [{"message": "invalid token"}]


async def test_forged_expired_and_foreign_tokens_are_refused(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    patient_id = await new_patient(db, ring)
    good = chat_token(ring, patient_id, utcnow())
    forged = ("b" if good[0] != "b" else "c") + good[1:]
    expired = chat_token(ring, patient_id, utcnow() - timedelta(days=8))
    other_ring = chat_token(KeyRing.generate("other"), patient_id, utcnow())
    # A reply token has the same shape, under another purpose's key.
    reply = reply_token(ring, patient_id, utcnow())
    nobody = chat_token(ring, uuid.uuid4(), utcnow())
    for token in (forged, expired, other_ring, reply, nobody, good[:-1], ""):
        assert await refused(client, {"token": token}) == [{"message": "invalid token"}], token
    assert read_chat_token(ring, good, utcnow()) == patient_id


async def test_a_token_for_patient_a_never_reads_patient_b(
    client: TestClient, db: Database, ring: KeyRing, staff: StaffContext, patients: list[Patient]
) -> None:
    a_id, b_id = (
        await new_patient(db, ring, "Avery Sample"),
        await new_patient(db, ring, "Blake Example"),
    )
    a = await connected(client, chat_token(ring, a_id, utcnow()), patients)
    b = await connected(client, chat_token(ring, b_id, utcnow()), patients)

    b_said = (await b.say("B's question about a refill"))["message"]
    b_conversation = await chat_conversation(db, b_id)
    reply_to_b = await staff_reply(client, staff, b_conversation, "B: your refill is ready")
    assert (await asyncio.wait_for(b.messages.get(), WAIT_S))["id"] == str(reply_to_b)

    # A's history has nothing of B's, not even from B's own ids as cursors.
    a_said = (await a.say("A's own message"))["message"]
    assert [m["id"] for m in await a.history()] == [a_said["id"]]
    assert [m["id"] for m in await a.history(after=b_said["id"])] == [a_said["id"]]
    assert await a.history(after=a_said["id"]) == []
    # A's socket hears only A's chat: the relay emits in order, so anything of B's would have
    # reached A before A's own reply does.
    a_conversation = await chat_conversation(db, a_id)
    reply_to_a = await staff_reply(client, staff, a_conversation, "A: see you at 3")
    assert (await asyncio.wait_for(a.messages.get(), WAIT_S))["id"] == str(reply_to_a)
    assert a.messages.empty()
    # Nor can A mark B's messages read, or find B's message by B's client id.
    assert await a.call("read", {"message_id": str(reply_to_b)}) == {"ok": True}
    assert (await message_row(db, reply_to_b)).status is not MessageStatus.READ
    replay = await a.say("A again", client_id=b_said["client_id"])
    assert replay["message"]["id"] != b_said["id"] and replay["message"]["body"] == "A again"

    # Staff typing in B's chat conversation shows in B's chat only.
    await typing_to_patient(client.app, str(b_conversation))
    assert await asyncio.wait_for(b.typing.get(), WAIT_S) == {"from": "clinic"}
    await typing_to_patient(client.app, str(a_conversation))
    assert await asyncio.wait_for(a.typing.get(), WAIT_S) == {"from": "clinic"}
    assert b.typing.empty()


# --- messages both ways -------------------------------------------------------------------


async def test_messages_both_ways_with_typing_and_read_receipts(
    client: TestClient, db: Database, ring: KeyRing, staff: StaffContext, patients: list[Patient]
) -> None:
    fixture = json.loads(FIXTURE.read_text())
    patient_id = await new_patient(db, ring)
    patient = await connected(client, chat_token(ring, patient_id, utcnow()), patients)
    async with StaffSocket(client) as desk:
        answer = await patient.call(fixture["event"], fixture["data"])
        item = answer["message"]
        assert answer["ok"] is True and item["from"] == "patient"
        assert item["body"] == fixture["data"]["body"]
        assert item["client_id"] == fixture["data"]["client_id"]
        new = await desk.next("message:new", message_id=item["id"])
        conversation_id = new["conversation_id"]
        assert fixture["data"]["body"] not in json.dumps(new)  # ids only to staff screens
        stored = await message_row(db, item["id"])
        assert (stored.channel, stored.direction) == (Channel.CHAT, Direction.INBOUND)
        assert stored.unseal(ring, "body") == fixture["data"]["body"]

        # Typing reaches the staff who have the conversation open.
        assert await desk.sio.call(
            "join_conversation", {"conversation_id": conversation_id}, namespace="/staff"
        ) == {"ok": True}
        await patient.sio.emit("typing", {}, namespace="/chat")
        assert (await desk.next("chat:typing"))["conversation_id"] == conversation_id

        reply_id = await staff_reply(
            client, staff, uuid.UUID(conversation_id), "Yes, 9 to 12. <b>Bring</b> your card."
        )
        shown = await asyncio.wait_for(patient.messages.get(), WAIT_S)
        assert shown["id"] == str(reply_id) and shown["from"] == "clinic"
        assert shown["body"] == "Yes, 9 to 12. <b>Bring</b> your card."  # text, escaped on screen
        assert shown["author"] == staff.display_name
        await desk.next("message:status", message_id=str(reply_id), status="sent")

        assert await patient.call("delivered", {"message_id": str(reply_id)}) == {"ok": True}
        await desk.next("message:status", message_id=str(reply_id), status="delivered")
        assert await patient.call("read", {"message_id": str(reply_id)}) == {"ok": True}
        await desk.next("message:status", message_id=str(reply_id), status="read")
        # Forward only: a late "delivered" does not take it back.
        await patient.call("delivered", {"message_id": str(reply_id)})
    row = await message_row(db, reply_id)
    assert row.status is MessageStatus.READ and row.delivered_at is not None


async def test_reconnecting_catches_up_in_order_exactly_once(
    client: TestClient, db: Database, ring: KeyRing, staff: StaffContext, patients: list[Patient]
) -> None:
    patient_id = await new_patient(db, ring)
    token = chat_token(ring, patient_id, utcnow())
    first = await connected(client, token, patients)
    said = (await first.say("Can I come in today?"))["message"]
    conversation_id = await chat_conversation(db, patient_id)
    seen = await first.history()
    assert [m["id"] for m in seen] == [said["id"]]
    await first.sio.disconnect()

    async with StaffSocket(client) as desk:
        # Away for seconds, not minutes: no fallback; the replies wait in the chat.
        sent = []
        for text in ("Yes.", "Come at 3.", "Bring your insurance card."):
            sent.append(str(await staff_reply(client, staff, conversation_id, text)))
            await desk.next("message:status", message_id=sent[-1], status="sent")

    again = await connected(client, token, patients)
    missed = await again.history(after=seen[-1]["id"])
    assert [m["id"] for m in missed] == sent
    assert [m["body"] for m in missed] == ["Yes.", "Come at 3.", "Bring your insurance card."]
    everything = await again.history()
    assert [m["id"] for m in everything] == [said["id"], *sent]
    assert await again.history(after=sent[-1]) == []
    assert again.messages.empty()  # nothing arrives twice live


# --- limits -------------------------------------------------------------------------------


async def test_messages_over_the_size_limit_are_refused(
    client: TestClient, db: Database, ring: KeyRing, patients: list[Patient]
) -> None:
    patient_id = await new_patient(db, ring)
    patient = await connected(client, chat_token(ring, patient_id, utcnow()), patients)
    too_long = await patient.say("x" * (MAX_CHAT_CHARS + 1))
    assert too_long["error"]["code"] == "too_long"
    assert str(MAX_CHAT_CHARS) in too_long["error"]["message"]
    assert (await patient.say("   "))["error"]["code"] == "invalid"
    assert (await patient.call("message", {"body": "hi", "client_id": "x"}))["error"]["code"] == (
        "invalid"
    )
    assert await count_inbound(db) == 0
    assert (await patient.say("y" * MAX_CHAT_CHARS))["ok"] is True
    assert await count_inbound(db) == 1


async def test_a_connection_over_its_rate_is_refused_and_told(
    client: TestClient, db: Database, ring: KeyRing, patients: list[Patient]
) -> None:
    patient_id = await new_patient(db, ring)
    patient = await connected(client, chat_token(ring, patient_id, utcnow()), patients)
    answers = [await patient.say(f"message {n}") for n in range(6)]
    assert [a.get("ok") for a in answers[:5]] == [True] * 5
    assert answers[5]["error"]["code"] == "rate_limited"
    assert (await asyncio.wait_for(patient.errors.get(), WAIT_S))["code"] == "rate_limited"
    assert await count_inbound(db) == 5


async def test_resending_a_client_id_stores_the_message_once(
    client: TestClient, db: Database, ring: KeyRing, patients: list[Patient]
) -> None:
    patient_id = await new_patient(db, ring)
    patient = await connected(client, chat_token(ring, patient_id, utcnow()), patients)
    cid = new_cid()
    first = await patient.say("Is parking free?", client_id=cid)
    again = await patient.say("Is parking free?", client_id=cid)
    assert first["message"] == again["message"]
    assert await count_inbound(db) == 1
    async with db.reader() as session:
        events = (
            await session.scalars(select(InboundEvent).where(InboundEvent.provider == "chat"))
        ).all()
    assert [e.provider_event_id for e in events] == [f"{patient_id}:{cid}"]
    assert b"parking" not in (events[0].payload_enc or b"")  # the raw event is encrypted
