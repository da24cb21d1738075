"""Patient pages: the list with search and filters, a patient's page (profile, conversations,
journeys, merge, start a conversation), and the search results fragment the workspace loads
with htmx (``GET /patients/search?q=`` with ``HX-Request``)."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from hub.channels.registry import connected_providers
from hub.consent.exceptions import ConsentRefused
from hub.enums import Channel
from hub.errors import HubError
from hub.inbox.exceptions import NotFound
from hub.patients import merge, profile, search, start
from hub.patients.schemas import PatientChanges
from web import patients_api
from web.account import ZONES
from web.auth import current
from web.keys import DB, RING, SETTINGS
from web.render import fragment, redirect_with, render
from web.tasks import release_soon

STATUS_FILTERS = {"all": None, "unknown": False, "known": True}
"""The list's filter: every patient, unknown numbers only (unverified), known patients only."""


def routes() -> list[web.RouteDef]:
    return [
        web.get("/patients", patients_page, name="patients"),
        web.get("/patients/search", search_fragment, name="patients_search"),
        web.get("/patients/{id}", patient_page, name="patient"),
        web.post("/patients/{id}", save_patient, name="patient_save"),
        web.post("/patients/{id}/merge", merge_into, name="patient_merge"),
        web.post("/patients/{id}/merges/{mid}/undo", undo_merge, name="patient_merge_undo"),
        web.post("/patients/{id}/conversations", start_conversation, name="patient_start"),
        web.post(
            "/patients/{id}/enrollments/{eid}/cancel",
            cancel_enrollment,
            name="patient_cancel_enrollment",
        ),
        *patients_api.routes(),
    ]


