"""The Reports page and API through real HTTP: every registered report as JSON and CSV, the
filters read from the query string (and refused in plain words), who may see what, the
OpenAPI document, the audited exports, and the admins' settings forms."""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select, update

from hub.audit import Actor, AuditEvent
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, Direction
from hub.inbox import actions
from hub.inbox.actions.staff import do_create_token
from hub.inbox.models import Conversation, Message, StaffUser, Team
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.models import StepRun
from hub.reports.appointment_settings import do_get_appointment_settings
from hub.reports.facts_actions import do_rebuild_facts
from hub.reports.registry import REPORTS
from hub.reports.run_facts_actions import do_rebuild_run_facts
from hub.reports.weekly import do_weekly_settings
from hub.templates.actions import do_seed_templates
from tests.conftest import make_staff
from tests.staff_helpers import csrf_of, sign_in
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fresh_redis")

SYSTEM = Actor.system("test")
ADMIN = "ada.admin@demo-clinic.example.org"
COORD = "cole.coord@demo-clinic.example.org"
AGENT = "alex.agent@demo-clinic.example.org"
ZONE = "America/New_York"
MUST = ("responses", "volume", "journeys", "appointments", "delivery")
"""The reports issue 18 names; the API documents at least these."""


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    return replace(settings, public_url="http://127.0.0.1")  # the test client sends the cookie


@pytest.fixture
async def client(db: Database, web_settings: Settings, aiohttp_client: Any) -> TestClient:
    await actions.do_ensure_team(db, SYSTEM, "Front desk")
    async with db.transaction() as session:
        team = (await session.scalars(select(Team).where(Team.name == "Front desk"))).one()
        team.time_zone, team.is_default = ZONE, True
    await make_staff(db, ADMIN, role="admin", teams=("Front desk",))
    await make_staff(db, COORD, role="coordinator", teams=("Front desk",))
    await make_staff(db, AGENT, role="agent", teams=("Front desk",))
    return await aiohttp_client(create_app(web_settings, db=db))  # type: ignore[no-any-return]


async def team_id(db: Database, name: str = "Front desk") -> uuid.UUID:
    async with db.reader() as session:
        return (await session.scalars(select(Team.id).where(Team.name == name))).one()


def today() -> date:
    return datetime.now(UTC).astimezone(ZoneInfo(ZONE)).date()


async def error_of(response: Any) -> str:
    body = await response.json()
    return str(body["error"]["message"])


# -- the API ------------------------------------------------------------------------------


async def test_every_issue_report_is_registered_and_answers_json(client: TestClient) -> None:
    await sign_in(client, ADMIN)
    assert set(MUST) <= set(REPORTS)
    for name in REPORTS:
        response = await client.get(f"/api/reports/{name}?start=2026-11-01&end=2026-11-30")
        assert response.status == 200, (name, await response.text())
        body = await response.json()
        assert body["name"] == name and body["title"] == REPORTS[name][0]
        assert (body["filters"]["start"], body["filters"]["end"]) == ("2026-11-01", "2026-11-30")
        assert body["filters"]["time_zone"] == ZONE  # the clinic's: its default team's
        assert set(body["labels"]) >= set(body["figures"]), name
        for table in body["tables"]:
            assert all(len(row) == len(table["columns"]) for row in table["rows"]), name


async def test_quick_picks_resolve_against_today_in_the_clinic_zone(client: TestClient) -> None:
    await sign_in(client, ADMIN)
    day = today()
    first_of_month = day.replace(day=1)
    last_month_end = first_of_month - timedelta(days=1)
    expected = {
        "last7": (day - timedelta(days=6), day),
        "last30": (day - timedelta(days=29), day),
        "last90": (day - timedelta(days=89), day),
        "this_month": (first_of_month, day),
        "last_month": (last_month_end.replace(day=1), last_month_end),
        "": (day - timedelta(days=29), day),  # no dates at all: the last 30 days
    }
    for period, (start, end) in expected.items():
        body = await (await client.get(f"/api/reports/volume?period={period}")).json()
        assert (body["filters"]["start"], body["filters"]["end"]) == (
            start.isoformat(),
            end.isoformat(),
        ), period


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("start=2026-11-30&end=2026-11-01", "is before the start date"),
        ("start=2026-13-01", "start must be a date written like 2026-11-01"),
        ("end=yesterday", "end must be a date"),
        ("start=0001-01-01&end=0001-01-02", "outside the years"),
        ("start=2024-01-01&end=2026-01-01", "at most 366 days"),
        ("team=5eed0000-0000-4000-8000-000000000001", "no team"),
        ("team=front-desk", "is not an id"),
        ("channel=fax", "channel 'fax' is not one of"),
        ("journey=nope", "There is no journey 'nope'"),
        ("business_hours=maybe", "business_hours must be 1"),
        ("agent=5eed0000-0000-4000-8000-000000000002", "no active staff member"),
        ("period=fortnight", "is not one of the quick picks"),
    ],
)
async def test_bad_filters_are_400_in_plain_words(
    client: TestClient, query: str, words: str
) -> None:
    await sign_in(client, ADMIN)
    response = await client.get(f"/api/reports/responses?{query}")
    assert response.status == 400
    assert words in await error_of(response)
    as_csv = await client.get(f"/api/reports/responses.csv?{query}")
    assert as_csv.status == 400 and words in await error_of(as_csv)


