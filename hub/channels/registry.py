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


def _twilio_voice(settings: Settings) -> ChannelAdapter:
    from hub.channels.twilio_voice.adapter import TwilioVoiceAdapter

    return TwilioVoiceAdapter.from_settings(settings)


def _email_smtp(settings: Settings) -> ChannelAdapter:
    from hub.channels.email_smtp.adapter import EmailSmtpAdapter

    return EmailSmtpAdapter.from_settings(settings)


def _chat(settings: Settings) -> ChannelAdapter:
    from hub.channels.chat.adapter import ChatAdapter

    return ChatAdapter.from_settings(settings)


ADAPTERS: dict[str, Callable[[Settings], ChannelAdapter]] = {
    "chat": _chat,
    "twilio_sms": _twilio_sms,
    "twilio_voice": _twilio_voice,
    "email_smtp": _email_smtp,
}
"""Adapter name -> factory. Names are stored on messages (``provider``), so never rename."""

ALIASES = {
    "sms": "twilio_sms",
    "twilio": "twilio_sms",
    "voice": "twilio_voice",
    "email": "email_smtp",
}

CHANNEL_PROVIDERS: dict[Channel, str] = {
    Channel.SMS: "twilio_sms",
    Channel.VOICE: "twilio_voice",
    Channel.EMAIL: "email_smtp",
    Channel.CHAT: "chat",
}
"""Which adapter sends each channel."""


def connected_providers(settings: Settings) -> dict[Channel, str]:
    """The channels this hub can send on, and their adapters. SMS is always offered (a send
    without Twilio credentials fails with that reason); email only once SMTP is configured,
    and calls only with Twilio credentials and a number to call from (a Messaging Service
    cannot place calls), so the gate and the reply box pass over them with "not connected"
    instead."""
    connected = {Channel.SMS: CHANNEL_PROVIDERS[Channel.SMS]}
    if settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from_number:
        connected[Channel.VOICE] = CHANNEL_PROVIDERS[Channel.VOICE]
    if settings.email_connected:
        connected[Channel.EMAIL] = CHANNEL_PROVIDERS[Channel.EMAIL]
    # Web chat needs no provider: the hub itself is the chat server.
    connected[Channel.CHAT] = CHANNEL_PROVIDERS[Channel.CHAT]
    return connected


class UnknownAdapter(HubError):
    pass


def resolve_adapter(name: str, settings: Settings) -> ChannelAdapter:
    key = ALIASES.get(name, name)
    factory = ADAPTERS.get(key)
    if factory is None:
        raise UnknownAdapter(f"no channel adapter named {name!r}; known: {', '.join(ADAPTERS)}")
    return factory(settings)
