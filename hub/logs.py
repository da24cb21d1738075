"""Structured logging with a filter that keeps PHI out of every line.

The code never logs PHI on purpose; this filter is the second line of defence for what slips
through (a library's exception text, a URL with a query string, a careless f-string). It runs on
the handler, so it covers third-party loggers (aiohttp.access, sqlalchemy, rq) too.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from typing import Any

from pythonjsonlogger.json import JsonFormatter

REDACTED = "[redacted]"

PHI_FIELD_NAMES = frozenset(
    {
        "body",
        "text",
        "name",
        "first_name",
        "last_name",
        "full_name",
        "phone",
        "phone_number",
        "email",
        "address",
        "to",
        "from",
        "from_",
        "sender",
        "recipient",
        "subject",
        "transcript",
        "transcription",
        "note",
        "content",
        "payload",
        "form",
        "dob",
        "birth_date",
        "caller",
        "called",
    }
)
"""``extra={...}`` keys whose values are always replaced, whatever they hold."""

# The local part takes RFC 5322's other characters too: "o'brien@..." or a client's
# "reply+...=@..." must not leave the part before the odd character in clear. An apostrophe
# only inside it, so a quoted "'a@b.org'" keeps its quotes; never "/", so a path stays readable.
_LOCAL = r"[\w.!#$%&*+=?^`{|}~-]+"
_EMAIL_RE = re.compile(rf"{_LOCAL}(?:'{_LOCAL})*@[\w-]+(?:\.[\w-]+)+")
# A run of digits with phone punctuation; redacted when it holds 7 or more digits. It is broad on
# purpose (dates in messages get caught too): a missed phone number costs more than a lost date.
# The one place digits are known not to be a number someone dials is an access line's status and
# size after the request line (`"GET /x HTTP/1.1" 200 15550`): spaces join them into one 7+ digit
# run, and a large size is such a run alone, so neither may start a match.
_PHONE_RE = re.compile(
    r"(?<![\w])(?<!HTTP/\d\.\d\" )(?<!HTTP/\d\.\d\" \d{3} )\+?\(?\d[\d\s().\-/]{5,}\d(?![\w])"
)
_QUERY_RE = re.compile(r"\?[^\s\"']*")

SECRET_PATHS = (
    "/chat/{token}",
    "/unsubscribe/{token}",
    "/journeys/{key}/cohort/{token}",
    "/media/{token}",
)
"""Routes (in the route table's syntax) whose ``{token}`` segment is a bearer secret: whoever
reads it from a log can open the patient's chat, change their consent or, for a few hours,
fetch a file sent to them. A route with a
``{token}`` must be listed here (tests/test_logs.py checks the route table)."""

_SEGMENT = r"[^/\s\"'?#]+"


def _secret_path_re(template: str) -> re.Pattern[str]:
    before, sep, _ = template.partition("{token}")
    if not sep:
        raise ValueError(f"{template!r} has no {{token}} segment to hide")
    # Other parameters (a journey's key) stay in the line: they are not secrets.
    prefix = _SEGMENT.join(re.escape(part) for part in re.split(r"\{\w+\}", before))
    return re.compile(f"({prefix}){_SEGMENT}")


_SECRET_PATH_RES = tuple(_secret_path_re(t) for t in SECRET_PATHS)
_STD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _phone_sub(match: re.Match[str]) -> str:
    text = match.group(0)
    return "[phone]" if sum(c.isdigit() for c in text) >= 7 else text


_UUID_RE = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
"""Ids (ours, RQ's) are not PHI and are what an operator greps for: their digit groups must not
read as phone numbers."""


def scrub(text: str) -> str:
    """Remove email addresses, phone-like digit runs, URL query strings and path tokens."""
    text = _EMAIL_RE.sub("[email]", text)
    text = _QUERY_RE.sub("?[query]", text)
    for secret in _SECRET_PATH_RES:
        text = secret.sub(r"\1[token]", text)
    parts, last = [], 0
    for match in _UUID_RE.finditer(text):
        parts.append(_PHONE_RE.sub(_phone_sub, text[last : match.start()]))
        parts.append(match.group(0))
        last = match.end()
    parts.append(_PHONE_RE.sub(_phone_sub, text[last:]))
    return "".join(parts)


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return scrub(str(value))


class PhiFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not hide the record
            message = str(record.msg)
        record.msg, record.args = scrub(message), None
        if record.exc_info:
            record.exc_text = scrub("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key in _STD_ATTRS:
                continue
            if key.lower() in PHI_FIELD_NAMES:
                record.__dict__[key] = REDACTED
            else:
                record.__dict__[key] = _scrub_value(value)
        return True


ROUTINE = (
    ("rq.cron", re.compile(r"^Enqueued job ")),
    (
        "rq.worker",
        re.compile(r"(: Job OK \(|result discarded|^Successfully completed |: \w[\w.]*\(\) \()"),
    ),
    ("aiohttp.access", re.compile(r'"GET /simulator/feed\?')),
)
"""INFO lines that come every second or so (the scheduler's tick job, RQ's per-job chatter,
the demo simulator's poll): logged at DEBUG, so a console shows what happened, not the clock."""


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a broken format string: PhiFilter deals with it
        return str(record.msg)


class RoutineToDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        for name, pattern in ROUTINE:
            if record.name == name and pattern.search(_message(record)):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RoutineToDebug())
    handler.addFilter(PhiFilter())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # SQL echo would print bound parameters, i.e. ciphertexts and blind indexes: keep it quiet.
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # The Twilio SDK logs request URLs and response bodies (numbers, message text) at INFO.
    logging.getLogger("twilio").setLevel(logging.WARNING)
