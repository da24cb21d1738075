"""Beyond one machine: two real `hub serve` processes and a `hub worker` sharing one database and
one Redis, as docs/deploy.md runs them behind a load balancer. Nothing a request needs may live in
one process's memory: a webhook taken by one process reaches staff sockets held by the other,
a reply sent through the other reaches sockets on the first, and team boundaries hold across
both. Runs on PostgreSQL + Redis (CI) and on a shared SQLite file + the embedded Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import aiosmtplib
import pytest
import socketio
from sqlalchemy import select
from yarl import URL

from fakes.twilio import FakeTwilio, start_fake_twilio
from hub.audit import Actor
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Direction
from hub.inbox.models import Conversation, Message, Team
from hub.routing.actions import do_create_rule
from tests.conftest import DatabaseFactory, hub_env, make_staff, sync_url
from tests.stack import eventually, free_port
from tests.staff_helpers import META_CSRF, PASSWORD
from tests.twilio_helpers import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    CLINIC_NUMBER,
    PATIENT_NUMBER,
    fixture,
    sign,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_redis")]

REFILL_PATIENT = "+15550100102"
SMS_PATH = "/webhooks/twilio/sms"
DESK_ALEX = "alex.desk@demo-clinic.example.org"
DESK_CAM = "cam.desk@demo-clinic.example.org"
PHARMACY_PAT = "pat.pharmacy@demo-clinic.example.org"
EVENT_WAIT_S = 10.0
"""A cross-process event takes milliseconds; this only absorbs a loaded CI machine."""


@dataclass
class HubProcess:
    name: str
    url: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- {self.name} ---\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.terminate()  # SIGTERM: aiohttp and RQ shut down cleanly
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            # RQ's work horses have process groups of their own: kill the whole tree.
            import psutil

            root = psutil.Process(self.popen.pid)
            tree = [root, *root.children(recursive=True)]
            for process in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            psutil.wait_procs(tree, timeout=10)
            self.popen.wait()


@dataclass
class StaffSocket:
    """A signed-in staff member's socket.io client, recording every /staff event it gets."""

    email: str
    client: socketio.AsyncClient
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def record(self, event: str, data: Any) -> None:
        self.events.append((event, data))
        self.changed.set()

    async def wait_for(
        self, event: str, match: Callable[[dict[str, Any]], bool], what: str
    ) -> dict[str, Any]:
        async def found() -> dict[str, Any]:
            while True:
                for name, data in self.events:
                    if name == event and match(data):
                        return data
                self.changed.clear()
                await self.changed.wait()

        try:
            return await asyncio.wait_for(found(), EVENT_WAIT_S)
        except TimeoutError:
            raise AssertionError(
                f"{self.email} got no {event} for {what}; got {self.events}"
            ) from None


@dataclass
class TwoHubs:
    a: HubProcess
    b: HubProcess
    processes: list[HubProcess]
    public_url: str
    db: Database
    fake: FakeTwilio
    desk_id: uuid.UUID
    pharmacy_id: uuid.UUID

    @contextlib.contextmanager
    def explained(self) -> Iterator[None]:
        """A failed assertion comes with the processes' last log lines."""
        try:
            yield
        except AssertionError as exc:
            logs = "\n".join(p.tail() for p in self.processes)
            raise AssertionError(f"{exc}\n{logs}") from None


def _spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> HubProcess:
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log_file:
        popen = subprocess.Popen(
            [sys.executable, "-m", "hub", *argv],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the test run is not theirs to handle
        )
    url = f"http://{env['HUB_HOST']}:{env['HUB_PORT']}" if argv == ["serve"] else ""
    return HubProcess(name, url, popen, log_path)


async def _healthy(process: HubProcess, http: aiohttp.ClientSession) -> bool:
    if process.popen.poll() is not None:
        raise AssertionError(f"{process.name} exited early\n{process.tail()}")
    try:
        async with http.get(f"{process.url}/healthz") as response:
            return response.status == 200
    except aiohttp.ClientConnectionError:
        return False


