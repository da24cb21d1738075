"""Patient languages (issue 14, points 14 and 3): one validator for every way a language comes
in (cohort CSV, the enrollment API, FHIR, patients created by the hub itself). Valid BCP-47 tags
are normalised; anything else is refused with the row or entry named. In a FHIR
Patient.communication the urn:ietf:bcp:47 coding wins over vendor codes listed before it, the
preferred communication over the others, and the text counts only when nothing else does.

The FHIR fixtures follow the vendors' published shapes: Cerner lists its own code set
(codeSet/36, code "151") before the BCP-47 coding and writes "USA" in addresses; Epic codes with
its urn:oid systems. Names and numbers are fictional."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.contact import InvalidLanguage, normalize_language
from hub.crypto import KeyRing
from hub.db import Database
from hub.inbox.models import Patient
from hub.journeys import actions as journeys
from hub.journeys.cohort import launch
from hub.journeys.fhir import BCP47, parse_bundle

SYSTEM = Actor.system("test")
KEY = "appointment_reminders"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CERNER_LANGUAGES = "https://fhir.cerner.com/ec2458f2-1e24-41c8-b71b-0e701af7583d/codeSet/36"
EPIC_LANGUAGES = "urn:oid:1.2.840.114350.1.13.0.1.7.10.698084.130.657370.19999000"


@pytest.mark.parametrize(
    ("raw", "tag"),
    [
        ("es", "es"),
        ("ES", "es"),
        (" en ", "en"),
        ("pt_BR", "pt-BR"),
        ("pt-br", "pt-BR"),
        ("zh-hant", "zh-Hant"),
        ("zh_Hant_TW", "zh-Hant-TW"),
        ("es-419", "es-419"),
        ("sr-latn-rs", "sr-Latn-RS"),
        ("fil", "fil"),
        ("tl", "tl"),  # Tagalog: CLDR files it under fil, BCP-47 keeps it
        ("yue", "yue"),
        ("de-DE-1996", "de-DE-1996"),
    ],
)
def test_language_tags_are_normalised(raw: str, tag: str) -> None:
    assert normalize_language(raw) == tag


@pytest.mark.parametrize(
    "raw",
    ["klingon", "tlh", "xx-YY", "es-XX", "en-Latx", "SPA", "eng", "ESL", "2", "151", "en-x-clinic"],
)
def test_other_codes_are_refused_in_plain_words(raw: str) -> None:
    with pytest.raises(InvalidLanguage) as refused:
        normalize_language(raw)
    assert str(refused.value) == (
        f"language {raw!r} is not a language code; use e.g. en, es, zh-Hant"
    )


@pytest.fixture
async def journey(db: Database) -> str:
    shipped = resources.files("hub.journeys").joinpath("examples", f"{KEY}.yaml")
    await journeys.do_install_journey(db, SYSTEM, shipped.read_text(encoding="utf-8"), "shipped")
    return KEY


async def languages(db: Database) -> list[str]:
    async with db.reader() as session:
        return sorted((await session.scalars(select(Patient.language))).all())


async def test_cohort_languages_are_normalised_or_refused_by_line(
    db: Database, ring: KeyRing, journey: str
) -> None:
    start = "2026-12-02T09:00:00-05:00"
    rows = [
        ("+12015550171", "ES"),
        ("+12015550172", "pt_BR"),
        ("+12015550173", ""),
        ("+12015550174", "SPA"),  # line 5: a vendor's code
        ("+12015550175", "zh-hant"),
        ("+12015550176", "klingon"),  # line 7
    ]
    text = "phone,language,appointment_id,appointment_start\n" + "".join(
        f"{phone},{language},L-{n},{start}\n" for n, (phone, language) in enumerate(rows)
    )
    report = await launch(
        db, ring, SYSTEM, KEY, io.StringIO(text, newline=""), region="US", now=NOW
    )
    assert report.errors == [
        "line 5: language 'SPA' is not a language code; use e.g. en, es, zh-Hant",
        "line 7: language 'klingon' is not a language code; use e.g. en, es, zh-Hant",
    ]
    assert await languages(db) == ["en", "es", "pt-BR", "zh-Hant"]


async def test_the_enrollment_api_refuses_an_unknown_language(
    db: Database, settings: Any, aiohttp_client: Any, fresh_redis: None, journey: str
) -> None:
    from tests.conftest import make_staff
    from tests.staff_helpers import csrf_of, sign_in
    from web.app import create_app

    client = await aiohttp_client(
        create_app(replace(settings, public_url="http://127.0.0.1"), db=db)
    )
    await make_staff(db, "cole.coord@demo-clinic.example.org", role="coordinator")
    await sign_in(client, "cole.coord@demo-clinic.example.org")
    headers = {"X-CSRF-Token": await csrf_of(client)}
    url = f"/api/journeys/{KEY}/enrollments"
    appointment = {"id": "api-1", "start": "2030-12-02T09:00:00-05:00"}
    patient = {"phone": "+12015550181", "language": "klingon"}
    refused = await client.post(
        url, json={"patient": patient, "appointment": appointment}, headers=headers
    )
    assert refused.status == 422
    assert (await refused.json())["error"]["message"] == (
        "bad enrollment: language 'klingon' is not a language code; use e.g. en, es, zh-Hant"
    )
    assert await languages(db) == []
    patient["language"] = "ES"
    accepted = await client.post(
        url, json={"patient": patient, "appointment": appointment}, headers=headers
    )
    assert accepted.status == 201
    assert await languages(db) == ["es"]


def concept(*codings: tuple[str | None, str], text: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "coding": [
            {"code": code, **({"system": system} if system else {})} for system, code in codings
        ]
    }
    return {**found, "text": text} if text else found


def bundle(*communications: dict[str, Any]) -> dict[str, Any]:
    data = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "fullUrl": "https://ehr.example.org/fhir/Patient/p1",
                "resource": {
                    "resourceType": "Patient",
                    "id": "p1",
                    "name": [{"use": "official", "family": "Example", "given": ["Lupe"]}],
                    "telecom": [{"system": "phone", "value": "(201) 555-0191", "use": "mobile"}],
                    "address": [{"use": "home", "city": "Springfield", "country": "USA"}],
                    "communication": list(communications),
                },
            },
            {
                "resource": {
                    "resourceType": "Appointment",
                    "id": "a1",
                    "status": "booked",
                    "start": "2030-12-02T09:00:00-05:00",
                    "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}],
                }
            },
        ],
    }
    from fhir.resources.R4B.bundle import Bundle

    Bundle.model_validate(data)  # every fixture is valid FHIR
    return data


def read(*communications: dict[str, Any]) -> tuple[str | None, str | None]:
    [appointment] = parse_bundle(bundle(*communications)).appointments
    assert appointment.patient is not None
    return appointment.patient.language, appointment.problem


CERNER_SPANISH = concept((CERNER_LANGUAGES, "312729"), (BCP47, "es"), text="Spanish")


@pytest.mark.parametrize(
    ("communications", "language"),
    [
        # Cerner: its own code set first, then BCP-47.
        ([{"language": CERNER_SPANISH, "preferred": True}], "es"),
        # Cerner's documentation writes preferred as a string.
        ([{"language": concept((BCP47, "en")), "preferred": "true"}], "en"),
        # Epic: a vendor code ("SPA", "2") listed before the BCP-47 coding.
        ([{"language": concept((EPIC_LANGUAGES, "SPA"), (BCP47, "es-MX"))}], "es-MX"),
        ([{"language": concept((EPIC_LANGUAGES, "2"), (BCP47, "zh-hant"))}], "zh-Hant"),
        # A vendor code that is a tag itself only counts after the BCP-47 coding.
        ([{"language": concept((EPIC_LANGUAGES, "en"), (BCP47, "vi"))}], "vi"),
        ([{"language": concept(("urn:oid:2.16.840.1.113883.6.99", "VI"))}], "vi"),
        ([{"language": concept((None, "pt_BR"))}], "pt-BR"),
        # The preferred communication wins over one listed first.
        (
            [
                {"language": concept((BCP47, "en"))},
                {"language": CERNER_SPANISH, "preferred": True},
            ],
            "es",
        ),
        # None preferred: the first one that can be read.
        (
            [
                {"language": concept((CERNER_LANGUAGES, "151"))},
                {"language": concept((BCP47, "ko"))},
            ],
            "ko",
        ),
        # The text only as a last resort, when it names a language.
        ([{"language": concept((EPIC_LANGUAGES, "ESL"), text="Vietnamese")}], "vi"),
        ([{"language": concept((CERNER_LANGUAGES, "151"), text="Tagalog")}], "tl"),
        ([{"language": {"text": "Español"}, "preferred": True}], "es"),
        ([], None),  # nothing said: the hub's default applies later
    ],
)
def test_the_bcp47_coding_wins(communications: list[dict[str, Any]], language: str) -> None:
    assert read(*communications) == (language, None)


@pytest.mark.parametrize(
    ("communications", "where"),
    [
        ([{"language": concept((EPIC_LANGUAGES, "SPA"))}], 0),
        ([{"language": concept((BCP47, "klingon"), text="Klingon")}], 0),
        ([{"language": concept((CERNER_LANGUAGES, "151"), text="Spanglish")}], 0),
        # A preferred language nobody can read is not replaced by another one.
        (
            [
                {"language": concept((BCP47, "en"))},
                {"language": concept((EPIC_LANGUAGES, "2")), "preferred": True},
            ],
            1,
        ),
    ],
)
def test_an_unreadable_language_refuses_the_entry(
    communications: list[dict[str, Any]], where: int
) -> None:
    assert read(*communications) == (
        None,
        f"patient Patient/p1: entry[0].resource.communication[{where}].language names no "
        f"language the hub knows (neither a {BCP47} code such as es or zh-Hant nor a "
        "language's name)",
    )
