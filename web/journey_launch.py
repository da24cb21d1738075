"""The cohort launch on the Journeys page, in two steps: the upload shows its dry run
(``hub.journeys.preview``: what each step would do for these patients, the warnings with
counts, the rows that cannot be read) with an "Enroll N patients" button and a cancel; only the
confirmation enrolls. The file waits in between as ``web.cohort_upload`` keeps it."""

from __future__ import annotations

import io
from typing import Any

from aiohttp import web

from hub.channels.registry import connected_providers
from hub.journeys import reporting
from hub.journeys.cohort import CohortInvalid, launch
from hub.journeys.preview import LaunchPreview, do_preview_launch
from web.api import error
from web.auth import SESSION
from web.cohort_upload import (
    PENDING_COHORT_SECONDS,
    UploadRefused,
    as_text,
    drop_pending,
    keep_pending,
    read_upload,
    take_pending,
)
from web.journeys import FIRST_ERRORS_SHOWN, coordinator, render_page, wants_json
from web.keys import DB, REDIS, RING, SETTINGS
from web.render import fragment
from web.tasks import release_soon


def _preview_json(preview: LaunchPreview) -> dict[str, Any]:
    """The dry run for the page: counts and reasons only (no patient is named)."""
    return {
        "rows": preview.rows,
        "enroll": preview.enroll,
        "already": preview.already,
        "patients_created": preview.patients_created,
        "cancelled": preview.cancelled,
        "error_count": preview.error_count,
        "errors": preview.errors[:FIRST_ERRORS_SHOWN],
        "steps": [
            {
                "step": s.step_id,
                "template": s.template,
                "summary": s.summary(),
                "planned": s.planned,
                "sending": s.sending,
                "fallback": sum(s.fallback.values()),
                "untranslated": sum(s.untranslated.values()),
                "no_channel": s.no_channel,
                "late": s.late,
            }
            for s in preview.steps
        ],
        "warnings": preview.warnings,
        "nothing_to_do": preview.nothing_to_do,
    }


async def _launch_answer(
    request: web.Request, launched: dict[str, Any], status: int = 200
) -> web.Response:
    """The launch box's content: JSON with its HTML for the page's script, else the page."""
    if wants_json(request):
        html = fragment(request, "_journey_launch.html", launched=launched, csrf=_csrf(request))
        return web.json_response({**launched, "html": html}, status=status)
    return await render_page(request, launched, status=status)


def _csrf(request: web.Request) -> str:
    session = request.get(SESSION)
    return session.csrf if session else ""


async def _refused(request: web.Request, key: str, exc: UploadRefused) -> web.Response:
    if wants_json(request):
        return error(exc.status, exc.message)
    return await render_page(request, {"journey": key, "error": exc.message}, status=exc.status)


async def upload_cohort(request: web.Request) -> web.StreamResponse:
    """Step one of a launch: read and check the file, show its dry run (what each step would
    do for these patients, warnings with counts, the rows that cannot be read) with an
    "Enroll N patients" button and a cancel. Nothing is enrolled here."""
    ctx = coordinator(request)
    key = request.match_info["key"]
    db = request.app[DB]
    if key not in await reporting.journey_names(db):
        raise web.HTTPNotFound()
    try:
        upload = await read_upload(request)
        try:
            stream = as_text(upload)
            try:
                preview = await do_preview_launch(
                    db,
                    request.app[RING],
                    key,
                    stream,
                    region=request.app[SETTINGS].default_region,
                    available=connected_providers(request.app[SETTINGS]),
                )
            except CohortInvalid as exc:
                raise UploadRefused(400, f"The file was not enrolled: {exc}.") from None
            stream.detach()
            token = None
            if not preview.nothing_to_do:
                token = await keep_pending(
                    request.app[REDIS], request.app[RING], key, ctx.staff_id, upload
                )
        finally:
            upload.close()
    except UploadRefused as exc:
        return await _refused(request, key, exc)
    return await _launch_answer(
        request,
        {
            "journey": key,
            "token": token,
            "expires_in": PENDING_COHORT_SECONDS,
            "preview": _preview_json(preview),
        },
    )


async def confirm_cohort(request: web.Request) -> web.StreamResponse:
    """Step two: the coordinator pressed "Enroll": the kept upload is enrolled, once."""
    ctx = coordinator(request)
    key = request.match_info["key"]
    db = request.app[DB]
    if key not in await reporting.journey_names(db):
        raise web.HTTPNotFound()
    data = await take_pending(
        request.app[REDIS], request.app[RING], key, ctx.staff_id, request.match_info["token"]
    )
    if data is None:
        gone = UploadRefused(
            410,
            "This upload is no longer waiting: it was enrolled or cancelled already, or it "
            f"waited longer than {PENDING_COHORT_SECONDS // 60} minutes. Upload the file again.",
        )
        return await _refused(request, key, gone)
    stream = as_text(io.BytesIO(data))
    try:
        report = await launch(
            db,
            request.app[RING],
            ctx.actor,
            key,
            stream,
            region=request.app[SETTINGS].default_region,
        )
    except CohortInvalid as exc:
        return await _refused(request, key, UploadRefused(400, f"Enrolling stopped: {exc}."))
    finally:
        stream.close()
    if report.enrolled:
        release_soon(request.app, [await reporting.do_announce_progress(db, key)])
    return await _launch_answer(
        request,
        {
            "journey": key,
            "rows": report.rows,
            "enrolled": report.enrolled,
            "already": report.already,
            "patients_created": report.patients_created,
            "error_count": report.error_count,
            "errors": report.errors[:FIRST_ERRORS_SHOWN],
        },
    )


async def cancel_cohort(request: web.Request) -> web.StreamResponse:
    """The coordinator pressed "Cancel" after the dry run: the upload is dropped."""
    ctx = coordinator(request)
    key = request.match_info["key"]
    await drop_pending(
        request.app[REDIS], request.app[RING], key, ctx.staff_id, request.match_info["token"]
    )
    return await _launch_answer(request, {"journey": key, "cancelled": True})


def routes() -> list[web.RouteDef]:
    """The launch's routes, for web/routes.py's table."""
    return [
        web.post("/journeys/{key}/cohort", upload_cohort, name="journey_cohort"),
        web.post("/journeys/{key}/cohort/{token}", confirm_cohort, name="journey_cohort_confirm"),
        web.post(
            "/journeys/{key}/cohort/{token}/cancel", cancel_cohort, name="journey_cohort_cancel"
        ),
    ]
