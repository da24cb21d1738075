"""`hub demo`: the web app, a worker process, and (without Twilio credentials) the local fake
Twilio API, so replies go out and status callbacks come back with no account; without an SMTP
relay, a local one that keeps the mail under ./var/demo-mail/, so email works too. The patient
simulator (web/simulator.py) plays the demo's patients through those stand-ins."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from email.utils import parseaddr
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from fakes.smtp import FakeSmtp
from fakes.twilio import FakeTwilio, start_fake_twilio
from hub.config import Settings
from hub.crypto import KeyRing
from hub.demo import DEMO_CLINIC_NUMBER, DEMO_LIVE_TEXTS, DEMO_PASSWORDS_FILE, DemoSummary
from web.app import create_app
from web.simulator import install
from web.simulator_feed import Simulator

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0
"""How long the demo waits for its own server before giving up on the live texts."""
DEMO_CLINIC_NAME = "Demo Clinic"
"""The clinic's name in the demo's messages unless HUB_CLINIC_NAME gives one: the setting's
generic default would have the first reminder say "your The clinic appointment"."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_fake_twilio(settings: Settings) -> tuple[Settings, FakeTwilio | None, int]:
    """Settings pointing at a local fake Twilio unless real credentials are configured."""
    if settings.twilio_account_sid and settings.twilio_auth_token:
        return settings, None, 0
    port = _free_port()
    fake = FakeTwilio("AC" + secrets.token_hex(16), secrets.token_hex(16), callback_delay=0.5)
    settings = replace(
        settings,
        twilio_account_sid=fake.account_sid,
        twilio_auth_token=fake.auth_token,
        twilio_api_base=f"http://127.0.0.1:{port}",
        twilio_from_number=DEMO_CLINIC_NUMBER,
    )
    return settings, fake, port


DEMO_EMAIL_FROM = "Demo Clinic <front-desk@demo-clinic.example.org>"
DEMO_MAIL_DIR = "demo-mail"


def with_local_mail(settings: Settings) -> tuple[Settings, FakeSmtp | None]:
    """Settings pointing at a local relay that keeps mail on disk, unless SMTP is configured."""
    if settings.email_connected:
        return settings, None
    relay = FakeSmtp(port=_free_port(), save_dir=settings.var_dir / DEMO_MAIL_DIR)
    settings = replace(
        settings,
        smtp_url=relay.url,
        email_from=settings.email_from or DEMO_EMAIL_FROM,
    )
    return settings, relay


async def _send_live_texts(settings: Settings, sim: Simulator) -> None:
    """Once the hub answers, play patients texting it through the fake (signed webhooks)."""
    health = f"http://127.0.0.1:{settings.port}/healthz"
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(health) as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                log.warning("demo: the hub did not become ready; no live texts sent")
                return
            await asyncio.sleep(0.2)
    for number, body in DEMO_LIVE_TEXTS:
        # Through the simulator, so the texts show on the patients' simulated phones too.
        status = await sim.text(number, body)
        log.info("demo: a synthetic patient texted the hub", extra={"status": status})


def _without_password(url: str) -> str:
    """The relay's URL for the banner: the account name may show, its password never."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname or ""
    return parts._replace(netloc=f"{parts.username}@{host}").geturl()


LIVE_TEXTS = web.AppKey("demo_live_texts", asyncio.Task)
"""The sample texts being played, on the run that plays them (a test can wait for them)."""
DEMO_AUTHSERV_ID = "mail.demo-clinic.example.org"
"""The demo's stand-in mail provider: the simulator writes its Authentication-Results, as the
clinic's real provider would, and the hub trusts that name only in a demo without mail set up."""


@dataclass
class DemoRun:
    """A demo ready to serve: the app, the worker's environment, the banner."""

    settings: Settings
    app: web.Application
    worker_env: dict[str, str]
    banner: list[str]


def with_demo_mail_webhook(settings: Settings) -> Settings:
    """With the local relay, the inbound-mail webhook is on too, so the simulator's patient can
    answer the clinic's mail through it; a clinic's own secret and provider are kept."""
    if settings.email_webhook_secret:
        return settings
    return replace(
        settings,
        email_webhook_secret=secrets.token_hex(32),
        trusted_authserv_id=settings.trusted_authserv_id or DEMO_AUTHSERV_ID,
    )


def with_demo_clinic_name(settings: Settings) -> Settings:
    """The demo's clinic name when HUB_CLINIC_NAME left the generic default."""
    if settings.clinic_name != Settings.clinic_name:
        return settings
    return replace(settings, clinic_name=DEMO_CLINIC_NAME)


