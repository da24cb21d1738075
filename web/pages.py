"""The staff web app's pages and form posts (server-rendered; app.js adds live updates)."""

from __future__ import annotations

import uuid

from aiohttp import web

from hub.inbox.actions import sign_in_audit, staff
from hub.inbox.exceptions import NotFound, WeakPassword
from hub.inbox.passwords import MIN_PASSWORD_LENGTH
from web.auth import (
    CSRF_FIELD,
    current,
    new_login_csrf,
    set_session_cookie,
)
from web.keys import DB, LOGIN_GUARD, REDIS, RING, SESSIONS, SETTINGS
from web.metrics_ops import count_failed_sign_in
from web.render import redirect_with, render
from web.sessions import COOKIE_NAME, LOGIN_CSRF_COOKIE
from web.sign_in_code import ask_for_code, client_address


def _uuid(request: web.Request, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise web.HTTPNotFound() from None


def _safe_next(value: str | None) -> str:
    # Browsers drop tabs and newlines from a URL ("/\t/evil.example" becomes "//evil.example"),
    # so a target with any control character or space is refused, not just "//" and "\\".
    if (
        value
        and value.startswith("/")
        and not value.startswith("//")
        and "\\" not in value
        and all(" " < c != "\x7f" for c in value)
    ):
        return value
    return "/"


# -- signing in --------------------------------------------------------------------------


async def login_form(request: web.Request) -> web.Response:
    # Keep a token the browser already has: a second tab, or any stray request that lands on
    # the login page, must not invalidate the form the person is filling in.
    existing = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    token = existing if 20 <= len(existing) <= 64 else new_login_csrf()
    response = render(
        request,
        "login.html",
        login_csrf=token,
        error=None,
        email="",
        next=_safe_next(request.query.get("next")),
        idle_minutes=f"{request.app[SETTINGS].session_idle_minutes:g}",
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        path="/login",
        secure=request.app[SETTINGS].public_url.startswith("https://"),
    )
    return response


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    email = str(form.get("email", "")).strip()
    password = str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "/")))
    cookie_token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie_token or cookie_token != form.get(CSRF_FIELD):
        raise web.HTTPForbidden(text="The sign-in form expired; reload the page and try again.")

    def again(error: str, status: int) -> web.Response:
        return render(
            request,
            "login.html",
            status=status,
            login_csrf=cookie_token,
            error=error,
            email=email,
            next=target,
            idle_minutes=f"{request.app[SETTINGS].session_idle_minutes:g}",
        )

    guard = request.app[LOGIN_GUARD]
    address = client_address(request)
    verdict = await guard.check(email, address)
    if verdict.locked:
        await count_failed_sign_in(request.app[REDIS], "locked")
        minutes = max(1, round(verdict.retry_after_s / 60))
        return again(
            f"Too many failed attempts. Try again in {minutes} minutes, or ask an "
            "admin to reset your password.",
            429,
        )
    try:
        signed_in = await staff.do_authenticate(request.app[DB], email, password)
    except staff.AccountDeactivated as exc:
        await sign_in_audit.do_audit_deactivated_sign_in(request.app[DB], email)
        await count_failed_sign_in(request.app[REDIS], "deactivated")
        return again(str(exc), 403)
    if signed_in is None:
        await guard.failed(email, address)
        # Locked now means this failure is the one that locked it: audited once, not per refusal.
        locked = (await guard.check(email, address)).locked
        known = await sign_in_audit.do_audit_failed_sign_in(request.app[DB], email, locked=locked)
        reason = "bad_password" if known else "unknown_account"
        await count_failed_sign_in(request.app[REDIS], reason)
        return again("That email and password do not match an active account.", 401)
    if signed_in.second_factor:
        raise await ask_for_code(request, signed_in, email, target)
    await guard.succeeded(email)
    # A session this browser already held ends here: a sign-in never leaves an old id alive.
    await request.app[SESSIONS].destroy(request.cookies.get(COOKIE_NAME))
    token, _session = await request.app[SESSIONS].create(signed_in.ctx.staff_id)
    response = web.HTTPSeeOther("/password" if signed_in.must_change_password else target)
    set_session_cookie(request, response, token)
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    await request.app[SESSIONS].destroy(request.cookies.get(COOKIE_NAME))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE_NAME, path="/")
    raise response


async def password_form(request: web.Request) -> web.Response:
    return render(
        request,
        "password.html",
        error=None,
        forced=current(request).must_change_password,
        min_length=MIN_PASSWORD_LENGTH,
    )


async def change_password(request: web.Request) -> web.StreamResponse:
    ctx = current(request)
    form = await request.post()
    try:
        await staff.do_change_password(
            request.app[DB], ctx, str(form.get("current", "")), str(form.get("new", ""))
        )
    except WeakPassword as exc:
        return render(
            request,
            "password.html",
            status=400,
            error=str(exc),
            forced=ctx.must_change_password,
            min_length=MIN_PASSWORD_LENGTH,
        )
    # Other sessions of this person end: a changed password must lock out whoever had the old.
    await request.app[SESSIONS].destroy_all_for(ctx.staff_id, keep=request.cookies.get(COOKIE_NAME))
    raise redirect_with("/", "ok", "Password changed.")


# -- attachments ------------------------------------------------------------------------


async def attachment(request: web.Request) -> web.Response:
    from hub.inbox.actions.media import do_read_attachment

    try:
        content_type, data, name = await do_read_attachment(
            request.app[DB], request.app[RING], current(request), _uuid(request, "id")
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    disposition = "inline" if content_type.startswith(("image/", "audio/")) else "attachment"
    return web.Response(
        body=data,
        content_type=content_type,
        headers={
            "Content-Disposition": f'{disposition}; filename="{name}"',
            "Content-Security-Policy": "sandbox; default-src 'none'",
        },
    )
