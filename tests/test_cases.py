"""Golden scenario cases: every folder under tests/cases/ is one test, no code needed.

A case folder holds:
- ``config.toml``: a wardd config (beds, thresholds, protocols, bags);
- ``events.jsonl``: input events in the capture format (``daemon.capture``), in time
  order, plus ``{"type": "restart", "time": ...}`` lines that reload every rule's
  state from JSON, as a daemon restart does;
- ``expected.jsonl``: the alert transitions the rules must give, and no others:
  ``{"condition", "phase": "raised"|"updated"|"cleared", "at", "tolerance_s",
  "priority", "bed", "details": {subset}}`` (fields other than condition and phase
  are optional); lines starting with ``#`` are comments;
- ``case.toml`` (optional): ``tick_s`` (default 60), ``until`` (ticks go on to this
  time), ``rules`` (the rule families to run; default all).

The daemon's clock in a case is the event time, never going backwards: each event is
handled at the later of its own time and the latest time before it in the file, with a
``Tick`` every ``tick_s`` in between. An event written after later ones therefore
arrives late, as data from a buffering monitor or a gateway catching up does. A case
folder may hold a ``README.md`` saying what it shows.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon import capture, timefmt
from daemon.app import build_rules
from daemon.config import Config, parse
from daemon.events import AlertCandidate, Event, Tick

CASES = Path(__file__).parent / "cases"


@dataclass
class Transition:
    """One derived alert transition."""

    bed: str
    condition: str
    phase: str
    at: datetime
    priority: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{timefmt.iso(self.at)} {self.bed} {self.condition} {self.phase} {self.priority} {dict(self.details)}"


class Transitions:
    """Derives raised / updated / cleared per (bed, condition) from repeated candidates."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str], AlertCandidate] = {}
        self.seen: list[Transition] = []

    def feed(self, candidates: Sequence[AlertCandidate]) -> None:
        for c in candidates:
            key = (c.bed, c.condition)
            current = self.open.get(key)
            if c.present and current is None:
                self.open[key] = c
                self.seen.append(Transition(c.bed, c.condition, "raised", c.time, c.priority, c.details))
            elif c.present and current is not None:
                if c.priority != current.priority or dict(c.details) != dict(current.details):
                    self.seen.append(Transition(c.bed, c.condition, "updated", c.time, c.priority, c.details))
                self.open[key] = c
            elif not c.present and current is not None:
                del self.open[key]
                self.seen.append(Transition(c.bed, c.condition, "cleared", c.time, c.priority, c.details))


def _events(path: Path) -> Iterator[tuple[str, Event | datetime]]:
    for number, data in capture.read(path):
        if data.get("type") == "restart":
            yield "restart", datetime.fromisoformat(data["time"])
        else:
            yield "event", capture.from_dict(data, f"{path}:{number}")


def _time_of(item: Event | datetime) -> datetime:
    return item if isinstance(item, datetime) else item.time


def run_case(folder: Path) -> list[Transition]:
    """Feed a case's events through the rules; return the derived transitions."""
    config: Config = parse(tomllib.loads((folder / "config.toml").read_text()), str(folder / "config.toml"))
    options = tomllib.loads((folder / "case.toml").read_text()) if (folder / "case.toml").exists() else {}
    tick = timedelta(seconds=float(options.get("tick_s", 60)))
    families = options.get("rules")
    engine = build_rules(config, families)
    transitions = Transitions()
    next_tick: datetime | None = None
    clock: datetime | None = None

    def ticks_until(when: datetime) -> None:
        nonlocal next_tick
        assert next_tick is not None
        while next_tick < when:
            transitions.feed(engine.handle(Tick(next_tick), next_tick))
            next_tick += tick

    for kind, item in _events(folder / "events.jsonl"):
        when = _time_of(item)
        if next_tick is None:
            next_tick = when
        ticks_until(when)
        if kind == "restart":
            snapshot = json.loads(json.dumps(engine.snapshot()))
            engine = build_rules(config, families)
            engine.restore(snapshot)
            continue
        assert not isinstance(item, datetime)
        clock = when if clock is None else max(clock, when)
        transitions.feed(engine.handle(item, clock))
    if "until" in options and next_tick is not None:
        until = options["until"]
        ticks_until(until if isinstance(until, datetime) else datetime.fromisoformat(until))
    return transitions.seen


def _matches(expected: Mapping[str, Any], actual: Transition) -> bool:
    if expected["condition"] != actual.condition or expected["phase"] != actual.phase:
        return False
    if "bed" in expected and expected["bed"] != actual.bed:
        return False
    if "priority" in expected and expected["priority"] != actual.priority:
        return False
    for key, value in expected.get("details", {}).items():
        if actual.details.get(key) != value:
            return False
    if "at" in expected:
        at = datetime.fromisoformat(expected["at"])
        tolerance = timedelta(seconds=float(expected.get("tolerance_s", 300)))
        if abs(actual.at - at) > tolerance:
            return False
    return True


@pytest.mark.parametrize(
    "folder", sorted(p for p in CASES.iterdir() if p.is_dir()) if CASES.exists() else [], ids=lambda p: p.name
)
def test_case(folder: Path) -> None:
    actual = run_case(folder)
    expected = [
        json.loads(line)
        for line in (folder / "expected.jsonl").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    unmatched_actual = list(actual)
    missing = []
    for want in expected:
        hit = next((t for t in unmatched_actual if _matches(want, t)), None)
        if hit is None:
            missing.append(want)
        else:
            unmatched_actual.remove(hit)
    report = "\n".join(
        [
            "missing (expected, not given):",
            *(f"  {json.dumps(m)}" for m in missing),
            "unexpected (given, not expected):",
            *(f"  {t}" for t in unmatched_actual),
            "all transitions given:",
            *(f"  {t}" for t in actual),
        ]
    )
    assert (missing, unmatched_actual) == ([], []), report
