"""The audit chain's tail cannot be cut silently.

Cutting the newest rows and rewinding ``audit_head`` to the last row kept leaves a shorter chain
that plain ``verify`` accepts. An anchor shipped off the machine catches it; on PostgreSQL the
migration's triggers refuse the cut for every role unless someone deliberately disables them.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import (
    GENESIS_HASH,
    Actor,
    Anchor,
    AuditEvent,
    AuditHead,
    VerifyResult,
    anchor,
    record,
    verify,
)
from hub.db import Database
from hub.errors import HubError
from tests.conftest import ON_POSTGRES, _admin_execute, hub_env, run_sync, sync_url

ALICE = Actor.staff("00000000-0000-7000-8000-00000000000a")


async def _append(db: Database, n: int) -> None:
    for i in range(n):
        async with db.transaction() as session:
            await record(session, ALICE, "patient.read", "patient", f"p{i}", {"i": i})


async def _verify(db: Database, at: Anchor | None = None) -> VerifyResult:
    async with db.reader() as session:
        return await verify(session, at)


async def _anchor(db: Database) -> Anchor:
    async with db.reader() as session:
        return await anchor(session)


async def _past_the_triggers(session: AsyncSession) -> None:
    """What an intruder needs on PostgreSQL: a superuser switching user triggers off."""
    if ON_POSTGRES:
        await session.execute(text("SET LOCAL session_replication_role = replica"))


async def _cut_tail(db: Database, keep: int) -> None:
    """Delete every row after ``keep`` and rewind the head to it, as an intruder would."""
    async with db.transaction() as session:
        await _past_the_triggers(session)
        kept = await session.get(AuditEvent, keep)
        assert kept is not None
        await session.execute(delete(AuditEvent).where(AuditEvent.seq > keep))
        await session.execute(
            update(AuditHead).where(AuditHead.id == 1).values(seq=kept.seq, hash=kept.hash)
        )


async def _rewrite_from(db: Database, seq: int) -> None:
    """Change row ``seq`` and recompute every hash after it and the head: a consistent forgery."""
    async with db.transaction() as session:
        await _past_the_triggers(session)
        rows = (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.seq >= seq - 1).order_by(AuditEvent.seq)
            )
        ).all()
        prev = rows[0].hash if seq > 1 else GENESIS_HASH
        for ev in rows[1:] if seq > 1 else rows:
            if ev.seq == seq:
                ev.action = "patient.update"
            ev.prev_hash = prev
            ev.hash = prev = ev.expected_hash()
        head = await session.get(AuditHead, 1)
        assert head is not None
        head.seq, head.hash = rows[-1].seq, prev


async def test_untouched_chain_reaches_its_anchor_and_later_ones(db: Database) -> None:
    await _append(db, 4)
    early = await _anchor(db)
    assert (early.seq, len(early.hash)) == (4, 64)
    await _append(db, 3)
    late = await _anchor(db)
    assert late.seq == 7
    for at in (early, late, Anchor(0, GENESIS_HASH)):
        result = await _verify(db, at)
        assert result.ok and result.checked == 7, (at, result)


async def test_cut_tail_with_rewound_head_fails_only_against_the_anchor(db: Database) -> None:
    await _append(db, 6)
    at = await _anchor(db)
    await _cut_tail(db, keep=4)

    # The gap this closes: without an anchor the shorter chain is consistent.
    assert (await _verify(db)).ok

    result = await _verify(db, at)
    assert (result.ok, result.bad_seq, result.checked) == (False, 5, 4)
    assert "the anchor records row 6" in (result.reason or "")


async def test_rewritten_chain_is_caught_at_the_anchor(db: Database) -> None:
    await _append(db, 6)
    at = await _anchor(db)
    await _rewrite_from(db, 2)

    assert (await _verify(db)).ok
    result = await _verify(db, at)
    assert (result.ok, result.bad_seq) == (False, 6)
    assert "differs from the anchor" in (result.reason or "")


async def test_an_anchor_at_row_zero_must_be_the_genesis_hash(db: Database) -> None:
    await _append(db, 2)
    result = await _verify(db, Anchor(0, "ab" * 32))
    assert (result.ok, result.bad_seq) == (False, 0)
    assert "genesis" in (result.reason or "")


async def test_anchor_is_refused_for_a_broken_chain(db: Database) -> None:
    await _append(db, 3)
    async with db.transaction() as session:
        await _past_the_triggers(session)
        await session.execute(
            update(AuditEvent).where(AuditEvent.seq == 2).values(action="patient.update")
        )
    with pytest.raises(HubError, match=r"broken at row 2.*no anchor printed"):
        await _anchor(db)


@pytest.mark.parametrize(
    "value", ["", "12", "12:abc", "-1:" + "a" * 64, "x:" + "a" * 64, "3:" + "g" * 64]
)
def test_malformed_anchor_is_refused_in_plain_words(value: str) -> None:
    with pytest.raises(HubError, match="SEQ:HASH as printed by `hub audit anchor`"):
        Anchor.parse(value)


def test_anchor_round_trips_through_its_printed_form() -> None:
    at = Anchor(12, "ab" * 32)
    assert Anchor.parse(f" {at}\n") == at
    assert Anchor.parse(str(at).upper()) == at


# --- PostgreSQL: the database refuses the cut -------------------------------------------------


def _as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


CUTS = {
    "delete": "DELETE FROM audit_event WHERE seq > 2",
    "update": "UPDATE audit_event SET action = 'patient.update' WHERE seq = 3",
    "truncate": "TRUNCATE audit_event",
    "rewind head": "UPDATE audit_head SET seq = 2 WHERE id = 1",
    "delete head": "DELETE FROM audit_head",
}


@pytest.mark.skipif(not ON_POSTGRES, reason="SQLite has no roles; the anchor protects it")
@pytest.mark.parametrize("statement", CUTS.values(), ids=CUTS.keys())
async def test_postgres_refuses_cutting_the_chain_even_as_owner(
    committed_db: Database, statement: str
) -> None:
    await _append(committed_db, 4)
    with pytest.raises(DBAPIError, match=r"append-only|only moves forward"):
        async with committed_db.transaction() as session:
            await session.execute(text(statement))
    result = await _verify(committed_db)
    assert result.ok and result.checked == 4


@pytest.mark.skipif(not ON_POSTGRES, reason="SQLite has no roles; the anchor protects it")
async def test_postgres_hub_role_cannot_switch_the_triggers_off(fresh_db_url: str) -> None:
    """A hub role that does not own the tables can append but has no way past the triggers."""
    role = f"hub_app_{uuid.uuid4().hex[:8]}"
    dbname = urlsplit(fresh_db_url).path.lstrip("/")
    await _admin_execute(f"CREATE ROLE {role} LOGIN")
    owner = Database.connect(fresh_db_url)
    hub = Database.connect(_as_role(fresh_db_url, role))
    try:
        async with owner.transaction() as session:
            await session.execute(
                text(
                    "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE "
                    f"ON ALL TABLES IN SCHEMA public TO {role}"
                )
            )
        await _append(hub, 3)
        at = await _anchor(hub)

        refusals = [(cut, r"append-only|only moves forward") for cut in CUTS.values()] + [
            ("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only", "must be owner"),
            ("SET session_replication_role = replica", "permission denied"),
        ]
        for statement, refusal in refusals:
            with pytest.raises(DBAPIError, match=refusal):
                async with hub.transaction() as session:
                    await session.execute(text(statement))
        assert (await _verify(hub, at)).ok

        # It takes a superuser (or the owner disabling the trigger) to cut the tail, and the
        # anchor shipped earlier still catches that.
        await _cut_tail(owner, keep=2)
        assert (await _verify(hub)).ok
        assert not (await _verify(hub, at)).ok
    finally:
        await hub.dispose()
        await owner.dispose()
        await _admin_execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await _admin_execute(f"DROP ROLE {role}")


# --- the real command ---------------------------------------------------------------------------


def _hub(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", "audit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_cli_anchor_catches_a_truncated_tail(fresh_db_url: str, tmp_path: Path) -> None:
    async def with_db(action: Callable[[Database], Awaitable[None]]) -> None:
        db = Database.connect(fresh_db_url)
        try:
            await action(db)
        finally:
            await db.dispose()

    run_sync(with_db(lambda db: _append(db, 6)))
    env = hub_env(HUB_DATABASE_URL=sync_url(fresh_db_url), HUB_VAR_DIR=str(tmp_path / "var"))

    printed = _hub(env, "anchor")
    assert printed.returncode == 0, printed.stderr
    value = printed.stdout.strip()
    assert value.startswith("6:") and len(value) == 2 + 64

    intact = _hub(env, "verify", "--anchor", value)
    assert intact.returncode == 0, intact.stderr
    assert "audit chain intact: 6 rows verified, reaching anchor row 6" in intact.stdout

    run_sync(with_db(lambda db: _cut_tail(db, keep=4)))

    plain = _hub(env, "verify")
    assert plain.returncode == 0, plain.stderr
    assert "audit chain intact: 4 rows verified" in plain.stdout

    cut = _hub(env, "verify", "--anchor", value)
    assert cut.returncode == 1
    assert cut.stderr.strip().splitlines() == [
        "hub: audit chain broken at row 5: the chain ends at row 4 but the anchor records "
        "row 6: rows were cut from the end and the head rewound (4 rows before it verified)"
    ]

    bad = _hub(env, "verify", "--anchor", "six")
    assert bad.returncode == 2
    assert "SEQ:HASH as printed by `hub audit anchor`" in bad.stderr
    assert "Traceback" not in bad.stderr
