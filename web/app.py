"""Application factory: ``create_app(settings) -> web.Application``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis

from hub.config import Settings
from hub.db import Database
from web.keys import DB, METRICS, REDIS, RING, SETTINGS
from web.metrics import Metrics
from web.middleware import error_middleware
from web.routes import setup_routes

MAX_REQUEST_BYTES = 10 * 1024 * 1024
"""Largest request body accepted (inbound MIME with attachments fits; anything bigger is 413)."""


def create_app(settings: Settings, *, db: Database | None = None) -> web.Application:
    """Build the app. ``settings.redis_url`` must be resolved (embedded Redis already started).

    ``db`` lets tests hand in a Database bound to a connection they roll back.
    """
    if settings.redis_url is None:
        raise ValueError("create_app needs settings.redis_url; start the embedded Redis first")
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_REQUEST_BYTES)
    app[SETTINGS] = settings
    app[RING] = settings.key_ring()
    app[METRICS] = Metrics()

    async def database(app: web.Application) -> AsyncIterator[None]:
        owned = db is None
        app[DB] = db if db is not None else Database.connect(settings.database_url)
        yield
        if owned:
            await app[DB].dispose()

    async def redis_client(app: web.Application) -> AsyncIterator[None]:
        assert settings.redis_url is not None
        app[REDIS] = Redis.from_url(settings.redis_url)
        yield
        await app[REDIS].aclose()

    app.cleanup_ctx.extend([database, redis_client])
    setup_routes(app)
    return app
