"""Coordinators' journey page and API: the live funnel per step with its drill-down, cohort
upload, FHIR enrollment, the survey report, pause/resume/stop."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from weakref import WeakKeyDictionary

from aiohttp import web

from hub.audit import do_audit_export
from hub.contact import InvalidContact
from hub.enums import Role
from hub.errors import HubError
from hub.inbox.access import StaffContext
from hub.inbox.exceptions import NotFound
from hub.journeys import actions as journeys
from hub.journeys import fhir, reporting
from hub.journeys.cohort import match_or_create_patient
from hub.journeys.outcomes import read_status
from web.api import error, plain, read_json
from web.auth import current
from web.cohort_upload import MAX_COHORT_BYTES
from web.keys import DB, RING, SETTINGS
from web.render import redirect_with, render
from web.tasks import release_soon

FIRST_ERRORS_SHOWN = 20
"""Row errors listed after an upload (the count covers all of them)."""


def coordinator(request: web.Request) -> StaffContext:
    ctx = current(request)
    if ctx.role not in (Role.COORDINATOR, Role.ADMIN):
        raise web.HTTPNotFound()
    return ctx


def _period(query: Mapping[str, str]) -> tuple[datetime, datetime]:
    """?from=YYYY-MM-DD&to=YYYY-MM-DD (UTC days; `to` inclusive); default the last 30 days."""
    today = datetime.now(UTC).date()
    start = date.fromisoformat(query["from"]) if query.get("from") else today - timedelta(30)
    end = date.fromisoformat(query["to"]) if query.get("to") else today
    if end < start:
        raise ValueError("`to` is before `from`")
    return (
        datetime.combine(start, datetime.min.time(), tzinfo=UTC),
        datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=UTC),
    )


async def render_page(
    request: web.Request, launched: dict[str, Any] | None = None, status: int = 200
) -> web.Response:
    period_error = None
    try:
        since, until = _period(request.query)
    except ValueError as exc:
        period_error = f"The period was not understood ({exc}); showing the last 30 days."
        since, until = _period({})
    db = request.app[DB]
    keys = list(await reporting.journey_names(db))
    surveys = {key: await reporting.do_survey_report(db, key, since, until) for key in keys}
    return render(
        request,
        "journeys.html",
        status=status,
        nav="journeys",
        funnels=[await reporting.do_funnel(db, key) for key in keys],
        template_failures=await reporting.do_template_failures(db),
        surveys={k: s for k, s in surveys.items() if s.questions},
        columns=reporting.FUNNEL_COLUMNS,
        labels={c.key: c.label for c in reporting.FUNNEL_COLUMNS},
        chart_columns=reporting.CHART_COLUMNS,
        period={
            "from": since.date().isoformat(),
            "to": (until - timedelta(days=1)).date().isoformat(),
            "error": period_error,
        },
        launched=launched,
        max_cohort_mb=MAX_COHORT_BYTES // (1024 * 1024),
    )


async def journeys_page(request: web.Request) -> web.Response:
    coordinator(request)
    return await render_page(request)


async def set_status_form(request: web.Request) -> web.StreamResponse:
    ctx = coordinator(request)
    form = await request.post()
    status = str(form.get("status", ""))
    try:
        await journeys.do_set_journey_status(
            request.app[DB], ctx.actor, request.match_info["key"], status
        )
    except (NotFound, ValueError) as exc:
        raise redirect_with("/journeys", "error", str(exc)) from None
    raise redirect_with("/journeys", "ok", f"Journey is now {status}.")


_FUNNELS: WeakKeyDictionary[web.Application, reporting.FunnelCache] = WeakKeyDictionary()


def _funnels(app: web.Application) -> reporting.FunnelCache:
    """The live re-fetches' shared counts, one cache per app (each has its own database)."""
    if app not in _FUNNELS:
        _FUNNELS[app] = reporting.FunnelCache(app[DB])
    return _FUNNELS[app]


async def api_funnel(request: web.Request) -> web.Response:
    coordinator(request)
    key = request.match_info["key"]
    try:
        if request.query.get("live") == "1":  # the page's re-fetch after a progress event
            funnel = await _funnels(request.app).get(key)
        else:
            funnel = await reporting.do_funnel(request.app[DB], key)
    except NotFound:
        return error(404, "No such journey.")
    columns = [plain(c) for c in reporting.FUNNEL_COLUMNS]
    return web.json_response({**plain(funnel), "columns": columns})


