"""CSAT after resolution: one question ("How did we do? Reply 1-5") after a person resolves a
conversation of a team that switched it on.

It is a journey, not a second sender: the shipped journey ``csat`` below is enrolled when the
conversation is resolved (anchor: the resolution; one enrollment per resolution), with one step
run on the conversation's channel due after the team's delay. The journey engine then does the
rest as for any survey: the consent gate with purpose surveys, quiet hours and caps (deferred,
never dropped), the template in the patient's language, exactly-once dispatch, and the reply
read as the answer of the open question (``hub.journeys.answers``), stored as a
``SurveyAnswer``. What is CSAT's own is here:

- a reopened conversation is not surveyed: a staff reopen cancels its survey (and closes its
  question if it went out); the patient writing again (any channel) cancels any survey whose
  question has not gone out;
- the answer may carry words after the score ("4 nice staff"), kept sealed as its comment;
- answering does not reopen the conversation: it goes back to resolved as it was.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, record
from hub.db import Database, new_id, utcnow
from hub.enums import Channel, ConversationStatus, MessageStatus
from hub.inbox.event_queries import record_status_change_in
from hub.inbox.models import Conversation, Message
from hub.journeys import csat_queries as cq
from hub.journeys import queries
from hub.journeys.csat_models import (
    DEFAULT_DELAY_MINUTES,
    MAX_DELAY_MINUTES,
    CsatSetting,
    CsatSurvey,
)
from hub.journeys.definitions import JourneyDefinition, parse_journey
from hub.journeys.models import (
    Enrollment,
    EnrollmentStatus,
    JourneyStatus,
    RunStatus,
    StepRun,
)
from hub.journeys.versions import save_version_in

CSAT_KEY = "csat"
STEPS: dict[Channel, str] = {Channel.SMS: "sms", Channel.EMAIL: "email", Channel.CHAT: "chat"}
"""The step that asks on each channel. A call cannot take a 1-5 answer, so voice (and
receive-only channels) are not surveyed."""
REOPENED = "the conversation was reopened"
WROTE_AGAIN = "the patient wrote again before the question went out"
SWITCHED_OFF = "the team switched CSAT off"
CANCELLED_CODE = "csat_cancelled"
"""Error code of a survey message held by quiet hours and called off before it went out."""
MAX_COMMENT_CHARS = 2000

JOURNEY_YAML = """\
# Shipped with the hub and installed when a team first switches CSAT on. The enrollment plans
# only the step of the resolved conversation's channel, due after the team's delay (the
# offsets below are only the default). Change the question in the template csat_question.
key: csat
name: Satisfaction after resolution (CSAT)
purpose: surveys
anchor: enrollment
description: >-
  After a person resolves a conversation of a team with CSAT on, asks the patient on the
  conversation's channel how we did, 1 to 5; words after the score are kept as a comment.
steps:
  - id: sms
    offset: +1h
    template: csat_question
    channel: sms
    asks: survey
    survey: {question: csat_sms, scale: 1-5}
    on_reply:
      score: [record_score]
  - id: email
    offset: +1h
    template: csat_question
    channel: email
    asks: survey
    survey: {question: csat_email, scale: 1-5}
    on_reply:
      score: [record_score]
  - id: chat
    offset: +1h
    template: csat_question
    channel: chat
    asks: survey
    survey: {question: csat_chat, scale: 1-5}
    on_reply:
      score: [record_score]
"""

_ANSWER = re.compile(r"(\d{1,2})(?:\s*(?:/|out of|of)\s*(\d{1,2}))?(?=$|[\s.,;:!?)\-\u2013\u2014])")
_COMMENT_EDGE = " \t\r\n.,;:!?-\u2013\u2014)"


def journey_definition() -> JourneyDefinition:
    return parse_journey(JOURNEY_YAML, "the csat journey")


@dataclass(frozen=True)
class CsatChoice:
    """A team's CSAT setting as the admin screen shows it (no row: off, default delay)."""

    enabled: bool = False
    delay_minutes: int = DEFAULT_DELAY_MINUTES


# -- reading an answer (pure) ------------------------------------------------------------------


