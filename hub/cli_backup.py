"""`hub backup [--to DIR]` and `hub backup restore BACKUP [--to DIR] [--force]`: the embedded
mode's backups (hub/backup.py does the work; docs/operations.md says when and where).

Part of the composition root like hub/cli.py: it reads the settings and prints for people.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from hub.backup import BACKUP_PREFIX, BackupError, restore_backup, sqlite_file, take_backup
from hub.config import DEV_KEYS_FILE, Settings
from hub.crypto import KeyRing, KeyRingError


def _ring_for_restore(settings: Settings, var_dir: Path) -> KeyRing:
    """HUB_KEYS, or a development ring already put back into the target from escrow. Never a
    new one, as ``Settings.key_ring`` would make: data cannot be read with a fresh ring."""
    if settings.keys is not None:
        return settings.keys
    path = var_dir / DEV_KEYS_FILE
    if not path.is_file():
        raise BackupError(
            f"HUB_KEYS is unset and {path} does not exist: set HUB_KEYS to the ring kept in "
            f"escrow for this backup (or copy the escrowed {DEV_KEYS_FILE} there)"
        )
    try:
        return KeyRing.parse(path.read_text())
    except KeyRingError as exc:
        raise BackupError(f"{path} is not a key ring ({exc})") from None


def add_commands(main: click.Group) -> None:
    @main.group(invoke_without_command=True)
    @click.option(
        "--to",
        "to",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"Directory to write {BACKUP_PREFIX}<time>/ into (default: HUB_VAR_DIR/backups).",
    )
    @click.pass_context
    def backup(ctx: click.Context, to: Path | None) -> None:
        """Copy the embedded mode's database and Redis while the hub runs, with a manifest.

        The key ring is never copied: it is escrowed separately, and the backup is unreadable
        without it. On PostgreSQL use pg_dump or pg_basebackup (docs/operations.md)."""
        if ctx.invoked_subcommand is not None:
            return
        from hub.cli import load_settings

        settings = load_settings()
        parent = to if to is not None else settings.var_dir / "backups"
        path, manifest = take_backup(
            settings.database_url,
            settings.redis_url,
            settings.var_dir,
            parent,
            datetime.now(UTC),
        )
        total = sum(f["bytes"] for f in manifest.files.values())
        click.echo(f"backup written to {path} ({len(manifest.files)} files, {total:,} bytes)")
        click.echo(f"schema revision {manifest.schema_revision}; Redis: {manifest.redis}")
        needed = ", ".join(f"{k} ({n} values)" for k, n in manifest.keys_needed.items())
        click.echo(
            "The key ring is NOT in the backup. Restoring it needs HUB_KEYS with the 'index' "
            f"key and {needed or 'no encryption key yet'}: check that your escrowed copy holds "
            "them.",
            err=True,
        )
        if settings.keys is None and (settings.var_dir / DEV_KEYS_FILE).is_file():
            click.echo(
                f"HUB_KEYS is unset: this hub uses the development ring in "
                f"{settings.var_dir / DEV_KEYS_FILE}; keep a copy of it apart from the backup.",
                err=True,
            )

    @backup.command("restore")
    @click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.option(
        "--to",
        "to",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Data directory to restore into (default: HUB_VAR_DIR).",
    )
    @click.option(
        "--force",
        is_flag=True,
        help="Restore into a directory that holds hub data, moving that data aside first.",
    )
    def restore(source: Path, to: Path | None, force: bool) -> None:
        """Check a backup (checksums, key ids, every value decrypted) and put it in place.

        Stop the hub first. Start it again with the same HUB_KEYS and HUB_VAR_DIR."""
        from hub.cli import load_settings

        settings = load_settings()
        var_dir = to if to is not None else settings.var_dir
        if to is None and sqlite_file(settings.database_url) != var_dir / "hub.db":
            raise BackupError(
                f"HUB_DATABASE_URL names {sqlite_file(settings.database_url)}, not a hub.db in "
                f"{var_dir}: restore with --to DIR and point HUB_DATABASE_URL at DIR/hub.db"
            )
        ring = _ring_for_restore(settings, var_dir)
        report = restore_backup(source, var_dir, ring, force=force, now=datetime.now(UTC))
        if report.moved_aside is not None:
            click.echo(f"what {var_dir} held was moved to {report.moved_aside}")
        click.echo(
            f"restored {source.name} into {var_dir}: {report.values_read} encrypted values "
            f"read back with key ring {', '.join(ring.keys)}"
        )
        if report.redis_keys is not None:
            click.echo(f"Redis: {report.redis_keys} keys restored")
        click.echo("next: hub migrate (if this hub is newer than the backup), then start it")
