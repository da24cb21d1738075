"""`hub journey list|show|validate`: what a coordinator reads and checks from the command line
(`hub journey launch` stays in hub/cli.py). The builder in the staff UI saves the same YAML,
checked by the same parser, so a file that validates here imports there unchanged.

Part of the composition root like hub/cli.py and hub/cli_users.py."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hub.cli_users import _settings, _with_db
from hub.errors import HubError

if TYPE_CHECKING:
    from hub.db import Database
    from hub.journeys.models import Journey
    from hub.journeys.versions import VersionRow


@click.command("list")
def journey_list() -> None:
    """Every journey: key, status, current version, running enrollments."""
    from hub.journeys.versions import do_summaries

    rows = _with_db(_settings(), do_summaries)
    if not rows:
        click.echo("No journey yet: build one at /journeys/new, or `hub journey launch KEY`.")
        return
    click.echo(f"{'KEY':<28} {'STATUS':<8} {'VERSION':>7} {'RUNNING':>8}  NAME")
    for r in rows:
        older = f" ({r.on_older} on older versions)" if r.on_older else ""
        click.echo(f"{r.key:<28} {r.status:<8} {r.version:>7} {r.active:>8}  {r.name}{older}")


@click.command("show")
@click.argument("key")
@click.option("--version", "version", type=int, help="An earlier version (default: the current).")
def journey_show(key: str, version: int | None) -> None:
    """Print journey KEY's definition (YAML), after a comment line with its version and status."""
    from hub.inbox.exceptions import NotFound
    from hub.journeys.versions import do_version_text, do_versions

    settings = _settings()

    async def read(db: Database) -> tuple[Journey, list[VersionRow], str]:
        journey, rows, text = await do_versions(db, key)
        if version is not None and version != journey.version:
            text = await do_version_text(db, key, version)
        return journey, rows, text

    try:
        journey, rows, text = _with_db(settings, read)
    except NotFound as exc:
        raise click.ClickException(f"{exc}; `hub journey list` shows the keys") from None
    running = ", ".join(f"v{r.version}: {r.active}" for r in rows if r.active) or "none"
    shown = version or journey.version
    click.echo(
        f"# {journey.key} version {shown} of {journey.version}, {journey.status.value}; "
        f"running enrollments by version: {running}"
    )
    click.echo(text, nl=not text.endswith("\n"))


def _known_templates() -> tuple[list[str], str]:
    """The template keys a step may name: the shipped ones and, when the database is reachable
    and migrated, the clinic's own (said on stderr, so a missed database is noticed)."""
    from hub.cli import _check_database, load_settings
    from hub.journeys.versions import do_template_keys
    from hub.templates.actions import load_seed

    shipped = [s["key"] for s in load_seed()]
    try:
        settings = load_settings()
        asyncio.run(_check_database(settings, require_migrated=True))
    except HubError:
        return shipped, "the shipped templates only (no migrated database reached)"
    return sorted({*shipped, *_with_db(settings, do_template_keys)}), "the hub's templates"


@click.command("validate")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def journey_validate(file: Path) -> None:
    """Check a journey file with the rules the builder and `launch` use; exit 1 naming the line
    and field of the problem."""
    from hub.journeys.definitions import JourneyInvalid
    from hub.journeys.parse import parse_journey

    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        click.echo(f"{file.name}: not a UTF-8 text file; save the journey as YAML", err=True)
        sys.exit(1)
    templates, against = _known_templates()
    try:
        definition = parse_journey(text, file.name, templates=templates)
    except JourneyInvalid as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    steps = ", ".join(s.id for s in definition.steps)
    click.echo(
        f"{file.name}: journey {definition.key} is valid ({len(definition.steps)} steps: {steps})."
    )
    click.echo(f"Templates checked against {against}.", err=True)


def add_commands(journey: click.Group) -> None:
    journey.add_command(journey_list)
    journey.add_command(journey_show)
    journey.add_command(journey_validate)
