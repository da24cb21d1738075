"""The template editor (admins only): a list of templates to search, then one template at a
time with its channels and languages, a live preview with sample values as one types, and
revert / add / remove a language. Every check is the save's own (hub.templates)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from hub.audit import Actor
from hub.errors import HubError
from hub.inbox.actions import listing
from hub.journeys.template_languages import do_remove_template_language
from hub.templates import TemplateInvalid
from hub.templates.actions import (
    TemplateView,
    do_get_clinical_terms,
    do_list_templates,
    do_preview,
    do_save_variant,
    do_set_clinical_terms,
    normalize_locale,
)
from hub.templates.editing import (
    Trial,
    do_revert_variant,
    do_try_variant,
    shipped_pairs,
    try_variant,
)
from hub.templates.lint import DEFAULT_CLINICAL_TERMS, clinical_terms
from hub.templates.render import DEFAULT_LOCALE
from web.admin import language_name
from web.auth import current
from web.keys import DB, RING, SETTINGS
from web.render import redirect_with, render

CHANNELS = ("sms", "email", "voice", "chat")
"""The channels a template has texts for, in the order the editor shows them."""


def _admin(request: web.Request) -> Actor:
    ctx = current(request)
    if not ctx.is_admin:
        raise web.HTTPNotFound()
    return ctx.actor


def _matches(t: TemplateView, q: str, channel: str, language: str, changed: bool) -> bool:
    variants = [
        v
        for v in t.variants
        if (not channel or v.channel == channel) and (not language or v.locale == language)
    ]
    if q and q.casefold() not in f"{t.key} {t.description}".casefold():
        return False
    if (channel or language) and not variants:
        return False
    return not changed or any(v.edited_at for v in variants or t.variants)


async def templates_page(request: web.Request, *, status: int = 200, **extra: Any) -> web.Response:
    """The list: search by name, filter by channel, language and "changed from shipped"."""
    _admin(request)
    db = request.app[DB]
    q = request.query.get("q", "").strip()
    channel = request.query.get("channel", "")
    language = request.query.get("language", "")
    changed = request.query.get("changed") == "1"
    templates = await do_list_templates(db)
    shown = [t for t in templates if _matches(t, q, channel, language, changed)]
    languages = sorted({v.locale for t in templates for v in t.variants})
    return render(
        request,
        "admin_templates.html",
        status=status,
        nav="admin",
        templates=shown,
        total=len(templates),
        filters={"q": q, "channel": channel, "language": language, "changed": changed},
        channels=CHANNELS,
        languages=languages,
        language_names={lang: language_name(lang) for lang in languages},
        shipped_terms=DEFAULT_CLINICAL_TERMS,
        clinic_terms=extra.pop("clinic_terms", None) or await do_get_clinical_terms(db),
        terms_error=extra.pop("terms_error", None),
    )


def _trials(
    template: TemplateView, refused: dict[str, Any] | None, terms: tuple[str, ...]
) -> dict[tuple[str, str], Trial]:
    """Each variant tried with the sample values, as the live preview will show it."""
    trials = {}
    for v in template.variants:
        mine = (
            refused
            if refused
            and (refused["channel"], refused["locale"])
            == (
                v.channel,
                v.locale,
            )
            else None
        )
        text = mine or {"subject": v.subject, "body": v.body, "html": v.html}
        trials[(v.channel, v.locale)] = try_variant(
            template.key,
            v.channel,
            v.locale,
            text["subject"],
            text["body"],
            text["html"],
            terms=terms,
        )
    return trials


async def _template_page(
    request: web.Request, key: str, *, status: int = 200, **extra: Any
) -> web.Response:
    db = request.app[DB]
    template = next((t for t in await do_list_templates(db) if t.key == key), None)
    if template is None:
        raise web.HTTPNotFound()
    # Patients to preview with: the newest conversations (a PHI view, audited as a list).
    page = await listing.do_list_inbox(
        db, request.app[RING], current(request), listing.InboxFilters(status="any"), limit=30
    )
    terms = clinical_terms(await do_get_clinical_terms(db))
    adding = None
    wanted = request.query.get("add", "").strip()
    if wanted:
        try:
            adding = normalize_locale(wanted)
        except TemplateInvalid as exc:
            extra.setdefault("add_error", str(exc))
        if adding and any(v.locale == adding for v in template.variants):
            extra.setdefault("add_error", f"{template.key} already has texts in {adding}")
            adding = None
    locales = sorted({v.locale for t in [template] for v in t.variants})
    base = [v for v in template.variants if v.locale == DEFAULT_LOCALE] or template.variants
    values: dict[str, Any] = {"preview": None, "chosen": None, "refused": None}
    values.update(extra)
    return render(
        request,
        "admin_template.html",
        status=status,
        nav="admin",
        t=template,
        locales=locales,
        language_names={lang: language_name(lang) for lang in [*locales, adding or ""] if lang},
        default_locale=DEFAULT_LOCALE,
        shipped=shipped_pairs(key),
        trials=_trials(template, values["refused"], terms),
        adding=adding,
        drafts=[v for v in base if adding] if adding else [],
        patients=page.rows,
        **values,
    )


async def template_page(request: web.Request) -> web.Response:
    _admin(request)
    return await _template_page(request, request.match_info["key"])


async def save_template_variant(request: web.Request) -> web.StreamResponse:
    actor = _admin(request)
    form = await request.post()
    typed = {
        name: str(form.get(name, ""))
        for name in ("key", "channel", "locale", "subject", "body", "html")
    }
    back = f"/admin/templates/{typed['key']}"
    try:
        saved = await do_save_variant(
            request.app[DB],
            actor,
            typed["key"],
            typed["channel"],
            typed["locale"],
            typed["subject"] or None,
            typed["body"],
            typed["html"] or None,
        )
    except TemplateInvalid as exc:
        # The page again, with what the admin typed still in its form and the reason beside
        # it: a redirect would lose the text they were fixing.
        refused = {**typed, "error": f"Not saved: {exc}", "line": exc.line}
        return await _template_page(request, typed["key"], status=422, refused=refused)
    except (HubError, ValueError) as exc:
        raise redirect_with("/admin/templates", "error", f"Not saved: {exc}") from None
    note = "Saved." + (" Warnings: " + "; ".join(saved.warnings) if saved.warnings else "")
    anchor = f"#variant-{typed['key']}-{saved.variant.channel}-{saved.variant.locale}"
    raise redirect_with(back + anchor, "warn" if saved.warnings else "ok", note)


async def try_template(request: web.Request) -> web.Response:
    """The live preview (htmx, on a pause in typing): the sample rendering, the SMS segments,
    the lint, and the reason a save would refuse the text. Reads only."""
    _admin(request)
    key = request.match_info["key"]
    form = await request.post()
    channel, locale = str(form.get("channel", "")), str(form.get("locale", ""))
    try:
        trial = await do_try_variant(
            request.app[DB],
            key,
            channel,
            locale,
            str(form.get("subject", "")) or None,
            str(form.get("body", "")),
            str(form.get("html", "")) or None,
        )
    except HubError as exc:
        trial = Trial(None, None, TemplateInvalid(str(exc)))
    return render(
        request,
        "admin_template_trial.html",
        trial=trial,
        fid=f"{key}-{channel}-{locale}",
    )


async def revert_variant(request: web.Request) -> web.StreamResponse:
    actor = _admin(request)
    key = request.match_info["key"]
    form = await request.post()
    channel, locale = str(form.get("channel", "")), str(form.get("locale", ""))
    try:
        await do_revert_variant(request.app[DB], actor, key, channel, locale)
    except HubError as exc:
        raise redirect_with(f"/admin/templates/{key}", "error", f"Not reverted: {exc}") from None
    raise redirect_with(
        f"/admin/templates/{key}#variant-{key}-{channel}-{locale}",
        "ok",
        f"The {channel} text in {locale} is the shipped text again.",
    )


async def remove_language(request: web.Request) -> web.StreamResponse:
    actor = _admin(request)
    key = request.match_info["key"]
    form = await request.post()
    locale = str(form.get("locale", ""))
    try:
        channels = await do_remove_template_language(request.app[DB], actor, key, locale)
    except HubError as exc:
        raise redirect_with(f"/admin/templates/{key}", "error", f"Not removed: {exc}") from None
    raise redirect_with(
        f"/admin/templates/{key}",
        "ok",
        f"Removed {language_name(locale)} ({', '.join(channels)}) from {key}.",
    )


async def save_clinical_terms(request: web.Request) -> web.StreamResponse:
    actor = _admin(request)
    form = await request.post()
    typed = str(form.get("terms", ""))
    try:
        terms = await do_set_clinical_terms(request.app[DB], actor, typed)
    except TemplateInvalid as exc:
        return await templates_page(
            request, status=422, terms_error=f"Not saved: {exc}", clinic_terms=typed.splitlines()
        )
    raise redirect_with("/admin/templates", "ok", f"Clinical words saved ({len(terms)} added).")


async def preview_template(request: web.Request) -> web.Response:
    """A variant rendered for a chosen patient (their name, language and zone): audited."""
    actor = _admin(request)
    form = await request.post()
    settings = request.app[SETTINGS]
    key = str(form.get("key", ""))
    sample = {
        "start": datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        + timedelta(days=2, hours=1),
        "location": "Main clinic, room 2",
        "provider": "Dr. Example",
    }
    preview, error_text = None, None
    try:
        preview = await do_preview(
            request.app[DB],
            request.app[RING],
            actor,
            key,
            str(form.get("channel", "sms")),
            uuid.UUID(str(form.get("patient_id", ""))),
            sample,
            clinic=settings.clinic,
        )
    except (HubError, ValueError) as exc:
        error_text = str(exc)
    return await _template_page(
        request,
        key,
        preview=preview,
        preview_error=error_text,
        chosen={
            "key": key,
            "channel": form.get("channel"),
            "patient_id": form.get("patient_id"),
        },
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/admin/templates", templates_page, name="admin_templates"),
        web.post("/admin/templates", save_template_variant, name="admin_save_template"),
        web.post("/admin/templates/preview", preview_template, name="admin_preview_template"),
        web.post(
            "/admin/templates/clinical-terms",
            save_clinical_terms,
            name="admin_save_clinical_terms",
        ),
        web.get("/admin/templates/{key}", template_page, name="admin_template"),
        web.post("/admin/templates/{key}/try", try_template, name="admin_try_template"),
        web.post("/admin/templates/{key}/revert", revert_variant, name="admin_revert_template"),
        web.post(
            "/admin/templates/{key}/remove-language",
            remove_language,
            name="admin_remove_template_language",
        ),
    ]
