"""Web chat at the edge: socket.io namespace /chat for patients (a signed chat link is the only
way in), the relay that carries clinic messages from workers to patients' sockets, and the
chat's pages (the patient's chat, staff's "Send chat link").

Rooms: ``chat:<patient id>`` holds every socket of one patient (several tabs, several
`hub serve` processes through socket.io's Redis manager). Presence lives in Redis too, so the
relay in any process knows whether the patient is there."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import socketio
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from hub.channels.base import MalformedPayload
from hub.channels.chat.adapter import (
    DEFAULT_CHAT_OFFLINE_S,
    RELAY_KEY,
    MessageTooLong,
    RelayNote,
    classify,
    parse_chat_message,
    parse_message_ref,
)
from hub.channels.registry import connected_providers
from hub.consent.exceptions import ConsentRefused
from hub.db import utcnow
from hub.enums import Channel, MessageStatus
from hub.errors import HubError
from hub.inbox.actions import do_apply_status
from hub.inbox.actions.chat_fallback import do_chat_offline, do_send_chat_invite
from hub.inbox.actions.chat_intake import (
    do_chat_conversation,
    do_chat_history,
    do_chat_patient,
    do_chat_patient_of,
    do_chat_receipt,
    do_load_relayed,
    do_receive_chat,
)
from hub.inbox.exceptions import NotFound
from hub.links import chat_token_expiry, read_chat_token
from hub.notify import STAFF_NAMESPACE
from hub.outbox import release_events
from web.auth import current
from web.keys import DB, REDIS, RING, SETTINGS, SINK, SIO
from web.render import redirect_with, render
from web.tasks import assign_soon, release_soon

log = logging.getLogger(__name__)

NAMESPACE = "/chat"
MESSAGES_PER_WINDOW = 5
"""Messages one connection may send per ``RATE_WINDOW_S`` (a burst, refilled evenly)."""
EVENTS_PER_WINDOW = 40
"""Other events (typing, receipts, history, heartbeats) one connection may send per window."""
RATE_WINDOW_S = 10.0
TYPING_EVERY_S = 2.0
"""Typing events forwarded to staff at most this often per connection."""
STALE_AFTER_S = 75
"""A socket that sent nothing (the page sends a heartbeat every 25 s) for this long is gone:
its process may have died without a disconnect."""
PRESENCE_TTL_S = 8 * 24 * 3600
"""Presence outlives the 7-day link, then Redis forgets it."""
RELAY_WAIT_S = 2
"""Longest a relay's BRPOP blocks before it looks again: also the longest shutdown waits for
it when a cancel is lost (redis-py swallows one that lands while it connects)."""

RATE_LIMITED = {"code": "rate_limited", "message": "You are sending messages too fast; wait."}
EXPIRED = {"code": "expired", "message": "This chat link has expired; ask the clinic for another."}


def room_of(patient_id: uuid.UUID | str) -> str:
    return f"chat:{patient_id}"


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class TokenBucket:
    """``capacity`` events at once, refilled at ``capacity / window_s`` per second."""

    def __init__(self, capacity: int, window_s: float) -> None:
        self.capacity, self.rate = float(capacity), capacity / window_s
        self.tokens, self.at = float(capacity), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass(frozen=True)
class PresenceState:
    connected: bool
    """A socket of the patient is open (and has been heard from recently)."""
    last_seen: float | None
    """Epoch seconds of the patient's last sign of life in the chat; None: never."""


class ChatPresence:
    """``chat:online:<patient id>``: a hash of socket id -> last heard (epoch seconds), and
    ``last`` for when the patient last left."""

    PREFIX = "chat:online:"

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def seen(self, patient_id: uuid.UUID, sid: str) -> None:
        key = self.PREFIX + str(patient_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, sid, time.time())
            pipe.expire(key, PRESENCE_TTL_S)
            await pipe.execute()

    async def gone(self, patient_id: uuid.UUID, sid: str) -> None:
        key = self.PREFIX + str(patient_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(key, sid)
            pipe.hset(key, "last", time.time())
            pipe.expire(key, PRESENCE_TTL_S)
            await pipe.execute()

    async def state(self, patient_id: uuid.UUID) -> PresenceState:
        raw = await self.redis.hgetall(self.PREFIX + str(patient_id))
        values = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}
        cutoff = time.time() - STALE_AFTER_S
        connected = any(at >= cutoff for sid, at in values.items() if sid != "last")
        return PresenceState(connected, max(values.values(), default=None))


class ChatNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    def __init__(self, app: web.Application) -> None:
        super().__init__(NAMESPACE)
        self.app = app
        self._limits: dict[str, tuple[TokenBucket, TokenBucket]] = {}
        self._typing_at: dict[str, float] = {}

    def _presence(self) -> ChatPresence:
        return ChatPresence(self.app[REDIS])

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        now = utcnow()
        patient_id = read_chat_token(self.app[RING], token, now) if isinstance(token, str) else None
        if patient_id is None or not await do_chat_patient(self.app[DB], patient_id):
            # One answer for forged, expired and unknown: a probe learns nothing.
            raise socketio.exceptions.ConnectionRefusedError("invalid token")
        expires = chat_token_expiry(self.app[RING], str(token))
        assert expires is not None
        await self.save_session(
            sid, {"patient_id": str(patient_id), "expires": expires.timestamp()}
        )
        await self.enter_room(sid, room_of(patient_id))
        self._limits[sid] = (
            TokenBucket(MESSAGES_PER_WINDOW, RATE_WINDOW_S),
            TokenBucket(EVENTS_PER_WINDOW, RATE_WINDOW_S),
        )
        await self._presence().seen(patient_id, sid)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        self._limits.pop(sid, None)
        self._typing_at.pop(sid, None)
        saved = await self.get_session(sid)
        if "patient_id" in saved:
            await self._presence().gone(uuid.UUID(saved["patient_id"]), sid)

    async def _patient(self, sid: str, *, message: bool = False) -> uuid.UUID | dict[str, Any]:
        """The patient behind a socket, or the error to answer: the link expired while the
        page was open, or the connection is over its rate."""
        saved = await self.get_session(sid)
        if "patient_id" not in saved:
            return _error("invalid", "Connect with a chat link first.")
        # The hub's clock, as the link was checked by at connect (not the process's own).
        if saved["expires"] < utcnow().timestamp():
            await self.emit("error", EXPIRED, to=sid)
            await self.disconnect(sid)
            return {"error": EXPIRED}
        limits = self._limits.get(sid)
        if limits is not None and not limits[0 if message else 1].take():
            if message:  # the patient is told; other events are only refused
                await self.emit("error", RATE_LIMITED, to=sid)
            return {"error": RATE_LIMITED}
        patient_id = uuid.UUID(saved["patient_id"])
        await self._presence().seen(patient_id, sid)
        return patient_id

    async def on_message(self, sid: str, data: Any = None) -> dict[str, Any]:
        patient_id = await self._patient(sid, message=True)
        if isinstance(patient_id, dict):
            return patient_id
        try:
            inbound = parse_chat_message(data)
        except MessageTooLong as exc:
            return _error("too_long", str(exc))
        except MalformedPayload as exc:
            return _error("invalid", str(exc))
        app = self.app
        settings = app[SETTINGS]
        try:
            received = await do_receive_chat(
                app[DB],
                app[RING],
                patient_id,
                inbound,
                clinic_name=settings.clinic_name,
                clinic=settings.clinic,
            )
        except NotFound:
            await self.disconnect(sid)
            return _error("invalid", "This chat is closed.")
        item = received.item.to_json()
        if not received.duplicate:
            release_soon(app, received.effect_ids)
            assign_soon(app, received.conversation_id, received.assign_to_staff_id)
            # The patient's other tabs show it too.
            await self.emit("message", item, room=room_of(patient_id), skip_sid=sid)
        return {"ok": True, "message": item}

    async def on_history(self, sid: str, data: Any = None) -> dict[str, Any]:
        patient_id = await self._patient(sid)
        if isinstance(patient_id, dict):
            return patient_id
        try:
            after = parse_message_ref(data, "after")
        except MalformedPayload as exc:
            return _error("invalid", str(exc))
        history = await do_chat_history(self.app[DB], self.app[RING], patient_id, after)
        return {"messages": [i.to_json() for i in history.items], "more": history.more}

    async def on_read(self, sid: str, data: Any = None) -> dict[str, Any]:
        return await self._receipt(sid, data, MessageStatus.READ)

    async def on_delivered(self, sid: str, data: Any = None) -> dict[str, Any]:
        return await self._receipt(sid, data, MessageStatus.DELIVERED)

    async def _receipt(self, sid: str, data: Any, status: MessageStatus) -> dict[str, Any]:
        patient_id = await self._patient(sid)
        if isinstance(patient_id, dict):
            return patient_id
        try:
            message_id = parse_message_ref(data)
        except MalformedPayload as exc:
            return _error("invalid", str(exc))
        if message_id is None:
            return _error("invalid", "message_id is missing")
        effects = await do_chat_receipt(self.app[DB], patient_id, message_id, status)
        release_soon(self.app, effects)
        return {"ok": True}

    async def on_typing(self, sid: str, data: Any = None) -> None:
        patient_id = await self._patient(sid)
        now = time.monotonic()
        if isinstance(patient_id, dict) or now - self._typing_at.get(sid, 0) < TYPING_EVERY_S:
            return
        self._typing_at[sid] = now
        conversation_id = await do_chat_conversation(self.app[DB], patient_id)
        if conversation_id is not None:
            await self.server.emit(
                "chat:typing",
                {"conversation_id": str(conversation_id)},
                room=f"conversation:{conversation_id}",
                namespace=STAFF_NAMESPACE,
            )

    async def on_heartbeat(self, sid: str, data: Any = None) -> dict[str, Any]:
        patient_id = await self._patient(sid)
        return patient_id if isinstance(patient_id, dict) else {"ok": True}


