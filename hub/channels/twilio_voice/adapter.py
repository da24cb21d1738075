"""Twilio Voice adapter: signature check and parsing are pure; send() places a call with the
SDK's async client (pointed at TWILIO_API_BASE when set, a local fake in tests and the demo).

A call carries no text: Twilio fetches what to say from ``/webhooks/twilio/voice/outbound``
when the patient answers, and the hub reads the message body (the template's voice variant,
stored encrypted) from its own database then. So the script never travels in the create
request, and a call answered after a retry reads the same message."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from hub.channels.base import (
    ChannelError,
    FailureClass,
    InboundMessage,
    MalformedPayload,
    NotConfigured,
    Outbound,
    SendFailed,
    SendReceipt,
    StatusUpdate,
    UnknownEvent,
    WebhookRequest,
    attempt_number,
)
from hub.channels.twilio_sms.errors import api_failure
from hub.channels.twilio_sms.rest import TwilioRest
from hub.channels.twilio_voice.errors import BUSY, CANCELED, FAILED, NO_ANSWER, classify
from hub.channels.twilio_voice.events import CALL_SID_RE, PROVIDER
from hub.config import Settings
from hub.consent.exceptions import ConsentRefused
from hub.consent.schemas import Decision
from hub.enums import Channel, MessageStatus

"""Per request to Twilio's API; a slower answer is treated as a transient failure."""
RING_TIMEOUT_S = 30
"""Seconds a reminder call rings before Twilio gives up (no-answer); voicemail picks up later."""
CLOCK_SKEW = timedelta(minutes=1)
"""Allowed difference between our clock and Twilio's when matching a call's creation time."""
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]
"""Call progress the hub asks Twilio to report: the first one records the call's sid early."""
MACHINE_DETECTION = "DetectMessageEnd"
"""Answering machines are detected, and the hub's message starts after their beep."""

STATUS_MAP = {
    "queued": MessageStatus.SENDING,
    "initiated": MessageStatus.SENDING,
    "ringing": MessageStatus.SENDING,
    "in-progress": MessageStatus.SENDING,
    "completed": MessageStatus.DELIVERED,
    NO_ANSWER: MessageStatus.UNDELIVERED,
    BUSY: MessageStatus.UNDELIVERED,
    FAILED: MessageStatus.FAILED,
    CANCELED: MessageStatus.FAILED,
}
"""CallStatus -> message status. An unanswered call is undelivered (a transient failure the
retry and fallback policy handles); a call Twilio could not place at all has failed."""


def call_urls(public_url: str, message_id: uuid.UUID, attempt: int) -> tuple[str, str]:
    """(where Twilio fetches the call's TwiML, where it reports the call's progress). Both
    name the message and attempt, so a report that beats the API's answer still matches."""
    ref = f"m={message_id}&a={attempt}"
    base = f"{public_url}/webhooks/twilio/voice"
    return f"{base}/outbound?{ref}", f"{base}/status?{ref}"


class RecordingNotDeleted(ChannelError):
    """Twilio did not delete a recording (down, refusing, unreachable): ask again later."""


