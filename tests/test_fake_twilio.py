"""The Twilio fake, driven by the real twilio SDK."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from fakes.twilio import FakeTwilio, start_fake_twilio

ACCOUNT = "AC" + "a" * 32
TOKEN = "f" * 32
PATIENT = "+15550100101"
OTHER = "+15550100102"
CLINIC = "+15550109999"
SERVICE = "MG" + "b" * 32
FIXTURES = Path(__file__).parent.parent / "hub" / "channels" / "twilio_sms" / "fixtures"
MESSAGE_SID = re.compile(r"(SM|MM)[0-9a-f]{32}")


def sdk_basic_auth(test: Callable[..., Any]) -> Callable[..., Any]:
    """twilio 9.x passes auth=aiohttp.BasicAuth(...) on every request; aiohttp 3.14 deprecates
    both the class and the auth= argument. Only those two warnings, only from twilio.*."""
    for message in ("BasicAuth is deprecated", "The 'auth' parameter is deprecated"):
        test = pytest.mark.filterwarnings(f"ignore:{message}:DeprecationWarning:twilio")(test)
    return test


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


class Receiver:
    """A stand-in for the hub's webhook endpoints: records each POST and its URL."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], str]] = []
        self.app = web.Application()
        self.app.router.add_post("/{tail:.*}", self.handle)
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        params = {key: str(value) for key, value in form.items()}
        self.posts.append((str(request.url), params, request.headers["X-Twilio-Signature"]))
        return web.Response(text="<Response/>", content_type="text/xml")

    def valid(self, index: int) -> bool:
        url, params, signature = self.posts[index]
        return RequestValidator(TOKEN).validate(url, params, signature)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio(ACCOUNT, TOKEN)
    runner, _ = await start_fake_twilio(fake)
    yield fake
    await runner.cleanup()


@pytest.fixture
async def receiver(aiohttp_server: Callable[[web.Application], Awaitable[TestServer]]) -> Receiver:
    receiver = Receiver()
    server = await aiohttp_server(receiver.app)
    receiver.url = str(server.make_url("/webhooks/twilio/status"))
    return receiver


@pytest.fixture
async def make_client(fake: FakeTwilio) -> AsyncIterator[Callable[..., Client]]:
    http_clients: list[AsyncTwilioHttpClient] = []

    def make(token: str = TOKEN) -> Client:
        http = AsyncTwilioHttpClient()
        http_clients.append(http)
        client = Client(ACCOUNT, token, http_client=http)
        client.api.base_url = fake.base_url
        return client

    yield make
    for http in http_clients:
        await http.close()


@pytest.fixture
async def client(make_client: Callable[..., Client]) -> Client:
    return make_client()


# -- REST API ---------------------------------------------------------------------------------


@sdk_basic_auth
async def test_create_returns_sid_and_is_recorded(fake: FakeTwilio, client: Client) -> None:
    msg = await client.messages.create_async(to=PATIENT, from_=CLINIC, body="See you Friday.")

    assert re.fullmatch(r"SM[0-9a-f]{32}", msg.sid)
    assert (msg.status, msg.to, msg.from_) == ("queued", PATIENT, CLINIC)
    assert (msg.direction, msg.api_version, msg.num_segments) == ("outbound-api", "2010-04-01", "1")
    assert msg.error_code is None and msg.price is None and msg.date_created is not None
    assert msg.uri == f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{msg.sid}.json"
    [recorded] = fake.messages
    assert recorded.sid == msg.sid and recorded.form["Body"] == [msg.body] == ["See you Friday."]
    assert [(r.method, r.status) for r in fake.requests] == [("POST", 201)]

    # No StatusCallback: the message still progresses, and a fetch shows where it is.
    await fake.wait_for(lambda f: f.messages[0].status == "delivered")
    fetched = await client.messages(msg.sid).fetch_async()
    assert (fetched.status, fetched.date_sent is not None) == ("delivered", True)