async def typing_to_patient(app: web.Application, conversation_id: str) -> None:
    """A staff member is typing in a chat conversation: show it in the patient's chat."""
    try:
        patient_id = await do_chat_patient_of(app[DB], uuid.UUID(conversation_id))
    except ValueError:
        return
    if patient_id is not None:
        room = room_of(patient_id)
        await app[SIO].emit("typing", {"from": "clinic"}, room=room, namespace=NAMESPACE)


class ChatRelay:
    """Takes clinic messages workers handed to the chat (``RELAY_KEY``) and emits them to the
    patient's room, reporting each like a carrier would: sent, or failed ``chat_offline``
    (with the notice on another channel) when the patient has been away longer than
    ``offline_after_s``. Each queued id goes to one `hub serve` process."""

    def __init__(self, app: web.Application, redis_url: str, *, offline_after_s: float) -> None:
        self.app, self.redis_url, self.offline_after_s = app, redis_url, offline_after_s
        self._task: asyncio.Task[None] | None = None
        self._redis: Redis | None = None
        self._stopping = asyncio.Event()
        self._relaying = False

    async def start(self, app: web.Application) -> None:
        # Its own connection: a blocking BRPOP would hold up everyone sharing one. Reads may
        # wait as long as the BRPOP does.
        self._redis = Redis.from_url(self.redis_url, socket_timeout=RELAY_WAIT_S + 5)
        with contextlib.suppress(RedisError, OSError):
            await self._redis.ping()  # connected before the loop, where a cancel is never lost
        self._task = asyncio.create_task(self._run())

    async def stop(self, app: web.Application) -> None:
        self._stopping.set()
        if self._task is not None:
            # A relay in progress finishes (cancelling mid-query would leave its connection
            # unusable); a wait on Redis ends now.
            if not self._relaying:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._redis is not None:
            await self._redis.aclose()

    async def _run(self) -> None:
        assert self._redis is not None
        while not self._stopping.is_set():
            try:
                popped = await self._redis.brpop([RELAY_KEY], timeout=RELAY_WAIT_S)
            except (RedisError, OSError):
                log.warning("chat relay cannot reach Redis; trying again", exc_info=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1)
                continue
            if popped is None:
                continue
            note = RelayNote.decode(popped[1])
            if note is None:
                log.warning("chat relay dropped a malformed note")
                continue
            self._relaying = True
            try:
                await self.relay(note)
            except Exception:
                log.exception("chat relay failed", extra={"message_id": str(note.message_id)})
            finally:
                self._relaying = False

    async def relay(self, note: RelayNote) -> None:
        app = self.app
        loaded = await do_load_relayed(app[DB], app[RING], note.message_id)
        if loaded is None or loaded.send_attempts != note.attempt:
            return  # gone, or a later attempt replaced this one
        presence = await ChatPresence(app[REDIS]).state(loaded.patient_id)
        away = presence.last_seen is None or time.time() - presence.last_seen > self.offline_after_s
        settings = app[SETTINGS]
        if not presence.connected and away:
            effects = await do_chat_offline(
                app[DB],
                app[RING],
                note,
                public_url=settings.public_url,
                clinic_name=settings.clinic_name,
                available=connected_providers(settings),
            )
        else:
            room = room_of(loaded.patient_id)
            await app[SIO].emit("message", loaded.item.to_json(), room=room, namespace=NAMESPACE)
            effects = await do_apply_status(
                app[DB],
                note.status(MessageStatus.SENT),
                classify,
                retry_base_s=settings.send_retry_base_s,
            )
        await release_events(app[DB], app[SINK], effects)


