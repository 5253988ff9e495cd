"""Every dose threshold and time limit, with a test either side of its edge.

Label facts are in domain.md section 1 (the 9 -> 28 µg/day schedule, interruptions of
4 h or more, breaks of more than 7 days, never flush); priorities and what an alert
does over time in section 4. The other limits are site choices (``DoseThresholds``):
their edges are pinned here all the same, so that a changed default or a changed
comparison fails a test instead of passing unseen.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from daemon.clinical.dose import (
    BAG_LOW,
    BOLUS_SUSPECTED,
    CUMULATIVE_DOSE_DEVIATION,
    DISCONTINUATION_RULE,
    DOSE_RATE_HIGH,
    DOSE_RATE_LOW,
    INFUSION_AFTER_PROTOCOL_END,
    INFUSION_INTERRUPTED,
    STEP_UP_DUE,
    STEP_UP_EARLY,
    STEP_UP_LATE,
    Bag,
    DoseRule,
    DoseState,
    Increment,
    Reading,
    VolumeMark,
    delivered_rate_ug_per_day,
    dose_point,
    dose_rules,
    dump_state,
    expected_over_ledger_ug,
    load_state,
    next_step,
    parse_bag,
    programmed_dose_ug_per_day,
    status_lines,
)
from daemon.clinical.dose_label import DeclaredReaction, Plan
from daemon.clinical.protocols import bsa_m2
from daemon.config import Config, parse
from daemon.errors import InputError
from daemon.events import (
    AlertCandidate,
    BagHung,
    DeclarationKind,
    DoseDeclaration,
    Event,
    Observation,
    Priority,
    PumpReading,
    PumpState,
    Reaction,
    Tick,
)
from daemon.rules import RuleEngine
from tests.helpers import one_bed_config
from tests.test_dose import C9, C28, MIN, START, Bed
from tests.test_dose_label import Bed as LabelBed

SEC = timedelta(seconds=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
STEP = START + 7 * DAY  # ssc-14d: 9 µg/day on days 1-7, 28 from day 8 (domain.md section 0)
T = START + 2 * DAY  # a day of the 9 µg/day week, away from the step


def changes(out: list[AlertCandidate], condition: str) -> list[tuple[bool, Priority]]:
    return [(c.present, c.priority) for c in out if c.condition == condition]


def present(bed: Bed, condition: str) -> bool:
    return condition in bed.state.active


# --------------------------------------------------------------------------- dose rate band


@pytest.mark.parametrize(
    ("rate_ml_per_h", "condition"),
    [
        (10.99, None),  # 9.891 µg/day: inside 9 ± 10 %
        (11.01, DOSE_RATE_HIGH),  # 9.909 µg/day: outside (a ±30 % band would miss it)
        (9.01, None),  # 8.109 µg/day: inside
        (8.99, DOSE_RATE_LOW),  # 8.091 µg/day: outside
    ],
)
def test_the_rate_band_is_ten_percent_either_side(rate_ml_per_h: float, condition: str | None) -> None:
    # domain.md section 1: any other rate for the bag is a dose error; the ±10 % band
    # around the day's dose is the site's tolerance (rate_tolerance_pct).
    bed = Bed()
    bed.bag(T, C9)
    bed.pump(T, rate_ml_per_h, 0)
    bed.tick(T + 5 * MIN)
    assert {c.condition for c in bed.out if c.present} == ({condition} if condition else set())


@pytest.mark.parametrize(("rate_ml_per_h", "alarm"), [(4.5, False), (4.51, True)])
def test_a_dose_exactly_at_the_bands_edge_is_inside_it(rate_ml_per_h: float, alarm: bool) -> None:
    # 0.125 µg/mL at 4.5 mL/h is 13.5 µg/day, exactly 9 + 50 %: inside a band of ±50 %.
    bed = Bed(rate_tolerance_pct=50)
    bed.bag(T, 0.125)
    bed.pump(T, rate_ml_per_h, 0)
    bed.tick(T + 5 * MIN)
    assert present(bed, DOSE_RATE_HIGH) is alarm


def test_a_rate_delivering_less_than_1_ug_per_day_is_a_low_dose_not_a_stop() -> None:
    bed = Bed()
    bed.bag(T, C9)
    bed.pump(T, 0.5, 0)  # 0.45 µg/day
    bed.tick(T + 5 * MIN)
    assert present(bed, DOSE_RATE_LOW)
    assert not present(bed, INFUSION_INTERRUPTED)


def _site_bed(steps: list[dict[str, Any]], **dose: Any) -> DoseRule:
    config = one_bed_config(START, weight_kg=60, site_steps=steps, dose=dose)
    (rule,) = dose_rules(config, config.beds[0])
    assert isinstance(rule, DoseRule)
    return rule


def _run_rate(rule: DoseRule, when: datetime, conc: float, rate_ml_per_h: float) -> list[AlertCandidate]:
    state = rule.initial()
    out: list[AlertCandidate] = []
    for event in (
        BagHung("w1", "b1", when, "bag", conc, None),
        PumpReading("w1", "b1", "p1", when, PumpState.INFUSING, rate_ml_per_h, 0),
        PumpReading("w1", "b1", "p1", when + 10 * MIN, PumpState.INFUSING, rate_ml_per_h, rate_ml_per_h / 6),
    ):
        state, candidates = rule.step(state, event, event.time)
        out.extend(candidates)
    return [c for c in out if c.present]


@pytest.mark.parametrize(
    ("rate_ml_per_h", "raised"),
    [
        (5 / 3, []),  # 0.5 µg/day: on plan
        (8 / 3, [(DOSE_RATE_HIGH, Priority.MEDIUM)]),  # 0.8 µg/day: 1.6 times the plan
    ],
)
def test_a_dose_below_1_ug_per_day_has_its_band_like_any_other(
    rate_ml_per_h: float, raised: list[tuple[str, Priority]]
) -> None:
    rule = _site_bed([{"day_from": 1, "day_to": 28, "dose_ug_per_day": 0.5}])
    out = _run_rate(rule, T, 0.0125, rate_ml_per_h)
    assert [(c.condition, c.priority) for c in out] == raised


@pytest.mark.parametrize("rate_ml_per_h", [10, 0.5])
def test_any_dose_on_a_day_the_protocol_leaves_out_is_a_high_dose_rate(rate_ml_per_h: float) -> None:
    # Days 1-3 at 9 µg/day, day 4 without infusion, days 5-10 at 28: on day 4 any dose
    # is a dose the protocol does not plan (even 0.45 µg/day).
    rule = _site_bed(
        [
            {"day_from": 1, "day_to": 3, "dose_ug_per_day": 9.0},
            {"day_from": 5, "day_to": 10, "dose_ug_per_day": 28.0},
        ]
    )
    (high,) = _run_rate(rule, START + 3 * DAY + HOUR, C9, rate_ml_per_h)
    assert (high.condition, high.priority, high.details) == (
        DOSE_RATE_HIGH,
        Priority.HIGH,
        {"expected_ug_per_day": 0.0, "rule": "protocol_calendar"},
    )


def test_a_step_window_wider_than_a_day_accepts_the_doses_around_every_step_up_in_it() -> None:
    # Daily step-ups 5 -> 10 -> 20 µg/day and a 24 h window: at noon on day 2 both step-ups
    # are within it, and the dose before the first (5 µg/day) is still on time.
    steps = [
        {"day_from": 1, "day_to": 1, "dose_ug_per_day": 5.0},
        {"day_from": 2, "day_to": 2, "dose_ug_per_day": 10.0},
        {"day_from": 3, "day_to": 10, "dose_ug_per_day": 20.0},
    ]
    noon = START + DAY + 4 * HOUR
    wide = _run_rate(_site_bed(steps, step_window_s=86_400), noon, 0.0125, 50 / 3)  # 5 µg/day
    assert [c.condition for c in wide] == [STEP_UP_DUE]  # the reminder of the step it is late for
    (late,) = _run_rate(_site_bed(steps), noon, 0.0125, 50 / 3)  # the default 2 h window
    assert late.condition == STEP_UP_LATE


def test_exactly_twice_the_protocols_dose_is_high() -> None:
    bed = Bed()
    bed.bag(T, 0.125)
    bed.pump(T, 6, 0)  # 18.0 µg/day, exactly 2 x 9
    (cand,) = bed.tick(T + 5 * MIN)
    assert (cand.condition, cand.priority) == (DOSE_RATE_HIGH, Priority.HIGH)


@pytest.mark.parametrize(("rate_ml_per_h", "condition"), [(5, DOSE_RATE_LOW), (15, DOSE_RATE_HIGH)])
def test_a_childs_wrong_dose_rate_gives_the_expected_dose_to_the_hundredth(
    rate_ml_per_h: float, condition: str
) -> None:
    bed = LabelBed("ssc-14d-bsa", weight_kg=30)  # 5 µg/m²/day: 5.86 µg/day
    bed.feed(BagHung("w1", "b1", T, "bag-child", 5 * bsa_m2(30, 165, "mosteller") / 240, None))
    bed.run(T, T + HOUR, rate_ml_per_h, step=10 * MIN)
    (wrong,) = [c for c in bed.out if c.condition == condition and c.present]
    assert wrong.details == {"expected_ug_per_day": 5.86, "rule": "protocol_calendar"}


def test_a_pump_infusing_at_0_ml_per_h_delivers_0_even_without_a_bag() -> None:
    bed = Bed()
    bed.pump(T, 0, 0)  # infusing, at 0 mL/h, no bag announced
    assert delivered_rate_ug_per_day(bed.state, T, 300) == 0.0
    bed.pump(T + MIN, 10, 0)
    assert delivered_rate_ug_per_day(bed.state, T + MIN, 300) is None  # running, strength unknown


def test_a_spike_on_a_plan_below_1_ug_a_day_is_a_bolus() -> None:
    rule = _site_bed([{"day_from": 1, "day_to": 28, "dose_ug_per_day": 0.5}])
    state = rule.initial()
    for event in (
        BagHung("w1", "b1", T - HOUR, "bag", 0.0125, None),
        PumpReading("w1", "b1", "p1", T, PumpState.INFUSING, 5 / 3, 0),
        PumpReading("w1", "b1", "p1", T + MIN, PumpState.INFUSING, 10, 5 / 180),  # 3 µg/day
    ):
        state, _ = rule.step(state, event, event.time)
    assert state.bolus_details == {"cause": "rate_spike", "rate_ml_per_h": 10, "near_bag_change": False}


def test_any_dose_after_the_protocols_end_is_reported() -> None:
    bed = Bed()
    end = START + 14 * DAY
    bed.bag(end - HOUR, C9)
    bed.pump(end - HOUR, 0.5, 0)  # 0.45 µg/day
    bed.pump(end, 0.5, 0.5)
    bed.tick(end + 5 * MIN)
    assert present(bed, INFUSION_AFTER_PROTOCOL_END)


def test_the_programmed_dose_is_the_rate_times_the_bags_strength_per_day() -> None:
    bed = Bed()
    bed.bag(T, C9)
    bed.pump(T, 0, 0, "stopped")
    assert programmed_dose_ug_per_day(bed.state, T, 300) == 0.0
    bed.pump(T + MIN, 10, 0, "stopped")  # programmed, not running
    assert programmed_dose_ug_per_day(bed.state, T + MIN, 300) == pytest.approx(9.0)


def test_a_7_day_bag_at_0_6_ml_per_h_runs_low_at_its_own_rate() -> None:
    bed = Bed()
    bed.bag(T, 0.625, "bag-7d", volume=10)  # 9 µg/day at 0.6 mL/h
    bed.pump(T, 0.6, 0)
    out = bed.pump(T + 15 * HOUR + 50 * MIN, 0.6, 9.5)
    low = [c for c in out if c.condition == BAG_LOW]
    assert low[0].message is not None
    assert (
        low[0].message.en == "Bag bag-7d low: 0.5 mL left at 0.60 mL/h, about 50 min. Prepare the next bag."
    )


@pytest.mark.parametrize(("rate_ml_per_h", "priority"), [(19.99, Priority.MEDIUM), (20.01, Priority.HIGH)])
def test_a_dose_rate_twice_the_protocol_turns_high(rate_ml_per_h: float, priority: Priority) -> None:
    # 2 x 9 µg/day is a step dose the schedule did not plan (dose.py, domain.md section 4).
    bed = Bed()
    bed.bag(T, C9)
    bed.pump(T, rate_ml_per_h, 0)
    (cand,) = bed.tick(T + 5 * MIN)
    assert (cand.condition, cand.priority) == (DOSE_RATE_HIGH, priority)


def test_a_wrong_rate_alarms_after_exactly_rate_delay_s() -> None:
    bed = Bed()
    bed.bag(T, C9)
    bed.pump(T, 5, 0)
    assert bed.tick(T + 300 * SEC - SEC) == []
    assert changes(bed.tick(T + 300 * SEC), DOSE_RATE_LOW) == [(True, Priority.MEDIUM)]


def test_the_delivered_rate_is_known_for_exactly_reading_stale_s() -> None:
    # Without a reading for longer than reading_stale_s the rate is unknown, never assumed.
    bed = Bed()
    bed.bag(T, C9)
    bed.pump(T, 5, 0)
    bed.tick(T + 5 * MIN)
    assert present(bed, DOSE_RATE_LOW)
    assert bed.tick(T + HOUR) == []
    assert changes(bed.tick(T + HOUR + SEC), DOSE_RATE_LOW) == [(False, Priority.MEDIUM)]


# --------------------------------------------------------------------------- step-up


def _nine_running_until(bed: Bed, when: timedelta) -> None:
    bed.bag(STEP - 3 * HOUR, C9)
    bed.pump(STEP - 3 * HOUR, 10, 0)
    bed.pump(STEP + when, 10, 10)


def test_step_up_due_two_hours_before_the_step_not_a_second_earlier() -> None:
    bed = Bed()
    bed.bag(STEP - 3 * HOUR, C9)
    bed.pump(STEP - 3 * HOUR, 10, 0)
    assert bed.tick(STEP - 2 * HOUR - SEC) == []
    (due,) = bed.tick(STEP - 2 * HOUR)
    assert (due.condition, due.priority, due.present) == (STEP_UP_DUE, Priority.LOW, True)


def test_step_up_late_at_exactly_the_step_window() -> None:
    bed = Bed()
    _nine_running_until(bed, 90 * MIN)
    bed.tick(STEP + 2 * HOUR - SEC)
    assert not present(bed, STEP_UP_LATE)
    out = bed.tick(STEP + 2 * HOUR)
    assert changes(out, STEP_UP_LATE) == [(True, Priority.MEDIUM)]
    assert changes(out, STEP_UP_DUE) == [(False, Priority.LOW)]


def test_the_higher_dose_inside_the_step_window_is_on_time() -> None:
    bed = Bed()
    bed.bag(STEP - 3 * HOUR, C9)
    bed.pump(STEP - 3 * HOUR, 10, 0)
    bed.bag(STEP - 2 * HOUR, C28, "bag-28")
    bed.pump(STEP - 2 * HOUR, 10, 0)
    bed.tick(STEP - 2 * HOUR + 10 * MIN)
    assert not bed.raised(STEP_UP_EARLY)
    assert not bed.raised(DOSE_RATE_HIGH)


def test_the_higher_dose_just_before_the_step_window_is_early() -> None:
    bed = Bed()
    bed.bag(STEP - 3 * HOUR, C9)
    bed.pump(STEP - 3 * HOUR, 10, 0)
    bed.bag(STEP - 2 * HOUR - 6 * MIN, C28, "bag-28")
    bed.pump(STEP - 2 * HOUR - 6 * MIN, 10, 0)
    out = bed.tick(STEP - 2 * HOUR - MIN)
    assert changes(out, STEP_UP_EARLY) == [(True, Priority.MEDIUM)]


def test_the_higher_dose_at_exactly_the_step_windows_start_is_on_time() -> None:
    # Early until 2 h before the step, on time from then: at that very second the higher
    # dose was neither, and with no confirmation delay it raised a high DOSE_RATE_HIGH
    # for one second (28 µg/day is more than twice the 9 of the day).
    bed = Bed(rate_delay_s=0)
    bed.bag(STEP - 3 * HOUR, C9)
    bed.pump(STEP - 3 * HOUR, 10, 0)
    bed.bag(STEP - 2 * HOUR - 6 * MIN, C28, "bag-28")
    bed.pump(STEP - 2 * HOUR - 6 * MIN, 10, 0)
    assert changes(bed.tick(STEP - 2 * HOUR - SEC), STEP_UP_EARLY) == []  # raised at the reading
    assert present(bed, STEP_UP_EARLY)
    out = bed.tick(STEP - 2 * HOUR)
    assert [(c.condition, c.present) for c in out] == [(STEP_UP_EARLY, False)]


@pytest.mark.parametrize(
    ("before", "condition"), [(24 * HOUR, STEP_UP_EARLY), (24 * HOUR + SEC, DOSE_RATE_HIGH)]
)
def test_a_higher_dose_more_than_a_day_early_is_a_wrong_dose(before: timedelta, condition: str) -> None:
    # step_early_horizon_s: within a day of the step, an early step; beyond, a dose error.
    bed = Bed()
    start = STEP - before
    bed.bag(start - 6 * MIN, C28)
    bed.pump(start - 6 * MIN, 10, 0)
    bed.tick(start - MIN)  # DOSE_RATE_HIGH pending from here (more than a day early)
    bed.pump(start, 10, 0.1)
    bed.tick(start + 5 * MIN)
    raised = {c.condition for c in bed.out if c.present}
    assert condition in raised


def test_step_up_due_waits_for_a_reading_when_none_is_known() -> None:
    # A daemon started at the step time knows nothing of the pump yet: the reminder
    # waits rate_delay_s for a reading rather than flash until the first poll.
    bed = Bed()
    bed.bag(STEP, C28)
    assert bed.tick(STEP) == []
    bed.pump(STEP + MIN, 10, 0.2)
    bed.tick(STEP + 10 * MIN)
    assert bed.raised(STEP_UP_DUE) == []
    # With no reading at all, it comes once rate_delay_s has passed.
    silent = Bed()
    assert silent.tick(STEP - 2 * HOUR) == []
    assert silent.tick(STEP - 2 * HOUR + 300 * SEC - SEC) == []
    assert changes(silent.tick(STEP - 2 * HOUR + 300 * SEC), STEP_UP_DUE) == [(True, Priority.LOW)]


# --------------------------------------------------------------------------- interruptions


def _stopped_at(bed: Bed, when: timedelta = timedelta(0)) -> None:
    bed.bag(T - HOUR, C9)
    bed.pump(T - HOUR, 10, 0)
    bed.pump(T + when, 0, 10, "stopped")


def test_an_interruption_alarms_after_exactly_15_minutes() -> None:
    bed = Bed()
    _stopped_at(bed)
    assert bed.tick(T + 15 * MIN - SEC) == []
    (cand,) = bed.tick(T + 15 * MIN)
    assert (cand.condition, cand.priority, cand.details["stage"]) == (
        INFUSION_INTERRUPTED,
        Priority.MEDIUM,
        "interrupted",
    )


@pytest.mark.parametrize(
    ("state", "rate_ml_per_h", "interrupted"),
    [
        ("stopped", None, True),  # stopped, whatever the rate it does not report
        ("infusing", 0.0, True),  # infusing at 0 mL/h delivers nothing
        ("infusing", None, False),  # infusing at a rate it does not report: unknown, not a stop
        ("infusing", 0.6, False),  # a 7-day bag's rate is slow, not a stop
    ],
)
def test_what_counts_as_a_stop(state: str, rate_ml_per_h: float | None, interrupted: bool) -> None:
    bed = Bed()
    bed.bag(T, C9)
    bed.pump(T, 10, 0)
    bed.pump(T + HOUR, rate_ml_per_h, 10, state)
    bed.tick(T + 2 * HOUR)
    assert present(bed, INFUSION_INTERRUPTED) is interrupted


def test_each_interruption_is_dated_from_its_own_stop() -> None:
    bed = Bed()
    bed.bag(T, C9)
    bed.pump(T, 10, 0)
    bed.pump(T + HOUR, 0, 10, "stopped")
    bed.pump(T + 2 * HOUR, 0, 10, "stopped")  # still stopped: the same interruption
    bed.tick(T + 3 * HOUR)
    bed.pump(T + 4 * HOUR, 10, 10)
    bed.pump(T + 5 * HOUR, 0, 20, "stopped")
    bed.tick(T + 6 * HOUR)
    raised = [c.details["since"] for c in bed.out if c.condition == INFUSION_INTERRUPTED and c.present]
    assert raised == ["2026-03-04T09:00:00Z", "2026-03-04T13:00:00Z"]


def test_a_stop_on_a_plan_below_1_ug_a_day_is_an_interruption() -> None:
    rule = _site_bed([{"day_from": 1, "day_to": 28, "dose_ug_per_day": 0.5}])
    state = rule.initial()
    for event in (
        BagHung("w1", "b1", T, "bag", 0.0125, None),
        PumpReading("w1", "b1", "p1", T, PumpState.INFUSING, 5 / 3, 0),
        PumpReading("w1", "b1", "p1", T + HOUR, PumpState.STOPPED, 0, 5 / 3),
        Tick(T + 2 * HOUR),
    ):
        state, _ = rule.step(state, event, event.time)
    assert INFUSION_INTERRUPTED in state.active


def test_a_stop_on_a_day_the_protocol_leaves_out_is_no_interruption() -> None:
    rule = _site_bed(
        [
            {"day_from": 1, "day_to": 3, "dose_ug_per_day": 9.0},
            {"day_from": 5, "day_to": 10, "dose_ug_per_day": 28.0},
        ]
    )
    state = rule.initial()
    out: list[AlertCandidate] = []
    day4 = START + 3 * DAY
    for event in (
        BagHung("w1", "b1", day4 - HOUR, "bag", C9, None),
        PumpReading("w1", "b1", "p1", day4 - HOUR, PumpState.INFUSING, 10, 0),
        PumpReading("w1", "b1", "p1", day4, PumpState.STOPPED, 0, 10),
        Tick(day4 + 2 * HOUR),
    ):
        state, candidates = rule.step(state, event, event.time)
        out.extend(candidates)
    assert INFUSION_INTERRUPTED not in state.active


def test_an_interruption_of_exactly_4_hours_needs_a_supervised_restart() -> None:
    # domain.md section 1: "any restart after an interruption of >= 4 h" needs
    # premedication and supervision: at 4 h exactly, not after.
    bed = Bed()
    _stopped_at(bed)
    bed.tick(T + 15 * MIN)
    assert bed.tick(T + 4 * HOUR - SEC) == []
    (cand,) = bed.tick(T + 4 * HOUR)
    assert (cand.priority, cand.details["stage"]) == (Priority.HIGH, "supervised_restart")
    assert cand.value == 4 * 3600.0


def test_a_break_of_exactly_7_days_is_not_yet_a_new_cycle() -> None:
    # domain.md section 1: a break of <= 7 days continues the cycle, > 7 days starts a new one.
    bed = Bed()
    _stopped_at(bed)
    bed.tick(T + 4 * HOUR)
    assert bed.tick(T + 7 * DAY) == []
    (cand,) = bed.tick(T + 7 * DAY + SEC)
    assert (cand.priority, cand.details["stage"]) == (Priority.HIGH, "new_cycle")


# --------------------------------------------------------------------------- bolus and flush


@pytest.mark.parametrize(
    ("minutes", "volume_ml", "bolus"),
    [
        (6, 1.5, False),  # 1.0 mL explained, 0.5 mL more: not more than bolus_min_excess_ml
        (6, 1.6, True),
        (60, 12.0, False),  # 10 mL explained, 2.0 mL more: not more than 20 %
        (60, 12.1, True),
    ],
)
def test_a_volume_bolus_needs_more_than_both_limits(minutes: int, volume_ml: float, bolus: bool) -> None:
    # Never flush the line (domain.md section 1): volume the rate does not explain.
    bed = Bed()
    bed.bag(T - HOUR, C9)
    bed.pump(T, 10, 0)
    bed.pump(T + minutes * MIN, 10, volume_ml)
    assert bool(bed.raised(BOLUS_SUSPECTED)) is bolus


@pytest.mark.parametrize(("rate_ml_per_h", "bolus"), [(20.0, False), (20.1, True)])
def test_a_rate_spike_needs_more_than_twice_the_steady_rate(rate_ml_per_h: float, bolus: bool) -> None:
    bed = Bed()
    bed.bag(T - HOUR, C9)
    bed.pump(T, 10, 0)
    bed.pump(T + MIN, rate_ml_per_h, 0.2)
    assert bool(bed.raised(BOLUS_SUSPECTED)) is bolus


@pytest.mark.parametrize(
    ("conc", "steady_ml_per_h", "rate_ml_per_h", "spike"),
    [
        (0.125, 4, 8, False),  # exactly twice the steady rate (24 µg/day)
        (0.125, 4, 8.125, True),
        (0.125, 2.5, 5.9, False),  # more than twice the steady rate, but 17.7 µg/day: under twice the day's 9
        (0.125, 2.5, 6, False),  # 18 µg/day: exactly twice the day's dose
        (0.1, 10, 10, False),  # a steady rate, even of a wrong strength (24 µg/day), is no spike
        (0.625, 0.6, 5, True),  # from a 7-day bag's 0.6 mL/h
    ],
)
def test_a_rate_spike_is_more_than_twice_the_steady_rate_and_twice_the_days_dose(
    conc: float, steady_ml_per_h: float, rate_ml_per_h: float, spike: bool
) -> None:
    bed = Bed()
    bed.bag(T - HOUR, conc)
    bed.pump(T, steady_ml_per_h, 0)
    bed.pump(T + MIN, rate_ml_per_h, steady_ml_per_h / 60)
    bolus = bed.raised(BOLUS_SUSPECTED)
    assert [c.details for c in bolus] == (
        [{"cause": "rate_spike", "rate_ml_per_h": round(rate_ml_per_h, 2), "near_bag_change": False}]
        if spike
        else []
    )


def test_a_spike_names_its_rate_to_the_hundredth() -> None:
    bed = Bed()
    bed.bag(T - HOUR, 0.125)
    bed.pump(T, 4, 0)
    bed.pump(T + MIN, 8.125, 4 / 60)
    (bolus,) = bed.raised(BOLUS_SUSPECTED)
    assert bolus.details["rate_ml_per_h"] == 8.12


def test_a_restart_at_the_old_rate_with_a_stronger_bag_is_a_wrong_dose_not_a_spike() -> None:
    # A quarter-strength bag ran at 40 mL/h (9 µg/day); after the stop the full-strength
    # bag runs at the same 40 mL/h: 36 µg/day is a dose rate error, the rate did not jump.
    bed = Bed()
    bed.bag(T - HOUR, C9 / 4, "bag-weak")
    bed.pump(T, 40, 0)
    bed.pump(T + HOUR, 0, 40, "stopped")
    bed.bag(T + HOUR + MIN, C9, "bag-full")
    bed.pump(T + 2 * HOUR, 40, 0)
    assert bed.state.bolus_at is None


def test_a_restart_at_the_same_rate_after_a_stop_is_no_spike() -> None:
    bed = Bed()
    bed.bag(T - HOUR, C9)
    bed.pump(T, 10, 0)
    bed.pump(T + HOUR, 0, 10, "stopped")
    bed.pump(T + HOUR + 5 * MIN, 10, 10)
    assert bed.raised(BOLUS_SUSPECTED) == []


def test_no_spike_is_judged_on_a_day_the_protocol_leaves_out() -> None:
    # Any dose that day is already a high dose rate (see above); a spike needs a day's dose.
    rule = _site_bed(
        [
            {"day_from": 1, "day_to": 3, "dose_ug_per_day": 9.0},
            {"day_from": 5, "day_to": 10, "dose_ug_per_day": 28.0},
        ]
    )
    state = rule.initial()
    day4 = START + 3 * DAY + HOUR
    for event in (
        BagHung("w1", "b1", day4 - HOUR, "bag", C9, None),
        PumpReading("w1", "b1", "p1", day4, PumpState.INFUSING, 10, 0),
        PumpReading("w1", "b1", "p1", day4 + MIN, PumpState.INFUSING, 30, 1 / 6),
    ):
        state, _ = rule.step(state, event, event.time)
    assert state.bolus_at is None


@pytest.mark.parametrize(
    ("volume_ml", "counted_ml"),
    [
        (10.0, 0.0),  # unchanged
        (9.999, 0.0),  # 0.001 mL lower: the counter's rounding, not a reset
        (9.0, 9.0),  # lower: a reset, 9 mL since
        (-1.0, 0.0),  # a volume no pump reports: ignored
        (float("inf"), 0.0),
    ],
)
def test_what_a_volume_reading_adds_to_the_ledger(volume_ml: float, counted_ml: float) -> None:
    bed = Bed()
    bed.bag(T, C9)
    bed.pump(T, 10, 0)
    bed.pump(T + HOUR, 10, 10.0)
    bed.pump(T + 2 * HOUR, 10, volume_ml)
    assert bed.state.delivered_ml == 10.0 + counted_ml


def test_the_ledger_starts_and_ends_at_the_first_volume_reading() -> None:
    bed = Bed()
    bed.bag(T, C9)
    bed.pump(T, 10, 0)
    assert (bed.state.ledger_start, bed.state.ledger_time) == (T, T)


@pytest.mark.parametrize(("interval_s", "gap_s"), [(3600, 0.0), (3601, 3601.0)])
def test_a_gap_is_an_interval_longer_than_reading_stale_s(interval_s: int, gap_s: float) -> None:
    bed = Bed()
    bed.bag(T, C9)
    bed.pump(T, 10, 0)
    bed.pump(T + interval_s * SEC, 10, 10)
    assert bed.state.gap_s == gap_s


@pytest.mark.parametrize(("after", "near"), [(30 * MIN, True), (30 * MIN + SEC, False)])
def test_a_bolus_within_30_minutes_of_a_bag_change_is_a_suspected_flush(after: timedelta, near: bool) -> None:
    bed = Bed()
    bed.bag(T - HOUR, C9)
    bed.pump(T - HOUR, 10, 0)
    bed.bag(T, C9, "bag-2")
    bed.pump(T + after - MIN, 10, 0.1)
    bed.pump(T + after, 100, 0.3)
    (bolus,) = bed.raised(BOLUS_SUSPECTED)
    assert bolus.details["near_bag_change"] is near


def test_a_bolus_clears_exactly_bolus_hold_s_after_the_evidence() -> None:
    bed = Bed()
    bed.bag(T - HOUR, C9)
    bed.pump(T, 10, 0)
    bed.pump(T + MIN, 10, 5)
    assert bed.raised(BOLUS_SUSPECTED)
    assert bed.tick(T + MIN + 900 * SEC - SEC) == []
    assert changes(bed.tick(T + MIN + 900 * SEC), BOLUS_SUSPECTED) == [(False, Priority.HIGH)]


@pytest.mark.parametrize(
    ("tolerance_pct", "rate_ml_per_h", "direction"),
    [
        (50, 4.5, None),  # 13.5 µg/day against 9: exactly 50 % over, inside a band of 50 %
        (50, 4.6, "over"),
        (0.5, 3.02, "over"),  # 0.67 % over, outside a band of 0.5 %
    ],
)
def test_the_cumulative_band_edge_and_direction(
    tolerance_pct: float, rate_ml_per_h: float, direction: str | None
) -> None:
    bed = Bed(cumulative_tolerance_pct=tolerance_pct)
    bed.bag(START, 0.125)
    for half_hours in range(49):  # up to exactly the 24 h grace
        bed.pump(START + half_hours * 30 * MIN, rate_ml_per_h, rate_ml_per_h * half_hours / 2)
    raised = bed.raised(CUMULATIVE_DOSE_DEVIATION)
    assert [c.details["direction"] for c in raised] == ([direction] if direction else [])


def test_a_ledger_that_starts_after_the_protocol_deviates_from_no_plan() -> None:
    bed = Bed()
    end = START + 14 * DAY
    bed.bag(end, C28)
    for hours in range(27):
        bed.pump(end + hours * HOUR, 10, 10 * hours)
    assert bed.raised(CUMULATIVE_DOSE_DEVIATION) == []  # nothing was planned: no percentage


def test_a_plan_below_1_ug_a_day_has_a_cumulative_check_too() -> None:
    rule = _site_bed([{"day_from": 1, "day_to": 28, "dose_ug_per_day": 0.5}])
    state = rule.initial()
    state, _ = rule.step(state, BagHung("w1", "b1", START, "bag", 0.025, None), START)
    for hours in range(26):  # 1 µg/day: twice the plan
        when = START + hours * HOUR
        state, _ = rule.step(
            state, PumpReading("w1", "b1", "p1", when, PumpState.INFUSING, 5 / 3, 5 * hours / 3), when
        )
    assert CUMULATIVE_DOSE_DEVIATION in state.active


# --------------------------------------------------------------------------- bag low


@pytest.mark.parametrize(("infused_ml", "low"), [(259.9, False), (260.0, True)])
def test_bag_low_at_exactly_one_hour_left(infused_ml: float, low: bool) -> None:
    # 270 mL bag at 10 mL/h: 10 mL left is 3600 s, bag_low_s.
    bed = Bed()
    bed.bag(T, C9, volume=270)
    bed.pump(T, 10, 0)
    bed.pump(T + 26 * HOUR, 10, infused_ml)
    assert bool(bed.raised(BAG_LOW)) is low


def test_bag_low_lasts_while_the_reading_is_fresh_and_the_pump_runs() -> None:
    bed = Bed(reading_stale_s=300)
    bed.bag(T, C9, volume=270)
    bed.pump(T, 10, 0)
    last = T + 26 * HOUR
    bed.pump(last, 10, 261)
    assert present(bed, BAG_LOW)
    bed.tick(last + 300 * SEC)  # reading_stale_s: still fresh
    assert present(bed, BAG_LOW)
    bed.tick(last + 301 * SEC)
    assert not present(bed, BAG_LOW)
    bed.pump(last + 302 * SEC, 10, 261.8)
    assert present(bed, BAG_LOW)
    bed.pump(last + 303 * SEC, 0, 261.8, "stopped")  # a stopped pump empties no bag
    assert not present(bed, BAG_LOW)


def test_a_flush_at_a_bag_change_does_not_make_the_new_bag_low() -> None:
    # The flush's 600 mL/h is BOLUS_SUSPECTED's business; the new bag's time left is
    # counted at the steady 10 mL/h (270 mL: 27 h), not at the spike (27 min).
    bed = Bed()
    bed.bag(T - HOUR, C9, volume=270)
    bed.pump(T - HOUR, 10, 0)
    bed.bag(T, C9, "bag-2", volume=270)
    bed.pump(T, 600, 0.2)
    assert bed.raised(BOLUS_SUSPECTED)
    assert bed.raised(BAG_LOW) == []


# --------------------------------------------------------------------------- cumulative


@pytest.mark.parametrize(("strength", "deviates"), [(1.09, False), (1.11, True)])
def test_the_cumulative_band_is_ten_percent(strength: float, deviates: bool) -> None:
    bed = Bed()
    bed.bag(START, C9 * strength)
    volume = 0.0
    t = START
    while t <= START + 25 * HOUR:
        bed.pump(t, 10, volume)
        t += 30 * MIN
        volume += 5
    assert bool(bed.raised(CUMULATIVE_DOSE_DEVIATION)) is deviates


def test_a_first_poll_before_the_bag_announcement_does_not_flash_the_reminder() -> None:
    # The crs-grade2-day8 start: at the step time the pump's first answer (stopped, no
    # bag known yet) comes before the 28 µg/day bag's announcement, then it runs.
    bed = Bed()
    bed.tick(STEP)
    bed.pump(STEP, 10, 0, "stopped")
    bed.bag(STEP, C28)
    bed.pump(STEP + MIN, 10, 0.167)
    bed.tick(STEP + 10 * MIN)
    assert [c.condition for c in bed.out] == []


def test_the_higher_bag_on_a_stopped_pump_is_prepared_and_the_stop_is_an_interruption() -> None:
    bed = Bed()
    bed.bag(STEP - 3 * HOUR, C9)
    bed.pump(STEP - 3 * HOUR, 10, 0)
    bed.tick(STEP - 2 * HOUR)
    assert present(bed, STEP_UP_DUE)
    bed.pump(STEP - 10 * MIN, 10, 28, "stopped")  # the NE-1000 reports its programmed rate
    bed.bag(STEP - 5 * MIN, C28, "bag-28")
    assert not present(bed, STEP_UP_DUE)
    bed.tick(STEP + 5 * MIN)
    assert present(bed, INFUSION_INTERRUPTED)


# --------------------------------------------------------------------------- views


NEW_CYCLE = DoseDeclaration(DeclarationKind.NEW_CYCLE)


class _OtherRule:
    """A rule that takes the dose rule's name and holds a plain dict."""

    name = "dose"

    def initial(self) -> dict[str, Any]:
        return {}

    def step(self, state: dict[str, Any], event: Event, now: datetime) -> tuple[dict[str, Any], list[Any]]:
        return state, []

    def dump(self, state: dict[str, Any]) -> Mapping[str, Any]:
        return state

    def load(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return dict(data)


def _site_config() -> Config:
    """Bed b1 on a site protocol: 6 then 20 µg/day, next cycle 12 µg/day, restart at 6
    µg/day for 2 days then 20; the delivered rate is stale after 10 minutes."""
    return parse(
        {
            "protocols": {
                "site-a": {
                    "steps": [
                        {"day_from": 1, "day_to": 3, "dose_ug_per_day": 6.0},
                        {"day_from": 4, "day_to": 10, "dose_ug_per_day": 20.0},
                    ],
                    "next_cycle": "site-b",
                    "restart_steps": [
                        {"day_from": 1, "day_to": 2, "dose_ug_per_day": 6.0},
                        {"day_from": 3, "day_to": 366, "dose_ug_per_day": 20.0},
                    ],
                },
                "site-b": {"steps": [{"day_from": 1, "day_to": 5, "dose_ug_per_day": 12.0}]},
            },
            "thresholds": {"dose": {"reading_stale_s": 600}},
            "beds": [
                {
                    "ward": "w1",
                    "id": "b1",
                    "patient": "p-1",
                    "weight_kg": 60,
                    "height_cm": 165,
                    "protocol": "site-a",
                    "protocol_start": START.isoformat(),
                }
            ],
        }
    )


def _site_course() -> tuple[Config, RuleEngine]:
    """On ``_site_config``: one day at 6 µg/day, a stop, a declared new cycle, the
    restart at 12 µg/day, an hour of it."""
    config = _site_config()
    b1 = config.beds[0]
    engine = RuleEngine({"b1": dose_rules(config, b1)})
    restart = START + DAY + 2 * HOUR
    for event in (
        BagHung("w1", "b1", START, "bag-6", 0.025, None),  # 6 µg/day at 10 mL/h
        PumpReading("w1", "b1", "p1", START, PumpState.INFUSING, 10, 0),
        PumpReading("w1", "b1", "p1", START + DAY, PumpState.STOPPED, 10, 240),
        Observation("w1", "b1", START + DAY + HOUR, by="Dr A", dose_declaration=NEW_CYCLE),
        BagHung("w1", "b1", restart, "bag-12", 0.05, None),  # 12 µg/day at 10 mL/h
        PumpReading("w1", "b1", "p1", restart, PumpState.INFUSING, 10, 0),
        PumpReading("w1", "b1", "p1", restart + HOUR, PumpState.INFUSING, 10, 10),
    ):
        engine.handle(event, event.time)
    return config, engine


def test_the_views_follow_the_declared_plan_of_a_site_protocol_read_from_the_engine() -> None:
    # 240 mL x 0.025 + 10 mL x 0.05 = 6.5 µg delivered; planned: day 1 of site-a (6 µg),
    # nothing during the break, one hour of site-b at 12 µg/day (0.5 µg).
    config, engine = _site_course()
    b1 = config.beds[0]
    now = START + DAY + 3 * HOUR
    assert status_lines(engine, b1, now, config=config) == [
        "w1/b1: protocol site-b, day 1",
        "  expected dose: 12.0 µg/day",
        "  delivered dose: 12.0 µg/day",
        "  expected total: 6.5 µg",
        "  delivered total: 6.5 µg (from 2026-03-02 08:00 UTC to 2026-03-03 11:00 UTC; "
        "planned over that span 6.5 µg)",
        "  next step: 2026-03-08 10:00 UTC",
        "  dose rule: new cycle of site-b from its day 1 (label: a break of more than 7 days)",
        "  bag: bag-12, 0.0500 µg/mL",
    ]
    point = dose_point(engine, b1, now, config=config)
    assert point is not None
    assert point.fields == {
        "protocol_day": 1,
        "expected_ug_per_day": 12.0,
        "expected_total_ug": pytest.approx(6.5),
        "delivered_total_ug": pytest.approx(6.5),
        "expected_ledger_total_ug": pytest.approx(6.5),
        "delivered_total_ml": pytest.approx(250.0),
        "unattributed_ml": 0.0,
        "gap_s": pytest.approx(97200.0),
        "delivered_ug_per_day": pytest.approx(12.0),
    }


def test_the_next_step_follows_the_declared_plan_of_a_site_protocol() -> None:
    # The ward page's "next step": the declared new cycle (site-b, 5 days at 12 µg/day
    # from the restart) is in force, so its end comes next, and it brings 0 µg/day.
    config, engine = _site_course()
    b1 = config.beds[0]
    restart = START + DAY + 2 * HOUR
    assert next_step(engine, b1, START + DAY + 3 * HOUR, config=config) == (restart + 5 * DAY, 0.0)
    assert next_step(engine, b1, restart + 5 * DAY, config=config) is None
    # Before the declaration the calendar of site-a is in force: 20 µg/day from day 4.
    assert next_step(engine, b1, START + HOUR, config=config) == (START + 3 * DAY, 20.0)


def test_the_plan_over_the_ledger_counts_only_the_span_the_daemon_saw() -> None:
    # A daemon started on day 3 (domain.md section 0: 9 µg/day on days 1-7) compares the
    # 12 hours it saw with the 4.5 µg planned over them, not with the course's total.
    bed = Bed()
    bed.bag(T, C9)
    bed.pump(T, 10, 0)
    bed.pump(T + 12 * HOUR, 10, 120)
    assert expected_over_ledger_ug(bed.state, bed.rule.timeline) == pytest.approx(4.5)
    assert expected_over_ledger_ug(bed.state, bed.rule.schedule) == pytest.approx(4.5)  # a bare schedule
    assert expected_over_ledger_ug(DoseState(), bed.rule.schedule) == 0.0  # no reading yet


def test_the_views_use_the_beds_reading_stale_s() -> None:
    config, engine = _site_course()
    b1 = config.beds[0]
    last = START + DAY + 3 * HOUR
    assert status_lines(engine, b1, last + 600 * SEC, config=config)[2] == "  delivered dose: 12.0 µg/day"
    assert status_lines(engine, b1, last + 601 * SEC, config=config)[2] == (
        "  delivered dose: unknown (no recent reading)"
    )
    fresh = dose_point(engine, b1, last + 600 * SEC, config=config)
    stale = dose_point(engine, b1, last + 601 * SEC, config=config)
    assert fresh is not None
    assert stale is not None
    assert fresh.fields["delivered_ug_per_day"] == pytest.approx(12.0)
    assert "delivered_ug_per_day" not in stale.fields


def test_status_at_exactly_the_protocol_end_without_a_config() -> None:
    # No config: built-in protocols and default thresholds. The end is exclusive.
    bed = Bed()
    bed.bag(START, C9)
    bed.pump(START, 10, 0)
    bed.pump(START + HOUR, 10, 10)
    b1 = bed.config.beds[0]
    end = START + 14 * DAY
    common = [
        "  expected total: 259.0 µg",  # 7 x 9 + 7 x 28
        "  delivered total: 0.4 µg (from 2026-03-02 08:00 UTC to 2026-03-02 09:00 UTC; "
        "planned over that span 0.4 µg)",
    ]
    assert status_lines(bed.state, b1, end) == [
        "w1/b1: protocol ssc-14d, ended 2026-03-16 08:00 UTC",
        "  expected dose: 0.0 µg/day",
        "  delivered dose: unknown (no recent reading)",
        *common,
        "  next step: -",
        "  dose rule: protocol ssc-14d calendar",
        "  bag: bag, 0.0375 µg/mL",
    ]
    assert status_lines(bed.state, b1, end - SEC)[:3] == [
        "w1/b1: protocol ssc-14d, day 14",
        "  expected dose: 28.0 µg/day",
        "  delivered dose: unknown (no recent reading)",
    ]
    assert status_lines(bed.state, b1, end, language="fr")[5] == "  prochain palier : -"


def test_status_names_half_a_millilitre_infused_with_no_bag() -> None:
    bed = Bed()
    bed.pump(START, 10, 0)
    bed.pump(START + 3 * MIN, 10, 0.5)
    lines = status_lines(bed.state, bed.config.beds[0], START + 3 * MIN, config=bed.config)
    assert lines[-2:] == ["  dose rule: protocol ssc-14d calendar", "  0.5 mL infused with no bag known"]


def test_the_dose_point_starts_at_exactly_the_protocol_start() -> None:
    b1 = Bed().config.beds[0]
    assert dose_point(DoseState(), b1, START - timedelta(microseconds=1)) is None
    point = dose_point(DoseState(), b1, START)
    assert point is not None
    assert point.fields == {
        "protocol_day": 1,
        "expected_ug_per_day": 9.0,
        "expected_total_ug": 0.0,
        "delivered_total_ug": 0.0,
        "expected_ledger_total_ug": 0.0,
        "delivered_total_ml": 0.0,
        "unattributed_ml": 0.0,
        "gap_s": 0.0,
    }


def test_a_view_of_a_rule_that_holds_another_state_says_which() -> None:
    config = Bed().config
    b1 = config.beds[0]
    engine = RuleEngine({"b1": [_OtherRule()]})
    with pytest.raises(TypeError, match=r"^rule 'dose' of bed b1 holds dict$"):
        status_lines(engine, b1, START, config=config)


# --------------------------------------------------------------------------- stored state


def _every_field_set() -> DoseState:
    """A state with every field away from its default, and each optional value in both forms."""
    t = START + DAY
    plan = Plan(
        "restart_after_crs_g3", t, t + HOUR, None, "ssc-14d", t + 2 * HOUR, t + 9 * DAY, False, None, None
    )
    return DoseState(
        bag=Bag("bag-2", C28, None, t, 1.5),
        last=Reading("p1", t + HOUR, PumpState.PAUSED, None, None),
        mark=VolumeMark("p1", t, 12.5, 10.0),
        delivered_ug=3.25,
        delivered_ml=40.0,
        unattributed_ml=0.75,
        ledger_start=START,
        ledger_time=t,
        gap_s=7200.0,
        steady_rate_ml_per_h=10.0,
        interrupted_since=t + 2 * MIN,
        bag_changed_at=t,
        bolus_at=t + 3 * MIN,
        bolus_details={"cause": "purge", "near_bag_change": True},
        pending={DOSE_RATE_LOW: t + 4 * MIN},
        active={BAG_LOW: '["low", {"bag_id": "bag-2"}]'},
        plans=(plan,),
        reactions=(DeclaredReaction(t, "seizure", None, None, True),),
        break_start=t - HOUR,
        break_end=t + 2 * HOUR,
        prompt={"reason": "break_over_7_days", "since": "2026-03-03T07:00:00Z", "resumed_at": "x"},
        increments=(Increment(t, 0.5, None, None), Increment(t + MIN, 0.25, C28, t)),
        previous_bag=Bag("bag-1", C9, 270.0, START, 38.5),
    )


def test_a_state_with_every_field_set_round_trips_through_json() -> None:
    state = _every_field_set()
    assert load_state(json.loads(json.dumps(dump_state(state)))) == state
    other = replace(state, bag=state.previous_bag, previous_bag=state.bag, prompt=None)
    assert load_state(json.loads(json.dumps(dump_state(other)))) == other


def test_the_stored_state_is_version_1_and_names_every_field() -> None:
    assert dump_state(DoseState()) == {
        "version": 1,
        "bag": None,
        "last": None,
        "mark": None,
        "delivered_ug": 0.0,
        "delivered_ml": 0.0,
        "unattributed_ml": 0.0,
        "ledger_start": None,
        "ledger_time": None,
        "gap_s": 0.0,
        "steady_rate_ml_per_h": None,
        "interrupted_since": None,
        "bag_changed_at": None,
        "bolus_at": None,
        "bolus_details": {},
        "pending": {},
        "active": {},
        "plans": [],
        "reactions": [],
        "break_start": None,
        "break_end": None,
        "prompt": None,
        "previous_bag": None,
        "increments": [],
    }


def test_a_state_stored_before_declared_plans_existed_loads() -> None:
    data = dump_state(_every_field_set())
    for key in ("plans", "reactions", "break_start", "break_end", "prompt", "previous_bag", "increments"):
        del data[key]
    assert load_state(data) == replace(
        _every_field_set(),
        plans=(),
        reactions=(),
        break_start=None,
        break_end=None,
        prompt=None,
        previous_bag=None,
        increments=(),
    )


# --------------------------------------------------------------------------- bag input

BAG_TOPIC = "ward/w1/bed/b1/infusion/bag"


def _bag_payload(**fields: Any) -> bytes:
    data: dict[str, Any] = {"bag_id": "B-1", "concentration_ug_per_ml": 1, "hung_at": "2026-03-02T08:00:00Z"}
    data.update(fields)
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("fields", "accepted"),
    [
        ({"concentration_ug_per_ml": 99.99}, True),
        ({"concentration_ug_per_ml": 100}, False),  # the bound is exclusive, as BagConfig's
        ({"volume_ml": 0.5}, True),
        ({"volume_ml": 0}, False),
        ({"volume_ml": 5000}, True),  # the bound is inclusive
        ({"volume_ml": 5000.01}, False),
    ],
)
def test_bag_concentration_and_volume_bounds(fields: dict[str, Any], accepted: bool) -> None:
    payload = _bag_payload(**fields)
    if accepted:
        parse_bag(payload, "w1", "b1", BAG_TOPIC)
    else:
        with pytest.raises(InputError):
            parse_bag(payload, "w1", "b1", BAG_TOPIC)


