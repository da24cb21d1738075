"""Mentions: the page of notes that name me (/mentions), its API (/api/me/mentions), who the
note box's ``@`` picker offers in a conversation, and the canned replies its reply box's ``/``
offers."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from aiohttp import web

from hub.inbox.actions import mentions
from hub.inbox.exceptions import NotFound
from web.api import error, read_json
from web.auth import current
from web.keys import DB, RING
from web.render import render


def _id(request: web.Request, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise web.HTTPNotFound() from None


def _item(view: mentions.MentionView) -> dict[str, Any]:
    return {
        "note_id": str(view.note_id),
        "conversation_id": str(view.conversation_id),
        "author": view.author,
        "body": view.body,
        "created_at": view.created_at.isoformat(),
        "read": view.read,
        "patient": view.patient,
    }


def _query(request: web.Request) -> tuple[int, datetime | None, bool]:
    """limit, before and unread from the query string; ValueError says which is wrong."""
    raw_limit = request.query.get("limit", str(mentions.DEFAULT_MENTION_PAGE))
    if not raw_limit.isdigit():
        raise ValueError(f"limit must be a whole number from 0 to {mentions.DEFAULT_MENTION_PAGE}")
    before = None
    if raw := request.query.get("before"):
        try:
            before = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(
                "before must be a time like 2026-12-07T09:30:00+00:00 (a mention's created_at)"
            ) from None
        if before.tzinfo is None:
            raise ValueError("before needs a time zone, e.g. +00:00")
    unread = request.query.get("unread", "")
    if unread not in ("", "0", "1", "true", "false"):
        raise ValueError("unread must be 1 or 0")
    return int(raw_limit), before, unread in ("1", "true")


async def page(request: web.Request) -> web.Response:
    ctx = current(request)
    unread_only = request.query.get("show") == "unread"
    listed = await mentions.do_list_mentions(
        request.app[DB], request.app[RING], ctx, unread_only=unread_only
    )
    return render(
        request,
        "mentions.html",
        nav="mentions",
        items=listed.items,
        unread_mentions=listed.unread,
        unread_only=unread_only,
    )


async def open_mention(request: web.Request) -> web.StreamResponse:
    """Mark the mention read and go to its note in the conversation."""
    note_id = _id(request, "note_id")
    try:
        conversation_id = await mentions.do_open_mention(request.app[DB], current(request), note_id)
    except NotFound:
        raise web.HTTPNotFound() from None
    raise web.HTTPSeeOther(f"/conversations/{conversation_id}#note-{note_id}")


async def api_list(request: web.Request) -> web.Response:
    ctx = current(request)
    try:
        limit, before, unread_only = _query(request)
    except ValueError as exc:
        return error(400, str(exc))
    if limit == 0:  # the badge: a count, no note decrypted
        unread = await mentions.do_unread_mentions(request.app[DB], ctx)
        return web.json_response({"items": [], "unread": unread})
    listed = await mentions.do_list_mentions(
        request.app[DB],
        request.app[RING],
        ctx,
        limit=limit,
        before=before,
        unread_only=unread_only,
    )
    return web.json_response({"items": [_item(i) for i in listed.items], "unread": listed.unread})


async def api_mark_read(request: web.Request) -> web.Response:
    data = await read_json(request)
    raw = data.get("note_ids")
    if not isinstance(raw, list) or not raw:
        return error(422, 'note_ids must be a list of note ids, e.g. {"note_ids": ["…"]}')
    try:
        ids = [uuid.UUID(str(i)) for i in raw]
    except ValueError:
        return error(422, "every note id must be a UUID, as listed by GET /api/me/mentions")
    ctx = current(request)
    changed = await mentions.do_mark_mentions_read(request.app[DB], ctx, ids)
    unread = await mentions.do_unread_mentions(request.app[DB], ctx)
    return web.json_response({"marked": changed, "unread": unread})


async def api_candidates(request: web.Request) -> web.Response:
    """Who the ``@`` picker offers in this conversation."""
    try:
        people = await mentions.do_mention_candidates(
            request.app[DB], current(request), _id(request, "id")
        )
    except NotFound:
        return error(404, "No such conversation.")
    return web.json_response(
        {"items": [{"id": str(p.id), "name": p.name, "handle": p.handle} for p in people]}
    )


async def api_canned(request: web.Request) -> web.Response:
    """The canned replies the reply box's ``/`` offers in this conversation."""
    try:
        replies = await mentions.do_canned_choices(
            request.app[DB], current(request), _id(request, "id")
        )
    except NotFound:
        return error(404, "No such conversation.")
    return web.json_response({"items": [{"id": str(r.id), "title": r.title} for r in replies]})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/mentions", page, name="mentions"),
        web.get("/mentions/{note_id}", open_mention, name="open_mention"),
        web.get("/api/me/mentions", api_list, name="api_mentions"),
        web.post("/api/me/mentions/read", api_mark_read, name="api_mentions_read"),
        web.get(
            "/api/conversations/{id}/mention-candidates",
            api_candidates,
            name="api_mention_candidates",
        ),
        web.get(
            "/api/conversations/{id}/canned-responses",
            api_canned,
            name="api_conversation_canned",
        ),
    ]


def openapi_paths(op: Any, id_param: list[dict[str, Any]]) -> dict[str, Any]:
    """This module's part of /api/openapi.json (``op`` is web/openapi.py's ``_op``)."""

    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
            "description": description,
        }

    listed = op(
        "Notes that mention me, newest first, with read state and my unread count (audited "
        "when notes are listed; limit=0 gives the count alone)",
        params=[
            query(
                "limit",
                {"type": "integer", "minimum": 0, "maximum": mentions.DEFAULT_MENTION_PAGE},
                "How many (default and most: 50); 0 for the unread count only.",
            ),
            query(
                "before",
                {"type": "string", "format": "date-time"},
                "Only mentions older than this created_at (the next page).",
            ),
            query("unread", {"type": "string", "enum": ["0", "1"]}, "1: unread ones only."),
        ],
        errors=(400, 401),
    )
    read_body = {
        "type": "object",
        "required": ["note_ids"],
        "properties": {
            "note_ids": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "format": "uuid"},
            }
        },
    }
    return {
        "/api/me/mentions": {"get": listed},
        "/api/me/mentions/read": {
            "post": op(
                "Mark these mentions of mine read (opening the conversation does too)",
                body=read_body,
                errors=(400, 401, 422),
            )
        },
        "/api/conversations/{id}/canned-responses": {
            "get": op(
                "Canned replies for this conversation: the clinic's and its team's own, by title",
                params=id_param,
            )
        },
        "/api/conversations/{id}/mention-candidates": {
            "get": op(
                "Staff who can be @mentioned in this conversation (who can open it)",
                params=id_param,
            )
        },
    }
