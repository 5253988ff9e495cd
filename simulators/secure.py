"""A locked-down broker made for one run (``wardd demo --secure``), and what the tests share with it.

The broker is Debian's mosquitto running the shipped ``config/mosquitto-secure.conf``
with only its machine-specific lines replaced (``private_copy_of_conf``): a private CA
and server certificate (``simulators.tls_certs``), a password file made by
``mosquitto_passwd`` with random passwords, and an ACL made of the shipped
``config/mosquitto-acl.conf`` (its patterns and the daemon's lines, as shipped) plus
the run's own station and devices (``run_acl``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from daemon.errors import WarddError
from daemon.resources import EXAMPLES_DIR
from simulators import tls_certs
from simulators.broker import answers, free_port

CONFIG_DIR = EXAMPLES_DIR
SHIPPED_MOSQUITTO_CONF = CONFIG_DIR / "mosquitto.conf"
"""The broker configuration the project ships for a ward (``config/mosquitto.conf``)."""
SHIPPED_SECURE_CONF = CONFIG_DIR / "mosquitto-secure.conf"
"""The locked-down broker configuration (``config/mosquitto-secure.conf``)."""
SHIPPED_ACL = CONFIG_DIR / "mosquitto-acl.conf"
"""Its topic access list, with the example users (``config/mosquitto-acl.conf``)."""

PLAIN_LISTENER = r"^listener\s+1883\s+127\.0\.0\.1\s*$"
"""The listener line of ``config/mosquitto.conf``."""
SECURE_LISTENER = r"^listener\s+8883\s*$"
"""The listener line of ``config/mosquitto-secure.conf``."""

EXAMPLE_USERS_START = "# --- Nursing stations"
"""Where the shipped ACL's example users begin: what comes before is kept for every site."""

STATION = "station-demo"
DEVICES = "devices-demo"
DAEMON = "wardd"


class SetupError(WarddError):
    """What a private broker needs is missing (a program, a shipped file)."""


def find_binary(name: str, *candidates: str) -> str:
    """The path of a program, looking in sbin too (Debian puts mosquitto there)."""
    for candidate in (name, *candidates):
        path = shutil.which(candidate) or (candidate if Path(candidate).exists() else None)
        if path:
            return path
    raise SetupError(f"{name} is not installed (Debian: apt-get install {name.split('_', maxsplit=1)[0]})")


def private_copy_of_conf(
    text: str,
    *,
    port: int,
    persistence_dir: Path,
    listener: str = PLAIN_LISTENER,
    files: Mapping[str, Path] | None = None,
) -> str:
    """``text`` (a mosquitto.conf) with only the machine-specific lines replaced.

    The substitution, and nothing else: the line matching ``listener`` (by default
    ``listener 1883 127.0.0.1``) becomes ``listener <port> 127.0.0.1``,
    ``persistence_location`` names ``persistence_dir``, every ``log_dest`` line becomes
    ``log_dest stdout`` (the server log), and each directive named in ``files`` (e.g.
    ``cafile``, ``password_file``) names the given path instead. Every other directive
    (persistence, autosave, queue limits, session expiry, in-flight window, packet size,
    TLS version, anonymous access) runs as shipped. Fails if one of these lines is
    missing, or a file directive appears more than once, so a reworded shipped file
    cannot silently run on defaults.
    """
    replacements = [
        (listener, f"listener {port} 127.0.0.1", False),
        (r"^persistence_location\s+\S.*$", f"persistence_location {persistence_dir}/", False),
        (r"^log_dest\s+\S.*$", "log_dest stdout", False),
        *((rf"^{re.escape(name)}\s+\S.*$", f"{name} {path}", True) for name, path in (files or {}).items()),
    ]
    for pattern, replacement, once in replacements:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        if count == 0 or (once and count > 1):
            raise ValueError(f"mosquitto.conf has {count} lines matching {pattern!r}")
    return text


