"""The demo's patient simulator (``/simulator``) and one-click sign-in for the demo staff.

Demo mode only: ``install`` (called by ``hub demo``) adds these routes; any other hub has no
such routes, so the paths answer 404. The page plays a patient through the hub's front doors
(see web/simulator_feed.py); the one-click sign-in goes through the same password check,
audit and session as the sign-in form, with the passwords the demo keeps in its var directory.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from hub.demo import DEMO_TEAMS, DemoAccount
from hub.inbox.actions import staff
from web.auth import CSRF_FIELD, set_session_cookie
from web.keys import DB, SESSIONS, TEMPLATES
from web.render import render
from web.sessions import COOKIE_NAME, LOGIN_CSRF_COOKIE
from web.sign_in_code import ask_for_code
from web.simulator_feed import (
    Sent,
    Simulator,
    call_view,
    calls_of,
    demo_people,
    linkify,
    mail_file,
    mails,
    normalize_number,
    patient_mail,
    signature,
    texts,
    version,
    zone_of,
)

SIMULATOR = web.AppKey("simulator", Simulator)
CSRF_COOKIE = "hub_sim_csrf"
"""The page's double-submit token: another site cannot make the demo's patient text."""
MAX_TEXT_CHARS = 1600
"""Longest text the simulator sends (Twilio's own limit for one message)."""
MAX_MAIL_CHARS = 20_000
"""Longest mail body the simulator sends."""
KEYS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#")


def install(app: web.Application, sim: Simulator, accounts: tuple[DemoAccount, ...]) -> None:
    """Demo mode: the simulator's routes, the banner link and the sign-in list."""
    sim.passwords = {a.email: a.password for a in accounts if a.password}
    app[SIMULATOR] = sim
    app.router.add_routes(routes())
    env = app[TEMPLATES]
    env.globals["demo_mode"] = True
    env.globals["demo_staff"] = [a for a in accounts if a.password]
    env.globals["linkify"] = linkify


def routes() -> list[web.RouteDef]:
    return [
        web.get("/simulator", page, name="simulator"),
        web.get("/simulator/feed", feed, name="simulator_feed"),
        web.post("/simulator/text", send_text, name="simulator_text"),
        web.post("/simulator/call", start_call, name="simulator_call"),
        web.post("/simulator/call/{sid}", call_action, name="simulator_call_action"),
        web.post("/simulator/mail", send_mail, name="simulator_mail"),
        web.post("/login/demo", demo_sign_in, name="login_demo"),
    ]


def _sim(request: web.Request) -> Simulator:
    sim = request.app.get(SIMULATOR)
    if sim is None:  # only reachable if someone registers the routes by hand
        raise web.HTTPNotFound()
    return sim


def _who(request: web.Request, values: Any) -> tuple[str | None, str | None, str | None]:
    """(number, email, error) from the picker's fields."""
    sim = _sim(request)
    # The picker sends both the list's choice and the typed number; a typed one wins.
    raw = str(values.get("new_number", "")).strip() or str(values.get("number", "")).strip()
    if not raw:
        return None, None, None
    number = normalize_number(raw, sim.region)
    mail = str(values.get("email", "")).strip() or None
    if mail is None:
        mail = next((p.email for p in demo_people(sim.region) if p.number == number), None)
    if number is None:
        return (
            None,
            None,
            (f"“{raw[:40]}” is not a phone number. Type ten digits, such as 555-010-0107."),
        )
    if mail is not None and ("@" not in mail or len(mail) > 200):
        return number, None, f"“{mail[:40]}” is not an email address; leave it empty or fix it."
    return number, mail, None


def _feed_context(request: web.Request, number: str, mail: str | None) -> dict[str, Any]:
    sim = _sim(request)
    calls = [call_view(c) for c in calls_of(sim.fake, number)] if sim.fake is not None else []
    return {
        "number": number,
        "email": mail,
        "texts": texts(sim, number),
        "calls": list(reversed(calls)),
        "mails": mails(sim, mail) if mail else [],
        "sent_mail": [s for s in sim.sent if s.channel == "email" and s.address == mail],
        "version": version(sim, number, mail),
        "query": urlencode({"number": number, **({"email": mail} if mail else {})}),
        "keys": KEYS,
        "sim_csrf": request.cookies.get(CSRF_COOKIE, ""),
        "notice": "",
        "zone": zone_of(number, sim.region, DEMO_TEAMS[0][1]),
    }


async def page(request: web.Request) -> web.Response:
    sim = _sim(request)
    number, mail, error = _who(request, request.query)
    token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    context: dict[str, Any] = _feed_context(request, number, mail) if number is not None else {}
    context |= {
        "people": demo_people(sim.region),
        "error": error,
        "typed_number": request.query.get("new_number", ""),
        "typed_email": request.query.get("email", ""),
        "sim_csrf": token,
        "sms_ready": sim.fake is not None,
        "mail_ready": sim.mail_dir is not None and sim.mail_secret is not None,
        "clinic_number": sim.clinic_number,
        "notice": request.query.get("notice", ""),
    }
    response = render(request, "simulator.html", status=400 if error else 200, **context)
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/simulator")
    return response


async def feed(request: web.Request) -> web.Response:
    """The polled part of the page; 204 while nothing changed (htmx then leaves it alone)."""
    number, mail, error = _who(request, request.query)
    if number is None or error:
        raise web.HTTPBadRequest(text=error or "Pick a patient or type a number first.")
    context = _feed_context(request, number, mail)
    if request.query.get("seen") == context["version"]:
        return web.Response(status=204)
    return render(request, "_simulator_feed.html", **context)


async def _form(request: web.Request) -> Any:
    form = await request.post()
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not secrets.compare_digest(cookie, str(form.get(CSRF_FIELD, ""))):
        raise web.HTTPForbidden(text="This simulator page expired; reload it and try again.")
    return form


def _back(request: web.Request, form: Any, notice: str = "") -> web.StreamResponse:
    """htmx: the fresh feed; a plain form post: back to the page."""
    number, mail, _ = _who(request, form)
    if request.headers.get("HX-Request") and number is not None:
        context = _feed_context(request, number, mail) | {"notice": notice}
        return render(request, "_simulator_feed.html", **context)
    query = {"number": str(form.get("number", "")), "email": str(form.get("email", ""))}
    raise web.HTTPSeeOther("/simulator?" + urlencode({**query, "notice": notice}))


def _need(form: Any, request: web.Request) -> str:
    number, _, error = _who(request, form)
    if number is None:
        raise web.HTTPBadRequest(text=error or "Pick a patient or type a number first.")
    return number


async def send_text(request: web.Request) -> web.StreamResponse:
    sim, form = _sim(request), await _form(request)
    number = _need(form, request)
    body = str(form.get("body", "")).strip()
    if not body or len(body) > MAX_TEXT_CHARS:
        return _back(request, form, f"Write a text of 1 to {MAX_TEXT_CHARS} characters.")
    if sim.fake is None:
        return _back(request, form, "This demo uses a real Twilio account: text from a phone.")
    status = await sim.text(number, body)
    notice = "" if status == 200 else f"The hub refused the text (HTTP {status})."
    return _back(request, form, notice)


async def start_call(request: web.Request) -> web.StreamResponse:
    sim, form = _sim(request), await _form(request)
    number = _need(form, request)
    if sim.fake is None:
        return _back(request, form, "This demo uses a real Twilio account: call from a phone.")
    await sim.call(number)
    return _back(request, form)


async def call_action(request: web.Request) -> web.StreamResponse:
    """Keys pressed, silence, a voicemail or hanging up, on one of this number's calls."""
    sim, form = _sim(request), await _form(request)
    number = _need(form, request)
    call = sim.find_call(request.match_info["sid"], number)
    if call is None or sim.fake is None:
        return _back(request, form, "That call is over or is not this patient's.")
    view = call_view(call)
    action = "press" if "key" in form else str(form.get("action", ""))
    if action == "hang-up":
        await sim.fake.hang_up(call)
    elif view.waiting == "keys" and action == "press" and str(form.get("key", "")) in KEYS:
        await sim.fake.press(call, str(form.get("key")))
    elif view.waiting == "keys" and action == "silence":
        await sim.fake.no_input(call)
    elif view.waiting == "voicemail" and action == "voicemail":
        words = str(form.get("words", "")).strip()[:MAX_TEXT_CHARS]
        recording = await sim.fake.recording_done(call, duration=max(3, len(words.split())))
        if words and call.recordings.get(recording, {}).get("transcribe_callback"):
            await sim.fake.transcription_done(call, recording, words)
    else:
        return _back(request, form, "The call is not waiting for that now.")
    return _back(request, form)


async def send_mail(request: web.Request) -> web.StreamResponse:
    """A mail from the patient (a reply to one of the clinic's, or a new one), posted to the
    inbound-mail webhook with its signature, as the clinic's mail provider would."""
    sim, form = _sim(request), await _form(request)
    _need(form, request)
    _, sender, _ = _who(request, form)
    body = str(form.get("body", "")).strip()
    if sender is None or sim.mail_secret is None:
        return _back(request, form, "Give the patient an email address first (in the picker).")
    if not body or len(body) > MAX_MAIL_CHARS:
        return _back(request, form, f"Write a mail of 1 to {MAX_MAIL_CHARS} characters.")
    parent_name = str(form.get("parent", ""))
    parent = mail_file(sim, parent_name) if parent_name else None
    if parent_name and parent is None:
        return _back(request, form, "That mail is no longer in the demo's mail folder.")
    person = next((p.name for p in demo_people(sim.region) if p.email == sender), "")
    raw = patient_mail(sim, sender, person, body, parent)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{sim.hub_url}/webhooks/email/inbound",
            data=raw,
            headers={"X-Hub-Signature-256": signature(raw, sim.mail_secret)},
        ) as answer,
    ):
        status = answer.status
    subject = "Re: " + str(parent["Subject"] or "") if parent is not None else "A question"
    sim.sent.append(Sent(datetime.now(UTC), "email", sender, body, status, subject=subject))
    return _back(request, form, "" if status == 200 else f"The hub refused it (HTTP {status}).")


# -- one-click sign-in --------------------------------------------------------------------


async def demo_sign_in(request: web.Request) -> web.StreamResponse:
    """Sign in as one of the demo's staff: the password the demo keeps, checked as any other."""
    sim = _sim(request)
    form = await request.post()
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or cookie != form.get(CSRF_FIELD):
        raise web.HTTPForbidden(text="The sign-in page expired; reload it and try again.")
    email = str(form.get("email", ""))
    password = sim.passwords.get(email)
    if password is None:
        raise web.HTTPForbidden(
            text="One click works for the demo's own people only; sign in with the form."
        )
    signed_in = await staff.do_authenticate(request.app[DB], email, password)
    if signed_in is None:
        raise web.HTTPForbidden(
            text="That demo account's password was changed since the demo set it. "
            "Sign in with the form and the new password."
        )
    if signed_in.second_factor:
        raise await ask_for_code(request, signed_in, email, "/")
    await request.app[SESSIONS].destroy(request.cookies.get(COOKIE_NAME))
    token, _session = await request.app[SESSIONS].create(signed_in.ctx.staff_id)
    response = web.HTTPSeeOther("/password" if signed_in.must_change_password else "/")
    set_session_cookie(request, response, token)
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise response
