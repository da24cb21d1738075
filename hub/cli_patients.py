"""`hub patient export|erase` and `hub retention show|set`: a patient's right of access and
erasure, and how long the clinic keeps messages, attachments and recordings.

Part of the composition root like hub/cli.py: it reaches worker/ (lazily) to ask Twilio to
delete an erased patient's recordings right away instead of at the worker's next sweep.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from typing import TYPE_CHECKING, Any

import click

from hub.cli_users import _actor, _settings, _with_db
from hub.errors import HubError

if TYPE_CHECKING:
    from hub.config import Settings
    from hub.db import Database


def _patient_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise HubError(
            f"{value!r} is not a patient id (a UUID, as the API and exports show)"
        ) from None


@click.group()
def patient() -> None:
    """A patient's records: export them, erase them."""


@patient.command("export")
@click.argument("patient_id")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the bundle to this file (created readable by you only) instead of stdout.",
)
def patient_export(patient_id: str, out: str | None) -> None:
    """Every record of one patient, decrypted, as a FHIR R4 Bundle (JSON). Audited."""
    from hub.rights.actions.export import do_export_patient

    pid = _patient_id(patient_id)
    settings = _settings()

    async def work(db: Database) -> dict[str, Any]:
        return await do_export_patient(
            db,
            settings.key_ring(),
            _actor("cli:patient-export"),
            pid,
            organization=settings.clinic_name,
            public_url=settings.public_url,
        )

    bundle = _with_db(settings, work)
    text = json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    # The file holds PHI in clear: never readable by other users, even for a moment.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    click.echo(f"wrote {len(bundle.get('entry', []))} resources to {out}", err=True)


@patient.command("erase")
@click.argument("patient_id")
@click.option(
    "--force",
    is_flag=True,
    help="Erase even while staff have not resolved one of the patient's conversations.",
)
def patient_erase(patient_id: str, force: bool) -> None:
    """Delete every record of one patient (messages, notes, attachments, consents,
    appointments, journeys) and their recordings at Twilio. Cannot be undone. Opt-outs are
    kept as blind-indexed suppressions; an audit tombstone records who erased whom."""
    from hub.rights.actions.erase import Erasure, do_erase_patient

    pid = _patient_id(patient_id)
    settings = _settings()

    async def work(db: Database) -> tuple[Erasure, dict[str, int]]:
        done = await do_erase_patient(db, _actor("cli:patient-erase"), pid, force=force)
        deleted = await _delete_now(settings, db) if done.recordings else {}
        return done, deleted

    done, deleted = _with_db(settings, work)
    counted = ", ".join(f"{k}: {v}" for k, v in done.counts.items() if v)
    click.echo(f"patient {pid} erased ({counted or 'no records besides the patient'})")
    if done.suppressions:
        click.echo(f"kept {done.suppressions} opt-out(s) as suppressions of the address")
    if done.recordings:
        click.echo(
            f"recordings at Twilio: {deleted.get('deleted', 0)} deleted now, "
            f"{deleted.get('failed', 0)} left for `hub worker` to retry"
        )


async def _delete_now(settings: Settings, db: Database) -> dict[str, int]:
    from worker.rights import sweep_deletions

    return dict(await sweep_deletions(settings, db))


@click.group()
def retention() -> None:
    """How long messages, attachments and voicemail recordings are kept."""


@retention.command("show")
def retention_show() -> None:
    """Print the retention setting."""
    from hub.rights.actions.retention import do_get_retention

    policy = _with_db(_settings(), do_get_retention)
    click.echo(policy.describe())


def _days(value: str | None) -> int | str | None:
    if value is None:
        return "unchanged"
    if value.strip().lower() in ("off", "keep", "0"):
        return None
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number of days or 'off'") from None


@retention.command("set")
@click.option("--messages-days", metavar="DAYS|off", help="Messages of resolved conversations.")
@click.option("--attachments-days", metavar="DAYS|off", help="Attachments (not recordings).")
@click.option("--recordings-days", metavar="DAYS|off", help="Voicemail recordings (and at Twilio).")
def retention_set(
    messages_days: str | None, attachments_days: str | None, recordings_days: str | None
) -> None:
    """Change how long things are kept; 'off' keeps them for good. The nightly purge (run by
    `hub worker`) deletes what is older. Audited."""
    from hub.rights.actions.retention import do_get_retention, do_set_retention
    from hub.rights.retention import RetentionPolicy

    settings = _settings()
    current = _with_db(settings, do_get_retention).to_data()
    for kind, raw in (
        ("messages", messages_days),
        ("attachments", attachments_days),
        ("recordings", recordings_days),
    ):
        value = _days(raw)
        if value != "unchanged":
            current[f"{kind}_days"] = value  # type: ignore[assignment]
    policy = RetentionPolicy.from_data(current)

    async def work(db: Database) -> None:
        await do_set_retention(db, _actor("cli:retention-set"), policy)

    _with_db(settings, work)
    click.echo(policy.describe())


def add_commands(main: click.Group) -> None:
    main.add_command(patient)
    main.add_command(retention)
