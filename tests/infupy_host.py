"""An independent host: infupy 2022.1.11, unmodified, on a serial port.

``python -m tests.infupy_host alaris PORT READS`` opens the port with infupy's
``AlarisComm`` and ``AlarisSyringe`` (which start its own remote-enable keep-alive),
waits for that keep-alive to have run, reads the rate and the volume infused
``READS`` times each, stops the keep-alive (infupy then sends its DISABLED commands)
and prints one JSON line: ``{"rates": [...], "volumes": [...], "code": "..."}``.

``python -m tests.infupy_host fresenius PORT READS`` opens the port with infupy's
``FreseniusComm`` and ``FreseniusBase`` (a session with the base), lists the docked
modules, connects each with ``connectSyringe`` and reads its rate and volume
``READS`` times, then prints ``{"modules": [...], "rates": {...}, "volumes": {...}}``.
infupy's reader answers the base's ENQ and acknowledges every frame by itself.

It runs in its own process because infupy's reader thread blocks on the port
forever; the process ends with ``os._exit`` once it has printed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from infupy.backends.alaris import AlarisComm, AlarisSyringe, Looper
from infupy.backends.common import CommandError
from infupy.backends.fresenius import FreseniusBase, FreseniusComm

# infupy's keep-alive sends its first remote enable one second after the syringe is
# made, and the simulator answers no query before that: reads start after it.
KEEPALIVE_START_S = 2.5
STOP_WAIT_S = 5.0


def _read(read: object) -> str | None:
    try:
        value = read()  # type: ignore[operator]
    except CommandError:
        return None
    return bytes(value).decode("ascii", "backslashreplace")


def fresenius(port: str, reads: int) -> dict[str, object]:
    """A base, its modules, and each module's rate (mL/h) and volume (mL) as infupy reads them."""
    base = FreseniusBase(FreseniusComm(port))
    modules = base.listModules()
    rates: dict[str, list[float]] = {}
    volumes: dict[str, list[float]] = {}
    for index in modules:
        syringe = base.connectSyringe(index)
        rates[str(index)] = [float(syringe.readRate()) for _ in range(reads)]
        volumes[str(index)] = [float(syringe.readVolume()) for _ in range(reads)]
    return {"modules": modules, "rates": rates, "volumes": volumes}


def main(argv: list[str]) -> int:
    """Read through infupy; print what it got."""
    if argv[0] == "fresenius":
        result = fresenius(argv[1], int(argv[2]))
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
        os._exit(0)
    port, reads = argv[1], int(argv[2])
    comm = AlarisComm(port)
    syringe = AlarisSyringe(comm)
    time.sleep(KEEPALIVE_START_S)
    rates: list[str | None] = []
    volumes: list[str | None] = []
    for _ in range(reads):
        rates.append(_read(syringe.readRate))
        volumes.append(_read(syringe.readVolume))
    code = bytes(syringe.securitycode).decode("ascii")
    syringe.stopKeepAlive()
    for thread in threading.enumerate():
        if isinstance(thread, Looper):
            # It sends REMOTE_CTRL and REMOTE_CFG DISABLED before it ends.
            thread.join(STOP_WAIT_S)
    sys.stdout.write(json.dumps({"rates": rates, "volumes": volumes, "code": code}) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
