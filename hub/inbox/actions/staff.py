"""Signing in, password changes, API tokens: the staff side of authentication."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, record
from hub.db import Database, utcnow
from hub.enums import Role
from hub.errors import HubError
from hub.inbox import assignment_queries as aq
from hub.inbox import queries
from hub.inbox import staff_queries as sq
from hub.inbox.access import StaffContext
from hub.inbox.actions.assignment import ASSIGNED_TOPIC
from hub.inbox.exceptions import NotFound, WeakPassword
from hub.inbox.models import ApiToken, StaffUser
from hub.inbox.password_policy import check_new_password
from hub.inbox.passwords import (
    hash_password,
    needs_rehash,
    one_time_password,
    verify_password,
)
from hub.inbox.second_factor import required_for_admins_in
from hub.outbox import add_effect

TOKEN_PREFIX = "hub_"  # noqa: S105 - a prefix, not a secret
DEFAULT_TOKEN_DAYS = 90
"""How long an API token works unless created with another lifetime (a forgotten token dies)."""
REVOKED_TOPIC = "notify:staff:revoked"
"""Outbox topic telling every `hub serve` to drop the person's live staff sockets at once."""
ROOMS_TOPIC = "notify:staff:rooms"
"""Outbox topic telling every `hub serve` to move the person's live sockets to the rooms of
their new role and teams (a socket joins its rooms when it connects)."""
DEACTIVATED_MESSAGE = "This account is deactivated; ask an admin."


class AccountDeactivated(HubError):
    """The right password for an account an admin has deactivated."""


class LastAdmin(HubError):
    """The change would leave the hub without an active admin, and no one could undo it."""


class SessionRevoker(Protocol):
    """Ends a person's signed-in sessions (web/sessions.py's SessionStore, shared in Redis)."""

    async def destroy_all_for(self, staff_id: uuid.UUID, keep: str | None = None) -> None: ...


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
        ctx = StaffContext.of(staff, via)
        if (
            staff.role is Role.ADMIN
            and not staff.second_factor
            and await required_for_admins_in(session)
        ):
            ctx = replace(ctx, must_set_up_second_factor=True)
        return ctx


@dataclass(frozen=True)
class SignIn:
    ctx: StaffContext
    must_change_password: bool
    second_factor: bool = False
    """The password was right, and a code must follow before the person is signed in."""


async def do_authenticate(db: Database, email: str, password: str) -> SignIn | None:
    async with db.transaction() as session:
        staff = await queries.staff_by_email(session, email)
        if staff is None:
            verify_password(_DUMMY_HASH, password)
            return None
        if not verify_password(staff.password_hash, password):
            await record(session, Actor.staff(staff.id), "staff.login_failed", "staff", staff.id)
            return None
        if not staff.active:
            # Said only after the right password, so it reveals nothing to a guesser.
            raise AccountDeactivated(DEACTIVATED_MESSAGE)
        if needs_rehash(staff.password_hash):
            staff.password_hash = hash_password(password)
        if staff.second_factor:
            # Not signed in yet: the code step records the sign-in, or the wrong code.
            return SignIn(StaffContext.of(staff), staff.must_change_password, second_factor=True)
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
            raise WeakPassword("The current password is not right.")
        check_new_password(new, user_inputs=(staff.email, staff.display_name))
        staff.password_hash = hash_password(new)
        staff.must_change_password = False
        staff.password_changed_at = utcnow()
        await record(session, ctx.actor, "staff.password_change", "staff", staff.id)


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def do_create_token(
    db: Database, actor: Actor, email: str, name: str, *, days: int = DEFAULT_TOKEN_DAYS
) -> str:
    """A new bearer token acting with the rights of the staff user; shown once, stored hashed."""
    if days < 1:
        raise HubError("a token must live at least one day (--days 1 or more)")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    async with db.transaction() as session:
        staff = await queries.staff_by_email(session, email)
        if staff is None or not staff.active:
            raise NotFound(f"no active staff user with email {email}")
        row = ApiToken(
            staff_id=staff.id,
            name=name[:120],
            token_hash=_token_hash(token),
            expires_at=utcnow() + timedelta(days=days),
        )
        session.add(row)
        await session.flush()
        detail = {"token": str(row.id), "days": days}
        await record(session, actor, "token.create", "staff", staff.id, detail)
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
        # A one-time password was handed to someone: until its owner replaces it, whoever holds
        # it could be anyone, so the owner's tokens wait too (as their pages do).
        if staff is None or not staff.active or staff.must_change_password:
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
            raise NotFound(f"no token with id {token_id}; `hub token list` shows them")
        if row.revoked_at is not None:
            return  # revoking twice changes nothing, and audits nothing
        row.revoked_at = utcnow()
        await record(session, actor, "token.revoke", "staff", row.staff_id, {"token": str(row.id)})


