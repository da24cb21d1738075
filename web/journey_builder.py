"""The journey builder: create and edit a journey in a form, preview its messages on a
timeline, import and export its YAML, move running enrollments to the current version, and
the confirmations before stopping a journey or calling off one patient's enrollment.

The form is turned into the YAML the parser reads (``hub.journeys.builder``) and saved through
``do_save_journey``, so the builder, an imported file and ``hub journey validate`` share one
validator. htmx swaps the form in place when a step is added or removed and fills the preview;
without script every button posts the whole form and the page comes back."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from hub.errors import HubError
from hub.inbox.exceptions import NotFound
from hub.journeys import builder
from hub.journeys.actions import do_set_journey_status
from hub.journeys.definitions import DEFAULT_MAX_BYTES, JOURNEY_PURPOSES, JourneyInvalid
from hub.journeys.lifecycle import do_cancel_enrollment, do_stop_outlook
from hub.journeys.parse import parse_journey
from hub.journeys.reporting import journey_names
from hub.journeys.timeline import Sample, do_timeline
from hub.journeys.trial import do_request_test
from hub.journeys.versions import (
    do_migrate_enrollments,
    do_save_journey,
    do_version_text,
    do_versions,
)
from hub.templates import TemplateInvalid
from hub.templates.actions import do_list_templates, normalize_locale
from web.journeys import coordinator
from web.keys import DB, SETTINGS
from web.render import redirect_with, render
from web.tasks import release_soon

DEFAULT_SAMPLE_DAYS = 7
"""The sample appointment in a preview is this many days ahead, at DEFAULT_SAMPLE_TIME."""
DEFAULT_SAMPLE_TIME = time(9, 0)


def _is_htmx(request: web.Request) -> bool:
    return request.headers.get("HX-Request") == "true"


async def _template_choices(request: web.Request) -> list[tuple[str, str]]:
    """(key, label) of every template, the label naming the channels it has."""
    choices = []
    for t in await do_list_templates(request.app[DB]):
        channels = sorted({v.channel for v in t.variants})
        choices.append((t.key, f"{t.key} ({', '.join(channels)})" if channels else t.key))
    return choices


def _sample(request: web.Request, form: Any) -> tuple[Sample | None, dict[str, str], str | None]:
    """The preview's made-up patient and appointment from the form (or defaults)."""
    ctx = coordinator(request)
    today = datetime.now(UTC).date()
    values = {
        "sample_date": str(form.get("sample_date") or today + timedelta(DEFAULT_SAMPLE_DAYS)),
        "sample_time": str(form.get("sample_time") or DEFAULT_SAMPLE_TIME.strftime("%H:%M")),
        "sample_zone": str(form.get("sample_zone") or ctx.time_zone or "UTC").strip(),
        "sample_language": str(form.get("sample_language") or "en").strip(),
    }
    try:
        zone = ZoneInfo(values["sample_zone"])
    except (ZoneInfoNotFoundError, ValueError):
        problem = f"Time zone “{values['sample_zone']}” is not one like America/New_York."
        return None, values, problem
    try:
        day = date.fromisoformat(values["sample_date"])
        at = time.fromisoformat(values["sample_time"])
    except ValueError:
        return None, values, "The sample date or time is not one like 2026-12-14 and 09:00."
    try:
        language = normalize_locale(values["sample_language"])
    except TemplateInvalid as exc:
        return None, values, f"Sample language: {exc}"
    anchor = datetime.combine(day, at, tzinfo=zone)
    return Sample(language, values["sample_zone"], anchor, datetime.now(UTC)), values, None


