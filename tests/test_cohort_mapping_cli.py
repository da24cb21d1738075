"""`hub journey launch` reads an EHR export through the same mapping as the upload page: the
suggestion printed, --map and --date-order over it, a saved --mapping file. Synthetic data."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest

from hub.db import Database
from hub.journeys.cohort_dates import DateOrder
from hub.journeys.mapping import ColumnMapping, read_header
from hub.journeys.mapping_actions import do_remember_mapping
from tests.conftest import run_sync
from tests.test_journey_launch import counts, hub_launch

pytestmark = pytest.mark.slow

DAY = next(d for d in (date.today() + timedelta(days=n) for n in range(3, 40)) if d.day > 12)
EXPORT = (
    "\ufeffPatient Name;Home Phone;Cell;Appt Date;Appt Time;CSN\r\n"
    f"Avery Sample;+1 201 555 0111;+1 201 555 0101;{DAY:%d.%m.%Y};09:30;C-1\r\n"
    f"Blake Placeholder;+1 201 555 0112;;{DAY:%d.%m.%Y};2:30 PM;C-2\r\n"
)


def test_the_command_reads_an_export_through_the_mapping(fresh_db_url: str, tmp_path: Path) -> None:
    launch = hub_launch(tmp_path, fresh_db_url, "appointment_reminders", EXPORT)
    suggested = launch(input="n\n")
    assert suggested.returncode == 1  # nothing could be enrolled
    out = suggested.stdout
    assert 'Phone: "Cell"' in out and 'Appointment date: "Appt Date"' in out
    assert "separator: semicolon" in out and "dates: month first" in out
    # Month first (a US clinic), the dates cannot be read; the error says which order would.
    assert (
        f'line 2: the appointment date "{DAY:%d.%m.%Y}" is not a date when read month first; '
        'if the file writes the day first, choose "day first"' in suggested.stderr
    )
    assert "line 3: needs a phone or an email" in suggested.stderr

    mapped = launch("--map", "phone=Home Phone", "--date-order", "day-first", "--yes")
    assert mapped.returncode == 0, mapped.stderr
    assert "2 rows: 2 enrolled, 0 already enrolled, 2 new patients, 0 errors" in mapped.stdout
    assert counts(fresh_db_url) == (2, 6)

    saved = tmp_path / "mapping.json"
    saved.write_text(
        json.dumps(
            {
                "columns": {"phone": "Home Phone", "appointment_date": "Appt Date",
                            "appointment_time": "Appt Time", "appointment_id": "CSN"},
                "delimiter": ";",
                "date_order": "day-first",
            }
        )
    )  # fmt: skip
    again = launch("--mapping", str(saved), "--yes")
    assert "2 rows: 0 enrolled, 2 already enrolled" in again.stdout, again.stderr
    wrong = launch("--map", "phone=Mobile", "--yes")
    assert wrong.returncode == 1 and 'the file has no column "Mobile"' in wrong.stderr
    assert counts(fresh_db_url) == (2, 6)


def test_the_command_opens_with_the_mapping_confirmed_on_the_page(
    fresh_db_url: str, tmp_path: Path
) -> None:
    header, separator = read_header(EXPORT.splitlines(keepends=True))
    confirmed = ColumnMapping(
        {"phone": "Home Phone", "appointment_date": "Appt Date", "appointment_time": "Appt Time"},
        separator,
        DateOrder.DAY_FIRST,
    )

    async def remember() -> None:
        db = Database.connect(fresh_db_url)
        try:
            await do_remember_mapping(db, header, confirmed, None)
        finally:
            await db.dispose()

    run_sync(remember())
    launched = hub_launch(tmp_path, fresh_db_url, "appointment_reminders", EXPORT)("--yes")
    assert launched.returncode == 0, launched.stderr
    assert 'Columns (as last confirmed for these columns): Phone: "Home Phone"' in launched.stdout
    assert "2 rows: 2 enrolled" in launched.stdout
