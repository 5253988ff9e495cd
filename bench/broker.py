"""A private mosquitto per round, from the shipped ``config/mosquitto.conf``.

The shipped file sizes the broker so that it does not drop (400,000 queued messages,
200 MiB, 1,000 in flight, QoS 1 sessions kept 7 days); the harness replaces the same
three machine-specific lines as the tests (``tests/servers.py``) and turns disk
persistence off: a broker snapshot of a 60 MB queue at an arbitrary moment of a round
would be noise in the figures, and no round restarts the broker.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from simulators.secure import SHIPPED_MOSQUITTO_CONF, find_binary, private_copy_of_conf
from tests.servers import Mosquitto, free_port


def broker_conf(port: int, workdir: Path) -> str:
    """The shipped configuration on ``port``, logging to stdout, without disk persistence."""
    text = private_copy_of_conf(SHIPPED_MOSQUITTO_CONF.read_text(), port=port, persistence_dir=workdir)
    text, count = re.subn(r"^persistence\s+true\s*$", "persistence false", text, flags=re.MULTILINE)
    if count != 1:
        raise ValueError("config/mosquitto.conf has no 'persistence true' line")
    return text


@contextlib.contextmanager
def broker(workdir: Path) -> Iterator[Mosquitto]:
    """A started private mosquitto on a free loopback port; stopped at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(broker_conf(port, workdir))
    server = Mosquitto(workdir, port, [find_binary("mosquitto", "/usr/sbin/mosquitto"), "-c", str(conf)])
    try:
        server.start()
        yield server
    finally:
        server.stop()


def mosquitto_version() -> str:
    """``mosquitto version 2.0.x`` as the binary reports it."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [find_binary("mosquitto", "/usr/sbin/mosquitto"), "-h"],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp,
        )
    return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else "?"
