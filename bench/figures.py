"""The figures: what one system does in one round, measured from outside its process.

Each ``measure_*`` function starts a fresh system (own folder, state, persistent
session and topic prefix) on the round's broker, measures it, stops it, and returns
named numbers (``Measured``). Times are wall clock (``time.time()``), shared by the
processes on this machine.

Readiness is functional for every system: a fever probe on bed 1 until its alert
arrives (``bench.load.Prober``). Completion is too: the last message of a burst is
a fever sample whose alert says everything before it has been processed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import systems
from bench.load import (
    FEVER_C,
    Burst,
    Observer,
    Pace,
    PacedLoad,
    Prober,
    Publisher,
    Ward,
    iso_ms,
    make_burst,
    ms_key,
    vitals_payload,
)
from bench.systems import Process, Storage
from daemon.web.probes import read_histogram
from tests.servers import victoria_metrics

READY_TIMEOUT_S = 180.0

Measured = dict[str, float]
"""One run's numbers by metric name."""


@dataclass
class Context:
    """Where a run happens: the round's broker, a folder, sizes, and a unique prefix per run."""

    url: str
    workdir: Path
    sizes: Sizes
    profile: Callable[[Process], AbstractContextManager[None]] | None = None
    broker_pid: int | None = None  # the round's mosquitto, whose CPU the drains also cost
    runs: int = 0  # runs started on this broker so far (each gets its own prefix)

    def ward(self, beds: int) -> Ward:
        """A ward of ``beds`` beds under a topic prefix no other run of this broker uses."""
        self.runs += 1
        return Ward(f"b{self.runs}", beds)


@dataclass(frozen=True)
class Sizes:
    """Sizes of every figure (``--quick`` shrinks them)."""

    burst_beds: int = 1000
    burst_messages: int = 50_000
    latency: tuple[tuple[int, float], ...] = ((1000, 1.0), (5000, 0.2))  # beds, Hz
    latency_s: float = 60.0
    fever_every: int = 100  # one sample in this many is a fever
    memory_beds: tuple[int, ...] = (10, 100, 1000, 5000)
    startup_beds: int = 5000
    catchup_beds: int = 1000
    catchup_s: int = 120  # seconds of 1 Hz vitals queued while the system is away
    storage_messages: int = 50_000
    case_hours: float | None = None  # None: the whole 14 days


def tree(pid: int | None) -> list[int]:
    """``pid`` and its descendants (a wardd with several workers is a supervisor and its workers)."""
    if pid is None:
        return []
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        one = todo.pop()
        out.append(one)
        todo.extend(children.get(one, ()))
    return out


def _status_mb(pid: int | None, field_name: str, source: str = "status") -> float:
    """A memory field of ``/proc/<pid>/<source>`` (``status``, ``smaps_rollup``: ``Name: N kB``
    lines) in MiB (0 when the process is gone)."""
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/{source}").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cpu_one_s(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def cpu_s(pid: int | None) -> float:
    """CPU time (user and system) a process and its running descendants have used so far, in seconds.

    0 when it is gone. On a machine shared with other work this is the steadier figure:
    it counts the system's own work, not the time it waited for a core. The
    descendants are a wardd's workers; each is counted while it runs, so this is
    read before the system stops.
    """
    return sum(_cpu_one_s(one) for one in tree(pid))


def rss_mb(pid: int | None) -> float:
    """Resident memory of a process and its descendants now, in MiB."""
    return sum(_status_mb(one, "VmRSS") for one in tree(pid))


def pss_mb(pid: int | None) -> float:
    """Proportional memory of a process and its descendants now, in MiB: each page shared
    by n of them counts 1/n. The tree's own share of the machine; RSS, added over a
    supervisor and the workers it forked, counts their shared pages once per process.
    (Pages shared with processes outside the tree still count only in part.)"""
    return sum(_status_mb(one, "Pss", "smaps_rollup") for one in tree(pid))


def peak_rss_mb(pid: int | None) -> float:
    """The resident high-water marks (``VmHWM``) of a process and its descendants, added, in MiB.

    With several workers each peaks on its own, so the sum bounds their peak together
    from above.
    """
    return sum(_status_mb(one, "VmHWM") for one in tree(pid))


