"""Both `hub worker`s are SIGKILLed (with the work horse running the journey batch, and a
scheduler tick holding its lock) while the batch's texts are on their way to a slow Twilio and
inbound texts keep arriving; two new workers start. Every due text reaches its patient once:
the ones Twilio already had are found there and recorded, the others are sent once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aiohttp
import pytest

from tests.faults.harness import SIZES, Hub, Inbound, eventually

pytestmark = pytest.mark.slow

TICKS_RESUME_S = 25.0
"""Longest the ticks may stay stopped after a worker died holding the tick lock (the lock's
TTL, then a new worker's first tick on a loaded machine)."""


@pytest.mark.fake_twilio("--latency-ms", "1000")
async def test_workers_killed_mid_batch_then_restarted_lose_and_duplicate_nothing(
    hub: Hub,
) -> None:
    inbound = Inbound(hub.url, hub.url, SIZES.inbound)
    async with aiohttp.ClientSession() as http:
        flow = asyncio.create_task(inbound.deliver_all(http, concurrency=4, pace_s=0.1))
        await hub.release_outbound()

        async def mid_batch_and_tick() -> int:
            # A tick in progress too: its lock must not outlive the killed worker for long.
            count = await hub.fake_count(http)
            return count if 0 < count < SIZES.outbound and hub.tick_running() else 0

        at_kill = await eventually(mid_batch_and_tick, "a batch part-way and a tick", 60, hub)
        hub.kill_workers()
        # A tick is short, so it may have finished between the look and the kill; leave what
        # a tick killed holding its lock leaves behind, so every run covers that case.
        dead_lock = hub.orphan_tick_lock()
        orphaned_at = datetime.now(UTC)
        hub.start_worker()
        hub.start_worker()
        # Ticks (claims, stuck-send checks, relays) resume once the dead tick's lock expires.
        await eventually(
            lambda: hub.tick_took_over(dead_lock, orphaned_at), "a live tick", TICKS_RESUME_S, hub
        )
        await flow

    outcome = await hub.verify(inbound)
    hub.assert_exact(outcome, inbound)
    # The kill happened mid-batch: Twilio had some of the batch's texts, not all.
    assert 0 < at_kill < SIZES.outbound, at_kill
    assert inbound.failed() == {}
