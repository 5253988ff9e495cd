"""Dose-schedule rule: ledger, checks, persistence, bag input, views and the dose cases.

The golden ``tests/cases/dose-*`` folders are also run here through a small driver
that needs only the dose rule, so they stay checked while the shared case runner
(``tests/test_cases.py``) exercises them with the whole rule set.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.config import BedConfig, Config, DoseThresholds, parse
from daemon.dose import (
    BAG_LOW,
    BOLUS_SUSPECTED,
    CUMULATIVE_DOSE_DEVIATION,
    DOSE_RATE_HIGH,
    DOSE_RATE_LOW,
    INFUSION_AFTER_PROTOCOL_END,
    INFUSION_INTERRUPTED,
    STEP_UP_DUE,
    DoseRule,
    DoseState,
    dose_point,
    dose_rules,
    dump_state,
    load_state,
    parse_bag,
    status_lines,
)
from daemon.errors import InputError
from daemon.events import AlertCandidate, BagHung, Event, Priority, PumpReading, PumpState, Tick
from daemon.protocols import schedule_for
from daemon.rules import RuleEngine

CASES = Path(__file__).parent / "cases"
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
C9 = 0.0375  # µg/mL: 9 µg/day at 10 mL/h (domain.md section 1)
C28 = 0.1167  # µg/mL: 28 µg/day at 10 mL/h


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- case driver


@dataclass
class Transition:
    """One alert transition derived from candidates."""

    bed: str
    condition: str
    phase: str
    at: datetime
    priority: str
    details: Mapping[str, Any]


def _transitions(
    candidates: Iterable[AlertCandidate], open_: dict[tuple[str, str], AlertCandidate]
) -> list[Transition]:
    out: list[Transition] = []
    for c in candidates:
        key = (c.bed, c.condition)
        current = open_.get(key)
        if c.present and current is None:
            out.append(Transition(c.bed, c.condition, "raised", c.time, c.priority, c.details))
            open_[key] = c
        elif c.present and current is not None:
            if c.priority != current.priority or dict(c.details) != dict(current.details):
                out.append(Transition(c.bed, c.condition, "updated", c.time, c.priority, c.details))
            open_[key] = c
        elif not c.present and current is not None:
            del open_[key]
            out.append(Transition(c.bed, c.condition, "cleared", c.time, c.priority, c.details))
    return out


def _event(data: Mapping[str, Any]) -> Event:
    when = _time(data["time"])
    if data["type"] == "pump":
        return PumpReading(
            data["ward"],
            data["bed"],
            data["pump"],
            when,
            PumpState(data["state"]),
            data["rate_ml_per_h"],
            data["volume_infused_ml"],
            data.get("alarm"),
        )
    if data["type"] == "bag":
        return BagHung(
            data["ward"],
            data["bed"],
            when,
            data["bag_id"],
            data["concentration_ug_per_ml"],
            data.get("volume_ml"),
        )
    raise ValueError(f"event type {data['type']!r} is not used by the dose cases")


def _engine(config: Config) -> RuleEngine:
    return RuleEngine({bed.id: dose_rules(config, bed) for bed in config.beds})


def run_dose_case(folder: Path) -> list[Transition]:
    """Run one case folder through the dose rules only, as ``tests/test_cases.py`` does."""
    config = parse(tomllib.loads((folder / "config.toml").read_text("utf-8")))
    case_file = folder / "case.toml"
    options = tomllib.loads(case_file.read_text("utf-8")) if case_file.exists() else {}
    tick = timedelta(seconds=float(options.get("tick_s", 60)))
    engine = _engine(config)
    open_: dict[tuple[str, str], AlertCandidate] = {}
    seen: list[Transition] = []
    next_tick: datetime | None = None

    def ticks_until(when: datetime) -> None:
        nonlocal next_tick
        assert next_tick is not None
        while next_tick < when:
            seen.extend(_transitions(engine.handle(Tick(next_tick), next_tick), open_))
            next_tick += tick

    for line in (folder / "events.jsonl").read_text("utf-8").splitlines():
        if not line.strip():
            continue
        data = json.loads(line)
        when = _time(data["time"])
        if next_tick is None:
            next_tick = when
        ticks_until(when)
        if data["type"] == "restart":
            snapshot = json.loads(json.dumps(engine.snapshot()))
            engine = _engine(config)
            engine.restore(snapshot)
            continue
        seen.extend(_transitions(engine.handle(_event(data), when), open_))
    if "until" in options:
        until = options["until"]
        ticks_until(until if isinstance(until, datetime) else _time(until))
    return seen


def _matches(want: Mapping[str, Any], got: Transition) -> bool:
    if (want["condition"], want["phase"]) != (got.condition, got.phase):
        return False
    if "bed" in want and want["bed"] != got.bed:
        return False
    if "priority" in want and want["priority"] != got.priority:
        return False
    if any(got.details.get(k) != v for k, v in want.get("details", {}).items()):
        return False
    if "at" in want:
        tolerance = timedelta(seconds=float(want.get("tolerance_s", 300)))
        return abs(got.at - _time(want["at"])) <= tolerance
    return True


DOSE_CASES = sorted(CASES.glob("dose-*")) if CASES.exists() else []


@pytest.mark.parametrize("folder", DOSE_CASES, ids=lambda p: p.name)
def test_dose_case(folder: Path) -> None:
    actual = run_dose_case(folder)
    expected = [
        json.loads(x) for x in (folder / "expected.jsonl").read_text("utf-8").splitlines() if x.strip()
    ]
    left = list(actual)
    missing = []
    for want in expected:
        hit = next((t for t in left if _matches(want, t)), None)
        if hit is None:
            missing.append(want)
        else:
            left.remove(hit)
    shown = "\n".join(
        f"  {t.at.isoformat()} {t.bed} {t.condition} {t.phase} {t.priority} {dict(t.details)}" for t in actual
    )
    assert not missing and not left, f"missing: {missing}\nunexpected: {left}\nall:\n{shown}"
