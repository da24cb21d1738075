"""REST API under /api/: the same actions and access rules as the pages, in JSON.
Authenticated by the session cookie (+ X-CSRF-Token on writes) or a bearer token."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import jinja2
from aiohttp import web
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import select

from hub.channels.registry import connected_providers
from hub.consent.exceptions import ConsentRefused
from hub.enums import Channel, ConversationStatus, Priority
from hub.errors import HubError
from hub.inbox import actions
from hub.inbox.actions import assignment, conversations, listing
from hub.inbox.exceptions import NotFound
from hub.inbox.models import CannedResponse
from web.auth import current
from web.keys import DB, PRESENCE, RING, SETTINGS
from web.tasks import hand_out_soon, release_soon

_sandbox = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


def plain(value: Any) -> Any:
    """Dataclasses, enums, ids and times as JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    return value


def error(status: int, message: str, code: str | None = None) -> web.Response:
    body: dict[str, Any] = {"status": status, "message": message}
    if code:
        body["code"] = code
    return web.json_response({"error": body}, status=status)


def _uuid(request: web.Request, name: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise web.HTTPNotFound() from None


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="the body is not JSON") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return data


async def me(request: web.Request) -> web.Response:
    ctx = current(request)
    return web.json_response(
        {
            "staff_id": str(ctx.staff_id),
            "role": ctx.role.value,
            "display_name": ctx.display_name,
            "team_ids": sorted(str(t) for t in ctx.team_ids),
            "via": ctx.via,
        }
    )


async def list_conversations(request: web.Request) -> web.Response:
    try:
        filters = listing.InboxFilters.parse(dict(request.query))
        limit = int(request.query.get("limit", listing.DEFAULT_PAGE))
        page = await listing.do_list_inbox(
            request.app[DB],
            request.app[RING],
            current(request),
            filters,
            cursor=request.query.get("cursor"),
            limit=limit,
        )
    except (listing.BadFilter, ValueError) as exc:
        return error(400, str(exc))
    return web.json_response(
        {
            "items": [dict(plain(r), overdue=r.overdue(page.now)) for r in page.rows],
            "next_cursor": page.next_cursor,
            "unread": page.unread,
            "unread_more": page.unread_more,
        }
    )


async def get_conversation(request: web.Request) -> web.Response:
    try:
        view = await conversations.do_open_conversation(
            request.app[DB],
            request.app[RING],
            current(request),
            _uuid(request),
            connected=connected_providers(request.app[SETTINGS]),
        )
    except NotFound:
        return error(404, "No such conversation.")
    return web.json_response(plain(view))


def channel_of(request: web.Request, value: object) -> Channel | None:
    if value is None:
        return None
    try:
        channel = Channel(str(value))
    except ValueError:
        raise ValueError(f"channel must be one of {', '.join(c.value for c in Channel)}") from None
    if channel not in connected_providers(request.app[SETTINGS]):
        raise ValueError(f"{channel.value} is not set up on this hub")
    return channel


async def post_message(request: web.Request) -> web.Response:
    data = await read_json(request)
    return await queue_reply(request, str(data.get("body", "")), data.get("channel"))


async def queue_reply(
    request: web.Request, body: str, channel: object, files: Sequence[Any] = ()
) -> web.Response:
    """A staff reply through the consent gate, as the JSON and the multipart forms both post
    it: 202 with the message id, or the reason it was refused."""
    try:
        queued = await actions.do_reply(
            request.app[DB],
            request.app[RING],
            current(request),
            _uuid(request),
            body,
            channel=channel_of(request, channel),
            files=list(files),
        )
    except NotFound:
        return error(404, "No such conversation.")
    except ConsentRefused as exc:
        return error(409, str(exc), exc.code)
    except ValueError as exc:
        return error(422, str(exc))
    release_soon(request.app, queued.effect_ids)
    return web.json_response({"message_id": str(queued.message_id), "status": "queued"}, status=202)


async def post_note(request: web.Request) -> web.Response:
    data = await read_json(request)
    try:
        result = await conversations.do_add_note(
            request.app[DB],
            request.app[RING],
            current(request),
            _uuid(request),
            str(data.get("body", "")),
        )
    except NotFound:
        return error(404, "No such conversation.")
    except ValueError as exc:
        return error(422, str(exc))
    release_soon(request.app, result.effect_ids)
    return web.json_response(
        {"note_id": str(result.note_id), "mentioned": [str(m) for m in result.mentioned]},
        status=201,
    )


async def post_status(request: web.Request) -> web.Response:
    data = await read_json(request)
    try:
        status = ConversationStatus(str(data.get("status", "")))
        raw = data.get("snoozed_until")
        until = datetime.fromisoformat(str(raw)) if raw else None
        if until is not None and until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
        effects = await conversations.do_set_status(
            request.app[DB], current(request), _uuid(request), status, snoozed_until=until
        )
    except NotFound:
        return error(404, "No such conversation.")
    except ValueError as exc:
        return error(422, str(exc))
    release_soon(request.app, effects)
    if status in (ConversationStatus.RESOLVED, ConversationStatus.SNOOZED):
        hand_out_soon(request.app, current(request).staff_id)
    return web.json_response({"status": status.value})