@pytest.mark.parametrize(
    ("fields", "reason", "detail"),
    [
        (
            {"concentration_ug_per_ml": ..., "hung_at": ...},
            "missing_field",
            "missing field(s): concentration_ug_per_ml, hung_at",
        ),
        ({"bag_id": "a b"}, "bad_bag_id", "'bag_id' must be "),
        (
            {"concentration_ug_per_ml": 100},
            "bad_concentration",
            "concentration_ug_per_ml must be a number in (0, 100), got 100",
        ),
        ({"volume_ml": 0}, "bad_volume", "volume_ml must be a number in (0, 5000], got 0"),
        ({"hung_at": "soon"}, "bad_time", "hung_at must be an RFC 3339 time with a zone, got 'soon'"),
    ],
)
def test_a_refused_bag_says_which_field_and_what_it_got(
    fields: dict[str, Any], reason: str, detail: str
) -> None:
    with pytest.raises(InputError) as info:
        parse_bag(_bag_payload(**fields), "w1", "b1", BAG_TOPIC)
    assert (info.value.reason, info.value.where) == (reason, BAG_TOPIC)
    assert info.value.detail.startswith(detail)
    if reason == "bad_bag_id":
        assert info.value.detail.endswith(", got 'a b'")


def test_a_bag_announcement_over_the_size_limit_is_refused() -> None:
    payload = _bag_payload()
    assert parse_bag(payload, "w1", "b1", BAG_TOPIC, max_bytes=len(payload)).bag_id == "B-1"
    with pytest.raises(InputError) as info:
        parse_bag(payload, "w1", "b1", BAG_TOPIC, max_bytes=len(payload) - 1)
    assert info.value.reason == "too_large"


