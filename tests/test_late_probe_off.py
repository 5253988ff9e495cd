"""A probe-off (SourceHealth LOST for ``monitor.<metric>``) that arrives late affects only
the readings before it, and takes its place in time order in the late-data windows.

A monitor or a gateway may deliver a sentinel after newer readings of the same metric
(``daemon.rules.Windowed``: window entries are in time order). Before, NEWS2 dropped the
metric's newest reading whatever its time and appended the probe-off to the end of its
window; the vital-sign and CRS tracks broke their current run, made of readings newer
than the sentinel; and PROBE_OFF counted a probe as off although a newer reading showed
it back. Entries that share a time keep their arrival order (tests/test_windows.py): a
probe-off that arrives after a reading with its own time comes after that reading.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.clinical.crs import CrsRule
from daemon.clinical.news2 import News2Rule, Param
from daemon.clinical.protocols import schedule_for
from daemon.clinical.vitals import Condition, Noise, Track, Transition, Verdict, VitalsRule, interrupt, judge
from daemon.events import AlertCandidate, Event, Health, Metric, SourceHealth, Tick, VitalSample
from tests.helpers import one_bed_config

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
T0 = START + timedelta(hours=12)  # on protocol
S = timedelta(seconds=1)
CFG = one_bed_config(START)
BED = CFG.bed("b1")
TH = CFG.thresholds_for("b1").vitals

NORMAL = {
    Metric.RR_PER_MIN: 16.0,
    Metric.SPO2_PCT: 97.0,
    Metric.SBP_MMHG: 120.0,
    Metric.HR_PER_MIN: 80.0,
    Metric.TEMP_C: 37.0,
}


def sample(time: datetime, values: Mapping[Metric, float]) -> VitalSample:
    return VitalSample("w1", "b1", "mon", time, values)


def probe_off(time: datetime, metric: Metric = Metric.SPO2_PCT) -> SourceHealth:
    return SourceHealth("w1", "b1", f"monitor.{metric.value}", time, Health.LOST, "probe-off")


def steps(rule: Any, arrivals: list[tuple[Event, datetime]]) -> tuple[Any, list[AlertCandidate]]:
    state = rule.initial()
    out: list[AlertCandidate] = []
    for event, arrived in arrivals:
        state, candidates = rule.step(state, event, arrived)
        out.extend(candidates)
    return state, out


# --------------------------------------------------------------------------- NEWS2


@pytest.mark.parametrize(
    ("off_at", "spo2_kept"),
    [
        (T0 + 59 * S, True),  # before the 60 s reading: that reading stays
        (T0 + 61 * S, False),  # after it: the reading is no longer the patient's
    ],
    ids=["older-than-the-reading", "newer-than-the-reading"],
)
def test_news2_a_probe_off_removes_only_the_readings_before_it(off_at: datetime, spo2_kept: bool) -> None:
    rule = News2Rule(TH, BED)
    state, _ = steps(
        rule,
        [
            (sample(T0, NORMAL), T0),
            (sample(T0 + 60 * S, NORMAL), T0 + 60 * S),
            (probe_off(off_at), T0 + 70 * S),  # arrives after both readings
        ],
    )
    assert (Metric.SPO2_PCT in state.values) is spo2_kept
    assert (Param.SPO2 in rule.current(state, T0 + 70 * S).parts) is spo2_kept
    times = [item.time for item in state.recent]
    assert times == sorted(times)
    assert off_at in times


@pytest.mark.parametrize("probe_first", [True, False], ids=["probe-off-first", "reading-first"])
def test_news2_a_probe_off_and_a_reading_with_the_same_time_keep_their_arrival_order(
    probe_first: bool,
) -> None:
    rule = News2Rule(TH, BED)
    reading, off = sample(T0 + 60 * S, NORMAL), probe_off(T0 + 60 * S)
    pair: list[tuple[Event, datetime]] = [(reading, T0 + 61 * S), (off, T0 + 62 * S)]
    if probe_first:
        pair.reverse()
    state, _ = steps(rule, [(sample(T0, NORMAL), T0), *pair])
    assert (Metric.SPO2_PCT in state.values) is probe_first
    assert [item.blind for item in state.recent] == (
        [None, Metric.SPO2_PCT, None] if probe_first else [None, None, Metric.SPO2_PCT]
    )


def test_news2_a_late_probe_off_re_scores_the_readings_after_it() -> None:
    """SpO2 88 % (scale 1: 3, a single-parameter trigger) at 0 s; at 60 s a sample without SpO2
    raises NEWS2_HIGH (60 s delay). A probe-off at 30 s arriving at 70 s: from 30 s the 88 % is
    no longer the patient's, so the 60 s score has no 3 and the onset is undone at 30 s."""
    rule = News2Rule(TH, BED)
    low = {**NORMAL, Metric.SPO2_PCT: 88.0}
    no_spo2: dict[Metric, float] = {m: v for m, v in NORMAL.items() if m is not Metric.SPO2_PCT}
    state, out = steps(rule, [(sample(T0, low), T0), (sample(T0 + 60 * S, no_spo2), T0 + 60 * S)])
    assert [(c.present, c.time) for c in out] == [(True, T0 + 60 * S)]
    late: Sequence[AlertCandidate]
    state, late = rule.step(state, probe_off(T0 + 30 * S), T0 + 70 * S)
    assert [(c.condition, c.present, c.time, c.details.get("late_s")) for c in late] == [
        ("NEWS2_HIGH", False, T0 + 30 * S, 40.0)
    ]
    assert not state.track.active


