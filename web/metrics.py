"""Prometheus metrics, one registry per app (so tests can run several apps in one process)."""

from __future__ import annotations

from collections.abc import Mapping
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
        self.storage_free_bytes = Gauge(
            "hub_storage_free_bytes",
            "Free bytes on the filesystem of the SQLite database and of HUB_VAR_DIR",
            ["volume"],
            registry=r,
        )
        self.template_render_failures = Counter(
            "hub_template_render_failures",
            "Journey messages not sent because their template failed to render",
            ["template", "channel"],
            registry=r,
        )
        self._render_failures_seen: dict[tuple[str, str], int] = {}
        self.retention_last_run = Gauge(
            "hub_retention_last_run_timestamp_seconds",
            "When the last retention purge finished (0: never)",
            registry=r,
        )
        self.retention_deleted = Gauge(
            "hub_retention_last_run_deleted",
            "What the last retention purge deleted, by kind",
            ["kind"],
            registry=r,
        )
        self.provider_deletions_pending = Gauge(
            "hub_provider_deletions_pending",
            "Files (recordings) the hub asked a provider to delete that are not deleted yet",
            registry=r,
        )

    def count_render_failures(self, totals: Mapping[tuple[str, str], int]) -> None:
        """Advance the counter to the totals stored in the database: the workers that render
        are other processes, so the count comes from what they recorded, not from memory.
        Never goes back (an erased patient's messages leave the total where it was)."""
        for labels, total in totals.items():
            seen = self._render_failures_seen.get(labels, 0)
            if total > seen:
                self.template_render_failures.labels(*labels).inc(total - seen)
                self._render_failures_seen[labels] = total
