"""Two years of journeys on top of a kept inbox dataset (bench/scale_data.py): the shipped
journeys installed by the hub's own action, enrollments with their appointments, step runs
planned by the hub's planner and then played forward to the dataset's "now" (sent, delivered
or failed with the providers' codes, skipped, cancelled), the reminder and survey messages in
the patients' conversations (the latest one on the channel at the time, or a resolved one the
journey opens, as dispatch does), the patients' replies (C, 2, STOP, scores, words) with what
they change (confirmations, cancellations, opt-outs, survey answers, the hub's answer back),
and each past appointment's outcome. Loaded with COPY.

The shape is a clinic's, not a uniform spray: volume grows over the two years like the inbox's,
most reminders are delivered, a minority confirm, few cancel, fewer opt out, and no-shows are
rarer among patients who confirmed than among those the hub never reached. Nothing here is
read back to check a figure: the benchmark measures speed, the recount tests measure truth.
"""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.common import user_url
from bench.scale_csat import csat_on, csat_rows
from bench.scale_data import SPAN_DAYS, uuid7_at
from bench.scale_journeys_play import OPENED_COLUMNS, Conversations, Enrolling, Rows, World

DATASET_TABLE = "bench_journeys_dataset"
"""Where a database with journeys records what they are (one row)."""
FORMAT = 2
"""Bump when the generator's output changes shape: kept databases are then regenerated."""
CHUNK_ENROLLMENTS = 20_000
JOURNEY_SHARES = (
    ("appointment_reminders", 60),
    ("post_visit_follow_up", 25),
    ("screening_recall", 15),
)
UNENROLLED_APPOINTMENTS = 0.12
"""Appointments no journey reminded (added per reminder enrollment): the comparison group."""
FUTURE_DAYS = 21
"""Appointments booked up to this far ahead: their reminders are still planned."""
SOURCES = ("cohort", "cohort", "fhir", "api")
TOUCHED_TABLES = (
    "journey_appointment",
    "journey_enrollment",
    "journey_step_run",
    "journey_survey_answer",
    "consent_record",
    "inbox_conversation",
    "inbox_message",
    "inbox_delivery_attempt",
    "csat_survey",
)
EMPTY_BEFORE = (
    "journey_appointment",
    "journey_enrollment",
    "journey_step_run",
    "journey_survey_answer",
    "inbox_delivery_attempt",
    "csat_survey",
)
"""Empty in the inbox dataset: loaded with their secondary indexes down, like scale_data."""


@dataclass(frozen=True)
class JourneySpec:
    runs: int = 1_000_000
    """Step runs ("journey runs") to write, across every journey."""
    seed: int = 20261207
    format: int = FORMAT


