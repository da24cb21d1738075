"""Migration 0032 fills the inbox day rollup from the facts a clinic already has: the same
rows the tick keeps, and its downgrade removes them cleanly."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Connection

from hub.db import Database, create_engine
from hub.migrations import alembic_config, upgrade_url
from tests.conftest import ON_POSTGRES, _admin_execute, _pg_url_for
from tests.report_history import march_history, seed
from tests.test_reports_facts import clinic, refresh_all
from tests.test_reports_rollup import snapshot


@pytest.fixture
async def at_0032(tmp_path: Path) -> AsyncIterator[str]:
    name = f"hub_test_0032_{uuid.uuid4().hex[:8]}"
    if ON_POSTGRES:
        await _admin_execute(f'CREATE DATABASE "{name}"')
        url = _pg_url_for(name)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}"
    await upgrade_url(url, "0032")
    try:
        yield url
    finally:
        if ON_POSTGRES:
            await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _downgrade(conn: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.downgrade(cfg, "0031")


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_the_upgrade_fills_what_the_tick_keeps(at_0032: str) -> None:
    db = Database.connect(at_0032)
    try:
        c = await clinic(db)
        await seed(
            db,
            march_history(c["desk"], c["mail"], c["ana"].staff_id, c["ben"].staff_id),
            c["ana"].staff_id,
        )
        await refresh_all(db)
        kept = await snapshot(db)
    finally:
        await db.dispose()
    assert len(kept) > 100
    engine = create_engine(at_0032)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade)
    finally:
        await engine.dispose()
    assert "report_inbox_day" not in await _tables(at_0032)
    await upgrade_url(at_0032, "0032")
    db = Database.connect(at_0032)
    try:
        assert await snapshot(db) == kept
    finally:
        await db.dispose()
