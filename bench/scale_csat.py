"""CSAT after resolution in the journeys dataset (bench/scale_journeys.py): the teams that ask
switched on through the hub's own action (which installs the csat journey), and for a share of
their resolutions by a person what the journey leaves: the enrollment, its one run, the
question, the survey row and the patient's answer."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from bench.common import user_url
from bench.scale_data import uuid7_at
from bench.scale_journeys_play import Rows, World, _message

CSAT_TEAMS = ("Front desk", "Scheduling")
"""Teams that ask CSAT after a resolution (switched on by the hub's own action)."""
CSAT_DAYS = 365
CSAT_SHARE = 0.6
"""Of those teams' resolutions in the last CSAT_DAYS, the share surveyed (others: voice,
no one resolving, reopened within the delay)."""


async def csat_on(url: str) -> list[tuple[Any, ...]]:
    """Switch CSAT on for CSAT_TEAMS through the hub's action (which installs its journey);
    the resolutions it would have surveyed: (conversation, patient, team, resolver, channel,
    resolved at)."""
    import asyncpg

    from hub.audit import Actor
    from hub.db import Database
    from hub.journeys.csat import CsatChoice, do_set_team_csat

    conn = await asyncpg.connect(user_url(url))
    db = Database.connect(url)
    try:
        teams = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM inbox_team WHERE name = ANY($1)", list(CSAT_TEAMS)
            )
        ]
        for team in teams:
            await do_set_team_csat(db, Actor.system("bench:reports"), team, CsatChoice(True, 60))
        return [
            tuple(r)
            for r in await conn.fetch(
                "SELECT id, patient_id, team_id, assignee_id, channel, resolved_at "
                "FROM inbox_conversation WHERE team_id = ANY($1) AND status = 'resolved' "
                "AND assignee_id IS NOT NULL AND channel IN ('sms', 'email', 'chat') "
                "AND resolved_at > now() - make_interval(days => $2) ORDER BY id",
                teams,
                CSAT_DAYS,
            )
        ]
    finally:
        await conn.close()
        await db.dispose()


def csat_rows(world: World, resolved: list[tuple[Any, ...]], rnd: random.Random) -> Rows:
    """What the csat journey leaves per surveyed resolution: its enrollment, its one run
    (sent an hour later, or refused for want of a survey opt-in), the survey row, and the
    patient's answer (a score 1-5, sometimes with words) when there is one."""
    rows = Rows()
    journey_id = world.journeys["csat"][0]
    for cid, patient, team, agent, channel, resolved_at in resolved:
        if rnd.random() > CSAT_SHARE:
            continue
        at_s = resolved_at.timestamp()
        eid = uuid7_at(at_s, rnd)
        due_s = at_s + 3600
        run = rows.add(
            "journey_step_run",
            id=uuid7_at(at_s, rnd),
            enrollment_id=eid,
            step_id=channel,
            attempt=1,
            due_at=_utc(due_s),
            status="planned",
            updated_at=resolved_at,
        )
        world.runs += 1
        if due_s < world.now_s:
            send_s = due_s + rnd.uniform(1, 60)
            refused = rnd.random() < 0.25
            mid = _message(
                world,
                rows,
                rnd,
                patient,
                channel,
                send_s,
                inbound=False,
                body=None if refused else "How did we do? Reply 1-5.",
                purpose="surveys",
                status="failed" if refused else None,
                conversation_id=cid,
            )
            run.update(
                status="failed" if refused else "sent",
                message_id=mid,
                channel=None if refused else channel,
                updated_at=_utc(send_s),
            )
            if not refused and rnd.random() < 0.35 and send_s + 600 < world.now_s:
                score = rnd.choices((1, 2, 3, 4, 5), (4, 4, 10, 30, 52))[0]
                words = rnd.choice(("", "", "", " quick and kind", " took a while"))
                answer_s = send_s + min(world.now_s - send_s - 60, rnd.uniform(60, 6 * 3600))
                reply = _message(
                    world,
                    rows,
                    rnd,
                    patient,
                    channel,
                    answer_s,
                    inbound=True,
                    body=f"{score}{words}",
                    purpose="care",
                    conversation_id=cid,
                )
                aid = uuid7_at(answer_s, rnd)
                rows.add(
                    "journey_survey_answer",
                    id=aid,
                    enrollment_id=eid,
                    step_id=channel,
                    score=score,
                    message_id=reply,
                    created_at=_utc(answer_s),
                    text_enc=world.seal("journey_survey_answer", "text_enc", aid, words.strip())
                    if words
                    else None,
                )
        rows.add(
            "journey_enrollment",
            id=eid,
            journey_id=journey_id,
            patient_id=patient,
            appointment_id=None,
            dedupe_key=f"conversation:{cid}:{resolved_at.isoformat()}",
            anchor_at=resolved_at,
            status="active" if run["status"] == "planned" else "completed",
            version=None,
            created_at=resolved_at,
        )
        rows.add(
            "csat_survey",
            id=uuid7_at(at_s, rnd),
            conversation_id=cid,
            enrollment_id=eid,
            team_id=team,
            agent_id=agent,
            channel=channel,
            resolved_at=resolved_at,
            created_at=resolved_at,
        )
    return rows


def _utc(at_s: float) -> datetime:
    return datetime.fromtimestamp(at_s, UTC)
