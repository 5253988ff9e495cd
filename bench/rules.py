"""What the rules cost per vitals message as history builds up: ``python -m bench.rules``.

Every rule of every bed (``daemon.app.build_rules``, the 14-day protocol since 12 h, the
daemon's default thresholds but for a fever onset of 2 samples over 2 s and no
staleness), no MQTT, no store. Each bed sends a full vitals message (six metrics, normal
values that vary) every second of measurement time, received 50 ms later; the engine
also takes a ``Tick`` each second and hands its changed states to a checkpoint
(``take_changed``) every 5 s, as the daemon does. The garbage collector is tuned as in
``wardd run`` (``daemon.app.tune_gc``).

The late-data windows fill over the first hour (``fever_late_s`` and ``news2_late_s``
are an hour), so the cost is measured at several lengths of history: at each mark,
the next ``--measure-s`` seconds of messages are timed (µs of CPU per message, ticks
and checkpoints included; the time the cyclic collector took is shown apart), and
its best 10 s: on a shared machine, the figure least disturbed by other work (and by
the collector), for comparing two versions.

``--tree DIR`` imports the daemon from another checkout (``git archive <commit> | tar
-x -C DIR``), so that one session can alternate before and after. ``--profile``
adds cProfile's busiest functions over the last mark's measurement. ``--memory`` traces
allocations (``tracemalloc``) and gives, at each mark, the memory the engine holds per
bed beyond what it held before the first message, the objects per bed the cyclic
collector tracks, and the CPU time of a full collection (the CPU figures of such a run
are inflated by the tracing).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.ward import WARD, protocol_beds

T0 = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
RECEIVED_AFTER = timedelta(milliseconds=50)
CHECKPOINT_EVERY_S = 5
CHUNK_S = 2 * CHECKPOINT_EVERY_S  # the best chunk shows the cost with the least interference


def _config(beds: int) -> Any:
    from daemon.config import parse  # noqa: PLC0415 -- after --tree is on sys.path

    return parse(
        {
            "influx": {"api": "none"},
            "thresholds": {
                "vitals": {"confirm_samples": 2, "fever_delay_s": 2.0, "telemetry_stale_s": 86_400.0}
            },
            "beds": protocol_beds(beds, T0 - timedelta(hours=12)),
        }
    )


class _GcTimer:
    """The time the cyclic garbage collector takes, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.total_s = 0.0
        self.longest_s = 0.0  # the longest collection: the event loop stands still meanwhile
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            spent = time.perf_counter() - self._started
            self.total_s += spent
            self.longest_s = max(self.longest_s, spent)


def _feeder(beds: int) -> Callable[[int, int], int]:
    """A function that feeds seconds ``[s0, s1)`` of the load to a fresh engine; returns the
    number of vitals messages."""
    from daemon.app import build_rules  # noqa: PLC0415 -- after --tree is on sys.path
    from daemon.events import Metric, Tick, VitalSample  # noqa: PLC0415 -- after --tree is on sys.path

    engine = build_rules(_config(beds))
    ids = [f"b{i}" for i in range(beds)]

    def feed(s0: int, s1: int) -> int:
        messages = 0
        for s in range(s0, s1):
            at = T0 + timedelta(seconds=s)
            values = {
                Metric.TEMP_C: 36.6 + 0.1 * (s % 5),
                Metric.SBP_MMHG: 112.0 + s % 9,
                Metric.DBP_MMHG: 70.0 + s % 5,
                Metric.HR_PER_MIN: 72.0 + s % 11,
                Metric.SPO2_PCT: 96.0 + s % 3,
                Metric.RR_PER_MIN: 14.0 + s % 4,
            }
            for bed in ids:
                engine.handle(VitalSample(WARD, bed, "monitor", at, values), at + RECEIVED_AFTER)
            messages += beds
            engine.handle(Tick(at), at)
            if s % CHECKPOINT_EVERY_S == 0:
                engine.take_changed()
        return messages

    return feed