async def _page(
    request: web.Request,
    fields: builder.JourneyFields,
    *,
    key: str | None,
    problem: builder.Problem | None = None,
    timeline: list[Any] | None = None,
    sample: dict[str, str] | None = None,
    sample_problem: str | None = None,
    status: int = 200,
    partial: str | None = None,
) -> web.Response:
    versions: list[Any] = []
    older = 0
    current = None
    if key is not None:
        journey, versions, _ = await do_versions(request.app[DB], key)
        current = journey.version
        older = sum(v.active for v in versions if not v.current)
    context = {
        "fields": fields,
        "key": key,
        "problem": problem,
        "timeline": timeline,
        "sample": sample or _sample(request, {})[1],
        "sample_problem": sample_problem,
        "templates": await _template_choices(request),
        "purposes": [p.value for p in JOURNEY_PURPOSES],
        "units": builder.UNITS,
        "kinds": [(k, builder.KIND_WORDS[k], builder.actions_for(k)) for k in builder.REPLY_KINDS],
        "channel_slots": range(1, builder.MAX_CHANNELS + 1),
        "versions": versions,
        "current_version": current,
        "older": older,
        "action": f"/journeys/{key}/edit" if key else "/journeys/new",
    }
    if partial is not None:
        return render(request, partial, status=status, **context)
    return render(request, "journey_builder.html", status=status, nav="journeys", **context)


async def new_page(request: web.Request) -> web.Response:
    coordinator(request)
    blank = builder.JourneyFields(steps=[builder.StepFields(id="reminder")])
    return await _page(request, blank, key=None)


async def edit_page(request: web.Request) -> web.Response:
    coordinator(request)
    key = request.match_info["key"]
    try:
        _, _, text = await do_versions(request.app[DB], key)
    except NotFound:
        raise web.HTTPNotFound() from None
    fields = builder.fields_of(parse_journey(text, f"journey {key}"))
    return await _page(request, fields, key=key)


async def builder_post(request: web.Request) -> web.StreamResponse:
    """Every button of the form: add or remove a step, preview, save."""
    ctx = coordinator(request)
    key = request.match_info.get("key")
    if key is not None and key not in {v for v in await _keys(request)}:
        raise web.HTTPNotFound()
    form = await request.post()
    posted = {name: [str(v) for v in form.getall(name)] for name in set(form.keys())}
    fields = builder.fields_from_form(posted)
    if key is not None:
        fields.key = key  # the key of a saved journey never changes
    op = str(form.get("op") or "save")
    htmx = _is_htmx(request)
    if op == "add":
        fields.steps.append(builder.StepFields(id=f"step_{len(fields.steps) + 1}"))
        partial = "_journey_builder_form.html" if htmx else None
        return await _page(request, fields, key=key, partial=partial)
    if op.startswith("remove-") and op[7:].isdigit():
        index = int(op[7:])
        if 0 <= index < len(fields.steps) and len(fields.steps) > 1:
            del fields.steps[index]
        partial = "_journey_builder_form.html" if htmx else None
        return await _page(request, fields, key=key, partial=partial)
    text = builder.to_yaml(fields)
    if op == "preview":
        return await _preview(request, fields, key, text, form, htmx)
    try:
        saved = await do_save_journey(
            request.app[DB], ctx.actor, text, "the form", expected_key=key
        )
    except JourneyInvalid as exc:
        problem = builder.problem_in_words(exc, fields)
        return await _page(request, fields, key=key, problem=problem, status=422)
    if not saved.changed:
        message = f"Nothing changed: still version {saved.version}."
    elif saved.created:
        message = f"Journey “{fields.name or saved.key}” saved as version 1."
    else:
        message = (
            f"Saved as version {saved.version}. New enrollments follow it; running ones keep "
            "their version until you move them."
        )
    raise redirect_with(f"/journeys/{saved.key}/edit", "ok", message)


async def _keys(request: web.Request) -> list[str]:
    return list(await journey_names(request.app[DB]))


async def _preview(
    request: web.Request,
    fields: builder.JourneyFields,
    key: str | None,
    text: str,
    form: Any,
    htmx: bool,
) -> web.Response:
    sample, values, sample_problem = _sample(request, form)
    problem = timeline = None
    try:
        definition = parse_journey(text, "the form")
    except JourneyInvalid as exc:
        problem = builder.problem_in_words(exc, fields)
    else:
        if sample is not None:
            clinic = request.app[SETTINGS].clinic
            timeline = await do_timeline(request.app[DB], definition, sample, clinic)
    partial = "_journey_timeline.html" if htmx else None
    return await _page(
        request,
        fields,
        key=key,
        problem=problem,
        timeline=timeline,
        sample=values,
        sample_problem=sample_problem,
        partial=partial,
    )


