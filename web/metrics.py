"""Prometheus metrics, one registry per app (so tests can run several apps in one process)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Request latency buckets: millisecond resolution where webhooks should land."""


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "hub_http_requests", "HTTP requests served", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "hub_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.health_failures = Counter(
            "hub_health_check_failures",
            "Failed dependency checks in /healthz",
            ["dependency"],
            registry=r,
        )
        self.webhook_rejected = Counter(
            "hub_webhook_rejected",
            "Webhooks refused before anything was stored",
            ["provider", "kind", "reason"],
            registry=r,
        )
        self.webhook_accepted = Counter(
            "hub_webhook_accepted",
            "Webhooks accepted (new, duplicate, applied, ignored)",
            ["provider", "kind", "outcome"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "hub_outbox_pending", "Side effects committed but not yet released", registry=r
        )