async def _drilldown(request: web.Request) -> reporting.Drilldown:
    ctx = coordinator(request)
    try:
        page = int(request.query.get("page") or 1)
    except ValueError:
        page = 1
    return await reporting.do_drilldown(
        request.app[DB],
        request.app[RING],
        ctx,
        request.match_info["key"],
        request.match_info["step"],
        request.match_info["column"],
        page=page,
    )


async def drilldown_page(request: web.Request) -> web.Response:
    try:
        drilldown = await _drilldown(request)
    except NotFound:
        raise web.HTTPNotFound() from None
    return render(request, "journey_patients.html", nav="journeys", d=drilldown)


async def api_drilldown(request: web.Request) -> web.Response:
    try:
        d = await _drilldown(request)
    except NotFound as exc:
        return error(404, str(exc))
    return web.json_response({**plain(d), "pages": d.pages})


async def api_status(request: web.Request) -> web.Response:
    ctx = coordinator(request)
    data = await read_json(request)
    try:
        await journeys.do_set_journey_status(
            request.app[DB], ctx.actor, request.match_info["key"], str(data.get("status"))
        )
    except NotFound:
        return error(404, "No such journey.")
    except ValueError as exc:
        return error(422, str(exc))
    return web.json_response({"status": data.get("status")})


async def api_enroll(request: web.Request) -> web.Response:
    """{"patient": {"phone", "email", "name", "language", "time_zone"},
    "appointment": {"id", "start", "location", "provider", "status"}} -> 201 / 200 (already)."""
    ctx = coordinator(request)
    data = await read_json(request)
    try:
        raw_patient = data.get("patient") or {}
        if not isinstance(raw_patient, dict):
            return error(422, "patient must be an object with phone, email, name, ...")
        patient = {k: str(v) for k, v in raw_patient.items() if v is not None}
        if not (patient.get("phone") or patient.get("email")):
            return error(422, "patient.phone or patient.email is required")
        appt = data.get("appointment")
        if appt and not isinstance(appt, dict):
            return error(422, "appointment must be an object with id, start, status, ...")
        # Read before the patient is matched or created: a refused status writes nothing.
        status = read_status(
            None if not appt or appt.get("status") is None else str(appt["status"]),
            "appointment.status",
        )
        patient_id, _created = await match_or_create_patient(
            request.app[DB],
            request.app[RING],
            ctx.actor,
            patient,
            request.app[SETTINGS].default_region,
        )
        appointment = None
        if appt:
            start = datetime.fromisoformat(str(appt["start"]))
            if start.utcoffset() is None:
                return error(422, "appointment.start needs a UTC offset")
            appointment = journeys.NewAppointment(
                str(appt["id"]),
                start,
                location=appt.get("location"),
                provider=appt.get("provider"),
                status=status,
            )
        result = await journeys.do_enroll(
            request.app[DB],
            ctx.actor,
            request.match_info["key"],
            patient_id,
            appointment=appointment,
            ring=request.app[RING],
        )
    except NotFound as exc:
        return error(404, str(exc))
    except (ValueError, KeyError, TypeError, HubError) as exc:
        return error(422, f"bad enrollment: {exc}")
    return web.json_response(plain(result), status=201 if result.created else 200)


async def _enroll_appointment(
    request: web.Request, ctx: StaffContext, key: str, appt: fhir.FhirAppointment, zone: str
) -> dict[str, Any]:
    """One appointment of a bundle: its outcome, or its error while the others go on."""
    entry: dict[str, Any] = {"entry": appt.entry, "appointment": appt.external_id}
    if appt.problem is not None or appt.patient is None or appt.external_id is None:
        return {**entry, "outcome": "error", "message": appt.problem}
    if appt.action == "wait":
        return {**entry, "outcome": "skipped", "message": f"{appt.status}: not booked yet"}
    db = request.app[DB]
    start = appt.start or await reporting.known_appointment_start(db, "fhir", appt.external_id)
    if start is None:
        return {**entry, "outcome": "skipped", "message": f"{appt.status} and never enrolled"}
    try:
        patient_id, created = await match_or_create_patient(
            db,
            request.app[RING],
            ctx.actor,
            appt.patient.contact_row(appt.time_zone or zone),
            request.app[SETTINGS].default_region,
        )
        result = await journeys.do_enroll(
            db,
            ctx.actor,
            key,
            patient_id,
            appointment=journeys.NewAppointment(
                appt.external_id,
                start,
                source="fhir",
                location=appt.location,
                provider=appt.provider,
                status=read_status(appt.status),
            ),
            ring=request.app[RING],
        )
    except (InvalidContact, ValueError, HubError) as exc:
        return {**entry, "outcome": "error", "message": str(exc)}
    if appt.action == "cancel":
        outcome = "cancelled" if result.created or result.cancelled else "already"
    else:
        outcome = "enrolled" if result.created else "moved" if result.moved else "already"
    return {
        **entry,
        "outcome": outcome,
        "enrollment_id": str(result.enrollment_id),
        "patient_created": created,
    }


