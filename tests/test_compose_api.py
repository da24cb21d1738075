"""The composer's API (issue 16): replies with files (refused with the reason before anything
is stored), the SMS length limit said instead of a silent cut, the signed media links Twilio
fetches, and send later (`/api/conversations/{id}/scheduled`, `/api/scheduled/{id}`)."""

from __future__ import annotations

import io
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from hub.audit import Actor
from hub.channels.email_smtp.compose import OutgoingEmail, compose
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel
from hub.inbox import actions
from hub.inbox.actions.staff import do_create_token
from hub.inbox.models import Attachment, Message
from hub.inbox.scheduled_models import ScheduledMessage
from hub.links import media_token
from tests.conftest import make_staff
from tests.test_scheduled import TEXT, conversation_with
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fresh_redis")

PDF = b"%PDF-1.4\n% synthetic referral letter\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
STAFF = "dana.agent@demo-clinic.example.org"


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    return replace(
        settings,
        public_url="https://hub.test-clinic.example.org",
        smtp_url="smtp://127.0.0.1:9",
        email_from="Demo Clinic <clinic@demo-clinic.example.org>",
    )


@pytest.fixture
async def client(db: Database, web_settings: Settings, aiohttp_client: Any) -> TestClient:
    await make_staff(db, STAFF)
    token = await do_create_token(db, Actor.system("test"), STAFF, "compose test")
    app = create_app(web_settings, db=db)
    return await aiohttp_client(app, headers={"Authorization": f"Bearer {token}"})  # type: ignore[no-any-return]


