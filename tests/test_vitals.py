"""Vital-sign rules: onset delays, clearing, hysteresis, artifacts, probe-off, staleness."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.clinical.protocols import schedule_for
from daemon.clinical.vitals import (
    Change,
    Condition,
    Noise,
    Track,
    Transition,
    Verdict,
    VitalsRule,
    advance,
    classify,
    dump_track,
    interrupt,
    judge,
    late_dropped,
    load_track,
    mean_arterial_pressure,
)
from daemon.clinical.watch import vital_rules
from daemon.config import Config, VitalThresholds
from daemon.config import parse as parse_config
from daemon.events import (
    AlertCandidate,
    Event,
    Health,
    Kind,
    Metric,
    Priority,
    SourceHealth,
    Tick,
    VitalSample,
)
from daemon.rules import RuleEngine
from tests.helpers import one_bed_config, run

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
NORMAL = {
    Metric.TEMP_C: 36.8,
    Metric.SBP_MMHG: 124.0,
    Metric.DBP_MMHG: 76.0,
    Metric.HR_PER_MIN: 78.0,
    Metric.SPO2_PCT: 97.0,
    Metric.RR_PER_MIN: 16.0,
}


def config(**vitals: Any) -> Config:
    """A one-bed ward; ``vitals`` overrides ward thresholds."""
    return one_bed_config(START, vitals=vitals)


def rule(**vitals: Any) -> VitalsRule:
    cfg = config(**vitals)
    bed = cfg.bed("b1")
    return VitalsRule(cfg.thresholds_for("b1").vitals, bed, schedule_for(bed, cfg))


def at(minutes: float) -> datetime:
    return START + timedelta(hours=12, minutes=minutes)


def sample(minutes: float, **values: float | None) -> VitalSample:
    merged: dict[Metric, float] = dict(NORMAL)
    for key, value in values.items():
        if value is None:
            merged.pop(Metric(key))
        else:
            merged[Metric(key)] = value
    return VitalSample("w1", "b1", "mon-1", at(minutes), merged)


def conditions(candidates: Sequence[AlertCandidate]) -> list[tuple[str, bool]]:
    return [(c.condition, c.present) for c in candidates]


# --------------------------------------------------------------------------- tracks

NOISE = Noise(delay_s=120, clear_s=600, confirm_samples=2)


def test_onset_needs_two_samples_and_the_delay() -> None:
    track, tr = advance(Track(), Verdict.ABNORMAL, at(0), 38.2, NOISE)
    assert tr is None
    track, tr = advance(track, Verdict.ABNORMAL, at(1), 38.2, NOISE)
    assert tr is None  # 60 s < 120 s delay
    track, tr = advance(track, Verdict.ABNORMAL, at(2), 38.2, NOISE)
    assert tr is Transition.RAISED
    assert track.active


def test_clearing_needs_normal_values_for_the_clearing_time() -> None:
    track = Track(active=True, last_time=at(0))
    track, tr = advance(track, Verdict.NORMAL, at(1), 37.0, NOISE)
    assert tr is None
    track, tr = advance(track, Verdict.BAND, at(5), 37.8, NOISE)  # resets the clearing run
    track, tr = advance(track, Verdict.NORMAL, at(6), 37.0, NOISE)
    track, tr = advance(track, Verdict.NORMAL, at(15), 37.0, NOISE)
    assert tr is None  # 9 min since 6
    track, tr = advance(track, Verdict.NORMAL, at(16), 37.0, NOISE)
    assert tr is Transition.CLEARED
    assert not track.active


def test_advance_ignores_a_sample_not_newer_than_the_last() -> None:
    """``advance`` takes samples in time order only (``judge`` inserts late ones)."""
    track, _ = advance(Track(), Verdict.ABNORMAL, at(0), 38.2, NOISE)
    track, _ = advance(track, Verdict.ABNORMAL, at(10), 38.2, NOISE)
    assert track.active
    for older in (at(5), at(10)):  # an older sample, and a repeat of the last time
        same, tr = advance(track, Verdict.NORMAL, older, 37.0, NOISE)
        assert same == track
        assert tr is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list(Verdict)), max_size=60))
def test_transitions_alternate(verdicts: list[Verdict]) -> None:
    """Raised and cleared always alternate, starting with raised: no double raise."""
    track = Track()
    seen: list[Transition] = []
    for i, verdict in enumerate(verdicts):
        track, tr = advance(track, verdict, at(i * 3), 0.0, NOISE)
        if tr is not None:
            seen.append(tr)
    assert seen == [Transition.RAISED, Transition.CLEARED] * (len(seen) // 2) + (
        [Transition.RAISED] if len(seen) % 2 else []
    )


# --------------------------------------------------------------------------- classification

TH = VitalThresholds()


@pytest.mark.parametrize(
    ("temp", "verdict"),
    [(38.0, Verdict.ABNORMAL), (37.99, Verdict.BAND), (37.7, Verdict.BAND), (37.69, Verdict.NORMAL)],
)
def test_fever_limit_and_band(temp: float, verdict: Verdict) -> None:
    assert classify(Condition.FEVER, {Metric.TEMP_C: temp}, TH) == (verdict, temp)


def test_a_sample_without_the_metric_says_nothing() -> None:
    assert classify(Condition.FEVER, {Metric.HR_PER_MIN: 80.0}, TH) is None
    assert classify(Condition.HYPOTENSION, {Metric.HR_PER_MIN: 80.0}, TH) is None


def test_map_is_estimated_from_sbp_and_dbp_when_not_sent() -> None:
    assert mean_arterial_pressure({Metric.SBP_MMHG: 90.0, Metric.DBP_MMHG: 45.0}, TH) == (60.0, True)
    assert mean_arterial_pressure({Metric.SBP_MMHG: 90.0, Metric.MAP_MMHG: 70.0}, TH) == (70.0, False)
    off = VitalThresholds(map_from_sbp_dbp=False)
    assert mean_arterial_pressure({Metric.SBP_MMHG: 90.0, Metric.DBP_MMHG: 45.0}, off) == (None, False)


@pytest.mark.parametrize(
    ("values", "verdict"),
    [
        ({Metric.SBP_MMHG: 89.0}, Verdict.ABNORMAL),
        ({Metric.SBP_MMHG: 92.0}, Verdict.BAND),
        ({Metric.SBP_MMHG: 95.0, Metric.DBP_MMHG: 70.0}, Verdict.NORMAL),
        # SBP fine, MAP (estimated 63.3) below 65.
        ({Metric.SBP_MMHG: 100.0, Metric.DBP_MMHG: 45.0}, Verdict.ABNORMAL),
        ({Metric.MAP_MMHG: 64.0}, Verdict.ABNORMAL),
    ],
)
def test_hypotension_by_sbp_or_map(values: dict[Metric, float], verdict: Verdict) -> None:
    judged = classify(Condition.HYPOTENSION, values, TH)
    assert judged is not None
    assert judged[0] is verdict


# --------------------------------------------------------------------------- the rule


def test_fever_raises_after_persistence_with_messages_in_both_languages() -> None:
    r = rule()
    state, out = run(r, [sample(0, temp_c=38.2)])
    assert out == []  # one sample is not a persistent fever
    _, out = run(r, [sample(5, temp_c=38.2)], state)
    assert conditions(out) == [("FEVER", True)]
    fever = out[0]
    assert fever.priority is Priority.MEDIUM
    assert fever.kind is Kind.PHYSIOLOGICAL
    assert fever.value == 38.2
    assert fever.message is not None
    assert "38.2 °C" in fever.message.en
    assert "38,2 °C" in fever.message.fr
    assert fever.time == at(5)


def test_single_in_range_spike_never_alarms() -> None:
    r = rule()
    events = [sample(m, temp_c=45.0 if m == 10 else 36.9) for m in range(0, 60, 5)]
    _, out = run(r, events)
    assert out == []


def test_each_physiological_condition_and_its_priority() -> None:
    r = rule()
    bad = {
        "temp_c": 39.0,
        "sbp_mmhg": 80.0,
        "dbp_mmhg": 50.0,
        "spo2_pct": 88.0,
        "hr_per_min": 140.0,
        "rr_per_min": 30.0,
    }
    _, out = run(r, [sample(0, **bad), sample(5, **bad)])
    got = {c.condition: c.priority for c in out}
    assert got == {
        "FEVER": Priority.MEDIUM,
        "HYPOTENSION": Priority.HIGH,
        "HYPOXIA": Priority.HIGH,
        "TACHYCARDIA": Priority.MEDIUM,
        "TACHYPNOEA": Priority.MEDIUM,
    }


def test_estimated_map_is_said_in_the_message() -> None:
    r = rule()
    _, out = run(r, [sample(0, sbp_mmhg=95.0, dbp_mmhg=48.0), sample(5, sbp_mmhg=95.0, dbp_mmhg=48.0)])
    assert conditions(out) == [("HYPOTENSION", True)]
    assert out[0].message is not None
    assert "estimated from SBP/DBP" in out[0].message.en


def test_per_bed_thresholds_apply() -> None:
    """A bed's ``thresholds`` override the ward's for that bed (config.py ``BedConfig``)."""
    bed = {
        "ward": "w1",
        "patient": "p-1",
        "weight_kg": 63,
        "height_cm": 165,
        "protocol_start": START.isoformat(),
    }
    cfg = parse_config(
        {
            "thresholds": {"vitals": {"confirm_samples": 1, "fever_delay_s": 0}},
            "beds": [
                {**bed, "id": "b1", "thresholds": {"vitals": {"fever_c": 38.5}}},
                {**bed, "id": "b2", "patient": "p-2"},
            ],
        }
    )

    def fever_at(bed_id: str, temp: float) -> list[tuple[str, bool]]:
        b = cfg.bed(bed_id)
        r = VitalsRule(cfg.thresholds_for(bed_id).vitals, b, schedule_for(b, cfg))
        event = VitalSample("w1", bed_id, "mon-1", at(0), {Metric.TEMP_C: temp})
        return conditions(run(r, [event])[1])

    assert fever_at("b1", 38.49) == []  # the bed's own limit
    assert fever_at("b1", 38.5) == [("FEVER", True)]
    assert fever_at("b2", 38.0) == [("FEVER", True)]  # the ward's limit, and its overrides


def probe_off(minutes: float, metric: str = "spo2_pct") -> SourceHealth:
    return SourceHealth("w1", "b1", f"monitor.{metric}", at(minutes), Health.LOST, "probe-off")


def test_probe_off_is_technical_and_clears_when_the_value_returns() -> None:
    r = rule()
    events: list[Event] = [
        probe_off(0),
        sample(0, spo2_pct=None),
        probe_off(1),
        sample(1, spo2_pct=None),
        sample(2),
    ]
    _, out = run(r, events)
    assert conditions(out) == [("PROBE_OFF", True), ("PROBE_OFF", False)]
    assert out[0].kind is Kind.TECHNICAL
    assert out[0].details == {"metrics": ["spo2_pct"]}


def test_a_brief_probe_off_does_not_alarm() -> None:
    r = rule()
    _, out = run(r, [probe_off(0), sample(0.25)])
    assert out == []


def test_probe_off_breaks_an_abnormal_run() -> None:
    r = rule()
    events: list[Event] = [sample(0, spo2_pct=85.0), probe_off(1), sample(2, spo2_pct=85.0)]
    _, out = run(r, events)
    assert "HYPOXIA" not in [c.condition for c in out]


def test_other_health_sources_are_ignored() -> None:
    r = rule()
    state, out = run(r, [SourceHealth("w1", "b1", "pump[p1]", at(0), Health.LOST)])
    assert out == []
    assert state == r.initial()


def tick(minutes: float) -> Tick:
    return Tick(at(minutes))


def test_telemetry_stale_runs_on_the_daemons_clock() -> None:
    r = rule()
    state, out = run(r, [sample(0), tick(1)])
    assert out == []
    state, out = run(r, [tick(2)], state)
    assert conditions(out) == [("TELEMETRY_STALE", True)]
    assert out[0].kind is Kind.TECHNICAL
    state, out = run(r, [tick(3)], state)
    assert out == []  # raised once
    state, out = run(r, [sample(4)], state)
    assert conditions(out) == [("TELEMETRY_STALE", False)]


def test_no_staleness_before_the_protocol() -> None:
    r = rule()
    before = START - timedelta(hours=1)
    state = r.initial()
    for minutes in range(0, 50, 5):
        state, out = r.step(
            state, Tick(before + timedelta(minutes=minutes)), before + timedelta(minutes=minutes)
        )
        assert out == []


def test_state_round_trips_through_json() -> None:
    r = rule()
    state, _ = run(r, [sample(0, temp_c=38.4), sample(5, temp_c=38.4), probe_off(6), tick(7)])
    data = json.loads(json.dumps(r.dump(state)))
    assert r.load(data) == state


def test_factory_builds_every_rule_of_the_watch() -> None:
    cfg = config()
    rules = vital_rules(cfg, cfg.bed("b1"))
    assert [r.name for r in rules] == ["vitals", "news2", "crs", "icans", "neuro_check"]
    engine = RuleEngine({"b1": rules})
    out = []
    for m in (0, 5):
        event = sample(m, temp_c=38.2)
        out.extend(engine.handle(event, event.time))
    assert sorted(c.condition for c in out) == ["CRS_SUSPECTED", "FEVER"]
    snapshot = json.loads(json.dumps(engine.snapshot()))
    again = RuleEngine({"b1": vital_rules(cfg, cfg.bed("b1"))})
    again.restore(snapshot)
    assert again.snapshot() == snapshot


# --------------------------------------------------------------------------- late data

LATE = Noise(delay_s=120, clear_s=600, confirm_samples=2, late_s=900)


def feed(
    track: Track, items: Sequence[tuple[Verdict, float, float]], noise: Noise = LATE
) -> tuple[Track, list[Change]]:
    """``(verdict, measured at, arrived at)`` in minutes, in arrival order."""
    out: list[Change] = []
    for verdict, measured, arrived in items:
        track, changes = judge(track, verdict, at(measured), 0.0, noise, now=at(arrived))
        out.extend(changes)
    return track, out


A, N, B = Verdict.ABNORMAL, Verdict.NORMAL, Verdict.BAND


def test_late_samples_complete_an_onset_at_their_own_time() -> None:
    # Abnormal at 0, 1, 2 arrive after normal samples at 3..10: raised at 2 (delay met), late.
    track, changes = feed(Track(), [(N, m, m) for m in range(3, 11)] + [(A, 0, 10), (A, 1, 10), (A, 2, 10)])
    assert [(c.transition, c.time, c.late_s) for c in changes] == [(Transition.RAISED, at(2), 480.0)]
    assert track.active
    # Normal from 3: clears 600 s later, judged on measurement time.
    track, changes = feed(track, [(N, 13, 13)])
    assert [(c.transition, c.time, c.late_s) for c in changes] == [(Transition.CLEARED, at(13), None)]


def test_a_late_sample_completes_a_clearing() -> None:
    track, _ = feed(Track(), [(A, 0, 0), (A, 2, 2), (N, 3, 3), (B, 14, 14)])
    assert track.active  # the band sample at 14 ended the normal run at 10 min 59 s of it
    # A normal sample measured at 13 arrives late: 3..13 is 600 s of normal, cleared at 13.
    track, changes = feed(track, [(N, 13, 15)])
    assert [(c.transition, c.time, c.late_s) for c in changes] == [(Transition.CLEARED, at(13), 120.0)]
    assert not track.active


def test_a_late_normal_sample_inside_an_onset_undoes_it() -> None:
    track, changes = feed(Track(), [(A, 0, 0), (A, 2, 2)])
    assert [c.transition for c in changes] == [Transition.RAISED]
    track, changes = feed(track, [(N, 1, 3)])
    assert [(c.transition, c.time) for c in changes] == [(Transition.CLEARED, at(1))]
    assert not track.active


@pytest.mark.parametrize(("late_by_s", "judged"), [(900.0, True), (900.001, False)])
def test_lateness_window_edges(late_by_s: float, judged: bool) -> None:
    track, _ = feed(Track(), [(N, 0, 0), (A, 20, 20)])
    arrival = at(18) + timedelta(seconds=late_by_s)
    track, changes = judge(track, A, at(18), 0.0, LATE, now=arrival)
    assert [c.transition for c in changes] == ([Transition.RAISED] if judged else [])
    if judged:
        assert changes[0].time == at(20)
        assert changes[0].late_s == pytest.approx(late_by_s - 120)


def test_in_order_samples_beyond_the_window_are_not_judged() -> None:
    track, changes = feed(Track(), [(A, 0, 20), (A, 2, 20)])  # 20 and 18 min old, window 15
    assert changes == []
    assert track.last_time is None


def test_repeated_and_pre_window_samples_are_ignored() -> None:
    track, _ = feed(Track(), [(A, m, m) for m in range(30)])
    assert track.recent[0].time >= at(29 - 15)
    before = track
    track, changes = feed(track, [(N, 5, 29)])  # older than the window's first verdict
    assert changes == []
    assert track == before
    track, changes = feed(track, [(N, 20, 29)])  # a repeat of a judged time
    assert changes == []
    assert track == before


def test_track_with_window_round_trips() -> None:
    track, _ = feed(Track(), [(A, 0, 0), (A, 2, 2), (N, 3, 3)])
    track, _ = interrupt(track, at(4), Noise(0, 60, 2, 900), now=at(4))
    assert load_track(json.loads(json.dumps(dump_track(track)))) == track
    assert load_track({"active": True}) == Track(active=True)  # a state from before the window


def test_vitals_rule_marks_a_late_fever() -> None:
    r = rule()
    state = r.initial()
    out: list[AlertCandidate] = []
    for event, arrived in [
        *((sample(m, temp_c=37.2), m) for m in range(5, 11)),
        *((sample(m, temp_c=38.4), 10.0) for m in range(3)),
    ]:
        state, candidates = r.step(state, event, at(arrived))
        out.extend(candidates)
    assert conditions(out) == [("FEVER", True)]
    fever = out[0]
    assert fever.time == at(2)
    assert fever.details == {"late_s": 480.0}
    assert fever.message is not None
    assert fever.message.en == "Fever 38.4 °C (limit 38.0 °C). Late data: measured 8 min before it arrived."
    assert fever.message.fr == (
        "Fièvre 38,4 °C (seuil 38,0 °C). Données tardives : mesurées 8 min avant leur arrivée."
    )


def test_late_dropped_names_the_rules_whose_window_is_exceeded() -> None:
    th = VitalThresholds(fever_late_s=60, news2_late_s=120)
    event = VitalSample("w1", "b1", "m", at(0), {Metric.TEMP_C: 38.5, Metric.HR_PER_MIN: 80.0})
    assert late_dropped(event, th, at(1)) == []
    assert late_dropped(event, th, at(1) + timedelta(seconds=1)) == ["fever"]
    assert late_dropped(event, th, at(2) + timedelta(seconds=1)) == ["fever", "news2"]
    assert late_dropped(event, th, at(16)) == ["fever", "tachycardia", "news2"]
