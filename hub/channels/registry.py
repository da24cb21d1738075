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


ADAPTERS: dict[str, Callable[[Settings], ChannelAdapter]] = {
    "twilio_sms": _twilio_sms,
}
"""Adapter name -> factory. Names are stored on messages (``provider``), so never rename."""

ALIASES = {"sms": "twilio_sms", "twilio": "twilio_sms"}

CHANNEL_PROVIDERS: dict[Channel, str] = {Channel.SMS: "twilio_sms"}
"""Which adapter sends each channel; a channel missing here is not connected on this hub."""


class UnknownAdapter(HubError):
    pass


def resolve_adapter(name: str, settings: Settings) -> ChannelAdapter:
    key = ALIASES.get(name, name)
    factory = ADAPTERS.get(key)
    if factory is None:
        raise UnknownAdapter(f"no channel adapter named {name!r}; known: {', '.join(ADAPTERS)}")
    return factory(settings)
