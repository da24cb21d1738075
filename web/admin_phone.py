"""Admin → Phone: whether a phone cancellation needs the patient's date of birth first.

Caller ID is the caller's claim and a reminder call may be answered by anyone in the
household; the page says so, and lets the clinic ask for a keypad PIN (the month and day of
birth) before pressing 2 cancels an appointment. Confirmations never need it."""

from __future__ import annotations

from aiohttp import web

from hub.inbox.actions import voice_pin
from web.auth import current
from web.keys import DB
from web.render import redirect_with, render


def _admin(request: web.Request) -> None:
    if not current(request).is_admin:
        raise web.HTTPNotFound()


async def phone_page(request: web.Request) -> web.Response:
    _admin(request)
    required = await voice_pin.do_cancel_pin_required(request.app[DB])
    return render(
        request,
        "admin_phone.html",
        nav="admin",
        pin_required=required,
        attempts=voice_pin.DEFAULT_PIN_ATTEMPTS,
        window_hours=int(voice_pin.PIN_WINDOW.total_seconds() // 3600),
    )


async def save_phone(request: web.Request) -> web.StreamResponse:
    _admin(request)
    form = await request.post()
    required = form.get("cancel_pin") == "on"
    await voice_pin.do_set_cancel_pin_required(request.app[DB], current(request).actor, required)
    said = "now asked for" if required else "no longer asked for"
    raise redirect_with("/admin/phone", "ok", f"The date of birth is {said} before a cancellation.")
