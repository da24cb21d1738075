"""The patient-rights API: an admin's export of everything held about one patient."""

from __future__ import annotations

from aiohttp import web

from hub.inbox.exceptions import NotFound
from hub.rights.actions.export import do_export_patient
from web.api import _uuid, error
from web.auth import current
from web.keys import DB, RING, SETTINGS


async def export_patient(request: web.Request) -> web.Response:
    """GET /api/patients/{id}/export: the patient's whole record as a FHIR R4 Bundle. Admins
    only (the bundle holds every message of every team); anyone else is told there is
    nothing, as for templates. Audited as ``patient.export``."""
    ctx = current(request)
    if not ctx.is_admin:
        return error(404, "Not found.")
    settings = request.app[SETTINGS]
    try:
        bundle = await do_export_patient(
            request.app[DB],
            request.app[RING],
            ctx.actor,
            _uuid(request),
            organization=settings.clinic_name,
            public_url=settings.public_url,
        )
    except NotFound:
        return error(404, "No such patient.")
    return web.json_response(
        bundle, content_type="application/fhir+json", headers={"Cache-Control": "no-store"}
    )


def routes() -> list[web.RouteDef]:
    return [web.get("/api/patients/{id}/export", export_patient, name="api_patient_export")]
