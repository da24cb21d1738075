"""The second factor of a staff account: turning it on and off, recovery codes, the code
step of signing in, an admin's reset (lost phone) and the clinic's "required for admins".

Argon2 work (recovery codes, password confirmations) is done outside write transactions: on
SQLite a write transaction holds the process-wide lock, and ten code checks take a while.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, record
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Role
from hub.errors import HubError
from hub.inbox import assignment_queries as aq
from hub.inbox import queries
from hub.inbox import second_factor_queries as sfq
from hub.inbox.access import StaffContext
from hub.inbox.actions.staff import REVOKED_TOPIC, SessionRevoker, revoked_payload
from hub.inbox.exceptions import NotFound
from hub.inbox.models import RecoveryCode, StaffUser
from hub.inbox.passwords import verify_password
from hub.inbox.second_factor import (
    REQUIRED_FOR_ADMINS_KEY,
    check_totp,
    hash_recovery_code,
    is_totp_shape,
    new_recovery_codes,
    new_totp_secret,
    normalize_code,
    provisioning_uri,
    recovery_code_matches,
    required_for_admins_in,
)
from hub.outbox import add_effect
from hub.settings_store import put_setting_in

WRONG_CODE_MESSAGE = (
    "That code is not right. Type the 6-digit code your authenticator app shows now, or one "
    "of your recovery codes."
)
USED_CODE_MESSAGE = "That code was already used. Wait for the app to show a new one (30 seconds)."


class WrongCode(HubError):
    """The code typed to confirm a new authenticator is not the one it shows now."""


class NotConfirmed(HubError):
    """The password given to confirm a change to one's own second factor is not right."""


class SecondFactorRequired(HubError):
    """The clinic requires a second factor of admins, so an admin cannot turn theirs off."""


@dataclass(frozen=True)
class SecondFactorStatus:
    enabled: bool
    since: datetime | None
    recovery_codes_left: int
    required: bool
    """The clinic requires a second factor of this person (an admin, with the setting on)."""


@dataclass(frozen=True)
class Enrolment:
    """A set-up in progress: the secret to show (as a QR code and as text) until confirmed."""

    secret: str
    uri: str


@dataclass(frozen=True)
class CodeVerdict:
    """The outcome of the code step of signing in."""

    staff_id: uuid.UUID | None
    """Whose sign-in is complete; None when the code was refused."""
    must_change_password: bool = False
    used: str = ""
    """"totp" or "recovery_code" when accepted."""
    recovery_codes_left: int | None = None
    account_gone: bool = False
    """The account was deactivated, or its second factor reset, since the password step."""
    replayed: bool = False
    """Refused because that code was already used (the app shows a new one within 30 s)."""


async def _own_staff(session: AsyncSession, staff_id: uuid.UUID) -> StaffUser:
    staff = await aq.staff_for_update(session, staff_id)
    if staff is None:
        raise NotFound("no such staff user")
    return staff


async def do_second_factor_status(db: Database, ctx: StaffContext) -> SecondFactorStatus:
    async with db.reader() as session:
        staff = await session.get(StaffUser, ctx.staff_id)
        if staff is None:
            raise NotFound("no such staff user")
        left = await sfq.count_unused_recovery_codes(session, staff.id)
        required = staff.role is Role.ADMIN and await required_for_admins_in(session)
        return SecondFactorStatus(staff.second_factor, staff.second_factor_since, left, required)


async def do_start_second_factor(
    db: Database, ring: KeyRing, ctx: StaffContext, issuer: str
) -> Enrolment:
    """The secret for a set-up in progress, made on first call and kept (encrypted) until the
    person confirms it, so reloading the page shows the same QR code their app may have read."""
    async with db.transaction() as session:
        staff = await _own_staff(session, ctx.staff_id)
        if staff.second_factor:
            raise HubError(
                "Your second factor is already on. To move it to a new phone, turn it off "
                "first (or ask an admin to reset it), then set it up again."
            )
        secret = staff.unseal(ring, "totp_secret") if staff.totp_secret_enc else None
        if secret is None:
            secret = new_totp_secret()
            staff.seal(ring, "totp_secret", secret)
            staff.totp_last_step = None
        return Enrolment(secret, provisioning_uri(secret, staff.email, issuer))


