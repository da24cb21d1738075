"""The patients API: search, a patient's profile (read, edit), merge and its undo, message
search within one patient, cancel an enrollment, start a conversation. Errors say in plain
words what was wrong (``{"error": {"status", "message", "code"?}}``)."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from hub.channels.registry import connected_providers
from hub.consent.exceptions import ConsentRefused
from hub.contact import InvalidContact, InvalidCountry, InvalidLanguage
from hub.enums import Channel
from hub.inbox.exceptions import NotFound
from hub.patients import merge, profile, search, start
from hub.patients.exceptions import NotAllowed, PatientConflict
from hub.patients.schemas import PatientChanges
from web.api import error, plain, read_json
from web.auth import current
from web.keys import DB, RING, SETTINGS
from web.tasks import release_soon

INVALID = (InvalidContact, InvalidCountry, InvalidLanguage, ValueError)
"""Errors that mean the request's content was wrong: 422 with the reason."""
FIELDS = frozenset(
    {"name", "phone", "email", "country", "language", "time_zone", "channel_order", "tags"}
    | {"external_ids", "verified"}
)
"""What PATCH /api/patients/{id} may name."""
MAX_LIST_LIMIT = 100
"""Most patients one page of the list answers."""


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/patients", list_patients, name="api_patients"),
        web.get("/api/patients/{id}", get_patient, name="api_patient"),
        web.patch("/api/patients/{id}", patch_patient, name="api_patient_patch"),
        web.post("/api/patients/{id}/merge", post_merge, name="api_patient_merge"),
        web.post("/api/patients/{id}/merges/{mid}/undo", post_undo, name="api_patient_merge_undo"),
        web.get("/api/patients/{id}/messages", get_messages, name="api_patient_messages"),
        web.post("/api/patients/{id}/conversations", post_conversation, name="api_patient_start"),
        web.post(
            "/api/patients/{id}/enrollments/{eid}/cancel",
            post_cancel_enrollment,
            name="api_patient_cancel_enrollment",
        ),
    ]