@sdk_basic_auth
async def test_media_urls_are_all_recorded(fake: FakeTwilio, client: Client) -> None:
    urls = ["https://clinic.example/a.jpg", "https://clinic.example/b.pdf"]
    msg = await client.messages.create_async(to=PATIENT, from_=CLINIC, media_url=urls)

    assert msg.sid.startswith("MM") and msg.num_media == "2"
    assert fake.messages[0].form["MediaUrl"] == urls == fake.messages[0].media_urls


@sdk_basic_auth
async def test_wrong_token_is_20003(fake: FakeTwilio, make_client: Callable[..., Client]) -> None:
    client = make_client("0" * 32)
    with pytest.raises(TwilioRestException) as caught:
        await client.messages.create_async(to=PATIENT, from_=CLINIC, body="hello")

    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert fake.messages == []
    assert [(r.method, r.status) for r in fake.requests] == [("POST", 401)]


@sdk_basic_auth
@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"to": "", "from_": CLINIC, "body": "x"}, 21604),
        ({"to": "555-0100", "from_": CLINIC, "body": "x"}, 21211),
        ({"to": PATIENT, "body": "x"}, 21603),
        ({"to": PATIENT, "from_": CLINIC}, 21602),
    ],
)
async def test_invalid_create_is_400(
    fake: FakeTwilio, client: Client, kwargs: dict[str, str], code: int
) -> None:
    with pytest.raises(TwilioRestException) as caught:
        await client.messages.create_async(**kwargs)

    assert (caught.value.status, caught.value.code) == (400, code)
    assert fake.messages == [] and fake.requests[0].status == 400


@sdk_basic_auth
async def test_scripted_api_error(fake: FakeTwilio, client: Client) -> None:
    fake.script(PATIENT, api_errors=[21610])
    with pytest.raises(TwilioRestException) as caught:
        await client.messages.create_async(to=PATIENT, from_=CLINIC, body="Reminder")

    assert (caught.value.status, caught.value.code) == (400, 21610)
    assert "unsubscribed recipient" in caught.value.msg
    # Consumed: the next message goes through.
    assert (await client.messages.create_async(to=PATIENT, from_=CLINIC, body="x")).sid


@sdk_basic_auth
async def test_scripted_server_errors(fake: FakeTwilio, client: Client) -> None:
    fake.script(PATIENT, api_statuses=[500, 503, 201])
    for status in (500, 503):
        with pytest.raises(TwilioRestException) as caught:
            await client.messages.create_async(to=PATIENT, from_=CLINIC, body="x")
        assert (caught.value.status, caught.value.code) == (status, 20000 + status)

    assert (await client.messages.create_async(to=PATIENT, from_=CLINIC, body="x")).sid
    assert [r.status for r in fake.requests] == [500, 503, 201]
    assert len(fake.messages) == 1


def test_script_rejects_nonsense() -> None:
    fake = FakeTwilio(ACCOUNT, TOKEN)
    with pytest.raises(ValueError, match="unknown status"):
        fake.script(PATIENT, outcomes=[["delivred"]])
    with pytest.raises(ValueError, match="not an HTTP status"):
        fake.script(PATIENT, api_errors=[42])


# -- status callbacks -------------------------------------------------------------------------


@sdk_basic_auth
async def test_status_callbacks_are_signed(
    fake: FakeTwilio, client: Client, receiver: Receiver
) -> None:
    msg = await client.messages.create_async(
        to=PATIENT, from_=CLINIC, body="Your results are ready.", status_callback=receiver.url
    )
    await fake.wait_for(lambda f: len(f.callbacks) == 2)

    assert [params["MessageStatus"] for _, params, _ in receiver.posts] == ["sent", "delivered"]
    assert all(receiver.valid(i) for i in range(2))
    assert [c.status for c in fake.callbacks] == [200, 200]
    url, delivered, _ = receiver.posts[1]
    assert url == receiver.url
    assert delivered["MessageSid"] == delivered["SmsSid"] == msg.sid
    assert (delivered["To"], delivered["From"]) == (PATIENT, CLINIC)
    assert delivered["AccountSid"] == ACCOUNT
    assert re.fullmatch(r"\d{10}", delivered["RawDlrDoneDate"])
    # Same field set as the fixtures the hub's own tests replay.
    assert set(receiver.posts[0][1]) == set(fixture("status_sent")["params"])
    assert set(delivered) == set(fixture("status_delivered")["params"])


