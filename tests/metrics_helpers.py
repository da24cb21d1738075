"""Reading /metrics of a real app, for the operations-metrics tests."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from hub.config import Settings
from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN, CLINIC_NUMBER
from web.keys import BACKGROUND

PUBLIC = "https://hub.test-clinic.example.org"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def twilio_settings(settings: Settings) -> Settings:
    return replace(
        settings,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from_number=CLINIC_NUMBER,
        public_url=PUBLIC,
    )


async def scrape(client: TestClient) -> tuple[str, Samples]:
    """The /metrics text and its samples by (name, labels)."""
    response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def background_done(client: TestClient) -> None:
    """Wait for the app's work off the request path (the first count of settled sends)."""
    tasks = list(client.app[BACKGROUND])
    if tasks:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)


async def scrape_after_first_count(client: TestClient) -> tuple[str, Samples]:
    """/metrics once the first count of settled sends, started by a first scrape, is stored."""
    await scrape(client)
    await background_done(client)
    return await scrape(client)
