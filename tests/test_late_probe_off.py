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
from daemon.clinical.vitals import (
    Condition,
    Noise,
    Track,
    Transition,
    Verdict,
    VitalsRule,
    dump_judged,
    dump_track,
    folded,
    interrupt,
    judge,
    load_judged,
    load_track,
)
from daemon.events import AlertCandidate, Event, Health, Metric, SourceHealth, Tick, VitalSample
from daemon.frozen import replace
from daemon.timefmt import iso
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


@pytest.mark.parametrize(
    ("reading_at", "spo2_kept"),
    [(T0 + 30 * S, False), (T0 + 60 * S, True)],
    ids=["older-than-the-probe-off", "at-the-probe-offs-time"],
)
def test_news2_a_reading_older_than_a_newer_probe_off_goes_before_it(
    reading_at: datetime, spo2_kept: bool
) -> None:
    """A reading at 0 s, a probe-off at 60 s (newer than the last evaluation, at 0 s), then a
    reading arriving after both: older than the probe-off, it takes its place before it and the
    probe-off takes its SpO2 out; with the probe-off's time it came after it, and stays."""
    rule = News2Rule(TH, BED)
    state, _ = steps(
        rule,
        [
            (sample(T0, NORMAL), T0),
            (probe_off(T0 + 60 * S), T0 + 60 * S),
            (sample(reading_at, NORMAL), T0 + 70 * S),
        ],
    )
    assert (Metric.SPO2_PCT in state.values) is spo2_kept
    times = [item.time for item in state.recent]
    assert times == sorted(times)


@pytest.mark.parametrize(
    ("off_at", "spo2_kept"),
    [(T0 - timedelta(milliseconds=1), True), (T0, False)],
    ids=["older-than-the-base", "at-the-bases-last-time"],
)
def test_news2_a_probe_off_at_the_time_of_the_bases_last_evaluation_comes_after_its_inputs(
    off_at: datetime, spo2_kept: bool
) -> None:
    """A state saved before windows existed, last evaluated at T0: it becomes the window's base,
    and a reading at T0 (a repeat of that time) is kept in the window. A probe-off at T0, arriving
    after it and after a reading without SpO2 at 60 s, takes that SpO2 out; 1 ms earlier it is
    older than the base and removes only what the base holds (nothing here)."""
    rule = News2Rule(TH, BED)
    no_spo2: dict[Metric, float] = {m: v for m, v in NORMAL.items() if m is not Metric.SPO2_PCT}
    state = rule.load({"track": {"active": False, "last_time": iso(T0)}})
    arrivals: list[tuple[Event, datetime]] = [
        (sample(T0, NORMAL), T0),
        (sample(T0 + 60 * S, no_spo2), T0 + 60 * S),
        (probe_off(off_at), T0 + 70 * S),
    ]
    for event, arrived in arrivals:
        state, _ = rule.step(state, event, arrived)
    assert (Metric.SPO2_PCT in state.values) is spo2_kept