def prepare_demo(settings: Settings, ring: KeyRing, summary: DemoSummary) -> DemoRun:
    """Settings, stand-ins and app of `hub demo`, with the patient simulator installed."""
    settings = with_demo_clinic_name(settings)
    settings, fake, fake_port = with_fake_twilio(settings)
    settings, relay = with_local_mail(settings)
    if relay is not None:
        settings = with_demo_mail_webhook(settings)
    env = dict(
        os.environ,
        HUB_REDIS_URL=settings.redis_url or "",
        HUB_KEYS=ring.to_spec(),
        HUB_VAR_DIR=str(settings.var_dir),
        HUB_PUBLIC_URL=settings.public_url,
        HUB_CLINIC_NAME=settings.clinic_name,  # the worker's reminders say it too
    )
    if relay is not None:
        env.update(HUB_SMTP_URL=relay.url, HUB_EMAIL_FROM=settings.email_from or "")
    if fake is not None:
        env.update(
            TWILIO_ACCOUNT_SID=fake.account_sid,
            TWILIO_AUTH_TOKEN=fake.auth_token,
            TWILIO_API_BASE=settings.twilio_api_base or "",
            TWILIO_FROM_NUMBER=DEMO_CLINIC_NUMBER,
        )
    app = create_app(settings)
    sim = Simulator(
        hub_url=settings.public_url,
        clinic_number=settings.twilio_from_number or DEMO_CLINIC_NUMBER,
        region=settings.default_region,
        fake=fake,
        mail_dir=settings.var_dir / DEMO_MAIL_DIR if relay is not None else None,
        mail_secret=settings.email_webhook_secret if relay is not None else None,
        authserv_id=settings.trusted_authserv_id if relay is not None else None,
        clinic_email=parseaddr(settings.email_from or "")[1] or None,
    )
    install(app, sim, summary.accounts)

    if fake is not None:
        demo_fake = fake

        async def fake_twilio(app: web.Application) -> AsyncIterator[None]:
            runner, _ = await start_fake_twilio(demo_fake, port=fake_port)
            # Only the run that loaded the patients plays their texts: a restart replays none.
            texts = (
                asyncio.create_task(_send_live_texts(settings, sim)) if summary.first_run else None
            )
            if texts is not None:
                app[LIVE_TEXTS] = texts
            yield
            if texts is not None:
                texts.cancel()
                await asyncio.gather(texts, return_exceptions=True)
            await runner.cleanup()

        app.cleanup_ctx.append(fake_twilio)

    if relay is not None:
        demo_relay = relay

        async def local_mail(app: web.Application) -> AsyncIterator[None]:
            await demo_relay.start()
            yield
            await demo_relay.stop()

        app.cleanup_ctx.append(local_mail)
    return DemoRun(settings, app, env, _banner(settings, summary, fake, relay))


def _banner(
    settings: Settings, summary: DemoSummary, fake: FakeTwilio | None, relay: FakeSmtp | None
) -> list[str]:
    twilio = (
        f"local stand-in at {settings.twilio_api_base} (no real texts leave this machine)"
        if fake is not None
        else f"your account {settings.twilio_account_sid}"
    )
    mail = (
        f"local stand-in; mail is kept in {settings.var_dir / DEMO_MAIL_DIR}/ (none leaves "
        "this machine)"
        if relay is not None
        else f"through {_without_password(settings.smtp_url or '')}"
    )
    password = (
        f"  Password: {summary.admin_password}  (kept in {settings.var_dir / DEMO_PASSWORDS_FILE})"
        if summary.admin_password
        else "  Password: the one you chose (the demo no longer knows it)"
    )
    return [
        "",
        f"  Hub demo: {settings.public_url}/",
        f"  Sign in as {summary.admin_email}, or pick a demo person on the sign-in page",
        password,
        f"  Be the patient (text, call, email the clinic): {settings.public_url}/simulator",
        f"  Synthetic patients loaded this run: {summary.patients_created}",
        f"  Twilio: {twilio}",
        f"  Email: {mail}",
        "  Press Ctrl-C to stop.",
        "",
    ]


def run_demo(settings: Settings, ring: KeyRing, summary: DemoSummary) -> None:
    run = prepare_demo(settings, ring, summary)
    worker = subprocess.Popen([sys.executable, "-m", "hub", "worker"], env=run.worker_env)
    try:
        # The banner is for the person who ran the demo, on stdout; logs go to stderr.
        sys.stdout.write("\n".join(run.banner) + "\n")
        sys.stdout.flush()
        web.run_app(
            run.app,
            host=run.settings.host,
            port=run.settings.port,
            print=None,
            handle_signals=True,
            shutdown_timeout=10,
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
