"""Template actions: seed the shipped templates, list and edit variants, render, preview.

The send path renders with ``render_template`` inside its own transaction (or ``do_render``
outside one). A ``TemplateRenderError`` there means the send must fail with ``str(error)`` as
its reason and nothing goes out; ``TemplateMissing`` with a channel set means this channel has
no variant, so the caller may fall back to the patient's next channel.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, record
from hub.consent.models import Purpose
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import RECEIVE_ONLY, Channel
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Patient
from hub.settings_store import put_setting_in, setting_value
from hub.templates import TemplateInvalid, TemplateMissing, queries
from hub.templates.lint import (
    CLINICAL_TERMS_SETTING,
    DEFAULT_MAX_SMS_SEGMENTS,
    check_for_save,
    check_terms,
    clinical_terms,
    lint_variant,
)
from hub.templates.models import MessageTemplate, TemplateVariant
from hub.templates.render import (
    DEFAULT_LOCALE,
    Rendered,
    VariantText,
    check_variant,
    render_variant,
)
from hub.templates.segments import SegmentInfo, segment_info

SEED_DIR = "seed"
"""Folder of hub.templates holding the shipped templates, one JSON file per key."""
_LOCALE_RE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")


class PatientFields(Protocol):
    """What templates may use of a patient (``hub.inbox.schemas.PatientView`` fits)."""

    @property
    def name(self) -> str | None: ...
    @property
    def language(self) -> str: ...
    @property
    def time_zone(self) -> str: ...


@dataclass(frozen=True)
class PatientFacts:
    name: str | None
    language: str
    time_zone: str

    def __repr__(self) -> str:
        return "PatientFacts(...)"


@dataclass(frozen=True)
class VariantView:
    channel: str
    locale: str
    subject: str | None
    body: str
    html: str | None
    edited_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class TemplateView:
    key: str
    purpose: str
    description: str
    variants: list[VariantView]


@dataclass(frozen=True)
class SeedResult:
    templates_added: int
    variants_added: int


@dataclass(frozen=True)
class SavedVariant:
    variant: VariantView
    warnings: list[str]
    """Lint warnings: the variant was saved, but an admin should read these."""


@dataclass(frozen=True)
class Preview:
    """A variant rendered for one chosen patient: shows PHI, so it is audited; never log it."""

    rendered: Rendered
    locale: str
    """The variant's locale after fallback (differs from the patient's language when none)."""
    segments: SegmentInfo | None
    """SMS only."""
    warnings: list[str]

    def __repr__(self) -> str:
        return f"Preview(locale={self.locale!r}, segments={self.segments})"


def normalize_locale(tag: str) -> str:
    """ "es_mx" -> "es-MX"; raises TemplateInvalid for what is not a language tag."""
    parts = tag.strip().replace("_", "-").lower()
    if not _LOCALE_RE.match(parts):
        raise TemplateInvalid(f"{tag!r} is not a locale; use a language code such as en or es-MX")
    head, *rest = parts.split("-")
    return "-".join([head, *(p.upper() if len(p) == 2 else p for p in rest)])


def locale_chain(language: str | None, default_locale: str = DEFAULT_LOCALE) -> list[str]:
    """Locales to try, best first: "es-MX" -> ["es-MX", "es", "en"]."""
    chain: list[str] = []
    if language:
        try:
            tag = normalize_locale(language)
        except TemplateInvalid:
            tag = ""
        parts = tag.split("-") if tag else []
        chain += ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]
    chain.append(normalize_locale(default_locale))
    return list(dict.fromkeys(chain))


def template_context(
    patient: PatientFields,
    appointment: Mapping[str, Any] | None,
    clinic: Mapping[str, Any],
    *,
    links: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The variables a template sees; each key receives only what it declares in
    ``hub.templates.variables`` (the list the save check uses). ``None`` or absent means
    unknown: a template using it fails unless it says ``| default(...)`` or ``is defined``.

    - ``patient.first_name``, ``patient.name``: from the patient's (decrypted) name
    - ``appointment.start`` (aware datetime; format with ``| date``, ``| time``,
      ``| datetime``), ``appointment.end``, ``appointment.location``, ``appointment.provider``
      and any other keys the caller gives
    - ``clinic.name``, ``clinic.phone``, ``clinic.address``, ``clinic.website``: as given
    - ``links.*``: URLs the caller made (``links.chat``, ``links.survey``...)
    - ``tz`` (the patient's IANA zone; the clinic's ``time_zone`` if the patient has none) and
      ``locale`` (the patient's language), used by the date filters
    """
    name = " ".join((patient.name or "").split())
    return {
        "patient": {"first_name": name.split()[0] if name else None, "name": name or None},
        "appointment": None if appointment is None else dict(appointment),
        "clinic": dict(clinic),
        "links": dict(links or {}),
        "tz": patient.time_zone or clinic.get("time_zone") or "UTC",
        "locale": patient.language,
    }


