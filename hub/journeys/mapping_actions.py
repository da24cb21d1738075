"""Remembering a confirmed cohort column mapping per file header, and recalling it.

A clinic uploads the same export every week; once a coordinator has confirmed how its columns
read (the upload's mapping screen), the next file with the same header opens with that mapping
instead of the suggestion, on the page and in ``hub journey launch``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from hub.db import Database
from hub.journeys import mapping_queries
from hub.journeys.mapping import ColumnMapping, MappingInvalid, header_key


async def do_recall_mapping(
    db: Database, header: Sequence[str], delimiter: str
) -> ColumnMapping | None:
    """The mapping last confirmed for this header, or None (also when it no longer reads
    this header: the fields it names have changed since)."""
    async with db.reader() as session:
        text = await mapping_queries.mapping_text(session, header_key(header, delimiter))
    if text is None:
        return None
    try:
        mapping = ColumnMapping.from_json(json.loads(text))
        mapping.bind(header)
    except (ValueError, MappingInvalid):
        return None
    return mapping


async def do_remember_mapping(
    db: Database, header: Sequence[str], mapping: ColumnMapping, author_id: uuid.UUID | None
) -> None:
    """Keep ``mapping`` as the one for files with this header (after a launch through it)."""
    text = json.dumps(mapping.as_json(), sort_keys=True)
    async with db.transaction() as session:
        await mapping_queries.save_mapping(
            session, header_key(header, mapping.delimiter), text, author_id
        )
