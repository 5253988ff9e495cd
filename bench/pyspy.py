"""``--profile``: where wardd's time goes draining a queue (the burst or the catch-up) or under a latency
figure's paced load, sampled by py-spy, by stage.

py-spy (``pip install -e '.[bench]'``) attaches to the running daemon (every thread,
idle ones left out) for the drain of the burst and writes raw collapsed stacks. Each
sample is given to the stage of the innermost frame that belongs to one (so
``json.loads`` called by the vitals decoder counts as decoding, and the event loop
only gets what no daemon or library frame under it claims), except under a checkpoint,
which counts as such whatever runs under it. Shared helpers (``daemon/timefmt.py``,
``json``) belong to their caller's stage. The module is not named
``profile``: that would shadow the standard library's for the scripts in this folder.
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.systems import Process

STAGES = (
    ("daemon/links/mqtt.py", "MQTT client"),
    ("gmqtt", "MQTT client"),
    ("aiomqtt", "MQTT client"),
    ("paho", "MQTT client"),
    ("daemon/telemetry.py", "decoding"),
    ("daemon/mdc.py", "decoding"),
    ("daemon/payloads.py", "decoding"),
    ("daemon/ids.py", "decoding"),
    ("daemon/clinical/observations.py", "decoding"),
    ("daemon/dedup.py", "dedup"),
    ("daemon/rules.py", "rules (engine)"),
    ("daemon/frozen.py", "rules (engine)"),
    ("daemon/clinical/dose", "rules (dose)"),
    ("daemon/clinical/protocols.py", "rules (dose)"),
    ("daemon/clinical/vitals.py", "rules (vital signs)"),
    ("daemon/clinical/watch.py", "rules (vital signs)"),
    ("daemon/clinical/news2.py", "rules (NEWS2)"),
    ("daemon/clinical/crs.py", "rules (CRS/ICANS)"),
    ("daemon/clinical/chart.py", "rules (CRS/ICANS)"),
    ("daemon/pump_rules.py", "rules (pump, technical)"),
    ("daemon/tech_rules.py", "rules (pump, technical)"),
    ("daemon/alerts.py", "alerts"),
    ("daemon/publish.py", "alerts"),
    ("daemon/links/store.py", "store"),
    ("sqlite3", "store"),
    ("daemon/links/influx.py", "influx"),
    ("daemon/points.py", "influx"),
    ("influxdb_client", "influx"),
    ("aiohttp", "influx"),
    ("daemon/app.py", "pipeline (dispatch, logging inputs)"),
    ("daemon/metrics.py", "pipeline (dispatch, logging inputs)"),
    ("daemon/capture.py", "pipeline (dispatch, logging inputs)"),
    ("logging", "logging"),
    ("asyncio", "event loop"),
    ("selectors", "event loop"),
    ("concurrent/futures", "worker threads (waiting)"),
    ("<frozen importlib", "start-up (imports)"),
    ("pydantic", "start-up (config)"),
)
OUTER_STAGES = (("Pipeline.checkpoint (daemon/app.py", "checkpoint (rule states, digests)"),)
"""Stages decided by an outer frame, whatever runs under it (the rules' own code dumps their states)."""
TOP_FUNCTIONS = 12


def stage(stack: list[str]) -> str:
    """The stage of one sampled stack (outermost frame first)."""
    for key, name in OUTER_STAGES:
        if any(key in frame for frame in stack):
            return name
    for frame in reversed(stack):
        for key, name in STAGES:
            if key in frame:
                return name
    return "other"


def split(raw: str) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """Samples per stage, and per innermost function, from py-spy's raw output (``frame;... count`` lines)."""
    stages: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = stack.split(";")
            stages[stage(frames)] += int(count)
            functions[frames[-1]] += int(count)
    return stages, functions


def py_spy() -> str:
    """The py-spy binary (next to this Python, or on PATH)."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install -e '.[bench]'")
    return found


class Profiler:
    """Collects py-spy samples of every profiled drain; ``table`` prints the split."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.samples: collections.Counter[str] = collections.Counter()
        self.functions: collections.Counter[str] = collections.Counter()
        self._n = 0

    @contextmanager
    def attach(self, system: Process) -> Iterator[None]:
        """Sample ``system`` while the block runs."""
        if system.pid is None:
            raise RuntimeError(f"{system.name} is not running")
        self._n += 1
        out = self.workdir / f"py-spy-{self._n}.txt"
        log = (self.workdir / f"py-spy-{self._n}.log").open("wb")
        proc = subprocess.Popen(
            [
                py_spy(),
                "record",
                "--pid",
                str(system.pid),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(out),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield
        finally:
            proc.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            if out.exists():
                stages, functions = split(out.read_text())
                self.samples.update(stages)
                self.functions.update(functions)

    def table(self) -> list[tuple[str, int, float]]:
        """``(stage, samples, percent)``, largest first, then the busiest functions (own samples)."""
        total = sum(self.samples.values()) or 1
        stages = [(name, n, 100 * n / total) for name, n in self.samples.most_common()]
        top = [
            (f"  own: {name}", n, 100 * n / total) for name, n in self.functions.most_common(TOP_FUNCTIONS)
        ]
        return stages + top
