"""How a cohort file's columns are read: which column holds what, the separator, the date order.

EHR exports name their columns their own way ("Phone Number", "Appt Date", "Patient First
Name"), write dates day first or month first by the clinic's country, and separate values
with commas, semicolons or tabs. ``suggest`` proposes a ``ColumnMapping`` from the header row;
the coordinator confirms or changes it (the upload's mapping screen, or ``hub journey launch
--map``), and ``hub.journeys.cohort`` reads every row through it, so both paths read a file
alike. Errors name the line's value in plain words ("the appointment date "31/02/2027" is not
a date"), never Python's text; a date of birth is never repeated (the column only).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hub.errors import HubError
from hub.journeys.cohort_dates import DATE_ORDER_LABELS, DateOrder, date_order_of


class MappingInvalid(HubError):
    """A mapping that cannot read the file (no contact column, a column named twice)."""


FIELDS: dict[str, str] = {
    "phone": "Phone",
    "email": "Email",
    "name": "Full name",
    "first_name": "First name",
    "last_name": "Last name",
    "language": "Language",
    "country": "Country",
    "time_zone": "Time zone",
    "birth_date": "Date of birth",
    "mrn": "MRN (patient id)",
    "appointment_id": "Appointment id",
    "appointment_start": "Appointment date and time",
    "appointment_date": "Appointment date",
    "appointment_time": "Appointment time",
    "location": "Location",
    "provider": "Provider",
    "status": "Appointment status",
}
"""What a column can hold, with the words the mapping screen shows (order kept there)."""

DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
"""Separators a cohort file may use, and their names in messages."""

_SYNONYMS: dict[str, tuple[str, ...]] = {
    "phone": (
        "phone", "phone number", "mobile", "mobile phone", "mobile number", "mobile no",
        "cell", "cell phone", "cellphone", "cell number", "patient phone", "patient mobile",
        "patient mobile phone", "patient cell phone", "patient phone number", "sms",
        "sms number", "primary phone", "contact number", "telephone", "tel",
    ),
    "email": ("email", "e mail", "email address", "e mail address", "patient email"),
    "name": ("name", "patient name", "patient", "full name", "patient full name"),
    "first_name": (
        "first name", "firstname", "given name", "patient first name", "fname", "first",
    ),
    "last_name": (
        "last name", "lastname", "surname", "family name", "patient last name", "lname",
        "last",
    ),
    "language": (
        "language", "preferred language", "patient language", "primary language", "lang",
        "spoken language",
    ),
    "country": ("country", "country code", "patient country"),
    "time_zone": ("time zone", "timezone", "tz", "patient time zone"),
    "birth_date": ("dob", "date of birth", "birth date", "birthdate", "patient dob"),
    "mrn": (
        "mrn", "medical record number", "patient id", "patient mrn", "chart number",
        "patient number", "person id", "enterprise id", "account number",
    ),
    "appointment_id": (
        "appointment id", "appt id", "appointment number", "appointment key", "visit id",
        "encounter id", "csn", "appt csn", "contact serial number", "booking id",
    ),
    "appointment_start": (
        "appointment start", "appointment datetime", "appointment date time",
        "appointment date and time", "appt datetime", "appt date time", "appt start",
        "start", "start datetime", "scheduled", "visit date time",
    ),
    "appointment_date": (
        "appointment date", "appt date", "apptdate", "date", "visit date", "date of service",
        "dos", "service date", "scheduled date", "appointment day",
    ),
    "appointment_time": (
        "appointment time", "appt time", "appttime", "time", "visit time", "start time",
        "scheduled time",
    ),
    "location": (
        "location", "department", "dept", "clinic", "facility", "site",
        "appointment location", "appt location", "visit location", "department name",
        "service location",
    ),
    "provider": (
        "provider", "doctor", "physician", "clinician", "appointment provider",
        "appt provider", "visit provider", "rendering provider", "resource", "provider name",
        "attending",
    ),
    "status": ("status", "appointment status", "appt status", "visit status"),
}  # fmt: skip
"""Header names EHR exports use for each field (Epic, athenahealth, eClinicalWorks, plain
spreadsheets), compared after ``_words``; the field's own name is always one of them."""

_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("email", ("email", "e mail")),
    ("birth_date", ("dob", "birth")),
    ("phone", ("mobile", "cell", "phone", "sms")),
    ("appointment_time", ("appt time", "appointment time")),
    ("appointment_date", ("appt date", "appointment date")),
    ("first_name", ("first name", "given")),
    ("last_name", ("last name", "surname", "family name")),
    ("language", ("language",)),
    ("provider", ("provider", "physician", "doctor")),
    ("location", ("location", "department", "facility")),
)
"""Words inside a header that no synonym matched ("Patient Mobile No.", "Pt Email Addr")."""


