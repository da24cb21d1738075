"""The template editor (web/admin_templates.py, hub/templates/editing.py): the list filters,
one template at a time, the live preview's verdict matching the save's, revert to the shipped
text, and removing a language, refused while a journey falls back to it."""

from __future__ import annotations

import html as html_lib
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select

from hub.audit import AuditEvent
from hub.db import Database
from hub.journeys import actions as journeys
from hub.templates import TemplateInvalid
from hub.templates.actions import do_list_templates, do_save_variant, do_seed_templates, load_seed
from hub.templates.editing import do_revert_variant, try_variant
from hub.templates.lint import DEFAULT_CLINICAL_TERMS
from tests.conftest import make_staff
from tests.staff_helpers import csrf_of, sign_in
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fresh_redis")

ADMIN = "tara.admin@demo-clinic.example.org"
TYPO = "Hi {{ patient.frist_name }}, see you {{ appointment.start | date }}."
JOURNEY = """
key: check_in
name: Check-in reminder
purpose: reminders
anchor: appointment_start
steps:
  - id: remind
    offset: -24h
    template: appointment_reminder
    channel: sms
"""


@pytest.fixture
async def admin(db: Database) -> Any:
    await do_seed_templates(db)
    return await make_staff(db, ADMIN, role="admin")


@pytest.fixture
async def client(admin: Any, db: Database, settings: Any, aiohttp_client: Any) -> Any:
    app = create_app(replace(settings, public_url="http://127.0.0.1"), db=db)
    client = await aiohttp_client(app)
    await sign_in(client, ADMIN)
    return client


def _body(templates: Any, key: str, channel: str, locale: str) -> str | None:
    t = next(t for t in templates if t.key == key)
    return next((v.body for v in t.variants if (v.channel, v.locale) == (channel, locale)), None)


def test_a_trial_says_what_the_save_would_say() -> None:
    refused = try_variant(
        "appointment_reminder", "sms", "en", None, TYPO, None, terms=DEFAULT_CLINICAL_TERMS
    )
    assert refused.error is not None and refused.rendered is None
    assert "patient.frist_name is not a variable of appointment_reminder" in str(refused.error)
    ok = try_variant(
        "appointment_reminder",
        "sms",
        "en",
        None,
        "Hi {{ patient.first_name | default('there') }}, your biopsy is on "
        "{{ appointment.start | date }}. {{ clinic.name }}",
        None,
        terms=DEFAULT_CLINICAL_TERMS,
    )
    assert ok.error is None and ok.rendered is not None
    assert ok.rendered.body.startswith("Hi Sam, your biopsy is on ")
    assert ok.segments is not None and (ok.segments.segments, ok.segments.encoding) == (1, "GSM-7")
    assert any('"biopsy"' in w for w in ok.warnings)
    accented = try_variant(
        "sms_help", "sms", "en", None, "Done ✓ {{ clinic.name }}", None, terms=()
    )
    assert accented.segments is not None and accented.segments.encoding == "UCS-2"


async def test_the_list_filters_by_name_channel_language_and_changed(
    client: Any, admin: Any, db: Database
) -> None:
    everything = await (await client.get("/admin/templates")).text()
    assert "appointment_reminder" in everything and "nps_survey" in everything
    by_name = await (await client.get("/admin/templates?q=survey")).text()
    assert "nps_survey" in by_name and "appointment_reminder_today" not in by_name
    nothing = await (await client.get("/admin/templates?changed=1")).text()
    shipped = len(load_seed())
    assert f"0 of {shipped} templates" in nothing and "No template matches" in nothing
    await do_save_variant(
        db,
        admin.actor,
        "appointment_reminder",
        "sms",
        "en",
        None,
        "See you {{ appointment.start | date }}.",
        None,
    )
    changed = await (await client.get("/admin/templates?changed=1")).text()
    assert ">appointment_reminder</a>" in changed and "nps_survey" not in changed
    assert "1 edited" in changed
    voice_es = await (await client.get("/admin/templates?channel=voice&language=es")).text()
    assert ">appointment_reminder</a>" in voice_es and ">chat_invite</a>" not in voice_es


async def test_one_template_page_previews_live_and_refuses_in_place(
    client: Any, db: Database
) -> None:
    page = await (await client.get("/admin/templates/appointment_reminder")).text()
    assert 'id="variant-appointment_reminder-sms-en"' in page
    assert 'id="variant-appointment_reminder-voice-es"' in page
    assert "Spanish (es)" in page and "Remove Spanish" in page
    assert "Hi Sam, reminder of your Example Clinic appointment" in html_lib.unescape(page)
    assert (await client.get("/admin/templates/no_such_template")).status == 404

    csrf = await csrf_of(client, "/admin/templates/appointment_reminder")
    tried = await client.post(
        "/admin/templates/appointment_reminder/try",
        data={"csrf_token": csrf, "channel": "sms", "locale": "en", "body": TYPO},
    )
    said = html_lib.unescape(await tried.text())
    assert "Would not be saved" in said and "did you mean patient.first_name?" in said
    fixed = await client.post(
        "/admin/templates/appointment_reminder/try",
        data={
            "csrf_token": csrf,
            "channel": "sms",
            "locale": "en",
            "body": "Hello {{ patient.first_name | default('there') }} ✓",
        },
    )
    said = html_lib.unescape(await fixed.text())
    assert "Hello Sam ✓" in said and "1 segment" in said and "UCS-2" in said
    before = await do_list_templates(db)
    refused = await client.post(
        "/admin/templates",
        data={
            "csrf_token": csrf,
            "key": "appointment_reminder",
            "channel": "sms",
            "locale": "en",
            "body": TYPO,
        },
    )
    assert refused.status == 422
    form = (await refused.text()).split('id="variant-appointment_reminder-sms-en"')[1]
    assert html_lib.escape(TYPO, quote=False) in form.split("</form>")[0]
    assert await do_list_templates(db) == before


