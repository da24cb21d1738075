"""Outbound email: OutgoingEmail -> an RFC 5322 message, Message-IDs that name our messages,
and DKIM signing. Pure: no network.

DKIM is dkimpy, the long-standing Python DKIM library (RFC 6376, 8301 and 8463, plus ARC;
packaged by Debian, last release 1.1.8 in 2024). It signs RSA in pure Python and needs only
dnspython, which signing never calls, and nothing async. cryptography is used here only to
accept the key in any PEM form (dkimpy reads PKCS#1 alone). Ed25519 is left out: dkimpy needs
PyNaCl for it, and receivers verify RSA in any case.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, cast
from urllib.parse import urlsplit

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

MAX_REFERENCES = 20
"""Message-IDs carried in References: the thread's first and its most recent."""
MIN_DKIM_KEY_BITS = 1024
"""RFC 8301: verifiers must refuse shorter RSA keys (2048 is recommended)."""
SIGNED_HEADERS = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "auto-submitted",
    "list-unsubscribe",
    "list-unsubscribe-post",
)
"""Covered by the DKIM signature. RFC 8058 section 4 requires the List-Unsubscribe pair."""

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_ID_PART = re.compile(r"[!#$%&'*+/=?^_`{|}~.A-Za-z0-9-]+")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_SELECTOR = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")


class DkimError(ValueError):
    """The DKIM key or settings cannot sign; the message says which."""


class _VerbatimHeader(UnstructuredHeader):
    """Written exactly as given, folded only between its comma-separated items. The stdlib
    would turn a long URL into RFC 2047 encoded words, which no mail client reads as a URL,
    and moves a long Message-ID onto a line of its own, which some readers mishandle."""

    name: str  # set by BaseHeader, which the registry mixes in

    @classmethod
    def parse(cls, value: str, kwds: dict[str, Any]) -> None:
        super().parse(value, kwds)
        kwds["decoded"] = value

    def fold(self, *, policy: Any) -> str:
        items = [item.strip() for item in str(self).split(",")]
        linesep = str(policy.linesep)
        return f"{self.name}: " + f",{linesep} ".join(items) + linesep


def _policy() -> policy.EmailPolicy[EmailMessage]:
    registry = HeaderRegistry()
    # The registry mixes BaseHeader in itself; typeshed wants it already there.
    verbatim = cast("type[BaseHeader]", _VerbatimHeader)
    for name in ("list-unsubscribe", "list-unsubscribe-post", "message-id", "in-reply-to"):
        registry.map_to_type(name, verbatim)
    # 7bit: a relay that meets 8-bit text without 8BITMIME converts it, and the converted
    # body no longer matches its DKIM body hash.
    return policy.SMTP.clone(header_factory=registry, cte_type="7bit")


POLICY = _policy()
"""CRLF line ends and 7-bit transfer encodings, as sent; ``message.as_bytes()`` gives the
bytes to sign and send."""


def make_message_id(hub_message_id: uuid.UUID, domain: str) -> str:
    """Our Message-ID for a hub message, "<uuid@domain>". The same for every attempt at it,
    so a retry is not a second mail in the patient's client, and a reply or a bounce finds the
    message whichever attempt it answers."""
    domain = domain.strip().lower().rstrip(".")
    if not _DOMAIN.fullmatch(domain):
        raise ValueError("the Message-ID domain must be a domain name")
    return f"<{hub_message_id}@{domain}>"


def hub_message_id_of(message_id: str, domain: str) -> uuid.UUID | None:
    """The hub message a Message-ID of ours names (brackets optional); None for anyone
    else's id."""
    local, at, right = message_id.strip().strip("<>").rpartition("@")
    wanted = domain.strip().lower().rstrip(".")
    if not at or not wanted or right.lower().rstrip(".") != wanted or not _UUID.fullmatch(local):
        return None
    return uuid.UUID(local)