def _id(request: web.Request, name: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise web.HTTPNotFound() from None


def _refusal(exc: Exception) -> web.Response:
    """The answer for a domain error: 404, 403, 409 or 422 with its words."""
    if isinstance(exc, NotFound):
        return error(404, "No such patient (or you may not see them).")
    if isinstance(exc, NotAllowed):
        return error(403, f"{exc}.")
    if isinstance(exc, ConsentRefused):
        return error(409, f"Not sent: {exc}.", exc.code)
    if isinstance(exc, PatientConflict):
        return error(409, f"{exc}.", "conflict")
    return error(422, f"{exc}.")


async def list_patients(request: web.Request) -> web.Response:
    db, ring, ctx = request.app[DB], request.app[RING], current(request)
    q = request.query.get("q", "")
    if q.strip():
        region = request.app[SETTINGS].default_region
        found = await search.do_search_patients(db, ring, ctx, q, region=region)
        return web.json_response({"items": plain(found.hits), "by": found.by, "more": found.more})
    status = request.query.get("status", "all")
    if status not in ("all", "unknown", "known"):
        return error(400, "status must be all, unknown (unverified numbers) or known")
    verified = None if status == "all" else status == "known"
    try:
        limit = int(request.query.get("limit", profile.DEFAULT_LIST_LIMIT))
        before = uuid.UUID(request.query["before"]) if request.query.get("before") else None
    except ValueError:
        return error(400, "limit must be a number and before a patient id from next_before")
    if not 1 <= limit <= MAX_LIST_LIMIT:
        return error(400, f"limit must be between 1 and {MAX_LIST_LIMIT}")
    hits = await profile.do_list_patients(
        db, ring, ctx, verified=verified, limit=limit, before=before
    )
    following = str(hits[-1].id) if len(hits) == limit else None
    return web.json_response(
        {"items": plain(hits), "by": [], "more": following is not None, "next_before": following}
    )


async def get_patient(request: web.Request) -> web.Response:
    try:
        found = await profile.do_read_profile(
            request.app[DB],
            request.app[RING],
            current(request),
            _id(request),
            connected_providers(request.app[SETTINGS]),
        )
    except NotFound as exc:
        return _refusal(exc)
    return web.json_response(plain(found))


def _changes(data: dict[str, Any]) -> PatientChanges:
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise ValueError(
            f"unknown field {', '.join(unknown)}; a patient has {', '.join(sorted(FIELDS))}"
        )
    for name in ("name", "phone", "email", "country", "language", "time_zone"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise ValueError(f"{name} must be text (or null to leave it as it is)")
    for name in ("channel_order", "tags"):
        value = data.get(name)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            raise ValueError(f"{name} must be a list of text")
    ids = data.get("external_ids")
    pairs = None
    if ids is not None:
        if not isinstance(ids, list) or not all(
            isinstance(i, dict)
            and isinstance(i.get("system"), str)
            and isinstance(i.get("value"), str)
            for i in ids
        ):
            raise ValueError('external_ids must be a list of {"system": ..., "value": ...}')
        pairs = [(i["system"], i["value"]) for i in ids]
    verified = data.get("verified")
    if verified is not None and not isinstance(verified, bool):
        raise ValueError("verified must be true or false")
    return PatientChanges(
        name=data.get("name"),
        phone=data.get("phone"),
        email=data.get("email"),
        country=data.get("country"),
        language=data.get("language"),
        time_zone=data.get("time_zone"),
        channel_order=data.get("channel_order"),
        tags=data.get("tags"),
        external_ids=pairs,
        verified=verified,
    )


async def patch_patient(request: web.Request) -> web.Response:
    data = await read_json(request)
    try:
        changed = await profile.do_update_patient(
            request.app[DB],
            request.app[RING],
            current(request),
            _id(request),
            _changes(data),
            region=request.app[SETTINGS].default_region,
        )
    except (NotFound, NotAllowed, PatientConflict, *INVALID) as exc:
        return _refusal(exc)
    return web.json_response({"changed": changed})


async def post_merge(request: web.Request) -> web.Response:
    data = await read_json(request)
    try:
        source = uuid.UUID(str(data.get("source_id", "")))
    except ValueError:
        return error(422, "source_id must be the id of the unknown number's patient record.")
    try:
        done = await merge.do_merge_patients(
            request.app[DB], request.app[RING], current(request), _id(request), source
        )
    except (NotFound, NotAllowed, PatientConflict) as exc:
        return _refusal(exc)
    release_soon(request.app, done.effect_ids)
    return web.json_response(
        {"merge_id": str(done.merge_id), "moved": done.moved, "copied": list(done.copied)}
    )


async def post_undo(request: web.Request) -> web.Response:
    try:
        done = await merge.do_undo_merge(
            request.app[DB], request.app[RING], current(request), _id(request, "mid")
        )
    except NotFound:
        return error(404, "No such merge.")
    except (NotAllowed, PatientConflict) as exc:
        return _refusal(exc)
    release_soon(request.app, done.effect_ids)
    return web.json_response({"merge_id": str(done.merge_id), "moved": done.moved})


async def get_messages(request: web.Request) -> web.Response:
    try:
        found = await search.do_search_patient_messages(
            request.app[DB],
            request.app[RING],
            current(request),
            _id(request),
            request.query.get("q", ""),
        )
    except (NotFound, ValueError) as exc:
        return _refusal(exc)
    return web.json_response(plain(found))


async def post_conversation(request: web.Request) -> web.Response:
    data = await read_json(request)
    try:
        channel = Channel(str(data.get("channel", "")))
    except ValueError:
        names = ", ".join(c.value for c in Channel)
        return error(422, f"channel must be one of {names}.")
    try:
        started = await start.do_start_conversation(
            request.app[DB],
            request.app[RING],
            current(request),
            _id(request),
            channel,
            str(data.get("body", "")),
            connected=connected_providers(request.app[SETTINGS]),
        )
    except (NotFound, NotAllowed, PatientConflict, ConsentRefused, ValueError) as exc:
        return _refusal(exc)
    release_soon(request.app, started.effect_ids)
    return web.json_response(
        {
            "conversation_id": str(started.conversation_id),
            "message_id": str(started.message_id),
            "continued": started.continued,
            "status": "queued",
        },
        status=202,
    )


async def post_cancel_enrollment(request: web.Request) -> web.Response:
    try:
        steps = await profile.do_cancel_enrollment(
            request.app[DB], current(request), _id(request), _id(request, "eid")
        )
    except NotFound:
        return error(404, "No such enrollment for this patient.")
    except (NotAllowed, PatientConflict) as exc:
        return _refusal(exc)
    return web.json_response({"status": "cancelled", "steps_cancelled": steps})


def openapi_paths(operation: Any, id_param: list[dict[str, Any]]) -> dict[str, Any]:
    """The patients API, described with ``web.openapi``'s operation builder."""
    uuid_param = {"type": "string", "format": "uuid"}
    channels = ["sms", "email", "voice", "chat"]
    text = {"type": ["string", "null"]}
    changes = {
        "type": "object",
        "description": "Only the fields named change; null leaves one as it is, an empty "
        "name, phone or email clears it. Validated as the cohort import validates: phone "
        "read in `country` (else the clinic's), BCP-47 language, IANA zone.",
        "additionalProperties": False,
        "properties": {
            **{f: text for f in ("name", "phone", "email", "country", "language", "time_zone")},
            "channel_order": {
                "type": "array",
                "items": {"enum": ["sms", "email", "voice", "chat"]},
            },
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 40}},
            "external_ids": {
                "type": "array",
                "maxItems": 20,
                "items": {
                    "type": "object",
                    "required": ["system", "value"],
                    "properties": {
                        "system": {"type": "string", "maxLength": 200},
                        "value": {"type": "string", "maxLength": 64},
                    },
                },
            },
            "verified": {"type": "boolean"},
        },
    }
    merge_id = {"name": "mid", "in": "path", "required": True, "schema": uuid_param}
    enrollment_id = {"name": "eid", "in": "path", "required": True, "schema": uuid_param}
    return {
        "/api/patients": {
            "get": operation(
                "Search patients by name words or prefixes (3+ letters, accents aside), phone "
                "in any format, email or record number (MRN), through blind indexes; without "
                "q, the newest patients. Contact is shown in part to staff who share no "
                "conversation with the patient. Audited without the query.",
                params=[
                    {"name": "q", "in": "query", "required": False, "schema": {"type": "string"}},
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": {"enum": ["all", "unknown", "known"]},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT},
                    },
                    {
                        "name": "before",
                        "in": "query",
                        "required": False,
                        "description": "next_before of the page before (without q)",
                        "schema": uuid_param,
                    },
                ],
                errors=(400, 401),
            )
        },
        "/api/patients/{id}": {
            "get": operation(
                "A patient's profile, conversations the caller may open, journeys, record "
                "numbers and merges (audited)",
                params=id_param,
            ),
            "patch": operation(
                "Edit the profile (admins, or staff with one of the patient's conversations); "
                "409 when another patient has the phone, email or record number",
                body=changes,
                params=id_param,
                errors=(401, 403, 404, 409, 422),
            ),
        },
        "/api/patients/{id}/merge": {
            "post": operation(
                "Merge an unverified patient (source_id) into this one: conversations, "
                "consent history, enrollments, appointments and record numbers move (audited)",
                body={
                    "type": "object",
                    "required": ["source_id"],
                    "properties": {"source_id": uuid_param},
                },
                params=id_param,
                errors=(401, 403, 404, 409, 422),
            )
        },
        "/api/patients/{id}/merges/{mid}/undo": {
            "post": operation(
                "Admins: undo a merge into this patient; what moved goes back (audited)",
                params=[*id_param, merge_id],
                errors=(401, 403, 404, 409),
            )
        },
        "/api/patients/{id}/messages": {
            "get": operation(
                "Messages of this patient containing q (case and accents aside), among the "
                "newest 500 of the conversations the caller may open (audited)",
                params=[
                    *id_param,
                    {"name": "q", "in": "query", "required": True, "schema": {"type": "string"}},
                ],
                errors=(401, 404, 422),
            )
        },
        "/api/patients/{id}/conversations": {
            "post": operation(
                "Start a conversation: the message goes through the consent gate for care "
                "(409 with the reason and nothing written when refused), in the caller's team, "
                "assigned to them",
                body={
                    "type": "object",
                    "required": ["channel", "body"],
                    "properties": {
                        "channel": {"enum": channels},
                        "body": {"type": "string", "minLength": 1, "maxLength": 1600},
                    },
                },
                ok=202,
                params=id_param,
                errors=(401, 403, 404, 409, 422),
            )
        },
        "/api/patients/{id}/enrollments/{eid}/cancel": {
            "post": operation(
                "Cancel one of the patient's journey enrollments and its steps not yet sent",
                params=[*id_param, enrollment_id],
                errors=(401, 404, 409),
            )
        },
    }