@contextlib.asynccontextmanager
async def running_hubs(
    db_url: str,
    redis_url: str,
    tmp_path: Path,
    *,
    hosts: tuple[str, str] = ("127.0.0.1", "127.0.0.1"),
    public_url: str | None = None,
    extra: dict[str, str] | None = None,
    with_worker: bool = True,
) -> AsyncIterator[TwoHubs]:
    """Two `hub serve` (A on ``hosts[0]``, B on ``hosts[1]``) and a `hub worker`, configured
    alike as every process of a deployment must be; only the listening address differs."""
    db = Database.connect(db_url)
    admin = Actor.system("test")
    # Refills go to the pharmacy, the rest to the front desk, so each event has a team room and
    # the other team can be checked for silence.
    await make_staff(db, DESK_ALEX, role="agent", teams=("Front desk",))
    await make_staff(db, DESK_CAM, role="agent", teams=("Front desk",))
    await make_staff(db, PHARMACY_PAT, role="agent", teams=("Pharmacy",))
    await do_create_rule(
        db,
        admin,
        name="Refills",
        conditions={"body_keywords": ["refill"]},
        actions={"team": "Pharmacy"},
        stop_processing=True,
    )
    await do_create_rule(db, admin, name="The rest", conditions={}, actions={"team": "Front desk"})
    async with db.reader() as session:
        teams = {t.name: t.id for t in (await session.scalars(select(Team))).all()}

    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    runner, fake_base = await start_fake_twilio(fake)
    ring = KeyRing.generate("two1")
    port_a, port_b = free_port(), free_port()
    # HUB_PUBLIC_URL stands for the load balancer: Twilio signs against it whichever process
    # gets the request. Without a proxy it leads to A, so the fake's status callbacks land there.
    public_url = public_url or f"http://{hosts[0]}:{port_a}"
    common = {
        "HUB_DATABASE_URL": sync_url(db_url),
        "HUB_REDIS_URL": redis_url,
        "HUB_KEYS": ring.to_spec(),
        "HUB_PUBLIC_URL": public_url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE": fake_base,
        "TWILIO_FROM_NUMBER": CLINIC_NUMBER,
        "HUB_LOG_FORMAT": "text",
        **(extra or {}),
    }

    def env(name: str, host: str, port: int) -> dict[str, str]:
        return hub_env(
            **common, HUB_HOST=host, HUB_PORT=str(port), HUB_VAR_DIR=str(tmp_path / name)
        )

    a = _spawn("hub-serve-a", ["serve"], env("a", hosts[0], port_a), tmp_path)
    b = _spawn("hub-serve-b", ["serve"], env("b", hosts[1], port_b), tmp_path)
    processes = [a, b]
    if with_worker:
        processes.append(_spawn("hub-worker", ["worker"], env("w", hosts[0], port_a), tmp_path))
    hubs = TwoHubs(a, b, processes, public_url, db, fake, teams["Front desk"], teams["Pharmacy"])
    try:
        async with aiohttp.ClientSession() as http:
            for process in (a, b):
                await eventually(lambda p=process: _healthy(p, http), f"{process.name} up")
        yield hubs
    finally:
        for process in processes:
            process.stop()
        await runner.cleanup()
        await db.dispose()


