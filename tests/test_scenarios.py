"""Built-in scenarios through the real pipeline: pumps on ptys, monitors over MQTT, one stepped clock.

The broker is the embedded one (no fixture needed), so these run anywhere. The full
14-day published case takes about two minutes; it runs when WARDD_FULL_SCENARIOS=1,
and its first day (the fever at hour 12) always run.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

import pytest

from daemon.config import parse
from daemon.errors import ConfigError
from simulators.scenario import (
    DEFAULT_START,
    PumpModel,
    Scenario,
    SteppedClock,
    builtin_names,
    builtin_path,
    check_expected,
    expected_path,
    load_expected,
    load_scenario,
    parse_duration,
    parse_scenario,
    run_scenario,
)
from simulators.secure import password_file
from tests.servers import mosquitto, readable_copies

pytestmark = pytest.mark.integration  # real servers, processes or pseudo-terminals

NO_BROKER = "mqtt://127.0.0.1:1"  # nothing answers: the embedded broker starts
SHORT = [n for n in builtin_names() if n != "published-case"]
DOSE_CONDITIONS = {
    "DOSE_RATE_HIGH",
    "DOSE_RATE_LOW",
    "STEP_UP_LATE",
    "STEP_UP_EARLY",
    "INFUSION_INTERRUPTED",
    "BOLUS_SUSPECTED",
    "CUMULATIVE_DOSE_DEVIATION",
    "BAG_LOW",
    "INFUSION_AFTER_PROTOCOL_END",
}


def test_durations() -> None:
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("7d2h") == timedelta(days=7, hours=2)
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("1d2h3m4.5s") == timedelta(days=1, hours=2, minutes=3, seconds=4.5)
    assert parse_duration("-6d20h") == -timedelta(days=6, hours=20)
    for bad in ("", "12", "h", "2h7d", "1w"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_every_builtin_loads_and_has_expectations() -> None:
    assert len(builtin_names()) >= 6
    for name in builtin_names():
        path = builtin_path(name)
        assert path is not None
        load_scenario(path)
        assert load_expected(expected_path(path))


def test_errors_name_every_problem_and_its_place() -> None:
    data = {
        "name": "bad",
        "duration": "2 days",
        "colour": "red",
        "beds": [
            {
                "id": "01",
                "weight_kg": 60,
                "height_cm": 160,
                "pump": {"steps": [{"at": "1h", "do": "hang_bag"}, {"at": "-1h", "do": "start"}]},
                "monitor": {"excursions": [{"metric": "temp", "at": "1h", "target": 38}]},
            }
        ],
    }
    with pytest.raises(ConfigError) as caught:
        parse_scenario(data, "bad.toml")
    text = "\n".join(str(issue) for issue in caught.value.issues)
    assert "duration" in text
    assert "colour" in text
    assert "unknown option" in text
    assert "'hang_bag' needs bag_id, concentration_ug_per_ml" in text
    assert "beds[0].pump.steps[1].at" in text
    assert "must not be negative" in text
    assert "beds[0].monitor.excursions[0].metric" in text


def test_action_fields_must_fit_the_action() -> None:
    data = {
        "name": "x",
        "duration": "1h",
        "beds": [
            {
                "id": "01",
                "weight_kg": 60,
                "height_cm": 160,
                "pump": {"steps": [{"at": "1h", "do": "start", "rate_ml_per_h": 10}]},
            }
        ],
    }
    with pytest.raises(ConfigError, match="'start' does not take rate_ml_per_h"):
        parse_scenario(data)


async def test_stepped_clock_wakes_one_sleeper_at_a_time() -> None:
    clock = SteppedClock(DEFAULT_START)
    order: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        order.append(f"{name}@{clock.monotonic():g}")

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("b", 5), ("a", 2), ("c", 5))]
    await asyncio.sleep(0)
    assert clock.next_wake() == 2
    while clock.wake_next():
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == ["a@2", "b@5", "c@5"]


@pytest.mark.parametrize("name", SHORT)
async def test_builtin_scenario_gives_its_expected_alerts(name: str, tmp_path: Path) -> None:
    scenario = load_scenario(name)
    result = await run_scenario(scenario, mqtt_url=NO_BROKER, progress=False, workdir=tmp_path)
    path = builtin_path(name)
    assert path is not None
    problems = check_expected(scenario.start, result.alerts, load_expected(expected_path(path)))
    assert not problems, "\n".join([*problems, *result.timeline])


def _on_model(scenario: Scenario, model: PumpModel) -> Scenario:
    """The same scenario with every bed's pump of ``model``."""
    beds = [
        bed.model_copy(update={"pump": bed.pump.model_copy(update={"model": model})}) if bed.pump else bed
        for bed in scenario.beds
    ]
    return scenario.model_copy(update={"beds": beds})


