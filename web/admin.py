"""Admin pages: staff, teams (business hours, holidays, after-hours reply) and canned responses.
Admins only; others get the not-found page. Templates are in web.admin_templates; routing,
triage and the consent policy in web.admin_routing."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from aiohttp import web
from babel import Locale, UnknownLocaleError
from sqlalchemy import select

from hub.audit import Actor, record
from hub.contact import InvalidLanguage, normalize_language
from hub.enums import Role
from hub.errors import HubError
from hub.inbox.actions import do_add_staff_user
from hub.inbox.actions import staff as staff_actions
from hub.inbox.models import CannedResponse, StaffUser, Team
from hub.inbox.passwords import one_time_password
from hub.inbox.schemas import NewStaffUser
from hub.journeys.csat import CsatChoice, check_delay, set_team_csat_in, settings_in
from hub.routing.replies import AFTER_HOURS_TEMPLATE
from hub.routing.rules import ReplyNotRendered, render_reply
from hub.templates.actions import do_list_templates
from web.auth import current
from web.keys import DB, SESSIONS
from web.render import redirect_with, render
from web.tasks import release_soon


def _admin(request: web.Request) -> Actor:
    ctx = current(request)
    if not ctx.is_admin:
        raise web.HTTPNotFound()
    return ctx.actor


async def staff_page(request: web.Request) -> web.Response:
    _admin(request)
    return await _staff_page(request)


async def _staff_page(
    request: web.Request, new_password: str | None = None, password_for: str | None = None
) -> web.Response:
    async with request.app[DB].reader() as session:
        people = (await session.scalars(select(StaffUser).order_by(StaffUser.display_name))).all()
        teams = (await session.scalars(select(Team).order_by(Team.name))).all()
    return render(
        request,
        "admin_staff.html",
        nav="admin",
        people=people,
        teams=teams,
        roles=[r.value for r in Role],
        new_password=new_password,
        password_for=password_for,
    )


async def add_staff(request: web.Request) -> web.StreamResponse:
    actor = _admin(request)
    form = await request.post()
    password = one_time_password()
    try:
        await do_add_staff_user(
            request.app[DB],
            actor,
            NewStaffUser(
                email=str(form.get("email", "")),
                display_name=str(form.get("name", "")).strip(),
                password=password,
                role=Role(str(form.get("role", "agent"))),
                teams=[str(t) for t in form.getall("team", [])],
                must_change_password=True,
            ),
        )
    except (HubError, ValueError) as exc:
        raise redirect_with("/admin/staff", "error", str(exc)) from None
    # Shown in this answer only, never in the flash: a cookie is stored by the browser and
    # sent back with the next request, and a password does not belong in either.
    return await _staff_page(request, new_password=password)


STAFF_ACTIONS = ("deactivate", "reactivate", "reset-password", "edit")
"""What the buttons of /admin/staff do to one person (the same actions as `hub user ...`)."""


async def staff_action(request: web.Request) -> web.StreamResponse:
    """One person's deactivate / reactivate / reset-password / edit button."""
    actor = _admin(request)
    what = request.match_info["action"]
    if what not in STAFF_ACTIONS:
        raise web.HTTPNotFound()
    form = await request.post()
    email = str(form.get("email", ""))
    app = request.app
    try:
        if what == "deactivate":
            done = await staff_actions.do_deactivate_staff(app[DB], actor, email, app[SESSIONS])
            release_soon(app, done.effect_ids)
            message = (
                f"Deactivated {email}: signed out everywhere, {done.tokens_revoked} API tokens "
                f"revoked, {len(done.conversations_returned)} conversations back in the queue."
            )
        elif what == "reactivate":
            await staff_actions.do_reactivate_staff(app[DB], actor, email)
            message = f"Reactivated {email}; they sign in with their password."
        elif what == "reset-password":
            password, effects = await staff_actions.do_reset_password(
                app[DB], actor, email, app[SESSIONS]
            )
            release_soon(app, effects)
            # Shown in this answer only, like a new person's: never in the flash cookie.
            return await _staff_page(request, new_password=password, password_for=email)
        else:
            capacity = str(form.get("capacity", "")).strip()
            edited = await staff_actions.do_edit_staff(
                app[DB],
                actor,
                email,
                role=Role(str(form.get("role", ""))),
                teams=[str(t) for t in form.getall("team", [])],
                capacity=int(capacity) if capacity else None,
            )
            release_soon(app, edited)
            message = f"Saved {email}."
    except (HubError, ValueError) as exc:
        raise redirect_with("/admin/staff", "error", str(exc)) from None
    raise redirect_with("/admin/staff", "ok", message)


async def teams_page(request: web.Request) -> web.Response:
    _admin(request)
    async with request.app[DB].reader() as session:
        teams = (await session.scalars(select(Team).order_by(Team.name))).all()
        csat = await settings_in(session)
    shipped = sorted(
        {
            v.locale
            for t in await do_list_templates(request.app[DB])
            if t.key == AFTER_HOURS_TEMPLATE
            for v in t.variants
        }
    )
    return render(
        request,
        "admin_teams.html",
        nav="admin",
        teams=teams,
        json=json,
        csat={t.id: csat.get(t.id, CsatChoice()) for t in teams},
        csat_default=CsatChoice(),
        shipped_after_hours=shipped or ["none"],
        language_names={lang: language_name(lang) for t in teams for lang in t.after_hours_replies},
    )


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SPAN_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


