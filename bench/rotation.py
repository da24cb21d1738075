"""Key rotation online: `hub keys rotate` (the real command, a subprocess) re-encrypts a database
of 1,000,000 sealed messages (bench/scale_data.py: 100,000 conversations, their patients, email
subjects) under a new key while staff keep reading conversations from a real `hub serve`.

Measured: the rotation's wall seconds and values per second; the reads served meanwhile (two
staff clients, each opening one conversation after another over HTTP with an API token) and
their p50/p99. Baselines in the same run: the same two readers for the same length of time
without a rotation, and `hub keys status` (one pass reading every ciphertext's header: the
floor for visiting every encrypted value). Afterwards every encrypted value is checked: under
the new key, and it decrypts with a ring that no longer holds the old key.

The dataset is kept between runs (each run rotates to a fresh key and records the new ring).

    python -m bench.rotation                                      # 1,000,000 messages
    python -m bench.rotation --conversations 10000 --messages 100000   # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    ROOT,
    bench_redis_url,
    clean_env,
    exclusive,
    flush_redis,
    hub_command,
    load_average,
    print_table,
    run_info,
    user_url,
    warn_if_busy,
    write_result,
)
from bench.inbox_scale import make_token, percentile, start_serve
from bench.scale_data import AGENT_TEAMS, Dataset, ScaleSpec, ensure_dataset, save_ring

NAME = "rotation"
DEFAULT_CONVERSATIONS = 100_000
DEFAULT_MESSAGES = 1_000_000
READERS = 2
"""Staff clients reading at once during the rotation (and the baseline)."""
BASELINE_S = 20.0
"""How long the readers run without a rotation."""
ROTATE_TIMEOUT_S = 3_600.0
SAMPLE = 2_000
"""Conversations the readers pick from (the agent's teams, any age)."""
SUMMARY = re.compile(
    r"re-encrypted (\d+) values under key (\S+); (\d+) were already under it; "
    r"(\d+) changed meanwhile"
)
VERIFY_BATCH = 20_000


def say(text: str) -> None:
    print(f"rotation [{time.monotonic() - STARTED:5.0f} s] {text}", file=sys.stderr, flush=True)


STARTED = time.monotonic()


async def reader_sample(dataset: Dataset) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(user_url(dataset.url))
    try:
        teams = [dataset.team_ids[t] for t in AGENT_TEAMS]
        rows = await conn.fetch(
            "SELECT id FROM inbox_conversation WHERE team_id = ANY($1::uuid[]) "
            "ORDER BY random() LIMIT $2",
            teams,
            SAMPLE,
        )
        return [str(r["id"]) for r in rows]
    finally:
        await conn.close()


class Readers:
    """READERS clients opening random conversations until stopped; every answer must be a 200
    whose message bodies all decrypted."""

    def __init__(self, base: str, token: str, ids: list[str]) -> None:
        self.base, self.ids = base, ids
        self.headers = {"Authorization": f"Bearer {token}"}
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._stop = asyncio.Event()

    async def _one(self, http: aiohttp.ClientSession, seed: int) -> None:
        rnd = random.Random(seed)
        while not self._stop.is_set():
            cid = rnd.choice(self.ids)
            started = time.perf_counter()
            async with http.get(f"{self.base}/api/conversations/{cid}", headers=self.headers) as r:
                raw = await r.read()
                ms = (time.perf_counter() - started) * 1000
            if r.status != 200:
                self.errors.append(f"{r.status}: {raw[:200]!r}")
                continue
            view = json.loads(raw)
            if not view["messages"] or not all(m["body"] for m in view["messages"]):
                self.errors.append(f"conversation {cid}: a message came back without its body")
                continue
            self.latencies.append(ms)

    async def run_until(self, done: asyncio.Future[Any] | float) -> None:
        async with aiohttp.ClientSession() as http:
            tasks = [asyncio.create_task(self._one(http, n)) for n in range(READERS)]
            if isinstance(done, float):
                await asyncio.sleep(done)
            else:
                await done
            self._stop.set()
            await asyncio.gather(*tasks)

    def summary(self, seconds: float) -> dict[str, Any]:
        ms = self.latencies
        return {
            "reads": len(ms),
            "errors": len(self.errors),
            "first_errors": self.errors[:3],
            "seconds": round(seconds, 1),
            "reads_per_s": round(len(ms) / seconds, 1) if seconds else 0,
            "p50_ms": round(percentile(ms, 50), 1) if ms else None,
            "p99_ms": round(percentile(ms, 99), 1) if ms else None,
        }


def hub_env(dataset: Dataset, ring_spec: str, var: Path) -> dict[str, str]:
    return clean_env(
        HUB_DATABASE_URL=user_url(dataset.url),
        HUB_KEYS=ring_spec,
        HUB_VAR_DIR=str(var),
        HUB_LOG_FORMAT="text",
        HUB_REDIS_URL=bench_redis_url(),
    )


def timed_command(argv: list[str], env: dict[str, str], log: Path) -> tuple[float, str, int]:
    with log.open("w") as out:
        started = time.perf_counter()
        done = subprocess.run(
            argv,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=ROTATE_TIMEOUT_S,
            check=False,
        )
        seconds = time.perf_counter() - started
    return seconds, log.read_text(errors="replace"), done.returncode


async def run_rotation(
    dataset: Dataset, ring_spec: str, var: Path, log_dir: Path, readers: Readers, batch: int
) -> tuple[float, str, int]:
    argv = hub_command("keys", "rotate", "--batch-size", str(batch))
    env = hub_env(dataset, ring_spec, var)
    loop = asyncio.get_running_loop()
    rotation = loop.run_in_executor(None, timed_command, argv, env, log_dir / "rotate.log")
    await readers.run_until(rotation)
    return await rotation


async def verify(dataset: Dataset, ring_spec: str) -> dict[str, Any]:
    """Every encrypted value of every table: its key id, and that it decrypts (bound to its
    row) with ``ring_spec``, which no longer holds the old key."""
    import asyncpg

    from hub.crypto import CryptoError, KeyRing, associated_data, key_id_of
    from hub.db import encrypted_columns

    ring = KeyRing.parse(ring_spec)
    keys: dict[str, int] = {}
    checked = failed = 0
    decrypt_s = 0.0
    conn = await asyncpg.connect(user_url(dataset.url))
    try:
        for table, column in encrypted_columns():
            last = None
            while True:
                rows = await conn.fetch(
                    f"SELECT id, {column} AS ct FROM {table} WHERE {column} IS NOT NULL "
                    "AND ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2",
                    last,
                    VERIFY_BATCH,
                )
                if not rows:
                    break
                started = time.perf_counter()
                for row in rows:
                    blob = bytes(row["ct"])
                    kid = key_id_of(blob)
                    keys[kid] = keys.get(kid, 0) + 1
                    try:
                        ring.decrypt(blob, associated_data(table, column, row["id"]))
                    except CryptoError:
                        failed += 1
                decrypt_s += time.perf_counter() - started
                checked += len(rows)
                last = rows[-1]["id"]
        messages = int(await conn.fetchval("SELECT count(*) FROM inbox_message"))
    finally:
        await conn.close()
    return {
        "values": checked,
        "failed": failed,
        "keys": keys,
        "messages": messages,
        "decrypt_s": round(decrypt_s, 1),
    }


async def run(args: argparse.Namespace, dataset: Dataset) -> tuple[dict[str, Any], dict[str, Any]]:
    from hub.crypto import KeyRing

    warn_if_busy(NAME)
    flush_redis()
    log_dir = Path(tempfile.mkdtemp(prefix="hub-bench-rotation-"))
    var = log_dir / "var"
    info = await run_info(dataset.url)
    old = KeyRing.parse(dataset.ring_spec)
    new = old.with_new_key(f"r{int(time.time())}")
    # Recorded first: whatever happens below, the data stays readable with the stored ring.
    await save_ring(dataset.url, new.to_spec())
    ids = await reader_sample(dataset)
    token = await make_token(dataset)
    # Every serving process runs with the new ring before the rotation starts (the runbook).
    serving = Dataset(**{**dataset.__dict__, "ring_spec": new.to_spec()})
    serve, base = start_serve(serving, log_dir, "rotation")
    load = [load_average()]
    try:
        say(f"baseline: {READERS} readers for {BASELINE_S:g} s without a rotation")
        quiet = Readers(base, token, ids)
        await quiet.run_until(BASELINE_S)
        say("baseline: hub keys status (every ciphertext header, one pass)")
        status_s, status_out, code = await asyncio.to_thread(
            timed_command,
            hub_command("keys", "status"),
            hub_env(dataset, new.to_spec(), var),
            log_dir / "status.log",
        )
        if code != 0:
            raise SystemExit(f"hub keys status exited {code}:\n{status_out[-2000:]}")
        say(f"hub keys rotate --batch-size {args.batch_size} to key {new.active_id}, readers on")
        busy = Readers(base, token, ids)
        seconds, output, code = await run_rotation(
            dataset, new.to_spec(), var, log_dir, busy, args.batch_size
        )
        load.append(load_average())
    finally:
        serve.stop()
    if code != 0:
        raise SystemExit(f"hub keys rotate exited {code}:\n{output[-3000:]}")
    match = SUMMARY.search(output)
    if match is None:
        raise SystemExit(f"no summary in the rotate output:\n{output[-3000:]}")
    rewritten, target, already, meanwhile = (int(match[1]), match[2], int(match[3]), int(match[4]))
    say("checking every value: new key id, decrypts without the old key")
    retired = new.without(old.active_id)
    checked = await verify(dataset, retired.to_spec())
    if checked["failed"] == 0 and set(checked["keys"]) == {new.active_id}:
        await save_ring(dataset.url, retired.to_spec())
    correct = (
        checked["failed"] == 0
        and set(checked["keys"]) == {new.active_id}
        and target == new.active_id
        and not busy.errors
        and not quiet.errors
    )
    during = busy.summary(seconds)
    before = quiet.summary(BASELINE_S)
    values = rewritten + meanwhile
    rows = [
        {
            "label": f"key rotation, {checked['messages']:,} messages ({checked['values']:,} "
            "encrypted values)",
            "figure": f"{seconds:,.1f} s, {values / seconds:,.0f} values/s",
            "baseline": f"`hub keys status` (reads every value's header once): {status_s:,.1f} s",
            "ratio": f"{seconds / status_s:,.1f}x baseline time",
            "target": "online; every value under the new key and decrypting",
            "passed": correct,
        },
        {
            "label": f"reads served during the rotation ({READERS} clients opening conversations)",
            "figure": f"{during['reads']:,} reads ({during['reads_per_s']}/s), p50 "
            f"{during['p50_ms']} ms, p99 {during['p99_ms']} ms, {during['errors']} errors",
            "baseline": f"same readers, no rotation: {before['reads_per_s']}/s, p50 "
            f"{before['p50_ms']} ms, p99 {before['p99_ms']} ms",
            "ratio": f"{during['p99_ms'] / before['p99_ms']:.2f}x baseline p99"
            if during["p99_ms"] and before["p99_ms"]
            else "",
            "target": "reads keep working (no error)",
            "passed": not busy.errors and during["reads"] > 0,
        },
    ]
    description = (
        f"`hub keys rotate --batch-size {args.batch_size}` (a subprocess of the real CLI) "
        f"re-encrypting every encrypted column of a {dataset.spec.conversations:,}-conversation "
        f"database ({checked['messages']:,} sealed messages, their email subjects and patients) "
        f"under a new key, while {READERS} staff clients open random conversations from a real "
        "`hub serve` (running with the new ring, as the runbook requires) over HTTP. Baselines: "
        f"the same readers for {BASELINE_S:g} s without a rotation, and `hub keys status`, one "
        "pass over every ciphertext's header. Afterwards every value was read back: under the "
        "new key, and decrypting with the old key removed from the ring."
    )
    result = {
        "passed": bool(correct and rows[1]["passed"]),
        "description": description,
        "rows": rows,
        "details": {
            "seconds": round(seconds, 2),
            "rewritten": rewritten,
            "already_current": already,
            "changed_meanwhile": meanwhile,
            "values_per_s": round(values / seconds),
            "batch_size": args.batch_size,
            "reads_during": during,
            "reads_baseline": before,
            "keys_status_s": round(status_s, 2),
            "verify": checked,
            "generated_this_run": dataset.generated,
            "generation_s": dataset.timings,
            "load_average": {"start": load[0], "end": load[-1]},
            "logs": str(log_dir),
        },
    }
    return result, info


def report(result: dict[str, Any]) -> None:
    rows = [["figure", "measured", "baseline (same run)", "result"]]
    for r in result["rows"]:
        rows.append([r["label"], r["figure"], r["baseline"], "pass" if r["passed"] else "FAIL"])
    print_table(rows)
    d = result["details"]
    print(
        f"verified {d['verify']['values']:,} values: keys {d['verify']['keys']}, "
        f"{d['verify']['failed']} failed to decrypt"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rotation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--conversations", type=int, default=DEFAULT_CONVERSATIONS)
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES)
    parser.add_argument("--batch-size", type=int, default=500, help="as `hub keys rotate`")
    parser.add_argument("--regenerate", action="store_true", help="load the data again")
    args = parser.parse_args()
    with exclusive(NAME):
        spec = ScaleSpec(args.conversations, args.messages, heavy=min(50, args.conversations // 10))
        dataset = ensure_dataset(NAME, spec, regenerate=args.regenerate, say=say)
        result, info = asyncio.run(run(args, dataset))
    path = write_result(NAME, result, info)
    report(result)
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
