"""Measure ``wardd scenario published-case --fast`` against the pure-rules replay of its events.

    .venv/bin/python bench/published_case.py [--hours H] [--profile]

Both figures come from the same run on the same machine: the scenario (pumps on
ptys, vitals over the embedded MQTT broker, the whole daemon) writes a capture;
the replay feeds that capture (the daemon's own ticks included) through the rules and
the alert book alone, and the two lists of alert transitions are compared. With
``--profile`` the scenario runs under cProfile and its own time is split by where
the code lives (simulators, broker, MQTT client, serial, daemon, event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import itertools
import pstats
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from daemon.config import InfluxConfig
from daemon.metrics import Counters
from daemon.replay import read_events, replay
from simulators.scenario import load_scenario, run_scenario, to_config

AREAS = (
    ("/simulators/scenario.py", "scenario runner"),
    ("/simulators/", "simulators"),
    ("amqtt", "broker (amqtt)"),
    ("gmqtt", "MQTT clients"),
    ("aiomqtt", "MQTT clients"),
    ("paho", "MQTT clients"),
    ("serial", "serial"),
    ("/daemon/", "daemon"),
    ("asyncio", "event loop"),
    ("selectors", "event loop"),
)


def transitions(alerts: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """What the comparison looks at: when, which condition, which phase.

    Escalation reminders (``overdue``) are left out: the live daemon judges them on
    its own schedule (``alerts.check_interval_s``), a replay at each tick.
    """
    return [(a["at"], a["condition"], a["phase"]) for a in alerts if a["phase"] != "overdue"]


def area(filename: str) -> str:
    """Which part of the system a profiled function belongs to."""
    return next((name for key, name in AREAS if key in filename), "other (stdlib, builtins)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, help="simulate only this many hours (default: all 14 days)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    scenario = load_scenario("published-case")
    if args.hours:
        scenario = scenario.model_copy(update={"duration": timedelta(hours=args.hours)})
    with tempfile.TemporaryDirectory() as tmp:
        capture = Path(tmp) / "capture.jsonl"
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        result = asyncio.run(
            run_scenario(scenario, mqtt_url="mqtt://127.0.0.1:1", progress=False, capture=capture)
        )
        if profiler:
            profiler.disable()
        config = to_config(
            scenario,
            state_dir=Path(tmp) / "replay",
            mqtt_url="mqtt://127.0.0.1:1883",
            prefix="bench",
            influx=InfluxConfig(api="none"),
            pump_links={bed.id: Path(tmp) / bed.id for bed in scenario.beds},
        )
        started = time.perf_counter()
        again = replay(config, read_events(capture, Counters()), until=scenario.start + scenario.duration)
        replay_s = time.perf_counter() - started
    days = scenario.duration.total_seconds() / 86400
    print(f"published-case, {days:g} simulated day(s), {result.counts}")
    print(f"  scenario --fast (simulators + broker + daemon): {result.wall_s:8.1f} s")
    print(f"  pure-rules replay of the same {again.events} events:   {replay_s:8.1f} s")
    print(f"  ratio: {result.wall_s / replay_s:.1f}x the replay")
    live, replayed = transitions(result.alerts), transitions(again.transitions)
    print(f"  replay ({again.ticks} recorded ticks) gives the same transitions: {live == replayed}")
    for index, (want, got) in enumerate(itertools.zip_longest(live, replayed)):
        if want != got:
            print(f"    first difference, transition {index + 1}: live {want}, replay {got}")
            break
    if profiler:
        stats = pstats.Stats(profiler)
        split: collections.Counter[str] = collections.Counter()
        for (filename, _, _), (_, _, own_s, _, _) in stats.stats.items():  # type: ignore[attr-defined]
            split[area(filename)] += own_s
        total = sum(split.values())
        print("  own CPU time by area (under cProfile, which slows everything):")
        for name, seconds in split.most_common():
            print(f"    {name:28} {seconds:7.1f} s {100 * seconds / total:5.1f} %")


if __name__ == "__main__":
    main()