async def test_an_unknown_report_is_404_naming_the_reports(client: TestClient) -> None:
    await sign_in(client, ADMIN)
    for path in ("/api/reports/nope", "/api/reports/nope.csv"):
        response = await client.get(path)
        assert response.status == 404
        message = await error_of(response)
        assert "There is no report 'nope'" in message
        assert all(name in message for name in REPORTS)
    page = await client.get("/reports/nope", headers={"Accept": "text/html"})
    assert page.status == 404
    assert "There is no report" in await page.text()


async def test_csv_is_the_first_table_or_the_one_named(client: TestClient) -> None:
    await sign_in(client, ADMIN)
    query = "start=2026-11-01&end=2026-11-30"
    with_tables = [n for n in REPORTS if n in MUST]
    for name in with_tables:
        body = await (await client.get(f"/api/reports/{name}?{query}")).json()
        if not body["tables"]:
            response = await client.get(f"/api/reports/{name}.csv?{query}")
            assert response.status == 404 and "has no table" in await error_of(response)
            continue
        for i, table in enumerate(body["tables"]):
            suffix = "" if i == 0 else f"&table={table['name']}"
            response = await client.get(f"/api/reports/{name}.csv?{query}{suffix}")
            assert response.status == 200 and response.content_type == "text/csv"
            rows = list(csv.reader(io.StringIO(await response.text())))
            assert rows[0] == [c["key"] for c in table["columns"]]
            assert len(rows) - 1 == len(table["rows"])
        missing = await client.get(f"/api/reports/{name}.csv?{query}&table=nope")
        assert missing.status == 404
        assert body["tables"][0]["name"] in await error_of(missing)


async def test_the_api_needs_a_session_or_a_token(client: TestClient, db: Database) -> None:
    response = await client.get("/api/reports/volume")
    assert response.status == 401
    token = await do_create_token(db, SYSTEM, COORD, "reports")
    ok = await client.get("/api/reports/volume", headers={"Authorization": f"Bearer {token}"})
    assert ok.status == 200


async def test_an_agent_gets_their_own_figures_and_no_export(
    client: TestClient, db: Database
) -> None:
    await sign_in(client, AGENT)
    async with db.reader() as session:
        me = (await session.scalars(select(StaffUser.id).where(StaffUser.email == AGENT))).one()
    body = await (await client.get("/api/reports/responses")).json()
    assert body["filters"]["agent_id"] == str(me)
    other = await client.get(f"/api/reports/responses?agent={uuid.uuid4()}")
    assert other.status == 400 and "your own figures" in await error_of(other)
    for export in ("conversations", "journey-runs"):
        refused = await client.get(f"/api/reports/export/{export}.csv")
        assert refused.status == 403
        assert "coordinators and admins" in await error_of(refused)
    page = await (await client.get("/reports/responses")).text()
    assert "Your own figures." in page
    assert "/api/reports/export/" not in page and 'id="f-agent"' not in page
    # The outcome reports are the whole clinic's: not an agent's to read, nor offered as tabs.
    for name in ("journeys", "appointments", "delivery"):
        refused = await client.get(f"/api/reports/{name}")
        assert refused.status == 403 and "coordinators and admins" in await error_of(refused)
        assert (await client.get(f"/reports/{name}")).status == 403
        assert f'href="/reports/{name}' not in page
    for name in ("volume", "csat"):
        assert f'href="/reports/{name}' in page


async def test_the_openapi_document_names_every_report_and_filter(client: TestClient) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    paths = doc["paths"]
    for path in (
        "/api/reports/{name}",
        "/api/reports/{name}.csv",
        "/api/reports/export/conversations.csv",
        "/api/reports/export/journey-runs.csv",
    ):
        assert "get" in paths[path], path
    params = {p["name"]: p for p in paths["/api/reports/{name}"]["get"]["parameters"]}
    assert set(MUST) <= set(params["name"]["schema"]["enum"])
    assert set(params["name"]["schema"]["enum"]) == set(REPORTS)
    assert {"start", "end", "team", "channel", "journey", "agent", "business_hours"} <= set(params)
    csv_params = {p["name"] for p in paths["/api/reports/{name}.csv"]["get"]["parameters"]}
    assert "table" in csv_params


