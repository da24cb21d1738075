"""How the domain's events reach staff screens, without hub/ knowing about socket.io."""

from __future__ import annotations

from typing import Any, Protocol

STAFF_NAMESPACE = "/staff"
UNROUTED_ROOM = "team:unrouted"
"""Conversations no rule has given a team yet; admins and coordinators see them."""


def room_for_team(team_id: str | None) -> str:
    return f"team:{team_id}" if team_id else UNROUTED_ROOM


class Notifier(Protocol):
    """Emits an event (``message:new``, ``message:status``...) to staff rooms. Payloads hold ids
    and statuses only; screens fetch content through the API, which checks access and audits."""

    async def emit(self, event: str, data: dict[str, Any], room: str) -> None: ...
