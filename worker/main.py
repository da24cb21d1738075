"""``hub worker``: an RQ worker with the scheduler, on the hub's queues."""

from __future__ import annotations

import logging
import os

from redis import Redis
from rq import Queue, Worker

from hub.config import Settings
from worker.effects import QUEUE_NAMES

log = logging.getLogger(__name__)

QUEUES = tuple(QUEUE_NAMES.values())
"""Queue names in priority order: staff replies and triage first, journey batches last."""


def run_worker(settings: Settings, *, burst: bool = False) -> bool:
    assert settings.redis_url is not None
    # Jobs run in forked work horses that read settings from the environment; an embedded
    # Redis URL or dev key ring resolved by this process must reach them.
    os.environ["HUB_REDIS_URL"] = settings.redis_url
    connection = Redis.from_url(settings.redis_url)
    queues = [Queue(name, connection=connection) for name in QUEUES]
    worker = Worker(queues, connection=connection)
    log.info("worker %s listening on %s", worker.name, ", ".join(QUEUES))
    return worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level)
