"""Routing rules, urgent triage, "try a message" and the consent policy (admins only).

Rules and the policy are edited as forms that build the very structure the JSON held, and
are saved through the same hub validators (hub.routing.rules, hub.consent.rules): a form
cannot accept what the JSON would refuse, nor the reverse. The JSON stays reachable
(export, per-rule JSON, import) so nothing the structure can say is lost."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web
from multidict import MultiDictProxy

from hub.audit import Actor
from hub.consent.actions import do_get_policy, do_set_policy
from hub.consent.models import Purpose
from hub.db import utcnow
from hub.enums import RECEIVE_ONLY, Channel, Priority
from hub.errors import HubError
from hub.inbox.actions import listing
from hub.inbox.actions.workspace import do_visible_teams
from hub.routing import actions as routing
from hub.routing.rules import RuleInvalid, check_rule_name, parse_actions, parse_conditions
from hub.routing.try_message import TryMessage, do_try_message
from web.auth import current
from web.keys import DB, RING, SETTINGS
from web.render import redirect_with, render

RULE_LISTS = {
    "c_keywords": ("conditions", "body_keywords"),
    "c_tags": ("conditions", "patient_tags_any"),
    "c_languages": ("conditions", "patient_language"),
    "a_tags": ("actions", "add_tags"),
}
"""Form fields holding a comma-separated list, and where each goes in the rule."""
RULE_TEXTS = {
    "c_regex": ("conditions", "body_regex"),
    "c_hours": ("conditions", "business_hours"),
    "a_team": ("actions", "team"),
    "a_priority": ("actions", "priority"),
    "a_assign": ("actions", "assign_to"),
    "a_reply": ("actions", "auto_reply"),
}
"""Form fields holding one text (empty: not part of the rule)."""


def _admin(request: web.Request) -> Actor:
    ctx = current(request)
    if not ctx.is_admin:
        raise web.HTTPNotFound()
    return ctx.actor


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def rule_from_form(form: MultiDictProxy[Any]) -> dict[str, Any]:
    """The stored structure of a rule from the form's fields: what the JSON box held."""
    rule: dict[str, Any] = {"conditions": {}, "actions": {}}
    channels = [str(c) for c in form.getall("c_channel", [])]
    if channels:
        rule["conditions"]["channel"] = channels
    for name, (part, key) in RULE_LISTS.items():
        if values := _split(str(form.get(name, ""))):
            rule[part][key] = values
    for name, (part, key) in RULE_TEXTS.items():
        if value := str(form.get(name, "")).strip():
            rule[part][key] = value
    is_new = str(form.get("c_new", ""))
    if is_new in ("yes", "no"):
        rule["conditions"]["patient_is_new"] = is_new == "yes"
    return rule


def draft_of(conditions: dict[str, Any], actions: dict[str, Any]) -> dict[str, Any]:
    """A rule's structure as the form's fields show it (the inverse of rule_from_form)."""
    both = {"conditions": conditions, "actions": actions}
    draft: dict[str, Any] = {"c_channel": list(conditions.get("channel", []))}
    for name, (part, key) in RULE_LISTS.items():
        value = both[part].get(key)
        draft[name] = ", ".join(value) if isinstance(value, list) else str(value or "")
    for name, (part, key) in RULE_TEXTS.items():
        draft[name] = str(both[part].get(key) or "")
    new = conditions.get("patient_is_new")
    draft["c_new"] = "" if new is None else ("yes" if new else "no")
    return draft


