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
from hub.consent.exceptions import ConsentRefused
from hub.consent.models import RECORDED_PURPOSES
from hub.enums import Channel, ConversationStatus, Priority
from hub.errors import HubError
from hub.inbox import actions
from hub.inbox.access import StaffContext
from hub.inbox.actions import assignment, conversations, listing, workspace
from hub.inbox.exceptions import NotFound
from web.auth import current
from web.keys import DB, PRESENCE, RING, SETTINGS
from web.render import fragment, redirect_with, render
from web.tasks import hand_out_soon, release_soon

LIST_KEYS = ("view", "team", "status", "channel", "priority", "tag", "overdue")
"""Query keys that belong to the list's filters (kept when a conversation is opened)."""


def _uuid(request: web.Request, name: str) -> uuid.UUID:
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


def _list_query(request: web.Request) -> dict[str, str]:
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


async def _list_context(request: web.Request, query: dict[str, str]) -> dict[str, Any]:
    ctx = current(request)
    filters = _filters(query)
    try:
        page = await listing.do_list_inbox(
            request.app[DB], request.app[RING], ctx, filters, cursor=request.query.get("cursor")
        )
    except listing.BadFilter as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    choices = await workspace.do_handling_choices(request.app[DB], None)
    return {
        "page": page,
        "now": page.now,
        "filters": filters,
        "teams": await workspace.do_visible_teams(request.app[DB], ctx),
        "all_teams": choices.teams,
        "everyone": choices.assignable,
        "query": urlencode(query),
        "unread": page.unread,
    }


async def inbox(request: web.Request) -> web.Response:
    listed = await _list_context(request, _list_query(request))
    if is_htmx(request) and request.headers.get("HX-Target") == "list-pane":
        return _html(fragment(request, "_list.html", csrf=_csrf(request), **listed))
    return render(request, "workspace.html", nav="inbox", c=None, **listed)


async def inbox_row(request: web.Request) -> web.Response:
    """One row under the current filters, for live updates; 204 when it is not in the list."""
    ctx = current(request)
    page = await listing.do_list_inbox(
        request.app[DB],
        request.app[RING],
        ctx,
        _filters(_list_query(request)),
        only=_uuid(request, "id"),
    )
    headers = {"X-Unread-Count": str(page.unread)}
    if not page.rows:
        return web.Response(status=204, headers=headers)
    html = fragment(
        request, "_row.html", row=page.rows[0], now=page.now, query=urlencode(_list_query(request))
    )
    return web.Response(text=html, content_type="text/html", headers=headers)


# -- one conversation --------------------------------------------------------------------


async def _conversation_context(request: web.Request, cid: uuid.UUID) -> dict[str, Any]:
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
    cid = _uuid(request, "id")
    try:
        opened = await _conversation_context(request, cid)
    except NotFound:
        if is_htmx(request):
            return _html(fragment(request, "_gone.html"), status=404)
        return render(request, "not_found.html", status=404)
    if is_htmx(request):
        html = fragment(request, "_work.html", csrf=_csrf(request), **opened)
        return _html(html)
    listed = await _list_context(request, _list_query(request))
    return render(request, "workspace.html", nav="inbox", **{**listed, **opened})


async def panel(request: web.Request) -> web.Response:
    """The handling panel alone, refreshed when someone else changed the conversation."""
    try:
        opened = await _conversation_context(request, _uuid(request, "id"))
    except NotFound:
        return _html(fragment(request, "_gone.html"), status=404)
    return _html(fragment(request, "_panel.html", csrf=_csrf(request), **opened))


