"""Prometheus metrics, one registry per app (so tests can run several apps in one process)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from hub.ops_metrics import SEND_OUTCOMES, SendTotals

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Request latency buckets: millisecond resolution where webhooks should land."""
SIGN_IN_FAILURE_REASONS = (
    "bad_password",
    "unknown_account",
    "locked",
    "deactivated",
    "second_factor",
)
"""Why a sign-in was refused (``hub_sign_in_failures_total``): each is a series from the start."""


@dataclass(frozen=True)
class QueueFigures:
    depth: int
    oldest_age_s: float
    failed: int


@dataclass
class OpsFigures:
    """What the last scrape read from the shared stores (database, Redis). None: not read (the
    store did not answer); its series are left out rather than shown as zero."""

    sends: SendTotals | None = None
    step_failures: dict[str, int] | None = None
    queues: dict[str, QueueFigures] | None = None
    tick_finished_at: float | None = None
    """Unix time the last completed tick finished (0: no tick has completed)."""
    tick_lag_s: float | None = None
    outbox_lag_s: float | None = None
    sign_in_failures: dict[str, int] | None = None


class OpsCollector:
    """Exposes ``OpsFigures`` as they were read: counters are totals kept by the stores, so every
    `hub serve` behind a load balancer shows the same value. A database total can shrink (an
    erased patient's messages); a counter never does, so each series shows the highest total
    this process has seen."""

    def __init__(self) -> None:
        self.figures = OpsFigures()
        self.read_at = -math.inf
        """``time.monotonic()`` of the last read of the stores."""
        self._highest: dict[tuple[str, tuple[str, ...]], float] = {}

    def _monotonic(self, name: str, labels: tuple[str, ...], total: float) -> float:
        key = (name, labels)
        value = max(self._highest.get(key, 0), total)
        self._highest[key] = value
        return value

    def collect(self) -> Iterator[Metric]:
        f = self.figures
        sends = CounterMetricFamily(
            "hub_sends", "Outbound messages made (queued), by channel", labels=["channel"]
        )
        outcomes = CounterMetricFamily(
            "hub_send_outcomes",
            "Outbound messages that reached an outcome (sent, delivered, failed, undelivered)",
            labels=["channel", "outcome"],
        )
        errors = CounterMetricFamily(
            "hub_provider_errors",
            "Hand-overs to a provider that ended in an error, by provider and error code",
            labels=["provider", "code"],
        )
        if f.sends is not None:
            for channel, n in sorted(f.sends.made.items()):
                sends.add_metric([channel], self._monotonic("sends", (channel,), n))
                for outcome in SEND_OUTCOMES:
                    total = f.sends.outcomes.get((channel, outcome), 0)
                    labels = (channel, outcome)
                    outcomes.add_metric(list(labels), self._monotonic("outcomes", labels, total))
            for labels, n in sorted(f.sends.errors.items()):
                errors.add_metric(list(labels), self._monotonic("errors", labels, n))
        yield from (sends, outcomes, errors)

        steps = CounterMetricFamily(
            "hub_journey_step_failures",
            "Journey step runs that failed at dispatch, by reason code",
            labels=["reason"],
        )
        for reason, n in sorted((f.step_failures or {}).items()):
            steps.add_metric([reason], self._monotonic("steps", (reason,), n))
        yield steps

        depth = GaugeMetricFamily(
            "hub_rq_queue_depth", "Jobs waiting in an RQ queue", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "hub_rq_oldest_job_age_seconds",
            "How long the job at the head of an RQ queue has waited (0: the queue is empty)",
            labels=["queue"],
        )
        failed = GaugeMetricFamily(
            "hub_rq_failed_jobs", "Jobs in an RQ queue's failed-job registry", labels=["queue"]
        )
        for name, queue in sorted((f.queues or {}).items()):
            depth.add_metric([name], queue.depth)
            age.add_metric([name], queue.oldest_age_s)
            failed.add_metric([name], queue.failed)
        yield from (depth, age, failed)

        if f.tick_lag_s is not None:
            yield GaugeMetricFamily(
                "hub_tick_lag_seconds",
                "Seconds since the last completed scheduler tick (+Inf: none has completed)",
                value=f.tick_lag_s,
            )
        if f.tick_finished_at is not None:
            yield GaugeMetricFamily(
                "hub_tick_last_finished_timestamp_seconds",
                "When the last completed scheduler tick finished (0: none has)",
                value=f.tick_finished_at,
            )
        if f.outbox_lag_s is not None:
            yield GaugeMetricFamily(
                "hub_outbox_lag_seconds",
                "Age of the oldest side effect committed but not yet released (0: none waits)",
                value=f.outbox_lag_s,
            )
        signins = CounterMetricFamily(
            "hub_sign_in_failures", "Refused staff sign-ins, by reason", labels=["reason"]
        )
        if f.sign_in_failures is not None:
            for reason in SIGN_IN_FAILURE_REASONS:
                signins.add_metric([reason], f.sign_in_failures.get(reason, 0))
        yield signins


NEVER = math.inf
"""Tick lag when no tick has ever completed: an alert on the lag fires, as it should."""


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
        self.webhook_processing = Histogram(
            "hub_webhook_processing_seconds",
            "From a webhook's arrival to its event being stored and applied (intake is inline)",
            ["provider", "kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ops = OpsCollector()
        r.register(self.ops)
        self.provider_deletions_pending = Gauge(
            "hub_provider_deletions_pending",
            "Files (recordings) the hub asked a provider to delete that are not deleted yet",
            registry=r,
        )

    def webhook_done(self, provider: str, kind: str, outcome: str, started: float | None) -> None:
        """Count an accepted webhook and, when its arrival was noted (``time.perf_counter()``),
        how long it took to process."""
        self.webhook_accepted.labels(provider, kind, outcome).inc()
        if started is not None:
            elapsed = max(0.0, time.perf_counter() - started)
            self.webhook_processing.labels(provider, kind).observe(elapsed)

    def count_render_failures(self, totals: Mapping[tuple[str, str], int]) -> None:
        """Advance the counter to the totals stored in the database: the workers that render
        are other processes, so the count comes from what they recorded, not from memory.
        Never goes back (an erased patient's messages leave the total where it was)."""
        for labels, total in totals.items():
            seen = self._render_failures_seen.get(labels, 0)
            if total > seen:
                self.template_render_failures.labels(*labels).inc(total - seen)
                self._render_failures_seen[labels] = total
