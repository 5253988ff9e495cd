"""Private server processes for tests: mosquitto, influxd (1.x) and victoria-metrics;
and in-process receivers of notifications: a webhook (aiohttp) and a mail relay (aiosmtpd).

Each runs on a free loopback port in its own temporary folder, so tests can stop,
restart and break it without touching the machine's own services.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from simulators.secure import (
    PLAIN_LISTENER,
    SECURE_LISTENER,
    SHIPPED_ACL,
    SHIPPED_MOSQUITTO_CONF,
    SHIPPED_SECURE_CONF,
    find_binary,
    password_file,
    private_copy_of_conf,
)

STARTUP_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unshared_port() -> int:
    """A free TCP port below the kernel's ephemeral range, which ``free_port`` (the kernel's
    choice) never hands out: a test can stop its server and count on connections to the
    port being refused, with no other server of the suite taking it meanwhile."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(max(1024, low - 8192), low), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = STARTUP_TIMEOUT_S
) -> None:
    """Block until ``port`` accepts connections, or fail with the server's log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            if _listens(proc.pid, port):
                return
            # Another process took the port between free_port and the server's bind: this
            # server fails to bind and exits (above), and its tests must not talk to that one.
        time.sleep(0.05)
    raise RuntimeError(
        f"port {port} not open after {timeout_s} s:\n{log.read_text(errors='replace')[-4000:]}"
    )


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on TCP ``port`` (Linux /proc)."""
    suffix = f":{port:04X}"
    inodes = {
        fields[9]
        for table in ("/proc/net/tcp", "/proc/net/tcp6")
        for line in Path(table).read_text().splitlines()[1:]
        if (fields := line.split())[1].endswith(suffix) and fields[3] == "0A"  # 0A: LISTEN
    }
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd).removeprefix("socket:[").removesuffix("]") in inodes:
                    return True
    return False


@dataclass
class Server:
    """A private server process. ``stop``/``start`` let a test take it away and bring it back."""

    workdir: Path
    port: int
    argv: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        """The server's combined output."""
        return self.workdir / "server.log"

    def start(self) -> None:
        """Start (or restart) the process and wait for its port."""
        out = self.log.open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir)
        out.close()
        wait_for_port(self.port, self.proc, self.log)

    def stop(self) -> None:
        """Terminate the process and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class Mosquitto(Server):
    """A private MQTT broker."""

    host: str = "127.0.0.1"
    scheme: str = "mqtt"

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>`` (``mqtts://`` for a TLS listener)."""
        return f"{self.scheme}://{self.host}:{self.port}"


