"""Inbound email, raw RFC 5322 bytes -> ParsedEmail. Pure: no network, no database.

Anything a mail server may hand over is read without raising, except input that is no email at
all (MalformedEmail). Attachments are kept within limits and the rest reported by type only:
filenames are the patient's words and may be PHI.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import parseaddr, parsedate_to_datetime

from hub.channels.base import MalformedPayload
from hub.channels.email_smtp.automatic import (
    Complaint,
    automatic_reason,
    bounce_signal,
    feedback_report,
    is_read_receipt,
)
from hub.channels.email_smtp.bounce import Bounce, delivery_report, plain_bounce
from hub.channels.email_smtp.display import (
    html_to_text,
    html_without_quotes,
    sanitize_html,
    visible_text_of,
)
from hub.channels.email_smtp.mime import (
    addresses,
    attached_message,
    content_type,
    disposition,
    filename,
    header,
    leaves,
    message_ids,
    normalize_message_id,
    part_text,
    payload_bytes,
    raw_headers,
)

__all__ = [
    "DEFAULT_ALLOWED_TYPES",
    "Bounce",
    "Complaint",
    "MalformedEmail",
    "ParsedAttachment",
    "ParsedEmail",
    "parse_email",
    "reply_token_of",
]

MAX_BOUNDARY_LINES = 2000
"""Lines starting with "--" (MIME boundaries) in one message: the stdlib parser's time grows
with the square of the parts, and no client sends thousands."""
DEFAULT_MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
"""Largest attachment kept; bigger ones are dropped and reported."""
DEFAULT_MAX_ATTACHMENTS = 10
"""Attachments kept from one message; the rest are dropped and reported."""
DEFAULT_ALLOWED_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/heic",
        "image/heif",
        "image/webp",
        "application/pdf",
        "text/plain",
        "text/csv",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
    }
)
"""Attachment types kept by default: photos, PDFs, text and current office documents. Not
legacy .doc/.xls (macros), archives, executables or attached emails (message/rfc822)."""

_EMAIL_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "received",
        "return-path",
        "mime-version",
        "content-type",
        "sender",
        "reply-to",
        "delivered-to",
        "in-reply-to",
        "references",
    }
)
_TYPE_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "text/comma-separated-values": "text/csv",
    "application/x-pdf": "application/pdf",
}
_UNTYPED = frozenset({"application/octet-stream", "binary/octet-stream", "application/x-download"})
_EXTENSIONS = {
    "pdf": "application/pdf",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
    "txt": "text/plain",
    "csv": "text/csv",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "odt": "application/vnd.oasis.opendocument.text",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
}
_ZIP_TYPES = frozenset(
    kind for kind in _EXTENSIONS.values() if "officedocument" in kind or "oasis" in kind
)
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
_MAGIC = (
    (b"%PDF-", "application/pdf"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"PK\x03\x04", "application/zip"),
)
_MAGIC_CHECKED = frozenset(
    {"application/pdf", "image/jpeg", "image/png", "image/gif", "image/webp", "image/heic"}
)
_REPORT_TYPES = frozenset(
    {
        "message/delivery-status",
        "message/global-delivery-status",
        "message/rfc822",
        "message/global",
        "text/rfc822-headers",
        "message/global-headers",
        "message/feedback-report",
        "message/disposition-notification",
        "message/global-disposition-notification",
    }
)
_REPLY_ADDRESS = re.compile(r"reply\+([A-Za-z0-9_.=-]+)@([^@\s<>]+)", re.IGNORECASE)
_SAFE_TYPE = re.compile(r"[^a-z0-9.+/-]")


class MalformedEmail(MalformedPayload):
    """Bytes that are not an email message; the message says what is missing."""


@dataclass(frozen=True)
class ParsedAttachment:
    filename: str | None
    content_type: str
    """Lower-case; for parts sent as application/octet-stream, read from the bytes."""
    data: bytes = field(repr=False)
    content_id: str | None = None
    """Normalised Content-ID, for images the HTML shows as "cid:..."."""
    inline: bool = False

    def __repr__(self) -> str:  # the filename is the sender's words
        return f"ParsedAttachment({self.content_type}, {len(self.data)} bytes)"


@dataclass(frozen=True)
class ParsedEmail:
    message_id: str | None
    """Without angle brackets; None when the mail has none."""
    from_address: str | None
    """Lower-cased addr-spec."""
    from_name: str | None
    to: tuple[str, ...]
    """To/Cc/Delivered-To addresses keep their local part's case (reply tokens are
    case-sensitive); domains are lower-cased."""
    cc: tuple[str, ...]
    delivered_to: tuple[str, ...]
    """Delivered-To and X-Original-To: where the receiving server delivered it."""
    subject: str
    in_reply_to: str | None
    references: tuple[str, ...]
    text: str
    """The whole plain text, quoted history included."""
    visible_text: str
    """The reply without quoted history or signature, for display; ``text`` when that
    would be empty."""
    html: str | None
    """Sanitized HTML, safe to show staff; None when the mail has no HTML."""
    attachments: tuple[ParsedAttachment, ...]
    auto_submitted: bool
    """No person wrote this (or a list robot sent it): never answer it automatically."""
    auto_reason: str | None
    """Which rule said so, for logs: header names and fixed values only."""
    bounce: Bounce | None
    date: datetime | None
    dropped: tuple[str, ...] = ()
    """One line per attachment not kept, by type and size, never by name."""
    complaint: Complaint | None = None
    """An RFC 5965 feedback report (never also a bounce)."""
    read_receipt: bool = False
    """An RFC 8098 disposition notification (never also a bounce)."""

    def __repr__(self) -> str:  # names, addresses, subject and body are PHI
        digest = hashlib.sha256((self.message_id or "").encode()).hexdigest()[:12]
        return (
            f"ParsedEmail(id#{digest}, attachments={len(self.attachments)}, "
            f"dropped={len(self.dropped)}, auto={self.auto_reason!r}, "
            f"bounce={self.bounce is not None})"
        )


def _recipient(spec: str) -> str:
    local, _, domain = spec.rpartition("@")
    return f"{local}@{domain.lower()}"


def _recipients(message: Message, *names: str) -> tuple[str, ...]:
    found = [_recipient(spec) for name in names for _, spec in addresses(message, name)]
    return tuple(dict.fromkeys(found))


def _date(message: Message) -> datetime | None:
    values = raw_headers(message, "Date")
    try:
        parsed = parsedate_to_datetime(values[0])
    except Exception:  # no Date, or one no parser can read: the receiver's clock decides
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _sniff(data: bytes) -> str | None:
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "image/heic"
    return None


def _attachment_type(declared: str, data: bytes, name: str | None) -> tuple[str, bool]:
    """(type, whether the bytes are what the type says)."""
    kind = _TYPE_ALIASES.get(declared, declared)
    sniffed = _sniff(data)
    if kind in _UNTYPED:
        extension = (name or "").rpartition(".")[2].lower() if name and "." in name else ""
        if sniffed and sniffed != "application/zip":
            kind = sniffed
        elif extension in _EXTENSIONS:
            kind = _EXTENSIONS[extension]
    family = "image/heic" if kind == "image/heif" else kind
    if family in _MAGIC_CHECKED:
        return kind, sniffed == family
    if kind in _ZIP_TYPES:
        return kind, sniffed == "application/zip"
    return kind, True


def _attached_bytes(part: Message) -> bytes:
    """The bytes of a message/rfc822 part (kept only when a caller allows that type)."""
    inner = attached_message(part)
    try:
        return inner.as_bytes() if inner is not None else b""
    except Exception:
        return b""


def _is_body(part: Message) -> bool:
    return (
        content_type(part) in ("text/plain", "text/html")
        and disposition(part) != "attachment"
        and filename(part) is None
    ) or content_type(part).startswith("multipart/")


def _bodies(parts: list[Message]) -> tuple[str, str | None, str]:
    """(plain text, sanitized HTML, the reply for display) of the body parts."""
    texts: list[str] = []
    htmls: list[str] = []
    for part in parts:
        if _is_body(part):
            # A multipart whose boundary never came is a leaf: its raw text is the message.
            (htmls if content_type(part) == "text/html" else texts).append(part_text(part))
    html = sanitize_html("\n".join(htmls)) if htmls else None
    text = "\n\n".join(t.strip("\n") for t in texts if t.strip()).rstrip()
    visible = visible_text_of(text) if text else ""
    if not text.strip() and html:
        text = html_to_text(html)
        # HTML-only mail: the client marked its quote (Gmail's div, Outlook's reply header,
        # Apple's cite blockquote); the text tables below still read what it did not mark.
        trimmed = html_without_quotes("\n".join(htmls))
        reply = html_to_text(sanitize_html(trimmed)) if trimmed is not None else ""
        visible = visible_text_of(reply) if reply.strip() else visible_text_of(text)
    return text, html or None, visible


def _attachments(
    parts: list[Message],
    *,
    skip_report_parts: bool,
    max_bytes: int,
    allowed: frozenset[str],
    max_count: int,
) -> tuple[list[ParsedAttachment], list[str]]:
    kept: list[ParsedAttachment] = []
    dropped: list[str] = []
    for part in parts:
        kind = content_type(part)
        if _is_body(part) or (skip_report_parts and kind in _REPORT_TYPES):
            continue
        shown = _SAFE_TYPE.sub("", kind)[:100]
        raw = part.get_payload()
        base64_encoded = [v.lower() for v in raw_headers(part, "Content-Transfer-Encoding")]
        # Base64 is 4/3 of the bytes: a part plainly too big is refused before decoding.
        if (
            isinstance(raw, str)
            and base64_encoded == ["base64"]
            and len(raw) * 3 // 4 > max_bytes * 1.05 + 4
        ):
            dropped.append(
                f"an attachment of type {shown} over the {max_bytes}-byte limit was not kept"
            )
            continue
        name = filename(part)
        data = payload_bytes(part) if not isinstance(raw, list) else _attached_bytes(part)
        kind, genuine = _attachment_type(kind, data, name)
        shown = _SAFE_TYPE.sub("", kind)[:100]
        if kind not in allowed:
            dropped.append(f"an attachment of type {shown} was not kept")
        elif not data:
            dropped.append(f"an empty attachment of type {shown} was not kept")
        elif not genuine:
            dropped.append(f"an attachment declared as {shown} was not one; it was not kept")
        elif len(data) > max_bytes:
            dropped.append(
                f"an attachment of type {shown} ({len(data)} bytes) was over the "
                f"{max_bytes}-byte limit and was not kept"
            )
        elif len(kept) >= max_count:
            dropped.append(
                f"an attachment of type {shown} was not kept: at most {max_count} are kept "
                "per message"
            )
        else:
            content_id = normalize_message_id(header(part, "Content-ID"))
            inline = disposition(part) != "attachment" and content_id is not None
            kept.append(ParsedAttachment(name, kind, data, content_id, inline))
    return kept, dropped


def parse_email(
    raw: bytes,
    *,
    max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES,
    allowed_types: frozenset[str] = DEFAULT_ALLOWED_TYPES,
    max_attachments: int = DEFAULT_MAX_ATTACHMENTS,
) -> ParsedEmail:
    """Read one raw message (as received by SMTP or posted to the inbound-mail webhook).

    Raises MalformedEmail, and nothing else, for bytes that are not an email message."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise MalformedEmail("the message must be bytes")
    data = bytes(raw)
    if not data.strip():
        raise MalformedEmail("the message is empty")
    if data.count(b"\n--") > MAX_BOUNDARY_LINES:
        raise MalformedEmail(f"the message has more than {MAX_BOUNDARY_LINES} MIME parts")
    try:
        message = BytesParser(policy=policy.default).parsebytes(data)
        names = {str(key).lower() for key, _ in message.raw_items()}
    except Exception as exc:
        raise MalformedEmail(f"the message cannot be read as MIME ({type(exc).__name__})") from None
    if not names & _EMAIL_HEADERS:
        raise MalformedEmail(
            "the message has no email header (From, To, Subject, Date, Message-ID...)"
        )
    try:
        return _parse(
            message,
            max_bytes=max_attachment_bytes,
            allowed=allowed_types,
            max_count=max_attachments,
        )
    except MalformedEmail:
        raise
    except Exception as exc:  # a parser bug on hostile input must not become a 500
        raise MalformedEmail(f"the message cannot be read ({type(exc).__name__})") from None


