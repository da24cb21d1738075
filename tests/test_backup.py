"""`hub backup` and `hub backup restore` on the embedded mode, as an IT person runs them.

A hub runs on a var directory of its own (SQLite, the embedded Redis) and keeps taking texts
while `hub backup` copies it. The backup is restored into a fresh directory and every encrypted
value is read back with the ring and compared with what was written. Without the ring (another
ring, a ring with the right key id but other key material, no ring at all) the restore refuses
with a line naming what is missing, and the values cannot be read: an error, never garbage.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from sqlalchemy import select

from hub.config import Settings
from hub.crypto import KeyRing, UnknownKey, associated_data
from hub.db import Base, Database, encrypted_columns
from hub.demo import load_demo_data
from hub.embedded_redis import EmbeddedRedis
from hub.inbox.actions.conversations import do_add_note
from hub.inbox.models import Message, Note, Patient
from tests.conftest import hub_env, make_staff
from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN, CLINIC_NUMBER, fixture, sign
from web.app import create_app

pytestmark = pytest.mark.slow

PUBLIC = "https://hub.test-clinic.example.org"
NOTE = "Prefers a call after 4 pm; hard of hearing in the left ear."
FIRST_TEXT = "Hello, this is Avery Testpatient: can I bring my daughter to the visit?"
REDIS_MARKER = "hub:test:backup-marker"

Values = dict[tuple[str, str, str], bytes]


def hub(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def read_every_value(database_url: str, ring: KeyRing) -> Values:
    """Every ciphertext in the database, decrypted, by (table, column, row id): read through
    the ORM's tables, independently of the code under test."""
    db = Database.connect(database_url)
    found: Values = {}
    try:
        async with db.reader() as session:
            for table_name, column_name in encrypted_columns():
                table = Base.metadata.tables[table_name]
                rows = await session.execute(
                    select(table.c.id, table.c[column_name]).where(
                        table.c[column_name].is_not(None)
                    )
                )
                for row_id, blob in rows:
                    aad = associated_data(table_name, column_name, row_id)
                    found[(table_name, column_name, str(row_id))] = ring.decrypt(blob, aad)
    finally:
        await db.dispose()
    return found


@dataclass
class RunningHub:
    var: Path
    env: dict[str, str]
    ring: KeyRing
    url: str
    database_url: str
    texts_sent: int = 0

    async def text(self, body: str) -> None:
        """A signed inbound SMS from a new number, as Twilio posts it."""
        self.texts_sent += 1
        params = dict(fixture("inbound_sms")["params"])
        sid = f"SM{uuid.uuid4().hex}"
        params.update(
            Body=body,
            MessageSid=sid,
            SmsSid=sid,
            SmsMessageSid=sid,
            From=f"+1555010{self.texts_sent % 10000:04d}",
        )
        path = "/webhooks/twilio/sms"
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.url + path,
                data=params,
                headers={"X-Twilio-Signature": sign(PUBLIC + path, params)},
            ) as response,
        ):
            assert response.status == 200, await response.text()