@dataclass
class Loaded:
    """What a generation wrote: row counts per table and seconds per phase."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    timings: dict[str, float] = field(default_factory=dict)


def _utc(at_s: float) -> datetime:
    return datetime.fromtimestamp(at_s, UTC)


# -- what the database already holds ---------------------------------------------------------


async def _read_existing(conn: Any) -> tuple[list[tuple[uuid.UUID, str, bool]], Conversations]:
    patients = [
        (r["id"], r["time_zone"], r["email_bidx"] is not None)
        for r in await conn.fetch("SELECT id, time_zone, email_bidx FROM inbox_patient ORDER BY id")
    ]
    conversations = Conversations()
    rows = await conn.fetch(
        "SELECT patient_id, channel::text AS channel, id, created_at FROM inbox_conversation "
        "WHERE channel IN ('sms', 'email')"
    )
    for r in rows:
        conversations.by_key[(r["patient_id"], r["channel"])].append(
            (r["created_at"].timestamp(), r["id"])
        )
    for found in conversations.by_key.values():
        found.sort()
    return patients, conversations


# -- appointments and their outcomes ---------------------------------------------------------


@dataclass
class Outcomes:
    """The appointment statuses and columns this schema has (the outcome states arrived with
    migration 0026): each outcome maps to the first label the enum knows."""

    labels: set[str]
    columns: set[str]

    def status(self, outcome: str) -> str:
        wanted = {
            "attended": ("fulfilled", "attended", "checked_in", "arrived"),
            "noshow": ("noshow", "no_show"),
            "cancelled": ("cancelled",),
            "confirmed": ("confirmed",),
            "booked": ("booked",),
        }[outcome]
        found = next((w for w in wanted if w in self.labels), None)
        return found or ("confirmed" if outcome == "attended" else "booked")


def _appointment(
    world: World,
    rows: Rows,
    rnd: random.Random,
    outcomes: Outcomes,
    patient: uuid.UUID,
    start_s: float,
    created_s: float,
    *,
    confirmed: bool,
    cancelled_s: float | None,
    reminded: bool,
) -> uuid.UUID:
    aid = uuid7_at(created_s, rnd)
    world.appointments += 1
    past = start_s < world.now_s
    if cancelled_s is None and rnd.random() < 0.05:  # cancelled by the clinic's own feed
        cancelled_s = rnd.uniform(created_s, start_s)
    if cancelled_s is not None and cancelled_s <= world.now_s:
        outcome, changed_s = "cancelled", cancelled_s
    elif not past:
        outcome, changed_s = ("confirmed" if confirmed else "booked"), created_s
    else:
        noshow = 0.04 if confirmed else 0.12 if reminded else 0.2
        outcome = "noshow" if rnd.random() < noshow else "attended"
        changed_s = start_s + rnd.uniform(600, 4 * 3600)
    row = rows.add(
        "journey_appointment",
        id=aid,
        patient_id=patient,
        source=rnd.choice(SOURCES),
        external_id=f"bench-{aid.hex}",
        start_at=_utc(start_s),
        status=outcomes.status(outcome),
        location_enc=world.seal(
            "journey_appointment", "location_enc", aid, "Example Clinic, 1 Main Street"
        ),
        updated_at=_utc(min(changed_s, world.now_s)),
    )
    for column in outcomes.columns:
        if "cancel" in column and outcome == "cancelled":
            row[column] = _utc(changed_s)
        elif column in ("outcome_at", "status_at", "outcome_recorded_at") and past:
            row[column] = _utc(min(changed_s, world.now_s))
    return aid


# -- a chunk ---------------------------------------------------------------------------------


def _anchor(rnd: random.Random, now_s: float) -> float:
    """Over the two years with volume growing (as the inbox's), a few weeks into the future."""
    if rnd.random() < 0.03:
        return now_s + rnd.uniform(3600, FUTURE_DAYS * 86_400)
    return now_s - SPAN_DAYS * 86_400 * (1 - math.sqrt(rnd.random()))


def chunk_rows(world: World, outcomes: Outcomes, index: int, rnd: random.Random) -> Rows:
    rows = Rows()
    keys = [k for k, _ in JOURNEY_SHARES]
    weights = [w for _, w in JOURNEY_SHARES]
    for _ in range(CHUNK_ENROLLMENTS):
        if world.runs >= world.spec.runs:
            break
        key = rnd.choices(keys, weights)[0]
        patient = world.patients[rnd.randrange(len(world.patients))]
        anchor_s = _anchor(rnd, world.now_s)
        if key == "appointment_reminders":
            # Booked days to weeks ahead; one in ten too late for the email three days before.
            lead = rnd.uniform(26, 47) * 3600 if rnd.random() < 0.1 else rnd.uniform(4, 30) * 86_400
            enrolled_s = anchor_s - lead
        elif key == "post_visit_follow_up":
            enrolled_s = anchor_s - rnd.uniform(60, 3600)
        else:
            enrolled_s = anchor_s
        enrolling = Enrolling(world, rows, rnd, key, patient, anchor_s, enrolled_s)
        enrolling.play()
        world.runs += len(enrolling.runs)
        appointment_id = None
        if key == "appointment_reminders":
            appointment_id = _appointment(
                world,
                rows,
                rnd,
                outcomes,
                patient[0],
                anchor_s,
                enrolled_s,
                confirmed=enrolling.confirmed_s is not None,
                cancelled_s=enrolling.cancelled_s,
                reminded=enrolling.reminded,
            )
            if rnd.random() < UNENROLLED_APPOINTMENTS:
                other = world.patients[rnd.randrange(len(world.patients))]
                start_s = _anchor(rnd, world.now_s)
                _appointment(
                    world,
                    rows,
                    rnd,
                    outcomes,
                    other[0],
                    start_s,
                    start_s - rnd.uniform(1, 30) * 86_400,
                    confirmed=False,
                    cancelled_s=None,
                    reminded=False,
                )
        enrolling.enrollment_row(appointment_id)
    rows.tables["inbox_conversation"] = [
        dict(zip(OPENED_COLUMNS, row, strict=True)) for row in world.conversations.opened
    ]
    world.conversations.opened = []
    return rows


# -- loading ---------------------------------------------------------------------------------


async def _columns(conn: Any, table: str) -> list[str]:
    found = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table
    )
    return [r["column_name"] for r in found]


