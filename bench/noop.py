"""The baseline the dispatch benchmark stands beside: RQ workers of the kind `hub worker` runs
(``rq.Worker``: a forked work horse per job, the scheduler on, INFO logging) draining jobs that
do nothing. Jobs per second here is what any design that spends one job per message can reach
at most on this machine.

    python -m bench.noop --jobs 2000 --processes 2      # measure and print
    python -m bench.noop --serve --queue Q               # one worker (what measure() starts)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Process,
    bench_redis_url,
    clean_env,
    exclusive,
    flush_redis,
    wait_for_workers,
)

QUEUE = "bench-noop"
DRAIN_TIMEOUT_S = 600.0
"""A baseline slower than this is not a baseline; give up."""


def noop() -> None:
    """The job: nothing, so what is measured is RQ's own cost per job (dequeue, fork, report)."""


def serve(redis_url: str, queue: str) -> None:
    """One worker as worker/main.py builds it."""
    from redis import Redis
    from rq import Queue, Worker

    connection = Redis.from_url(redis_url)
    worker = Worker([Queue(queue, connection=connection)], connection=connection)
    worker.work(with_scheduler=True, logging_level="INFO")


def measure(
    *, jobs: int, processes: int, redis_url: str | None = None, log_dir: Path | None = None
) -> dict[str, Any]:
    """Start ``processes`` workers, wait until they listen, enqueue ``jobs`` no-op jobs in one
    pipeline and time until RQ reports them all finished."""
    from redis import Redis
    from rq import Queue
    from rq.registry import FailedJobRegistry, FinishedJobRegistry

    url = flush_redis(redis_url or bench_redis_url())
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="hub-bench-noop-"))
    connection = Redis.from_url(url)
    queue = Queue(QUEUE, connection=connection)
    workers = [
        Process(
            f"noop-worker-{n}",
            [sys.executable, "-m", "bench.noop", "--serve", "--redis-url", url, "--queue", QUEUE],
            clean_env(),
            log_dir,
        )
        for n in range(processes)
    ]
    try:
        wait_for_workers(url, processes, workers, queue=QUEUE)
        finished, failed = FinishedJobRegistry(queue=queue), FailedJobRegistry(queue=queue)
        started = time.perf_counter()
        with connection.pipeline() as pipe:
            queue.enqueue_many([Queue.prepare_data(noop) for _ in range(jobs)], pipeline=pipe)
            pipe.execute()
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while (done := finished.count + failed.count) < jobs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no-op baseline: {done} of {jobs} jobs in {DRAIN_TIMEOUT_S}s")
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        if failed.count:
            raise RuntimeError(f"{failed.count} no-op jobs failed:\n" + workers[0].tail())
    finally:
        for worker in workers:
            worker.stop()
        connection.close()
    return {
        "jobs": jobs,
        "processes": processes,
        "seconds": round(seconds, 3),
        "jobs_per_s": round(jobs / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.noop", description=__doc__)
    parser.add_argument("--serve", action="store_true", help="run one worker (internal)")
    parser.add_argument("--redis-url", default=None, help=f"default {bench_redis_url()}")
    parser.add_argument("--queue", default=QUEUE)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    if args.serve:
        serve(args.redis_url or bench_redis_url(), args.queue)
        return
    with exclusive("noop"):
        result = measure(jobs=args.jobs, processes=args.processes, redis_url=args.redis_url)
    print(
        f"{result['jobs_per_s']} no-op jobs/s: {result['jobs']} jobs on "
        f"{result['processes']} RQ worker processes in {result['seconds']} s"
    )


if __name__ == "__main__":
    main()
