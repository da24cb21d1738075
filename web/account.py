"""A person's own account page: their password, and their second factor (set up with a QR
code, turn off, new recovery codes).

Reached by everyone signed in, and the only page an admin reaches while the clinic requires
a second factor they have not set up (see ``SECOND_FACTOR_SETUP_PATHS`` in web/auth.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import available_timezones

import segno
from aiohttp import web

from hub.errors import HubError
from hub.inbox.actions import second_factor as sf
from hub.inbox.actions.workspace import do_set_my_time_zone
from web.auth import current
from web.keys import DB, RING, SETTINGS
from web.render import redirect_with, render

ZONES = sorted(z for z in available_timezones() if "/" in z and not z.startswith("Etc/"))
"""Region/City zone names offered in the picker (any valid IANA name is accepted)."""

QR_SCALE = 5
"""Pixels per QR module: about 200 px for a typical otpauth URI, read easily off a screen."""


def qr_svg(uri: str) -> str:
    """The otpauth URI as an inline SVG QR code, made here: the secret never leaves the hub
    for a QR service, and the page needs no script or image request to show it."""
    svg = segno.make(uri, error="m").svg_inline(
        scale=QR_SCALE, border=4, dark="#000", light="#fff", title="QR code"
    )
    label = "QR code to scan with your authenticator app"
    return svg.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1)


def _grouped(secret: str) -> str:
    """The base32 secret in groups of four, as authenticator apps accept it typed."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


async def account_page(request: web.Request) -> web.Response:
    status = await sf.do_second_factor_status(request.app[DB], current(request))
    return render(
        request,
        "account.html",
        nav="account",
        factor=status,
        zones=ZONES,
        now=datetime.now(UTC),
    )


async def setup_page(request: web.Request, error: str | None = None) -> web.Response:
    ctx = current(request)
    try:
        enrolment = await sf.do_start_second_factor(
            request.app[DB], request.app[RING], ctx, request.app[SETTINGS].clinic_name
        )
    except HubError as exc:
        raise redirect_with("/account", "info", str(exc)) from None
    return render(
        request,
        "account_second_factor.html",
        status=400 if error else 200,
        nav="account",
        qr=qr_svg(enrolment.uri),
        secret=_grouped(enrolment.secret),
        error=error,
        required=ctx.must_set_up_second_factor,
    )


async def setup_form(request: web.Request) -> web.Response:
    return await setup_page(request)


async def enable(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        codes = await sf.do_enable_second_factor(
            request.app[DB], request.app[RING], current(request), str(form.get("code", ""))
        )
    except sf.WrongCode as exc:
        return await setup_page(request, error=str(exc))
    except HubError as exc:
        raise redirect_with("/account", "error", str(exc)) from None
    # Shown in this answer only, like a one-time password: never in a flash cookie.
    return render(request, "account_codes.html", nav="account", codes=codes, first=True)


async def disable(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        await sf.do_disable_second_factor(
            request.app[DB], current(request), str(form.get("password", ""))
        )
    except HubError as exc:
        raise redirect_with("/account", "error", str(exc)) from None
    raise redirect_with("/account", "ok", "Second factor turned off; your password alone signs in.")


async def regenerate_codes(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        codes = await sf.do_regenerate_recovery_codes(
            request.app[DB], current(request), str(form.get("password", ""))
        )
    except HubError as exc:
        raise redirect_with("/account", "error", str(exc)) from None
    return render(request, "account_codes.html", nav="account", codes=codes, first=False)


async def set_time_zone(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        zone = await do_set_my_time_zone(
            request.app[DB], current(request), str(form.get("time_zone", ""))
        )
    except ValueError as exc:
        raise redirect_with("/account", "error", str(exc)) from None
    raise redirect_with("/account", "ok", f"Times are now shown in {zone}.")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/account", account_page, name="account"),
        web.get("/account/second-factor", setup_form, name="account_second_factor"),
        web.post("/account/second-factor", enable, name="account_enable_second_factor"),
        web.post("/account/second-factor/disable", disable, name="account_disable_second_factor"),
        web.post("/account/recovery-codes", regenerate_codes, name="account_recovery_codes"),
        web.post("/account/time-zone", set_time_zone, name="account_time_zone"),
    ]