def _json_object(raw: str, name: str) -> dict[str, Any]:
    try:
        value = json.loads(raw.strip() or "{}")
    except json.JSONDecodeError as exc:
        raise RuleInvalid(f"{name}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(value, dict):
        raise RuleInvalid(f"{name}: must be a JSON object")
    return value


async def _teams(request: web.Request) -> list[str]:
    return [t.name for t in await do_visible_teams(request.app[DB], current(request))]


async def _patients(request: web.Request) -> list[Any]:
    # A picker of recent senders for "try a message": a PHI view, audited as a list.
    page = await listing.do_list_inbox(
        request.app[DB],
        request.app[RING],
        current(request),
        listing.InboxFilters(status="any"),
        limit=30,
    )
    return list(page.rows)


async def routing_page(request: web.Request, *, status: int = 200, **extra: Any) -> web.Response:
    _admin(request)
    db = request.app[DB]
    rules = await routing.do_list_rules(db)
    refused = extra.get("refused")
    drafts = {
        str(r.id): refused["draft"]
        if refused and refused["id"] == str(r.id)
        else draft_of(r.conditions, r.actions)
        for r in rules
    }
    new_draft = refused["draft"] if refused and not refused["id"] else draft_of({}, {})
    return render(
        request,
        "admin_routing.html",
        status=status,
        nav="admin",
        rules=rules,
        drafts=drafts,
        new_draft=new_draft,
        refused=refused,
        teams=await _teams(request),
        channels=[c.value for c in Channel],
        sendable=[c.value for c in Channel if c not in RECEIVE_ONLY],
        priorities=[p.value for p in Priority],
        purposes=[p.value for p in Purpose],
        phrases=await routing.do_list_triage_phrases(db),
        triage_reply=await routing.do_get_setting(db, "triage.reply") or "",
        patients=await _patients(request),
        tried=extra.get("tried"),
        trial=extra.get("trial"),
        now=utcnow(),
        json=json,
    )


async def save_rule(request: web.Request) -> web.StreamResponse:
    actor = _admin(request)
    form = await request.post()
    rule_id = str(form.get("id", ""))
    db = request.app[DB]
    if form.get("delete"):
        try:
            await routing.do_delete_rule(db, actor, uuid.UUID(rule_id))
        except (HubError, ValueError) as exc:
            raise redirect_with("/admin/routing", "error", f"Not deleted: {exc}") from None
        raise redirect_with("/admin/routing", "ok", "Rule deleted.")
    as_json = "conditions" in form or "actions" in form
    try:
        if as_json:  # the advanced JSON view (and API-style clients)
            structure = {
                "conditions": _json_object(str(form.get("conditions", "")), "conditions"),
                "actions": _json_object(str(form.get("actions", "")), "actions"),
            }
        else:
            structure = rule_from_form(form)
        fields: dict[str, Any] = {
            "name": str(form.get("name", "")).strip(),
            **structure,
            "enabled": bool(form.get("enabled")),
            "stop_processing": bool(form.get("stop_processing")),
        }
        if rule_id:
            await routing.do_update_rule(db, actor, uuid.UUID(rule_id), **fields)
        else:
            await routing.do_create_rule(db, actor, **fields)
    except (HubError, ValueError) as exc:
        if as_json:
            raise redirect_with("/admin/routing", "error", f"Not saved: {exc}") from None
        # In place, with what was typed kept, like a refused template.
        draft = {
            **draft_of(structure["conditions"], structure["actions"]),
            "name": fields["name"],
            "enabled": fields["enabled"],
            "stop_processing": fields["stop_processing"],
        }
        refused = {"id": rule_id, "error": f"Not saved: {exc}", "draft": draft}
        return await routing_page(request, status=422, refused=refused)
    raise redirect_with("/admin/routing#rules", "ok", f"Rule {fields['name']} saved.")


async def move_rule(request: web.Request) -> web.StreamResponse:
    actor = _admin(request)
    form = await request.post()
    try:
        await routing.do_move_rule(
            request.app[DB], actor, uuid.UUID(str(form.get("id", ""))), int(str(form["to"]))
        )
    except (HubError, ValueError, KeyError) as exc:
        raise redirect_with("/admin/routing", "error", f"Not moved: {exc}") from None
    raise redirect_with("/admin/routing#rules", "ok", "Rule moved.")


async def export_rules(request: web.Request) -> web.Response:
    """Every rule as JSON, in order: what the import box takes back."""
    _admin(request)
    rules = await routing.do_list_rules(request.app[DB])
    data = [
        {
            "name": r.name,
            "enabled": r.enabled,
            "stop_processing": r.stop_processing,
            "conditions": r.conditions,
            "actions": r.actions,
        }
        for r in rules
    ]
    return web.json_response(
        data,
        dumps=lambda d: json.dumps(d, indent=2),
        headers={"Content-Disposition": 'attachment; filename="routing-rules.json"'},
    )


def _imported(raw: str) -> list[dict[str, Any]]:
    """Rules pasted as JSON (one object or the export's list), all checked before any is
    added, so a bad third rule does not leave two added."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RuleInvalid(f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    items = value if isinstance(value, list) else [value]
    rules = []
    for i, item in enumerate(items):
        where = f"rule {i + 1}: " if len(items) > 1 else ""
        if not isinstance(item, dict):
            raise RuleInvalid(f"{where}expected an object with name, conditions and actions")
        try:
            check_rule_name(item.get("name"))
            parse_conditions(item.get("conditions", {}))
            parse_actions(item.get("actions", {}))
        except RuleInvalid as exc:
            raise RuleInvalid(f"{where}{exc}") from None
        rules.append(item)
    return rules


async def import_rules(request: web.Request) -> web.StreamResponse:
    actor = _admin(request)
    form = await request.post()
    try:
        rules = _imported(str(form.get("rules", "")))
        for item in rules:
            await routing.do_create_rule(
                request.app[DB],
                actor,
                name=item["name"],
                conditions=item.get("conditions", {}),
                actions=item.get("actions", {}),
                enabled=item.get("enabled", True),
                stop_processing=item.get("stop_processing", False),
            )
    except (HubError, ValueError) as exc:
        raise redirect_with("/admin/routing", "error", f"Not imported: {exc}") from None
    raise redirect_with("/admin/routing#rules", "ok", f"Imported {len(rules)} rule(s).")


async def save_triage(request: web.Request) -> web.StreamResponse:
    actor = _admin(request)
    form = await request.post()
    phrases = [p.strip() for p in str(form.get("phrases", "")).splitlines() if p.strip()]
    reply = str(form.get("reply", "")).strip()
    try:
        await routing.do_set_triage_phrases(request.app[DB], actor, phrases)
        if reply:
            await routing.do_set_setting(request.app[DB], actor, "triage.reply", reply)
    except (HubError, ValueError) as exc:
        raise redirect_with("/admin/routing", "error", f"Not saved: {exc}") from None
    raise redirect_with("/admin/routing", "ok", "Urgent triage saved.")


def _when(raw: str, time_zone: str) -> datetime:
    """A datetime-local value in the staff member's zone; empty means now."""
    if not raw.strip():
        return utcnow()
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    try:
        return datetime.fromisoformat(raw.strip()).replace(tzinfo=zone)
    except ValueError:
        raise ValueError(f"{raw!r} is not a date and time; pick one in the field") from None


async def try_message(request: web.Request) -> web.Response:
    """What routing and the consent gate would do with a typed message; stores nothing."""
    actor = _admin(request)
    form = await request.post()
    tried = {k: str(v) for k, v in form.items() if k != "csrf_token"}
    trial, error = None, None
    try:
        patient = tried.get("patient_id", "")
        message = TryMessage(
            body=tried.get("body", ""),
            channel=Channel(tried.get("channel", "sms")),
            at=_when(tried.get("at", ""), current(request).time_zone),
            patient_id=uuid.UUID(patient) if patient else None,
            language=tried.get("language", "").strip() or "en",
            tags=frozenset(_split(tried.get("tags", ""))),
            is_new=tried.get("is_new") == "1",
            purpose=Purpose(tried.get("purpose", "care")),
            consent_channel=Channel(tried["consent_channel"])
            if tried.get("consent_channel")
            else None,
        )
        if not message.body.strip():
            raise ValueError("type the message a patient would send")
        trial = await do_try_message(
            request.app[DB], request.app[RING], actor, message, clinic=request.app[SETTINGS].clinic
        )
    except (HubError, ValueError) as exc:
        error = str(exc)
    if request.headers.get("HX-Request"):
        return render(request, "admin_routing_try.html", trial=trial, try_error=error)
    return await routing_page(request, tried=tried, trial={"outcome": trial, "error": error})


async def consent_page(request: web.Request, *, status: int = 200, **extra: Any) -> web.Response:
    _admin(request)
    policy = await do_get_policy(request.app[DB])
    data = extra.get("typed") or policy.to_data()
    return render(
        request,
        "admin_consent.html",
        status=status,
        nav="admin",
        data=data,
        policy=json.dumps(policy.to_data(), indent=2),
        purposes=[p.value for p in Purpose if p is not Purpose.SERVICE],
        error=extra.get("error"),
    )


def policy_from_form(form: MultiDictProxy[Any]) -> dict[str, Any]:
    """The stored policy structure from the form's fields: what the JSON box held."""

    def count(name: str) -> Any:
        raw = str(form.get(name, "")).strip()
        return int(raw) if raw.isdigit() else raw

    return {
        "opt_in_required": [str(p) for p in form.getall("opt_in_required", [])],
        "automated_purposes": [str(p) for p in form.getall("automated_purposes", [])],
        "send_window": [str(form.get("window_start", "")), str(form.get("window_end", ""))],
        "caps": {"per_day": count("per_day"), "per_week": count("per_week")},
    }


async def save_consent_policy(request: web.Request) -> web.StreamResponse:
    _admin(request)
    form = await request.post()
    as_json = "policy" in form
    data: dict[str, Any] = {}
    try:
        data = (
            _json_object(str(form.get("policy", "")), "policy")
            if as_json
            else policy_from_form(form)
        )
        await do_set_policy(request.app[DB], current(request), data)
    except (HubError, ValueError) as exc:
        if as_json:
            raise redirect_with("/admin/consent", "error", f"Not saved: {exc}") from None
        return await consent_page(request, status=422, typed=data, error=f"Not saved: {exc}")
    raise redirect_with("/admin/consent", "ok", "Consent policy saved.")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/admin/routing", routing_page, name="admin_routing"),
        web.post("/admin/routing/rules", save_rule, name="admin_save_rule"),
        web.post("/admin/routing/rules/move", move_rule, name="admin_move_rule"),
        web.get("/admin/routing/rules.json", export_rules, name="admin_export_rules"),
        web.post("/admin/routing/rules/import", import_rules, name="admin_import_rules"),
        web.post("/admin/routing/triage", save_triage, name="admin_save_triage"),
        web.post("/admin/routing/try", try_message, name="admin_try_message"),
        web.get("/admin/consent", consent_page, name="admin_consent"),
        web.post("/admin/consent", save_consent_policy, name="admin_save_consent"),
    ]
