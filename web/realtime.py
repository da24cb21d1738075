"""socket.io at /socket.io/: namespace /staff for the inbox (authenticated by the session
cookie), /chat for patients (web/chat.py). Events cross processes through
Redis; rooms are team:<id>, staff:<id>, conversation:<id>, and journeys (coordinators and
admins: journey progress)."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

import socketio
from aiohttp import web
from sqlalchemy import select

from hub.enums import Role
from hub.inbox.access import StaffContext
from hub.inbox.actions.conversations import visible_conversation
from hub.inbox.actions.staff import REVOKED_TOPIC, ROOMS_TOPIC, do_load_staff
from hub.inbox.denials import Denial, watching_denials
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Team
from hub.journeys.reporting import PROGRESS_ROOM
from hub.notify import STAFF_NAMESPACE, UNROUTED_ROOM, room_for_team
from web.access_audit import audit_quietly
from web.chat import install_chat
from web.keys import DB, PRESENCE, RING, SESSIONS, SETTINGS
from web.sessions import COOKIE_NAME
from web.tasks import hand_out_soon, run_soon
from worker.effects import ClosableRedisManager, socketio_channel

REVOKED_EVENT = REVOKED_TOPIC.removeprefix("notify:")
ROOMS_EVENT = ROOMS_TOPIC.removeprefix("notify:")
NOT_FOUND = {"error": {"status": 404, "message": "No such conversation."}}


def _header(environ: dict[str, Any], name: str) -> str | None:
    """A handshake header, from the WSGI-style environ or the aiohttp request behind it."""
    value = environ.get("HTTP_" + name.upper().replace("-", "_"))
    if value is None and (request := environ.get("aiohttp.request")) is not None:
        value = request.headers.get(name)
    return str(value) if value else None


def _cookie(environ: dict[str, Any]) -> str | None:
    raw = _header(environ, "Cookie")
    if raw is None:
        return None
    try:
        jar = SimpleCookie(raw)
    except CookieError:
        return None
    morsel = jar.get(COOKIE_NAME)
    return morsel.value if morsel else None


def _foreign_origin(environ: dict[str, Any], public_url: str) -> bool:
    """A browser page from another site opening a staff socket with the staff member's cookie
    (cross-site WebSocket hijacking). engine.io checks no Origin on WebSocket handshakes when
    CORS handling is off, so the staff namespace does: a browser's Origin must name this hub
    (as reached, or its public address). Clients that send no Origin are not browsers."""
    origin = _header(environ, "Origin")
    if origin is None:
        return False
    netloc = urlsplit(origin).netloc.lower()
    allowed = {urlsplit(public_url).netloc.lower()}
    if (host := _header(environ, "Host")) is not None:  # a page cannot choose it
        allowed.add(host.lower())
    return netloc not in allowed


def rooms_for(role: Role, team_ids: Collection[object]) -> set[str]:
    """The broadcast rooms a role and teams give (not the person's own room, nor the
    conversations they open). An admin's ``team_ids`` are every team."""
    rooms = {room_for_team(str(team_id)) for team_id in team_ids}
    if role is Role.ADMIN:
        rooms.add(UNROUTED_ROOM)
    if role in (Role.COORDINATOR, Role.ADMIN):  # only they have the journeys page
        rooms.add(PROGRESS_ROOM)
    return rooms


class StaffNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    def __init__(self, app: web.Application) -> None:
        super().__init__(STAFF_NAMESPACE)
        self.app = app

    async def _ctx(self, sid: str) -> StaffContext | None:
        """The person behind a socket, if their session is still alive (idle timeout and
        absolute lifetime apply to sockets too; a heartbeat is not activity)."""
        saved = await self.get_session(sid)
        session = await self.app[SESSIONS].load(saved.get("token"), touch=False)
        if session is None:
            await self.disconnect(sid)
            return None
        return await do_load_staff(self.app[DB], session.staff_id)

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if _foreign_origin(environ, self.app[SETTINGS].public_url):
            raise socketio.exceptions.ConnectionRefusedError("not from this hub's pages")
        token = _cookie(environ)
        session = await self.app[SESSIONS].load(token, touch=False)
        if session is None:
            raise socketio.exceptions.ConnectionRefusedError("sign in first")
        ctx = await do_load_staff(self.app[DB], session.staff_id)
        if ctx is None:
            raise socketio.exceptions.ConnectionRefusedError("account disabled")
        if ctx.must_change_password or ctx.must_set_up_second_factor:
            # Held on one page until done (web/auth.py), and kept off the live inbox too.
            raise socketio.exceptions.ConnectionRefusedError("finish signing in first")
        await self.save_session(
            sid, {"token": token, "staff_id": str(ctx.staff_id), "name": ctx.display_name}
        )
        await self.enter_room(sid, f"staff:{ctx.staff_id}")
        for room in await self._rooms_for(ctx):
            await self.enter_room(sid, room)
        await self.app[PRESENCE].seen(ctx.staff_id, sid)
        hand_out_soon(self.app, ctx.staff_id)  # coming online frees nothing but takes backlog

    async def _rooms_for(self, ctx: StaffContext) -> set[str]:
        if ctx.is_admin:
            async with self.app[DB].reader() as db_session:
                return rooms_for(ctx.role, (await db_session.scalars(select(Team.id))).all())
        return rooms_for(ctx.role, ctx.team_ids)

    async def move_rooms(self, sid: str, role: Role, team_ids: Collection[object]) -> None:
        """Bring a live socket's rooms in line with the person's new role and teams: rooms of
        a team taken away are left, new ones joined, before the next event is handled. Open
        conversations they may no longer see are left just after (that takes a read)."""
        wanted = rooms_for(role, team_ids)
        for room in self.rooms(sid):
            if (room.startswith("team:") or room == PROGRESS_ROOM) and room not in wanted:
                await self.leave_room(sid, room)
        for room in wanted - set(self.rooms(sid)):
            await self.enter_room(sid, room)
        run_soon(self.app, self._leave_hidden_conversations(sid))

    async def _leave_hidden_conversations(self, sid: str) -> None:
        ctx = await self._ctx(sid)
        if ctx is None:
            return
        for room in self.rooms(sid):
            if not room.startswith("conversation:"):
                continue
            try:
                async with self.app[DB].reader() as db_session:
                    await visible_conversation(
                        db_session, ctx, uuid.UUID(room.removeprefix("conversation:"))
                    )
            except (ValueError, NotFound):
                await self._presence(sid, room, await self.get_session(sid), "left")
                await self.leave_room(sid, room)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        saved = await self.get_session(sid)
        if "staff_id" not in saved:
            return
        for room in self.rooms(sid):
            if room.startswith("conversation:"):
                await self._presence(sid, room, saved, "left")
        await self.app[PRESENCE].gone(uuid.UUID(saved["staff_id"]), sid)

    async def on_heartbeat(self, sid: str, data: Any = None) -> dict[str, bool]:
        ctx = await self._ctx(sid)
        if ctx is None:
            return {"ok": False}
        await self.app[PRESENCE].seen(ctx.staff_id, sid)
        return {"ok": True}

    async def on_join_conversation(self, sid: str, data: Any) -> dict[str, Any]:
        ctx = await self._ctx(sid)
        if ctx is None:
            return {"error": {"status": 401, "message": "Your session ended."}}
        denied: list[Denial] = []
        try:
            cid = uuid.UUID(str((data or {}).get("conversation_id")))
            with watching_denials() as denied:
                async with self.app[DB].reader() as db_session:
                    await visible_conversation(db_session, ctx, cid)
        except (ValueError, NotFound):
            await audit_quietly(self.app, denied, "socket")
            return NOT_FOUND
        room = f"conversation:{cid}"
        await self.enter_room(sid, room)
        await self._presence(sid, room, await self.get_session(sid), "viewing")
        return {"ok": True}

    async def on_leave_conversation(self, sid: str, data: Any) -> None:
        room = f"conversation:{(data or {}).get('conversation_id')}"
        if room in self.rooms(sid):
            await self._presence(sid, room, await self.get_session(sid), "left")
            await self.leave_room(sid, room)

    async def on_here(self, sid: str, data: Any) -> None:
        """Answer a newcomer's "viewing" with one's own, so whoever opens a conversation also
        learns who was already on it (the room's members live in each server's memory only)."""
        room = f"conversation:{(data or {}).get('conversation_id')}"
        if room in self.rooms(sid):
            await self._presence(sid, room, await self.get_session(sid), "viewing")

    async def on_typing(self, sid: str, data: Any) -> None:
        room = f"conversation:{(data or {}).get('conversation_id')}"
        if room in self.rooms(sid):  # only where they were allowed to join
            await self._presence(sid, room, await self.get_session(sid), "typing")

    async def _presence(self, sid: str, room: str, saved: dict[str, Any], state: str) -> None:
        await self.emit(
            "presence",
            {
                "conversation_id": room.removeprefix("conversation:"),
                "staff_id": saved.get("staff_id"),
                "name": saved.get("name"),
                "state": state,
            },
            room=room,
            skip_sid=sid,
        )


class StaffRedisManager(ClosableRedisManager):
    """Every `hub serve` receives each staff event through Redis. Two of them also act on the
    person's sockets held by this process, wherever they are connected: ``staff:revoked``
    (access taken away: deactivation, password reset) disconnects them, so no further
    broadcast reaches them; ``staff:rooms`` (role or teams changed) moves them to the rooms
    they now belong in."""

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        await super()._handle_emit(message)  # the client learns why before it is dropped
        event = message.get("event")
        if event not in (REVOKED_EVENT, ROOMS_EVENT) or message.get("namespace") != STAFF_NAMESPACE:
            return
        room = message.get("room")
        if not isinstance(room, str) or not room.startswith("staff:"):
            return
        namespace = self.server.namespace_handlers.get(STAFF_NAMESPACE)
        for sid, _eio_sid in list(self.get_participants(STAFF_NAMESPACE, room)):
            if event == REVOKED_EVENT:
                await self.server.disconnect(sid, namespace=STAFF_NAMESPACE)
            elif isinstance(namespace, StaffNamespace):
                data: Any = message.get("data")
                if isinstance(data, list | tuple):  # python-socketio sends the args as a list
                    data = data[0] if data else {}
                await namespace.move_rooms(sid, Role(data["role"]), data["team_ids"])


def create_socketio(redis_url: str, app: web.Application) -> socketio.AsyncServer:
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=StaffRedisManager(
            redis_url, channel=socketio_channel(redis_url), ring=app[RING]
        ),
        cors_allowed_origins=[],  # same origin only: the staff UI is served by this app
        logger=False,
        engineio_logger=False,
    )
    sio.register_namespace(StaffNamespace(app))
    # /chat: patients with a signed link, and the relay.
    install_chat(app, sio, redis_url, offline_after_s=app[SETTINGS].chat_offline_s)
    return sio


async def close_socketio(sio: socketio.AsyncServer) -> None:
    await sio.shutdown()
    manager = sio.manager
    if isinstance(manager, ClosableRedisManager):
        await manager.aclose()


class SocketIONotifier:
    def __init__(self, sio: socketio.AsyncServer) -> None:
        self._sio = sio

    async def emit(self, event: str, data: dict[str, Any], room: str) -> None:
        await self._sio.emit(event, data, room=room, namespace=STAFF_NAMESPACE)
