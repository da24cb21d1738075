"""Email at the edge: the inbound-mail webhook (raw MIME, HMAC-signed), the built-in SMTP
receiver (aiosmtpd, started by `hub serve` when HUB_REPLY_DOMAIN is set) and the unsubscribe
link (RFC 8058 one-click POST, and a page with a button for people who click it)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from functools import partial
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from hub.channels.email_smtp.auth_results import check_relayed
from hub.channels.email_smtp.parse import MalformedEmail
from hub.channels.email_smtp.resolver import DnsResolver, Resolver
from hub.channels.email_smtp.sender_auth import SenderCheck, check_direct, run_check
from hub.consent.actions import do_unsubscribe
from hub.inbox.actions.email_intake import EmailIntakeResult, do_receive_email
from web.keys import DB, METRICS, RING, SETTINGS
from web.metrics_ops import webhook_done, webhook_started
from web.render import render
from web.tasks import assign_soon, release_soon

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
"""``sha256=<hex HMAC-SHA256 of the raw body>`` with HUB_EMAIL_WEBHOOK_SECRET."""
SMTP_SERVER = web.AppKey("smtp_server", asyncio.Server)
MAIL_RESOLVER = web.AppKey("mail_resolver", Resolver)
"""DNS for sender checks; the system's resolvers unless a test put a table here first."""


def _resolver(app: web.Application) -> Resolver:
    return app.get(MAIL_RESOLVER) or DnsResolver()


async def check_sender(
    app: web.Application,
    raw: bytes,
    *,
    peer: str | None,
    mail_from: str | None = None,
    helo: str | None = None,
) -> SenderCheck:
    """Whose verdict counts: a trusted relay's (the webhook, or a connection from one of
    HUB_TRUSTED_MAIL_RELAYS), else our own SPF/DKIM/DMARC check of the connecting server. The
    webhook without a trusted provider has no sender IP: DKIM alone can verify its mail."""
    settings = app[SETTINGS]
    relayed = peer is None or _is_relay(peer, settings.trusted_mail_relays)
    if relayed and settings.trusted_authserv_id:
        return check_relayed(raw, settings.trusted_authserv_id)
    check = partial(check_direct, raw, _resolver(app), ip=peer, mail_from=mail_from, helo=helo)
    return await run_check(check)


def _is_relay(peer: str, relays: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    try:
        address = ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in relays)


async def _receive(
    app: web.Application, raw: bytes, recipients: list[str], sender: SenderCheck
) -> EmailIntakeResult:
    settings = app[SETTINGS]
    result = await do_receive_email(
        app[DB],
        app[RING],
        raw,
        recipients=recipients,
        reply_domain=settings.reply_domain,
        clinic=settings.clinic,
        retry_base_s=settings.send_retry_base_s,
        sender=sender,
    )
    app[METRICS].webhook_accepted.labels("email", "sender", sender.reason).inc()
    release_soon(app, result.effect_ids)
    if result.outcome == "message" and result.conversation_id is not None:
        assign_soon(app, result.conversation_id, result.assign_to_staff_id)
    return result


async def inbound_webhook(request: web.Request) -> web.Response:
    webhook_started(request)
    app = request.app
    settings = app[SETTINGS]
    secret = settings.email_webhook_secret
    if not secret:
        return web.Response(status=404, text="inbound-mail webhook is not configured")
    raw = await _read_limited(request, settings.email_max_bytes)
    if raw is None:
        app[METRICS].webhook_rejected.labels("email", "inbound", "too_large").inc()
        return web.Response(status=413, text="message too large")
    given = request.headers.get(SIGNATURE_HEADER, "")
    expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        app[METRICS].webhook_rejected.labels("email", "inbound", "signature").inc()
        return web.Response(status=401, text=f"missing or wrong {SIGNATURE_HEADER}")
    try:
        result = await _receive(app, raw, [], await check_sender(app, raw, peer=None))
    except MalformedEmail as exc:
        app[METRICS].webhook_rejected.labels("email", "inbound", "malformed").inc()
        return web.Response(status=400, text=str(exc))
    webhook_done(request, "email", "inbound", result.outcome)
    return web.json_response({"outcome": result.outcome})


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def unsubscribe_page(request: web.Request) -> web.Response:
    """Someone clicked the link: one button, so a mail scanner following links unsubscribes
    no one (RFC 8058's reason for the POST)."""
    return render(request, "unsubscribe.html", token=request.match_info["token"], done=None)


async def unsubscribe(request: web.Request) -> web.Response:
    result = await do_unsubscribe(request.app[DB], request.app[RING], request.match_info["token"])
    if result is None:
        return render(request, "unsubscribe.html", token=None, done=None, status=404)
    log.info("unsubscribed", extra={"purpose": result.purpose.value, "changed": result.changed})
    return render(request, "unsubscribe.html", token=None, done=result.purpose.value)


class _Receiver:
    """aiosmtpd handler: mail for the reply domain and the clinic's addresses only."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        settings = self.app[SETTINGS]
        local, _, domain = address.lower().rpartition("@")
        if (settings.reply_domain and domain == settings.reply_domain.lower() and local) or (
            address.lower() in settings.clinic_emails
        ):
            envelope.rcpt_tos.append(address)
            return "250 OK"
        return "550 5.1.1 no such mailbox here"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        started = time.perf_counter()
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode()
        try:
            # Checked on the bytes as they came: the line added below is not the sender's.
            sender = await check_sender(
                self.app,
                raw,
                peer=str(session.peer[0]) if isinstance(session.peer, tuple) else "",
                mail_from=envelope.mail_from or "",
                helo=session.host_name or "",
            )
            if envelope.mail_from in ("", "<>"):
                # The null sender is how bounces and most auto-replies announce themselves;
                # headers alone do not say it, so tell the parser.
                raw = b"Return-Path: <>\r\n" + raw
            result = await _receive(self.app, raw, list(envelope.rcpt_tos), sender)
        except MalformedEmail as exc:
            self.app[METRICS].webhook_rejected.labels("email", "smtp", "malformed").inc()
            return f"550 5.6.0 {str(exc)[:200]}"
        except Exception:
            log.exception("storing inbound email failed; the sender will retry")
            return "451 4.3.0 temporary failure, try again later"
        self.app[METRICS].webhook_done("email", "smtp", result.outcome, started)
        return "250 OK"


async def smtp_receiver(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the SMTP receiver on HUB_INBOUND_SMTP_PORT while the app runs."""
    settings = app[SETTINGS]
    if not settings.reply_domain:
        yield
        return
    loop = asyncio.get_running_loop()
    handler = _Receiver(app)
    server = await loop.create_server(
        lambda: SMTP(
            handler,
            data_size_limit=settings.email_max_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.reply_domain,
            ident="hub",
        ),
        host=settings.host,
        port=settings.inbound_smtp_port,
        # Several `hub serve` processes on one machine share the port (the kernel spreads
        # connections), as they share nothing else the receiver needs.
        reuse_port=True,
    )
    app[SMTP_SERVER] = server
    log.info("SMTP receiver listening", extra={"port": settings.inbound_smtp_port})
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()