async def preview_page(request: web.Request) -> web.Response:
    """The saved journey's messages for a sample patient (GET: the sample in the query)."""
    coordinator(request)
    key = request.match_info["key"]
    try:
        journey, _, text = await do_versions(request.app[DB], key)
    except NotFound:
        raise web.HTTPNotFound() from None
    definition = parse_journey(text, f"journey {key}")
    sample, values, sample_problem = _sample(request, request.query)
    timeline = None
    if sample is not None:
        clinic = request.app[SETTINGS].clinic
        timeline = await do_timeline(request.app[DB], definition, sample, clinic)
    return render(
        request,
        "journey_preview.html",
        nav="journeys",
        journey=journey,
        timeline=timeline,
        problem=None,
        sample=values,
        sample_problem=sample_problem,
        email_connected=request.app[SETTINGS].email_connected,
    )


async def send_test(request: web.Request) -> web.StreamResponse:
    """ "Send a test to me": the saved journey's step texts for the sample, to the coordinator's
    own staff email (hub.journeys.trial), never to a patient."""
    ctx = coordinator(request)
    key = request.match_info["key"]
    form = await request.post()
    sample, values, problem = _sample(request, form)
    back = f"/journeys/{key}/preview?{urlencode(values)}"
    if sample is None:
        raise redirect_with(back, "error", problem or "The sample is not valid.")
    if not request.app[SETTINGS].email_connected:
        raise redirect_with(back, "error", "Email is not set up on this hub, so no test can go.")
    try:
        effect, address = await do_request_test(
            request.app[DB], ctx.actor, ctx.staff_id, key, sample
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    release_soon(request.app, [effect])
    raise redirect_with(back, "ok", f"A test with every step's texts is on its way to {address}.")


async def export_yaml(request: web.Request) -> web.Response:
    coordinator(request)
    key = request.match_info["key"]
    try:
        if request.query.get("version", "").isdigit():
            version = int(request.query["version"])
            text = await do_version_text(request.app[DB], key, version)
            name = f"{key}-v{version}.yaml"
        else:
            _, _, text = await do_versions(request.app[DB], key)
            name = f"{key}.yaml"
    except NotFound:
        raise web.HTTPNotFound() from None
    return web.Response(
        text=text,
        content_type="application/yaml",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def import_yaml(request: web.Request) -> web.StreamResponse:
    """A YAML file: a new journey, or a new version of the journey it names. Errors name the
    file's line and field, as ``hub journey validate`` does."""
    ctx = coordinator(request)
    form = await request.post()
    upload = form.get("definition")
    back = str(form.get("back") or "/journeys/new")
    if not back.startswith("/journeys/"):
        back = "/journeys/new"
    expected = str(form.get("key") or "") or None
    if not isinstance(upload, web.FileField):
        raise redirect_with(back, "error", "Choose a YAML file to import.")
    raw = upload.file.read(DEFAULT_MAX_BYTES + 1)
    name = upload.filename or "the file"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise redirect_with(
            back, "error", f"{name} is not a text file: export the journey as YAML (UTF-8)."
        ) from None
    try:
        saved = await do_save_journey(request.app[DB], ctx.actor, text, name, expected_key=expected)
    except JourneyInvalid as exc:
        raise redirect_with(back, "error", f"Not imported: {exc}") from None
    what = "imported as a new journey" if saved.created else f"imported as version {saved.version}"
    if not saved.changed:
        what = f"already saved as version {saved.version}: nothing changed"
    raise redirect_with(f"/journeys/{saved.key}/edit", "ok", f"{name} {what}.")


async def migrate_page(request: web.Request) -> web.Response:
    coordinator(request)
    key = request.match_info["key"]
    try:
        journey, versions, _ = await do_versions(request.app[DB], key)
    except NotFound:
        raise web.HTTPNotFound() from None
    older = sum(v.active for v in versions if not v.current)
    return render(
        request,
        "journey_confirm.html",
        nav="journeys",
        journey=journey,
        title=f"Move running enrollments of {journey.name} to version {journey.version}?",
        sentence=(
            f"{older} running enrollment{'' if older == 1 else 's'} on older versions will "
            f"follow version {journey.version}: steps it no longer has are cancelled, new steps "
            "are planned (those already due are skipped), and steps it kept are re-planned."
        ),
        action=f"/journeys/{key}/migrate",
        button=f"Move {older} enrollment{'' if older == 1 else 's'} to version {journey.version}",
        disabled=older == 0,
        danger=False,
    )


async def migrate_post(request: web.Request) -> web.StreamResponse:
    ctx = coordinator(request)
    key = request.match_info["key"]
    try:
        moved = await do_migrate_enrollments(request.app[DB], ctx.actor, key)
    except NotFound:
        raise web.HTTPNotFound() from None
    raise redirect_with(
        f"/journeys/{key}/edit",
        "ok",
        f"{moved.moved} enrollment{'' if moved.moved == 1 else 's'} now follow version "
        f"{moved.version} ({moved.added} steps planned, {moved.cancelled} cancelled).",
    )


async def stop_page(request: web.Request) -> web.Response:
    coordinator(request)
    key = request.match_info["key"]
    try:
        outlook = await do_stop_outlook(request.app[DB], key)
    except NotFound:
        raise web.HTTPNotFound() from None
    return render(
        request,
        "journey_confirm.html",
        nav="journeys",
        journey=outlook,
        title=f"Stop {outlook.name}?",
        sentence=outlook.sentence,
        action=f"/journeys/{key}/stop",
        button=f"Stop and cancel {outlook.messages} message{'' if outlook.messages == 1 else 's'}",
        disabled=outlook.status == "stopped",
        danger=True,
    )


async def stop_post(request: web.Request) -> web.StreamResponse:
    ctx = coordinator(request)
    key = request.match_info["key"]
    try:
        outlook = await do_stop_outlook(request.app[DB], key)
        await do_set_journey_status(request.app[DB], ctx.actor, key, "stopped")
    except NotFound:
        raise web.HTTPNotFound() from None
    raise redirect_with(
        f"/journeys#journey-{key}",
        "ok",
        f"{outlook.name} is stopped: {outlook.messages} scheduled messages for "
        f"{outlook.patients} patients were cancelled. Resume brings back those not yet due.",
    )


async def cancel_enrollment(request: web.Request) -> web.StreamResponse:
    ctx = coordinator(request)
    key = request.match_info["key"]
    form = await request.post()
    back = str(form.get("back") or f"/journeys#journey-{key}")
    if not back.startswith("/journeys/"):
        back = f"/journeys#journey-{key}"
    try:
        enrollment_id = uuid.UUID(request.match_info["id"])
        cancelled = await do_cancel_enrollment(request.app[DB], ctx.actor, key, enrollment_id)
    except (ValueError, NotFound):
        raise web.HTTPNotFound() from None
    except HubError as exc:
        raise redirect_with(back, "error", str(exc)) from None
    if cancelled:
        plural = "" if cancelled == 1 else "s"
        text = f"Enrollment cancelled: {cancelled} scheduled message{plural} will not be sent."
    else:
        text = "That enrollment had already ended; nothing was cancelled."
    raise redirect_with(back, "ok", text)


def routes() -> list[web.RouteDef]:
    """The builder's routes, for web/routes.py's table."""
    return [
        web.get("/journeys/new", new_page, name="journey_new"),
        web.post("/journeys/new", builder_post, name="journey_new_post"),
        web.post("/journeys/import", import_yaml, name="journey_import"),
        web.get("/journeys/{key}/edit", edit_page, name="journey_edit"),
        web.post("/journeys/{key}/edit", builder_post, name="journey_edit_post"),
        web.get("/journeys/{key}/preview", preview_page, name="journey_preview"),
        web.post("/journeys/{key}/test", send_test, name="journey_send_test"),
        web.get("/journeys/{key}/definition.yaml", export_yaml, name="journey_export"),
        web.get("/journeys/{key}/migrate", migrate_page, name="journey_migrate"),
        web.post("/journeys/{key}/migrate", migrate_post, name="journey_migrate_post"),
        web.get("/journeys/{key}/stop", stop_page, name="journey_stop"),
        web.post("/journeys/{key}/stop", stop_post, name="journey_stop_post"),
        web.post(
            "/journeys/{key}/enrollments/{id}/cancel",
            cancel_enrollment,
            name="journey_cancel_enrollment",
        ),
    ]
