"""Twilio SMS/MMS adapter: signature check and parsing are pure; send() uses the SDK's async
client, pointed at TWILIO_API_BASE when set (a local fake in tests and the demo)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from twilio.request_validator import RequestValidator

from hub.channels.base import (
    FailureClass,
    InboundMedia,
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
from hub.channels.twilio_sms.errors import api_failure, classify
from hub.channels.twilio_sms.rest import TwilioRest
from hub.config import Settings
from hub.consent.exceptions import ConsentRefused
from hub.consent.schemas import Decision
from hub.contact import InvalidContact, normalize_phone
from hub.enums import Channel, MessageStatus

PROVIDER = "twilio_sms"
MAX_BODY_CHARS = 1600
"""Twilio's own limit for one message body."""
MAX_MEDIA = 10
"""Twilio delivers at most 10 media items per MMS."""

CLOCK_SKEW = timedelta(minutes=1)
"""Allowed difference between our clock and Twilio's when matching a message's creation time."""

SID_RE = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")
WHATSAPP_PREFIX = "whatsapp:"
"""How Twilio marks a WhatsApp address (From=whatsapp:+15550100101) on the Messaging webhook."""

STATUS_MAP = {
    "accepted": MessageStatus.SENDING,
    "scheduled": MessageStatus.SENDING,
    "queued": MessageStatus.SENDING,
    "sending": MessageStatus.SENDING,
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.READ,
    "undelivered": MessageStatus.UNDELIVERED,
    "failed": MessageStatus.FAILED,
    "canceled": MessageStatus.FAILED,
}


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name, "").strip()
    if not value:
        raise MalformedPayload(f"{name} is missing")
    return value


def _shared_location(params: dict[str, str]) -> str:
    """A WhatsApp location pin (MessageType=location: an empty Body, Latitude and Longitude,
    and Label/Address for a named place) as the text staff read; "" when there is none."""
    try:
        lat, lon = float(params.get("Latitude", "")), float(params.get("Longitude", ""))
    except ValueError:
        return ""
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise MalformedPayload("Latitude/Longitude are not a place on Earth")
    place = ", ".join(p for p in (params.get("Label"), params.get("Address")) if p)
    return f"Shared a location: {lat}, {lon}" + (f" ({place})" if place else "")


