"""Delivery status notifications: RFC 3464 reports, and the plain-text bounces some servers
still send from MAILER-DAEMON or postmaster with the original's headers quoted."""

from __future__ import annotations

import binascii
import contextlib
import quopri
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses

from hub.channels.email_smtp.mime import (
    attached_message,
    clean_text,
    content_type,
    normalize_message_id,
    part_text,
    raw_headers,
)

MAX_DIAGNOSTIC_CHARS = 300
"""The remote server's explanation is kept this long at most."""

MAX_MENTIONED_IDS = 10
"""Message-IDs kept from one report, in order of trust: each may become a lookup."""

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_ADDRESS = re.compile(r"<?[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+>?")
# A quoted or returned header line, folded or not: "Message-ID: <...>", "> Message-Id:\n <...>"
# and the reports' own "Original-Message-ID:" (RFC 8098) and "X-Original-Message-ID:" (Gmail).
_QUOTED_ID = re.compile(
    r"^[>\s]*(?:x-)?(?:original-)?message-id:[ \t]*(?:\r?\n[> \t]*)?(<[^<>\s]+>|[^<>\s]+@[^<>\s]+)",
    re.IGNORECASE | re.MULTILINE,
)
# Our own Message-IDs (compose.make_message_id): "<uuid@domain>". Found anywhere in a report
# whose structure is broken, they still name the message that failed.
_OUR_SHAPE = re.compile(
    r"<([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}@[A-Za-z0-9.-]+)>", re.I
)
_QUOTED_TO = re.compile(r"^[>\s]*to:\s*(.*)$", re.IGNORECASE | re.MULTILINE)
_FAILED_RECIPIENT = re.compile(r"^\s*<([^<>\s]+@[^<>\s]+)>:", re.MULTILINE)
_FINAL_RECIPIENT = re.compile(r"final-recipient:\s*[\w-]+\s*;\s*<?([^<>\s]+@[^<>\s]+)", re.I)
_SMTP_REPLY = re.compile(r"\b[45]\d\d[ -]")
# What servers write when they are still trying (Postfix "THIS IS A WARNING ONLY", Gmail
# "will retry for 47 more hours", Exchange "Delivery Status Notification (Delay)", Sendmail
# "Warning: could not send message for past 4 hours", Exim "has not yet been delivered")...
_DELAYED = re.compile(
    r"warning (message )?only|delivery (has been |is )?delayed|\(delay\)|delayed|"
    r"will (continue|keep) (to )?try|will (retry|be retried|try again)|still trying|"
    r"not yet been delivered|could not send message for past|temporary problem",
    re.IGNORECASE,
)
# ...and what they write when they gave up: qmail "This is a permanent error; I've given up",
# Exim "retry timeout exceeded", Sendmail "Cannot send message for 5 days".
_GAVE_UP = re.compile(
    r"permanent(ly)? (error|failure|fatal)|(given|gave|giving) up|retry time ?out exceeded|"
    r"cannot send message for|too long in (the )?queue|message expired|"
    r"will not be retried|failed permanently|delivery has failed",
    re.IGNORECASE,
)
_DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_ORIGINAL_TYPES = frozenset({"message/rfc822", "message/global"})
_ORIGINAL_HEADER_TYPES = frozenset({"text/rfc822-headers", "message/global-headers"})


@dataclass(frozen=True)
class Bounce:
    """A report that a message of ours did not (or not yet) arrive. ``recipient`` and
    ``diagnostic`` are PHI-adjacent: the address is the patient's, so they are left out of the
    repr; addresses inside ``diagnostic`` are already replaced by "<address>"."""

    original_message_id: str | None
    """The id the report names first (see ``mentioned_ids``)."""
    recipient: str | None = field(repr=False)
    status: str | None
    """Enhanced status code (RFC 3463), e.g. "5.1.1"."""
    action: str | None
    """RFC 3464 Action: "failed", "delayed", "delivered", "relayed", "expanded"."""
    diagnostic: str | None = field(repr=False)
    permanent: bool
    """True when the address will not take the message: mark it failed and the address
    unreachable. False for delays and for success reports."""
    mentioned_ids: tuple[str, ...] = ()
    """Every Message-ID the report names, most trusted first (``original_message_id`` is the
    first): a caller takes the first that is one of its own messages."""