@contextlib.contextmanager
def mosquitto(workdir: Path, *, access: str = "allow_anonymous true\n") -> Iterator[Mosquitto]:
    """A private mosquitto, no persistence to disk; ``access`` is the listener's settings
    beyond its port (anonymous clients by default; TLS, a password file ...)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n{access}persistence false\nmax_queued_messages 100000\nlog_dest stdout\n"
    )
    server = Mosquitto(workdir, port, [find_binary("mosquitto", "/usr/sbin/mosquitto"), "-c", str(conf)])
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def readable_copies(*files: Path) -> Iterator[list[Path]]:
    """Copies of ``files`` that mosquitto can read.

    Run as root, mosquitto reads its certificates and password file after dropping to its
    own user, which cannot enter pytest's private temporary folders.
    """
    public = Path(tempfile.mkdtemp(prefix="wardd-mosquitto-"))
    try:
        os.chmod(public, 0o755)
        copies = []
        for source in files:
            copy = public / source.name
            shutil.copy(source, copy)
            os.chmod(copy, 0o644)
            copies.append(copy)
        yield copies
    finally:
        shutil.rmtree(public, ignore_errors=True)


@contextlib.contextmanager
def tls_mosquitto(workdir: Path, *, ca: Path, cert: Path, key: Path) -> Iterator[Mosquitto]:
    """A private mosquitto with one TLS listener (TLS 1.2 and up) and anonymous clients."""
    with readable_copies(ca, cert, key) as (ca_file, cert_file, key_file):
        tls = f"cafile {ca_file}\ncertfile {cert_file}\nkeyfile {key_file}\ntls_version tlsv1.2\n"
        with mosquitto(workdir, access=tls + "allow_anonymous true\n") as server:
            yield server


@contextlib.contextmanager
def shipped_mosquitto(
    workdir: Path,
    conf: Path = SHIPPED_MOSQUITTO_CONF,
    *,
    listener: str = PLAIN_LISTENER,
    files: Mapping[str, Path] | None = None,
    scheme: str = "mqtt",
) -> Iterator[Mosquitto]:
    """A private mosquitto running the shipped configuration (see ``private_copy_of_conf``).

    Persistence is on, so ``stop``/``start`` keeps sessions and queued messages as a
    real broker restart would. Run as root, mosquitto drops to its own user, which
    cannot enter pytest's private (0700) folders: the persistence folder is therefore a
    world-writable temporary folder of its own, removed at the end.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    persistence_dir = Path(tempfile.mkdtemp(prefix="wardd-mosquitto-"))
    os.chmod(persistence_dir, 0o777)  # mosquitto's own user writes here (see above)
    private = workdir / "mosquitto.conf"
    private.write_text(
        private_copy_of_conf(
            conf.read_text(), port=port, persistence_dir=persistence_dir, listener=listener, files=files
        )
    )
    server = Mosquitto(
        workdir, port, [find_binary("mosquitto", "/usr/sbin/mosquitto"), "-c", str(private)], scheme=scheme
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(persistence_dir, ignore_errors=True)


@contextlib.contextmanager
def secure_mosquitto(
    workdir: Path,
    *,
    ca: Path,
    cert: Path,
    key: Path,
    users: Mapping[str, str],
    acl: Path = SHIPPED_ACL,
    conf: Path = SHIPPED_SECURE_CONF,
) -> Iterator[Mosquitto]:
    """A private mosquitto running the shipped secure configuration and ``acl`` (the
    shipped ACL file by default, as it is), with the TLS certificate ``cert``/``key``
    signed by ``ca`` and a password file for ``users`` (name: password).

    Only the listener port, the persistence folder, the log and the five file paths
    are replaced (``private_copy_of_conf``); the server's URL is ``mqtts://``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    passwords = password_file(workdir / "passwd", users)
    with readable_copies(ca, cert, key, passwords, acl) as (ca_file, cert_file, key_file, pw_file, acl_file):
        files = {
            "cafile": ca_file,
            "certfile": cert_file,
            "keyfile": key_file,
            "password_file": pw_file,
            "acl_file": acl_file,
        }
        with shipped_mosquitto(
            workdir, conf, listener=SECURE_LISTENER, files=files, scheme="mqtts"
        ) as server:
            yield server


@dataclass
class Influxd(Server):
    """A private InfluxDB 1.x; ``query`` runs InfluxQL against it."""

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def query(self, db: str, q: str, epoch: str | None = None) -> list[dict[str, Any]]:
        """Rows of an InfluxQL query as dicts (``time`` in RFC 3339, or an integer with ``epoch="ns"``)."""
        params = urllib.parse.urlencode({"db": db, "q": q, **({"epoch": epoch} if epoch else {})})
        with urllib.request.urlopen(f"{self.url}/query?{params}", timeout=10) as resp:
            body = json.load(resp)
        rows: list[dict[str, Any]] = []
        for result in body.get("results", []):
            for series in result.get("series", []):
                for values in series["values"]:
                    rows.append(
                        {**series.get("tags", {}), **dict(zip(series["columns"], values, strict=True))}
                    )
        return rows

    def create_database(self, db: str, wait_s: float = 10.0) -> None:
        """``CREATE DATABASE``, until ``SHOW DATABASES`` lists it.

        InfluxDB answers a failed statement with 200 and the error in the body, so the
        answer alone proves nothing: once, in a loaded full run, a write right after
        creating the database got 404 "database not found" (not reproduced since).
        """
        data = urllib.parse.urlencode({"q": f'CREATE DATABASE "{db}"'}).encode()
        deadline = time.monotonic() + wait_s
        while True:
            with urllib.request.urlopen(f"{self.url}/query", data=data, timeout=10) as resp:
                answer = resp.read().decode(errors="replace")
            if db in {row["name"] for row in self.query("", "SHOW DATABASES")}:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"influxd on port {self.port} did not create {db!r}: {answer}")
            time.sleep(0.1)


@contextlib.contextmanager
def influxd(workdir: Path, *, port: int | None = None) -> Iterator[Influxd]:
    """A private influxd 1.x with its data in ``workdir`` (HTTP on ``port``, a free one by default)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, rpc_port = port or free_port(), free_port()
    conf = workdir / "influxdb.conf"
    conf.write_text(
        f"""reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{workdir}/meta"
[data]
  dir = "{workdir}/data"
  wal-dir = "{workdir}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
"""
    )
    server = Influxd(workdir, port, [find_binary("influxd"), "-config", str(conf)])
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class VictoriaMetrics(Server):
    """A private victoria-metrics; ``export`` reads series back as JSON lines."""

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def export(self, match: str, wait_s: float = 10.0) -> list[dict[str, Any]]:
        """``/api/v1/export`` for a series selector, e.g. ``{__name__="vitals_temp_c"}``.

        New series become searchable a moment after they are written (the index is
        flushed in the background), so an empty answer is retried for ``wait_s``.
        """
        params = urllib.parse.urlencode({"match[]": match})
        deadline = time.monotonic() + wait_s
        while True:
            urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).close()
            with urllib.request.urlopen(f"{self.url}/api/v1/export?{params}", timeout=10) as resp:
                # JSON leaves U+2028 raw inside strings, so split on "\n" only, not splitlines().
                rows = [json.loads(line) for line in resp.read().decode().split("\n") if line.strip()]
            if rows or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)


