"""Admin → Sign-in security: whether the clinic requires a second factor of admins, and the
reset of a person's second factor (lost phone) offered on /admin/staff.

Its own module: web/admin.py holds the other admin pages and is at the size limit."""

from __future__ import annotations

from aiohttp import web

from hub.errors import HubError
from hub.inbox.actions import second_factor as sf
from web.auth import current
from web.keys import DB, SESSIONS
from web.render import redirect_with, render
from web.tasks import release_soon


def _admin(request: web.Request) -> None:
    if not current(request).is_admin:
        raise web.HTTPNotFound()


async def security_page(request: web.Request) -> web.Response:
    _admin(request)
    required = await sf.do_second_factor_policy(request.app[DB])
    return render(request, "admin_security.html", nav="admin", required=required)


async def save_policy(request: web.Request) -> web.StreamResponse:
    _admin(request)
    form = await request.post()
    required = form.get("required") == "on"
    await sf.do_set_second_factor_policy(request.app[DB], current(request).actor, required)
    message = (
        "Admins now need a second factor: those without one set it up at their next page."
        if required
        else "A second factor is now optional for admins."
    )
    raise redirect_with("/admin/security", "ok", message)


async def reset_second_factor(request: web.Request) -> web.StreamResponse:
    """The lost-phone button of /admin/staff (the same as `hub user reset-2fa EMAIL`)."""
    _admin(request)
    form = await request.post()
    email = str(form.get("email", ""))
    try:
        _none, effects = await sf.do_reset_second_factor(
            request.app[DB], current(request).actor, email, request.app[SESSIONS]
        )
    except HubError as exc:
        raise redirect_with("/admin/staff", "error", str(exc)) from None
    release_soon(request.app, effects)
    raise redirect_with(
        "/admin/staff",
        "ok",
        f"Second factor of {email} removed and their sessions ended; they sign in with their "
        "password and can set it up again.",
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/admin/security", security_page, name="admin_security"),
        web.post("/admin/security", save_policy, name="admin_save_security"),
        web.post(
            "/admin/security/reset-second-factor",
            reset_second_factor,
            name="admin_reset_second_factor",
        ),
    ]