def install_chat(
    app: web.Application,
    sio: socketio.AsyncServer,
    redis_url: str,
    *,
    offline_after_s: float = DEFAULT_CHAT_OFFLINE_S,
) -> None:
    """The /chat namespace and the relay, started after the app's resources and stopped
    before they close."""
    sio.register_namespace(ChatNamespace(app))
    relay = ChatRelay(app, redis_url, offline_after_s=offline_after_s)
    app.on_startup.append(relay.start)
    app.on_shutdown.append(relay.stop)


# -- pages ----------------------------------------------------------------------------------


async def chat_page(request: web.Request) -> web.Response:
    """The patient's chat, opened from the link the clinic sent. No sign-in: the link is the
    key, and the page says plainly when it no longer works."""
    app, token = request.app, request.match_info["token"]
    now = utcnow()
    patient_id = read_chat_token(app[RING], token, now)
    if patient_id is None or not await do_chat_patient(app[DB], patient_id):
        expires = chat_token_expiry(app[RING], token)
        expired = expires is not None and expires < now
        return render(request, "chat.html", status=404, token=None, expired=expired)
    return render(request, "chat.html", token=token, expired=False)


async def send_chat_invite(request: web.Request) -> web.StreamResponse:
    """Staff's "Send chat link": the chat_invite template with a fresh link, by SMS or email."""
    form = await request.post()
    back = f"/conversations/{request.match_info['id']}"
    try:
        conversation_id = uuid.UUID(request.match_info["id"])
        raw = str(form.get("channel") or "")
        channel = Channel(raw) if raw else None
    except ValueError:
        raise web.HTTPNotFound() from None
    settings = request.app[SETTINGS]
    if channel is not None and channel not in connected_providers(settings):
        raise redirect_with(back, "error", f"Not sent: {channel.value} is not set up on this hub")
    try:
        queued = await do_send_chat_invite(
            request.app[DB],
            request.app[RING],
            current(request),
            conversation_id,
            public_url=settings.public_url,
            clinic=settings.clinic,
            channel=channel,
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except (ConsentRefused, ValueError, HubError) as exc:
        raise redirect_with(back, "error", f"Chat link not sent: {exc}") from None
    release_soon(request.app, queued.effect_ids)
    raise redirect_with(back, "ok", "Chat link queued.")
