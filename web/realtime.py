"""socket.io at /socket.io/: namespaces /staff and /chat, across processes through Redis."""

from __future__ import annotations

from typing import Any

import socketio

from hub.notify import STAFF_NAMESPACE
from worker.effects import SOCKETIO_CHANNEL, ClosableRedisManager

CHAT_NAMESPACE = "/chat"


def create_socketio(redis_url: str) -> socketio.AsyncServer:
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=ClosableRedisManager(redis_url, channel=SOCKETIO_CHANNEL),
        cors_allowed_origins=[],  # same origin only: the staff UI is served by this app
        logger=False,
        engineio_logger=False,
    )

    async def refuse(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        # Staff sign-in (sessions) and the patient chat link arrive with the inbox and chat
        # channels; until then nobody may listen.
        raise socketio.exceptions.ConnectionRefusedError("sign in first")

    sio.on("connect", refuse, namespace=STAFF_NAMESPACE)
    sio.on("connect", refuse, namespace=CHAT_NAMESPACE)
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
