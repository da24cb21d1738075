"""Error mapping, request metrics, the deadline for reading a request body, and Secure cookies."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from markupsafe import escape

from hub.db import database_unavailable
from hub.errors import HubError
from hub.storage_faults import storage_fault
from web.keys import METRICS, SETTINGS

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

RETRY_AFTER_S = 5
"""What a 503 asks callers to wait: about as long as a database restart or failover takes."""

DEFAULT_BODY_READ_TIMEOUT_S = 60.0
"""Longest a client may take to send a whole request body (a 10 MB upload at 2 Mbit/s fits);
a client that stalls or trickles its body past it gets 408 instead of holding the connection."""

REASONS = {
    400: "The request was malformed.",
    401: "Sign in first.",
    403: "You are not allowed to do this.",
    404: "Nothing here.",
    405: "That method is not allowed here.",
    408: "The request body did not arrive in time; send the request again.",
    413: "The request is too large.",
    500: "Something went wrong on our side; it has been logged.",
    503: "A service the hub depends on is unavailable.",
}


def _route_name(request: web.Request) -> str:
    info = request.match_info.route
    return info.name or (info.resource.canonical if info.resource else "unmatched")


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith(("/api/", "/healthz", "/metrics")) or (
        "text/html" not in request.headers.get("Accept", "")
        and not request.path.startswith("/webhooks/")
    )


def _error(status: int, detail: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"status": status, "message": detail or REASONS.get(status, "Error.")}},
        status=status,
    )


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><link rel="stylesheet" href="/static/app.css"></head>
<body><main id="main" class="narrow card"><h1>{title}</h1><p>{text}</p>
<p><a href="/">Open the inbox</a></p>
</main></body></html>"""
"""What a person's browser shows for an outage or a fault: plain words, not JSON."""


def _answer(request: web.Request, status: int, detail: str | None = None) -> web.Response:
    """The error in the form the caller reads: JSON for programs, a page for a browser."""
    if _wants_json(request) or request.path.startswith("/webhooks/"):
        return _error(status, detail)
    title = "Try again in a moment" if status == 503 else "Something went wrong"
    text = escape(detail or REASONS.get(status, "Error."))
    return web.Response(
        text=PAGE.format(title=title, text=text), content_type="text/html", status=status
    )


class BodyReadTimeout(asyncio.TimeoutError):
    """The body did not arrive within the deadline. A TimeoutError so that aiohttp, which
    drains an unread body after the response, stops at once and closes the connection."""


def arm_body_deadline(request: web.Request, timeout_s: float) -> asyncio.TimerHandle | None:
    """Fail every read of this request's body that is still waiting after ``timeout_s``.

    The deadline sits on the body stream itself rather than around the handler, so it bounds
    every way a handler reads (form, JSON, multipart, the webhooks' capped loop) and never
    cuts a handler that is slow after the body has fully arrived.
    """
    content = request.content
    if not request.can_read_body or content.is_eof():
        return None

    def expire() -> None:
        if not content.is_eof():
            content.set_exception(BodyReadTimeout())

    return asyncio.get_running_loop().call_later(timeout_s, expire)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    route = _route_name(request)
    started = time.perf_counter()
    status = 500
    deadline = arm_body_deadline(request, DEFAULT_BODY_READ_TIMEOUT_S)
    try:
        response = await handler(request)
        status = response.status
        return response
    except BodyReadTimeout:
        # Nothing was stored: every handler reads its body before it writes anything.
        status = 408
        response = _error(408)
        response.force_close()  # the rest of the body may still be on its way
        return response
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400 or not _wants_json(request):
            raise  # redirects, and pages' own error text, pass through untouched
        return _error(
            exc.status, exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else None
        )
    except HubError as exc:
        # A domain error that reached the edge unhandled is still the caller's problem to fix.
        status = 400
        return _error(400, str(exc))
    except Exception as exc:
        if database_unavailable(exc):
            # Not a bug to page anyone about: the caller retries (Twilio does on a 503) and
            # the transaction rolled back, so a retry finds nothing half-written.
            status = 503
            log.warning("database unavailable", extra={"route": route})
            response = _answer(request, 503, "The database is unavailable; try again shortly.")
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        if (fault := storage_fault(exc)) is not None:
            # A full disk or a read-only database is an outage too, not a bug in the request:
            # the transaction rolled back whole, so the provider's retry stores it once.
            status = 503
            log.warning("database cannot store: %s", fault, extra={"route": route})
            response = _answer(
                request, 503, "The database cannot store anything right now; try again."
            )
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        log.exception("unhandled error", extra={"route": route})
        return _answer(request, 500)
    finally:
        if deadline is not None:
            deadline.cancel()
        metrics.requests.labels(route, request.method, str(status)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)


def _secure(request: web.Request, response: web.StreamResponse) -> None:
    if request.app[SETTINGS].public_url.startswith("https://"):
        for morsel in response.cookies.values():
            morsel["secure"] = True


@web.middleware
async def secure_cookies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Under https every cookie the hub sets is Secure, whoever set it: helpers such as
    ``redirect_with`` (the flash) do not know the settings, and a cookie sent once over plain
    http can be read on the way."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _secure(request, exc)
        raise
    _secure(request, response)
    return response
