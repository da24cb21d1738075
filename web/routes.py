"""One flat, named route table."""

from __future__ import annotations

from aiohttp import web

from web import health


def setup_routes(app: web.Application) -> None:
    app.router.add_routes(
        [
            web.get("/healthz", health.healthz, name="healthz"),
            web.get("/metrics", health.metrics, name="metrics"),
        ]
    )
