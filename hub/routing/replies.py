"""The text of an automatic answer (after hours, urgent) in the patient's language.

For each locale of the patient's chain, best first ("es-MX" -> es-MX, es, then the clinic's
default): the clinic's own text for that locale wins, then the seeded translation of the
template for that locale and channel. So a clinic that wrote its after-hours text in English
only still answers a Spanish-speaking patient in Spanish (the seeded translation), and a
clinic that wrote a Spanish text has it used. Only when neither exists in any of the
patient's locales does the clinic default's text go out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.enums import Channel
from hub.errors import HubError
from hub.routing.rules import ReplyNotRendered, render_reply
from hub.templates.actions import find_variant, locale_chain
from hub.templates.render import render_variant

AFTER_HOURS_TEMPLATE = "after_hours"
"""Seeded template with the after-hours notice in every shipped language and channel."""
URGENT_TEMPLATE = "urgent_reply"
"""Seeded template with the emergency answer to an urgent message."""


@dataclass(frozen=True)
class AutoReply:
    """What an automatic answer says (PHI: it may carry the patient's name) and where it came
    from ("custom:es", "template:es"): the source, never the text, may be logged."""

    body: str
    source: str

    def __repr__(self) -> str:
        return f"AutoReply(source={self.source!r})"


async def localized_reply(
    session: AsyncSession,
    *,
    template: str,
    custom: Mapping[str, str],
    language: str | None,
    channel: Channel,
    first_name: str,
    clinic_name: str,
    context: Mapping[str, Any],
) -> AutoReply | None:
    """The answer for ``language`` on ``channel``, or None when there is none to send.

    ``custom``: the clinic's own texts by locale (placeholders ``{{ first_name }}`` and
    ``{{ clinic_name }}``). ``context``: the template context (hub.templates.actions
    .template_context) for the seeded translations. A custom text that does not render is
    passed over for the next candidate rather than sending nothing.
    """
    problems: list[str] = []
    for locale in locale_chain(language):
        text = custom.get(locale)
        if text:
            try:
                body = render_reply(text, first_name=first_name, clinic_name=clinic_name)
                return AutoReply(body, f"custom:{locale}")
            except ReplyNotRendered as exc:
                problems.append(f"custom {locale}: {exc}")
        try:
            variant = await find_variant(
                session, template, channel.value, locale, default_locale=locale
            )
        except HubError:
            continue
        if variant.locale != locale:
            continue  # the base language's variant: its own turn in the chain comes next
        try:
            rendered = render_variant(variant, {**context, "locale": locale})
        except HubError as exc:
            problems.append(f"template {locale}: {exc}")
            continue
        return AutoReply(rendered.body, f"template:{locale}")
    if problems:
        raise ReplyNotRendered("; ".join(problems))
    return None
