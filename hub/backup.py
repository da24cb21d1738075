"""Backups of the embedded mode (``hub backup``): the SQLite database and the embedded Redis,
copied while the hub runs, with a manifest; and putting one back (``hub backup restore``).

A backup never holds the key ring. The database holds ciphertexts and blind indexes only, so a
backup is readable only with the ring it was written under, which is escrowed elsewhere
(docs/operations.md); the manifest names the key ids the data needs, so a restore can say
which ones are missing before it copies anything.

PostgreSQL is backed up with its own tools (pg_dump, pg_basebackup and WAL archiving): they
are consistent, incremental and well known, and nothing here would improve on them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy.engine import make_url

from hub.crypto import (
    HEADER_MAX_BYTES,
    BlindIndexKind,
    CryptoError,
    KeyRing,
    associated_data,
    key_id_of,
)
from hub.db import encrypted_columns
from hub.embedded_redis import EmbeddedRedis, redis_server_executable
from hub.errors import HubError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
"""Manifest layout version; a restore refuses one it does not know."""
DATABASE_FILE = "hub.db"
REDIS_FILE = "redis.rdb"
BACKUP_PREFIX = "hub-backup-"

DEFAULT_REDIS_SAVE_TIMEOUT_S = 300.0
"""Longest a Redis snapshot (BGSAVE) or AOF rewrite may take before the backup gives up; the
embedded Redis holds sessions and queued jobs, seconds of work even for a busy clinic."""
DEFAULT_READ_BATCH = 2_000
"""Ciphertexts read per query when a restore decrypts every value (attachments are large)."""
BLIND_INDEXES: dict[tuple[str, str], BlindIndexKind] = {
    ("inbox_patient", "phone"): "phone",
    ("inbox_patient", "email"): "email",
}
"""Columns whose ``<field>_bidx`` digest a restore recomputes from ``<field>_enc``, to catch a
ring whose index key differs from the one the data was indexed with."""
IGNORED_IN_TARGET = {"dev-keys.txt"}
"""Files a restore target may already hold: the development ring, put back from escrow."""


class BackupError(HubError):
    """A backup or restore that cannot go ahead; the message says what to do."""


@dataclass
class Manifest:
    created_at: str
    schema_revision: str | None
    keys_needed: dict[str, int]
    files: dict[str, dict[str, Any]]
    redis: str
    """What happened to Redis: "snapshot", or why there is none."""
    hub_version: str = ""
    format: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST
        if not path.is_file():
            raise BackupError(f"{directory} is not a hub backup: it has no {MANIFEST}")
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT_VERSION:
                raise BackupError(
                    f"{path} has format {data.get('format')!r}; this hub reads format "
                    f"{FORMAT_VERSION}: restore it with the hub version that made it"
                )
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise BackupError(f"{path} is not a readable manifest ({exc})") from None


@dataclass
class RestoreReport:
    values_read: int = 0
    per_column: Counter[str] = field(default_factory=Counter)
    redis_keys: int | None = None
    moved_aside: Path | None = None


def sqlite_file(database_url: str) -> Path:
    """The SQLite file of an async database URL (``hub.config.parse_database_url``'s form)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise BackupError(
            "hub backup copies the embedded mode's SQLite file, and this hub uses PostgreSQL: "
            "back it up with pg_dump, or pg_basebackup with WAL archiving "
            "(see docs/operations.md, 'PostgreSQL')"
        )
    return Path(url.database)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hub_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    with contextlib.suppress(PackageNotFoundError):
        return version("patient-hub")
    return "unknown"


# -- taking a backup ------------------------------------------------------------------------


