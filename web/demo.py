"""`hub demo`: the web app, a worker process, and (without Twilio credentials) the local fake
Twilio API, so replies go out and status callbacks come back with no account; without an SMTP
relay, a local one that keeps the mail under ./var/demo-mail/, so email works too."""

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
from dataclasses import replace
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from fakes.smtp import FakeSmtp
from fakes.twilio import FakeTwilio, start_fake_twilio
from hub.config import Settings
from hub.crypto import KeyRing
from hub.demo import DEMO_CLINIC_NUMBER, DEMO_LIVE_TEXTS, DemoSummary
from web.app import create_app

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0
"""How long the demo waits for its own server before giving up on the live texts."""


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


async def _send_live_texts(settings: Settings, fake: FakeTwilio) -> None:
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
        status, _ = await fake.send_inbound(
            f"{settings.public_url}/webhooks/twilio/sms", number, DEMO_CLINIC_NUMBER, body
        )
        log.info("demo: a synthetic patient texted the hub", extra={"status": status})


def _without_password(url: str) -> str:
    """The relay's URL for the banner: the account name may show, its password never."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname or ""
    return parts._replace(netloc=f"{parts.username}@{host}").geturl()


def run_demo(settings: Settings, ring: KeyRing, summary: DemoSummary) -> None:
    settings, fake, fake_port = with_fake_twilio(settings)
    settings, relay = with_local_mail(settings)
    env = dict(
        os.environ,
        HUB_REDIS_URL=settings.redis_url or "",
        HUB_KEYS=ring.to_spec(),
        HUB_VAR_DIR=str(settings.var_dir),
        HUB_PUBLIC_URL=settings.public_url,
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

    if fake is not None:
        demo_fake = fake

        async def fake_twilio(app: web.Application) -> AsyncIterator[None]:
            runner, _ = await start_fake_twilio(demo_fake, port=fake_port)
            texts = asyncio.create_task(_send_live_texts(settings, demo_fake))
            yield
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

    worker = subprocess.Popen([sys.executable, "-m", "hub", "worker"], env=env)
    try:
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
        banner = [
            "",
            f"  Hub demo: {settings.public_url}/",
            f"  Sign in as {summary.admin_email}",
            f"  One-time password: {summary.admin_password}  (change it at first sign-in)",
            f"  Synthetic patients loaded this run: {summary.patients_created}",
            f"  Twilio: {twilio}",
            f"  Email: {mail}",
            "  Press Ctrl-C to stop.",
            "",
        ]
        # The banner is for the person who ran the demo, on stdout; logs go to stderr.
        sys.stdout.write("\n".join(banner) + "\n")
        sys.stdout.flush()
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
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
