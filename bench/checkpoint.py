"""How long one checkpoint holds the store and the event loop: ``python -m bench.checkpoint``.

The real pipeline (every rule, the real store on disk) takes a minute of 1 Hz vitals at
``--beds`` beds, is checkpointed, then takes one checkpoint interval (5 s) more. That
interval's changed states are then written once as one transaction ("whole", as every
checkpoint was before) and, in the same run on a fresh store, in slices of at most
``CHECKPOINT_SLICE_STATES`` states and ``CHECKPOINT_SLICE_ROWS`` window rows ("sliced",
as the daemon does now, ``daemon.app.stage_slice``). For each: the longest
transaction (what an input's commit may wait behind), the total store time, and the
longest time the event loop spent collecting one slice's changes; the store's CPU time
(of its thread: the dumps and encoding hold the interpreter's lock the event loop needs,
the commit's fsync does not) tells the slices apart on a loaded machine. Rounds alternate the
two ways; ratios matter, not the absolute times (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.ward import WARD, protocol_beds
from daemon import app
from daemon.app import Pipeline, build, stage_slice, stage_states
from daemon.clock import ManualClock
from daemon.config import Config, parse
from daemon.events import Metric, VitalSample
from daemon.links.store import Changes

T0 = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
VALUES = {
    Metric.TEMP_C: 37.0,
    Metric.SBP_MMHG: 120.0,
    Metric.DBP_MMHG: 80.0,
    Metric.HR_PER_MIN: 80.0,
    Metric.SPO2_PCT: 97.0,
    Metric.RR_PER_MIN: 16.0,
}


def _config(folder: Path, beds: int) -> Config:
    return parse(
        {
            "daemon": {"state_dir": str(folder)},
            "influx": {"api": "none"},
            "beds": protocol_beds(beds, T0 - timedelta(hours=12)),
        }
    )


async def _feed(pipeline: Pipeline, clock: ManualClock, beds: int, seconds: int) -> None:
    for _ in range(seconds):
        await clock.advance(1.0)
        at = clock.now()
        for i in range(beds):
            await pipeline.process(VitalSample(WARD, f"b{i}", "m", at, VALUES))


def _commit_staged(pipeline: Pipeline) -> None:
    pipeline.store.apply(pipeline.writer.changes)
    pipeline.writer.changes = Changes()


def _write(pipeline: Pipeline, keys: list[tuple[str, str]] | None) -> tuple[float, float, float]:
    """Stage and commit the states of ``keys`` (all when ``None``): (loop s, store s, store CPU s)."""
    started = time.perf_counter()
    changes = Changes()
    stage_states(changes, pipeline.engine.take_changed(keys), 0)
    collected = time.perf_counter()
    cpu = time.thread_time()
    pipeline.store.apply(changes)
    return collected - started, time.perf_counter() - collected, time.thread_time() - cpu


def _write_sliced(pipeline: Pipeline) -> list[tuple[float, float, float]]:
    """Stage and commit every changed state a slice at a time, as the daemon does:
    (loop s, store s, store CPU s) of each slice."""
    keys = pipeline.engine.dirty()
    writes = []
    done = 0
    while done < len(keys):
        started = time.perf_counter()
        changes = Changes()
        done = stage_slice(changes, pipeline.engine, keys, done, 0)
        collected = time.perf_counter()
        cpu = time.thread_time()
        pipeline.store.apply(changes)
        writes.append((collected - started, time.perf_counter() - collected, time.thread_time() - cpu))
    return writes


async def _round(way: str, beds: int) -> dict[str, float]:
    clock = ManualClock(T0)
    pipeline = build(_config(Path(tempfile.mkdtemp(prefix="wardd-ck-")), beds), clock=clock)
    try:
        await _feed(pipeline, clock, beds, 60)
        _commit_staged(pipeline)
        pipeline.checkpoint()
        _commit_staged(pipeline)
        await _feed(pipeline, clock, beds, 5)
        writes = [_write(pipeline, None)] if way == "whole" else _write_sliced(pipeline)
        loop_s = [w[0] for w in writes]
        store_s = [w[1] for w in writes]
        cpu_s = [w[2] for w in writes]
        return {
            "transactions": len(writes),
            "longest_store_ms": max(store_s) * 1000,
            "median_store_ms": statistics.median(store_s) * 1000,
            "total_store_ms": sum(store_s) * 1000,
            "longest_store_cpu_ms": max(cpu_s) * 1000,
            "median_store_cpu_ms": statistics.median(cpu_s) * 1000,
            "longest_loop_ms": max(loop_s) * 1000,
        }
    finally:
        pipeline.writer.close()


async def main() -> None:
    """Alternate whole and sliced checkpoints; print each round and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beds", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slice-states", type=int, default=app.CHECKPOINT_SLICE_STATES)
    parser.add_argument("--slice-rows", type=int, default=app.CHECKPOINT_SLICE_ROWS)
    args = parser.parse_args()
    app.CHECKPOINT_SLICE_STATES, app.CHECKPOINT_SLICE_ROWS = args.slice_states, args.slice_rows
    app.tune_gc()
    results: dict[str, list[dict[str, float]]] = {"whole": [], "sliced": []}
    for _ in range(args.rounds):
        for way in ("whole", "sliced"):
            figures = await _round(way, args.beds)
            results[way].append(figures)
            print(way, {k: round(v, 1) for k, v in figures.items()}, flush=True)
    print(
        f"medians of {args.rounds} rounds, {args.beds} beds, slices of {app.CHECKPOINT_SLICE_STATES} states"
        f" or {app.CHECKPOINT_SLICE_ROWS} window rows at most:"
    )
    keys = (
        "transactions",
        "longest_store_ms",
        "median_store_ms",
        "total_store_ms",
        "longest_store_cpu_ms",
        "median_store_cpu_ms",
        "longest_loop_ms",
    )
    for key in keys:
        whole = statistics.median(r[key] for r in results["whole"])
        sliced = statistics.median(r[key] for r in results["sliced"])
        print(f"  {key:18s} whole {whole:8.1f}  sliced {sliced:8.1f}  sliced/whole {sliced / whole:5.2f}")


if __name__ == "__main__":
    asyncio.run(main())
