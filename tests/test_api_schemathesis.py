"""The REST API fuzzed from its own OpenAPI document (/api/openapi.json) by schemathesis: every
operation, reads and writes, with inputs that fit the document and inputs that do not, sent
with a valid bearer token to a real server on a port. No input may get a 5xx.

Randomly generated ids nearly always miss, so half the cases have their path ids swapped for
ones that exist (a conversation, its patient, a canned response, an installed journey and its
steps): the handlers behind the 404 get fuzzed too.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from sqlalchemy import select

from hub.audit import Actor
from hub.config import Settings
from hub.db import Database
from hub.enums import Channel
from hub.inbox import actions
from hub.inbox.actions.staff import do_create_token
from hub.inbox.models import CannedResponse, Conversation
from hub.inbox.schemas import NewPatient
from hub.journeys.actions import do_install_journey
from hub.templates.actions import do_seed_templates
from tests.conftest import make_staff
from web.app import create_app

# Not marked slow (no process is spawned, ~15 s): CI runs it on PostgreSQL and on SQLite.
pytestmark = pytest.mark.usefixtures("fresh_redis")

EXAMPLES = Path(__file__).resolve().parent.parent / "hub" / "journeys" / "examples"
EXAMPLES_PER_MODE = 25
"""Cases per operation and generation mode: 2 modes x 18 operations x 25 is ~900 requests,
well under a minute on two shared cores."""
SYSTEM = Actor.system("test")


async def _seed(db: Database, ring: Any) -> tuple[str, dict[str, list[str]]]:
    """An admin's token and the ids that exist, by path parameter name."""
    await make_staff(db, "ada.admin@demo-clinic.example.org", role="admin", teams=("Front desk",))
    token = await do_create_token(db, SYSTEM, "ada.admin@demo-clinic.example.org", "fuzzing")
    await do_seed_templates(db)
    await do_install_journey(
        db,
        SYSTEM,
        (EXAMPLES / "appointment_reminders.yaml").read_text(),
        "appointment_reminders.yaml",
    )
    patient_id = await actions.do_create_patient(
        db,
        ring,
        SYSTEM,
        NewPatient(name="Avery Sample", phone="+15550100142", email="avery@example.org"),
        region="US",
    )
    await actions.do_record_inbound(db, ring, patient_id, Channel.SMS, "Is parking free?")
    async with db.transaction() as session:
        conversation = await session.scalar(
            select(Conversation.id).where(Conversation.patient_id == patient_id)
        )
        canned = CannedResponse(title="Parking", body="Hi {{ first_name }}, parking is free.")
        session.add(canned)
        await session.flush()
        canned_id = canned.id
    return token, {
        "id": [str(conversation), str(patient_id), str(canned_id)],
        "key": ["appointment_reminders"],
        "step": ["email_72h", "sms_24h"],
    }


def _fuzz_operation(
    operation: Any,
    base_url: str,
    token: str,
    known: dict[str, list[str]],
    statuses: dict[int, int],
) -> list[str]:
    """Cases of one operation that got a 5xx, as 'METHOD path -> status: body'; every status
    answered is counted into ``statuses``."""
    failures: list[str] = []
    http = requests.Session()

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @settings(
            max_examples=EXAMPLES_PER_MODE,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
        def run(case: Any, data: st.DataObject) -> None:
            for name in list(case.path_parameters or {}):
                if name in known and data.draw(st.booleans()):
                    case.path_parameters[name] = data.draw(st.sampled_from(known[name]))
            response = case.call(
                base_url=base_url,
                session=http,
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            try:
                case.validate_response(response, checks=[not_a_server_error])
            except (AssertionError, FailureGroup):  # one failure, or several grouped
                failures.append(
                    f"{case.method} {case.formatted_path} query={case.query} "
                    f"body={case.body!r} -> {response.status_code}: {response.text[:300]}"
                )

        run()
    http.close()
    return failures


def _fuzz(
    base_url: str, token: str, known: dict[str, list[str]]
) -> tuple[int, dict[int, int], list[str]]:
    schema = schemathesis.openapi.from_url(f"{base_url}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    statuses: dict[int, int] = {}
    failures: list[str] = []
    for operation in operations:
        failures += _fuzz_operation(operation, base_url, token, known, statuses)
    return len(operations), statuses, failures


async def test_no_generated_input_gets_a_server_error_from_any_operation(
    fresh_db_url: str, settings: Settings, aiohttp_server: Any
) -> None:
    db = Database.connect(fresh_db_url)
    try:
        token, known = await _seed(db, settings.key_ring())
        app_settings = replace(settings, database_url=fresh_db_url, public_url="http://127.0.0.1")
        server = await aiohttp_server(create_app(app_settings))
        base_url = str(server.make_url("")).rstrip("/")
        # schemathesis and requests block: they run in a thread while this loop serves them.
        count, statuses, failures = await asyncio.to_thread(_fuzz, base_url, token, known)
    finally:
        await db.dispose()
    api_routes = {
        (r.method, r.resource.canonical)
        for r in server.app.router.routes()
        if r.resource is not None
        and r.resource.canonical.startswith("/api/")
        and r.method != "HEAD"
        and r.resource.canonical != "/api/openapi.json"
    }
    assert count == len(api_routes), "every /api route is fuzzed through the document"
    assert failures == [], "\n".join(failures)
    # The token worked and real rows were reached: not a run of 401s and 404s.
    assert statuses.get(401, 0) == 0, statuses
    assert sum(n for status, n in statuses.items() if 200 <= status < 300) >= 50, statuses


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("status", b"\xcd\xaa", 400, "the body is not JSON"),
        ("status", b"x", 400, "the body is not JSON"),
        ("enrollments", b"[]", 400, "the body must be a JSON object"),
        ("enrollments", b'{"patient": ["+15550100142"]}', 422, "patient must be an object"),
    ],
)
async def test_journey_api_bodies_that_are_not_json_objects_are_4xx(
    db: Database,
    settings: Settings,
    aiohttp_client: Any,
    path: str,
    body: bytes,
    status: int,
    message: str,
) -> None:
    """Regression (found by the run above): these answered 500."""
    client = await aiohttp_client(create_app(settings, db=db))
    token, _ = await _seed(db, settings.key_ring())
    response = await client.post(
        f"/api/journeys/appointment_reminders/{path}",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status == status
    assert message in (await response.json())["error"]["message"]
