"""The scheduler tick: RQ's cron scheduler (started by `hub worker`) enqueues it every second on
the urgent queue. It claims due journey steps into dispatch batches, re-queues sends whose job
was lost, asks the provider about sends whose sender died, wakes snoozed conversations,
sends replies scheduled for now, re-releases outbox effects whose first release failed, and
starts the nightly retention purge.
Every `hub worker` runs a scheduler; a Redis lock lets one tick at a time do the work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import timedelta

from redis import Redis, RedisError
from rq import Queue

from hub.config import Settings
from hub.db import utcnow
from hub.inbox.actions import conversations, delivery, scheduled
from hub.journeys import actions as journeys
from hub.outbox import purge_released, relay_pending
from hub.reports.csat_rollup_actions import do_refresh_csat_rollup
from hub.reports.delivery_rollup_actions import do_refresh_delivery_rollup
from hub.reports.facts_actions import do_refresh_facts
from hub.reports.run_facts_actions import do_refresh_run_facts
from worker.effects import QUEUE_NAMES
from worker.jobs import resolve_stuck_sends_with
from worker.rights import start_rights_work
from worker.runtime import job_runtime
from worker.weekly_summary import start_weekly_summary

log = logging.getLogger(__name__)

TICK_LOCK = "hub:tick"
TICK_DONE_KEY = "hub:tick:done"
"""The clock time (ISO 8601) the last completed tick worked at: for health checks and tests."""
TICK_FINISHED_KEY = "hub:tick:finished"
"""Redis's own time (Unix seconds) when the last tick finished its work: /metrics' tick lag,
measured on one clock whatever the hosts' clocks say (see web/metrics_ops.py)."""
TICK_INTERVAL_S = 1
"""Seconds between ticks (RQ's cron scheduler counts in whole seconds)."""
TICK_LOCK_TTL_S = 10
"""A tick whose worker died (SIGKILL, OOM) holding the lock frees it after this long; every
other tick waits meanwhile, so claims, stuck-send checks and relays stop for that long."""
TICK_LOCK_RENEW_S = 3.0
"""How often a running tick extends its lock, so a slow but live tick keeps it."""
_EXTEND_OWN_LOCK = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('expire', KEYS[1], ARGV[2]) else return 0 end"
)


async def _keep_lock(redis: Redis, token: str) -> None:
    extend = redis.register_script(_EXTEND_OWN_LOCK)
    while True:
        await asyncio.sleep(TICK_LOCK_RENEW_S)
        try:
            extend(keys=[TICK_LOCK], args=[token, TICK_LOCK_TTL_S])
        except RedisError:  # Redis away: the tick's own calls fail and say so
            log.warning("could not extend the tick lock")


QUEUED_BATCHES_TARGET = 16
"""Dispatch batches kept waiting in the bulk queue. Claiming far ahead of what workers can
send would let leases run out on batches still in the queue; fewer would leave workers idle
between ticks."""


async def run_tick(settings: Settings | None = None) -> str:
    async with job_runtime(settings) as rt:
        assert rt.settings.redis_url is not None
        redis = Redis.from_url(rt.settings.redis_url)
        token = uuid.uuid4().hex
        started = utcnow()
        try:
            if not redis.set(TICK_LOCK, token, nx=True, ex=TICK_LOCK_TTL_S):
                return "another tick is running"
            renewal = asyncio.create_task(_keep_lock(redis, token))
            try:
                effects = await conversations.do_wake_snoozed(rt.db)
                effects += await delivery.do_requeue_stalled(rt.db)
                effects += await scheduled.do_send_due_scheduled(rt.db, rt.ring)
                room = QUEUED_BATCHES_TARGET - Queue(QUEUE_NAMES["bulk"], connection=redis).count
                batches: tuple[uuid.UUID, ...] = ()
                await rt.release(effects)
                if room > 0:

                    async def start(effect: uuid.UUID) -> None:
                        await rt.release([effect])

                    batches = await journeys.do_schedule_due(
                        rt.db,
                        lease=timedelta(seconds=rt.settings.journey_lease_s),
                        max_batches=room,
                        on_batch=start,
                    )
                await relay_pending(rt.db, rt.sink)
                await purge_released(rt.db, utcnow())
                stuck = await resolve_stuck_sends_with(rt)
                # Once a minute at most: today's retention purge, provider deletions due.
                await start_rights_work(rt.db, redis)
                # The inbox reports' rollups: one bounded batch of changed conversations.
                await do_refresh_facts(rt.db)
                await do_refresh_run_facts(rt.db)  # and the outcome reports' ones
                await do_refresh_delivery_rollup(rt.db)  # and the delivery report's
                await do_refresh_csat_rollup(rt.db)  # and the csat report's
                await start_weekly_summary(rt.db, redis)  # the same: is the weekly mail due?
                redis.set(TICK_DONE_KEY, started.isoformat())
                redis.set(TICK_FINISHED_KEY, "{}.{:06d}".format(*redis.time()))
            finally:
                renewal.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewal
                # Only our own lock: a tick slower than the TTL must not free the next one's.
                if redis.get(TICK_LOCK) == token.encode():
                    redis.delete(TICK_LOCK)
        finally:
            redis.close()
    summary = f"batches: {len(batches)}, effects: {len(effects)}; {stuck}"
    if batches or effects:
        log.info("tick", extra={"batches": len(batches), "effects": len(effects)})
    return summary
