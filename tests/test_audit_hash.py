"""The audit row hash is a stored format: rows written by an earlier release are verified by
the next one, and anchors shipped off the machine name hashes. So the hash is pinned here, and
every field it must cover is shown to change it."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hub.audit import Actor, AuditEvent, compute_hash, record
from hub.db import create_engine, make_sessionmaker
from hub.schema import metadata

FIELDS: dict[str, Any] = {
    "seq": 7,
    "at": datetime(2026, 12, 7, 9, 0, 0, 123456, tzinfo=UTC),
    "actor": "staff:0192f3a0-7c1e-7d2a-9b1c-3f4e5a6b7c8d",
    "action": "patient.read",
    "subject_type": "patient",
    "subject_id": "0192f3a0-0000-7000-8000-000000000001",
    "detail": {"surface": "page", "n": 2},
    "prev_hash": "a" * 64,
}
PINNED = "5186546c8b73a5fd834c01fb49205b03c37c4bdc96926e9e597cad8d9a67e44a"
"""The hash of FIELDS as every release since the first has computed it (docs/security.md:
SHA-256 over the row's fields and the previous hash). A change here breaks every chain."""


def test_the_hash_of_a_known_row_is_what_earlier_releases_wrote() -> None:
    assert compute_hash(**FIELDS) == PINNED
    # The canonical form, spelled out: a JSON array of the fields in order, keys sorted,
    # no spaces, ASCII only, the time with microseconds.
    canonical = json.dumps(
        [
            7,
            "2026-12-07T09:00:00.123456+00:00",
            FIELDS["actor"],
            "patient.read",
            "patient",
            FIELDS["subject_id"],
            {"n": 2, "surface": "page"},
            "a" * 64,
        ],
        separators=(",", ":"),
    )
    assert hashlib.sha256(canonical.encode()).hexdigest() == PINNED


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("seq", 8),
        ("at", FIELDS["at"] + timedelta(microseconds=1)),
        ("actor", "staff:0192f3a0-7c1e-7d2a-9b1c-3f4e5a6b7c8e"),
        ("action", "patient.update"),
        ("subject_type", "conversation"),
        ("subject_id", "0192f3a0-0000-7000-8000-000000000002"),
        ("detail", {"surface": "api", "n": 2}),
        ("prev_hash", "b" * 64),
    ],
)
def test_every_field_is_covered(field: str, other: object) -> None:
    """Editing any one field of a row (who, what, when, which record, its link) is detected."""
    assert compute_hash(**{**FIELDS, field: other}) != PINNED


def test_text_beyond_ascii_is_hashed_as_escapes() -> None:
    """A team or template name in another language is hashed as JSON's \\u escapes, the form
    the first release wrote; hashing the raw characters would fail every such row."""
    row = {
        "seq": 8,
        "at": datetime(2026, 12, 7, 9, 0, 1, tzinfo=UTC),
        "actor": "system:cli:user-edit",
        "action": "team.update",
        "subject_type": "team",
        "subject_id": "\u00c9quipe soins",
        "detail": {"name": "\u00c9quipe soins"},
        "prev_hash": "b" * 64,
    }
    assert compute_hash(**row) == (
        "786de270e9d82ff274c7d60bef770729878af79e9a1430b6f26bbe2a0a3b73cd"
    )


def test_a_row_checks_its_own_fields() -> None:
    event = AuditEvent(**FIELDS)
    assert event.expected_hash() == PINNED
    event.detail = {"surface": "page", "n": 3}
    assert event.expected_hash() != PINNED


async def test_a_database_without_its_audit_head_says_to_migrate() -> None:
    """Tables made without `hub migrate` (no audit_head row): the first audited write says
    what to run instead of failing on a missing row."""
    engine = create_engine("sqlite+aiosqlite://")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        async with make_sessionmaker(engine)() as session:
            with pytest.raises(RuntimeError) as refused:
                await record(session, Actor.system("test"), "patient.read", "patient", "1")
        assert str(refused.value) == "audit_head row missing: run `hub migrate`"
    finally:
        await engine.dispose()
