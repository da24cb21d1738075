"""Message templates: SMS segment math, rendering with dates in the patient's zone and language,
errors that name the missing variable (so a send fails with a reason instead of a blank), the
sandbox, locale fallback, seeding, lint, and the audited preview."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from jinja2.exceptions import SecurityError
from sqlalchemy import delete, func, select

from hub.audit import Actor, AuditEvent
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel
from hub.inbox.actions import build_patient
from hub.inbox.exceptions import NotFound
from hub.inbox.schemas import NewPatient
from hub.templates import TemplateInvalid, TemplateMissing, TemplateRenderError
from hub.templates.actions import (
    PatientFacts,
    do_list_templates,
    do_preview,
    do_render,
    do_save_variant,
    do_seed_templates,
    load_seed,
    locale_chain,
    render_template,
    template_context,
)
from hub.templates.lint import lint_variant
from hub.templates.models import MessageTemplate, TemplateVariant
from hub.templates.render import VariantText, render_variant
from hub.templates.segments import segment_info

ADMIN = Actor.system("templates-test-admin")
CLINIC = {"name": "Riverside Family Clinic", "phone": "(555) 010-0123"}
THU_3PM_UTC = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
APPOINTMENT = {
    "start": THU_3PM_UTC,
    "location": "120 Main St, Suite 4",
    "provider": "Dr. Rivera",
}
SHIPPED_KEYS = {
    "appointment_reminder",
    "appointment_confirmed",
    "appointment_cancelled",
    "visit_follow_up",
    "nps_survey",
    "after_hours",
    "urgent_reply",
    "sms_help",
    # Used by the shipped example journeys:
    "appointment_reminder_today",
    "survey_could_do_better",
    "survey_thanks",
    "screening_recall",
    "chat_invite",
    # Asked after a resolution by teams with CSAT on (hub.journeys.csat):
    "csat_question",
}


def context(
    name: str | None = "Alexandra Quinn",
    language: str = "en",
    tz: str = "America/New_York",
    appointment: dict[str, Any] | None = APPOINTMENT,
) -> dict[str, Any]:
    links = {"chat": "https://hub.example-clinic.org/chat/" + "a" * 48}
    return template_context(PatientFacts(name, language, tz), appointment, CLINIC, links=links)


def variant(body: str, channel: str = "sms", locale: str = "en", **parts: str) -> VariantText:
    return VariantText("test_template", channel, locale, body, **parts)


# --- SMS segment math ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", "GSM-7", 0, 0),
        ("Reply C to confirm", "GSM-7", 18, 1),
        ("A" * 160, "GSM-7", 160, 1),
        ("A" * 161, "GSM-7", 161, 2),
        ("A" * 306, "GSM-7", 306, 2),
        ("A" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension characters count twice
        ("€" * 81, "GSM-7", 162, 2),
        ("{" * 80, "GSM-7", 160, 1),
        ("A" * 159 + "{", "GSM-7", 161, 2),
        # 306 septets would fit two parts, but the € cannot straddle septet 153: three parts.
        ("A" * 152 + "€" + "A" * 152, "GSM-7", 306, 3),
        ("Café à 10h, señor: ¿sí?", "UCS-2", 23, 1),  # í is not GSM-7; é, à, ñ, ¿ are
        ("Hello 😀", "UCS-2", 8, 1),  # the emoji is a surrogate pair: two units
        ("á" * 70, "UCS-2", 70, 1),
        ("á" * 71, "UCS-2", 71, 2),
        ("😀" * 35, "UCS-2", 70, 1),
        ("😀" * 36, "UCS-2", 72, 2),
        # 134 units would fit two parts of 67, but the pair cannot be split: three parts.
        ("a" * 66 + "😀" + "a" * 66, "UCS-2", 134, 3),
    ],
)
def test_segment_math_against_known_strings(
    text: str, encoding: str, units: int, segments: int
) -> None:
    info = segment_info(text)
    assert (info.encoding, info.units, info.segments) == (encoding, units, segments)


def test_segment_info_names_what_forced_ucs2_and_the_room_per_segment() -> None:
    assert segment_info("Hello 😀").non_gsm == ("😀",)
    assert segment_info("A" * 160).per_segment == 160
    assert segment_info("A" * 161).per_segment == 153
    assert segment_info("á" * 71).per_segment == 67
    assert str(segment_info("A" * 161)) == "2 segments (161 characters, GSM-7)"


# --- rendering -----------------------------------------------------------------------------


def test_dates_in_the_patients_time_zone_and_language() -> None:
    body = "{{ appointment.start | datetime }}"
    assert render_variant(variant(body), context(language="en-US")).body == (
        "Thursday, November 26 at 10:00 AM"
    )
    # Same instant, another zone: the day changes too.
    assert render_variant(variant(body), context(language="en-US", tz="Asia/Tokyo")).body == (
        "Friday, November 27 at 12:00 AM"
    )
    assert render_variant(variant(body, locale="es"), context(language="es")).body == (
        "jueves, 26 de noviembre, 10:00"
    )
    assert render_variant(
        variant(body, locale="es"), context(language="es", tz="Europe/Madrid")
    ).body == ("jueves, 26 de noviembre, 16:00")
    # A British patient reading the English variant gets British conventions.
    assert render_variant(variant(body), context(language="en-GB", tz="Europe/London")).body == (
        "Thursday 26 November at 15:00"
    )


def test_date_and_time_filters_and_named_formats() -> None:
    ctx = context(language="en-US")
    body = "{{ appointment.start | date }} / {{ appointment.start | time }}"
    assert render_variant(variant(body), ctx).body == "Thursday, November 26 / 10:00 AM"
    full = "{{ appointment.start | date('full') }}"
    assert render_variant(variant(full), ctx).body == "Thursday, November 26, 2026"
    short = "{{ appointment.start | datetime('short') }}"
    assert render_variant(variant(short), ctx).body == "11/26/26, 10:00 AM"
    iso = {"start": "2026-11-26T15:00:00+00:00"}  # as a FHIR bundle carries it
    assert render_variant(
        variant("{{ appointment.start | time }}"), context(appointment=iso)
    ).body == ("10:00 AM")


def test_times_stay_in_gsm7_so_a_time_does_not_halve_the_sms() -> None:
    # CLDR writes "10:00\u202fAM"; that narrow space would force UCS-2.
    rendered = render_variant(variant("{{ appointment.start | time }}"), context()).body
    assert segment_info(rendered).encoding == "GSM-7"


def test_a_naive_datetime_is_refused_rather_than_guessed() -> None:
    ctx = context(appointment={"start": datetime(2026, 11, 26, 10, 0)})
    with pytest.raises(TemplateRenderError, match="needs a date and time with a time zone"):
        render_variant(variant("{{ appointment.start | datetime }}"), ctx)


def test_a_missing_variable_fails_the_render_naming_it() -> None:
    reminder = variant(
        "Hi {{ patient.first_name }}, see you {{ appointment.start | datetime }}.",
        locale="en",
    )
    reminder = VariantText("appointment_reminder", "sms", "en", reminder.body)
    with pytest.raises(TemplateRenderError) as caught:
        render_variant(reminder, context(appointment={"location": "Main St"}))
    assert str(caught.value) == (
        "template appointment_reminder (sms, en) needs appointment.start, "
        "which this send does not have"
    )
    assert caught.value.missing == "appointment.start"
    # No appointment at all: still the full path, not just "appointment".
    with pytest.raises(TemplateRenderError, match=r"needs appointment\.start,"):
        render_variant(reminder, context(appointment=None))


def test_unknown_values_are_missing_not_blank() -> None:
    with pytest.raises(TemplateRenderError, match=r"needs patient\.first_name,") as caught:
        render_variant(variant("Hi {{ patient.first_name }}"), context(name=None))
    assert caught.value.line == 1
    optional = "Hi {{ patient.first_name | default('there') }}"
    assert render_variant(variant(optional), context(name=None)).body == "Hi there"


def test_syntax_errors_name_the_line() -> None:
    with pytest.raises(TemplateRenderError, match="syntax error in its body on line 2"):
        render_variant(variant("Hi\n{% if patient.first_name %}"), context())


def test_the_sandbox_refuses_unsafe_attribute_access() -> None:
    for body in (
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ lipsum.__globals__ }}",
        "{{ patient._values }}",
    ):
        with pytest.raises(TemplateRenderError, match="unsafe") as caught:
            render_variant(variant(body), context())
        assert isinstance(caught.value.__context__, SecurityError)


def test_errors_from_python_do_not_echo_values() -> None:
    with pytest.raises(TemplateRenderError) as caught:
        render_variant(variant("{{ patient.name + 1 }}"), context(name="Zelda Secretname"))
    assert "Secretname" not in str(caught.value)
    assert "TypeError" in str(caught.value)


def test_email_html_escapes_what_the_patient_provided() -> None:
    email = variant(
        "Hi {{ patient.first_name }}",
        channel="email",
        subject="For {{ patient.name }}",
        html="<p>Hi {{ patient.first_name }}</p>",
    )
    rendered = render_variant(email, context(name="<script>alert(1)</script>\r\nBcc: x"))
    assert rendered.html == "<p>Hi &lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert rendered.body == "Hi <script>alert(1)</script>"  # plain text is not HTML
    assert "\n" not in (rendered.subject or "") and "\r" not in (rendered.subject or "")
    assert "script" not in repr(rendered)


def test_replies_render_for_a_patient_we_know_nothing_about() -> None:
    # After-hours, urgent and HELP replies go to unknown numbers: no name, no appointment.
    for seed in load_seed():
        if seed["key"] not in {"after_hours", "urgent_reply", "sms_help"}:
            continue
        for v in seed["variants"]:
            text = VariantText(
                seed["key"], v["channel"], v["locale"], v["body"], v["subject"], v["html"]
            )
            rendered = render_variant(text, context(name=None, appointment=None))
            assert CLINIC["name"] in rendered.body or "911" in rendered.body


def test_an_empty_render_is_an_error() -> None:
    with pytest.raises(TemplateRenderError, match="rendered an empty message"):
        render_variant(variant("{% if false %}x{% endif %}  "), context())


# --- lint ----------------------------------------------------------------------------------


def test_lint_warns_about_clinical_fields_on_sms_and_voice_only() -> None:
    text = (
        "Hi {{ patient.first_name }}, your {{ appointment.reason }} visit: bring {{ medication }}"
    )
    for channel in ("sms", "voice"):
        (warning,) = lint_variant("visit_prep", channel, text)
        assert "appointment.reason" in warning and "medication" in warning
        assert "not a secure channel" in warning
    assert lint_variant("visit_prep", "email", text) == []


def test_lint_warns_above_the_segment_limit_and_about_ucs2_characters() -> None:
    long_text = "A" * 470  # 4 segments
    (warning,) = lint_variant("long_one", "sms", long_text)
    assert "4 segments" in warning and "more than 3" in warning
    assert lint_variant("long_one", "sms", long_text, max_segments=4) == []
    (ucs2,) = lint_variant("quotes", "sms", "We\u2019re open")  # a typographic apostrophe
    assert "\u2019" in ucs2 and "GSM-7" in ucs2


def test_shipped_templates_are_lint_clean_and_short() -> None:
    seeds = load_seed()
    assert {s["key"] for s in seeds} == SHIPPED_KEYS
    for seed in seeds:
        for v in seed["variants"]:
            text = VariantText(
                seed["key"], v["channel"], v["locale"], v["body"], v["subject"], v["html"]
            )
            rendered = render_variant(text, context(language=v["locale"]))
            assert lint_variant(seed["key"], v["channel"], v["body"], rendered=rendered.body) == []
            if v["channel"] == "sms":
                assert segment_info(rendered.body).segments <= 2, (seed["key"], v["locale"])
                # CANCEL is a carrier opt-out keyword: never ask a patient to text it.
                assert re.search(r"\bCANCEL\b", v["body"]) is None


def test_reminders_ask_for_c_and_a_call_never_for_cancel_by_text() -> None:
    (reminder,) = [s for s in load_seed() if s["key"] == "appointment_reminder"]
    channels = {(v["channel"], v["locale"]) for v in reminder["variants"]}
    assert channels == {(c, loc) for c in ("sms", "email", "voice", "chat") for loc in ("en", "es")}
    sms_en = next(v for v in reminder["variants"] if v["channel"] == "sms" and v["locale"] == "en")
    text = render_variant(
        VariantText("appointment_reminder", "sms", "en", sms_en["body"]), context()
    ).body
    assert "Reply C to confirm or call (555) 010-0123 to reschedule." in text


# --- database: seed, save, render, preview -------------------------------------------------


async def test_seeding_is_idempotent_and_keeps_clinic_edits(db: Database) -> None:
    await do_seed_templates(db)
    again = await do_seed_templates(db)
    assert (again.templates_added, again.variants_added) == (0, 0)
    listed = {t.key: t for t in await do_list_templates(db)}
    assert set(listed) >= SHIPPED_KEYS
    assert listed["nps_survey"].purpose == "surveys"

    edited = (
        "Hi {{ patient.first_name | default('there') }}: {{ clinic.name }} visit "
        "{{ appointment.start | date }}."
    )
    await do_save_variant(db, ADMIN, "appointment_reminder", "sms", "en", None, edited, None)
    async with db.transaction() as session:
        template_id = await session.scalar(
            select(MessageTemplate.id).where(MessageTemplate.key == "appointment_reminder")
        )
        await session.execute(
            delete(TemplateVariant).where(
                TemplateVariant.template_id == template_id,
                TemplateVariant.channel == Channel.VOICE,
                TemplateVariant.locale == "es",
            )
        )

    result = await do_seed_templates(db)
    assert (result.templates_added, result.variants_added) == (0, 1)  # only the deleted one
    listed = {t.key: t for t in await do_list_templates(db)}
    sms_en = next(
        v for v in listed["appointment_reminder"].variants if (v.channel, v.locale) == ("sms", "en")
    )
    assert sms_en.body == edited and sms_en.edited_at is not None


async def test_do_render_falls_back_from_regional_to_language_to_clinic_default(
    db: Database,
) -> None:
    await do_seed_templates(db)
    spanish = await do_render(
        db, "appointment_confirmed", "sms", "es-MX", context(language="es-MX")
    )
    assert spanish.body.startswith("Gracias Alexandra, su cita del jueves, 26 de noviembre")
    # No French variant: the English one, with English dates (not "jeudi" in an English text).
    french = await do_render(db, "appointment_confirmed", "sms", "fr", context(language="fr"))
    assert french.body.startswith("Thanks Alexandra, your appointment on Thursday, November 26")
    assert locale_chain("es-mx") == ["es-MX", "es", "en"]
    assert locale_chain("not a language") == ["en"]


async def test_a_missing_channel_or_key_is_template_missing(db: Database) -> None:
    await do_seed_templates(db)
    with pytest.raises(TemplateMissing, match="sms_help has no voice variant in es, en") as no:
        await do_render(db, "sms_help", "voice", "es", context())
    assert no.value.channel == "voice"  # the caller may try the patient's next channel
    with pytest.raises(TemplateMissing, match="no template named 'nope'") as unknown:
        await do_render(db, "nope", "sms", "en", context())
    assert unknown.value.channel is None


async def test_the_send_path_render_fails_with_the_reason_when_a_variable_is_missing(
    db: Database,
) -> None:
    await do_seed_templates(db)
    no_appointment = context(appointment=None)
    async with db.reader() as session:
        with pytest.raises(TemplateRenderError) as caught:
            await render_template(session, "appointment_reminder", "sms", no_appointment)
    assert str(caught.value) == (
        "template appointment_reminder (sms, en) needs appointment.start, "
        "which this send does not have"
    )
    async with db.reader() as session:
        ok = await render_template(session, "appointment_reminder", "sms", context())
    assert "Thursday, November 26 at 10:00 AM" in ok.body


async def test_saving_validates_and_audits_without_the_text(db: Database) -> None:
    await do_seed_templates(db)
    with pytest.raises(TemplateInvalid, match="on line 2"):
        await do_save_variant(db, ADMIN, "sms_help", "sms", "en", None, "Hi\n{% if %}", None)
    with pytest.raises(TemplateInvalid, match="needs a subject"):
        await do_save_variant(db, ADMIN, "sms_help", "email", "en", None, "Hi", None)
    with pytest.raises(TemplateInvalid, match="unknown channel"):
        await do_save_variant(db, ADMIN, "sms_help", "fax", "en", None, "Hi", None)
    with pytest.raises(TemplateMissing):
        await do_save_variant(db, ADMIN, "no_such_key", "sms", "en", None, "Hi", None)

    saved = await do_save_variant(
        db, ADMIN, "sms_help", "sms", "pt_br", "", "Ajuda: resultados {{ clinic.phone }}", ""
    )
    assert (saved.variant.locale, saved.variant.subject) == ("pt-BR", None)
    assert any('"resultados"' in w and "not a secure channel" in w for w in saved.warnings)
    async with db.reader() as session:
        event = (
            await session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "template.variant.save")
                .order_by(AuditEvent.seq.desc())
            )
        ).first()
    assert event is not None and event.detail == {"channel": "sms", "locale": "pt-BR"}


async def test_preview_shows_the_patient_and_is_audited_without_phi(
    db: Database, ring: KeyRing
) -> None:
    await do_seed_templates(db)
    name = "Marisol Preview-Sample"
    async with db.transaction() as session:
        patient = build_patient(
            ring,
            NewPatient(name=name, phone="+15550104477", language="es", time_zone="America/Chicago"),
            "US",
        )
        session.add(patient)
    staff = Actor.staff(uuid.uuid4())

    preview = await do_preview(
        db, ring, staff, "appointment_reminder", "sms", patient.id, APPOINTMENT, clinic=CLINIC
    )
    assert preview.rendered.body.startswith("Hola Marisol, le recordamos su cita")
    assert "jueves, 26 de noviembre, 9:00" in preview.rendered.body  # Chicago time
    assert preview.locale == "es"
    assert preview.segments is not None and preview.segments.segments == 2
    assert preview.warnings == []
    assert "Marisol" not in repr(preview)

    async with db.reader() as session:
        events = (
            await session.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == "template.preview", AuditEvent.actor == str(staff)
                )
            )
        ).all()
    assert len(events) == 1
    (event,) = events
    assert (event.subject_type, event.subject_id) == ("patient", str(patient.id))
    assert event.detail == {"template": "appointment_reminder", "channel": "sms", "locale": "es"}
    dumped = json.dumps(event.detail)
    assert "Marisol" not in dumped and "5550104477" not in dumped


async def test_a_preview_that_cannot_render_says_why_and_audits_nothing(
    db: Database, ring: KeyRing
) -> None:
    await do_seed_templates(db)
    async with db.transaction() as session:
        patient = build_patient(ring, NewPatient(name="Tomas Sample"), "US")
        session.add(patient)
    staff = Actor.staff(uuid.uuid4())
    with pytest.raises(TemplateRenderError, match=r"needs appointment\.start"):
        await do_preview(
            db, ring, staff, "appointment_reminder", "email", patient.id, None, clinic=CLINIC
        )
    with pytest.raises(NotFound):
        await do_preview(
            db, ring, staff, "appointment_reminder", "sms", uuid.uuid4(), None, clinic=CLINIC
        )
    async with db.reader() as session:
        count = await session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.actor == str(staff))
        )
    assert count == 0


async def test_every_shipped_template_renders_for_a_patient_without_a_name() -> None:
    """A patient who texted in from an unknown number has no name yet; greetings drop it
    instead of failing the send."""
    import json
    from importlib import resources
    from zoneinfo import ZoneInfo

    from hub.templates.render import VariantText, render_variant

    context = {
        "patient": {},
        "appointment": {
            "start": datetime(2026, 11, 27, 10, tzinfo=ZoneInfo("America/New_York")),
            "location": "Room 2",
            "provider": "Dr. Demo",
        },
        "clinic": {"name": "Demo Clinic", "phone": "+15550109999"},
        "links": {"chat": "https://hub.example.org/c/x", "reschedule": "https://x"},
        "tz": "America/New_York",
        "locale": "en",
    }
    rendered = 0
    for path in resources.files("hub.templates").joinpath("seed").iterdir():
        seed = json.loads(path.read_text())
        for v in seed["variants"]:
            parts = [v.get(p) for p in ("body", "subject", "html")]
            body, subject, html = ("\n".join(p) if isinstance(p, list) else p for p in parts)
            variant = VariantText(seed["key"], v["channel"], v["locale"], body, subject, html)
            body = render_variant(variant, context).body
            assert "None" not in body and " ," not in body, (seed["key"], v["channel"], body)
            rendered += 1
    assert rendered > 40
