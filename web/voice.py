"""Twilio Voice webhooks: signed like SMS (403 and nothing stored without a valid
X-Twilio-Signature over HUB_PUBLIC_URL + path + query), parsed (400 naming the field), handed to
an action, answered with TwiML. Keys pressed are read from the posted ``Digits``; which menu
they answer is in the query of the URL the hub itself gave Twilio (signed with the rest)."""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from aiohttp import web

from hub.channels.base import (
    MalformedPayload,
    StatusUpdate,
    UnknownEvent,
    WebhookRequest,
    attempt_number,
)
from hub.channels.twilio_voice import twiml
from hub.channels.twilio_voice.events import (
    PROVIDER,
    CallEvent,
    parse_call,
    parse_recording,
    parse_transcription,
)
from hub.db import utcnow
from hub.enums import MessageStatus
from hub.inbox import actions
from hub.inbox.actions import voice_intake as intake
from hub.inbox.actions import voice_pin
from web.keys import ADAPTERS, DB, METRICS, RING, SETTINGS
from web.metrics_ops import webhook_done
from web.tasks import assign_soon, release_soon
from web.webhooks import read_signed_form, text_answer

BASE = "/webhooks/twilio/voice"


def _url(request: web.Request, path: str = "", **query: str) -> str:
    """An absolute URL for Twilio to post to next (it signs exactly this string)."""
    url = f"{request.app[SETTINGS].public_url}{BASE}{path}"
    return f"{url}?{urlencode(query)}" if query else url


def _twiml(xml: str) -> web.Response:
    return web.Response(text=xml, content_type="text/xml")


def _malformed(request: web.Request, kind: str, exc: Exception) -> web.Response:
    request.app[METRICS].webhook_rejected.labels(PROVIDER, kind, "malformed").inc()
    return text_answer(400, str(exc))


def _accepted(request: web.Request, kind: str, result: str) -> None:
    webhook_done(request, PROVIDER, kind, result)


async def _call(request: web.Request, kind: str) -> tuple[WebhookRequest, CallEvent] | web.Response:
    hook = await read_signed_form(request, PROVIDER, kind)
    if isinstance(hook, web.Response):
        return hook
    settings = request.app[SETTINGS]
    try:
        call = parse_call(
            hook.params, region=settings.default_region, account_sid=settings.twilio_account_sid
        )
    except MalformedPayload as exc:
        return _malformed(request, kind, exc)
    return hook, call


def _voicemail(request: web.Request) -> str:
    return twiml.voicemail(
        action=_url(request, "/recording"), transcribe_callback=_url(request, "/transcription")
    )


async def incoming_call(request: web.Request) -> web.Response:
    """``A call comes in``: the greeting (by the default team's hours) and the menu. The menu
    is the same for every caller, so it never tells whether a number belongs to a patient."""
    parsed = await _call(request, "call")
    if isinstance(parsed, web.Response):
        return parsed
    open_now = await intake.do_clinic_open(request.app[DB], utcnow())
    _accepted(request, "call", "open" if open_now else "closed")
    return _twiml(
        twiml.ivr_menu(
            request.app[SETTINGS].clinic_name,
            open_now,
            gather_action=_url(request, "/gather", menu="main"),
            no_input=_url(request, "/gather", menu="voicemail"),
        )
    )