def _fields(block: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    name = None
    for line in block.splitlines():
        if line[:1] in (" ", "\t") and name:
            fields[name] += " " + line.strip()
            continue
        key, colon, value = line.partition(":")
        if colon and key.strip() and " " not in key.strip():
            name = key.strip().lower()
            fields.setdefault(name, value.strip())
        else:
            name = None
    return fields


def report_fields(part: Message) -> list[dict[str, str]]:
    """The field blocks of a report part (message/delivery-status, message/feedback-report,
    message/disposition-notification), names lower-cased."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [
            {key.lower(): " ".join(str(value).split()) for key, value in block.raw_items()}
            for block in payload
            if isinstance(block, Message)
        ]
    return [_fields(block) for block in re.split(r"\n\s*\n", part_text(part))]


def _after_type(value: str | None) -> str | None:
    """ "rfc822; a@example.org" -> "a@example.org"."""
    if not value:
        return None
    text = value.partition(";")[2] if ";" in value else value
    text = clean_text(text).strip().strip("<>").strip()
    return text or None


def _redact(text: str | None) -> str | None:
    if not text:
        return None
    text = _ADDRESS.sub("<address>", " ".join(clean_text(text).split()))
    return text[:MAX_DIAGNOSTIC_CHARS] or None


def _status(text: str | None) -> str | None:
    match = _STATUS.search(text or "")
    return match.group(0) if match else None


def _permanent(status: str | None, action: str | None) -> bool:
    """RFC 3464 section 2.3.3: the Action says what happened; the status class only explains
    it. "failed" is final whatever the class: a 4.4.7 with "failed" is a server that kept
    the message in its queue until it expired and gave up.

    Without an Action, the class decides (4: still trying, 2: delivered); a report that says
    neither is a failure, as a bounce written for people is when it names no status and no
    delay: servers that are still trying say so, and a failure left uncounted would keep
    mailing an address that does not work."""
    if action in ("failed", "expired"):  # "expired": SendGrid's word for a queue that gave up
        return True
    if action in ("delayed", "delivered", "relayed", "expanded"):
        return False
    if status is None:
        return True
    return status.startswith("5.")


def _encoded_text(part: Message) -> str:
    """The text of a message/* part, undoing a transfer encoding RFC 2046 forbids there but
    some servers apply anyway (the parser then reads base64 lines as a broken message)."""
    inner = attached_message(part)
    try:
        text = inner.as_string() if inner is not None else str(part.get_payload())
    except Exception:
        return ""
    encoding = (raw_headers(part, "Content-Transfer-Encoding") or [""])[0].lower()
    try:
        if encoding == "base64":
            body = text.split("\n\n", 1)[-1] if ":" in text.split("\n", 1)[0] else text
            return binascii.a2b_base64("".join(body.split())).decode("utf-8", "replace")
        if encoding == "quoted-printable":
            return quopri.decodestring(text.encode("utf-8", "replace")).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return text
    return text


def mentioned_ids(message: Message, parts: Sequence[Message], text: str) -> tuple[str, ...]:
    """Message-IDs a report names for the mail it is about, most trusted first: the returned
    message's own header; "Message-ID:" lines in the returned headers, the report or its text;
    the report's In-Reply-To (Exchange and Outlook.com set it to the original); then ids of our
    own shape found anywhere, for reports whose MIME is broken or that quote the original in
    prose. The report's own Message-ID is never among them."""
    found: list[str | None] = []
    texts: list[str] = []
    for part in parts:
        kind = content_type(part)
        if kind in _ORIGINAL_TYPES:
            original = attached_message(part)
            if original is not None:
                found += [normalize_message_id(v) for v in raw_headers(original, "Message-ID")]
            texts.append(_encoded_text(part))
        elif kind.startswith("message/") or kind in _ORIGINAL_HEADER_TYPES:
            texts.append(part_text(part) or _encoded_text(part))
    texts.append(text)
    joined = "\n".join(texts)
    found += [normalize_message_id(m.group(1)) for m in _QUOTED_ID.finditer(joined)]
    found += [normalize_message_id(v) for v in raw_headers(message, "In-Reply-To")]
    found += _OUR_SHAPE.findall(joined)
    # A message the stdlib cannot write back out: its parts were read above.
    with contextlib.suppress(Exception):
        found += _OUR_SHAPE.findall(message.as_string())
    own = normalize_message_id((raw_headers(message, "Message-ID") or [""])[0])
    ids = dict.fromkeys(i for i in found if i and "@" in i and i != own)
    return tuple(ids)[:MAX_MENTIONED_IDS]


def _address(value: str | None) -> str | None:
    if not value or "@" not in value:
        return None
    return value.strip().strip("<>").lower()


def delivery_report(message: Message, parts: Sequence[Message], text: str) -> Bounce | None:
    """The RFC 3464 report among ``parts`` (the message's leaves), if there is one."""
    reports = [part for part in parts if content_type(part) in _DSN_TYPES]
    if not reports:
        return None
    blocks = [
        b for b in report_fields(reports[0]) if {"action", "status", "final-recipient"} & b.keys()
    ]
    chosen: dict[str, str] = {}
    for wanted in ("failed", "delayed", None):
        chosen = next(
            (b for b in blocks if wanted is None or b.get("action", "").lower() == wanted), {}
        )
        if chosen:
            break
    action = (chosen.get("action") or "").split(" ")[0].lower() or None
    status = _status(chosen.get("status"))
    ids = mentioned_ids(message, parts, text)
    return Bounce(
        original_message_id=ids[0] if ids else None,
        recipient=_address(
            _after_type(chosen.get("final-recipient") or chosen.get("original-recipient"))
        ),
        status=status,
        action=action,
        diagnostic=_redact(_after_type(chosen.get("diagnostic-code"))),
        permanent=_permanent(status, action),
        mentioned_ids=ids,
    )


def plain_bounce(message: Message, parts: Sequence[Message], text: str) -> Bounce | None:
    """A bounce written for people (or a report whose MIME is broken): found only from what
    it quotes. None when it names neither a status, a recipient nor the original message."""
    ids = mentioned_ids(message, parts, text)
    original = ids[0] if ids else None
    head = text[:5000]
    status = _status(head)
    recipient = None
    for pattern in (_FAILED_RECIPIENT, _FINAL_RECIPIENT):
        match = pattern.search(text)
        if match:
            recipient = _address(match.group(1))
            break
    if recipient is None:
        match = _QUOTED_TO.search(text)
        pairs = getaddresses([match.group(1)]) if match else []
        recipient = next((_address(spec) for _, spec in pairs if "@" in spec), None)
    if not (original or status or recipient):
        return None
    diagnostic = next(
        (
            line
            for line in text.splitlines()
            if (status and status in line) or _SMTP_REPLY.search(line)
        ),
        None,
    )
    # The wording decides, as the Action field would; the status class only when it is silent.
    if _DELAYED.search(head) and not _GAVE_UP.search(head):
        action = "delayed"
    elif _GAVE_UP.search(head) or not (status or "").startswith("4."):
        action = "failed"
    else:
        action = "delayed"
    return Bounce(
        original_message_id=original,
        recipient=recipient,
        status=status,
        action=action,
        diagnostic=_redact(diagnostic),
        permanent=_permanent(status, action),
        mentioned_ids=ids,
    )
