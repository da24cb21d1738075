"""CSAT after resolution: a team switches it on, a person resolves a conversation, and after
the team's delay the patient gets one question on the conversation's channel, through the
consent gate (surveys), deferred by quiet hours, called off when the conversation reopens. The
answer ("5", "4 great") is the survey answer of that resolution and leaves the conversation
resolved; anything else is an ordinary message."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from hub.audit import Actor
from hub.channels.base import InboundMessage
from hub.consent import actions as consent
from hub.consent.models import ConsentSource, ConsentState, Purpose
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, ConversationStatus, Direction, MessageStatus
from hub.inbox import actions
from hub.inbox.access import StaffContext
from hub.inbox.actions import conversations
from hub.inbox.event_models import ConversationEvent, StatusEvent
from hub.inbox.models import Conversation, Message, Team
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.csat import (
    CANCELLED_CODE,
    CSAT_KEY,
    REOPENED,
    SWITCHED_OFF,
    WROTE_AGAIN,
    CsatChoice,
    do_set_team_csat,
    journey_definition,
    read_answer,
)
from hub.journeys.csat_models import CsatSetting, CsatSurvey
from hub.journeys.dispatch import PreparedBatch, do_prepare_batch, providers_for
from hub.journeys.models import Enrollment, EnrollmentStatus, RunStatus, StepRun, SurveyAnswer
from hub.journeys.parse import load_examples
from hub.templates.actions import do_seed_templates, load_seed
from tests.conftest import make_staff
from tests.test_shipped_journeys import unkept_promises

SYSTEM = Actor.system("test")
CLINIC = {"name": "Demo Clinic", "phone": "+15550109999"}
CLINIC_NUMBER = "+15550109999"
PHONE = "+15550100101"
NOON = datetime(2026, 11, 20, 12, tzinfo=UTC)
"""A Friday noon in the patient's zone (UTC): inside the 08:00-21:00 send window."""
TEAM = "Front desk"
ASKED = NOON + timedelta(hours=1, minutes=1)
"""Just past the default delay after a resolution at noon (the test clock runs on from noon)."""


@pytest.fixture(autouse=True)
def at_noon(set_clock: Any) -> None:
    set_clock(NOON)


@pytest.fixture
async def agent(db: Database) -> StaffContext:
    await do_seed_templates(db)
    ctx: StaffContext = await make_staff(
        db, "dana.agent@demo-clinic.example.org", role="agent", teams=(TEAM,)
    )
    return ctx


async def team_id(db: Database) -> uuid.UUID:
    async with db.reader() as session:
        found = await session.scalar(select(Team.id).where(Team.name == TEAM))
    assert found is not None
    return found


async def switch_on(db: Database, delay: int = 60) -> None:
    await do_set_team_csat(db, SYSTEM, await team_id(db), CsatChoice(True, delay))


async def new_patient(db: Database, ring: KeyRing, *, opted_in: bool = True) -> uuid.UUID:
    pid = await actions.do_create_patient(
        db,
        ring,
        SYSTEM,
        NewPatient(name="Avery Sample", phone=PHONE, time_zone="UTC", verified=True),
        region="US",
    )
    if opted_in:
        async with db.transaction() as session:  # surveys need the patient's opt-in
            change = consent.ConsentChange(ConsentSource.STAFF, "staff:x", "asked at the desk")
            session.add(
                change.record(
                    pid,
                    Channel.SMS,
                    Purpose.SURVEYS,
                    ConsentState.GRANTED,
                    NOON - timedelta(days=30),
                )
            )
    return pid


async def open_conversation(
    db: Database, ring: KeyRing, patient_id: uuid.UUID, channel: Channel = Channel.SMS
) -> uuid.UUID:
    """An open conversation of the team in which the patient wrote an hour ago."""
    async with db.transaction() as session:
        conversation = Conversation(
            patient_id=patient_id,
            channel=channel,
            channel_address=CLINIC_NUMBER,
            team_id=await _team(session),
            status=ConversationStatus.OPEN,
            created_at=NOON - timedelta(hours=1),
            last_activity_at=NOON - timedelta(hours=1),
        )
        session.add(conversation)
        await session.flush()
        message = Message(
            conversation_id=conversation.id,
            direction=Direction.INBOUND,
            channel=channel,
            status=MessageStatus.RECEIVED,
            created_at=NOON - timedelta(hours=1),
        )
        message.seal(ring, "body", "Can I get my results?")
        session.add(message)
        return conversation.id


