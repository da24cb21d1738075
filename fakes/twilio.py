"""A local stand-in for Twilio's Programmable Messaging REST API and its webhooks.

It speaks the real wire protocol, so the real ``twilio`` SDK runs against it unchanged::

    fake = FakeTwilio("AC" + "a" * 32, "token")
    runner, base_url = await start_fake_twilio(fake)
    client = Client(fake.account_sid, fake.auth_token, http_client=AsyncTwilioHttpClient())
    client.api.base_url = base_url
    msg = await client.messages.create_async(to=..., from_=..., body=..., status_callback=url)
    await fake.wait_for(lambda f: len(f.callbacks) == 2)
    await runner.cleanup()  # cancels pending callbacks, closes the callback session

What it serves (all paths need HTTP Basic auth AccountSid:AuthToken, else 401 code 20003):

- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``: create. 400 with 21604 (no To),
  21211 (To not E.164), 21603 (neither From nor MessagingServiceSid), 21602 (no Body, MediaUrl
  or ContentSid). Answers 201 with the Message resource: status ``queued``, or ``accepted`` when
  sent through a Messaging Service, as Twilio does. Sids start with MM when media is attached.
- ``GET .../Messages.json``: the list, newest first, shaped like Twilio's (``messages``,
  ``next_page_uri``, ...). Filters ``To``, ``From``, ``DateSent`` (that day),
  ``DateSent<`` (on or before), ``DateSent>`` (on or after), as the SDK's
  ``messages.list(to=..., date_sent_after=...)`` sends them; a message not yet ``sent`` has no
  date_sent and no date filter matches it. ``PageSize`` (50, at most 1000) pages through
  ``PageToken``, so messages created meanwhile never shift a page.
- ``GET .../Messages/{Sid}.json``: the message as it is now.
- ``GET .../Messages/{MessageSid}/Media/{MediaSid}``: bytes registered with :meth:`add_media`.
- ``GET /_fake/stats`` (no auth, no latency, not recorded): counts for a benchmark to poll.

``api_latency`` seconds pass (``asyncio.sleep``, so concurrent calls overlap) before each answer.

After a create the message walks through an outcome in the background, one status per step,
``callback_delay`` seconds apart, each POSTed to its StatusCallback (if any) with the form
fields of a real status callback and a valid ``X-Twilio-Signature``. Defaults: ``sent``,
``delivered``; through a Messaging Service ``queued``, ``sent``, ``delivered``.

Scripting, per recipient number (To), each queue consumed front first:

- ``fake.script(to, api_errors=[21610])`` / ``fake.script(to, api_statuses=[500, 201])``: one
  entry per create request to ``to`` that passes validation. Both names feed the same queue
  (api_errors first). An entry is an HTTP status (201 = create normally, 4xx/5xx = answer that
  status with Twilio's error JSON, code 20000+status) or a Twilio error code (answered as 400,
  or 401/404/429/5xx for 20003/20404/20429/205xx). An empty queue means "create normally".
- ``fake.script(to, outcomes=[["sent", "undelivered:30003"], ["sent", "delivered"]])``: one
  entry per message created to ``to``. A step is ``status`` or ``status:ErrorCode``. Steps are
  posted in the order given, so ``[["delivered", "sent"]]`` simulates a late ``sent``. The
  resource's own status never moves backwards, as on Twilio.

Recorded: :attr:`messages` (:class:`FakeMessage`), :attr:`requests` (every REST request,
rejected ones too), :attr:`callbacks` and :attr:`inbound` (:class:`Webhook`: each POST to the
hub, with its answer). :meth:`wait_for` waits on any of it without sleeping.
:meth:`send_inbound` plays a patient texting the hub (``await fake.aclose()`` afterwards if the
server was never started, to close the HTTP session).

Standalone, for other processes (a benchmark): ``python -m fakes.twilio --port 0
--latency-ms 20 [--no-callbacks]`` prints its base URL on stdout and serves until SIGTERM.
Credentials come from ``TWILIO_ACCOUNT_SID`` / ``TWILIO_AUTH_TOKEN`` or the flags. Recording
is O(1) per message and nothing is notified while no one waits, so thousands of calls a second
cost little.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import hmac
import math
import operator
import os
import re
import secrets
import signal
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import format_datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

API_VERSION = "2010-04-01"
_E164 = re.compile(r"\+[1-9]\d{1,14}")
_STATUSES = ("queued", "sending", "sent", "delivered", "undelivered", "failed", "read")
# Twilio never moves a message's status backwards; a late "sent" callback leaves it delivered.
_RANK = {"accepted": 0, "queued": 1, "sending": 2, "sent": 3, "read": 5}
_RANK |= dict.fromkeys(("delivered", "undelivered", "failed"), 4)
_CODE_HTTP = {20003: 401, 20404: 404, 20429: 429, 20500: 500, 20503: 503}
DEFAULT_PAGE_SIZE = 50
"""Messages per list page when PageSize is not given (Twilio's default)."""
MAX_PAGE_SIZE = 1000
"""Twilio answers at most this many per page whatever PageSize asks."""
ERROR_MESSAGES = {
    20001: "Invalid parameter",
    20003: "Authenticate",
    20404: "The requested resource was not found",
    21211: "Invalid 'To' Phone Number",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    30003: "Unreachable destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
}
_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXT = set("^{}\\[~]|€\f")  # each costs two septets
_GEO_KEYS = ("Country", "State", "City", "Zip")
FORM = web.RequestKey("form", dict[str, list[str]])
"""The posted form, parsed once by the middleware for the handler."""


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def num_segments(body: str) -> int:
    """Segments Twilio bills for ``body``: GSM-7 160/153 septets, else UCS-2 70/67 units."""
    if all(c in _GSM7 or c in _GSM7_EXT for c in body):
        size, single, multi = len(body) + sum(c in _GSM7_EXT for c in body), 160, 153
    else:
        size, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if size <= single else math.ceil(size / multi)


def twilio_error(status: int, code: int, message: str | None = None) -> web.Response:
    """An error in Twilio's (legacy, non RFC 9457) shape, which the SDK turns into
    TwilioRestException with ``.code``."""
    text = message or ERROR_MESSAGES.get(code) or HTTPStatus(status).phrase
    more_info = f"https://www.twilio.com/docs/errors/{code}"
    body = {"code": code, "message": text, "more_info": more_info, "status": status}
    return web.json_response(body, status=status)


def _rfc2822(when: datetime | None) -> str | None:
    return format_datetime(when) if when else None


@dataclass
class FakeMessage:
    """A message created through the REST API, with every posted field in ``form``."""

    sid: str
    to: str
    from_: str | None
    body: str
    media_urls: list[str]
    messaging_service_sid: str | None
    status_callback: str | None
    form: dict[str, list[str]]
    status: str
    sender: str  # the number callbacks come from: From, or the service's pool number
    date_created: datetime = field(default_factory=lambda: datetime.now(UTC))
    date_updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    date_sent: datetime | None = None
    error_code: int | None = None
    seq: int = 0  # creation order: list pages are cut by it

    def resource(self, account_sid: str) -> dict[str, Any]:
        """The JSON Twilio returns for this Message resource."""
        uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{self.sid}"
        return {
            "account_sid": account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": _rfc2822(self.date_created),
            "date_sent": _rfc2822(self.date_sent),
            "date_updated": _rfc2822(self.date_updated),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": ERROR_MESSAGES.get(self.error_code) if self.error_code else None,
            # A Messaging Service picks the sender after "accepted"; until then from is null.
            "from": self.from_ or (None if self.status == "accepted" else self.sender),
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": str(len(self.media_urls)),  # Twilio sends both counts as strings
            "num_segments": str(num_segments(self.body)),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
            "to": self.to,
            "uri": f"{uri}.json",
        }


@dataclass
class ApiRequest:
    method: str
    path: str
    form: dict[str, list[str]]
    status: int


@dataclass
class Webhook:
    """A request the fake POSTed to the hub: a status callback or an inbound message."""

    url: str
    params: dict[str, str]
    signature: str
    status: int | None  # the hub's HTTP answer; None when the connection failed
    text: str = ""
    error: str | None = None
    message_sid: str = ""


def _geo(prefix: str, number: str) -> dict[str, str]:
    # Twilio geolocates numbers by area code; all synthetic +1 numbers land in one place.
    place = ("US", "IL", "SPRINGFIELD", "62701") if number.startswith("+1") else ("",) * 4
    return {prefix + key: value for key, value in zip(_GEO_KEYS, place, strict=True)}


def _fields(form: Any) -> dict[str, list[str]]:
    """A posted form (MultiDict) as plain lists, keeping repeated fields such as MediaUrl."""
    return {key: [str(v) for v in form.getall(key)] for key in dict.fromkeys(form.keys())}


class FakeTwilio:
    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        api_latency: float = 0.0,
        callback_delay: float = 0.0,
        service_sender: str = "+15550109999",
        post_callbacks: bool = True,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.api_latency = api_latency  # seconds before each REST answer
        self.callback_delay = callback_delay  # seconds before each status step
        self.post_callbacks = post_callbacks  # False: statuses still move, nothing is POSTed
        self.service_sender = service_sender  # what a Messaging Service picks when From is unset
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
        self._outcome_script: dict[str, deque[tuple[tuple[str, int | None], ...]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._changed_cond = asyncio.Condition()
        self._validator = RequestValidator(auth_token)
        credentials = base64.b64encode(f"{account_sid}:{auth_token}".encode())
        self._expected_auth = b"Basic " + credentials

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
            f"pending_tasks={len(self._tasks)}"
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
        answer = scripted.popleft() if scripted else 201
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
        steps = queued.popleft() if queued else tuple((s, None) for s in default)
        response = web.json_response(message.resource(self.account_sid), status=201)
        if self.callback_delay or (message.status_callback and self.post_callbacks):
            self._spawn(self._walk(message, steps))
        else:  # nothing to wait for or post: a task per message would only cost
            for status, code in steps:
                self._advance(message, status, code)
        return response

    async def _list(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            size = min(int(query.get("PageSize", DEFAULT_PAGE_SIZE)), MAX_PAGE_SIZE)
            page = int(query.get("Page", 0))
            if size < 1 or page < 0:
                raise ValueError("PageSize and Page must be positive whole numbers")
            dated = _date_test(query)
            pool = self._by_to.get(query["To"], []) if "To" in query else self.messages
            older, candidates = self._page_order(pool, query.get("PageToken", ""))
        except ValueError as exc:
            return twilio_error(400, 20001, str(exc))
        sender = query.get("From")
        items: list[FakeMessage] = []
        for message in candidates:  # one more than a page tells whether a next page exists
            if sender in (None, message.from_ or message.sender) and (
                dated is None or dated(message)
            ):
                items.append(message)
                if len(items) > size:
                    break
        more = len(items) > size or not older  # a previous-page token came from an older page
        items = items[:size] if older else items[:size][::-1]
        base = {
            k: query[k] for k in ("To", "From", "DateSent", "DateSent<", "DateSent>") if k in query
        }
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages.json?"

        def page_uri(number: int, token: str | None = None) -> str:
            params = base | {"PageSize": size, "Page": number}
            return uri + urlencode(params | ({"PageToken": token} if token else {}))

        start = page * size
        body = {
            "first_page_uri": page_uri(0),
            "end": start + max(len(items) - 1, 0),
            "previous_page_uri": page_uri(page - 1, "PB" + items[0].sid)
            if page and items
            else None,
            "messages": [m.resource(self.account_sid) for m in items],
            "uri": page_uri(page, query.get("PageToken")),
            "page_size": size,
            "start": start,
            "next_page_uri": page_uri(page + 1, "PA" + items[-1].sid) if more and items else None,
            "page": page,
        }
        return web.json_response(body)

    def _page_order(
        self, pool: list[FakeMessage], token: str
    ) -> tuple[bool, Iterator[FakeMessage]]:
        """(newest first?, the messages of ``pool`` from where ``token`` left off): PA<sid> goes
        on with those older than sid, PB<sid> back with those newer."""
        if not token:
            return True, reversed(pool)
        anchor = self._by_sid.get(token[2:])
        if token[:2] not in ("PA", "PB") or anchor is None:
            raise ValueError(f"PageToken {token!r} was not given out by this API")
        if token[:2] == "PA":
            at = bisect.bisect_left(pool, anchor.seq, key=operator.attrgetter("seq"))
            return True, (pool[i] for i in range(at - 1, -1, -1))
        at = bisect.bisect_right(pool, anchor.seq, key=operator.attrgetter("seq"))
        return False, iter(pool[at:])

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
    app.router.add_get(f"{messages}/{{sid:(?:SM|MM)[0-9a-f]{{32}}}}.json", fake._fetch)
    media = f"{messages}/{{message_sid}}/Media/{{media_sid:ME[0-9a-f]{{32}}}}"
    app.router.add_get(media, fake._get_media)
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


def _sent_bound(raw: str) -> date | datetime:
    try:
        if len(raw) == len("YYYY-MM-DD"):
            return date.fromisoformat(raw)
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"DateSent {raw!r} is not YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).replace(microsecond=0)


def _date_test(query: Mapping[str, str]) -> Callable[[FakeMessage], bool] | None:
    """Twilio's DateSent filters: DateSent by day; DateSent< and DateSent> (both inclusive) by
    day when given a date, by the second when given a time."""
    ops = {"DateSent": operator.eq, "DateSent<": operator.le, "DateSent>": operator.ge}
    bounds = [(ops[key], _sent_bound(query[key])) for key in ops if key in query]
    # The SDK sends a date as that day's midnight; "sent on" means the day, whatever the time.
    bounds = [
        (op, b.date() if op is operator.eq and isinstance(b, datetime) else b) for op, b in bounds
    ]
    if not bounds:
        return None

    def test(message: FakeMessage) -> bool:
        sent = message.date_sent
        if sent is None:
            return False
        return all(
            op(sent.replace(microsecond=0) if isinstance(b, datetime) else sent.date(), b)
            for op, b in bounds
        )

    return test


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeTwilio(
        args.account_sid,
        args.auth_token,
        api_latency=args.latency_ms / 1000,
        callback_delay=args.callback_delay_ms / 1000,
        post_callbacks=not args.no_callbacks,
    )
    runner, base_url = await start_fake_twilio(fake, args.host, args.port)
    print(base_url, flush=True)  # the one line a parent process reads
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fakes.twilio", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="before each API answer")
    parser.add_argument("--callback-delay-ms", type=float, default=0.0)
    parser.add_argument("--no-callbacks", action="store_true", help="never POST status callbacks")
    parser.add_argument("--account-sid", default=os.environ.get("TWILIO_ACCOUNT_SID"))
    parser.add_argument("--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN"))
    args = parser.parse_args(argv)
    if not (args.account_sid and args.auth_token):
        parser.error("set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or --account-sid/--auth-token)")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
