"""The staff workspace at scale (issue 16, "Quality"): does size cost, and is a click fast?

On the inbox benchmark's own databases (bench/inbox_scale.py: 1,000,000 conversations and
10,000,000 messages, and the 1,000-conversation one of the same shape, both kept by
bench/scale_data.py and reused), each served by a real `hub serve`, one request at a time,
the two interleaved request by request so both see the same load:

- the list's first page, its next page (keyset) and a 200-message thread, over the API as
  inbox_scale asks them (its ``measure_http``). Target: p95 at 1M within 1.1x of the same
  requests at 1k;
- the workspace's list fragment (``GET /?filters`` as htmx asks for the list pane), the same
  1.1x;
- "opening a conversation in the workspace": what a click on a row sends, as the staff
  member's browser does it with its session cookie: ``GET /conversations/{id}`` with
  ``HX-Request``/``HX-Target: work`` (the thread, the composer and the panel as one
  fragment), then, once swapped, the Mentions badge's ``GET /api/me/mentions?limit=0``
  (web/static/mentions.js). The conversations clicked are the ones the first pages listed;
  the 200-message threads are clicked as well, as a worse case. Target: p95 under 150 ms.

The SQL of each operation, run again under EXPLAIN (ANALYZE, BUFFERS):
bench/results/workspace-plans.txt (inbox_scale's capture, pointed at this file).

    python -m bench.workspace                                        # 1M / 10M (kept)
    python -m bench.workspace --conversations 20000 --messages 200000 --requests 50  # quick
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from bench import inbox_scale
from bench.common import (
    RESULTS_DIR,
    ROOT,
    exclusive,
    flush_redis,
    load_average,
    print_table,
    run_info,
    warn_if_busy,
    write_result,
)
from bench.inbox_scale import (
    BASELINE_NAME,
    BASELINE_SPEC,
    DEFAULT_CONVERSATIONS,
    DEFAULT_MESSAGES,
    DEFAULT_REQUESTS,
    WARMUP,
    Client,
    Target,
    make_token,
    measure_http,
    start_serve,
    summary,
)
from bench.scale_data import DEFAULT_HEAVY, HEAVY_SIZE, Dataset, ScaleSpec, ensure_dataset
from hub.inbox.actions.listing import DEFAULT_PAGE

NAME = "workspace"
MAX_RATIO = 1.1
"""How much slower a request may be at 1M conversations than at 1k (p95 against p95)."""
TARGET_CLICK_MS = 150.0
PASSWORD = "bench workspace password, synthetic data only"
"""Set on the bench agent of both databases so the bench can sign in as a person does."""
PLANS = RESULTS_DIR / f"{NAME}-plans.txt"
STARTED = time.monotonic()


def say(text: str) -> None:
    print(f"workspace [{time.monotonic() - STARTED:5.0f} s] {text}", file=sys.stderr, flush=True)


async def set_password(dataset: Dataset) -> None:
    """The generator gives its staff a random password (they only use tokens there)."""
    import asyncpg

    from hub.inbox.passwords import hash_password

    conn = await asyncpg.connect(dataset.url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(
            "UPDATE inbox_staff_user SET password_hash = $1, must_change_password = false "
            "WHERE email = $2",
            hash_password(PASSWORD),
            dataset.agent_email,
        )
    finally:
        await conn.close()


async def sign_in(base: str, email: str) -> aiohttp.ClientSession:
    """A browser's session: the login form, then its cookie on every request. One cookie jar
    per served database: both run on 127.0.0.1, and a jar keys cookies by host alone."""
    jar = aiohttp.CookieJar(unsafe=True)
    http = aiohttp.ClientSession(cookie_jar=jar, connector=aiohttp.TCPConnector(limit=2))
    async with http.get(f"{base}/login") as page:
        if page.status != 200:
            raise RuntimeError(f"GET /login: {page.status}")
    csrf = jar.filter_cookies(URL(f"{base}/login"))["hub_login_csrf"].value
    form = {"email": email, "password": PASSWORD, "csrf_token": csrf, "next": "/"}
    async with http.post(f"{base}/login", data=form, allow_redirects=False) as done:
        if done.status not in (302, 303):
            raise RuntimeError(f"the bench agent could not sign in: {done.status}")
    return http


class Workspace:
    """One served database: inbox_scale's API target plus a signed-in browser."""

    def __init__(self, target: Target, browser: aiohttp.ClientSession, base: str) -> None:
        self.target, self.browser, self.base = target, browser, base
        self.times: dict[str, list[float]] = {"list_html": [], "click": [], "click_heavy": []}
        self.listed: list[str] = []
        """Conversations the first pages showed: what a person clicks on."""
        self.page_rows: list[int] = []
        """Rows on the first page of each filter set, in the order of ``target.filters``."""

    async def _get(self, path: str, headers: dict[str, str], params: Any = None) -> bytes:
        async with self.browser.get(self.base + path, headers=headers, params=params) as r:
            body = await r.read()
            if r.status != 200:
                raise RuntimeError(f"GET {path}: {r.status} {body[:300]!r}")
            return body

    async def gather_rows(self) -> None:
        """The rows each filter set's first page lists (not timed): the ids a person clicks
        on, and how many, since the small inbox lists fewer under narrow filters (a page
        of 3 rows is less work than one of 25, whatever the database's size)."""
        seen: set[str] = set()
        for q in self.target.filters:
            _ms, page = await self.target.client.get("/api/conversations", q)
            self.page_rows.append(len(page["items"]))
            for item in page["items"]:
                if item["id"] not in seen:
                    seen.add(item["id"])
                    self.listed.append(item["id"])
        random.Random(5).shuffle(self.listed)
        if not self.listed:
            raise RuntimeError("the first pages listed nothing: the dataset is too small")

    async def list_html(self, n: int, record: bool = True) -> None:
        q = self.target.filters[n]
        started = time.perf_counter()
        body = await self._get("/", {"HX-Request": "true", "HX-Target": "list-pane"}, q)
        ms = (time.perf_counter() - started) * 1000
        if b'class="row' not in body and b'id="empty-list"' not in body:
            raise RuntimeError(f"GET / {q}: not the list fragment: {body[:200]!r}")
        if record:
            self.times["list_html"].append(ms)

    async def click(self, cid: str, kind: str | None) -> None:
        """The requests a click on a row makes, one after the other as the browser sends
        them; timed from the click until the badge's answer has arrived."""
        hx = {
            "HX-Request": "true",
            "HX-Target": "work",
            "HX-Current-URL": f"{self.base}/",
        }
        started = time.perf_counter()
        body = await self._get(f"/conversations/{cid}", hx)
        await self._get("/api/me/mentions", {"Accept": "application/json"}, {"limit": "0"})
        ms = (time.perf_counter() - started) * 1000
        if f'data-conversation-id="{cid}"'.encode() not in body:
            raise RuntimeError(f"conversation {cid}: the fragment is not its thread")
        if kind is not None:
            self.times[kind].append(ms)

    def result(self) -> dict[str, Any]:
        return {k: summary(v) for k, v in self.times.items()}


