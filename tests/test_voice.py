"""Calls into the clinic: the IVR, voicemail with its recording and transcript, through the real
voice webhooks with requests the fake Twilio signs (as Twilio does), and the hub's TwiML back."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from fakes.twilio import FakeCall, FakeTwilio, Webhook, start_fake_twilio
from hub.audit import Actor
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, Direction, Priority
from hub.inbox import actions
from hub.inbox.actions.media import do_read_attachment
from hub.inbox.actions.tags import tags_of_conversation_in
from hub.inbox.models import (
    Attachment,
    AttachmentState,
    Conversation,
    InboundEvent,
    Message,
    Patient,
    Team,
)
from hub.inbox.schemas import NewPatient
from hub.outbox import OutboxEvent
from tests.stack import Stack, eventually, free_port
from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN, CLINIC_NUMBER, PATIENT_NUMBER, sign
from web.app import create_app

SYSTEM = Actor.system("test")
AUDIO = b"ID3\x04\x00 synthetic voicemail audio \x00\xff"
TRANSCRIPT = "Hi, this is Avery. Could someone call me back about my inhaler refill?"
VOICE = "/webhooks/twilio/voice"
FIXTURES = Path(__file__).parent.parent / "hub" / "channels" / "twilio_voice" / "fixtures"
FIXTURE_ANSWERS = {
    "incoming_call": (200, "<Gather "),
    "gather_menu_2": (200, "<Record "),
    "record_action": (200, "passed to the care team"),
    "recording_status_completed": (204, ""),
    "recording_status_absent": (204, ""),
    "transcription_completed": (204, ""),
    "outbound_answered_machine": (200, "placed in error"),  # no such message in this hub
    "gather_reminder_1": (200, "passed to the care team"),
    "status_no_answer": (204, ""),
    "status_completed": (204, ""),
}
"""What the hub answers to each fixture posted on its own (signed) to an empty hub."""


@dataclass
class Hub:
    """The web app on a real port (its public URL, so signatures match), the fake Twilio, and
    a database rolled back after the test. No worker: effects wait in the outbox or Redis."""

    settings: Settings
    db: Database
    ring: KeyRing
    fake: FakeTwilio
    url: str

    async def call(self, from_: str = PATIENT_NUMBER) -> FakeCall:
        call = await self.fake.start_inbound_call(self.url + VOICE, from_, CLINIC_NUMBER)
        assert call.webhooks[0].status == 200, call.webhooks[0].text
        return call

    async def count(self, model: Any) -> int:
        async with self.db.reader() as session:
            return int(await session.scalar(select(func.count()).select_from(model)) or 0)

    async def post(self, path: str, params: dict[str, str], token: str = AUTH_TOKEN) -> Any:
        """A webhook signed (or mis-signed, with another token) the way Twilio signs."""
        url = self.url + path
        headers = {"X-Twilio-Signature": sign(url, params, token)}
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, data=params, headers=headers) as r,
        ):
            return r.status, await r.text()


@pytest.fixture
async def hub(
    db: Database, settings: Settings, ring: KeyRing, aiohttp_server: Any, fresh_redis: None
) -> AsyncIterator[Hub]:
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    runner, fake_base = await start_fake_twilio(fake)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = replace(
        settings,
        public_url=url,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_base=fake_base,
        twilio_from_number=CLINIC_NUMBER,
    )
    await aiohttp_server(create_app(settings, db=db), port=port)
    try:
        yield Hub(settings, db, ring, fake, url)
    finally:
        await runner.cleanup()


async def known_patient(db: Database, ring: KeyRing, phone: str = PATIENT_NUMBER) -> uuid.UUID:
    return await actions.do_create_patient(
        db, ring, SYSTEM, NewPatient(name="Avery Sample", phone=phone, verified=True), region="US"
    )


async def replay(record: Webhook) -> int:
    """Post a webhook the fake sent again, byte for byte (Twilio retries the same way)."""
    headers = {"X-Twilio-Signature": record.signature}
    async with (
        aiohttp.ClientSession() as http,
        http.post(record.url, data=record.params, headers=headers) as response,
    ):
        return response.status


# -- must-show 1: the whole sequence, a real worker fetching the recording ----------------


@pytest.mark.slow
async def test_voicemail_from_a_known_caller_lands_with_transcript_and_playable_recording(
    stack: Stack,
) -> None:
    patient_id = await known_patient(stack.db, stack.ring)
    fake = stack.fake
    call = await fake.start_inbound_call(f"{stack.hub_url}{VOICE}", PATIENT_NUMBER, CLINIC_NUMBER)
    menu = call.twiml[0]
    assert call.webhooks[0].status == 200
    assert '<Gather action="' in menu and 'numDigits="1"' in menu
    assert "press 1" in menu and "press 2" in menu and "press 0" in menu

    await fake.press(call, "2")
    record = call.last_twiml
    assert "<Record " in record and 'transcribe="true"' in record and 'maxLength="120"' in record

    recording_sid = await fake.recording_done(call, duration=11, audio=AUDIO)
    assert "passed to the care team" in call.last_twiml and call.status == "completed"

    async def stored() -> Attachment | None:
        async with stack.db.reader() as session:
            found = (await session.scalars(select(Attachment))).all()
        return found[0] if found and found[0].state is AttachmentState.STORED else None

    attachment = await eventually(stored, "the worker to fetch the recording")
    transcription = await fake.transcription_done(call, recording_sid, TRANSCRIPT)
    assert transcription.status == 204

    # What staff see: the transcript as the message, the recording as a playable attachment.
    async with stack.db.reader() as session:
        conversation = (await session.scalars(select(Conversation))).one()
        patients = (await session.scalars(select(Patient))).all()
    assert conversation.channel is Channel.VOICE and conversation.patient_id == patient_id
    assert [p.id for p in patients] == [patient_id]  # recognised by the caller's number
    messages = await actions.do_read_conversation(stack.db, stack.ring, SYSTEM, conversation.id)
    assert [(m.direction, m.channel, m.body) for m in messages] == [
        (Direction.INBOUND, Channel.VOICE, TRANSCRIPT)
    ]
    content_type, data, name = await do_read_attachment(
        stack.db, stack.ring, stack.staff, attachment.id
    )
    assert (content_type, data, name) == ("audio/mpeg", AUDIO, "voicemail.mp3")
    assert AUDIO not in (attachment.data_enc or b"")  # stored encrypted
    fetched = [r for r in fake.requests if "/Recordings/" in r.path]
    assert [(r.path.endswith(f"{recording_sid}.mp3"), r.status) for r in fetched] == [(True, 200)]

    # Twilio retrying any of the three callbacks changes nothing.
    for again in [*call.webhooks[-1:], *call.callbacks]:
        assert await replay(again) in (200, 204)
    async with stack.db.reader() as session:
        assert len((await session.scalars(select(Message))).all()) == 1
        assert len((await session.scalars(select(Attachment))).all()) == 1
    messages = await actions.do_read_conversation(stack.db, stack.ring, SYSTEM, conversation.id)
    assert [m.body for m in messages] == [TRANSCRIPT]
    assert len([r for r in fake.requests if "/Recordings/" in r.path]) == 1


# -- payloads shaped like Twilio's --------------------------------------------------------


def test_the_fixture_set_is_complete() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.json")) == sorted(FIXTURE_ANSWERS)


@pytest.mark.parametrize("name", sorted(FIXTURE_ANSWERS))
async def test_each_signed_fixture_gets_its_answer(hub: Hub, name: str) -> None:
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    assert set(data) == {"description", "path", "params"} and data["description"]
    assert all(isinstance(v, str) for v in data["params"].values())
    expected_status, expected_text = FIXTURE_ANSWERS[name]
    status, text = await hub.post(data["path"], data["params"])
    assert status == expected_status and expected_text in text, text


# -- the menu ----------------------------------------------------------------------------


async def test_invalid_signatures_are_403_and_nothing_is_stored(hub: Hub) -> None:
    call_params = {
        "CallSid": "CA" + "1" * 32,
        "AccountSid": ACCOUNT_SID,
        "From": PATIENT_NUMBER,
        "To": CLINIC_NUMBER,
        "CallStatus": "in-progress",
        "Direction": "inbound",
    }
    recording = {
        **call_params,
        "RecordingSid": "RE" + "2" * 32,
        "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/RE",
        "RecordingDuration": "9",
    }
    cases = [
        (VOICE, call_params),
        (f"{VOICE}/gather?menu=main", {**call_params, "Digits": "2"}),
        (f"{VOICE}/gather?m={uuid.uuid4()}&a=1", {**call_params, "Digits": "9"}),
        (f"{VOICE}/outbound?m={uuid.uuid4()}&a=1", call_params),
        (f"{VOICE}/recording", recording),
        (f"{VOICE}/recording", {**recording, "RecordingStatus": "completed"}),
        (
            f"{VOICE}/transcription",
            {**recording, "TranscriptionStatus": "completed", "TranscriptionText": TRANSCRIPT},
        ),
        (f"{VOICE}/status?m={uuid.uuid4()}&a=1", {**call_params, "CallStatus": "no-answer"}),
    ]
    for path, params in cases:
        status, text = await hub.post(path, params, token="f" * 32)
        assert (path, status) == (path, 403), text
        assert "X-Twilio-Signature" in text
    # The real token on the same requests would have been accepted: the signature decided.
    assert (await hub.post(VOICE, call_params))[0] == 200
    for model in (Message, InboundEvent, Patient, Attachment, OutboxEvent):
        assert await hub.count(model) == 0, model


async def test_the_greeting_follows_the_default_teams_business_hours(hub: Hub) -> None:
    async with hub.db.transaction() as session:
        session.add(Team(name="Front desk", time_zone="UTC", is_default=True))
    open_menu = (await hub.call()).twiml[0]
    assert "Thank you for calling Demo Clinic." in open_menu and "closed" not in open_menu

    async with hub.db.transaction() as session:
        team = (await session.scalars(select(Team))).one()
        team.holidays = [utcnow().astimezone(UTC).date().isoformat()]
    closed_menu = (await hub.call()).twiml[0]
    assert "Our office is closed right now" in closed_menu
    assert "press 2" in closed_menu  # a message can still be left


async def test_emergency_unknown_keys_and_silence(hub: Hub) -> None:
    call = await hub.call()
    await hub.fake.press(call, "0")
    assert "dial your local emergency number" in call.last_twiml
    assert call.last_twiml.endswith("<Hangup /></Response>") and call.status == "completed"

    call = await hub.call()
    await hub.fake.press(call, "7")
    # "Not one of the choices", then Twilio follows the Redirect back to the menu.
    assert "not one of the choices" in call.twiml[1] and "<Redirect" in call.twiml[1]
    assert "Thank you for calling" in call.last_twiml and len(call.twiml) == 3

    call = await hub.call()
    await hub.fake.no_input(call)  # someone who cannot use the keypad is offered voicemail
    assert "<Record " in call.last_twiml
    assert await hub.count(Message) == 0


async def test_an_unknown_caller_and_a_withheld_number_each_leave_a_voicemail(hub: Hub) -> None:
    unknown = await hub.call("+15550100177")
    await hub.fake.press(unknown, "2")
    await hub.fake.recording_done(unknown, duration=5)
    withheld = await hub.call("anonymous")
    await hub.fake.press(withheld, "2")
    await hub.fake.recording_done(withheld, duration=4)

    async with hub.db.reader() as session:
        patients = (await session.scalars(select(Patient).order_by(Patient.created_at))).all()
        conversations = (await session.scalars(select(Conversation))).all()
    assert [p.verified for p in patients] == [False, False]
    assert patients[0].unseal(hub.ring, "phone") == "+15550100177"
    assert patients[1].phone_enc is None
    assert {c.channel for c in conversations} == {Channel.VOICE} and len(conversations) == 2


async def test_an_empty_recording_is_dropped(hub: Hub) -> None:
    await known_patient(hub.db, hub.ring)
    call = await hub.call()
    await hub.fake.press(call, "2")
    await hub.fake.recording_done(call, duration=0)
    # Twilio skips the action for an empty recording and reports it absent.
    assert [c.params["RecordingStatus"] for c in call.callbacks] == ["absent"]
    assert [c.status for c in call.callbacks] == [204]
    assert call.status == "completed" and len(call.webhooks) == 2  # menu, "2": no action

    # An action that reports a zero-length recording anyway, and one with no file at all.
    base = {"CallSid": call.sid, "AccountSid": ACCOUNT_SID, "From": PATIENT_NUMBER}
    empty = {**base, "RecordingSid": "RE" + "3" * 32, "RecordingDuration": "0"}
    empty["RecordingUrl"] = "https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/RE3"
    no_file = {**base, "RecordingSid": "RE" + "4" * 32, "RecordingDuration": "12"}
    for params in (empty, no_file):
        status, text = await hub.post(f"{VOICE}/recording", params)
        assert status == 200 and "<Hangup />" in text
    for model in (Message, Attachment, InboundEvent, OutboxEvent):
        assert await hub.count(model) == 0, model


async def test_callbacks_in_any_order_make_one_voicemail_with_its_transcript(hub: Hub) -> None:
    """The transcript and the "file ready" callback may beat the Record action; whichever
    comes first waits for the others, and the fetch is queued only once the file is ready."""
    patient_id = await known_patient(hub.db, hub.ring)
    sid = "RE" + "5" * 32
    url = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{sid}"
    call = {"CallSid": "CA" + "6" * 32, "AccountSid": ACCOUNT_SID, "From": PATIENT_NUMBER}
    call |= {"To": CLINIC_NUMBER, "CallStatus": "completed", "Direction": "inbound"}
    recording = {**call, "RecordingSid": sid, "RecordingUrl": url, "RecordingDuration": "14"}
    transcript = {**recording, "TranscriptionStatus": "completed", "TranscriptionText": TRANSCRIPT}
    ready = {**recording, "RecordingStatus": "completed"}

    assert (await hub.post(f"{VOICE}/transcription", transcript))[0] == 204
    assert (await hub.post(f"{VOICE}/recording", ready))[0] == 204
    assert await hub.count(Message) == 0
    assert await hub.count(OutboxEvent) == 0  # nothing to fetch for yet
    status, text = await hub.post(f"{VOICE}/recording", {**recording, "Digits": "hangup"})
    assert status == 200 and "passed to the care team" in text

    async with hub.db.reader() as session:
        message = (await session.scalars(select(Message))).one()
        attachment = (await session.scalars(select(Attachment))).one()
        conversation = await session.get(Conversation, message.conversation_id)
        jobs = (
            await session.scalars(select(OutboxEvent).where(OutboxEvent.topic.like("job:%")))
        ).all()
    assert message.unseal(hub.ring, "body") == TRANSCRIPT
    assert conversation is not None and conversation.patient_id == patient_id
    assert (attachment.source_url, attachment.state) == (url + ".mp3", AttachmentState.PENDING)
    assert [(j.topic, j.payload["attachment_id"]) for j in jobs] == [
        ("job:fetch_media", str(attachment.id))
    ]


async def test_an_urgent_transcript_raises_the_conversation_without_calling_back(
    hub: Hub,
) -> None:
    await known_patient(hub.db, hub.ring)
    call = await hub.call()
    await hub.fake.press(call, "2")
    sid = await hub.fake.recording_done(call, duration=6)
    await hub.fake.transcription_done(call, sid, "I have chest pain since this morning")
    async with hub.db.reader() as session:
        conversation = (await session.scalars(select(Conversation))).one()
        outbound = (
            await session.scalars(select(Message).where(Message.direction == Direction.OUTBOUND))
        ).all()
        tags = await tags_of_conversation_in(session, hub.ring, conversation.id)
    assert conversation.priority is Priority.URGENT and "urgent" in tags
    assert outbound == []  # no call back: the menu already gave the emergency instructions
    assert not [r for r in hub.fake.requests if r.path.endswith("/Calls.json")]


async def test_a_failed_transcription_leaves_a_note_to_listen(hub: Hub) -> None:
    await known_patient(hub.db, hub.ring)
    call = await hub.call()
    await hub.fake.press(call, "2")
    sid = await hub.fake.recording_done(call, duration=6)
    async with hub.db.reader() as session:
        before = (await session.scalars(select(Message))).one().unseal(hub.ring, "body")
    assert before == "Voicemail (6 s). The transcript follows when Twilio has it."
    await hub.fake.transcription_done(call, sid, "", status="failed")
    async with hub.db.reader() as session:
        after = (await session.scalars(select(Message))).one().unseal(hub.ring, "body")
    assert after is not None and "could not transcribe" in after


@pytest.mark.parametrize(
    ("path", "change", "reason"),
    [
        (VOICE, {"CallSid": "not-a-sid"}, "CallSid is not a Twilio call sid"),
        (f"{VOICE}/gather?menu=main", {"Digits": "1; DROP"}, "Digits holds something"),
        (f"{VOICE}/gather?menu=other", {"Digits": "1"}, "unknown menu"),
        (f"{VOICE}/recording", {"RecordingDuration": "long"}, "RecordingDuration is not"),
        (f"{VOICE}/recording", {"RecordingUrl": "file:///etc/passwd"}, "RecordingUrl is not"),
        (f"{VOICE}/transcription", {"TranscriptionStatus": "maybe"}, "TranscriptionStatus"),
        (f"{VOICE}/status?m=x&a=1", {"CallStatus": "busy"}, "message reference is damaged"),
        (f"{VOICE}/status", {"CallStatus": "exploded"}, "not a call progress status"),
    ],
)
async def test_malformed_payloads_are_400_naming_the_field(
    hub: Hub, path: str, change: dict[str, str], reason: str
) -> None:
    params = {"CallSid": "CA" + "7" * 32, "AccountSid": ACCOUNT_SID, "From": PATIENT_NUMBER}
    params |= {"To": CLINIC_NUMBER, "CallStatus": "in-progress", "Direction": "inbound"}
    params |= {"RecordingSid": "RE" + "8" * 32, "RecordingDuration": "3"}
    params |= {"RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/RE8"}
    params |= {"TranscriptionStatus": "completed", "TranscriptionText": "hello"}
    status, text = await hub.post(path, params | change)
    assert status == 400 and reason in text
    assert await hub.count(Message) == 0 and await hub.count(InboundEvent) == 0