def take_backup(
    database_url: str, redis_url: str | None, var_dir: Path, parent: Path, now: datetime
) -> tuple[Path, Manifest]:
    """Write a new backup directory under ``parent``; the hub may keep running meanwhile.

    Redis is copied first and the database second: a job in the snapshot whose row is missing
    is impossible, and a queued message without its job is what the scheduler tick already
    re-queues (a restored hub loses no send)."""
    source = sqlite_file(database_url)
    if not source.is_file():
        raise BackupError(f"there is no database at {source}: nothing to back up")
    final = parent / f"{BACKUP_PREFIX}{now:%Y%m%dT%H%M%SZ}"
    if final.exists():
        raise BackupError(f"{final} already exists: wait a second and run the backup again")
    # Built under a hidden name and renamed at the end, so a backup that failed half-way is
    # never mistaken for a whole one.
    staging = parent / f".{final.name}.partial"
    parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    try:
        if redis_url is None:
            _snapshot_embedded_redis(var_dir, staging / REDIS_FILE)
            redis_state = "snapshot"
        else:
            redis_state = (
                "not copied: HUB_REDIS_URL names a Redis server of its own; what it holds is "
                "rebuilt after a loss (docs/deploy.md, 'Redis: what a loss costs')"
            )
        copy = staging / DATABASE_FILE
        _copy_sqlite(source, copy)
        revision, keys_needed = _describe_copy(copy)
        files = {
            path.name: {"bytes": path.stat().st_size, "sha256": _sha256(path)}
            for path in sorted(staging.iterdir())
        }
        manifest = Manifest(
            created_at=now.isoformat(),
            schema_revision=revision,
            keys_needed=dict(sorted(keys_needed.items())),
            files=files,
            redis=redis_state,
            hub_version=_hub_version(),
        )
        (staging / MANIFEST).write_text(manifest.to_json())
        for path in staging.iterdir():
            path.chmod(0o600)  # ciphertexts, but still the clinic's records
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final, manifest


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy through SQLite's online backup API, in one step: it reads one
    snapshot (under WAL the hub's writers carry on meanwhile), where a copy in steps would
    start over each time the hub wrote."""
    with (
        contextlib.closing(sqlite3.connect(source, timeout=30)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)
        # One self-contained file: a copy left in WAL mode would need its -wal beside it.
        dst.execute("PRAGMA journal_mode=DELETE")
        result = dst.execute("PRAGMA integrity_check").fetchone()[0]
    if result != "ok":
        raise BackupError(f"the copy of {source} failed SQLite's integrity check: {result}")


def _describe_copy(copy: Path) -> tuple[str | None, Counter[str]]:
    """The schema revision of a copied database and how many ciphertexts each key id holds."""
    keys: Counter[str] = Counter()
    with contextlib.closing(_read_only(copy)) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        for table, column in _present_columns(conn):
            for (header,) in conn.execute(
                f'SELECT substr("{column}", 1, {HEADER_MAX_BYTES}) FROM "{table}" '  # noqa: S608 - names from our own models
                f'WHERE "{column}" IS NOT NULL'
            ):
                keys[key_id_of(header)] += 1
    return (row[0] if row else None), keys


def _read_only(path: Path) -> sqlite3.Connection:
    # immutable: a backup may sit on read-only media, and reading it must not change a byte.
    return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)


def _present_columns(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """Encrypted columns of the models that this database has (it may be an older schema)."""
    found = []
    for table, column in encrypted_columns():
        names = {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
        if column in names:
            found.append((table, column))
    return found


def _snapshot_embedded_redis(var_dir: Path, target: Path) -> None:
    """BGSAVE on the embedded Redis (started for the occasion when no hub runs), then a copy
    of the snapshot, which Redis writes to a temporary file and renames when it is whole."""
    embedded = EmbeddedRedis(var_dir)
    url = embedded.start()  # reuses the one a running hub owns
    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        deadline = time.monotonic() + DEFAULT_REDIS_SAVE_TIMEOUT_S
        while True:
            try:
                client.bgsave()  # its answer comes after the fork: the snapshot is from now
                break
            except redis.ResponseError as exc:
                if "in progress" not in str(exc) or time.monotonic() > deadline:
                    raise BackupError(f"the embedded Redis refused to snapshot: {exc}") from None
                time.sleep(0.05)  # another save or rewrite runs: ours must start after it
        _wait_for(client, "rdb_bgsave_in_progress", deadline)
        info = client.info("persistence")
        if info.get("rdb_last_bgsave_status") != "ok":
            raise BackupError(
                f"the embedded Redis could not write its snapshot (see {embedded.dir}/redis.log)"
            )
        # The embedded Redis runs with --dir there and the default file name.
        shutil.copyfile(embedded.dir / "dump.rdb", target)
    finally:
        client.close()
        embedded.stop()  # only if started here: stop() leaves a running hub's Redis alone


def _wait_for(client: redis.Redis, flag: str, deadline: float) -> None:
    while int(client.info("persistence").get(flag, 0)):
        if time.monotonic() > deadline:
            raise BackupError(f"the embedded Redis did not finish saving ({flag}) in time")
        time.sleep(0.05)


# -- restoring ------------------------------------------------------------------------------


def check_backup(source: Path, ring: KeyRing) -> tuple[Manifest, RestoreReport]:
    """Everything a restore checks before it writes: the manifest, each file's checksum, that
    the ring holds every key id the data needs, and that every value decrypts with it."""
    manifest = Manifest.read(source)
    for name, expected in manifest.files.items():
        path = source / name
        if not path.is_file():
            raise BackupError(f"{path} is missing: the backup is incomplete; use another one")
        if _sha256(path) != expected["sha256"]:
            raise BackupError(
                f"{path} does not match its checksum in the manifest: the copy is damaged; "
                "use another backup"
            )
    missing = sorted(set(manifest.keys_needed) - set(ring.keys))
    if missing:
        raise BackupError(
            f"this backup's data is encrypted under key {', '.join(missing)}, which the key "
            f"ring does not hold (it holds {', '.join(ring.keys)}): set HUB_KEYS to the ring "
            "kept in escrow for this backup (docs/operations.md, 'Key ring escrow')"
        )
    return manifest, read_every_value(source / DATABASE_FILE, ring)


def read_every_value(database: Path, ring: KeyRing) -> RestoreReport:
    """Decrypt every ciphertext of a SQLite file and recompute the blind indexes: the proof
    that a restore with this ring gives the clinic its records back."""
    report = RestoreReport()
    with contextlib.closing(_read_only(database)) as conn:
        for table, column in _present_columns(conn):
            last = ""
            while True:
                rows = conn.execute(
                    f'SELECT id, "{column}" FROM "{table}" '  # noqa: S608 - names from our own models
                    f'WHERE "{column}" IS NOT NULL AND id > ? ORDER BY id LIMIT ?',
                    (last, DEFAULT_READ_BATCH),
                ).fetchall()
                if not rows:
                    break
                for row_id, blob in rows:
                    aad = associated_data(table, column, uuid.UUID(hex=row_id))
                    try:
                        plain = ring.decrypt(blob, aad)
                    except CryptoError as exc:
                        raise BackupError(
                            f"cannot read {table}.{column} of row {uuid.UUID(hex=row_id)}: {exc}. "
                            "The ring's key of that id is not the one the data was written "
                            "with: use the ring kept in escrow for this backup"
                        ) from None
                    report.values_read += 1
                    report.per_column[f"{table}.{column}"] += 1
                    _check_blind_index(conn, ring, table, column, row_id, plain)
                last = rows[-1][0]
    return report


def _check_blind_index(
    conn: sqlite3.Connection, ring: KeyRing, table: str, column: str, row_id: str, plain: bytes
) -> None:
    field_name = column.removesuffix("_enc")
    kind = BLIND_INDEXES.get((table, field_name))
    if kind is None:
        return
    row = conn.execute(
        f'SELECT "{field_name}_bidx" FROM "{table}" WHERE id = ?',  # noqa: S608 - our own names
        (row_id,),
    ).fetchone()
    if row is None or row[0] is None:
        return
    if ring.blind_index(kind, plain.decode("utf-8")) != row[0]:
        raise BackupError(
            f"the ring's index key is not the one this data was indexed with ({table}."
            f"{field_name}): lookups by {kind} would find no one. Use the ring kept in "
            "escrow for this backup, whose 'index:' entry never changes"
        )


def restore_backup(
    source: Path, var_dir: Path, ring: KeyRing, *, force: bool, now: datetime
) -> RestoreReport:
    """Check the backup, then put its database and Redis data into ``var_dir``.

    A directory that already holds hub data is refused unless ``force``; then what is there
    is moved into ``replaced-<time>/`` inside it, never deleted. A hub running on it (its
    Redis answers) is refused even then."""
    manifest, report = check_backup(source, ring)
    embedded = EmbeddedRedis(var_dir)
    if embedded.socket.exists() and _answers(embedded.url):
        raise BackupError(f"a hub is running on {var_dir} (its Redis answers): stop it first")
    present = (
        sorted(p.name for p in var_dir.iterdir() if p.name not in IGNORED_IN_TARGET)
        if var_dir.is_dir()
        else []
    )
    if present and not force:
        raise BackupError(
            f"{var_dir} already holds {', '.join(present)}: restore into an empty directory, "
            "or add --force to move what is there into a replaced-<time> directory inside it"
        )
    var_dir.mkdir(parents=True, exist_ok=True)
    if present:
        aside = var_dir / f"replaced-{now:%Y%m%dT%H%M%SZ}"
        aside.mkdir()
        for name in present:
            (var_dir / name).rename(aside / name)
        report.moved_aside = aside
    partial = var_dir / f".{DATABASE_FILE}.restoring"
    shutil.copyfile(source / DATABASE_FILE, partial)
    partial.chmod(0o600)
    partial.rename(var_dir / DATABASE_FILE)
    if REDIS_FILE in manifest.files:
        report.redis_keys = _restore_redis(source / REDIS_FILE, embedded.dir)
    return report


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def _restore_redis(snapshot: Path, directory: Path) -> int:
    """Load the snapshot into a Redis on ``directory`` and have it write the append-only file
    the embedded Redis starts from (it runs with appendonly, which ignores a bare snapshot)."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(snapshot, directory / "dump.rdb")
    socket = directory / "redis.sock"
    proc = subprocess.Popen(  # noqa: S603 - fixed arguments, our own binary
        [
            redis_server_executable(),
            *("--port", "0", "--unixsocket", str(socket), "--unixsocketperm", "700"),
            *("--dir", str(directory), "--dbfilename", "dump.rdb"),
            *("--appendonly", "no", "--save", "", "--logfile", str(directory / "redis.log")),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis.from_url(f"unix://{socket}", socket_timeout=10)
    try:
        deadline = time.monotonic() + DEFAULT_REDIS_SAVE_TIMEOUT_S
        while True:
            try:
                client.ping()  # answers LOADING until the snapshot is in memory
                break
            except (redis.ConnectionError, redis.BusyLoadingError, FileNotFoundError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BackupError(
                        f"Redis could not load the backup's snapshot (see {directory}/redis.log)"
                    ) from None
                time.sleep(0.05)
        client.config_set("appendonly", "yes")  # starts a rewrite into appendonly.aof
        _wait_for(client, "aof_rewrite_scheduled", deadline)
        _wait_for(client, "aof_rewrite_in_progress", deadline)
        if client.info("persistence").get("aof_last_bgrewrite_status") != "ok":
            raise BackupError(f"Redis could not write {directory}/appendonly.aof")
        keys = int(client.dbsize())
        with contextlib.suppress(redis.ConnectionError):  # SHUTDOWN closes its connection
            client.shutdown(nosave=True)  # flushes the append-only file; no snapshot needed
    finally:
        client.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(FileNotFoundError):
            socket.unlink()
        (directory / "dump.rdb").unlink(missing_ok=True)
    return keys
