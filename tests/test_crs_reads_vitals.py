"""The CRS rule reads the vital-sign rule's fever and hypotension tracks (``daemon.rules.Reader``)
instead of judging every sample a second time: through the engine it gives exactly what it
gives alone, shares the tracks' objects while the two are in step, and falls back to judging
itself when they are not (a restart before linking, a failure of the vital-sign rule)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import pytest

from daemon.clinical import vitals
from daemon.clinical.crs import CrsRule
from daemon.clinical.protocols import schedule_for
from daemon.clinical.vitals import Condition, VitalsRule, in_order, judge, noise_for
from daemon.config import VitalThresholds
from daemon.events import AlertCandidate, Event, Health, Metric, Observation, SourceHealth, Tick, VitalSample
from daemon.rules import RuleEngine
from tests.test_late_probe_off import BED, CFG, T0

S = timedelta(seconds=1)
# Short windows and delays, so that samples leave the windows, arrive too late for them and
# complete onsets all along a few hundred events.
TH = VitalThresholds(
    fever_late_s=120.0,
    hypotension_late_s=90.0,
    fever_delay_s=20.0,
    fever_clear_s=30.0,
    hypotension_delay_s=10.0,
    hypotension_clear_s=20.0,
    confirm_samples=2,
)


def _events(rng: random.Random, n: int) -> list[tuple[Event, datetime]]:
    """Samples every 5 s (fever and low pressures now and then, some metrics missing), some
    late by up to beyond the windows, some sharing a time; probe-offs of the thermometer and
    the cuff, late or not; nurses' observations; ticks."""
    out: list[tuple[Event, datetime]] = []
    for i in range(n):
        now = T0 + i * 5 * S
        kind = rng.random()
        at = now - (rng.choice([3, 20, 60, 100, 150]) if rng.random() < 0.1 else 0) * S
        if kind < 0.75:
            values = {
                Metric.TEMP_C: rng.choice([36.8, 37.4, 38.6, 39.1]),
                Metric.SBP_MMHG: rng.choice([118.0, 104.0, 84.0]),
                Metric.MAP_MMHG: rng.choice([80.0, 62.0]),
                Metric.HR_PER_MIN: 80.0,
            }
            values = {m: v for m, v in values.items() if rng.random() < 0.8}
            if values:
                out.append((VitalSample("w1", "b1", "mon", at, values), now))
            if rng.random() < 0.05:
                out.append((VitalSample("w1", "b1", "mon", at, {Metric.TEMP_C: 38.9}), now))
        elif kind < 0.85:
            metric = rng.choice([Metric.TEMP_C, Metric.MAP_MMHG, Metric.SBP_MMHG])
            health = rng.choice([Health.LOST, Health.LOST, Health.CONNECTED])
            source = f"monitor.{metric.value}"
            out.append((SourceHealth("w1", "b1", source, at, health, "probe-off"), now))
        elif kind < 0.92:
            observation = Observation(
                "w1", "b1", at, vasopressors=rng.choice([None, 0, 1]), o2_device=rng.choice([None, "air"])
            )
            out.append((observation, now))
        else:
            out.append((Tick(now), now))
    return out


def _engine() -> RuleEngine:
    schedule = schedule_for(BED, CFG)
    return RuleEngine({"b1": [VitalsRule(TH, BED, schedule), CrsRule(TH, BED, schedule)]}, wards={"b1": "w1"})


def _crs(candidates: list[AlertCandidate]) -> list[AlertCandidate]:
    return [c for c in candidates if c.condition == "CRS_SUSPECTED"]


@pytest.mark.parametrize("seed", range(8))
def test_through_the_engine_crs_gives_what_it_gives_alone(seed: int) -> None:
    """Every CRS candidate and every CRS state, event by event, against the rule stepped
    alone; and the tracks were shared, not judged twice, along the way."""
    events = _events(random.Random(seed), 400)
    engine = _engine()
    alone = CrsRule(TH, BED, schedule_for(BED, CFG))
    state = alone.initial()
    shared = 0
    for event, now in events:
        got = _crs(engine.handle(event, now))
        state, expected = alone.step(state, event, now)
        assert got == list(expected), (seed, event, now)
        assert engine.state("b1", "crs") == state, (seed, event, now)
        tracks = engine.state("b1", "vitals").tracks
        shared += engine.state("b1", "crs").fever is tracks[Condition.FEVER]
    assert shared == len(events), "in step throughout: the vital-sign rule's very tracks"


