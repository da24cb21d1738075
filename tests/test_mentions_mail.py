"""The alert email to someone mentioned or assigned while offline (issue 16), sent by the worker
through a real SMTP relay (aiosmtpd): a link and nothing else, only when they have no live
socket, once per person and conversation per window, and tried again when the relay fails."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import redis
from rq import Queue
from sqlalchemy import select

from fakes.smtp import FakeSmtp
from hub.audit import Actor
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Role
from hub.inbox import actions
from hub.inbox.actions.assignment import do_assign
from hub.inbox.actions.conversations import do_add_note
from hub.inbox.models import Conversation
from hub.inbox.schemas import NewPatient
from hub.outbox import release_events
from hub.presence import ONLINE
from tests.stack import Stack, eventually
from tests.test_mentions import conversation_of, person
from web.keys import SINK
from worker.effects import OutboxSink, RedisNotifier
from worker.staff_mail import run_staff_alert

PUBLIC_URL = "https://hub.demo-clinic.example.org"
NOTE = "@Dana Agent Rowan Example asked about the biopsy result"


@pytest.fixture
async def relay() -> AsyncIterator[FakeSmtp]:
    server = FakeSmtp()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def mail_settings(
    fresh_db_url: str, redis_url: str, ring: KeyRing, tmp_path: Path, relay: FakeSmtp
) -> Settings:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    return Settings(
        database_url=fresh_db_url,
        redis_url=redis_url,
        keys=ring,
        public_url=PUBLIC_URL,
        var_dir=tmp_path / "var",
        smtp_url=relay.url,
        email_from="Demo Clinic <clinic@demo-clinic.example.org>",
    )


async def noted(db: Database, ring: KeyRing) -> tuple[uuid.UUID, uuid.UUID, list[uuid.UUID]]:
    """Rae mentions Dana in a note on Rowan's conversation: (Dana, conversation, effects)."""
    author = await person(db, "Rae Author", "rae@staff.example.org", "Front desk")
    dana = await person(db, "Dana Agent", "dana.agent@staff.example.org", "Front desk")
    cid = await conversation_of(db, "Front desk")
    rowan = await actions.do_create_patient(
        db, ring, Actor.system("test"), NewPatient(name="Rowan Example"), region="US"
    )
    async with db.transaction() as session:
        conversation = await session.get(Conversation, cid)
        assert conversation is not None
        conversation.patient_id = rowan
    result = await do_add_note(db, ring, author, cid, NOTE)
    return dana.staff_id, cid, list(result.effect_ids)


async def test_an_offline_person_mentioned_gets_one_email_with_a_link_only(
    committed_db: Database, ring: KeyRing, mail_settings: Settings, relay: FakeSmtp
) -> None:
    dana, cid, effect_ids = await noted(committed_db, ring)

    # After the commit the outbox hands the worker one job per person mentioned.
    connection = redis.Redis.from_url(mail_settings.redis_url or "")
    notifier = RedisNotifier(mail_settings.redis_url or "", ring)
    try:
        await release_events(committed_db, OutboxSink(connection, notifier), effect_ids)
        [job] = Queue("hub-default", connection=connection).get_jobs()
        assert (job.func_name, job.args) == (
            "worker.staff_mail.send_staff_alert",
            (f"mention:{dana}:{cid}",),
        )
    finally:
        await notifier.aclose()
        connection.close()

    assert await run_staff_alert("mention", dana, cid, mail_settings) == "sent"

    [mail] = relay.messages
    assert mail.rcpt_tos == ["dana.agent@staff.example.org"]
    message = mail.message
    assert message["Subject"] == "You were mentioned in a conversation"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content().strip() == (
        f"You were mentioned in a conversation: {PUBLIC_URL}/conversations/{cid}"
    )
    for phi in (b"Rowan", b"biopsy", b"Rae Author"):
        assert phi not in mail.raw

    # More notes within the window: no second email about this conversation.
    assert (await run_staff_alert("mention", dana, cid, mail_settings)).startswith("not sent")
    assert len(relay.messages) == 1


async def test_someone_online_is_told_by_the_socket_not_by_email(
    committed_db: Database, ring: KeyRing, mail_settings: Settings, relay: FakeSmtp
) -> None:
    dana, cid, _ = await noted(committed_db, ring)
    client = redis.Redis.from_url(mail_settings.redis_url or "")
    try:
        client.zadd(ONLINE, {str(dana): time.time()})
        assert await run_staff_alert("mention", dana, cid, mail_settings) == (
            "not sent: they are online"
        )
        # A socket whose last heartbeat is long gone does not count.
        client.zadd(ONLINE, {str(dana): time.time() - 3600})
        assert await run_staff_alert("mention", dana, cid, mail_settings) == "sent"
    finally:
        client.close()
    assert len(relay.messages) == 1


async def test_a_refused_email_is_tried_again_by_the_next_alert(
    committed_db: Database, ring: KeyRing, mail_settings: Settings, relay: FakeSmtp
) -> None:
    dana, cid, _ = await noted(committed_db, ring)
    relay.refuse("dana.agent@staff.example.org", 451, "4.3.0 try again later")

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await run_staff_alert("mention", dana, cid, mail_settings)

    relay._refusals.clear()  # the relay takes mail again
    assert await run_staff_alert("mention", dana, cid, mail_settings) == "sent"
    assert len(relay.messages) == 1


async def test_a_person_assigned_while_offline_is_emailed_a_link(
    committed_db: Database, ring: KeyRing, mail_settings: Settings, relay: FakeSmtp
) -> None:
    lead = await person(
        committed_db, "Lee Lead", "lee@staff.example.org", "Front desk", role=Role.ADMIN
    )
    dana = await person(committed_db, "Dana Agent", "dana.agent@staff.example.org", "Front desk")
    cid = await conversation_of(committed_db, "Front desk")
    await do_assign(committed_db, lead.actor, cid, dana.staff_id)

    assert await run_staff_alert("assigned", dana.staff_id, cid, mail_settings) == "sent"

    [mail] = relay.messages
    assert mail.message["Subject"] == "A conversation was assigned to you"
    assert f"{PUBLIC_URL}/conversations/{cid}" in mail.message.get_content()


@pytest.mark.slow
async def test_a_real_hub_worker_emails_the_mentioned_person_through_the_relay(
    mail_stack: Stack, relay: FakeSmtp
) -> None:
    stack = mail_stack
    await person(stack.db, "Noor Patel", "noor.patel@staff.example.org", role=Role.ADMIN)
    await stack.text_from_patient("Can I bring my daughter to the scan?")
    conversation = await eventually(_conversation_of(stack), "the patient's conversation")

    note = await do_add_note(
        stack.db, stack.ring, stack.staff, conversation.id, "@Noor Patel can you answer this?"
    )
    await release_events(stack.db, stack.app[SINK], note.effect_ids)

    await relay.wait_for(
        lambda f: any("noor.patel@staff.example.org" in m.rcpt_tos for m in f.messages),
        timeout=30,
    )
    [mail] = [m for m in relay.messages if "noor.patel@staff.example.org" in m.rcpt_tos]
    assert mail.message.get_content().strip() == (
        f"You were mentioned in a conversation: {stack.hub_url}/conversations/{conversation.id}"
    )
    assert b"daughter" not in mail.raw and b"answer this" not in mail.raw


def _conversation_of(stack: Stack) -> Any:
    async def found() -> Any:
        async with stack.db.reader() as session:
            return (await session.scalars(select(Conversation))).first()

    return found
