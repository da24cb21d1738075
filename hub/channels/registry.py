"""Adapters by name: a dict of factories and ``resolve_adapter``."""

from __future__ import annotations

from collections.abc import Callable

from hub.channels.base import ChannelAdapter
from hub.config import Settings
from hub.enums import Channel
from hub.errors import HubError


def _twilio_sms(settings: Settings) -> ChannelAdapter:
    from hub.channels.twilio_sms.adapter import TwilioSmsAdapter

    return TwilioSmsAdapter.from_settings(settings)


def _email_smtp(settings: Settings) -> ChannelAdapter:
    from hub.channels.email_smtp.adapter import EmailSmtpAdapter

    return EmailSmtpAdapter.from_settings(settings)


ADAPTERS: dict[str, Callable[[Settings], ChannelAdapter]] = {
    "twilio_sms": _twilio_sms,
    "email_smtp": _email_smtp,
}
"""Adapter name -> factory. Names are stored on messages (``provider``), so never rename."""

ALIASES = {"sms": "twilio_sms", "twilio": "twilio_sms", "email": "email_smtp"}

CHANNEL_PROVIDERS: dict[Channel, str] = {Channel.SMS: "twilio_sms", Channel.EMAIL: "email_smtp"}
"""Which adapter sends each channel."""


def connected_providers(settings: Settings) -> dict[Channel, str]:
    """The channels this hub can send on, and their adapters. SMS is always offered (a send
    without Twilio credentials fails with that reason); email only once SMTP is configured,
    so the gate and the reply box pass over it with "not connected" instead."""
    connected = {Channel.SMS: CHANNEL_PROVIDERS[Channel.SMS]}
    if settings.email_connected:
        connected[Channel.EMAIL] = CHANNEL_PROVIDERS[Channel.EMAIL]
    return connected


class UnknownAdapter(HubError):
    pass


def resolve_adapter(name: str, settings: Settings) -> ChannelAdapter:
    key = ALIASES.get(name, name)
    factory = ADAPTERS.get(key)
    if factory is None:
        raise UnknownAdapter(f"no channel adapter named {name!r}; known: {', '.join(ADAPTERS)}")
    return factory(settings)