def test_crs_judges_a_sample_itself_when_the_vital_sign_rule_failed_on_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The vital-sign rule raises on the second fever sample: its tracks stay as they were,
    and CRS, given nothing to read, judges that sample itself and still suggests grade 1."""
    engine = _engine()
    alone = CrsRule(TH, BED, schedule_for(BED, CFG))
    state = alone.initial()
    fever = {Metric.TEMP_C: 38.8}
    real = VitalsRule.step
    broken_at = T0 + 25 * S

    def flaky(self: VitalsRule, state: Any, event: Event, now: datetime) -> Any:
        if isinstance(event, VitalSample) and event.time == broken_at:
            raise RuntimeError("a bug")
        return real(self, state, event, now)

    monkeypatch.setattr(VitalsRule, "step", flaky)
    graded: list[object] = []
    for second in (0, 25, 30):
        sample = VitalSample("w1", "b1", "mon", T0 + second * S, fever)
        out = engine.handle(sample, T0 + second * S)
        state, expected = alone.step(state, sample, T0 + second * S)
        assert _crs(out) == list(expected)
        graded.extend(c.details.get("grade") for c in _crs(out))
    assert graded == [1]
    assert engine.state("b1", "crs") == state
    assert engine.counters.get("rules.failed", "vitals") == 1
    # The vital-sign rule missed a sample CRS judged: no longer in step, each judges its own.
    assert engine.state("b1", "crs").fever is not engine.state("b1", "vitals").tracks[Condition.FEVER]


def test_after_a_restore_the_tracks_are_shared_again_and_their_rows_are_not_rewritten() -> None:
    engine = _engine()
    for second in range(0, 60, 5):
        sample = VitalSample("w1", "b1", "mon", T0 + second * S, {Metric.TEMP_C: 38.8, Metric.SBP_MMHG: 84.0})
        engine.handle(sample, T0 + second * S)
    taken = engine.take_changed()
    windows: dict[tuple[str, str], dict[str, list[Any]]] = {}
    for change in taken.windows:
        windows.setdefault((change.bed, change.rule), {})[change.window] = [d for _, d in change.rows()]
    snapshot = {"b1": {rule: dict(dump()) for (_, rule), dump in taken.states.items()}}

    again = _engine()
    again.restore(snapshot, windows)
    crs, tracks = again.state("b1", "crs"), again.state("b1", "vitals").tracks
    assert crs.fever is tracks[Condition.FEVER]
    assert crs.hypotension is tracks[Condition.HYPOTENSION]
    later = VitalSample("w1", "b1", "mon", T0 + 60 * S, {Metric.TEMP_C: 38.8, Metric.SBP_MMHG: 84.0})
    again.handle(later, T0 + 60 * S)
    deltas = {(c.rule, c.window): c.delta for c in again.take_changed().windows}
    assert not deltas[("crs", "fever")].clear, "one row added, not the window written again"
    assert len(deltas[("crs", "fever")].added) == 1


def test_a_crs_state_unequal_to_the_vital_sign_rules_is_not_linked() -> None:
    """A CRS state stored apart from the vital-sign state it would share (a crash between the
    slices of a checkpoint) keeps its own tracks, and CRS judges samples itself."""
    rule = CrsRule(TH, BED, schedule_for(BED, CFG))
    vitals_rule = VitalsRule(TH, BED, schedule_for(BED, CFG))
    sample = VitalSample("w1", "b1", "mon", T0, {Metric.TEMP_C: 38.8})
    ahead, _ = vitals_rule.step(vitals_rule.initial(), sample, T0)
    state = rule.initial()
    assert rule.linked(state, ahead) is state
    assert rule.linked(state, vitals_rule.initial()) is state, "the same empty tracks already"


def test_in_order_is_the_in_order_path_of_judge(monkeypatch: pytest.MonkeyPatch) -> None:
    """``in_order`` says which samples ``judge`` advances in order: any other that it judges
    goes through the late path, which returns the changes the grade is set again at."""
    rejudged: list[datetime] = []
    real = vitals._rejudge

    def spy(track: Any, base: Any, recent: Any, late: Any, noise: Any, *, now: datetime) -> Any:
        rejudged.append(late.time)
        return real(track, base, recent, late, noise, now=now)

    monkeypatch.setattr(vitals, "_rejudge", spy)
    noise = noise_for(Condition.FEVER, TH)
    rng = random.Random(5)
    track = vitals.EMPTY_TRACK
    late = 0
    for i in range(300):
        now = T0 + i * 5 * S
        time = now - rng.choice([0, 0, 0, 5, 30, 200]) * S
        if rng.random() < 0.05:
            track, _ = vitals.interrupt(track, time, noise, now=now)
            continue
        expected = in_order(track, time)
        before = len(rejudged)
        verdict = rng.choice([vitals.Verdict.ABNORMAL, vitals.Verdict.NORMAL])
        track, _ = judge(track, verdict, time, 38.0, noise, now=now)
        assert not (expected and len(rejudged) > before), (i, time)
        late += not expected and len(rejudged) > before
    assert late > 10, "the late path was taken too"


def _without_measures(track: dict[str, Any]) -> dict[str, Any]:
    """A fever track as saved before CRS named the temperature beside each value."""
    base = track.get("base")
    return {
        **track,
        "measure": None,
        "abnormal_measure": None,
        "recent": [row[:3] for row in track.get("recent", [])],
        "base": None if base is None else _without_measures(base),
    }


def test_a_fever_track_saved_without_its_measures_is_linked_after_a_restart() -> None:
    """CRS judged fever without naming its measure; the vital-sign rule names the
    temperature. Loaded, the old track gets it back, so the two are linked again."""
    engine = _engine()
    for second in range(0, 300, 5):
        temp = 38.8 if second < 200 else 37.0
        sample = VitalSample("w1", "b1", "mon", T0 + second * S, {Metric.TEMP_C: temp})
        engine.handle(sample, T0 + second * S)
    taken = engine.take_changed()
    snapshot = {"b1": {rule: dict(dump()) for (_, rule), dump in taken.states.items()}}
    assert snapshot["b1"]["crs"]["fever"]["base"] is not None, "some verdicts have left the window"
    snapshot["b1"]["crs"]["fever"] = _without_measures(snapshot["b1"]["crs"]["fever"])
    windows: dict[tuple[str, str], dict[str, list[Any]]] = {}
    for change in taken.windows:
        rows = [d for _, d in change.rows()]
        if (change.rule, change.window) == ("crs", "fever"):
            rows = [row[:3] for row in rows]
        windows.setdefault((change.bed, change.rule), {})[change.window] = rows

    again = _engine()
    again.restore(snapshot, windows)
    assert again.state("b1", "crs").fever is again.state("b1", "vitals").tracks[Condition.FEVER]
