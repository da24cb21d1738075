"""Alembic migrations, run by ``hub migrate`` (and by ``hub demo`` and the test fixtures)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.db import create_engine

if TYPE_CHECKING:
    from hub.crypto import KeyRing

HERE = Path(__file__).resolve().parent


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _upgrade(connection: Connection, revision: str, ring: KeyRing | None) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    # Data migrations that seal existing rows read it here (0015); without it they work only
    # on a database that holds nothing to seal.
    cfg.attributes["ring"] = ring
    command.upgrade(cfg, revision)


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(
    engine: AsyncEngine, revision: str = "head", *, ring: KeyRing | None = None
) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, revision, ring)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def upgrade_url(url: str, revision: str = "head", *, ring: KeyRing | None = None) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine, revision, ring=ring)
    finally:
        await engine.dispose()
