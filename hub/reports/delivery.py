"""The ``delivery`` report: how much of what the clinic sent arrived, per channel and provider,
the failure codes behind what did not (with their meaning), opt-outs per journey, and email
bounces and spam complaints.

A message belongs to the period when it was made (whole days in the clinic's zone). Delivery
rate: delivered over messages handed to a provider that reached a final status, delivered or
failed; those still on their way are left out until the provider says. Email has no delivery
receipt: a mail the recipient's server accepted and that has not bounced counts as delivered.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub.db import Database
from hub.enums import Channel, MessageStatus
from hub.inbox.access import StaffContext
from hub.reports import outcome_day_queries as dq
from hub.reports import outcome_queries as oq
from hub.reports.base import Column, Report, ReportFilters, Series, Table
from hub.reports.delivery_rollup_actions import delivery_rollup_as_of
from hub.reports.error_codes import meaning
from hub.reports.journeys import JourneyOutcomes, journeys_in_scope, outcomes_of, rate
from hub.reports.run_facts_actions import run_rollup_as_of
from hub.reports.tuning import tune_for_reports

OPT_OUT_COLUMNS = ("sent", "opted_out")
"""The funnel columns the opt-out rate needs (the reply test is the costly one)."""
TOP_ERRORS = 10
"""Failure codes listed, most frequent first."""

LABELS = {
    "handed_over": "Handed to a provider",
    "delivered": "Delivered",
    "failed": "Failed",
    "pending": "Awaiting a final status",
    "delivery_rate": "Delivery rate",
    "not_sent": "Not sent (no usable channel, refused before sending)",
    "opt_out_rate": "Opt-out rate (journeys)",
    "emails": "Emails handed to the mail server",
    "email_bounces": "Email bounces",
    "email_bounce_rate": "Email bounce rate",
    "email_complaints": "Spam complaints",
    "email_complaint_rate": "Spam complaint rate",
}
KINDS = {k: "rate" if k.endswith("_rate") else "count" for k in LABELS}


@dataclass
class ProviderTally:
    delivered: int = 0
    failed: int = 0
    pending: int = 0

    @property
    def handed_over(self) -> int:
        return self.delivered + self.failed + self.pending

    @property
    def rate(self) -> float | None:
        return rate(self.delivered, self.delivered + self.failed)


def outcome(channel: str, status: MessageStatus) -> str:
    """ "delivered", "failed" or "pending" for a message a provider was handed."""
    if status in oq.SUCCEEDED:
        return "delivered"
    if status in oq.UNDELIVERED:
        return "failed"
    if status is MessageStatus.SENT and channel == Channel.EMAIL.value:
        return "delivered"  # accepted by the recipient's server; a bounce would fail it
    return "pending"


def is_bounce(code: str) -> bool:
    """A report back from the recipient's side (``bounce_*``) or a refusal of the address or
    message by the receiving server at sending time (``smtp_5xx``)."""
    return code.startswith("bounce_") or code.startswith("smtp_5")


@dataclass
class Delivery:
    providers: dict[tuple[str, str], ProviderTally]
    not_sent: int
    errors: list[tuple[str, str, int]]
    complaints: int


async def _delivery(db: Database, filters: ReportFilters) -> Delivery:
    bounds = filters.bounds()
    async with db.reader() as session:
        await tune_for_reports(session)
        journey_id = None
        if filters.journey_key is not None:
            journey_id = (await journeys_in_scope(session, filters.journey_key))[0].id
        groups: list[tuple[str, str | None, MessageStatus, int]]
        if await dq.delivery_current(session, filters.time_zone):
            days = ((filters.start, filters.end), filters.channel, journey_id, filters.team_id)
            groups = [
                (ch, provider, MessageStatus(status), n)
                for ch, provider, status, n in await dq.delivery_days(session, *days)
            ]
            errors = await dq.error_days(session, *days)
        else:  # the rollup counts other days (the clinic's zone changed) or was never built
            scope = (bounds, filters.channel, journey_id, filters.team_id)
            groups = await oq.delivery_groups(session, *scope)
            errors = await oq.error_groups(session, *scope)
        complaints = 0
        if filters.channel in (None, Channel.EMAIL.value):
            complaints = await oq.complaints(session, bounds)
    providers: dict[tuple[str, str], ProviderTally] = {}
    not_sent = 0
    for channel, provider, status, n in groups:
        if provider is None:
            # Never handed over: failed before sending, or still queued for its first try.
            not_sent += n if status in oq.UNDELIVERED else 0
            continue
        tally = providers.setdefault((channel, provider), ProviderTally())
        kind = outcome(channel, status)
        setattr(tally, kind, getattr(tally, kind) + n)  # a provider's rows come from two reads
    errors.sort(key=lambda e: (-e[2], e[0], e[1]))
    return Delivery(dict(sorted(providers.items())), not_sent, errors, complaints)


def _figures(d: Delivery, opted_out: int, reached: int) -> dict[str, object]:
    delivered = sum(t.delivered for t in d.providers.values())
    failed = sum(t.failed for t in d.providers.values())
    emails = sum(t.handed_over for (ch, _), t in d.providers.items() if ch == Channel.EMAIL.value)
    bounces = sum(n for ch, code, n in d.errors if ch == Channel.EMAIL.value and is_bounce(code))
    return {
        "handed_over": sum(t.handed_over for t in d.providers.values()),
        "delivered": delivered,
        "failed": failed,
        "pending": sum(t.pending for t in d.providers.values()),
        "delivery_rate": rate(delivered, delivered + failed),
        "not_sent": d.not_sent,
        "opt_out_rate": rate(opted_out, reached),
        "emails": emails,
        "email_bounces": bounces,
        "email_bounce_rate": rate(bounces, emails),
        "email_complaints": d.complaints,
        "email_complaint_rate": rate(d.complaints, emails),
    }


async def build(db: Database, filters: ReportFilters, viewer: StaffContext) -> Report:
    """Delivery rate per channel and provider, top failure codes with their meaning, opt-out
    rate per journey, email bounces and complaints, beside the previous period."""
    # Read first: every change committed before it is in what follows.
    as_of = await run_rollup_as_of(db)
    zone, messages_as_of = await delivery_rollup_as_of(db)
    if zone == filters.time_zone and as_of is not None and messages_as_of is not None:
        as_of = min(as_of, messages_as_of)
    now = await _delivery(db, filters)
    before = await _delivery(db, filters.previous())
    journeys, journeys_before = await outcomes_of(
        db, [filters, filters.previous()], OPT_OUT_COLUMNS
    )

    def opt_outs(results: list[JourneyOutcomes]) -> tuple[int, int]:
        return (
            sum(r.total.counts["opted_out"] for r in results),
            sum(r.total.counts["sent"] for r in results),
        )

    providers = Table(
        "providers",
        "Delivery by channel and provider",
        [
            Column("channel", "Channel"),
            Column("provider", "Provider"),
            Column("handed_over", "Handed over", "count"),
            Column("delivered", "Delivered", "count"),
            Column("failed", "Failed", "count"),
            Column("pending", "Awaiting status", "count"),
            Column("delivery_rate", "Delivery rate", "rate"),
        ],
        [
            [ch, provider, t.handed_over, t.delivered, t.failed, t.pending, t.rate]
            for (ch, provider), t in now.providers.items()
        ],
    )
    errors = Table(
        "errors",
        "Top failure codes",
        [
            Column("channel", "Channel"),
            Column("code", "Code"),
            Column("meaning", "What it means"),
            Column("messages", "Messages", "count"),
        ],
        [[ch, code, meaning(code), n] for ch, code, n in now.errors[:TOP_ERRORS]],
    )
    opt_out_table = Table(
        "opt_outs",
        "Opt-outs by journey",
        [
            Column("journey", "Journey"),
            Column("reached", "Patients sent a step", "count"),
            Column("opted_out", "Opted out", "count"),
            Column("opt_out_rate", "Opt-out rate", "rate"),
        ],
        [
            [
                r.journey.name,
                r.total.counts["sent"],
                r.total.counts["opted_out"],
                rate(r.total.counts["opted_out"], r.total.counts["sent"]),
            ]
            for r in journeys
            if r.total.counts["sent"]
        ],
    )
    chart = Series(
        "delivery_rate",
        "Delivery rate by channel and provider",
        "bars",
        [f"{ch} ({provider})" for ch, provider in now.providers],
        [t.rate for t in now.providers.values()],
        unit="rate",
    )
    notes = [
        "Delivery rate: delivered over messages handed to a provider that reached a final "
        "status (delivered or failed); those still awaiting one are left out. Email has no "
        "delivery receipt: mail the recipient's server accepted and that did not bounce "
        "counts as delivered.",
        "Opt-out rate: patients sent a journey step who then revoked consent for that "
        "channel and purpose (STOP, unsubscribe, a carrier or a complaint) before the next "
        "step. Bounces: mail returned or refused by the recipient's server. Complaints: "
        "reports from mailbox providers that the patient marked the mail as spam.",
    ]
    if filters.agent_id is not None:
        notes.append("Delivery is the clinic's: the agent filter does not apply.")
    return Report(
        "delivery",
        "Delivery",
        filters,
        _figures(now, *opt_outs(journeys)),
        previous=_figures(before, *opt_outs(journeys_before)),
        labels=dict(LABELS),
        kinds=dict(KINDS),
        tables=[providers, errors, opt_out_table],
        series=[chart],
        notes=notes,
        as_of=as_of,
    )
