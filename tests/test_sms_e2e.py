"""End to end: a patient texts (the fake Twilio posts a signed webhook), staff reply, a real
`hub worker` process sends through the real twilio SDK to the fake API, and status callbacks
come back. Real Redis and RQ; PostgreSQL or SQLite per the run."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from fakes.twilio import FakeTwilio, start_fake_twilio
from hub.config import Settings
from hub.consent.exceptions import ConsentRefused
from hub.consent.models import ConsentRecord, ConsentSource, ConsentState
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Direction, MessageStatus
from hub.inbox import actions
from hub.inbox.access import StaffContext
from hub.inbox.models import Attachment, AttachmentState, Conversation, DeliveryAttempt, Message
from hub.outbox import release_events
from tests.conftest import hub_env, make_staff, sync_url
from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN, CLINIC_NUMBER, PATIENT_NUMBER
from web.app import create_app
from web.keys import SINK

pytestmark = pytest.mark.slow

WAIT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(
    check: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT_S
) -> Any:
    """Poll a condition (database state written by another process) until true or timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Stack:
    settings: Settings
    db: Database
    ring: KeyRing
    fake: FakeTwilio
    app: Any
    staff: StaffContext
    worker_log: Path
    hub_url: str

    async def text_from_patient(
        self, body: str, *, media: tuple[tuple[str, bytes], ...] = (), number: str = PATIENT_NUMBER
    ) -> None:
        status, text = await self.fake.send_inbound(
            f"{self.hub_url}/webhooks/twilio/sms", number, CLINIC_NUMBER, body, media=media
        )
        assert status == 200, text

    async def conversation(self) -> Conversation:
        async with self.db.reader() as session:
            return (await session.scalars(select(Conversation))).one()

    async def reply(self, body: str) -> uuid.UUID:
        conversation = await self.conversation()
        queued = await actions.do_reply(self.db, self.ring, self.staff, conversation.id, body)
        await release_events(self.db, self.app[SINK], queued.effect_ids)
        return queued.message_id

    async def message(self, message_id: uuid.UUID) -> Message:
        async with self.db.reader() as session:
            found = await session.get(Message, message_id)
            assert found is not None
            return found

    async def status_is(self, message_id: uuid.UUID, *statuses: MessageStatus) -> bool:
        return (await self.message(message_id)).status in statuses


@pytest.fixture
async def stack(
    fresh_db_url: str, redis_url: str, aiohttp_server: Any, tmp_path: Path
) -> AsyncIterator[Stack]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()  # no jobs left over from other tests for this worker to pick up
    client.close()
    ring = KeyRing.generate("e2e1")
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    runner, fake_base = await start_fake_twilio(fake)
    port = _free_port()
    hub_url = f"http://127.0.0.1:{port}"
    settings = Settings(
        database_url=fresh_db_url,
        redis_url=redis_url,
        keys=ring,
        public_url=hub_url,
        port=port,
        var_dir=tmp_path / "var",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_base=fake_base,
        twilio_from_number=CLINIC_NUMBER,
        send_retry_base_s=0.2,
        log_format="text",
    )
    db = Database.connect(fresh_db_url)
    app = create_app(settings)
    await aiohttp_server(app, port=port)
    staff = await make_staff(db)
    worker_log = tmp_path / "worker.log"
    env = hub_env(
        HUB_DATABASE_URL=sync_url(fresh_db_url),
        HUB_REDIS_URL=redis_url,
        HUB_KEYS=ring.to_spec(),
        HUB_PUBLIC_URL=hub_url,
        HUB_VAR_DIR=str(tmp_path / "var"),
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_API_BASE=fake_base,
        TWILIO_FROM_NUMBER=CLINIC_NUMBER,
        HUB_SEND_RETRY_BASE_SECONDS="0.2",
        HUB_LOG_LEVEL="DEBUG",
    )
    with worker_log.open("wb") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "hub", "worker"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            yield Stack(settings, db, ring, fake, app, staff, worker_log, hub_url)
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            await runner.cleanup()
            await db.dispose()


async def test_reply_is_delivered_and_a_late_sent_does_not_regress_it(stack: Stack) -> None:
    stack.fake.script(PATIENT_NUMBER, outcomes=[["delivered", "sent"]])
    await stack.text_from_patient("Can I get a refill of my prescription?")
    message_id = await stack.reply("Yes, it will be ready tomorrow after 10am.")

    await stack.fake.wait_for(lambda f: len(f.callbacks) == 2, timeout=WAIT_S)
    sent = stack.fake.messages[0]
    assert (sent.to, sent.from_, sent.body) == (
        PATIENT_NUMBER,
        CLINIC_NUMBER,
        "Yes, it will be ready tomorrow after 10am.",
    )
    assert [c.params["MessageStatus"] for c in stack.fake.callbacks] == ["delivered", "sent"]
    assert all(c.status == 204 for c in stack.fake.callbacks)
    await eventually(lambda: stack.status_is(message_id, MessageStatus.DELIVERED), "delivered")
    message = await stack.message(message_id)
    assert message.provider_message_id == sent.sid
    assert message.delivered_at is not None and message.send_attempts == 1


