"""Coordinators' journey pages and API: the funnel per step, pause/resume/stop, enrollment."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from hub.enums import Role
from hub.errors import HubError
from hub.inbox.exceptions import NotFound
from hub.journeys import actions as journeys
from hub.journeys import queries
from hub.journeys.cohort import match_or_create_patient
from web.api import error, plain
from web.auth import current
from web.keys import DB, RING, SETTINGS
from web.render import redirect_with, render

RUN_ORDER = ("planned", "claimed", "sent", "skipped", "cancelled", "failed")
DELIVERY_ORDER = ("queued", "sending", "sent", "delivered", "read", "undelivered", "failed")


def _coordinator(request: web.Request) -> Any:
    ctx = current(request)
    if ctx.role not in (Role.COORDINATOR, Role.ADMIN):
        raise web.HTTPNotFound()
    return ctx


async def journeys_page(request: web.Request) -> web.Response:
    _coordinator(request)
    async with request.app[DB].reader() as session:
        keys = [j.key for j in await queries.all_journeys(session)]
    funnels = [await journeys.do_funnel(request.app[DB], key) for key in keys]
    return render(
        request,
        "journeys.html",
        nav="journeys",
        funnels=funnels,
        run_order=RUN_ORDER,
        delivery_order=DELIVERY_ORDER,
    )


async def set_status_form(request: web.Request) -> web.StreamResponse:
    ctx = _coordinator(request)
    form = await request.post()
    status = str(form.get("status", ""))
    try:
        await journeys.do_set_journey_status(
            request.app[DB], ctx.actor, request.match_info["key"], status
        )
    except (NotFound, ValueError) as exc:
        raise redirect_with("/journeys", "error", str(exc)) from None
    raise redirect_with("/journeys", "ok", f"Journey is now {status}.")


async def api_funnel(request: web.Request) -> web.Response:
    _coordinator(request)
    try:
        funnel = await journeys.do_funnel(request.app[DB], request.match_info["key"])
    except NotFound:
        return error(404, "No such journey.")
    return web.json_response(plain(funnel))


async def api_status(request: web.Request) -> web.Response:
    ctx = _coordinator(request)
    data = await request.json()
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
    ctx = _coordinator(request)
    try:
        data = await request.json()
        patient = {k: str(v) for k, v in (data.get("patient") or {}).items() if v is not None}
        if not (patient.get("phone") or patient.get("email")):
            return error(422, "patient.phone or patient.email is required")
        patient_id, _created = await match_or_create_patient(
            request.app[DB],
            request.app[RING],
            ctx.actor,
            patient,
            request.app[SETTINGS].default_region,
        )
        appt = data.get("appointment")
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
                cancelled=appt.get("status") == "cancelled",
            )
        result = await journeys.do_enroll(
            request.app[DB],
            ctx.actor,
            request.match_info["key"],
            patient_id,
            appointment=appointment,
        )
    except NotFound as exc:
        return error(404, str(exc))
    except (ValueError, KeyError, TypeError, HubError) as exc:
        return error(422, f"bad enrollment: {exc}")
    return web.json_response(plain(result), status=201 if result.created else 200)


def _period(request: web.Request) -> tuple[datetime, datetime]:
    """?from=YYYY-MM-DD&to=YYYY-MM-DD (UTC days; `to` inclusive); default the last 30 days."""
    from datetime import UTC, date, timedelta

    today = datetime.now(UTC).date()
    start = (
        date.fromisoformat(request.query["from"])
        if request.query.get("from")
        else (today - timedelta(days=30))
    )
    end = date.fromisoformat(request.query["to"]) if request.query.get("to") else today
    return (
        datetime.combine(start, datetime.min.time(), tzinfo=UTC),
        datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=UTC),
    )


async def api_survey_csv(request: web.Request) -> web.Response:
    return await api_survey(request, as_csv=True)


async def api_survey(request: web.Request, *, as_csv: bool = False) -> web.Response:
    """The survey report of a journey for a period (JSON), or its answers as CSV."""
    import csv
    import io

    _coordinator(request)
    try:
        since, until = _period(request)
        report = await journeys.do_survey_report(
            request.app[DB], request.match_info["key"], since, until
        )
    except NotFound:
        return error(404, "No such journey.")
    except ValueError as exc:
        return error(400, f"from/to must be dates like 2026-11-01 ({exc})")
    if as_csv:
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