@pytest.fixture
def var() -> Iterator[Path]:
    # Short: the embedded Redis's unix socket path is limited to about 100 bytes.
    path = Path(tempfile.mkdtemp(prefix="hubb"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def running(var: Path, ring: KeyRing, aiohttp_server: Any) -> AsyncIterator[RunningHub]:
    """`hub migrate`, then a hub serving on ``var`` with the embedded Redis, seeded with the
    demo's synthetic patients and messages, a note and a text through the webhook."""
    env = hub_env(
        HUB_VAR_DIR=str(var / "data"),
        HUB_KEYS=ring.to_spec(),
        HUB_LOG_FORMAT="text",
        HUB_PUBLIC_URL=PUBLIC,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_FROM_NUMBER=CLINIC_NUMBER,
    )
    migrated = hub("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    settings = Settings.from_env(env)
    embedded = EmbeddedRedis(settings.var_dir)
    url = embedded.start()
    try:
        server = await aiohttp_server(create_app(replace(settings, redis_url=url)))
        running = RunningHub(
            var,
            env,
            ring,
            str(server.make_url("")).rstrip("/"),
            settings.database_url,
        )
        db = Database.connect(settings.database_url)
        try:
            await load_demo_data(db, ring, "US")
            staff = await make_staff(db, "robin.backup@demo-clinic.example.org")
            async with db.reader() as session:
                message = (await session.scalars(select(Message).limit(1))).one()
            await do_add_note(db, ring, staff, message.conversation_id, NOTE)
        finally:
            await db.dispose()
        await running.text(FIRST_TEXT)
        client = redis.Redis.from_url(url)
        client.set(REDIS_MARKER, "queued work survives")
        client.close()
        yield running
        await server.close()  # before its Redis goes
    finally:
        embedded.stop()


async def test_backup_taken_while_serving_restores_every_value_with_the_ring(
    running: RunningHub, ring: KeyRing, var: Path
) -> None:
    before = await read_every_value(running.database_url, ring)
    assert FIRST_TEXT.encode() in before.values()
    assert NOTE.encode() in before.values()
    assert {table for table, _, _ in before} >= {
        "inbox_patient",
        "inbox_message",
        "inbox_note",
        "channel_inbound_event",
    }

    # The backup runs in its own process while texts keep arriving at the hub.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "hub", "backup", "--to", str(var / "backups")),
        env=running.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    communicate = asyncio.ensure_future(process.communicate())
    during = 0
    while not communicate.done():
        await running.text(f"Running late, sorry ({during})")
        during += 1
    out_b, err_b = await communicate
    out, err = out_b.decode(), err_b.decode()
    assert process.returncode == 0, err
    assert during > 0  # the hub stored texts while the copy was being made
    (backup,) = (var / "backups").iterdir()
    assert f"backup written to {backup}" in out
    assert "The key ring is NOT in the backup" in err
    assert "'index' key and t1" in err
    after = await read_every_value(running.database_url, ring)

    manifest = json.loads((backup / "manifest.json").read_text())
    assert set(manifest["files"]) == {"hub.db", "redis.rdb"}
    assert manifest["redis"] == "snapshot"
    assert set(manifest["keys_needed"]) == {"t1"}
    assert manifest["schema_revision"]
    # Neither the ring's file nor its key material is anywhere in the backup.
    secrets = [ring.index_key, *ring.keys.values()]
    secrets += [base64.urlsafe_b64encode(k).rstrip(b"=") for k in list(secrets)]
    for path in backup.iterdir():
        content = path.read_bytes()
        assert not any(secret in content for secret in secrets), path.name
    assert sorted(p.name for p in backup.iterdir()) == ["hub.db", "manifest.json", "redis.rdb"]

    fresh = var / "restored"
    restore_env = {**running.env, "HUB_VAR_DIR": str(fresh)}
    restored = hub("backup", "restore", str(backup), env=restore_env)
    assert restored.returncode == 0, restored.stderr
    values = await read_every_value(f"sqlite+aiosqlite:///{fresh / 'hub.db'}", ring)
    assert f"{len(values)} encrypted values read back" in restored.stdout
    assert manifest["keys_needed"] == {"t1": len(values)}
    # A consistent copy from some moment during the backup: everything written before it,
    # each value exactly as the hub holds it, and nothing that never existed.
    assert before.items() <= values.items() <= after.items()

    embedded = EmbeddedRedis(fresh)
    client = redis.Redis.from_url(embedded.start())
    try:
        assert client.get(REDIS_MARKER) == b"queued work survives"
    finally:
        client.close()
        embedded.stop()

    # The restored hub is usable as it is: `hub audit verify` walks the restored chain.
    verified = hub("audit", "verify", env=restore_env)
    assert verified.returncode == 0, verified.stderr


async def test_without_the_ring_a_restore_refuses_and_nothing_is_readable(
    running: RunningHub, ring: KeyRing, var: Path
) -> None:
    taken = hub("backup", "--to", str(var / "backups"), env=running.env)
    assert taken.returncode == 0, taken.stderr
    (backup,) = (var / "backups").iterdir()
    target = var / "restored"

    def restore(keys: str | None) -> subprocess.CompletedProcess[str]:
        env = {**running.env, "HUB_VAR_DIR": str(target)}
        env.pop("HUB_KEYS")
        if keys is not None:
            env["HUB_KEYS"] = keys
        return hub("backup", "restore", str(backup), env=env)

    other = restore(KeyRing.generate("t2").to_spec())
    assert other.returncode == 1
    assert "encrypted under key t1, which the key ring does not hold" in other.stderr
    assert "escrow" in other.stderr

    # The right key id with other key material: found by decrypting, before anything is copied.
    impostor = KeyRing(keys={"t1": KeyRing.generate().index_key}, index_key=ring.index_key)
    wrong = restore(impostor.to_spec())
    assert wrong.returncode == 1
    assert "cannot read inbox_" in wrong.stderr
    assert "failed its integrity check" in wrong.stderr

    # The right encryption key with another index key: every value decrypts, but lookups by
    # phone or email would find no one.
    reindexed = KeyRing(keys=ring.keys, index_key=KeyRing.generate().index_key)
    unindexed = restore(reindexed.to_spec())
    assert unindexed.returncode == 1
    assert "index key is not the one this data was indexed with" in unindexed.stderr

    unset = restore(None)
    assert unset.returncode == 1
    assert "HUB_KEYS is unset" in unset.stderr
    for result in (other, wrong, unindexed, unset):
        assert "Traceback" not in result.stderr
    assert not target.exists()  # refused before writing anything

    # A development ring (no HUB_KEYS) put back from escrow into the new directory is used,
    # and no new ring is made in its place.
    escrowed = var / "dev-restore"
    escrowed.mkdir()
    (escrowed / "dev-keys.txt").write_text(ring.to_spec() + "\n")
    dev_env = {**running.env, "HUB_VAR_DIR": str(escrowed)}
    dev_env.pop("HUB_KEYS")
    from_dev_ring = hub("backup", "restore", str(backup), env=dev_env)
    assert from_dev_ring.returncode == 0, from_dev_ring.stderr
    assert (escrowed / "dev-keys.txt").read_text() == ring.to_spec() + "\n"

    # The files alone (copied by hand, say) are ciphertexts: another ring gets an error naming
    # the missing key for every value, never a wrong plaintext.
    target.mkdir()
    shutil.copyfile(backup / "hub.db", target / "hub.db")
    db = Database.connect(f"sqlite+aiosqlite:///{target / 'hub.db'}")
    try:
        async with db.reader() as session:
            patients = (await session.scalars(select(Patient))).all()
            notes = (await session.scalars(select(Note))).all()
        assert patients and notes
        stranger = KeyRing.generate("t2")
        named = [p for p in patients if p.name_enc is not None]
        assert named
        for row, field in [*((p, "name") for p in named), *((n, "body") for n in notes)]:
            with pytest.raises(UnknownKey, match="under key 't1', which HUB_KEYS no longer"):
                row.unseal(stranger, field)
    finally:
        await db.dispose()


async def test_restore_keeps_what_a_directory_holds_unless_forced(
    running: RunningHub, ring: KeyRing, var: Path
) -> None:
    taken = hub("backup", "--to", str(var / "backups"), env=running.env)
    assert taken.returncode == 0, taken.stderr
    (backup,) = (var / "backups").iterdir()
    target = var / "restored"
    target.mkdir()
    (target / "hub.db").write_bytes(b"last week's database")
    env = {**running.env, "HUB_VAR_DIR": str(target)}

    refused = hub("backup", "restore", str(backup), env=env)
    assert refused.returncode == 1
    assert "already holds hub.db" in refused.stderr
    assert (target / "hub.db").read_bytes() == b"last week's database"

    forced = hub("backup", "restore", str(backup), "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    (aside,) = target.glob("replaced-*")
    assert (aside / "hub.db").read_bytes() == b"last week's database"
    assert await read_every_value(f"sqlite+aiosqlite:///{target / 'hub.db'}", ring)

    # The running hub's own directory: its Redis answers, so even --force is refused.
    live = hub("backup", "restore", str(backup), "--force", env=running.env)
    assert live.returncode == 1
    assert "a hub is running on" in live.stderr

    damaged = backup / "hub.db"
    damaged.chmod(0o600)
    with damaged.open("r+b") as fh:  # one flipped byte, as a failing disk would leave it
        fh.seek(5000)
        byte = fh.read(1)[0]
        fh.seek(5000)
        fh.write(bytes([byte ^ 0xFF]))
    broken = hub("backup", "restore", str(backup), "--to", str(var / "other"), env=env)
    assert broken.returncode == 1
    assert "does not match its checksum" in broken.stderr


def test_backup_on_postgres_points_at_pg_dump(tmp_path: Path) -> None:
    env = hub_env(
        HUB_DATABASE_URL="postgresql://hub@db.clinic.example.org:5432/hub",
        HUB_VAR_DIR=str(tmp_path / "var"),
    )
    refused = hub("backup", env=env)
    assert refused.returncode == 1
    assert "pg_dump" in refused.stderr
    assert "docs/operations.md" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "var").exists()