def _id(request: web.Request, name: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise web.HTTPNotFound() from None


def _region(request: web.Request) -> str:
    return request.app[SETTINGS].default_region


async def _results(request: web.Request, q: str, status: str) -> dict[str, Any]:
    db, ring, ctx = request.app[DB], request.app[RING], current(request)
    if q.strip():
        found = await search.do_search_patients(db, ring, ctx, q, region=_region(request))
        return {"hits": found.hits, "more": found.more, "by": found.by, "searched": True}
    try:
        before = uuid.UUID(request.query["before"]) if request.query.get("before") else None
    except ValueError:
        before = None  # a mangled link shows the first page
    limit = profile.DEFAULT_LIST_LIMIT
    hits = await profile.do_list_patients(
        db, ring, ctx, verified=STATUS_FILTERS.get(status), before=before, limit=limit
    )
    following = hits[-1].id if len(hits) == limit else None
    return {"hits": hits, "more": False, "by": [], "searched": False, "following": following}


async def patients_page(request: web.Request) -> web.Response:
    q = request.query.get("q", "")
    status = request.query.get("status", "all")
    status = status if status in STATUS_FILTERS else "all"
    results = await _results(request, q, status)
    if request.headers.get("HX-Request"):
        return web.Response(
            text=fragment(request, "patients_results.html", q=q, **results),
            content_type="text/html",
        )
    return render(request, "patients.html", nav="patients", q=q, show=status, **results)


async def search_fragment(request: web.Request) -> web.Response:
    """The results as a ``<ul>`` for htmx (the workspace's search box); a person who opens
    the address itself gets the list page with the same query."""
    q = request.query.get("q", "")
    if not request.headers.get("HX-Request"):
        raise web.HTTPSeeOther(f"/patients?{request.query_string}")
    if q.strip():
        results = await _results(request, q, "all")
    else:  # an empty box asks for nothing: an empty list, not "no patients yet"
        results = {"hits": [], "more": False, "searched": False, "idle": True}
    return web.Response(
        text=fragment(request, "patients_results.html", q=q, **results),
        content_type="text/html",
    )


async def patient_page(
    request: web.Request, *, error: str | None = None, status: int = 200
) -> web.Response:
    db, ring, ctx = request.app[DB], request.app[RING], current(request)
    pid = _id(request)
    connected = connected_providers(request.app[SETTINGS])
    try:
        found = await profile.do_read_profile(db, ring, ctx, pid, connected)
    except NotFound:
        raise web.HTTPNotFound(text="No such patient.") from None
    context: dict[str, Any] = {"p": found, "zones": ZONES, "error": error}
    context |= {"messages": None, "message_error": None, "candidates": None}
    mq = request.query.get("mq", "")
    if mq.strip() and found.conversations:
        try:
            context["messages"] = await search.do_search_patient_messages(db, ring, ctx, pid, mq)
        except ValueError as exc:
            context["message_error"] = str(exc)
        except NotFound:
            context["message_error"] = "You cannot search this patient's messages."
    merge_q = request.query.get("merge_q", "")
    if merge_q.strip() and not found.card.verified and found.merged_into is None:
        candidates = await search.do_search_patients(
            db, ring, ctx, merge_q, region=_region(request)
        )
        context["candidates"] = [h for h in candidates.hits if h.id != pid]
    return render(
        request, "patient.html", status=status, nav="patients", mq=mq, merge_q=merge_q, **context
    )


def _changes(form: Any) -> PatientChanges:
    """The profile form as a change of every field it shows."""
    ids = []
    systems, values = form.getall("id_system", []), form.getall("id_value", [])
    for system, value in zip(systems, values, strict=False):
        if str(system).strip() or str(value).strip():
            ids.append((str(system), str(value)))
    order = [str(c) for c in form.getall("channel_order", []) if str(c)]
    return PatientChanges(
        name=str(form.get("name", "")),
        phone=str(form.get("phone", "")),
        email=str(form.get("email", "")),
        country=str(form.get("country", "")) or None,
        language=str(form.get("language", "")) or None,
        time_zone=str(form.get("time_zone", "")) or None,
        channel_order=order,
        tags=[t for t in str(form.get("tags", "")).split(",")],
        external_ids=ids,
        verified=form.get("verified") == "on",
    )


async def save_patient(request: web.Request) -> web.StreamResponse:
    pid = _id(request)
    form = await request.post()
    try:
        await profile.do_update_patient(
            request.app[DB],
            request.app[RING],
            current(request),
            pid,
            _changes(form),
            region=_region(request),
        )
    except NotFound:
        raise web.HTTPNotFound(text="No such patient.") from None
    except HubError as exc:
        return await patient_page(request, error=f"Not saved: {exc}.", status=422)
    raise redirect_with(f"/patients/{pid}", "ok", "Saved.")


async def merge_into(request: web.Request) -> web.StreamResponse:
    """Merge the posted ``source`` (an unknown number) into this patient."""
    target = _id(request)
    form = await request.post()
    try:
        source = uuid.UUID(str(form.get("source", "")))
    except ValueError:
        raise redirect_with(f"/patients/{target}", "error", "Choose the record to merge.") from None
    try:
        done = await merge.do_merge_patients(
            request.app[DB], request.app[RING], current(request), target, source
        )
    except NotFound:
        raise web.HTTPNotFound(text="No such patient.") from None
    except HubError as exc:
        raise redirect_with(f"/patients/{source}", "error", f"Not merged: {exc}.") from None
    release_soon(request.app, done.effect_ids)
    moved = done.moved.get("conversations", 0)
    raise redirect_with(
        f"/patients/{target}",
        "ok",
        f"Merged: {moved} conversation{'' if moved == 1 else 's'} and the consent history moved "
        "here. An admin can undo it from this page.",
    )


async def undo_merge(request: web.Request) -> web.StreamResponse:
    pid = _id(request)
    try:
        done = await merge.do_undo_merge(
            request.app[DB], request.app[RING], current(request), _id(request, "mid")
        )
    except NotFound:
        raise web.HTTPNotFound(text="No such merge.") from None
    except HubError as exc:
        raise redirect_with(f"/patients/{pid}", "error", f"Not undone: {exc}.") from None
    release_soon(request.app, done.effect_ids)
    raise redirect_with(f"/patients/{pid}", "ok", "Merge undone: the records are apart again.")


async def start_conversation(request: web.Request) -> web.StreamResponse:
    pid = _id(request)
    form = await request.post()
    settings = request.app[SETTINGS]
    try:
        channel = Channel(str(form.get("channel", "")))
        started = await start.do_start_conversation(
            request.app[DB],
            request.app[RING],
            current(request),
            pid,
            channel,
            str(form.get("body", "")),
            connected=connected_providers(settings),
        )
    except NotFound:
        raise web.HTTPNotFound(text="No such patient.") from None
    except ConsentRefused as exc:
        return await patient_page(request, error=f"Not sent: {exc}.", status=409)
    except (HubError, ValueError) as exc:
        message = str(exc) if form.get("channel") else "choose a channel to send on"
        return await patient_page(request, error=f"Not sent: {message}.", status=422)
    release_soon(request.app, started.effect_ids)
    raise redirect_with(f"/conversations/{started.conversation_id}", "ok", "Message queued.")


async def cancel_enrollment(request: web.Request) -> web.StreamResponse:
    pid = _id(request)
    try:
        steps = await profile.do_cancel_enrollment(
            request.app[DB], current(request), pid, _id(request, "eid")
        )
    except NotFound:
        raise web.HTTPNotFound(text="No such enrollment.") from None
    except HubError as exc:
        raise redirect_with(f"/patients/{pid}", "error", f"Not cancelled: {exc}.") from None
    raise redirect_with(
        f"/patients/{pid}",
        "ok",
        f"Enrollment cancelled; {steps} step{'' if steps == 1 else 's'} will not be sent.",
    )