def test_news2_a_probe_off_older_than_the_window_undoing_a_trigger_scores_what_the_base_held() -> None:
    """SpO2 88 % (scale 1: 3) at -30 s and a reading without SpO2 at 0 s: no trigger yet (60 s
    delay). At 61 min (pulse 95: 1) the 88 % still counts: NEWS2_HIGH. By then the first two have
    left the window (3600 s) for its base. A probe-off at -15 s, older than the window, takes the
    88 % out of the base: the trigger is undone at -15 s, and the score said is the base's at that
    time without the 88 %, not counting the 61 min reading (0, not 1). A later late reading is
    then judged from that base: the 88 % does not come back."""
    rule = News2Rule(TH, BED)
    minute = timedelta(minutes=1)
    no_spo2: dict[Metric, float] = {m: v for m, v in NORMAL.items() if m is not Metric.SPO2_PCT}
    state, out = steps(
        rule,
        [
            (sample(T0 - 30 * S, {**NORMAL, Metric.SPO2_PCT: 88.0}), T0 - 30 * S),
            (sample(T0, no_spo2), T0),
            (sample(T0 + 61 * minute, {**no_spo2, Metric.HR_PER_MIN: 95.0}), T0 + 61 * minute),
            (sample(T0 + 62 * minute, no_spo2), T0 + 62 * minute),
        ],
    )
    assert [(c.present, c.time) for c in out] == [(True, T0 + 61 * minute)]
    assert state.base is not None
    assert state.base.track.last_time == T0
    late: Sequence[AlertCandidate]
    state, late = rule.step(state, probe_off(T0 - 15 * S), T0 + 63 * minute)
    assert [(c.present, c.time, c.value) for c in late] == [(False, T0 - 15 * S, 0.0)]
    assert Metric.SPO2_PCT not in state.values
    assert not state.track.active
    state, late = rule.step(state, sample(T0 + 61.5 * minute, no_spo2), T0 + 63 * minute)
    assert list(late) == []
    assert Metric.SPO2_PCT not in state.values
    assert not state.track.active


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
    # The window, the sentinel included, survives a restart (rule states are stored as JSON).
    assert [load_judged(dump_judged(item)) for item in track.recent] == list(track.recent)


@pytest.mark.parametrize(
    ("off_at", "changes"),
    [
        # After the 20 s sample: the run is 10, 20 then 30, 40, too short: the onset at 30 s is
        # undone at 20 s, with the value of the 20 s sample (the latest before the sentinel).
        (T0 + 20 * S, [(Transition.CLEARED, T0 + 20 * S, 87.0)]),
        # After the 30 s sample: the onset at 30 s stands; the run after it is the 40 s sample.
        (T0 + 30 * S, []),
    ],
    ids=["at-a-sample-inside-the-run", "at-the-raising-sample"],
)
def test_a_late_sentinel_at_a_samples_time_comes_after_that_sample(
    off_at: datetime, changes: list[tuple[Transition, datetime, float]]
) -> None:
    """Samples at 10, 20, 30, 40 s raise at 30 s (confirm 3); a sentinel with the time of one of
    them arrives after the 40 s sample: it takes its place after that sample (arrival order)."""
    track = Track()
    for t, value in ((10, 88.0), (20, 87.0), (30, 86.0), (40, 85.0)):
        track, _ = judge(track, A, T0 + t * S, value, NO_DELAY, now=T0 + t * S)
    track, got = interrupt(track, off_at, NO_DELAY, now=T0 + 45 * S)
    assert [(c.transition, c.time, c.value) for c in got] == changes
    at = [item.time for item in track.recent].index(off_at)
    assert [item.verdict for item in track.recent[at : at + 2]] == [A, None]


def test_a_late_sentinel_before_a_newer_one_takes_its_place_in_time_order() -> None:
    """Samples at 10 and 20 s, a sentinel at 25 s, then one at 22 s: both are newer than every
    sample, but the second is older than the first sentinel: it goes before it."""
    track = Track()
    for t in (10, 20):
        track, _ = judge(track, A, T0 + t * S, 88.0, NO_DELAY, now=T0 + t * S)
    track, _ = interrupt(track, T0 + 25 * S, NO_DELAY, now=T0 + 25 * S)
    track, got = interrupt(track, T0 + 22 * S, NO_DELAY, now=T0 + 26 * S)
    assert got == []
    assert [(item.time, item.verdict) for item in track.recent] == [
        (T0 + 10 * S, A),
        (T0 + 20 * S, A),
        (T0 + 22 * S, None),
        (T0 + 25 * S, None),
    ]
    assert (track.run_count, track.active) == (0, False)