def _hours(raw: str) -> dict[str, list[list[str]]]:
    """'mon-fri 08:00-17:00, sat 09:00-12:00' -> {"mon": [["08:00", "17:00"]], ...}."""
    hours: dict[str, list[list[str]]] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        days_text, *spans = part.lower().split()
        if "-" in days_text:
            first, _, last = days_text.partition("-")
            if first not in DAYS or last not in DAYS:
                raise ValueError(f"unknown day range {days_text!r}; use mon..sun")
            days = DAYS[DAYS.index(first) : DAYS.index(last) + 1]
        elif days_text in DAYS:
            days = (days_text,)
        else:
            raise ValueError(f"unknown day {days_text!r}; use mon..sun")
        if not spans:
            raise ValueError(f"{days_text}: give opening times like 08:00-17:00")
        for span in spans:
            if not SPAN_RE.match(span) or span[:5] >= span[6:]:
                raise ValueError(f"{days_text}: {span!r} is not a time range like 08:00-17:00")
            for day in days:
                hours.setdefault(day, []).append([span[:5], span[6:]])
    return hours


def language_name(tag: str) -> str:
    """ "es-MX" -> "Spanish (Mexico)", for staff reading a list of language codes."""
    try:
        return str(Locale.parse(tag, sep="-").get_display_name("en") or tag)
    except (ValueError, UnknownLocaleError):
        return tag


def _after_hours_texts(form: Any) -> dict[str, str]:
    """The team's after-hours texts by language from the form: one field per language
    (``after_hours_reply.<lang>``; emptied means removed) and a new language with its text."""
    texts: dict[str, str] = {}
    for field_name, value in form.items():
        if field_name.startswith("after_hours_reply.") and str(value).strip():
            texts[normalize_language(field_name.split(".", 1)[1])] = str(value).strip()
    new_lang = str(form.get("after_hours_new_lang", "")).strip()
    new_text = str(form.get("after_hours_new_text", "")).strip()
    if new_text and not new_lang:
        raise ValueError("say which language the new after-hours text is in (e.g. es, vi)")
    if new_lang and new_text:
        texts[normalize_language(new_lang)] = new_text
    for lang, text in texts.items():
        try:
            render_reply(text, first_name="Sam", clinic_name="Clinic")
        except ReplyNotRendered as exc:
            raise ValueError(f"after-hours text ({lang}): {exc}") from None
    return texts


def _csat_choice(form: Any) -> CsatChoice:
    raw = str(form.get("csat_delay", "")).strip() or str(CsatChoice().delay_minutes)
    try:
        minutes = int(raw)
    except ValueError:
        raise ValueError(f"the CSAT delay must be a whole number of minutes, not {raw!r}") from None
    return CsatChoice(bool(form.get("csat_enabled")), check_delay(minutes))


async def save_team(request: web.Request) -> web.StreamResponse:
    actor = _admin(request)
    form = await request.post()
    try:
        name = str(form.get("name", "")).strip()
        if not name:
            raise ValueError("a team needs a name")
        hours = _hours(str(form.get("hours", "")))
        holidays = sorted(
            {h.strip() for h in str(form.get("holidays", "")).split(",") if h.strip()}
        )
        from datetime import date

        for h in holidays:
            date.fromisoformat(h)
        import zoneinfo

        tz = str(form.get("time_zone", "UTC")).strip() or "UTC"
        zoneinfo.ZoneInfo(tz)
        replies = _after_hours_texts(form)
        csat = _csat_choice(form)
    except (ValueError, InvalidLanguage, zoneinfo.ZoneInfoNotFoundError) as exc:
        raise redirect_with("/admin/teams", "error", f"Not saved: {exc}") from None
    team_id = str(form.get("id", ""))
    async with request.app[DB].transaction() as session:
        team = await session.get(Team, uuid.UUID(team_id)) if team_id else None
        if team is None:
            team = Team(name=name)
            session.add(team)
        team.name, team.time_zone, team.business_hours, team.holidays = name, tz, hours, holidays
        team.after_hours_enabled = bool(form.get("after_hours_enabled"))
        team.after_hours_replies = replies
        if form.get("is_default"):
            for other in (await session.scalars(select(Team))).all():
                other.is_default = False
            team.is_default = True
        await session.flush()
        await set_team_csat_in(session, actor, team.id, csat)
        await record(session, actor, "team.save", "team", team.id)
    raise redirect_with("/admin/teams", "ok", f"Team {name} saved.")


async def canned_page(request: web.Request) -> web.Response:
    _admin(request)
    async with request.app[DB].reader() as session:
        rows = (await session.scalars(select(CannedResponse).order_by(CannedResponse.title))).all()
        teams = (await session.scalars(select(Team).order_by(Team.name))).all()
    return render(request, "admin_canned.html", nav="admin", rows=rows, teams=teams)


async def save_canned(request: web.Request) -> web.StreamResponse:
    actor = _admin(request)
    form = await request.post()
    title, body = str(form.get("title", "")).strip(), str(form.get("body", "")).strip()
    if not title or not body:
        raise redirect_with("/admin/canned", "error", "A canned response needs a title and text.")
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import SandboxedEnvironment

    try:
        SandboxedEnvironment().parse(body)
    except TemplateSyntaxError as exc:
        raise redirect_with("/admin/canned", "error", f"Template error: {exc}") from None
    team = str(form.get("team", ""))
    async with request.app[DB].transaction() as session:
        row = CannedResponse(
            title=title[:120], body=body, team_id=uuid.UUID(team) if team else None
        )
        session.add(row)
        await session.flush()
        await record(session, actor, "canned.create", "canned_response", row.id)
    raise redirect_with("/admin/canned", "ok", "Saved.")
