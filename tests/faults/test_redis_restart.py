"""Redis stops (losing every key: no persistence) while inbound webhooks flow, and journey
texts fall due while it is down; then it starts again, empty. Webhooks are accepted and stored
throughout (the outbox is in the database and relayed later), and once Redis is back the
workers reconnect and every due text goes out once: the database, not Redis, knows what is
due."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.faults.harness import SIZES, Hub, Inbound, eventually

pytestmark = pytest.mark.slow

OUTAGE_S = 3.0
"""How long Redis stays down."""


async def test_webhooks_are_stored_while_redis_is_down_and_sends_resume_after(hub: Hub) -> None:
    inbound = Inbound(hub.url, hub.url, SIZES.inbound)
    async with aiohttp.ClientSession() as http:
        flow = asyncio.create_task(inbound.deliver_all(http, concurrency=4, pace_s=0.1))

        async def some_stored() -> bool:
            return len(await hub.inbound_counts()) >= SIZES.inbound // 10

        await eventually(some_stored, "the first inbound texts", 60, hub)
        hub.redis.stop()
        down_from = time.monotonic()
        await hub.release_outbound()  # due now, while nothing can be enqueued
        await asyncio.sleep(OUTAGE_S)
        sent_while_down = await hub.fake_count(http)
        down_until = time.monotonic()
        hub.redis.start()
        await flow

    outcome = await hub.verify(inbound)
    hub.assert_exact(outcome, inbound)
    during = [a for a in inbound.attempts if down_from <= a.started and a.ended <= down_until]
    # Redis really was down while webhooks were answered: every one of them with 200.
    assert len([a for a in during if a.status == 200]) >= 5, len(during)
    assert inbound.failed() == {}
    # Nothing could go out without Redis; everything did once it was back.
    assert sent_while_down == 0
