"""Errors of the inbox domain, each with a message a person can act on."""

from hub.errors import HubError


class NotFound(HubError):
    """The named record does not exist (or the actor may not see it)."""


class StaffUserExists(HubError):
    """A staff user with that email already exists."""


class WeakPassword(HubError):
    """The password is too short or too common to protect patient data."""
