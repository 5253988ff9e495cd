"""The vital-sign tracks fold what leaves their late-data window in batches
(``daemon.clinical.vitals.FOLD_SLACK``): the batches change no decision, a quiet run folds as
``advance`` does row by row, and a track keeps what has left its window through a restart."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from daemon.clinical import news2, vitals
from daemon.clinical.news2 import News2Rule
from daemon.clinical.verdicts import JudgedWindow
from daemon.clinical.vitals import (
    Change,
    Judged,
    Noise,
    Track,
    Transition,
    Verdict,
    advance,
    dump_track,
    folded,
    interrupt,
    judge,
    load_track,
)
from daemon.config import VitalThresholds
from daemon.events import Acvpu, Event, Health, Metric, Observation, SourceHealth, VitalSample
from daemon.frozen import replace
from tests.test_column_windows import BED as NEWS2_BED

T0 = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
S = timedelta(seconds=1)
A, B, N = Verdict.ABNORMAL, Verdict.BAND, Verdict.NORMAL
SLACK = vitals.FOLD_SLACK


def _row_by_row(base: Track, rows: list[Judged], noise: Noise) -> tuple[Track, list[Change]]:
    """What folding ``rows`` is: ``advance`` for each verdict, a break for each sentinel."""
    track, changes = base, []
    for row in rows:
        if row.verdict is None:
            track = track.broken()
            continue
        track, transition = advance(track, row.verdict, row.time, row.value, noise, measure=row.measure)
        if transition is not None:
            changes.append(Change(transition, row.time, row.value, measure=row.measure))
    return track, changes


def test_folding_rows_gives_what_advance_gives_row_by_row() -> None:
    """Runs of normal and in-band rows (folded in one copy on an inactive track), abnormal
    rows that raise, sentinels, repeated times, from bases active or not."""
    rng = random.Random(3)
    for _ in range(2000):
        noise = Noise(delay_s=rng.choice([0, 5, 30]), clear_s=rng.choice([0, 10, 60]), confirm_samples=2)
        base = Track()
        second = 0
        for verdict in rng.choices([A, N, B], k=rng.randrange(4)):  # a history: active or not
            second += 1
            base, _ = advance(base, verdict, T0 + second * S, 1.0, noise)
        if rng.random() < 0.2:
            base = base.broken()
        rows = []
        for n in range(rng.randrange(1, 40)):
            second += rng.choice([0, 1, 1, 3, 10])
            kind: Verdict | None = rng.choices([N, B, A, None], weights=[8, 3, 2, 1])[0]
            rows.append(Judged(T0 + second * S, kind, float(n), rng.choice([None, Metric.SBP_MMHG])))
        window = JudgedWindow(rows)
        cols, lo, hi = window.columns()
        got = vitals._fold_rows(base, cols.data, lo, hi, noise)
        assert got == _row_by_row(base, rows, noise), (base, rows)


def test_a_quiet_run_is_one_copy_of_the_track(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fifty-nine normal and in-band rows on an inactive track: one copy, not fifty-nine."""
    copies = 0
    real = vitals._copy_track

    def counted(track: Track, **changes: object) -> Track:
        nonlocal copies
        copies += 1
        return real(track, **changes)

    rows = [Judged(T0 + i * S, B if i % 7 == 3 else N, 37.0) for i in range(59)]
    cols, lo, hi = JudgedWindow(rows).columns()
    monkeypatch.setattr(vitals, "_copy_track", counted)
    track, changes = vitals._fold_rows(Track(), cols.data, lo, hi, Noise(0, 60, 1))
    assert (copies, changes, track.last_time, track.normal_since) == (1, [], T0 + 58 * S, T0 + 53 * S)


def _window(track: Track) -> list[datetime]:
    return [item.time for item in track.recent]


@pytest.mark.parametrize("past_s", [0, 1], ids=["at-the-slack", "1-s-past-it"])
def test_in_order_samples_fold_only_once_the_oldest_is_the_slack_past_the_window(past_s: int) -> None:
    """late_s 30 s, a sample a second: the samples that left the window stay in it until the
    oldest is ``FOLD_SLACK`` past it; then every one that left goes into the base at once."""
    noise = Noise(delay_s=0, clear_s=60, confirm_samples=2, late_s=30)
    track = Track()
    last = 30 + int(SLACK.total_seconds()) + past_s
    for t in range(last + 1):
        track, _ = judge(track, N, T0 + t * S, 37.0, noise, now=T0 + t * S)
    assert track.folded_before == T0 + (last - 30) * S
    if past_s:
        assert _window(track) == [T0 + t * S for t in range(last - 30, last + 1)]
        assert track.base is not None
        assert track.base.last_time == T0 + (last - 31) * S
    else:
        assert _window(track) == [T0 + t * S for t in range(last + 1)]
        assert track.base == Track()
    settled = folded(track, noise)
    assert _window(settled) == [T0 + t * S for t in range(last - 30, last + 1)]
    assert settled.base is not None
    assert settled.base.last_time == T0 + (last - 31) * S


