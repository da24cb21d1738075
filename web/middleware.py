"""Error mapping and request metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from hub.db import database_unavailable
from hub.errors import HubError
from web.keys import METRICS

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

RETRY_AFTER_S = 5
"""What a 503 asks callers to wait: about as long as a database restart or failover takes."""

REASONS = {
    400: "The request was malformed.",
    401: "Sign in first.",
    403: "You are not allowed to do this.",
    404: "Nothing here.",
    405: "That method is not allowed here.",
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


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    route = _route_name(request)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
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
            response = _error(503, "The database is unavailable; try again shortly.")
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        log.exception("unhandled error", extra={"route": route})
        return _error(500)
    finally:
        metrics.requests.labels(route, request.method, str(status)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)
