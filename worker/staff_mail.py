"""The alert email to a staff member who was mentioned or given a conversation while offline.

It carries a link and nothing else about the conversation (no patient name, no message text):
the person signs in to read it, where access is checked and the read audited. It goes through
the hub's own SMTP relay (HUB_SMTP_URL) with the email channel's connection settings.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import aiosmtplib
from redis.asyncio import Redis

from hub.channels.email_smtp.adapter import EmailSmtpAdapter
from hub.channels.email_smtp.compose import OutgoingEmail, compose, make_message_id
from hub.config import Settings
from hub.inbox.actions.mentions import ALERT_KINDS, do_claim_alert, do_unclaim_alert
from hub.presence import ONLINE, STALE_AFTER_S
from worker.runtime import job_runtime

log = logging.getLogger(__name__)

SUBJECTS = {
    "mention": "You were mentioned in a conversation",
    "assigned": "A conversation was assigned to you",
}
"""Subject and first words of each alert; ``: <link>`` follows in the text."""


def send_staff_alert(alert: str) -> str:
    """RQ entry point; ``alert`` is "<kind>:<staff id>:<conversation id>"."""
    kind, staff_id, conversation_id = alert.split(":")
    return asyncio.run(run_staff_alert(kind, uuid.UUID(staff_id), uuid.UUID(conversation_id)))


async def is_online(redis_url: str, staff_id: uuid.UUID) -> bool:
    """Whether the person has a live staff socket (hub/presence.py keeps these in Redis, with
    the time of each one's last heartbeat). Someone online was told by the socket event."""
    client = Redis.from_url(redis_url)
    try:
        seen = await client.zscore(ONLINE, str(staff_id))
    finally:
        await client.aclose()
    return seen is not None and seen >= time.time() - STALE_AFTER_S


def alert_email(settings: Settings, kind: str, to: str, conversation_id: uuid.UUID) -> bytes:
    adapter = EmailSmtpAdapter.from_settings(settings)
    link = f"{settings.public_url}/conversations/{conversation_id}"
    mail = OutgoingEmail(
        to=to,
        from_address=adapter.from_address,
        from_name=adapter.from_name,
        subject=SUBJECTS[kind],
        text=f"{SUBJECTS[kind]}: {link}\n",
        message_id=make_message_id(uuid.uuid4(), adapter.message_id_domain),
        auto_generated=True,
    )
    return compose(mail).as_bytes()


async def run_staff_alert(
    kind: str, staff_id: uuid.UUID, conversation_id: uuid.UUID, settings: Settings | None = None
) -> str:
    if kind not in ALERT_KINDS:
        raise ValueError(f"unknown staff alert {kind!r}")
    async with job_runtime(settings) as rt:
        if not rt.settings.email_connected:
            return "not sent: email is not set up on this hub"
        assert rt.settings.redis_url is not None  # job_runtime checked it
        if await is_online(rt.settings.redis_url, staff_id):
            return "not sent: they are online"
        target = await do_claim_alert(rt.db, staff_id, conversation_id)
        if target is None:
            return "not sent: emailed recently, deactivated, or cannot see it"
        adapter = EmailSmtpAdapter.from_settings(rt.settings)
        try:
            await aiosmtplib.send(
                alert_email(rt.settings, kind, target.email, conversation_id),
                sender=adapter.from_address,
                recipients=[target.email],
                # The channel's own STARTTLS, AUTH and timeout, so staff mail leaves the way
                # patient mail does.
                **adapter.connection(),
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            await do_unclaim_alert(rt.db, staff_id, conversation_id, target.sent_at)
            log.warning("staff alert not sent; the relay refused or was unreachable")
            raise
        log.info("staff alert sent", extra={"kind": kind, "staff_id": str(staff_id)})
        return "sent"
