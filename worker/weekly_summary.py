"""The weekly summary mail (hub/reports/weekly.py says what it holds and when it is due).

The tick only looks, at most once a minute across workers, and enqueues the send as a job on
the default queue so a slow relay never holds up claims and sends. The job claims the week in
the database before sending; the mail leaves through the hub's own SMTP relay with the email
channel's connection settings, as the staff alerts do (worker/staff_mail.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime

import aiosmtplib
from redis import Redis
from rq import Queue

from hub.channels.email_smtp.adapter import EmailSmtpAdapter
from hub.channels.email_smtp.compose import OutgoingEmail, compose, make_message_id
from hub.config import Settings
from hub.db import Database, utcnow
from hub.reports import weekly
from worker.effects import QUEUE_NAMES
from worker.runtime import job_runtime

log = logging.getLogger(__name__)

WEEKLY_CHECK_KEY = "hub:reports:weekly:checked"
WEEKLY_CHECK_EVERY_S = 60
"""How often the tick reads whether the week's summary is due (a few rows, once a minute)."""
WEEKLY_JOB = "worker.weekly_summary.send_weekly_summary"


async def start_weekly_summary(db: Database, redis: Redis, now: datetime | None = None) -> bool:
    """Called by every tick: enqueue this week's summary when it is due. True when enqueued."""
    if not redis.set(WEEKLY_CHECK_KEY, "1", nx=True, ex=WEEKLY_CHECK_EVERY_S):
        return False
    week = await weekly.do_weekly_due(db, now)
    if week is None:
        return False
    # One job id per week: a second worker's tick within the minute finds it queued.
    Queue(QUEUE_NAMES["default"], connection=redis).enqueue(
        WEEKLY_JOB, job_id=f"hub-weekly-summary-{week.monday.isoformat()}", failure_ttl=86400
    )
    return True


def send_weekly_summary() -> str:
    """RQ entry point."""
    return asyncio.run(run_weekly_summary())


def summary_email(settings: Settings, to: str, subject: str, text: str) -> bytes:
    adapter = EmailSmtpAdapter.from_settings(settings)
    mail = OutgoingEmail(
        to=to,
        from_address=adapter.from_address,
        from_name=adapter.from_name,
        subject=subject,
        text=text,
        message_id=make_message_id(uuid.uuid4(), adapter.message_id_domain),
        auto_generated=True,
    )
    return compose(mail).as_bytes()


async def run_weekly_summary(settings: Settings | None = None, now: datetime | None = None) -> str:
    async with job_runtime(settings) as rt:
        if not rt.settings.email_connected:
            return "not sent: email is not set up on this hub"
        week = await weekly.do_weekly_due(rt.db, now or utcnow())
        if week is None:
            return "not sent: switched off, not due yet, or sent already"
        recipients = await weekly.do_weekly_recipients(rt.db)
        if not recipients:
            return "not sent: no active admin"
        claim = await weekly.do_claim_week(rt.db, week)
        if not claim.won:
            return "not sent: another worker sent it"
        try:
            reports = await weekly.do_weekly_reports(rt.db, week, recipients[0].ctx)
        except Exception:
            await weekly.do_unclaim_week(rt.db, week, claim.before)
            raise
        text = weekly.summary_text(
            reports, week, rt.settings.clinic_name, f"{rt.settings.public_url}/reports"
        )
        subject = weekly.summary_subject(week)
        adapter = EmailSmtpAdapter.from_settings(rt.settings)
        sent = 0
        for person in recipients:
            try:
                await aiosmtplib.send(
                    summary_email(rt.settings, person.email, subject, text),
                    sender=adapter.from_address,
                    recipients=[person.email],
                    **adapter.connection(),
                )
                sent += 1
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                log.warning("weekly summary not sent to one admin; the relay refused")
        if sent == 0:
            # Nobody got it: give the week back so the job's retry or a later tick sends it.
            await weekly.do_unclaim_week(rt.db, week, claim.before)
            raise RuntimeError("weekly summary: the relay refused every recipient")
        log.info("weekly summary sent", extra={"week": week.monday.isoformat(), "sent": sent})
        return f"sent to {sent} of {len(recipients)} admins"