def _channel(value: str) -> Channel:
    sendable = [c.value for c in Channel if c not in RECEIVE_ONLY]
    if value not in sendable:
        # A template is something the hub sends: a receive-only channel has none.
        raise TemplateInvalid(
            f"unknown channel {value!r}; expected {', '.join(sendable[:-1])} or {sendable[-1]}"
        )
    return Channel(value)


def _text(key: str, variant: TemplateVariant) -> VariantText:
    return VariantText(
        key, variant.channel.value, variant.locale, variant.body, variant.subject, variant.html
    )


def _view(variant: TemplateVariant) -> VariantView:
    return VariantView(
        variant.channel.value,
        variant.locale,
        variant.subject,
        variant.body,
        variant.html,
        variant.edited_at,
        variant.updated_at,
    )


def _lines(value: Any) -> str | None:
    """Seed files may write long texts as a list of lines."""
    return "\n".join(value) if isinstance(value, list) else value


def load_seed() -> list[dict[str, Any]]:
    """The shipped templates, validated (a bad seed file is a bug: ValueError names it)."""
    seeds = []
    for entry in sorted(resources.files("hub.templates").joinpath(SEED_DIR).iterdir(), key=str):
        if not entry.name.endswith(".json"):
            continue
        data = json.loads(entry.read_text(encoding="utf-8"))
        try:
            Purpose(data["purpose"])
            for v in data["variants"]:
                v.update(subject=_lines(v.get("subject")), body=_lines(v["body"]))
                v["html"] = _lines(v.get("html"))
                v["locale"] = normalize_locale(v["locale"])
                check_variant(_channel(v["channel"]).value, v["subject"], v["body"], v["html"])
        except (KeyError, ValueError, TemplateInvalid) as exc:
            raise ValueError(f"seed template {entry.name}: {exc}") from None
        seeds.append(data)
    return seeds


async def _seed(session: AsyncSession, seeds: list[dict[str, Any]]) -> SeedResult:
    existing = {t.key: t for t in await queries.all_templates(session)}
    templates_added = variants_added = 0
    for seed in seeds:
        template = existing.get(seed["key"])
        if template is None:
            template = MessageTemplate(
                key=seed["key"],
                purpose=Purpose(seed["purpose"]),
                description=seed.get("description", ""),
            )
            session.add(template)
            templates_added += 1
        have = {(v.channel.value, v.locale) for v in template.variants}
        for v in seed["variants"]:
            if (v["channel"], v["locale"]) in have:
                continue  # present, maybe edited by the clinic: never overwritten
            template.variants.append(
                TemplateVariant(
                    channel=Channel(v["channel"]),
                    locale=v["locale"],
                    subject=v["subject"],
                    body=v["body"],
                    html=v["html"],
                )
            )
            variants_added += 1
    await session.flush()
    return SeedResult(templates_added, variants_added)


async def do_seed_templates(db: Database) -> SeedResult:
    """Insert shipped templates and variants the database lacks; idempotent, and never changes
    an existing row. Safe to run from several processes at once (the loser retries)."""
    seeds = load_seed()
    try:
        async with db.transaction() as session:
            return await _seed(session, seeds)
    except IntegrityError:
        async with db.transaction() as session:
            return await _seed(session, seeds)


async def do_list_templates(db: Database) -> list[TemplateView]:
    async with db.reader() as session:
        return [
            TemplateView(t.key, t.purpose.value, t.description, [_view(v) for v in t.variants])
            for t in await queries.all_templates(session)
        ]


async def do_save_variant(
    db: Database,
    actor: Actor,
    key: str,
    channel: str,
    locale: str,
    subject: str | None,
    body: str,
    html: str | None,
    *,
    max_segments: int = DEFAULT_MAX_SMS_SEGMENTS,
) -> SavedVariant:
    """Create or replace one variant after the save check (``hub.templates.lint``: its
    variables, filters and tests, and a trial render with optional variables missing);
    audited (no text in the event). Raises TemplateInvalid naming what is wrong."""
    ch, loc = _channel(channel), normalize_locale(locale)
    # A browser posts a textarea's lines with CRLF; a CR would cost an SMS character.
    body = body.replace("\r\n", "\n")
    subject = subject.replace("\r\n", "\n") if subject and subject.strip() else None
    html = html.replace("\r\n", "\n") if html and html.strip() else None
    async with db.transaction() as session:
        template = await queries.template_by_key(session, key, for_update=True)
        if template is None:
            raise TemplateMissing(key, None, f"no template named {key!r}")
        check_for_save(key, ch.value, loc, subject, body, html)
        terms = clinical_terms(await setting_value(session, CLINICAL_TERMS_SETTING))
        variant = await queries.variant_for_update(session, template, ch, loc)
        if variant is None:
            variant = TemplateVariant(template_id=template.id, channel=ch, locale=loc)
            session.add(variant)
        now = utcnow()
        variant.subject, variant.body, variant.html = subject, body, html
        variant.edited_at = variant.updated_at = template.updated_at = now
        await session.flush()
        await record(
            session,
            actor,
            "template.variant.save",
            "template",
            template.id,
            {"channel": ch.value, "locale": loc},
        )
    return SavedVariant(
        _view(variant),
        lint_variant(key, ch.value, body, max_segments=max_segments, terms=terms),
    )


