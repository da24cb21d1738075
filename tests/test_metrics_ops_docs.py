"""The shipped Grafana dashboard and Prometheus alert rules name only metrics a real app's
/metrics exposes (promtool is not at hand: a small PromQL tokenizer reads the names), and
docs/operations.md describes every metric."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from hub.config import Settings
from hub.db import Database
from tests.metrics_helpers import scrape, twilio_settings
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fresh_redis")


@pytest.fixture
async def client(db: Database, settings: Settings, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(twilio_settings(settings), db=db))  # type: ignore[no-any-return]


DOCS = Path(__file__).resolve().parent.parent / "docs"
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NUMBER = re.compile(r"(?<![\w:])\d[\d.]*(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*(?![\w:])")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
_KEYWORDS |= {"unless", "offset", "inf", "nan", "Inf", "NaN", "atan2"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once strings, label matchers,
    ranges, grouping labels, numbers, keywords and function calls are taken out."""
    expr = _STRING.sub('""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = _GROUPING.sub(" ", expr)
    expr = _NUMBER.sub(" ", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if match.group(0) in _KEYWORDS or expr[match.end() :].lstrip().startswith("("):
            continue
        names.add(match.group(0))
    return names


def test_the_tokenizer_finds_metric_names_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(hub_x_bucket{job=~"$job",a="b c"}'
        "[$__rate_interval]))) / ignoring(code) max without (instance) (hub_y offset 15m) > 2e9"
        " and on (q) topk(10, hub_z_total)"
    )
    assert metric_names(expr) == {"hub_x_bucket", "hub_y", "hub_z_total"}


def _exposed(text: str) -> set[str]:
    """Every sample name /metrics may carry, from its TYPE lines (series appear once used)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
    }
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        base = name.removesuffix("_total") if kind == "counter" else name
        names |= {base + s for s in suffixes.get(kind, ("",))}
    return names


async def test_every_metric_the_dashboard_and_alerts_name_is_exposed_and_documented(
    client: TestClient,
) -> None:
    text, _ = await scrape(client)
    exposed = _exposed(text)
    dashboard = json.loads((DOCS / "monitoring" / "grafana-dashboard.json").read_text())
    rules = yaml.safe_load((DOCS / "monitoring" / "alerts.yml").read_text())

    assert dashboard["schemaVersion"] >= 39 and dashboard["uid"] == "hub-operations"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    dashboard_exprs = []
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        dashboard_exprs += [t["expr"] for t in panel["targets"]]

    alert_exprs = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), rule["alert"]
            alert_exprs.append(str(rule["expr"]))

    used = set().union(*(metric_names(e) for e in dashboard_exprs + alert_exprs))
    assert used - exposed == set()
    # Each new figure is on the dashboard, and the alerts are there.
    for family in (
        "hub_sends_total",
        "hub_send_outcomes_total",
        "hub_provider_errors_total",
        "hub_rq_queue_depth",
        "hub_rq_oldest_job_age_seconds",
        "hub_journey_step_failures_total",
        "hub_tick_lag_seconds",
        "hub_outbox_lag_seconds",
        "hub_webhook_processing_seconds_bucket",
        "hub_sign_in_failures_total",
        "hub_http_requests_total",
        "hub_http_request_duration_seconds_bucket",
    ):
        assert family in set().union(*map(metric_names, dashboard_exprs)), family
    alerted = set().union(*map(metric_names, alert_exprs))
    assert {
        "hub_tick_lag_seconds",
        "hub_rq_oldest_job_age_seconds",
        "hub_outbox_lag_seconds",
    } <= alerted
    assert {"hub_sign_in_failures_total", "hub_http_requests_total"} <= alerted
    # docs/operations.md names every metric the hub exposes.
    monitoring = (DOCS / "operations.md").read_text().split("## Monitoring", 1)[1]
    families = re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE)
    # prometheus_client adds a "_created" gauge beside each counter and histogram: no doc.
    named = [f for f in families if not f.endswith("_created")]
    assert [f for f in named if f not in monitoring] == []
