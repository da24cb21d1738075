"""GET /healthz and GET /metrics."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub.journeys.reporting import do_render_failure_totals
from hub.outbox import count_pending
from web.keys import DB, METRICS, REDIS

log = logging.getLogger(__name__)

HEALTH_CHECK_TIMEOUT_S = 2.0
"""A dependency slower than this to answer counts as down (load balancers time out soon after)."""


async def healthz(request: web.Request) -> web.Response:
    app = request.app
    checks: dict[str, str] = {}

    async def check(name: str, probe: asyncio.Future[object] | object) -> None:
        try:
            await asyncio.wait_for(probe, HEALTH_CHECK_TIMEOUT_S)  # type: ignore[arg-type]
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {type(exc).__name__}"
            app[METRICS].health_failures.labels(name).inc()
            log.warning("health check failed", extra={"dependency": name})

    await check("database", app[DB].ping())
    await check("redis", app[REDIS].ping())
    ok = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    try:
        async with app[DB].reader() as session:
            app[METRICS].outbox_pending.set(await count_pending(session))
    except Exception:
        log.warning("could not count pending outbox events for /metrics")
    try:
        app[METRICS].count_render_failures(await do_render_failure_totals(app[DB]))
    except Exception:
        log.warning("could not count template render failures for /metrics")
    body = generate_latest(app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