@pytest.mark.parametrize("before_ms", [0, 1], ids=["at-the-newest-sample", "just-before-it"])
def test_a_sentinel_at_the_newest_samples_time_is_on_time(before_ms: int) -> None:
    """At the newest sample's time (after it) a sentinel is on time: the run ends and it is
    appended to the window, which is neither judged again nor pruned (the on-time path, see
    ``interrupt``), although the window's oldest samples are beyond ``late_s`` by now. 1 ms
    earlier it is late: it goes before that sample, whose run goes on."""
    noise = Noise(delay_s=0, clear_s=60, confirm_samples=3, late_s=30)
    track = Track()
    for t in (0, 10):
        track, _ = judge(track, A, T0 + t * S, 88.0, noise, now=T0 + t * S)
    off_at = T0 + 10 * S - before_ms * timedelta(milliseconds=1)
    after, got = interrupt(track, off_at, noise, now=T0 + 100 * S)
    assert got == []
    if before_ms == 0:
        assert replace(after, recent=()) == replace(track.broken(), recent=())
        assert after.recent[:-1] == track.recent
        assert (after.recent[-1].time, after.recent[-1].verdict) == (off_at, None)
    else:
        assert (after.run_count, after.run_start) == (1, T0 + 10 * S)


def test_a_late_sentinel_before_every_sample_of_the_window_takes_its_value_from_the_base() -> None:
    """late_s 30 s: the 0 s sample has left the window for its base when the 40 s one arrives.
    A sentinel at 10 s undoes the onset at 40 s (confirm 3): cleared at 10 s, with the value and
    measure of the latest sample before it, the one in the base."""
    noise = Noise(delay_s=0, clear_s=60, confirm_samples=3, late_s=30)
    track = Track()
    for t, value in ((0, 60.0), (20, 59.0), (40, 58.0)):
        track, changes = judge(track, A, T0 + t * S, value, noise, now=T0 + t * S, measure=Metric.MAP_MMHG)
    assert [(c.transition, c.time) for c in changes] == [(Transition.RAISED, T0 + 40 * S)]
    base = folded(track, noise).base
    assert base is not None
    assert base.last_time == T0
    track, got = interrupt(track, T0 + 10 * S, noise, now=T0 + 41 * S)
    assert [(c.transition, c.time, c.value, c.measure) for c in got] == [
        (Transition.CLEARED, T0 + 10 * S, 60.0, Metric.MAP_MMHG)
    ]
    assert not track.active


N = Verdict.NORMAL


@pytest.mark.parametrize("late_s", [900.0, 50.0], ids=["abnormal-in-the-window", "abnormal-in-the-base"])
def test_a_late_sentinel_undoing_a_clearing_quotes_the_latest_abnormal_value(late_s: float) -> None:
    """88, 87, 86 at 10-30 s raise at 30 s (confirm 3); normal 96, 95, 94, 93 at 40-100 s clear
    at 100 s (60 s normal). A sentinel at 70 s, arriving at 105 s, breaks the normal run: the
    clearing is undone, raised again at 70 s. The alert stands on the 86 of the 30 s sample, the
    latest beyond the limit, not on the 95 of the 60 s sample, the latest before the sentinel.
    With late_s 50 s the abnormal samples have left the window for its base by then."""
    noise = replace(NO_DELAY, late_s=late_s)
    track = Track()
    changes: list[tuple[Transition, datetime]] = []
    for t, verdict, value in (
        (10, A, 88.0),
        (20, A, 87.0),
        (30, A, 86.0),
        (40, N, 96.0),
        (60, N, 95.0),
        (80, N, 94.0),
        (100, N, 93.0),
    ):
        track, got = judge(track, verdict, T0 + t * S, value, noise, now=T0 + t * S, measure=Metric.SPO2_PCT)
        changes.extend((c.transition, c.time) for c in got)
    assert changes == [(Transition.RAISED, T0 + 30 * S), (Transition.CLEARED, T0 + 100 * S)]
    base = folded(track, noise).base
    assert base is not None
    assert (base.last_time is not None and base.last_time >= T0 + 30 * S) is (late_s == 50.0)
    track, got = interrupt(track, T0 + 70 * S, noise, now=T0 + 105 * S)
    assert [(c.transition, c.time, c.value, c.measure) for c in got] == [
        (Transition.RAISED, T0 + 70 * S, 86.0, Metric.SPO2_PCT)
    ]
    assert track.active


