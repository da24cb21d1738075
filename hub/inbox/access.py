"""Who may see what. One rule, applied by the UI, the API and socket.io alike: admins see every
conversation; agents and coordinators see their teams' conversations. Anything else is reported
as not found, so a conversation's existence does not leak across teams."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, false, true

from hub.audit import Actor
from hub.enums import Role
from hub.inbox.models import Conversation, StaffUser


@dataclass(frozen=True)
class StaffContext:
    staff_id: uuid.UUID
    role: Role
    team_ids: frozenset[uuid.UUID]
    display_name: str = ""
    via: str = "staff"
    """"staff" for a signed-in person, "api" for a bearer token acting for them."""
    must_change_password: bool = False
    must_set_up_second_factor: bool = False
    """An admin without a second factor where the clinic requires one: until they set it up,
    their session reaches nothing else (see web/auth.py)."""
    time_zone: str = "UTC"
    """The zone every time shown to this person is written in (IANA name)."""

    @classmethod
    def of(cls, staff: StaffUser, via: str = "staff") -> StaffContext:
        return cls(
            staff.id,
            staff.role,
            frozenset(t.id for t in staff.teams),
            staff.display_name,
            via,
            staff.must_change_password,
            time_zone=staff.time_zone,
        )

    @property
    def actor(self) -> Actor:
        return Actor("api" if self.via == "api" else "staff", str(self.staff_id))

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def can_see(self, conversation: Conversation) -> bool:
        if self.is_admin:
            return True
        return conversation.team_id is not None and conversation.team_id in self.team_ids

    def visible_filter(self) -> ColumnElement[bool]:
        """The same rule as ``can_see``, as a WHERE clause for lists."""
        if self.is_admin:
            return true()
        if not self.team_ids:
            return false()
        return Conversation.team_id.in_(self.team_ids)
