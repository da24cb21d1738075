""" "Send a test to me" (hub/journeys/trial.py): the worker renders the journey's step texts for
the made-up sample patient and emails them to the requesting staff member's own address,
through the hub's SMTP relay with the email channel's connection settings (as staff alerts go).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import aiosmtplib

from hub.channels.email_smtp.adapter import EmailSmtpAdapter
from hub.channels.email_smtp.compose import OutgoingEmail, compose, make_message_id
from hub.config import Settings
from hub.journeys.trial import do_test_mail
from worker.runtime import job_runtime

log = logging.getLogger(__name__)


def send_journey_test(test: str) -> str:
    """RQ entry point; ``test`` is an encoded hub.journeys.trial.TrialRequest."""
    return asyncio.run(run_journey_test(test))


async def run_journey_test(test: str, settings: Settings | None = None) -> str:
    async with job_runtime(settings) as rt:
        if not rt.settings.email_connected:
            return "not sent: email is not set up on this hub"
        mail = await do_test_mail(rt.db, test, rt.settings.clinic)
        if mail is None:
            return "not sent: the staff member or the journey is gone"
        adapter = EmailSmtpAdapter.from_settings(rt.settings)
        message = OutgoingEmail(
            to=mail.to,
            from_address=adapter.from_address,
            from_name=adapter.from_name,
            subject=mail.subject,
            text=mail.text,
            message_id=make_message_id(uuid.uuid4(), adapter.message_id_domain),
            auto_generated=True,
        )
        await aiosmtplib.send(
            compose(message).as_bytes(),
            sender=adapter.from_address,
            recipients=[mail.to],
            **adapter.connection(),
        )
        log.info("journey test sent", extra={"journey": test.split("|")[1]})
        return "sent"
