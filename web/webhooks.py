"""Provider webhooks: verify the signature against HUB_PUBLIC_URL, parse, hand to an action,
answer fast. A request that fails verification or parsing stores nothing."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from aiohttp import web
from twilio.twiml.messaging_response import MessagingResponse

from hub.channels.base import MalformedPayload, UnknownEvent, WebhookRequest
from hub.channels.twilio_sms.rest import SIGNATURE_HEADER
from hub.inbox import actions
from web.keys import ADAPTERS, DB, METRICS, RING, SETTINGS
from web.metrics_ops import webhook_done, webhook_started
from web.tasks import assign_soon, release_soon

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 64 * 1024
"""Twilio's form posts are a few KB; anything far larger is not from Twilio."""
FORM = "application/x-www-form-urlencoded"


def text_answer(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", content_type="text/plain")


async def read_signed_form(
    request: web.Request, provider: str, kind: str
) -> WebhookRequest | web.Response:
    webhook_started(request)
    metrics = request.app[METRICS]

    def reject(status: int, reason: str, text: str) -> web.Response:
        metrics.webhook_rejected.labels(provider, kind, reason).inc()
        return text_answer(status, text)

    if (request.content_length or 0) > MAX_WEBHOOK_BYTES:
        return reject(413, "too_large", f"request body is over {MAX_WEBHOOK_BYTES} bytes")
    if request.content_type != FORM:
        return reject(400, "content_type", f"expected Content-Type {FORM}")
    # read(n) returns what has arrived so far, not n bytes: a form split across TCP segments
    # (or sent chunked) would be cut short and fail its signature. Read to the end, capped.
    raw = b""
    while len(raw) <= MAX_WEBHOOK_BYTES:
        chunk = await request.content.read(MAX_WEBHOOK_BYTES + 1 - len(raw))
        if not chunk:
            break
        raw += chunk
    if len(raw) > MAX_WEBHOOK_BYTES:
        return reject(413, "too_large", f"request body is over {MAX_WEBHOOK_BYTES} bytes")
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError):
        return reject(400, "form", "the body is not a valid form encoding")
    params = dict(pairs)
    if len(params) != len(pairs):
        return reject(400, "form", "a form field appears more than once")
    url = request.app[SETTINGS].public_url + request.raw_path
    signature = request.headers.get(SIGNATURE_HEADER, "")
    hook = WebhookRequest(
        url=url, params=params, headers={SIGNATURE_HEADER: signature}, query=dict(request.query)
    )
    if not request.app[ADAPTERS][provider].verify(hook):
        return reject(403, "signature", "missing or invalid X-Twilio-Signature")
    return hook


async def twilio_sms(request: web.Request) -> web.Response:
    hook = await read_signed_form(request, "twilio_sms", "inbound")
    if isinstance(hook, web.Response):
        return hook
    app = request.app
    adapter = app[ADAPTERS]["twilio_sms"]
    try:
        inbound = adapter.parse_inbound(hook)
    except MalformedPayload as exc:
        app[METRICS].webhook_rejected.labels("twilio_sms", "inbound", "malformed").inc()
        return text_answer(400, str(exc))
    result = await actions.do_receive_inbound(
        app[DB],
        app[RING],
        inbound,
        hook.params,
        help_text=app[SETTINGS].help_text,
        clinic_name=app[SETTINGS].clinic_name,
        clinic=app[SETTINGS].clinic,
    )
    webhook_done(request, "twilio_sms", "inbound", "duplicate" if result.duplicate else "new")
    release_soon(app, result.effect_ids)
    # Round-robin would find an assigned conversation taken; only a routing rule's request
    # can move it (a follow-up text should not cost a transaction that changes nothing).
    if (
        result.conversation_id is not None
        and not result.duplicate
        and (result.assignee_id is None or result.assign_to_staff_id is not None)
    ):
        assign_soon(app, result.conversation_id, result.assign_to_staff_id)
    return web.Response(text=str(MessagingResponse()), content_type="text/xml")


async def twilio_status(request: web.Request) -> web.Response:
    hook = await read_signed_form(request, "twilio_sms", "status")
    if isinstance(hook, web.Response):
        return hook
    app = request.app
    adapter = app[ADAPTERS]["twilio_sms"]
    try:
        update = adapter.parse_status(hook)
    except (MalformedPayload, UnknownEvent) as exc:
        app[METRICS].webhook_rejected.labels("twilio_sms", "status", "malformed").inc()
        return text_answer(400, str(exc))
    effects = await actions.do_apply_status(
        app[DB], update, adapter.classify_error, retry_base_s=app[SETTINGS].send_retry_base_s
    )
    webhook_done(request, "twilio_sms", "status", "applied" if effects else "ignored")
    release_soon(app, effects)
    return web.Response(status=204)
