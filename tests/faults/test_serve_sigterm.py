"""`hub serve` gets SIGTERM under webhook load, with requests in flight (held up by a slow
database). Those finish with 200 before it exits, cleanly; webhooks that find no server are
retried, as Twilio does, until a second `hub serve` on the same port answers them. Every text
is stored once, every due text delivered once."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.faults.harness import SIZES, Hub, Inbound, eventually, interrupt

pytestmark = pytest.mark.slow

IN_FLIGHT = 10
"""Requests held in the hub across the SIGTERM."""


async def test_sigterm_lets_requests_in_flight_finish_and_a_new_serve_takes_the_rest(
    hub: Hub,
) -> None:
    inbound = Inbound(hub.url, hub.url, SIZES.inbound + IN_FLIGHT)
    held, rest = inbound.sids[:IN_FLIGHT], inbound.sids[IN_FLIGHT:]
    await hub.release_outbound()
    # A connection each: a pooled keep-alive connection closed by the shutdown would look like
    # a request lost in flight.
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        flow = asyncio.create_task(inbound.deliver_all(http, rest, concurrency=6, pace_s=0.05))

        async def some_stored() -> bool:
            return len(await hub.inbound_counts()) >= SIZES.inbound // 10

        await eventually(some_stored, "the first inbound texts", 60, hub)
        old = hub.serve
        assert old is not None
        async with hub.inbound_held() as waiting:
            slow = [asyncio.create_task(inbound.post(http, sid)) for sid in held]

            async def all_held() -> bool:
                return await waiting() >= IN_FLIGHT

            await eventually(all_held, "the held webhooks to wait on the database", 30, hub)
            interrupt(old)
            terminated_at = time.monotonic()
            await asyncio.sleep(1.0)  # the listener closes; the held ones are still waiting
        finished = await asyncio.gather(*slow)
        await asyncio.to_thread(old.popen.wait, 30)
        exit_code = old.stop()
        hub.start_serve()
        await flow

    # Each request in flight at the SIGTERM was answered 200 by the old process, after it.
    assert [r.status for r in finished] == [200] * IN_FLIGHT, finished
    assert all(r.started < terminated_at < r.ended for r in finished)
    assert exit_code == 0, old.tail()
    outcome = await hub.verify(inbound)
    hub.assert_exact(outcome, inbound)
    # Webhooks really did find no server for a while, and were delivered later. None got an
    # error answer: only connections refused, or (aiohttp ignores bytes that arrive once its
    # shutdown has begun) closed before the hub had read the request.
    refused = [a for a in inbound.attempts if a.status is None and a.started > terminated_at]
    assert refused, inbound.failed()
    unanswered = {"ClientConnectorError", "ClientOSError", "ServerDisconnectedError"}
    assert set(inbound.failed()) <= unanswered, inbound.failed()
