"""Delivery status notifications: RFC 3464 reports, and the plain-text bounces some servers
still send from MAILER-DAEMON or postmaster with the original's headers quoted."""

from __future__ import annotations

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

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_ADDRESS = re.compile(r"<?[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+>?")
_QUOTED_ID = re.compile(r"^[>\s]*message-id:\s*(.*)$", re.IGNORECASE | re.MULTILINE)
_QUOTED_TO = re.compile(r"^[>\s]*to:\s*(.*)$", re.IGNORECASE | re.MULTILINE)
_FAILED_RECIPIENT = re.compile(r"^\s*<([^<>\s]+@[^<>\s]+)>:", re.MULTILINE)
_FINAL_RECIPIENT = re.compile(r"final-recipient:\s*[\w-]+\s*;\s*<?([^<>\s]+@[^<>\s]+)", re.I)
_SMTP_REPLY = re.compile(r"\b[45]\d\d[ -]")
_DELAYED = re.compile(
    r"delay|will (continue|keep) (to )?try|still trying|not yet been delivered", re.IGNORECASE
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
    recipient: str | None = field(repr=False)
    status: str | None
    """Enhanced status code (RFC 3463), e.g. "5.1.1"."""
    action: str | None
    """RFC 3464 Action: "failed", "delayed", "delivered", "relayed", "expanded"."""
    diagnostic: str | None = field(repr=False)
    permanent: bool
    """True when the address will not take the message: mark it failed and the address
    unreachable. False for delays (4.x.x) and for success reports."""


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


def _report_blocks(part: Message) -> list[dict[str, str]]:
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
    if action in ("delayed", "delivered", "relayed", "expanded"):
        return False
    return not (status or "").startswith(("4.", "2."))


def _original_id(parts: Sequence[Message], text: str) -> str | None:
    for part in parts:
        kind = content_type(part)
        if kind in _ORIGINAL_TYPES:
            original = attached_message(part)
            if original is not None:
                found = raw_headers(original, "Message-ID")
                if found:
                    return normalize_message_id(found[0])
            text = part_text(part) + "\n" + text
        elif kind in _ORIGINAL_HEADER_TYPES:
            text = part_text(part) + "\n" + text
    match = _QUOTED_ID.search(text)
    return normalize_message_id(match.group(1)) if match else None


def _address(value: str | None) -> str | None:
    if not value or "@" not in value:
        return None
    return value.strip().strip("<>").lower()


def delivery_report(parts: Sequence[Message], text: str) -> Bounce | None:
    """The RFC 3464 report among ``parts`` (the message's leaves), if there is one."""
    reports = [part for part in parts if content_type(part) in _DSN_TYPES]
    if not reports:
        return None
    blocks = [
        b for b in _report_blocks(reports[0]) if {"action", "status", "final-recipient"} & b.keys()
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
    return Bounce(
        original_message_id=_original_id(parts, text),
        recipient=_address(
            _after_type(chosen.get("final-recipient") or chosen.get("original-recipient"))
        ),
        status=status,
        action=action,
        diagnostic=_redact(_after_type(chosen.get("diagnostic-code"))),
        permanent=_permanent(status, action),
    )


def plain_bounce(parts: Sequence[Message], text: str) -> Bounce | None:
    """A bounce written for people: found only from what it quotes. None when it names
    neither a status, a recipient nor the original message."""
    original = _original_id(parts, text)
    status = _status(text)
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
    delayed = (status or "").startswith("4.") or bool(_DELAYED.search(text[:5000]))
    action = "delayed" if delayed else "failed"
    return Bounce(
        original_message_id=original,
        recipient=recipient,
        status=status,
        action=action,
        diagnostic=_redact(diagnostic),
        permanent=_permanent(status, action),
    )
