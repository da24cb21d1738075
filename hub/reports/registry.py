"""The reports by name: ``/api/reports/{name}`` and the Reports page list exactly these."""

from __future__ import annotations

from hub.reports import appointments, csat, delivery, inbox, journeys
from hub.reports.base import Builder

REPORTS: dict[str, tuple[str, Builder]] = {
    # Inbox performance (issue 18).
    "responses": ("Response times", inbox.build_responses),
    "volume": ("Volume and workload", inbox.build_volume),
    # Satisfaction after resolution. Its comments are sealed: the web passes its key ring to
    # the builds named in NEEDS_RING (``build(db, filters, ctx, ring=...)``).
    "csat": (csat.TITLE, csat.build),
    # Patient outcomes.
    "journeys": ("Journeys", journeys.build),
    "appointments": ("Appointments", appointments.build),
    "delivery": ("Delivery", delivery.build),
}
"""name -> (title, build)."""
NEEDS_RING = frozenset({"csat"})
"""Reports whose build takes ``ring=`` (the key ring) to open what they show of PHI."""
PER_AGENT = frozenset({"responses", "volume", "csat"})
"""Reports that narrow to one agent's own figures (``base.for_viewer``): the only ones an
agent sees. The outcome reports are the clinic's as a whole, for coordinators and admins."""


def visible_to(role_is_agent: bool) -> list[str]:
    """The report names a person may open, in the registry's order."""
    return [n for n in REPORTS if n in PER_AGENT or not role_is_agent]
