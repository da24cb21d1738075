"""The upload's mapping screen through real HTTP: an EHR export's columns suggested, changed by
the coordinator and checked again on the same file, a clash refused in words, the enrollment
made through the mapping that was checked, and the sample file. All data synthetic."""

from __future__ import annotations

import csv
import html as htmlib
import io
import json
import re
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from hub.audit import Actor
from hub.config import Settings
from hub.db import Database
from hub.journeys import actions as journeys
from hub.templates.actions import do_seed_templates
from tests.conftest import make_staff
from tests.staff_helpers import csrf_of, sign_in
from tests.test_journeys_web import COORD, REMINDERS, cohort_form, confirm_url, enrollments
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fresh_redis")


@pytest.fixture
async def client(db: Database, settings: Settings, aiohttp_client: Any) -> TestClient:
    await do_seed_templates(db)
    await journeys.do_install_journey(db, Actor.system("test"), REMINDERS, "web_reminders.yaml")
    await make_staff(db, COORD, role="coordinator")
    # The test client sends the session cookie to this address.
    app = create_app(replace(settings, public_url="http://127.0.0.1"), db=db)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


DAY = next(
    d for d in (date.today() + timedelta(days=n) for n in range(3, 40)) if d.day > 12
)  # a day that is no month: read month first, it cannot be taken for another date
# Semicolons, a BOM, CRLF, day-first dates, and a home phone beside the mobile one.
EXPORT = (
    "\ufeffPatient First Name;Patient Last Name;Home Phone;Mobile Phone;Appt Date;Appt Time;CSN\r\n"
    f"Avery;Sample;;+1 201 555 0101;{DAY:%d/%m/%Y};09:30;C-1\r\n"
    f"Blake;Placeholder;;(201) 555-0102;{DAY:%d/%m/%Y};2:30 PM;C-2\r\n"
    f"Casey;Fictional;+1 201 555 0103;;{DAY:%d/%m/%Y};10:00;C-3\r\n"
)


def selected(html: str) -> dict[str, str]:
    """Column name -> the field its select has chosen."""
    found = {}
    for column, body in re.findall(r'data-column="([^"]*)">(.*?)</select>', html, re.S):
        choice = re.search(r'<option value="([^"]*)" selected>', body)
        found[htmlib.unescape(column)] = choice.group(1) if choice else ""
    return found


def mapping_url(html: str) -> str:
    found = re.search(r'action="(/journeys/web_reminders/cohort/[A-Za-z0-9_-]{32}/mapping)"', html)
    assert found, "no mapping form"
    return found.group(1)