def test_news2_a_probe_off_older_than_the_window_still_removes_only_older_readings() -> None:
    """news2_late_s is 3600 s: a probe-off from before the window is applied to the state the
    window starts from, where it removes a reading older than itself and no newer one."""
    rule = News2Rule(TH, BED)
    hour = timedelta(hours=1)
    no_spo2: dict[Metric, float] = {m: v for m, v in NORMAL.items() if m is not Metric.SPO2_PCT}
    arrivals: list[tuple[Event, datetime]] = [
        (sample(T0, {**NORMAL, Metric.TEMP_C: 37.5}), T0),
        (sample(T0 + 10 * S, no_spo2), T0 + 10 * S),
        (sample(T0 + 2 * hour, no_spo2), T0 + 2 * hour),
    ]
    state, _ = steps(rule, arrivals)
    assert state.values[Metric.SPO2_PCT] == (97.0, T0)
    after, out = rule.step(state, probe_off(T0 + 5 * S), T0 + 2 * hour + S)
    assert list(out) == []
    assert Metric.SPO2_PCT not in after.values
    assert after.values[Metric.TEMP_C] == (37.0, T0 + 2 * hour)
    assert after.recent == state.recent  # nothing inserted before the window
    # An older one than that reading removes nothing.
    earlier, _ = rule.step(state, probe_off(T0 - S), T0 + 2 * hour + S)
    assert earlier.values == state.values


# --------------------------------------------------------------------------- vital signs

NO_DELAY = Noise(delay_s=0, clear_s=60, confirm_samples=3, late_s=900)
A = Verdict.ABNORMAL


@pytest.mark.parametrize(
    ("off_at", "run_count", "changes"),
    [
        (T0 + 5 * S, 3, []),  # before the run: the run stands
        (T0 + 15 * S, 2, [(Transition.CLEARED, T0 + 15 * S)]),  # inside: 20, 30 only, onset undone
        (T0 + 30 * S, 0, []),  # at the last sample's time, after it: the run is over
    ],
    ids=["before-the-run", "inside-the-run", "at-the-last-sample"],
)
def test_a_late_sentinel_breaks_only_the_run_before_it(
    off_at: datetime, run_count: int, changes: list[tuple[Transition, datetime]]
) -> None:
    """Three abnormal samples (10, 20, 30 s) raise at 30 s (confirm 3, no delay)."""
    track = Track()
    for t in (10, 20, 30):
        track, _ = judge(track, A, T0 + t * S, 88.0, NO_DELAY, now=T0 + t * S)
    assert track.active
    track, got = interrupt(track, off_at, NO_DELAY, now=T0 + 40 * S)
    assert track.run_count == run_count
    assert [(c.transition, c.time) for c in got] == changes
    assert all(c.late_s == 25.0 for c in got)
    times = [item.time for item in track.recent]
    assert times == sorted(times)
    assert [item.verdict for item in track.recent if item.time == off_at] == (
        [None] if off_at != T0 + 30 * S else [A, None]
    )


