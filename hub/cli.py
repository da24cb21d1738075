"""The ``hub`` command (names fixed by the interface contract).

Configuration problems end the command with one line on stderr naming the variable, and exit
status 2; other refusals (a duplicate user, a failed audit check) exit 1. Never a traceback for
something the operator can fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import click

from hub.cli_backup import add_commands as add_backup_commands
from hub.cli_journeys import add_commands as add_journey_commands
from hub.cli_patients import add_commands as add_patient_commands
from hub.cli_users import add_commands as add_staff_commands
from hub.config import Settings, redact_url
from hub.errors import ConfigError, HubError

log = logging.getLogger("hub.cli")

EXIT_CONFIG = 2


class HubGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"hub: {exc}", err=True)
            ctx.exit(EXIT_CONFIG)
        except HubError as exc:
            click.echo(f"hub: {exc}", err=True)
            ctx.exit(1)


def load_settings() -> Settings:
    settings = Settings.from_env()
    from hub.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    return settings


def warn_of_gaps(settings: Settings) -> None:
    """Settings that are valid but leave sends to fail later, said once the hub starts."""
    if settings.clinic["phone"] is None:
        # Every shipped reminder prints the number to call; without one, each would fail to
        # render at send time, seen only in the journeys page's banner.
        log.warning(
            "neither HUB_CLINIC_PHONE nor TWILIO_FROM_NUMBER is set: templates that print "
            "{{ clinic.phone }} (every shipped reminder) will fail to render; set HUB_CLINIC_PHONE"
        )


@contextlib.contextmanager
def redis_for(settings: Settings) -> Iterator[Settings]:
    """Settings with a reachable Redis: the configured one, or the embedded one (stopped after)."""
    from hub.embedded_redis import EmbeddedRedis, check_redis

    if settings.redis_url is not None:
        check_redis(settings.redis_url)
        yield settings
        return
    embedded = EmbeddedRedis(settings.var_dir)
    url = embedded.start()
    try:
        yield replace(settings, redis_url=url)
    finally:
        embedded.stop()


async def _check_database(settings: Settings, *, require_migrated: bool) -> None:
    from hub.db import create_engine
    from hub.migrations import current_revision, head_revision

    engine = create_engine(settings.database_url)
    try:
        try:
            current = await current_revision(engine)
        except Exception as exc:  # driver errors differ; the operator needs one line
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(
                "HUB_DATABASE_URL",
                f"cannot connect to {redact_url(settings.database_url)} ({reason[:200]})",
                "a reachable database the hub may write to",
            ) from None
        if require_migrated and current != head_revision():
            raise ConfigError(
                "HUB_DATABASE_URL",
                f"schema is at revision {current or 'none'}, code needs {head_revision()}",
                "a migrated database: run `hub migrate` first",
            )
    finally:
        await engine.dispose()


@click.group(cls=HubGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="patient-hub")
def main() -> None:
    """Hub: omnichannel patient communication for clinics."""


@main.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    settings = load_settings()
    asyncio.run(_migrate(settings))
    click.echo("database is at the latest schema")


async def _migrate(settings: Settings) -> None:
    from hub.migrations import upgrade_url

    await _check_database(settings, require_migrated=False)
    # The ring seals what older schemas kept in clear (tags, appointment places, Message-IDs).
    await upgrade_url(settings.database_url, ring=settings.key_ring())
    from hub.db import Database
    from hub.templates.actions import do_seed_templates

    db = Database.connect(settings.database_url)
    try:
        await do_seed_templates(db)  # adds shipped templates a clinic does not have yet
    finally:
        await db.dispose()


async def _settle_heap(_app: Any) -> None:
    """Everything loaded at start (modules, mappers, templates, settings) lives as long as the
    process. Frozen, Python's cycle collector stops walking it; and full collections, which
    still walk what came later, run a hundred times less often. Each was a pause of up to
    100 ms in whichever request was running: list pages at p50 16 ms had a p95 of 156 ms, and
    with the collector off no pause at all (bench/workspace.py). Requests leave few cycles
    behind (refcounting frees the rest); gen 0 and 1 still collect as usual."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 10, 1000)  # Python's defaults are (700, 10, 10)


