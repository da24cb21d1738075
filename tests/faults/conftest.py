"""Fixtures of the fault-injection suite: a PostgreSQL cluster of its own for the run (with a
migrated template database each scenario's database is copied from), and a fresh hub per
scenario. They never touch the machine's shared PostgreSQL or Redis."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest

from tests.faults.harness import (
    SIZES,
    Hub,
    PostgresServer,
    migrate_template,
    missing_binaries,
    running_hub,
)

TEMPLATE = "faults_template"
FAILED = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fake_twilio(*args): command-line arguments of the fake Twilio API"
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    missing = missing_binaries()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"fault tests cannot run: {missing}")
        pytest.skip(f"fault tests need their own servers: {missing}")
    server = PostgresServer()
    try:
        migrate_template(server, TEMPLATE)
        yield server
    finally:
        server.destroy()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(FAILED, False)
    if report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture
def log_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The processes' logs: kept (and named in the failure) when the test fails, else removed.
    Not under tmp_path, which other runs on the machine prune."""
    path = Path(tempfile.mkdtemp(prefix=f"hub-faults-{request.node.name[:40]}-"))
    yield path
    if not request.node.stash.get(FAILED, False):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def hub(
    request: pytest.FixtureRequest, postgres: PostgresServer, log_dir: Path
) -> AsyncIterator[Hub]:
    """A hub with SIZES.outbound due texts (paused until the test releases them) and the fake
    Twilio started with the arguments of the test's ``fake_twilio`` mark (default: 20 ms per
    call)."""
    mark = request.node.get_closest_marker("fake_twilio")
    fake_args = list(mark.args) if mark is not None else ["--latency-ms", "20"]
    async with running_hub(
        postgres, TEMPLATE, log_dir, outbound=SIZES.outbound, fake_args=fake_args
    ) as started:
        yield started
