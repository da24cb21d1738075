"""A database that answers but cannot store: disk full, read-only, failing I/O.

Such a database is an outage for every writer, not a bug in the request: the caller's
transaction rolled back whole, so a provider's retry later stores the event once. The web app
answers it like a database that is down (503 with Retry-After), and /healthz names the cause.

Two sources tell /healthz: what can be seen without writing (a read-only PostgreSQL session, a
SQLite file on a read-only filesystem), and the last write this process saw fail, kept until a
write commits again or ``DEFAULT_STORAGE_FAULT_HOLD_S`` passes. A full disk shows only when a
write needs room, so the second source is the only one that sees it.
"""

from __future__ import annotations

import os
import time
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.db import Database

DISK_FULL = "disk full"
READ_ONLY = "read-only"
IO_ERROR = "I/O error"

SQLITE_FAULTS = {13: DISK_FULL, 8: READ_ONLY, 10: IO_ERROR}
"""SQLite primary result codes (SQLITE_FULL, SQLITE_READONLY, SQLITE_IOERR); an extended code
such as SQLITE_IOERR_WRITE carries its primary code in the low byte."""
POSTGRES_FAULTS = {"53100": DISK_FULL, "25006": READ_ONLY, "58030": IO_ERROR}
"""SQLSTATEs disk_full, read_only_sql_transaction (a replica after failover, or
default_transaction_read_only) and io_error."""

DEFAULT_STORAGE_FAULT_HOLD_S = 60.0
"""How long /healthz keeps reporting a write that failed for a storage fault when no write has
committed since: long enough for a monitor polling every 30 s to see it, short enough that a
hub with nothing to write comes back to 200 soon after the disk is freed."""

_WROTE = "hub_storage_wrote"


def storage_fault(exc: BaseException) -> str | None:
    """The storage fault behind ``exc`` ("disk full", "read-only", "I/O error"), or None."""
    orig: object = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return SQLITE_FAULTS.get(code & 0xFF)
    state = getattr(orig, "sqlstate", None)
    return POSTGRES_FAULTS.get(state) if isinstance(state, str) else None


class StorageWatch:
    """The last storage fault this process's writes met on one engine."""

    def __init__(self, hold_s: float = DEFAULT_STORAGE_FAULT_HOLD_S) -> None:
        self.hold_s = hold_s
        self._fault: str | None = None
        self._at = 0.0

    def record(self, fault: str) -> None:
        self._fault, self._at = fault, time.monotonic()

    def clear(self) -> None:
        self._fault = None

    @property
    def fault(self) -> str | None:
        if self._fault is not None and time.monotonic() - self._at > self.hold_s:
            self._fault = None
        return self._fault


_watches: weakref.WeakKeyDictionary[Engine, StorageWatch] = weakref.WeakKeyDictionary()


def storage_watch(engine: AsyncEngine) -> StorageWatch:
    """The engine's watch, listening from the first call on (the app calls it at start-up)."""
    sync = engine.sync_engine
    watch = _watches.get(sync)
    if watch is not None:
        return watch
    watch = _watches[sync] = StorageWatch()

    def on_error(context: Any) -> None:
        fault = storage_fault(context.original_exception)
        if fault is not None:
            watch.record(fault)

    def on_execute(conn: Connection, *args: Any) -> None:
        context = args[3]
        if context is not None and (context.isinsert or context.isupdate or context.isdelete):
            conn.info[_WROTE] = True

    def on_commit(conn: Connection, *_args: Any) -> None:
        # Only a commit that wrote proves writes work again: read-only transactions commit
        # fine on a full disk and on a read-only replica.
        if conn.info.pop(_WROTE, False):
            watch.clear()

    def on_rollback(conn: Connection, *_args: Any) -> None:
        conn.info.pop(_WROTE, None)

    event.listen(sync, "handle_error", on_error)
    event.listen(sync, "after_cursor_execute", on_execute)
    event.listen(sync, "commit", on_commit)
    # Tests run each request in a savepoint of one outer transaction that is never committed.
    event.listen(sync, "release_savepoint", on_commit)
    event.listen(sync, "rollback", on_rollback)
    return watch


async def visible_fault(db: Database) -> str | None:
    """A storage fault that shows without writing anything, or None."""
    if db.dialect == "postgresql":
        async with db.reader() as session:
            value = await session.scalar(text("SELECT current_setting('transaction_read_only')"))
        return READ_ONLY if value == "on" else None
    path = sqlite_path(db.engine)
    if path is None:
        return None
    if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
        return READ_ONLY
    if path.exists() and not os.access(path, os.W_OK):
        return READ_ONLY
    return None


async def database_fault(db: Database) -> str | None:
    """Why the database cannot store anything now, or None: what /healthz reports."""
    return await visible_fault(db) or storage_watch(db.engine).fault


def sqlite_path(engine: AsyncEngine) -> Path | None:
    """The SQLite database file behind ``engine``, or None (PostgreSQL, in-memory)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    return Path(database)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding ``path``."""
    found = os.statvfs(path if path.is_dir() else path.parent)
    return found.f_bavail * found.f_frsize
