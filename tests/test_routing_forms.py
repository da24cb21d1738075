"""Routing rules and the consent policy as forms (web/admin_routing.py): the form builds the
structure the JSON box held and goes through the same validators; refusals keep what was
typed; rules move, turn off and are deleted; the JSON export and import lose nothing."""

from __future__ import annotations

import html as html_lib
import json
from dataclasses import replace
from typing import Any

import pytest

from hub.consent.actions import do_get_policy
from hub.db import Database
from hub.routing import actions as routing
from tests.conftest import make_staff
from tests.staff_helpers import csrf_of, sign_in
from web.admin_routing import draft_of
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fresh_redis")

ADMIN = "ada.admin@demo-clinic.example.org"
FULL_RULE = {
    "c_channel": ["sms", "chat"],
    "c_keywords": "bill, invoice",
    "c_regex": "refill.{0,20}today",
    "c_tags": "vip",
    "c_languages": "es, en",
    "c_hours": "closed",
    "c_new": "no",
    "a_team": "Billing",
    "a_priority": "high",
    "a_tags": "billing, money",
    "a_assign": "ada.admin@demo-clinic.example.org",
    "a_reply": "Thanks {{ first_name }}.",
}


@pytest.fixture
async def client(db: Database, settings: Any, aiohttp_client: Any) -> Any:
    await make_staff(db, ADMIN, role="admin", teams=("Billing",))
    client = await aiohttp_client(
        create_app(replace(settings, public_url="http://127.0.0.1"), db=db)
    )
    await sign_in(client, ADMIN)
    return client


async def _post(client: Any, path: str, data: dict[str, Any]) -> Any:
    csrf = await csrf_of(client, "/admin/routing")
    fields = [("csrf_token", csrf)]
    for key, value in data.items():
        fields += [(key, v) for v in value] if isinstance(value, list) else [(key, value)]
    return await client.post(path, data=fields, allow_redirects=False)


async def test_the_form_saves_every_condition_and_action_as_the_json_did(
    client: Any, db: Database
) -> None:
    saved = await _post(
        client, "/admin/routing/rules", {"name": "Billing", "enabled": "1", **FULL_RULE}
    )
    assert saved.status == 303
    (rule,) = await routing.do_list_rules(db)
    assert rule.conditions == {
        "channel": ["sms", "chat"],
        "body_keywords": ["bill", "invoice"],
        "body_regex": "refill.{0,20}today",
        "patient_tags_any": ["vip"],
        "patient_language": ["es", "en"],
        "business_hours": "closed",
        "patient_is_new": False,
    }
    assert rule.actions == {
        "team": "Billing",
        "priority": "high",
        "add_tags": ["billing", "money"],
        "assign_to": "ada.admin@demo-clinic.example.org",
        "auto_reply": "Thanks {{ first_name }}.",
    }
    assert rule.enabled and not rule.stop_processing
    # The page shows the saved rule in the same fields (the draft is the form's inverse).
    assert draft_of(rule.conditions, rule.actions) == FULL_RULE
    page = html_lib.unescape(await (await client.get("/admin/routing")).text())
    assert 'value="refill.{0,20}today"' in page and ">Thanks {{ first_name }}.</textarea>" in page

    # Emptied fields leave the rule; unticked "On" turns it off.
    await _post(
        client,
        "/admin/routing/rules",
        {"id": str(rule.id), "name": "Billing", "c_keywords": "bill", "a_team": "Billing"},
    )
    (rule,) = await routing.do_list_rules(db)
    assert rule.conditions == {"body_keywords": ["bill"]} and rule.actions == {"team": "Billing"}
    assert not rule.enabled