def _hashed_codes() -> tuple[list[str], list[str]]:
    codes = new_recovery_codes()
    return codes, [hash_recovery_code(c) for c in codes]


async def _replace_codes_in(session: AsyncSession, staff_id: uuid.UUID, hashes: list[str]) -> None:
    await sfq.delete_recovery_codes(session, staff_id)
    session.add_all(RecoveryCode(staff_id=staff_id, code_hash=h) for h in hashes)


async def do_enable_second_factor(
    db: Database, ring: KeyRing, ctx: StaffContext, typed: str
) -> list[str]:
    """Turn the second factor on once the person proves their app makes the right codes;
    returns the recovery codes to show them once."""
    codes, hashes = _hashed_codes()
    now = utcnow()
    async with db.transaction() as session:
        staff = await _own_staff(session, ctx.staff_id)
        if staff.second_factor:
            raise HubError("Your second factor is already on.")
        if staff.totp_secret_enc is None:
            raise HubError("No set-up is in progress: start again from your account page.")
        secret = staff.unseal(ring, "totp_secret")
        assert secret is not None
        check = check_totp(secret, normalize_code(typed), now, None)
        if check.step is None:
            raise WrongCode(
                "That code is not right. Type the 6-digit code your app shows now for this "
                "account; if it still fails, check that the phone sets its clock automatically."
            )
        staff.second_factor = True
        staff.second_factor_since = now
        staff.totp_last_step = check.step
        await _replace_codes_in(session, staff.id, hashes)
        detail = {"recovery_codes": len(codes)}
        await record(session, ctx.actor, "staff.second_factor_enable", "staff", staff.id, detail)
    return codes


async def _confirm_password(db: Database, staff_id: uuid.UUID, password: str) -> None:
    async with db.reader() as session:
        staff = await session.get(StaffUser, staff_id)
        if staff is None:
            raise NotFound("no such staff user")
        stored = staff.password_hash
    if not verify_password(stored, password):
        raise NotConfirmed("Your password is not right; nothing was changed.")


async def do_disable_second_factor(db: Database, ctx: StaffContext, password: str) -> None:
    await _confirm_password(db, ctx.staff_id, password)
    async with db.transaction() as session:
        staff = await _own_staff(session, ctx.staff_id)
        if not staff.second_factor:
            raise HubError("Your second factor is already off.")
        if staff.role is Role.ADMIN and await required_for_admins_in(session):
            raise SecondFactorRequired(
                "The clinic requires a second factor for admins, so it cannot be turned off. "
                "For a new phone, ask another admin to reset it, then set it up again."
            )
        _clear(staff)
        await sfq.delete_recovery_codes(session, staff.id)
        await record(session, ctx.actor, "staff.second_factor_disable", "staff", staff.id)


def _clear(staff: StaffUser) -> None:
    staff.second_factor = False
    staff.second_factor_since = None
    staff.totp_secret_enc = None
    staff.totp_last_step = None


async def do_regenerate_recovery_codes(db: Database, ctx: StaffContext, password: str) -> list[str]:
    """A new set of recovery codes; the old ones, used or not, stop working."""
    await _confirm_password(db, ctx.staff_id, password)
    codes, hashes = _hashed_codes()
    async with db.transaction() as session:
        staff = await _own_staff(session, ctx.staff_id)
        if not staff.second_factor:
            raise HubError("Turn the second factor on first; its recovery codes come with it.")
        await _replace_codes_in(session, staff.id, hashes)
        detail = {"recovery_codes": len(codes)}
        await record(
            session, ctx.actor, "staff.recovery_codes_regenerate", "staff", staff.id, detail
        )
    return codes