def _events(rng: random.Random) -> list[tuple[str, int, Verdict, float, int]]:
    """(kind, time in s, verdict, value, arrival in s): samples mostly in order and some late,
    sentinels on time and late; now and then the daemon's clock steps back."""
    out = []
    second = arrival = 0
    for n in range(rng.randrange(50, 400)):
        second += rng.choice([1, 1, 1, 2, 5])
        arrival = max(arrival, second + rng.choice([0, 0, 1]))
        if rng.random() < 0.03:
            arrival -= rng.choice([5, 40])
        if rng.random() < 0.15:  # late: up to beyond the window
            arrival += rng.choice([0, 1, 20])
            at = second - rng.randrange(1, 90)
        else:
            at = second
        kind = "sentinel" if rng.random() < 0.08 else "sample"
        verdict = rng.choices([N, B, A], weights=[6, 2, 3])[0]
        out.append((kind, at, verdict, float(n), arrival))
    return out


def _run(events: list[tuple[str, int, Verdict, float, int]], noise: Noise) -> list[tuple[object, ...]]:
    """What each event returns: the changes, and the track as its window and base settle it."""
    track = Track()
    seen: list[tuple[object, ...]] = []
    for kind, at, verdict, value, arrival in events:
        now = T0 + arrival * S
        if kind == "sentinel":
            track, changes = interrupt(track, T0 + at * S, noise, now=now)
        else:
            track, changes = judge(track, verdict, T0 + at * S, value, noise, now=now)
        settled = folded(track, noise)
        seen.append((changes, replace(settled, recent=(), base=None, folded_before=None)))
        seen.append((tuple(settled.recent), settled.base))
    return seen


@pytest.mark.parametrize("late_s", [30.0, float("inf")], ids=["late-30-s", "unbounded-kept-20-s"])
def test_folding_in_batches_changes_no_decision(monkeypatch: pytest.MonkeyPatch, late_s: float) -> None:
    """The same events, late samples and sentinels among them, give the same changes and the
    same settled track whether the in-order path folds every sample or in batches. Unbounded
    lateness keeps a shorter window than it accepts samples for (a week; 20 s here)."""
    if late_s == float("inf"):
        monkeypatch.setattr(vitals, "_MAX_WINDOW_S", 20.0)
    vitals.kept_for.cache_clear()
    rng = random.Random(21)
    try:
        for _ in range(60):
            noise = Noise(
                delay_s=rng.choice([0, 10]), clear_s=rng.choice([0, 30]), confirm_samples=2, late_s=late_s
            )
            events = _events(rng)
            batched = _run(events, noise)
            with monkeypatch.context() as every_sample:
                every_sample.setattr(vitals, "FOLD_SLACK", timedelta(0))
                every = _run(events, noise)
            assert batched == every
    finally:
        vitals.kept_for.cache_clear()


def test_what_left_the_window_survives_a_restart() -> None:
    """``folded_before`` is saved with the track: a late sentinel after a restart is judged
    against the same window; a track saved before it existed loads with none."""
    noise = Noise(delay_s=0, clear_s=60, confirm_samples=3, late_s=30)
    track = Track()
    for t in (0, 20, 40):
        track, _ = judge(track, A, T0 + t * S, 88.0, noise, now=T0 + t * S)
    assert track.folded_before == T0 + 10 * S
    assert _window(track) == [T0, T0 + 20 * S, T0 + 40 * S]  # the 0 s sample waits for its batch
    loaded = load_track(dump_track(track))
    assert loaded == track
    # Before 0 s, older than what left: nothing; at 10 s it undoes the onset at 40 s.
    assert interrupt(loaded, T0 - S, noise, now=T0 + 41 * S) == (loaded, [])
    _, changes = interrupt(loaded, T0 + 10 * S, noise, now=T0 + 41 * S)
    assert [(c.transition, c.time, c.value) for c in changes] == [(Transition.CLEARED, T0 + 10 * S, 88.0)]
    old = {k: v for k, v in dump_track(track).items() if k != "folded_before"}
    assert load_track(old) == replace(track, folded_before=None)


# --- NEWS2: the same batches for its window of inputs ---------------------------------------------