async def test_a_refused_rule_says_why_beside_what_was_typed(client: Any, db: Database) -> None:
    refused = await _post(
        client,
        "/admin/routing/rules",
        {"name": "Broken", "c_regex": "(a+)+", "a_reply": "Hi {{ frist_name }}", "enabled": "1"},
    )
    page = html_lib.unescape(await refused.text())
    assert refused.status == 422
    assert "Not saved: conditions.body_regex: this pattern could take too long" in page
    new_rule = page.split('id="new-rule"')[1]
    assert 'value="Broken"' in new_rule and 'value="(a+)+"' in new_rule
    assert ">Hi {{ frist_name }}</textarea>" in new_rule
    assert 'aria-invalid="true"' in new_rule
    assert await routing.do_list_rules(db) == []
    bad_reply = await _post(
        client, "/admin/routing/rules", {"name": "Reply", "a_reply": "Hi {{ frist_name }}"}
    )
    assert "unknown placeholder {{ frist_name }}" in html_lib.unescape(await bad_reply.text())


async def test_rules_move_and_are_deleted(client: Any, db: Database) -> None:
    for name in ("First", "Second", "Third"):
        await _post(client, "/admin/routing/rules", {"name": name, "c_keywords": name.lower()})
    third = (await routing.do_list_rules(db))[2]
    page = await (await client.get("/admin/routing")).text()
    assert "Move First up" not in page and "Move Third down" not in page
    assert "Yes, delete Second" in page
    await _post(client, "/admin/routing/rules/move", {"id": str(third.id), "to": "0"})
    assert [r.name for r in await routing.do_list_rules(db)] == ["Third", "First", "Second"]
    await _post(client, "/admin/routing/rules", {"id": str(third.id), "delete": "1"})
    assert [r.name for r in await routing.do_list_rules(db)] == ["First", "Second"]


async def test_the_json_export_imports_back_whole_or_not_at_all(client: Any, db: Database) -> None:
    await _post(client, "/admin/routing/rules", {"name": "Billing", "enabled": "1", **FULL_RULE})
    exported = await client.get("/admin/routing/rules.json")
    data = await exported.json()
    assert "attachment" in exported.headers["Content-Disposition"]
    assert data[0]["conditions"]["body_regex"] == "refill.{0,20}today"

    broken = [*data, {"name": "Bad", "conditions": {"colour": ["red"]}, "actions": {}}]
    refused = await _post(client, "/admin/routing/rules/import", {"rules": json.dumps(broken)})
    said = await (await client.get(refused.headers["Location"])).text()
    assert "Not imported: rule 2: conditions.colour: unknown key" in html_lib.unescape(said)
    assert len(await routing.do_list_rules(db)) == 1  # nothing of the list was added

    await _post(client, "/admin/routing/rules/import", {"rules": json.dumps(data)})
    first, second = await routing.do_list_rules(db)
    assert (second.conditions, second.actions) == (first.conditions, first.actions)


async def test_the_consent_policy_form(client: Any, db: Database) -> None:
    page = await (await client.get("/admin/consent")).text()
    assert 'name="window_start" type="time" value="08:00"' in page
    saved = await _post(
        client,
        "/admin/consent",
        {
            "opt_in_required": ["marketing"],
            "automated_purposes": ["reminders", "marketing"],
            "window_start": "09:00",
            "window_end": "19:30",
            "per_day": "2",
            "per_week": "0",
        },
    )
    assert saved.status == 303
    assert (await do_get_policy(db)).to_data() == {
        "opt_in_required": ["marketing"],
        "send_window": ["09:00", "19:30"],
        "automated_purposes": ["marketing", "reminders"],
        "caps": {"per_day": 2, "per_week": 0},
    }
    refused = await _post(
        client,
        "/admin/consent",
        {"window_start": "21:00", "window_end": "07:00", "per_day": "1", "per_week": "3"},
    )
    page = await refused.text()
    assert refused.status == 422
    assert "send_window: the start must come before the end" in page
    assert 'value="21:00"' in page and 'aria-invalid="true"' in page
    assert (await do_get_policy(db)).send_window[0].strftime("%H:%M") == "09:00"
