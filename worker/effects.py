"""Releases outbox effects: jobs into RQ, events to staff screens through socket.io's Redis
channel. Used by ``hub serve`` (fast path after a commit, and the relay loop) and by workers."""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import socketio
from redis import Redis
from redis.connection import parse_url
from rq import Queue

from hub.crypto import CryptoError, KeyRing, associated_data
from hub.notify import STAFF_NAMESPACE, Notifier, room_for_team

log = logging.getLogger(__name__)

SEALED_KEY = "sealed"
"""The one field of a message on the socket.io channel: the sealed JSON of python-socketio's."""
SOCKETIO_CHANNEL = "hub-socketio"
"""Redis pub/sub channel shared by every `hub serve` and worker for socket.io events."""


def socketio_channel(redis_url: str) -> str:
    """The socket.io channel of the hub using this Redis db. Pub/sub channels belong to the
    whole server, not to a db: two hubs (or test runs) on db 12 and db 15 of one Redis would
    otherwise see each other's events."""
    db = int(parse_url(redis_url).get("db") or 0)  # type: ignore[no-untyped-call]
    return SOCKETIO_CHANNEL if db == 0 else f"{SOCKETIO_CHANNEL}-{db}"


QUEUE_NAMES = {"urgent": "hub-urgent", "default": "hub-default", "bulk": "hub-bulk"}
"""Payload "queue" value -> RQ queue; workers listen to them in this order."""

JOBS = {
    "job:send_message": ("worker.jobs.send_message", "message_id"),
    "job:fetch_media": ("worker.jobs.fetch_media", "attachment_id"),
    "job:dispatch_batch": ("worker.jobs.dispatch_batch", "run_ids"),
    "job:staff_alert": ("worker.staff_mail.send_staff_alert", "alert"),
    "job:journey_test": ("worker.journey_test.send_journey_test", "test"),
}
"""Outbox topic -> (RQ job function, the payload id it takes)."""


class UnknownTopic(Exception):
    pass


class ClosableRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """python-socketio's Redis manager, with two changes.

    Sealed: every message between processes (a chat line to a patient's other tabs, a
    conversation's tags) is encrypted and authenticated with the key ring before it reaches
    Redis, so whoever can read Redis traffic (a shared Redis, a MONITOR, a replica) reads no
    PHI, and nobody who can only publish to Redis can make a hub emit to staff or patients:
    a message that does not open under the ring is dropped.

    Closable: the stock manager has no close, and its listener task and its first publish can
    each connect, the later one replacing (and orphaning) the other's client. Keep every
    client it made so shutdown closes them all."""

    def __init__(self, *args: Any, ring: KeyRing, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ring = ring
        self._clients: list[Any] = []

    def _aad(self) -> bytes:
        # Bound to the channel: a message sealed for one hub's channel does not open on another.
        return associated_data("socketio", "channel", self.channel)

    async def _publish(self, data: Any) -> Any:
        sealed = self._ring.encrypt(self.json.dumps(data).encode("utf-8"), self._aad())
        return await super()._publish({SEALED_KEY: base64.b64encode(sealed).decode("ascii")})

    async def _listen(self) -> AsyncIterator[dict[str, Any]]:
        async for raw in super()._listen():
            data = self._open(raw)
            if data is not None:
                yield data

    def _open(self, raw: Any) -> dict[str, Any] | None:
        try:
            envelope = self.json.loads(raw)
            blob = base64.b64decode(envelope[SEALED_KEY], validate=True)
            data = self.json.loads(self._ring.decrypt(blob, self._aad()))
        except (ValueError, TypeError, KeyError, CryptoError):
            # No content in the log: it may be a forgery or another hub's traffic.
            log.warning("dropped a socket.io message that is not sealed with this key ring")
            return None
        return data if isinstance(data, dict) else None

    def _redis_connect(self) -> None:
        super()._redis_connect()
        self._clients.extend([self.pubsub, self.redis])

    async def aclose(self) -> None:
        task = getattr(self, "thread", None)
        if isinstance(task, asyncio.Task):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for client in self._clients:
            await client.aclose()
        self._clients.clear()


class RedisNotifier:
    """A write-only socket.io manager: emits reach clients of every `hub serve` process."""

    def __init__(self, redis_url: str, ring: KeyRing) -> None:
        self._manager = ClosableRedisManager(
            redis_url, channel=socketio_channel(redis_url), write_only=True, ring=ring
        )

    async def emit(self, event: str, data: dict[str, Any], room: str) -> None:
        await self._manager.emit(event, data, room=room, namespace=STAFF_NAMESPACE)

    async def aclose(self) -> None:
        await self._manager.aclose()


class OutboxSink:
    def __init__(self, connection: Redis, notifier: Notifier) -> None:
        self._queues = {
            key: Queue(name, connection=connection) for key, name in QUEUE_NAMES.items()
        }
        self._notifier = notifier

    async def release(self, event_id: uuid.UUID, topic: str, payload: dict[str, Any]) -> None:
        if topic.startswith("notify:"):
            room = payload.get("room") or room_for_team(payload.get("team_id"))
            await self._notifier.emit(topic.removeprefix("notify:"), payload, room)
            return
        if topic not in JOBS:
            raise UnknownTopic(f"no handler for outbox topic {topic!r}")
        func, key = JOBS[topic]
        queue = self._queues.get(str(payload.get("queue", "default")), self._queues["default"])
        delay = float(payload.get("delay_s") or 0)
        await asyncio.to_thread(self._enqueue, queue, func, str(payload[key]), event_id, delay)

    @staticmethod
    def _enqueue(queue: Queue, func: str, arg: str, event_id: uuid.UUID, delay: float) -> None:
        # The outbox event id as job id: a re-released event replaces its own job instead of
        # adding a second one; the job's claim step makes any duplicate run a no-op anyway.
        job_id = f"outbox-{event_id}"
        if delay > 0:
            queue.enqueue_in(timedelta(seconds=delay), func, arg, job_id=job_id)
        else:
            queue.enqueue(func, arg, job_id=job_id)
