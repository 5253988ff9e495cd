"""``wardd replay``: a capture through the rules and the alert book reproduces the alerts."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from daemon import capture
from daemon import config as config_module
from daemon.cli import main
from daemon.config import InfluxConfig
from daemon.metrics import Counters
from daemon.replay import read_events, replay
from simulators.scenario import load_scenario, run_scenario, to_config

NO_BROKER = "mqtt://127.0.0.1:1"


def _config_toml(tmp_path: Path) -> Path:
    path = tmp_path / "ward.toml"
    path.write_text(
        f"""
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
    lines.insert(12, json.dumps({"type": "tick", "time": "2026-03-02T20:10:00Z"}))
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


async def test_scenario_capture_replays_to_the_same_alerts(tmp_path: Path) -> None:
    scenario = load_scenario("late-step-up").model_copy(update={"duration": timedelta(hours=7)})
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
    kinds = {data["type"] for _, data in capture.read(capture_path)}
    assert {"vitals", "pump", "bag", "observation"} <= kinds
    again = replay(config, read_events(capture_path, Counters()), until=scenario.start + scenario.duration)

    def key(alerts: list[dict[str, object]]) -> list[tuple[object, object]]:
        return [(a["condition"], a["phase"]) for a in alerts if a["phase"] != "overdue"]

    assert key(again.transitions) == key(run.alerts)
    assert ("STEP_UP_LATE", "start") in key(run.alerts)