async def do_check_sign_in_code(
    db: Database, ring: KeyRing, staff_id: uuid.UUID, typed: str
) -> CodeVerdict:
    """The second step of signing in: a TOTP code (each accepted once) or a recovery code.

    A refusal is audited and returned, not raised, so its audit row commits; the caller counts
    it toward the sign-in lockout like a wrong password."""
    code = normalize_code(typed)
    actor = Actor.staff(staff_id)
    now = utcnow()
    matched: uuid.UUID | None = None
    if not is_totp_shape(code):
        async with db.reader() as session:
            candidates = [
                (c.id, c.code_hash) for c in await sfq.unused_recovery_codes(session, staff_id)
            ]
        matched = next((cid for cid, h in candidates if recovery_code_matches(h, code)), None)
    async with db.transaction() as session:
        staff = await aq.staff_for_update(session, staff_id)
        if staff is None or not staff.active or not staff.second_factor:
            return CodeVerdict(None, account_gone=True)
        if is_totp_shape(code):
            secret = staff.unseal(ring, "totp_secret")
            check = check_totp(secret or "", code, now, staff.totp_last_step)
            if check.step is not None:
                staff.totp_last_step = check.step
                staff.last_login_at = now
                detail = {"second_factor": "totp"}
                await record(session, actor, "staff.login", "staff", staff.id, detail)
                return CodeVerdict(staff.id, staff.must_change_password, "totp")
            reason = "replayed" if check.replayed else "wrong"
        elif matched is not None and await sfq.use_recovery_code(session, matched, now):
            left = await sfq.count_unused_recovery_codes(session, staff.id)
            staff.last_login_at = now
            await record(
                session, actor, "staff.recovery_code_used", "staff", staff.id, {"left": left}
            )
            detail = {"second_factor": "recovery_code"}
            await record(session, actor, "staff.login", "staff", staff.id, detail)
            return CodeVerdict(staff.id, staff.must_change_password, "recovery_code", left)
        else:
            reason = "wrong"
        kind = "totp" if is_totp_shape(code) else "recovery_code"
        detail2 = {"kind": kind, "reason": reason}
        await record(session, actor, "staff.second_factor_failed", "staff", staff.id, detail2)
        return CodeVerdict(None, replayed=reason == "replayed")


async def do_reset_second_factor(
    db: Database, actor: Actor, email: str, sessions: SessionRevoker
) -> tuple[None, tuple[uuid.UUID, ...]]:
    """An admin's answer to a lost phone: the person's second factor and recovery codes are
    removed, and their sessions end; they sign in with their password alone (and set it up
    again, first thing, where the clinic requires it of them)."""
    async with db.transaction() as session:
        found = await queries.staff_by_email(session, email)
        if found is None:
            raise NotFound(f"no staff user with email {email.strip().lower()}; `hub user list`")
        staff = await _own_staff(session, found.id)
        if not staff.second_factor and staff.totp_secret_enc is None:
            raise HubError(f"{staff.email} has no second factor to reset")
        _clear(staff)
        await sfq.delete_recovery_codes(session, staff.id)
        effect = add_effect(session, REVOKED_TOPIC, revoked_payload(staff.id)).id
        await record(session, actor, "staff.second_factor_reset", "staff", staff.id)
    await sessions.destroy_all_for(staff.id)
    return None, (effect,)


async def do_second_factor_policy(db: Database) -> bool:
    """Whether the clinic requires a second factor of admins."""
    async with db.reader() as session:
        return await required_for_admins_in(session)


async def do_set_second_factor_policy(db: Database, actor: Actor, required: bool) -> None:
    async with db.transaction() as session:
        if await required_for_admins_in(session) == required:
            return  # saving the same choice changes nothing, and audits nothing
        await put_setting_in(session, REQUIRED_FOR_ADMINS_KEY, required)
        detail = {"required_for_admins": required}
        await record(
            session, actor, "settings.second_factor", "setting", REQUIRED_FOR_ADMINS_KEY, detail
        )
