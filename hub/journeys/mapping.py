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
import functools
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError

from hub.errors import HubError


class MappingInvalid(HubError):
    """A mapping that cannot read the file (no contact column, a column named twice)."""


class DateOrder(StrEnum):
    DAY_FIRST = "day-first"
    MONTH_FIRST = "month-first"
    YEAR_FIRST = "year-first"


DATE_ORDER_LABELS = {
    DateOrder.MONTH_FIRST: "month first (12/31/2027)",
    DateOrder.DAY_FIRST: "day first (31/12/2027)",
    DateOrder.YEAR_FIRST: "year first (2027/12/31)",
}
"""How each order reads on the mapping screen and in the command's output."""

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

_DATE_ISO = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})")
_DATE_NUMERIC = re.compile(r"(\d{1,2})[-/.](\d{1,2})[-/.](\d{4}|\d{2})")
_DATE_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})")
_DATE_WORDS = re.compile(
    r"(\d{1,2})[ -]([A-Za-z]{3,9})\.?[ ,-]*(\d{4})|([A-Za-z]{3,9})\.? (\d{1,2}),? (\d{4})"
)
_TIME = re.compile(r"(\d{1,2})(?:[:.](\d{2}))?(?:[:.](\d{2}))?\s*([AaPp])\.?\s*[Mm]?\.?")
_TIME_24 = re.compile(r"(\d{1,2})[:.h](\d{2})(?:[:.](\d{2})(?:\.\d+)?)?|(\d{2})(\d{2})")
_MONTHS = {
    name: n
    for n, names in enumerate(
        (
            ("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
            ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
            ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}  # fmt: skip
CANCELLED_STATUSES = frozenset({"cancelled", "canceled", "cancel", "cx"})
"""Status values that cancel the row's appointment (anything else books it)."""


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


def date_order_of(region: str) -> DateOrder:
    """The order a clinic in ``region`` writes dates in, from its likeliest locale's short
    date pattern (US M/d/yy, GB dd/MM/y, DE dd.MM.yy, JP y/MM/dd)."""
    try:
        pattern = Locale.parse(f"und_{region}").date_formats["short"].pattern
    except (UnknownLocaleError, ValueError):
        return DateOrder.MONTH_FIRST
    first = next((c for c in pattern if c in "dMy"), "M")
    return {"d": DateOrder.DAY_FIRST, "y": DateOrder.YEAR_FIRST}.get(first, DateOrder.MONTH_FIRST)


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

    def __post_init__(self) -> None:
        self.index = self.mapping.bind(self.header)

    def row(self, values: Sequence[str]) -> dict[str, str]:
        out = {name: values[i].strip() if i < len(values) else "" for name, i in self.index.items()}
        if "first_name" in out or "last_name" in out:
            given, family = out.pop("first_name", ""), out.pop("last_name", "")
            out["name"] = out.get("name") or " ".join(p for p in (given, family) if p)
        return out


def read_date(text: str, order: DateOrder, what: str) -> date:
    """A date as EHR exports write it: ISO, YYYYMMDD, 31/12/2027 or 12/31/2027 by ``order``,
    14-Mar-2027, Mar 14, 2027. Raises ValueError naming ``what`` and the value."""
    value = text.strip()
    try:
        return _date(value, order)
    except ValueError:
        pass
    hint = ""
    for other in (DateOrder.DAY_FIRST, DateOrder.MONTH_FIRST):
        if other is not order and _DATE_NUMERIC.fullmatch(value):
            try:
                _date(value, other)
            except ValueError:
                continue
            hint = (
                f" when read {_order_words(order)}; if the file writes the {_first(other)} "
                f'first, choose "{_order_words(other)}"'
            )
    raise ValueError(f'the {what} "{value}" is not a date{hint}')


def _order_words(order: DateOrder) -> str:
    return order.value.replace("-", " ")


def _first(order: DateOrder) -> str:
    return order.value.split("-")[0]


def _date(value: str, order: DateOrder) -> date:
    if m := _DATE_ISO.fullmatch(value):
        return date(int(m[1]), int(m[2]), int(m[3]))
    if m := _DATE_COMPACT.fullmatch(value):
        return date(int(m[1]), int(m[2]), int(m[3]))
    if m := _DATE_NUMERIC.fullmatch(value):
        a, b, year = int(m[1]), int(m[2]), int(m[3])
        year += 2000 if len(m[3]) == 2 else 0
        day, month = (a, b) if order is DateOrder.DAY_FIRST else (b, a)
        return date(year, month, day)
    if m := _DATE_WORDS.fullmatch(value):
        day_text, month_name, year_text = (m[1], m[2], m[3]) if m[1] else (m[5], m[4], m[6])
        if month_name.casefold() not in _MONTHS:
            raise ValueError("unknown month")
        return date(int(year_text), _MONTHS[month_name.casefold()], int(day_text))
    raise ValueError("not a date")


def read_time(text: str, what: str) -> time:
    """A time of day: 14:30, 14:30:00, 2:30 PM, 2pm, 1430, 14h30. Raises ValueError naming
    ``what`` and the value."""
    value = text.strip()
    try:
        if m := _TIME.fullmatch(value):
            hour = int(m[1])
            if 1 <= hour <= 12:
                hour = hour % 12 + (12 if m[4] in "Pp" else 0)
                return time(hour, int(m[2] or 0), int(m[3] or 0))
        elif m := _TIME_24.fullmatch(value):
            if m[4]:  # 1430
                return time(int(m[4]), int(m[5]))
            return time(int(m[1]), int(m[2]), int(m[3] or 0))
    except ValueError:
        pass
    raise ValueError(f'the {what} "{value}" is not a time of day (like 14:30 or 2:30 PM)')


def zone_named(name: str) -> ZoneInfo:
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f'unknown time zone "{name}"; expected an IANA name like America/New_York'
        ) from None


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def read_start(raw: Mapping[str, str], order: DateOrder, zone: str) -> datetime | None:
    """The appointment's start from a canonical row: ``appointment_start`` (ISO with or
    without its offset, or "12/31/2027 2:30 PM"), or ``appointment_date`` and
    ``appointment_time``; a time without an offset is the wall time in ``zone``. None when the
    row has no appointment date."""
    joined = (raw.get("appointment_start") or "").strip()
    if joined:
        try:
            start = datetime.fromisoformat(joined)
        except ValueError:
            day_text, _, time_text = joined.replace("T", " ", 1).partition(" ")
            day = read_date(day_text, order, "appointment date")
            at = read_time(time_text, "appointment time") if time_text.strip() else time()
            start = datetime.combine(day, at)
    else:
        day_text = (raw.get("appointment_date") or "").strip()
        if not day_text:
            if (raw.get("appointment_time") or "").strip():
                raise ValueError("the appointment date is empty but its time is given")
            return None
        day = read_date(day_text, order, "appointment date")
        time_text = (raw.get("appointment_time") or "").strip()
        at = read_time(time_text, "appointment time") if time_text else time()
        start = datetime.combine(day, at)
    if start.utcoffset() is None:
        start = start.replace(tzinfo=zone_named(zone))
    return start


def read_birth_date_text(text: str | None, order: DateOrder) -> str | None:
    """A date of birth as ISO text; its value is never repeated in the error (it is PHI)."""
    if not text or not text.strip():
        return None
    try:
        return _date(text.strip(), order).isoformat()
    except ValueError:
        raise ValueError(
            f"birth_date is not a date ({_order_words(order)}, or like 1984-03-07)"
        ) from None


def derived_appointment_id(who: str, start: datetime) -> str:
    """An id for an appointment the file names only by its time: the same row launched again
    gets the same id, so it enrolls nobody twice. Hashed: ``who`` (an MRN or a contact) is
    PHI and the id is stored in clear."""
    digest = hashlib.blake2b(f"{who}|{start.isoformat()}".encode(), digest_size=10)
    return f"csv-{digest.hexdigest()}"


def is_cancelled(status: str | None) -> bool:
    return (status or "").strip().casefold() in CANCELLED_STATUSES


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