def _serve(settings: Settings) -> None:
    from aiohttp import web

    from web.app import create_app

    settings.key_ring()
    click.echo(
        f"hub serving on http://{settings.host}:{settings.port} (public URL {settings.public_url})",
        err=True,
    )
    app = create_app(settings)
    app.on_startup.append(_settle_heap)  # last: after everything the start-up loads
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        handle_signals=True,
        shutdown_timeout=10,
    )


@main.command()
def serve() -> None:
    """Run the web app: staff UI, API, webhooks, socket.io."""
    settings = load_settings()
    asyncio.run(_check_database(settings, require_migrated=True))
    with redis_for(settings) as ready:
        warn_of_gaps(ready)
        _serve(ready)


@main.command()
@click.option("--burst", is_flag=True, help="Work until the queues are empty, then exit.")
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes to run (each sends one job at a time).",
)
def worker(burst: bool, processes: int) -> None:
    """Run RQ workers (sends, retries, journey dispatch) and the scheduler tick. SIGTERM lets
    running jobs finish first."""
    settings = load_settings()
    asyncio.run(_check_database(settings, require_migrated=True))
    from worker.main import run_worker

    with redis_for(settings) as ready:
        warn_of_gaps(ready)
        run_worker(ready, processes=processes, burst=burst)


@main.command()
def demo() -> None:
    """Migrate, load synthetic demo data, and run the web app and a worker together."""
    settings = load_settings()
    asyncio.run(_migrate(settings))
    ring = settings.key_ring()
    settings = settings.with_keys(ring)

    from hub.db import Database
    from hub.demo import DEMO_PASSWORDS_FILE, load_demo_data

    async def load() -> Any:
        db = Database.connect(settings.database_url)
        try:
            return await load_demo_data(
                db, ring, settings.default_region, settings.var_dir / DEMO_PASSWORDS_FILE
            )
        finally:
            await db.dispose()

    summary = asyncio.run(load())
    from web.demo import run_demo

    with redis_for(settings) as ready:
        run_demo(ready, ring, summary)


@main.group()
def user() -> None:
    """Staff accounts."""


@user.command("add")
@click.argument("email")
@click.option("--name", "display_name", required=True, help="Name shown to colleagues.")
@click.option(
    "--role",
    type=click.Choice(["agent", "coordinator", "admin"]),
    default="agent",
    show_default=True,
)
@click.option("--team", "teams", multiple=True, help="Team to join (repeatable; must exist).")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from stdin instead of generating a one-time one.",
)
def user_add(
    email: str, display_name: str, role: str, teams: tuple[str, ...], password_stdin: bool
) -> None:
    """Add a staff user. Without --password-stdin a one-time password is printed once."""
    from hub.audit import Actor
    from hub.db import Database
    from hub.enums import Role
    from hub.inbox.actions import do_add_staff_user
    from hub.inbox.passwords import one_time_password
    from hub.inbox.schemas import NewStaffUser

    settings = load_settings()
    asyncio.run(_check_database(settings, require_migrated=True))
    password = sys.stdin.readline().rstrip("\n") if password_stdin else one_time_password()

    async def run() -> None:
        db = Database.connect(settings.database_url)
        try:
            await do_add_staff_user(
                db,
                Actor.system("cli:user-add"),
                NewStaffUser(
                    email,
                    display_name,
                    password,
                    Role(role),
                    list(teams),
                    must_change_password=not password_stdin,
                ),
            )
        finally:
            await db.dispose()

    asyncio.run(run())
    click.echo(f"added {role} {email.strip().lower()}")
    if not password_stdin:
        click.echo(f"one-time password: {password}  (must be changed at first sign-in)")


@main.group()
def keys() -> None:
    """Encryption key ring."""


@keys.command("new")
@click.option("--id", "key_id", default=None, help="Key id (default: k<YYYYMMDD>).")
def keys_new(key_id: str | None) -> None:
    """Print a new key entry to put first in HUB_KEYS (or a whole new ring if none is set)."""
    from datetime import UTC, datetime

    from hub.crypto import KeyRing, new_key_entry

    settings = Settings.from_env()
    key_id = key_id or f"k{datetime.now(UTC):%Y%m%d}"
    if settings.keys is None:
        click.echo(KeyRing.generate(key_id).to_spec())
        return
    entry = new_key_entry(key_id)
    spec = settings.keys.to_spec().split(",", 1)
    click.echo(f"{spec[0]},{entry},{spec[1]}")