async def api_enroll_fhir(request: web.Request) -> web.Response:
    """A FHIR R4 Bundle of Appointments and their Patients: each appointment is enrolled
    (idempotent), moved or cancelled; a bundle that is not valid FHIR is refused whole."""
    ctx = coordinator(request)
    key = request.match_info["key"]
    try:
        data = json.loads(await request.text())
    except ValueError:
        return error(400, "The body is not JSON; send a FHIR R4 Bundle.", "invalid_json")
    try:
        bundle = fhir.parse_bundle(data)
    except fhir.BundleInvalid as exc:
        problem = {"status": 400, "code": "invalid_bundle", "field": exc.field}
        problem["message"] = f"Not a valid FHIR R4 Bundle: {exc}"
        return web.json_response({"error": problem}, status=400)
    db = request.app[DB]
    if key not in await reporting.journey_names(db):
        return error(404, "No such journey.")
    if not bundle.appointments:
        return error(422, "The bundle has no Appointment entries.", "no_appointments")
    zone = request.query.get("time_zone") or "UTC"
    entries = [await _enroll_appointment(request, ctx, key, a, zone) for a in bundle.appointments]
    totals = {
        outcome: sum(1 for e in entries if e["outcome"] == outcome)
        for outcome in ("enrolled", "already", "moved", "cancelled", "skipped", "error")
    }
    if totals["enrolled"] or totals["moved"] or totals["cancelled"]:
        release_soon(request.app, [await reporting.do_announce_progress(db, key)])
    body = {
        "journey": key,
        "appointments": len(entries),
        **totals,
        "patients_created": sum(1 for e in entries if e.get("patient_created")),
        "entries": entries,
    }
    return web.json_response(body, status=422 if totals["error"] == len(entries) else 200)


def wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


async def api_survey_csv(request: web.Request) -> web.Response:
    return await api_survey(request, as_csv=True)


async def api_survey(request: web.Request, *, as_csv: bool = False) -> web.Response:
    """The survey report of a journey for a period (JSON), or its answers as CSV (audited as
    an export: each row is one patient's answer)."""
    ctx = coordinator(request)
    try:
        since, until = _period(request.query)
        report = await reporting.do_survey_report(
            request.app[DB], request.match_info["key"], since, until
        )
    except NotFound:
        return error(404, "No such journey.")
    except ValueError as exc:
        return error(400, f"from/to must be dates like 2026-11-01 ({exc})")
    if as_csv:
        await do_audit_export(
            request.app[DB],
            ctx.actor,
            "survey",
            "journey",
            report.key,
            {"from": since.isoformat(), "until": until.isoformat(), "rows": len(report.rows)},
        )
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["journey", "question", "score", "answered_at", "enrollment_id"])
        for step_id, score, at, enrollment_id in report.rows:
            writer.writerow([report.key, step_id, score, at.isoformat(), enrollment_id])
        return web.Response(
            text=out.getvalue(),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{report.key}-survey.csv"'},
        )
    return web.json_response(
        {
            "journey": report.key,
            "from": since.isoformat(),
            "until": until.isoformat(),
            "questions": [dict(plain(q), response_rate=q.response_rate) for q in report.questions],
        }
    )


def routes() -> list[web.RouteDef]:
    """Every journey route, for web/routes.py's table."""
    return [
        web.get("/journeys", journeys_page, name="journeys"),
        web.post("/journeys/{key}/status", set_status_form, name="journey_status"),
        web.get("/journeys/{key}/steps/{step}/{column}", drilldown_page, name="journey_drilldown"),
        web.get("/api/journeys/{key}/funnel", api_funnel, name="api_funnel"),
        web.get(
            "/api/journeys/{key}/steps/{step}/{column}",
            api_drilldown,
            name="api_journey_drilldown",
        ),
        web.post("/api/journeys/{key}/status", api_status, name="api_journey_status"),
        web.post("/api/journeys/{key}/enrollments", api_enroll, name="api_enroll"),
        web.post("/api/journeys/{key}/enrollments/fhir", api_enroll_fhir, name="api_enroll_fhir"),
        web.get("/api/journeys/{key}/survey", api_survey, name="api_survey"),
        web.get("/api/journeys/{key}/survey.csv", api_survey_csv, name="api_survey_csv"),
    ]