def test_a_sentinel_newer_than_every_sample_breaks_the_run_as_before() -> None:
    track = Track()
    for t in (10, 20):
        track, _ = judge(track, A, T0 + t * S, 88.0, NO_DELAY, now=T0 + t * S)
    track, got = interrupt(track, T0 + 25 * S, NO_DELAY, now=T0 + 25 * S)
    assert (track.run_count, got) == (0, [])
    # A sample between the last one and that sentinel is late: it joins the run before it.
    track, got = judge(track, A, T0 + 22 * S, 88.0, NO_DELAY, now=T0 + 26 * S)
    assert [(c.transition, c.time) for c in got] == [(Transition.RAISED, T0 + 22 * S)]
    assert [item.time for item in track.recent] == [T0 + 10 * S, T0 + 20 * S, T0 + 22 * S, T0 + 25 * S]
    assert track.run_count == 0  # the sentinel after it still ends the run


def test_a_sentinel_older_than_the_window_changes_nothing() -> None:
    noise = Noise(delay_s=0, clear_s=60, confirm_samples=3, late_s=60)
    track = Track()
    for t in (0, 100, 110):
        track, _ = judge(track, A, T0 + t * S, 88.0, noise, now=T0 + t * S)
    assert track.base is not None
    assert track.base.last_time == T0  # the 0 s sample left the window
    assert interrupt(track, T0 - S, noise, now=T0 + 111 * S) == (track, [])
    # At the base's own time it comes after that sample: the run restarts at 100 s.
    after, _ = interrupt(track, T0, noise, now=T0 + 111 * S)
    assert after.run_count == 2


def vitals_rule() -> VitalsRule:
    return VitalsRule(TH, BED, schedule_for(BED, CFG))


@pytest.mark.parametrize(
    ("off_at", "raised_at"),
    [
        (T0, T0 + 45 * S),  # before the run (10-45 s: 35 s of hypoxia, delay 30 s)
        (T0 + 15 * S, T0 + 55 * S),  # inside it: the run restarts at 20 s
    ],
    ids=["before-the-run", "inside-the-run"],
)
def test_vitals_a_late_probe_off_breaks_only_the_readings_before_it(
    off_at: datetime, raised_at: datetime
) -> None:
    low = {Metric.SPO2_PCT: 88.0}
    arrivals: list[tuple[Event, datetime]] = [
        (sample(T0 + 10 * S, low), T0 + 10 * S),
        (sample(T0 + 20 * S, low), T0 + 20 * S),
        (probe_off(off_at), T0 + 25 * S),
        (sample(T0 + 45 * S, low), T0 + 45 * S),
        (sample(T0 + 55 * S, low), T0 + 55 * S),
    ]
    state, out = steps(vitals_rule(), arrivals)
    assert [(c.condition, c.time) for c in out if c.condition == "HYPOXIA"] == [("HYPOXIA", raised_at)]
    times = [item.time for item in state.tracks[Condition.HYPOXIA].recent]
    assert off_at in times
    assert times == sorted(times)


