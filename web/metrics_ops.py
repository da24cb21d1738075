"""Reads the operations figures for /metrics from the stores every process shares (the
database, Redis, RQ's queues), so any `hub serve` behind a load balancer answers the same.
A scrape reads them at most once per ``DEFAULT_REFRESH_S``; each read is a bounded statement."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from rq import Queue

from hub.db import Database, utcnow
from hub.ops_metrics import (
    FOLD_STEP,
    SETTLED_AFTER,
    SendTotals,
    do_oldest_pending_effect,
    do_send_totals,
    do_step_failure_totals,
    id_floor,
    id_time,
)
from web.keys import DB, METRICS, REDIS, SETTINGS
from web.metrics import NEVER, SIGN_IN_FAILURE_REASONS, OpsFigures, QueueFigures
from web.tasks import run_soon
from worker.effects import QUEUE_NAMES
from worker.tick import TICK_FINISHED_KEY

log = logging.getLogger(__name__)

DEFAULT_REFRESH_S = 2.0
"""Scrapes closer together than this share one read of the stores."""
SEND_BASE_KEY = "hub:metrics:sends:base"
"""Redis: the send totals of settled messages (``hub.ops_metrics.SendTotals`` as JSON)."""
SEND_FOLD_LOCK = "hub:metrics:sends:fold"
FOLD_LOCK_TTL_S = 300
"""A process that died while folding frees the fold after this long."""
SIGN_IN_FAILURES_KEY = "hub:metrics:sign_in_failures"
"""Redis hash: refused sign-ins by reason, counted by whichever process refused them."""
WEBHOOK_STARTED = web.RequestKey("webhook_started", float)
"""``time.perf_counter()`` when a webhook's handler began: the start of its processing time."""
_ZERO_ID = uuid.UUID(int=0)


async def count_failed_sign_in(redis: Redis, reason: str) -> None:
    """Count a refused sign-in where every process (and the next one after a restart) sees it.
    The reason is one of ``SIGN_IN_FAILURE_REASONS``: never what was typed."""
    assert reason in SIGN_IN_FAILURE_REASONS
    try:
        await redis.hincrby(SIGN_IN_FAILURES_KEY, reason, 1)
    except Exception:  # a metric is not worth failing a sign-in for
        log.warning("could not count a failed sign-in", extra={"reason": reason})


def webhook_started(request: web.Request) -> None:
    request[WEBHOOK_STARTED] = time.perf_counter()


def webhook_done(request: web.Request, provider: str, kind: str, outcome: str) -> None:
    request.app[METRICS].webhook_done(provider, kind, outcome, request.get(WEBHOOK_STARTED))


async def refresh(app: web.Application) -> None:
    """Bring the figures /metrics shows up to date, unless they were read just now. A store
    that does not answer leaves its figures out (and is logged), never fails the scrape."""
    collector = app[METRICS].ops
    now = time.monotonic()
    if now - collector.read_at < DEFAULT_REFRESH_S:
        return
    collector.read_at = now
    figures = OpsFigures()
    redis = app[REDIS]
    db = app[DB]
    reads = {
        "sends": _send_totals(app),
        "step_failures": do_step_failure_totals(db),
        "outbox": do_oldest_pending_effect(db),
        "queues": asyncio.to_thread(_read_queues, app[SETTINGS].redis_url or ""),
        "tick": _tick_finished(redis),
        "sign_ins": redis.hgetall(SIGN_IN_FAILURES_KEY),
    }
    results: dict[str, Any] = {}
    for name, read in reads.items():
        # One after another: the database reads share the process's pool with real work.
        try:
            results[name] = await read
        except Exception as exc:
            log.warning(
                "could not read figures for /metrics",
                extra={"figures": name, "error": type(exc).__name__},
            )
    if "sends" in results:
        figures.sends = results["sends"]
    if "step_failures" in results:
        figures.step_failures = results["step_failures"]
    if "outbox" in results:
        oldest = results["outbox"]
        figures.outbox_lag_s = (
            0.0 if oldest is None else max(0.0, (utcnow() - oldest).total_seconds())
        )
    if "queues" in results:
        figures.queues = results["queues"]
    if "tick" in results:
        finished, redis_now = results["tick"]
        figures.tick_finished_at = finished or 0.0
        figures.tick_lag_s = NEVER if finished is None else max(0.0, redis_now - finished)
    if "sign_ins" in results:
        figures.sign_in_failures = {k.decode(): int(v) for k, v in results["sign_ins"].items()}
    collector.figures = figures


