"""Failed sign-ins the password check cannot audit by itself.

``do_authenticate`` audits a wrong password against a real account. Two failures stayed out of
the chain: an email that names no account (a guesser's usual first step) and the failure that
locks sign-in, whose counters live with the web layer.
"""

from __future__ import annotations

from hub.audit import Actor, record
from hub.db import Database
from hub.inbox import queries

SIGN_IN = Actor.system("sign-in")
"""Who acts in a failed sign-in: nobody is signed in yet."""
UNKNOWN_ACCOUNT = "unknown"
"""The subject of a sign-in that named no account."""


async def do_audit_failed_sign_in(db: Database, email: str, *, locked: bool) -> bool:
    """Audit a failed sign-in that named no account, and the failure that locked sign-in.

    The typed email is kept out of the event, hashed or not: it may be a password typed into
    the wrong field. Only the failure that starts a lockout is audited, not each refusal while
    locked, so a guesser cannot fill the chain without paying for a password check each time.
    Returns whether the email named an account (for /metrics' reason, never the email).
    """
    async with db.transaction() as session:
        staff = await queries.staff_by_email(session, email)
        if staff is None:
            await record(session, SIGN_IN, "staff.login_failed", "staff", UNKNOWN_ACCOUNT)
        if locked:
            subject = staff.id if staff is not None else UNKNOWN_ACCOUNT
            await record(session, SIGN_IN, "staff.login_locked", "staff", subject)
    return staff is not None


async def do_audit_deactivated_sign_in(db: Database, email: str) -> None:
    """Audit the right password given for a deactivated account: someone who left is trying.

    ``do_authenticate`` refuses it by raising, which rolls back its own transaction, so the
    event is written here.
    """
    async with db.transaction() as session:
        staff = await queries.staff_by_email(session, email)
        if staff is not None:
            await record(
                session,
                Actor.staff(staff.id),
                "staff.login_refused",
                "staff",
                staff.id,
                {"reason": "deactivated"},
            )