@keys.command("rotate")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 50_000))
def keys_rotate(batch_size: int) -> None:
    """Re-encrypt every encrypted column under the active (first) key, online and resumable."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hub.db import Database
    from hub.rotation import rotate

    settings = load_settings()
    asyncio.run(_check_database(settings, require_migrated=True))
    ring = settings.key_ring()

    async def run() -> Any:
        db = Database.connect(settings.database_url)
        tasks: dict[str, Any] = {}
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
        ) as progress:

            def on_progress(label: str, done: int, total: int) -> None:
                if label not in tasks:
                    tasks[label] = progress.add_task(label, total=total)
                progress.update(tasks[label], completed=done, total=total)

            try:
                return await rotate(db, ring, batch_size=batch_size, on_progress=on_progress)
            finally:
                await db.dispose()

    report = asyncio.run(run())
    click.echo(
        f"re-encrypted {report.rewritten} values under key {report.target_key_id}; "
        f"{report.already_current} were already under it; "
        f"{report.changed_meanwhile} changed meanwhile (rewritten by the hub)"
    )
    if report.resumed_columns:
        click.echo(f"resumed an interrupted run in: {', '.join(report.resumed_columns)}")
    counts = ", ".join(f"{k}: {n}" for k, n in sorted(report.remaining.items())) or "none"
    click.echo(f"ciphertexts per key now: {counts}")
    retired = [k for k in ring.keys if k != ring.active_id and not report.remaining.get(k)]
    if retired:
        click.echo(f"no data remains under {', '.join(retired)}: it can be removed from HUB_KEYS")
    if report.stale_keys:
        raise HubError(
            f"values remain under {', '.join(sorted(report.stale_keys))}: a process may still run "
            "with the old ring; restart every process with the new HUB_KEYS and rotate again"
        )


@keys.command("status")
def keys_status() -> None:
    """Count ciphertexts per key id (a full scan)."""
    from hub.db import Database
    from hub.rotation import key_usage

    settings = load_settings()
    asyncio.run(_check_database(settings, require_migrated=True))
    ring = settings.key_ring()

    async def run() -> Any:
        db = Database.connect(settings.database_url)
        try:
            return await key_usage(db)
        finally:
            await db.dispose()

    usage = asyncio.run(run())
    click.echo(f"active key: {ring.active_id}")
    for kid in sorted(set(usage) | set(ring.keys)):
        where = "in ring" if kid in ring.keys else "NOT IN RING"
        click.echo(f"  {kid}: {usage.get(kid, 0)} ciphertexts ({where})")


@main.group()
def audit() -> None:
    """The hash-chained audit log."""


def _parse_anchor(value: str | None) -> Any:
    from hub.audit import Anchor

    if value is None:
        return None
    try:
        return Anchor.parse(value)
    except HubError as exc:
        raise click.BadParameter(str(exc)) from None


@audit.command("verify")
@click.option(
    "--anchor",
    metavar="SEQ:HASH",
    callback=lambda _ctx, _param, value: _parse_anchor(value),
    help="An earlier `hub audit anchor` line: also fail unless the chain still reaches it.",
)
def audit_verify(anchor: Any) -> None:
    """Walk the audit chain; name the first row that was altered, removed or reordered."""
    from hub.audit import verify
    from hub.db import Database

    settings = load_settings()
    asyncio.run(_check_database(settings, require_migrated=True))

    async def run() -> Any:
        db = Database.connect(settings.database_url)
        try:
            async with db.reader() as session:
                return await verify(session, anchor)
        finally:
            await db.dispose()

    result = asyncio.run(run())
    if not result.ok:
        raise HubError(
            f"audit chain broken at row {result.bad_seq}: {result.reason} "
            f"({result.checked} rows before it verified)"
        )
    reaches = f", reaching anchor row {anchor.seq}" if anchor is not None else ""
    click.echo(f"audit chain intact: {result.checked} rows verified{reaches}")


@audit.command("anchor")
def audit_anchor() -> None:
    """Verify the chain and print its head as SEQ:HASH, for a log kept off this machine."""
    from hub.audit import anchor
    from hub.db import Database

    settings = load_settings()
    asyncio.run(_check_database(settings, require_migrated=True))

    async def run() -> Any:
        db = Database.connect(settings.database_url)
        try:
            async with db.reader() as session:
                return await anchor(session)
        finally:
            await db.dispose()

    click.echo(str(asyncio.run(run())))


@main.group()
def token() -> None:
    """API bearer tokens."""


@token.command("create")
@click.argument("email")
@click.option("--name", required=True, help="What the token is for (shown to admins).")
@click.option(
    "--days",
    type=click.IntRange(1, 3650),
    default=90,
    show_default=True,
    help="Expire after this many days.",
)
def token_create(email: str, name: str, days: int) -> None:
    """Create a token that acts with EMAIL's rights; printed once, stored only as a hash."""
    from hub.audit import Actor
    from hub.db import Database
    from hub.inbox.actions.staff import do_create_token

    settings = load_settings()
    asyncio.run(_check_database(settings, require_migrated=True))

    async def run() -> str:
        db = Database.connect(settings.database_url)
        try:
            return await do_create_token(
                db, Actor.system("cli:token-create"), email, name, days=days
            )
        finally:
            await db.dispose()

    value = asyncio.run(run())
    click.echo(value)
    click.echo("Send it as 'Authorization: Bearer <token>'. It is not shown again.", err=True)