async def test_the_coordinator_maps_an_ehr_export_checks_it_and_enrolls_through_it(
    client: TestClient, db: Database
) -> None:
    await sign_in(client, COORD)
    csrf = await csrf_of(client, "/journeys")
    headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}
    answer = await client.post(
        "/journeys/web_reminders/cohort", data=cohort_form(EXPORT.encode()), headers=headers
    )
    body = await answer.json()
    html = body["html"]
    assert selected(html) == {
        "Patient First Name": "first_name",
        "Patient Last Name": "last_name",
        "Home Phone": "",
        "Mobile Phone": "phone",
        "Appt Date": "appointment_date",
        "Appt Time": "appointment_time",
        "CSN": "appointment_id",
    }
    assert '<option value=";" selected>semicolon</option>' in html
    assert "Suggested from the column names." in html
    assert "else the clinic's: UTC)" in html  # where times without an offset are read
    # A US clinic reads dates month first: each row says in words why it cannot be read, with
    # the choice that would read it, and the row without a mobile number is named.
    assert body["preview"]["errors"][0] == (
        f'line 2: the appointment date "{DAY:%d/%m/%Y}" is not a date when read month '
        'first; if the file writes the day first, choose "day first"'
    )
    assert "line 4: needs a phone or an email" in body["preview"]["errors"]
    assert await enrollments(db) == 0

    # The coordinator says dates are day first and the home phone is the phone to use.
    form = {
        "csrf_token": csrf,
        "columns": "7",
        "col-0": "first_name",
        "col-1": "last_name",
        "col-2": "phone",
        "col-3": "phone",
        "col-4": "appointment_date",
        "col-5": "appointment_time",
        "col-6": "appointment_id",
        "delimiter": ";",
        "date_order": "day-first",
    }
    clash = await client.post(mapping_url(html), data=form, headers=headers)
    assert clash.status == 400
    said = (await clash.json())["error"]["message"]
    assert "two columns are set to Phone: “Home Phone” and “Mobile Phone”" in said
    assert "Enroll" not in (await clash.json())["html"]  # no dry run, no button
    assert await enrollments(db) == 0

    form["col-3"] = ""
    checked = await (await client.post(mapping_url(html), data=form, headers=headers)).json()
    preview = checked["preview"]
    # Only Casey has a home phone: rows 2 and 3 now have none.
    assert (preview["rows"], preview["enroll"], preview["error_count"]) == (3, 1, 2)
    form["col-2"], form["col-3"] = "", "phone"
    checked = await (await client.post(mapping_url(html), data=form, headers=headers)).json()
    assert (checked["preview"]["enroll"], checked["preview"]["errors"]) == (
        2,
        ["line 4: needs a phone or an email"],
    )
    kept = re.search(r'name="mapping" value="([^"]*)"', checked["html"])
    assert kept, "the Enroll button does not carry the mapping it was checked with"
    mapping = json.loads(htmlib.unescape(kept[1]))
    assert mapping["date_order"] == "day-first" and mapping["columns"]["phone"] == "Mobile Phone"

    # A mapping that cannot read the file (altered on its way) enrolls nothing and keeps it.
    forged_mapping = {**mapping, "columns": {"phone": "Fax"}}
    refused = await client.post(
        confirm_url(checked["html"]),
        data={"csrf_token": csrf, "mapping": json.dumps(forged_mapping)},
    )
    assert refused.status == 400
    assert 'the file has no column "Fax"' in htmlib.unescape(await refused.text())
    assert await enrollments(db) == 0
    enrolled = await client.post(
        confirm_url(checked["html"]), data={"csrf_token": csrf, "mapping": json.dumps(mapping)}
    )
    page = await enrolled.text()
    assert '<p class="flash warn"><strong>2 enrolled, 1 not enrolled.</strong>' in page
    assert "line 4: needs a phone or an email" in page
    assert await enrollments(db) == 2
    # The rows not enrolled, downloaded as the file had them plus a Reason, to fix and re-upload.
    link = re.search(r'href="(/journeys/web_reminders/cohort/[A-Za-z0-9_-]{32}/failed\.csv)"', page)
    assert link, "no download of the rows not enrolled"
    failed = await client.get(link[1])
    assert failed.status == 200 and failed.content_type == "text/csv"
    assert (await failed.text()).splitlines() == [
        "Patient First Name;Patient Last Name;Home Phone;Mobile Phone;Appt Date;Appt Time;CSN;"
        "Reason",
        f"Casey;Fictional;+1 201 555 0103;;{DAY:%d/%m/%Y};10:00;C-3;needs a phone or an email",
    ]
    # The next export with these columns opens with the mapping confirmed for them.
    again = await (
        await client.post(
            "/journeys/web_reminders/cohort", data=cohort_form(EXPORT.encode()), headers=headers
        )
    ).json()
    assert "As last confirmed for a file with these columns." in again["html"]
    assert selected(again["html"])["Mobile Phone"] == "phone"
    assert '<option value="day-first" selected>' in again["html"]
    assert again["preview"]["errors"] == ["line 4: needs a phone or an email"]
    assert (again["preview"]["enroll"], again["preview"]["already"]) == (0, 2)
    forged = link[1].replace("/cohort/", "/cohort/x", 1)[: -len("x/failed.csv")] + "/failed.csv"
    assert (await client.get(forged)).status == 410


async def test_the_sample_file_reads_without_changes(client: TestClient, db: Database) -> None:
    await sign_in(client, COORD)
    page = await (await client.get("/journeys")).text()
    assert 'href="/journeys/sample-cohort.csv" download' in page
    sample = await client.get("/journeys/sample-cohort.csv")
    assert sample.status == 200 and sample.content_type == "text/csv"
    text = await sample.text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 4
    assert {r["Email"] for r in rows} <= {"", "avery@example.org", "casey@example.org"}
    headers = {"X-CSRF-Token": await csrf_of(client, "/journeys"), "Accept": "application/json"}
    answer = await (
        await client.post(
            "/journeys/web_reminders/cohort", data=cohort_form(text.encode()), headers=headers
        )
    ).json()
    assert (answer["preview"]["enroll"], answer["preview"]["error_count"]) == (4, 0)
    # The same rows without their header: refused, the first patient never shown as columns.
    headless = "\n".join(text.splitlines()[1:]).encode()
    refused = await client.post(
        "/journeys/web_reminders/cohort", data=cohort_form(headless), headers=headers
    )
    said = (await refused.json())["error"]["message"]
    assert refused.status == 400 and "not column names: add a header row" in said
    assert "Avery" not in said
