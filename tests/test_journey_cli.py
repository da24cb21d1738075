"""`hub journey list|show|validate` as an operator runs them: validate names the line and field
and exits 1, list and show read versions and running enrollments. Synthetic data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hub.audit import Actor
from hub.db import Database
from hub.journeys.definitions import load_examples
from hub.journeys.versions import do_save_journey
from hub.templates.actions import do_seed_templates
from tests.conftest import hub_env, run_sync, sync_url
from tests.test_journey_launch import KEYS

pytestmark = pytest.mark.slow

GOOD = """\
key: cli_reminders
name: CLI reminders
purpose: reminders
anchor: appointment_start
steps:
  - id: sms_24h
    offset: -24h
    template: appointment_reminder
    channel: sms
"""


def hub(tmp_path: Path, db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = hub_env(
        HUB_DATABASE_URL=sync_url(db_url),
        HUB_KEYS=KEYS,
        HUB_VAR_DIR=str(tmp_path / "var"),
        HUB_LOG_FORMAT="text",
    )
    return subprocess.run(
        [sys.executable, "-m", "hub", "journey", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_validate_list_and_show(fresh_db_url: str, tmp_path: Path) -> None:
    async def install() -> None:
        db = Database.connect(fresh_db_url)
        try:
            await do_seed_templates(db)
            actor = Actor.system("test")
            await do_save_journey(db, actor, GOOD, "cli.yaml")
            await do_save_journey(db, actor, GOOD.replace("-24h", "-48h"), "cli.yaml")
        finally:
            await db.dispose()

    run_sync(install())
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("appointment_reminder", "apointment_reminder"), encoding="utf-8")
    refused = hub(tmp_path, fresh_db_url, "validate", str(bad))
    assert refused.returncode == 1
    assert 'bad.yaml line 8: steps[0].template: no template "apointment_reminder"' in (
        refused.stderr
    )
    good = tmp_path / "good.yaml"
    good.write_text(GOOD, encoding="utf-8")
    valid = hub(tmp_path, fresh_db_url, "validate", str(good))
    assert valid.returncode == 0, valid.stderr
    assert "journey cli_reminders is valid (1 steps: sms_24h)" in valid.stdout

    listed = hub(tmp_path, fresh_db_url, "list")
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if line.startswith("cli_reminders")]
    assert row.split()[:4] == ["cli_reminders", "active", "2", "0"]

    shown = hub(tmp_path, fresh_db_url, "show", "cli_reminders", "--version", "1")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("# cli_reminders version 1 of 2, active")
    assert "offset: -24h" in shown.stdout
    assert "offset: -48h" in hub(tmp_path, fresh_db_url, "show", "cli_reminders").stdout
    missing = hub(tmp_path, fresh_db_url, "show", "nope")
    assert missing.returncode == 1 and "no journey with key nope" in missing.stderr


def test_every_shipped_example_validates(fresh_db_url: str, tmp_path: Path) -> None:
    folder = Path(__file__).parent.parent / "hub" / "journeys" / "examples"
    assert len(load_examples()) == 3
    for path in sorted(folder.glob("*.yaml")):
        result = hub(tmp_path, fresh_db_url, "validate", str(path))
        assert result.returncode == 0, result.stderr
        assert "Templates checked against the hub's templates." in result.stderr
