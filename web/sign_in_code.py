"""The second step of signing in: after the right password, a TOTP or recovery code.

Between the two steps the person holds no session at all, only a short-lived "pending"
token (cookie limited to /login, record in Redis): every page, the API and socket.io see
someone not signed in, so a half-signed-in browser reaches nothing but this form. Wrong codes
count toward the same lockout as wrong passwords, and the count is reset only when the whole
sign-in succeeds (a right password alone must not buy more code guesses).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from ipaddress import ip_address

from aiohttp import web
from redis.asyncio import Redis

from hub.inbox.actions import sign_in_audit
from hub.inbox.actions.second_factor import (
    USED_CODE_MESSAGE,
    WRONG_CODE_MESSAGE,
    do_check_sign_in_code,
)
from hub.inbox.actions.staff import SignIn
from web.auth import CSRF_FIELD, set_session_cookie
from web.keys import DB, LOGIN_GUARD, REDIS, RING, SESSIONS, SETTINGS
from web.metrics_ops import count_failed_sign_in
from web.render import redirect_with, render
from web.sessions import COOKIE_NAME, LOGIN_CSRF_COOKIE

PENDING_COOKIE = "hub_sign_in_pending"
PENDING_PREFIX = "hub:sign-in-pending:"
DEFAULT_CODE_STEP_S = 5 * 60
"""How long the code form waits after the password; then the person starts over."""
EXPIRED = "Sign in with your password first; the code must follow within 5 minutes."


@dataclass(frozen=True)
class Pending:
    staff_id: uuid.UUID
    email: str
    """As typed at the password step: the lockout counters are keyed by it."""
    target: str
    csrf: str


def _key(token: str) -> str:
    return PENDING_PREFIX + hashlib.sha256(token.encode()).hexdigest()


class PendingSignIns:
    """Sign-ins waiting for their code, in Redis (any `hub serve` may take the second step)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def create(self, staff_id: uuid.UUID, email: str, target: str) -> str:
        token = secrets.token_urlsafe(32)
        record = {
            "staff_id": str(staff_id),
            "email": email,
            "target": target,
            "csrf": secrets.token_urlsafe(24),
        }
        await self.redis.set(_key(token), json.dumps(record), ex=DEFAULT_CODE_STEP_S)
        return token

    async def load(self, token: str | None) -> Pending | None:
        if not token or len(token) > 100:
            return None
        raw = await self.redis.get(_key(token))
        if raw is None:
            return None
        data = json.loads(raw)
        return Pending(uuid.UUID(data["staff_id"]), data["email"], data["target"], data["csrf"])

    async def destroy(self, token: str | None) -> None:
        if token:
            await self.redis.delete(_key(token))


def client_address(request: web.Request) -> str:
    """Who is signing in, for per-address throttling. Behind a reverse proxy every request
    comes from the proxy, so one person's failures would lock all staff out: X-Forwarded-For
    is read, right to left, past the proxies listed in HUB_TRUSTED_PROXIES (and only from
    them; anyone else could write that header)."""
    trusted = request.app[SETTINGS].trusted_proxies
    address = request.remote or "unknown"
    if not trusted:
        return address
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
    for hop in [address, *reversed([h for h in hops if h])]:
        try:
            ip = ip_address(hop)
        except ValueError:
            return hop[:64]  # not an address: a proxy we trust wrote it, so it names someone
        if not any(ip in network for network in trusted):
            return str(ip)
        address = str(ip)
    return address  # every hop a proxy of ours


def _pending(request: web.Request) -> PendingSignIns:
    return PendingSignIns(request.app[REDIS])


async def ask_for_code(
    request: web.Request, signed_in: SignIn, email: str, target: str
) -> web.HTTPSeeOther:
    """The password was right and a code must follow: start the code step (no session yet)."""
    # A session this browser held ends now, as at any sign-in: nothing of it survives.
    await request.app[SESSIONS].destroy(request.cookies.get(COOKIE_NAME))
    token = await _pending(request).create(signed_in.ctx.staff_id, email, target)
    response = web.HTTPSeeOther("/login/code")
    response.del_cookie(COOKIE_NAME, path="/")
    response.set_cookie(
        PENDING_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        path="/login",
        secure=request.app[SETTINGS].public_url.startswith("https://"),
        max_age=DEFAULT_CODE_STEP_S,
    )
    return response


def _start_over(request: web.Request, message: str) -> web.HTTPSeeOther:
    response = redirect_with("/login", "error", message)
    response.del_cookie(PENDING_COOKIE, path="/login")
    return response


def _form(request: web.Request, pending: Pending, error: str | None, status: int) -> web.Response:
    return render(request, "login_code.html", status=status, code_csrf=pending.csrf, error=error)


async def code_form(request: web.Request) -> web.StreamResponse:
    pending = await _pending(request).load(request.cookies.get(PENDING_COOKIE))
    if pending is None:
        raise _start_over(request, EXPIRED)
    return _form(request, pending, None, 200)


async def submit_code(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(PENDING_COOKIE)
    store = _pending(request)
    pending = await store.load(token)
    if pending is None:
        raise _start_over(request, EXPIRED)
    form = await request.post()
    if not hmac.compare_digest(pending.csrf, str(form.get(CSRF_FIELD, ""))):
        raise web.HTTPForbidden(text="The sign-in form expired; reload the page and try again.")
    guard = request.app[LOGIN_GUARD]
    address = client_address(request)
    if (await guard.check(pending.email, address)).locked:
        await count_failed_sign_in(request.app[REDIS], "locked")
        await store.destroy(token)
        raise _start_over(request, "Too many failed attempts. Try again later, or ask an admin.")
    verdict = await do_check_sign_in_code(
        request.app[DB], request.app[RING], pending.staff_id, str(form.get("code", ""))
    )
    if verdict.account_gone:
        await store.destroy(token)
        raise _start_over(request, "Sign in again.")
    if verdict.staff_id is None:
        await guard.failed(pending.email, address)
        await count_failed_sign_in(request.app[REDIS], "second_factor")
        if (await guard.check(pending.email, address)).locked:
            await sign_in_audit.do_audit_failed_sign_in(request.app[DB], pending.email, locked=True)
            await store.destroy(token)
            raise _start_over(
                request,
                "Too many failed attempts. Try again in 15 minutes, or ask an admin to reset "
                "your second factor.",
            )
        message = USED_CODE_MESSAGE if verdict.replayed else WRONG_CODE_MESSAGE
        return _form(request, pending, message, 401)
    await guard.succeeded(pending.email)
    await store.destroy(token)
    session_token, _session = await request.app[SESSIONS].create(verdict.staff_id)
    target = "/password" if verdict.must_change_password else pending.target
    response = web.HTTPSeeOther(target)
    if verdict.used == "recovery_code":
        left = verdict.recovery_codes_left or 0
        note = f"Signed in with a recovery code; {left} left. Make new ones on your account page."
        response = redirect_with(target, "info", note)
    set_session_cookie(request, response, session_token)
    response.del_cookie(PENDING_COOKIE, path="/login")
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise response
