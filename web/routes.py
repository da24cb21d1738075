"""One flat, named route table."""

from __future__ import annotations

from aiohttp import web

from web import health, webhooks


def setup_routes(app: web.Application) -> None:
    app.router.add_routes(
        [
            web.get("/healthz", health.healthz, name="healthz"),
            web.get("/metrics", health.metrics, name="metrics"),
            web.post("/webhooks/twilio/sms", webhooks.twilio_sms, name="twilio_sms"),
            web.post("/webhooks/twilio/status", webhooks.twilio_status, name="twilio_status"),
        ]
    )
