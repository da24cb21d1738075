"""How a report's read is run on PostgreSQL, the same for every report."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

REPORT_WORK_MEM = "64MB"
"""Sort memory for one report read on PostgreSQL: a year of one clinic's waits fits in it."""


async def tune_for_reports(session: AsyncSession) -> None:
    """PostgreSQL, for this read's transaction only: a year's aggregate is costed above the JIT
    thresholds, and compiling it took ~200 ms per statement in the inbox reports and 4.1 s of
    a 6.1 s one in the journeys report (bench/reports.py), more than it saved; the
    percentiles' sorts of a year's conversations spilled to disk at the default
    ``work_mem``."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SET LOCAL jit = off"))
        await session.execute(text(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))
