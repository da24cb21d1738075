"""Online re-encryption of every encrypted column under the active key (``hub keys rotate``).

Runs beside a serving hub: each batch is its own short transaction, and each row is rewritten
with a compare-and-swap (``WHERE id = :id AND col = :old``) so a value the hub changed meanwhile
is never overwritten with a stale one (the hub already wrote it under the active key). Progress
is checkpointed per column in ``crypto_rotation``, so an interrupted run resumes where it stopped.

Before rotating, every process must run with the new ring (new key first in HUB_KEYS), or a
process still encrypting under the old key would keep writing old-key rows.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Integer,
    LargeBinary,
    String,
    Table,
    Uuid,
    and_,
    bindparam,
    column,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from hub.crypto import HEADER_MAX_BYTES, KeyRing, associated_data, key_id_of
from hub.db import Base, Database, encrypted_columns, utcnow

DEFAULT_ROTATION_BATCH = 500
"""Rows re-encrypted per transaction; bounds lock time and memory while the hub serves."""

ProgressCallback = Callable[[str, int, int], None]
"""(``table.column``, rows done in this column, rows in this column)."""


class RotationProgress(Base):
    __tablename__ = "crypto_rotation"

    table_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    column_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    target_key_id: Mapped[str] = mapped_column(String(32))
    last_id: Mapped[str | None] = mapped_column(String(36))
    scanned: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    completed: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


@dataclass
class RotationReport:
    target_key_id: str
    rewritten: int = 0
    already_current: int = 0
    changed_meanwhile: int = 0
    resumed_columns: list[str] = field(default_factory=list)
    remaining: Counter[str] = field(default_factory=Counter)
    """Ciphertexts per key id after the run (only the active key when it succeeded)."""

    @property
    def stale_keys(self) -> set[str]:
        return {kid for kid, n in self.remaining.items() if n and kid != self.target_key_id}


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


async def rotate(
    db: Database,
    ring: KeyRing,
    *,
    batch_size: int = DEFAULT_ROTATION_BATCH,
    on_progress: ProgressCallback | None = None,
) -> RotationReport:
    report = RotationReport(target_key_id=ring.active_id)
    for table_name, column_name in encrypted_columns():
        await _rotate_column(db, ring, table_name, column_name, batch_size, report, on_progress)
    report.remaining = await key_usage(db)
    return report


async def _rotate_column(
    db: Database,
    ring: KeyRing,
    table_name: str,
    column_name: str,
    batch_size: int,
    report: RotationReport,
    on_progress: ProgressCallback | None,
) -> None:
    table = _table(table_name)
    id_col, ct_col = table.c.id, table.c[column_name]
    label = f"{table_name}.{column_name}"

    async with db.transaction() as session:
        progress = await session.get(RotationProgress, (table_name, column_name))
        if progress is None or progress.target_key_id != ring.active_id:
            if progress is None:
                progress = RotationProgress(table_name=table_name, column_name=column_name)
                session.add(progress)
            progress.target_key_id = ring.active_id
            progress.last_id, progress.scanned, progress.completed = None, 0, False
        elif progress.last_id is not None or progress.completed:
            report.resumed_columns.append(label)
        last_id = uuid.UUID(progress.last_id) if progress.last_id else None
        completed = progress.completed
        total = int(await session.scalar(select(func.count()).where(ct_col.is_not(None))) or 0)
        done = 0
        if last_id is not None:
            done = int(
                await session.scalar(
                    select(func.count()).where(ct_col.is_not(None), id_col <= last_id)
                )
                or 0
            )
    if completed:
        if on_progress:
            on_progress(label, total, total)
        return

    while True:
        async with db.transaction() as session:
            cond: ColumnElement[bool] = ct_col.is_not(None)
            if last_id is not None:
                cond = and_(cond, id_col > last_id)
            rows = (
                await session.execute(
                    select(id_col, ct_col).where(cond).order_by(id_col).limit(batch_size)
                )
            ).all()
            swaps: list[tuple[uuid.UUID, bytes, bytes]] = []
            for row_id, blob in rows:
                if key_id_of(blob) == ring.active_id:
                    report.already_current += 1
                    continue
                aad = associated_data(table_name, column_name, row_id)
                swaps.append((row_id, blob, ring.encrypt(ring.decrypt(blob, aad), aad)))
            swapped = await _compare_and_swap(session, table, column_name, swaps)
            report.rewritten += swapped
            report.changed_meanwhile += len(swaps) - swapped
            progress = await session.get(RotationProgress, (table_name, column_name))
            assert progress is not None
            if rows:
                last_id = rows[-1][0]
                progress.last_id = str(last_id)
                progress.scanned += len(rows)
            else:
                progress.completed = True
        done += len(rows)
        if on_progress:
            on_progress(label, min(done, max(total, done)), max(total, done))
        if not rows:
            return


async def _compare_and_swap(
    session: AsyncSession,
    table: Table,
    column_name: str,
    swaps: list[tuple[uuid.UUID, bytes, bytes]],
) -> int:
    """Write each (id, old, new) where the row still holds ``old``; the number written.

    On PostgreSQL the whole batch is one UPDATE joined to three arrays: a statement per row
    spent ~70% of the rotation's time in round trips and statement building (profiled), and
    arrays keep the parameter count at three whatever the batch size."""
    if not swaps:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, UUID

        ids, olds, news = (list(c) for c in zip(*swaps, strict=True))
        given = func.unnest(
            bindparam("ids", ids, type_=ARRAY(UUID(as_uuid=True))),
            bindparam("olds", olds, type_=ARRAY(BYTEA)),
            bindparam("news", news, type_=ARRAY(BYTEA)),
        ).table_valued(column("id", Uuid), column("old", LargeBinary), column("new", LargeBinary))
        given = given.render_derived(name="given")
        stmt = (
            update(table)
            .where(table.c.id == given.c.id, table.c[column_name] == given.c.old)
            .values({column_name: given.c.new})
            .returning(table.c.id)
        )
        return len((await session.execute(stmt)).all())
    # SQLite: one local writer, no round trips to save.
    id_col, ct_col = table.c.id, table.c[column_name]
    written = 0
    for row_id, old, new in swaps:
        result = await session.execute(
            update(table).where(id_col == row_id, ct_col == old).values({column_name: new})
        )
        written += result.rowcount  # type: ignore[attr-defined]
    return written


async def key_usage(db: Database, batch_size: int = 5_000) -> Counter[str]:
    """Count ciphertexts per key id across every encrypted column (a full scan)."""
    usage: Counter[str] = Counter()
    for table_name, column_name in encrypted_columns():
        table = _table(table_name)
        id_col, ct_col = table.c.id, table.c[column_name]
        last_id = None
        while True:
            cond: ColumnElement[bool] = ct_col.is_not(None)
            if last_id is not None:
                cond = and_(cond, id_col > last_id)
            async with db.reader() as session:
                # Only the header: attachment blobs can be megabytes each.
                header = func.substr(ct_col, 1, HEADER_MAX_BYTES)
                rows = (
                    await session.execute(
                        select(id_col, header).where(cond).order_by(id_col).limit(batch_size)
                    )
                ).all()
            if not rows:
                break
            usage.update(key_id_of(blob) for _, blob in rows)
            last_id = rows[-1][0]
    return usage
