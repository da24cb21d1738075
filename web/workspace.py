"""The staff workspace: one page with the conversation list, the thread and the handling panel.

Every URL answers a whole page, so links, reloads and the back button work; a request from
htmx (``HX-Request``) gets only the part it swaps: opening a conversation returns the thread
and panel, a handling control returns the panel. Plain form posts (no script) still get a
redirect with a notice.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from zoneinfo import ZoneInfo

from aiohttp import web

from hub.channels.registry import connected_providers
from hub.consent.models import RECORDED_PURPOSES
from hub.inbox.access import StaffContext
from hub.inbox.actions import conversations, listing, workspace
from hub.inbox.exceptions import NotFound
from web.auth import current
from web.keys import DB, RING, SETTINGS
from web.render import fragment, render

LIST_KEYS = ("view", "team", "status", "channel", "priority", "tag", "overdue")
"""Query keys that belong to the list's filters (kept when a conversation is opened)."""


def path_uuid(request: web.Request, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise web.HTTPNotFound() from None


def is_htmx(request: web.Request) -> bool:
    """A swap request from htmx. A history restore wants the whole page back."""
    return (
        request.headers.get("HX-Request") == "true"
        and request.headers.get("HX-History-Restore-Request") != "true"
    )


def list_query(request: web.Request) -> dict[str, str]:
    """The list's filters: from this URL, or for a post from the page it was made on."""
    source: dict[str, str] = dict(request.query)
    if request.method == "POST" and "HX-Current-URL" in request.headers:
        source = dict(parse_qsl(urlsplit(request.headers["HX-Current-URL"]).query))
    return {k: v for k, v in source.items() if k in LIST_KEYS and v}


def _filters(query: dict[str, str]) -> listing.InboxFilters:
    try:
        return listing.InboxFilters.parse(query)
    except listing.BadFilter as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


async def list_context(request: web.Request, query: dict[str, str]) -> dict[str, Any]:
    ctx = current(request)
    filters = _filters(query)
    try:
        page = await listing.do_list_inbox(
            request.app[DB], request.app[RING], ctx, filters, cursor=request.query.get("cursor")
        )
    except listing.BadFilter as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    choices = await workspace.do_handling_choices(request.app[DB], None, with_canned=False)
    return {
        "page": page,
        "now": page.now,
        "filters": filters,
        "teams": await workspace.do_visible_teams(request.app[DB], ctx),
        "all_teams": choices.teams,
        "everyone": choices.assignable,
        "query": urlencode(query),
        "unread": page.unread_label,
    }


async def inbox(request: web.Request) -> web.Response:
    listed = await list_context(request, list_query(request))
    return render(request, "workspace.html", nav="inbox", c=None, **listed)


async def inbox_row(request: web.Request) -> web.Response:
    """One row under the current filters, for live updates; 204 when it is not in the list."""
    ctx = current(request)
    page = await listing.do_list_inbox(
        request.app[DB],
        request.app[RING],
        ctx,
        _filters(list_query(request)),
        only=path_uuid(request, "id"),
    )
    headers = {"X-Unread-Count": page.unread_label or "0"}
    if not page.rows:
        return web.Response(status=204, headers=headers)
    html = fragment(
        request, "_row.html", row=page.rows[0], now=page.now, query=urlencode(list_query(request))
    )
    return web.Response(text=html, content_type="text/html", headers=headers)


# -- one conversation --------------------------------------------------------------------


async def conversation_context(request: web.Request, cid: uuid.UUID) -> dict[str, Any]:
    """Everything the thread and the panel show (raises NotFound when not visible)."""
    ctx = current(request)
    view = await conversations.do_open_conversation(
        request.app[DB],
        request.app[RING],
        ctx,
        cid,
        connected=connected_providers(request.app[SETTINGS]),
    )
    timeline = sorted(
        [("message", m) for m in view.messages] + [("note", n) for n in view.notes],
        key=lambda item: item[1].created_at,
    )
    choices = await workspace.do_handling_choices(request.app[DB], view.team_id)
    now = datetime.now(UTC)
    overdue = (
        view.first_responded_at is None
        and view.first_response_due_at is not None
        and view.first_response_due_at < now
    )
    from hub.consent.actions import STAFF_REASONS

    return {
        "consent_reasons": STAFF_REASONS,
        "c": view,
        "timeline": timeline,
        "canned": choices.canned,
        "assignable": choices.assignable,
        "all_teams": choices.teams,
        "overdue": overdue,
        "reply_error": None,
        "purposes": [p.value for p in RECORDED_PURPOSES],
        "snooze_choices": snooze_choices(ctx, now),
        "now": now,
    }


def snooze_choices(ctx: StaffContext, now: datetime) -> list[tuple[str, datetime]]:
    """The snooze presets, worked out in the reader's own zone."""
    zone = ZoneInfo(ctx.time_zone)
    local = now.astimezone(zone)
    nine = local.replace(hour=9, minute=0, second=0, microsecond=0)
    tomorrow = nine + timedelta(days=1)
    monday = nine + timedelta(days=(7 - local.weekday()) or 7)
    return [
        ("1 hour", now + timedelta(hours=1)),
        ("Tomorrow 9:00", tomorrow.astimezone(UTC)),
        ("Next Monday 9:00", monday.astimezone(UTC)),
    ]


async def conversation(request: web.Request) -> web.Response:
    cid = path_uuid(request, "id")
    try:
        opened = await conversation_context(request, cid)
    except NotFound:
        if is_htmx(request):
            return html_response(fragment(request, "_gone.html"), status=404)
        return render(request, "not_found.html", status=404)
    if is_htmx(request):
        html = fragment(request, "_work.html", csrf=csrf_of(request), **opened)
        return html_response(html)
    listed = await list_context(request, list_query(request))
    return render(request, "workspace.html", nav="inbox", **{**listed, **opened})


async def panel(request: web.Request) -> web.Response:
    """The handling panel alone, refreshed when someone else changed the conversation."""
    try:
        opened = await conversation_context(request, path_uuid(request, "id"))
    except NotFound:
        return html_response(fragment(request, "_gone.html"), status=404)
    return html_response(fragment(request, "_panel.html", csrf=csrf_of(request), **opened))


async def message_fragment(request: web.Request) -> web.Response:
    try:
        m = await conversations.do_view_message(
            request.app[DB],
            request.app[RING],
            current(request),
            path_uuid(request, "id"),
            path_uuid(request, "mid"),
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    return html_response(fragment(request, "_message.html", m=m))


async def note_fragment(request: web.Request) -> web.Response:
    try:
        n = await conversations.do_view_note(
            request.app[DB],
            request.app[RING],
            current(request),
            path_uuid(request, "id"),
            path_uuid(request, "nid"),
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    return html_response(fragment(request, "_note.html", n=n))


def csrf_of(request: web.Request) -> str:
    from web.auth import SESSION

    session = request.get(SESSION)
    return session.csrf if session else ""


def html_response(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, content_type="text/html", status=status)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/", inbox, name="inbox"),
        web.get("/inbox/rows/{id}", inbox_row, name="inbox_row"),
        web.get("/conversations/{id}", conversation, name="conversation"),
        web.get("/conversations/{id}/panel", panel, name="conversation_panel"),
        web.get("/conversations/{id}/messages/{mid}", message_fragment, name="message_fragment"),
        web.get("/conversations/{id}/notes/{nid}", note_fragment, name="note_fragment"),
    ]
