"""No log line carries PHI, whatever a caller passes in."""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import uuid
from datetime import UTC, datetime

import pytest
from aiohttp import web

from hub.crypto import KeyRing
from hub.links import Unsubscribe, chat_token, unsubscribe_token
from hub.logs import PhiFilter, scrub
from web.routes import setup_routes


@pytest.fixture
def capture() -> tuple[logging.Logger, io.StringIO]:
    from pythonjsonlogger.json import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(PhiFilter())
    handler.setFormatter(JsonFormatter("{levelname}{name}{message}", style="{"))
    logger = logging.getLogger("test.phi")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


PHI = ["+1 (555) 123-4567", "5551234567", "avery.sample@example.org", "chest pain", "Avery"]


def _assert_clean(output: str) -> None:
    for needle in PHI:
        assert needle not in output, (needle, output)


def test_message_args_are_scrubbed(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    logger.info("sms from %s to %s", "+1 (555) 123-4567", "avery.sample@example.org")
    line = json.loads(stream.getvalue())
    assert line["message"] == "sms from [phone] to [email]"


def test_phi_named_extras_are_replaced(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    logger.warning(
        "inbound", extra={"body": "chest pain", "full_name": "Avery", "message_id": "m1"}
    )
    line = json.loads(stream.getvalue())
    assert line["body"] == "[redacted]" and line["full_name"] == "[redacted]"
    assert line["message_id"] == "m1"
    _assert_clean(stream.getvalue())


def test_exception_text_is_scrubbed(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    try:
        raise ValueError("could not deliver to 5551234567 (avery.sample@example.org)")
    except ValueError:
        logger.exception("send failed")
    out = stream.getvalue()
    assert "ValueError" in out
    _assert_clean(out)


def test_query_strings_are_dropped_from_access_lines() -> None:
    assert scrub('"GET /api/patients?phone=%2B15551234567 HTTP/1.1"') == (
        '"GET /api/patients?[query] HTTP/1.1"'
    )


def test_ids_and_short_numbers_survive() -> None:
    assert scrub("conversation 0192f1a2-7b3c-7d4e-8f90-a1b2c3d4e5f6 took 12 ms") == (
        "conversation 0192f1a2-7b3c-7d4e-8f90-a1b2c3d4e5f6 took 12 ms"
    )
    assert scrub("status 200 in 1.25 s") == "status 200 in 1.25 s"


def test_configured_root_logger_covers_third_party_loggers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from hub.logs import configure_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("INFO", "json")
        logging.getLogger("aiohttp.access").info('"POST /webhooks/twilio/sms?From=+15551234567"')
        err = capsys.readouterr().err
        assert "aiohttp.access" in err
        _assert_clean(err)
        assert "15551234567" not in err
    finally:
        root.handlers, root.level = saved[0], saved[1]


def test_ids_are_not_mistaken_for_phone_numbers() -> None:
    from hub.logs import scrub

    job = "job outbox-01a200b7-9778-7027-a479-87b3cf66de21 done; call 555-010-0101 back"
    assert scrub(job) == "job outbox-01a200b7-9778-7027-a479-87b3cf66de21 done; call [phone] back"
    assert scrub("a9b7d50c-1234-5678-b722-000000000000") == "a9b7d50c-1234-5678-b722-000000000000"


# The shape aiohttp's default access log format gives a line: %a %t "%r" %s %b referer agent.
ACCESS = '127.0.0.1 [07/Dec/2026:05:40:00 +0000] "GET {path} HTTP/1.1" {status} {size} "-" "curl/8"'


@pytest.mark.parametrize(("status", "size"), [(200, 15550), (200, 1234567890), (404, 5551234)])
def test_access_lines_keep_status_and_size(status: int, size: int) -> None:
    line = ACCESS.format(path="/inbox/rows/3", status=status, size=size)
    assert scrub(line) == line


def test_path_tokens_are_hidden_and_the_rest_of_the_line_kept() -> None:
    ring = KeyRing.generate("t1")
    chat = chat_token(ring, uuid.uuid4(), datetime.now(UTC))
    unsubscribe = unsubscribe_token(ring, Unsubscribe(uuid.uuid4(), "surveys", uuid.uuid4()))
    cohort = secrets.token_urlsafe(24)
    for path, shown in [
        (f"/chat/{chat}", "/chat/[token]"),
        (f"/unsubscribe/{unsubscribe}", "/unsubscribe/[token]"),
        (f"/journeys/flu-shot/cohort/{cohort}/cancel", "/journeys/flu-shot/cohort/[token]/cancel"),
    ]:
        out = scrub(ACCESS.format(path=path, status=200, size=15550))
        assert out == ACCESS.format(path=shown, status=200, size=15550)
    # The same link anywhere in a line (a referer, a note about a sent invite).
    assert scrub(f"invite sent: https://hub.example.org/chat/{chat}") == (
        "invite sent: https://hub.example.org/chat/[token]"
    )


@pytest.mark.parametrize(
    "number",
    [
        "+1 (555) 123-4567",
        "(555) 123-4567",
        "5551234567",
        "+15551234567",
        "555-010-0101",
        "555.123.4567",
        "555 123 4567",
        "+44 20 7946 0018",
    ],
)
def test_phone_numbers_in_every_shape_are_still_masked(number: str) -> None:
    assert scrub(f"call {number} back") == "call [phone] back"
    # In an access line the number may sit right before the status and size it must not eat.
    line = ACCESS.format(path=f"/p/{number.replace(' ', '-')}", status=200, size=15)
    assert scrub(line) == ACCESS.format(path="/p/[phone]", status=200, size=15)


def test_every_token_route_is_hidden() -> None:
    """A new route with a ``{token}`` segment fails here until hub.logs knows it."""
    app = web.Application()
    setup_routes(app)
    secret = "s3cret" + "x" * 30
    templates = {r.canonical for r in app.router.resources() if "{token}" in r.canonical}
    assert {"/chat/{token}", "/unsubscribe/{token}"} <= templates
    for template in templates:
        path = re.sub(r"\{token\}", secret, template)
        path = re.sub(r"\{\w+\}", "key", path)
        assert secret not in scrub(f'"GET {path} HTTP/1.1" 200 15'), template


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        # A mail client's reply address carries the thread's token; all of it is hidden.
        (
            "to reply+v1.8Hq2nX3kLw.Zt-9_a=@reply.demo-clinic.example.org",
            "to [email]",
        ),
        ("{'email': 'o'brien.sample@example.org'}", "{'email': '[email]'}"),
        ("bounce for a!b#c@example.org", "bounce for [email]"),
    ],
)
def test_email_addresses_with_rarer_characters_are_masked_whole(text: str, scrubbed: str) -> None:
    assert scrub(text) == scrubbed
