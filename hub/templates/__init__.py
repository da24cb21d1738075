"""Message templates: keys with a purpose, and variants per channel and locale.

``render`` (pure) runs the Jinja2 sandbox and lints; ``segments`` (pure) does SMS segment math;
``actions`` seeds, edits, renders and previews. The errors below are the package's public
surface for callers such as the send path.
"""

from __future__ import annotations

from hub.errors import HubError

RENDER_FAILED_CODE = "template_render"
"""The error code a sender stores on a message whose template failed to render: what the
journeys page and /metrics count (from the database, so every process agrees)."""


class TemplateRenderError(HubError):
    """A template could not be rendered for this send; the message says what and where."""

    def __init__(
        self,
        key: str,
        channel: str,
        locale: str,
        problem: str,
        *,
        missing: str | None = None,
        line: int | None = None,
    ) -> None:
        self.key, self.channel, self.locale = key, channel, locale
        self.missing = missing
        """The dotted path of the variable the context lacked, when that was the problem."""
        self.line = line
        super().__init__(f"template {key} ({channel}, {locale}) {problem}")


class TemplateMissing(HubError):
    """No template with that key, or no variant for the channel in any fallback locale."""

    def __init__(self, key: str, channel: str | None, message: str) -> None:
        self.key, self.channel = key, channel
        super().__init__(message)


class TemplateInvalid(HubError):
    """Template text an admin tried to save cannot be used; the message says why.

    ``name`` is the variable, filter or test at fault and ``line`` its 1-based line in
    ``part`` (text, subject or HTML), when the problem is one of those."""

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        line: int | None = None,
        part: str | None = None,
    ) -> None:
        self.name, self.line, self.part = name, line, part
        super().__init__(message)


__all__ = ["RENDER_FAILED_CODE", "TemplateInvalid", "TemplateMissing", "TemplateRenderError"]
