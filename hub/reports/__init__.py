"""Figures and rollups for managers and coordinators: what the hub changed for the clinic.

Each report is one module with one ``build`` coroutine registered in ``registry.REPORTS``; the
Reports page, ``GET /api/reports/{name}`` and its CSV read the same ``Report``. Figures are
counts, rates and durations only, never PHI (CSAT comments are the one exception, and only in
the report's ``comments`` table for coordinators and admins, audited like any PHI read)."""