# -- the page -----------------------------------------------------------------------------


async def test_the_page_lists_the_reports_and_keeps_filters_in_the_link(
    client: TestClient, db: Database
) -> None:
    await sign_in(client, COORD)
    front = await team_id(db)
    page = await client.get(f"/reports/responses?start=2026-11-01&end=2026-11-30&team={front}")
    html = await page.text()
    assert page.status == 200
    for name in REPORTS:
        assert f'href="/reports/{name}"' in html
    assert 'aria-current="page">Response times' in html or REPORTS["responses"][0] in html
    assert f'<option value="{front}" selected>Front desk</option>' in html
    assert 'value="2026-11-01"' in html and 'value="2026-11-30"' in html
    assert (
        f"/api/reports/export/conversations.csv?start=2026-11-01&amp;end=2026-11-30&amp;team={front}"
        in html
    )
    assert "print=1" in html
    # The whole page or, for htmx, the same page (htmx picks #report out of it).
    swapped = await client.get("/reports/volume?period=last7", headers={"HX-Request": "true"})
    assert swapped.status == 200 and 'id="report"' in await swapped.text()
    printable = await (await client.get("/reports/responses?print=1")).text()
    assert 'class="print-view"' in printable and 'aria-label="Main"' not in printable
    assert "Download" not in printable


async def test_a_bad_filter_on_the_page_says_what_to_change(client: TestClient) -> None:
    await sign_in(client, ADMIN)
    page = await client.get("/reports/volume?start=2026-11-30&end=2026-11-01")
    assert page.status == 422  # htmx swaps a 422 in place; a 400 it would drop
    html = await page.text()
    assert "The end date (2026-11-01) is before the start date (2026-11-30)." in html
    assert 'value="2026-11-30"' in html  # the form shows back what was typed


async def test_the_reports_link_is_in_the_navigation_of_every_role(client: TestClient) -> None:
    for email in (ADMIN, COORD, AGENT):
        await sign_in(client, email)
        html = await (await client.get("/")).text()
        assert '<a href="/reports"' in html, email
        await client.post("/logout", data={"csrf_token": await csrf_of(client)})


async def test_admins_switch_the_weekly_summary_off_and_on(
    client: TestClient, db: Database
) -> None:
    assert (await do_weekly_settings(db)).enabled  # on by default
    await sign_in(client, COORD)
    refused = await client.post(
        "/reports/weekly-summary",
        data={"enabled": "0", "csrf_token": await csrf_of(client, "/reports")},
        allow_redirects=False,
    )
    assert refused.status == 404 and (await do_weekly_settings(db)).enabled
    assert "Weekly summary mail" not in await (await client.get("/reports")).text()
    await client.post("/logout", data={"csrf_token": await csrf_of(client)})

    await sign_in(client, ADMIN)
    token = await csrf_of(client, "/reports")
    off = await client.post("/reports/weekly-summary", data={"enabled": "0", "csrf_token": token})
    assert off.status == 200 and "The weekly summary mail is off." in await off.text()
    assert not (await do_weekly_settings(db)).enabled
    on = await client.post("/reports/weekly-summary", data={"enabled": "1", "csrf_token": token})
    assert "The weekly summary mail is on" in await on.text()
    assert (await do_weekly_settings(db)).enabled
    async with db.reader() as session:
        actions_seen = (
            await session.scalars(
                select(AuditEvent.action).where(AuditEvent.action == "reports.weekly_summary.set")
            )
        ).all()
    assert len(actions_seen) == 2


async def test_admins_set_the_appointments_baseline(client: TestClient, db: Database) -> None:
    await sign_in(client, ADMIN)
    page = await (await client.get("/reports/appointments")).text()
    assert "No baseline is set." in page
    token = await csrf_of(client, "/reports/appointments")
    saved = await client.post(
        "/reports/appointments/settings",
        data={
            "baseline_start": "2025-01-01",
            "baseline_end": "2025-06-30",
            "late_cancel_hours": "48",
            "csrf_token": token,
        },
    )
    assert "settings are saved" in await saved.text()
    found = await do_get_appointment_settings(db)
    assert found.baseline == (date(2025, 1, 1), date(2025, 6, 30))
    assert found.late_cancel_hours == 48
    bad = await client.post(
        "/reports/appointments/settings",
        data={"baseline_start": "2025-06-30", "baseline_end": "2025-01-01", "csrf_token": token},
    )
    assert "Not saved:" in await bad.text() and "before it starts" in await bad.text()
    assert (await do_get_appointment_settings(db)).baseline == (date(2025, 1, 1), date(2025, 6, 30))
    cleared = await client.post(
        "/reports/appointments/settings", data={"clear": "1", "csrf_token": token}
    )
    assert "cleared" in await cleared.text()
    assert (await do_get_appointment_settings(db)).baseline is None


