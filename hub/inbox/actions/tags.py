"""Tags of conversations and patients, sealed at rest (see ``hub.inbox.models.Tag``).

Every ``*_in`` function runs inside the caller's transaction. A tag is stored by its normalized
name, so "Billing " and "billing" are one tag, found by one blind index.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import ColumnElement, Table
from sqlalchemy.ext.asyncio import AsyncSession

from hub.crypto import KeyRing, associated_data
from hub.db import new_id, utcnow
from hub.inbox import tag_queries
from hub.inbox.models import Tag, conversation_tag, patient_tag

MAX_TAG_CHARS = 40
"""Longest tag kept (longer ones are cut): a label on a row, not a sentence."""


def normalize_tag(text: str) -> str | None:
    """The form a tag is stored, shown and matched in: trimmed, inner spaces collapsed, case
    folded, cut to MAX_TAG_CHARS; None for a blank one."""
    name = " ".join(text.split()).casefold()[:MAX_TAG_CHARS].strip()
    return name or None


def normalize_tags(texts: Iterable[str]) -> list[str]:
    """Distinct normalized tags, in the order given."""
    return list(dict.fromkeys(n for n in map(normalize_tag, texts) if n))


def tag_index(ring: KeyRing, name: str) -> bytes:
    return ring.blind_index("tag", name)


def _unseal(ring: KeyRing, tag_id: uuid.UUID, blob: bytes | None) -> str:
    if blob is None:
        return ""
    return ring.decrypt_text(blob, associated_data(Tag.__tablename__, "name_enc", tag_id))


def _names_by_owner(ring: KeyRing, rows: list[tag_queries.TagRow]) -> dict[uuid.UUID, list[str]]:
    names: dict[uuid.UUID, str] = {}  # each tag decrypted once, however many rows share it
    found: dict[uuid.UUID, list[str]] = {}
    for owner_id, tag_id, blob in rows:
        if tag_id not in names:
            names[tag_id] = _unseal(ring, tag_id, blob)
        found.setdefault(owner_id, []).append(names[tag_id])
    return {owner: sorted(tags) for owner, tags in found.items()}


async def conversation_tags_in(
    session: AsyncSession, ring: KeyRing, ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[str]]:
    """Each conversation's tags, sorted (a conversation without tags is absent)."""
    return _names_by_owner(ring, await tag_queries.conversation_tags(session, ids))


async def tags_of_conversation_in(
    session: AsyncSession, ring: KeyRing, conversation_id: uuid.UUID
) -> list[str]:
    return (await conversation_tags_in(session, ring, [conversation_id])).get(conversation_id, [])


async def tags_of_patient_in(
    session: AsyncSession, ring: KeyRing, patient_id: uuid.UUID
) -> list[str]:
    rows = await tag_queries.patient_tags(session, [patient_id])
    return _names_by_owner(ring, rows).get(patient_id, [])


async def clinic_tags_in(session: AsyncSession, ring: KeyRing) -> list[str]:
    """Every tag name in use at the clinic, sorted: what a tag picker offers."""
    return sorted(
        _unseal(ring, tag_id, blob) for tag_id, blob in await tag_queries.all_tags(session)
    )


async def _tag_ids_in(
    session: AsyncSession, ring: KeyRing, names: list[str]
) -> dict[str, uuid.UUID]:
    """The tag row of each (normalized) name, made where the clinic has none yet."""
    by_index = {tag_index(ring, n): n for n in names}
    known = await tag_queries.tag_ids_by_index(session, by_index)
    new_rows = []
    for bidx, name in by_index.items():
        if bidx not in known:
            tag_id = new_id()
            aad = associated_data(Tag.__tablename__, "name_enc", tag_id)
            new_rows.append(
                {
                    "id": tag_id,
                    "bidx": bidx,
                    "name_enc": ring.encrypt_text(name, aad),
                    "created_at": utcnow(),
                }
            )
    if new_rows:
        await tag_queries.insert_tags(session, new_rows)
        # Read back: a concurrent writer may have made the same name first.
        known = await tag_queries.tag_ids_by_index(session, by_index)
    return {by_index[bidx]: tag_id for bidx, tag_id in known.items()}


async def _set_in(
    session: AsyncSession, ring: KeyRing, table: Table, owner_id: uuid.UUID, tags: Iterable[str]
) -> list[str]:
    names = normalize_tags(tags)
    ids = await _tag_ids_in(session, ring, names)
    await tag_queries.unlink_tags_except(session, table, owner_id, ids.values())
    await tag_queries.link_tags(session, table, owner_id, ids.values())
    return sorted(names)


async def set_conversation_tags_in(
    session: AsyncSession, ring: KeyRing, conversation_id: uuid.UUID, tags: Iterable[str]
) -> list[str]:
    """Replace the conversation's tags; the normalized tags it now has, sorted."""
    return await _set_in(session, ring, conversation_tag, conversation_id, tags)


async def set_patient_tags_in(
    session: AsyncSession, ring: KeyRing, patient_id: uuid.UUID, tags: Iterable[str]
) -> list[str]:
    return await _set_in(session, ring, patient_tag, patient_id, tags)


async def add_conversation_tags_in(
    session: AsyncSession, ring: KeyRing, conversation_id: uuid.UUID, tags: Iterable[str]
) -> list[str]:
    """Add tags to the conversation; the ones it did not have before, in the order given."""
    names = normalize_tags(tags)
    if not names:
        return []
    had = set(await tags_of_conversation_in(session, ring, conversation_id))
    new = [n for n in names if n not in had]
    ids = await _tag_ids_in(session, ring, new)
    await tag_queries.link_tags(session, conversation_tag, conversation_id, ids.values())
    return new


def tagged_filter(ring: KeyRing, tag: str) -> ColumnElement[bool]:
    """A condition on conversations: those carrying ``tag`` (matched as it is normalized)."""
    return tag_queries.tagged(tag_index(ring, normalize_tag(tag) or ""))