async def post_priority(request: web.Request) -> web.Response:
    data = await read_json(request)
    try:
        priority = Priority(str(data.get("priority", "")))
        effects = await conversations.do_set_priority(
            request.app[DB], current(request), _uuid(request), priority
        )
    except NotFound:
        return error(404, "No such conversation.")
    except ValueError as exc:
        return error(422, str(exc))
    release_soon(request.app, effects)
    return web.json_response({"priority": priority.value})


async def post_assign(request: web.Request) -> web.Response:
    ctx = current(request)
    data = await read_json(request)
    cid = _uuid(request)
    try:
        async with request.app[DB].reader() as session:
            await conversations.visible_conversation(session, ctx, cid)
        raw = data.get("staff_id")
        result = await assignment.do_assign(
            request.app[DB], ctx.actor, cid, uuid.UUID(str(raw)) if raw else None
        )
    except NotFound:
        return error(404, "No such conversation.")
    except ValueError as exc:
        return error(422, str(exc))
    except HubError as exc:
        return error(409, str(exc), getattr(exc, "code", None))
    release_soon(request.app, result.effect_ids)
    if result.freed_staff_id is not None:
        handed = await assignment.do_hand_out_backlog(
            request.app[DB], result.freed_staff_id, await request.app[PRESENCE].online()
        )
        release_soon(request.app, handed.effect_ids)
    return web.json_response(
        {"assignee_id": str(result.assignee_id) if result.assignee_id else None}
    )


async def claim_next(request: web.Request) -> web.Response:
    claimed = await assignment.do_claim_next(request.app[DB], current(request).staff_id)
    release_soon(request.app, claimed.effect_ids)
    return web.json_response(
        {"conversation_id": str(claimed.conversation_id) if claimed.conversation_id else None}
    )


async def render_canned(request: web.Request) -> web.Response:
    """A canned response with this conversation's placeholders filled in."""
    ctx = current(request)
    try:
        cid = uuid.UUID(request.query.get("conversation", ""))
    except ValueError:
        return error(400, "conversation=<id> is required")
    async with request.app[DB].reader() as session:
        canned = await session.get(CannedResponse, _uuid(request))
        if canned is None:
            return error(404, "No such canned response.")
    try:
        view = await conversations.do_open_conversation(
            request.app[DB],
            request.app[RING],
            ctx,
            cid,
            connected=connected_providers(request.app[SETTINGS]),
        )
    except NotFound:
        return error(404, "No such conversation.")
    try:
        text = _sandbox.from_string(canned.body).render(
            first_name=view.patient.first_name or "there",
            clinic_name=request.app[SETTINGS].clinic_name,
        )
    except jinja2.TemplateError as exc:
        return error(422, f"the canned response has a template error: {exc}")
    return web.json_response({"text": text})


async def list_canned(request: web.Request) -> web.Response:
    async with request.app[DB].reader() as session:
        rows = (await session.scalars(select(CannedResponse).order_by(CannedResponse.title))).all()
    return web.json_response(
        {
            "items": [
                {
                    "id": str(r.id),
                    "title": r.title,
                    "team_id": str(r.team_id) if r.team_id else None,
                }
                for r in rows
            ]
        }
    )


async def export_consents(request: web.Request) -> web.Response:
    """The patient's whole consent history as FHIR R4 Consent resources in a Bundle."""
    from hub.consent.fhir import do_export_consents

    ctx = current(request)
    pid = _uuid(request)
    try:
        async with request.app[DB].reader() as session:
            await conversations.visible_patient(session, ctx, pid)
        bundle = await do_export_consents(
            request.app[DB], ctx.actor, pid, organization=request.app[SETTINGS].clinic_name
        )
    except NotFound:
        return error(404, "No such patient.")
    return web.json_response(bundle, content_type="application/fhir+json")


def _template_admin(request: web.Request) -> web.Response | None:
    """Templates are the admins' (as on the pages): anyone else is told there is nothing."""
    return None if current(request).is_admin else error(404, "Not found.")


async def list_templates(request: web.Request) -> web.Response:
    from hub.templates.actions import do_list_templates

    if (refused := _template_admin(request)) is not None:
        return refused
    return web.json_response({"items": plain(await do_list_templates(request.app[DB]))})


async def put_template_variant(request: web.Request) -> web.Response:
    """Create or replace one variant after the save check; 422 names the variable, filter or
    test and its line, and nothing is saved."""
    from hub.templates import TemplateInvalid, TemplateMissing
    from hub.templates.actions import do_save_variant

    if (refused := _template_admin(request)) is not None:
        return refused
    data = await read_json(request)
    body, subject, html = data.get("body"), data.get("subject"), data.get("html")
    if not isinstance(body, str):
        return error(422, "body: expected the text of the message", "template_invalid")
    for name, value in (("subject", subject), ("html", html)):
        if value is not None and not isinstance(value, str):
            return error(422, f"{name}: expected text or null", "template_invalid")
    m = request.match_info
    try:
        saved = await do_save_variant(
            request.app[DB], current(request).actor, m["key"], m["channel"], m["locale"],
            subject, body, html,
        )  # fmt: skip
    except TemplateMissing as exc:
        return error(404, str(exc))
    except TemplateInvalid as exc:
        problem = {"status": 422, "message": f"Not saved: {exc}", "code": "template_invalid"}
        where = {"name": exc.name, "line": exc.line, "part": exc.part}
        problem.update({k: v for k, v in where.items() if v is not None})
        return web.json_response({"error": problem}, status=422)
    return web.json_response({"variant": plain(saved.variant), "warnings": saved.warnings})