@sdk_basic_auth
async def test_tampered_callback_fails_validation(
    fake: FakeTwilio, client: Client, receiver: Receiver
) -> None:
    await client.messages.create_async(
        to=PATIENT, from_=CLINIC, body="x", status_callback=receiver.url
    )
    await fake.wait_for(lambda f: len(f.callbacks) == 2)

    url, params, signature = receiver.posts[1]
    tampered = {**params, "MessageStatus": "failed"}
    assert not RequestValidator(TOKEN).validate(url, tampered, signature)
    assert not RequestValidator("0" * 32).validate(url, params, signature)


@sdk_basic_auth
async def test_scripted_outcomes_per_message(
    fake: FakeTwilio, client: Client, receiver: Receiver
) -> None:
    retry = ["sent", "undelivered:30003"]
    fake.script(PATIENT, outcomes=[retry, retry, ["sent", "delivered"]])
    sids = [
        (
            await client.messages.create_async(
                to=PATIENT, from_=CLINIC, body="x", status_callback=receiver.url
            )
        ).sid
        for _ in range(3)
    ]
    await fake.wait_for(lambda f: len(f.callbacks) == 6)

    final = {c.message_sid: c.params for c in fake.callbacks if c.params["MessageStatus"] != "sent"}
    assert [final[sid]["MessageStatus"] for sid in sids] == ["undelivered"] * 2 + ["delivered"]
    assert [final[sid].get("ErrorCode") for sid in sids] == ["30003", "30003", None]
    assert set(final[sids[0]]) == set(fixture("status_undelivered_30003")["params"])
    fetched = await client.messages(sids[0]).fetch_async()
    assert (fetched.status, fetched.error_code) == ("undelivered", 30003)


@sdk_basic_auth
async def test_out_of_order_callbacks(fake: FakeTwilio, client: Client, receiver: Receiver) -> None:
    fake.script(PATIENT, outcomes=[["delivered", "sent"]])
    msg = await client.messages.create_async(
        to=PATIENT, from_=CLINIC, body="x", status_callback=receiver.url
    )
    await fake.wait_for(lambda f: len(f.callbacks) == 2)

    assert [params["MessageStatus"] for _, params, _ in receiver.posts] == ["delivered", "sent"]
    # Twilio's own record does not go backwards when the late "sent" arrives.
    assert (await client.messages(msg.sid).fetch_async()).status == "delivered"


@sdk_basic_auth
async def test_messaging_service_send(fake: FakeTwilio, client: Client, receiver: Receiver) -> None:
    fake.script(PATIENT, outcomes=[["queued", "failed:21610"]])
    msg = await client.messages.create_async(
        to=PATIENT, messaging_service_sid=SERVICE, body="x", status_callback=receiver.url
    )
    assert (msg.status, msg.from_, msg.messaging_service_sid) == ("accepted", None, SERVICE)
    await fake.wait_for(lambda f: len(f.callbacks) == 2)

    queued, failed = (params for _, params, _ in receiver.posts)
    assert set(queued) == set(fixture("status_queued")["params"])
    assert set(failed) == set(fixture("status_failed_21610")["params"])
    assert (failed["ErrorCode"], failed["From"], failed["MessagingServiceSid"]) == (
        "21610",
        fake.service_sender,
        SERVICE,
    )


@sdk_basic_auth
async def test_cleanup_cancels_pending_callbacks(receiver: Receiver) -> None:
    fake = FakeTwilio(ACCOUNT, TOKEN, callback_delay=60)
    runner, base_url = await start_fake_twilio(fake)
    async with AsyncTwilioHttpClient() as http:
        client = Client(ACCOUNT, TOKEN, http_client=http)
        client.api.base_url = base_url
        await client.messages.create_async(
            to=PATIENT, from_=CLINIC, body="x", status_callback=receiver.url
        )
    async with asyncio.timeout(5):
        await runner.cleanup()
    assert fake.callbacks == [] and "pending_tasks=0" in fake.describe()