def run(
    beds: int, marks_s: list[int], measure_s: int, profile: bool, memory: bool = False
) -> list[dict[str, float]]:
    """µs per message over ``measure_s`` seconds after each mark of history (and, with
    ``memory``, the KiB per bed the engine holds at the mark)."""
    from daemon.app import tune_gc  # noqa: PLC0415 -- after --tree is on sys.path

    if memory:
        tracemalloc.start()
    feed = _feeder(beds)
    idle_bytes = tracemalloc.get_traced_memory()[0] if memory else 0
    tune_gc()
    idle_tracked = len(gc.get_objects())  # what start-up left is frozen, out of the count
    timer = _GcTimer()
    gc.callbacks.append(timer)
    out: list[dict[str, float]] = []
    done = 0
    try:
        for i, mark in enumerate(sorted(marks_s)):
            feed(done, mark)
            if memory:
                started = time.process_time()
                gc.collect()
                full_ms = (time.process_time() - started) * 1e3
                held_kib = (tracemalloc.get_traced_memory()[0] - idle_bytes) / beds / 1024
                tracked = (len(gc.get_objects()) - idle_tracked) / beds
                print(
                    f"{beds} beds, {mark:>5} s of history: {held_kib:8.1f} KiB per bed, "
                    f"{tracked:8.0f} objects per bed for the collector, a full collection "
                    f"{full_ms:6.1f} ms (traced)",
                    flush=True,
                )
            profiler = cProfile.Profile() if profile and i == len(marks_s) - 1 else None
            gc_before = timer.total_s
            timer.longest_s = 0.0
            chunks: list[float] = []  # µs per message of each chunk
            messages = 0
            cpu_s = 0.0
            if profiler is not None:
                profiler.enable()
            for chunk in range(mark, mark + measure_s, CHUNK_S):
                started = time.process_time()
                n = feed(chunk, min(chunk + CHUNK_S, mark + measure_s))
                spent = time.process_time() - started
                chunks.append(spent / n * 1e6)
                messages += n
                cpu_s += spent
            if profiler is not None:
                profiler.disable()
            gc_s = timer.total_s - gc_before
            done = mark + measure_s
            out.append(
                {
                    "history_s": mark,
                    "us_per_msg": cpu_s / messages * 1e6,
                    "gc_us_per_msg": gc_s / messages * 1e6,
                    "gc_longest_ms": timer.longest_s * 1000,
                    "best_chunk_us_per_msg": min(chunks),
                }
            )
            print(
                f"{beds} beds, {mark:>5} s of history: {out[-1]['us_per_msg']:7.1f} µs/msg "
                f"(of which gc {out[-1]['gc_us_per_msg']:5.1f}, longest {out[-1]['gc_longest_ms']:.0f} ms;"
                f" best {CHUNK_S} s: "
                f"{out[-1]['best_chunk_us_per_msg']:7.1f})",
                flush=True,
            )
            if profiler is not None:
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
                print(text.getvalue())
    finally:
        gc.callbacks.remove(timer)
    return out


def main() -> None:
    """Parse the arguments and run the marks once."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beds", type=int, default=100)
    parser.add_argument(
        "--history",
        default="30,900,3600",
        help="marks of history in seconds, comma-separated (default 30,900,3600)",
    )
    parser.add_argument("--measure-s", type=int, default=60, help="seconds of load timed at each mark")
    parser.add_argument("--tree", help="import the daemon from this checkout instead")
    parser.add_argument("--profile", action="store_true", help="cProfile the last mark")
    parser.add_argument(
        "--memory", action="store_true", help="memory per bed at each mark (tracemalloc; slows the run)"
    )
    args = parser.parse_args()
    if args.tree:
        sys.path.insert(0, args.tree)
    marks = [int(x) for x in args.history.split(",") if x]
    import daemon  # noqa: PLC0415 -- after --tree is on sys.path

    print(f"daemon from {daemon.__file__}", flush=True)
    run(args.beds, marks, args.measure_s, args.profile, args.memory)


if __name__ == "__main__":
    main()
