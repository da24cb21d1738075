"""Application factory: ``create_app(settings) -> web.Application``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from hub.channels.registry import resolve_adapter
from hub.config import Settings
from hub.db import Database
from hub.presence import Presence
from hub.storage_faults import storage_watch
from web.access_audit import audit_denials
from web.auth import auth_middleware, security_headers
from web.email import smtp_receiver
from web.keys import (
    ADAPTERS,
    BACKGROUND,
    DB,
    LOGIN_GUARD,
    METRICS,
    PRESENCE,
    REDIS,
    RING,
    SESSIONS,
    SETTINGS,
    SINK,
    SIO,
    TEMPLATES,
)
from web.metrics import Metrics
from web.middleware import error_middleware, secure_cookies
from web.realtime import SocketIONotifier, close_socketio, create_socketio
from web.render import make_environment
from web.routes import setup_routes
from web.sessions import LoginGuard, SessionStore
from web.tasks import RELEASES, Releases, relay_loop
from worker.effects import OutboxSink

MAX_REQUEST_BYTES = 10 * 1024 * 1024
"""Largest request body accepted (inbound MIME with attachments fits; anything bigger is 413)."""


def create_app(settings: Settings, *, db: Database | None = None) -> web.Application:
    """Build the app. ``settings.redis_url`` must be resolved (embedded Redis already started).

    ``db`` lets tests hand in a Database bound to a connection they roll back.
    """
    if settings.redis_url is None:
        raise ValueError("create_app needs settings.redis_url; start the embedded Redis first")
    redis_url = settings.redis_url
    app = web.Application(
        middlewares=[
            security_headers,
            secure_cookies,
            error_middleware,
            auth_middleware,
            audit_denials,
        ],
        client_max_size=MAX_REQUEST_BYTES,
    )
    app[SETTINGS] = settings
    app[RING] = settings.key_ring()
    app[METRICS] = Metrics()
    app[BACKGROUND] = set()
    app[RELEASES] = Releases()
    app[ADAPTERS] = {
        name: resolve_adapter(name, settings) for name in ("twilio_sms", "twilio_voice")
    }
    app[TEMPLATES] = make_environment()
    sio = create_socketio(redis_url, app)
    sio.attach(app, socketio_path="socket.io")
    app[SIO] = sio

    async def database(app: web.Application) -> AsyncIterator[None]:
        owned = db is None
        app[DB] = db if db is not None else Database.connect(settings.database_url)
        storage_watch(app[DB].engine)  # from the first request on, so /healthz can say why
        yield
        if owned:
            await app[DB].dispose()

    async def redis_clients(app: web.Application) -> AsyncIterator[None]:
        app[REDIS] = Redis.from_url(redis_url)
        app[SESSIONS] = SessionStore(
            app[REDIS],
            idle_s=settings.session_idle_minutes * 60,
            absolute_s=settings.session_max_hours * 3600,
        )
        app[LOGIN_GUARD] = LoginGuard(app[REDIS])
        app[PRESENCE] = Presence(app[REDIS])
        rq_connection = SyncRedis.from_url(redis_url)
        app[SINK] = OutboxSink(rq_connection, SocketIONotifier(sio))
        yield
        await close_socketio(sio)
        rq_connection.close()
        await app[REDIS].aclose()

    async def adapters(app: web.Application) -> AsyncIterator[None]:
        yield
        for adapter in app[ADAPTERS].values():
            await adapter.close()

    app.cleanup_ctx.extend([database, redis_clients, adapters, relay_loop, smtp_receiver])
    setup_routes(app)
    return app