def test_a_late_sentinel_undoing_a_clearing_in_a_state_saved_before_it_quotes_the_bases_value() -> None:
    """As above with late_s 50 s (the abnormal samples in the base), the state saved before the
    latest abnormal value was kept: the raise again quotes the base's latest value, 96 at 40 s,
    with its measure (what the old state knows), not a 0."""
    noise = replace(NO_DELAY, late_s=50.0)
    track = Track()
    for t, verdict, value in ((10, A, 88.0), (20, A, 87.0), (30, A, 86.0), (40, N, 96.0), (60, N, 95.0)):
        track, _ = judge(track, verdict, T0 + t * S, value, noise, now=T0 + t * S, measure=Metric.SPO2_PCT)
    for t, value in ((80, 94.0), (100, 93.0)):
        track, _ = judge(track, N, T0 + t * S, value, noise, now=T0 + t * S, measure=Metric.SPO2_PCT)
    data = dump_track(folded(track, noise))
    assert data["base"]["value"] == 96.0
    for dumped in (data, data["base"]):
        del dumped["abnormal_value"], dumped["abnormal_measure"]
    old = load_track(data)
    assert old.base is not None
    assert old.base.abnormal_value is None
    _, got = interrupt(old, T0 + 70 * S, noise, now=T0 + 105 * S)
    assert [(c.transition, c.time, c.value, c.measure) for c in got] == [
        (Transition.RAISED, T0 + 70 * S, 96.0, Metric.SPO2_PCT)
    ]


def test_the_latest_abnormal_value_survives_a_restart() -> None:
    """A track's latest value beyond the limit is kept in the saved state (rule states are stored
    as JSON); a state saved before it existed loads without it."""
    track = Track()
    for t, verdict, value in ((10, A, 88.0), (20, N, 96.0)):
        track, _ = judge(track, verdict, T0 + t * S, value, NO_DELAY, now=T0 + t * S, measure=Metric.SPO2_PCT)
    assert (track.value, track.abnormal_value, track.abnormal_measure) == (96.0, 88.0, Metric.SPO2_PCT)
    assert load_track(dump_track(track)) == track
    old = {k: v for k, v in dump_track(track).items() if not k.startswith("abnormal_")}
    assert load_track(old) == replace(track, abnormal_value=None, abnormal_measure=None)


def test_a_sample_at_the_time_of_the_newest_sentinel_is_judged_on_time() -> None:
    """A sentinel newer than every sample, then a sample with its time (arriving after it): the
    sample is on time, after the sentinel, and what it changes is not marked late. (Confirm 1,
    delay 0: the one sample raises.)"""
    noise = Noise(delay_s=0, clear_s=60, confirm_samples=1, late_s=900)
    track, _ = judge(Track(), Verdict.NORMAL, T0, 97.0, noise, now=T0)
    track, _ = interrupt(track, T0 + 10 * S, noise, now=T0 + 10 * S)
    track, got = judge(track, A, T0 + 10 * S, 88.0, noise, now=T0 + 15 * S)
    assert [(c.transition, c.time, c.late_s) for c in got] == [(Transition.RAISED, T0 + 10 * S, None)]
    assert [item.verdict for item in track.recent] == [Verdict.NORMAL, None, A]


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
    base = folded(track, noise).base
    assert base is not None
    assert base.last_time == T0  # the 0 s sample left the window
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
    [(T0 + 59 * S, False), (T0 + 60 * S, True), (T0 + 61 * S, True)],
    ids=["older-than-the-reading", "at-the-readings-time", "newer-than-the-reading"],
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
    [(T0 + 59 * S, False), (T0 + 60 * S, True), (T0 + 61 * S, True)],
    ids=["older-than-the-probe-off", "at-the-probe-offs-time", "newer-than-the-probe-off"],
)
def test_only_a_reading_newer_than_the_probe_off_says_the_probe_is_back(
    reading_at: datetime, back: bool
) -> None:
    rule = vitals_rule()
    state, _ = steps(rule, [(probe_off(T0 + 60 * S), T0 + 60 * S), (sample(reading_at, NORMAL), T0 + 70 * S)])
    assert (Metric.SPO2_PCT not in state.probe_off_since) is back


