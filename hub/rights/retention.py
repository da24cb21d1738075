"""How long the clinic keeps messages, attachments and voicemail recordings: a hub setting
admins change with ``hub retention set``. Unset (the default) keeps everything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub.errors import HubError

SETTING_KEY = "retention.policy"
KINDS = ("messages", "attachments", "recordings")
MIN_RETENTION_DAYS = 1
MAX_RETENTION_DAYS = 36_500
"""A hundred years: anything longer is a typo, not a policy."""
DEFAULT_PURGE_HOUR_UTC = 2
"""The nightly purge starts at the first scheduler tick after this hour (UTC) each day."""


class RetentionInvalid(HubError):
    pass


@dataclass(frozen=True)
class RetentionPolicy:
    messages_days: int | None = None
    """Messages (and internal notes) of resolved conversations older than this are deleted;
    an open conversation keeps everything until it is resolved."""
    attachments_days: int | None = None
    """Files patients sent (and their files in replies), other than voicemail recordings."""
    recordings_days: int | None = None
    """Voicemail recordings: the hub's copy and the provider's; the transcript stays a
    message (and follows ``messages_days``)."""

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f"{kind}_days") is not None for kind in KINDS)

    def days(self, kind: str) -> int | None:
        value: int | None = getattr(self, f"{kind}_days")
        return value

    @classmethod
    def from_data(cls, data: Any) -> RetentionPolicy:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise RetentionInvalid("the retention setting must be an object of day counts")
        unknown = set(data) - {f"{k}_days" for k in KINDS}
        if unknown:
            raise RetentionInvalid(f"unknown retention settings: {', '.join(sorted(unknown))}")
        values: dict[str, int | None] = {}
        for kind in KINDS:
            value = data.get(f"{kind}_days")
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not MIN_RETENTION_DAYS <= value <= MAX_RETENTION_DAYS
            ):
                raise RetentionInvalid(
                    f"{kind} retention must be a whole number of days from "
                    f"{MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS}, or off"
                )
            values[f"{kind}_days"] = value
        return cls(**values)

    def to_data(self) -> dict[str, int | None]:
        return {f"{kind}_days": self.days(kind) for kind in KINDS}

    def describe(self) -> str:
        return ", ".join(
            f"{kind}: {'kept' if self.days(kind) is None else f'{self.days(kind)} days'}"
            for kind in KINDS
        )
