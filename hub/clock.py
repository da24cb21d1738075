"""The hub's notion of "now". End-to-end tests move time forward for every process at once
(the web app, `hub worker` and its forked jobs) through a file named by ``HUB_CLOCK_FILE``
that holds an offset in seconds; unset (always, in production) it is the system clock."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

CLOCK_FILE_ENV = "HUB_CLOCK_FILE"

_cache: tuple[str, float, float] | None = None
"""(path, mtime, offset): re-read only when the file changes."""


def utcnow() -> datetime:
    path = os.environ.get(CLOCK_FILE_ENV)
    real = datetime.now(UTC)
    if not path:
        return real
    return real + timedelta(seconds=_offset(path))


def _offset(path: str) -> float:
    global _cache
    try:
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0
    if _cache is not None and _cache[0] == path and _cache[1] == mtime:
        return _cache[2]
    text = Path(path).read_text().strip()
    offset = float(text) if text else 0.0
    _cache = (path, mtime, offset)
    return offset


def advance(path: Path, delta: timedelta) -> None:
    """Move the shared clock forward (tests). Written whole then renamed, so a reader never
    sees half a number; the nanosecond mtime of the new file tells readers it changed."""
    current = float(path.read_text().strip() or 0) if path.exists() else 0.0
    tmp = path.with_suffix(".tmp")
    tmp.write_text(repr(current + delta.total_seconds()))
    os.replace(tmp, path)
