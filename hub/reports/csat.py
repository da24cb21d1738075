"""The ``csat`` report: satisfaction after resolution (``hub.journeys.csat``).

Every figure is about the surveys of resolutions made in the period (the day a person resolved
the conversation, in the clinic's zone): surveys sent (the question left the hub), responses (a
score 1-5), response rate, CSAT (the share of 4 and 5 among responses), mean score and the
distribution; per team and per person who resolved. Agents see their own figures. The comments
(the words after a score) are PHI: only coordinators (their teams') and admins get the table,
and each read is audited.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hub.audit import record
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Role
from hub.inbox.access import StaffContext
from hub.reports import csat_queries as q
from hub.reports.base import Column, Report, ReportFilters, Series, Table, for_viewer
from hub.reports.tuning import tune_for_reports

TITLE = "Satisfaction"
SCORES = (1, 2, 3, 4, 5)
SATISFIED = frozenset({4, 5})
"""Scores counted as satisfied (the CSAT figure is their share of the responses)."""
DEFAULT_MAX_COMMENTS = 200
"""Newest comments shown (and decrypted, and audited) per read."""
LABELS = {
    "csat": "CSAT (share of 4 and 5)",
    "mean_score": "Mean score (1-5)",
    "responses": "Responses",
    "sent": "Surveys sent",
    "response_rate": "Response rate",
    "surveys": "Resolutions surveyed",
}


@dataclass
class _Tally:
    surveys: int = 0
    sent: int = 0
    scores: Counter[int] = field(default_factory=Counter)

    def add(self, out: bool, score: int | None, n: int) -> None:
        self.surveys += n
        # An answer proves the question went out, whatever its message's last status says.
        if out or score is not None:
            self.sent += n
        if score is not None:
            self.scores[score] += n

    def figures(self) -> dict[str, Any]:
        responses = sum(self.scores.values())
        total = sum(s * n for s, n in self.scores.items())
        happy = sum(n for s, n in self.scores.items() if s in SATISFIED)
        return {
            "csat": happy / responses if responses else None,
            "mean_score": total / responses if responses else None,
            "responses": responses,
            "sent": self.sent,
            "response_rate": responses / self.sent if self.sent else None,
            "surveys": self.surveys,
        }


def _scope(filters: ReportFilters) -> q.Scope:
    low, high = filters.bounds()
    days = (filters.start, filters.end)
    return q.Scope(low, high, filters.team_id, filters.channel, filters.agent_id, days)


async def _counts(session: Any, filters: ReportFilters) -> tuple[list[q.Counted], list[q.Counted]]:
    """The counts of the period and of the previous one, from the rollup when it counted days
    in the period's zone and is not being recounted whole; else from the surveys (the
    clinic's zone changed and the tick has not recounted yet, or it was never built)."""
    periods = (_scope(filters), _scope(filters.previous()))
    if await q.rollup_zone(session) == filters.time_zone:
        queued = await q.queued_surveys(session, q.MAX_QUEUED_READ)
        if queued is not None:
            return (
                await q.rollup_counts(session, periods[0], queued),
                await q.rollup_counts(session, periods[1], queued),
            )
    return await q.survey_counts(session, periods[0]), await q.survey_counts(session, periods[1])


