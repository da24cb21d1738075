"""Post-commit releases and the relay loop, run beside request handling."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterable

from aiohttp import web

from hub.outbox import relay_pending, release_events
from web.keys import BACKGROUND, DB, SINK

log = logging.getLogger(__name__)

RELAY_INTERVAL_S = 2.0
"""How often `hub serve` re-releases effects whose fast path failed (Redis briefly down)."""


def release_soon(app: web.Application, effect_ids: Iterable[uuid.UUID]) -> None:
    """Release a committed transaction's effects without holding up the HTTP answer."""
    ids = list(effect_ids)
    if not ids:
        return
    task = asyncio.create_task(_release(app, ids))
    app[BACKGROUND].add(task)
    task.add_done_callback(app[BACKGROUND].discard)


async def _release(app: web.Application, ids: list[uuid.UUID]) -> None:
    try:
        await release_events(app[DB], app[SINK], ids)
    except Exception:  # the relay loop picks these up
        log.exception("releasing effects failed; the relay will retry")


async def relay_loop(app: web.Application) -> AsyncIterator[None]:
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), RELAY_INTERVAL_S)
            except TimeoutError:
                pass
            else:
                return
            try:
                await relay_pending(app[DB], app[SINK])
            except Exception:
                log.exception("outbox relay pass failed")

    task = asyncio.create_task(loop())
    yield
    # Let a pass in progress finish: cancelling mid-query would leave its connection unusable.
    stop.set()
    await task
    pending: list[asyncio.Task[None]] = [*app[BACKGROUND]]
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
