"""What bench/reports.py does besides asking over HTTP: the served hub (an admin token, `hub
serve` able to take signed webhooks), bringing the report rollups current as the scheduler tick
would (from empty: their full rebuild; after new events: their lag), the new events themselves
(sent through the hub's real HTTP paths), and the reports' query plans."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bench import inbox_scale, loadgen
from bench.common import (
    Process,
    bench_redis_url,
    clean_env,
    free_port,
    http_ok,
    hub_command,
    user_url,
)
from bench.inbox_scale import Client
from bench.scale_data import Dataset

ROLLUPS: tuple[tuple[str, str, str], ...] = (
    (
        "inbox facts",
        "hub.reports.facts_actions:do_rebuild_facts",
        "hub.reports.facts_actions:do_refresh_facts",
    ),
    (
        "journey run facts",
        "hub.reports.run_facts_actions:do_rebuild_run_facts",
        "hub.reports.run_facts_actions:do_refresh_run_facts",
    ),
    (
        "message delivery",
        "hub.reports.delivery_rollup_actions:do_rebuild_delivery_rollup",
        "hub.reports.delivery_rollup_actions:do_refresh_delivery_rollup",
    ),
)
"""Each report rollup: a label, its full rebuild (queue everything, refresh until empty) and
the one-batch catch-up the tick calls ("module:function", each taking the Database, and the
key ring when it asks for ``ring``)."""
NEW_SENDERS = 70_000
"""loadgen's numbers from here on (area codes 901 up) belong to no generated patient: each
event's sender is new, so each opens a conversation."""
MAX_TICKS = 100_000
"""Catch-up calls before giving up on a rollup that never says it is current."""


# -- rollups, as the tick keeps them ----------------------------------------------------------


def _resolve(dotted: str) -> Callable[..., Awaitable[Any]]:
    module, _, function = dotted.partition(":")
    found: Callable[..., Awaitable[Any]] = getattr(importlib.import_module(module), function)
    return found


def _current(result: Any) -> bool:
    """A tick's batch left nothing queued: it says so (``caught_up``), or it did nothing."""
    caught_up = getattr(result, "caught_up", None)
    return bool(caught_up) if caught_up is not None else not result


async def catch_up(dataset: Dataset, *, full: bool) -> dict[str, Any]:
    """``full``: each rollup's full rebuild, timed. Otherwise the tick's batch, called until
    the rollup is current (each call one tick's work): wall time and ticks per rollup."""
    from hub.crypto import KeyRing
    from hub.db import Database

    db = Database.connect(dataset.url)
    ring = KeyRing.parse(dataset.ring_spec)
    out: dict[str, Any] = {}
    try:
        for label, rebuild, tick in ROLLUPS:
            clock = time.perf_counter()
            calls = 0
            if full:
                calls, result = 1, await _call(_resolve(rebuild), db, ring)
            else:
                while calls < MAX_TICKS:
                    calls += 1
                    result = await _call(_resolve(tick), db, ring)
                    if _current(result):
                        break
            out[label] = {
                "seconds": round(time.perf_counter() - clock, 2),
                "calls": calls,
                "last_result": str(result)[:200],
            }
    finally:
        await db.dispose()
    return out


async def _call(function: Callable[..., Awaitable[Any]], db: Any, ring: Any) -> Any:
    wants_ring = "ring" in inspect.signature(function).parameters
    return await (function(db, ring) if wants_ring else function(db))


# -- the hub -----------------------------------------------------------------------------------


async def table_counts(url: str) -> dict[str, int]:
    """Rows per table the reports read (planner estimates would do for speed, but a reader
    of the results wants the real size)."""
    import asyncpg

    conn = await asyncpg.connect(user_url(url))
    try:
        return {
            t: int(await conn.fetchval(f"SELECT count(*) FROM {t}"))
            for t in (
                "inbox_conversation",
                "inbox_message",
                "journey_enrollment",
                "journey_step_run",
                "journey_appointment",
            )
        }
    finally:
        await conn.close()


