"""Templates are checked when saved, against what their key's sends provide: unknown variables,
filters and tests are refused with the name and line; optional variables must be optional in
the text (every shipped template renders with each one missing); clinical words in SMS and
voice texts draw a warning, from a shipped list the clinic can extend."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from hub.audit import Actor, AuditEvent
from hub.db import Database
from hub.templates import TemplateInvalid, TemplateRenderError
from hub.templates.actions import (
    PatientFacts,
    do_get_clinical_terms,
    do_list_templates,
    do_save_variant,
    do_seed_templates,
    do_set_clinical_terms,
    load_seed,
    template_context,
)
from hub.templates.lint import DEFAULT_CLINICAL_TERMS, check_for_save, clinical_words, lint_variant
from hub.templates.render import VariantText, render_variant
from hub.templates.variables import DECLARED, declared_for

ADMIN = Actor.system("template-checks-admin")
START = datetime(2026, 3, 12, 15, 30, tzinfo=UTC)
SEEDS = load_seed()
VARIANTS = [(seed["key"], v) for seed in SEEDS for v in seed["variants"]]


def _text(key: str, v: dict[str, Any]) -> VariantText:
    return VariantText(key, v["channel"], v["locale"], v["body"], v["subject"], v["html"])


def _id(item: tuple[str, dict[str, Any]]) -> str:
    return f"{item[0]}-{item[1]['channel']}-{item[1]['locale']}"


def _stored(templates: Any, key: str, channel: str, locale: str) -> str:
    template = next(t for t in templates if t.key == key)
    return next(v.body for v in template.variants if (v.channel, v.locale) == (channel, locale))


# --- the save check -----------------------------------------------------------------------


async def test_a_typo_in_a_variable_is_refused_naming_it_and_the_line(db: Database) -> None:
    await do_seed_templates(db)
    before = _stored(await do_list_templates(db), "appointment_reminder", "sms", "en")
    typo = "Hello!\nHi {{ patient.frist_name }}, see you {{ appointment.start | date }}."
    with pytest.raises(TemplateInvalid) as refused:
        await do_save_variant(db, ADMIN, "appointment_reminder", "sms", "en", None, typo, None)
    message = str(refused.value)
    assert "line 2" in message and "patient.frist_name is not a variable" in message
    assert "did you mean patient.first_name?" in message
    assert (refused.value.name, refused.value.line) == ("patient.frist_name", 2)
    # Nothing was written: the reminders keep going out with the text that works.
    assert _stored(await do_list_templates(db), "appointment_reminder", "sms", "en") == before


@pytest.mark.parametrize(
    ("body", "name", "words"),
    [
        ("{{ clinic.name | uper }}", "uper", "no filter named 'uper' (did you mean upper?)"),
        # Jinja only looks a filter up when its branch runs: the check reads the whole text.
        ("{% if appointment.location is defined %}{{ appointment.location | titel }}{% endif %}"
         "{{ clinic.name }}", "titel", "no filter named 'titel'"),
        ("{% if patient.first_name is defind %}Hi{% endif %} {{ clinic.name }}", "defind",
         "no test named 'defind' (did you mean defined?)"),
        ("{{ links.chat }} {{ clinic.name }}", "links.chat", "links.chat is not a variable"),
        ("Take {{ medication }} - {{ clinic.name }}", "medication", "medication is not a variable"),
    ],
)  # fmt: skip
async def test_unknown_filters_tests_and_variables_are_refused(
    db: Database, body: str, name: str, words: str
) -> None:
    await do_seed_templates(db)
    with pytest.raises(TemplateInvalid, match=r"line 1") as refused:
        await do_save_variant(db, ADMIN, "appointment_reminder", "sms", "en", None, body, None)
    assert words in str(refused.value) and refused.value.name == name


async def test_an_optional_variable_used_as_if_always_there_is_refused(db: Database) -> None:
    """The shipped day-of reminder failed for every appointment without a location: under
    strict undefined, `{% if appointment.location %}` fails when the booking has none."""
    await do_seed_templates(db)
    body = (
        "See you at {{ appointment.start | time }}{% if appointment.location %}, room\n"
        "{{ appointment.location }}{% endif %}."
    )
    with pytest.raises(TemplateInvalid) as refused:
        await do_save_variant(
            db, ADMIN, "appointment_reminder_today", "sms", "en", None, body, None
        )
    assert "appointment.location is not known for every send" in str(refused.value)
    assert "{% if appointment.location is defined %}" in str(refused.value)
    fixed = body.replace("if appointment.location %", "if appointment.location is defined %")
    saved = await do_save_variant(
        db, ADMIN, "appointment_reminder_today", "sms", "en", None, fixed, None
    )
    assert saved.variant.body == fixed


def test_what_a_key_does_not_declare_never_reaches_the_template() -> None:
    """A text saved before the check existed, using a value one sender happened to pass,
    fails at every send the same way instead of working for some of them."""
    legacy = VariantText("appointment_reminder", "sms", "en", "About {{ appointment.reason }}")
    context = _sender_context()
    context["appointment"]["reason"] = "sample reason"
    with pytest.raises(TemplateRenderError, match=r"needs appointment\.reason"):
        render_variant(legacy, context)


# --- shipped templates: optional fields are optional everywhere --------------------------


def _sender_context(
    *,
    name: str | None = "Sam Example",
    location: str | None = "Room 2",
    provider: str | None = "Dr. Example",
) -> dict[str, Any]:
    """What the senders build (hub.templates.actions.template_context), None where unknown."""
    facts = PatientFacts(name, "en", "America/New_York")
    appointment = {"start": START, "location": location, "provider": provider}
    clinic = {"name": "Example Clinic", "phone": "(555) 010-0100"}
    links = {"chat": "https://hub.example.org/chat/sample"}
    return template_context(facts, appointment, clinic, links=links)


def test_every_shipped_key_declares_what_its_sends_provide() -> None:
    assert {seed["key"] for seed in SEEDS} <= set(DECLARED)
    # A declared variable no sender can fill would pass the save check and fail every send.
    given = _sender_context()
    for key, declared in DECLARED.items():
        for path in declared.paths:
            group, name = path.split(".", 1)
            assert name in given[group], (key, path)


@pytest.mark.parametrize("item", VARIANTS, ids=[_id(i) for i in VARIANTS])
def test_every_shipped_variant_renders_with_optional_fields_missing_and_present(
    item: tuple[str, dict[str, Any]],
) -> None:
    key, v = item
    text = _text(key, v)
    declared = declared_for(key)
    for missing in [frozenset(), frozenset(declared.optional)] + [
        frozenset({p}) for p in declared.optional
    ]:
        rendered = render_variant(text, declared.sample(missing))
        assert rendered.body and "None" not in rendered.body, (missing, rendered.body)
    nobody = render_variant(text, _sender_context(name=None, location=None, provider=None))
    everything = render_variant(text, _sender_context())
    assert "None" not in nobody.body and " ," not in nobody.body
    if "appointment.location" in v["body"]:
        assert "Room 2" in everything.body and "Room 2" not in nobody.body
    check_for_save(key, v["channel"], v["locale"], v["subject"], v["body"], v["html"])


# --- clinical words -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Your HIV test is ready", ["HIV"]),
        ("your hiv TEST is ready", ["hiv"]),
        ("Bring your pregnancy   test form", ["pregnancy test"]),  # multi-word, any spacing
        ("Your A1C and lab results are in", ["A1C", "lab results"]),
        ("Pick up your label at the front desk", []),  # "lab" is not inside "label"
        ("Collaboration day: the laboratory is closed", []),
        ("Your biopsy (oncology) follow-up", ["biopsy", "oncology"]),
        ("Resultados de su biopsia", ["Resultados", "biopsia"]),
        ("Hi {{ patient.first_name | default('chemotherapy') }}", ["chemotherapy"]),
        ("Hi {{ clinic.name }}, metformin refill ready", ["metformin"]),
        ("We tested positive-ly new hours", ["positive"]),
    ],
)
def test_clinical_words_match_whole_words_any_case(text: str, found: list[str]) -> None:
    assert clinical_words(text, DEFAULT_CLINICAL_TERMS) == found


def test_clinical_words_warn_on_sms_and_voice_only() -> None:
    text = "Your chlamydia test results are ready. Call {{ clinic.phone }}."
    for channel in ("sms", "voice"):
        (warning,) = lint_variant("lab_ready", channel, text)
        assert '"chlamydia"' in warning and '"test results"' in warning
        assert "not a secure channel" in warning
    assert lint_variant("lab_ready", "email", text) == []
    assert lint_variant("lab_ready", "chat", text) == []


@pytest.mark.parametrize("item", VARIANTS, ids=[_id(i) for i in VARIANTS])
def test_no_shipped_template_trips_the_clinical_words(item: tuple[str, dict[str, Any]]) -> None:
    key, v = item
    for part in (v["body"], v["subject"], v["html"]):
        if part is not None:
            assert clinical_words(part, DEFAULT_CLINICAL_TERMS) == [], (key, v["channel"])


async def test_the_clinic_extends_the_list_and_saving_warns_about_its_terms(
    db: Database,
) -> None:
    await do_seed_templates(db)
    body = (
        "Hi{% if patient.first_name is defined %} {{ patient.first_name }}{% endif %}, your "
        "Ozempic refill is ready at {{ clinic.name }}."
    )
    saved = await do_save_variant(db, ADMIN, "visit_follow_up", "sms", "en", None, body, None)
    assert saved.warnings == []  # not on the shipped list
    stored = await do_set_clinical_terms(db, ADMIN, "ozempic\n  weight clinic \n\nozempic")
    assert stored == ["ozempic", "weight clinic"]
    assert await do_get_clinical_terms(db) == ["ozempic", "weight clinic"]
    saved = await do_save_variant(db, ADMIN, "visit_follow_up", "sms", "en", None, body, None)
    (warning,) = saved.warnings
    assert '"Ozempic"' in warning
    with pytest.raises(TemplateInvalid, match="no letters or digits"):
        await do_set_clinical_terms(db, ADMIN, ["ok", "!!!"])
    async with db.reader() as session:
        event = (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.action == "template.clinical_terms.update")
            )
        ).one()
    assert event.detail == {"terms": 2}


# --- the admin page and the API -----------------------------------------------------------

ADMIN_EMAIL = "tara.admin@demo-clinic.example.org"
AGENT_EMAIL = "ari.agent@demo-clinic.example.org"
TYPO = "Hi {{ patient.frist_name }}, see you {{ appointment.start | date }}. - {{ clinic.name }}"


@pytest.fixture
async def client(db: Database, settings: Any, aiohttp_client: Any) -> Any:
    from dataclasses import replace

    from tests.conftest import make_staff
    from web.app import create_app

    await do_seed_templates(db)
    await make_staff(db, ADMIN_EMAIL, role="admin")
    await make_staff(db, AGENT_EMAIL, role="agent")
    app = create_app(replace(settings, public_url="http://127.0.0.1"), db=db)
    return await aiohttp_client(app)


@pytest.mark.usefixtures("fresh_redis")
async def test_the_admin_page_refuses_a_typo_and_keeps_the_typed_text(
    client: Any, db: Database
) -> None:
    import html as html_lib

    from tests.staff_helpers import csrf_of, sign_in

    await sign_in(client, ADMIN_EMAIL)
    csrf = await csrf_of(client, "/admin/templates")
    before = _stored(await do_list_templates(db), "appointment_reminder", "sms", "en")
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
    page = await refused.text()
    assert refused.status == 422
    assert "Saved." not in page
    assert "patient.frist_name is not a variable of appointment_reminder" in html_lib.unescape(page)
    # The refusal sits in the form that was sent, which still holds what the admin typed.
    form = page.split('id="variant-appointment_reminder-sms-en"')[1].split("</form>")[0]
    assert 'role="alert"' in form and 'aria-invalid="true"' in form
    assert (
        html_lib.unescape(form.split("<textarea")[1].split(">", 1)[1].split("</textarea")[0])
        == TYPO
    )
    assert _stored(await do_list_templates(db), "appointment_reminder", "sms", "en") == before

    # The clinic's own clinical words are saved from the same page.
    saved_terms = await client.post(
        "/admin/templates/clinical-terms",
        data={"csrf_token": csrf, "terms": "Ozempic\nweight clinic"},
        allow_redirects=False,
    )
    assert saved_terms.status in (302, 303)
    assert await do_get_clinical_terms(db) == ["Ozempic", "weight clinic"]
    page = await (await client.get("/admin/templates")).text()
    assert "Ozempic\nweight clinic</textarea>" in page


@pytest.mark.usefixtures("fresh_redis")
async def test_the_api_refuses_a_typo_with_422_and_the_reason(client: Any, db: Database) -> None:
    from tests.staff_helpers import csrf_of, sign_in

    await sign_in(client, ADMIN_EMAIL)
    headers = {"X-CSRF-Token": await csrf_of(client, "/")}
    url = "/api/templates/appointment_reminder/sms/en"
    refused = await client.put(url, json={"body": TYPO}, headers=headers)
    assert refused.status == 422
    error = (await refused.json())["error"]
    assert error["code"] == "template_invalid"
    assert (error["name"], error["line"], error["part"]) == ("patient.frist_name", 1, "text")
    assert "did you mean patient.first_name?" in error["message"]

    fixed = TYPO.replace("frist_name", "first_name | default('there')")
    saved = await client.put(url, json={"body": fixed + " Your HIV results"}, headers=headers)
    assert saved.status == 200
    answer = await saved.json()
    assert answer["variant"]["body"] == fixed + " Your HIV results"
    (warning,) = answer["warnings"]
    assert '"HIV"' in warning
    missing = await client.put("/api/templates/nope/sms/en", json={"body": "Hi"}, headers=headers)
    assert missing.status == 404
    listed = await (await client.get("/api/templates")).json()
    assert "appointment_reminder" in {t["key"] for t in listed["items"]}

    await client.post("/logout", headers=headers)
    await sign_in(client, AGENT_EMAIL)
    headers = {"X-CSRF-Token": await csrf_of(client, "/")}
    assert (await client.put(url, json={"body": fixed}, headers=headers)).status == 404