@pytest.fixture
async def two_hubs(fresh_db_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[TwoHubs]:
    async with running_hubs(fresh_db_url, redis_url, tmp_path) as hubs:
        yield hubs


@contextlib.asynccontextmanager
async def signed_in(base_url: str, email: str) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """An HTTP session signed in through ``base_url``'s login form, and its CSRF token."""
    # unsafe: the hubs listen on an IP address, whose cookies aiohttp drops by default; ssl off:
    # the proxy test's certificate is self-signed.
    async with aiohttp.ClientSession(
        base_url,
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        connector=aiohttp.TCPConnector(ssl=False),
    ) as http:
        async with http.get("/login") as form:
            assert form.status == 200
        login_csrf = http.cookie_jar.filter_cookies(URL(base_url) / "login")["hub_login_csrf"]
        async with http.post(
            "/login",
            data={"email": email, "password": PASSWORD, "csrf_token": login_csrf.value},
            allow_redirects=False,
        ) as response:
            assert response.status == 303, await response.text()
        async with http.get("/") as inbox:
            match = META_CSRF.search(await inbox.text())
        assert match and match.group(1)
        yield http, match.group(1)


@contextlib.asynccontextmanager
async def staff_socket(
    base_url: str,
    email: str,
    http: aiohttp.ClientSession,
    transports: tuple[str, ...] = ("websocket",),
) -> AsyncIterator[StaffSocket]:
    """A socket.io client riding on a signed-in HTTP session: like a browser, it sends the
    session cookie with every request (each long-poll too, which the proxy's affinity needs)."""
    client = socketio.AsyncClient(reconnection=False, ssl_verify=False, http_session=http)
    sock = StaffSocket(email, client)
    client.on("*", sock.record, namespace="/staff")
    await client.connect(
        base_url,
        namespaces=["/staff"],
        transports=list(transports),
        wait_timeout=EVENT_WAIT_S,
    )
    try:
        yield sock
    finally:
        if client.transport() == "polling":
            # A clean disconnect waits out the pending long-poll (30 s): tell the server, then
            # leave the poll to end with the HTTP session.
            await client.eio.disconnect(abort=True)
        else:
            await client.disconnect()


async def test_events_cross_two_hub_serve_processes(two_hubs: TwoHubs) -> None:
    hubs = two_hubs
    # Alex and Pat sign in through B and hold sockets on B; Cam signs in through B too but her
    # socket goes to A, which must find the session B created.
    with hubs.explained():
        async with (
            signed_in(hubs.b.url, DESK_ALEX) as (alex_http, alex_csrf),
            signed_in(hubs.b.url, DESK_CAM) as (cam_http, _),
            signed_in(hubs.b.url, PHARMACY_PAT) as (pat_http, _),
            staff_socket(hubs.b.url, DESK_ALEX, alex_http) as alex,
            staff_socket(hubs.a.url, DESK_CAM, cam_http) as cam,
            staff_socket(hubs.b.url, PHARMACY_PAT, pat_http) as pat,
        ):
            # 1. A patient's text reaches A; Alex's socket on B hears of what A stored.
            status, text = await hubs.fake.send_inbound(
                f"{hubs.a.url}{SMS_PATH}", PATIENT_NUMBER, CLINIC_NUMBER, "Running late"
            )
            assert status == 200, text
            event = await alex.wait_for("message:new", lambda _: True, "the inbound text")
            async with hubs.db.reader() as session:
                stored = (await session.scalars(select(Message))).one()
                conversation = await session.get(Conversation, stored.conversation_id)
            assert conversation is not None and stored.direction == Direction.INBOUND
            assert event == {
                "message_id": str(stored.id),
                "conversation_id": str(conversation.id),
                "team_id": str(hubs.desk_id),
            }
            assert conversation.team_id == hubs.desk_id

            # 2. Alex replies through B's API; Cam's socket on A hears of it.
            async with alex_http.post(
                f"/api/conversations/{conversation.id}/messages",
                json={"body": "No problem, see you soon."},
                headers={"X-CSRF-Token": alex_csrf},
            ) as response:
                assert response.status == 202, await response.text()
                reply_id = (await response.json())["message_id"]
            await cam.wait_for("message:new", lambda e: e["message_id"] == reply_id, "Alex's reply")

            # 3. The worker sends it; Twilio's delivery callback lands on A (the public URL) and
            #    Alex's screen on B moves to delivered.
            await alex.wait_for(
                "message:status",
                lambda e: e["message_id"] == reply_id and e["status"] == "delivered",
                "the delivery callback taken by A",
            )
            assert [m.body for m in hubs.fake.messages] == ["No problem, see you soon."]

            # 4. A webhook taken by B is checked against the public URL too, as behind a proxy:
            #    signed for B's own address it is refused and stores nothing; signed for the public
            #    URL it lands, and Pat's socket on B hears of the pharmacy text.
            sid = "SM" + "b" * 32
            params = fixture("inbound_sms")["params"] | {
                "MessageSid": sid,
                "SmsMessageSid": sid,
                "SmsSid": sid,
                "From": REFILL_PATIENT,
                "Body": "Refill please",
            }
            for signed_for, expected in ((hubs.b.url, 403), (hubs.public_url, 200)):
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(
                        f"{hubs.b.url}{SMS_PATH}",
                        data=params,
                        headers={"X-Twilio-Signature": sign(signed_for + SMS_PATH, params)},
                    ) as response,
                ):
                    assert response.status == expected, await response.text()
                async with hubs.db.reader() as session:
                    inbound = (
                        await session.scalars(
                            select(Message).where(Message.direction == Direction.INBOUND)
                        )
                    ).all()
                assert len(inbound) == (1 if expected == 403 else 2)
            refill = await pat.wait_for("message:new", lambda _: True, "the refill text")
            assert refill["team_id"] == str(hubs.pharmacy_id)

            # Pat's socket works, and all it ever heard of was her own team's conversation.
            assert {e.get("conversation_id") for _, e in pat.events} == {refill["conversation_id"]}
            assert refill["conversation_id"] != str(conversation.id)