# -- the staff lifecycle: what admins do to accounts ---------------------------------------


@dataclass(frozen=True)
class StaffSummary:
    id: uuid.UUID
    email: str
    display_name: str
    role: Role
    active: bool
    must_change_password: bool
    teams: tuple[str, ...]
    max_open_conversations: int
    last_login_at: datetime | None
    second_factor: bool = False


@dataclass(frozen=True)
class TokenSummary:
    id: uuid.UUID
    email: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at < now:
            return "expired"
        return "active"


@dataclass(frozen=True)
class Deactivated:
    staff_id: uuid.UUID
    tokens_revoked: int
    conversations_returned: tuple[uuid.UUID, ...]
    effect_ids: tuple[uuid.UUID, ...]


async def _staff_named(session: AsyncSession, email: str) -> StaffUser:
    staff = await queries.staff_by_email(session, email)
    if staff is None:
        raise NotFound(f"no staff user with email {email.strip().lower()}; `hub user list`")
    return staff


async def do_list_staff(db: Database) -> list[StaffSummary]:
    async with db.reader() as session:
        return [
            StaffSummary(
                s.id,
                s.email,
                s.display_name,
                s.role,
                s.active,
                s.must_change_password,
                tuple(sorted(t.name for t in s.teams)),
                s.max_open_conversations,
                s.last_login_at,
                s.second_factor,
            )
            for s in await sq.all_staff(session)
        ]


async def do_list_tokens(db: Database, email: str | None = None) -> list[TokenSummary]:
    async with db.reader() as session:
        staff_id = (await _staff_named(session, email)).id if email else None
        emails = {s.id: s.email for s in await sq.all_staff(session)}
        return [
            TokenSummary(
                t.id,
                emails.get(t.staff_id, "?"),
                t.name,
                t.created_at,
                t.expires_at,
                t.last_used_at,
                t.revoked_at,
            )
            for t in await sq.tokens_of(session, staff_id)
        ]


async def do_deactivate_staff(
    db: Database, actor: Actor, email: str, sessions: SessionRevoker
) -> Deactivated:
    """Take every kind of access away at once: the account, its API tokens, its sessions and
    its live sockets; its unresolved conversations go back to their team's queue.

    The account flag is what every request and socket event checks, so access ends with the
    commit even if the session store or the socket relay is unreachable; ending the sessions
    and releasing the socket effect afterwards only make it immediate and leave nothing behind.
    """
    async with db.transaction() as session:
        found = await _staff_named(session, email)
        staff = await aq.staff_for_update(session, found.id)
        assert staff is not None
        if not staff.active:
            raise HubError(f"{staff.email} is already deactivated")
        if staff.role is Role.ADMIN and await sq.active_admins(session) <= 1:
            raise LastAdmin(
                f"{staff.email} is the last active admin; make someone else admin first"
            )
        now = utcnow()
        staff.active = False
        revoked = await sq.revoke_tokens_of(session, staff.id, now)
        effects = [add_effect(session, REVOKED_TOPIC, revoked_payload(staff.id)).id]
        returned: list[uuid.UUID] = []
        for conversation in await sq.unresolved_assigned_to(session, staff.id):
            conversation.assignee_id = None
            conversation.assigned_at = None
            effects.append(
                add_effect(
                    session,
                    ASSIGNED_TOPIC,
                    {
                        "conversation_id": str(conversation.id),
                        "team_id": str(conversation.team_id) if conversation.team_id else None,
                        "assignee_id": None,
                    },
                ).id
            )
            returned.append(conversation.id)
            detail = {"previous": str(staff.id), "reason": "staff.deactivate"}
            await record(
                session, actor, "conversation.unassign", "conversation", conversation.id, detail
            )
        detail2 = {"tokens_revoked": revoked, "conversations_returned": len(returned)}
        await record(session, actor, "staff.deactivate", "staff", staff.id, detail2)
    await sessions.destroy_all_for(staff.id)
    return Deactivated(staff.id, revoked, tuple(returned), tuple(effects))