async def make_admin_token(dataset: Dataset, email: str) -> str:
    """An admin (reports are for coordinators and admins), added by the hub's own action."""
    from hub.audit import Actor
    from hub.db import Database
    from hub.enums import Role
    from hub.inbox import queries
    from hub.inbox.actions import do_add_staff_user
    from hub.inbox.schemas import NewStaffUser

    db = Database.connect(dataset.url)
    actor = Actor.system("bench:reports")
    try:
        async with db.reader() as session:
            known = await queries.staff_by_email(session, email)
        if known is None:
            new = NewStaffUser(email, "Bench Admin", uuid.uuid4().hex, Role.ADMIN)
            await do_add_staff_user(db, actor, new)
        return await make_token_for(db, actor, email)
    finally:
        await db.dispose()


async def make_token_for(db: Any, actor: Any, email: str) -> str:
    from hub.inbox.actions.staff import do_create_token

    return await do_create_token(db, actor, email, "bench", days=1)


def start_serve(dataset: Dataset, log_dir: Path) -> tuple[Process, str]:
    """inbox_scale's `hub serve`, also able to take signed Twilio webhooks (the catch-up's
    events); no worker runs, so replies stay queued and nothing is sent."""
    port = free_port()
    env = clean_env(
        HUB_DATABASE_URL=user_url(dataset.url),
        HUB_REDIS_URL=bench_redis_url(),
        HUB_KEYS=dataset.ring_spec,
        HUB_PUBLIC_URL=f"http://127.0.0.1:{port}",
        HUB_HOST="127.0.0.1",
        HUB_PORT=str(port),
        HUB_VAR_DIR=str(log_dir / "var"),
        HUB_LOG_FORMAT="text",
        TWILIO_ACCOUNT_SID=loadgen.ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=loadgen.AUTH_TOKEN,
        TWILIO_API_BASE="http://127.0.0.1:9",
        TWILIO_FROM_NUMBER=loadgen.CLINIC_NUMBER,
    )
    serve = Process("hub-serve-reports", hub_command("serve"), env, log_dir)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while not http_ok(f"{base}/healthz"):
        if not serve.alive() or time.monotonic() > deadline:
            serve.stop()
            raise SystemExit(f"hub serve did not come up:\n{serve.tail()}")
        time.sleep(0.1)
    return serve, base


# -- new events and the catch-up --------------------------------------------------------------


