"""Email out through any SMTP server (aiosmtplib to HUB_SMTP_URL). Inbound mail does not come
through an adapter webhook: it arrives at the built-in SMTP receiver or the signed inbound-mail
webhook and goes to ``hub.inbox.actions.email_intake``."""

from __future__ import annotations

import ssl
from datetime import datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib

from hub.channels.base import (
    FailureClass,
    FailureEffect,
    InboundMessage,
    NotConfigured,
    Outbound,
    SendFailed,
    SendReceipt,
    StatusUpdate,
    UnknownEvent,
    WebhookRequest,
)
from hub.channels.email_smtp.compose import (
    DkimKey,
    OutgoingEmail,
    compose,
    dkim_sign,
    make_message_id,
)
from hub.config import Settings
from hub.consent.exceptions import ConsentRefused
from hub.consent.schemas import Decision
from hub.enums import Channel, MessageStatus

PROVIDER = "email_smtp"
SMTP_TIMEOUT_S = 30.0
"""Per SMTP conversation; a slower server is a transient failure (retried)."""
DEFAULT_SUBJECT = "A message from {clinic}"

HARD_BOUNCE_CODES = frozenset({550, 551, 553})
"""RCPT answers that mean the address does not exist or will never take mail from us."""


def classify_smtp(code: int | None, message: str = "") -> FailureClass:
    """4xx and connection trouble retry; 5xx is final, and a rejected recipient also marks the
    address unreachable (a hard bounce) so journeys stop trying it and fall back."""
    text = " ".join(message.split())[:200]
    if code is None:
        return FailureClass(
            "smtp_unreachable", f"the mail server could not be reached ({text})", True
        )
    if 400 <= code < 500:
        return FailureClass(f"smtp_{code}", f"the mail server deferred the message: {text}", True)
    if code in HARD_BOUNCE_CODES or "5.1." in text:
        return FailureClass(
            f"smtp_{code}",
            f"the mail server rejected the address: {text}",
            False,
            FailureEffect.UNREACHABLE,
            "hard_bounce",
        )
    return FailureClass(f"smtp_{code}", f"the mail server refused the message: {text}", False)


class EmailSmtpAdapter:
    name = PROVIDER
    channel = Channel.EMAIL

    def __init__(
        self,
        *,
        smtp_url: str | None,
        email_from: str | None,
        reply_domain: str | None,
        clinic_name: str = "The clinic",
        dkim: DkimKey | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.smtp_url = smtp_url
        self.from_name, self.from_address = parseaddr(email_from or "")
        self.from_name = self.from_name or clinic_name
        self.reply_domain = reply_domain
        self.clinic_name = clinic_name
        self.dkim = dkim
        self.tls_context = tls_context

    @classmethod
    def from_settings(cls, settings: Settings) -> EmailSmtpAdapter:
        dkim = None
        if settings.dkim_selector and settings.dkim_key_file:
            try:
                dkim = DkimKey(
                    settings.dkim_selector,
                    _domain_of(parseaddr(settings.email_from or "")[1]),
                    Path(settings.dkim_key_file).read_bytes(),
                )
            except (OSError, ValueError) as exc:
                raise NotConfigured(f"HUB_DKIM_KEY_FILE cannot be used: {exc}") from None
        return cls(
            smtp_url=settings.smtp_url,
            email_from=settings.email_from,
            reply_domain=settings.reply_domain,
            clinic_name=settings.clinic_name,
            dkim=dkim,
        )

    def __repr__(self) -> str:
        return f"EmailSmtpAdapter(host={urlsplit(self.smtp_url or '').hostname!r})"

    # -- webhooks: mail comes in by SMTP or the inbound-mail webhook, not through here ----------

    def verify(self, request: WebhookRequest) -> bool:
        return False

    def parse_inbound(self, request: WebhookRequest) -> InboundMessage:
        raise UnknownEvent("email arrives at the SMTP receiver or /webhooks/email/inbound")

    def parse_status(self, request: WebhookRequest) -> StatusUpdate:
        raise UnknownEvent("email delivery news arrives as bounce messages")

    def classify_error(self, code: str | None) -> FailureClass:
        return classify_smtp(int(code) if code and code.isdigit() else None, code or "")

    # -- sending -------------------------------------------------------------------------

    @property
    def message_id_domain(self) -> str:
        return self.reply_domain or _domain_of(self.from_address)

    async def send(self, outbound: Outbound, decision: Decision) -> SendReceipt:
        if outbound.channel is not Channel.EMAIL or decision.channel is not Channel.EMAIL:
            raise ConsentRefused("this adapter sends email only", code="wrong_channel")
        if not decision.allowed:
            raise ConsentRefused(decision.reason, code=decision.code)
        if not (self.smtp_url and self.from_address):
            raise NotConfigured("set HUB_SMTP_URL and HUB_EMAIL_FROM to send email")
        # The same Message-ID on every attempt: a retry the server already took is one mail
        # in the patient's client, and bounces and replies find the message whichever it was.
        message_id = make_message_id(outbound.message_id, self.message_id_domain)
        mail = OutgoingEmail(
            to=outbound.to_address,
            from_address=self.from_address,
            from_name=self.from_name,
            subject=outbound.subject or DEFAULT_SUBJECT.format(clinic=self.clinic_name),
            text=outbound.body,
            html=outbound.html,
            message_id=message_id,
            reply_to=outbound.reply_to,
            in_reply_to=outbound.in_reply_to,
            references=outbound.references,
            auto_generated=outbound.automated,
            unsubscribe_url=outbound.unsubscribe_url,
            unsubscribe_mailto=(
                f"mailto:{self.from_address}?subject=unsubscribe"
                if outbound.unsubscribe_url
                else None
            ),
            attachments=tuple((f.filename, f.content_type, f.data) for f in outbound.attachments),
        )
        raw = compose(mail).as_bytes()
        if self.dkim is not None:
            raw = dkim_sign(raw, self.dkim)
        try:
            await aiosmtplib.send(
                raw,
                sender=self.from_address,
                recipients=[outbound.to_address],
                **self.connection(),
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusal = exc.recipients[0] if exc.recipients else None
            raise SendFailed(
                classify_smtp(refusal.code if refusal else 550, refusal.message if refusal else "")
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise SendFailed(classify_smtp(exc.code, exc.message)) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise SendFailed(classify_smtp(None, type(exc).__name__)) from None
        return SendReceipt(PROVIDER, message_id.strip("<>"), MessageStatus.SENT)

    def connection(self) -> dict[str, Any]:
        """aiosmtplib.send arguments for the relay in HUB_SMTP_URL (patient and staff mail)."""
        parts = urlsplit(self.smtp_url or "")
        secure = parts.scheme == "smtps"
        return {
            "hostname": parts.hostname or "localhost",
            "port": parts.port or (465 if secure else 587),
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
            "use_tls": secure,
            # smtp://: STARTTLS whenever the server offers it (required before AUTH by
            # aiosmtplib when credentials are given).
            "start_tls": None if not secure else False,
            "timeout": SMTP_TIMEOUT_S,
            "tls_context": self.tls_context,
        }

    async def find_sent(self, outbound: Outbound, since: datetime) -> SendReceipt | None:
        # SMTP has no way to ask whether a server took a message. A second copy of an email
        # (same Message-ID, which clients collapse) is the lesser harm than none at all.
        return None

    async def close(self) -> None:
        return None


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower() or "localhost"