def files_form(body: str, channel: str, *files: tuple[str, str, bytes]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("body", body)
    form.add_field("channel", channel)
    for name, content_type, data in files:
        form.add_field("files", io.BytesIO(data), filename=name, content_type=content_type)
    return form


async def count(db: Database, model: Any) -> int:
    async with db.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_pdf_goes_with_an_sms_reply_stored_encrypted_and_fetchable_by_link(
    client: TestClient, db: Database, ring: KeyRing, web_settings: Settings
) -> None:
    cid = await conversation_with(db, ring)
    response = await client.post(
        f"/api/conversations/{cid}/messages",
        data=files_form("Your referral letter.", "sms", ("referral.pdf", "application/pdf", PDF)),
    )
    assert response.status == 202, await response.text()
    message_id = uuid.UUID((await response.json())["message_id"])
    async with db.reader() as session:
        [att] = (await session.scalars(select(Attachment))).all()
    assert att.message_id == message_id and att.content_type == "application/pdf"
    assert att.unseal_bytes(ring, "data") == PDF and PDF not in (att.data_enc or b"")
    assert att.unseal(ring, "filename") == "referral.pdf"

    claim = await actions.do_claim_send(
        db, ring, message_id, provider="twilio_sms", public_url=web_settings.public_url
    )
    assert claim.task is not None
    [url] = claim.task.outbound.media_urls
    assert url.startswith(f"{web_settings.public_url}/media/")
    path = url.removeprefix(web_settings.public_url)
    fetched = await client.get(path, headers={"Authorization": ""})
    assert fetched.status == 200 and await fetched.read() == PDF
    assert fetched.content_type == "application/pdf"

    token = path.rsplit("/", 1)[1]
    tampered = token[:-2] + ("aa" if token[-2:] != "aa" else "bb")
    assert (await client.get(f"/media/{tampered}")).status == 404
    old = media_token(ring, att.id, utcnow() - timedelta(hours=5))
    assert (await client.get(f"/media/{old}")).status == 404


async def test_an_inbound_file_is_never_served_by_a_media_link(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    cid = await conversation_with(db, ring)
    async with db.transaction() as session:
        inbound = (
            await session.scalars(select(Message).where(Message.conversation_id == cid))
        ).one()
        att = Attachment(message_id=inbound.id, content_type="image/png", size_bytes=len(PNG))
        att.seal_bytes(ring, "data", PNG)
        session.add(att)
    assert (await client.get(f"/media/{media_token(ring, att.id, utcnow())}")).status == 404


@pytest.mark.parametrize(
    ("channel", "files", "error"),
    [
        ("sms", [("notes.txt", "text/plain", b"hello")], "cannot go by SMS"),
        ("email", [("tool.exe", "application/x-msdownload", b"MZ")], "cannot be sent"),
        ("sms", [("fake.pdf", "application/pdf", b"not a pdf")], "is not the application/pdf"),
        ("sms", [("big.png", "image/png", PNG + b"\x00" * (5 * 1024 * 1024))], "at most 5.0 MB"),
        ("chat", [("scan.pdf", "application/pdf", PDF)], "files cannot be sent by chat"),
        ("email", [("blank.pdf", "application/pdf", b"")], "blank.pdf is empty"),
        ("sms", [(f"p{i}.png", "image/png", PNG) for i in range(11)], "at most 10 files"),
    ],
)
async def test_files_that_cannot_go_are_refused_with_the_reason_and_nothing_is_stored(
    client: TestClient,
    db: Database,
    ring: KeyRing,
    channel: str,
    files: list[tuple[str, str, bytes]],
    error: str,
) -> None:
    cid = await conversation_with(db, ring)
    before = await count(db, Message)
    response = await client.post(
        f"/api/conversations/{cid}/messages", data=files_form("See attached.", channel, *files)
    )
    assert response.status == 422
    assert error in (await response.json())["error"]["message"]
    assert await count(db, Message) == before and await count(db, Attachment) == 0


async def test_an_sms_longer_than_twilio_takes_is_refused_not_cut_and_email_takes_it(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    cid = await conversation_with(db, ring)
    long = "Please read carefully. " * 70  # 1,610 characters
    response = await client.post(
        f"/api/conversations/{cid}/messages", json={"body": long, "channel": "sms"}
    )
    assert response.status == 422
    message = (await response.json())["error"]["message"]
    assert "1,609 characters and an SMS can carry at most 1,600" in message
    assert "send it by email" in message
    response = await client.post(
        f"/api/conversations/{cid}/messages", json={"body": long, "channel": "email"}
    )
    assert response.status == 202
    async with db.reader() as session:
        sent = await session.get(Message, uuid.UUID((await response.json())["message_id"]))
        assert sent is not None
    assert sent.unseal(ring, "body") == long.strip()


async def test_an_emailed_file_is_a_mime_part(
    client: TestClient, db: Database, ring: KeyRing, web_settings: Settings
) -> None:
    cid = await conversation_with(db, ring)
    response = await client.post(
        f"/api/conversations/{cid}/messages",
        data=files_form("Your results.", "email", ("results.pdf", "application/pdf", PDF)),
    )
    assert response.status == 202
    message_id = uuid.UUID((await response.json())["message_id"])
    claim = await actions.do_claim_send(
        db,
        ring,
        message_id,
        provider={Channel.EMAIL: "email_smtp"},
        public_url=web_settings.public_url,
    )
    assert claim.task is not None and claim.task.outbound.media_urls == ()
    [part] = claim.task.outbound.attachments
    assert (part.filename, part.content_type, part.data) == ("results.pdf", "application/pdf", PDF)
    mail = compose(
        OutgoingEmail(
            to="quinn@example.org",
            from_address="clinic@demo-clinic.example.org",
            subject="Results",
            text="Your results.",
            message_id="<x@demo-clinic.example.org>",
            attachments=((part.filename, part.content_type, part.data),),
        )
    )
    [attached] = list(mail.iter_attachments())
    assert attached.get_filename() == "results.pdf" and attached.get_content() == PDF


async def test_schedule_list_and_cancel_through_the_api(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    cid = await conversation_with(db, ring)
    at = (utcnow() + timedelta(days=1)).astimezone(ZoneInfo("America/Chicago"))
    response = await client.post(
        f"/api/conversations/{cid}/scheduled",
        json={"body": TEXT, "channel": "sms", "send_at": at.isoformat()},
    )
    assert response.status == 201, await response.text()
    created = await response.json()
    assert created["state"] == "scheduled" and created["body"] == TEXT
    assert datetime.fromisoformat(created["send_at"]) == at

    listed = await (await client.get(f"/api/conversations/{cid}/scheduled")).json()
    assert [i["id"] for i in listed["items"]] == [created["id"]]

    cancel = await client.delete(f"/api/scheduled/{created['id']}")
    assert cancel.status == 200 and (await cancel.json())["state"] == "cancelled"
    again = await client.delete(f"/api/scheduled/{created['id']}")
    assert again.status == 409
    assert (await again.json())["error"]["message"] == "this reply was already cancelled"
    listed = await (await client.get(f"/api/conversations/{cid}/scheduled")).json()
    assert listed["items"] == []
    assert (await client.delete(f"/api/scheduled/{uuid.uuid4()}")).status == 404


@pytest.mark.parametrize(
    ("send_at", "error"),
    [
        (None, "send_at is required"),
        ("next tuesday", "not an ISO 8601 time"),
        ("2030-01-01T09:00:00", "needs a time zone"),
        ("2001-01-01T09:00:00+00:00", "has passed"),
        ("9999-12-31T23:59:00-10:00", "out of range"),
    ],
)
async def test_a_bad_time_is_refused_with_the_reason(
    client: TestClient, db: Database, ring: KeyRing, send_at: str | None, error: str
) -> None:
    cid = await conversation_with(db, ring)
    response = await client.post(
        f"/api/conversations/{cid}/scheduled", json={"body": TEXT, "send_at": send_at}
    )
    assert response.status == 422
    assert error in (await response.json())["error"]["message"]
    assert await count(db, ScheduledMessage) == 0


async def test_the_composer_reads_the_picker_in_the_staff_members_zone(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    from hub.inbox.models import StaffUser

    async with db.transaction() as session:
        staff = (await session.scalars(select(StaffUser))).one()
        staff.time_zone = "America/New_York"
    cid = await conversation_with(db, ring)
    local = (utcnow() + timedelta(days=2)).astimezone(ZoneInfo("America/New_York"))
    picked = local.replace(hour=9, minute=0, second=0, microsecond=0)
    response = await client.post(
        f"/conversations/{cid}/scheduled",
        data={"body": TEXT, "send_at": picked.strftime("%Y-%m-%dT%H:%M"), "channel": "sms"},
    )
    assert response.status == 200, await response.text()
    html = await response.text()
    assert "Scheduled for" in html and picked.strftime("%a %b %-d %Y, 09:00 %Z") in html
    # The patient (in UTC) gets it at their own time, said beside it.
    assert f"; {picked.astimezone(UTC):%H:%M} for the patient" in html
    assert "note that" not in html
    async with db.reader() as session:
        row = (await session.scalars(select(ScheduledMessage))).one()
    assert row.send_at == picked.astimezone(UTC)

    # 23:00 in New York is 04:00 for the patient: kept, with a note staff read.
    night = picked.replace(hour=23)
    response = await client.post(
        f"/conversations/{cid}/scheduled",
        data={"body": TEXT, "send_at": night.strftime("%Y-%m-%dT%H:%M"), "channel": "sms"},
    )
    assert response.status == 200
    html = await response.text()
    assert "Scheduled; note that it is" in html and "for the patient, outside 08:00-21:00" in html

    refused = await client.post(
        f"/conversations/{cid}/scheduled", data={"body": TEXT, "send_at": "", "channel": "sms"}
    )
    assert refused.status == 422
    assert await refused.text() == "Not scheduled: choose the day and time to send it"


async def test_a_form_that_cannot_be_read_is_a_400_not_a_server_error(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    cid = await conversation_with(db, ring)
    boundary = "b0undary"
    raw = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="\x1a\x10"\r\n\r\nx\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    response = await client.post(
        f"/api/conversations/{cid}/messages",
        data=raw,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status == 400
    assert (await response.json())["error"]["message"].startswith("the form could not be read")
    assert await count(db, Message) == 1  # the patient's own, nothing more
