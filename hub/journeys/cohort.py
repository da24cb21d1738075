"""Cohort files: a CSV of patients (and their appointments) to enroll in a journey.

A header row is required. Its columns are read through a ``hub.journeys.mapping.ColumnMapping``
(the coordinator's, or one suggested from the header): whichever names the file uses, each row
comes out with the fields ``phone`` and/or ``email`` (at least one), ``name`` (or first and last
names, joined), ``language`` (a BCP-47 tag such as es or zh-Hant, or a name such as Spanish),
``country`` (where the patient lives: ISO 3166 code or name; a national phone number is read
there, else in the clinic's region, and must be valid there), ``time_zone`` (else the clinic's),
``birth_date``, and for appointment-anchored journeys the appointment's start (one column, ISO
8601 or "12/31/2027 2:30 PM", or a date and a time column; a time without an offset is the wall
time in the patient's zone), ``appointment_id`` (else one derived from the MRN or contact and
the start), ``location``, ``provider``, ``status`` (``hub.journeys.outcomes``: booked,
arrived, fulfilled, noshow, cancelled, or an EHR's words for them; any other word is the row's
error). The file is read as a stream and enrolled in chunks, one transaction each
(``hub.journeys.bulk``); a bad row is reported with its line number in plain words and the
rest go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import itertools
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hub.audit import Actor
from hub.contact import (
    InvalidContact,
    InvalidLanguage,
    language_named,
    normalize_email,
    normalize_language,
    read_country,
    read_phone,
)
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.errors import HubError
from hub.inbox import queries as inbox_queries
from hub.inbox import search_queries
from hub.inbox.actions.patient_index import external_id_row, index_name_in, read_identifier
from hub.inbox.actions.patients import build_patient, read_birth_date
from hub.inbox.models import Patient
from hub.inbox.schemas import NewPatient
from hub.inbox.search_terms import external_id_term
from hub.journeys import bulk_queries
from hub.journeys.actions import NewAppointment
from hub.journeys.bulk import (
    COHORT_SOURCE,
    DEFAULT_CHUNK_ROWS,
    ROW_ERRORS,
    ChunkWork,
    EnrollRow,
    ParsedChunk,
    describe,
    do_enroll_chunk,
    load_journey,
)
from hub.journeys.cohort_dates import (
    DateOrder,
    date_order_of,
    read_birth_date_text,
    read_start,
    zone_named,
)
from hub.journeys.mapping import (
    NO_HEADER,
    ColumnMapping,
    MappingInvalid,
    Reader,
    derived_appointment_id,
    detect_delimiter,
    looks_like_data,
    suggest,
)
from hub.journeys.models import MAX_PLACE_CHARS, Appointment
from hub.journeys.outcomes import read_status

MAX_ROW_ERRORS_KEPT = 100
"""Row errors listed in the report (the count covers all of them)."""
PARSE_SLICE = 100
"""Rows parsed between yields to the event loop (about a millisecond and a half)."""


class CohortInvalid(HubError):
    pass


@dataclass
class LaunchReport:
    rows: int = 0
    enrolled: int = 0
    already: int = 0
    patients_created: int = 0
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    """Every row not enrolled: its line -> what was wrong (for ``failed_rows``)."""
    delimiter: str = ","
    """The file's separator, as the launch read it."""


@dataclass
class Reading:
    """How the rows of one file are read: its mapping (suggested from the header when None;
    set once the header is read) and the clinic's region and time zone."""

    region: str
    mapping: ColumnMapping | None = None
    zone: str = "UTC"
    """The clinic's: for times without an offset and patients without a time zone column."""

    @property
    def time_zone(self) -> str:
        return (self.mapping.time_zone if self.mapping else None) or self.zone

    def order(self) -> DateOrder:
        return self.mapping.date_order if self.mapping else date_order_of(self.region)