def read_answer(text: str) -> tuple[int, str | None] | None:
    """ "4 nice staff" -> (4, "nice staff"); "5" -> (5, None); "5/5 great" -> (5, "great").
    None when the text does not start with a score from 1 to 5 ("10 minutes late", "hi"):
    then it is an ordinary message. A number first is read as the score."""
    folded = unicodedata.normalize("NFKC", text).strip()
    match = _ANSWER.match(folded)
    if match is None:
        return None
    score = int(match.group(1))
    if not 1 <= score <= 5 or match.group(2) not in (None, "5"):
        return None
    comment = folded[match.end() :].lstrip(_COMMENT_EDGE).rstrip()
    return score, (comment[:MAX_COMMENT_CHARS] or None)


# -- the team setting ----------------------------------------------------------------------------


async def settings_in(session: AsyncSession) -> dict[uuid.UUID, CsatChoice]:
    found = await cq.settings(session)
    return {t: CsatChoice(s.enabled, s.delay_minutes) for t, s in found.items()}


def check_delay(minutes: int) -> int:
    if not 1 <= minutes <= MAX_DELAY_MINUTES:
        raise ValueError(
            f"the CSAT delay must be between 1 and {MAX_DELAY_MINUTES} minutes (a week); "
            f"{minutes} is not"
        )
    return minutes


async def set_team_csat_in(
    session: AsyncSession, actor: Actor, team_id: uuid.UUID, choice: CsatChoice
) -> bool:
    """Inside the caller's transaction: switch a team's CSAT on or off and set its delay.
    Installs the csat journey on first use. Returns whether anything changed."""
    check_delay(choice.delay_minutes)
    setting = await cq.setting_of(session, team_id)
    if setting is None:
        if choice == CsatChoice():
            return False  # off with the default delay is what no row means
        setting = CsatSetting(team_id=team_id)
        session.add(setting)
    elif (setting.enabled, setting.delay_minutes) == (choice.enabled, choice.delay_minutes):
        return False
    was_on = setting.enabled
    setting.enabled, setting.delay_minutes = choice.enabled, choice.delay_minutes
    if choice.enabled and await queries.journey_by_key(session, CSAT_KEY) is None:
        await save_version_in(session, actor, JOURNEY_YAML, journey_definition())
    if was_on and not choice.enabled:
        # Off means no more questions, including those planned before (sent ones stay open).
        await cancel_in(session, SWITCHED_OFF, utcnow(), team_id=team_id)
    await session.flush()
    await record(
        session,
        actor,
        "team.csat",
        "team",
        team_id,
        {"enabled": choice.enabled, "delay_minutes": choice.delay_minutes},
    )
    return True


async def do_set_team_csat(
    db: Database, actor: Actor, team_id: uuid.UUID, choice: CsatChoice
) -> bool:
    async with db.transaction() as session:
        return await set_team_csat_in(session, actor, team_id, choice)


# -- resolution and reopening ------------------------------------------------------------------


async def status_changed_in(
    session: AsyncSession,
    conversation: Conversation,
    was: ConversationStatus,
    staff_id: uuid.UUID,
    now: datetime,
) -> None:
    """Inside a person's status change: a resolution is surveyed (when the team asks), any
    other change takes back what a survey of this conversation has not asked yet."""
    if conversation.status is ConversationStatus.RESOLVED:
        if was is not ConversationStatus.RESOLVED:
            await _survey_in(session, conversation, staff_id, conversation.resolved_at or now)
        return
    # Its question is closed too: an answer would be about a resolution that no longer stands.
    await cancel_in(session, REOPENED, now, conversation_id=conversation.id, close_asks=True)