def probe_back(time: datetime, metric: Metric = Metric.SPO2_PCT) -> SourceHealth:
    return SourceHealth("w1", "b1", f"monitor.{metric.value}", time, Health.CONNECTED)


@pytest.mark.parametrize(
    ("back_at", "back"),
    [
        (T0 + 60 * S - timedelta(milliseconds=1), False),
        (T0 + 60 * S, True),
        (T0 + 61 * S, True),
    ],
    ids=["older-than-the-probe-off", "at-the-probe-offs-time", "newer-than-the-probe-off"],
)
def test_only_a_probe_back_not_older_than_the_probe_off_ends_it(back_at: datetime, back: bool) -> None:
    """A monitor reports the SpO2 probe off at 60 s; a "probe back" delivered after it but
    measured before it is out of date (an earlier episode): the probe stays off, and PROBE_OFF
    is raised once probe_off_delay_s (30 s) has passed. As for readings, a report at the
    probe-off's own time or later ends it."""
    rule = vitals_rule()
    state, _ = steps(rule, [(probe_off(T0 + 60 * S), T0 + 60 * S), (probe_back(back_at), T0 + 62 * S)])
    assert (Metric.SPO2_PCT not in state.probe_off_since) is back
    _, out = rule.step(state, Tick(T0 + 90 * S), T0 + 90 * S)
    assert [(c.condition, c.present) for c in out] == ([] if back else [("PROBE_OFF", True)])


@pytest.mark.parametrize(
    ("off_at", "raised"),
    [(T0 + 59 * S, False), (T0 + 61 * S, True)],
    ids=["older-than-the-newest-reading", "newer-than-the-newest-reading"],
)
def test_a_late_reading_does_not_make_the_newest_reading_older(off_at: datetime, raised: bool) -> None:
    """Readings at 60 s, then 50 s (late): the newest reading of SpO2 is still the 60 s one, so a
    probe-off at 59 s is out of date and one at 61 s counts (probe_off_delay_s 30 s)."""
    rule = vitals_rule()
    state, _ = steps(
        rule,
        [
            (sample(T0 + 60 * S, NORMAL), T0 + 60 * S),
            (sample(T0 + 50 * S, NORMAL), T0 + 65 * S),
            (probe_off(off_at), T0 + 70 * S),
        ],
    )
    assert state.seen_at[Metric.SPO2_PCT] == T0 + 60 * S
    assert (Metric.SPO2_PCT in state.probe_off_since) is raised


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


def test_crs_a_late_pressure_probe_off_that_undoes_a_hypotension_regrades_at_its_time() -> None:
    """Fever and low mean pressure at 0 and 120 s: grade 2 at 120 s. A mean-pressure probe-off at
    60 s arriving at 130 s breaks the hypotension run (0 s | 120 s): the grade goes back to 1 at
    60 s, marked late; the fever (another probe) is untouched."""
    rule = CrsRule(TH, BED, schedule_for(BED, CFG))
    low = {Metric.TEMP_C: 38.4, Metric.MAP_MMHG: 60.0}
    state, out = steps(rule, [(sample(T0, low), T0), (sample(T0 + 120 * S, low), T0 + 120 * S)])
    assert [(c.time, c.details.get("grade")) for c in out] == [(T0 + 120 * S, 2)]
    late: Sequence[AlertCandidate]
    state, late = rule.step(state, probe_off(T0 + 60 * S, Metric.MAP_MMHG), T0 + 130 * S)
    assert [(c.time, c.details.get("grade"), c.details.get("late_s")) for c in late] == [
        (T0 + 60 * S, 1, 70.0)
    ]
    assert (state.grade, state.hypotension.active, state.fever.active) == (1, False, True)
