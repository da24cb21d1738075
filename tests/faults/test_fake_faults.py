"""The fake Twilio's injected faults (the provider scenario relies on them): failed creates,
stalled and dropped creates, shuffled and duplicated status callbacks, the cap on faults in a
row, and the counts at /_fake/faults."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from fakes.twilio import FakeTwilio, start_fake_twilio

ACCOUNT = "AC" + "c" * 32
TOKEN = "e" * 32
CLINIC = "+15550109999"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()}

Started = Callable[..., Any]


@pytest.fixture
async def started() -> AsyncIterator[Started]:
    runners: list[web.AppRunner] = []

    async def start(**options: Any) -> FakeTwilio:
        fake = FakeTwilio(ACCOUNT, TOKEN, **options)
        runner, _ = await start_fake_twilio(fake)
        runners.append(runner)
        return fake

    yield start
    for runner in runners:
        await runner.cleanup()


async def create(
    http: aiohttp.ClientSession, fake: FakeTwilio, to: str, callback: str | None = None
) -> int | str:
    url = f"{fake.base_url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    form = {"To": to, "From": CLINIC, "Body": "hello"} | (
        {"StatusCallback": callback} if callback else {}
    )
    try:
        async with http.post(url, data=form, headers=AUTH) as response:
            await response.read()
            return response.status
    except aiohttp.ClientError as exc:
        return type(exc).__name__


async def test_fail_rate_answers_5xx_and_creates_nothing(started: Started) -> None:
    fake = await started(fail_rate=1.0, seed=1)
    async with aiohttp.ClientSession() as http:
        answers = [await create(http, fake, f"+1555010{n:04d}") for n in range(6)]
        async with http.get(f"{fake.base_url}/_fake/faults") as response:
            counted = await response.json()
    assert set(answers) <= {500, 503} and len(answers) == 6
    assert fake.messages == [] and counted == {"failed": 6, "stalled": 0, "disordered": 0}


async def test_a_stalled_create_is_dropped_unanswered_after_the_stall(started: Started) -> None:
    fake = await started(stall_rate=1.0, stall_s=0.3)
    async with aiohttp.ClientSession() as http:
        answer = await create(http, fake, "+15550100101")
    assert answer in ("ServerDisconnectedError", "ClientOSError")
    assert fake.messages == [] and fake.faults["stalled"] == 1


async def test_faults_in_a_row_are_capped_per_recipient(started: Started) -> None:
    fake = await started(fail_rate=1.0, faults_in_a_row=2)
    async with aiohttp.ClientSession() as http:
        answers = [await create(http, fake, "+15550100101") for _ in range(3)]
        other = await create(http, fake, "+15550100102")
    assert answers[:2] != [201, 201] and answers[2] == 201, answers
    assert other in (500, 503)  # the cap counts per recipient
    assert [m.to for m in fake.messages] == ["+15550100101"]


async def test_disordered_callbacks_come_shuffled_with_one_twice_final_never_last(
    started: Started,
) -> None:
    posted: list[list[str]] = []

    async def receive(request: web.Request) -> web.Response:
        form = await request.post()
        posted[int(request.query["n"])].append(str(form["MessageStatus"]))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/status", receive)
    receiver = TestServer(app)
    await receiver.start_server()
    fake = await started(disorder_rate=1.0, seed=3)
    try:
        async with aiohttp.ClientSession() as http:
            for n in range(8):
                posted.append([])
                callback = str(receiver.make_url(f"/status?n={n}"))
                assert await create(http, fake, f"+1555010{n:04d}", callback) == 201
        await fake.wait_for(lambda f: len(f.callbacks) == 8 * 3)
    finally:
        await receiver.close()
    for statuses in posted:
        assert sorted(set(statuses)) == ["delivered", "sent"] and len(statuses) == 3
        assert statuses[-1] != "delivered"
    assert all(m.status == "delivered" for m in fake.messages)  # Twilio's own never regresses
    assert fake.faults["disordered"] == 8
