"""The web chat "provider": pure parsing of what a patient's browser sends, and a send() that
hands a message to the chat relay.

A worker cannot reach a browser: the patient's socket lives in some `hub serve` process. So
send() pushes the message's id onto a Redis list; one `hub serve` takes it, reads the message
from the database, emits it to the patient's room (socket.io's Redis manager fans it out to
every process) and reports back like a carrier's status callback: sent, or failed with
``chat_offline`` when the patient has been away too long. Delivered and read come from the
patient's browser. Bodies never travel through the list, only ids.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from hub.channels.base import (
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
)
from hub.config import Settings
from hub.consent.exceptions import ConsentRefused
from hub.consent.schemas import Decision
from hub.enums import Channel, MessageStatus

PROVIDER = "chat"
MAX_CHAT_CHARS = 2000
"""Longest message a patient may send in the chat (longer ones are refused, nothing stored)."""
DEFAULT_CHAT_OFFLINE_S = 300.0
"""A staff reply to a patient away from the chat longer than this goes out as a short notice on
their preferred other channel, with a link back to the chat (HUB_CHAT_OFFLINE_SECONDS)."""
RELAY_KEY = "hub:chat:relay"
"""Redis list of messages waiting for a `hub serve` to emit them (LPUSH here, BRPOP there)."""
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
"""The browser's own id for a message it sends; resending the same one stores nothing new."""

OFFLINE = "chat_offline"
OFFLINE_FAILURE = FailureClass(OFFLINE, "the patient is not in the chat", transient=False)
RELAY_DOWN = FailureClass(
    "chat_relay_unreachable", "could not hand the message to the chat relay (Redis)", True
)


def classify(code: str | None) -> FailureClass:
    if code == OFFLINE:
        return OFFLINE_FAILURE
    return FailureClass(code or "chat_error", "the chat could not deliver the message", False)


class MessageTooLong(MalformedPayload):
    """The patient's message is over ``MAX_CHAT_CHARS``."""


@dataclass(frozen=True)
class ChatInbound:
    """A message a patient typed; ``client_id`` makes resending it after a reconnect safe."""

    client_id: str
    body: str

    def __repr__(self) -> str:  # the body is PHI
        return f"ChatInbound({self.client_id})"


def parse_chat_message(data: Any) -> ChatInbound:
    """The ``message`` event's payload: ``{"body": str, "client_id": str}``."""
    if not isinstance(data, dict):
        raise MalformedPayload("a message is an object with body and client_id")
    client_id, body = data.get("client_id"), data.get("body")
    if not isinstance(client_id, str) or not CLIENT_ID_RE.match(client_id):
        raise MalformedPayload("client_id must be 8 to 64 letters, digits, - or _")
    if not isinstance(body, str) or not body.strip():
        raise MalformedPayload("the message is empty")
    if len(body) > MAX_CHAT_CHARS:
        raise MessageTooLong(f"a message can be at most {MAX_CHAT_CHARS} characters")
    return ChatInbound(client_id, body.strip())


def parse_message_ref(data: Any, field: str = "message_id") -> uuid.UUID | None:
    """An optional message id in an event's payload (``read``, ``delivered``, ``history``)."""
    value = data.get(field) if isinstance(data, dict) else None
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise MalformedPayload(f"{field} is not a message id") from None


def chat_event_id(patient_id: uuid.UUID, client_id: str) -> str:
    """The inbound event key: per patient, so one patient's ids never collide with (or find)
    another's."""
    return f"{patient_id}:{client_id}"


def provider_message_id(message_id: uuid.UUID, attempt: int) -> str:
    """Known without asking anyone, so the relay and the browser can report statuses before
    the worker has recorded the send."""
    return f"{message_id}.{attempt}"


@dataclass(frozen=True)
class RelayNote:
    message_id: uuid.UUID
    attempt: int

    def encode(self) -> str:
        return provider_message_id(self.message_id, self.attempt)

    @classmethod
    def decode(cls, raw: bytes | str) -> RelayNote | None:
        text = raw.decode() if isinstance(raw, bytes) else raw
        head, _, tail = text.partition(".")
        try:
            return cls(uuid.UUID(head), int(tail))
        except ValueError:
            return None

    def status(self, status: MessageStatus, error_code: str | None = None) -> StatusUpdate:
        """The relay's report on this send, in the shape of a provider's status callback."""
        return StatusUpdate(
            PROVIDER, self.encode(), status, error_code, self.message_id, self.attempt
        )


class ChatAdapter:
    name = PROVIDER
    channel = Channel.CHAT

    def __init__(self, redis_url: str | None) -> None:
        self.redis_url = redis_url
        self._redis: Redis | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ChatAdapter:
        return cls(settings.redis_url)

    def __repr__(self) -> str:
        return "ChatAdapter()"

    # Patients write over socket.io, never through a webhook.
    def verify(self, request: WebhookRequest) -> bool:
        return False

    def parse_inbound(self, request: WebhookRequest) -> InboundMessage:
        raise UnknownEvent("web chat has no webhooks; patients write on socket.io /chat")

    def parse_status(self, request: WebhookRequest) -> StatusUpdate:
        raise UnknownEvent("web chat has no webhooks; statuses come from the chat relay")

    def classify_error(self, code: str | None) -> FailureClass:
        return classify(code)

    async def send(self, outbound: Outbound, decision: Decision) -> SendReceipt:
        if outbound.channel is not Channel.CHAT or decision.channel is not Channel.CHAT:
            raise ConsentRefused("this adapter sends web chat only", code="wrong_channel")
        if not decision.allowed:
            raise ConsentRefused(decision.reason, code=decision.code)
        if self.redis_url is None:
            raise NotConfigured("HUB_REDIS_URL must be set to send web chat messages")
        if self._redis is None:
            self._redis = Redis.from_url(self.redis_url)
        note = RelayNote(outbound.message_id, outbound.attempt)
        try:
            await self._redis.lpush(RELAY_KEY, note.encode())
        except (RedisError, OSError):
            raise SendFailed(RELAY_DOWN) from None
        # Handed to the relay, not yet to the patient: the relay reports "sent" (or offline).
        return SendReceipt(PROVIDER, note.encode(), MessageStatus.SENDING)

    async def find_sent(self, outbound: Outbound, since: datetime) -> SendReceipt | None:
        # Sending again is harmless: the browser shows each message id once.
        return None

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
