"""What crosses Redis between processes: socket.io's pub/sub channel carries chat lines (to a
patient's other tabs and other `hub serve` processes) and staff events. Whoever reads that
channel reads no PHI, and whoever can only publish to it cannot make a hub emit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.links import chat_token
from hub.notify import STAFF_NAMESPACE
from tests.conftest import make_staff
from tests.test_chat import WAIT_S, Patient, StaffSocket, new_patient
from web.app import create_app
from web.keys import RING
from worker.effects import RedisNotifier, socketio_channel

pytestmark = pytest.mark.usefixtures("fresh_redis")

MARKER = "Zorblatt-Synthetic-Marker-7731"
"""A synthetic string no hub text contains: found on the channel means PHI crossed in clear."""


@pytest.fixture
async def client(db: Database, settings: Settings, aiohttp_client: Any) -> TestClient:
    await make_staff(db, "ada.admin@demo-clinic.example.org", role="admin")
    app = create_app(replace(settings, public_url="http://127.0.0.1"), db=db)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


class Channel:
    """A raw subscriber to the hub's socket.io channel: what a Redis reader would see."""

    def __init__(self, redis_url: str) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        self.pubsub = self.redis.pubsub()
        self.name = socketio_channel(redis_url)
        self.seen: list[bytes] = []

    async def __aenter__(self) -> Channel:
        await self.pubsub.subscribe(self.name)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pubsub.aclose()
        await self.redis.aclose()

    async def drain_until(self, count: int) -> list[bytes]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while len(self.seen) < count:
            left = deadline - loop.time()
            assert left > 0, f"only {len(self.seen)} messages crossed the channel"
            # None also stands for a subscribe confirmation, so None alone is not the end.
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            if message is not None:
                self.seen.append(message["data"])
        return self.seen


@pytest.fixture
async def patients() -> AsyncIterator[list[Patient]]:
    made: list[Patient] = []
    yield made
    for p in made:
        if p.sio.connected:
            await p.sio.disconnect()


async def test_a_chat_line_crosses_redis_sealed_and_still_reaches_the_other_tab(
    client: TestClient, db: Database, redis_url: str, patients: list[Patient]
) -> None:
    ring: KeyRing = client.app[RING]
    patient_id = await new_patient(db, ring)
    token = chat_token(ring, patient_id, utcnow())
    first, second = Patient(), Patient()
    patients.extend([first, second])
    async with Channel(redis_url) as channel:
        await first.connect(client, token)
        await second.connect(client, token)
        answer = await first.say(f"{MARKER}: my chest hurts since the new dose")

        shown = await asyncio.wait_for(second.messages.get(), WAIT_S)
        assert shown["id"] == answer["message"]["id"]
        assert MARKER in shown["body"]  # the other tab got the words, through the channel
        raw = b"".join(await channel.drain_until(1))
    assert MARKER.encode() not in raw
    assert b"chest" not in raw
    envelope = json.loads(channel.seen[0])
    assert list(envelope) == ["sealed"]


async def test_events_from_another_process_open_and_forged_ones_are_dropped(
    client: TestClient, db: Database, redis_url: str
) -> None:
    ring: KeyRing = client.app[RING]
    async with StaffSocket(client) as staff:
        staff.sio.on(
            "conversation:updated",
            staff.events.setdefault("conversation:updated", asyncio.Queue()).put_nowait,
            namespace=STAFF_NAMESPACE,
        )
        room = "team:unrouted"  # admins are in it
        forged = {
            "method": "emit",
            "event": "conversation:updated",
            "data": {"conversation_id": "forged", "tags": [MARKER]},
            "namespace": STAFF_NAMESPACE,
            "room": room,
            "skip_sid": None,
            "callback": None,
            "host_id": "someone-else",
        }
        publisher = aioredis.Redis.from_url(redis_url)
        worker = RedisNotifier(redis_url, ring)  # as a worker process emits
        outsider = RedisNotifier(redis_url, KeyRing.generate("other"))  # a ring not ours
        try:
            async with Channel(redis_url) as channel:
                await publisher.publish(socketio_channel(redis_url), json.dumps(forged))
                await outsider.emit("conversation:updated", {"conversation_id": "outsider"}, room)
                payload = {"conversation_id": "real", "tags": [MARKER]}
                await worker.emit("conversation:updated", payload, room)
                got = await staff.next("conversation:updated")
                raw = b"".join(await channel.drain_until(3))
        finally:
            await publisher.aclose()
            await worker.aclose()
            await outsider.aclose()
    # The first event to arrive is the sealed one: the forgery and the outsider's, published
    # before it on the same channel, were dropped.
    assert got == payload
    assert raw.count(MARKER.encode()) == 1  # only in the forgery's own clear text