def _split(lines: Iterable[str], reading: Reading) -> tuple[Any, Iterator[str]] | None:
    """The csv reader of ``lines`` with the mapping's separator (else the header line's)."""
    rest = iter(lines)
    first = next(rest, None)
    if first is None:
        return None
    delimiter = reading.mapping.delimiter if reading.mapping else detect_delimiter(first)
    return csv.reader(itertools.chain([first], rest), delimiter=delimiter), rest


def _rows(lines: Iterable[str], reading: Reading) -> Iterator[tuple[int, dict[str, str]]]:
    split = _split(lines, reading)
    if split is None:
        raise CohortInvalid("the file is empty; expected a header row")
    reader, _ = split
    with _csv_errors(reader):
        header = [h.strip().lstrip("\ufeff") for h in next(reader, [])]
        if looks_like_data(header):
            raise CohortInvalid(NO_HEADER)
        if reading.mapping is None:
            reading.mapping = suggest(
                header, region=reading.region, delimiter=reader.dialect.delimiter
            )
        try:
            bound = Reader(reading.mapping, header)
        except MappingInvalid as exc:
            raise CohortInvalid(str(exc)) from None
        for values in reader:
            if not any(v.strip() for v in values):
                continue  # a blank line (a spreadsheet's are all separators)
            yield reader.line_num, bound.row(values)


def count_rows(lines: Iterable[str], mapping: ColumnMapping | None = None) -> int:
    """Data rows of a cohort (the progress bar's total); reads ``lines`` to the end."""
    split = _split(lines, Reading("US", mapping))
    if split is None:
        return 0
    reader, _ = split
    with _csv_errors(reader):
        if next(reader, None) is None:
            return 0
        return sum(1 for row in reader if any(v.strip() for v in row))  # as _rows


@contextlib.contextmanager
def _csv_errors(reader: Any) -> Iterator[None]:
    """A file the csv module cannot read (a field over its size limit, say) stops the launch
    at the line ``reader`` reached. The chunks before it stay enrolled; launching again picks
    up the rest."""
    try:
        yield
    except csv.Error as exc:
        said = str(exc)
        why = next((words for start, words in _CSV_WORDS if said.startswith(start)), None)
        raise CohortInvalid(
            f"line {reader.line_num}: not valid CSV ({why or 'the csv reader stopped here'}); "
            "save the spreadsheet as “CSV UTF-8” and upload that"
        ) from None


_CSV_WORDS = (
    ("field larger than field limit", "a value is longer than 131,072 characters"),
    ("new-line character seen in unquoted field", "a line break outside quotes"),
    ("line contains NUL", "a NUL byte: this is not a text file"),
)
"""The csv module's errors in a coordinator's words (its own text is Python's)."""


def _max_length(model: type[Any], column: str) -> int:
    length = getattr(model.__table__.c[column].type, "length", None)
    assert isinstance(length, int)
    return length


_LIMITS = {
    "appointment_id": _max_length(Appointment, "external_id"),
    "location": MAX_PLACE_CHARS,  # sealed columns have no width: the limit is the model's
    "provider": MAX_PLACE_CHARS,
    "language": _max_length(Patient, "language"),
}
"""Column widths: a longer value is the row's error, not the whole chunk's."""


def parse_row(
    ring: KeyRing,
    region: str,
    line: int,
    raw: Mapping[str, str],
    reading: Reading | None = None,
) -> EnrollRow:
    """A row's contacts normalized and blind-indexed and its appointment read; raises one of
    ROW_ERRORS saying what is wrong. ``region`` is the clinic's, for rows without a country;
    ``reading`` says how dates are written and the clinic's zone."""
    reading = reading or Reading(region)
    phone, email, language = read_contacts(raw, region)
    if phone is None and email is None:
        # The row-by-row path created a patient nobody can reach, again on every launch.
        raise InvalidContact("needs a phone or an email")
    for column, limit in _LIMITS.items():
        if len(raw.get(column) or "") > limit:
            raise ValueError(f"{column} is longer than {limit} characters")
    time_zone = raw.get("time_zone") or reading.time_zone
    zone_named(time_zone)  # before the appointment: its wall time is read there
    order = reading.order()
    appointment = None
    start = read_start(raw, order, time_zone)
    if raw.get("appointment_id") and start is None:
        raise ValueError(f"appointment {raw['appointment_id']} has no date")
    if start is not None:
        external = raw.get("appointment_id") or derived_appointment_id(
            raw.get("mrn") or phone or email or "", start
        )
        appointment = NewAppointment(
            external,
            start,
            source=COHORT_SOURCE,
            location=raw.get("location") or None,
            provider=raw.get("provider") or None,
            status=read_status(raw.get("status")),
        )
    return EnrollRow(
        line,
        raw.get("name") or None,
        phone,
        email,
        ring.blind_index("phone", phone) if phone else None,
        ring.blind_index("email", email) if email else None,
        language,
        time_zone,
        appointment,
        read_birth_date(read_birth_date_text(raw.get("birth_date"), order)),
    )


