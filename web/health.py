"""GET /healthz and GET /metrics."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub.journeys.reporting import do_render_failure_totals
from hub.outbox import count_pending
from hub.rights.actions.retention import RetentionFigures, do_retention_figures
from hub.storage_faults import database_fault, free_bytes, sqlite_path, storage_fault
from web.keys import DB, METRICS, REDIS, SETTINGS
from web.metrics import Metrics
from web.metrics_ops import refresh as refresh_ops_figures

log = logging.getLogger(__name__)

HEALTH_CHECK_TIMEOUT_S = 2.0
"""A dependency slower than this to answer counts as down (load balancers time out soon after)."""


class CannotStore(Exception):
    """The database answers but cannot store anything; the message names why."""


async def _database_can_store(app: web.Application) -> None:
    try:
        await app[DB].ping()
    except Exception as exc:
        # SQLite takes its write lock at BEGIN, so a read-only connection fails even a read.
        if (fault := storage_fault(exc)) is not None:
            raise CannotStore(fault) from exc
        raise
    fault = await database_fault(app[DB])
    if fault is not None:
        raise CannotStore(fault)


async def healthz(request: web.Request) -> web.Response:
    app = request.app
    checks: dict[str, str] = {}

    async def check(name: str, probe: asyncio.Future[object] | object) -> None:
        try:
            await asyncio.wait_for(probe, HEALTH_CHECK_TIMEOUT_S)  # type: ignore[arg-type]
            checks[name] = "ok"
        except Exception as exc:
            reason = str(exc) if isinstance(exc, CannotStore) else type(exc).__name__
            checks[name] = f"error: {reason}"
            app[METRICS].health_failures.labels(name).inc()
            log.warning("health check failed: %s", reason, extra={"dependency": name})

    await check("database", _database_can_store(app))
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
    try:
        _count_retention(app[METRICS], await do_retention_figures(app[DB]))
    except Exception:
        log.warning("could not read the retention figures for /metrics")
    _measure_free_space(app)
    await refresh_ops_figures(app)
    body = generate_latest(app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _count_retention(metrics: Metrics, figures: RetentionFigures) -> None:
    """Figures the workers record in the database (the purge runs in a worker, not here)."""
    finished = figures.last_finished_at
    metrics.retention_last_run.set(finished.timestamp() if finished else 0)
    for kind, n in figures.last_counts.items():
        metrics.retention_deleted.labels(kind).set(n)
    metrics.provider_deletions_pending.set(figures.pending_provider_deletions)


def _measure_free_space(app: web.Application) -> None:
    """Free space where the embedded mode writes, for a disk alert to fire before writes fail
    (PostgreSQL's disk is watched on its own server)."""
    volumes = {"database": sqlite_path(app[DB].engine), "var": app[SETTINGS].var_dir}
    for volume, path in volumes.items():
        if path is None or not (path.parent if volume == "database" else path).exists():
            continue
        try:
            app[METRICS].storage_free_bytes.labels(volume).set(free_bytes(path))
        except OSError:
            log.warning("could not measure free space", extra={"volume": volume})
