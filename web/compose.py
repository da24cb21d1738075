"""The reply composer's routes (issue 16): replies with files, send later, and the signed
links Twilio fetches outbound MMS files from.

The composer posts a reply with files as multipart/form-data to the same
``POST /api/conversations/{id}/messages`` as a text reply: the route is ``post_message`` here,
which hands JSON on to ``web.api.post_message``. Scheduling is
``/api/conversations/{id}/scheduled`` in JSON with an ISO time and offset; the page's own form
posts the picker's local time, read in the staff member's zone.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy

from hub.consent.exceptions import ConsentRefused
from hub.db import utcnow
from hub.inbox.actions.outgoing import (
    MAX_SMS_CHARS,
    MAX_TEXT_CHARS,
    OutgoingFile,
    do_read_media,
)
from hub.inbox.actions.scheduled import (
    AlreadyHandled,
    ScheduledView,
    do_cancel_scheduled,
    do_list_scheduled,
    do_schedule_reply,
)
from hub.inbox.exceptions import NotFound
from web import api
from web.api import channel_of, error, plain, read_json
from web.auth import current
from web.keys import DB, RING
from web.render import fragment
from web.tasks import release_soon


def _uuid(request: web.Request, name: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise web.HTTPNotFound() from None


async def read_form(request: web.Request) -> MultiDictProxy[Any]:
    """The posted form; a body that is not a readable form is the client's error (400)."""
    try:
        return await request.post()
    except (HttpProcessingError, ValueError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise web.HTTPBadRequest(
            text=f"the form could not be read: {' '.join(str(message).split())[:120]}"
        ) from None


def files_of(form: MultiDictProxy[Any]) -> list[OutgoingFile]:
    """The files of a posted form (an empty file input posts a part with no name)."""
    found = []
    for value in form.getall("files", []):
        if isinstance(value, web.FileField) and value.filename:
            found.append(
                OutgoingFile(
                    value.filename,
                    (value.content_type or "").split(";")[0].strip().lower(),
                    value.file.read(),
                )
            )
    return found


async def post_message(request: web.Request) -> web.Response:
    """``POST /api/conversations/{id}/messages``: JSON for a text reply (``web.api``), or
    multipart/form-data (``body``, ``channel``, ``files``) for a reply with files."""
    if request.content_type != "multipart/form-data":
        return await api.post_message(request)
    try:
        form = await read_form(request)
    except web.HTTPBadRequest as exc:
        return error(400, exc.text or "the form could not be read")
    return await api.queue_reply(
        request, str(form.get("body", "")), form.get("channel") or None, files_of(form)
    )


async def media(request: web.Request) -> web.Response:
    """An outbound file, for Twilio to fetch while it sends an MMS. The signed, expiring token
    in the path is the only credential; anything else is a 404 that says nothing more."""
    found = await do_read_media(
        request.app[DB], request.app[RING], request.match_info["token"], utcnow()
    )
    if found is None:
        raise web.HTTPNotFound()
    return web.Response(
        body=found.data,
        content_type=found.content_type,
        headers={"Cache-Control": "private, no-store", "Content-Security-Policy": "sandbox"},
    )


# -- send later: JSON API ------------------------------------------------------------------


def _item(view: ScheduledView) -> dict[str, Any]:
    item: dict[str, Any] = plain(view)
    del item["effect_ids"]
    return item


async def list_scheduled(request: web.Request) -> web.Response:
    try:
        views = await do_list_scheduled(
            request.app[DB], request.app[RING], current(request), _uuid(request)
        )
    except NotFound:
        return error(404, "No such conversation.")
    return web.json_response({"items": [_item(v) for v in views]})


async def create_scheduled(request: web.Request) -> web.Response:
    data = await read_json(request)
    try:
        raw = data.get("send_at")
        if not isinstance(raw, str) or not raw:
            raise ValueError("send_at is required: an ISO 8601 time with its offset")
        try:
            send_at = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(f"send_at is not an ISO 8601 time: {raw[:40]!r}") from None
        view = await do_schedule_reply(
            request.app[DB],
            request.app[RING],
            current(request),
            _uuid(request),
            str(data.get("body", "")),
            send_at,
            channel=channel_of(request, data.get("channel")),
        )
    except NotFound:
        return error(404, "No such conversation.")
    except ConsentRefused as exc:
        return error(409, str(exc), exc.code)
    except ValueError as exc:
        return error(422, str(exc))
    release_soon(request.app, view.effect_ids)
    return web.json_response(_item(view), status=201)


async def cancel_scheduled(request: web.Request) -> web.Response:
    try:
        view = await do_cancel_scheduled(
            request.app[DB], request.app[RING], current(request), _uuid(request)
        )
    except NotFound:
        return error(404, "No such scheduled reply.")
    except AlreadyHandled as exc:
        return error(409, str(exc), "already_handled")
    release_soon(request.app, view.effect_ids)
    return web.json_response(_item(view))


# -- send later: the composer's fragments ----------------------------------------------------


def _list_html(
    request: web.Request,
    views: list[ScheduledView],
    cid: uuid.UUID,
    warnings: tuple[str, ...] = (),
) -> web.Response:
    html = fragment(
        request, "_scheduled_list.html", scheduled=views, conversation_id=cid, warnings=warnings
    )
    return web.Response(text=html, content_type="text/html")


async def scheduled_fragment(request: web.Request) -> web.Response:
    cid = _uuid(request)
    try:
        views = await do_list_scheduled(request.app[DB], request.app[RING], current(request), cid)
    except NotFound:
        raise web.HTTPNotFound() from None
    return _list_html(request, views, cid)


def local_time(value: str, zone: str) -> datetime:
    """A datetime-local value ("2026-12-08T09:00") read in ``zone``."""
    try:
        naive = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("choose the day and time to send it") from None
    if naive.tzinfo is not None:
        return naive
    try:
        return naive.replace(tzinfo=ZoneInfo(zone))
    except (ZoneInfoNotFoundError, ValueError):
        return naive.replace(tzinfo=ZoneInfo("UTC"))


async def schedule_from_composer(request: web.Request) -> web.Response:
    """The composer's "Send later": the picker's time is in the staff member's zone. Answers
    the updated list, or 422 with the reason as text."""
    form = await read_form(request)
    ctx = current(request)
    cid = _uuid(request)
    if files_of(form):
        return web.Response(
            text="Not scheduled: files cannot wait to be sent yet; send them now, or remove them.",
            status=422,
        )
    try:
        created = await do_schedule_reply(
            request.app[DB],
            request.app[RING],
            ctx,
            cid,
            str(form.get("body", "")),
            local_time(str(form.get("send_at", "")), ctx.time_zone),
            channel=channel_of(request, form.get("channel") or None),
        )
        views = await do_list_scheduled(request.app[DB], request.app[RING], ctx, cid)
    except NotFound:
        raise web.HTTPNotFound() from None
    except (ConsentRefused, ValueError) as exc:
        return web.Response(text=f"Not scheduled: {exc}", status=422)
    release_soon(request.app, created.effect_ids)
    return _list_html(request, views, cid, created.warnings)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/media/{token}", media, name="outbound_media"),
        web.get("/conversations/{id}/scheduled", scheduled_fragment, name="scheduled_fragment"),
        web.post("/conversations/{id}/scheduled", schedule_from_composer, name="schedule_reply"),
        web.get("/api/conversations/{id}/scheduled", list_scheduled, name="api_scheduled"),
        web.post("/api/conversations/{id}/scheduled", create_scheduled, name="api_schedule"),
        web.delete("/api/scheduled/{id}", cancel_scheduled, name="api_cancel_scheduled"),
    ]