add_staff_commands(user, token)
add_backup_commands(main)
add_patient_commands(main)


@main.group()
def journey() -> None:
    """Journeys (reminders, follow-ups, surveys)."""


add_journey_commands(journey)


@journey.command("launch")
@click.argument("key")
@click.option(
    "--cohort",
    "cohort",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="CSV of patients (phone/email, name, language, country, time_zone, appointment_*).",
)
@click.option(
    "--definition",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Install or update the journey from this YAML file first.",
)
@click.option(
    "--yes",
    "-y",
    "assume_yes",
    is_flag=True,
    help="Enroll without asking after the dry run (scripts, the demo).",
)
@click.option(
    "--map",
    "column_map",
    multiple=True,
    metavar="FIELD=COLUMN",
    help="Read FIELD from the file's COLUMN (e.g. phone='Mobile Phone'); FIELD= drops it.",
)
@click.option(
    "--mapping",
    "mapping_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A saved column mapping (JSON: columns, delimiter, date_order) instead of the suggestion.",
)
@click.option(
    "--date-order",
    type=click.Choice(["month-first", "day-first", "year-first"]),
    default=None,
    help="How the file writes dates (default: the clinic's region's way).",
)
def journey_launch(
    key: str,
    cohort: str,
    definition: str | None,
    assume_yes: bool,
    column_map: tuple[str, ...] = (),
    mapping_file: str | None = None,
    date_order: str | None = None,
) -> None:
    """Enroll a cohort in journey KEY (shipped examples are installed on first use).

    The file's columns are read through a mapping suggested from its header (as the upload
    page suggests it), changed by --map, --mapping and --date-order; it is printed first. A
    dry run comes next: what each step would do for these patients (opt-ins they lack,
    languages without a template variant, no usable channel), with counts, and the rows that
    cannot be read. Nothing is enrolled until you answer yes. With --yes nobody is asked, so
    the file is read once: the same counts and warnings are printed after the enrollment."""
    import gc
    import json
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from hub.audit import Actor
    from hub.channels.registry import connected_providers
    from hub.db import Database
    from hub.journeys import queries as journey_queries
    from hub.journeys.actions import do_install_journey
    from hub.journeys.cohort import count_rows, launch
    from hub.journeys.cohort_dates import DateOrder
    from hub.journeys.mapping import ColumnMapping, mapping_for, read_header
    from hub.journeys.mapping_actions import do_recall_mapping
    from hub.journeys.preview import do_preview_launch, judged_launch

    settings = load_settings()
    asyncio.run(_check_database(settings, require_migrated=True))
    ring = settings.key_ring()
    definition_text = Path(definition).read_text(encoding="utf-8") if definition else None
    actor = Actor.system("cli:journey-launch")

    async def installed(db: Database) -> None:
        if definition is not None and definition_text is not None:
            await do_install_journey(db, actor, definition_text, definition)
        async with db.reader() as session:
            found = await journey_queries.journey_by_key(session, key)
        if found is None:
            from importlib import resources

            shipped = resources.files("hub.journeys").joinpath("examples", f"{key}.yaml")
            if not shipped.is_file():
                raise HubError(f"no journey {key!r}: pass --definition FILE.yaml")
            await do_install_journey(db, actor, shipped.read_text(encoding="utf-8"), f"{key}.yaml")

    async def dry_run() -> Any:
        db = Database.connect(settings.database_url)
        try:
            await installed(db)
            return await do_preview_launch(
                db,
                ring,
                key,
                rows,
                region=settings.default_region,
                available=connected_providers(settings),
                mapping=mapping,
            )
        finally:
            await db.dispose()

    async def run(judge: bool) -> Any:
        """The launch; with ``judge``, the dry run's step counts gathered as it goes."""
        db = Database.connect(settings.database_url)
        try:
            judged, on_committed = None, None
            if judge:
                await installed(db)
                judged, on_committed = await judged_launch(
                    db, key, available=connected_providers(settings)
                )
            with Progress(TextColumn("enrolling"), BarColumn(), MofNCompleteColumn()) as bar:
                task = bar.add_task("enrolling", total=total)
                report = await launch(
                    db,
                    ring,
                    actor,
                    key,
                    rows,
                    region=settings.default_region,
                    on_progress=lambda n: bar.advance(task, n),
                    on_committed=on_committed,
                    mapping=mapping,
                )
            return report, judged
        finally:
            await db.dispose()

    async def recalled(header: list[str], delimiter: str) -> Any:
        db = Database.connect(settings.database_url)
        try:
            return await do_recall_mapping(db, header, delimiter)
        finally:
            await db.dispose()

    # The objects made so far (imports, settings) live until exit: frozen, the cyclic GC stops
    # walking them on every collection the launch's allocations set off (a fifth of its CPU).
    gc.freeze()
    # Streamed, never read whole: a cohort may hold hundreds of thousands of rows.
    with open(cohort, encoding="utf-8-sig", newline="") as rows:
        header, delimiter = read_header(rows)
        rows.seek(0)
        if mapping_file:
            saved = ColumnMapping.from_json(json.loads(Path(mapping_file).read_text("utf-8")))
        else:  # the mapping last confirmed on the upload page for these columns, if any
            saved = asyncio.run(recalled(header, delimiter))
        pairs = [item.partition("=") for item in column_map]
        if any(not sep for _, sep, _ in pairs):
            raise click.BadParameter(
                "use FIELD=COLUMN, e.g. phone='Mobile Phone'", param_hint="--map"
            )
        mapping = mapping_for(
            header,
            region=settings.default_region,
            delimiter=delimiter,
            saved=saved,
            columns={name.strip(): column.strip() for name, _, column in pairs},
            date_order=DateOrder(date_order) if date_order else None,
        )
        source = " (as last confirmed for these columns)" if saved and not mapping_file else ""
        click.echo(f"Columns{source}: " + "; ".join(mapping.describe()))
        total = count_rows(rows, mapping)
        rows.seek(0)
        if not assume_yes:
            preview = asyncio.run(dry_run())
            for line in preview.report_lines():
                click.echo(line)
            for line in preview.error_lines():
                click.echo(line, err=True)
            if preview.nothing_to_do:
                click.echo("Nothing to enroll.")
                raise SystemExit(1 if preview.error_count else 0)
            question = f"Enroll {preview.enroll} patient{'' if preview.enroll == 1 else 's'}?"
            if not click.confirm(question, default=False):
                click.echo("Nothing was enrolled.")
                return
            rows.seek(0)
        report, judged = asyncio.run(run(judge=assume_yes))
        if judged is not None:
            for line in judged.outlook_lines():
                click.echo(line)
    click.echo(
        f"{report.rows} rows: {report.enrolled} enrolled, {report.already} already "
        f"enrolled, {report.patients_created} new patients, {report.error_count} errors"
    )
    for line in report.errors:
        click.echo(f"  {line}", err=True)
    if report.error_count:
        raise SystemExit(1)
