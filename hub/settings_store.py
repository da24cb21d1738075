"""Hub-wide settings admins edit at run time (``triage.reply``, ``consent.policy``,
``templates.clinical_terms``): one JSON value per dotted key.

On the ground floor so that any package may read its own settings without importing the
package that edits another's (templates read their clinical-word list; routing its reply).
Environment-level configuration stays in ``hub.config.Settings``. No PHI is stored here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import Base, utcnow


class HubSetting(Base):
    """A hub-wide setting an admin edits at run time; environment-level configuration stays
    in ``hub.config.Settings``."""

    __tablename__ = "hub_setting"

    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


async def setting_value(session: AsyncSession, key: str) -> Any:
    """The stored value, or None when the setting was never written."""
    row = await session.get(HubSetting, key)
    return None if row is None else row.value


async def put_setting_in(session: AsyncSession, key: str, value: Any) -> None:
    """Write a setting inside the caller's transaction (the caller validates and audits)."""
    row = await session.get(HubSetting, key, with_for_update=True)
    if row is None:
        session.add(HubSetting(key=key, value=value))
    else:
        row.value = value
    await session.flush()