async def test_revert_puts_the_shipped_text_back(client: Any, admin: Any, db: Database) -> None:
    actor = admin.actor
    shipped = _body(await do_list_templates(db), "sms_help", "sms", "en")
    await do_save_variant(
        db, actor, "sms_help", "sms", "en", None, "Call {{ clinic.phone }}.", None
    )
    page = await (await client.get("/admin/templates/sms_help")).text()
    assert "Revert to the shipped text" in page
    csrf = await csrf_of(client, "/admin/templates/sms_help")
    done = await client.post(
        "/admin/templates/sms_help/revert",
        data={"csrf_token": csrf, "channel": "sms", "locale": "en"},
        allow_redirects=False,
    )
    assert done.status == 303
    templates = await do_list_templates(db)
    assert _body(templates, "sms_help", "sms", "en") == shipped
    variant = next(
        v
        for t in templates
        if t.key == "sms_help"
        for v in t.variants
        if (v.channel, v.locale) == ("sms", "en")
    )
    assert variant.edited_at is None
    # A language the clinic added has no shipped text to go back to.
    await do_save_variant(db, actor, "sms_help", "sms", "vi", None, "Gọi {{ clinic.phone }}.", None)
    with pytest.raises(TemplateInvalid, match="no shipped text"):
        await do_revert_variant(db, actor, "sms_help", "sms", "vi")


async def test_a_language_is_added_as_drafts_and_removed_after_confirming(
    client: Any, db: Database
) -> None:
    drafts = await (await client.get("/admin/templates/sms_help?add=vi")).text()
    assert "New: Vietnamese (vi)" in drafts and "Not saved yet" in drafts
    assert 'id="variant-sms_help-sms-vi"' in drafts
    assert _body(await do_list_templates(db), "sms_help", "sms", "vi") is None  # nothing stored
    already = await (await client.get("/admin/templates/sms_help?add=en")).text()
    assert "sms_help already has texts in en" in already

    csrf = await csrf_of(client, "/admin/templates/sms_help")
    await client.post(
        "/admin/templates",
        data={
            "csrf_token": csrf,
            "key": "sms_help",
            "channel": "sms",
            "locale": "vi",
            "body": "Gọi {{ clinic.phone }}.",
        },
    )
    assert _body(await do_list_templates(db), "sms_help", "sms", "vi") == "Gọi {{ clinic.phone }}."
    removed = await client.post(
        "/admin/templates/sms_help/remove-language", data={"csrf_token": csrf, "locale": "vi"}
    )
    assert "Removed Vietnamese (sms) from sms_help." in await removed.text()
    assert _body(await do_list_templates(db), "sms_help", "sms", "vi") is None
    async with db.reader() as session:
        event = (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.action == "template.language.remove")
            )
        ).one()
    assert event.detail == {"locale": "vi", "channels": ["sms"]}


async def test_the_default_language_stays_while_a_journey_uses_the_template(
    client: Any, admin: Any, db: Database
) -> None:
    actor = admin.actor
    await journeys.do_install_journey(db, actor, JOURNEY, "check_in.yaml")
    csrf = await csrf_of(client, "/admin/templates/appointment_reminder")
    refused = await client.post(
        "/admin/templates/appointment_reminder/remove-language",
        data={"csrf_token": csrf, "locale": "en"},
    )
    said = html_lib.unescape(await refused.text())
    assert "Not removed: en cannot be removed from appointment_reminder" in said
    assert "Check-in reminder" in said
    assert _body(await do_list_templates(db), "appointment_reminder", "sms", "en") is not None
    # Another language of the same template may go; a template no journey sends may lose en.
    ok = await client.post(
        "/admin/templates/appointment_reminder/remove-language",
        data={"csrf_token": csrf, "locale": "es"},
    )
    assert "Removed Spanish" in await ok.text()
    other = await client.post(
        "/admin/templates/nps_survey/remove-language", data={"csrf_token": csrf, "locale": "en"}
    )
    assert "Removed English" in await other.text()


OLD_VERSION = JOURNEY.replace("appointment_reminder\n", "appointment_reminder_today\n")


async def test_an_older_journey_version_still_followed_keeps_its_language(
    admin: Any, db: Database, ring: Any
) -> None:
    from datetime import UTC, datetime, timedelta

    from hub.inbox import actions
    from hub.inbox.schemas import NewPatient
    from hub.journeys.template_languages import do_remove_template_language
    from hub.journeys.versions import do_save_journey

    await do_save_journey(db, admin.actor, OLD_VERSION, "check_in.yaml")
    patient = await actions.do_create_patient(
        db,
        ring,
        admin.actor,
        NewPatient(name="Sample Pat", phone="+15550100142", time_zone="America/New_York"),
        region="US",
    )
    visit = datetime.now(UTC).replace(microsecond=0) + timedelta(days=7)
    await journeys.do_enroll(
        db,
        admin.actor,
        "check_in",
        patient,
        appointment=journeys.NewAppointment("A-1", visit),
        ring=ring,
    )
    await do_save_journey(db, admin.actor, JOURNEY, "builder")  # v2 sends another template
    with pytest.raises(TemplateInvalid, match="the journey Check-in reminder sends this template"):
        await do_remove_template_language(db, admin.actor, "appointment_reminder_today", "en")
    assert _body(await do_list_templates(db), "appointment_reminder_today", "sms", "en")
