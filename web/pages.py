"""The staff web app's pages and form posts (server-rendered; app.js adds live updates)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy import select

from hub.channels.registry import connected_providers
from hub.consent.exceptions import ConsentRefused
from hub.consent.models import RECORDED_PURPOSES
from hub.enums import Channel, ConversationStatus, Priority
from hub.errors import HubError
from hub.inbox import actions
from hub.inbox.actions import assignment, conversations, listing, sign_in_audit, staff
from hub.inbox.exceptions import NotFound, WeakPassword
from hub.inbox.models import CannedResponse, StaffUser, Team
from hub.inbox.passwords import MIN_PASSWORD_LENGTH
from web.auth import (
    CSRF_FIELD,
    current,
    new_login_csrf,
    set_session_cookie,
)
from web.keys import DB, LOGIN_GUARD, PRESENCE, RING, SESSIONS, SETTINGS
from web.render import fragment, redirect_with, render
from web.sessions import COOKIE_NAME, LOGIN_CSRF_COOKIE
from web.sign_in_code import ask_for_code, client_address
from web.tasks import hand_out_soon, release_soon


def _uuid(request: web.Request, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise web.HTTPNotFound() from None


def _safe_next(value: str | None) -> str:
    # Browsers drop tabs and newlines from a URL ("/\t/evil.example" becomes "//evil.example"),
    # so a target with any control character or space is refused, not just "//" and "\\".
    if (
        value
        and value.startswith("/")
        and not value.startswith("//")
        and "\\" not in value
        and all(" " < c != "\x7f" for c in value)
    ):
        return value
    return "/"


# -- signing in --------------------------------------------------------------------------


async def login_form(request: web.Request) -> web.Response:
    # Keep a token the browser already has: a second tab, or any stray request that lands on
    # the login page, must not invalidate the form the person is filling in.
    existing = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    token = existing if 20 <= len(existing) <= 64 else new_login_csrf()
    response = render(
        request,
        "login.html",
        login_csrf=token,
        error=None,
        email="",
        next=_safe_next(request.query.get("next")),
        idle_minutes=f"{request.app[SETTINGS].session_idle_minutes:g}",
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        path="/login",
        secure=request.app[SETTINGS].public_url.startswith("https://"),
    )
    return response


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    email = str(form.get("email", "")).strip()
    password = str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "/")))
    cookie_token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie_token or cookie_token != form.get(CSRF_FIELD):
        raise web.HTTPForbidden(text="The sign-in form expired; reload the page and try again.")

    def again(error: str, status: int) -> web.Response:
        return render(
            request,
            "login.html",
            status=status,
            login_csrf=cookie_token,
            error=error,
            email=email,
            next=target,
            idle_minutes=f"{request.app[SETTINGS].session_idle_minutes:g}",
        )

    guard = request.app[LOGIN_GUARD]
    address = client_address(request)
    verdict = await guard.check(email, address)
    if verdict.locked:
        minutes = max(1, round(verdict.retry_after_s / 60))
        return again(
            f"Too many failed attempts. Try again in {minutes} minutes, or ask an "
            "admin to reset your password.",
            429,
        )
    try:
        signed_in = await staff.do_authenticate(request.app[DB], email, password)
    except staff.AccountDeactivated as exc:
        await sign_in_audit.do_audit_deactivated_sign_in(request.app[DB], email)
        return again(str(exc), 403)
    if signed_in is None:
        await guard.failed(email, address)
        # Locked now means this failure is the one that locked it: audited once, not per refusal.
        locked = (await guard.check(email, address)).locked
        await sign_in_audit.do_audit_failed_sign_in(request.app[DB], email, locked=locked)
        return again("That email and password do not match an active account.", 401)
    if signed_in.second_factor:
        raise await ask_for_code(request, signed_in, email, target)
    await guard.succeeded(email)
    # A session this browser already held ends here: a sign-in never leaves an old id alive.
    await request.app[SESSIONS].destroy(request.cookies.get(COOKIE_NAME))
    token, _session = await request.app[SESSIONS].create(signed_in.ctx.staff_id)
    response = web.HTTPSeeOther("/password" if signed_in.must_change_password else target)
    set_session_cookie(request, response, token)
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    await request.app[SESSIONS].destroy(request.cookies.get(COOKIE_NAME))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE_NAME, path="/")
    raise response


async def password_form(request: web.Request) -> web.Response:
    return render(
        request,
        "password.html",
        error=None,
        forced=current(request).must_change_password,
        min_length=MIN_PASSWORD_LENGTH,
    )


async def change_password(request: web.Request) -> web.StreamResponse:
    ctx = current(request)
    form = await request.post()
    try:
        await staff.do_change_password(
            request.app[DB], ctx, str(form.get("current", "")), str(form.get("new", ""))
        )
    except WeakPassword as exc:
        return render(
            request,
            "password.html",
            status=400,
            error=str(exc),
            forced=ctx.must_change_password,
            min_length=MIN_PASSWORD_LENGTH,
        )
    # Other sessions of this person end: a changed password must lock out whoever had the old.
    await request.app[SESSIONS].destroy_all_for(ctx.staff_id, keep=request.cookies.get(COOKIE_NAME))
    raise redirect_with("/", "ok", "Password changed.")


# -- inbox -------------------------------------------------------------------------------


async def _teams(request: web.Request) -> list[Team]:
    ctx = current(request)
    async with request.app[DB].reader() as session:
        stmt = select(Team).order_by(Team.name)
        if not ctx.is_admin:
            stmt = stmt.where(Team.id.in_(ctx.team_ids))
        return list((await session.scalars(stmt)).all())


def _filters(request: web.Request) -> listing.InboxFilters:
    try:
        return listing.InboxFilters.parse(dict(request.query))
    except listing.BadFilter as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


async def inbox(request: web.Request) -> web.Response:
    ctx = current(request)
    filters = _filters(request)
    try:
        page = await listing.do_list_inbox(
            request.app[DB], request.app[RING], ctx, filters, cursor=request.query.get("cursor")
        )
    except listing.BadFilter as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    query = urlencode({k: v for k, v in request.query.items() if k != "cursor" and v})
    return render(
        request,
        "inbox.html",
        nav="inbox",
        page=page,
        now=page.now,
        filters=filters,
        teams=await _teams(request),
        query=query,
        unread=page.unread,
    )


async def inbox_row(request: web.Request) -> web.Response:
    """One row under the current filters, for live updates; 204 when it is not in the list."""
    ctx = current(request)
    page = await listing.do_list_inbox(
        request.app[DB], request.app[RING], ctx, _filters(request), only=_uuid(request, "id")
    )
    headers = {"X-Unread-Count": str(page.unread)}
    if not page.rows:
        return web.Response(status=204, headers=headers)
    html = fragment(request, "_row.html", row=page.rows[0], now=page.now)
    return web.Response(text=html, content_type="text/html", headers=headers)


# -- a conversation ----------------------------------------------------------------------


async def conversation(request: web.Request) -> web.Response:
    ctx = current(request)
    cid = _uuid(request, "id")
    try:
        view = await conversations.do_open_conversation(
            request.app[DB],
            request.app[RING],
            ctx,
            cid,
            connected=connected_providers(request.app[SETTINGS]),
        )
    except NotFound:
        return render(request, "not_found.html", status=404)
    timeline = sorted(
        [("message", m) for m in view.messages] + [("note", n) for n in view.notes],
        key=lambda item: item[1].created_at,
    )
    async with request.app[DB].reader() as session:
        canned = (
            await session.scalars(
                select(CannedResponse)
                .where(
                    (CannedResponse.team_id.is_(None)) | (CannedResponse.team_id == view.team_id)
                )
                .order_by(CannedResponse.title)
            )
        ).all()
        people = select(StaffUser).where(StaffUser.active).order_by(StaffUser.display_name)
        assignable = [
            s
            for s in (await session.scalars(people)).all()
            if view.team_id is None or view.team_id in {t.id for t in s.teams}
        ]
    now = datetime.now(UTC)
    overdue = (
        view.first_responded_at is None
        and view.first_response_due_at is not None
        and view.first_response_due_at < now
    )
    from hub.consent.actions import STAFF_REASONS

    return render(
        request,
        "conversation.html",
        consent_reasons=STAFF_REASONS,
        c=view,
        timeline=timeline,
        canned=canned,
        assignable=assignable,
        overdue=overdue,
        reply_error=None,
        purposes=[p.value for p in RECORDED_PURPOSES],
    )


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
    return web.Response(text=fragment(request, "_message.html", m=m), content_type="text/html")


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
    return web.Response(text=fragment(request, "_note.html", n=n), content_type="text/html")


def _back(request: web.Request) -> str:
    return f"/conversations/{request.match_info['id']}"


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
        raise redirect_with(_back(request), "error", str(exc)) from None
    release_soon(request.app, result.effect_ids)
    raise redirect_with(_back(request), "ok", "Note added.")


async def set_status(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    ctx = current(request)
    try:
        status = ConversationStatus(str(form.get("status", "")))
        until = None
        if status is ConversationStatus.SNOOZED:
            raw = str(form.get("snoozed_until", ""))
            until = datetime.fromisoformat(raw).replace(tzinfo=UTC) if raw else None
        effects = await conversations.do_set_status(
            request.app[DB], ctx, _uuid(request, "id"), status, snoozed_until=until
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except ValueError as exc:
        raise redirect_with(_back(request), "error", str(exc)) from None
    release_soon(request.app, effects)
    if status in (ConversationStatus.RESOLVED, ConversationStatus.SNOOZED):
        hand_out_soon(request.app, ctx.staff_id)
    raise redirect_with(_back(request), "ok", f"Conversation is now {status.value}.")


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
        raise redirect_with(_back(request), "error", "Unknown priority.") from None
    release_soon(request.app, effects)
    raise redirect_with(_back(request), "ok", "Priority set.")


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
    raise redirect_with(_back(request), "ok", "Tags saved.")


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
        raise redirect_with(_back(request), "error", str(exc)) from None
    release_soon(request.app, result.effect_ids)
    if result.freed_staff_id is not None:
        online = await request.app[PRESENCE].online()
        handed = await assignment.do_hand_out_backlog(
            request.app[DB], result.freed_staff_id, online
        )
        release_soon(request.app, handed.effect_ids)
    raise redirect_with(_back(request), "ok", "Assignment saved.")


async def claim_next(request: web.Request) -> web.StreamResponse:
    ctx = current(request)
    claimed = await assignment.do_claim_next(request.app[DB], ctx.staff_id)
    release_soon(request.app, claimed.effect_ids)
    if claimed.conversation_id is None:
        raise redirect_with("/", "info", "Nothing is waiting for you, or you are at capacity.")
    raise web.HTTPSeeOther(f"/conversations/{claimed.conversation_id}")


async def attachment(request: web.Request) -> web.Response:
    from hub.inbox.actions.media import do_read_attachment

    try:
        content_type, data, name = await do_read_attachment(
            request.app[DB], request.app[RING], current(request), _uuid(request, "id")
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    disposition = "inline" if content_type.startswith(("image/", "audio/")) else "attachment"
    return web.Response(
        body=data,
        content_type=content_type,
        headers={
            "Content-Disposition": f'{disposition}; filename="{name}"',
            "Content-Security-Policy": "sandbox; default-src 'none'",
        },
    )


async def record_consent(request: web.Request) -> web.StreamResponse:
    from hub.consent.actions import do_record_consent
    from hub.consent.models import RECORDED_PURPOSES, ConsentState, Purpose
    from hub.enums import Channel

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
        raise redirect_with(_back(request), "error", f"Not recorded: {exc}") from None
    raise redirect_with(_back(request), "ok", "Consent recorded.")