async def gather(request: web.Request) -> web.Response:
    """A key pressed on the inbound menu (``menu=``) or on a reminder call (``m=``)."""
    parsed = await _call(request, "gather")
    if isinstance(parsed, web.Response):
        return parsed
    hook, call = parsed
    digits = call.digits or ""
    if hook.query.get("step") == "pin":
        return await _pin_entered(request, hook, call, digits)
    if "m" in hook.query:
        return await _reminder_key(request, hook, call, digits)
    menu = hook.query.get("menu", "main")
    if menu not in ("main", "appointment", "voicemail"):
        return _malformed(request, "gather", MalformedPayload(f"unknown menu {menu!r}"))
    _accepted(request, "gather", menu)
    if menu == "voicemail" or (menu == "main" and digits == "2"):
        return _twiml(_voicemail(request))
    if menu == "main" and digits == "0":
        return _twiml(twiml.emergency())
    if menu == "main" and digits == "1":
        db, ring = request.app[DB], request.app[RING]
        if await intake.do_caller_has_open_confirmation(db, ring, call.from_address, utcnow()):
            return _twiml(
                twiml.appointment_menu(
                    gather_action=_url(request, "/gather", menu="appointment"),
                    no_input=_url(request),
                )
            )
        return _twiml(
            twiml.no_open_appointment(
                action=_url(request, "/recording"),
                transcribe_callback=_url(request, "/transcription"),
            )
        )
    if menu == "appointment" and digits in ("1", "2"):
        return await _keypress(request, hook, call, digits, None)
    return _twiml(twiml.unknown_input(_url(request)))


async def _reminder_key(
    request: web.Request, hook: WebhookRequest, call: CallEvent, digits: str
) -> web.Response:
    try:
        message_id, attempt = uuid.UUID(hook.query["m"]), attempt_number(hook.query.get("a", "1"))
    except ValueError:
        return _malformed(request, "gather", MalformedPayload("the call reference is damaged"))
    if digits not in intake.KEYPRESS_DIGITS:
        again = _url(request, "/outbound", m=str(message_id), a=str(attempt))
        _accepted(request, "gather", "unknown_key")
        return _twiml(twiml.unknown_input(again))
    return await _keypress(request, hook, call, digits, message_id)


async def _keypress(
    request: web.Request,
    hook: WebhookRequest,
    call: CallEvent,
    digit: str,
    message_id: uuid.UUID | None,
    *,
    pin_checked: bool = False,
) -> web.Response:
    app = request.app
    if digit == "2" and not pin_checked and await voice_pin.do_cancel_pin_required(app[DB]):
        # Caller ID can be spoofed: the clinic asked for the date of birth first. The
        # reminder call's reference rides along, signed with the rest of the URL.
        carried = {k: v for k, v in hook.query.items() if k in ("m", "a")}
        _accepted(request, "gather", "pin_asked")
        action = _url(request, "/gather", step="pin", **carried)
        return _twiml(twiml.cancel_pin_prompt(gather_action=action))
    result = await intake.do_keypress(
        app[DB],
        app[RING],
        call_sid=call.call_sid,
        digit=digit,
        raw=hook.params,
        message_id=message_id,
        caller=call.from_address,
        to_address=call.to_address,
        clinic=app[SETTINGS].clinic,
    )
    _accepted(request, "gather", "duplicate" if result.duplicate else result.kind)
    release_soon(app, result.effect_ids)
    language = twiml.say_language(result.language)
    return _twiml(twiml.after_keypress(result.kind, result.spoken, language=language))


async def _pin_entered(
    request: web.Request, hook: WebhookRequest, call: CallEvent, digits: str
) -> web.Response:
    """The date-of-birth digits asked for after a 2: only the right ones cancel."""
    try:
        message_id = uuid.UUID(hook.query["m"]) if "m" in hook.query else None
    except ValueError:
        return _malformed(request, "gather", MalformedPayload("the call reference is damaged"))
    app = request.app
    outcome = await voice_pin.do_check_cancel_pin(
        app[DB],
        app[RING],
        call_sid=call.call_sid,
        digits=digits,
        message_id=message_id,
        caller=call.from_address,
    )
    _accepted(request, "gather", f"pin_{outcome}")
    if outcome != "accepted":
        return _twiml(twiml.pin_not_accepted(outcome))
    return await _keypress(request, hook, call, "2", message_id, pin_checked=True)