async def _copy(conn: Any, table: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
    present = sorted({k for row in rows for k in row} & set(columns))
    records = [tuple(row.get(c) for c in present) for row in rows]
    await conn.copy_records_to_table(table, records=records, columns=present)


async def _copy_chunk(conn: Any, rows: Rows, columns: dict[str, list[str]], loaded: Loaded) -> None:
    """Parents before children (the foreign keys are back on at the end, but the inbox's
    stay on throughout)."""
    order = (
        "inbox_conversation",
        "inbox_message",
        "inbox_delivery_attempt",
        "journey_appointment",
        "journey_enrollment",
        "journey_step_run",
        "journey_survey_answer",
        "consent_record",
        "csat_survey",
    )
    async with conn.transaction():
        for table in order:
            if rows.tables.get(table):
                await _copy(conn, table, columns[table], rows.tables[table])
                loaded.counts[table] += len(rows.tables[table])


async def _install_journeys(url: str) -> dict[str, Any]:
    from importlib import resources

    from hub.audit import Actor
    from hub.db import Database
    from hub.journeys.actions import do_install_journey
    from hub.journeys.definitions import parse_journey

    db = Database.connect(url)
    found = {}
    try:
        for key, _share in JOURNEY_SHARES:
            source = f"{key}.yaml"
            text = resources.files("hub.journeys").joinpath("examples", source).read_text()
            journey_id = await do_install_journey(db, Actor.system("bench:reports"), text, source)
            found[key] = (journey_id, parse_journey(text, source))
    finally:
        await db.dispose()
    return found


async def load_journeys(
    url: str, ring_spec: str, now_s: float, spec: JourneySpec, say: Callable[[str], None] = print
) -> Loaded:
    """Write ``spec``'s journeys into the inbox dataset at ``url`` (its patients and
    conversations), secondary indexes of the empty journey tables down while loading."""
    import asyncpg

    from hub.crypto import KeyRing
    from hub.journeys.models import AppointmentStatus

    loaded = Loaded()
    started = time.perf_counter()
    journeys = await _install_journeys(url)
    resolved = await csat_on(url)
    conn = await asyncpg.connect(user_url(url), command_timeout=None)
    try:
        csat_id = await conn.fetchval("SELECT id FROM journey_journey WHERE key = 'csat'")
        journeys["csat"] = (csat_id, None)
        patients, conversations = await _read_existing(conn)
        loaded.timings["read_s"] = round(time.perf_counter() - started, 1)
        labels = {s.value for s in AppointmentStatus}
        outcomes = Outcomes(labels, set(await _columns(conn, "journey_appointment")))
        world = World(spec, now_s, KeyRing.parse(ring_spec), journeys, patients, conversations)
        columns = {t: await _columns(conn, t) for t in TOUCHED_TABLES}
        # Only the empty tables' foreign keys and plain indexes go down: their primary and
        # unique keys stay (other tables' keys may point at them).
        constraints = [
            (r["rel"], r["conname"], r["def"])
            for r in await conn.fetch(
                "SELECT conrelid::regclass::text AS rel, conname, "
                "pg_get_constraintdef(oid) AS def FROM pg_constraint "
                "WHERE contype = 'f' AND conrelid::regclass::text = ANY($1)",
                list(EMPTY_BEFORE),
            )
        ]
        indexes = [
            (r["name"], r["def"])
            for r in await conn.fetch(
                "SELECT i.indexrelid::regclass::text AS name, "
                "pg_get_indexdef(i.indexrelid) AS def FROM pg_index i "
                "WHERE i.indrelid::regclass::text = ANY($1) AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
                list(EMPTY_BEFORE),
            )
        ]
        for rel, name, _definition in constraints:
            await conn.execute(f'ALTER TABLE {rel} DROP CONSTRAINT "{name}"')
        for name, _definition in indexes:
            await conn.execute(f"DROP INDEX {name}")
        # The rollups' change triggers stay quiet while loading (as in a restore): the
        # benchmark rebuilds the rollups in full afterwards, which queues every row anyway.
        await conn.execute("SET session_replication_role = replica")
        clock = time.perf_counter()
        csat = csat_rows(world, resolved, random.Random(spec.seed))  # counted in spec.runs
        await _copy_chunk(conn, csat, columns, loaded)
        say(f"{loaded.counts['csat_survey']:,} CSAT surveys ({time.perf_counter() - clock:.0f} s)")
        index = 0
        while world.runs < spec.runs:
            rnd = random.Random(spec.seed * 1_000_003 + index)
            rows = chunk_rows(world, outcomes, index, rnd)
            await _copy_chunk(conn, rows, columns, loaded)
            index += 1
            if index % 10 == 0:
                say(f"{world.runs:,} journey runs ({time.perf_counter() - clock:.0f} s)")
        loaded.counts["journey_step_run"] = world.runs
        loaded.timings["rows_s"] = round(time.perf_counter() - clock, 1)
        say(f"{world.runs:,} runs loaded in {loaded.timings['rows_s']} s; building indexes")
        clock = time.perf_counter()
        await conn.execute("SET session_replication_role = DEFAULT")
        await conn.execute("SET maintenance_work_mem = '512MB'")
        for _name, definition in indexes:
            await conn.execute(definition)
        for rel, name, definition in constraints:
            await conn.execute(f'ALTER TABLE {rel} ADD CONSTRAINT "{name}" {definition}')
        await conn.execute("VACUUM ANALYZE " + ", ".join(TOUCHED_TABLES))
        loaded.timings["indexes_s"] = round(time.perf_counter() - clock, 1)
    finally:
        await conn.close()
    loaded.timings["total_s"] = round(time.perf_counter() - started, 1)
    return loaded


# -- the kept database -----------------------------------------------------------------------


async def stored_journeys(
    url: str, spec: JourneySpec, inbox: dict[str, Any]
) -> dict[str, Any] | None:
    """What an earlier run wrote, if it wrote exactly ``spec`` over exactly ``inbox``."""
    import asyncpg

    conn = await asyncpg.connect(user_url(url))
    try:
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", DATASET_TABLE):
            return None
        row = await conn.fetchrow(f"SELECT * FROM {DATASET_TABLE}")
        if row is None or json.loads(row["params"]) != {"journeys": asdict(spec), "inbox": inbox}:
            return None
        info: dict[str, Any] = json.loads(row["info"])
        return info
    finally:
        await conn.close()


async def mark_journeys(
    url: str, spec: JourneySpec, inbox: dict[str, Any], info: dict[str, Any]
) -> None:
    import asyncpg

    conn = await asyncpg.connect(user_url(url))
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {DATASET_TABLE}")
        await conn.execute(
            f"CREATE TABLE {DATASET_TABLE} (params text NOT NULL, info text NOT NULL)"
        )
        params = json.dumps({"journeys": asdict(spec), "inbox": inbox})
        await conn.execute(f"INSERT INTO {DATASET_TABLE} VALUES ($1, $2)", params, json.dumps(info))
    finally:
        await conn.close()
