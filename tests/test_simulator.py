"""The demo's patient simulator and one-click staff sign-in: demo mode only, and everything
the patient does goes through the hub's signed webhooks (issue 17)."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database
from hub.demo import DEMO_ADMIN_EMAIL, DEMO_LIVE_TEXTS, DEMO_PASSWORDS_FILE, DEMO_STAFF
from hub.inbox.models import InboundEvent
from tests.simulator_stack import (
    CSRF_INPUT,
    browser_session,
    demo_hub,
    load,
    sign_in_as,
    simulator_token,
)
from tests.stack import eventually
from web.app import create_app
from web.demo import LIVE_TEXTS

AVERY = "+15550100101"
AVERY_EMAIL = "avery.sample@example.org"


async def test_the_simulator_and_one_click_sign_in_do_not_exist_outside_demo_mode(
    settings: Settings, aiohttp_client: Any
) -> None:
    client = await aiohttp_client(create_app(settings))
    for path in ("/simulator", f"/simulator/feed?number={AVERY}"):
        assert (await client.get(path)).status == 404
    for path in ("/simulator/text", "/simulator/call", "/simulator/mail", "/login/demo"):
        response = await client.post(path, data={"email": DEMO_ADMIN_EMAIL, "body": "hi"})
        assert response.status == 404, path
    page = await (await client.get("/login")).text()
    assert "/login/demo" not in page and "one click" not in page
    assert "/simulator" not in page


async def test_demo_passwords_survive_a_restart_and_patients_load_once(
    db: Database, ring: KeyRing, tmp_path: Path
) -> None:
    first = await load(db, ring, tmp_path)
    second = await load(db, ring, tmp_path)
    assert first.first_run and not second.first_run
    assert second.patients_created == 0
    assert first.admin_password and second.admin_password == first.admin_password
    assert [a.password for a in second.accounts] == [a.password for a in first.accounts]
    assert {a.email for a in first.accounts} == {DEMO_ADMIN_EMAIL, *(s[0] for s in DEMO_STAFF)}
    kept = tmp_path / DEMO_PASSWORDS_FILE
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600


async def test_a_password_someone_chose_is_kept_and_no_longer_offered(
    db: Database, ring: KeyRing, tmp_path: Path
) -> None:
    from hub.inbox.access import StaffContext
    from hub.inbox.actions import staff
    from hub.inbox.models import StaffUser

    first = await load(db, ring, tmp_path)
    dana = first.accounts[1]
    assert dana.password is not None
    async with db.reader() as session:
        row = (await session.scalars(select(StaffUser).where(StaffUser.email == dana.email))).one()
        ctx = StaffContext.of(row)
    await staff.do_change_password(db, ctx, dana.password, "a quite different pass phrase 42")
    again = await load(db, ring, tmp_path)
    assert again.accounts[1].password is None
    assert await staff.do_authenticate(db, dana.email, "a quite different pass phrase 42")


@pytest.mark.slow
async def test_one_click_sign_in_works_in_demo_mode_only_for_the_demo_staff(
    fresh_db_url: str, redis_url: str, aiohttp_server: Any, tmp_path: Path
) -> None:
    async with (
        demo_hub(fresh_db_url, redis_url, aiohttp_server, tmp_path, worker=False) as hub,
        browser_session() as http,
    ):
        page = await (await http.get(f"{hub.url}/login")).text()
        for account in hub.summary.accounts:
            assert f'value="{account.email}"' in page
        assert "Be the patient" in page
        token = CSRF_INPUT.search(page)
        assert token is not None
        refused = await http.post(
            f"{hub.url}/login/demo",
            data={"csrf_token": token.group(1), "email": "someone@example.org"},
            allow_redirects=False,
        )
        assert refused.status == 403
        assert "sign in with the form" in await refused.text()
        stale = await http.post(
            f"{hub.url}/login/demo",
            data={"csrf_token": "not-the-token", "email": DEMO_ADMIN_EMAIL},
            allow_redirects=False,
        )
        assert stale.status == 403
        await sign_in_as(http, hub.url, DEMO_ADMIN_EMAIL)
        home = await (await http.get(f"{hub.url}/")).text()
        assert "Demo Admin (admin)" in home
        assert 'href="/simulator"' in home  # the demo strip on staff pages


async def _events(db: Database) -> int:
    async with db.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(InboundEvent)) or 0)


async def _feed(http: aiohttp.ClientSession, url: str, number: str, email: str = "") -> str:
    params = {"number": number, **({"email": email} if email else {})}
    async with http.get(f"{url}/simulator/feed", params=params) as response:
        assert response.status == 200
        return await response.text()


@pytest.mark.slow
async def test_the_patient_texts_calls_and_mails_through_the_signed_webhooks(
    fresh_db_url: str, redis_url: str, aiohttp_server: Any, tmp_path: Path
) -> None:
    async with (
        demo_hub(fresh_db_url, redis_url, aiohttp_server, tmp_path) as hub,
        browser_session() as patient,
        browser_session() as staff,
    ):
        # The first run plays the sample texts once, through the simulator's phones.
        await eventually(
            lambda: _at_least(_events(hub.db), len(DEMO_LIVE_TEXTS)), "the sample texts"
        )

        token = await simulator_token(patient, hub.url, AVERY)
        sent = await patient.post(
            f"{hub.url}/simulator/text",
            data={"csrf_token": token, "number": AVERY, "body": "Can I come at 4 instead?"},
            headers={"HX-Request": "true"},
        )
        assert sent.status == 200
        assert "Can I come at 4 instead?" in await sent.text()
        assert hub.sim.fake is not None and hub.sim.fake.inbound[-1].status == 200

        csrf = await sign_in_as(staff, hub.url, DEMO_ADMIN_EMAIL)
        listing = await (await staff.get(f"{hub.url}/api/conversations")).json()
        [row] = [r for r in listing["items"] if "Can I come at 4" in str(r.get("preview"))]
        reply = await staff.post(
            f"{hub.url}/api/conversations/{row['id']}/messages",
            json={"body": "Yes, 4pm works. See you then."},
            headers={"X-CSRF-Token": csrf},
        )
        assert reply.status in (200, 201, 202), await reply.text()
        await eventually(
            lambda: _has(_feed(patient, hub.url, AVERY), "Yes, 4pm works."), "the reply"
        )

        # The IVR: the call and each key go through the signed voice webhooks.
        call = await patient.post(
            f"{hub.url}/simulator/call",
            data={"csrf_token": token, "number": AVERY},
            headers={"HX-Request": "true"},
        )
        assert "Thank you for calling" in await call.text()
        [placed] = hub.sim.fake.calls
        pressed = await patient.post(
            f"{hub.url}/simulator/call/{placed.sid}",
            data={"csrf_token": token, "number": AVERY, "key": "1"},
            headers={"HX-Request": "true"},
        )
        answered = await pressed.text()
        assert "You press 1" in answered
        assert placed.webhooks[-1].params["Digits"] == "1"
        assert placed.webhooks[-1].status == 200 and placed.webhooks[-1].signature
        assert "/webhooks/twilio/voice/gather" in placed.webhooks[-1].url
        assert len(placed.twiml) == 2 and placed.twiml[1] != placed.twiml[0]
        # No appointment waits for Avery: the hub offers the voicemail, which comes back
        # through the signed recording and transcription callbacks into the inbox.
        assert "(beep: recording)" in answered
        left = await patient.post(
            f"{hub.url}/simulator/call/{placed.sid}",
            data={
                "csrf_token": token,
                "number": AVERY,
                "action": "voicemail",
                "words": "Please call me back about my bill",
            },
            headers={"HX-Request": "true"},
        )
        assert "You leave a voicemail and hang up" in await left.text()
        assert all(c.status in (200, 204) for c in placed.callbacks), placed.callbacks

        async def voicemail_in_inbox() -> bool:
            listed = await (await staff.get(f"{hub.url}/api/conversations")).json()
            for item in listed["items"]:
                opened = await staff.get(f"{hub.url}/api/conversations/{item['id']}")
                if "Please call me back about my bill" in await opened.text():
                    return True
            return False

        await eventually(voicemail_in_inbox, "the voicemail's transcript in the inbox")

        # Mail: the clinic's answer by email lands in the demo's mail folder, shown to the
        # patient, whose reply comes back through the signed inbound-mail webhook.
        mailed = await staff.post(
            f"{hub.url}/api/conversations/{row['id']}/messages",
            json={"body": "Your synthetic form is attached.", "channel": "email"},
            headers={"X-CSRF-Token": csrf},
        )
        assert mailed.status in (200, 201, 202), await mailed.text()
        feed = await eventually(
            lambda: _has(_feed(patient, hub.url, AVERY), "Your synthetic form is attached."),
            "the clinic's mail in the simulator",
        )
        parent = re.search(r'name="parent" value="([^"]+)"', feed)
        assert parent is not None
        answered_mail = await patient.post(
            f"{hub.url}/simulator/mail",
            data={
                "csrf_token": token,
                "number": AVERY,
                "email": AVERY_EMAIL,
                "parent": parent.group(1),
                "body": "Thanks, I filled it in.",
            },
            headers={"HX-Request": "true"},
        )
        assert "Delivered to the hub" in await answered_mail.text()
        opened = await (await staff.get(f"{hub.url}/api/conversations/{row['id']}")).text()
        assert "Thanks, I filled it in." in opened

        # The chat link the clinic texts is a link the patient can open.
        invited = await staff.post(
            f"{hub.url}/conversations/{row['id']}/chat-invite",
            data={"csrf_token": csrf, "channel": "sms"},
            allow_redirects=False,
        )
        assert invited.status == 303
        assert "queued" in str(invited.cookies.get("hub_flash")), invited.cookies
        feed = await eventually(
            lambda: _has(_feed(patient, hub.url, AVERY), f'href="{hub.url}/chat/'),
            "the chat link on the patient's phone",
        )
        link = re.search(rf'href="({re.escape(hub.url)}/chat/[^"]+)"', feed)
        assert link is not None
        async with patient.get(link.group(1)) as chat:
            assert chat.status == 200 and "data-token=" in await chat.text()


async def _at_least(value: Any, expected: int) -> bool:
    return bool(await value >= expected)


async def _has(text: Any, wanted: str) -> str | None:
    found = await text
    return found if wanted in found else None


@pytest.mark.slow
async def test_a_restarted_demo_does_not_replay_the_sample_texts(
    fresh_db_url: str, redis_url: str, aiohttp_server: Any, tmp_path: Path
) -> None:
    async with demo_hub(fresh_db_url, redis_url, aiohttp_server, tmp_path, worker=False) as hub:
        await hub.run.app[LIVE_TEXTS]
        assert await _events(hub.db) == len(DEMO_LIVE_TEXTS)
    async with (
        demo_hub(
            fresh_db_url, redis_url, aiohttp_server, tmp_path, worker=False, ring=hub.ring
        ) as again,
        browser_session() as patient,
    ):
        assert not again.summary.first_run
        assert again.summary.admin_password == hub.summary.admin_password
        token = await simulator_token(patient, again.url, AVERY)
        await patient.post(
            f"{again.url}/simulator/text",
            data={"csrf_token": token, "number": AVERY, "body": "Still there?"},
        )
        replay = again.run.app.get(LIVE_TEXTS)
        if replay is not None:
            await replay  # a demo that replays them has sent them by now
        await eventually(lambda: _at_least(_events(again.db), len(DEMO_LIVE_TEXTS) + 1), "a text")
        assert await _events(again.db) == len(DEMO_LIVE_TEXTS) + 1
        assert again.sim.fake is not None
        assert [w.params["Body"] for w in again.sim.fake.inbound] == ["Still there?"]


@pytest.mark.slow
async def test_someone_new_texts_from_a_typed_number_and_mistakes_are_said_plainly(
    fresh_db_url: str, redis_url: str, aiohttp_server: Any, tmp_path: Path
) -> None:
    async with (
        demo_hub(fresh_db_url, redis_url, aiohttp_server, tmp_path, worker=False) as hub,
        browser_session() as patient,
    ):
        wrong = await patient.get(f"{hub.url}/simulator", params={"new_number": "12"})
        assert wrong.status == 400
        assert "is not a phone number. Type ten digits" in await wrong.text()
        page = await patient.get(
            f"{hub.url}/simulator",
            params={"number": "", "new_number": "555-010-0107", "email": "new.one@example.org"},
        )
        shown = await page.text()
        assert page.status == 200 and "+1 555-010-0107" in shown
        assert "new.one@example.org" in shown
        token = CSRF_INPUT.search(shown)
        assert token is not None
        forged = await patient.post(
            f"{hub.url}/simulator/text",
            data={"csrf_token": "made-up", "number": "+15550100107", "body": "hi"},
        )
        assert forged.status == 403
        assert hub.sim.fake is not None
        assert all(w.params["From"] != "+15550100107" for w in hub.sim.fake.inbound)
        sent = await patient.post(
            f"{hub.url}/simulator/text",
            data={"csrf_token": token.group(1), "number": "+15550100107", "body": "Walk-ins?"},
            allow_redirects=False,
        )
        assert sent.status == 303  # without htmx: back to the page
        assert "number=%2B15550100107" in sent.headers["Location"]
        [mine] = [w for w in hub.sim.fake.inbound if w.params["From"] == "+15550100107"]
        assert mine.status == 200 and mine.params["Body"] == "Walk-ins?"


def test_a_reminder_call_shows_its_words_and_waits_for_a_key() -> None:
    from fakes.twilio import FakeCall
    from hub.channels.twilio_voice.twiml import reminder_call
    from web.simulator_feed import call_view

    document = reminder_call(
        "Your appointment is tomorrow at 3 pm. Press 1 to confirm, 2 to cancel.",
        gather_action="/webhooks/twilio/voice/gather?m=x",
    )
    call = FakeCall("CA" + "0" * 32, AVERY, "+15550109999", "outbound-api", "", twiml=[document])
    call.status = "in-progress"
    view = call_view(call)
    assert not view.inbound and view.waiting == "keys"
    said = [line.text for line in view.lines]
    assert len(said) == 1 and said[0].startswith("Your appointment is tomorrow at 3 pm.")
    call.status = "completed"
    assert call_view(call).waiting is None  # an ended call offers no keypad


def test_the_feed_writes_times_in_the_simulated_patients_zone() -> None:
    from web.simulator_feed import zone_of

    assert zone_of("+15550100102", "US", "America/New_York") == "America/Chicago"
    assert zone_of("+15550100199", "US", "America/New_York") == "America/New_York"
