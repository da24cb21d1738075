"""Removing a template's language, where journeys have their say: the language every patient
falls back to (the shipped default, or a journey's ``fallback_language``) must stay while a
journey sends that template, or its steps would be skipped for everyone without a text in
their own language. Older versions still followed by active enrollments count too: they go on
sending their steps (``hub.journeys.versions``)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor
from hub.db import Database
from hub.journeys import lifecycle_queries as lq
from hub.journeys import queries
from hub.journeys.actions import definition_of
from hub.journeys.definitions import JourneyDefinition, parse_journey
from hub.journeys.models import Journey
from hub.templates import TemplateInvalid
from hub.templates.actions import normalize_locale
from hub.templates.editing import remove_language_in
from hub.templates.render import DEFAULT_LOCALE


async def _followed(session: AsyncSession, journey: Journey) -> list[JourneyDefinition]:
    """The current definition, and each older one active enrollments still follow."""
    found = [definition_of(journey)]
    for version in await lq.active_by_version(session, journey.id):
        if version is not None and version != journey.version:
            text = await lq.version_text(session, journey.id, version)
            if text is not None:
                found.append(parse_journey(text, f"journey {journey.key} version {version}"))
    return found


async def do_remove_template_language(
    db: Database, actor: Actor, key: str, locale: str
) -> list[str]:
    """Remove ``key``'s texts in ``locale`` (every channel); returns the channels removed.
    Raises TemplateInvalid naming the journeys that still need the language."""
    loc = normalize_locale(locale)
    async with db.transaction() as session:
        needing = []
        for journey in await queries.all_journeys(session):
            for definition in await _followed(session, journey):
                fallback = definition.fallback_language or DEFAULT_LOCALE
                if key in definition.template_keys() and loc in (DEFAULT_LOCALE, fallback):
                    needing.append(journey.name)
                    break
        if needing:
            raise TemplateInvalid(
                f"{loc} cannot be removed from {key}: the journey {', '.join(needing)} sends "
                f"this template, and patients with no text in their own language get the {loc} "
                "one. Take the template out of the journey first, or edit the text instead."
            )
        return await remove_language_in(session, actor, key, loc)
