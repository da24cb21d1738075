"""A live staff socket follows the person's role and teams: an admin who moves someone to
another team stops the old team's events reaching their open inbox at once, not at their next
reconnect."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

import pytest
import socketio
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from hub.audit import Actor
from hub.config import Settings
from hub.db import Database
from hub.enums import Role
from hub.inbox import actions
from hub.inbox.actions.staff import do_edit_staff
from hub.inbox.models import Team
from hub.notify import STAFF_NAMESPACE, room_for_team
from hub.outbox import release_events
from tests.conftest import make_staff
from tests.stack import eventually
from tests.staff_helpers import session_cookie, sign_in
from tests.test_staff_lifecycle import assigned_conversation
from web.app import create_app
from web.keys import DB, RING, SINK, SIO
from worker.effects import RedisNotifier

pytestmark = pytest.mark.usefixtures("fresh_redis")

AGENT = "alex.agent@demo-clinic.example.org"
WAIT_S = 10.0


@pytest.fixture
async def client(db: Database, settings: Settings, aiohttp_client: Any) -> TestClient:
    await make_staff(db, AGENT, role="agent", teams=("Front desk",))
    await actions.do_ensure_team(db, Actor.system("test"), "Billing")
    app = create_app(replace(settings, public_url="http://127.0.0.1"), db=db)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


async def team_id(db: Database, name: str) -> uuid.UUID:
    async with db.reader() as session:
        return (await session.scalars(select(Team.id).where(Team.name == name))).one()


async def test_moving_someone_to_another_team_moves_their_open_socket(
    client: TestClient, db: Database, redis_url: str
) -> None:
    front_desk = await assigned_conversation(db, client.app[RING], "Front desk", AGENT)
    await sign_in(client, AGENT)
    received: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    sio = socketio.AsyncClient(reconnection=False)
    for event in ("message:new", "message:status"):
        sio.on(event, lambda d, e=event: received.put_nowait((e, d)), namespace=STAFF_NAMESPACE)
    await sio.connect(
        str(client.make_url("/")),
        namespaces=[STAFF_NAMESPACE],
        headers={"Cookie": f"hub_session={session_cookie(client)}"},
        transports=["websocket"],
    )
    worker = RedisNotifier(redis_url, client.app[RING])  # emits as a worker process does
    try:
        joined = await sio.call(
            "join_conversation", {"conversation_id": str(front_desk)}, namespace=STAFF_NAMESPACE
        )
        assert joined == {"ok": True}
        old_team = room_for_team(str(await team_id(db, "Front desk")))
        new_team = room_for_team(str(await team_id(db, "Billing")))
        await worker.emit("message:new", {"conversation_id": "before"}, old_team)
        assert await asyncio.wait_for(received.get(), WAIT_S) == (
            "message:new",
            {"conversation_id": "before"},
        )

        effects = await do_edit_staff(db, Actor.system("test"), AGENT, teams=["Billing"])
        await release_events(client.app[DB], client.app[SINK], effects)
        # Published after the move, on the same channel: handled after it, in order.
        await worker.emit("message:new", {"conversation_id": "old team"}, old_team)
        # The conversation they had open is another team's now: left once a read says so.
        server, sid = client.app[SIO], sio.get_sid(STAFF_NAMESPACE)
        viewing = f"conversation:{front_desk}"

        async def left() -> bool:
            return viewing not in server.rooms(sid, namespace=STAFF_NAMESPACE)

        await eventually(left, "the socket to leave the old team's conversation")
        await worker.emit("message:status", {"conversation_id": str(front_desk)}, viewing)
        await worker.emit("message:new", {"conversation_id": "new team"}, new_team)

        # The first thing to arrive is the new team's event: the old team's and the old
        # conversation's, sent before it, never reached the socket.
        assert await asyncio.wait_for(received.get(), WAIT_S) == (
            "message:new",
            {"conversation_id": "new team"},
        )
        assert received.empty()
    finally:
        await worker.aclose()
        await sio.disconnect()


async def test_a_role_change_moves_the_socket_into_the_unrouted_queue(
    client: TestClient, db: Database, redis_url: str
) -> None:
    """An agent made admin sees unrouted conversations live without reconnecting."""
    await sign_in(client, AGENT)
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("message:new", received.put_nowait, namespace=STAFF_NAMESPACE)
    await sio.connect(
        str(client.make_url("/")),
        namespaces=[STAFF_NAMESPACE],
        headers={"Cookie": f"hub_session={session_cookie(client)}"},
        transports=["websocket"],
    )
    worker = RedisNotifier(redis_url, client.app[RING])
    try:
        effects = await do_edit_staff(db, Actor.system("test"), AGENT, role=Role.ADMIN)
        await release_events(client.app[DB], client.app[SINK], effects)
        await worker.emit("message:new", {"conversation_id": "unrouted"}, room_for_team(None))
        assert await asyncio.wait_for(received.get(), WAIT_S) == {"conversation_id": "unrouted"}
    finally:
        await worker.aclose()
        await sio.disconnect()