@dataclass(frozen=True, kw_only=True)
class OutgoingEmail:
    to: str
    from_address: str
    from_name: str | None = None
    subject: str
    text: str
    html: str | None = None
    message_id: str
    """As make_message_id gives it, "<uuid@domain>"."""
    reply_to: str | None = None
    in_reply_to: str | None = None
    """Message-ID answered (brackets optional)."""
    references: tuple[str, ...] = ()
    """The thread's References before this mail, oldest first (brackets optional)."""
    auto_generated: bool = False
    """Sent by a journey or a rule, not typed by staff: marked so auto-responders stay quiet."""
    unsubscribe_url: str | None = None
    """https URL answering POST /unsubscribe/{token} (RFC 8058 one-click)."""
    unsubscribe_mailto: str | None = None
    attachments: tuple[tuple[str, str, bytes], ...] = ()
    """(file name, content type, bytes) of files sent as attachments."""

    def __repr__(self) -> str:  # addresses, subject and body are PHI
        return f"OutgoingEmail({self.message_id}, auto={self.auto_generated})"


def _one_line(value: str) -> str:
    # Template output may end in a newline; a header never may (nor smuggle another header).
    return " ".join(value.split())


def _address(value: str, what: str, name: str | None = None) -> Address:
    local, at, domain = value.strip().rpartition("@")
    try:
        # An internationalised domain goes as punycode; a non-ASCII local part would need
        # SMTPUTF8 end to end, so it is refused below like any other unusable address.
        spec = f"{local}{at}{domain.encode('idna').decode('ascii')}"
        return Address(display_name=_one_line(name or ""), addr_spec=spec)
    except Exception:  # the header registry raises several kinds for a bad addr-spec
        raise ValueError(f"{what} is not an email address") from None


def _bracketed(message_id: str, what: str) -> str:
    value = message_id.strip()
    inner = value[1:-1] if value.startswith("<") and value.endswith(">") else value
    left, at, right = inner.partition("@")
    if not (at and _ID_PART.fullmatch(left) and _ID_PART.fullmatch(right)):
        raise ValueError(f"{what} is not a Message-ID")
    return f"<{inner}>"


def _references(mail: OutgoingEmail) -> list[str]:
    chain = [_bracketed(ref, "a References id") for ref in mail.references]
    if mail.in_reply_to:
        chain.append(_bracketed(mail.in_reply_to, "in_reply_to"))
    # A repeated id keeps its last place, so the answered message always ends the chain.
    unique = list(dict.fromkeys(reversed(chain)))[::-1]
    if len(unique) > MAX_REFERENCES:
        # The first id is the thread's root: clients that thread by it still can.
        unique = [unique[0], *unique[-(MAX_REFERENCES - 1) :]]
    return unique


