"""The journey definition over the REST API: read a version's YAML, save a new one (the same
parser and messages as the builder and `hub journey validate`), list the versions, and move
running enrollments to the current version. Coordinators and admins only, like the page."""

from __future__ import annotations

from aiohttp import web

from hub.inbox.exceptions import NotFound
from hub.journeys.definitions import DEFAULT_MAX_BYTES, JourneyInvalid
from hub.journeys.versions import (
    do_migrate_enrollments,
    do_save_journey,
    do_version_text,
    do_versions,
)
from web.api import error
from web.journeys import coordinator
from web.keys import DB


async def api_versions(request: web.Request) -> web.Response:
    coordinator(request)
    try:
        journey, rows, _ = await do_versions(request.app[DB], request.match_info["key"])
    except NotFound:
        return error(404, "No such journey.")
    return web.json_response(
        {
            "key": journey.key,
            "version": journey.version,
            "versions": [
                {
                    "version": r.version,
                    "created_at": r.created_at.isoformat(),
                    "current": r.current,
                    "active_enrollments": r.active,
                }
                for r in rows
            ],
        }
    )


async def api_definition(request: web.Request) -> web.Response:
    coordinator(request)
    key = request.match_info["key"]
    try:
        journey, _, text = await do_versions(request.app[DB], key)
        version = journey.version
        asked = request.query.get("version", "")
        if asked:
            if not asked.isdigit():
                return error(400, "version must be a number like 2", "bad_version")
            version = int(asked)
            text = await do_version_text(request.app[DB], key, version)
    except NotFound as exc:
        return error(404, f"{exc}.")
    return web.json_response({"key": key, "version": version, "definition": text})


async def api_save_definition(request: web.Request) -> web.Response:
    """The body is the journey's YAML. 201 for a new journey, 200 for a new version (or the
    same text again, "changed": false); 422 names the line and field."""
    ctx = coordinator(request)
    key = request.match_info["key"]
    raw = await request.content.read(DEFAULT_MAX_BYTES + 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return error(400, "The body is not UTF-8 text; send the journey's YAML.", "not_text")
    try:
        saved = await do_save_journey(request.app[DB], ctx.actor, text, "body", expected_key=key)
    except JourneyInvalid as exc:
        problem = {
            "status": 422,
            "code": "invalid_journey",
            "message": str(exc),
            "line": exc.line,
            "field": exc.field,
        }
        return web.json_response({"error": problem}, status=422)
    body = {"key": saved.key, "version": saved.version, "changed": saved.changed}
    return web.json_response(body, status=201 if saved.created else 200)


async def api_migrate(request: web.Request) -> web.Response:
    ctx = coordinator(request)
    try:
        moved = await do_migrate_enrollments(request.app[DB], ctx.actor, request.match_info["key"])
    except NotFound:
        return error(404, "No such journey.")
    return web.json_response(
        {
            "key": moved.key,
            "version": moved.version,
            "moved": moved.moved,
            "steps_added": moved.added,
            "steps_cancelled": moved.cancelled,
        }
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/journeys/{key}/versions", api_versions, name="api_journey_versions"),
        web.get("/api/journeys/{key}/definition", api_definition, name="api_journey_definition"),
        web.put(
            "/api/journeys/{key}/definition",
            api_save_definition,
            name="api_journey_save_definition",
        ),
        web.post("/api/journeys/{key}/migrate", api_migrate, name="api_journey_migrate"),
    ]
