"""Through real HTTP: /healthz checks the database and Redis, /metrics speaks Prometheus."""

from __future__ import annotations

from dataclasses import replace

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from hub.config import Settings
from hub.db import Database
from web.app import create_app


async def test_healthz_reports_each_dependency(
    aiohttp_client, settings: Settings, db: Database
) -> None:
    client: TestClient = await aiohttp_client(create_app(settings, db=db))
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


async def test_healthz_is_503_when_redis_is_down(
    aiohttp_client, settings: Settings, db: Database
) -> None:
    broken = replace(settings, redis_url="redis://127.0.0.1:1/0")
    client: TestClient = await aiohttp_client(create_app(broken, db=db))
    response = await client.get("/healthz")
    assert response.status == 503
    body = await response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("error:")
    metrics = await (await client.get("/metrics")).text()
    assert 'hub_health_check_failures_total{dependency="redis"} 1.0' in metrics


async def test_metrics_are_prometheus_text(
    aiohttp_client, settings: Settings, db: Database
) -> None:
    client: TestClient = await aiohttp_client(create_app(settings, db=db))
    await client.get("/healthz")
    await client.get("/api/no-such-thing")
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    requests = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["hub_http_requests"].samples
        if s.name.endswith("_total")
    }
    assert requests[("healthz", "200")] == 1.0
    assert requests[("unmatched", "401")] == 1.0  # unauthenticated: no route is revealed
    assert "hub_http_request_duration_seconds" in families
    assert "hub_outbox_pending" in families


async def test_unknown_api_route_is_a_json_401_before_sign_in(
    aiohttp_client, settings: Settings, db: Database
) -> None:
    client: TestClient = await aiohttp_client(create_app(settings, db=db))
    response = await client.get("/api/nothing-here")
    assert response.status == 401
    assert (await response.json())["error"]["status"] == 401
