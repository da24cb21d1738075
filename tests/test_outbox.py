"""Side effects leave only after commit; a rolled-back transaction releases nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from hub.db import Database
from hub.outbox import add_effect, count_pending, relay_pending, release_events


class RecordingSink:
    def __init__(self, fail: bool = False) -> None:
        self.released: list[tuple[uuid.UUID, str, dict[str, Any]]] = []
        self.fail = fail

    async def release(self, event_id: uuid.UUID, topic: str, payload: dict[str, Any]) -> None:
        if self.fail:
            raise ConnectionError("redis down")
        self.released.append((event_id, topic, payload))


async def test_committed_effects_are_released_once(db: Database) -> None:
    async with db.transaction() as session:
        event = add_effect(session, "message:new", {"message_id": "m1"})
    sink = RecordingSink()
    assert await release_events(db, sink, [event.id]) == 1
    assert await release_events(db, sink, [event.id]) == 0
    assert await relay_pending(db, sink) == 0
    assert sink.released == [(event.id, "message:new", {"message_id": "m1"})]


async def test_rolled_back_transaction_releases_nothing(db: Database) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with db.transaction() as session:
            add_effect(session, "message:new", {"message_id": "m2"})
            raise Boom
    sink = RecordingSink()
    assert await relay_pending(db, sink) == 0
    assert sink.released == []


async def test_failed_release_stays_pending_for_the_relay(db: Database) -> None:
    async with db.transaction() as session:
        event = add_effect(session, "job:send", {"message_id": "m3"})
    assert await release_events(db, RecordingSink(fail=True), [event.id]) == 0
    async with db.reader() as session:
        assert await count_pending(session) == 1
    sink = RecordingSink()
    assert await relay_pending(db, sink) == 1
    assert [e[0] for e in sink.released] == [event.id]


async def test_hub_serve_releases_what_commits_meanwhile_in_one_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Effects committed while a release is out wait for one next batch (not a transaction
    each), at most two releases run at once, and none is left behind when they finish."""
    import asyncio

    from aiohttp import web

    from web import tasks
    from web.keys import BACKGROUND

    app = web.Application()
    app[BACKGROUND] = set()
    releases = tasks.Releases()
    batches: list[list[uuid.UUID]] = []
    out = asyncio.Event()

    async def release(_app: web.Application, ids: list[uuid.UUID]) -> None:
        batches.append(list(ids))
        await out.wait()  # the release transaction takes a while

    monkeypatch.setattr(tasks, "_release", release)
    ids = [uuid.uuid4() for _ in range(12)]
    releases.add(app, ids[:1])
    await asyncio.sleep(0)  # the first release is out
    for one in ids[1:]:
        releases.add(app, [one])
        await asyncio.sleep(0)
    assert releases.running == 2
    out.set()
    while app[BACKGROUND]:
        await asyncio.gather(*app[BACKGROUND])
    assert sorted(i for batch in batches for i in batch) == sorted(ids)  # each once
    assert len(batches) <= 3  # not twelve
    assert releases.running == 0 and releases.waiting == []
