"""PostgreSQL stops (fast shutdown: open transactions are cut) while inbound webhooks arrive and
a journey batch is on its way to Twilio, then starts again. While it is down, webhooks are
answered 503 with Retry-After within seconds, so Twilio retries them; afterwards every text is
stored once, and every due text reaches its patient once: nothing half-written."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.faults.harness import ANSWER_LIMIT_S, SIZES, Hub, Inbound, eventually

pytestmark = pytest.mark.slow

OUTAGE_S = 2.0
"""How long the database stays down once stopped."""


@pytest.mark.fake_twilio("--latency-ms", "300")
async def test_webhooks_get_503_while_the_database_is_down_and_nothing_is_half_written(
    hub: Hub,
) -> None:
    inbound = Inbound(hub.url, hub.url, SIZES.inbound)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        flow = asyncio.create_task(inbound.deliver_all(http, concurrency=6, pace_s=0.15))
        await hub.release_outbound()
        # Mid-batch: Twilio has some of the batch's texts, the batch has recorded none yet.
        await eventually(lambda: _between(hub, http, 1, SIZES.outbound - 1), "sends", 60, hub)
        at_stop = await hub.fake_count(http)
        hub.postgres.stop("fast")
        down_from = time.monotonic()
        await asyncio.sleep(OUTAGE_S)
        down_until = time.monotonic()
        hub.postgres.start()
        await flow

    outcome = await hub.verify(inbound)
    hub.assert_exact(outcome, inbound)
    during = [a for a in inbound.attempts if down_from <= a.started and a.ended <= down_until]
    assert 0 < at_stop < SIZES.outbound
    assert [a for a in during if a.status == 503], inbound.failed()
    assert all(a.retry_after for a in inbound.attempts if a.status == 503)
    # 503 only: a 500 would mean a bug, a missing answer a hang.
    assert set(inbound.failed()) <= {"503"}, inbound.failed()
    assert max(a.ended - a.started for a in inbound.attempts) < ANSWER_LIMIT_S


async def _between(hub: Hub, http: aiohttp.ClientSession, low: int, high: int) -> bool:
    return low <= await hub.fake_count(http) <= high