async def _survey_in(
    session: AsyncSession, conversation: Conversation, staff_id: uuid.UUID, resolved_at: datetime
) -> None:
    step_id = STEPS.get(conversation.channel)
    if conversation.team_id is None or step_id is None:
        return
    setting = await cq.setting_of(session, conversation.team_id)
    if setting is None or not setting.enabled:
        return
    journey = await queries.journey_by_key(session, CSAT_KEY)
    if journey is None or journey.status is JourneyStatus.STOPPED:
        return  # a coordinator stopped it: no new surveys (paused ones wait, as any journey's)
    enrollment = Enrollment(
        id=new_id(),
        journey_id=journey.id,
        patient_id=conversation.patient_id,
        dedupe_key=f"conversation:{conversation.id}:{resolved_at.isoformat()}",
        anchor_at=resolved_at,
        created_at=resolved_at,
    )
    session.add(enrollment)
    await session.flush()
    session.add_all(
        [
            StepRun(
                enrollment_id=enrollment.id,
                step_id=step_id,
                attempt=1,
                due_at=resolved_at + timedelta(minutes=setting.delay_minutes),
                status=RunStatus.PLANNED,
            ),
            CsatSurvey(
                conversation_id=conversation.id,
                enrollment_id=enrollment.id,
                team_id=conversation.team_id,
                agent_id=staff_id,
                channel=conversation.channel.value,
                resolved_at=resolved_at,
                created_at=resolved_at,
            ),
        ]
    )
    await session.flush()


async def cancel_in(
    session: AsyncSession,
    why: str,
    now: datetime,
    *,
    conversation_id: uuid.UUID | None = None,
    patient_id: uuid.UUID | None = None,
    team_id: uuid.UUID | None = None,
    close_asks: bool = False,
) -> int:
    """Call off the surveys of a conversation (or of a patient) whose question has not gone out:
    planned runs are cancelled, and a message held by quiet hours is failed with the reason so
    its send job finds nothing to send. With ``close_asks`` a question already out is closed
    too (a reply to it is then an ordinary message). Returns how many surveys were called off."""
    cancelled = 0
    for _survey, enrollment in await cq.active_surveys(
        session, conversation_id=conversation_id, patient_id=patient_id, team_id=team_id
    ):
        out = False
        for run in await queries.runs_of(session, enrollment.id):
            if run.status in (RunStatus.PLANNED, RunStatus.CLAIMED):
                run.status, run.reason = RunStatus.CANCELLED, why
            elif run.status is RunStatus.SENT and run.message_id is not None:
                message = await session.get(Message, run.message_id)
                if message is not None and message.status is MessageStatus.QUEUED:
                    message.status, message.next_attempt_at = MessageStatus.FAILED, None
                    message.error_code, message.error_reason = CANCELLED_CODE, why
                    run.status, run.reason = RunStatus.CANCELLED, why
                else:
                    out = True
        if not out or close_asks:
            enrollment.status, enrollment.cancelled_at = EnrollmentStatus.CANCELLED, now
            cancelled += 1
    return cancelled


async def patient_wrote_in(session: AsyncSession, patient_id: uuid.UUID, now: datetime) -> None:
    """A message from the patient (before it is read as an answer): surveys not yet out are
    called off; a question already out stays open for its answer."""
    await cancel_in(session, WROTE_AGAIN, now, patient_id=patient_id)


async def answered_in(
    session: AsyncSession,
    enrollment: Enrollment,
    conversation: Conversation,
    message_id: uuid.UUID,
    now: datetime,
) -> None:
    """After the answer is recorded: the survey is done, and the conversation the answer
    landed in goes back to resolved when the answer alone opened it (intake reopens before it
    knows what a message is). One the patient or staff had reopened stays open."""
    enrollment.status = EnrollmentStatus.COMPLETED
    survey = await cq.survey_of_enrollment(session, enrollment.id)
    if survey is None:
        return
    if conversation.id == survey.conversation_id:
        if await cq.inbound_since(session, conversation.id, survey.resolved_at, message_id):
            return
        conversation.status = ConversationStatus.RESOLVED
        conversation.resolved_at, conversation.snoozed_until = survey.resolved_at, None
        await cq.forget_reopen(session, conversation.id, now)
    elif await cq.message_count(session, conversation.id) <= 1:
        # Opened for the answer alone (it came after the reopen window): closed at once.
        conversation.status, conversation.resolved_at = ConversationStatus.RESOLVED, now
        record_status_change_in(session, conversation, ConversationStatus.OPEN, now)
