"""Errors of patient search and profiles, each with a message a person can act on."""

from hub.errors import HubError


class NotAllowed(HubError):
    """The person may see the patient but not make this change (the message says who can)."""


class PatientConflict(HubError):
    """The change would give two patients one phone, email or record number, or the merge is
    not one the hub can do (the message says why and what to do instead)."""