# -- OpenAPI (web.openapi includes these) ----------------------------------------------------

REPLY_JSON = {
    "type": "object",
    "required": ["body"],
    "properties": {
        "body": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_TEXT_CHARS,
            "description": f"At most {MAX_SMS_CHARS} characters by SMS (refused with 422 above "
            f"that, never cut short), {MAX_TEXT_CHARS} otherwise.",
        },
        "channel": {"enum": ["sms", "email", "voice", "chat"]},
    },
}
REPLY_FILES = {
    "type": "object",
    "properties": {
        "body": {"type": "string", "maxLength": MAX_TEXT_CHARS},
        "channel": {"enum": ["sms", "email"]},
        "files": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "Up to 10 files, 5 MB in all: JPEG, PNG, GIF or PDF by SMS (sent "
            "as MMS), any allowed type by email (attached). Anything else is refused with "
            "422 and the reason, before anything is stored.",
        },
    },
}
SCHEDULE_JSON = {
    "type": "object",
    "required": ["body", "send_at"],
    "properties": {
        "body": REPLY_JSON["properties"]["body"],  # type: ignore[index]
        "channel": {"enum": ["sms", "email", "voice", "chat"]},
        "send_at": {
            "type": "string",
            "format": "date-time",
            "description": "ISO 8601 with its offset, at least a minute and at most 90 days ahead.",
        },
    },
}


def openapi_reply(op: dict[str, Any]) -> dict[str, Any]:
    """The reply operation with both request forms: JSON, or multipart with files."""
    op["summary"] = (
        "Reply to the patient (on the channel given, else the one they last wrote on); "
        "multipart/form-data to attach files"
    )
    op["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {"schema": REPLY_JSON},
            "multipart/form-data": {"schema": REPLY_FILES},
        },
    }
    return op


def openapi_paths(operation: Any, id_param: list[dict[str, Any]]) -> dict[str, Any]:
    """Send later, described with ``web.openapi``'s operation builder."""
    return {
        "/api/conversations/{id}/scheduled": {
            "get": operation(
                "Replies scheduled in this conversation and still waiting (audited)",
                params=id_param,
            ),
            "post": operation(
                "Schedule a reply: sent at send_at through the consent gate as it is then "
                "(refused then: a failed message in the thread with the reason)",
                body=SCHEDULE_JSON,
                ok=201,
                params=id_param,
                errors=(401, 404, 409, 422),
            ),
        },
        "/api/scheduled/{id}": {
            "delete": operation(
                "Cancel a scheduled reply still waiting (409 once sent, refused or cancelled)",
                params=id_param,
                errors=(401, 404, 409),
            )
        },
    }
