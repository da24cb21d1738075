"""A demo-mode hub for tests: what `hub demo` serves (its stand-ins, the simulator, the demo
data and passwords), on a real port with a real `hub worker`, in the test's own database."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import redis

from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database
from hub.demo import DEMO_PASSWORDS_FILE, DemoSummary, load_demo_data
from hub.templates.actions import do_seed_templates
from tests.conftest import hub_env, sync_url
from tests.stack import free_port
from web.demo import DemoRun, prepare_demo
from web.simulator import SIMULATOR
from web.simulator_feed import Simulator

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class DemoHub:
    settings: Settings
    db: Database
    ring: KeyRing
    summary: DemoSummary
    run: DemoRun
    url: str

    @property
    def sim(self) -> Simulator:
        return self.run.app[SIMULATOR]


async def load(db: Database, ring: KeyRing, var: Path) -> DemoSummary:
    return await load_demo_data(db, ring, "US", var / DEMO_PASSWORDS_FILE)


def demo_settings(db_url: str, redis_url: str, ring: KeyRing, var: Path, port: int) -> Settings:
    return Settings(
        database_url=db_url,
        redis_url=redis_url,
        keys=ring,
        public_url=f"http://127.0.0.1:{port}",
        port=port,
        var_dir=var,
        log_format="text",
        send_retry_base_s=0.2,
    )


@contextlib.asynccontextmanager
async def demo_hub(
    db_url: str,
    redis_url: str,
    aiohttp_server: Any,
    tmp_path: Path,
    *,
    worker: bool = True,
    ring: KeyRing | None = None,
) -> AsyncIterator[DemoHub]:
    """`hub demo` in-process: prepare_demo's app served where its public URL says, plus a
    worker started with the environment the demo gives its own."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()  # no jobs or sessions of other tests
    client.close()
    ring = ring or KeyRing.generate("sim1")  # a restart passes the first run's
    var = tmp_path / "var"
    port = free_port()
    settings = demo_settings(db_url, redis_url, ring, var, port)
    db = Database.connect(db_url)
    await do_seed_templates(db)  # as `hub migrate` (run by `hub demo`) does
    summary = await load(db, ring, var)
    run = prepare_demo(settings, ring, summary)
    await aiohttp_server(run.app, port=port)
    process = None
    if worker:
        env = {k: v for k, v in run.worker_env.items() if k.startswith(("HUB_", "TWILIO_"))}
        env = hub_env(**env, HUB_DATABASE_URL=sync_url(db_url), HUB_LOG_LEVEL="WARNING")
        process = subprocess.Popen([sys.executable, "-m", "hub", "worker"], env=env)
    try:
        yield DemoHub(run.settings, db, ring, summary, run, f"http://127.0.0.1:{port}")
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        await db.dispose()


def browser_session() -> aiohttp.ClientSession:
    """A client that keeps cookies for 127.0.0.1, as a browser does."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def simulator_token(session: aiohttp.ClientSession, url: str, number: str) -> str:
    """Open the simulator as ``number``; returns the page's form token."""
    async with session.get(f"{url}/simulator", params={"number": number}) as response:
        assert response.status == 200, await response.text()
        found = CSRF_INPUT.search(await response.text())
    assert found is not None
    return found.group(1)


async def sign_in_as(session: aiohttp.ClientSession, url: str, email: str) -> str:
    """One click on the demo sign-in list; returns the session's CSRF token."""
    async with session.get(f"{url}/login") as response:
        page = await response.text()
    token = CSRF_INPUT.search(page)
    assert token is not None
    async with session.post(
        f"{url}/login/demo",
        data={"csrf_token": token.group(1), "email": email},
        allow_redirects=False,
    ) as response:
        assert response.status == 303, await response.text()
        assert response.headers["Location"] == "/"
    async with session.get(f"{url}/") as response:
        home = await response.text()
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', home)
    assert csrf is not None and csrf.group(1)
    return csrf.group(1)