async def _team(session: Any) -> uuid.UUID:
    found: uuid.UUID = await session.scalar(select(Team.id).where(Team.name == TEAM))
    return found


async def resolve(db: Database, ctx: StaffContext, conversation_id: uuid.UUID) -> None:
    await conversations.do_set_status(db, ctx, conversation_id, ConversationStatus.RESOLVED)


async def dispatch(db: Database, ring: KeyRing, at: datetime) -> PreparedBatch:
    claimed = await journeys.do_claim_due(db, now=at)
    return await do_prepare_batch(
        db,
        ring,
        claimed,
        providers=providers_for({Channel.SMS, Channel.EMAIL}, {Channel.SMS: "twilio_sms"}),
        clinic=CLINIC,
        public_url="https://hub.example.org",
        now=at,
    )


async def text_in(db: Database, ring: KeyRing, body: str) -> None:
    inbound = InboundMessage(
        provider="twilio_sms",
        provider_message_id="SM" + uuid.uuid4().hex,
        channel=Channel.SMS,
        from_address=PHONE,
        to_address=CLINIC_NUMBER,
        body=body,
    )
    await actions.do_receive_inbound(db, ring, inbound, {}, help_text="help", clinic=CLINIC)


async def rows(db: Database, model: Any) -> list[Any]:
    async with db.reader() as session:
        return list((await session.scalars(select(model))).all())


async def conversation(db: Database, conversation_id: uuid.UUID) -> Conversation:
    async with db.reader() as session:
        found = await session.get(Conversation, conversation_id)
    assert found is not None
    return found


async def surveyed(db: Database, ring: KeyRing, agent: StaffContext) -> dict[str, Any]:
    """Switched on, a conversation resolved at noon, its question sent at 13:00."""
    await switch_on(db)
    pid = await new_patient(db, ring)
    cid = await open_conversation(db, ring, pid)
    await resolve(db, agent, cid)
    batch = await dispatch(db, ring, ASKED)
    return {"patient_id": pid, "conversation_id": cid, "batch": batch}


# -- the team setting --------------------------------------------------------------------------


async def test_csat_is_off_until_a_team_switches_it_on(
    db: Database, ring: KeyRing, agent: StaffContext
) -> None:
    pid = await new_patient(db, ring)
    cid = await open_conversation(db, ring, pid)
    await resolve(db, agent, cid)
    assert await rows(db, CsatSurvey) == [] and await rows(db, Enrollment) == []
    assert (await dispatch(db, ring, NOON + timedelta(days=1))).results == ()

    # Switching on installs the shipped journey once, and only new resolutions are surveyed.
    await switch_on(db, delay=30)
    await switch_on(db, delay=30)
    [setting] = await rows(db, CsatSetting)
    assert (setting.enabled, setting.delay_minutes) == (True, 30)
    async with db.reader() as session:
        from hub.journeys.queries import journey_by_key

        journey = await journey_by_key(session, CSAT_KEY)
    assert journey is not None and journey.purpose == "surveys"
    assert await rows(db, CsatSurvey) == []


async def test_switching_off_calls_off_the_questions_not_yet_due(
    db: Database, ring: KeyRing, agent: StaffContext
) -> None:
    await switch_on(db)
    pid = await new_patient(db, ring)
    cid = await open_conversation(db, ring, pid)
    await resolve(db, agent, cid)
    await do_set_team_csat(db, SYSTEM, await team_id(db), CsatChoice(False, 60))
    [run] = await rows(db, StepRun)
    assert (run.status, run.reason) == (RunStatus.CANCELLED, SWITCHED_OFF)
    assert (await dispatch(db, ring, ASKED)).results == ()