def test_a_neurotoxicity_grade_3_on_a_site_protocols_first_step_is_a_reason_to_discontinue() -> None:
    # The first step of the site's restart (6 µg/day) is what runs on day 1: the label's
    # "grade 3 at the first step" applies, as it does at 9 µg/day on a built-in protocol.
    config = _site_config()
    (rule,) = dose_rules(config, config.beds[0])
    neuro3 = DoseDeclaration(DeclarationKind.REACTION, Reaction.NEUROTOXICITY, 3)
    state = rule.initial()
    out: list[AlertCandidate] = []
    for event in (
        BagHung("w1", "b1", START, "bag-6", 0.025, None),
        PumpReading("w1", "b1", "p1", START, PumpState.INFUSING, 10, 0),
        Observation("w1", "b1", START + HOUR, by="Dr A", dose_declaration=neuro3),
        PumpReading("w1", "b1", "p1", START + 2 * HOUR, PumpState.INFUSING, 10, 20),
    ):
        state, candidates = rule.step(state, event, event.time)
        out.extend(candidates)
    (reminder,) = [c for c in out if c.condition == DISCONTINUATION_RULE]
    assert (reminder.priority, reminder.details["rule"]) == (Priority.HIGH, "neurotoxicity_g3_at_first_step")


def test_step_up_details_give_a_childs_doses_to_the_hundredth() -> None:
    # 30 kg, 165 cm: 1.1726 m² (Mosteller), 5 then 15 µg/m²/day = 5.863 then 17.589 µg/day.
    bed = LabelBed("ssc-14d-bsa", weight_kg=30)
    low = 5 * bsa_m2(30, 165, "mosteller")
    bed.feed(BagHung("w1", "b1", STEP - 3 * HOUR, "bag-low", low / 240))  # at 10 mL/h
    bed.run(STEP - 3 * HOUR, STEP + 2 * HOUR, 10, step=30 * MIN)
    (late,) = [c for c in bed.out if c.condition == STEP_UP_LATE]
    assert late.details == {
        "step_time": "2026-03-09T08:00:00Z",
        "lower_ug_per_day": 5.86,
        "higher_ug_per_day": 17.59,
        "rule": "protocol_calendar",
    }
    due = [c for c in bed.out if c.condition == STEP_UP_DUE and c.present]
    assert due[0].details == {
        "step_time": "2026-03-09T08:00:00Z",
        "dose_ug_per_day": 17.59,
        "rule": "protocol_calendar",
    }