async def _tick_finished(redis: Redis) -> tuple[float | None, float]:
    """(when the last tick finished, now), both by Redis's clock, as the tick wrote it."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(TICK_FINISHED_KEY)
        pipe.time()
        raw, (seconds, micros) = await pipe.execute()
    return (float(raw) if raw else None), seconds + micros / 1e6


async def _send_totals(app: web.Application) -> SendTotals | None:
    """Settled totals from Redis plus a count of the messages made since (see hub.ops_metrics).
    The settled part moves forward here, by one process at a time."""
    db, redis = app[DB], app[REDIS]
    # Ids carry the wall clock of the process that made them, not the hub's (settable) clock.
    settled_up_to = id_floor(datetime.now(UTC) - SETTLED_AFTER)
    raw = await redis.get(SEND_BASE_KEY)
    base = SendTotals.from_json(json.loads(raw)) if raw else None
    if base is None or base.until is None:
        # Counting every settled message (after a first start, or Redis lost the key) takes
        # seconds at millions of rows, longer than a scrape may: it runs beside the scrapes,
        # and the send series appear once it is stored.
        token = uuid.uuid4().hex
        if await redis.set(SEND_FOLD_LOCK, token, nx=True, ex=FOLD_LOCK_TTL_S):
            run_soon(app, _fold_logged(db, redis, None, settled_up_to, token))
        return None
    if id_time(settled_up_to) - id_time(base.until) >= FOLD_STEP:
        token = uuid.uuid4().hex
        if await redis.set(SEND_FOLD_LOCK, token, nx=True, ex=FOLD_LOCK_TTL_S):
            base = await _fold(db, redis, base, settled_up_to, token)
    assert base.until is not None
    return base.plus(await do_send_totals(db, base.until, None))


async def _fold(
    db: Database, redis: Redis, base: SendTotals | None, up_to: uuid.UUID, token: str
) -> SendTotals:
    """Add the messages made between the base's boundary and ``up_to`` to the stored base;
    the caller holds the fold lock (``token``), released here."""
    try:
        since = base.until if base is not None and base.until is not None else _ZERO_ID
        folded = (base or SendTotals()).plus(await do_send_totals(db, since, up_to))
        await redis.set(SEND_BASE_KEY, json.dumps(folded.to_json()))
        return folded
    finally:
        if await redis.get(SEND_FOLD_LOCK) == token.encode():
            await redis.delete(SEND_FOLD_LOCK)


async def _fold_logged(
    db: Database, redis: Redis, base: SendTotals | None, up_to: uuid.UUID, token: str
) -> None:
    try:
        await _fold(db, redis, base, up_to, token)
    except Exception as exc:  # the next scrape starts it again
        log.warning(
            "could not count settled sends for /metrics", extra={"error": type(exc).__name__}
        )


def _read_queues(redis_url: str) -> dict[str, QueueFigures]:
    """Depth, age of the head job and failed jobs of each hub queue, through rq's own API
    (rq is synchronous: this runs in a thread, on a connection of its own)."""
    connection = SyncRedis.from_url(redis_url)
    try:
        figures: dict[str, QueueFigures] = {}
        for name in QUEUE_NAMES.values():
            queue = Queue(name, connection=connection)
            depth = queue.count
            age = 0.0
            # The head is the next job a worker takes, the one that has waited longest.
            head = queue.get_jobs(0, 1)
            if head and head[0].enqueued_at is not None:
                age = max(0.0, (datetime.now(UTC) - head[0].enqueued_at).total_seconds())
            failed = queue.failed_job_registry.get_job_count(cleanup=False)
            figures[name] = QueueFigures(depth, age, failed)
        return figures
    finally:
        connection.close()
