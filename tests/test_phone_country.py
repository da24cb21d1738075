"""Phone numbers keep their country (issue 14, point 13): a number from a record is read in the
patient's country (a cohort's ``country`` column, a FHIR Patient's address, else the clinic's
region) and must be valid there; one written internationally keeps the country it names. A
number never turns into another country's number.

The numbers are libphonenumber's own example numbers and 555-01xx style fictional ones."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from importlib import resources

import pytest

from hub.audit import Actor
from hub.contact import InvalidContact, InvalidCountry, read_country, read_phone
from hub.crypto import KeyRing
from hub.db import Database
from hub.inbox import actions as inbox
from hub.journeys import actions as journeys
from hub.journeys.cohort import launch, match_or_create_patient
from hub.journeys.fhir import parse_bundle

SYSTEM = Actor.system("test")
KEY = "appointment_reminders"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
NOT_US = "phone is not a valid number in United States (US)"

READ = [
    # (as written, the patient's country, E.164 or the start of the refusal)
    # United States and Canada share +1: a Canadian number is valid read in the US.
    ("(201) 555-0123", "US", "+12015550123"),
    ("1 201 555 0123", "US", "+12015550123"),
    ("201.555.0123", "US", "+12015550123"),
    ("(506) 234-5678", "US", "+15062345678"),
    ("506-234-5678", "CA", "+15062345678"),
    ("1-800-555-0100", "US", "+18005550100"),
    ("555-010-0102", "US", NOT_US),  # no 555 area code: possible, not valid
    ("201 555 012", "US", NOT_US),
    # Europe: the trunk 0 of the national form, and the same number written from abroad.
    ("07400 123456", "GB", "+447400123456"),
    ("+44 7400 123456", "US", "+447400123456"),
    ("0044 7400 123456", "US", "+447400123456"),
    ("0044 7400 12345", "US", NOT_US),  # read after 00 only when that makes a valid number
    ("011 44 7400 123456", "US", "+447400123456"),
    ("07400 123456", "US", NOT_US),
    ("07700 900123", "GB", "phone is not a valid number in United Kingdom (GB)"),  # drama range
    ("01512 3456789", "DE", "+4915123456789"),
    ("+49 1512 3456789", "FR", "+4915123456789"),
    ("06 12 34 56 78", "FR", "+33612345678"),
    ("+33 6 12 34 56 78", "US", "+33612345678"),
    ("612 34 56 78", "ES", "+34612345678"),
    ("34612345678", "ES", "+34612345678"),  # its own country code, without the +
    # Mexico, Brazil, India, Australia, the Philippines.
    ("222 123 4567", "MX", "+522221234567"),
    ("+52 222 123 4567", "US", "+522221234567"),
    ("(11) 96123-4567", "BR", "+5511961234567"),
    ("+55 11 96123-4567", "US", "+5511961234567"),
    ("081234 56789", "IN", "+918123456789"),
    ("919876543210", "IN", "+919876543210"),
    ("0412 345 678", "AU", "+61412345678"),
    ("0011 61 412 345 678", "AU", "+61412345678"),  # Australia's own international prefix
    ("0905 123 4567", "PH", "+639051234567"),
    ("+63 905 123 4567", "US", "+639051234567"),
    # A Chinese mobile: Chinese however it is written in China or with its +86; never a +1
    # number when it is read in the US.
    ("138 0013 8000", "CN", "+8613800138000"),
    ("8613800138000", "CN", "+8613800138000"),
    ("+86 138 0013 8000", "US", "+8613800138000"),
    ("0086 138 0013 8000", "US", "+8613800138000"),
    ("011 86 138 0013 8000", "US", "+8613800138000"),
    ("138 0013 8000", "US", NOT_US),
    ("13800138000", "US", NOT_US),
    ("8613800138000", "US", NOT_US),
    ("86 138 0013 8000", "US", NOT_US),
    # Written internationally, a number has to be complete for its country.
    ("+44 20 1234", "US", "phone has the wrong number of digits for +44 (United Kingdom)"),
    ("not a number", "US", "not a phone number"),
]


@pytest.mark.parametrize(("raw", "region", "expected"), READ)
def test_a_number_is_read_in_the_patients_country(raw: str, region: str, expected: str) -> None:
    if expected.startswith("+"):
        assert read_phone(raw, region) == expected
    else:
        with pytest.raises(InvalidContact) as refused:
            read_phone(raw, region)
        assert str(refused.value).startswith(expected)
        assert raw not in str(refused.value)  # the number is PHI: never in the message


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("US", "US"),
        ("usa", "US"),  # Cerner writes alpha-3
        ("U.S.A.", "US"),
        ("United States", "US"),
        ("CHN", "CN"),
        ("China", "CN"),
        ("中国", "CN"),
        ("Deutschland", "DE"),
        ("México", "MX"),
        ("España", "ES"),
        ("Brasil", "BR"),
        ("UK", "GB"),
        ("Philippines", "PH"),
        ("in", "IN"),
    ],
)
def test_countries_by_code_or_name(raw: str, code: str) -> None:
    assert read_country(raw) == code


@pytest.mark.parametrize("raw", ["Narnia", "XX", "Earth", "419"])
def test_unknown_countries_are_refused(raw: str) -> None:
    with pytest.raises(InvalidCountry, match="is not a country; use an ISO 3166 code"):
        read_country(raw)


@pytest.fixture
async def journey(db: Database) -> str:
    shipped = resources.files("hub.journeys").joinpath("examples", f"{KEY}.yaml")
    await journeys.do_install_journey(db, SYSTEM, shipped.read_text(encoding="utf-8"), "shipped")
    return KEY


async def phones_found(db: Database, ring: KeyRing, *numbers: str) -> list[int]:
    return [
        len(await inbox.do_find_patients_by_phone(db, ring, SYSTEM, n, region="US"))
        for n in numbers
    ]


async def test_cohort_rows_are_read_in_their_country_or_refused_by_line(
    db: Database, ring: KeyRing, journey: str
) -> None:
    start = "2026-12-02T09:00:00-05:00"
    text = (
        "name,phone,country,time_zone,appointment_id,appointment_start\n"
        f"Li Example,138 0013 8000,CN,Asia/Shanghai,P-1,{start}\n"  # line 2
        f"Wei Example,138 0013 8001,,Asia/Shanghai,P-2,{start}\n"  # line 3: clinic is US
        f"Wang Example,8613800138002,,Asia/Shanghai,P-3,{start}\n"  # line 4: no +
        f"Zhou Example,+86 138 0013 8003,USA,Asia/Shanghai,P-4,{start}\n"  # line 5
        f"Max Beispiel,01512 3456789,Deutschland,Europe/Berlin,P-5,{start}\n"  # line 6
        f"Ana Ejemplo,222 123 4567,Narnia,America/Mexico_City,P-6,{start}\n"  # line 7
        f"Avery Sample,(201) 555-0123,,America/New_York,P-7,{start}\n"  # line 8
    )
    report = await launch(
        db, ring, SYSTEM, KEY, io.StringIO(text, newline=""), region="US", now=NOW
    )
    hint = "give the patient's country, or write the number with + and its country code"
    assert report.errors == [
        f"line 3: {NOT_US}; {hint}",
        f"line 4: {NOT_US}; {hint}",
        "line 7: country 'Narnia' is not a country; use an ISO 3166 code such as US, GB or DE",
    ]
    assert report.enrolled == 4
    stored = ["+8613800138000", "+8613800138003", "+4915123456789", "+12015550123"]
    assert await phones_found(db, ring, *stored) == [1, 1, 1, 1]
    # What the national forms would have become read as US numbers: nobody.
    assert await phones_found(db, ring, "+13800138000", "+13800138001") == [0, 0]


def fhir_patient(phone: str, *addresses: dict[str, str]) -> dict[str, object]:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "urn:uuid:6a1d0f4e-0000-4000-8000-000000000001",
                "resource": {
                    "resourceType": "Patient",
                    "id": "p1",
                    "telecom": [{"system": "phone", "value": phone, "use": "mobile"}],
                    "address": list(addresses),
                },
            },
            {
                "resource": {
                    "resourceType": "Appointment",
                    "id": "a1",
                    "status": "booked",
                    "start": "2026-12-02T09:00:00+08:00",
                    "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}],
                }
            },
        ],
    }
    from fhir.resources.R4B.bundle import Bundle

    Bundle.model_validate(bundle)  # the fixture is valid FHIR
    return bundle


async def test_fhir_numbers_are_read_in_the_home_address_country(
    db: Database, ring: KeyRing
) -> None:
    old_home = {"use": "old", "city": "Springfield", "country": "US"}
    home = {"use": "home", "city": "Shanghai", "country": "CHN"}
    [appointment] = parse_bundle(fhir_patient("138 0013 8000", old_home, home)).appointments
    assert appointment.problem is None and appointment.patient is not None
    patient_id, created = await match_or_create_patient(
        db, ring, SYSTEM, appointment.patient.contact_row("Asia/Shanghai"), "US"
    )
    assert created
    [found] = await inbox.do_find_patients_by_phone(db, ring, SYSTEM, "+8613800138000", region="US")
    assert found.id == patient_id

    # Without a country the clinic's region (US) reads it, and it is no US number.
    [appointment] = parse_bundle(fhir_patient("138 0013 8000", old_home)).appointments
    assert appointment.patient is not None and appointment.patient.country is None
    with pytest.raises(InvalidContact, match=re.escape(NOT_US)):
        await match_or_create_patient(
            db, ring, SYSTEM, appointment.patient.contact_row("UTC"), "US"
        )

    nowhere = {"use": "home", "country": "Atlantis"}
    [appointment] = parse_bundle(fhir_patient("+86 138 0013 8000", nowhere)).appointments
    assert appointment.problem == (
        "patient Patient/p1: entry[0].resource.address[0].country 'Atlantis' is not a "
        "country; use an ISO 3166 code such as US, GB or DE"
    )
