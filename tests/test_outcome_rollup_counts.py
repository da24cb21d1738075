"""The day rollups' counting rules (hub/reports/outcome_rollup.py) against a plain distinct
count, over many synthetic enrollments whose runs fall on any days: every period, step and
channel gives the funnel's figure from a sum of day rows."""

from __future__ import annotations

import math
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from hub.reports.outcome_day_queries import split
from hub.reports.outcome_models import ALL
from hub.reports.outcome_rollup import (
    FLAGS,
    confirm_counts,
    difference,
    median_of,
    run_day_counts,
    run_months,
    wait_bucket,
)

JOURNEY = uuid.UUID(int=7)
DAY0 = date(2026, 3, 1)


def synthetic_runs(rng: random.Random, enrollments: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(enrollments):
        enrollment = uuid.uuid4()
        for _ in range(rng.randint(1, 5)):
            day = DAY0 + timedelta(days=rng.randint(0, 75))
            due = datetime(day.year, day.month, day.day, rng.randint(0, 23), tzinfo=UTC)
            row = {
                "run_id": uuid.uuid4(),
                "enrollment_id": enrollment,
                "journey_id": JOURNEY,
                "step_id": rng.choice(["a", "b", "c"]),
                "channel": rng.choice(["sms", "email", None]),
                "due_at": due,
                "due_day": day,
                "confirm_s": rng.choice([3.7, 59.99, 61.0, 3599.0, 86400.5, 200000.0]),
            }
            row.update({f: rng.random() < 0.5 for f in FLAGS})
            rows.append(row)
    return rows


def expected(rows: list[dict[str, Any]], start: date, end: date, channel: str | None) -> Any:
    """{(step or ALL, flag): distinct enrollments} as the funnel counts them."""
    found: dict[tuple[str, str], set[uuid.UUID]] = {}
    for r in rows:
        if not start <= r["due_day"] <= end or (channel and r["channel"] != channel):
            continue
        for flag in FLAGS:
            if r[flag]:
                for step in (r["step_id"], ALL):
                    found.setdefault((step, flag), set()).add(r["enrollment_id"])
    return {k: len(v) for k, v in found.items()}


def summed(counts: dict[tuple[Any, ...], int], start: date, end: date, channel: str | None) -> Any:
    """As the report reads them: the period's edge days from the day rows, the months it holds
    whole from the month rows."""
    months = run_months(counts)
    edges, whole = split((start, end))
    found: dict[tuple[str, str], int] = {}
    for rows, ranges in ((counts, edges), (months, [whole] if whole else [])):
        for (_journey, ch, day, step, flag, prev), n in rows.items():
            inside = any(a <= day <= b for a, b in ranges)
            if ch == (channel or ALL) and inside and prev < start:
                found[(step, flag)] = found.get((step, flag), 0) + n
    return {k: n for k, n in found.items() if n}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_sum_of_days_counts_each_enrollment_once(seed: int) -> None:
    rng = random.Random(seed)
    rows = synthetic_runs(rng, 300)
    spans = [split((DAY0 + timedelta(days=i), DAY0 + timedelta(days=i + 40))) for i in range(9)]
    assert any(whole for _edges, whole in spans)  # some periods hold a whole month
    counts = run_day_counts(rows)
    for _ in range(40):
        first = DAY0 + timedelta(days=rng.randint(-2, 75))
        last = first + timedelta(days=rng.randint(0, 70))
        for channel in (None, "sms", "email"):
            assert summed(counts, first, last, channel) == expected(rows, first, last, channel)


def test_changing_one_enrollment_moves_only_its_counts() -> None:
    rng = random.Random(4)
    rows = synthetic_runs(rng, 50)
    changed = rows[0]["enrollment_id"]
    before = [r for r in rows if r["enrollment_id"] == changed]
    after = [
        {**r, "sent": not r["sent"], "due_day": r["due_day"] + timedelta(days=1)} for r in before
    ]
    others = [r for r in rows if r["enrollment_id"] != changed]
    delta = difference(run_day_counts(after), run_day_counts(before))
    kept = run_day_counts(rows)
    for key, n in delta.items():
        kept[key] = kept.get(key, 0) + n
    assert {k: n for k, n in kept.items() if n} == run_day_counts(others + after)


def test_the_median_bucket_is_the_cut_median() -> None:
    rng = random.Random(5)
    for size in (1, 2, 3, 10, 101):
        waits = [rng.uniform(0, 3 * 86400) for _ in range(size)]
        rows = [
            {
                "journey_id": JOURNEY,
                "due_day": DAY0,
                "step_id": "a",
                "channel": "sms",
                "confirmed": True,
                "confirm_s": w,
            }
            for w in waits
        ]
        histogram: dict[int, int] = {}
        for key, n in confirm_counts(rows).items():
            histogram[key[-1]] = histogram.get(key[-1], 0) + n
        lower_middle = sorted(waits)[math.ceil(size / 2) - 1]
        assert median_of(histogram) == wait_bucket(lower_middle)
    assert median_of({}) is None
    assert [wait_bucket(s) for s in (0.4, 59.9, 60, 3661.5, 86399, 86400, 90061)] == [
        0,
        59,
        60,
        3660,
        86340,
        86400,
        90000,
    ]
