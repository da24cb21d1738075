"""`hub journey launch KEY --cohort file.csv`: a real subprocess against a real database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from hub.crypto import KeyRing
from hub.db import Database
from hub.journeys.models import Enrollment, StepRun
from tests.conftest import hub_env, run_sync, sync_url

pytestmark = pytest.mark.slow

# Saved by a spreadsheet: a UTF-8 byte order mark before the first header, which must not
# hide the phone column.
COHORT = """\
\ufeffphone,name,email,time_zone,appointment_id,appointment_start,location
+1 (555) 010-0101,Avery Sample,a@example.org,America/New_York,A-1,2026-12-02T09:00:00-05:00,Room 2
555-010-0102,Blake Placeholder,,America/Chicago,A-2,2026-12-03T14:30:00-06:00,Room 1
not a number,Casey Fictional,,UTC,A-3,2026-12-04T10:00:00+00:00,Room 3
+15550100104,Devon Testperson,,UTC,A-4,2026-12-04 10:00,Room 3
"""


def test_launch_enrolls_reports_bad_rows_and_is_idempotent(
    fresh_db_url: str, tmp_path: Path
) -> None:
    cohort = tmp_path / "cohort.csv"
    cohort.write_text(COHORT, encoding="utf-8")
    env = hub_env(
        HUB_DATABASE_URL=sync_url(fresh_db_url),
        HUB_KEYS=KeyRing.generate().to_spec(),
        HUB_VAR_DIR=str(tmp_path / "var"),
        HUB_LOG_FORMAT="text",
    )
    command = [
        sys.executable,
        "-m",
        "hub",
        "journey",
        "launch",
        "appointment_reminders",
        "--cohort",
        str(cohort),
    ]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 1  # two bad rows
    assert "4 rows: 2 enrolled, 0 already enrolled, 2 new patients, 2 errors" in first.stdout
    assert "4/4" in first.stdout  # the progress bar reached its total
    assert "line 4: not a phone number" in first.stderr
    assert "line 5: appointment_start needs a UTC offset" in first.stderr
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert "0 enrolled, 2 already enrolled, 0 new patients" in again.stdout

    async def counts() -> tuple[int, int]:
        db = Database.connect(fresh_db_url)
        try:
            async with db.reader() as session:
                enrollments = await session.scalar(select(func.count()).select_from(Enrollment))
                runs = await session.scalar(select(func.count()).select_from(StepRun))
                return int(enrollments or 0), int(runs or 0)
        finally:
            await db.dispose()

    assert run_sync(counts()) == (2, 6)  # 3 planned steps each