async def test_stop_refuses_replies_without_a_provider_call_and_start_restores(
    stack: Stack,
) -> None:
    await stack.text_from_patient("STOP")
    with pytest.raises(ConsentRefused, match="patient opted out of SMS"):
        await stack.reply("Your appointment is confirmed.")
    assert stack.fake.requests == []

    await stack.text_from_patient("START")
    message_id = await stack.reply("Your appointment is confirmed.")
    await eventually(lambda: stack.status_is(message_id, MessageStatus.DELIVERED), "delivered")
    assert [m.body for m in stack.fake.messages] == ["Your appointment is confirmed."]


async def test_21610_from_twilio_revokes_consent_and_fails_without_retry(stack: Stack) -> None:
    stack.fake.script(PATIENT_NUMBER, api_errors=[21610])
    await stack.text_from_patient("hello")
    message_id = await stack.reply("We have an opening on Friday.")
    await eventually(lambda: stack.status_is(message_id, MessageStatus.FAILED), "failed")
    message = await stack.message(message_id)
    assert message.error_code == "21610"
    assert "opted out of SMS" in (message.error_reason or "")
    async with stack.db.reader() as session:
        records = (await session.scalars(select(ConsentRecord))).all()
    assert records and all(
        r.state is ConsentState.REVOKED and r.source is ConsentSource.PROVIDER for r in records
    )
    assert len(stack.fake.requests) == 1  # never retried
    with pytest.raises(ConsentRefused, match="patient opted out of SMS"):
        await stack.reply("Are you still there?")


async def test_30003_twice_then_success_reaches_the_patient_once(stack: Stack) -> None:
    stack.fake.script(
        PATIENT_NUMBER,
        outcomes=[
            ["sent", "undelivered:30003"],
            ["sent", "undelivered:30003"],
            ["sent", "delivered"],
        ],
    )
    await stack.text_from_patient("hello")
    message_id = await stack.reply("Reminder: bring your insurance card.")
    await eventually(lambda: stack.status_is(message_id, MessageStatus.DELIVERED), "delivered")
    assert len(stack.fake.messages) == 3
    async with stack.db.reader() as session:
        attempts = (
            await session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.attempt))
        ).all()
    assert [(a.attempt, a.status, a.error_code) for a in attempts] == [
        (1, MessageStatus.UNDELIVERED, "30003"),
        (2, MessageStatus.UNDELIVERED, "30003"),
        (3, MessageStatus.DELIVERED, None),
    ]

    # A duplicated job for the same message finds it delivered and calls nobody.
    from rq import Queue
    from rq.job import JobStatus

    connection = redis.Redis.from_url(stack.settings.redis_url or "")
    job = Queue("hub-urgent", connection=connection).enqueue(
        "worker.jobs.send_message", str(message_id)
    )

    async def finished() -> bool:
        return job.get_status(refresh=True) in (JobStatus.FINISHED, JobStatus.FAILED)

    await eventually(finished, "the duplicate job to run")
    assert job.get_status() == JobStatus.FINISHED and job.return_value() == "already delivered"
    connection.close()
    assert len(stack.fake.messages) == 3


async def test_mms_media_is_fetched_with_credentials_and_stored_encrypted(stack: Stack) -> None:
    photo = b"\xff\xd8\xff\xe0 synthetic jpeg bytes"
    await stack.text_from_patient("photo of the rash", media=(("image/jpeg", photo),))

    async def stored() -> Attachment | None:
        async with stack.db.reader() as session:
            att = (await session.scalars(select(Attachment))).one()
            return att if att.state is AttachmentState.STORED else None

    attachment = await eventually(stored, "the attachment to be stored")
    assert photo not in (attachment.data_enc or b"")
    assert attachment.unseal_bytes(stack.ring, "data") == photo
    assert attachment.source_url is None
    media_gets = [r for r in stack.fake.requests if "/Media/" in r.path]
    assert [r.status for r in media_gets] == [200]


async def test_no_plaintext_body_or_phone_in_database_or_logs(
    stack: Stack, fresh_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.test_phi_at_rest import _dump

    caplog.set_level("DEBUG")
    body_in, body_out = "chest pain since Tuesday", "Please call 911 now"
    await stack.text_from_patient(body_in)
    message_id = await stack.reply(body_out)
    await eventually(lambda: stack.status_is(message_id, MessageStatus.DELIVERED), "delivered")
    await stack.db.dispose()

    dump = _dump(fresh_db_url)
    worker_log = stack.worker_log.read_bytes()
    assert b"send" in worker_log.lower()  # the worker did log, and its log is checked
    server_log = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records).encode()
    for needle in [body_in.encode(), body_out.encode(), b"5550100101", b"555-010-0101"]:
        assert needle not in dump, needle
        assert needle not in worker_log, needle
    for needle in [body_in.encode(), body_out.encode()]:
        assert needle not in server_log, needle


async def test_reply_queued_before_a_stop_is_failed_at_send_time(stack: Stack) -> None:
    """The worker re-checks consent: a STOP that lands between queueing and sending wins."""
    from worker.jobs import run_send_message

    await stack.text_from_patient("hello")
    conversation = await stack.conversation()
    queued = await actions.do_reply(
        stack.db, stack.ring, stack.staff, conversation.id, "Your lab results are in."
    )  # not released: no job yet
    await stack.text_from_patient("STOP")
    outcome = await run_send_message(queued.message_id, stack.settings)
    assert outcome.startswith("refused: patient opted out of SMS")
    message = await stack.message(queued.message_id)
    assert message.status is MessageStatus.FAILED and message.error_code == "opted_out"
    assert [m for m in stack.fake.messages if m.to == PATIENT_NUMBER] == []
    assert message.direction is Direction.OUTBOUND