async def test_a_bad_delay_is_refused_in_words(db: Database, agent: StaffContext) -> None:
    with pytest.raises(ValueError, match="between 1 and 10080 minutes"):
        await do_set_team_csat(db, SYSTEM, await team_id(db), CsatChoice(True, 0))
    assert await rows(db, CsatSetting) == []


# -- the question --------------------------------------------------------------------------------


async def test_a_resolution_sends_one_question_after_the_delay_on_its_channel(
    db: Database, ring: KeyRing, agent: StaffContext
) -> None:
    await switch_on(db)
    pid = await new_patient(db, ring)
    cid = await open_conversation(db, ring, pid)
    await resolve(db, agent, cid)
    [survey] = await rows(db, CsatSurvey)
    assert (survey.conversation_id, survey.agent_id, survey.channel) == (cid, agent.staff_id, "sms")
    assert survey.team_id == await team_id(db)

    # A minute before the delay is over nothing is due; at the delay, one question by text.
    assert (await dispatch(db, ring, survey.resolved_at + timedelta(minutes=59))).results == ()
    batch = await dispatch(db, ring, survey.resolved_at + timedelta(minutes=60))
    assert [r.outcome for r in batch.results] == ["sending"]
    [task] = batch.tasks
    assert (task.outbound.channel, task.outbound.to_address) == (Channel.SMS, PHONE)
    assert task.outbound.from_address == CLINIC_NUMBER
    assert "Reply with a number from 1 to 5" in task.outbound.body
    assert task.decision.purpose is Purpose.SURVEYS
    # The question is in the resolved conversation's thread, which stays resolved.
    [question] = [m for m in await rows(db, Message) if m.direction is Direction.OUTBOUND]
    assert question.conversation_id == cid
    assert (await conversation(db, cid)).status is ConversationStatus.RESOLVED

    # Resolving again (already resolved) is no new resolution; a later batch finds nothing.
    await resolve(db, agent, cid)
    assert len(await rows(db, CsatSurvey)) == 1
    assert (await dispatch(db, ring, NOON + timedelta(days=2))).results == ()


async def test_without_a_surveys_opt_in_nothing_is_sent(
    db: Database, ring: KeyRing, agent: StaffContext
) -> None:
    await switch_on(db)
    pid = await new_patient(db, ring, opted_in=False)
    cid = await open_conversation(db, ring, pid)
    await resolve(db, agent, cid)
    batch = await dispatch(db, ring, ASKED)
    assert batch.tasks == ()
    [result] = batch.results
    assert result.outcome == "failed" and "opt" in (result.reason or "")
    [run] = await rows(db, StepRun)
    assert run.status is RunStatus.FAILED


async def test_quiet_hours_defer_the_question_and_a_reopen_calls_it_off(
    db: Database, ring: KeyRing, agent: StaffContext, set_clock: Any
) -> None:
    set_clock(datetime(2026, 11, 20, 20, 30, tzinfo=UTC))  # resolved at 20:30, due 21:30
    await switch_on(db)
    pid = await new_patient(db, ring)
    cid = await open_conversation(db, ring, pid)
    await resolve(db, agent, cid)
    due = datetime(2026, 11, 20, 21, 31, tzinfo=UTC)
    batch = await dispatch(db, ring, due)
    assert [r.outcome for r in batch.results] == ["deferred"] and batch.tasks == ()
    [question] = [m for m in await rows(db, Message) if m.direction is Direction.OUTBOUND]
    assert question.status is MessageStatus.QUEUED
    assert question.next_attempt_at == datetime(2026, 11, 21, 8, tzinfo=UTC)

    # Staff reopen it before 08:00: the held question is called off, never sent.
    set_clock(datetime(2026, 11, 20, 23, tzinfo=UTC))
    await conversations.do_set_status(db, agent, cid, ConversationStatus.OPEN)
    [question] = [m for m in await rows(db, Message) if m.direction is Direction.OUTBOUND]
    assert (question.status, question.error_code) == (MessageStatus.FAILED, CANCELLED_CODE)
    [run] = await rows(db, StepRun)
    assert (run.status, run.reason) == (RunStatus.CANCELLED, REOPENED)
    [enrollment] = await rows(db, Enrollment)
    assert enrollment.status is EnrollmentStatus.CANCELLED


