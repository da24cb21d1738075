"""Jinja2 pages: autoescaped (a message body of <script> shows as text), one base context."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import phonenumbers
from aiohttp import web

from hub.enums import RECEIVE_ONLY
from hub.inbox.access import StaffContext
from web.auth import CTX, SESSION
from web.keys import SETTINGS, TEMPLATES

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
FLASH_COOKIE = "hub_flash"


CHANNEL_NAMES = {
    "sms": "SMS",
    "email": "Email",
    "voice": "Phone call",
    "chat": "Web chat",
    "whatsapp": "WhatsApp",
}
"""How staff read a channel's name; an unlisted channel shows its stored name."""


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@jinja2.pass_context
def localtime(
    context: jinja2.runtime.Context,
    moment: datetime | None,
    style: str = "short",
    zone: str | None = None,
) -> str:
    """A stored (UTC) time written in the reader's zone, or in ``zone`` when given.

    Styles: "short" ("Dec 7, 14:05"), "time" ("14:05"), "long" ("Mon Dec 7 2026, 14:05 EST"),
    "input" (the value of a datetime-local field).
    """
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    me = context.get("me")
    local = moment.astimezone(_zone(zone or (me.time_zone if me is not None else None)))
    if style == "time":
        return local.strftime("%H:%M")
    if style == "long":
        return local.strftime("%a %b %-d %Y, %H:%M %Z")
    if style == "input":
        return local.strftime("%Y-%m-%dT%H:%M")
    return local.strftime("%b %-d, %H:%M")


def _span(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{max(minutes, 1)} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} d {hours % 24} h" if hours % 24 else f"{hours // 24} d"


def age(since: datetime, now: datetime) -> str:
    """How long ago, in words staff read at a glance ("12 min", "3 h 5 min", "2 d")."""
    return _span((now - since).total_seconds())


def countdown(due: datetime, now: datetime) -> str:
    """A first-reply target as time left, or how far past it is."""
    left = (due - now).total_seconds()
    return f"reply due in {_span(left)}" if left > 0 else f"reply overdue by {_span(-left)}"


def filesize(size: int) -> str:
    """A file's size as people read it: "512 bytes", "12.3 KB", "4.1 MB"."""
    if size < 1024:
        return f"{size} byte{'s' if size != 1 else ''}"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def phone(number: str) -> str:
    """A stored E.164 number the way people read it (+1 555-010-0101)."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def make_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["channel_names"] = CHANNEL_NAMES
    env.filters["localtime"] = localtime
    env.filters["age"] = age
    env.filters["countdown"] = countdown
    env.filters["phone"] = phone
    env.filters["filesize"] = filesize
    # Channels the hub only receives on are offered in a reply box only where the patient
    # wrote on one (to say why it cannot be used), never as one more refused option.
    env.globals["receive_only"] = frozenset(c.value for c in RECEIVE_ONLY)
    return env


def render(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    me: StaffContext | None = request.get(CTX)
    session = request.get(SESSION)
    flashes: list[list[str]] = []
    raw = request.cookies.get(FLASH_COOKIE)
    if raw:
        try:
            loaded = json.loads(raw)
            flashes = [[str(k), str(t)] for k, t in loaded][:5]
        except (ValueError, TypeError):
            flashes = []
    base = {
        "me": me,
        "csrf": session.csrf if session else "",
        "clinic_name": request.app[SETTINGS].clinic_name,
        "flashes": flashes,
        "unread": context.pop("unread", 0),
        "nav": context.pop("nav", ""),
    }
    html = request.app[TEMPLATES].get_template(template).render({**base, **context})
    response = web.Response(text=html, content_type="text/html", status=status)
    if raw:
        response.del_cookie(FLASH_COOKIE, path="/")
    return response


def fragment(request: web.Request, template: str, **context: Any) -> str:
    context.setdefault("me", request.get(CTX))
    return request.app[TEMPLATES].get_template(template).render(context)


def redirect_with(location: str, kind: str, text: str) -> web.HTTPSeeOther:
    """Post/redirect/get with a one-shot notice (escaped when shown)."""
    exc = web.HTTPSeeOther(location)
    exc.set_cookie(
        FLASH_COOKIE,
        json.dumps([[kind, text[:300]]]),
        path="/",
        httponly=True,
        samesite="Lax",
        max_age=60,
    )
    return exc