def _unsubscribe(url: str, mailto: str | None) -> tuple[str, bool]:
    """(List-Unsubscribe value, whether one-click may be offered)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.netloc or re.search(r"[\s<>,]", url):
        raise ValueError("unsubscribe_url must be an absolute http(s) URL")
    items = [f"<{url.strip()}>"]
    if mailto:
        if not mailto.startswith("mailto:") or re.search(r"[\s<>,]", mailto):
            raise ValueError("unsubscribe_mailto must be a mailto: URI")
        items.append(f"<{mailto}>")
    # RFC 8058 allows one-click only with an HTTPS URI; a local demo on http gets the plain
    # header, which mail clients still offer as a link.
    return ", ".join(items), parts.scheme == "https"


def compose(mail: OutgoingEmail, *, date: datetime | None = None) -> EmailMessage:
    """The message to send: text/plain, or multipart/alternative text + HTML, UTF-8; with
    attachments, that inside a multipart/mixed.

    Raises ValueError when an address, Message-ID or unsubscribe URI is unusable."""
    message = EmailMessage(policy=POLICY)
    message["From"] = _address(mail.from_address, "from_address", mail.from_name)
    message["To"] = _address(mail.to, "to")
    message["Subject"] = _one_line(mail.subject)
    message["Date"] = format_datetime(date or datetime.now(UTC))
    message["Message-ID"] = _bracketed(mail.message_id, "message_id")
    if mail.reply_to:
        message["Reply-To"] = _address(mail.reply_to, "reply_to")
    if mail.in_reply_to:
        message["In-Reply-To"] = _bracketed(mail.in_reply_to, "in_reply_to")
    references = _references(mail)
    if references:
        message["References"] = " ".join(references)
    if mail.auto_generated:
        message["Auto-Submitted"] = "auto-generated"
        # Exchange and Outlook read this one rather than Auto-Submitted.
        message["X-Auto-Response-Suppress"] = "All"
    if mail.unsubscribe_url:
        value, one_click = _unsubscribe(mail.unsubscribe_url, mail.unsubscribe_mailto)
        message["List-Unsubscribe"] = value
        if one_click:
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["MIME-Version"] = "1.0"
    message.set_content(mail.text, charset="utf-8")
    if mail.html is not None:
        message.add_alternative(mail.html, subtype="html", charset="utf-8")
    for filename, content_type, data in mail.attachments:
        maintype, _, subtype = content_type.partition("/")
        message.add_attachment(
            data, maintype=maintype, subtype=subtype or "octet-stream", filename=filename
        )
    for part in message.walk():
        if part is not message:
            del part["MIME-Version"]  # the stdlib repeats it on each part; it belongs on top
    return message


@dataclass(frozen=True)
class DkimKey:
    selector: str
    domain: str
    private_key_pem: bytes = field(repr=False)
    """RSA private key, PKCS#1 or PKCS#8 PEM, unencrypted."""

    def __post_init__(self) -> None:
        if not _SELECTOR.fullmatch(self.selector):
            raise DkimError("the DKIM selector must be letters, digits, dots and dashes")
        if not _DOMAIN.fullmatch(self.domain) or "." not in self.domain:
            raise DkimError("the DKIM domain must be the From address's domain name")
        _pkcs1(self.private_key_pem)  # a bad key fails at start-up, not at the first send


def _pkcs1(pem: bytes) -> bytes:
    """The key as dkimpy reads it (PKCS#1 PEM), whatever PEM form it was given in."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise DkimError(f"the DKIM key is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimError("the DKIM key must be an RSA key")
    if key.key_size < MIN_DKIM_KEY_BITS:
        raise DkimError(f"the DKIM key has {key.key_size} bits; receivers need at least 1024")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _header_names(message: bytes) -> list[str]:
    head = re.split(rb"\r?\n\r?\n", message, maxsplit=1)[0]
    names = []
    for line in re.split(rb"\r?\n", head):
        if line[:1] not in (b" ", b"\t") and b":" in line:
            names.append(line.split(b":", 1)[0].strip().decode("ascii", "replace").lower())
    return names


def dkim_sign(message: bytes, key: DkimKey) -> bytes:
    """``message`` with a DKIM-Signature header (rsa-sha256, relaxed/relaxed) prepended.

    Sign the exact bytes that will be sent: re-serialising a message can refold headers.
    Each signed header is listed once more than it occurs, so nobody on the way can add
    another From, Subject or List-Unsubscribe without breaking the signature."""
    present = _header_names(message)
    include = [name for name in SIGNED_HEADERS for _ in range(present.count(name) + 1)]
    linesep = b"\r\n" if b"\r\n" in message else b"\n"
    try:
        signature = dkim.sign(
            message,
            key.selector.encode("ascii"),
            key.domain.encode("ascii"),
            _pkcs1(key.private_key_pem),
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=b"rsa-sha256",
            include_headers=[name.encode("ascii") for name in include],
            linesep=linesep,
        )
    except dkim.DKIMException as exc:
        raise DkimError(f"DKIM signing failed: {exc}") from None
    return bytes(signature) + message