async def test_a_reopen_before_the_delay_cancels_the_survey(
    db: Database, ring: KeyRing, agent: StaffContext
) -> None:
    await switch_on(db)
    pid = await new_patient(db, ring)
    cid = await open_conversation(db, ring, pid)
    await resolve(db, agent, cid)
    await conversations.do_set_status(db, agent, cid, ConversationStatus.OPEN)
    [run] = await rows(db, StepRun)
    assert (run.status, run.reason) == (RunStatus.CANCELLED, REOPENED)
    assert (await dispatch(db, ring, NOON + timedelta(hours=2))).results == ()
    # Resolved again: that resolution is surveyed (once), the first one never.
    await resolve(db, agent, cid)
    surveys = await rows(db, CsatSurvey)
    assert len(surveys) == 2
    batch = await dispatch(db, ring, NOON + timedelta(hours=2))
    assert [r.outcome for r in batch.results] == ["sending"]


async def test_the_patient_writing_before_the_question_cancels_it(
    db: Database, ring: KeyRing, agent: StaffContext
) -> None:
    await switch_on(db)
    pid = await new_patient(db, ring)
    cid = await open_conversation(db, ring, pid)
    await resolve(db, agent, cid)
    await text_in(db, ring, "Oh, one more thing: is parking free?")
    [run] = await rows(db, StepRun)
    assert (run.status, run.reason) == (RunStatus.CANCELLED, WROTE_AGAIN)
    assert (await conversation(db, cid)).status is ConversationStatus.OPEN
    assert (await dispatch(db, ring, NOON + timedelta(hours=2))).results == ()


async def test_voice_conversations_are_not_surveyed(
    db: Database, ring: KeyRing, agent: StaffContext
) -> None:
    await switch_on(db)
    pid = await new_patient(db, ring)
    cid = await open_conversation(db, ring, pid, Channel.VOICE)
    await resolve(db, agent, cid)
    assert await rows(db, CsatSurvey) == []


# -- the answer ---------------------------------------------------------------------------------


async def conversations_count(db: Database) -> int:
    async with db.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(Conversation)) or 0)


async def history(db: Database, conversation_id: uuid.UUID) -> list[StatusEvent]:
    async with db.reader() as session:
        stmt = (
            select(ConversationEvent.kind)
            .where(ConversationEvent.conversation_id == conversation_id)
            .order_by(ConversationEvent.at)
        )
        return list((await session.scalars(stmt)).all())


async def test_a_score_is_recorded_and_the_conversation_stays_resolved(
    db: Database, ring: KeyRing, agent: StaffContext
) -> None:
    done = await surveyed(db, ring, agent)
    cid = done["conversation_id"]
    resolved_at = (await conversation(db, cid)).resolved_at
    await text_in(db, ring, " 5 ")
    [answer] = await rows(db, SurveyAnswer)
    assert (answer.score, answer.text_enc) == (5, None)
    after = await conversation(db, cid)
    assert (after.status, after.resolved_at) == (ConversationStatus.RESOLVED, resolved_at)
    assert await conversations_count(db) == 1  # no new ticket either
    # The answer is in the thread, as every reply is.
    # Newest last by time (a table's row order is not insertion order once rows are updated).
    inbound = sorted(
        (m for m in await rows(db, Message) if m.direction is Direction.INBOUND),
        key=lambda m: (m.created_at, m.id),
    )
    assert [m.unseal(ring, "body") for m in inbound][-1] == " 5 "
    [enrollment] = await rows(db, Enrollment)
    assert enrollment.status is EnrollmentStatus.COMPLETED
    # The status history the reports read: resolved once, never reopened by the answer.
    assert await history(db, cid) == [StatusEvent.RESOLVED]

    # A second answer is an ordinary message: it reopens the conversation for staff.
    await text_in(db, ring, "4")
    assert len(await rows(db, SurveyAnswer)) == 1
    assert (await conversation(db, cid)).status is ConversationStatus.OPEN
    assert await history(db, cid) == [StatusEvent.RESOLVED, StatusEvent.REOPENED]


