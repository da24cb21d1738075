"""`make bench`: run every benchmark in bench/ and write bench/RESULTS.md from their results.

A benchmark is any module here that is not a helper; each runs in its own process
(``python -m bench.NAME``) and writes ``bench/results/NAME.json``. A result file the run did not
rewrite is reported as missing, never shown as if measured now.

    python -m bench.run                  # every benchmark, then RESULTS.md
    python -m bench.run dispatch         # only these (the others' last results are kept)
    python -m bench.run --report-only    # RESULTS.md from the result files as they are
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping
from typing import Any

from bench.common import RESULTS_DIR, ROOT, now_iso, read_result, run_info

HELPERS = frozenset(
    {
        "__init__",
        "common",
        "noop",
        "run",
        "loadgen",
        "scale_data",
        "scale_csat",
        "scale_journeys",
        "scale_journeys_play",
        "reports_work",
        "inbox_facts_read",
    }
)
"""Modules of bench/ that are not benchmarks."""
REPORT = ROOT / "bench" / "RESULTS.md"


def benchmarks() -> list[str]:
    return sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem not in HELPERS)


def run_one(name: str) -> str | None:
    """Run a benchmark; None if it wrote its result, else why not."""
    path = RESULTS_DIR / f"{name}.json"
    before = path.stat().st_mtime if path.exists() else None
    print(f"\n== bench {name}", flush=True)
    started = time.monotonic()
    code = subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=ROOT, check=False)
    print(f"== bench {name}: exit {code.returncode} after {time.monotonic() - started:.0f} s")
    if path.exists() and path.stat().st_mtime != before:
        return None  # a missed target exits non-zero too; the result still stands
    return f"no result written (exit status {code.returncode})"


def _num(value: float, unit: str = "") -> str:
    text = f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def rows_for(name: str, data: Mapping[str, Any]) -> list[list[str]]:
    """A benchmark with several figures lists them under "rows", each already worded."""
    if not isinstance(data.get("rows"), list):  # enroll's "rows" is its row count
        return [row_for(name, data)]
    return [
        [
            f"{name}: {row['label']}",
            row.get("figure", ""),
            row.get("baseline", ""),
            row.get("ratio", ""),
            row.get("target", ""),
            "pass" if row.get("passed") else "FAIL",
        ]
        for row in data["rows"]
    ]


def row_for(name: str, data: Mapping[str, Any]) -> list[str]:
    """benchmark | figure | baseline (same run) | ratio | target | result."""
    result = "pass" if data.get("passed") else "FAIL"
    target = data.get("target", "")
    if "value" in data:  # figure beside a baseline rate (dispatch)
        details = data.get("details", {})
        size = f" ({details['steps']:,} steps)" if "steps" in details else ""
        figure = _num(data["value"], data.get("unit", "")) + size
        baseline = _num(data["baseline"], data.get("baseline_unit", ""))
        ratio = f"{data['ratio']:.2f}x" if "ratio" in data else ""
        if details and not details.get("complete", True):
            got, of = details.get("fake", {}).get("messages", 0), details.get("steps", 0)
            result += f" (incomplete: {got:,} of {of:,} messages)"
        elif details and not details.get("exactly_once", True):
            result += " (not exactly once)"
    elif "seconds" in data:  # a duration beside a baseline duration (enroll)
        rows = f" for {data['rows']:,} rows" if "rows" in data else ""
        figure = f"{data['seconds']:,.1f} s{rows}"
        if "peak_rss_mb" in data:
            figure += f", peak RSS {data['peak_rss_mb']:,.0f} MB"
        base = data.get("baseline_seconds")
        baseline = f"{base:,.2f} s" if base is not None else ""
        ratio = f"{data['seconds'] / base:,.0f}x baseline time" if base else ""
    else:
        figure, baseline, ratio = "(unknown result shape)", "", ""
    if isinstance(target, Mapping):
        parts = [f"< {target['seconds']:g} s"] if "seconds" in target else []
        parts += [f"< {target['peak_rss_mb']:g} MB"] if "peak_rss_mb" in target else []
        at = f" at {target['rows']:,} rows" if "rows" in target else ""
        target = " and ".join(parts) + at
    return [name, figure, baseline, ratio, str(target), result]


def _machine(run: Mapping[str, Any]) -> str:
    m = run.get("machine", {})
    if "cpu" not in m:
        return "unknown"
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, {m['os']}; Python {m['python']}, "
        f"PostgreSQL {m['postgresql']}, Redis {m['redis']}"
    )


def _commit(run: Mapping[str, Any]) -> str:
    return f"{run.get('commit', 'unknown')}{' (uncommitted changes)' if run.get('dirty') else ''}"


def _bullet(text: str) -> str:
    return textwrap.fill(text, width=96, initial_indent="- ", subsequent_indent="  ")


def render(
    results: Mapping[str, Mapping[str, Any] | None],
    errors: Mapping[str, str],
    here: Mapping[str, Any],
) -> str:
    header = ["benchmark", "figure", "baseline (same run)", "ratio", "target", "result"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    notes = []
    for name, data in results.items():
        if data is None:
            why = errors.get(name, "no result file")
            lines.append(f"| {name} | - | - | - | - | ERROR: {why} |")
            continue
        lines.extend("| " + " | ".join(row) + " |" for row in rows_for(name, data))
        run = data.get("run", {})
        if _commit(run) != _commit(here) or _machine(run) != _machine(here):
            elsewhere = f" on {_machine(run)}" if _machine(run) != _machine(here) else ""
            notes.append(
                f"- {name}: measured {run.get('date', '?')} at commit {_commit(run)}{elsewhere}."
            )
    loads = [
        f"{name} {data['run']['load_average']}"
        for name, data in results.items()
        if data is not None and "load_average" in data.get("run", {})
    ]
    dispatch = results.get("dispatch")
    details = dispatch.get("details", {}) if dispatch else {}
    text = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`python -m bench.run`) on {here['date']} at commit "
        f"{_commit(here)}.",
        "",
        f"Machine: {_machine(here)}.",
        "",
        *(
            [
                "1-minute load average as each benchmark started: " + ", ".join(loads) + ". A",
                "figure taken while other work shares the machine is low.",
                "",
            ]
            if loads
            else []
        ),
        *lines,
        "",
        *(["Measured at another commit or on another machine:", "", *notes, ""] if notes else []),
        "Each figure stands beside a baseline measured in the same run on the same machine.",
        "",
        _bullet(
            "**dispatch**: due appointment-reminder steps (rows as `hub journey launch` writes "
            "them: sealed, blind-indexed, consent allowing SMS, inside the send window) against "
            f"the fake Twilio API in its own process with {details.get('latency_ms', 20):g} ms "
            f"per call, the hub as `hub worker --processes {details.get('processes', 2)}`, "
            "PostgreSQL; from the moment the runs are claimable until the fake has recorded one "
            "message per run, then every recipient and body checked (no duplicate, none "
            "missing). Baseline: as many RQ worker processes like `hub worker`'s draining no-op "
            "jobs (`bench/noop.py`). Status callbacks are not posted (they load `hub serve`, "
            "not measured here)."
        ),
        _bullet(
            "**enroll**: `hub journey launch` of a synthetic cohort CSV (wall time and the "
            "process's peak RSS); baseline: the same CSV loaded with PostgreSQL COPY."
        ),
        *(
            _bullet(f"**{name}**: {data['description']}")
            for name, data in results.items()
            if data is not None and data.get("description")
        ),
        "",
        "## Reproduce",
        "",
        "```sh",
        "make bench                              # every benchmark, then this file",
        "python -m bench.dispatch --steps 2000   # one benchmark, smaller",
        "python -m bench.run --report-only       # rewrite this file from bench/results/",
        "```",
        "",
        "Needs PostgreSQL and Redis: `HUB_BENCH_DATABASE_URL` (default",
        "`postgresql://postgres@127.0.0.1:5432/hub_bench`; each benchmark drops and creates its",
        "own `hub_bench_<name>` database) and `HUB_BENCH_REDIS_URL` (default",
        "`redis://127.0.0.1:6379/14`, flushed by each benchmark). Patient data is synthetic.",
        "",
    ]
    return "\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (of {benchmarks()})")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    known = benchmarks()
    unknown = set(args.names) - set(known)
    if unknown:
        parser.error(f"no benchmark {', '.join(sorted(unknown))}; there are {', '.join(known)}")
    errors: dict[str, str] = {}
    if not args.report_only:
        for name in args.names or known:
            if (why := run_one(name)) is not None:
                errors[name] = why
    results = {name: (None if name in errors else read_result(name)) for name in known}
    try:
        here = asyncio.run(run_info())
    except Exception as exc:  # PostgreSQL or Redis down: the report still says what ran
        here = {"date": now_iso(), "commit": "unknown", "machine": {"error": str(exc)[:200]}}
    REPORT.write_text(render(results, errors, here))
    print(f"\nwrote {REPORT.relative_to(ROOT)}")
    missed = [n for n, d in results.items() if d is not None and not d.get("passed")]
    print(
        f"targets met: {sum(1 for d in results.values() if d and d.get('passed'))} of {len(known)}"
    )
    if errors or (args.strict and missed):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