# The dose stories, whose pumps only run, stop and change bags: an Alaris or a pump in a
# Fresenius base must give the alerts expected of the NE-1000. What they are read with
# does not say whether they run, so a stop shows when the volume has not moved since
# the last poll: one poll later at most.
@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("interruption-4h", PumpModel.ALARIS_ASENA),
        ("wrong-strength-bag", PumpModel.ALARIS_ASENA),
        ("interruption-4h", PumpModel.FRESENIUS_BASE_A),
    ],
)
async def test_builtin_scenario_on_other_pumps_gives_the_same_alerts(
    name: str, model: PumpModel, tmp_path: Path
) -> None:
    scenario = _on_model(load_scenario(name), model)
    result = await run_scenario(scenario, mqtt_url=NO_BROKER, progress=False, workdir=tmp_path)
    path = builtin_path(name)
    assert path is not None
    polls = {bed.pump.poll_interval for bed in scenario.beds if bed.pump is not None}
    expected = [
        {
            **want,
            "tolerance": f"{(parse_duration(want.get('tolerance', '15m')) + max(polls)).total_seconds():g}s",
        }
        for want in load_expected(expected_path(path))
    ]
    problems = check_expected(scenario.start, result.alerts, expected)
    assert not problems, "\n".join([*problems, *result.timeline])
    assert result.counts["pump_polls"] > 0


@pytest.mark.parametrize("model", list(PumpModel))
async def test_published_case_first_day(model: PumpModel, tmp_path: Path) -> None:
    scenario = _on_model(load_scenario("published-case"), model).model_copy(
        update={"duration": timedelta(hours=24)}
    )
    result = await run_scenario(scenario, mqtt_url=NO_BROKER, progress=False, workdir=tmp_path)
    starts = [(a["condition"], a["offset"], a["details"]) for a in result.alerts if a["phase"] == "start"]
    assert [s[0] for s in starts] == ["FEVER", "CRS_SUSPECTED"], result.timeline
    # Grade 1 from the monitor's fever alone; the basis says where the grade came from.
    assert starts[1][2]["grade"] == 1
    assert [(b["domain"], b["source"]) for b in starts[1][2]["basis"]] == [("fever", "monitor")]
    assert all(
        abs(parse_duration(s[1].lstrip("+")) - timedelta(hours=12)) <= timedelta(minutes=30) for s in starts
    )
    assert not {a["condition"] for a in result.alerts} & DOSE_CONDITIONS
    assert result.counts["pump_polls"] >= 24 * 60


@pytest.mark.skipif(
    not os.environ.get("WARDD_FULL_SCENARIOS"), reason="about 2 minutes each: set WARDD_FULL_SCENARIOS=1"
)
@pytest.mark.parametrize("model", list(PumpModel))
async def test_published_case_full_14_days(model: PumpModel, tmp_path: Path) -> None:
    scenario = _on_model(load_scenario("published-case"), model)
    result = await run_scenario(scenario, mqtt_url=NO_BROKER, progress=False, workdir=tmp_path)
    path = builtin_path("published-case")
    assert path is not None
    problems = check_expected(scenario.start, result.alerts, load_expected(expected_path(path)))
    assert not problems, "\n".join([*problems, *result.timeline])
    assert not {a["condition"] for a in result.alerts} & DOSE_CONDITIONS


async def test_same_file_and_seed_give_the_same_alerts(tmp_path: Path) -> None:
    scenario = load_scenario("wrong-strength-bag")
    first = await run_scenario(scenario, mqtt_url=NO_BROKER, progress=False, workdir=tmp_path / "a")
    second = await run_scenario(scenario, mqtt_url=NO_BROKER, progress=False, workdir=tmp_path / "b")

    def key(alerts: list[dict[str, object]]) -> list[tuple[object, ...]]:
        return [
            (a["at"], a["bed"], a["condition"], a["phase"], a["priority"], str(a["details"])) for a in alerts
        ]

    assert key(first.alerts) == key(second.alerts)
    assert first.counts == second.counts


async def test_a_scenario_logs_in_where_the_broker_wants_a_login(tmp_path: Path) -> None:
    """``wardd scenario --config``: the daemon and every link of the runner take the
    config's login; without it the broker refuses them all."""
    passwords = password_file(tmp_path / "passwd", {"ward-sim": "pw-sim-61c2"})
    with (
        readable_copies(passwords) as (readable,),
        mosquitto(
            tmp_path / "mosquitto", access=f"allow_anonymous false\npassword_file {readable}\n"
        ) as server,
    ):
        (tmp_path / "password").write_text("pw-sim-61c2\n")
        broker = parse(
            {
                "mqtt": {
                    "url": f"mqtt://127.0.0.1:{server.port}",
                    "username": "ward-sim",
                    "password": {"file": str(tmp_path / "password")},
                }
            }
        ).mqtt
        scenario = load_scenario("interruption-4h")
        result = await run_scenario(scenario, broker=broker, progress=False, workdir=tmp_path / "run")
    path = builtin_path("interruption-4h")
    assert path is not None
    problems = check_expected(scenario.start, result.alerts, load_expected(expected_path(path)))
    assert not problems, "\n".join([*problems, *result.timeline])
