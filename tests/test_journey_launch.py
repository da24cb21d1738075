"""`hub journey launch KEY --cohort file.csv`: a real subprocess against a real database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

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
(201) 555-0102,Blake Placeholder,,America/Chicago,A-2,2026-12-03T14:30:00-06:00,Room 1
not a number,Casey Fictional,,UTC,A-3,2026-12-04T10:00:00+00:00,Room 3
+15550100104,Devon Testperson,,UTC,A-4,2026-12-34 10:00,Room 3
"""


def hub_launch(tmp_path: Path, db_url: str, key: str, cohort: str, *extra: str) -> Any:
    """``hub journey launch KEY --cohort FILE`` as an operator runs it; ``input`` answers."""
    path = tmp_path / "cohort.csv"
    path.write_text(cohort, encoding="utf-8")
    env = hub_env(
        HUB_DATABASE_URL=sync_url(db_url),
        HUB_KEYS=KEYS,
        HUB_VAR_DIR=str(tmp_path / "var"),
        HUB_LOG_FORMAT="text",
    )
    command = [sys.executable, "-m", "hub", "journey", "launch", key, "--cohort", str(path)]

    def run(*options: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *extra, *options],
            env=env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


KEYS = KeyRing.generate().to_spec()


def counts(db_url: str) -> tuple[int, int]:
    async def count() -> tuple[int, int]:
        db = Database.connect(db_url)
        try:
            async with db.reader() as session:
                enrollments = await session.scalar(select(func.count()).select_from(Enrollment))
                runs = await session.scalar(select(func.count()).select_from(StepRun))
                return int(enrollments or 0), int(runs or 0)
        finally:
            await db.dispose()

    return run_sync(count())


def test_launch_enrolls_reports_bad_rows_and_is_idempotent(
    fresh_db_url: str, tmp_path: Path
) -> None:
    launch = hub_launch(tmp_path, fresh_db_url, "appointment_reminders", COHORT)
    # The dry run comes first and the question waits for an answer: "n" enrolls nobody.
    declined = launch(input="n\n")
    assert declined.returncode == 0, declined.stderr
    assert "Dry run of appointment_reminders (4 rows): 2 would be enrolled" in declined.stdout
    assert "line 4: not a phone number" in declined.stderr
    assert "Enroll 2 patients? [y/N]" in declined.stdout
    assert "Nothing was enrolled." in declined.stdout
    assert counts(fresh_db_url) == (0, 0)
    # No one to answer (a script without --yes): refused, never hanging, nothing enrolled.
    unattended = launch()
    assert unattended.returncode == 1 and "Aborted" in unattended.stderr
    assert counts(fresh_db_url) == (0, 0)

    first = launch(input="y\n")
    assert first.returncode == 1  # two bad rows
    assert "4 rows: 2 enrolled, 0 already enrolled, 2 new patients, 2 errors" in first.stdout
    assert "4/4" in first.stdout  # the progress bar reached its total
    assert "line 4: not a phone number" in first.stderr
    assert 'line 5: the appointment date "2026-12-34" is not a date' in first.stderr
    # --yes: nobody is asked, so no dry run first; the file is read once.
    again = launch("--yes")
    assert "Dry run" not in again.stdout and "Enroll" not in again.stdout
    assert "0 enrolled, 2 already enrolled, 0 new patients" in again.stdout
    assert counts(fresh_db_url) == (2, 6)  # 3 planned steps each


SURVEY_COHORT = "phone,name,language,time_zone\n" + "".join(
    f"+1555010{n:04d},Patient {n},{'vi' if n > 2 else 'en'},America/New_York\n" for n in range(1, 6)
)


def test_launch_warns_with_counts_before_enrolling_a_survey_nobody_opted_in_to(
    fresh_db_url: str, tmp_path: Path
) -> None:
    launch = hub_launch(tmp_path, fresh_db_url, "post_visit_follow_up", SURVEY_COHORT)
    answer = launch(input="n\n")
    assert answer.returncode == 0, answer.stderr
    out = answer.stdout
    assert (
        "Warning: Step nps needs a surveys opt-in: 0 of 5 patients have one on a channel it "
        "may use; it would fail for all 5." in out
    )
    assert "step nps (nps_survey): 5 planned: 0 would be sent, 5 would fail" in out
    assert "Enroll 5 patients? [y/N]" in out and "Nothing was enrolled." in out
    assert counts(fresh_db_url) == (0, 0)

    demo = launch("--yes")  # how scripts and the demo launch: no question
    assert demo.returncode == 0, demo.stderr
    assert "Enroll 5" not in demo.stdout
    assert "5 rows: 5 enrolled" in demo.stdout
    # The same counts and warning, gathered by the launch itself, follow its report.
    assert "What the steps of post_visit_follow_up will do for the patients just enrolled" in (
        demo.stdout
    )
    assert "step nps (nps_survey): 5 planned: 0 would be sent, 5 would fail" in demo.stdout
    assert (
        "Warning: Step nps needs a surveys opt-in: 0 of 5 patients have one on a channel it "
        "may use; it would fail for all 5." in demo.stdout
    )
