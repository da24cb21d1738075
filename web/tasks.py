"""Post-commit releases and the relay loop, run beside request handling."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any

from aiohttp import web

from hub.audit import Actor
from hub.errors import HubError
from hub.inbox.actions import assignment
from hub.outbox import relay_pending, release_events
from web.keys import BACKGROUND, DB, PRESENCE, SINK

log = logging.getLogger(__name__)

RELAY_INTERVAL_S = 2.0
"""How often `hub serve` re-releases effects whose fast path failed (Redis briefly down)."""


MAX_RELEASERS = 2
"""Release transactions one process runs at once; more ids wait for the next batch."""


class Releases:
    """Effects committed by requests, released in batches: each release is a transaction of
    its own (lock the rows, publish, mark them), and under load one per request cost a
    quarter of an inbound text's database round trips. Ids that arrive while a batch is out
    go in the next one, so an idle hub releases at once and a busy one in bulk."""

    def __init__(self) -> None:
        self.waiting: list[uuid.UUID] = []
        self.running = 0

    def add(self, app: web.Application, ids: list[uuid.UUID]) -> None:
        self.waiting.extend(ids)
        if self.running < MAX_RELEASERS:
            self.running += 1
            _spawn(app, self._drain(app))

    async def _drain(self, app: web.Application) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, []
                await _release(app, batch)
        finally:
            self.running -= 1


RELEASES = web.AppKey("releases", Releases)


def release_soon(app: web.Application, effect_ids: Iterable[uuid.UUID]) -> None:
    """Release a committed transaction's effects without holding up the HTTP answer."""
    ids = list(effect_ids)
    if ids:
        app[RELEASES].add(app, ids)


def assign_soon(
    app: web.Application, conversation_id: uuid.UUID, requested: uuid.UUID | None = None
) -> None:
    """After the answer is sent: give the conversation to the person a routing rule asked for,
    or else round-robin it (a conversation that already has someone keeps them)."""
    _spawn(app, _auto_assign(app, conversation_id, requested))


def hand_out_soon(app: web.Application, staff_id: uuid.UUID) -> None:
    """Someone has room again (resolved, snoozed, came online): give them the oldest waiting."""
    _spawn(app, _hand_out(app, staff_id))


def run_soon(app: web.Application, coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` off the caller's path (held by the app until done, like the others)."""
    _spawn(app, coro)


def _spawn(app: web.Application, coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(coro)
    app[BACKGROUND].add(task)
    task.add_done_callback(app[BACKGROUND].discard)


async def _auto_assign(
    app: web.Application, conversation_id: uuid.UUID, requested: uuid.UUID | None
) -> None:
    if requested is not None:
        try:
            manual = await assignment.do_assign(
                app[DB], Actor.system("routing"), conversation_id, requested
            )
            await release_events(app[DB], app[SINK], manual.effect_ids)
            return
        except HubError:
            log.info("routing's requested assignee cannot take it; round-robin instead")
    try:
        result = await assignment.do_auto_assign(
            app[DB], conversation_id, await app[PRESENCE].online()
        )
        await release_events(app[DB], app[SINK], result.effect_ids)
    except Exception:
        log.exception(
            "round-robin assignment failed", extra={"conversation_id": str(conversation_id)}
        )


async def _hand_out(app: web.Application, staff_id: uuid.UUID) -> None:
    try:
        result = await assignment.do_hand_out_backlog(
            app[DB], staff_id, await app[PRESENCE].online()
        )
        await release_events(app[DB], app[SINK], result.effect_ids)
    except Exception:
        log.exception("handing out backlog failed")


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
                # The periodic work (journey ticks, sweeps) runs in `hub worker`'s scheduler.
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
