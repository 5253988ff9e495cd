"""Vendor alarms through the whole daemon: a scenario's pump program raises an alarm at an
Alaris or at a pump in a Fresenius base, on a real pseudo-terminal; the driver reads the
vendor's code, the pump rule raises its condition and ends it when the pump runs again
(or, for an alarm that leaves the pump running, when the pump no longer reports it).
"""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.errors import ConfigError
from simulators.scenario import (
    PumpModel,
    PumpStep,
    Scenario,
    builtin_path,
    check_expected,
    expected_path,
    load_expected,
    load_scenario,
    parse_duration,
    parse_scenario,
    run_scenario,
)

pytestmark = pytest.mark.integration  # real pseudo-terminals and the embedded broker

NO_BROKER = "mqtt://127.0.0.1:1"  # nothing answers: the embedded broker starts
STORY = "pump-occlusion-comm-loss"


def _on_model(scenario: Scenario, model: PumpModel, steps: list[PumpStep] | None = None) -> Scenario:
    beds = []
    for bed in scenario.beds:
        assert bed.pump is not None
        update: dict[str, Any] = {"model": model}
        if steps is not None:
            update["steps"] = steps
        beds.append(bed.model_copy(update={"pump": bed.pump.model_copy(update=update)}))
    return scenario.model_copy(update={"beds": beds})


def _expected(scenario: Scenario, renamed: dict[str, str]) -> list[dict[str, Any]]:
    """The NE-1000's expectations with each pump condition renamed, one poll more of tolerance
    (a stop shows when the volume has not moved since the last poll)."""
    path = builtin_path(STORY)
    assert path is not None
    poll = max(bed.pump.poll_interval for bed in scenario.beds if bed.pump is not None)
    return [
        {
            **want,
            "condition": renamed.get(want["condition"], want["condition"]),
            "tolerance": f"{(parse_duration(want.get('tolerance', '15m')) + poll).total_seconds():g}s",
        }
        for want in load_expected(expected_path(path))
    ]


@pytest.mark.parametrize(
    ("model", "condition"),
    [(PumpModel.ALARIS_ASENA, "PUMP_OCCLUSION"), (PumpModel.FRESENIUS_BASE_A, "PUMP_ALARM")],
)
async def test_the_occlusion_story_raises_the_vendors_alarm(
    model: PumpModel, condition: str, tmp_path: Path
) -> None:
    """The NE-1000 story's stall is the Alaris's own occlusion code, or the base's "presence of
    an alarm"; raised at the occlusion, ended at the restart; everything else as on the NE-1000."""
    scenario = _on_model(load_scenario(STORY), model)
    result = await run_scenario(scenario, mqtt_url=NO_BROKER, progress=False, workdir=tmp_path)
    problems = check_expected(scenario.start, result.alerts, _expected(scenario, {"PUMP_STALL": condition}))
    assert not problems, "\n".join([*problems, *result.timeline])
    alarms = [a for a in result.alerts if a["condition"] == condition]
    assert [a["phase"] for a in alarms] == ["start", "end"]
    assert alarms[0]["details"]["alarm"] == {"alaris-asena": "AL_OCCLU", "fresenius-base-a": "12"}[model]


def _steps(*steps: dict[str, str]) -> list[PumpStep]:
    bag = {"at": "0h", "do": "hang_bag", "bag_id": "d4-9ug", "concentration_ug_per_ml": "0.0375"}
    return [PumpStep.model_validate(s) for s in (bag, {"at": "0h", "do": "start"}, *steps)]


async def test_a_low_battery_on_an_alaris_comes_and_goes_while_it_infuses(tmp_path: Path) -> None:
    """An alarm that leaves the pump running: raised when read, ended when no longer read; the
    infusion is never judged interrupted."""
    steps = _steps(
        {"at": "30m", "do": "alarm", "alarm": "battery_low"},
        {"at": "1h", "do": "clear_alarm"},
    )
    scenario = _on_model(load_scenario(STORY), PumpModel.ALARIS_ASENA, steps).model_copy(
        update={"duration": timedelta(hours=1, minutes=30)}
    )
    result = await run_scenario(scenario, mqtt_url=NO_BROKER, progress=False, workdir=tmp_path)
    expected = [
        {"bed": "06", "condition": "PUMP_BATTERY_LOW", "phase": "start", "priority": "medium", "at": "30m",
         "tolerance": "1m"},
        {"bed": "06", "condition": "PUMP_BATTERY_LOW", "phase": "end", "priority": "medium", "at": "1h",
         "tolerance": "1m"},
    ]  # fmt: skip
    problems = check_expected(scenario.start, result.alerts, expected)
    assert not problems, "\n".join([*problems, *result.timeline])


@pytest.mark.parametrize(
    ("model", "condition"),
    [(PumpModel.ALARIS_ASENA, "PUMP_OCCLUSION"), (PumpModel.FRESENIUS_BASE_A, "PUMP_ALARM")],
)
async def test_an_occlusion_cleared_but_not_restarted_stays(
    model: PumpModel, condition: str, tmp_path: Path
) -> None:
    """A stopping alarm cleared at the keypad, the pump left stopped: the condition stays (the
    infusion is still interrupted) until the pump runs again. The alarm comes 10 s after a
    poll, so the pump infused between the last reading and the alarm: that volume must not
    read as infusing once the alarm is gone (the Fresenius base gives no volume meanwhile)."""
    steps = _steps(
        {"at": "30m10s", "do": "alarm", "alarm": "occlusion"},
        {"at": "35m", "do": "clear_alarm"},
        {"at": "1h", "do": "start"},
    )
    scenario = _on_model(load_scenario(STORY), model, steps).model_copy(
        update={"duration": timedelta(hours=1, minutes=20)}
    )
    result = await run_scenario(scenario, mqtt_url=NO_BROKER, progress=False, workdir=tmp_path)
    expected = [
        {"bed": "06", "condition": condition, "phase": "start", "at": "30m10s", "tolerance": "1m"},
        {"bed": "06", "condition": "INFUSION_INTERRUPTED", "phase": "start", "at": "45m", "tolerance": "2m"},
        {"bed": "06", "condition": condition, "phase": "end", "at": "1h", "tolerance": "1m"},
        {"bed": "06", "condition": "INFUSION_INTERRUPTED", "phase": "end", "at": "1h", "tolerance": "1m"},
    ]
    problems = check_expected(scenario.start, result.alerts, expected)
    assert not problems, "\n".join([*problems, *result.timeline])


def test_an_alarm_a_pump_has_no_code_for_is_refused_with_its_place() -> None:
    path = builtin_path(STORY)
    assert path is not None
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    data["beds"][0]["pump"]["model"] = "alaris-asena"
    data["beds"][0]["pump"]["steps"][2]["alarm"] = "reset"
    with pytest.raises(ConfigError) as info:
        parse_scenario(data)
    assert "beds[0].pump" in str(info.value)
    assert "the alaris-asena pump has no alarm code for 'reset'" in str(info.value)
    data["beds"][0]["pump"]["steps"][2]["alarm"] = "occlusion"
    parse_scenario(data)