def read_contacts(raw: Mapping[str, str], region: str) -> tuple[str | None, str | None, str]:
    """Phone (read in the row's ``country``, else ``region``), email and language of a row,
    normalised; raises InvalidContact, InvalidCountry or InvalidLanguage saying which."""
    country = read_country(raw["country"]) if raw.get("country") else region
    phone = read_phone(raw["phone"], country) if raw.get("phone") else None
    email = normalize_email(raw["email"]) if raw.get("email") else None
    language = "en"
    if raw.get("language"):
        try:
            language = normalize_language(raw["language"])
        except InvalidLanguage:
            # EHR exports write the name ("Spanish"); a name that is none still fails.
            language = language_named(raw["language"]) or normalize_language(raw["language"])
    return phone, email, language


async def parse_chunk(
    ring: KeyRing,
    region: str,
    raw_rows: Sequence[tuple[int, Mapping[str, str]]],
    reading: Reading | None = None,
) -> ParsedChunk:
    """``parse_row`` over a chunk, yielding to the event loop every PARSE_SLICE rows so that it
    can run while the previous chunk waits on the database (parsing is a third of a launch's
    client time)."""
    parsed: list[EnrollRow] = []
    errors: list[tuple[int, str]] = []
    for n, (line, raw) in enumerate(raw_rows, start=1):
        try:
            parsed.append(parse_row(ring, region, line, raw, reading))
        except ROW_ERRORS as exc:
            errors.append((line, describe(exc)))
        if n % PARSE_SLICE == 0:
            await asyncio.sleep(0)
    lines = (raw_rows[0][0], raw_rows[-1][0]) if raw_rows else (0, 0)
    return ParsedChunk(len(raw_rows), lines, parsed, errors)


async def match_or_create_patient(
    db: Database, ring: KeyRing, actor: Actor, row: dict[str, str], region: str
) -> tuple[uuid.UUID, bool]:
    phone, email, language = read_contacts(row, region)
    async with db.transaction() as session:
        found = []
        if phone:
            found = list(
                await inbox_queries.patients_by_phone_index(
                    session, ring.blind_index("phone", phone)
                )
            )
        if not found and email:
            found = list(
                await inbox_queries.patients_by_email_index(
                    session, ring.blind_index("email", email)
                )
            )
        if found:
            return found[0].id, False
        # A record number the clinic's system gave them (FHIR Patient.identifier) finds a
        # patient known by it whose phone or email changed; a new patient keeps it.
        identifier = read_identifier(row["identifier"]) if row.get("identifier") else None
        if identifier is not None:
            system, value = identifier
            owner = await search_queries.external_id_owner(
                session, system, external_id_term(ring, value)
            )
            if owner is not None:
                return owner, False
        patient = build_patient(
            ring,
            NewPatient(
                name=row.get("name") or None,
                phone=phone,
                email=email,
                language=language,
                time_zone=row.get("time_zone") or "UTC",
                channel_order=["sms", "email", "voice"],
                verified=True,
                birth_date=row.get("birth_date") or None,
            ),
            region,
        )
        session.add(patient)
        await session.flush()
        await index_name_in(session, ring, patient.id, row.get("name") or None)
        if identifier is not None:
            session.add(external_id_row(ring, patient.id, *identifier))
            await session.flush()
        from hub.audit import record

        await record(session, actor, "patient.create", "patient", patient.id, {"source": "cohort"})
        return patient.id, True


