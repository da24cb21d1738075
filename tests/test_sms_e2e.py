"""End to end: a patient texts (the fake Twilio posts a signed webhook), staff reply, a real
`hub worker` process sends through the real twilio SDK to the fake API, and status callbacks
come back. Real Redis and RQ; PostgreSQL or SQLite per the run."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from hub.consent.exceptions import ConsentRefused
from hub.consent.models import ConsentRecord, ConsentSource, ConsentState
from hub.enums import Direction, MessageStatus
from hub.inbox import actions
from hub.inbox.models import Attachment, AttachmentState, DeliveryAttempt, Message
from tests.stack import WAIT_S, Stack, eventually
from tests.twilio_helpers import CLINIC_NUMBER, PATIENT_NUMBER

pytestmark = pytest.mark.slow


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


FOLLOW_UP = """\
key: e2e_follow_up
name: Follow-up
purpose: care
anchor: enrollment
steps:
  - id: thanks
    offset: +0h
    template: visit_follow_up
    channels: [sms]
"""


async def test_a_due_journey_step_goes_out_through_the_tick_and_a_real_worker(
    stack: Stack,
) -> None:
    """serve's tick claims the due step and enqueues a batch; the worker process dispatches it
    through consent and templates and sends it through the SDK; it arrives once."""
    from hub.audit import Actor
    from hub.journeys import actions as journeys
    from hub.journeys.models import RunStatus, StepRun
    from hub.templates.actions import do_seed_templates

    await do_seed_templates(stack.db)
    from hub.inbox.schemas import NewPatient

    patient_id = await actions.do_create_patient(
        stack.db,
        stack.ring,
        Actor.system("test"),
        NewPatient(name="Avery Sample", phone=PATIENT_NUMBER, verified=True),
        region="US",
    )
    await journeys.do_install_journey(stack.db, Actor.system("test"), FOLLOW_UP, "e2e.yaml")
    await journeys.do_enroll(stack.db, Actor.system("test"), "e2e_follow_up", patient_id)

    await stack.fake.wait_for(lambda f: len(f.messages) == 1, timeout=WAIT_S)
    assert "thank you for visiting" in stack.fake.messages[0].body

    async def run_sent() -> bool:
        async with stack.db.reader() as session:
            run = (await session.scalars(select(StepRun))).one()
        return run.status is RunStatus.SENT

    await eventually(run_sent, "the step run to be recorded as sent")
    from worker.jobs import run_dispatch_batch

    async with stack.db.reader() as session:
        run_id = (await session.scalars(select(StepRun))).one().id
    assert await run_dispatch_batch([run_id], stack.settings) == "gone: 1"
    assert len(stack.fake.messages) == 1


async def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(stack: Stack) -> None:
    """SIGKILL the worker (and the batch it runs) while the batch's messages are on their way
    to Twilio, start another: every due step reaches its patient exactly once (counted at the
    fake Twilio API). The batch had claimed every message; the ones Twilio got are found there
    and recorded, the others are sent again."""
    from hub.audit import Actor
    from hub.inbox.schemas import NewPatient
    from hub.journeys import actions as journeys
    from hub.templates.actions import do_seed_templates

    patients = 150
    await do_seed_templates(stack.db)
    await journeys.do_install_journey(stack.db, Actor.system("test"), FOLLOW_UP, "e2e.yaml")
    # Paused while enrolling, so one tick claims every step into one batch.
    await journeys.do_set_journey_status(stack.db, Actor.system("test"), "e2e_follow_up", "paused")
    for n in range(patients):
        pid = await actions.do_create_patient(
            stack.db,
            stack.ring,
            Actor.system("test"),
            NewPatient(name=f"Synthetic Person {n}", phone=f"+1555020{n:04d}", verified=True),
            region="US",
        )
        await journeys.do_enroll(stack.db, Actor.system("test"), "e2e_follow_up", pid)
    stack.fake.api_latency = 0.2  # a slow provider: the batch is mid-send for a while
    await journeys.do_set_journey_status(stack.db, Actor.system("test"), "e2e_follow_up", "active")

    await stack.fake.wait_for(lambda f: 0 < len(f.messages) < patients, timeout=WAIT_S)
    stack.kill_worker()
    at_kill = len(stack.fake.messages)
    stack.fake.api_latency = 0.0
    async with stack.db.reader() as session:
        statuses = (await session.scalars(select(Message.status))).all()
    # The batch claimed every message's first attempt before sending any: none is queued.
    assert len(statuses) == patients and MessageStatus.QUEUED not in statuses
    stack.start_worker()

    async def settled() -> bool:
        async with stack.db.reader() as session:
            waiting = await session.scalar(
                select(func.count())
                .select_from(Message)
                .where(Message.provider_message_id.is_(None))
            )
        return waiting == 0

    await eventually(settled, "every message to have Twilio's id recorded", timeout=60)
    numbers = [m.to for m in stack.fake.messages]
    assert len(numbers) == patients == len(set(numbers)), (at_kill, len(numbers))
    async with stack.db.reader() as session:
        sids = set((await session.scalars(select(Message.provider_message_id))).all())
    assert sids == {m.sid for m in stack.fake.messages}


async def _between(count: Any, low: int, high: int) -> bool:
    n = await count()
    return bool(low <= n <= high)


async def _equals(count: Any, value: int) -> bool:
    return bool(await count() == value)