def _parse(
    message: Message, *, max_bytes: int, allowed: frozenset[str], max_count: int
) -> ParsedEmail:
    senders = addresses(message, "From")
    from_name, from_address = senders[0] if senders else ("", None)
    from_address = from_address.lower() if from_address else None
    parts = list(leaves(message))
    text, html, visible = _bodies(parts)
    complaint = feedback_report(message, parts, text)
    receipt = complaint is None and is_read_receipt(message, parts)
    bounce = None
    # Reports of the other kinds come from the null sender too, and quote our Message-ID:
    # taken for bounces, a read receipt or a complaint would fail the mail that arrived.
    if complaint is None and not receipt:
        bounce = delivery_report(message, parts, text)
        if bounce is None and bounce_signal(message, from_address):
            bounce = plain_bounce(message, parts, text)
    attachments, dropped = _attachments(
        parts,
        skip_report_parts=bounce is not None or complaint is not None or receipt,
        max_bytes=max_bytes,
        allowed=allowed,
        max_count=max_count,
    )
    if from_address is None and not text.strip() and not attachments:
        raise MalformedEmail("the message has neither a sender (From) nor a body")
    reason = automatic_reason(
        message,
        from_address,
        bounce=bounce is not None,
        complaint=complaint is not None,
        receipt=receipt,
    )
    return ParsedEmail(
        message_id=normalize_message_id(header(message, "Message-ID")),
        from_address=from_address,
        from_name=from_name or None,
        to=_recipients(message, "To"),
        cc=_recipients(message, "Cc"),
        delivered_to=_recipients(message, "Delivered-To", "X-Original-To"),
        subject=header(message, "Subject") or "",
        in_reply_to=normalize_message_id(header(message, "In-Reply-To")),
        references=message_ids(" ".join(raw_headers(message, "References"))),
        text=text,
        visible_text=visible,
        html=html,
        attachments=tuple(attachments),
        auto_submitted=reason is not None,
        auto_reason=reason,
        bounce=bounce,
        date=_date(message),
        dropped=tuple(dropped),
        complaint=complaint,
        read_receipt=receipt,
    )


def reply_token_of(addresses: Iterable[str], domain: str) -> str | None:
    """The token of the first ``reply+<token>@<domain>`` address (display names allowed;
    the domain compared without case, the token returned as written)."""
    wanted = domain.strip().lower().rstrip(".")
    if not wanted:
        return None
    for address in addresses:
        spec = parseaddr(address)[1] if "<" in address else address.strip()
        match = _REPLY_ADDRESS.fullmatch(spec)
        if match and match.group(2).lower().rstrip(".") == wanted:
            return match.group(1)
    return None