ANALYZE_AFTER = 5_000
"""Enrollments in one launch after which the planner's statistics are refreshed at once."""


async def launch(
    db: Database,
    ring: KeyRing,
    actor: Actor,
    journey_key: str,
    lines: Iterable[str],
    *,
    region: str,
    on_progress: Callable[[int], None] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    now: datetime | None = None,
    on_committed: Callable[[ChunkWork], Awaitable[None]] | None = None,
    mapping: ColumnMapping | None = None,
) -> LaunchReport:
    """Enroll the cohort read from ``lines`` (an open text file, opened with ``newline=""``)
    through ``mapping`` (None: the one ``suggest`` makes of its header).

    Holds one chunk of rows at a time; each chunk is committed before the next is read, and
    ``on_progress`` hears how many rows it held. ``now`` is the enrollment time of the whole
    launch, so a patient listed twice in one file is enrolled once.
    """
    journey = await load_journey(db, journey_key)
    now = now or utcnow()
    report = LaunchReport()
    reading = Reading(region, mapping, await clinic_zone(db))
    ahead = _ParseAhead(read_chunks(lines, chunk_rows, reading), ring, reading)
    try:
        while (chunk := await ahead.next()) is not None:
            result = await do_enroll_chunk(
                db,
                ring,
                actor,
                journey,
                chunk,
                now=now,
                while_writing=ahead.start,
                on_committed=on_committed,
            )
            report.rows += result.rows
            report.enrolled += result.enrolled
            report.already += result.already
            report.patients_created += result.patients_created
            report.error_count += len(result.errors)
            room = MAX_ROW_ERRORS_KEPT - len(report.errors)
            report.errors += [f"line {line}: {what}" for line, what in result.errors[:room]]
            report.failed.update(result.errors)
            if on_progress:
                on_progress(result.rows)
    finally:
        ahead.cancel()
    if reading.mapping is not None:
        report.delimiter = reading.mapping.delimiter
    if report.enrolled >= ANALYZE_AFTER and db.dialect == "postgresql":
        async with db.transaction() as session:
            await bulk_queries.analyze_journey_tables(session)
    return report


def read_chunks(
    lines: Iterable[str], chunk_rows: int = DEFAULT_CHUNK_ROWS, reading: Reading | None = None
) -> Iterator[list[tuple[int, dict[str, str]]]]:
    """The cohort's rows (line number, fields), ``chunk_rows`` at a time: what a launch and
    its dry run (``hub.journeys.preview``) read alike. ``reading.mapping`` is set from the
    header when it was None."""
    return _chunks(_rows(lines, reading or Reading("US")), chunk_rows)


async def clinic_zone(db: Database) -> str:
    """The clinic's time zone (its default team's)."""
    async with db.reader() as session:
        return await inbox_queries.clinic_time_zone(session)


class _ParseAhead:
    """Chunks, parsed one ahead: the next chunk is parsed as a task while the database stores
    the current one's enrollments and step runs (its longest wait), instead of after it."""

    def __init__(
        self, chunks: Iterator[list[tuple[int, dict[str, str]]]], ring: KeyRing, reading: Reading
    ) -> None:
        self.chunks, self.ring, self.reading = chunks, ring, reading
        self.task: asyncio.Future[ParsedChunk | None] | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.ensure_future(self._parse())

    async def next(self) -> ParsedChunk | None:
        self.start()
        assert self.task is not None
        task, self.task = self.task, None
        return await task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _parse(self) -> ParsedChunk | None:
        raw = next(self.chunks, None)
        if raw is None:
            return None
        return await parse_chunk(self.ring, self.reading.region, raw, self.reading)


def _chunks(
    rows: Iterator[tuple[int, dict[str, str]]], size: int
) -> Iterator[list[tuple[int, dict[str, str]]]]:
    chunk: list[tuple[int, dict[str, str]]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