class TwilioVoiceAdapter(TwilioRest):
    name = PROVIDER
    needs_credentials_to = "place calls"
    channel = Channel.VOICE

    def __init__(
        self,
        *,
        account_sid: str | None,
        auth_token: str | None,
        public_url: str,
        api_base: str | None = None,
        from_number: str | None = None,
    ) -> None:
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.public_url = public_url.rstrip("/")
        self.api_base = api_base
        self.from_number = from_number
        self._validator = RequestValidator(auth_token) if auth_token else None
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioVoiceAdapter:
        return cls(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token,
            public_url=settings.public_url,
            api_base=settings.twilio_api_base,
            from_number=settings.twilio_from_number,
        )

    def __repr__(self) -> str:
        return f"TwilioVoiceAdapter(account={self.account_sid!r})"

    # -- webhooks (pure) ----------------------------------------------------------------

    def parse_inbound(self, request: WebhookRequest) -> InboundMessage:
        # A call is not a message: its webhooks have parsers of their own (events.py), and
        # only a voicemail becomes a message, through hub.inbox.actions.voice_intake.
        raise UnknownEvent("voice webhooks are calls, recordings and transcriptions")

    def parse_status(self, request: WebhookRequest) -> StatusUpdate:
        params = dict(request.params)
        sid = params.get("CallSid", "").strip()
        if not CALL_SID_RE.match(sid):
            raise MalformedPayload("CallSid is missing or not a Twilio call sid")
        raw = params.get("CallStatus", "").strip().lower()
        if not raw:
            raise MalformedPayload("CallStatus is missing")
        status = STATUS_MAP.get(raw)
        if status is None:
            raise UnknownEvent(f"call status {raw!r} is not a call progress status")
        hub_id: uuid.UUID | None = None
        attempt: int | None = None
        if "m" in request.query:
            try:
                hub_id = uuid.UUID(request.query["m"])
                attempt = attempt_number(request.query.get("a", ""))
            except ValueError:
                raise MalformedPayload("the callback URL's message reference is damaged") from None
        code = (params.get("ErrorCode") or "").strip() or None
        if status in (MessageStatus.UNDELIVERED, MessageStatus.FAILED) and code is None:
            code = raw  # no-answer, busy: the status is the reason
        return StatusUpdate(PROVIDER, sid, status, code, hub_id, attempt)

    def classify_error(self, code: str | None) -> FailureClass:
        return classify(code)

    # -- calling ---------------------------------------------------------------------------

    def _sender(self, outbound: Outbound) -> str:
        sender = outbound.from_address or self.from_number
        if not sender:
            raise NotConfigured("set TWILIO_FROM_NUMBER: calls need a number to call from")
        return sender

    async def send(self, outbound: Outbound, decision: Decision) -> SendReceipt:
        if outbound.channel is not Channel.VOICE or decision.channel is not Channel.VOICE:
            raise ConsentRefused("this adapter places calls only", code="wrong_channel")
        if not decision.allowed:
            raise ConsentRefused(decision.reason, code=decision.code)
        url, status_callback = call_urls(self.public_url, outbound.message_id, outbound.attempt)
        try:
            call = await self._sdk().calls.create_async(
                to=outbound.to_address,
                from_=self._sender(outbound),
                url=url,
                method="POST",
                status_callback=status_callback,
                status_callback_method="POST",
                status_callback_event=STATUS_EVENTS,
                machine_detection=MACHINE_DETECTION,
                timeout=RING_TIMEOUT_S,
            )
        except NotConfigured:
            raise
        except Exception as exc:
            raise SendFailed(api_failure(exc, classify)) from None
        return SendReceipt(
            PROVIDER, call.sid, STATUS_MAP.get(call.status or "", MessageStatus.SENDING)
        )

    async def find_sent(self, outbound: Outbound, since: datetime) -> SendReceipt | None:
        # A call resource does not show the URL it was placed with, so our message id cannot
        # be matched. One call from our number to this one since the claim is ours; none means
        # it was never placed; several (two family members on one phone) cannot be told apart,
        # and None (call again) is the answer the protocol asks for then.
        sender = self._sender(outbound)
        try:
            recent = await self._sdk().calls.list_async(
                to=outbound.to_address, from_=sender, limit=20
            )
        except NotConfigured:
            raise
        except Exception as exc:
            raise SendFailed(api_failure(exc, classify)) from None
        earliest = since - CLOCK_SKEW
        ours = [c for c in recent if c.date_created is None or c.date_created >= earliest]
        if len(ours) != 1:
            return None
        return SendReceipt(
            PROVIDER, ours[0].sid, STATUS_MAP.get(ours[0].status or "", MessageStatus.SENDING)
        )

    # -- recordings ----------------------------------------------------------------------------

    async def delete_recording(self, sid: str) -> None:
        """Delete a voicemail recording at Twilio (erasure, retention). One Twilio no longer
        has (404) is deleted already, which is what was asked. Raises RecordingNotDeleted."""
        try:
            await self._sdk().recordings(sid).delete_async()
        except NotConfigured:
            raise
        except TwilioRestException as exc:
            if exc.status == 404:
                return
            raise RecordingNotDeleted(f"Twilio answered {exc.status} (error {exc.code})") from None
        except Exception as exc:
            raise RecordingNotDeleted(f"could not reach Twilio ({type(exc).__name__})") from None