async def build(
    db: Database,
    filters: ReportFilters,
    ctx: StaffContext,
    *,
    ring: KeyRing | None = None,
    max_comments: int = DEFAULT_MAX_COMMENTS,
) -> Report:
    """The report. ``ring`` opens the comments: the web passes it (``registry.NEEDS_RING``);
    without it the table is left out and a note says so."""
    filters = for_viewer(filters, ctx)
    async with db.transaction() as session:
        await tune_for_reports(session)
        await q.plan_each_read(session)
        rows, before = await _counts(session, filters)
        whole = _Tally()
        by_team: dict[uuid.UUID | None, _Tally] = {}
        by_agent: dict[uuid.UUID | None, _Tally] = {}
        for team, agent, out, score, n in rows:
            whole.add(out, score, n)
            by_team.setdefault(team, _Tally()).add(out, score, n)
            by_agent.setdefault(agent, _Tally()).add(out, score, n)
        previous = _Tally()
        for _team, _agent, out, score, n in before:
            previous.add(out, score, n)
        team_names, staff_names = await q.names(
            session, {t for t in by_team if t}, {a for a in by_agent if a}
        )
        tables = [
            _group_table("by_team", "By team", "Team", by_team, team_names, "(no team)"),
            _group_table(
                "by_agent",
                "By person who resolved",
                "Resolved by",
                by_agent,
                staff_names,
                "(no longer on staff)",
            ),
        ]
        notes = [
            "Counted by the day a person resolved the conversation, in the clinic's time zone. "
            "A survey is sent once its question has left the hub; one held by quiet hours, "
            "refused by the patient's consent or called off because the conversation reopened "
            "is not.",
            "CSAT is the share of responses scoring 4 or 5; the first answer to a question "
            "counts, a later one is an ordinary message.",
        ]
        if filters.journey_key is not None:
            notes.append("The journey filter does not apply to satisfaction surveys.")
        if ctx.role is Role.AGENT:
            notes.append("Your own resolutions only.")
        elif ring is None:
            notes.append("Comments are not shown: this view was built without the key ring.")
        else:
            tables.append(await _comments(session, ring, filters, ctx, max_comments))
    return Report(
        name="csat",
        title=TITLE,
        filters=filters,
        figures=whole.figures(),
        previous=previous.figures(),
        labels=dict(LABELS),
        tables=tables,
        series=[
            Series(
                name="distribution",
                title="Scores",
                kind="buckets",
                labels=[str(s) for s in SCORES],
                values=[whole.scores.get(s, 0) for s in SCORES],
            )
        ],
        notes=notes,
    )


def _group_table(
    name: str,
    title: str,
    label: str,
    tallies: dict[uuid.UUID | None, _Tally],
    names: dict[uuid.UUID, str],
    unnamed: str,
) -> Table:
    columns = [
        Column("id", "Id"),
        Column("name", label),
        Column("sent", LABELS["sent"], "count"),
        Column("responses", LABELS["responses"], "count"),
        Column("response_rate", LABELS["response_rate"], "rate"),
        Column("csat", LABELS["csat"], "rate"),
        Column("mean_score", LABELS["mean_score"], "score"),
    ]
    rows = []
    for key, tally in tallies.items():
        f = tally.figures()
        rows.append(
            [
                key,
                names.get(key, unnamed) if key else unnamed,
                f["sent"],
                f["responses"],
                f["response_rate"],
                f["csat"],
                f["mean_score"],
            ]
        )
    rows.sort(key=lambda r: (-r[2], str(r[1])))
    return Table(name, title, columns, rows)


async def _comments(
    session: Any, ring: KeyRing, filters: ReportFilters, ctx: StaffContext, limit: int
) -> Table:
    """The comments table; reading it is a read of PHI, recorded with the conversations."""
    teams = None if ctx.is_admin else ctx.team_ids
    found = await q.comments(session, _scope(filters), teams, limit)
    rows = [
        [answer.created_at, answer.score, answer.unseal(ring, "text"), conversation_id]
        for answer, conversation_id in found
    ]
    await record(
        session,
        ctx.actor,
        "report.csat.comments.read",
        "report",
        "csat",
        {
            "start": filters.start.isoformat(),
            "end": filters.end.isoformat(),
            "comments": len(rows),
            "conversations": sorted({str(r[3]) for r in rows}),
        },
    )
    return Table(
        "comments",
        "Comments",
        [
            Column("answered_at", "Answered", "datetime"),
            Column("score", "Score", "score"),
            Column("comment", "Comment"),
            Column("conversation_id", "Conversation"),
        ],
        rows,
    )
