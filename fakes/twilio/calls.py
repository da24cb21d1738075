"""The fake Twilio's Calls: the REST resource, the call's webhooks, and a patient's keypad.

``POST .../Calls.json`` answers like Twilio's Call resource (status ``queued``, a CA sid), then
plays the call in the background: progress callbacks to ``StatusCallback`` for the events in
``StatusCallbackEvent`` (default: completed), and, when someone answers, a signed POST to
``Url`` with the standard voice parameters (``AnsweredBy`` when ``MachineDetection`` is set).
Each TwiML document the hub answers is kept, in order, in ``call.twiml``. A document with a
``<Gather>`` or ``<Record>`` waits for the test: ``press`` posts ``Digits`` to the Gather's
action, ``recording_done`` finishes the Record, ``no_input`` lets the prompt time out. A
``<Redirect>`` is followed; anything else ends the call (``completed``).

Outcomes per number (``script_call(to, "no-answer", times=4)``): ``answered`` (default),
``machine``, ``no-answer``, ``busy``, ``failed`` or ``failed:<ErrorCode>``.

Inbound: ``start_inbound_call(hub_url, from_, to)`` plays a patient calling the clinic.
Recordings are served at their RecordingUrl (+ ``.mp3`` / ``.wav``) behind the account's Basic
auth, like MMS media.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urljoin
from xml.etree import ElementTree

from aiohttp import web

from fakes.twilio.resources import (
    _E164,
    API_VERSION,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    Webhook,
    _geo,
    new_sid,
    twilio_error,
)

if TYPE_CHECKING:
    from fakes.twilio.server import FakeTwilio

OUTCOMES = ("answered", "machine", "no-answer", "busy", "failed")
_FINAL = ("completed", "no-answer", "busy", "failed", "canceled")
_MAX_REDIRECTS = 10
"""Redirects followed in a row before the fake gives up on a looping document."""
_RECORDING = re.compile(r"^(RE[0-9a-f]{32})(\.mp3|\.wav)?$")
_CALL_ERRORS = {
    21201: "No 'To' number is specified",
    21213: "No 'From' number is specified",
    21205: "Url parameter is required",
}


def _rfc2822(when: datetime | None) -> str | None:
    return format_datetime(when) if when else None


@dataclass
class FakeCall:
    sid: str
    to: str
    from_: str
    direction: str  # "outbound-api" or "inbound"
    url: str  # where the call's TwiML comes from
    status_callback: str | None = None
    events: tuple[str, ...] = ("completed",)
    machine_detection: str | None = None
    form: dict[str, list[str]] = field(default_factory=dict)
    status: str = "queued"
    answered_by: str | None = None
    error_code: int | None = None
    twiml: list[str] = field(default_factory=list)
    """Every TwiML document the hub answered for this call, in order."""
    webhooks: list[Webhook] = field(default_factory=list)
    """Every request for TwiML (answer, keypress, recording, redirect), with its answer."""
    callbacks: list[Webhook] = field(default_factory=list)
    """Progress, recording status and transcription callbacks."""
    recordings: dict[str, dict[str, str]] = field(default_factory=dict)
    date_created: datetime = field(default_factory=lambda: datetime.now(UTC))
    start_time: datetime | None = None
    end_time: datetime | None = None
    seq: int = 0
    _document_url: str = ""

    @property
    def last_twiml(self) -> str:
        return self.twiml[-1] if self.twiml else ""

    def resource(self, account_sid: str) -> dict[str, Any]:
        """The JSON Twilio returns for this Call resource."""
        uri = f"/{API_VERSION}/Accounts/{account_sid}/Calls/{self.sid}"
        duration = (
            str(int((self.end_time - self.start_time).total_seconds()))
            if self.end_time and self.start_time
            else None
        )
        return {
            "account_sid": account_sid,
            "annotation": None,
            "answered_by": self.answered_by,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": _rfc2822(self.date_created),
            "date_updated": _rfc2822(datetime.now(UTC)),
            "direction": self.direction,
            "duration": duration,
            "end_time": _rfc2822(self.end_time),
            "forwarded_from": None,
            "from": self.from_,
            "from_formatted": self.from_,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": self.sid,
            "start_time": _rfc2822(self.start_time),
            "status": self.status,
            "subresource_uris": {"recordings": f"{uri}/Recordings.json"},
            "to": self.to,
            "to_formatted": self.to,
            "trunk_sid": None,
            "uri": f"{uri}.json",
        }


def _verbs(document: str) -> list[ElementTree.Element]:
    """The top-level verbs of a TwiML document ([] when it is not TwiML)."""
    try:
        root = ElementTree.fromstring(document)  # noqa: S314 - the hub under test wrote it
    except ElementTree.ParseError:
        return []
    return list(root) if root.tag == "Response" else []


class CallsMixin:
    """Calls for ``FakeTwilio`` (which provides ``_post``, ``_spawn``, ``_changed``)."""

    def _init_calls(self) -> None:
        self.calls: list[FakeCall] = []
        self._calls_by_sid: dict[str, FakeCall] = {}
        self._call_script: dict[str, deque[str]] = {}
        self._recordings: dict[str, bytes] = {}
        self.deleted_recordings: list[str] = []
        """Recording sids deleted through ``DELETE .../Recordings/{Sid}.json``, in order."""
        self._delete_script: deque[int] = deque()

    @property
    def _fake(self) -> FakeTwilio:
        return self  # type: ignore[return-value]

    # -- scripting ---------------------------------------------------------------------------

    def script_call(self, to: str, outcome: str, *, times: int = 1) -> None:
        """How the next ``times`` calls to ``to`` go (see the module doc)."""
        if outcome.partition(":")[0] not in OUTCOMES:
            raise ValueError(f"unknown call outcome {outcome!r}; expected one of {OUTCOMES}")
        self._call_script.setdefault(to, deque()).extend([outcome] * times)

    def add_recording(self, sid: str | None = None, audio: bytes = b"ID3 synthetic") -> str:
        """A recording Twilio holds (as a finished ``<Record>`` leaves one); its sid."""
        sid = sid or new_sid("RE")
        self._recordings[sid] = audio
        return sid

    def has_recording(self, sid: str) -> bool:
        return sid in self._recordings

    def script_recording_deletes(self, *statuses: int) -> None:
        """Answers for the next recording deletions, in order: an HTTP status (500, 503, 429:
        answered with Twilio's error JSON, nothing deleted). Unscripted deletions go ahead."""
        self._delete_script.extend(statuses)

    def call(self, sid: str) -> FakeCall:
        return self._calls_by_sid[sid]

    def _describe_calls(self) -> str:
        calls = [(c.sid, c.direction, c.status, len(c.twiml)) for c in self.calls]
        return f" calls={calls}"

    # -- REST --------------------------------------------------------------------------------

    async def _create_call(self, request: web.Request) -> web.Response:
        from fakes.twilio.server import FORM

        form = request[FORM]
        one = {key: values[0] for key, values in form.items()}
        to, from_, url = one.get("To", ""), one.get("From", ""), one.get("Url", "")
        if not to:
            return twilio_error(400, 21201, _CALL_ERRORS[21201])
        if not _E164.fullmatch(to):
            return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not from_:
            return twilio_error(400, 21213, _CALL_ERRORS[21213])
        if not url and "Twiml" not in one:
            return twilio_error(400, 21205, _CALL_ERRORS[21205])
        call = FakeCall(
            sid=new_sid("CA"),
            to=to,
            from_=from_,
            direction="outbound-api",
            url=url,
            status_callback=one.get("StatusCallback") or None,
            events=tuple(form.get("StatusCallbackEvent") or ["completed"]),
            machine_detection=one.get("MachineDetection") or None,
            form=form,
            seq=len(self.calls),
        )
        self._add_call(call)
        scripted = self._call_script.get(to)
        outcome = scripted.popleft() if scripted else "answered"
        self._fake._spawn(self._play_outbound(call, outcome, one.get("Twiml")))
        return web.json_response(call.resource(self._fake.account_sid), status=201)

    def _add_call(self, call: FakeCall) -> None:
        self.calls.append(call)
        self._calls_by_sid[call.sid] = call

    async def _list_calls(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            size = min(int(query.get("PageSize", DEFAULT_PAGE_SIZE)), MAX_PAGE_SIZE)
        except ValueError:
            return twilio_error(400, 20001, "PageSize must be a whole number")
        found = [
            c
            for c in reversed(self.calls)
            if query.get("To") in (None, c.to) and query.get("From") in (None, c.from_)
        ][:size]
        uri = f"/{API_VERSION}/Accounts/{self._fake.account_sid}/Calls.json?"
        base = {k: query[k] for k in ("To", "From") if k in query} | {"PageSize": size}
        return web.json_response(
            {
                "calls": [c.resource(self._fake.account_sid) for c in found],
                "first_page_uri": uri + urlencode(base | {"Page": 0}),
                "next_page_uri": None,
                "previous_page_uri": None,
                "uri": uri + urlencode(base | {"Page": 0}),
                "page": 0,
                "page_size": size,
                "start": 0,
                "end": max(len(found) - 1, 0),
            }
        )

    async def _fetch_call(self, request: web.Request) -> web.Response:
        call = self._calls_by_sid.get(request.match_info["sid"])
        if call is None:
            return twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        return web.json_response(call.resource(self._fake.account_sid))

    async def _get_recording(self, request: web.Request) -> web.Response:
        match = _RECORDING.match(request.match_info["name"])
        if match is None or match[1] not in self._recordings:
            return twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        content_type = "audio/mpeg" if match[2] == ".mp3" else "audio/x-wav"
        return web.Response(body=self._recordings[match[1]], content_type=content_type)

    async def _delete_recording(self, request: web.Request) -> web.Response:
        """As Twilio: 204 and no body once deleted; 404 (20404) for a recording it does not
        have, a second deletion included."""
        name = request.match_info["name"]
        sid = name.removesuffix(".json")
        if not name.endswith(".json") or sid not in self._recordings:
            return twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        if self._delete_script:
            status = self._delete_script.popleft()
            return twilio_error(status, 20000 + status if status != 429 else 20429)
        del self._recordings[sid]
        self.deleted_recordings.append(sid)
        return web.Response(status=204)

    # -- playing a call ----------------------------------------------------------------------

    def _params(self, call: FakeCall, **extra: str) -> dict[str, str]:
        """The standard parameters of every voice request Twilio makes about a call."""
        params = {"AccountSid": self._fake.account_sid, "ApiVersion": API_VERSION}
        params |= {"CallSid": call.sid, "CallStatus": call.status, "Direction": call.direction}
        params |= {"From": call.from_, "To": call.to, "Caller": call.from_, "Called": call.to}
        params |= _geo("From", call.from_) | _geo("To", call.to)
        if call.answered_by:
            params["AnsweredBy"] = call.answered_by
        return params | extra

    async def _progress(self, call: FakeCall, event: str, status: str, **extra: str) -> None:
        call.status = status
        if call.status_callback and event in call.events:
            params = self._params(call, CallbackSource="call-progress-events", **extra)
            params["SequenceNumber"] = str(len(call.callbacks))
            params["Timestamp"] = format_datetime(datetime.now(UTC))
            call.callbacks.append(await self._fake._post(call.status_callback, params))
        await self._fake._changed()

    async def _play_outbound(self, call: FakeCall, outcome: str, inline: str | None) -> None:
        kind, _, code = outcome.partition(":")
        await self._progress(call, "initiated", "queued")
        if kind == "busy":
            return await self._progress(call, "completed", "busy")
        if kind == "failed":
            call.error_code = int(code) if code else None
            extra = {"ErrorCode": code} if code else {}
            return await self._progress(call, "completed", "failed", **extra)
        await self._progress(call, "ringing", "ringing")
        if kind == "no-answer":
            return await self._progress(call, "completed", "no-answer")
        if call.machine_detection:
            machine = "machine_end_beep" if call.machine_detection == "DetectMessageEnd" else None
            call.answered_by = (machine or "machine_start") if kind == "machine" else "human"
        call.status, call.start_time = "in-progress", datetime.now(UTC)
        if inline is not None:
            call.twiml.append(inline)
            call._document_url = call.url
        else:
            await self._request_twiml(call, call.url, self._params(call))
        await self._progress(call, "answered", "in-progress")
        await self._carry_on(call)

    async def _request_twiml(self, call: FakeCall, url: str, params: dict[str, str]) -> str:
        record = await self._fake._post(url, params)
        record.message_sid = call.sid
        call.webhooks.append(record)
        # A failed request is Twilio's "application error": the caller hears that, then the
        # call ends (handled by _carry_on, which finds no verbs).
        call.twiml.append(record.text if record.status == 200 else "")
        call._document_url = url
        await self._fake._changed()
        return call.twiml[-1]

    async def _carry_on(self, call: FakeCall) -> None:
        """After a document: wait for the caller (Gather, Record), follow a Redirect, or end."""
        for _ in range(_MAX_REDIRECTS):
            verbs = _verbs(call.last_twiml)
            if any(v.tag in ("Gather", "Record") for v in verbs):
                return
            redirect = next((v for v in verbs if v.tag == "Redirect"), None)
            if redirect is None:
                break
            target = urljoin(call._document_url, (redirect.text or "").strip())
            await self._request_twiml(call, target, self._params(call))
        await self._complete(call)

    async def _complete(self, call: FakeCall) -> None:
        if call.status in _FINAL:
            return
        call.end_time = datetime.now(UTC)
        duration = str(int((call.end_time - (call.start_time or call.end_time)).total_seconds()))
        await self._progress(call, "completed", "completed", CallDuration=duration)

    def _verb(self, call: FakeCall, tag: str) -> ElementTree.Element:
        found = next((v for v in _verbs(call.last_twiml) if v.tag == tag), None)
        if found is None or call.status in _FINAL:
            raise RuntimeError(f"call {call.sid} is not waiting on a <{tag}>: {call.last_twiml}")
        return found

    def _resolve(self, call: FakeCall | str) -> FakeCall:
        return call if isinstance(call, FakeCall) else self._calls_by_sid[call]

    # -- the patient's side ------------------------------------------------------------------

    async def press(self, call: FakeCall | str, digits: str) -> Webhook:
        """Press ``digits`` while the call waits on a ``<Gather>``: POST them to its action
        (signed), keep the answer, go on with it. Returns the request and the hub's answer."""
        call = self._resolve(call)
        gather = self._verb(call, "Gather")
        action = urljoin(call._document_url, gather.get("action") or call._document_url)
        await self._request_twiml(call, action, self._params(call, Digits=digits))
        record = call.webhooks[-1]
        await self._carry_on(call)
        return record

    gather = press

    async def no_input(self, call: FakeCall | str) -> None:
        """Let every prompt of the current document time out: Twilio then runs the verbs
        after the Gathers (a Redirect is followed; otherwise the call ends)."""
        call = self._resolve(call)
        self._verb(call, "Gather")
        verbs = _verbs(call.last_twiml)
        last = max(i for i, v in enumerate(verbs) if v.tag == "Gather")
        redirect = next((v for v in verbs[last + 1 :] if v.tag == "Redirect"), None)
        if redirect is None:
            return await self._complete(call)
        target = urljoin(call._document_url, (redirect.text or "").strip())
        await self._request_twiml(call, target, self._params(call))
        await self._carry_on(call)

    async def hang_up(self, call: FakeCall | str) -> None:
        await self._complete(self._resolve(call))

    async def start_inbound_call(self, hub_url: str, from_: str, to: str) -> FakeCall:
        """Play a patient calling ``to``: a signed POST to ``hub_url`` (the hub's
        /webhooks/twilio/voice), whose TwiML answer is kept in ``call.twiml``."""
        call = FakeCall(new_sid("CA"), to, from_, "inbound", hub_url, status="ringing")
        call.seq = len(self.calls)
        self._add_call(call)
        await self._request_twiml(call, hub_url, self._params(call))
        call.status, call.start_time = "in-progress", datetime.now(UTC)
        await self._carry_on(call)
        return call

    async def recording_done(
        self,
        call: FakeCall | str,
        *,
        duration: int = 7,
        audio: bytes = b"ID3 synthetic voicemail audio",
        recording_sid: str | None = None,
    ) -> str:
        """The caller finished a ``<Record>`` (hung up after ``duration`` seconds). As Twilio
        does: a non-empty recording is posted to the action (its answer goes on with the
        call), then to recordingStatusCallback (``completed``); an empty one skips the action,
        reports ``absent`` if asked to, and the call runs the verbs after the Record."""
        call = self._resolve(call)
        record = self._verb(call, "Record")
        sid = recording_sid or new_sid("RE")
        url = f"{self._fake.base_url}/{API_VERSION}/Accounts/{self._fake.account_sid}"
        url += f"/Recordings/{sid}"
        call.recordings[sid] = {
            "url": url,
            "transcribe_callback": urljoin(
                call._document_url, record.get("transcribeCallback") or ""
            ),
        }
        fields = {"RecordingSid": sid, "RecordingUrl": url, "RecordingDuration": str(duration)}
        status_url = record.get("recordingStatusCallback")
        asked = (record.get("recordingStatusCallbackEvent") or "completed").split()
        if duration > 0:
            self._recordings[sid] = audio
            action = urljoin(call._document_url, record.get("action") or call._document_url)
            await self._request_twiml(call, action, self._params(call, Digits="hangup", **fields))
        if status_url and ("completed" if duration > 0 else "absent") in asked:
            status = {"RecordingStatus": "completed" if duration > 0 else "absent"}
            params = {"AccountSid": self._fake.account_sid, "CallSid": call.sid, **fields}
            params |= status | {"RecordingChannels": "1", "RecordingSource": "RecordVerb"}
            target = urljoin(call._document_url, status_url)
            call.callbacks.append(await self._fake._post(target, params))
        if duration <= 0:
            await self._complete(call)  # what follows the Record says goodbye and hangs up
        else:
            await self._carry_on(call)
        await self._fake._changed()
        return sid

    async def transcription_done(
        self, call: FakeCall | str, recording_sid: str, text: str, *, status: str = "completed"
    ) -> Webhook:
        """Twilio finished transcribing a recording: POST to the Record's transcribeCallback."""
        call = self._resolve(call)
        recording = call.recordings[recording_sid]
        params = self._params(
            call,
            TranscriptionSid=new_sid("TR"),
            TranscriptionText=text if status == "completed" else "",
            TranscriptionStatus=status,
            TranscriptionType="fast",
            TranscriptionUrl=f"{recording['url']}/Transcriptions",
            RecordingSid=recording_sid,
            RecordingUrl=recording["url"],
        )
        record = await self._fake._post(recording["transcribe_callback"], params)
        call.callbacks.append(record)
        await self._fake._changed()
        return record


def add_call_routes(app: web.Application, fake: CallsMixin) -> None:
    calls = f"/{API_VERSION}/Accounts/{{account_sid}}/Calls"
    app.router.add_post(f"{calls}.json", fake._create_call)
    app.router.add_get(f"{calls}.json", fake._list_calls)
    app.router.add_get(f"{calls}/{{sid:CA[0-9a-f]{{32}}}}.json", fake._fetch_call)
    recordings = f"/{API_VERSION}/Accounts/{{account_sid}}/Recordings/{{name}}"
    app.router.add_get(recordings, fake._get_recording)
    app.router.add_delete(recordings, fake._delete_recording)
