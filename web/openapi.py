"""GET /api/openapi.json: the REST API described as OpenAPI 3.1 (kept beside the routes; a
test checks every /api route appears here)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

import hub
from hub.journeys.reporting import COLUMNS
from web import mentions, patients_api, reports_api
from web.compose import openapi_paths, openapi_reply

ERROR = {"$ref": "#/components/schemas/Error"}


def _op(
    summary: str,
    *,
    body: dict[str, Any] | None = None,
    ok: int = 200,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[int, ...] = (401, 404),
) -> Any:
    responses: dict[str, Any] = {
        str(ok): {"description": "Success", "content": {"application/json": {}}}
    }
    for status in errors:
        responses[str(status)] = {
            "description": "Error",
            "content": {"application/json": {"schema": ERROR}},
        }
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


ID = [
    {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
]
KEY = [{"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}]
DATE_RANGE = [
    {"name": n, "in": "query", "required": False, "schema": {"type": "string", "format": "date"}}
    for n in ("from", "to")
]
STRING = {"type": "string"}
FHIR_BUNDLE = {
    "type": "object",
    "required": ["resourceType", "type"],
    "description": "FHIR R4 Bundle; entries are Appointment (id or identifier, status, start "
    "with offset, participant.actor referring to a Patient entry by fullUrl or Patient/id) and "
    "Patient (telecom phone/email, name, communication.language, identifier, optional "
    "http://hl7.org/fhir/StructureDefinition/timezone extension).",
    "properties": {
        "resourceType": {"const": "Bundle"},
        "type": {"type": "string"},
        "entry": {"type": "array", "items": {"type": "object"}},
    },
}
LIST_PARAMS = [
    {"name": name, "in": "query", "required": False, "schema": schema}
    for name, schema in [
        ("view", {"enum": ["all", "mine", "unassigned"]}),
        ("team", {"type": "string", "format": "uuid"}),
        ("status", {"enum": ["active", "any", "open", "pending", "snoozed", "resolved"]}),
        ("channel", {"enum": ["sms", "email", "voice", "chat"]}),
        ("priority", {"enum": ["low", "normal", "high", "urgent"]}),
        ("overdue", {"enum": ["1", "0"]}),
        ("tag", {"type": "string", "maxLength": 40}),
        ("cursor", {"type": "string"}),
        ("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
    ]
]


def document() -> dict[str, Any]:
    text = {
        "type": "object",
        "required": ["body"],
        "properties": {"body": {"type": "string", "minLength": 1, "maxLength": 1600}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Hub API",
            "version": hub.__version__,
            "description": "Staff-facing API of the Hub patient communication hub. Every "
            "call is checked against the caller's teams and audited.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `hub token create`.",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "hub_session",
                    "description": "The staff UI's session; writes also need the "
                    "X-CSRF-Token header.",
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["status", "message"],
                            "properties": {
                                "status": {"type": "integer"},
                                "message": {"type": "string"},
                                "code": {"type": "string"},
                                "name": {"type": "string"},
                                "line": {"type": "integer"},
                                "part": {"type": "string"},
                            },
                        }
                    },
                }
            },
        },
        "security": [{"bearer": []}, {"session": []}],
        "paths": {
            "/api/me": {"get": _op("Who the caller is", errors=(401,))},
            "/api/conversations": {
                "get": _op(
                    "Inbox list, SLA-first, keyset-paginated; `unread` counts the list's unread "
                    "conversations up to 100 (`unread_more` true at 100: there may be more)",
                    params=LIST_PARAMS,
                    errors=(400, 401),
                )
            },
            "/api/conversations/claim-next": {
                "post": _op("Take the next waiting conversation of my teams", errors=(401,))
            },
            "/api/conversations/{id}": {
                "get": _op(
                    "A conversation with its thread, notes and patient card (audited)", params=ID
                )
            },
            "/api/conversations/{id}/messages": {
                "post": openapi_reply(
                    _op("Reply", body=text, ok=202, params=ID, errors=(400, 401, 404, 409, 422))
                )
            },
            **openapi_paths(_op, ID),
            **mentions.openapi_paths(_op, ID),
            "/api/conversations/{id}/notes": {
                "post": _op(
                    "Add an internal note; @name mentions notify",
                    body=text,
                    ok=201,
                    params=ID,
                    errors=(401, 404, 422),
                )
            },
            "/api/conversations/{id}/status": {
                "post": _op(
                    "Open, pending, snoozed (with snoozed_until) or resolved",
                    params=ID,
                    body={
                        "type": "object",
                        "required": ["status"],
                        "properties": {
                            "status": {"enum": ["open", "pending", "snoozed", "resolved"]},
                            "snoozed_until": {"type": "string", "format": "date-time"},
                        },
                    },
                    errors=(401, 404, 422),
                )
            },
            "/api/conversations/{id}/priority": {
                "post": _op(
                    "Set the priority",
                    params=ID,
                    errors=(401, 404, 422),
                    body={
                        "type": "object",
                        "required": ["priority"],
                        "properties": {"priority": {"enum": ["low", "normal", "high", "urgent"]}},
                    },
                )
            },
            "/api/conversations/{id}/assign": {
                "post": _op(
                    "Assign to a team member, or unassign with null",
                    params=ID,
                    errors=(401, 404, 409, 422),
                    body={
                        "type": "object",
                        "properties": {"staff_id": {"type": ["string", "null"], "format": "uuid"}},
                    },
                )
            },
            "/api/canned-responses": {"get": _op("Saved replies", errors=(401,))},
            "/api/templates": {
                "get": _op("Message templates with their variants (admins)", errors=(401, 404))
            },
            "/api/templates/{key}/{channel}/{locale}": {
                "put": _op(
                    "Create or replace one variant (admins). Checked first against what the "
                    "key's sends provide: an unknown variable, filter or test, a syntax error, "
                    "or an optional variable used as if always there is 422 with "
                    "error.code template_invalid and error.name, error.line, error.part; "
                    "nothing is saved. Saved: the variant and lint `warnings` (clinical words "
                    "in SMS or voice, length, encoding).",
                    params=[
                        *KEY,
                        {
                            "name": "channel",
                            "in": "path",
                            "required": True,
                            "schema": {"enum": ["sms", "email", "voice", "chat"]},
                        },
                        {
                            "name": "locale",
                            "in": "path",
                            "required": True,
                            "schema": {
                                "type": "string",
                                "pattern": "^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$",
                            },
                        },
                    ],
                    body={
                        "type": "object",
                        "required": ["body"],
                        "properties": {
                            "body": {"type": "string", "minLength": 1},
                            "subject": {"type": ["string", "null"]},
                            "html": {"type": ["string", "null"]},
                        },
                    },
                    errors=(400, 401, 404, 422),
                )
            },
            "/api/journeys/{key}/funnel": {
                "get": _op(
                    "Patients per step and funnel column (enrolled, waiting, skipped, stopped, "
                    "sent, delivered, replied, confirmed, cancelled, opted_out, failed; "
                    "`columns` defines each), failure reasons, runs by status and messages by "
                    "delivery status. Counts only, no patient data",
                    params=[
                        *KEY,
                        {
                            "name": "live",
                            "in": "query",
                            "required": False,
                            "description": "1: accept counts up to a second old, shared with "
                            "every screen watching (what the journeys page uses)",
                            "schema": {"enum": ["1"]},
                        },
                    ],
                )
            },
            "/api/journeys/{key}/steps/{step}/{column}": {
                "get": _op(
                    "The patients behind one funnel cell, 50 a page: name, masked contact, "
                    "statuses, reason, conversation id when the caller may open it (audited "
                    "per patient)",
                    params=[
                        *KEY,
                        {"name": "step", "in": "path", "required": True, "schema": STRING},
                        {
                            "name": "column",
                            "in": "path",
                            "required": True,
                            "schema": {"enum": list(COLUMNS)},
                        },
                        {
                            "name": "page",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1},
                        },
                    ],
                )
            },
            "/api/journeys/{key}/enrollments/fhir": {
                "post": {
                    **_op(
                        "Enroll from a FHIR R4 Bundle of Appointment and Patient resources: "
                        "each appointment's Patient participant is matched by phone or email "
                        "(or created) and enrolled; the same bundle again changes nothing, a "
                        "moved start moves pending steps, cancelled/noshow/entered-in-error "
                        "cancel them (each status is recorded for the appointments report), "
                        "proposed/waitlist are skipped. A bundle that is not "
                        "valid FHIR is refused whole (400 naming `field`); an appointment the "
                        "hub cannot use is reported in `entries` while the others go on (422 "
                        "when none could be used)",
                        params=[
                            *KEY,
                            {
                                "name": "time_zone",
                                "in": "query",
                                "required": False,
                                "description": "IANA zone for new patients whose Patient or "
                                "Appointment has no timezone extension (default UTC)",
                                "schema": STRING,
                            },
                        ],
                        errors=(400, 401, 404, 422),
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {
                            media: {"schema": FHIR_BUNDLE}
                            for media in ("application/fhir+json", "application/json")
                        },
                    },
                }
            },
            "/api/journeys/{key}/survey": {
                "get": _op(
                    "Survey report for a period: asked, answered, response rate, score "
                    "distribution and NPS per question",
                    params=[*KEY, *DATE_RANGE],
                    errors=(400, 401, 404),
                )
            },
            "/api/journeys/{key}/survey.csv": {
                "get": _op(
                    "The period's survey answers as CSV (journey, question, score, answered_at, "
                    "enrollment_id: ids only, no patient data)",
                    params=[*KEY, *DATE_RANGE],
                    errors=(400, 401, 404),
                )
            },
            "/api/journeys/{key}/versions": {
                "get": _op(
                    "The journey's versions, newest first, with the active enrollments that "
                    "follow each (an edit applies to new enrollments; running ones keep theirs)",
                    params=KEY,
                )
            },
            "/api/journeys/{key}/definition": {
                "get": _op(
                    "A version's YAML as saved (`definition`), the current one by default",
                    params=[
                        *KEY,
                        {
                            "name": "version",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1},
                        },
                    ],
                    errors=(400, 401, 404),
                ),
                "put": {
                    **_op(
                        "Save the journey's YAML (the body) as its next version, or create it "
                        "(201); the same text again changes nothing (`changed`: false). Checked "
                        "as the builder and `hub journey validate` check it: 422 gives the "
                        "`line` and `field` of the problem; the key in the text must be {key}",
                        params=KEY,
                        errors=(400, 401, 404, 422),
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {"application/yaml": {"schema": {"type": "string"}}},
                    },
                },
            },
            "/api/journeys/{key}/migrate": {
                "post": _op(
                    "Move every active enrollment on an older version to the current one "
                    "(kept steps re-planned, new steps planned or skipped when due, removed "
                    "steps cancelled); answers the counts",
                    params=KEY,
                )
            },
            "/api/journeys/{key}/status": {
                "post": _op(
                    "Pause, resume or stop a journey (stop cancels pending steps; resuming a "
                    "stopped journey plans again those not yet due)",
                    params=KEY,
                    body={
                        "type": "object",
                        "required": ["status"],
                        "properties": {"status": {"enum": ["active", "paused", "stopped"]}},
                    },
                    errors=(401, 404, 422),
                )
            },
            "/api/journeys/{key}/enrollments": {
                "post": _op(
                    "Enroll a patient (matched by phone or email, or created), optionally for an "
                    "appointment; the same patient and appointment again is answered 200",
                    params=KEY,
                    ok=201,
                    errors=(401, 404, 422),
                    body={
                        "type": "object",
                        "required": ["patient"],
                        "properties": {
                            "patient": {
                                "type": "object",
                                "properties": {
                                    k: {"type": "string"}
                                    for k in (
                                        "phone",
                                        "email",
                                        "name",
                                        "language",
                                        "country",
                                        "time_zone",
                                    )
                                },
                            },
                            "appointment": {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "string"},
                                    "start": {"type": "string", "format": "date-time"},
                                    "location": {"type": "string"},
                                    "provider": {"type": "string"},
                                    "status": {
                                        "description": "FHIR Appointment.status codes; an "
                                        "EHR's words (Scheduled, Checked In, Completed, No "
                                        "Show, Canceled) read the same; any other is 422",
                                        "enum": [
                                            "booked",
                                            "arrived",
                                            "checked-in",
                                            "fulfilled",
                                            "noshow",
                                            "cancelled",
                                            "entered-in-error",
                                        ],
                                    },
                                },
                            },
                        },
                    },
                )
            },
            **patients_api.openapi_paths(_op, ID),
            **reports_api.openapi_paths(_op),
            "/api/patients/{id}/consents.fhir": {
                "get": _op(
                    "The patient's consent history as a FHIR R4 Bundle of Consent resources "
                    "(application/fhir+json; audited)",
                    params=ID,
                )
            },
            "/api/patients/{id}/export": {
                "get": _op(
                    "Admins: everything held about the patient (Patient, every message as a "
                    "Communication, Consent, Appointment, QuestionnaireResponse) as a FHIR R4 "
                    "Bundle (application/fhir+json; audited)",
                    params=ID,
                )
            },
            "/api/canned-responses/{id}/render": {
                "get": _op(
                    "A saved reply with the patient's first name and the clinic name filled in",
                    params=[
                        *ID,
                        {
                            "name": "conversation",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "format": "uuid"},
                        },
                    ],
                    errors=(400, 401, 404, 422),
                )
            },
        },
    }


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())