async def test_words_after_the_score_are_kept_sealed_as_the_comment(
    db: Database, ring: KeyRing, agent: StaffContext
) -> None:
    done = await surveyed(db, ring, agent)
    await text_in(db, ring, "4 great, but the wait was long!")
    [answer] = await rows(db, SurveyAnswer)
    assert answer.score == 4
    assert answer.text_enc is not None and b"great" not in answer.text_enc
    assert answer.unseal(ring, "text") == "great, but the wait was long!"
    assert (await conversation(db, done["conversation_id"])).status is (ConversationStatus.RESOLVED)


async def test_a_reply_that_is_not_a_score_is_an_ordinary_message(
    db: Database, ring: KeyRing, agent: StaffContext
) -> None:
    done = await surveyed(db, ring, agent)
    await text_in(db, ring, "10 minutes late for my next visit, sorry")
    assert await rows(db, SurveyAnswer) == []
    assert (await conversation(db, done["conversation_id"])).status is ConversationStatus.OPEN
    # The question stays open: a score after it still counts, but the conversation, which
    # the patient reopened with words, stays open for staff.
    await text_in(db, ring, "3")
    [answer] = await rows(db, SurveyAnswer)
    assert answer.score == 3
    assert (await conversation(db, done["conversation_id"])).status is ConversationStatus.OPEN


async def test_a_staff_reopen_closes_a_question_already_sent(
    db: Database, ring: KeyRing, agent: StaffContext
) -> None:
    done = await surveyed(db, ring, agent)
    await conversations.do_set_status(db, agent, done["conversation_id"], ConversationStatus.OPEN)
    await text_in(db, ring, "5")
    assert await rows(db, SurveyAnswer) == []  # about a resolution that no longer stands


async def test_an_answer_after_the_window_is_an_ordinary_message(
    db: Database, ring: KeyRing, agent: StaffContext, set_clock: Any
) -> None:
    done = await surveyed(db, ring, agent)
    set_clock(ASKED + timedelta(days=7, minutes=1))
    await text_in(db, ring, "5")
    assert await rows(db, SurveyAnswer) == []
    # Past the reopen window too: a new conversation, open for staff to read.
    assert await conversations_count(db) == 2
    assert (await conversation(db, done["conversation_id"])).status is (ConversationStatus.RESOLVED)


# -- pure parts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "read"),
    [
        ("5", (5, None)),
        ("4 nice staff", (4, "nice staff")),
        ("5/5 great!", (5, "great!")),
        ("4 - quick answer", (4, "quick answer")),
        ("\uff14 ok", (4, "ok")),  # a full-width digit from a CJK keyboard
        ("3.", (3, None)),
        ("10 minutes late", None),
        ("0", None),
        ("6 stars", None),
        ("4/10", None),
        ("hello", None),
        ("", None),
    ],
)
def test_an_answer_is_a_score_from_1_to_5_and_any_words_after_it(
    text: str, read: tuple[int, str | None] | None
) -> None:
    assert read_answer(text) == read


def test_the_question_promises_only_what_the_journey_handles() -> None:
    shipped = {**load_examples(), CSAT_KEY: journey_definition()}
    assert unkept_promises(shipped, load_seed()) == []
    # And the check reads the question: without its step, its "1 to 5" is a broken promise.
    assert any("csat_question" in p for p in unkept_promises(load_examples(), load_seed()))


def test_the_journey_asks_on_text_email_and_chat_never_by_call() -> None:
    definition = journey_definition()
    assert definition.purpose is Purpose.SURVEYS
    assert {s.id: s.channels.channels for s in definition.steps} == {
        "sms": (Channel.SMS,),
        "email": (Channel.EMAIL,),
        "chat": (Channel.CHAT,),
    }
    assert all(s.survey is not None and s.survey.scale == "1-5" for s in definition.steps)
