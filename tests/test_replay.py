"""``wardd replay``: a capture through the rules and the alert book reproduces the alerts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon import capture
from daemon import config as config_module
from daemon.cli import main
from daemon.config import InfluxConfig
from daemon.events import Event, Handwriting, Observation, Tick
from daemon.metrics import Counters
from daemon.replay import read_events, replay
from simulators.scenario import Scenario, load_scenario, parse_scenario, run_scenario, to_config

NO_BROKER = "mqtt://127.0.0.1:1"


def _config_toml(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "ward.toml"
    path.write_text(
        f"""
{extra}
[daemon]
state_dir = "{tmp_path / "state"}"
tick_interval_s = 60

[influx]
api = "none"

[[beds]]
ward = "w1"
id = "b1"
patient = "P-1"
weight_kg = 70
height_cm = 170
protocol_start = "2026-03-02T08:00:00Z"
"""
    )
    return path


def _vitals(minute: int, temp_c: float) -> str:
    return json.dumps(
        {
            "type": "vitals",
            "ward": "w1",
            "bed": "b1",
            "device": "m1",
            "time": f"2026-03-02T{20 + minute // 60:02d}:{minute % 60:02d}:00Z",
            "values": {"temp_c": temp_c, "sbp_mmhg": 120, "dbp_mmhg": 75, "hr_per_min": 80},
        }
    )


def test_fever_reproduced_and_bad_lines_skipped(tmp_path: Path) -> None:
    config = config_module.load(_config_toml(tmp_path))
    lines = [_vitals(m, 36.8 if m < 30 else 38.4) for m in range(60)]
    lines.insert(5, "{not json")
    lines.insert(9, json.dumps({"type": "teapot"}))
    path = tmp_path / "capture.jsonl"
    path.write_text("\n".join(lines) + "\n")
    counters = Counters()
    result = replay(config, read_events(path, counters))
    assert counters.get("replay.rejected", "invalid_json") == 1
    assert counters.get("replay.rejected", "unknown_type") == 1
    assert result.events == 60
    fever = [t for t in result.transitions if t["condition"] == "FEVER"]
    assert [t["phase"] for t in fever] == ["start"]
    assert fever[0]["at"].startswith("2026-03-02T20:3")


def test_cli_replay_writes_transitions(tmp_path: Path) -> None:
    config = _config_toml(tmp_path)
    path = tmp_path / "capture.jsonl"
    path.write_text("\n".join(_vitals(m, 38.6) for m in range(20)) + "\n")
    out = tmp_path / "alerts.jsonl"
    assert main(["replay", str(path), "--config", str(config), "--alerts-out", str(out)]) == 0
    conditions = {json.loads(line)["condition"] for line in out.read_text().splitlines()}
    assert "FEVER" in conditions


def _key(alerts: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [(a["offset"], a["condition"], a["phase"]) for a in alerts if a["phase"] != "overdue"]


async def _live_and_replayed(
    scenario: Scenario, tmp_path: Path
) -> tuple[list[dict[str, object]], list[dict[str, object]], Path]:
    """The scenario's alert transitions, those of the replay of its capture, and the capture."""
    capture_path = tmp_path / "capture.jsonl"
    run = await run_scenario(
        scenario, mqtt_url=NO_BROKER, progress=False, workdir=tmp_path / "run", capture=capture_path
    )
    config = to_config(
        scenario,
        state_dir=tmp_path / "replay",
        mqtt_url="mqtt://127.0.0.1:1883",
        prefix="replay",
        influx=InfluxConfig(api="none"),
        pump_links={bed.id: tmp_path / f"{bed.id}.pty" for bed in scenario.beds},
    )
    again = replay(config, read_events(capture_path, Counters()), until=scenario.start + scenario.duration)
    return run.alerts, again.transitions, capture_path


@pytest.mark.integration
async def test_scenario_capture_replays_to_the_same_alerts(tmp_path: Path) -> None:
    scenario = load_scenario("late-step-up").model_copy(update={"duration": timedelta(hours=7)})
    live, replayed, capture_path = await _live_and_replayed(scenario, tmp_path)
    kinds = {data["type"] for _, data in capture.read(capture_path)}
    assert {"vitals", "pump", "bag", "observation", "tick"} <= kinds
    assert _key(replayed) == _key(live)
    assert ("STEP_UP_LATE", "start") in [k[1:] for k in _key(live)]


@pytest.mark.integration
async def test_checks_due_at_their_tick_replay_to_the_same_alerts(tmp_path: Path) -> None:
    # A handwriting test every hour, due every hour: each one reaches the daemon at
    # the very instant of a tick, so whether the check was due when the daemon judged
    # it depends on which of the two came first, which only the captured ticks say.
    scenario = parse_scenario(
        {
            "name": "neuro-check-on-the-tick",
            "duration": "3h30m",
            "beds": [
                {
                    "id": "01",
                    "weight_kg": 63,
                    "height_cm": 165,
                    "thresholds": {"vitals": {"neuro_check_interval_s": 3600}},
                    "monitor": {"interval": "60s"},
                    "observations": [{"at": "1h", "handwriting": "normal", "every": "1h", "count": 3}],
                }
            ],
        }
    )
    live, replayed, capture_path = await _live_and_replayed(scenario, tmp_path)
    times = {
        kind: {data["time"] for _, data in capture.read(capture_path) if data["type"] == kind}
        for kind in ("observation", "tick")
    }
    assert len(times["observation"]) == 3
    assert times["observation"] <= times["tick"]
    assert _key(replayed) == _key(live)


def test_recorded_ticks_are_the_replay_clock(tmp_path: Path) -> None:
    config = config_module.load(
        _config_toml(tmp_path, "[thresholds.vitals]\nneuro_check_interval_s = 3600\n")
    )
    start = datetime(2026, 3, 2, 8, tzinfo=UTC)
    recorded: list[Event] = []
    for minute in range(3 * 60 + 1):
        at = start + timedelta(minutes=minute)
        if minute and minute % 60 == 0:
            # Recorded at the very instant it falls due, just before the tick.
            recorded.append(Observation("w1", "b1", at, by="nurse", handwriting=Handwriting.NORMAL))
        recorded.append(Tick(at))
    result = replay(config, recorded)
    assert result.ticks == 3 * 60 + 1
    assert result.events == 3
    assert [t for t in result.transitions if t["condition"] == "NEURO_CHECK_DUE"] == []
    # Without them, the rebuilt tick of each hour comes first: due, then done. The rebuilt
    # clock starts at the first event (09:00): the daemon began watching then, so the
    # first check falls due an interval later, at 10:00.
    rebuilt = replay(config, [e for e in recorded if not isinstance(e, Tick)], until=recorded[-1].time)
    due = [(t["at"][11:16], t["phase"]) for t in rebuilt.transitions if t["condition"] == "NEURO_CHECK_DUE"]
    assert due == [
        ("10:00", "start"),
        ("10:00", "end"),
        ("11:00", "start"),
        ("11:00", "end"),
    ]


def test_no_tick_is_rebuilt_once_the_capture_carries_them(tmp_path: Path) -> None:
    # A daemon that was stopped had no ticks: a gap in the recorded ticks stays one.
    config = config_module.load(_config_toml(tmp_path))
    start = datetime(2026, 3, 2, 20, tzinfo=UTC)
    events: list[Event] = [Tick(start), Tick(start + timedelta(hours=5))]
    result = replay(config, events, until=start + timedelta(hours=5, minutes=3))
    assert result.ticks == 2 + 3
