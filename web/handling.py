"""The workspace's handling controls and bulk actions: each answers an htmx request with the
panel (or the list) again, and a plain form post with a redirect and a notice."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from aiohttp import web

from hub.channels.registry import connected_providers
from hub.consent.exceptions import ConsentRefused
from hub.consent.models import RECORDED_PURPOSES
from hub.enums import Channel, ConversationStatus, Priority
from hub.errors import HubError
from hub.inbox import actions
from hub.inbox.actions import assignment, conversations, listing, workspace
from hub.inbox.exceptions import NotFound
from web.auth import current
from web.keys import DB, PRESENCE, RING, SETTINGS
from web.render import fragment, redirect_with
from web.tasks import hand_out_soon, release_soon
from web.workspace import (
    conversation_context,
    csrf_of,
    html_response,
    is_htmx,
    list_context,
    list_query,
    path_uuid,
)


def _back(request: web.Request) -> str:
    return f"/conversations/{request.match_info['id']}"


async def _handled(
    request: web.Request, kind: str, text: str, *, status: int = 200, with_row: bool = False
) -> web.StreamResponse:
    """The answer to a handling control: the panel again (htmx), or a redirect."""
    if not is_htmx(request):
        raise redirect_with(_back(request), kind, text)
    try:
        opened = await conversation_context(request, path_uuid(request, "id"))
    except NotFound:
        return html_response(fragment(request, "_gone.html"), status=404)
    html = fragment(
        request,
        "_panel_answer.html",
        csrf=csrf_of(request),
        notice=(kind, text),
        **opened,
    )
    if with_row:  # what the row shows changed too: redraw it under the list's own filters
        page = await listing.do_list_inbox(
            request.app[DB],
            request.app[RING],
            current(request),
            listing.InboxFilters.parse(list_query(request)),
            only=path_uuid(request, "id"),
        )
        for row in page.rows:
            html += fragment(
                request,
                "_row.html",
                row=row,
                now=page.now,
                oob=True,
                query=urlencode(list_query(request)),
            )
    return html_response(html, status=status)


async def reply(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        queued = await actions.do_reply(
            request.app[DB],
            request.app[RING],
            current(request),
            path_uuid(request, "id"),
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
            path_uuid(request, "id"),
            str(form.get("body", "")),
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except ValueError as exc:
        if is_htmx(request):
            return html_response(
                f'<p class="flash error" role="alert">{_escape(str(exc))}</p>', 422
            )
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
            # A preset button and the picker share the name; whichever carries a time wins.
            picked = [str(v) for v in form.getall("snoozed_until", []) if str(v)]
            until = _snooze_until(request, picked[0] if picked else "")
        effects = await conversations.do_set_status(
            request.app[DB], ctx, path_uuid(request, "id"), status, snoozed_until=until
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
            path_uuid(request, "id"),
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
            path_uuid(request, "id"),
            str(form.get("tags", "")).split(","),
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    release_soon(request.app, effects)
    return await _handled(request, "ok", "Tags saved.")


async def set_name(request: web.Request) -> web.StreamResponse:
    """Name an unknown number in place; the row and the thread's heading follow."""
    from hub.patients.profile import do_update_patient
    from hub.patients.schemas import PatientChanges

    ctx = current(request)
    form = await request.post()
    name = str(form.get("name", "")).strip()
    if not name:
        return await _handled(request, "error", "Type the patient's name first.", status=422)
    try:
        async with request.app[DB].reader() as session:
            conversation = await conversations.visible_conversation(
                session, ctx, path_uuid(request, "id")
            )
        await do_update_patient(
            request.app[DB],
            request.app[RING],
            ctx,
            conversation.patient_id,
            PatientChanges(name=name),
            region=request.app[SETTINGS].default_region,
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except HubError as exc:
        return await _handled(request, "error", f"Not saved: {exc}", status=422)
    return await _handled(request, "ok", "Name saved.", with_row=True)


async def set_team(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        effects = await workspace.do_move_team(
            request.app[DB],
            current(request),
            path_uuid(request, "id"),
            uuid.UUID(str(form["team"])),
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
    cid = path_uuid(request, "id")
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
                session, ctx, path_uuid(request, "id")
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
    query = list_query(request)
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
            listed = await list_context(request, query)
            html = fragment(
                request, "_list.html", csrf=csrf_of(request), notice=("error", str(exc)), **listed
            )
            return html_response(html, status=422)
        raise redirect_with(back, "error", str(exc)) from None
    release_soon(request.app, tuple(result.effect_ids))
    await _hand_out(request, result.freed_staff)
    verbs = {"assign": "Assigned", "move": "Moved", "tag": "Tagged", "resolve": "Resolved"}
    text = result.summary(verbs[action])
    kind = "error" if result.refused and not result.done else "ok"
    if not is_htmx(request):
        raise redirect_with(back, kind, text)
    listed = await list_context(request, query)
    return html_response(
        fragment(request, "_list.html", csrf=csrf_of(request), notice=(kind, text), **listed)
    )


def routes() -> list[web.RouteDef]:
    return [
        web.post("/conversations/claim-next", claim_next, name="claim_next"),
        web.post("/conversations/bulk", bulk, name="bulk"),
        web.post("/conversations/{id}/reply", reply, name="reply"),
        web.post("/conversations/{id}/notes", add_note, name="add_note"),
        web.post("/conversations/{id}/status", set_status, name="set_status"),
        web.post("/conversations/{id}/priority", set_priority, name="set_priority"),
        web.post("/conversations/{id}/tags", set_tags, name="set_tags"),
        web.post("/conversations/{id}/team", set_team, name="set_team"),
        web.post("/conversations/{id}/name", set_name, name="set_patient_name"),
        web.post("/conversations/{id}/assign", assign, name="assign"),
        web.post("/conversations/{id}/consent", record_consent, name="record_consent"),
    ]