def peak_rss_largest_mb(pid: int | None) -> float:
    """The largest ``VmHWM`` of a process and its descendants (one worker's peak), in MiB."""
    return max((_status_mb(one, "VmHWM") for one in tree(pid)), default=0.0)


@contextmanager
def running(system: Process) -> Iterator[Process]:
    """The system, stopped at the end whatever happens."""
    try:
        yield system
    finally:
        system.stop()


@contextmanager
def clients(url: str, ward: Ward) -> Iterator[tuple[Publisher, Observer]]:
    """A publisher and an observer subscribed to the ward's alerts; disconnected at the end."""
    publisher = Publisher(url)
    try:
        observer = Observer(url, ward)
        try:
            yield publisher, observer
        finally:
            observer.close()
    finally:
        publisher.close()


def _wait_done(system: Process, observer: Observer, burst: Burst, timeout_s: float) -> float:
    """When the last of the burst's sentinel alerts arrived (every worker done)."""
    deadline = time.monotonic() + timeout_s
    done: list[float] = []
    for sentinel in burst.sentinels:
        while True:
            system.check_alive()
            at = observer.wait_any([sentinel], 1.0)
            if at is not None:
                done.append(at)
                break
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"{system.name}: the burst's last alert on bed {sentinel[0]} did not arrive "
                    f"within {timeout_s:.0f} s"
                )
    return max(done)


def offline_burst(
    ctx: Context, name: str, beds: int, per_bed: int, storage: Storage | None = None
) -> tuple[Measured, Process, Burst, float]:
    """The burst queued at the broker while the system's session is offline, then drained.

    Start (fresh session) → ready → stop → publish the burst → start again → the
    sentinel's alert. The drain time is from the second start to that alert, minus the
    first start's time to ready (same system, same round, idle), so that it counts
    processing, not start-up.
    """
    ward = ctx.ward(beds)
    system = systems.make(
        name, ctx.workdir / f"{ward.prefix}-{name}", url=ctx.url, ward=ward, storage=storage
    )
    with clients(ctx.url, ward) as (publisher, observer), running(system):
        prober = Prober(ward, systems.partition_beds(ward))
        system.start()
        ready_s = prober.wait_ready(publisher, observer, READY_TIMEOUT_S) - system.started_at
        ready_cpu_s = cpu_s(system.pid)
        system.stop()
        burst = make_burst(ward, per_bed, sentinel_beds=systems.partition_beds(ward))
        publish_s = publisher.publish_all(burst.messages)
        broker_cpu_s = cpu_s(ctx.broker_pid)
        system.start()
        if ctx.profile is not None and name.startswith("wardd"):
            with ctx.profile(system):
                end = _wait_done(system, observer, burst, 60 + burst.normal / 50)
        else:
            end = _wait_done(system, observer, burst, 60 + burst.normal / 50)
        total_s = end - system.started_at
        drain_cpu_s = cpu_s(system.pid) - ready_cpu_s
        broker_cpu_s = cpu_s(ctx.broker_pid) - broker_cpu_s
        first = observer.by_key.get((burst.bed, burst.first_key))
        drain_s = max(total_s - ready_s, 1e-3)
        measured = {
            "msg_per_s": burst.normal / drain_s,
            "drain_s": drain_s,
            "total_s": total_s,
            "ready_s": ready_s,
            "first_to_last_alert_s": end - first if first else float("nan"),
            "publish_s": publish_s,
            # Less the first start's CPU up to ready, as the drain time is less its time;
            # with several workers, the supervisor's and every worker's.
            "cpu_us_per_msg": drain_cpu_s / burst.normal * 1e6,
            # The broker's, from the start to the last alert: on a 2-core machine it
            # shares the cores with the system under test.
            "broker_cpu_us_per_msg": broker_cpu_s / burst.normal * 1e6,
            "peak_rss_mb": peak_rss_mb(system.pid),
            "peak_rss_largest_mb": peak_rss_largest_mb(system.pid),
        }
        return measured, system, burst, end