async def do_get_clinical_terms(db: Database) -> list[str]:
    """The terms the clinic added to the shipped clinical-words list (lint.py)."""
    async with db.reader() as session:
        stored = await setting_value(session, CLINICAL_TERMS_SETTING)
    return list(stored) if isinstance(stored, list) else []


async def do_set_clinical_terms(db: Database, actor: Actor, value: object) -> list[str]:
    """Replace the clinic's own clinical terms (a list, or text with one term a line);
    audited with the count only. Raises TemplateInvalid."""
    terms = check_terms(value)
    async with db.transaction() as session:
        await put_setting_in(session, CLINICAL_TERMS_SETTING, terms)
        await record(
            session,
            actor,
            "template.clinical_terms.update",
            "hub_setting",
            CLINICAL_TERMS_SETTING,
            {"terms": len(terms)},
        )
    return terms


async def find_variant(
    session: AsyncSession,
    key: str,
    channel: str,
    language: str | None,
    *,
    default_locale: str = DEFAULT_LOCALE,
) -> VariantText:
    """The variant for the patient's language, else its base language, else the clinic default.

    Raises TemplateMissing: ``channel`` is None when the key itself is unknown.
    """
    ch, chain = _channel(channel), locale_chain(language, default_locale)
    found = {v.locale: v for v in await queries.variants_in(session, key, ch, chain)}
    for locale in chain:
        if locale in found:
            return _text(key, found[locale])
    if await queries.template_by_key(session, key) is None:
        raise TemplateMissing(key, None, f"no template named {key!r}; run `hub migrate`")
    raise TemplateMissing(
        key, ch.value, f"template {key} has no {ch.value} variant in {', '.join(chain)}"
    )


async def render_template(
    session: AsyncSession,
    key: str,
    channel: str,
    context: Mapping[str, Any],
    *,
    default_locale: str = DEFAULT_LOCALE,
) -> Rendered:
    """Render for a send inside the caller's transaction; the language is ``context["locale"]``.

    Raises TemplateMissing (no such variant) or TemplateRenderError (fail the send with it).
    """
    language = context.get("locale")
    variant = await find_variant(
        session,
        key,
        channel,
        language if isinstance(language, str) else None,
        default_locale=default_locale,
    )
    return render_variant(variant, context)


async def do_render(
    db: Database,
    key: str,
    channel: str,
    locale: str | None,
    context: Mapping[str, Any],
    *,
    default_locale: str = DEFAULT_LOCALE,
) -> Rendered:
    """``render_template`` in a read-only session, for ``locale`` (the patient's language)."""
    async with db.reader() as session:
        variant = await find_variant(session, key, channel, locale, default_locale=default_locale)
    return render_variant(variant, {"locale": locale, **context})


async def do_preview(
    db: Database,
    ring: KeyRing,
    actor: Actor,
    key: str,
    channel: str,
    patient_id: uuid.UUID,
    sample_appointment: Mapping[str, Any] | None,
    *,
    clinic: Mapping[str, Any],
    links: Mapping[str, Any] | None = None,
    default_locale: str = DEFAULT_LOCALE,
    max_segments: int = DEFAULT_MAX_SMS_SEGMENTS,
) -> Preview:
    """Render a variant for a chosen patient as a person will see it. The patient's name is
    decrypted and shown, so the preview is audited ("template.preview", subject the patient;
    the detail holds the template key, channel and locale, no text). A render error raises
    and audits nothing, since nothing of the patient was shown."""
    async with db.transaction() as session:
        patient = await session.get(Patient, patient_id)
        if patient is None:
            raise NotFound("no such patient")
        facts = PatientFacts(patient.unseal(ring, "name"), patient.language, patient.time_zone)
        variant = await find_variant(
            session, key, channel, patient.language, default_locale=default_locale
        )
        context = template_context(facts, sample_appointment, clinic, links=links)
        rendered = render_variant(variant, context)
        terms = clinical_terms(await setting_value(session, CLINICAL_TERMS_SETTING))
        await record(
            session,
            actor,
            "template.preview",
            "patient",
            patient.id,
            {"template": key, "channel": variant.channel, "locale": variant.locale},
        )
    is_sms = variant.channel == Channel.SMS.value
    warnings = lint_variant(
        key,
        variant.channel,
        variant.body,
        rendered=rendered.body if is_sms else None,
        max_segments=max_segments,
        terms=terms,
    )
    return Preview(
        rendered, variant.locale, segment_info(rendered.body) if is_sms else None, warnings
    )
