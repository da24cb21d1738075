"""The builder's preview: a journey's whole message sequence for a sample patient and
appointment, each step at its date in the patient's zone, rendered on every channel it may
use, with the SMS segment count.

The sample is made up (a name, a language, a zone typed in the form), never a stored patient,
so the preview reads no PHI and audits nothing. Dates come from ``plan`` and texts from the
template renderer the dispatch uses, so the preview shows what the steps would send.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hub.db import Database
from hub.enums import Channel
from hub.errors import HubError
from hub.inbox.models import DEFAULT_CHANNEL_ORDER
from hub.journeys.definitions import JourneyDefinition, plan
from hub.templates.actions import PatientFacts, do_render, template_context
from hub.templates.segments import SegmentInfo, segment_info

SAMPLE_NAME = "Alex Sample"
"""The made-up patient a preview is written for."""
SAMPLE_LOCATION = "Main clinic, room 2"
SAMPLE_PROVIDER = "Dr. Rivera"


@dataclass(frozen=True)
class Sample:
    language: str
    time_zone: str
    anchor_at: datetime
    """The appointment's start (or the discharge, or the enrollment), aware."""
    enrolled_at: datetime
    name: str = SAMPLE_NAME


@dataclass(frozen=True)
class ChannelText:
    channel: str
    subject: str | None
    body: str | None
    segments: SegmentInfo | None
    """SMS only."""
    problem: str | None
    """Why nothing would be sent on this channel (no variant, a render error)."""


@dataclass(frozen=True)
class TimelineStep:
    step_id: str
    due_at: datetime
    skipped: str | None
    template: str
    asks: str | None
    conditions: tuple[str, ...]
    texts: tuple[ChannelText, ...]


async def do_timeline(
    db: Database, definition: JourneyDefinition, sample: Sample, clinic: dict[str, Any]
) -> list[TimelineStep]:
    """Every step of ``definition`` for ``sample``, in order, with its texts."""
    patient = PatientFacts(sample.name, sample.language, sample.time_zone)
    appointment = None
    if definition.anchor == "appointment_start":
        appointment = {
            "start": sample.anchor_at,
            "location": SAMPLE_LOCATION,
            "provider": SAMPLE_PROVIDER,
        }
    context = template_context(patient, appointment, clinic)
    anchor = sample.enrolled_at if definition.anchor == "enrollment" else sample.anchor_at
    planned = plan(definition, anchor, sample.enrolled_at, zone=sample.time_zone)
    steps = []
    for step, when in zip(definition.steps, planned, strict=True):
        order = step.channel_order([Channel(c) for c in DEFAULT_CHANNEL_ORDER])
        texts = []
        for channel in order:
            try:
                rendered = await do_render(
                    db, step.template, channel.value, sample.language, context
                )
            except HubError as exc:
                texts.append(ChannelText(channel.value, None, None, None, str(exc)))
                continue
            segments = segment_info(rendered.body) if channel is Channel.SMS else None
            texts.append(
                ChannelText(channel.value, rendered.subject, rendered.body, segments, None)
            )
        steps.append(
            TimelineStep(
                step.id,
                when.due_at,
                when.skip_reason,
                step.template,
                step.asks,
                tuple(sorted(step.conditions)),
                tuple(texts),
            )
        )
    return steps