@sdk_basic_auth
async def test_api_latency_delays_answers_but_calls_overlap() -> None:
    fake = FakeTwilio(ACCOUNT, TOKEN, api_latency=0.2)
    runner, base_url = await start_fake_twilio(fake)
    loop = asyncio.get_running_loop()
    async with AsyncTwilioHttpClient() as http:
        client = Client(ACCOUNT, TOKEN, http_client=http)
        client.api.base_url = base_url
        started = loop.time()
        await asyncio.gather(
            *(client.messages.create_async(to=PATIENT, from_=CLINIC, body="x") for _ in range(10))
        )
        assert 0.2 <= loop.time() - started < 1.0  # ten calls, not ten times the latency
    await runner.cleanup()


async def test_wait_for_timeout_describes_state(fake: FakeTwilio) -> None:
    with pytest.raises(TimeoutError, match=r"messages=\[\].*pending_tasks=0"):
        await fake.wait_for(lambda f: f.messages, timeout=0.01)


# -- listing (what the hub asks to learn whether a send reached Twilio) -------------------


@sdk_basic_auth
async def test_list_filters_newest_first(fake: FakeTwilio, client: Client) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    fake.service_sender = "+15550109998"  # the Messaging Service's pool number, not CLINIC
    for n in range(3):
        await client.messages.create_async(to=PATIENT, from_=CLINIC, body=f"to patient {n}")
    await client.messages.create_async(to=OTHER, from_=CLINIC, body="to someone else")
    await client.messages.create_async(to=PATIENT, messaging_service_sid=SERVICE, body="pool")

    mine = await client.messages.list_async(to=PATIENT, from_=CLINIC)
    assert [m.body for m in mine] == ["to patient 2", "to patient 1", "to patient 0"]
    assert mine[0].sid == fake.messages[2].sid and mine[0].status == "delivered"
    assert len(await client.messages.list_async()) == 5
    assert len(await client.messages.list_async(to=PATIENT, date_sent_after=before)) == 4
    assert await client.messages.list_async(date_sent_before=before) == []
    today = await client.messages.list_async(date_sent=datetime.now(UTC).date())
    assert len(today) == 5


@sdk_basic_auth
async def test_list_pages_by_token_while_messages_arrive(fake: FakeTwilio, client: Client) -> None:
    for n in range(5):
        await client.messages.create_async(to=PATIENT, from_=CLINIC, body=f"n{n}")
    first = await client.messages.page_async(to=PATIENT, page_size=2)
    await client.messages.create_async(to=PATIENT, from_=CLINIC, body="arrived meanwhile")
    second = await first.next_page_async()
    third = await second.next_page_async()
    assert [[m.body for m in p] for p in (first, second, third)] == [
        ["n4", "n3"],
        ["n2", "n1"],
        ["n0"],
    ]
    assert third.next_page_url is None and first.previous_page_url is None
    assert [m.body for m in await third.previous_page_async()] == ["n2", "n1"]
    assert len(await client.messages.list_async(to=PATIENT, page_size=2)) == 6


async def test_list_answers_in_twilios_shape(fake: FakeTwilio) -> None:
    fake.callback_delay = 60  # stays queued: no date_sent yet
    list_url = f"{fake.base_url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    async with aiohttp.ClientSession(headers=basic(ACCOUNT, TOKEN)) as http:
        async with http.post(list_url, data={"To": PATIENT, "From": CLINIC, "Body": "x"}) as r:
            assert r.status == 201
        async with http.get(list_url, params={"To": PATIENT, "PageSize": "1"}) as response:
            page = await response.json()
        assert set(page) == {
            "first_page_uri", "end", "previous_page_uri", "messages", "uri", "page_size",
            "start", "next_page_uri", "page",
        }  # fmt: skip
        assert (page["page"], page["page_size"], page["start"], page["end"]) == (0, 1, 0, 0)
        assert page["messages"][0]["status"] == "queued" and page["next_page_uri"] is None
        today = f"{datetime.now(UTC):%Y-%m-%d}"
        for dated in (f"DateSent={today}", "DateSent>=2020-01-01"):
            async with http.get(f"{list_url}?{dated}") as response:
                assert (await response.json())["messages"] == []  # not sent: no date_sent
        for bad in ({"DateSent>": "yesterday"}, {"PageToken": "PAnope"}, {"PageSize": "0"}):
            async with http.get(list_url, params=bad) as response:
                assert (response.status, (await response.json())["code"]) == (400, 20001)