def test_a_held_first_step_runs_366_days_at_most() -> None:
    # A restart declared 10 days before a one-year protocol starts ends where that
    # protocol would (day 366 from START); a recurrence holds its first step, which the
    # restart's own day 366 ends first.
    config = parse(
        {
            "protocols": {"year": {"steps": [{"day_from": 1, "day_to": 366, "dose_ug_per_day": 10.0}]}},
            "beds": [
                {
                    "ward": "w1",
                    "id": "b1",
                    "patient": "p-1",
                    "weight_kg": 60,
                    "height_cm": 165,
                    "protocol": "year",
                    "protocol_start": START.isoformat(),
                }
            ],
        }
    )
    (rule,) = dose_rules(config, config.beds[0])
    assert isinstance(rule, DoseRule)
    state = rule.initial()
    t = START - 10 * DAY
    for when, declaration in (
        (t, DoseDeclaration(DeclarationKind.RESTART_AFTER_REACTION, Reaction.CRS, 3)),
        (t + HOUR, DoseDeclaration(DeclarationKind.REACTION, Reaction.CRS, 3)),
    ):
        state, _ = rule.step(
            state, Observation("w1", "b1", when, by="Dr A", dose_declaration=declaration), when
        )
    (plan,) = state.plans
    assert (plan.step_up, plan.stop) == (False, START + 366 * DAY)
    for when, dose in ((t + 366 * DAY - SEC, 9.0), (t + 366 * DAY, 0.0)):
        schedule, _, _ = rule.timeline.at(state.plans, when)
        assert schedule.expected_dose_ug_per_day(when) == dose


def test_a_restart_on_a_site_protocol_follows_its_restart_steps() -> None:
    config = _site_config()
    (rule,) = dose_rules(config, config.beds[0])
    assert isinstance(rule, DoseRule)
    restart = DoseDeclaration(DeclarationKind.RESTART_AFTER_REACTION, Reaction.CRS, 3)
    t = START + DAY
    state, _ = rule.step(rule.initial(), Observation("w1", "b1", t, by="Dr A", dose_declaration=restart), t)
    doses = [
        rule.timeline.at(state.plans, t + d * DAY)[0].expected_dose_ug_per_day(t + d * DAY) for d in (0, 2)
    ]
    assert doses == [6.0, 20.0]
