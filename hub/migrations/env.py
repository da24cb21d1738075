"""Alembic environment: runs on a connection handed over by hub.migrations, or on a URL."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from alembic import context
from sqlalchemy import Connection

from hub.db import UTCDateTime, create_engine
from hub.schema import metadata

config = context.config


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    # Revisions must not import hub: the stored type is a plain timezone-aware DateTime.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_item=_render_item,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # hub.db makes SQLite transactions explicit (BEGIN IMMEDIATE), so its DDL is
        # transactional too: a failed migration leaves nothing half-applied.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_url(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_configure)
    finally:
        await engine.dispose()


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from hub.config import Settings

        url = Settings.from_env().database_url
    asyncio.run(_run_with_url(url))


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `hub migrate`")
run()