# -- the documented proxy -------------------------------------------------------------------

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)
DEPLOY = Path(__file__).resolve().parent.parent / "docs" / "deploy"
REPLY_DOMAIN = "reply.demo-clinic.example.org"
CLINIC_EMAIL = "desk@demo-clinic.example.org"


def _stream_module(nginx: str) -> str | None:
    """What this nginx needs to have the stream module: a load_module line, "" when it is built
    in, None when it has none."""
    info = subprocess.run([nginx, "-V"], capture_output=True, text=True, check=True).stderr
    if "--with-stream=dynamic" in info:
        found = re.search(r"--modules-path=(\S+)", info)
        module = (
            Path(found.group(1) if found else "/usr/lib/nginx/modules") / "ngx_stream_module.so"
        )
        return f"load_module {module};" if module.exists() else None
    return "" if re.search(r"--with-stream(\s|$)", info) else None


def _loopback_aliases(*addresses: str) -> bool:
    """Linux answers on all of 127/8; the test plays two machines on two of those addresses."""
    for address in addresses:
        with socket.socket() as probe:
            try:
                probe.bind((address, 0))
            except OSError:
                return False
    return True


def _self_signed(directory: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hub.example-clinic.org")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (directory / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "privkey.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _localized(path: Path, replacements: dict[str, str]) -> str:
    """The shipped file with only addresses, ports and certificate paths changed."""
    text = path.read_text()
    for old, new in replacements.items():
        assert old in text, f"{path.name} no longer contains {old!r}: update this test with it"
        text = text.replace(old, new)
    return "\n".join(line for line in text.splitlines() if "listen [::]" not in line)


@contextlib.contextmanager
def running_nginx(
    directory: Path, stream_module: str, hub_conf: str, smtp_conf: str, ports: tuple[int, ...]
) -> Iterator[subprocess.Popen[bytes]]:
    assert NGINX is not None
    (directory / "hub.conf").write_text(hub_conf)
    (directory / "hub-smtp.conf").write_text(smtp_conf)
    # As root, nginx's workers would drop to nobody, who cannot enter pytest's private tmp dir.
    user = "user root;" if os.geteuid() == 0 else ""
    temp = " ".join(
        f"{kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    (directory / "nginx.conf").write_text(
        f"{stream_module}\n{user}\npid {directory}/nginx.pid;\nevents {{}}\n"
        "http { log_format hub '$upstream_addr $hub_affinity \"$request\" $status'; "
        f"access_log {directory}/access.log hub; {temp} "
        f"uwsgi_temp_path {directory}/uwsgi; scgi_temp_path {directory}/scgi; "
        f"include {directory}/hub.conf; }}\n"
        f"include {directory}/hub-smtp.conf;\n"
    )
    argv = [NGINX, "-p", str(directory), "-c", str(directory / "nginx.conf")]
    argv += ["-e", str(directory / "error.log")]
    checked = subprocess.run([*argv, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(
        [*argv, "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_until_listening(process, directory, ports)
        yield process
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful: finish open requests
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class PortTaken(Exception):
    """nginx could not bind a port picked free a moment before (something else took it)."""


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` holds listening sockets on (Linux: /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _wait_until_listening(
    process: subprocess.Popen[bytes], directory: Path, ports: tuple[int, ...]
) -> None:
    """Until nginx itself holds each of its ports. Its pid file is written before it binds and
    another process may hold a port it was given, so neither the file nor a connection proves
    it is up. If it exits first, say why from its error log."""
    deadline = time.monotonic() + 15
    while not set(ports) <= _listening_ports(process.pid):
        errors = (directory / "error.log").read_text(errors="replace")
        if "Address already in use" in errors:
            raise PortTaken(errors)
        if process.poll() is not None:
            raise AssertionError(f"nginx exited with {process.returncode}:\n{errors}")
        assert time.monotonic() < deadline, f"nginx did not listen on {ports} within 15 s"
        time.sleep(0.05)


async def _sms_answered(http: aiohttp.ClientSession, backend: HubProcess) -> float:
    """How many inbound SMS webhooks this backend has answered 200 (its own /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    async with http.get(f"{backend.url}/metrics") as response:
        text = await response.text()
    wanted = {"route": "twilio_sms", "method": "POST", "status": "200"}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "hub_http_requests_total" and sample.labels == wanted:
                return float(sample.value)
    return 0.0


def _sms_params(sid_char: str, body: str) -> dict[str, str]:
    sid = "SM" + sid_char * 32
    return fixture("inbound_sms")["params"] | {
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "SmsSid": sid,
        "Body": body,
    }


def _missing(why: str) -> NoReturn:
    """Outside CI the proxy test may skip; CI installs nginx (.ci/run) and must run it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}, and under CI=true this test must run")
    pytest.skip(why)


async def test_the_documented_nginx_config_in_front_of_two_hubs(
    database_factory: DatabaseFactory, redis_url: str, tmp_path: Path
) -> None:
    """docs/deploy/nginx.conf and nginx-smtp.conf as shipped (addresses, ports and certificate
    paths aside) in front of two hubs on two addresses: sticky long-polling, WebSocket upgrade,
    Twilio signatures over the public https URL, mail through the stream proxy, /metrics kept
    to internal addresses, and a backend going away without a request being lost."""
    if NGINX is None:
        _missing("nginx is not installed (it checks docs/deploy/)")
    assert NGINX is not None
    stream_module = _stream_module(NGINX)
    if stream_module is None:
        _missing("this nginx has no stream module (Debian: libnginx-mod-stream)")
    if not _loopback_aliases("127.0.0.2", "127.0.0.3"):
        _missing("127.0.0.2 and 127.0.0.3 are not local addresses here (macOS)")
    # The proxy's ports are picked free just before nginx binds them; on a busy machine another
    # process can take one in between. nginx then says so, and the scenario starts over on
    # fresh ports (the hubs know the public URL, so they start over too, on a new database).
    for attempt in range(3):
        run_dir = tmp_path / f"try{attempt}"
        run_dir.mkdir()
        try:
            await _through_nginx(database_factory.create(), redis_url, run_dir, stream_module)
            return
        except PortTaken:
            if attempt == 2:
                raise


async def _through_nginx(
    fresh_db_url: str, redis_url: str, run_dir: Path, stream_module: str
) -> None:
    proxy_dir = run_dir / "nginx"
    proxy_dir.mkdir()
    _self_signed(proxy_dir)
    https_port, http_port, smtp_port, backend_smtp = (free_port() for _ in range(4))
    public_url = f"https://127.0.0.1:{https_port}"
    extra = {
        "HUB_REPLY_DOMAIN": REPLY_DOMAIN,
        "HUB_EMAIL_FROM": f"Demo Clinic <{CLINIC_EMAIL}>",
        "HUB_INBOUND_SMTP_PORT": str(backend_smtp),
    }
    async with running_hubs(
        fresh_db_url,
        redis_url,
        run_dir,
        hosts=("127.0.0.1", "127.0.0.2"),  # two machines, as far as the proxy can tell
        public_url=public_url,
        extra=extra,
        with_worker=False,
    ) as hubs:
        a_addr, b_addr = hubs.a.url.removeprefix("http://"), hubs.b.url.removeprefix("http://")
        hub_conf = _localized(
            DEPLOY / "nginx.conf",
            {
                "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
                "listen 80;": f"listen 127.0.0.1:{http_port};",
                "10.0.0.11:8080": a_addr,
                "10.0.0.12:8080": b_addr,
                "/etc/ssl/hub/": f"{proxy_dir}/",
            },
        )
        smtp_conf = _localized(
            DEPLOY / "nginx-smtp.conf",
            {
                "listen 25;": f"listen 127.0.0.1:{smtp_port};",
                "10.0.0.11:2525": f"127.0.0.1:{backend_smtp}",
                "10.0.0.12:2525": f"127.0.0.2:{backend_smtp}",
            },
        )
        with (
            hubs.explained(),
            running_nginx(
                proxy_dir, stream_module, hub_conf, smtp_conf, (https_port, http_port, smtp_port)
            ),
        ):
            insecure = aiohttp.TCPConnector(ssl=False)
            async with aiohttp.ClientSession(connector=insecure) as http:

                async def proxied() -> bool:
                    with contextlib.suppress(aiohttp.ClientConnectionError):
                        async with http.get(f"{public_url}/healthz") as response:
                            return response.status == 200
                    return False

                await eventually(proxied, "nginx answering")
                async with (
                    signed_in(public_url, DESK_ALEX) as (alex_http, _),
                    signed_in(public_url, DESK_CAM) as (cam_http, _),
                    # Long-polling only: every poll must reach the process holding the socket.
                    staff_socket(
                        public_url,
                        DESK_ALEX,
                        alex_http,
                        transports=("polling",),
                    ) as alex,
                    # A browser's way: polling first, then the WebSocket upgrade.
                    staff_socket(
                        public_url,
                        DESK_CAM,
                        cam_http,
                        transports=("polling", "websocket"),
                    ) as cam,
                ):
                    # Signed for the public https URL, as Twilio does; nginx passes the path on.
                    params = _sms_params("c", "Running late")
                    async with http.post(
                        f"{public_url}{SMS_PATH}",
                        data=params,
                        headers={"X-Twilio-Signature": sign(public_url + SMS_PATH, params)},
                    ) as response:
                        assert response.status == 200, await response.text()
                    first = await alex.wait_for("message:new", lambda _: True, "the text")
                    await cam.wait_for(
                        "message:new", lambda e: e == first, "the text (upgraded socket)"
                    )
                    assert cam.client.transport() == "websocket"

                    # A patient's email through the stream proxy lands and is announced.
                    mail = EmailMessage()
                    mail["From"] = "Avery Sample <avery.sample@example.org>"
                    mail["To"] = CLINIC_EMAIL
                    mail["Subject"] = "Parking"
                    mail["Message-ID"] = "<two-process-1@example.org>"
                    mail.set_content("Where do I park?")
                    await aiosmtplib.send(mail, hostname="127.0.0.1", port=smtp_port, timeout=30)
                    await alex.wait_for(
                        "message:new",
                        lambda e: e["conversation_id"] != first["conversation_id"],
                        "the email",
                    )

                # /metrics from an address outside the allowed ones is refused at the proxy.
                async with http.get(f"{public_url}/metrics") as response:
                    assert response.status == 200
                outside = aiohttp.TCPConnector(ssl=False, local_addr=("127.0.0.3", 0))
                async with (
                    aiohttp.ClientSession(connector=outside) as stranger,
                    stranger.get(f"{public_url}/metrics") as response,
                ):
                    assert response.status == 403

                # Stop the backend that took the text (as a rolling restart does): the next
                # text from the same address is answered by the other one, nothing lost.
                before = {p.name: await _sms_answered(http, p) for p in (hubs.a, hubs.b)}
                took, other = (hubs.a, hubs.b) if before[hubs.a.name] else (hubs.b, hubs.a)
                took.stop()
                params = _sms_params("d", "Still late")
                async with http.post(
                    f"{public_url}{SMS_PATH}",
                    data=params,
                    headers={"X-Twilio-Signature": sign(public_url + SMS_PATH, params)},
                ) as response:
                    assert response.status == 200, await response.text()
                assert await _sms_answered(http, other) == before[other.name] + 1
        async with hubs.db.reader() as session:
            stored = (await session.scalars(select(Message.id))).all()
        assert len(stored) == 3  # two texts and the email, each once
