"""Migration 0034 counts the surveys a clinic already has: on PostgreSQL it fills the csat
rollup, set-based, with the rows the tick would have counted (in the clinic's zone); on SQLite
the report reads the surveys until the first tick counts them. Its downgrade removes it all."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Connection, select, update

from hub.audit import Actor
from hub.crypto import KeyRing
from hub.db import Database, create_engine
from hub.inbox.access import StaffContext
from hub.inbox.models import Patient, Team
from hub.journeys.csat import CSAT_KEY, CsatChoice, do_set_team_csat
from hub.journeys.queries import journey_by_key
from hub.migrations import alembic_config, upgrade_url
from hub.reports import csat_queries as q
from hub.reports.csat import build
from hub.reports.csat_rollup_actions import do_rebuild_csat_rollup
from tests.conftest import ON_POSTGRES, _admin_execute, _pg_url_for, make_staff
from tests.test_csat_report import END, HISTORY, START, _write, close, filters, recount
from tests.test_csat_rollup import ZONE, refresh, rollup_rows


@pytest.fixture
async def at_0033(tmp_path: Path, ring: KeyRing) -> AsyncIterator[str]:
    name = f"hub_test_0033_{uuid.uuid4().hex[:8]}"
    if ON_POSTGRES:
        await _admin_execute(f'CREATE DATABASE "{name}"')
        url = _pg_url_for(name)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}"
    await upgrade_url(url, "0033")
    try:
        yield url
    finally:
        if ON_POSTGRES:
            await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _seed(db: Database, ring: KeyRing) -> StaffContext:
    """The surveys of ``test_csat_report``, in a clinic on New York time."""
    staff: dict[str, StaffContext] = {
        name: await make_staff(db, f"{name}@demo-clinic.example.org", role="agent", teams=(team,))
        for name, team in (("ann", "North"), ("ben", "South"), ("cat", "South"))
    }
    staff["admin"] = await make_staff(db, "ada@demo-clinic.example.org", role="admin")
    async with db.transaction() as session:
        await session.execute(update(Team).values(time_zone=ZONE))
        teams = {t.name: t.id for t in (await session.scalars(select(Team))).all()}
    await do_set_team_csat(db, Actor.system("test"), teams["North"], CsatChoice(True, 60))
    async with db.transaction() as session:
        journey = await journey_by_key(session, CSAT_KEY)
        assert journey is not None
        patient = Patient(verified=True, channel_order=["sms", "email"])
        session.add(patient)
        await session.flush()
        for spec in HISTORY:
            await _write(session, ring, journey.id, patient.id, spec, teams, staff)
    return staff["admin"]


def _downgrade(conn: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.downgrade(cfg, "0033")


async def test_the_upgrade_counts_what_the_tick_would(at_0033: str, ring: KeyRing) -> None:
    db = Database.connect(at_0033)
    try:
        admin = await _seed(db, ring)
    finally:
        await db.dispose()
    await upgrade_url(at_0033, "0034")
    db = Database.connect(at_0033)
    try:
        async with db.reader() as session:
            counted = await q.rollup_zone(session)
        assert counted == (ZONE if ON_POSTGRES else None)
        report = await build(db, filters(), admin, ring=ring)
        close(report.figures, recount(HISTORY, START, END))
        await refresh(db)  # SQLite: the first tick counts; PostgreSQL: nothing queued
        filled = await rollup_rows(db)
        assert len(filled["report_csat_fact"]) == len(HISTORY)
        await do_rebuild_csat_rollup(db)
        assert await rollup_rows(db) == filled
    finally:
        await db.dispose()
    engine = create_engine(at_0033)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade)
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    assert not {t for t in tables if t.startswith("report_csat")}
