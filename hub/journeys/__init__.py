"""Journeys: definitions (YAML, validated with line and field), step planning, reply meaning.

``definitions`` (pure) parses and validates a journey and plans its due times; ``replies``
(pure) says what a patient's reply means for the step waiting on it. The shipped examples live
in ``examples/`` and load with ``load_examples()``.
"""

from __future__ import annotations

from hub.journeys.definitions import (
    ChannelPolicy,
    JourneyDefinition,
    JourneyInvalid,
    PlannedStep,
    ReplyHandler,
    StepDefinition,
    SurveySpec,
    load_examples,
    parse_journey,
    plan,
)
from hub.journeys.replies import Reply, classify_reply

__all__ = [
    "ChannelPolicy",
    "JourneyDefinition",
    "JourneyInvalid",
    "PlannedStep",
    "Reply",
    "ReplyHandler",
    "StepDefinition",
    "SurveySpec",
    "classify_reply",
    "load_examples",
    "parse_journey",
    "plan",
]
