"""Declarative base, column types, engine factory and session helpers.

No engine exists at import time: the web app, each worker process and each CLI command build
their own with ``Database.connect(url)`` and dispose of it when done.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    LargeBinary,
    MetaData,
    Table,
    bindparam,
    event,
    insert,
    text,
    update,
)
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, DisconnectionError, PendingRollbackError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator
from uuid6 import uuid7

from hub import clock
from hub.crypto import KeyRing, associated_data

SQLITE_BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite writer waits for the write lock before failing with 'database is locked'."""
DEFAULT_POOL_SIZE = 10
"""Connections per process to PostgreSQL (plus DEFAULT_MAX_OVERFLOW under bursts)."""
DEFAULT_MAX_OVERFLOW = 10
"""Extra PostgreSQL connections a process may open beyond DEFAULT_POOL_SIZE during bursts."""

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> uuid.UUID:
    """Time-ordered UUIDv7: known before insert (ciphertexts bind to it), index-friendly."""
    return uuid.UUID(bytes=uuid7().bytes)


def utcnow() -> datetime:
    return clock.utcnow()


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware timestamps on both engines (SQLite stores no zone; we store UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a timezone-aware column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        dict[str, str]: JSON(),
        list[str]: JSON(),
    }


def encrypted_columns() -> list[tuple[str, str]]:
    """Every (table, column) holding a ciphertext, from the ``info={"encrypted": ...}`` mark."""
    import hub.schema  # noqa: F401 - make sure every model is registered

    found: list[tuple[str, str]] = []
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if column.info.get("encrypted"):
                found.append((table.name, column.name))
    return found


def _sqlite_on_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy, not the driver, decide when transactions begin (see _sqlite_on_begin).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_on_begin(conn: Any) -> None:
    # IMMEDIATE takes the write lock up front, so two transactions that read then write never
    # deadlock into SQLITE_BUSY_SNAPSHOT; SQLite has one writer anyway, readers are not blocked
    # under WAL.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


UNAVAILABLE_SQLSTATES = ("57P01", "57P02", "57P03", "53300")
"""PostgreSQL shutting down, crashed, starting up, or out of connection slots: answers that
mean "not now" (class 08, connection exceptions, too)."""


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached right now (down, restarting, the
    connection cut), as opposed to a fault in the query or the data: the caller may retry."""
    if isinstance(exc, ConnectionError | TimeoutError | DisconnectionError):
        return True  # asyncpg's own connect errors reach us unwrapped
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        state = getattr(exc.orig, "sqlstate", None) or ""
        if state.startswith("08") or state in UNAVAILABLE_SQLSTATES:
            return True
        # SQLite's writer lock held past the busy timeout (another process writing): the
        # transaction rolled back and the same request succeeds once the writer is done.
        if "database is locked" in str(exc.orig) or "database table is locked" in str(exc.orig):
            return True
        # asyncpg's own state machine, left mid-operation by a connection the server cut
        # (a restart): the connection is unusable, the database will be back.
        return type(exc.orig).__name__ == "InternalClientError" and "in progress" in str(exc.orig)
    # The same cut seen by a session whose connection was invalidated mid-transaction.
    return isinstance(exc, PendingRollbackError) and "invalid transaction" in str(exc)


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """Build an engine for an async URL made by ``hub.config.parse_database_url``."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=echo)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        return engine
    return create_async_engine(
        url,
        echo=echo,
        pool_size=DEFAULT_POOL_SIZE,
        max_overflow=DEFAULT_MAX_OVERFLOW,
        pool_pre_ping=True,
    )


@dataclass
class Database:
    """An engine and its session factory; one per process."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    serialize: asyncio.Lock | None = None
    """Set when every session shares one connection (tests): savepoints must not interleave."""

    @classmethod
    def connect(cls, url: str, *, echo: bool = False) -> Database:
        engine = create_engine(url, echo=echo)
        return cls(engine=engine, sessions=make_sessionmaker(engine))

    @classmethod
    def bound_to(cls, connection: AsyncConnection) -> Database:
        """Sessions that join ``connection``'s open transaction (tests roll it back after)."""
        sessions = async_sessionmaker(
            bind=connection,
            expire_on_commit=False,
            join_transaction_mode="create_savepoint",
        )
        return cls(engine=connection.engine, sessions=sessions, serialize=asyncio.Lock())

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def ping(self) -> None:
        async with self.reader() as session:
            await session.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        if self.serialize is None:
            yield
        else:
            async with self.serialize:
                yield

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        async with self._exclusive(), self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only (its implicit transaction is rolled back at the end)."""
        async with self._exclusive(), self.sessions() as session:
            yield session


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def encrypted_column(*, nullable: bool = True) -> Any:
    """A ciphertext column, found by key rotation through its ``encrypted`` mark."""
    return mapped_column(LargeBinary, nullable=nullable, info={"encrypted": True})


class Sealed:
    """Mixin for models with encrypted ``<field>_enc`` columns bound to table, column and id."""

    __tablename__: str
    id: Any

    def _aad(self, column: str) -> bytes:
        if self.id is None:
            self.id = new_id()
        return associated_data(self.__tablename__, column, self.id)

    def seal_bytes(self, ring: KeyRing, field: str, value: bytes | None) -> None:
        column = f"{field}_enc"
        setattr(self, column, None if value is None else ring.encrypt(value, self._aad(column)))

    def unseal_bytes(self, ring: KeyRing, field: str) -> bytes | None:
        column = f"{field}_enc"
        blob = getattr(self, column)
        return None if blob is None else ring.decrypt(blob, self._aad(column))

    def seal(self, ring: KeyRing, field: str, value: str | None) -> None:
        self.seal_bytes(ring, field, None if value is None else value.encode("utf-8"))

    def unseal(self, ring: KeyRing, field: str) -> str | None:
        raw = self.unseal_bytes(ring, field)
        return None if raw is None else raw.decode("utf-8")


# -- bulk writes (a journey batch, a batch of send outcomes) ---------------------------------


async def insert_rows(session: AsyncSession, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """One INSERT statement executed for all ``rows`` (executemany), each naming the same
    columns (the others take their defaults). Core, not the ORM's bulk insert: nothing is
    tracked, and it costs less."""
    if rows:
        await session.execute(insert(cast(Table, model.__table__)), rows)


async def update_by_id(
    session: AsyncSession, model: type[Base], changes: list[dict[str, Any]]
) -> None:
    """One UPDATE statement for many rows of ``model`` (executemany): each change holds
    ``row_id`` (the primary key) and the columns to set, the same columns in every change.
    Objects of these rows in the session are not refreshed: callers set them with
    ``set_committed_value`` or do not read them again."""
    if changes:
        table = cast(Table, model.__table__)
        await session.execute(update(table).where(table.c.id == bindparam("row_id")), changes)