async def post_events(
    http: aiohttp.ClientSession, base: str, admin: Client, dataset: Dataset, events: int
) -> dict[str, Any]:
    """``events`` signed inbound texts from new numbers (each a new conversation), a staff
    reply to half of them and a resolution of a quarter, all through the hub's HTTP paths."""
    import asyncpg

    stamp = int(time.time()) % 10_000_000
    sids = []
    clock = time.perf_counter()
    for i in range(events):
        sid = f"SM{stamp:08x}{i:024x}"
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "AccountSid": loadgen.ACCOUNT_SID,
            "From": loadgen.phone(NEW_SENDERS + i),
            "To": loadgen.CLINIC_NUMBER,
            "Body": "Can I move my appointment to Friday?",
            "NumMedia": "0",
            "NumSegments": "1",
        }
        url = f"{base}/webhooks/twilio/sms"
        headers = {"X-Twilio-Signature": loadgen.sign(url, params, loadgen.AUTH_TOKEN)}
        async with http.post(url, data=params, headers=headers) as response:
            if response.status >= 300:
                raise RuntimeError(f"webhook {response.status}: {(await response.text())[:200]}")
        sids.append(sid)
    conn = await asyncpg.connect(user_url(dataset.url))
    try:
        deadline = time.monotonic() + 120
        while True:  # the intake consumer in `hub serve` takes them in batches
            rows = await conn.fetch(
                "SELECT conversation_id FROM inbox_message WHERE provider_message_id = ANY($1)",
                sids,
            )
            if len(rows) == events or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    conversations = [str(r["conversation_id"]) for r in rows]
    replied = resolved = 0
    for n, cid in enumerate(conversations[: events // 2]):
        await _post(
            http, admin, f"/api/conversations/{cid}/messages", {"body": "Yes, Friday 10:15 works."}
        )
        replied += 1
        if n % 2 == 0:
            await _post(http, admin, f"/api/conversations/{cid}/status", {"status": "resolved"})
            resolved += 1
    return {
        "inbound": len(conversations),
        "replies": replied,
        "resolved": resolved,
        "seconds_to_post": round(time.perf_counter() - clock, 1),
    }


async def _post(
    http: aiohttp.ClientSession, client: Client, path: str, body: dict[str, str]
) -> None:
    async with http.post(client.base + path, json=body, headers=client.headers) as response:
        if response.status >= 300:
            raise RuntimeError(f"POST {path}: {response.status} {(await response.text())[:200]}")


# -- query plans ------------------------------------------------------------------------------


async def explain_reports(
    dataset: Dataset,
    reports: list[str],
    *,
    admin_email: str,
    zone: str,
    end: date,
    periods: tuple[int, ...],
    path: Path,
) -> dict[str, Any]:
    """Each report built once in-process for the 30- and 365-day periods (a team and the
    business-hours switch on: the most work), its SQL captured and run again under EXPLAIN
    (ANALYZE, BUFFERS), written to ``path``."""
    from sqlalchemy import event

    from hub.crypto import KeyRing
    from hub.db import Database
    from hub.reports import registry
    from hub.reports.base import ReportFilters
    from hub.reports.registry import REPORTS

    db = Database.connect(dataset.url)
    captured = inbox_scale.Captured()
    event.listen(db.engine.sync_engine, "before_cursor_execute", captured.listen)
    out: list[str] = []
    summaries: dict[str, list[dict[str, Any]]] = {}
    try:
        ctx = await inbox_scale._staff_context(db, admin_email)
        for report in reports:
            build = REPORTS[report][1]
            for days in periods:
                filters = ReportFilters(
                    start=end - timedelta(days=days - 1),
                    end=end,
                    time_zone=zone,
                    team_id=uuid.UUID(dataset.team_ids[1]),
                    business_hours=True,
                )
                label = f"{report}, {days} days, a team, business hours"
                captured.statements.clear()
                captured.active = True
                clock = time.perf_counter()
                # Reports that show sealed text (CSAT comments) take the ring, as the web passes it.
                needs_ring = report in getattr(registry, "NEEDS_RING", ())
                ring = {"ring": KeyRing.parse(dataset.ring_spec)} if needs_ring else {}
                await build(db, filters, ctx, **ring)
                built_ms = (time.perf_counter() - clock) * 1000
                captured.active = False
                selects = [
                    (s, p)
                    for s, p in captured.statements
                    if s.lstrip().upper().startswith(("SELECT", "WITH"))
                ]
                out.append(
                    f"=== {label}: built in {built_ms:.0f} ms, {len(captured.statements)} "
                    f"statements, {len(selects)} SELECTs explained\n"
                )
                summaries[label] = []
                for statement, parameters in selects:
                    async with db.engine.connect() as conn:
                        # The session settings the build made first (``SET LOCAL jit = off``).
                        for setting in settings_before(captured.statements, statement):
                            await conn.exec_driver_sql(setting)
                        result = await conn.exec_driver_sql(
                            "EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters
                        )
                        plan = "\n".join(row[0] for row in result.all())
                        await conn.rollback()
                    out.append(f"--- {inbox_scale._one_line(statement)}\n{plan}\n")
                    summaries[label].append(
                        {
                            "sql": inbox_scale._one_line(statement)[:160],
                            **inbox_scale._plan_summary(plan),
                        }
                    )
        await asyncio.to_thread(path.write_text, "\n".join(out))
        return summaries
    finally:
        await db.dispose()


def settings_before(statements: list[tuple[str, Any]], statement: str) -> list[str]:
    """The ``SET`` statements captured before ``statement`` (in the same build)."""
    found = []
    for text, _parameters in statements:
        if text == statement:
            break
        if text.lstrip().upper().startswith("SET "):
            found.append(text)
    return found
