"""Staff sessions in Redis (shared by every `hub serve`), login throttling, CSRF tokens.

Written here rather than taken from aiohttp-session because the rules are specific: an idle
timeout and an absolute lifetime checked on every request and every socket.io event, a CSRF
token bound to the session, server-side revocation of all of a person's sessions (password
change), and the token never stored in clear (Redis holds its SHA-256).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

COOKIE_NAME = "hub_session"
LOGIN_CSRF_COOKIE = "hub_login_csrf"
PREFIX = "hub:session:"
STAFF_INDEX = "hub:sessions-of:"
LOGIN_FAILS_ACCOUNT = "hub:login-fails:account:"
LOGIN_FAILS_ADDRESS = "hub:login-fails:address:"

MAX_FAILS_PER_ACCOUNT = 5
"""Failed sign-ins on one account before it is locked for LOCKOUT_S."""
MAX_FAILS_PER_ADDRESS = 30
"""Failed sign-ins from one address (any account) before that address is locked."""
LOCKOUT_S = 15 * 60
"""How long a lock lasts, counted from the last failure."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    token_hash: str
    staff_id: uuid.UUID
    csrf: str
    created_at: float
    last_seen: float

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf, presented or "")


class SessionStore:
    def __init__(
        self,
        redis: Redis,
        *,
        idle_s: float,
        absolute_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.idle_s = idle_s
        self.absolute_s = absolute_s
        self.clock = clock

    async def create(self, staff_id: uuid.UUID) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(_digest(token), staff_id, secrets.token_urlsafe(32), now, now)
        key = PREFIX + session.token_hash
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "staff_id": str(staff_id),
                    "csrf": session.csrf,
                    "created_at": now,
                    "last_seen": now,
                },
            )
            pipe.expire(key, int(self.absolute_s) + 60)
            pipe.sadd(STAFF_INDEX + str(staff_id), session.token_hash)
            pipe.expire(STAFF_INDEX + str(staff_id), int(self.absolute_s) + 60)
            await pipe.execute()
        return token, session

    async def load(self, token: str | None, *, touch: bool = True) -> Session | None:
        """The live session for a cookie value, or None when absent, idle too long or too old."""
        if not token or len(token) > 100:
            return None
        key = PREFIX + _digest(token)
        raw = await self.redis.hgetall(key)
        if not raw:
            return None
        data = {_text(k): _text(v) for k, v in raw.items()}
        now = self.clock()
        created, last_seen = float(data["created_at"]), float(data["last_seen"])
        if now - last_seen > self.idle_s or now - created > self.absolute_s:
            await self.redis.delete(key)
            return None
        if touch:
            await self.redis.hset(key, "last_seen", now)
            last_seen = now
        return Session(
            _digest(token), uuid.UUID(data["staff_id"]), data["csrf"], created, last_seen
        )

    async def destroy(self, token: str | None) -> None:
        if token:
            await self.redis.delete(PREFIX + _digest(token))

    async def destroy_all_for(self, staff_id: uuid.UUID, keep: str | None = None) -> None:
        index = STAFF_INDEX + str(staff_id)
        hashes = {_text(h) for h in await self.redis.smembers(index)}
        keep_hash = _digest(keep) if keep else None
        for token_hash in hashes - {keep_hash}:
            await self.redis.delete(PREFIX + token_hash)
            await self.redis.srem(index, token_hash)


@dataclass(frozen=True)
class LoginVerdict:
    locked: bool
    retry_after_s: int = 0


class LoginGuard:
    """Counts failed sign-ins per account and per address in Redis (shared across processes)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @staticmethod
    def _keys(email: str, address: str) -> tuple[str, str]:
        return (
            LOGIN_FAILS_ACCOUNT + _digest(email.strip().lower()),
            LOGIN_FAILS_ADDRESS + _digest(address),
        )

    async def check(self, email: str, address: str) -> LoginVerdict:
        account, addr = self._keys(email, address)
        fails_account, fails_addr = await self.redis.mget(account, addr)
        if int(fails_account or 0) >= MAX_FAILS_PER_ACCOUNT:
            return LoginVerdict(True, max(int(await self.redis.ttl(account)), 1))
        if int(fails_addr or 0) >= MAX_FAILS_PER_ADDRESS:
            return LoginVerdict(True, max(int(await self.redis.ttl(addr)), 1))
        return LoginVerdict(False)

    async def failed(self, email: str, address: str) -> int:
        account, addr = self._keys(email, address)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(account)
            pipe.expire(account, LOCKOUT_S)
            pipe.incr(addr)
            pipe.expire(addr, LOCKOUT_S)
            count, _, _, _ = await pipe.execute()
        return int(count)

    async def succeeded(self, email: str) -> None:
        account, _ = self._keys(email, "")
        await self.redis.delete(account)
