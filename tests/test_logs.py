"""No log line carries PHI, whatever a caller passes in."""

from __future__ import annotations

import io
import json
import logging

import pytest

from hub.logs import PhiFilter, scrub


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
