"""The audit chain detects any edit, deletion or truncation, and names the row."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from sqlalchemy import delete, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, AuditEvent, AuditHead, record, verify
from hub.db import Database
from tests.conftest import ON_POSTGRES, hub_env, run_sync, sync_url

ALICE = Actor.staff("00000000-0000-7000-8000-00000000000a")


async def _append(db: Database, n: int) -> None:
    for i in range(n):
        async with db.transaction() as session:
            await record(session, ALICE, "patient.read", "patient", f"p{i}", {"i": i})


async def _past_the_triggers(session: AsyncSession) -> None:
    """Tampering on PostgreSQL takes a superuser switching migration 0014's triggers off."""
    if ON_POSTGRES:
        await session.execute(text("SET LOCAL session_replication_role = replica"))


async def _verify(db: Database):  # type: ignore[no-untyped-def]
    async with db.reader() as session:
        return await verify(session)


async def test_intact_chain_verifies(db: Database) -> None:
    await _append(db, 5)
    result = await _verify(db)
    assert result.ok and result.checked == 5


@pytest.mark.parametrize(
    "tamper",
    [
        {"action": "patient.update"},
        {"actor": "staff:someone-else"},
        {"subject_id": "p999"},
        {"detail": {"i": 99}},
    ],
    ids=["action", "actor", "subject", "detail"],
)
async def test_editing_any_field_is_named(db: Database, tamper: dict[str, object]) -> None:
    await _append(db, 5)
    async with db.transaction() as session:
        await _past_the_triggers(session)
        await session.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(**tamper))
    result = await _verify(db)
    assert not result.ok
    assert result.bad_seq == 3
    assert result.checked == 2


async def test_recomputed_hash_is_caught_by_the_next_row(db: Database) -> None:
    """A forger who fixes up row 3's hash still breaks row 4's link to it."""
    await _append(db, 5)
    async with db.transaction() as session:
        await _past_the_triggers(session)
        ev = await session.get(AuditEvent, 3)
        assert ev is not None
        ev.action = "patient.update"
        ev.hash = ev.expected_hash()
    result = await _verify(db)
    assert (result.ok, result.bad_seq) == (False, 4)


async def test_deleted_row_is_named(db: Database) -> None:
    await _append(db, 5)
    async with db.transaction() as session:
        await _past_the_triggers(session)
        await session.execute(delete(AuditEvent).where(AuditEvent.seq == 2))
    result = await _verify(db)
    assert (result.ok, result.bad_seq) == (False, 2)
    assert "missing" in (result.reason or "")


async def test_truncated_tail_is_detected(db: Database) -> None:
    await _append(db, 5)
    async with db.transaction() as session:
        await _past_the_triggers(session)
        await session.execute(delete(AuditEvent).where(AuditEvent.seq >= 4))
    result = await _verify(db)
    assert (result.ok, result.bad_seq) == (False, 4)


async def test_concurrent_appends_form_one_chain(committed_db: Database) -> None:
    writers, each = 8, 10

    async def writer(w: int) -> None:
        for i in range(each):
            async with committed_db.transaction() as session:
                await record(session, Actor.staff(f"w{w}"), "patient.read", "patient", str(i))

    await asyncio.gather(*(writer(w) for w in range(writers)))
    result = await _verify(committed_db)
    assert result.ok, result
    assert result.checked == writers * each
    async with committed_db.reader() as session:
        head = await session.get(AuditHead, 1)
        assert head is not None and head.seq == writers * each


@pytest.mark.slow
def test_cli_verify_names_the_edited_row(fresh_db_url: str, tmp_path) -> None:
    async def setup() -> None:
        db = Database.connect(fresh_db_url)
        try:
            await _append(db, 6)
        finally:
            await db.dispose()

    run_sync(setup())
    env = hub_env(HUB_DATABASE_URL=sync_url(fresh_db_url), HUB_VAR_DIR=str(tmp_path / "var"))
    ok = subprocess.run(
        [sys.executable, "-m", "hub", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "audit chain intact: 6 rows verified" in ok.stdout

    # Tamper the way an intruder with database access would: plain SQL on the table.
    async def tamper() -> None:
        db = Database.connect(fresh_db_url)
        try:
            async with db.transaction() as session:
                await _past_the_triggers(session)
                await session.execute(
                    text("UPDATE audit_event SET detail = '{\"i\": 7}' WHERE seq = 4")
                )
        finally:
            await db.dispose()

    run_sync(tamper())
    bad = subprocess.run(
        [sys.executable, "-m", "hub", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "audit chain broken at row 4" in bad.stderr
    assert "Traceback" not in bad.stderr