async def measure_workspace(spaces: list[Workspace], requests: int) -> None:
    for n in range(WARMUP):
        for w in spaces:
            await w.list_html(n, record=False)
            await w.click(w.listed[n % len(w.listed)], None)
    say("workspace list fragments")
    for n in range(WARMUP, WARMUP + requests):
        for w in spaces:
            await w.list_html(n)
    say(f"{requests} clicks on listed rows")
    for n in range(requests):
        for w in spaces:
            await w.click(w.listed[n % len(w.listed)], "click")
    say(f"{requests} clicks on {HEAVY_SIZE}-message threads")
    for n in range(WARMUP, WARMUP + requests):
        for w in spaces:
            await w.click(w.target.opened[n], "click_heavy")


async def measure(
    big_data: Dataset, tiny_data: Dataset, log_dir: Path, requests: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    for d in (big_data, tiny_data):
        await set_password(d)
    tokens = [await make_token(big_data), await make_token(tiny_data)]
    procs = []
    browsers: list[aiohttp.ClientSession] = []
    try:
        serve, base = start_serve(big_data, log_dir, "scale")
        procs.append(serve)
        serve_tiny, base_tiny = start_serve(tiny_data, log_dir, "tiny")
        procs.append(serve_tiny)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2)) as http:
            big = Target("scale", Client(http, base, tokens[0]), big_data, requests)
            small = Target("tiny", Client(http, base_tiny, tokens[1]), tiny_data, requests)
            say("the API: first pages, next pages, 200-message threads (inbox_scale's)")
            await measure_http([big, small], requests)
            browsers = [
                await sign_in(base, big_data.agent_email),
                await sign_in(base_tiny, tiny_data.agent_email),
            ]
            spaces = [
                Workspace(big, browsers[0], base),
                Workspace(small, browsers[1], base_tiny),
            ]
            for w in spaces:
                await w.gather_rows()
            await measure_workspace(spaces, requests)
    finally:
        for browser in browsers:
            await browser.close()
        for proc in procs:
            proc.stop()
    out = []
    for proc, t, w in zip(procs, (big, small), spaces, strict=True):
        measured = w.page_rows[WARMUP:]
        out.append(
            {
                **t.result(),
                **w.result(),
                "rows_per_first_page": round(sum(measured) / len(measured), 1),
                "serve_peak_rss_mb": proc.peak_rss_mb,
            }
        )
    # The same work at both sizes: only the filter sets whose first page is full in both.
    full = [
        n
        for n in range(requests)
        if spaces[0].page_rows[WARMUP + n] == spaces[1].page_rows[WARMUP + n] == DEFAULT_PAGE
    ]
    # And the next pages that were full at both sizes (the n-th of each run).
    full_next = [
        n
        for n in range(min(len(big.next_rows), len(small.next_rows)))
        if big.next_rows[n] == small.next_rows[n] == DEFAULT_PAGE
    ]
    for result, t, w in zip(out, (big, small), spaces, strict=True):
        result["rows_per_next_page"] = round(sum(t.next_rows) / len(t.next_rows), 1)
        if full:
            result["first_page_full"] = summary([t.times["first"][n] for n in full])
            result["list_html_full"] = summary([w.times["list_html"][n] for n in full])
        if full_next:
            result["next_page_full"] = summary([t.times["next"][n] for n in full_next])
    return out[0], out[1]