def revoked_payload(staff_id: uuid.UUID) -> dict[str, str]:
    return {"staff_id": str(staff_id), "room": f"staff:{staff_id}"}


async def do_reactivate_staff(db: Database, actor: Actor, email: str) -> None:
    """Let a person sign in again. Their tokens stay revoked (a new one is a deliberate act);
    their password is the one they had, unless an admin resets it."""
    async with db.transaction() as session:
        staff = await _staff_named(session, email)
        if staff.active:
            raise HubError(f"{staff.email} is already active")
        staff.active = True
        await record(session, actor, "staff.reactivate", "staff", staff.id)


async def do_reset_password(
    db: Database, actor: Actor, email: str, sessions: SessionRevoker
) -> tuple[str, tuple[uuid.UUID, ...]]:
    """A new one-time password (returned to show once) that must be changed at first sign-in.

    The old password stops working, every session ends and the live sockets drop: whoever
    knew the old password must not keep a way in. API tokens are blocked, not revoked, until
    the person chooses their own password (see ``do_resolve_token``).
    """
    password = one_time_password()
    async with db.transaction() as session:
        staff = await _staff_named(session, email)
        staff.password_hash = hash_password(password)
        staff.must_change_password = True
        staff.password_changed_at = utcnow()
        effect = add_effect(session, REVOKED_TOPIC, revoked_payload(staff.id)).id
        await record(session, actor, "staff.password_reset", "staff", staff.id)
    await sessions.destroy_all_for(staff.id)
    return password, (effect,)


async def do_edit_staff(
    db: Database,
    actor: Actor,
    email: str,
    *,
    role: Role | None = None,
    teams: Sequence[str] | None = None,
    capacity: int | None = None,
) -> tuple[uuid.UUID, ...]:
    """Change role, teams (the whole list: the person ends up in exactly these) or capacity.

    Takes effect at the person's next request, and on their open sockets as soon as the
    returned effect is released: a team taken away stops sending its events at once. A
    capacity below their current load takes nothing away from them, it only stops new
    assignments until they are under it.
    """
    if role is None and teams is None and capacity is None:
        raise HubError("nothing to change: give --role, --team or --capacity")
    if capacity is not None and not 0 <= capacity <= 1000:
        raise HubError("capacity must be between 0 and 1000 open conversations")
    async with db.transaction() as session:
        staff = await _staff_named(session, email)
        changes: dict[str, object] = {}
        if role is not None and role is not staff.role:
            if staff.role is Role.ADMIN and staff.active and await sq.active_admins(session) <= 1:
                raise LastAdmin(
                    f"{staff.email} is the last active admin; make someone else admin first"
                )
            changes["role"] = {"from": str(staff.role), "to": str(role)}
            staff.role = role
        if teams is not None:
            found = list(await queries.teams_named(session, list(teams)))
            missing = set(teams) - {t.name for t in found}
            if missing:
                raise NotFound(f"no team named {', '.join(sorted(missing))}")
            before = sorted(t.name for t in staff.teams)
            if before != sorted(t.name for t in found):
                changes["teams"] = {"from": before, "to": sorted(t.name for t in found)}
                staff.teams = found
        if capacity is not None and capacity != staff.max_open_conversations:
            changes["capacity"] = {"from": staff.max_open_conversations, "to": capacity}
            staff.max_open_conversations = capacity
        effects: tuple[uuid.UUID, ...] = ()
        if "role" in changes or "teams" in changes:
            # What the sockets need to know to move, so a serve process moves them without
            # reading the database in the middle of someone else's release.
            team_ids = (
                await sq.all_team_ids(session)
                if staff.role is Role.ADMIN
                else [t.id for t in staff.teams]
            )
            payload = {
                **revoked_payload(staff.id),
                "role": staff.role.value,
                "team_ids": sorted(str(t) for t in team_ids),
            }
            effects = (add_effect(session, ROOMS_TOPIC, payload).id,)
        if changes:
            await record(session, actor, "staff.edit", "staff", staff.id, changes)
    return effects
