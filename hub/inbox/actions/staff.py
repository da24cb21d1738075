"""Signing in, password changes, API tokens: the staff side of authentication."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update

from hub.audit import Actor, record
from hub.db import Database, utcnow
from hub.inbox import queries
from hub.inbox.access import StaffContext
from hub.inbox.exceptions import NotFound, WeakPassword
from hub.inbox.models import ApiToken, StaffUser
from hub.inbox.passwords import hash_password, needs_rehash, verify_password

TOKEN_PREFIX = "hub_"  # noqa: S105 - a prefix, not a secret
# A real hash to verify against when the account does not exist, so a wrong email and a wrong
# password take the same time (no account enumeration by timing).
_DUMMY_HASH = hash_password("not-a-real-password-" + secrets.token_hex(8))


async def do_load_staff(
    db: Database, staff_id: uuid.UUID, via: str = "staff"
) -> StaffContext | None:
    async with db.reader() as session:
        staff = await session.get(StaffUser, staff_id)
        if staff is None or not staff.active:
            return None
        return StaffContext.of(staff, via)


@dataclass(frozen=True)
class SignIn:
    ctx: StaffContext
    must_change_password: bool


async def do_authenticate(db: Database, email: str, password: str) -> SignIn | None:
    async with db.transaction() as session:
        staff = await queries.staff_by_email(session, email)
        if staff is None or not staff.active:
            verify_password(_DUMMY_HASH, password)
            return None
        if not verify_password(staff.password_hash, password):
            await record(session, Actor.staff(staff.id), "staff.login_failed", "staff", staff.id)
            return None
        if needs_rehash(staff.password_hash):
            staff.password_hash = hash_password(password)
        staff.last_login_at = utcnow()
        await record(session, Actor.staff(staff.id), "staff.login", "staff", staff.id)
        return SignIn(StaffContext.of(staff), staff.must_change_password)


async def do_change_password(db: Database, ctx: StaffContext, current: str, new: str) -> None:
    if current == new:
        raise WeakPassword("the new password must differ from the current one")
    async with db.transaction() as session:
        staff = await session.get(StaffUser, ctx.staff_id)
        if staff is None:
            raise NotFound("no such staff user")
        if not verify_password(staff.password_hash, current):
            raise WeakPassword("the current password is not right")
        staff.password_hash = hash_password(new)
        staff.must_change_password = False
        staff.password_changed_at = utcnow()
        await record(session, ctx.actor, "staff.password_change", "staff", staff.id)


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def do_create_token(
    db: Database, actor: Actor, email: str, name: str, *, days: int | None = None
) -> str:
    """A new bearer token acting with the rights of the staff user; shown once, stored hashed."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    async with db.transaction() as session:
        staff = await queries.staff_by_email(session, email)
        if staff is None or not staff.active:
            raise NotFound(f"no active staff user with email {email}")
        row = ApiToken(
            staff_id=staff.id,
            name=name[:120],
            token_hash=_token_hash(token),
            expires_at=utcnow() + timedelta(days=days) if days else None,
        )
        session.add(row)
        await session.flush()
        await record(session, actor, "token.create", "staff", staff.id, {"token": str(row.id)})
    return token


async def do_resolve_token(db: Database, token: str) -> StaffContext | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        return None
    now = utcnow()
    # Every API request comes through here: read-only, so it takes no write lock (SQLite) and
    # costs no commit; last use is written at most once a minute, in its own transaction.
    async with db.reader() as session:
        row = (
            await session.scalars(select(ApiToken).where(ApiToken.token_hash == _token_hash(token)))
        ).first()
        if row is None or row.revoked_at is not None or (row.expires_at and row.expires_at < now):
            return None
        staff = await session.get(StaffUser, row.staff_id)
        if staff is None or not staff.active:
            return None
        ctx = StaffContext.of(staff, via="api")
        stale = row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1)
        token_id = row.id
    if stale:
        async with db.transaction() as session:
            await session.execute(
                update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now)
            )
    return ctx


async def do_revoke_token(db: Database, actor: Actor, token_id: uuid.UUID) -> None:
    async with db.transaction() as session:
        row = await session.get(ApiToken, token_id)
        if row is None:
            raise NotFound("no such token")
        row.revoked_at = utcnow()
        await record(session, actor, "token.revoke", "staff", row.staff_id, {"token": str(row.id)})
