"""A clinic's inbox after two years, written straight into PostgreSQL the way a restore would:
teams, staff, patients, conversations and messages bulk-loaded with COPY while the secondary
indexes and foreign keys are down, then the indexes built, the keys validated and the tables
analyzed. Shared by the inbox-at-scale and key-rotation benchmarks.

Rows are shaped exactly as the hub writes them: every ciphertext is sealed one by one under a
key ring generated for the dataset (bound to its table, column and row id, so each one
decrypts), phone and email carry their blind indexes, ids are UUIDv7 of the row's own creation
time (as ``new_id()`` makes them), enums are the hub's values. The distribution is skewed like a
real inbox: volume grows over the two years, most conversations are long resolved, the active
ones are recent (a small tail of forgotten ones is not), teams and channels are uneven, and a
few hundred long threads of exactly ``HEAVY_SIZE`` messages sit in the benchmark agent's teams.

A generated database is kept: ``bench_scale_dataset`` holds the parameters, the schema revision
and the key ring, and ``ensure_dataset`` reuses the database when all three still match.
The ring is stored in that table only because the data is synthetic and exists for benchmarks.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import os
import random
import time
import uuid
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import bench_database_url, database_name, fresh_database, user_url

DATASET_TABLE = "bench_scale_dataset"
"""Where a generated database records what it holds (one row)."""
FORMAT = 3
"""Bump when the generator's output changes shape: kept databases are then regenerated."""
HEAVY_SIZE = 200
"""Messages in each long thread (the conversations the inbox benchmark opens)."""
DEFAULT_HEAVY = 500
CHUNK_CONVERSATIONS = 20_000
"""Conversations per COPY chunk; a chunk's messages are written in time order, as they arrive."""
SPAN_DAYS = 730
SLA = timedelta(hours=4)
"""First-response due time after a patient's first message."""
AGENT_EMAIL = "bench.agent@example.org"
"""The agent the benchmarks act as: a member of AGENT_TEAMS only."""
CLINIC_NUMBER = "+12015550100"
CLINIC_MAILBOX = "frontdesk@clinic.example.org"
TEAMS = (
    ("Front desk", 30),
    ("Scheduling", 20),
    ("Nursing", 15),
    ("Billing", 10),
    ("Pharmacy", 9),
    ("Lab results", 7),
    ("Referrals", 5),
    ("Pediatrics", 4),
)
"""Team name and its share of the conversations (percent)."""
AGENT_TEAMS = (1, 2)
"""Scheduling and Nursing: a third of the traffic, a typical agent's view."""
STAFF_PER_TEAM = 8
CHANNELS = (("sms", 60), ("email", 25), ("voice", 8), ("chat", 7))
PRIORITIES = (("low", 10), ("normal", 75), ("high", 12), ("urgent", 3))
ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")
FIRST = ("Avery", "Blake", "Casey", "Devon", "Emery", "Finley", "Harper", "Jordan", "Kai", "Logan",
         "Morgan", "Noel", "Parker", "Quinn", "Riley", "Sawyer", "Taylor", "Rowan")  # fmt: skip
LAST = ("Sample", "Placeholder", "Fictional", "Testperson", "Example", "Mock", "Dummy", "Demo")
TAGS = ("reschedule", "refill", "results", "billing", "referral", "insurance", "forms")
TAG_IDS = {name: uuid.uuid5(uuid.NAMESPACE_URL, f"hub-bench-tag:{name}") for name in TAGS}
"""Each tag's one sealed row (inbox_tag), the same in every worker process."""
INBOUND = (
    "Hi, can I move my appointment on {day} to {hour}?",
    "I need a refill of my {med} prescription, I have {n} days left.",
    "Are my lab results back yet? The test was on {day}.",
    "I got a bill for ${n}0 that I think my insurance should cover.",
    "My {kid} has had a fever since {day}, should we come in?",
    "Can you send me the intake forms again? The link expired.",
    "Running about {n} minutes late, sorry!",
    "Yes, {day} at {hour} works for me.",
    "Thanks, that helps a lot.",
    "Is Dr. {last} in on {day}? I'd rather see them.",
    "Could you fax the referral to the cardiology office? Number is on file.",
    "What time do you open on {day}?",
    "The pharmacy says they never got the prescription for {med}.",
    "C",
    "STOP sending me the survey please, everything was fine.",
)
OUTBOUND = (
    "Hi {first}, we can do {day} at {hour}. Reply C to confirm.",
    "Hi {first}, your refill of {med} was sent to your pharmacy.",
    "Hi {first}, your results are in the patient portal; Dr. {last} will call if anything "
    "needs follow-up.",
    "Thanks {first}, I've passed this to our billing team; expect a call within {n} days.",
    "If the fever is above 102 or your {kid} is not drinking, please come in today.",
    "Here is a new link to the forms; it stays valid for {n} days.",
    "No problem, see you soon.",
    "You're confirmed for {day} at {hour}.",
    "Dr. {last} is in on {day} morning; shall I book you?",
    "We've sent it again and called the pharmacy to confirm.",
)
EMAIL_TAIL = (
    "\n\nBest regards,\n{first}\n\n> On {day} the clinic wrote:\n> Please let us know if you "
    "have any questions about your upcoming visit or the forms we sent.\n> Example Clinic"
)
SUBJECTS = ("Appointment", "Prescription refill", "Question about my bill", "Lab results",
            "Forms", "Referral")  # fmt: skip
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "the 14th", "next week")
HOURS = ("8:30", "9am", "10:15", "noon", "1:45", "3pm", "4:30")
MEDS = ("lisinopril", "metformin", "atorvastatin", "albuterol", "levothyroxine", "sertraline")
KIDS = ("son", "daughter", "little one")

