"""Twilio's API fails one call in ten (500/503, or a call held and then dropped unanswered,
as on a timeout), and status callbacks come shuffled with one of them twice. Every due text
reaches its patient once, and each ends "delivered": a late "sent" never moves it back. (No
text meets more than two faults in a row: the hub gives up after four attempts, by design.)"""

from __future__ import annotations

import aiohttp
import pytest

from hub.enums import MessageStatus
from tests.faults.harness import SIZES, Hub, Inbound

pytestmark = pytest.mark.slow


@pytest.mark.fake_twilio(
    "--latency-ms", "20", "--fail-rate", "0.05", "--stall-rate", "0.05", "--stall-ms", "1500",
    "--disorder-rate", "0.5", "--faults-in-a-row", "2",
)  # fmt: skip
async def test_failed_and_stalled_calls_and_shuffled_callbacks_deliver_each_text_once(
    hub: Hub,
) -> None:
    inbound = Inbound(hub.url, hub.url, SIZES.inbound)
    await hub.release_outbound()
    async with aiohttp.ClientSession() as http:
        await inbound.deliver_all(http, concurrency=6)

    outcome = await hub.verify(inbound, final=(MessageStatus.DELIVERED,))
    hub.assert_exact(outcome, inbound)
    assert outcome.statuses == {"delivered": SIZES.outbound}, outcome.statuses
    async with aiohttp.ClientSession() as http:
        faults = await hub.fake_faults(http)
    # The faults happened: calls failed, calls stalled, callbacks came out of order.
    assert faults["failed"] > 0 and faults["stalled"] > 0, faults
    assert faults["disordered"] >= SIZES.outbound // 4, faults
