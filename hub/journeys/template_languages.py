"""Removing a template's language, where journeys have their say: the language every patient
falls back to (the shipped default, or a journey's ``fallback_language``) must stay while a
journey sends that template, or its steps would be skipped for everyone without a text in
their own language."""

from __future__ import annotations

from hub.audit import Actor
from hub.db import Database
from hub.journeys import queries
from hub.journeys.actions import definition_of
from hub.templates import TemplateInvalid
from hub.templates.actions import normalize_locale
from hub.templates.editing import remove_language_in
from hub.templates.render import DEFAULT_LOCALE


async def do_remove_template_language(
    db: Database, actor: Actor, key: str, locale: str
) -> list[str]:
    """Remove ``key``'s texts in ``locale`` (every channel); returns the channels removed.
    Raises TemplateInvalid naming the journeys that still need the language."""
    loc = normalize_locale(locale)
    async with db.transaction() as session:
        needing = []
        for journey in await queries.all_journeys(session):
            definition = definition_of(journey)
            fallback = definition.fallback_language or DEFAULT_LOCALE
            if key in definition.template_keys() and loc in (DEFAULT_LOCALE, fallback):
                needing.append(journey.name)
        if needing:
            raise TemplateInvalid(
                f"{loc} cannot be removed from {key}: the journey {', '.join(needing)} sends "
                f"this template, and patients with no text in their own language get the {loc} "
                "one. Take the template out of the journey first, or edit the text instead."
            )
        return await remove_language_in(session, actor, key, loc)