@sdk_basic_auth
async def test_stats_count_cheaply_without_auth(fake: FakeTwilio, client: Client) -> None:
    for to in (PATIENT, PATIENT, OTHER):
        await client.messages.create_async(to=to, from_=CLINIC, body=f"for {to}")
    async with aiohttp.ClientSession() as http, http.get(f"{fake.base_url}/_fake/stats") as r:
        stats = await r.json()
    assert stats == {
        "messages": 3, "distinct_to": 2, "distinct_body": 2, "requests": 3, "errors": 0,
    }  # fmt: skip


@pytest.mark.slow
@sdk_basic_auth
async def test_runs_as_a_process_printing_its_url() -> None:
    env = {**os.environ, "TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fakes.twilio", "--port", "0", "--latency-ms", "5",
        env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        base_url = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        async with AsyncTwilioHttpClient() as http:
            client = Client(ACCOUNT, TOKEN, http_client=http)
            client.api.base_url = base_url
            await client.messages.create_async(to=PATIENT, from_=CLINIC, body="x")
            assert [m.to for m in await client.messages.list_async()] == [PATIENT]
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 10) == 0


# -- media and inbound ------------------------------------------------------------------------


async def test_media_requires_auth(fake: FakeTwilio) -> None:
    url = fake.add_media("MM" + "3" * 32, "image/png", b"\x89PNG fake")
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            assert response.status == 401
            assert (await response.json())["code"] == 20003
        async with http.get(url, headers=basic(ACCOUNT, "wrong")) as response:
            assert response.status == 401
        async with http.get(url, headers=basic(ACCOUNT, TOKEN)) as response:
            assert response.status == 200
            assert response.content_type == "image/png"
            assert await response.read() == b"\x89PNG fake"
        async with http.get(url[:-4] + "0000", headers=basic(ACCOUNT, TOKEN)) as response:
            assert (response.status, (await response.json())["code"]) == (404, 20404)


async def test_send_inbound_is_signed(fake: FakeTwilio, receiver: Receiver) -> None:
    hub_url = receiver.url.replace("/status", "/sms")
    status, text = await fake.send_inbound(
        hub_url, PATIENT, CLINIC, "Hi, can I move my appointment to Friday?"
    )
    assert (status, text) == (200, "<Response/>")
    assert receiver.valid(0)
    url, params, _ = receiver.posts[0]
    assert url == hub_url
    assert set(params) == set(fixture("inbound_sms")["params"])
    assert MESSAGE_SID.fullmatch(params["MessageSid"]) and params["SmsStatus"] == "received"
    assert (params["From"], params["To"], params["NumMedia"]) == (PATIENT, CLINIC, "0")


async def test_send_inbound_mms_media_is_fetchable(fake: FakeTwilio, receiver: Receiver) -> None:
    media = [("image/jpeg", b"\xff\xd8 jpeg"), ("application/pdf", b"%PDF-1.4 letter")]
    await fake.send_inbound(
        receiver.url, PATIENT, CLINIC, "Card and letter", media=media, messaging_service_sid=SERVICE
    )
    assert receiver.valid(0)
    params = receiver.posts[0][1]
    mms = set(fixture("inbound_mms")["params"]) | {"MessagingServiceSid"}
    assert set(params) == mms and params["MessageSid"].startswith("MM")
    async with aiohttp.ClientSession(headers=basic(ACCOUNT, TOKEN)) as http:
        for i, (content_type, data) in enumerate(media):
            assert params[f"MediaContentType{i}"] == content_type
            async with http.get(params[f"MediaUrl{i}"]) as response:
                assert (response.content_type, await response.read()) == (content_type, data)
    assert fake.inbound[0].status == 200


async def test_send_inbound_to_unreachable_hub_is_recorded(fake: FakeTwilio) -> None:
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    status, _ = await fake.send_inbound(f"http://127.0.0.1:{port}/sms", PATIENT, CLINIC, "x")
    assert status is None and fake.inbound[0].error
