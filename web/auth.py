"""Who is asking: session cookie (people) or bearer token (API clients); CSRF on every
state-changing request made with a cookie; security headers on every response."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from hub.inbox.access import StaffContext
from hub.inbox.actions.staff import do_load_staff, do_resolve_token
from web.keys import DB, SESSIONS, SETTINGS
from web.sessions import COOKIE_NAME, Session

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLIC_PREFIXES = (
    "/login",
    "/static/",
    "/webhooks/",
    "/socket.io/",
    "/healthz",
    "/metrics",
    "/api/openapi.json",
    "/unsubscribe/",
    "/chat/",
    "/media/",
    "/simulator",  # the demo's patient, who never signs in; the routes exist in demo mode only
)
"""Paths reachable without signing in (each has its own authentication where it needs one)."""
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PASSWORD_PATHS = frozenset({"/password", "/logout"})
"""All a person with a one-time password may reach until they choose their own."""
SECOND_FACTOR_SETUP_PATHS = frozenset({"/account/second-factor", "/logout"})
"""All an admin may reach, where the clinic requires a second factor, until they set one up."""
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
CTX = web.RequestKey("ctx", StaffContext)
SESSION = web.RequestKey("session", Session)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def current(request: web.Request) -> StaffContext:
    ctx: StaffContext | None = request.get(CTX)
    if ctx is None:
        raise web.HTTPUnauthorized()
    return ctx


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _unauthenticated(request: web.Request) -> web.StreamResponse:
    if _is_api(request):
        return web.json_response(
            {
                "error": {
                    "status": 401,
                    "message": "Sign in, or send Authorization: Bearer <token>.",
                }
            },
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    target = "/login"
    if request.method == "GET" and request.path != "/":
        target += "?next=" + quote(request.path_qs, safe="")
    raise web.HTTPSeeOther(target)


def _hold(request: web.Request, page: str, message: str) -> web.StreamResponse:
    """Keep a signed-in person on ``page`` until they have done what it asks: a GET goes
    there, anything else (a form post, the API with their cookie) is refused."""
    if _is_api(request):
        return web.json_response({"error": {"status": 403, "message": message}}, status=403)
    if request.method == "GET":
        raise web.HTTPSeeOther(page)
    raise web.HTTPForbidden(text=f"{message} Go to {page}.")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    app = request.app
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        ctx = await do_resolve_token(app[DB], auth.removeprefix("Bearer ").strip())
        if ctx is None:
            return web.json_response(
                {"error": {"status": 401, "message": "The token is unknown, expired or revoked."}},
                status=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        request[CTX] = ctx
        return await handler(request)  # no cookie involved: CSRF does not apply

    session = await app[SESSIONS].load(request.cookies.get(COOKIE_NAME))
    if session is None:
        return _unauthenticated(request)
    ctx = await do_load_staff(app[DB], session.staff_id)
    if ctx is None:  # deactivated since signing in
        await app[SESSIONS].destroy(request.cookies.get(COOKIE_NAME))
        return _unauthenticated(request)
    request[CTX], request[SESSION] = ctx, session
    if ctx.must_change_password:
        if request.path not in PASSWORD_PATHS:
            return _hold(request, "/password", "Change your password first.")
    elif ctx.must_set_up_second_factor and request.path not in SECOND_FACTOR_SETUP_PATHS:
        return _hold(request, "/account/second-factor", "Set up your second factor first.")
    if request.method in UNSAFE:
        presented = request.headers.get(CSRF_HEADER)
        if presented is None and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            presented = str((await request.post()).get(CSRF_FIELD, "")) or None
        if not session.csrf_ok(presented):
            if _is_api(request):
                return web.json_response(
                    {"error": {"status": 403, "message": "Missing or wrong CSRF token."}},
                    status=403,
                )
            raise web.HTTPForbidden(text="Missing or wrong CSRF token; reload the page.")
    return await handler(request)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _apply_headers(request, exc)
        raise
    _apply_headers(request, response)
    return response


def _apply_headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    h.setdefault("Content-Security-Policy", CSP)
    if not request.path.startswith("/static/"):
        h.setdefault("Cache-Control", "no-store")  # pages and API answers can hold PHI
    if request.app[SETTINGS].public_url.startswith("https://"):
        h.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    settings = request.app[SETTINGS]
    response.set_cookie(
        COOKIE_NAME,
        token,
        httponly=True,
        samesite="Lax",
        path="/",
        secure=settings.public_url.startswith("https://"),
        max_age=int(settings.session_max_hours * 3600),
    )


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)
