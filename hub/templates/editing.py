"""The template editor's actions: try a text as it is typed, revert a variant to the shipped
text, remove a language.

Trying is pure (synthetic sample values, nothing written): the editor calls it on every pause
in typing, so it runs the very check saving runs (``check_for_save``) and the same lint, and
what it shows is what a save would say. Adding a language needs no action of its own: the
editor offers the default language's texts as a draft and each channel is saved through
``do_save_variant``, so an untranslated copy is never stored on the clinic's behalf.

Removing a language lives here as ``remove_language_in`` only: whether a journey still needs
it is the journeys' rule (``hub.journeys.template_languages``), which opens the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, record
from hub.db import Database
from hub.enums import Channel
from hub.settings_store import setting_value
from hub.templates import TemplateInvalid, TemplateMissing, TemplateRenderError, queries
from hub.templates.actions import _channel, load_seed, normalize_locale
from hub.templates.lint import (
    CLINICAL_TERMS_SETTING,
    DEFAULT_MAX_SMS_SEGMENTS,
    check_for_save,
    clinical_terms,
    lint_variant,
)
from hub.templates.models import TemplateVariant
from hub.templates.render import Rendered, VariantText, render_variant
from hub.templates.segments import SegmentInfo, segment_info
from hub.templates.variables import declared_for


@dataclass(frozen=True)
class Trial:
    """What saving this text would say, and how it reads with the synthetic sample values."""

    rendered: Rendered | None
    segments: SegmentInfo | None
    """SMS only, measured on the rendered sample."""
    error: TemplateInvalid | None
    """Why a save would refuse the text (None: it would be saved)."""
    warnings: list[str] = field(default_factory=list)


def try_variant(
    key: str,
    channel: str,
    locale: str,
    subject: str | None,
    body: str,
    html: str | None,
    *,
    terms: tuple[str, ...],
    max_segments: int = DEFAULT_MAX_SMS_SEGMENTS,
) -> Trial:
    """Check and render a draft as ``do_save_variant`` would, with the key's sample values."""
    body = body.replace("\r\n", "\n")
    subject = subject if subject and subject.strip() else None
    html = html if html and html.strip() else None
    try:
        check_for_save(key, channel, locale, subject, body, html)
    except TemplateInvalid as exc:
        return Trial(None, None, exc)
    context = {**declared_for(key).sample(), "locale": locale}
    try:
        rendered = render_variant(VariantText(key, channel, locale, body, subject, html), context)
    except TemplateRenderError as exc:  # the save check renders the same: kept as a guard
        return Trial(None, None, TemplateInvalid(str(exc), line=exc.line))
    is_sms = channel == Channel.SMS.value
    warnings = lint_variant(
        key,
        channel,
        body,
        rendered=rendered.body if is_sms else None,
        max_segments=max_segments,
        terms=terms,
    )
    return Trial(rendered, segment_info(rendered.body) if is_sms else None, None, warnings)


async def do_try_variant(
    db: Database,
    key: str,
    channel: str,
    locale: str,
    subject: str | None,
    body: str,
    html: str | None,
) -> Trial:
    """``try_variant`` with the clinic's clinical words; reads only, writes nothing."""
    ch = _channel(channel)
    async with db.reader() as session:
        if await queries.template_by_key(session, key) is None:
            raise TemplateMissing(key, None, f"no template named {key!r}")
        terms = clinical_terms(await setting_value(session, CLINICAL_TERMS_SETTING))
    return try_variant(key, ch.value, normalize_locale(locale), subject, body, html, terms=terms)


def shipped_pairs(key: str) -> frozenset[tuple[str, str]]:
    """(channel, locale) of every variant the hub ships for ``key``: those can be reverted."""
    return frozenset(
        (v["channel"], v["locale"]) for s in load_seed() if s["key"] == key for v in s["variants"]
    )


def shipped_variant(key: str, channel: str, locale: str) -> dict[str, str | None] | None:
    """The shipped text of one variant (hub/templates/seed), None when the hub ships none."""
    for seed in load_seed():
        if seed["key"] != key:
            continue
        for v in seed["variants"]:
            if (v["channel"], v["locale"]) == (channel, locale):
                return {"subject": v["subject"], "body": v["body"], "html": v["html"]}
    return None


async def do_revert_variant(
    db: Database, actor: Actor, key: str, channel: str, locale: str
) -> None:
    """Put the shipped text back in place of the clinic's edit; audited (no text)."""
    ch, loc = _channel(channel), normalize_locale(locale)
    shipped = shipped_variant(key, ch.value, loc)
    if shipped is None:
        raise TemplateInvalid(
            f"{key} ({ch.value}, {loc}) was written by the clinic, so there is no shipped text "
            "to go back to; edit it, or remove the language"
        )
    async with db.transaction() as session:
        template = await queries.template_by_key(session, key, for_update=True)
        if template is None:
            raise TemplateMissing(key, None, f"no template named {key!r}")
        variant = await queries.variant_for_update(session, template, ch, loc)
        if variant is None:
            # Removed with its language earlier: the shipped text brings it back.
            variant = TemplateVariant(template_id=template.id, channel=ch, locale=loc)
            session.add(variant)
        variant.subject, variant.body, variant.html = (
            shipped["subject"],
            shipped["body"] or "",
            shipped["html"],
        )
        variant.edited_at = None  # shipped text again: seeding may update it in later versions
        await session.flush()
        await record(
            session,
            actor,
            "template.variant.revert",
            "template",
            template.id,
            {"channel": ch.value, "locale": loc},
        )


async def remove_language_in(
    session: AsyncSession, actor: Actor, key: str, locale: str
) -> list[str]:
    """Delete every channel's text of ``key`` in ``locale`` inside the caller's transaction;
    returns the channels removed. Audited (no text)."""
    loc = normalize_locale(locale)
    template = await queries.template_by_key(session, key, for_update=True)
    if template is None:
        raise TemplateMissing(key, None, f"no template named {key!r}")
    variants = await queries.variants_of_locale(session, template, loc)
    if not variants:
        raise TemplateInvalid(f"{key} has no text in {loc}; nothing was removed")
    channels = sorted(v.channel.value for v in variants)
    for variant in variants:
        await session.delete(variant)
    await session.flush()
    await record(
        session,
        actor,
        "template.language.remove",
        "template",
        template.id,
        {"locale": loc, "channels": channels},
    )
    return channels
