"""Imports every model module so ``Base.metadata`` is complete (Alembic, key rotation)."""

from hub import audit, outbox, rotation
from hub.consent import models as consent_models
from hub.db import Base
from hub.inbox import event_models, mention_models, patient_models, scheduled_models
from hub.inbox import models as inbox_models
from hub.journeys import csat_models
from hub.journeys import models as journey_models
from hub.reports import csat_models as csat_report_models
from hub.reports import models as report_models
from hub.reports import outcome_models
from hub.rights import models as rights_models
from hub.routing import models as routing_models
from hub.templates import models as template_models

metadata = Base.metadata

__all__ = [
    "audit",
    "consent_models",
    "csat_models",
    "csat_report_models",
    "event_models",
    "inbox_models",
    "journey_models",
    "mention_models",
    "metadata",
    "outbox",
    "outcome_models",
    "patient_models",
    "report_models",
    "rights_models",
    "rotation",
    "routing_models",
    "scheduled_models",
    "template_models",
]