@contextlib.contextmanager
def victoria_metrics(workdir: Path, *, tls: tuple[Path, Path] | None = None) -> Iterator[VictoriaMetrics]:
    """A private victoria-metrics keeping data for 100 years (test data is dated in the past).

    ``tls``: ``(certificate, key)`` to serve HTTPS instead of HTTP.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    https = [] if tls is None else ["-tls", f"-tlsCertFile={tls[0]}", f"-tlsKeyFile={tls[1]}"]
    server = VictoriaMetrics(
        workdir,
        port,
        [
            find_binary("victoria-metrics"),
            f"-storageDataPath={workdir}/data",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-retentionPeriod=100y",
            "-search.disableCache",
            "-search.latencyOffset=0s",
            "-loggerLevel=ERROR",
            *https,
        ],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Received:
    """One request a ``WebhookServer`` took: when, where, what, and whether its signature held."""

    at: float  # time.monotonic()
    path: str
    delivery: str
    body: dict[str, Any]
    signed: bool


class WebhookServer:
    """An aiohttp server that takes signed notifications on any path (a pager gateway).

    ``stop`` closes its port (connections are refused) and ``start`` opens the same port
    again, so a test can take the receiver away and bring it back. A request whose
    ``X-Wardd-Signature`` does not match its body is answered 401 and recorded unsigned.
    """

    def __init__(self, key: bytes, port: int | None = None) -> None:
        self.key = key
        self.port = port or free_port()
        self.received: list[Received] = []
        self.arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The base URL; receivers add a path."""
        return f"http://127.0.0.1:{self.port}"

    async def _take(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(self.key, body, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(request.headers.get("X-Wardd-Signature", ""), expected)
        self.received.append(
            Received(
                time.monotonic(),
                request.path,
                request.headers.get("X-Wardd-Delivery", ""),
                json.loads(body),
                signed,
            )
        )
        self.arrived.set()
        return web.Response(status=200 if signed else 401, text="ok" if signed else "bad signature")

    async def start(self) -> None:
        """Listen (again) on the port."""
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._take)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        """Close the port: connections are refused until ``start``."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, check: Callable[[list[Received]], bool], timeout_s: float = 20.0) -> None:
        """Wait until ``check(received)`` holds (woken by each request, never by a sleep)."""
        async with asyncio.timeout(timeout_s):
            while not check(self.received):
                self.arrived.clear()
                await self.arrived.wait()


class SmtpServer:
    """aiosmtpd on a fixed port, in its own thread: the ward's mail relay for Apprise's
    ``mailto://``. ``stop`` and ``start`` take it away and bring it back."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.messages: list[tuple[float, list[str], bytes]] = []
        self._controller: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 -- aiosmtpd's hook name
        """Keep the message."""
        self.messages.append((time.monotonic(), list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 OK"

    def start(self) -> None:
        """Listen (again) on the port."""
        from aiosmtpd.controller import Controller  # noqa: PLC0415

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        """Close the port."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@dataclass
class AcmMessage:
    """One ORU^R40 an ``AcmListener`` took, as hl7apy parsed it, and what it answered."""

    at: float  # time.monotonic()
    control_id: str  # MSH-10
    message_type: str  # MSH-9
    profile: str  # MSH-21.1
    patient: str  # PID-3
    ward: str  # PV1-3.1
    bed: str  # PV1-3.3
    alert: str  # OBR-3.1: the alert's id and update counter
    parent: str  # OBR-29.2.1: the start message's OBR-3.1 ("" on the start)
    facets: dict[str, str]  # OBX-4 -> OBX-5
    codes: dict[str, str]  # OBX-4 -> OBX-3.1
    flags: str  # OBX-8 of facet 1: abnormality~priority~source
    answer: str  # AA, AE or AR

    @property
    def phase(self) -> str:
        """The event phase (facet 3)."""
        return self.facets.get("1.0.0.0.3", "")

    @property
    def condition(self) -> str:
        """The condition (facet 1's value)."""
        return self.facets.get("1.0.0.0.1", "")


class AcmListener:
    """An alert manager (IHE PCD ACM) on a fixed port: MLLP frames (python-hl7's streams),
    each message parsed segment by segment with hl7apy (v2.6 datatypes; hl7apy knows no
    ORU_R40 structure) and answered with an hl7apy ``ACK``: ``answer(message)`` says AA,
    AE or AR (AA by default), or ``None`` for no answer at all (a hung peer).

    One connection carries many messages, unless ``close_after_answer`` (as hl7apy's own
    ``MLLPServer`` does: one message per connection). ``stop`` closes the port and every
    connection (refused until ``start``), as ``WebhookServer`` does.
    """

    def __init__(self, port: int | None = None, *, tls: Any = None) -> None:
        self.port = port or free_port()
        self.tls = tls  # an ssl.SSLContext for MLLP over TLS
        self.received: list[AcmMessage] = []
        self.answer: Callable[[AcmMessage], str | None] = lambda _message: "AA"
        self.connections = 0
        self.close_after_answer = False
        self.arrived = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[Any] = set()

    async def start(self) -> None:
        """Listen (again) on the port."""
        import hl7.mllp  # noqa: PLC0415

        self._server = await hl7.mllp.start_hl7_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True, ssl=self.tls
        )

    async def stop(self) -> None:
        """Close the port and the open connections."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: Any, writer: Any) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                try:
                    raw = await reader.readblock()
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                message = self._parse(raw.decode("utf-8"))
                code = self.answer(message)
                if code is None:
                    continue  # no answer: the sender times out
                message.answer = code
                self.received.append(message)
                self.arrived.set()
                writer.writeblock(self._ack(message.control_id, code).encode("utf-8"))
                await writer.drain()
                if self.close_after_answer:
                    return
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    def _parse(text: str) -> AcmMessage:
        from hl7apy.parser import parse_segments  # noqa: PLC0415

        segments = parse_segments(text, version="2.6")
        by_name: dict[str, list[Any]] = {}
        for segment in segments:
            by_name.setdefault(segment.name, []).append(segment)
        msh, pid, pv1, obr = by_name["MSH"][0], by_name["PID"][0], by_name["PV1"][0], by_name["OBR"][0]
        facets = {o.obx_4.to_er7(): o.obx_5.to_er7() for o in by_name["OBX"]}
        codes = {o.obx_4.to_er7(): o.obx_3.obx_3_1.to_er7() for o in by_name["OBX"]}
        first = next(o for o in by_name["OBX"] if o.obx_4.to_er7().endswith(".1"))
        return AcmMessage(
            at=time.monotonic(),
            control_id=msh.msh_10.to_er7(),
            message_type=msh.msh_9.to_er7(),
            profile=msh.msh_21.to_er7().split("^")[0],
            patient=pid.pid_3.to_er7(),
            ward=pv1.pv1_3.pv1_3_1.to_er7(),
            bed=pv1.pv1_3.pv1_3_3.to_er7(),
            alert=obr.obr_3.obr_3_1.to_er7(),
            parent=obr.obr_29.to_er7().split("^")[1].split("&")[0] if obr.obr_29.to_er7() else "",
            facets=facets,
            codes=codes,
            flags="~".join(f.to_er7() for f in first.children.get("OBX_8")),
            answer="",
        )

    @staticmethod
    def _ack(control_id: str, code: str) -> str:
        from hl7apy.core import Message  # noqa: PLC0415

        ack = Message("ACK", version="2.6")
        ack.msh.msh_3 = "AM"
        ack.msh.msh_9 = "ACK^R40^ACK"
        ack.msh.msh_10 = f"A-{control_id}"
        ack.msh.msh_11 = "P"
        ack.msa.msa_1 = code
        ack.msa.msa_2 = control_id
        if code != "AA":
            ack.add_segment("ERR")
            ack.err.err_3 = "207^Application internal error^HL70357"
            ack.err.err_4 = "E"
            ack.err.err_8 = f"the test alert manager says {code}"
        return str(ack.to_er7())

    async def wait_for(self, check: Callable[[list[AcmMessage]], bool], timeout_s: float = 20.0) -> None:
        """Wait until ``check(received)`` holds (woken by each message, never by a sleep)."""
        async with asyncio.timeout(timeout_s):
            while not check(self.received):
                self.arrived.clear()
                await self.arrived.wait()