async def message_fragment(request: web.Request) -> web.Response:
    try:
        m = await conversations.do_view_message(
            request.app[DB],
            request.app[RING],
            current(request),
            _uuid(request, "id"),
            _uuid(request, "mid"),
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    return _html(fragment(request, "_message.html", m=m))


async def note_fragment(request: web.Request) -> web.Response:
    try:
        n = await conversations.do_view_note(
            request.app[DB],
            request.app[RING],
            current(request),
            _uuid(request, "id"),
            _uuid(request, "nid"),
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    return _html(fragment(request, "_note.html", n=n))


# -- handling in place -------------------------------------------------------------------


def _csrf(request: web.Request) -> str:
    from web.auth import SESSION

    session = request.get(SESSION)
    return session.csrf if session else ""


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, content_type="text/html", status=status)


def _back(request: web.Request) -> str:
    return f"/conversations/{request.match_info['id']}"


async def _handled(
    request: web.Request, kind: str, text: str, *, status: int = 200
) -> web.StreamResponse:
    """The answer to a handling control: the panel again (htmx), or a redirect."""
    if not is_htmx(request):
        raise redirect_with(_back(request), kind, text)
    try:
        opened = await _conversation_context(request, _uuid(request, "id"))
    except NotFound:
        return _html(fragment(request, "_gone.html"), status=404)
    html = fragment(
        request,
        "_panel_answer.html",
        csrf=_csrf(request),
        notice=(kind, text),
        **opened,
    )
    return _html(html, status=status)


async def reply(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        queued = await actions.do_reply(
            request.app[DB],
            request.app[RING],
            current(request),
            _uuid(request, "id"),
            str(form.get("body", "")),
            channel=_reply_channel(request, form.get("channel")),
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except (ConsentRefused, ValueError) as exc:
        raise redirect_with(_back(request), "error", f"Not sent: {exc}") from None
    release_soon(request.app, queued.effect_ids)
    raise redirect_with(_back(request), "ok", "Reply queued.")


def _reply_channel(request: web.Request, value: object) -> Channel | None:
    """The channel picked in the reply box, if it is one this hub can send on."""
    try:
        channel = Channel(str(value))
    except ValueError:
        return None
    if channel not in connected_providers(request.app[SETTINGS]):
        raise ValueError(f"{channel.value} is not set up on this hub")
    return channel


async def add_note(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        result = await conversations.do_add_note(
            request.app[DB],
            request.app[RING],
            current(request),
            _uuid(request, "id"),
            str(form.get("body", "")),
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except ValueError as exc:
        if is_htmx(request):
            return _html(f'<p class="flash error" role="alert">{_escape(str(exc))}</p>', 422)
        raise redirect_with(_back(request), "error", str(exc)) from None
    release_soon(request.app, result.effect_ids)
    if is_htmx(request):
        # The note arrives in the thread through its live event, like a colleague's would.
        return web.Response(status=204)
    raise redirect_with(_back(request), "ok", "Note added.")


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def _snooze_until(request: web.Request, raw: str) -> datetime | None:
    """A snooze time: an ISO instant (a preset) or a local datetime-local value."""
    if not raw:
        return None
    moment = datetime.fromisoformat(raw)
    if moment.tzinfo is None:  # typed in the picker: the reader's own wall clock
        moment = moment.replace(tzinfo=ZoneInfo(current(request).time_zone))
    return moment.astimezone(UTC)


async def set_status(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    ctx = current(request)
    try:
        status = ConversationStatus(str(form.get("status", "")))
        until = None
        if status is ConversationStatus.SNOOZED:
            until = _snooze_until(request, str(form.get("snoozed_until", "")))
        effects = await conversations.do_set_status(
            request.app[DB], ctx, _uuid(request, "id"), status, snoozed_until=until
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except ValueError as exc:
        return await _handled(request, "error", str(exc), status=422)
    release_soon(request.app, effects)
    if status in (ConversationStatus.RESOLVED, ConversationStatus.SNOOZED):
        hand_out_soon(request.app, ctx.staff_id)
    return await _handled(request, "ok", f"Conversation is now {status.value}.")


async def set_priority(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        effects = await conversations.do_set_priority(
            request.app[DB],
            current(request),
            _uuid(request, "id"),
            Priority(str(form.get("priority", ""))),
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except ValueError:
        return await _handled(request, "error", "Unknown priority.", status=422)
    release_soon(request.app, effects)
    return await _handled(request, "ok", "Priority set.")


async def set_tags(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        effects = await conversations.do_set_tags(
            request.app[DB],
            request.app[RING],
            current(request),
            _uuid(request, "id"),
            str(form.get("tags", "")).split(","),
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    release_soon(request.app, effects)
    return await _handled(request, "ok", "Tags saved.")


async def set_team(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        effects = await workspace.do_move_team(
            request.app[DB], current(request), _uuid(request, "id"), uuid.UUID(str(form["team"]))
        )
    except NotFound as exc:
        if "team" in str(exc):
            return await _handled(request, "error", str(exc), status=422)
        raise web.HTTPNotFound() from None
    except (KeyError, ValueError):
        return await _handled(request, "error", "Choose a team.", status=422)
    release_soon(request.app, effects)
    return await _handled(request, "ok", "Moved to the other team's queue.")


async def assign(request: web.Request) -> web.StreamResponse:
    ctx = current(request)
    form = await request.post()
    cid = _uuid(request, "id")
    raw = str(form.get("staff_id", ""))
    try:
        async with request.app[DB].reader() as session:
            await conversations.visible_conversation(session, ctx, cid)
        result = await assignment.do_assign(
            request.app[DB], ctx.actor, cid, uuid.UUID(raw) if raw else None
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except (HubError, ValueError) as exc:
        return await _handled(request, "error", str(exc), status=422)
    release_soon(request.app, result.effect_ids)
    await _hand_out(request, {result.freed_staff_id} - {None})
    return await _handled(request, "ok", "Assignment saved.")


async def _hand_out(request: web.Request, freed: set[Any]) -> None:
    online = await request.app[PRESENCE].online() if freed else set()
    for staff_id in freed:
        handed = await assignment.do_hand_out_backlog(request.app[DB], staff_id, online)
        release_soon(request.app, handed.effect_ids)


async def claim_next(request: web.Request) -> web.StreamResponse:
    ctx = current(request)
    claimed = await assignment.do_claim_next(request.app[DB], ctx.staff_id)
    release_soon(request.app, claimed.effect_ids)
    if claimed.conversation_id is None:
        raise redirect_with("/", "info", "Nothing is waiting for you, or you are at capacity.")
    raise web.HTTPSeeOther(f"/conversations/{claimed.conversation_id}")


async def record_consent(request: web.Request) -> web.StreamResponse:
    from hub.consent.actions import do_record_consent
    from hub.consent.models import ConsentState, Purpose

    ctx = current(request)
    form = await request.post()
    try:
        async with request.app[DB].reader() as session:
            conversation = await conversations.visible_conversation(
                session, ctx, _uuid(request, "id")
            )
        raw = str(form.get("purpose", "all"))
        purposes = list(RECORDED_PURPOSES) if raw == "all" else [Purpose(raw)]
        await do_record_consent(
            request.app[DB],
            ctx,
            conversation.patient_id,
            Channel(str(form.get("channel", ""))),
            purposes,
            ConsentState(str(form.get("state", ""))),
            str(form.get("reason", "")),
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except ValueError as exc:
        return await _handled(request, "error", f"Not recorded: {exc}", status=422)
    return await _handled(request, "ok", "Consent recorded.")


# -- many rows at once -------------------------------------------------------------------


async def bulk(request: web.Request) -> web.StreamResponse:
    """Assign, move, tag or resolve the selected rows; each row is checked on its own."""
    ctx = current(request)
    form = await request.post()
    action = str(form.get("action", ""))
    query = _list_query(request)
    back = "/?" + urlencode(query) if query else "/"
    try:
        ids = [uuid.UUID(str(v)) for v in form.getall("ids", [])]
        staff_raw = str(form.get("staff_id", ""))
        team_raw = str(form.get("team", ""))
        result = await workspace.do_bulk(
            request.app[DB],
            request.app[RING],
            ctx,
            action,
            ids,
            staff_id=ctx.staff_id
            if staff_raw == "me"
            else (uuid.UUID(staff_raw) if staff_raw else None),
            team_id=uuid.UUID(team_raw) if team_raw else None,
            tags=str(form.get("tags", "")).split(","),
        )
    except ValueError as exc:
        if is_htmx(request):
            listed = await _list_context(request, query)
            html = fragment(
                request, "_list.html", csrf=_csrf(request), notice=("error", str(exc)), **listed
            )
            return _html(html, status=422)
        raise redirect_with(back, "error", str(exc)) from None
    release_soon(request.app, tuple(result.effect_ids))
    await _hand_out(request, result.freed_staff)
    verbs = {"assign": "Assigned", "move": "Moved", "tag": "Tagged", "resolve": "Resolved"}
    text = result.summary(verbs[action])
    kind = "error" if result.refused and not result.done else "ok"
    if not is_htmx(request):
        raise redirect_with(back, kind, text)
    listed = await _list_context(request, query)
    return _html(
        fragment(request, "_list.html", csrf=_csrf(request), notice=(kind, text), **listed)
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/", inbox, name="inbox"),
        web.get("/inbox/rows/{id}", inbox_row, name="inbox_row"),
        web.post("/conversations/claim-next", claim_next, name="claim_next"),
        web.post("/conversations/bulk", bulk, name="bulk"),
        web.get("/conversations/{id}", conversation, name="conversation"),
        web.get("/conversations/{id}/panel", panel, name="conversation_panel"),
        web.get("/conversations/{id}/messages/{mid}", message_fragment, name="message_fragment"),
        web.get("/conversations/{id}/notes/{nid}", note_fragment, name="note_fragment"),
        web.post("/conversations/{id}/reply", reply, name="reply"),
        web.post("/conversations/{id}/notes", add_note, name="add_note"),
        web.post("/conversations/{id}/status", set_status, name="set_status"),
        web.post("/conversations/{id}/priority", set_priority, name="set_priority"),
        web.post("/conversations/{id}/tags", set_tags, name="set_tags"),
        web.post("/conversations/{id}/team", set_team, name="set_team"),
        web.post("/conversations/{id}/assign", assign, name="assign"),
        web.post("/conversations/{id}/consent", record_consent, name="record_consent"),
    ]
