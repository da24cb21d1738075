"""Cohort files: a CSV of patients (and their appointments) to enroll in a journey.

Columns (a header row is required; order does not matter, extra columns are ignored):
``phone`` and/or ``email`` (at least one), ``name``, ``language``, ``time_zone``, and for
appointment-anchored journeys ``appointment_id`` and ``appointment_start`` (ISO 8601 with an
offset, e.g. 2026-11-27T10:00:00-05:00), optionally ``location``, ``provider``, ``status``
(booked or cancelled). Rows are enrolled one by one; a bad row is reported with its line number
and the rest go on.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from hub.audit import Actor
from hub.contact import InvalidContact, normalize_email, normalize_phone
from hub.crypto import KeyRing
from hub.db import Database
from hub.errors import HubError
from hub.inbox import queries as inbox_queries
from hub.inbox.actions.patients import build_patient
from hub.inbox.schemas import NewPatient
from hub.journeys.actions import NewAppointment, do_enroll

MAX_ROW_ERRORS_KEPT = 100
"""Row errors listed in the report (the count covers all of them)."""


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


def _rows(text: str) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        raise CohortInvalid("the file is empty; expected a header row")
    headers = {h.strip().lower() for h in reader.fieldnames if h}
    if not headers & {"phone", "email"}:
        raise CohortInvalid("the header needs a phone or an email column")
    for row in reader:
        yield (
            reader.line_num,
            {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()},
        )


def count_rows(text: str) -> int:
    return sum(1 for _ in _rows(text))


async def match_or_create_patient(
    db: Database, ring: KeyRing, actor: Actor, row: dict[str, str], region: str
) -> tuple[uuid.UUID, bool]:
    phone = normalize_phone(row["phone"], region) if row.get("phone") else None
    email = normalize_email(row["email"]) if row.get("email") else None
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
        patient = build_patient(
            ring,
            NewPatient(
                name=row.get("name") or None,
                phone=phone,
                email=email,
                language=row.get("language") or "en",
                time_zone=row.get("time_zone") or "UTC",
                channel_order=["sms", "email", "voice"],
                verified=True,
            ),
            region,
        )
        session.add(patient)
        await session.flush()
        from hub.audit import record

        await record(session, actor, "patient.create", "patient", patient.id, {"source": "cohort"})
        return patient.id, True


async def launch(
    db: Database,
    ring: KeyRing,
    actor: Actor,
    journey_key: str,
    text: str,
    *,
    region: str,
    on_row: Callable[[], None] | None = None,
) -> LaunchReport:
    report = LaunchReport()
    for line, row in _rows(text):
        report.rows += 1
        try:
            patient_id, created = await match_or_create_patient(db, ring, actor, row, region)
            appointment = None
            if row.get("appointment_id"):
                start = datetime.fromisoformat(row["appointment_start"])
                if start.utcoffset() is None:
                    raise ValueError("appointment_start needs a UTC offset, e.g. -05:00")
                appointment = NewAppointment(
                    row["appointment_id"],
                    start,
                    source="cohort",
                    location=row.get("location") or None,
                    provider=row.get("provider") or None,
                    cancelled=row.get("status", "").lower() == "cancelled",
                )
            result = await do_enroll(db, actor, journey_key, patient_id, appointment=appointment)
            report.patients_created += created
            if result.created:
                report.enrolled += 1
            else:
                report.already += 1
        except (InvalidContact, ValueError, KeyError, HubError) as exc:
            report.error_count += 1
            if len(report.errors) < MAX_ROW_ERRORS_KEPT:
                what = f"missing column {exc}" if isinstance(exc, KeyError) else str(exc)
                report.errors.append(f"line {line}: {what}")
        if on_row:
            on_row()
    return report