def _news2_events(rng: random.Random, n: int) -> list[tuple[Event, datetime]]:
    """Inputs every 10 s, mostly normal (quiet runs) and now and then scoring 3 or more;
    observations; samples late by up to beyond the window; probe-offs as late, of any age
    around the window's edge (300 s) and its batches (``FOLD_SLACK`` beyond it); some inputs
    share a time."""
    out: list[tuple[Event, datetime]] = []
    for i in range(n):
        now = T0 + i * 10 * S
        at = now - (rng.choice([5, 60, 290, 310, 500]) if rng.random() < 0.05 else 0) * S
        kind = rng.random()
        if kind < 0.8:
            loud = rng.random() < 0.1
            values = {
                Metric.RR_PER_MIN: rng.choice([26.0, 8.0]) if loud else rng.choice([14.0, 16.0]),
                Metric.SPO2_PCT: rng.choice([97.0, 98.0]),
                Metric.HR_PER_MIN: rng.choice([70.0, 80.0, 95.0]),
                Metric.TEMP_C: rng.choice([36.8, 37.2, 38.5]),
            }
            values = {m: v for m, v in values.items() if rng.random() < 0.7}
            out.append((VitalSample("w1", "b1", "m1", at, values), now))
        elif kind < 0.92:
            observation = Observation(
                "w1", "b1", at, o2_device=rng.choice([None, "air"]), acvpu=rng.choice([None, Acvpu.ALERT])
            )
            out.append((observation, now))
        else:
            blind = rng.choice(["spo2_pct", "rr_per_min"])
            off_at = now - rng.choice([0, 10, 295, 305, 330, 355, 370, 400]) * S
            out.append((SourceHealth("w1", "b1", f"monitor.{blind}", off_at, Health.LOST, "probe-off"), now))
        if rng.random() < 0.08 and kind < 0.8:  # another sample of the same time, other values
            again = {Metric.RR_PER_MIN: rng.choice([14.0, 16.0, 26.0]), Metric.HR_PER_MIN: 75.0}
            out.append((VitalSample("w1", "b1", "m1", at, again), now))
    return out


def test_news2_folding_in_batches_changes_no_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    """Samples, observations and probe-offs, some late and some older than the window: the same
    candidates and the same settled state whether the in-order path folds every input or in
    batches (a short window, so that inputs leave it all along)."""
    th = VitalThresholds(news2_late_s=300.0, news2_delay_s=40.0, news2_clear_s=60.0, confirm_samples=2)
    for seed in range(6):
        events = _news2_events(random.Random(seed), 500)
        runs = []
        for slack in (vitals.FOLD_SLACK, timedelta(0)):
            monkeypatch.setattr(news2, "FOLD_SLACK", slack)
            rule = News2Rule(th, NEWS2_BED)
            state, seen = rule.initial(), []
            for event, now in events:
                state, out = rule.step(state, event, now)
                settled = rule.settled(state)
                seen.append((list(out), replace(settled, folded_before=None)))
            runs.append(seen)
        assert runs[0] == runs[1], seed


def test_news2_keeps_what_left_its_window_through_a_restart() -> None:
    th = VitalThresholds(news2_late_s=60.0)
    rule = News2Rule(th, NEWS2_BED)
    state = rule.initial()
    for second in range(0, 100, 10):
        event = VitalSample("w1", "b1", "m1", T0 + second * S, {Metric.RR_PER_MIN: 16.0})
        state, _ = rule.step(state, event, T0 + second * S)
    assert state.folded_before == T0 + 30 * S
    assert len(state.recent) == 10  # nothing folded yet: the oldest is not a minute past the window
    loaded = rule.with_windows(rule.load(rule.dump(state)), {"inputs": state.recent})
    assert loaded == state
    assert len(rule.settled(loaded).recent) == 7
    old = {k: v for k, v in rule.dump(state).items() if k != "folded_before"}
    assert rule.load(old).folded_before is None


def test_news2_folds_a_window_as_scoring_each_input_again() -> None:
    """The base after any prefix of a window of inputs, folded with the scores they kept (quiet
    runs in one copy), is the base that scoring each again gives: inputs of the same time,
    observations, probe-offs, runs that raise and clear."""
    th = VitalThresholds(news2_late_s=86_400.0, news2_delay_s=20.0, news2_clear_s=30.0, confirm_samples=2)
    rng = random.Random(8)
    for seed in range(6):
        rule = News2Rule(th, NEWS2_BED)
        state = rule.initial()
        events = [(event, now) for event, now in _news2_events(random.Random(seed), 300) if event.time == now]
        first = len(events) // 3
        for event, now in events[:first]:
            state, _ = rule.step(state, event, now)
        base = replace(state, recent=news2.EMPTY_INPUTS, base=None, folded_before=None)
        for event, now in events[first:]:
            state, _ = rule.step(state, event, now)
        window = news2.as_inputs(state.recent)[-(len(events) - first) :]
        for _ in range(20):
            k = rng.randrange(len(window) + 1)
            assert rule._fold_base(base, window[:k]) == rule._fold(base, window[:k])[0], (seed, k)
