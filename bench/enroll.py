"""Cohort enrollment at scale: `hub journey launch appointment_reminders --cohort FILE.csv`
with 100,000 synthetic patients on a fresh PostgreSQL database, measured as the operator runs
it (a subprocess of the real CLI: wall seconds and the process's peak RSS).

Beside it, the floor for moving that much data: the same CSV loaded into a plain table with
PostgreSQL COPY through asyncpg. Targets: under 30 s and under 300 MB for 100,000 rows.

    python -m bench.enroll                  # 100,000 rows; writes bench/results/enroll.json
    python -m bench.enroll --rows 10000     # smaller (the targets stay those of 100,000 rows)

The result file holds name, seconds, peak_rss_mb, baseline_seconds, target ({"seconds",
"peak_rss_mb", "rows"}), passed, rows, and for reading a slow figure: the launch's own CPU
seconds and the machine's load average before it (the launch waits on PostgreSQL most of the
time, so a busy machine slows it). The exit status is 0 whenever the measurement completed;
``passed`` says whether it met the targets.

Patients are fictional: +1 NPA-555-xxxx numbers, example.org addresses.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.common import (
    clean_env,
    fresh_database,
    git_info,
    hub_command,
    now_iso,
    print_table,
    run_info,
    user_url,
    write_result,
)

NAME = "enroll"
JOURNEY_KEY = "appointment_reminders"
STEPS_PER_ENROLLMENT = 3
"""Runs the appointment-reminder journey plans per enrollment (email -72h, SMS -24h, SMS -2h)."""
DEFAULT_ROWS = 100_000
TARGET_SECONDS = 30.0
TARGET_RSS_MB = 300.0
LAUNCH_TIMEOUT_S = 600.0
"""A launch slower than this has failed the target twenty times over; stop it."""
AREA_CODES = (201, 202, 203, 205, 206, 207, 208, 209, 210, 212, 213, 214, 215, 216, 217, 218)
"""Each gives 10,000 fictional 555 numbers, so rows are unique up to 160,000."""
ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")
FIRST = ("Avery", "Blake", "Casey", "Devon", "Emery", "Finley", "Harper", "Jordan", "Kai", "Logan")
LAST = ("Sample", "Placeholder", "Fictional", "Testperson", "Example", "Mock", "Dummy", "Demo")
COLUMNS = (
    "name",
    "phone",
    "email",
    "language",
    "time_zone",
    "appointment_id",
    "appointment_start",
    "location",
    "provider",
    "status",
)
SUMMARY = re.compile(r"(\d+) rows: (\d+) enrolled, (\d+) already enrolled, (\d+) new patients")


def write_cohort(path: Path, rows: int, seed: int = 7) -> None:
    """A cohort as a clinic exports it: mixed phone spellings, a few rows with only a phone or
    only an email, appointments 5 to 35 days out in the patient's zone, 2% cancelled."""
    rnd = random.Random(seed)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for i in range(rows):
            area, line = AREA_CODES[i // 10_000], i % 10_000
            phone = rnd.choice(
                (f"+1 {area} 555 {line:04d}", f"({area}) 555-{line:04d}", f"{area}-555-{line:04d}")
            )
            email = f"patient{i:06d}@example.org"
            kind = rnd.random()
            if kind < 0.05:
                email = ""
            elif kind < 0.10:
                phone = ""
            zone = rnd.choice(ZONES)
            day = today + timedelta(days=rnd.randint(5, 35))
            start = datetime(
                day.year, day.month, day.day, rnd.randint(8, 16), rnd.choice((0, 15, 30, 45))
            ).replace(tzinfo=ZoneInfo(zone))
            writer.writerow(
                (
                    f"{rnd.choice(FIRST)} {rnd.choice(LAST)}",
                    phone,
                    email,
                    "en",
                    zone,
                    f"A-{i:06d}",
                    start.isoformat(),
                    f"Room {rnd.randint(1, 9)}",
                    f"Dr. {rnd.choice(LAST)}",
                    "cancelled" if rnd.random() < 0.02 else "booked",
                )
            )


async def copy_baseline(url: str, cohort: Path) -> float:
    """Seconds to COPY the CSV into a plain table (no parsing, matching, crypto or indexes)."""
    import asyncpg

    conn = await asyncpg.connect(user_url(url))
    try:
        columns = ", ".join(f"{c} text" for c in COLUMNS)
        await conn.execute(
            f"DROP TABLE IF EXISTS bench_cohort_copy; CREATE TABLE bench_cohort_copy ({columns})"
        )
        started = time.perf_counter()
        await conn.copy_to_table(
            "bench_cohort_copy", source=cohort, format="csv", header=True, columns=list(COLUMNS)
        )
        seconds = time.perf_counter() - started
        await conn.execute("DROP TABLE bench_cohort_copy")
        return seconds
    finally:
        await conn.close()


@dataclass(frozen=True)
class Launch:
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float
    """User + system time of the launch process (its database server's time is not in it)."""
    output: str


def run_launch(url: str, cohort: Path, work: Path) -> Launch:
    """The real CLI launching the cohort, timed. wait4 gives this child's own high-water RSS and
    CPU time, whatever else this process has run."""
    from hub.crypto import KeyRing

    env = clean_env(
        HUB_DATABASE_URL=user_url(url),
        HUB_KEYS=KeyRing.generate("bench1").to_spec(),
        HUB_VAR_DIR=str(work / "var"),
        HUB_LOG_FORMAT="text",
    )
    log_path = work / "launch.log"
    with log_path.open("w") as log:
        started = time.perf_counter()
        child = subprocess.Popen(
            hub_command("journey", "launch", JOURNEY_KEY, "--cohort", str(cohort), "--yes"),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = threading.Timer(LAUNCH_TIMEOUT_S, child.kill)
        deadline.start()
        try:
            _pid, status, usage = os.wait4(child.pid, 0)
        finally:
            deadline.cancel()
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
    output = log_path.read_text(errors="replace")
    if seconds >= LAUNCH_TIMEOUT_S:
        raise SystemExit(f"hub journey launch stopped after {LAUNCH_TIMEOUT_S:.0f} s")
    if child.returncode != 0:
        raise SystemExit(f"hub journey launch exited {child.returncode}:\n{output[-3000:]}")
    # ru_maxrss is in KiB on Linux.
    return Launch(seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, output)


async def stored_counts(url: str) -> dict[str, int]:
    import asyncpg

    conn = await asyncpg.connect(user_url(url))
    try:
        counts = {}
        for table in ("inbox_patient", "journey_appointment", "journey_enrollment"):
            counts[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
        counts["journey_step_run"] = int(
            await conn.fetchval("SELECT count(*) FROM journey_step_run")
        )
        return counts
    finally:
        await conn.close()


def check(rows: int, output: str, counts: dict[str, int]) -> None:
    """The launch did the work it claims: every row enrolled, every step planned."""
    match = SUMMARY.search(output)
    if match is None:
        raise SystemExit(f"no summary line in the launch output:\n{output[-3000:]}")
    seen, enrolled, already, created = (int(g) for g in match.groups())
    expected = {
        "inbox_patient": rows,
        "journey_appointment": rows,
        "journey_enrollment": rows,
        "journey_step_run": rows * STEPS_PER_ENROLLMENT,
    }
    if (seen, enrolled, already, created) != (rows, rows, 0, rows) or counts != expected:
        raise SystemExit(f"launch summary {match.group(0)!r}, stored {counts}, expected {expected}")


async def _run_info(url: str) -> dict[str, Any]:
    try:
        return await run_info(url)
    except Exception as exc:  # Redis down only costs the machine description
        return {"date": now_iso(), **git_info(), "machine": {"error": str(exc)[:200]}}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.enroll", description=__doc__)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="cohort size (1-160000)")
    parser.add_argument("--keep", action="store_true", help="keep the CSV and the launch log")
    args = parser.parse_args()
    if not 0 < args.rows <= len(AREA_CODES) * 10_000:
        parser.error(f"--rows must be between 1 and {len(AREA_CODES) * 10_000}")

    work = Path(tempfile.mkdtemp(prefix="hub-bench-enroll-"))
    cohort = work / "cohort.csv"
    write_cohort(cohort, args.rows)
    url = asyncio.run(fresh_database(NAME))
    baseline = asyncio.run(copy_baseline(url, cohort))
    load = os.getloadavg()[0]
    launch = run_launch(url, cohort, work)
    check(args.rows, launch.output, asyncio.run(stored_counts(url)))
    seconds, rss_mb = launch.seconds, launch.peak_rss_mb

    passed = seconds < TARGET_SECONDS and rss_mb < TARGET_RSS_MB
    result = {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(rss_mb, 1),
        "baseline_seconds": round(baseline, 2),
        "target": {"seconds": TARGET_SECONDS, "peak_rss_mb": TARGET_RSS_MB, "rows": DEFAULT_ROWS},
        "passed": passed,
        "rows": args.rows,
        "rows_per_s": round(args.rows / seconds),
        "cpu_seconds": round(launch.cpu_seconds, 2),
        "load_average_before": round(load, 2),
    }
    path = write_result(NAME, result, asyncio.run(_run_info(url)))
    print_table(
        [
            ("figure", "measured", "baseline (COPY)", "target", "result"),
            (
                f"enroll {args.rows} rows",
                f"{seconds:.1f} s",
                f"{baseline:.2f} s",
                f"< {TARGET_SECONDS:.0f} s",
                "pass" if seconds < TARGET_SECONDS else "FAIL",
            ),
            (
                "peak RSS",
                f"{rss_mb:.0f} MB",
                "-",
                f"< {TARGET_RSS_MB:.0f} MB",
                "pass" if rss_mb < TARGET_RSS_MB else "FAIL",
            ),
        ]
    )
    print(
        f"\nlaunch CPU {launch.cpu_seconds:.1f} s of {seconds:.1f} s wall (the rest: waiting "
        f"on PostgreSQL or for a CPU); load average before it {load:.1f} on {os.cpu_count()} cores"
    )
    print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    if args.keep:
        print(f"cohort and launch log kept in {work}")
    else:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