def measure_burst(ctx: Context, name: str) -> Measured:
    """Burst throughput: ``burst_messages`` across ``burst_beds`` beds, queued then drained."""
    per_bed = max(1, ctx.sizes.burst_messages // ctx.sizes.burst_beds)
    return offline_burst(ctx, name, ctx.sizes.burst_beds, per_bed)[0]


def measure_catchup(ctx: Context, name: str) -> Measured:
    """Catch-up after an outage: ``catchup_beds`` × ``catchup_s`` s at 1 Hz queued, then drained."""
    return offline_burst(ctx, name, ctx.sizes.catchup_beds, ctx.sizes.catchup_s)[0]


def measure_online(ctx: Context, name: str) -> Measured:
    """Burst throughput with the system connected while the publisher sends as fast as it can."""
    ward = ctx.ward(ctx.sizes.burst_beds)
    system = systems.make(name, ctx.workdir / f"{ward.prefix}-{name}", url=ctx.url, ward=ward)
    with clients(ctx.url, ward) as (publisher, observer), running(system):
        system.start()
        Prober(ward, systems.partition_beds(ward)).wait_ready(publisher, observer, READY_TIMEOUT_S)
        burst = make_burst(
            ward,
            max(1, ctx.sizes.burst_messages // ctx.sizes.burst_beds),
            sentinel_beds=systems.partition_beds(ward),
        )
        started = time.time()
        publish_s = publisher.publish_all(burst.messages)
        end = _wait_done(system, observer, burst, 60 + burst.normal / 50)
        return {
            "msg_per_s": burst.normal / (end - started),
            "publisher_msg_per_s": len(burst.messages) / publish_s,
            "peak_rss_mb": peak_rss_mb(system.pid),
        }


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0-1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def measure_latency(ctx: Context, name: str, beds: int, hz: float) -> Measured:
    """Fever-alert latency under ``beds`` × ``hz`` paced load; memory at its peak."""
    ward = ctx.ward(beds)
    system = systems.make(name, ctx.workdir / f"{ward.prefix}-{name}", url=ctx.url, ward=ward, probes=True)
    with clients(ctx.url, ward) as (publisher, observer), running(system):
        system.start()
        Prober(ward, systems.partition_beds(ward)).wait_ready(publisher, observer, READY_TIMEOUT_S)
        before = observer.count()
        in_daemon_before = alert_latency(system)
        load = PacedLoad(Pace(ctx.url, ward, hz, ctx.sizes.latency_s, ctx.sizes.fever_every))
        cpu_before_s, load_started = cpu_s(system.pid), time.monotonic()
        with ctx.profile(system) if ctx.profile is not None else contextlib.nullcontext():
            load.start()
            result = load.result(timeout_s=ctx.sizes.latency_s * 3 + 120)
        # The share of one core the system used under the load: steadier than the
        # latencies on a shared machine, and what they grow with.
        cpu_share = (cpu_s(system.pid) - cpu_before_s) / (time.monotonic() - load_started)
        expected = {(bed, key): sent for bed, key, sent in result.fevers}
        # The backlog: a normal sample then a fever on bed 1 after the load; its alert
        # arrives once the system has processed everything before it.
        load_end = time.time()
        bed = ward.bed_ids[0]
        now = datetime.now(UTC)
        publisher.publish(ward.vitals_topic(bed), vitals_payload(bed, now, 0))
        last = now + timedelta(milliseconds=10)
        publisher.publish(ward.vitals_topic(bed), vitals_payload(bed, last, 1, FEVER_C))
        deadline = time.monotonic() + 120 + result.sent / 50
        drained = None
        while drained is None and time.monotonic() < deadline:
            system.check_alive()
            drained = observer.wait_for(bed, ms_key(iso_ms(last)), 1.0)
        arrived = sorted(
            (sent, observer.by_key[key], key[0]) for key, sent in expected.items() if key in observer.by_key
        )
        latencies = [(at - sent) * 1000 for sent, at, _ in arrived]
        # Every fever's publish and alert times (time.time()), to set beside a system's own
        # log or trace (kept with --keep).
        (system.workdir / "latencies.tsv").write_text(
            "".join(f"{sent:.6f}\t{at:.6f}\t{bed}\n" for sent, at, bed in arrived)
        )
        return {
            "p50_ms": percentile(latencies, 0.50),
            "p95_ms": percentile(latencies, 0.95),
            "p99_ms": percentile(latencies, 0.99),
            "max_ms": max(latencies, default=float("nan")),
            "alerts_arrived": len(latencies),
            "alerts_expected": len(expected),
            "alerts_other": observer.count() - before - len(latencies),
            "cpu_share": cpu_share,
            "publisher_msg_per_s": result.rate,
            "target_msg_per_s": beds * hz,
            "publisher_max_behind_s": result.max_behind_s,
            "backlog_after_load_s": drained - load_end if drained else float("nan"),
            "peak_rss_mb": peak_rss_mb(system.pid),
            **in_daemon(in_daemon_before, alert_latency(system)),
        }


Buckets = dict[str, dict[str, float]]
"""``wardd_alert_latency_seconds`` by stage: cumulative counts by bound (``le``), and ``sum``."""


def alert_latency(system: systems.Process) -> Buckets:
    """wardd's own account of its alerts' latency (``/metrics``), every worker's added up;
    empty for the baselines."""
    port = getattr(system, "health_port", None)
    if port is None:
        return {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    return read_histogram(text, "wardd_alert_latency_seconds", "stage")


def in_daemon(before: Buckets, after: Buckets) -> Measured:
    """What the daemon says of the alerts between two reads of ``alert_latency``: the mean
    of each stage (ms) and the total's p99, as the bound of the bucket that holds it (an
    upper bound, from 0.5 ms to 10 s). It counts every input that published an alert
    (a fever's start, and its end at the next normal sample) from its arrival to its
    message on the MQTT link: the rest of the latency above is the broker's and the
    network's."""
    out: Measured = {}
    for stage, buckets in after.items():
        count = buckets.get("count", 0.0) - before.get(stage, {}).get("count", 0.0)
        if count <= 0:
            continue
        total_s = buckets.get("sum", 0.0) - before.get(stage, {}).get("sum", 0.0)
        out[f"in_daemon_{stage}_mean_ms"] = total_s / count * 1000
        if stage == "total":
            earlier = before.get(stage, {})
            bounds = sorted(
                (float(le), n - earlier.get(le, 0.0))
                for le, n in buckets.items()
                if le not in {"count", "sum"}
            )
            p99_le_s = next(le for le, n in bounds if n >= 0.99 * count)
            out["in_daemon_total_p99_le_ms"] = p99_le_s * 1000 if p99_le_s != float("inf") else float("nan")
            out["in_daemon_alerts"] = count
    return out


def measure_memory(ctx: Context, name: str) -> Measured:
    """Resident memory when idle after start-up: wardd at each bed count, the baselines once."""
    out: Measured = {}
    counts = ctx.sizes.memory_beds if name.startswith("wardd") else ctx.sizes.memory_beds[-1:]
    for beds in counts:
        ward = ctx.ward(beds)
        system = systems.make(name, ctx.workdir / f"{ward.prefix}-{name}", url=ctx.url, ward=ward)
        with clients(ctx.url, ward) as (publisher, observer), running(system):
            system.start()
            Prober(ward, systems.partition_beds(ward)).wait_ready(publisher, observer, READY_TIMEOUT_S)
            time.sleep(3.0)  # a few ticks and a checkpoint
            size = f"{beds}_beds" if name.startswith("wardd") else "any_beds"
            out[f"idle_rss_mb_{size}"] = rss_mb(system.pid)
            out[f"idle_pss_mb_{size}"] = pss_mb(system.pid)
    return out


def measure_startup(ctx: Context, name: str) -> Measured:
    """Start-up: process start to the first fever probe's alert (subscribed and processing)."""
    ward = ctx.ward(ctx.sizes.startup_beds)
    system = systems.make(name, ctx.workdir / f"{ward.prefix}-{name}", url=ctx.url, ward=ward)
    with clients(ctx.url, ward) as (publisher, observer), running(system):
        system.start()
        ready = Prober(ward, systems.partition_beds(ward)).wait_ready(
            publisher, observer, READY_TIMEOUT_S, every_s=0.05
        )
        out = {"ready_s": ready - system.started_at, "rss_mb": rss_mb(system.pid)}
        if isinstance(system, systems.Wardd):
            connected = system.connected_at()
            if connected is not None:
                out["log_connected_s"] = connected - system.started_at
        return out


def vm_count(url: str, metric: str) -> int:
    """How many samples of ``metric`` a VictoriaMetrics holds (after a forced flush)."""
    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=10).close()
    params = urllib.parse.urlencode({"match[]": metric})
    with urllib.request.urlopen(f"{url}/api/v1/export?{params}", timeout=30) as resp:
        return sum(
            len(json.loads(line)["values"]) for line in resp.read().decode().split("\n") if line.strip()
        )


def measure_storage(ctx: Context, name: str) -> Measured:
    """Burst throughput with storage on a private VictoriaMetrics (``wardd+vm``) or off (``wardd``)."""
    per_bed = max(1, ctx.sizes.storage_messages // ctx.sizes.burst_beds)
    if name != "wardd+vm":
        return offline_burst(ctx, name, ctx.sizes.burst_beds, per_bed)[0]
    with victoria_metrics(ctx.workdir / f"vm-{ctx.runs}") as vm:
        measured, _, burst, end = offline_burst(
            ctx, name, ctx.sizes.burst_beds, per_bed, storage=Storage(vm.url)
        )
        want = len(burst.messages)  # one point per vitals message (the probes' points come on top)
        deadline = time.monotonic() + 300
        stored = 0
        while time.monotonic() < deadline:
            stored = vm_count(vm.url, "vitals_temp_c")
            if stored >= want:
                break
            time.sleep(1.0)
        measured["stored_points"] = stored
        measured["stored_after_s"] = time.time() - end if stored >= want else float("nan")
        return measured


CASE_LINES = {
    "scenario_s": re.compile(r"scenario --fast .*?:\s+([\d.]+) s"),
    "replay_s": re.compile(r"pure-rules replay .*?:\s+([\d.]+) s"),
}


def measure_published_case(ctx: Context, name: str) -> Measured:
    """``bench/published_case.py``: the 14-day scenario through the daemon against its pure-rules replay."""
    argv = [sys.executable, str(Path(__file__).with_name("published_case.py"))]
    if ctx.sizes.case_hours:
        argv += ["--hours", str(ctx.sizes.case_hours)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=1800)
    measured: Measured = {}
    for key, pattern in CASE_LINES.items():
        match = pattern.search(out.stdout)
        if match is None:
            raise RuntimeError(f"published_case.py printed no {key}:\n{out.stdout}\n{out.stderr[-2000:]}")
        measured[key] = float(match.group(1))
    measured["ratio"] = measured["scenario_s"] / measured["replay_s"]
    measured["same_transitions"] = 1.0 if "same transitions: True" in out.stdout else 0.0
    return measured


@dataclass(frozen=True)
class Figure:
    """One figure: which systems, how to measure one of them, which numbers to show."""

    key: str
    title: str
    systems: tuple[str, ...]
    baselines: tuple[str, ...]
    measure: Callable[[Context, str], Measured]
    shown: tuple[tuple[str, str, bool], ...]  # metric, unit, higher is better
    once: bool = False  # run in the first round only (it carries its own baseline)


def latency_figure(beds: int, hz: float) -> Figure:
    """The fever-alert latency figure at one size."""
    return Figure(
        f"latency-{beds}x{hz:g}hz",
        f"fever-alert latency, {beds} beds × {hz:g} Hz",
        systems.SYSTEMS,
        ("node-red", "bare"),
        lambda ctx, name: measure_latency(ctx, name, beds, hz),
        (
            ("p50_ms", "ms", False),
            ("p95_ms", "ms", False),
            ("p99_ms", "ms", False),
            ("max_ms", "ms", False),
            ("alerts_arrived", "alerts", True),
            ("alerts_expected", "alerts", True),
            ("publisher_msg_per_s", "msg/s", True),
            ("backlog_after_load_s", "s", False),
            ("cpu_share", "of a core", False),
            ("peak_rss_mb", "MiB", False),
            ("in_daemon_total_mean_ms", "ms", False),
            ("in_daemon_total_p99_le_ms", "ms", False),
            ("in_daemon_waiting_mean_ms", "ms", False),
            ("in_daemon_processing_mean_ms", "ms", False),
            ("in_daemon_storing_mean_ms", "ms", False),
            ("in_daemon_alerts", "alerts", True),
        ),
    )


def figures(sizes: Sizes) -> list[Figure]:
    """Every figure, in the order a round runs them."""
    base = ("node-red", "bare")
    memory_shown = tuple(
        (f"idle_{kind}_mb_{n}_beds", "MiB", False) for kind in ("rss", "pss") for n in sizes.memory_beds
    )
    return [
        Figure(
            "burst",
            f"burst throughput, {sizes.burst_messages:,} msgs / {sizes.burst_beds} beds queued, then drained",
            systems.SYSTEMS,
            base,
            measure_burst,
            (
                ("msg_per_s", "msg/s", True),
                ("cpu_us_per_msg", "µs", False),
                ("broker_cpu_us_per_msg", "µs", False),
                ("total_s", "s", False),
                ("ready_s", "s", False),
                ("peak_rss_mb", "MiB", False),
                ("peak_rss_largest_mb", "MiB", False),
            ),
        ),
        Figure(
            "burst-online",
            f"burst throughput, {sizes.burst_messages:,} msgs published as fast as possible, connected",
            systems.SYSTEMS,
            base,
            measure_online,
            (("msg_per_s", "msg/s", True), ("publisher_msg_per_s", "msg/s", True)),
        ),
        *(latency_figure(beds, hz) for beds, hz in sizes.latency),
        Figure(
            "memory",
            "resident memory, idle after start-up",
            systems.SYSTEMS,
            base,
            measure_memory,
            (*memory_shown, ("idle_rss_mb_any_beds", "MiB", False), ("idle_pss_mb_any_beds", "MiB", False)),
        ),
        Figure(
            "startup",
            f"start-up to the first alert, {sizes.startup_beds} beds",
            systems.SYSTEMS,
            base,
            measure_startup,
            (("ready_s", "s", False), ("log_connected_s", "s", False), ("rss_mb", "MiB", False)),
        ),
        Figure(
            "catchup",
            f"catch-up after an outage, {sizes.catchup_beds} beds × {sizes.catchup_s} s at 1 Hz queued",
            systems.SYSTEMS,
            base,
            measure_catchup,
            (
                ("drain_s", "s", False),
                ("total_s", "s", False),
                ("msg_per_s", "msg/s", True),
                ("cpu_us_per_msg", "µs", False),
                ("broker_cpu_us_per_msg", "µs", False),
                ("peak_rss_mb", "MiB", False),
                ("peak_rss_largest_mb", "MiB", False),
            ),
        ),
        Figure(
            "storage",
            f"burst throughput with storage, {sizes.storage_messages:,} msgs, VictoriaMetrics (v2 API)",
            ("wardd+vm", "wardd"),
            ("wardd",),
            measure_storage,
            (("msg_per_s", "msg/s", True), ("stored_after_s", "s", False)),
        ),
        Figure(
            "published-case",
            "14-day published case, scenario --fast vs pure-rules replay"
            + (f" ({sizes.case_hours:g} h only)" if sizes.case_hours else ""),
            ("wardd",),
            (),
            measure_published_case,
            (("scenario_s", "s", False), ("replay_s", "s", False), ("ratio", "×", False)),
            once=True,
        ),
    ]


def median(values: list[float]) -> float:
    """The median of the finite values (NaN if none)."""
    finite = [v for v in values if v == v]  # noqa: PLR0124 -- NaN check
    return statistics.median(finite) if finite else float("nan")


def summary(runs: dict[str, list[Measured]]) -> dict[str, dict[str, Any]]:
    """Per system: the median of each metric over its runs."""
    out: dict[str, dict[str, Any]] = {}
    for system, measured in runs.items():
        keys = sorted({key for m in measured for key in m})
        out[system] = {key: median([m[key] for m in measured if key in m]) for key in keys}
    return out
