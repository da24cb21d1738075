"""The demo's console stays readable: per-second scheduler and RQ job lines, and the
simulator's poll, are DEBUG; what happened (a send, a tick that did work) stays INFO."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from hub.logs import configure_logging

ROUTINE_LINES = (
    ("rq.cron", "Enqueued job tick to queue hub-urgent"),
    ("rq.worker", "Worker abc: hub-urgent: worker.jobs.tick() (4d7cca42-f4bd)"),
    ("rq.worker", "Successfully completed worker.jobs.tick() job in 0:00:00.13s on worker abc"),
    ("rq.worker", "Worker abc: hub-urgent: Job OK (27b37318-9bf9)"),
    ("rq.worker", "Worker abc: job 27b37318-9bf9 result discarded immediately"),
    ("aiohttp.access", '127.0.0.1 "GET /simulator/feed?number=%2B15550100101 HTTP/1.1" 204'),
)


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("root_restored")
def test_routine_lines_are_debug_and_the_rest_stays(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text")
    for name, line in ROUTINE_LINES:
        logging.getLogger(name).info(line)
    logging.getLogger("rq.worker").info("Worker abc: stopping on request")
    logging.getLogger("worker.jobs").info("sent")
    logging.getLogger("aiohttp.access").info('127.0.0.1 "POST /simulator/text HTTP/1.1" 200')
    shown = capsys.readouterr().err
    assert "stopping on request" in shown and " sent" in shown and "/simulator/text" in shown
    for _name, line in ROUTINE_LINES:
        assert line not in shown

    configure_logging("DEBUG", "text")
    for name, line in ROUTINE_LINES:
        logging.getLogger(name).info(line)
    shown = capsys.readouterr().err
    assert shown.count(" DEBUG ") == len(ROUTINE_LINES), shown
