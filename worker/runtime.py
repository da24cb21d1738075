"""What a job needs, built per job run (RQ forks a work horse per job; nothing is shared)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from redis import Redis

from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database
from hub.outbox import release_events
from worker.effects import OutboxSink, RedisNotifier


@dataclass
class JobRuntime:
    settings: Settings
    ring: KeyRing
    db: Database
    sink: OutboxSink

    async def release(self, effect_ids: Iterable[uuid.UUID]) -> None:
        await release_events(self.db, self.sink, effect_ids)


@asynccontextmanager
async def job_runtime(settings: Settings | None = None) -> AsyncIterator[JobRuntime]:
    settings = settings or Settings.from_env()
    if settings.redis_url is None:
        raise RuntimeError("HUB_REDIS_URL is not set in the worker's environment")
    db = Database.connect(settings.database_url)
    connection = Redis.from_url(settings.redis_url)
    ring = settings.key_ring()
    notifier = RedisNotifier(settings.redis_url, ring)
    try:
        yield JobRuntime(settings, ring, db, OutboxSink(connection, notifier))
    finally:
        await notifier.aclose()
        connection.close()
        await db.dispose()
