"""``hub worker``: RQ workers on the hub's queues, and RQ's cron scheduler for the tick.

One ``hub worker`` is a supervisor (rq's WorkerPool) with N worker processes, each forking a
work horse per job, plus one cron scheduler process that enqueues the tick every second. Dead
children are started again (a worker that lost Redis keeps retrying by itself; a scheduler
that lost it exits and is restarted). SIGTERM or SIGINT stops gracefully: workers finish the
job they run (a dispatch batch sends and records what it prepared), the scheduler stops, and
the supervisor exits when all have."""

from __future__ import annotations

import logging
import os
import signal
import time
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from typing import Any

from redis import Redis
from rq import Queue, Worker
from rq.cron import CronScheduler
from rq.worker_pool import WorkerPool

from hub.config import Settings
from worker.effects import QUEUE_NAMES

log = logging.getLogger(__name__)

QUEUES = tuple(QUEUE_NAMES.values())
"""Queue names in priority order: staff replies, triage and the tick first, journey batches
last."""
TICK_QUEUE = QUEUE_NAMES["urgent"]
TICK_TTL_S = 10
"""A tick not started this long after it was enqueued is dropped: a later one does its work,
and ticks must not pile up behind long jobs."""
TICK_TIMEOUT_S = 120
"""A tick running longer is stopped; its claims come back after their lease."""
SCHEDULER_RESTART_DELAY_S = 2.0
"""Pause before starting a scheduler that died (Redis down): no tight restart loop."""
COMMAND_CHANNEL_WAKE_S = 1.0
"""How often a worker's command-channel thread wakes; the longest a stop waits for it."""


class HubWorker(Worker):
    """rq's Worker, with its command-channel thread waking every second instead of every 60.

    Stopping a worker stops that thread and waits for it (redis-py's ``stop()`` joins with
    no timeout). When the thread had already read the unsubscribe reply it sits in its next
    read until the wake-up, so a SIGTERM'd `hub worker` could hang a minute after its last
    job, past a supervisor's patience. A wake-up each second costs one local timeout."""

    def subscribe(self) -> None:
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=COMMAND_CHANNEL_WAKE_S,
            daemon=True,
            exception_handler=self._pubsub_exception_handler,
        )


def run_scheduler(redis_url: str, logging_level: str) -> None:
    from worker.jobs import tick
    from worker.tick import TICK_INTERVAL_S

    connection = Redis.from_url(redis_url)
    scheduler = CronScheduler(connection=connection, logging_level=logging_level)
    scheduler.register(
        tick,
        TICK_QUEUE,
        interval=TICK_INTERVAL_S,
        ttl=TICK_TTL_S,
        result_ttl=0,
        failure_ttl=3600,
        job_timeout=TICK_TIMEOUT_S,
    )
    scheduler.start()  # type: ignore[no-untyped-call]


class HubWorkerPool(WorkerPool):
    """rq's WorkerPool, also supervising the cron scheduler process."""

    def __init__(self, *args: Any, redis_url: str, logging_level: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._redis_url = redis_url
        self._logging_level = logging_level
        self._scheduler: BaseProcess | None = None
        self._scheduler_started = 0.0

    def _start_scheduler(self) -> None:
        process = get_context("fork").Process(
            target=run_scheduler,
            args=(self._redis_url, self._logging_level),
            name="hub tick scheduler",
        )
        process.start()
        self._scheduler, self._scheduler_started = process, time.monotonic()

    def start_workers(self, *args: Any, **kwargs: Any) -> None:
        super().start_workers(*args, **kwargs)
        if not self._burst:
            self._start_scheduler()

    def check_workers(self, respawn: bool = True) -> None:
        super().check_workers(respawn=respawn)
        if self._scheduler is None or self._scheduler.is_alive():
            return
        self._scheduler.join(0)
        waited = time.monotonic() - self._scheduler_started
        if respawn and self.status != self.Status.STOPPED and waited >= SCHEDULER_RESTART_DELAY_S:
            code = self._scheduler.exitcode
            log.warning("tick scheduler exited (code %s); starting it again", code)
            self._start_scheduler()

    def stop_workers(self) -> None:
        super().stop_workers()  # type: ignore[no-untyped-call]
        if self._scheduler is not None and self._scheduler.is_alive():
            assert self._scheduler.pid is not None
            os.kill(self._scheduler.pid, signal.SIGTERM)

    def all_workers_have_stopped(self) -> bool:
        workers_done = bool(super().all_workers_have_stopped())
        if self._scheduler is not None:
            self._scheduler.join(0.1)
            if self._scheduler.is_alive():
                return False
        return workers_done


def run_worker(settings: Settings, *, processes: int = 1, burst: bool = False) -> bool:
    """Run until stopped (or, with ``burst``, until the queues are empty)."""
    assert settings.redis_url is not None
    # Each job runs in a work horse forked from its worker; importing the job code here, once,
    # saves every job (and every one-second tick) about half a second of imports.
    import worker.jobs
    import worker.tick  # noqa: F401

    # Jobs run in forked work horses that read settings from the environment; an embedded
    # Redis URL or dev key ring resolved by this process must reach them.
    os.environ["HUB_REDIS_URL"] = settings.redis_url
    connection = Redis.from_url(settings.redis_url)
    pool = HubWorkerPool(
        [Queue(name, connection=connection) for name in QUEUES],
        connection=connection,
        num_workers=processes,
        worker_class=HubWorker,
        redis_url=settings.redis_url,
        logging_level=settings.log_level,
    )
    log.info("worker pool: %d processes on %s", processes, ", ".join(QUEUES))
    pool.start(burst=burst, logging_level=settings.log_level)
    return True
