"""Cohort files as EHR exports write them: the column mapping suggested from their headers,
comma, semicolon and tab files, byte order marks and CRLF, day-first dates by the clinic's
locale, and each bad row said in plain words with its line. All data synthetic."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from importlib import resources
from zoneinfo import ZoneInfo

import pytest

from hub.audit import Actor
from hub.crypto import KeyRing
from hub.db import Database
from hub.journeys import actions as journeys
from hub.journeys.cohort import CohortInvalid, Reading, count_rows, launch, read_chunks
from hub.journeys.cohort_dates import DateOrder, date_order_of, read_start, read_time
from hub.journeys.mapping import (
    ColumnMapping,
    MappingInvalid,
    detect_delimiter,
    looks_like_data,
    read_header,
    suggest,
)
from hub.journeys.preview import do_preview_launch

SYSTEM = Actor.system("test")
KEY = "appointment_reminders"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
NY = ZoneInfo("America/New_York")

EXPORTS = {
    # Epic-like appointment report: one name column, CSN, separate date and time.
    "epic": (
        "Patient Name,MRN,DOB,Mobile Phone,Email,Language,Appt Date,Appt Time,Department,"
        "Provider,Appt Status,CSN",
        {
            "name": "Patient Name",
            "mrn": "MRN",
            "birth_date": "DOB",
            "phone": "Mobile Phone",
            "email": "Email",
            "language": "Language",
            "appointment_date": "Appt Date",
            "appointment_time": "Appt Time",
            "location": "Department",
            "provider": "Provider",
            "status": "Appt Status",
            "appointment_id": "CSN",
        },
    ),
    # athenahealth-like: split names, "Patient Mobile No", a home phone to leave out.
    "athena": (
        "Patient ID,Patient First Name,Patient Last Name,Patient Home Phone,Patient Mobile No,"
        "Patient Email,apptdate,appttime,Service Location,Rendering Provider",
        {
            "mrn": "Patient ID",
            "first_name": "Patient First Name",
            "last_name": "Patient Last Name",
            "phone": "Patient Mobile No",
            "email": "Patient Email",
            "appointment_date": "apptdate",
            "appointment_time": "appttime",
            "location": "Service Location",
            "provider": "Rendering Provider",
        },
    ),
    # eClinicalWorks-like: one joined date-and-time column, "Cell" and "Facility".
    "eclinicalworks": (
        "Account Number,Last Name,First Name,Cell,E-mail Address,Appointment Date Time,"
        "Facility,Doctor,Visit Status",
        {
            "mrn": "Account Number",
            "last_name": "Last Name",
            "first_name": "First Name",
            "phone": "Cell",
            "email": "E-mail Address",
            "appointment_start": "Appointment Date Time",
            "location": "Facility",
            "provider": "Doctor",
            "status": "Visit Status",
        },
    ),
    # The complaint: a spreadsheet with plain names.
    "spreadsheet": (
        "Phone Number,Appointment Date,Appointment Time",
        {
            "phone": "Phone Number",
            "appointment_date": "Appointment Date",
            "appointment_time": "Appointment Time",
        },
    ),
    # The hub's own column names are read as they always were.
    "hub": (
        "phone,email,name,time_zone,appointment_id,appointment_start,status",
        {
            "phone": "phone",
            "email": "email",
            "name": "name",
            "time_zone": "time_zone",
            "appointment_id": "appointment_id",
            "appointment_start": "appointment_start",
            "status": "status",
        },
    ),
}


@pytest.mark.parametrize("shape", sorted(EXPORTS))
def test_the_mapping_is_suggested_from_an_ehr_exports_headers(shape: str) -> None:
    header, expected = EXPORTS[shape]
    mapping = suggest(header.split(","), region="US")
    assert dict(mapping.columns) == expected
    mapping.check()  # complete enough to read the file


@pytest.mark.parametrize(
    ("line", "delimiter"),
    [
        ("Phone Number,Appointment Date,Appointment Time", ","),
        ("Phone Number;Appointment Date;Appointment Time", ";"),
        ("Phone Number\tAppointment Date\tAppointment Time", "\t"),
        ('"Name; with semicolon",Phone,Email', ","),  # quoted separators do not count
        ("phone", ","),
    ],
)
def test_the_separator_is_detected_from_the_header(line: str, delimiter: str) -> None:
    assert detect_delimiter(line) == delimiter


def test_the_clinics_locale_says_how_dates_are_written() -> None:
    assert date_order_of("US") is DateOrder.MONTH_FIRST
    assert date_order_of("GB") is DateOrder.DAY_FIRST
    assert date_order_of("DE") is DateOrder.DAY_FIRST
    assert date_order_of("JP") is DateOrder.YEAR_FIRST


def rows(text: str, region: str = "US", mapping: ColumnMapping | None = None) -> list[dict]:
    reading = Reading(region, mapping, "America/New_York")
    return [
        row for chunk in read_chunks(io.StringIO(text, newline=""), 50, reading) for _, row in chunk
    ]


@pytest.mark.parametrize("separator", [",", ";", "\t"])
def test_semicolon_tab_bom_and_crlf_files_read_alike(separator: str) -> None:
    lines = [
        "\ufeffPhone Number,Patient First Name,Patient Last Name,Appointment Date",
        "+1 201 555 0101,Avery,Sample,03/14/2027",
        "",  # a blank line in the middle
        "(201) 555-0102,Blake,Placeholder,03/15/2027",
    ]
    text = "\r\n".join(line.replace(",", separator) for line in lines) + "\r\n"
    assert rows(text) == [
        {"phone": "+1 201 555 0101", "name": "Avery Sample", "appointment_date": "03/14/2027"},
        {"phone": "(201) 555-0102", "name": "Blake Placeholder", "appointment_date": "03/15/2027"},
    ]
    assert count_rows(io.StringIO(text, newline="")) == 2
    header, found = read_header(io.StringIO(text, newline=""))
    assert found == separator and header[0] == "Phone Number"


def test_dates_are_read_day_first_in_a_uk_or_german_clinic() -> None:
    row = {"appointment_date": "03/04/2027", "appointment_time": "14:30"}
    uk = read_start(row, date_order_of("GB"), "Europe/London")
    us = read_start(row, date_order_of("US"), "America/New_York")
    assert uk == datetime(2027, 4, 3, 14, 30, tzinfo=ZoneInfo("Europe/London"))
    assert us == datetime(2027, 3, 4, 14, 30, tzinfo=NY)
    german = {"appointment_start": "03.04.2027 09:15"}
    assert read_start(german, date_order_of("DE"), "Europe/Berlin") == datetime(
        2027, 4, 3, 9, 15, tzinfo=ZoneInfo("Europe/Berlin")
    )


def at(*args: int, zone: ZoneInfo = NY) -> datetime:
    return datetime(*args, tzinfo=zone)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"appointment_start": "2027-03-14T09:30:00-04:00"}, at(2027, 3, 14, 9, 30)),
        ({"appointment_start": "2027-03-14 09:30"}, at(2027, 3, 14, 9, 30)),
        ({"appointment_start": "03/14/2027 2:30 PM"}, at(2027, 3, 14, 14, 30)),
        ({"appointment_start": "14-Mar-2027 08:00"}, at(2027, 3, 14, 8)),
        ({"appointment_date": "20270314", "appointment_time": "0930"}, at(2027, 3, 14, 9, 30)),
        ({"appointment_date": "Mar 14, 2027", "appointment_time": "9am"}, at(2027, 3, 14, 9)),
        ({"appointment_date": "3/14/27", "appointment_time": "12:15 a.m."}, at(2027, 3, 14, 0, 15)),
        ({"appointment_date": "", "appointment_time": ""}, None),
    ],
)  # fmt: skip
def test_appointment_times_as_exports_write_them(
    raw: dict[str, str], expected: datetime | None
) -> None:
    assert read_start(raw, DateOrder.MONTH_FIRST, "America/New_York") == expected


def test_bad_times_say_what_was_wrong() -> None:
    for bad in ("25:10", "13 PM", "noon-ish"):
        with pytest.raises(ValueError, match=f'the appointment time "{bad}" is not a time of day'):
            read_time(bad, "appointment time")


def test_a_mapping_that_cannot_read_the_file_says_what_to_choose() -> None:
    with pytest.raises(MappingInvalid, match="no column is set to Phone or Email"):
        ColumnMapping({"name": "Patient Name"}).check()
    with pytest.raises(MappingInvalid, match='the file has no column "Cell"'):
        ColumnMapping({"phone": "Cell"}).bind(["Mobile", "Name"])
    saved = ColumnMapping({"phone": "Mobile"}, ";", DateOrder.DAY_FIRST, "Europe/London")
    assert ColumnMapping.from_json(saved.as_json()) == saved
    with pytest.raises(MappingInvalid, match="cannot be read"):
        ColumnMapping.from_json({"columns": {"phone": "Mobile"}, "date_order": "sideways"})


@pytest.fixture
async def journey(db: Database) -> str:
    shipped = resources.files("hub.journeys").joinpath("examples", f"{KEY}.yaml")
    await journeys.do_install_journey(db, SYSTEM, shipped.read_text(encoding="utf-8"), "shipped")
    return KEY


# An Epic-like export with semicolons, as a German clinic's spreadsheet saves it: day-first
# dates, a BOM, CRLF. Lines 4 to 7 cannot be enrolled, each for its own reason.
EPIC_DE = (
    "\ufeffPatient Name;MRN;DOB;Mobile Phone;Email;Language;Appt Date;Appt Time;Department\r\n"
    "Avery Sample;M-1001;07.03.1984;+49 30 5550101;;German;03.04.2027;09:15;Kardiologie\r\n"
    "Blake Placeholder;M-1002;;;blake@example.org;en;04.04.2027;2:30 PM;Kardiologie\r\n"
    "Casey Fictional;M-1003;;+49 30 5550103;;de;31.02.2027;10:00;Kardiologie\r\n"
    "Devon Testperson;M-1004;;+49 30 5550104;;de;05.04.2027;25:00;Kardiologie\r\n"
    "Erin Example;M-1005;;;;de;05.04.2027;11:00;Kardiologie\r\n"
    "Fran Fictional;M-1006;31.02.1990;+49 30 5550106;;Klingon;05.04.2027;11:00;Kardiologie\r\n"
)


async def test_an_epic_like_export_goes_through_the_dry_run_and_the_launch(
    db: Database, ring: KeyRing, journey: str
) -> None:
    header, separator = read_header(io.StringIO(EPIC_DE, newline=""))
    mapping = suggest(header, region="DE", delimiter=separator)
    assert (mapping.delimiter, mapping.date_order) == (";", DateOrder.DAY_FIRST)
    preview = await do_preview_launch(
        db, ring, KEY, io.StringIO(EPIC_DE, newline=""), region="DE", available=[],
        now=NOW, mapping=mapping,
    )  # fmt: skip
    assert (preview.rows, preview.enroll, preview.error_count) == (6, 2, 4)
    assert preview.errors == [
        'line 4: the appointment date "31.02.2027" is not a date',
        'line 5: the appointment time "25:00" is not a time of day (like 14:30 or 2:30 PM)',
        "line 6: needs a phone or an email",
        "line 7: language 'Klingon' is not a language code; use e.g. en, es, zh-Hant",
    ]
    assert not any("isoformat" in e or "Invalid" in e for e in preview.errors)

    report = await launch(
        db, ring, SYSTEM, KEY, io.StringIO(EPIC_DE, newline=""), region="DE", now=NOW,
        mapping=mapping,
    )  # fmt: skip
    assert (report.enrolled, report.error_count) == (2, 4)
    # The appointment's time is the clinic's wall time (no offset in the file), and the MRN
    # gives the appointment an id, so launching again enrolls nobody twice.
    again = await launch(
        db, ring, SYSTEM, KEY, io.StringIO(EPIC_DE, newline=""), region="DE", now=NOW,
        mapping=mapping,
    )  # fmt: skip
    assert (again.enrolled, again.already) == (0, 2)


async def test_a_month_first_reading_of_a_day_first_file_says_which_order_to_choose(
    db: Database, ring: KeyRing, journey: str
) -> None:
    text = "Phone Number,Appointment Date,Appointment Time\n+1 201 555 0111,31/03/2027,09:00\n"
    preview = await do_preview_launch(
        db, ring, KEY, io.StringIO(text, newline=""), region="US", available=[], now=NOW
    )
    assert preview.errors == [
        'line 2: the appointment date "31/03/2027" is not a date when read month first; '
        'if the file writes the day first, choose "day first"'
    ]
    day_first = suggest(text.splitlines()[0].split(","), region="GB")
    fixed = await do_preview_launch(
        db, ring, KEY, io.StringIO(text, newline=""), region="US", available=[], now=NOW,
        mapping=day_first,
    )  # fmt: skip
    assert (fixed.enroll, fixed.error_count) == (1, 0)


async def test_a_file_without_a_contact_column_is_refused_before_any_row(
    db: Database, ring: KeyRing, journey: str
) -> None:
    # Saved without its header row: the first patient is not taken for column names.
    for first in ("Avery Sample,+1 201 555 0101", "avery@example.org;2027-03-14"):
        with pytest.raises(CohortInvalid, match="the first row holds an email address or a phone"):
            await launch(db, ring, SYSTEM, KEY, io.StringIO(first + "\n"), region="US")
    assert not looks_like_data(["Phone 1", "Email", "Appt Date (MM/DD/YYYY)", "DOB"])
    with pytest.raises(CohortInvalid, match="needs a phone or an email column"):
        await launch(
            db, ring, SYSTEM, KEY, io.StringIO("Patient Name,City\nAvery,Town\n"), region="US"
        )
