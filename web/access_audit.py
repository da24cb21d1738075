"""Audits what the access rule refused while serving a page, an API call or a socket event
(hub/inbox/denials.py says why this happens after the answer rather than inside it)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from hub.db import database_unavailable
from hub.inbox.denials import Denial, do_audit_denials, watching_denials
from web.keys import DB

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def surface_of(request: web.Request) -> str:
    return "api" if request.path.startswith("/api/") else "page"


@web.middleware
async def audit_denials(request: web.Request, handler: Handler) -> web.StreamResponse:
    with watching_denials() as denied:
        try:
            return await handler(request)
        finally:
            if denied:
                await audit_quietly(request.app, denied, surface_of(request))


async def audit_quietly(app: web.Application, denied: list[Denial], surface: str) -> None:
    """Write the denials; a database that fails now cannot change the answer already given."""
    try:
        await do_audit_denials(app[DB], denied, surface)
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        log.warning("denied access not audited: the database is unavailable")
