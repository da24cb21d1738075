"""Which staff are online, from their socket.io connections, in Redis (shared by all
`hub serve` processes). Round-robin assignment hands work only to people who are here."""

from __future__ import annotations

import time
import uuid

from redis.asyncio import Redis

ONLINE = "hub:online"
SIDS = "hub:online-sids:"
STALE_AFTER_S = 90
"""A connection that has not sent a heartbeat for this long no longer counts as online."""


class Presence:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def seen(self, staff_id: uuid.UUID, sid: str) -> None:
        now = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(ONLINE, {str(staff_id): now})
            pipe.sadd(SIDS + str(staff_id), sid)
            pipe.expire(SIDS + str(staff_id), STALE_AFTER_S * 2)
            await pipe.execute()

    async def gone(self, staff_id: uuid.UUID, sid: str) -> None:
        key = SIDS + str(staff_id)
        await self.redis.srem(key, sid)
        if not await self.redis.scard(key):
            await self.redis.zrem(ONLINE, str(staff_id))

    async def online(self) -> set[uuid.UUID]:
        cutoff = time.time() - STALE_AFTER_S
        await self.redis.zremrangebyscore(ONLINE, "-inf", cutoff)
        members = await self.redis.zrange(ONLINE, 0, -1)
        return {uuid.UUID(m.decode() if isinstance(m, bytes) else str(m)) for m in members}