def _words(header: str) -> str:
    """A header as the synonyms are written: lower case, one space between words."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", header.casefold()).split())


@dataclass(frozen=True)
class ColumnMapping:
    """Which file column holds each field, the separator, and how dates are written."""

    columns: Mapping[str, str]
    """field -> the header as written in the file."""
    delimiter: str = ","
    date_order: DateOrder = DateOrder.MONTH_FIRST
    time_zone: str | None = None
    """Zone of times written without an offset, and of patients without a time zone column;
    None: UTC (the clinic's zone is filled in by whoever knows it)."""

    def check(self) -> None:
        """Raises MappingInvalid saying what the coordinator must change."""
        unknown = sorted(set(self.columns) - set(FIELDS))
        if unknown:
            raise MappingInvalid(f"unknown field {', '.join(unknown)}; use {', '.join(FIELDS)}")
        if not {"phone", "email"} & set(self.columns):
            raise MappingInvalid(
                "no column is set to Phone or Email (the file needs a phone or an email "
                "column): choose the column that holds the patients' phone numbers or email "
                "addresses"
            )
        if "appointment_id" in self.columns and not {"appointment_start", "appointment_date"} & set(
            self.columns
        ):
            raise MappingInvalid(
                "a column is set to Appointment id but none to the appointment's date: choose "
                "the column that holds the date (and the time, if it has its own)"
            )
        if "appointment_time" in self.columns and "appointment_date" not in self.columns:
            raise MappingInvalid("a column is set to Appointment time but none to its date")
        if "appointment_start" in self.columns and "appointment_date" in self.columns:
            raise MappingInvalid(
                "both Appointment date and time and Appointment date are set: keep one"
            )
        if self.delimiter not in DELIMITERS:
            raise MappingInvalid("the separator must be a comma, a semicolon or a tab")

    def bind(self, header: Sequence[str]) -> dict[str, int]:
        """field -> index of its column in ``header``; raises MappingInvalid for a column the
        file does not have."""
        self.check()
        where: dict[str, int] = {}
        for index, name in enumerate(header):
            where.setdefault(name.strip(), index)
        found: dict[str, int] = {}
        for name, column in self.columns.items():
            if column.strip() not in where:
                raise MappingInvalid(
                    f'the file has no column "{column}" (set for {FIELDS[name]}); '
                    f"its columns are {', '.join(h.strip() for h in header)}"
                )
            found[name] = where[column.strip()]
        return found

    def as_json(self) -> dict[str, Any]:
        return {
            "columns": dict(self.columns),
            "delimiter": self.delimiter,
            "date_order": self.date_order.value,
            "time_zone": self.time_zone,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ColumnMapping:
        """A mapping saved by ``as_json`` (a page's hidden field, a mapping file)."""
        try:
            columns = {str(k): str(v) for k, v in dict(data.get("columns") or {}).items() if v}
            order = DateOrder(str(data.get("date_order") or DateOrder.MONTH_FIRST.value))
        except (TypeError, ValueError) as exc:
            raise MappingInvalid(f"the mapping cannot be read ({exc})") from None
        zone = data.get("time_zone")
        mapping = cls(columns, str(data.get("delimiter") or ","), order, zone and str(zone))
        mapping.check()
        return mapping

    def describe(self) -> list[str]:
        """The mapping in words, one line a field (the command prints it)."""
        lines = [
            f'{label}: "{self.columns[f]}"' for f, label in FIELDS.items() if f in self.columns
        ]
        lines.append(f"separator: {DELIMITERS[self.delimiter]}")
        lines.append(f"dates: {DATE_ORDER_LABELS[self.date_order]}")
        return lines


def detect_delimiter(header_line: str) -> str:
    """The separator of a file from its header line: the candidate found most often outside
    quotes (a header has no empty names, so its separators are all there); a comma when none."""
    outside = re.sub(r'"[^"]*"', "", header_line)
    counts = {d: outside.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def suggest(header: Sequence[str], *, region: str, delimiter: str = ",") -> ColumnMapping:
    """A mapping proposed from the header's names; each field goes to one column at most
    (the first that names it), and a column to one field."""
    columns: dict[str, str] = {}
    taken: set[int] = set()
    words = [_words(h) for h in header]
    lookup = {syn: name for name, syns in _SYNONYMS.items() for syn in (name, *syns)}
    lookup.update({_words(name): name for name in FIELDS})
    for index, word in enumerate(words):
        name = lookup.get(word)
        if name and name not in columns:
            columns[name] = header[index].strip()
            taken.add(index)
    for name, keys in _KEYWORDS:
        # Keys in order of preference: a mobile number before a home phone.
        found = next(
            (i for k in keys for i, w in enumerate(words) if i not in taken and k in w), None
        )
        if name not in columns and found is not None:
            columns[name] = header[found].strip()
            taken.add(found)
    if "appointment_start" in columns and "appointment_date" in columns:
        del columns["appointment_start"]  # separate date and time columns are more precise
    if "appointment_time" in columns and "appointment_date" not in columns:
        columns["appointment_start"] = columns.pop("appointment_time")
    return ColumnMapping(columns, delimiter, date_order_of(region))


_DATA_CELL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+|(?:\D*\d){7}")


def looks_like_data(header: Sequence[str]) -> bool:
    """Whether a "header" holds an email address or a phone number: a file saved without its
    header row, whose first patient would be read as column names (and shown as such)."""
    return any(_DATA_CELL.search(cell) for cell in header)


NO_HEADER = (
    "the first row holds an email address or a phone number, not column names: add a header "
    "row naming the columns (see the sample file)"
)


def read_header(lines: Iterable[str]) -> tuple[list[str], str]:
    """The header row of a file and its separator (from the first line)."""
    first = next(iter(lines), "")
    delimiter = detect_delimiter(first)
    row = next(csv.reader([first], delimiter=delimiter), [])
    return [h.strip().lstrip("\ufeff") for h in row], delimiter


@dataclass
class Reader:
    """A bound mapping: canonical rows (the field names of ``hub.journeys.cohort``) from the
    file's rows, first and last names joined and the status read."""

    mapping: ColumnMapping
    header: Sequence[str]
    index: dict[str, int] = field(init=False)
    pairs: list[tuple[str, int]] = field(init=False)
    width: int = field(init=False)
    joins_name: bool = field(init=False)

    def __post_init__(self) -> None:
        self.index = self.mapping.bind(self.header)
        self.pairs = list(self.index.items())
        self.width = max(self.index.values(), default=-1) + 1
        self.joins_name = bool({"first_name", "last_name"} & set(self.index))

    def row(self, values: list[str]) -> dict[str, str]:
        if len(values) < self.width:
            values = values + [""] * (self.width - len(values))  # a short row's empty cells
        out = {name: values[i].strip() for name, i in self.pairs}
        if self.joins_name:
            given, family = out.pop("first_name", ""), out.pop("last_name", "")
            out["name"] = out.get("name") or " ".join(p for p in (given, family) if p)
        return out


def derived_appointment_id(who: str, start: datetime) -> str:
    """An id for an appointment the file names only by its time: the same row launched again
    gets the same id, so it enrolls nobody twice. Hashed: ``who`` (an MRN or a contact) is
    PHI and the id is stored in clear."""
    digest = hashlib.blake2b(f"{who}|{start.isoformat()}".encode(), digest_size=10)
    return f"csv-{digest.hexdigest()}"


def mapping_for(
    header: Sequence[str],
    *,
    region: str,
    delimiter: str,
    saved: ColumnMapping | None = None,
    columns: Mapping[str, str] | None = None,
    date_order: DateOrder | None = None,
) -> ColumnMapping:
    """The mapping a launch from the command line uses: ``saved`` (a mapping file) or the
    suggestion, with ``columns`` (field -> column; an empty column drops the field) and
    ``date_order`` put over it, as the page's screen changes the suggestion."""
    base = saved or suggest(header, region=region, delimiter=delimiter)
    chosen = dict(base.columns)
    for name, column in (columns or {}).items():
        if name not in FIELDS:
            raise MappingInvalid(f"unknown field {name!r}; use one of {', '.join(FIELDS)}")
        if column:
            chosen[name] = column
        else:
            chosen.pop(name, None)
    mapping = ColumnMapping(chosen, base.delimiter, date_order or base.date_order, base.time_zone)
    mapping.bind(header)  # a column the file lacks is said before anything is read
    return mapping


def header_key(header: Sequence[str], delimiter: str) -> str:
    """What a saved mapping is found by: the header's names, in order, and its separator."""
    names = "\x1f".join(h.strip() for h in header)
    return hashlib.sha256(f"{delimiter}\x1e{names}".encode()).hexdigest()


def failed_rows(lines: Iterable[str], delimiter: str, failed: Mapping[int, str]) -> str:
    """The rows of a cohort file that were not enrolled, as a CSV with the file's own header
    and a last column "Reason", so the coordinator can fix them and upload that file. Lines
    are numbered as the launch numbers them (a record's last line)."""
    reader = csv.reader(lines, delimiter=delimiter)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    # The launch read the whole file already: no csv error is left to meet here.
    header = next(reader, None)
    if header is None:
        return ""
    writer.writerow([header[0].lstrip("\ufeff"), *header[1:], "Reason"])
    for values in reader:
        if reader.line_num in failed:
            writer.writerow([*values, failed[reader.line_num]])
    return out.getvalue()
