"""Tag reads and writes: the clinic's tag names (one sealed row each) and the links of
conversations and patients to them. Decryption is the caller's (hub.inbox.actions.tags)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.inbox.models import Conversation, Tag, conversation_tag, patient_tag

TagRow = tuple[uuid.UUID, uuid.UUID, bytes | None]
"""(owner id: a conversation's or a patient's, tag id, sealed tag name)."""


def _insert_ignoring_conflicts(session: AsyncSession, table: Any, conflict: list[str]) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=conflict)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing(index_elements=conflict)


async def tag_ids_by_index(
    session: AsyncSession, bidxs: Collection[bytes]
) -> dict[bytes, uuid.UUID]:
    if not bidxs:
        return {}
    rows = await session.execute(select(Tag.bidx, Tag.id).where(Tag.bidx.in_(list(bidxs))))
    return {bidx: tag_id for bidx, tag_id in rows}


async def insert_tags(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """New tag names; a name another transaction added meanwhile is left as that one wrote
    it (same blind index, so the same name)."""
    if rows:
        await session.execute(_insert_ignoring_conflicts(session, Tag, ["bidx"]), rows)


async def all_tags(session: AsyncSession) -> list[tuple[uuid.UUID, bytes | None]]:
    return [(tag_id, blob) for tag_id, blob in await session.execute(select(Tag.id, Tag.name_enc))]


def _owner(table: Table) -> Any:
    return table.c.conversation_id if table is conversation_tag else table.c.patient_id


async def _tags_of(
    session: AsyncSession, table: Table, owners: Iterable[uuid.UUID]
) -> list[TagRow]:
    wanted = list(set(owners))
    if not wanted:
        return []
    owner = _owner(table)
    stmt = (
        select(owner, Tag.id, Tag.name_enc)
        .join(Tag, Tag.id == table.c.tag_id)
        .where(owner.in_(wanted))
    )
    return [(owner_id, tag_id, blob) for owner_id, tag_id, blob in await session.execute(stmt)]


async def conversation_tags(session: AsyncSession, ids: Iterable[uuid.UUID]) -> list[TagRow]:
    return await _tags_of(session, conversation_tag, ids)


async def patient_tags(session: AsyncSession, ids: Iterable[uuid.UUID]) -> list[TagRow]:
    return await _tags_of(session, patient_tag, ids)


async def link_tags(
    session: AsyncSession, table: Table, owner_id: uuid.UUID, tag_ids: Collection[uuid.UUID]
) -> None:
    """Point ``owner_id`` at each tag; links it already has stay as they are."""
    if tag_ids:
        owner = _owner(table).name
        stmt = _insert_ignoring_conflicts(session, table, [owner, "tag_id"])
        await session.execute(stmt, [{owner: owner_id, "tag_id": t} for t in tag_ids])


async def unlink_tags_except(
    session: AsyncSession, table: Table, owner_id: uuid.UUID, keep: Collection[uuid.UUID]
) -> None:
    owner = _owner(table)
    stmt = delete(table).where(owner == owner_id)
    if keep:
        stmt = stmt.where(table.c.tag_id.not_in(list(keep)))
    await session.execute(stmt)


def tagged(bidx: bytes) -> ColumnElement[bool]:
    """Conversations carrying the tag whose blind index is ``bidx``: two index lookups (the
    name's row by its index, then its links), never a scan of conversations' tags."""
    return Conversation.id.in_(
        select(conversation_tag.c.conversation_id)
        .join(Tag, Tag.id == conversation_tag.c.tag_id)
        .where(Tag.bidx == bidx)
    )
