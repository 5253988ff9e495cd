"""Protocols: built-in schedules, BSA dosing, site schedules, day and total arithmetic."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from daemon import frozen
from daemon.clinical.protocols import (
    BUILTIN,
    BsaFormula,
    Schedule,
    Step,
    bsa_m2,
    cycle_schedule,
    protocol_config,
    resolve,
    restart_schedule,
    schedule_for,
)
from daemon.config import BUILTIN_PROTOCOLS, BedConfig, Config, ProtocolConfig, parse

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


def _bed(**overrides: Any) -> BedConfig:
    values: dict[str, Any] = {
        "ward": "w1",
        "id": "b1",
        "patient": "p-1",
        "weight_kg": 60.0,
        "height_cm": 165.0,
        "protocol_start": START,
    }
    values.update(overrides)
    return BedConfig.model_validate(values)


def test_every_config_name_has_a_builtin() -> None:
    assert set(BUILTIN) == set(BUILTIN_PROTOCOLS)


def test_ssc_14d_is_the_case_regimen() -> None:
    schedule = schedule_for(_bed())
    assert schedule.name == "ssc-14d"
    assert schedule.protocol_day(START - timedelta(seconds=1)) == 0
    assert schedule.protocol_day(START) == 1
    assert schedule.protocol_day(START + 7 * DAY - timedelta(seconds=1)) == 7
    assert schedule.protocol_day(START + 7 * DAY) == 8
    assert schedule.expected_dose_ug_per_day(START + 3 * DAY) == 9.0
    assert schedule.expected_dose_ug_per_day(START + 7 * DAY) == 28.0
    assert schedule.expected_dose_ug_per_day(START + 14 * DAY) == 0.0
    assert schedule.end == START + 14 * DAY
    assert schedule.expected_total_ug(START + 14 * DAY) == pytest.approx(7 * 9 + 7 * 28)
    assert schedule.expected_total_ug(START + DAY / 2) == pytest.approx(4.5)
    assert schedule.expected_total_ug(START + 30 * DAY) == pytest.approx(259.0)
    (up,) = schedule.step_ups()
    assert (up.time, up.lower_ug_per_day, up.higher_ug_per_day) == (START + 7 * DAY, 9.0, 28.0)
    assert schedule.next_step_time(START) == START + 7 * DAY
    assert schedule.next_step_time(START + 8 * DAY) == START + 14 * DAY
    assert schedule.next_step_time(START + 15 * DAY) is None


def test_all_cycles() -> None:
    c1 = schedule_for(_bed(protocol="all-cycle1"))
    assert c1.end == START + 28 * DAY
    assert c1.expected_dose_ug_per_day(START + 27 * DAY) == 28.0
    c2 = schedule_for(_bed(protocol="all-cycle2"))
    assert c2.step_ups() == ()
    assert c2.expected_dose_ug_per_day(START) == 28.0


def test_bsa_formulas() -> None:
    # Mosteller sqrt(135 × 30 / 3600); Du Bois 0.007184 × 30^0.425 × 135^0.725.
    assert bsa_m2(30, 135, BsaFormula.MOSTELLER) == pytest.approx(1.06066, rel=1e-4)
    assert bsa_m2(30, 135, "dubois") == pytest.approx(0.007184 * 30**0.425 * 135**0.725)
    assert bsa_m2(60, 165, "mosteller") == pytest.approx(1.6583, rel=1e-4)
    with pytest.raises(ValueError, match="must be > 0"):
        bsa_m2(0, 135, "mosteller")


def test_child_bsa_protocol_and_caps() -> None:
    child = schedule_for(_bed(weight_kg=30, height_cm=135, protocol="all-cycle1-bsa"))
    assert child.bsa_m2 == pytest.approx(1.06066, rel=1e-4)
    assert child.expected_dose_ug_per_day(START) == pytest.approx(5 * 1.06066, rel=1e-4)
    assert child.expected_dose_ug_per_day(START + 7 * DAY) == pytest.approx(15 * 1.06066, rel=1e-4)
    # A large BSA is capped at 9 and 28 µg/day (label, < 45 kg dosing).
    big = resolve("ssc-14d-bsa", BUILTIN["ssc-14d-bsa"], start=START, weight_kg=80, height_cm=180)
    assert big.bsa_m2 == pytest.approx(2.0)
    assert big.expected_dose_ug_per_day(START) == 9.0
    assert big.expected_dose_ug_per_day(START + 7 * DAY) == 28.0


@pytest.mark.parametrize(("weight_kg", "height_cm"), [(0, 135), (30, 0), (-1, 135), (30, -1)])
def test_bsa_needs_a_positive_weight_and_height(weight_kg: float, height_cm: float) -> None:
    with pytest.raises(ValueError, match=r"^weight and height must be > 0, got "):
        bsa_m2(weight_kg, height_cm, "mosteller")


def test_bsa_of_a_tiny_patient_is_computed() -> None:
    assert bsa_m2(0.5, 0.5, "mosteller") == pytest.approx(math.sqrt(0.25 / 3600))


def test_bsa_formula_from_thresholds() -> None:
    config = parse(
        {
            "thresholds": {"dose": {"bsa_formula": "dubois"}},
            "beds": [_bed(weight_kg=30, height_cm=135, protocol="ssc-14d-bsa").model_dump()],
        }
    )
    schedule = schedule_for(config.beds[0], config)
    assert schedule.bsa_m2 == pytest.approx(bsa_m2(30, 135, "dubois"))


def test_site_protocol_from_toml_data() -> None:
    config = parse(
        {
            "protocols": {
                "slow-step": {
                    "steps": [
                        {"day_from": 1, "day_to": 3, "dose_ug_per_day": 5},
                        {"day_from": 4, "day_to": 10, "dose_ug_per_day": 9},
                        {"day_from": 11, "day_to": 20, "dose_ug_per_day": 28},
                    ]
                }
            },
            "beds": [_bed(protocol="slow-step").model_dump()],
        }
    )
    schedule = schedule_for(config.beds[0], config)
    assert [u.time for u in schedule.step_ups()] == [START + 3 * DAY, START + 10 * DAY]
    assert schedule.end == START + 20 * DAY
    assert schedule.expected_total_ug(schedule.end) == pytest.approx(15 + 63 + 280)


def test_gap_days_are_not_a_step_up() -> None:
    protocol = ProtocolConfig.model_validate(
        {
            "steps": [
                {"day_from": 1, "day_to": 2, "dose_ug_per_day": 9},
                {"day_from": 5, "day_to": 6, "dose_ug_per_day": 28},
            ]
        }
    )
    schedule = resolve("gap", protocol, start=START, weight_kg=60, height_cm=165)
    assert schedule.step_ups() == ()
    assert schedule.expected_dose_ug_per_day(START + 3 * DAY) == 0.0
    assert schedule.next_step_time(START + 3 * DAY) == START + 4 * DAY


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"day_from": 3, "day_to": 2, "dose_ug_per_day": 9}], "before day_from"),
        ([{"day_from": 1, "day_to": 2}], "exactly one"),
        ([{"day_from": 1, "day_to": 2, "dose_ug_per_day": 9, "dose_ug_per_m2_per_day": 5}], "exactly one"),
        ([{"day_from": 1, "day_to": 2, "dose_ug_per_day": 9, "max_ug_per_day": 9}], "only caps"),
        (
            [
                {"day_from": 1, "day_to": 7, "dose_ug_per_day": 9},
                {"day_from": 7, "day_to": 9, "dose_ug_per_day": 28},
            ],
            "overlap",
        ),
        ([], "at least 1"),
    ],
)
def test_bad_site_protocols_are_rejected(steps: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ProtocolConfig.model_validate({"steps": steps})


def test_unknown_protocol_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="ssc-14d"):
        protocol_config("nope", Config())
    builtin = ", ".join(sorted(BUILTIN))
    with pytest.raises(KeyError) as without_config:
        protocol_config("nope")
    assert without_config.value.args == (f"unknown protocol 'nope' (known: {builtin})",)
    site = parse(
        {"protocols": {"aaa-site": {"steps": [{"day_from": 1, "day_to": 2, "dose_ug_per_day": 5.0}]}}}
    )
    with pytest.raises(KeyError) as with_site:
        protocol_config("nope", site)
    assert with_site.value.args == (f"unknown protocol 'nope' (known: aaa-site, {builtin})",)


def test_a_flat_schedule_has_no_body_surface() -> None:
    assert schedule_for(_bed(protocol="ssc-14d")).bsa_m2 is None


def test_site_protocol_wins_over_builtin_name() -> None:
    config = Config.model_validate(
        {"protocols": {"ssc-14d": {"steps": [{"day_from": 1, "day_to": 1, "dose_ug_per_day": 1}]}}}
    )
    assert protocol_config("ssc-14d", config).steps[0].dose_ug_per_day == 1


def test_a_new_cycle_uses_the_beds_bsa_formula() -> None:
    config = parse(
        {
            "thresholds": {"dose": {"bsa_formula": "dubois"}},
            "beds": [_bed(weight_kg=30, height_cm=135, protocol="ssc-14d-bsa").model_dump()],
        }
    )
    cycle = cycle_schedule(config.beds[0], config, "ssc-14d-bsa", start=START + 20 * DAY)
    assert cycle.bsa_m2 == pytest.approx(bsa_m2(30, 135, "dubois"))
    without_config = cycle_schedule(config.beds[0], None, "ssc-14d-bsa", start=START + 20 * DAY)
    assert without_config.bsa_m2 == pytest.approx(bsa_m2(30, 135, "mosteller"))  # the default formula
    assert cycle.expected_dose_ug_per_day(START + 20 * DAY) == pytest.approx(5 * bsa_m2(30, 135, "dubois"))


def test_a_restart_uses_the_protocols_or_else_the_beds_bsa_formula() -> None:
    per_m2 = [{"day_from": 1, "day_to": 14, "dose_ug_per_m2_per_day": 5, "max_ug_per_day": 9}]
    bed = _bed(weight_kg=30, height_cm=135, protocol="kids").model_dump()
    own = parse({"protocols": {"kids": {"steps": per_m2, "bsa_formula": "dubois"}}, "beds": [bed]})
    restart = restart_schedule(own.beds[0], own, "kids", start=START, stop=START + 20 * DAY)
    assert restart.bsa_m2 == pytest.approx(bsa_m2(30, 135, "dubois"))
    assert restart.stop == START + 20 * DAY
    beds = parse(
        {"thresholds": {"dose": {"bsa_formula": "dubois"}}, "beds": [{**bed, "protocol": "ssc-14d-bsa"}]}
    )
    restart = restart_schedule(beds.beds[0], beds, "ssc-14d-bsa", start=START, stop=START + 20 * DAY)
    assert restart.bsa_m2 == pytest.approx(bsa_m2(30, 135, "dubois"))


def test_a_schedule_stopped_early_plans_no_dose_after_its_stop() -> None:
    # A restart plan ends where the interrupted cycle would have (dose_label.Plan.stop),
    # before its last step does: the total counts 7 days at 9 and 3 at 28 µg/day.
    schedule = Schedule("restart", START, (Step(1, 7, 9.0), Step(8, 366, 28.0)), stop=START + 10 * DAY)
    assert schedule.expected_total_ug(START + 20 * DAY) == pytest.approx(7 * 9.0 + 3 * 28.0)
    assert schedule.expected_total_ug(START + 10 * DAY) == pytest.approx(7 * 9.0 + 3 * 28.0)


def test_only_a_higher_dose_on_the_next_day_is_a_step_up_and_only_before_the_end() -> None:
    steps = (Step(1, 2, 9.0), Step(3, 4, 9.0), Step(5, 6, 28.0))
    plain = Schedule("site", START, steps)
    assert [(u.time, u.lower_ug_per_day, u.higher_ug_per_day) for u in plain.step_ups()] == [
        (START + 4 * DAY, 9.0, 28.0)  # the same dose again (day 3) is no step-up
    ]
    assert Schedule("site", START, steps, stop=START + 4 * DAY).step_ups() == ()  # stopped as it would start


def test_a_schedule_runs_from_its_start_included_to_its_end_excluded() -> None:
    schedule = Schedule("site", START, (Step(1, 2, 9.0),))
    assert [schedule.in_protocol(START + d) for d in (-SECOND, 0 * DAY, 2 * DAY - SECOND, 2 * DAY)] == [
        False,
        True,
        True,
        False,
    ]


def test_a_schedule_works_out_its_end_and_step_ups_again_when_replaced() -> None:
    """The end and the step-ups are worked out once, when a schedule is made: a schedule
    replaced with an earlier stop has that end, and no step-up after it."""
    start = datetime(2026, 3, 2, 8, tzinfo=UTC)
    schedule = Schedule("ssc-14d", start, (Step(1, 7, 9.0), Step(8, 14, 28.0)))
    assert (schedule.end, [up.time for up in schedule.step_ups()]) == (start + 14 * DAY, [start + 7 * DAY])
    stopped = dataclasses.replace(schedule, stop=start + 5 * DAY)
    assert (stopped.end, stopped.step_ups()) == (start + 5 * DAY, ())
    assert stopped == Schedule("ssc-14d", start, schedule.steps, stop=start + 5 * DAY)
    with pytest.raises(TypeError, match="__post_init__"):
        frozen.replace(schedule, stop=start)