def _ratio_row(
    label: str,
    big: dict[str, float],
    tiny: dict[str, float],
    full: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``full``: the same figure on the pages that were full (25 rows) at both sizes."""
    ratio = big["p95_ms"] / tiny["p95_ms"]
    same_work = ""
    if full is not None:
        same_work = (
            f"; on the {full[0]['n']} full pages alike: p95 {full[0]['p95_ms']:.1f} ms beside "
            f"{full[1]['p95_ms']:.1f} ms, {full[0]['p95_ms'] / full[1]['p95_ms']:.2f}x"
        )
    return {
        "label": label,
        "figure": f"p50 {big['p50_ms']:.1f} ms, p95 {big['p95_ms']:.1f} ms",
        "baseline": f"1k conversations: p50 {tiny['p50_ms']:.1f} ms, p95 {tiny['p95_ms']:.1f} ms",
        "ratio": f"{ratio:.2f}x baseline p95{same_work}",
        "target": f"p95 <= {MAX_RATIO:g}x the 1k database's",
        "passed": ratio <= MAX_RATIO,
    }


def _click_row(label: str, big: dict[str, float], tiny: dict[str, float]) -> dict[str, Any]:
    return {
        "label": label,
        "figure": f"p50 {big['p50_ms']:.1f} ms, p95 {big['p95_ms']:.1f} ms",
        "baseline": f"1k conversations: p50 {tiny['p50_ms']:.1f} ms, p95 {tiny['p95_ms']:.1f} ms",
        "ratio": f"{big['p95_ms'] / tiny['p95_ms']:.2f}x baseline p95",
        "target": f"p95 < {TARGET_CLICK_MS:g} ms",
        "passed": big["p95_ms"] < TARGET_CLICK_MS,
    }


async def run(args: argparse.Namespace, big_data: Dataset, tiny_data: Dataset) -> dict[str, Any]:
    warn_if_busy(NAME)
    flush_redis()
    log_dir = Path(tempfile.mkdtemp(prefix="hub-bench-workspace-"))
    load = [load_average()]
    big, small = await measure(big_data, tiny_data, log_dir, args.requests)
    load.append(load_average())
    say("query plans")
    inbox_scale.PLANS = PLANS  # its capture, written here rather than over its own file
    plans = await inbox_scale.explain_operations(big_data)
    spec = big_data.spec
    scale = (
        f"{spec.conversations / 1e6:g}M conversations"
        if spec.conversations >= 100_000
        else f"{spec.conversations:,} conversations"
    )
    rows = [
        _ratio_row(
            f"list first page (API, filters; {big['rows_per_first_page']:g} rows a page at "
            f"{scale}, {small['rows_per_first_page']:g} at 1k)",
            big["first_page"],
            small["first_page"],
            (big["first_page_full"], small["first_page_full"])
            if "first_page_full" in big
            else None,
        ),
        _ratio_row(
            f"list next page (API, keyset; {big['rows_per_next_page']:g} rows a page at "
            f"{scale}, {small['rows_per_next_page']:g} at 1k)",
            big["next_page"],
            small["next_page"],
            (big["next_page_full"], small["next_page_full"]) if "next_page_full" in big else None,
        ),
        _ratio_row(
            f"{HEAVY_SIZE}-message thread (API, decrypted), {scale}", big["open"], small["open"]
        ),
        _ratio_row(
            f"workspace list pane (htmx fragment), {scale}",
            big["list_html"],
            small["list_html"],
            (big["list_html_full"], small["list_html_full"]) if "list_html_full" in big else None,
        ),
        _click_row(f"click a listed row in the workspace, {scale}", big["click"], small["click"]),
        _click_row(
            f"click a {HEAVY_SIZE}-message thread in the workspace, {scale}",
            big["click_heavy"],
            small["click_heavy"],
        ),
    ]
    description = (
        f"On inbox_scale's kept databases ({spec.conversations:,} conversations, "
        f"{spec.messages:,} messages, and the 1,000-conversation one of the same shape), each "
        "served by a real `hub serve`, one request at a time, interleaved request by request "
        f"so both share the machine's load, {args.requests} of each after {WARMUP} warm-up "
        "requests: inbox_scale's API requests (first pages under varied filters, keyset next "
        f"pages, {HEAVY_SIZE}-message threads), the workspace's list pane as htmx asks for it, "
        "and a click on a row as a signed-in browser makes it (`GET /conversations/{id}` with "
        "`HX-Request`, then the Mentions badge's `GET /api/me/mentions?limit=0`), on rows the "
        f"first pages listed and on {HEAVY_SIZE}-message threads. Size may cost at most "
        f"{MAX_RATIO:g}x (p95 against the 1k database's p95); a click p95 under "
        f"{TARGET_CLICK_MS:g} ms. The small inbox lists fewer rows under narrow filters (a "
        "page of 3 rows is less work than one of 25 at any size), so the first page, the next "
        "page and the list pane are also compared on the pages that were full at both sizes "
        "(reported beside the target, which stays the raw comparison). Query plans: "
        f"`bench/results/{PLANS.name}`."
    )
    return {
        "passed": all(r["passed"] for r in rows),
        "description": description,
        "rows": rows,
        "details": {
            "spec": {"conversations": spec.conversations, "messages": spec.messages},
            "scale": big,
            "baseline_1k": small,
            "plans_summary": inbox_scale.plans_summary(plans),
            "load_average": {"start": load[0], "end": load[1]},
            "logs": str(log_dir),
        },
    }


def report(result: dict[str, Any]) -> None:
    table = [["figure", "measured", "baseline (same run)", "ratio", "target", "result"]]
    for r in result["rows"]:
        table.append(
            [
                r["label"],
                r["figure"],
                r["baseline"],
                r["ratio"],
                r["target"],
                "pass" if r["passed"] else "FAIL",
            ]
        )
    print_table(table)
    for label, line in result["details"]["plans_summary"].items():
        print(f"plan: {label}: {line}")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workspace",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--conversations", type=int, default=DEFAULT_CONVERSATIONS)
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES)
    parser.add_argument("--heavy", type=int, default=DEFAULT_HEAVY)
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    args = parser.parse_args()
    with exclusive(NAME):
        spec = ScaleSpec(args.conversations, args.messages, heavy=args.heavy)
        # The inbox benchmark's databases, by its names: built once, shared by both. Another
        # size gets a database of its own: generating it under inbox_scale's name would drop
        # the 1M one that takes a quarter of an hour to load.
        default = ScaleSpec(DEFAULT_CONVERSATIONS, DEFAULT_MESSAGES, heavy=DEFAULT_HEAVY)
        name = inbox_scale.NAME if spec == default else f"{NAME}_{spec.conversations}"
        big = ensure_dataset(name, spec, say=say)
        tiny = ensure_dataset(BASELINE_NAME, BASELINE_SPEC, say=say)
        info = asyncio.run(run_info(big.url))
        result = asyncio.run(run(args, big, tiny))
    path = write_result(NAME, {**result}, info)
    report(result)
    print(f"written to {path.relative_to(ROOT)}; plans in {PLANS.relative_to(ROOT)}")
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