class TwilioSmsAdapter(TwilioRest):
    name = PROVIDER
    needs_credentials_to = "send SMS"
    channel = Channel.SMS

    def __init__(
        self,
        *,
        account_sid: str | None,
        auth_token: str | None,
        api_base: str | None = None,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        region: str = "US",
    ) -> None:
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.api_base = api_base
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.region = region
        self._validator = RequestValidator(auth_token) if auth_token else None
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioSmsAdapter:
        return cls(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token,
            api_base=settings.twilio_api_base,
            from_number=settings.twilio_from_number,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            region=settings.default_region,
        )

    def __repr__(self) -> str:
        return f"TwilioSmsAdapter(account={self.account_sid!r})"

    # -- webhooks (pure) ----------------------------------------------------------------

    def parse_inbound(self, request: WebhookRequest) -> InboundMessage:
        params = dict(request.params)
        sid = _required(params, "MessageSid")
        if not SID_RE.match(sid):
            raise MalformedPayload("MessageSid is not a Twilio message sid")
        raw_from = _required(params, "From")
        # A WhatsApp-enabled sender posts to the same webhook; its addresses say so, and its
        # conversation must say so too (a reply by SMS is not what the patient wrote on).
        channel = Channel.WHATSAPP if raw_from.startswith(WHATSAPP_PREFIX) else Channel.SMS
        try:
            from_address = normalize_phone(raw_from.removeprefix(WHATSAPP_PREFIX), self.region)
        except InvalidContact:
            raise MalformedPayload("From is not a phone number") from None
        to_address = _required(params, "To").removeprefix(WHATSAPP_PREFIX)
        # A tapped quick-reply button arrives as ButtonText (Body repeats it when present).
        body = params.get("Body", "") or params.get("ButtonText", "")
        if len(body) > MAX_BODY_CHARS:
            raise MalformedPayload(f"Body is longer than {MAX_BODY_CHARS} characters")
        raw_media = params.get("NumMedia", "0").strip() or "0"
        if not raw_media.isdigit():
            raise MalformedPayload("NumMedia is not a whole number")
        num_media = int(raw_media)
        if num_media > MAX_MEDIA:
            raise MalformedPayload(f"NumMedia is above Twilio's limit of {MAX_MEDIA}")
        media = []
        for i in range(num_media):
            url = _required(params, f"MediaUrl{i}")
            if not url.startswith(("https://", "http://")):
                raise MalformedPayload(f"MediaUrl{i} is not an http(s) URL")
            media.append(
                InboundMedia(url=url, content_type=_required(params, f"MediaContentType{i}"))
            )
        if not body and not media and channel is Channel.WHATSAPP:
            body = _shared_location(params)
        if not body and not media:
            raise MalformedPayload("neither Body nor media is present")
        if self.account_sid and params.get("AccountSid") not in (None, "", self.account_sid):
            raise MalformedPayload("AccountSid is not this hub's Twilio account")
        return InboundMessage(
            provider=PROVIDER,
            provider_message_id=sid,
            channel=channel,
            from_address=from_address,
            to_address=to_address,
            body=body,
            media=tuple(media),
            account_id=params.get("AccountSid"),
            service_id=params.get("MessagingServiceSid") or None,
        )

    def parse_status(self, request: WebhookRequest) -> StatusUpdate:
        params = dict(request.params)
        sid = params.get("MessageSid") or params.get("SmsSid") or ""
        if not SID_RE.match(sid.strip()):
            raise MalformedPayload("MessageSid is missing or not a Twilio message sid")
        raw = (params.get("MessageStatus") or params.get("SmsStatus") or "").strip().lower()
        if not raw:
            raise MalformedPayload("MessageStatus is missing")
        status = STATUS_MAP.get(raw)
        if status is None:
            raise UnknownEvent(f"message status {raw!r} is not an outbound delivery status")
        hub_id: uuid.UUID | None = None
        attempt: int | None = None
        if "m" in request.query:
            try:
                hub_id = uuid.UUID(request.query["m"])
                attempt = attempt_number(request.query.get("a", ""))
            except ValueError:
                raise MalformedPayload("the callback URL's message reference is damaged") from None
        code = (params.get("ErrorCode") or "").strip() or None
        return StatusUpdate(PROVIDER, sid.strip(), status, code, hub_id, attempt)

    def classify_error(self, code: str | None) -> FailureClass:
        return classify(code)

    # -- sending ---------------------------------------------------------------------------

    async def send(self, outbound: Outbound, decision: Decision) -> SendReceipt:
        if outbound.channel is not Channel.SMS or decision.channel is not Channel.SMS:
            raise ConsentRefused("this adapter sends SMS only", code="wrong_channel")
        if not decision.allowed:
            raise ConsentRefused(decision.reason, code=decision.code)
        kwargs: dict[str, Any] = {"to": outbound.to_address, "body": outbound.body}
        sender = outbound.from_address or self.from_number
        if self.messaging_service_sid and not outbound.from_address:
            kwargs["messaging_service_sid"] = self.messaging_service_sid
        elif sender:
            kwargs["from_"] = sender
        else:
            raise NotConfigured("set TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID")
        if outbound.status_callback_url:
            kwargs["status_callback"] = outbound.status_callback_url
        if outbound.media_urls:
            kwargs["media_url"] = list(outbound.media_urls)
        try:
            message = await self._sdk().messages.create_async(**kwargs)
        except NotConfigured:
            raise
        except Exception as exc:
            raise SendFailed(api_failure(exc)) from None
        return SendReceipt(
            PROVIDER, message.sid, STATUS_MAP.get(message.status or "", MessageStatus.SENDING)
        )

    async def find_sent(self, outbound: Outbound, since: datetime) -> SendReceipt | None:
        # Twilio has no idempotency key; the newest messages to the number (newest first)
        # with the same body, created since the claim, are the ones our dead sender made.
        try:
            recent = await self._sdk().messages.list_async(to=outbound.to_address, limit=20)
        except NotConfigured:
            raise
        except Exception as exc:
            raise SendFailed(api_failure(exc)) from None
        earliest = since - CLOCK_SKEW
        for message in recent:
            created = message.date_created
            if message.body == outbound.body and (created is None or created >= earliest):
                return SendReceipt(
                    PROVIDER,
                    message.sid,
                    STATUS_MAP.get(message.status or "", MessageStatus.SENDING),
                )
        return None
