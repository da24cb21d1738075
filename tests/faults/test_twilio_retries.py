"""Twilio delivers every inbound webhook three times, two of them at once: each text is stored
once, every copy is answered 200, and the due journey texts still go out once each."""

from __future__ import annotations

import asyncio
import itertools

import aiohttp
import pytest

from tests.faults.harness import SIZES, Hub, Inbound, shuffled

pytestmark = pytest.mark.slow


async def test_each_webhook_three_times_some_at_once_is_stored_once(hub: Hub) -> None:
    inbound = Inbound(hub.url, hub.url, SIZES.inbound)
    await hub.release_outbound()
    concurrent = set(inbound.sids[::2])
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def three_times(sid: str) -> None:
            if sid in concurrent:  # a retry racing the original, then a late one
                await asyncio.gather(inbound.deliver(http, sid), inbound.deliver(http, sid))
                await inbound.deliver(http, sid)
            else:
                for _ in range(3):
                    await inbound.deliver(http, sid)

        order = shuffled(inbound.sids, seed=9)
        for start in range(0, len(order), 16):
            await asyncio.gather(*(three_times(sid) for sid in order[start : start + 16]))

    outcome = await hub.verify(inbound)
    hub.assert_exact(outcome, inbound)
    # The fault happened: every text reached the hub three times, half of them twice at once,
    # and a copy is answered like the original (a non-200 would make Twilio retry for nothing).
    assert len(inbound.attempts) == 3 * SIZES.inbound, inbound.failed()
    assert inbound.failed() == {}
    overlapping = 0
    by_sid: dict[str, list[tuple[float, float]]] = {}
    for attempt in inbound.attempts:
        by_sid.setdefault(attempt.sid, []).append((attempt.started, attempt.ended))
    for spans in by_sid.values():
        spans.sort()
        overlapping += any(b[0] < a[1] for a, b in itertools.pairwise(spans))
    assert overlapping >= len(concurrent) // 2, overlapping