# -- exports ------------------------------------------------------------------------------

REMINDERS = """\
key: export_reminders
name: Export reminders
purpose: reminders
anchor: appointment_start
steps:
  - {id: sms_48h, offset: -48h, template: appointment_reminder, channel: sms}
  - {id: sms_24h, offset: -24h, template: appointment_reminder, channel: sms}
"""


async def test_exports_stream_one_row_each_without_text_and_are_audited(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    # A team name a spreadsheet would run as a formula.
    await actions.do_ensure_team(db, SYSTEM, "=SUM(A1)")
    formula = await team_id(db, "=SUM(A1)")
    for n in range(3):
        pid = await actions.do_create_patient(
            db,
            ring,
            SYSTEM,
            NewPatient(name=f"Avery Sample{n}", phone=f"+1555010050{n}"),
            region="US",
        )
        await actions.do_record_inbound(db, ring, pid, Channel.SMS, "Private words about a rash")
        if n < 2:
            async with db.transaction() as session:
                await session.execute(
                    update(Conversation)
                    .where(Conversation.patient_id == pid)
                    .values(team_id=formula)
                )
    await do_seed_templates(db)
    await journeys.do_install_journey(db, SYSTEM, REMINDERS, "export_reminders.yaml")
    start = datetime.now(UTC) + timedelta(days=3)
    for n in range(2):
        pid = await actions.do_create_patient(
            db,
            ring,
            SYSTEM,
            NewPatient(name=f"Blake Sample{n}", phone=f"+1555010060{n}"),
            region="US",
        )
        await journeys.do_enroll(
            db,
            SYSTEM,
            "export_reminders",
            pid,
            appointment=journeys.NewAppointment(f"x-{n}", start),
            ring=ring,
        )
    await do_rebuild_facts(db)
    await do_rebuild_run_facts(db)
    first, last = today() - timedelta(days=6), today() + timedelta(days=7)
    query = f"start={first}&end={last}"

    # The recount: conversations whose patient wrote in the period, runs due in it.
    low = datetime.combine(first, time(0), tzinfo=ZoneInfo(ZONE))
    high = datetime.combine(last + timedelta(days=1), time(0), tzinfo=ZoneInfo(ZONE))
    async with db.reader() as session:
        written = set(
            (
                await session.scalars(
                    select(Message.conversation_id).where(Message.direction == Direction.INBOUND)
                )
            ).all()
        )
        dues = (await session.scalars(select(StepRun.due_at))).all()
    runs_due = sum(low <= (d if d.tzinfo else d.replace(tzinfo=UTC)) < high for d in dues)
    assert (len(written), runs_due) == (3, 4)

    await sign_in(client, COORD)
    response = await client.get(f"/api/reports/export/conversations.csv?{query}")
    assert response.status == 200 and response.content_type == "text/csv"
    assert "conversations-" in response.headers["Content-Disposition"]
    assert response.headers["Cache-Control"] == "no-store"
    text = await response.text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["conversation_id"] for r in rows} == {str(c) for c in written}
    assert sorted(r["team"] for r in rows) == ["", "'=SUM(A1)", "'=SUM(A1)"]
    assert "rash" not in text and "Avery" not in text and "5550100" not in text

    runs = await client.get(
        f"/api/reports/export/journey-runs.csv?{query}&journey=export_reminders"
    )
    run_rows = list(csv.DictReader(io.StringIO(await runs.text())))
    assert len(run_rows) == runs_due
    assert {r["step"] for r in run_rows} == {"sms_48h", "sms_24h"}
    assert "Blake" not in await runs.text()

    async with db.reader() as session:
        audited = (
            await session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action.like("reports.%.export"))
                .order_by(AuditEvent.seq)
            )
        ).all()
    by_action = {e.action: e for e in audited}
    conversations = by_action["reports.conversations.export"]
    assert conversations.detail["rows"] == 3 and conversations.detail["complete"] is True
    assert conversations.detail["filters"] == {"start": str(first), "end": str(last)}
    async with db.reader() as session:
        coordinator = (
            await session.scalars(select(StaffUser.id).where(StaffUser.email == COORD))
        ).one()
    assert conversations.actor == f"staff:{coordinator}"
    journey_runs = by_action["reports.journey-runs.export"]
    assert journey_runs.detail["rows"] == runs_due
    assert journey_runs.detail["filters"]["journey"] == "export_reminders"
