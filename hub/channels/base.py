"""The ChannelAdapter protocol, the data crossing it, and its errors."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from hub.consent.schemas import Decision
from hub.enums import Channel, MessageStatus
from hub.errors import HubError


@dataclass(frozen=True)
class InboundMedia:
    url: str
    content_type: str


@dataclass(frozen=True)
class InboundMessage:
    provider: str
    provider_message_id: str
    channel: Channel
    from_address: str
    """Normalised (E.164 for phones)."""
    to_address: str
    body: str
    media: tuple[InboundMedia, ...] = ()
    account_id: str | None = None
    service_id: str | None = None

    def __repr__(self) -> str:  # addresses and body are PHI
        return f"InboundMessage({self.provider}, {self.provider_message_id})"


@dataclass(frozen=True)
class StatusUpdate:
    provider: str
    provider_message_id: str
    status: MessageStatus
    error_code: str | None = None
    hub_message_id: uuid.UUID | None = None
    """From our own callback URL, so a callback that beats the send's response still matches."""
    attempt: int | None = None


@dataclass(frozen=True)
class OutboundFile:
    """A file staff attached to a reply, sent by email as a MIME part."""

    filename: str
    content_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Outbound:
    message_id: uuid.UUID
    attempt: int
    channel: Channel
    to_address: str
    body: str
    from_address: str | None = None
    status_callback_url: str | None = None
    media_urls: tuple[str, ...] = ()
    """SMS only: signed links Twilio fetches the attached files from (MMS)."""
    attachments: tuple[OutboundFile, ...] = ()
    """Email only: the attached files themselves."""
    # Email only (other channels ignore them):
    subject: str | None = None
    html: str | None = None
    reply_to: str | None = None
    """``reply+<token>@HUB_REPLY_DOMAIN``: answers thread back by the signed token."""
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    automated: bool = False
    """Clinic-initiated (a journey step, an auto-reply): marked Auto-Submitted."""
    unsubscribe_url: str | None = None
    """RFC 8058 one-click link, for journey and survey mail."""

    def __repr__(self) -> str:
        return f"Outbound({self.message_id}, attempt={self.attempt})"


@dataclass(frozen=True)
class SendReceipt:
    provider: str
    provider_message_id: str
    status: MessageStatus


class FailureEffect(enum.StrEnum):
    NONE = "none"
    REVOKE_CONSENT = "revoke_consent"
    """The recipient unsubscribed at the carrier: record the opt-out."""
    UNREACHABLE = "unreachable"
    """The address cannot receive this channel (landline): journeys fall back."""


@dataclass(frozen=True)
class FailureClass:
    code: str
    reason: str
    transient: bool
    effect: FailureEffect = FailureEffect.NONE
    unreachable_reason: str | None = None
    answer_lost: bool = False
    """The request may have reached the provider and only its answer was lost (a timeout or a
    dropped connection after sending): sending again could message the patient twice, so the
    attempt is left open for the stuck-send check, which asks the provider first."""


class ChannelError(HubError):
    """Base for adapter errors."""


class MalformedPayload(ChannelError):
    """A webhook that cannot be what the provider sends; the message says which field."""


class UnknownEvent(ChannelError):
    """A webhook event type this adapter does not handle."""


class SendFailed(ChannelError):
    def __init__(self, failure: FailureClass) -> None:
        self.failure = failure
        super().__init__(f"{failure.code}: {failure.reason}")


class NotConfigured(ChannelError):
    """The provider's credentials are not set."""


MAX_ATTEMPT = 2**31 - 1
"""Attempt numbers are 32-bit integers in the database; a callback URL naming a larger one is
damaged (or forged by someone holding the provider's token), not a lookup to try."""


def attempt_number(raw: str) -> int:
    """The attempt number of a callback URL the hub built (``a=``); ValueError if damaged."""
    attempt = int(raw)
    if not 1 <= attempt <= MAX_ATTEMPT:
        raise ValueError(f"attempt {attempt} is out of range")
    return attempt


@dataclass(frozen=True)
class WebhookRequest:
    url: str
    """The public URL the provider posted to (HUB_PUBLIC_URL + path + query)."""
    params: Mapping[str, str]
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)


class ChannelAdapter(Protocol):
    name: str
    channel: Channel

    def verify(self, request: WebhookRequest) -> bool: ...

    def parse_inbound(self, request: WebhookRequest) -> InboundMessage: ...

    def parse_status(self, request: WebhookRequest) -> StatusUpdate: ...

    def classify_error(self, code: str | None) -> FailureClass: ...

    async def send(self, outbound: Outbound, decision: Decision) -> SendReceipt:
        """Hand one message to the provider. ``decision`` must allow this patient and channel:
        there is no way to call a provider without one."""
        ...

    async def find_sent(self, outbound: Outbound, since: datetime) -> SendReceipt | None:
        """Ask the provider whether it accepted ``outbound`` at or after ``since`` (its sender
        died before recording the answer). None means it did not: sending again is safe."""
        ...

    async def close(self) -> None: ...