PATIENT_COLUMNS = (
    "id", "name_enc", "phone_enc", "phone_bidx", "email_enc", "email_bidx", "language",
    "time_zone", "channel_order", "verified", "created_at", "updated_at", "unreachable",
)  # fmt: skip
CONVERSATION_COLUMNS = (
    "id", "patient_id", "status", "priority", "team_id", "assignee_id", "channel",
    "snoozed_until", "created_at", "last_activity_at", "first_response_due_at",
    "first_responded_at", "resolved_at", "channel_address", "assigned_at",
    "last_inbound_at", "after_hours_replied_at",
)  # fmt: skip
CONVERSATION_TAG_COLUMNS = ("conversation_id", "tag_id")
MESSAGE_COLUMNS = (
    "id", "conversation_id", "direction", "channel", "body_enc", "author_id", "provider",
    "provider_message_id", "status", "error_code", "error_reason", "created_at", "sent_at",
    "delivered_at", "updated_at", "purpose", "send_attempts", "next_attempt_at",
    "delivery_notes", "subject_enc", "html_enc", "provider_message_id_enc",
)  # fmt: skip
LOADED_TABLES = ("inbox_patient", "inbox_conversation", "inbox_message", "inbox_conversation_tag")


@dataclass(frozen=True)
class ScaleSpec:
    conversations: int
    messages: int
    heavy: int = DEFAULT_HEAVY
    seed: int = 20261122
    format: int = FORMAT

    def __post_init__(self) -> None:
        if self.conversations < 100:
            raise ValueError("at least 100 conversations")
        if self.heavy * 2 > self.conversations:
            raise ValueError("heavy threads must be under half of the conversations")
        ordinary = self.conversations - self.heavy
        if self.messages < self.heavy * HEAVY_SIZE + ordinary:
            raise ValueError("too few messages: every conversation has at least one")

    @property
    def patients(self) -> int:
        return max(10, self.conversations * 2 // 5)


@dataclass
class Dataset:
    """What a benchmark needs to know about a generated database."""

    url: str
    spec: ScaleSpec
    ring_spec: str
    agent_email: str
    heavy_ids: list[str]
    team_ids: list[str]
    generated: bool
    """False when an earlier run's database was reused."""
    timings: dict[str, float] = field(default_factory=dict)
    now: str = ""
    """When the data was generated: 'two years' and 'recent' are relative to this."""


# -- ids and times ---------------------------------------------------------------------------


def uuid7_at(at_s: float, rnd: random.Random) -> uuid.UUID:
    """A UUIDv7 for a row created at ``at_s`` (what new_id() would have made then)."""
    ms = int(at_s * 1000)
    high = (ms << 16) | (0x7 << 12) | rnd.getrandbits(12)
    low = (0b10 << 62) | rnd.getrandbits(62)
    return uuid.UUID(int=(high << 64) | low)


def _weighted(options: Sequence[tuple[str, int]]) -> tuple[list[str], list[int]]:
    return [o for o, _ in options], [w for _, w in options]


def _utc(at_s: float) -> datetime:
    return datetime.fromtimestamp(at_s, UTC)


def _phone(i: int) -> str:
    """Fictional numbers only: +1 NPA 555 01xx (100 per area code, shared beyond that)."""
    area = 201 + (i // 100) % 700
    return f"+1{area}55501{i % 100:02d}"


# -- plan: what every worker process derives its rows from --------------------------------------


@dataclass
class Plan:
    spec: ScaleSpec
    now_s: float
    ring_spec: str
    team_ids: list[uuid.UUID]
    staff_by_team: list[list[uuid.UUID]]
    created: array[float]
    team: array[int]
    patient: array[int]
    count: array[int]
    heavy: set[int]
    patient_ids: list[uuid.UUID]


_PLAN: Plan | None = None
"""Set in the parent before the worker processes fork (they inherit it, nothing is pickled)."""


def make_plan(spec: ScaleSpec, now_s: float, ring_spec: str) -> Plan:
    rnd = random.Random(spec.seed)
    start = now_s - SPAN_DAYS * 86_400
    n = spec.conversations
    # Volume grows linearly over the two years (density ~ t), so more of it is recent.
    created = array(
        "d", sorted(start + SPAN_DAYS * 86_400 * math.sqrt(rnd.random()) for _ in range(n))
    )
    weights = [share for _, share in TEAMS]
    team = array("b", rnd.choices(range(len(TEAMS)), weights=weights, k=n))
    patient = array("l", (rnd.randrange(spec.patients) for _ in range(n)))
    # Long threads: in the agent's teams, started within the last 120 days.
    recent = [i for i in range(n) if created[i] > now_s - 120 * 86_400]
    heavy = set(rnd.sample(recent, min(spec.heavy, len(recent))))
    for i in heavy:
        team[i] = AGENT_TEAMS[i % len(AGENT_TEAMS)]
    count = array("l", [1] * n)
    ordinary = n - len(heavy)
    extra = spec.messages - len(heavy) * HEAVY_SIZE - ordinary
    mean_extra = extra / ordinary
    for i in range(n):
        if i in heavy:
            count[i] = HEAVY_SIZE
        else:
            count[i] = 1 + min(150, int(rnd.expovariate(1 / mean_extra))) if mean_extra > 0 else 1
    total = sum(count)
    others = [i for i in range(n) if i not in heavy]
    while total != spec.messages:
        i = rnd.choice(others)
        if total < spec.messages and count[i] < 150:
            count[i] += 1
            total += 1
        elif total > spec.messages and count[i] > 1:
            count[i] -= 1
            total -= 1
    first_seen = [0.0] * spec.patients
    for i in range(n):
        p = patient[i]
        if first_seen[p] == 0.0:
            first_seen[p] = created[i]
    patient_ids = [
        uuid7_at((t or start + rnd.random() * SPAN_DAYS * 86_400) - 60, rnd) for t in first_seen
    ]
    team_ids = [uuid7_at(start - 86_400, rnd) for _ in TEAMS]
    staff = [[uuid7_at(start - 3_600, rnd) for _ in range(STAFF_PER_TEAM)] for _ in TEAMS]
    # The benchmark agent works its teams like any colleague, so "mine" has conversations.
    agent = uuid7_at(start - 3_600, rnd)
    for t in AGENT_TEAMS:
        staff[t].append(agent)
    return Plan(
        spec, now_s, ring_spec, team_ids, staff, created, team, patient, count, heavy, patient_ids
    )


# -- rows ------------------------------------------------------------------------------------


def _fill(template: str, rnd: random.Random, first: str | None = None) -> str:
    return template.format(
        day=rnd.choice(DAYS),
        hour=rnd.choice(HOURS),
        med=rnd.choice(MEDS),
        kid=rnd.choice(KIDS),
        n=rnd.randint(2, 45),
        first=first or rnd.choice(FIRST),
        last=rnd.choice(LAST),
    )


def patient_rows(plan: Plan, lo: int, hi: int) -> list[tuple[Any, ...]]:
    from hub.crypto import KeyRing, associated_data

    ring = KeyRing.parse(plan.ring_spec)
    rnd = random.Random(plan.spec.seed * 7 + lo)
    rows = []
    for p in range(lo, hi):
        pid = plan.patient_ids[p]
        created = datetime.fromtimestamp(uuid_time(pid), UTC)
        name = f"{rnd.choice(FIRST)} {rnd.choice(LAST)}"
        phone = _phone(p)
        email = f"patient{p:07d}@example.org"
        has_email = rnd.random() < 0.8
        rows.append(
            (
                pid,
                ring.encrypt(name.encode(), associated_data("inbox_patient", "name_enc", pid)),
                ring.encrypt(phone.encode(), associated_data("inbox_patient", "phone_enc", pid)),
                ring.blind_index("phone", phone),
                ring.encrypt(email.encode(), associated_data("inbox_patient", "email_enc", pid))
                if has_email
                else None,
                ring.blind_index("email", email) if has_email else None,
                "es" if rnd.random() < 0.1 else "en",
                rnd.choice(ZONES),
                '["sms", "email", "voice"]',
                rnd.random() < 0.95,
                created,
                created,
                "{}",
            )
        )
    return rows


def uuid_time(u: uuid.UUID) -> float:
    return (u.int >> 80) / 1000


def _active_chance(age_days: float) -> float:
    """How likely a conversation last active ``age_days`` ago is still open or pending."""
    if age_days < 2:
        return 0.6
    if age_days < 14:
        return 0.3
    if age_days < 60:
        return 0.05
    return 0.005


def conversation_rows(
    plan: Plan, lo: int, hi: int
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Conversations ``lo``..``hi``, their messages (in time order) and their tag links."""
    from hub.crypto import KeyRing, associated_data

    ring = KeyRing.parse(plan.ring_spec)
    now = plan.now_s
    channels, channel_w = _weighted(CHANNELS)
    priorities, priority_w = _weighted(PRIORITIES)
    convs: list[tuple[Any, ...]] = []
    msgs: list[tuple[Any, ...]] = []
    links: list[tuple[Any, ...]] = []
    for i in range(lo, hi):
        rnd = random.Random(plan.spec.seed * 1_000_003 + i)
        created = plan.created[i]
        count = plan.count[i]
        team = plan.team[i]
        heavy = i in plan.heavy
        channel = "sms" if heavy else rnd.choices(channels, channel_w)[0]
        # A thread lasts minutes to days (long threads: weeks), never past now.
        span = rnd.uniform(20, 60) * 86_400 if heavy else rnd.lognormvariate(8.5, 1.6)
        end = min(created + span, now - rnd.uniform(60, 3_600))
        end = max(end, created)
        age_days = (now - end) / 86_400
        active = rnd.random() < (0.7 if heavy else _active_chance(age_days))
        snoozed = not active and age_days < 14 and rnd.random() < 0.03
        status = (
            ("open" if rnd.random() < 0.7 else "pending")
            if active
            else ("snoozed" if snoozed else "resolved")
        )
        # Awaiting a first answer: only patient messages so far.
        unanswered = active and not heavy and rnd.random() < 0.35
        staff = plan.staff_by_team[team]
        assignee = rnd.choice(staff) if rnd.random() < (0.6 if active else 0.9) else None
        patient_starts = rnd.random() < 0.8
        times = sorted(rnd.uniform(created, end) for _ in range(count - 1))
        times.insert(0, created)
        cid = uuid7_at(created, rnd)
        first_inbound = last_inbound = first_reply = None
        patient_first = rnd.choice(FIRST)
        for n, at in enumerate(times):
            if unanswered:
                inbound = True
            elif n == 0:
                inbound = patient_starts
            else:
                inbound = rnd.random() < 0.5
            mid = uuid7_at(at, rnd)
            aad_body = associated_data("inbox_message", "body_enc", mid)
            if inbound:
                body = _fill(rnd.choice(INBOUND), rnd)
                first_inbound = first_inbound or at
                last_inbound = at
            else:
                body = _fill(rnd.choice(OUTBOUND), rnd, patient_first)
                if first_inbound is not None and first_reply is None:
                    first_reply = at
            subject = None
            if channel == "email":
                body += _fill(EMAIL_TAIL, rnd)
                subject = ("Re: " if n else "") + rnd.choice(SUBJECTS)
            msgs.append(
                _message_row(
                    rnd,
                    ring,
                    mid,
                    cid,
                    channel,
                    inbound,
                    body,
                    subject,
                    at,
                    assignee or rnd.choice(staff),
                    aad_body,
                    associated_data,
                )
            )
        last = times[-1]
        due = first_inbound + SLA.total_seconds() if first_inbound is not None else None
        if rnd.random() < 0.3:
            links.append((cid, TAG_IDS[rnd.choice(TAGS)]))
        convs.append(
            (
                cid,
                plan.patient_ids[plan.patient[i]],
                status,
                "urgent"
                if heavy and rnd.random() < 0.05
                else rnd.choices(priorities, priority_w)[0],
                plan.team_ids[team],
                assignee,
                channel,
                _utc(now + rnd.uniform(3_600, 3 * 86_400)) if snoozed else None,
                _utc(created),
                _utc(last),
                _utc(due) if due is not None else None,
                _utc(first_reply) if first_reply is not None else None,
                _utc(last + rnd.uniform(60, 7_200)) if status == "resolved" else None,
                {"sms": CLINIC_NUMBER, "voice": CLINIC_NUMBER, "email": CLINIC_MAILBOX}.get(
                    channel
                ),
                _utc(first_reply or created) if assignee is not None else None,
                _utc(last_inbound) if last_inbound is not None else None,
                None,
            )
        )
    msgs.sort(key=lambda row: row[11])
    return convs, msgs, links


_PROVIDERS = {"sms": "twilio_sms", "voice": "twilio_voice", "chat": "chat"}


def _message_row(
    rnd: random.Random,
    ring: Any,
    mid: uuid.UUID,
    cid: uuid.UUID,
    channel: str,
    inbound: bool,
    body: str,
    subject: str | None,
    at: float,
    author: uuid.UUID,
    aad_body: bytes,
    associated_data: Callable[[str, str, object], bytes],
) -> tuple[Any, ...]:
    created = _utc(at)
    hexid = mid.hex
    sealed_id = None
    if channel == "email":
        provider = "email" if inbound else "email_smtp"
        provider_id: str | None = f"{hexid}@{'example.org' if inbound else 'clinic.example.org'}"
        if inbound:  # as email_intake stores a patient's Message-ID: its index, the id sealed
            raw_id = f"{hexid}@example.org"
            aad = associated_data("inbox_message", "provider_message_id_enc", mid)
            sealed_id = ring.encrypt(raw_id.encode(), aad)
            provider_id = "mid:" + ring.blind_index("message_id", raw_id).hex()
    else:
        provider = _PROVIDERS[channel]
        provider_id = None if channel == "chat" else ("RE" if channel == "voice" else "SM") + hexid
    subject_enc = (
        None
        if subject is None
        else ring.encrypt(subject.encode(), associated_data("inbox_message", "subject_enc", mid))
    )
    if inbound:
        status, sent, delivered, error = "received", None, None, None
        author_id = None
    else:
        roll = rnd.random()
        status = "delivered" if roll < 0.88 else "sent" if roll < 0.97 else "failed"
        if channel == "chat" and status == "delivered":
            status = "read"
        sent = _utc(at + 1)
        delivered = _utc(at + 4) if status in ("delivered", "read") else None
        error = ("30006", "the carrier could not deliver it") if status == "failed" else None
        author_id = author if rnd.random() < 0.9 else None
    return (
        mid,
        cid,
        "inbound" if inbound else "outbound",
        channel,
        ring.encrypt(body.encode(), aad_body),
        author_id,
        provider,
        provider_id,
        status,
        error[0] if error else None,
        error[1] if error else None,
        created,
        sent,
        delivered,
        delivered or sent or created,
        "care",
        0 if inbound else 1,
        None,
        "[]",
        subject_enc,
        None,
        sealed_id,
    )


# -- loading ---------------------------------------------------------------------------------


def _dsn(url: str) -> str:
    return user_url(url)


async def _copy(url: str, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    import asyncpg

    conn = await asyncpg.connect(_dsn(url))
    try:
        # No triggers during the load: the report triggers (migrations 0025 and 0030) queue a
        # patient on each message, and chunks loaded in parallel share patients, so their
        # upserts deadlocked. The rows are generated consistent; a benchmark that needs the
        # report rollups rebuilds them from everything.
        await conn.execute("SET session_replication_role = replica")
        await conn.copy_records_to_table(table, records=rows, columns=list(columns))
    finally:
        await conn.close()


def _load_chunk(args: tuple[str, str, int, int]) -> tuple[int, int]:
    """In a worker process: build one chunk's rows and COPY them."""
    kind, url, lo, hi = args
    assert _PLAN is not None
    if kind == "patients":
        rows = patient_rows(_PLAN, lo, hi)
        asyncio.run(_copy(url, "inbox_patient", PATIENT_COLUMNS, rows))
        return len(rows), 0
    convs, msgs, links = conversation_rows(_PLAN, lo, hi)

    async def both() -> None:
        await _copy(url, "inbox_conversation", CONVERSATION_COLUMNS, convs)
        await _copy(url, "inbox_message", MESSAGE_COLUMNS, msgs)
        await _copy(url, "inbox_conversation_tag", CONVERSATION_TAG_COLUMNS, links)

    asyncio.run(both())
    return len(convs), len(msgs)


def _chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, total, size):
        yield lo, min(total, lo + size)


async def _schema_objects(conn: Any) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """Constraints (table, name, definition) and plain indexes (name, definition) that touch
    the loaded tables; foreign keys pointing at them from other tables included."""
    constraints = await conn.fetch(
        """
        SELECT c.conrelid::regclass::text AS rel, c.conname, pg_get_constraintdef(c.oid) AS def,
               c.contype
        FROM pg_constraint c
        WHERE c.contype IN ('p', 'u', 'f')
          AND (c.conrelid::regclass::text = ANY($1) OR c.confrelid::regclass::text = ANY($1))
        ORDER BY (c.contype = 'f'), c.conname
        """,
        list(LOADED_TABLES),
    )
    indexes = await conn.fetch(
        """
        SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
        FROM pg_index i
        WHERE i.indrelid::regclass::text = ANY($1)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        ORDER BY 1
        """,
        list(LOADED_TABLES),
    )
    return (
        [(r["rel"], r["conname"], r["def"]) for r in constraints],
        [(r["name"], r["def"]) for r in indexes],
    )


async def _drop_indexes(url: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    import asyncpg

    conn = await asyncpg.connect(_dsn(url))
    try:
        constraints, indexes = await _schema_objects(conn)
        # Foreign keys first (they depend on the primary keys), then the rest.
        for rel, name, _definition in sorted(
            constraints, key=lambda c: not c[2].startswith("FOREIGN")
        ):
            await conn.execute(f'ALTER TABLE {rel} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            await conn.execute(f"DROP INDEX {name}")
        return constraints, indexes
    finally:
        await conn.close()


async def _restore_indexes(
    url: str, constraints: list[tuple[str, str, str]], indexes: list[tuple[str, str]]
) -> dict[str, float]:
    import asyncpg

    timings: dict[str, float] = {}
    conn = await asyncpg.connect(_dsn(url), command_timeout=None)
    try:
        await conn.execute("SET maintenance_work_mem = '512MB'")
        keys = [c for c in constraints if not c[2].startswith("FOREIGN")]
        foreign = [c for c in constraints if c[2].startswith("FOREIGN")]
        for rel, name, definition in keys:
            started = time.perf_counter()
            await conn.execute(f'ALTER TABLE {rel} ADD CONSTRAINT "{name}" {definition}')
            timings[name] = round(time.perf_counter() - started, 1)
        for name, definition in indexes:
            started = time.perf_counter()
            await conn.execute(definition)
            timings[name] = round(time.perf_counter() - started, 1)
        for rel, name, definition in foreign:
            started = time.perf_counter()
            await conn.execute(f'ALTER TABLE {rel} ADD CONSTRAINT "{name}" {definition}')
            timings[name] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        # Autovacuum would long since have done this on a two-year-old database: statistics
        # for the planner and visibility maps for index-only scans.
        await conn.execute("VACUUM ANALYZE " + ", ".join(LOADED_TABLES))
        timings["vacuum_analyze"] = round(time.perf_counter() - started, 1)
    finally:
        await conn.close()
    return timings


async def _seed_people(url: str, plan: Plan) -> None:
    import asyncpg

    from hub.crypto import KeyRing, associated_data
    from hub.inbox.passwords import hash_password

    ring = KeyRing.parse(plan.ring_spec)
    # One hash for everyone: these accounts never sign in (the benchmarks use an API token).
    password_hash = hash_password(os.urandom(16).hex())
    start = _utc(plan.now_s - SPAN_DAYS * 86_400 - 86_400)
    conn = await asyncpg.connect(_dsn(url))
    try:
        async with conn.transaction():
            await conn.executemany(
                "INSERT INTO inbox_team (id, name, time_zone, is_default, business_hours, "
                "holidays, created_at) VALUES ($1, $2, 'America/New_York', $3, '{}', '[]', $4)",
                [(tid, TEAMS[n][0], n == 0, start) for n, tid in enumerate(plan.team_ids)],
            )
            staff = []
            members = []
            agent = plan.staff_by_team[AGENT_TEAMS[0]][-1]
            for t, ids in enumerate(plan.staff_by_team):
                for s, sid in enumerate(ids):
                    if sid == agent:
                        continue
                    email = f"agent{t}.{s}@clinic.example.org"
                    staff.append((sid, email, f"Agent {t}.{s}", password_hash, start))
                    members.append((plan.team_ids[t], sid))
            staff.append((agent, AGENT_EMAIL, "Bench Agent", password_hash, start))
            members += [(plan.team_ids[t], agent) for t in AGENT_TEAMS]
            await conn.executemany(
                "INSERT INTO inbox_staff_user (id, email, display_name, password_hash, role, "
                "active, must_change_password, max_open_conversations, created_at) "
                "VALUES ($1, $2, $3, $4, 'agent', true, false, 20, $5)",
                staff,
            )
            await conn.executemany(
                "INSERT INTO inbox_team_member (team_id, staff_id) VALUES ($1, $2)", members
            )
            # Tag names, sealed once each like the hub's own (hub.inbox.actions.tags).
            await conn.executemany(
                "INSERT INTO inbox_tag (id, bidx, name_enc, created_at) VALUES ($1, $2, $3, $4)",
                [
                    (
                        tag_id,
                        ring.blind_index("tag", name),
                        ring.encrypt_text(name, associated_data("inbox_tag", "name_enc", tag_id)),
                        start,
                    )
                    for name, tag_id in TAG_IDS.items()
                ],
            )
    finally:
        await conn.close()


# -- the kept database -----------------------------------------------------------------------


async def _revision(conn: Any) -> str:
    return str(await conn.fetchval("SELECT version_num FROM alembic_version"))


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    from hub.migrations import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return str(head)


async def stored_dataset(name: str, spec: ScaleSpec) -> Dataset | None:
    """The kept database's description if it holds exactly ``spec`` at the current schema."""
    import asyncpg

    from bench.common import _server_dsn
    from hub.config import parse_database_url

    db_name = database_name(name)
    dsn = _server_dsn(bench_database_url(), db_name)
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        return None
    try:
        exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", DATASET_TABLE)
        if not exists:
            return None
        row = await conn.fetchrow(f"SELECT * FROM {DATASET_TABLE}")
        if row is None or json.loads(row["params"]) != asdict(spec):
            return None
        if row["revision"] != await _revision(conn):
            return None
        info = json.loads(row["info"])
        return Dataset(
            url=parse_database_url(dsn),
            spec=spec,
            ring_spec=row["ring"],
            agent_email=AGENT_EMAIL,
            heavy_ids=info["heavy_ids"],
            team_ids=info["team_ids"],
            generated=False,
            timings=info["timings"],
            now=info["now"],
        )
    finally:
        await conn.close()


async def _stored_revision(url: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(_dsn(url))
    try:
        return await _revision(conn)
    finally:
        await conn.close()


async def _upgrade_in_place(url: str, ring_spec: str) -> None:
    import asyncpg

    from hub.crypto import KeyRing
    from hub.migrations import upgrade_url

    # With the data's own ring: a migration may read sealed values (0020 indexes the names).
    await upgrade_url(url, ring=KeyRing.parse(ring_spec))
    conn = await asyncpg.connect(_dsn(url), command_timeout=None)
    try:
        await conn.execute("ANALYZE " + ", ".join(LOADED_TABLES))
        await conn.execute(f"UPDATE {DATASET_TABLE} SET revision = $1", await _revision(conn))
    finally:
        await conn.close()


async def save_ring(url: str, ring_spec: str) -> None:
    """Record the ring the data is now under (after a key rotation)."""
    import asyncpg

    conn = await asyncpg.connect(_dsn(url))
    try:
        await conn.execute(f"UPDATE {DATASET_TABLE} SET ring = $1", ring_spec)
    finally:
        await conn.close()


async def _mark(url: str, dataset: Dataset) -> None:
    import asyncpg

    conn = await asyncpg.connect(_dsn(url))
    try:
        await conn.execute(
            f"CREATE TABLE {DATASET_TABLE} (params text NOT NULL, revision text NOT NULL, "
            "ring text NOT NULL, info text NOT NULL)"
        )
        info = {
            "heavy_ids": dataset.heavy_ids,
            "team_ids": dataset.team_ids,
            "timings": dataset.timings,
            "now": dataset.now,
        }
        await conn.execute(
            f"INSERT INTO {DATASET_TABLE} VALUES ($1, $2, $3, $4)",
            json.dumps(asdict(dataset.spec)),
            await _revision(conn),
            dataset.ring_spec,
            json.dumps(info),
        )
    finally:
        await conn.close()


def ensure_dataset(
    name: str,
    spec: ScaleSpec,
    *,
    regenerate: bool = False,
    processes: int = 2,
    say: Callable[[str], None] = print,
) -> Dataset:
    """The benchmark database ``hub_bench_<name>`` holding ``spec``: kept from an earlier run
    when it matches, generated otherwise."""
    if not regenerate:
        found = asyncio.run(stored_dataset(name, spec))
        if found is not None and (revision := asyncio.run(_stored_revision(found.url))) != (
            head := head_revision()
        ):
            # A newer schema (e.g. an index migration): migrate the kept data in place, as a
            # deployment would, rather than load ten million rows again.
            say(f"migrating {database_name(name)} from revision {revision} to {head}")
            asyncio.run(_upgrade_in_place(found.url, found.ring_spec))
        if found is not None:
            say(
                f"reusing {database_name(name)} ({spec.conversations:,} conversations, "
                f"{spec.messages:,} messages, generated {found.now})"
            )
            return found
    return generate(name, spec, processes=processes, say=say)


def generate(
    name: str, spec: ScaleSpec, *, processes: int = 2, say: Callable[[str], None] = print
) -> Dataset:
    global _PLAN
    from hub.crypto import KeyRing

    timings: dict[str, float] = {}
    started = time.perf_counter()
    url = asyncio.run(fresh_database(name))
    ring = KeyRing.generate("scale1")
    now_s = time.time()
    plan = make_plan(spec, now_s, ring.to_spec())
    timings["plan_s"] = round(time.perf_counter() - started, 1)
    asyncio.run(_seed_people(url, plan))
    constraints, indexes = asyncio.run(_drop_indexes(url))
    _PLAN = plan
    clock = time.perf_counter()
    context = multiprocessing.get_context("fork")
    with context.Pool(processes) as pool:
        jobs = [("patients", url, lo, hi) for lo, hi in _chunks(spec.patients, 50_000)]
        for _ in pool.imap_unordered(_load_chunk, jobs):
            pass
        timings["patients_s"] = round(time.perf_counter() - clock, 1)
        say(f"{spec.patients:,} patients in {timings['patients_s']} s")
        clock = time.perf_counter()
        jobs = [
            ("conversations", url, lo, hi)
            for lo, hi in _chunks(spec.conversations, CHUNK_CONVERSATIONS)
        ]
        done_c = done_m = 0
        last_say = time.perf_counter()
        for convs, msgs in pool.imap(_load_chunk, jobs):
            done_c, done_m = done_c + convs, done_m + msgs
            if time.perf_counter() - last_say > 30:
                say(
                    f"{done_c:,} conversations, {done_m:,} messages "
                    f"({time.perf_counter() - clock:.0f} s)"
                )
                last_say = time.perf_counter()
    _PLAN = None
    timings["conversations_messages_s"] = round(time.perf_counter() - clock, 1)
    say(
        f"{spec.conversations:,} conversations, {spec.messages:,} messages loaded in "
        f"{timings['conversations_messages_s']} s; building indexes"
    )
    clock = time.perf_counter()
    timings["indexes"] = asyncio.run(_restore_indexes(url, constraints, indexes))  # type: ignore[assignment]
    timings["indexes_s"] = round(time.perf_counter() - clock, 1)
    timings["total_s"] = round(time.perf_counter() - started, 1)
    dataset = Dataset(
        url=url,
        spec=spec,
        ring_spec=ring.to_spec(),
        agent_email=AGENT_EMAIL,
        heavy_ids=[str(i) for i in sorted(heavy_conversation_ids(plan))],
        team_ids=[str(t) for t in plan.team_ids],
        generated=True,
        timings=timings,
        now=_utc(now_s).isoformat(timespec="seconds"),
    )
    asyncio.run(_mark(url, dataset))
    say(f"generated in {timings['total_s']} s (indexes {timings['indexes_s']} s)")
    return dataset


def heavy_conversation_ids(plan: Plan) -> list[uuid.UUID]:
    """The long threads' ids, drawn again exactly as conversation_rows drew them."""
    return [conversation_rows(plan, i, i + 1)[0][0][0] for i in sorted(plan.heavy)]


async def database_size(url: str) -> dict[str, int]:
    """Bytes on disk: the whole database and each loaded table with its indexes."""
    import asyncpg

    conn = await asyncpg.connect(_dsn(url))
    try:
        sizes = {
            "database": int(await conn.fetchval("SELECT pg_database_size(current_database())"))
        }
        for table in LOADED_TABLES:
            sizes[table] = int(await conn.fetchval("SELECT pg_total_relation_size($1)", table))
        return sizes
    finally:
        await conn.close()
