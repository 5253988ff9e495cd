"""The systems under test, each a process started and stopped from outside.

- ``Wardd``: ``wardd run --config <generated toml>`` (N beds, no pumps, storage off or on
  a private VictoriaMetrics).
- ``NodeRed``: Node-RED 4, headless, a three-node flow ``mqtt in`` → ``function`` →
  ``mqtt out`` doing the same fever check (``bench.nodered``).
- ``Bare``: the floor of what the daemon can do on aiomqtt (``bench.bare``).
- ``wardd-floor`` (``--floor``): ``Wardd`` without its clinical rules (``bench.floor``),
  what the daemon's own path costs.

All three subscribe with QoS 1 on a persistent session under a fixed client id, so a
stopped system's messages wait at the broker. ``stop`` is SIGTERM, then SIGKILL after
a timeout; every process started is stopped.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import floor, nodered
from bench.load import WARD, Ward
from daemon.partition import partition_of
from tests.servers import free_port

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Storage:
    """Where wardd stores points: ``None`` url means ``api = "none"`` (line protocol in its spool folder)."""

    url: str | None = None


@dataclass
class Process:
    """A system under test: one subprocess with its log.

    ``start`` returns at once; ``stop`` (SIGTERM, then SIGKILL after a timeout) leaves
    no process behind and may be called any number of times.
    """

    name: str
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # time.time() at spawn

    def start(self) -> None:
        """Start the process (returns at once, not waiting for it to be ready)."""
        raise NotImplementedError

    @property
    def log(self) -> Path:
        """Combined output of every start."""
        return self.workdir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Start ``argv`` in ``workdir``, output appended to ``log``."""
        if self.pid is not None:
            raise RuntimeError(f"{self.name} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.started_at = time.time()
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def check_alive(self) -> None:
        """Fail with the end of the log if the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")


WARDD_WORKERS: tuple[int, ...] = (1,)
"""The ``daemon.workers`` counts measured (``--workers``): one system each (``wardd_name``)."""


def wardd_name(workers: int, *, floor: bool = False) -> str:
    """The system name of wardd with ``workers`` workers: ``wardd``, ``wardd-w2`` ...;
    ``floor``: without its rules, ``wardd-floor``, ``wardd-floor-w2`` ..."""
    base = "wardd-floor" if floor else "wardd"
    return base if workers == 1 else f"{base}-w{workers}"


def partition_beds(ward: Ward) -> list[str]:
    """A bed of each partition of every wardd measured (``--workers``), the first bed first.

    The same beds for every system, so that all get the same probes and bursts.
    """
    picked = {ward.bed_ids[0]: None}
    for count in WARDD_WORKERS:
        first = {partition_of(WARD, ward.bed_ids[0], count): ward.bed_ids[0]}
        for bed in ward.bed_ids:
            first.setdefault(partition_of(WARD, bed, count), bed)
        picked.update(dict.fromkeys(first.values()))
    return list(picked)


def base_name(name: str) -> str:
    """The system a name stands for: ``wardd`` for ``wardd-w2``, otherwise the name itself."""
    return re.sub(r"-w\d+$", "", name)


def workers_of(name: str) -> int:
    """``daemon.workers`` of a wardd system name (1 unless it ends in ``-w<N>``)."""
    match = re.search(r"-w(\d+)$", name)
    return int(match.group(1)) if match else 1


def wardd_config(
    path: Path,
    *,
    url: str,
    ward: Ward,
    client_id: str,
    storage: Storage,
    state_dir: Path,
    workers: int = 1,
    health_port: int | None = None,
) -> Path:
    """A wardd config for ``ward``: every bed on the 14-day protocol since 12 h, no pumps.

    Fever rules without noise control (one sample at >= 38.0 °C raises ``FEVER``, the
    next one below 37.7 °C ends it), so that every fever sample is an alert to time.
    Telemetry staleness is a day away, so that no bed raises ``TELEMETRY_STALE`` when a
    figure pauses its load. Everything else is the default, the health probes off
    unless ``health_port`` is given.
    """
    health = "" if health_port is None else f"\n[health]\nport = {health_port}\n"
    start = (datetime.now(UTC) - timedelta(hours=12)).isoformat()
    influx = (
        f'api = "v2"\nurl = "{storage.url}"\nbucket = "wardd"\ntoken.value = "bench"\n'
        if storage.url
        else 'api = "none"\n'
    )
    beds = "".join(
        f'\n[[beds]]\nward = "{WARD}"\nid = "{bed}"\npatient = "P-{bed}"\nweight_kg = 63\n'
        f'height_cm = 165\nprotocol = "ssc-14d"\nprotocol_start = "{start}"\n'
        for bed in ward.bed_ids
    )
    path.write_text(
        f"""[daemon]
state_dir = "{state_dir}"
workers = {workers}

[mqtt]
url = "{url}"
client_id = "{client_id}"
topic_prefix = "{ward.prefix}"
reconnect_min_s = 0.1
reconnect_max_s = 1.0

[influx]
{influx}
[thresholds.vitals]
confirm_samples = 1
fever_delay_s = 0.0
fever_clear_s = 0.0
telemetry_stale_s = 86400.0
{health}{beds}"""
    )
    return path


class Wardd(Process):
    """``wardd run`` as a subprocess (``python -m daemon run``)."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        url: str,
        ward: Ward,
        storage: Storage | None = None,
        probes: bool = False,
    ) -> None:
        """``probes``: serve the health probes (``health_port``), for ``alert_latency``."""
        super().__init__(name, workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        # Without its rules, but at the probed beds: their alerts say when it is ready and done.
        self.ruled_beds = partition_beds(ward) if base_name(name) == "wardd-floor" else None
        self.health_port = free_port() if probes else None
        self.config = wardd_config(
            workdir / "ward.toml",
            url=url,
            ward=ward,
            client_id=f"wardd-{ward.prefix}",
            storage=storage or Storage(),
            state_dir=workdir / "state",
            workers=workers_of(name),
            health_port=self.health_port,
        )

    def start(self) -> None:
        """Start the daemon (``bench.floor`` for ``wardd-floor``)."""
        if self.ruled_beds is None:
            self.spawn([sys.executable, "-m", "daemon", "run", "--config", str(self.config)])
        else:
            self.spawn(
                [sys.executable, "-m", "bench.floor", "run", "--config", str(self.config)],
                env={"PYTHONPATH": str(REPO), floor.RULED_BEDS_ENV: ",".join(self.ruled_beds)},
            )

    def connected_at(self) -> float | None:
        """When the current run logged ``MQTT connected`` (every subscription done), as time.time()."""
        for line in self.log.read_text(errors="replace").splitlines():
            if "MQTT connected" in line:
                stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")  # noqa: DTZ007 -- local time, as logged
                at = stamp.timestamp()
                if at >= self.started_at - 1:
                    return at
        return None


class NodeRed(Process):
    """Node-RED 4 running the generated flow (``bench.nodered``)."""

    def __init__(self, name: str, workdir: Path, *, url: str, ward: Ward) -> None:
        super().__init__(name, workdir)
        self.argv = nodered.prepare(workdir, url=url, ward=ward, client_id=f"nodered-{ward.prefix}")

    def start(self) -> None:
        """Start node."""
        self.spawn(self.argv)


class Bare(Process):
    """The bare aiomqtt loop (``python -m bench.bare``)."""

    def __init__(self, name: str, workdir: Path, *, url: str, ward: Ward) -> None:
        super().__init__(name, workdir)
        self.argv = [
            sys.executable,
            "-m",
            "bench.bare",
            "--url",
            url,
            "--client-id",
            f"bare-{ward.prefix}",
            "--filter",
            ward.vitals_filter,
        ]

    def start(self) -> None:
        """Start the loop."""
        self.spawn(self.argv, env={"PYTHONPATH": str(REPO)})


SYSTEMS: tuple[str, ...] = ("wardd", "node-red", "bare")
"""Names of the systems, in the order of the first round (``set_workers`` puts in one
wardd per count of workers)."""


def set_workers(counts: tuple[int, ...], *, floor: bool = False) -> None:
    """Measure wardd with each of these ``daemon.workers`` counts, as systems of their own;
    ``floor``: ``wardd-floor`` with each as well."""
    global WARDD_WORKERS, SYSTEMS  # noqa: PLW0603 -- the harness's one setting, made once at start
    WARDD_WORKERS = counts
    floors = (wardd_name(n, floor=True) for n in counts) if floor else ()
    SYSTEMS = (*(wardd_name(n) for n in counts), *floors, "node-red", "bare")


def make(
    name: str, workdir: Path, *, url: str, ward: Ward, storage: Storage | None = None, probes: bool = False
) -> Process:
    """A fresh system (its own folder, state and client id) by name; ``probes``: wardd's
    health probes on (the others have none)."""
    if name.startswith("wardd"):
        return Wardd(name, workdir, url=url, ward=ward, storage=storage, probes=probes)
    if name == "node-red":
        return NodeRed(name, workdir, url=url, ward=ward)
    if name == "bare":
        return Bare(name, workdir, url=url, ward=ward)
    raise ValueError(f"unknown system {name!r}")