async def outbound_call(request: web.Request) -> web.Response:
    """The patient (or their answering machine) picked up a call the hub placed: read the
    message. A machine hears only the clinic's name and number."""
    parsed = await _call(request, "outbound")
    if isinstance(parsed, web.Response):
        return parsed
    hook, call = parsed
    app = request.app
    try:
        message_id, attempt = uuid.UUID(hook.query["m"]), attempt_number(hook.query["a"])
    except (KeyError, ValueError):
        return _malformed(request, "outbound", MalformedPayload("the call reference is damaged"))
    # Tie the call's sid to the attempt now, in case the API's answer was lost.
    answered = StatusUpdate(
        PROVIDER, call.call_sid, MessageStatus.SENDING, None, message_id, attempt
    )
    adapter = app[ADAPTERS][PROVIDER]
    retry_base_s = app[SETTINGS].send_retry_base_s
    await actions.do_apply_status(
        app[DB], answered, adapter.classify_error, retry_base_s=retry_base_s
    )
    script = await intake.do_call_script(app[DB], app[RING], message_id, machine=call.machine)
    _accepted(request, "outbound", "machine" if call.machine else "answered")
    if script is None:
        return _twiml(twiml.goodbye("Sorry, this call was placed in error. Goodbye."))
    if call.machine:
        settings = app[SETTINGS]
        return _twiml(twiml.machine_message(settings.clinic_name, settings.clinic["phone"]))
    language = twiml.say_language(script.language)
    if not script.automated:
        return _twiml(twiml.spoken_message(script.script, language=language))
    action = _url(request, "/gather", m=str(message_id), a=str(attempt))
    return _twiml(twiml.reminder_call(script.script, gather_action=action, language=language))


async def recording(request: web.Request) -> web.Response:
    """The ``<Record>`` action (answered with TwiML: the caller is still on the line) and the
    recording status callback (answered 204) share this URL."""
    hook = await read_signed_form(request, PROVIDER, "recording")
    if isinstance(hook, web.Response):
        return hook
    app = request.app
    settings = app[SETTINGS]
    try:
        event = parse_recording(
            hook.params, region=settings.default_region, account_sid=settings.twilio_account_sid
        )
    except MalformedPayload as exc:
        return _malformed(request, "recording", exc)
    result = await intake.do_record_voicemail(
        app[DB], app[RING], event, hook.params, clinic_name=settings.clinic_name
    )
    outcome = "empty" if event.empty else "stored" if result.created else "seen"
    _accepted(request, "recording", outcome)
    release_soon(app, result.effect_ids)
    if result.created and result.conversation_id is not None:
        assign_soon(app, result.conversation_id, result.assign_to_staff_id)
    if event.status is not None:
        return web.Response(status=204)
    return _twiml(twiml.voicemail_saved())


async def transcription(request: web.Request) -> web.Response:
    hook = await read_signed_form(request, PROVIDER, "transcription")
    if isinstance(hook, web.Response):
        return hook
    app = request.app
    try:
        event = parse_transcription(hook.params, account_sid=app[SETTINGS].twilio_account_sid)
    except MalformedPayload as exc:
        return _malformed(request, "transcription", exc)
    effects = await intake.do_record_transcription(app[DB], app[RING], event, hook.params)
    _accepted(request, "transcription", "applied" if effects else "ignored")
    release_soon(app, effects)
    return web.Response(status=204)


async def call_status(request: web.Request) -> web.Response:
    """Progress of a call the hub placed: busy and no-answer retry, then fall back."""
    hook = await read_signed_form(request, PROVIDER, "status")
    if isinstance(hook, web.Response):
        return hook
    app = request.app
    adapter = app[ADAPTERS][PROVIDER]
    try:
        update = adapter.parse_status(hook)
    except (MalformedPayload, UnknownEvent) as exc:
        return _malformed(request, "status", exc)
    effects = await actions.do_apply_status(
        app[DB], update, adapter.classify_error, retry_base_s=app[SETTINGS].send_retry_base_s
    )
    _accepted(request, "status", "applied" if effects else "ignored")
    release_soon(app, effects)
    return web.Response(status=204)
