"""Reading a parsed message without trusting it: every header and part access here survives
broken encodings, unknown charsets, missing boundaries and absurd nesting."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import policy
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses

MAX_MIME_DEPTH = 20
"""Nesting of multiparts read; deeper parts are ignored (real mail nests a handful)."""
MAX_MIME_PARTS = 500
"""Leaf parts read from one message; the rest are ignored."""
MAX_PARSED_HEADER_CHARS = 4000
"""Longer headers skip the stdlib's header registry, whose parser slows down sharply on them,
and are read with the simpler legacy decoders."""
MAX_ADDRESSES = 100
"""Addresses read from one header."""
MAX_IDS = 100
"""Message-IDs kept from one References header (the newest): each becomes a lookup."""

_ID_IN_BRACKETS = re.compile(r"<([^<>]*)>")
_SPACE = re.compile(r"\s+")


def clean_text(value: str) -> str:
    """Valid, storable text: bytes that the parser smuggled through as surrogates are read as
    UTF-8, and NULs (which PostgreSQL text refuses) are dropped."""
    try:
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value.replace("\x00", "")


def raw_headers(message: Message, name: str) -> list[str]:
    """Undecoded values of every ``name`` header, unfolded."""
    wanted = name.lower()
    found = []
    for key, value in message.raw_items():
        if key.lower() == wanted:
            found.append(_SPACE.sub(" ", str(value)).strip())
    return found


def header_values(message: Message, name: str) -> list[str]:
    """Decoded values (RFC 2047 encoded words read) of every ``name`` header."""
    values = []
    for raw in raw_headers(message, name):
        try:
            if len(raw) > MAX_PARSED_HEADER_CHARS:
                decoded = str(make_header(decode_header(raw)))
            else:
                decoded = str(policy.default.header_fetch_parse(name, raw))
        except Exception:  # the header registry has raised on hostile input before
            decoded = raw
        values.append(_SPACE.sub(" ", clean_text(decoded)).strip())
    return values


def header(message: Message, name: str) -> str | None:
    values = header_values(message, name)
    return values[0] if values else None


def addresses(message: Message, name: str) -> list[tuple[str, str]]:
    """(display name, addr-spec) of every address in every ``name`` header; addr-specs that
    are not local@domain are skipped."""
    found: list[tuple[str, str]] = []
    for raw in raw_headers(message, name):
        pairs: list[tuple[str, str]] = []
        try:
            if len(raw) <= MAX_PARSED_HEADER_CHARS:
                parsed = policy.default.header_fetch_parse(name, raw)
                pairs = [(a.display_name, a.addr_spec) for a in getattr(parsed, "addresses", ())]
        except Exception:
            pairs = []
        if not pairs:
            pairs = getaddresses([raw])
        for display, spec in pairs:
            spec = clean_text(spec).strip().strip("<>")
            local, at, domain = spec.rpartition("@")
            if at and local and domain and not _SPACE.search(spec):
                found.append((_SPACE.sub(" ", clean_text(display)).strip(), spec))
    return found[:MAX_ADDRESSES]


def normalize_message_id(value: str | None) -> str | None:
    """ "<abc@example.org>" -> "abc@example.org"; None when nothing id-like is there."""
    if not value:
        return None
    match = _ID_IN_BRACKETS.search(value)
    candidate = match.group(1) if match else value.split()[0] if value.split() else ""
    candidate = _SPACE.sub("", clean_text(candidate)).strip("<>")
    return candidate or None


def message_ids(value: str | None) -> tuple[str, ...]:
    """Every id in a References-style header, normalised, in order, without repeats."""
    if not value:
        return ()
    found = _ID_IN_BRACKETS.findall(value) or value.split()
    ids: dict[str, None] = {}
    for item in found:
        normal = normalize_message_id(f"<{item}>")
        if normal:
            ids[normal] = None
    return tuple(ids)[-MAX_IDS:]


def content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "application/octet-stream"


def disposition(part: Message) -> str | None:
    try:
        value = part.get_content_disposition()
    except Exception:
        return None
    return value.lower() if value else None


def filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        return None
    if not name:
        return None
    name = _SPACE.sub(" ", clean_text(str(name))).strip()
    # Only the last path component: a name like "../../x" is never a path here.
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:255] or None


def payload_bytes(part: Message) -> bytes:
    """The part's body with its transfer encoding undone (damaged base64 gives what it can)."""
    try:
        data = part.get_payload(decode=True)
    except Exception:
        return b""
    return data if isinstance(data, bytes) else b""


def part_text(part: Message) -> str:
    """Text of a part. Mail often declares a charset its bytes are not in: valid UTF-8 is read
    as UTF-8 whatever is declared, then the declared charset is tried, then Windows-1252,
    which is what undeclared 8-bit mail nearly always is."""
    data = payload_bytes(part)
    try:
        declared = part.get_content_charset()
    except Exception:
        declared = None
    candidates = ["utf-8", declared] if not data.isascii() else [declared or "ascii", "utf-8"]
    for charset in candidates:
        if not charset:
            continue
        try:
            text = data.decode(charset)
        except (LookupError, UnicodeError, ValueError, TypeError):
            continue
        return clean_text(text.replace("\r\n", "\n"))
    return clean_text(data.decode("cp1252", "replace").replace("\r\n", "\n"))


def leaves(message: Message) -> Iterator[Message]:
    """Leaf parts in document order. message/* parts are leaves: a forwarded or returned
    message is content of this one, not part of its structure."""
    stack: list[tuple[Message, int]] = [(message, 0)]
    count = 0
    while stack and count < MAX_MIME_PARTS:
        part, depth = stack.pop()
        payload = part.get_payload()
        if isinstance(payload, list) and not content_type(part).startswith("message/"):
            if depth < MAX_MIME_DEPTH:
                stack.extend((p, depth + 1) for p in reversed(payload) if isinstance(p, Message))
            continue
        count += 1
        yield part


def attached_message(part: Message) -> Message | None:
    """The message inside a message/rfc822 (or message/global) part."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    return None
