"""The fake Twilio's state, its HTTP app (auth, latency, create, fetch, media) and its webhooks."""

from __future__ import annotations

import asyncio
import base64
import hmac
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from fakes.twilio.calls import CallsMixin, add_call_routes
from fakes.twilio.listing import list_messages
from fakes.twilio.resources import (
    _CODE_HTTP,
    _E164,
    _RANK,
    _STATUSES,
    API_VERSION,
    ApiRequest,
    FakeMessage,
    Webhook,
    _geo,
    new_sid,
    num_segments,
    twilio_error,
)

FORM = web.RequestKey("form", dict[str, list[str]])
"""The posted form, parsed once by the middleware for the handler."""


def _fields(form: Any) -> dict[str, list[str]]:
    """A posted form (MultiDict) as plain lists, keeping repeated fields such as MediaUrl."""
    return {key: [str(v) for v in form.getall(key)] for key in dict.fromkeys(form.keys())}


class FakeTwilio(CallsMixin):
    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        api_latency: float = 0.0,
        callback_delay: float = 0.0,
        service_sender: str = "+15550109999",
        post_callbacks: bool = True,
        fail_rate: float = 0.0,
        stall_rate: float = 0.0,
        stall_s: float = 2.0,
        disorder_rate: float = 0.0,
        seed: int | None = None,
        faults_in_a_row: int | None = None,
    ) -> None:
        if not 0 <= fail_rate + stall_rate <= 1 or not 0 <= disorder_rate <= 1:
            raise ValueError("fail_rate + stall_rate and disorder_rate must be within 0..1")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.api_latency = api_latency  # seconds before each REST answer
        self.callback_delay = callback_delay  # seconds before each status step
        self.post_callbacks = post_callbacks  # False: statuses still move, nothing is POSTed
        self.service_sender = service_sender  # what a Messaging Service picks when From is unset
        # Faults on unscripted creates, drawn from one seeded generator so a run can be replayed:
        # fail_rate answers 500/503 without creating; stall_rate holds the request stall_s, then
        # drops the connection unanswered (the client sees a timeout-like transport error) and
        # creates nothing. disorder_rate shuffles a message's callbacks and posts one twice.
        self.fail_rate = fail_rate
        self.stall_rate = stall_rate
        self.stall_s = stall_s
        self.disorder_rate = disorder_rate
        self._random = random.Random(seed)  # noqa: S311 (fault injection, not security)
        self.faults = {"failed": 0, "stalled": 0, "disordered": 0}
        # At most this many injected failures in a row per recipient: transient faults that
        # do not outlast a sender's retries, so a test can expect every text to get through.
        self.faults_in_a_row = faults_in_a_row
        self._streaks: dict[str, int] = {}
        self.base_url: str | None = None  # set by start_fake_twilio; needed for media URLs
        self.messages: list[FakeMessage] = []
        self.requests: list[ApiRequest] = []
        self.callbacks: list[Webhook] = []
        self.inbound: list[Webhook] = []
        self._by_sid: dict[str, FakeMessage] = {}
        self._by_to: dict[str, list[FakeMessage]] = {}
        self._bodies: set[str] = set()
        self._errors = 0
        self._waiters = 0
        self._media: dict[tuple[str, str], tuple[str, bytes]] = {}
        self._api_script: dict[str, deque[int]] = {}
        self._lost_answers: dict[str, int] = {}
        self._outcome_script: dict[str, deque[tuple[tuple[str, int | None], ...]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._changed_cond = asyncio.Condition()
        self._validator = RequestValidator(auth_token)
        credentials = base64.b64encode(f"{account_sid}:{auth_token}".encode())
        self._expected_auth = b"Basic " + credentials
        self._init_calls()

    # -- scripting and waiting -----------------------------------------------------------

    def script(
        self,
        to: str,
        *,
        api_errors: Iterable[int] = (),
        api_statuses: Iterable[int] = (),
        outcomes: Iterable[Sequence[str]] = (),
    ) -> None:
        """Queue API answers and callback sequences for messages to ``to`` (see module doc)."""
        api = [*api_errors, *api_statuses]
        for entry in api:
            if entry < 10000 and entry not in {s.value for s in HTTPStatus}:
                raise ValueError(f"not an HTTP status or Twilio error code: {entry}")
        self._api_script.setdefault(to, deque()).extend(api)
        parsed = [tuple(self._parse_step(step) for step in steps) for steps in outcomes]
        self._outcome_script.setdefault(to, deque()).extend(parsed)

    def lose_answers(self, to: str, count: int = 1) -> None:
        """The next ``count`` messages to ``to`` are created, then the connection is dropped
        before the answer: the sender cannot know the message exists (a timeout after send)."""
        self._lost_answers[to] = self._lost_answers.get(to, 0) + count

    @staticmethod
    def _parse_step(step: str) -> tuple[str, int | None]:
        status, _, code = step.partition(":")
        if status not in _STATUSES:
            raise ValueError(f"unknown status {status!r} in step {step!r}")
        return status, int(code) if code else None

    # A timeout argument (not asyncio.timeout at the call site) keeps test code one line and
    # lets the TimeoutError carry a description of the fake's state.
    async def wait_for(
        self,
        predicate: Callable[[FakeTwilio], Any],
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> Any:
        """Wait until ``predicate(fake)`` is truthy and return its value; re-checked on every
        state change, so no polling. Raises TimeoutError describing the state."""
        self._waiters += 1
        try:
            async with asyncio.timeout(timeout), self._changed_cond:
                return await self._changed_cond.wait_for(lambda: predicate(self))
        except TimeoutError:
            raise TimeoutError(f"condition not met within {timeout}s; {self.describe()}") from None
        finally:
            self._waiters -= 1

    def describe(self) -> str:
        messages = [(m.sid, m.to, m.status) for m in self.messages]
        requests = [(r.method, r.path, r.status) for r in self.requests]
        callbacks = [(c.message_sid, c.params["MessageStatus"], c.status) for c in self.callbacks]
        inbound = [(i.url, i.status) for i in self.inbound]
        return (
            f"messages={messages} requests={requests} callbacks={callbacks} inbound={inbound} "
            f"pending_tasks={len(self._tasks)}" + self._describe_calls()
        )

    async def _changed(self) -> None:
        if not self._waiters:  # the lock costs, three times per message at benchmark rates
            return
        async with self._changed_cond:
            self._changed_cond.notify_all()

    # -- media -------------------------------------------------------------------------------

    def add_media(self, message_sid: str, content_type: str, data: bytes) -> str:
        """Store media under a message and return its absolute URL on this fake."""
        if self.base_url is None:
            raise RuntimeError("start the fake (start_fake_twilio) before adding media")
        media_sid = new_sid("ME")
        self._media[(message_sid, media_sid)] = (content_type, data)
        return (
            f"{self.base_url}/{API_VERSION}/Accounts/{self.account_sid}"
            f"/Messages/{message_sid}/Media/{media_sid}"
        )

    # -- HTTP server -------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "").encode()
        account = request.match_info.get("account_sid", self.account_sid)
        return hmac.compare_digest(given, self._expected_auth) and account == self.account_sid

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/_fake/"):  # the fake's own controls, not Twilio's API
            return await handler(request)  # type: ignore[no-any-return]
        # Auth, latency and recording live here so rejected requests are handled like the rest.
        form = request[FORM] = _fields(await request.post())
        if self.api_latency:
            await asyncio.sleep(self.api_latency)
        if not self._authorized(request):
            response: web.StreamResponse = twilio_error(401, 20003)
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        else:
            response = await handler(request)
        self.requests.append(ApiRequest(request.method, request.path, form, response.status))
        self._errors += response.status >= 400
        await self._changed()
        return response

    async def _create(self, request: web.Request) -> web.Response:
        form = request[FORM]
        one = {key: values[0] for key, values in form.items()}  # first value of each field
        to, from_, body = one.get("To", ""), one.get("From"), one.get("Body", "")
        service, media = one.get("MessagingServiceSid"), form.get("MediaUrl", [])
        if not to:
            return twilio_error(400, 21604)
        if not _E164.fullmatch(to):
            return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not from_ and not service:
            return twilio_error(400, 21603)
        if not body and not media and "ContentSid" not in form:
            return twilio_error(400, 21602)
        scripted = self._api_script.get(to)
        injectable = not scripted  # scripted answers are given exactly as written
        answer = scripted.popleft() if scripted else 201
        if injectable and (self.fail_rate or self.stall_rate):
            roll = self._random.random()
            streak = self._streaks.get(to, 0)
            if self.faults_in_a_row is not None and streak >= self.faults_in_a_row:
                roll = 1.0
            self._streaks[to] = streak + 1 if roll < self.fail_rate + self.stall_rate else 0
            if roll < self.fail_rate:
                self.faults["failed"] += 1
                answer = self._random.choice((500, 503))
            elif roll < self.fail_rate + self.stall_rate:
                self.faults["stalled"] += 1
                return await self._stall(request)
        if answer >= 10000:
            return twilio_error(_CODE_HTTP.get(answer, 400), answer)
        if answer >= 300:
            return twilio_error(answer, 20000 + answer)

        message = FakeMessage(
            sid=new_sid("MM" if media else "SM"),
            to=to,
            from_=from_ or None,
            body=body,
            media_urls=media,
            messaging_service_sid=service or None,
            status_callback=one.get("StatusCallback") or None,
            form=form,
            status="accepted" if service else "queued",
            sender=from_ or self.service_sender,
            seq=len(self.messages),
        )
        self.messages.append(message)
        self._by_sid[message.sid] = message
        self._by_to.setdefault(to, []).append(message)
        self._bodies.add(body)
        queued = self._outcome_script.get(to)
        default = ("queued", "sent", "delivered") if service else ("sent", "delivered")
        injectable = not queued  # scripted outcomes are posted exactly as written
        steps = queued.popleft() if queued else tuple((s, None) for s in default)
        if injectable and self.disorder_rate and self._random.random() < self.disorder_rate:
            self.faults["disordered"] += 1
            steps = self._disorder(steps)
        response = web.json_response(message.resource(self.account_sid), status=201)
        if self._lost_answers.get(to, 0) > 0:
            self._lost_answers[to] -= 1
            if request.transport is not None:
                request.transport.abort()
        if self.callback_delay or (message.status_callback and self.post_callbacks):
            self._spawn(self._walk(message, steps))
        else:  # nothing to wait for or post: a task per message would only cost
            for status, code in steps:
                self._advance(message, status, code)
        return response

    def _disorder(
        self, steps: Sequence[tuple[str, int | None]]
    ) -> tuple[tuple[str, int | None], ...]:
        """The steps shuffled with one of them twice, the final status never posted last."""
        shuffled = [*steps, self._random.choice(steps)]
        while True:
            self._random.shuffle(shuffled)
            if shuffled[-1][0] != steps[-1][0]:
                return tuple(shuffled)

    async def _stall(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.stall_s)
        if request.transport is not None:
            request.transport.abort()  # no answer at all, as when a load balancer gives up
        # Never reaches the client; recorded in :attr:`requests` as a gateway timeout.
        return web.Response(status=504)

    async def _faults(self, _request: web.Request) -> web.Response:
        return web.json_response(self.faults)

    async def _list(self, request: web.Request) -> web.Response:
        return list_messages(
            request.query, self.account_sid, self.messages, self._by_to, self._by_sid
        )

    async def _stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    def stats(self) -> dict[str, int]:
        """Counts only, so a benchmark can poll thousands of messages cheaply."""
        return {
            "messages": len(self.messages),
            "distinct_to": len(self._by_to),
            "distinct_body": len(self._bodies),
            "requests": len(self.requests),
            "errors": self._errors,
        }

    async def _fetch(self, request: web.Request) -> web.Response:
        message = self._by_sid.get(request.match_info["sid"])
        if message is None:
            return await self._not_found(request)
        return web.json_response(message.resource(self.account_sid))

    async def _get_media(self, request: web.Request) -> web.Response:
        key = (request.match_info["message_sid"], request.match_info["media_sid"])
        if key not in self._media:
            return await self._not_found(request)
        content_type, data = self._media[key]
        return web.Response(body=data, content_type=content_type)

    async def _not_found(self, request: web.Request) -> web.Response:
        return twilio_error(404, 20404, f"The requested resource {request.path} was not found")

    # -- outbound webhooks -------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        # Tracked so aclose() can cancel them: tests must not leak tasks past the loop.
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    @staticmethod
    def _advance(message: FakeMessage, status: str, code: int | None) -> None:
        if _RANK[status] >= _RANK[message.status]:
            message.status = status
            message.date_updated = datetime.now(UTC)
            message.error_code = code or message.error_code
            if status == "sent":
                message.date_sent = message.date_updated

    async def _walk(self, message: FakeMessage, steps: Sequence[tuple[str, int | None]]) -> None:
        for status, code in steps:
            if self.callback_delay:
                await asyncio.sleep(self.callback_delay)
            # Update the resource first, so a hub that fetches the message while handling the
            # callback sees the state the callback announces.
            self._advance(message, status, code)
            if message.status_callback and self.post_callbacks:
                params = self._status_params(message, status, code)
                record = await self._post(message.status_callback, params)
                record.message_sid = message.sid
                self.callbacks.append(record)
            await self._changed()

    def _status_params(self, message: FakeMessage, status: str, code: int | None) -> dict[str, str]:
        params = {"ErrorCode": str(code)} if code else {}
        params |= {"SmsSid": message.sid, "SmsStatus": status, "MessageStatus": status}
        params["To"] = message.to
        if message.messaging_service_sid:
            params["MessagingServiceSid"] = message.messaging_service_sid
        params |= {"MessageSid": message.sid, "AccountSid": self.account_sid}
        params |= {"From": message.sender, "ApiVersion": API_VERSION}
        if status in ("delivered", "undelivered"):  # carrier DLR "done date", YYMMDDhhmm
            params["RawDlrDoneDate"] = time.strftime("%y%m%d%H%M", time.gmtime())
        return params

    async def _post(self, url: str, params: dict[str, str]) -> Webhook:
        """POST a signed webhook; the signature covers the exact URL posted to."""
        signature = self._validator.compute_signature(url, params)
        headers = {
            "X-Twilio-Signature": signature,
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
            "User-Agent": "TwilioProxy/1.1",
        }
        try:
            async with self._http().post(url, data=params, headers=headers) as response:
                return Webhook(url, params, signature, response.status, await response.text())
        except aiohttp.ClientError as exc:
            return Webhook(url, params, signature, None, error=repr(exc))

    async def send_inbound(
        self,
        hub_url: str,
        from_: str,
        to: str,
        body: str,
        media: Sequence[tuple[str, bytes]] = (),
        messaging_service_sid: str | None = None,
    ) -> tuple[int | None, str]:
        """Play a patient texting ``to``: POST a signed SMS/MMS webhook to ``hub_url`` (the
        full URL of the hub's /webhooks/twilio/sms). Returns the hub's status and body."""
        sid = new_sid("MM" if media else "SM")
        params = {"MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid, "SmsStatus": "received"}
        params |= {"AccountSid": self.account_sid, "ApiVersion": API_VERSION, "From": from_}
        params |= {"To": to, "Body": body, "NumSegments": str(num_segments(body))}
        params |= _geo("From", from_) | _geo("To", to) | {"NumMedia": str(len(media))}
        for i, (content_type, data) in enumerate(media):
            params[f"MediaContentType{i}"] = content_type
            params[f"MediaUrl{i}"] = self.add_media(sid, content_type, data)
        if messaging_service_sid:
            params["MessagingServiceSid"] = messaging_service_sid
        record = await self._post(hub_url, params)
        record.message_sid = sid
        self.inbound.append(record)
        await self._changed()
        return record.status, record.text

    async def aclose(self) -> None:
        """Cancel pending callbacks and close the webhook session."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None


def create_app(fake: FakeTwilio) -> web.Application:
    app = web.Application(middlewares=[fake._middleware])
    messages = f"/{API_VERSION}/Accounts/{{account_sid}}/Messages"
    app.router.add_post(f"{messages}.json", fake._create)
    app.router.add_get(f"{messages}.json", fake._list)
    app.router.add_get("/_fake/stats", fake._stats)
    app.router.add_get("/_fake/faults", fake._faults)
    app.router.add_get(f"{messages}/{{sid:(?:SM|MM)[0-9a-f]{{32}}}}.json", fake._fetch)
    media = f"{messages}/{{message_sid}}/Media/{{media_sid:ME[0-9a-f]{{32}}}}"
    app.router.add_get(media, fake._get_media)
    add_call_routes(app, fake)
    app.router.add_route("*", "/{tail:.*}", fake._not_found)
    app.on_cleanup.append(lambda _app: fake.aclose())
    return app


async def start_fake_twilio(
    fake: FakeTwilio, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve the fake on host:port (0 = any free port); sets and returns ``fake.base_url``.
    ``await runner.cleanup()`` stops it and cancels pending callbacks."""
    runner = web.AppRunner(create_app(fake), access_log=None)  # requests are recorded anyway
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    fake.base_url = f"http://{host}:{runner.addresses[0][1]}"
    return runner, fake.base_url
