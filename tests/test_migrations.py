"""The migrated schema matches the models, on whichever engine the run uses."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from hub.db import create_engine
from hub.migrations import current_revision, head_revision
from hub.schema import metadata
from tests.conftest import ON_POSTGRES


async def test_models_and_migrations_agree(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), metadata)
            )
        assert diff == [], "models changed without a migration: run alembic revision"
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_sqlite_runs_with_wal_and_foreign_keys(database_url: str) -> None:
    if ON_POSTGRES:
        return
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_foreign_keys_are_enforced(db) -> None:  # type: ignore[no-untyped-def]
    import uuid

    import pytest
    from sqlalchemy.exc import IntegrityError

    from hub.enums import Channel
    from hub.inbox.models import Conversation

    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            session.add(Conversation(patient_id=uuid.uuid4(), channel=Channel.SMS))