@pytest.mark.parametrize(
    ("off_at", "raised"),
    [(T0 + 59 * S, False), (T0 + 61 * S, True)],
    ids=["older-than-the-reading", "newer-than-the-reading"],
)
def test_probe_off_is_not_raised_by_a_probe_off_older_than_a_reading(off_at: datetime, raised: bool) -> None:
    """probe_off_delay_s is 30 s; a reading at 60 s shows the probe on."""
    rule = vitals_rule()
    state, _ = steps(rule, [(sample(T0 + 60 * S, NORMAL), T0 + 60 * S), (probe_off(off_at), T0 + 70 * S)])
    assert (Metric.SPO2_PCT in state.probe_off_since) is raised
    _, out = rule.step(state, Tick(T0 + 100 * S), T0 + 100 * S)
    assert [(c.condition, c.present) for c in out] == ([("PROBE_OFF", True)] if raised else [])


@pytest.mark.parametrize(
    ("reading_at", "back"),
    [(T0 + 59 * S, False), (T0 + 61 * S, True)],
    ids=["older-than-the-probe-off", "newer-than-the-probe-off"],
)
def test_only_a_reading_newer_than_the_probe_off_says_the_probe_is_back(
    reading_at: datetime, back: bool
) -> None:
    rule = vitals_rule()
    state, _ = steps(rule, [(probe_off(T0 + 60 * S), T0 + 60 * S), (sample(reading_at, NORMAL), T0 + 70 * S)])
    assert (Metric.SPO2_PCT not in state.probe_off_since) is back


def test_the_newest_readings_survive_a_restart() -> None:
    rule = vitals_rule()
    state, _ = steps(rule, [(sample(T0 + 60 * S, NORMAL), T0 + 60 * S)])
    assert rule.load(rule.dump(state)) == state
    assert rule.load({k: v for k, v in rule.dump(state).items() if k != "seen_at"}).seen_at == {}


# --------------------------------------------------------------------------- CRS


@pytest.mark.parametrize(
    ("off_at", "graded_at"),
    [
        (T0 + 30 * S, T0 + 200 * S),  # before the run: 60-200 s is 140 s of fever (delay 120 s)
        (T0 + 90 * S, T0 + 250 * S),  # inside it: the run restarts at 120 s
    ],
    ids=["before-the-run", "inside-the-run"],
)
def test_crs_a_late_probe_off_breaks_only_the_fever_run_before_it(
    off_at: datetime, graded_at: datetime
) -> None:
    rule = CrsRule(TH, BED, schedule_for(BED, CFG))
    fever = {Metric.TEMP_C: 38.4}
    arrivals: list[tuple[Event, datetime]] = [
        (sample(T0 + 60 * S, fever), T0 + 60 * S),
        (sample(T0 + 120 * S, fever), T0 + 120 * S),
        (probe_off(off_at, Metric.TEMP_C), T0 + 130 * S),
        (sample(T0 + 200 * S, fever), T0 + 200 * S),
        (sample(T0 + 250 * S, fever), T0 + 250 * S),
    ]
    state, out = steps(rule, arrivals)
    assert [(c.time, c.details.get("grade")) for c in out] == [(graded_at, 1)]
    times = [item.time for item in state.fever.recent]
    assert times == sorted(times)


def test_crs_a_late_probe_off_that_undoes_a_fever_regrades_at_its_time() -> None:
    """Fever at 0 and 120 s: grade 1 at 120 s. A thermometer probe-off at 60 s arriving at 130 s
    shows the run was not continuous: the suggestion is withdrawn at 60 s, marked late."""
    rule = CrsRule(TH, BED, schedule_for(BED, CFG))
    fever = {Metric.TEMP_C: 38.4}
    state, out = steps(rule, [(sample(T0, fever), T0), (sample(T0 + 120 * S, fever), T0 + 120 * S)])
    assert [(c.present, c.time) for c in out] == [(True, T0 + 120 * S)]
    late: Sequence[AlertCandidate]
    state, late = rule.step(state, probe_off(T0 + 60 * S, Metric.TEMP_C), T0 + 130 * S)
    assert [(c.present, c.time, c.details.get("late_s")) for c in late] == [(False, T0 + 60 * S, 70.0)]
    assert (state.grade, state.fever.active) == (0, False)