def password_file(path: Path, users: Mapping[str, str]) -> Path:
    """A mosquitto password file at ``path`` for ``users`` (name: password), made by
    ``mosquitto_passwd -b`` as a site would."""
    tool = find_binary("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
    path.unlink(missing_ok=True)
    for index, (user, password) in enumerate(users.items()):
        create = ["-c"] if index == 0 else []
        # A program found above, with arguments made here: nothing from outside.
        subprocess.run(  # noqa: S603
            [tool, *create, "-b", str(path), user, password], check=True, capture_output=True
        )
    return path


def run_acl(shipped: str, *, ward: str, station: str = STATION, devices: str = DEVICES) -> str:
    """The shipped ACL's patterns and daemon lines, then ``ward``'s station and devices.

    The run's simulated monitors, nurses and pharmacy publish over one connection, so
    they share one user, as a monitor gateway would: it may publish the ward's inputs
    and nothing else. (Per-bed monitor users are what the shipped example shows and
    what the tests check.)
    """
    head, found, _ = shipped.partition(EXAMPLE_USERS_START)
    if not found:
        raise SetupError(f"{SHIPPED_ACL} no longer has the line {EXAMPLE_USERS_START!r}")
    return (
        head
        + f"""# --- This run's users ------------------------------------------------------------------
# The station reads the ward's alerts and acknowledges through the patterns above.
user {station}
topic read ward/{ward}/bed/+/alerts
topic read ward/{ward}/bed/+/alerts/+
topic read ward/{ward}/bed/+/alerts/+/ack/reply
topic read ward/{ward}/escalations

# The simulated devices: monitors, the nurses' entry device and pharmacy, as one gateway.
user {devices}
topic write ward/{ward}/bed/+/vitals
topic write ward/{ward}/bed/+/observations
topic write ward/{ward}/bed/+/infusion/bag
"""
    )


def _hand_to_mosquitto(paths: list[Path]) -> None:
    """Run as root, mosquitto drops to its own user before it reads its files: give them to it.

    Otherwise it runs as us and reads them as they are.
    """
    if os.geteuid() != 0:
        return
    try:
        account = pwd.getpwnam("mosquitto")
    except KeyError:
        return  # no such user: mosquitto then stays root
    for path in paths:
        os.chown(path, account.pw_uid, account.pw_gid)


@dataclass(frozen=True)
class SecureBroker:
    """A running locked-down broker: where it is, the CA that signed it, and its logins."""

    url: str
    ca_file: Path
    passwords: Mapping[str, str]


@contextlib.asynccontextmanager
async def secure_broker(
    folder: Path, *, ward: str, startup_timeout_s: float = 15.0
) -> AsyncIterator[SecureBroker]:
    """Start mosquitto with the shipped secure configuration for ``ward`` (prefix ``ward``).

    ``folder`` receives the CA and the broker's certificate; the files mosquitto reads
    go to a folder of their own that its user can enter (run as root, mosquitto reads
    them after dropping to that user), removed at the end with the persistence folder.
    """
    mosquitto = find_binary("mosquitto", "/usr/sbin/mosquitto")
    find_binary("openssl")
    for shipped in (SHIPPED_SECURE_CONF, SHIPPED_ACL):
        if not shipped.is_file():
            raise SetupError(
                f"{shipped} is missing: run from a checkout of wardd (README, Locking the broker down)"
            )
    ca = tls_certs.authority(folder / "pki", "wardd-demo-ca", days=30)
    cert = tls_certs.server_cert(folder / "pki", ca, name="broker", days=30)
    passwords = {user: secrets.token_urlsafe(18) for user in (DAEMON, STATION, DEVICES)}
    # mkdtemp: a folder only its owner can enter; handed to mosquitto's user when it drops to it.
    public = Path(tempfile.mkdtemp(prefix="wardd-secure-"))
    try:
        persistence = public / "data"
        persistence.mkdir(mode=0o700)
        files = {
            "cafile": Path(shutil.copy(ca.cert, public / "ca.pem")),
            "certfile": Path(shutil.copy(cert.cert, public / "broker.pem")),
            "keyfile": Path(shutil.copy(cert.key, public / "broker.key")),
            "password_file": password_file(public / "passwd", passwords),
            "acl_file": public / "acl.conf",
        }
        files["acl_file"].write_text(run_acl(SHIPPED_ACL.read_text(), ward=ward))
        _hand_to_mosquitto([public, persistence, *files.values()])
        port = free_port()
        conf = public / "mosquitto.conf"
        conf.write_text(
            private_copy_of_conf(
                SHIPPED_SECURE_CONF.read_text(),
                port=port,
                persistence_dir=persistence,
                listener=SECURE_LISTENER,
                files=files,
            )
        )
        with (folder / "mosquitto.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(mosquitto, "-c", str(conf), stdout=log, stderr=log)
        try:
            async with asyncio.timeout(startup_timeout_s):
                while not answers("127.0.0.1", port):
                    if proc.returncode is not None:
                        raise SetupError(
                            f"mosquitto exited with {proc.returncode}: "
                            + (folder / "mosquitto.log").read_text(errors="replace")[-2000:]
                        )
                    await asyncio.sleep(0.05)
            yield SecureBroker(f"mqtts://127.0.0.1:{port}", ca.cert, passwords)
        finally:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
    finally:
        shutil.rmtree(public, ignore_errors=True)
