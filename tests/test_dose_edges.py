"""Every dose threshold and time limit, with a test either side of its edge.

Label facts are in domain.md section 1 (the 9 -> 28 µg/day schedule, interruptions of
4 h or more, breaks of more than 7 days, never flush); priorities and what an alert
does over time in section 4. The other limits are site choices (``DoseThresholds``):
their edges are pinned here all the same, so that a changed default or a changed
comparison fails a test instead of passing unseen.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from daemon.clinical.dose import (
    BAG_LOW,
    BOLUS_SUSPECTED,
    CUMULATIVE_DOSE_DEVIATION,
    DOSE_RATE_HIGH,
    DOSE_RATE_LOW,
    INFUSION_INTERRUPTED,
    STEP_UP_DUE,
    STEP_UP_EARLY,
    STEP_UP_LATE,
)
from daemon.events import AlertCandidate, Priority
from tests.test_dose import C9, C28, MIN, START, Bed

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


# --------------------------------------------------------------------------- bag low


@pytest.mark.parametrize(("infused_ml", "low"), [(259.9, False), (260.0, True)])
def test_bag_low_at_exactly_one_hour_left(infused_ml: float, low: bool) -> None:
    # 270 mL bag at 10 mL/h: 10 mL left is 3600 s, bag_low_s.
    bed = Bed()
    bed.bag(T, C9, volume=270)
    bed.pump(T, 10, 0)
    bed.pump(T + 26 * HOUR, 10, infused_ml)
    assert bool(bed.raised(BAG_LOW)) is low


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
