"""NEWS2 scoring (domain.md section 3) and the NEWS2_HIGH rule."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.clinical.news2 import (
    News2,
    News2Rule,
    Param,
    Trigger,
    news2,
    on_supplemental_oxygen,
    score_consciousness,
    score_pulse,
    score_respiration,
    score_spo2_scale1,
    score_spo2_scale2,
    score_supplemental_o2,
    score_systolic,
    score_temperature,
)
from daemon.config import BedConfig, VitalThresholds
from daemon.events import (
    Acvpu,
    AlertCandidate,
    Event,
    Health,
    Kind,
    Metric,
    Observation,
    Priority,
    SourceHealth,
    VitalSample,
)
from tests.helpers import run

T0 = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
BED = BedConfig(
    ward="w1",
    id="b1",
    patient="p-1",
    weight_kg=63,
    height_cm=165,
    protocol_start=datetime(2026, 3, 2, 8, tzinfo=UTC),
)


# domain.md §3 NEWS2: <= 8 scores 3, 9-11 scores 1, 12-20 scores 0, 21-24 scores 2, >= 25 scores 3.
@pytest.mark.parametrize(
    ("value", "score"),
    [
        (8, 3),
        (8.01, 1),
        (9, 1),
        (11, 1),
        (11.01, 0),
        (12, 0),
        (20, 0),
        (20.01, 2),
        (21, 2),
        (24, 2),
        (24.01, 3),
        (25, 3),
    ],
)
def test_respiration(value: float, score: int) -> None:
    assert score_respiration(value) == score


# domain.md §3 NEWS2 scale 1: <= 91 scores 3, 92-93 scores 2, 94-95 scores 1, >= 96 scores 0.
@pytest.mark.parametrize(
    ("value", "score"),
    [(91, 3), (91.01, 2), (92, 2), (93, 2), (93.01, 1), (94, 1), (95, 1), (95.01, 0), (96, 0), (100, 0)],
)
def test_spo2_scale1(value: float, score: int) -> None:
    assert score_spo2_scale1(value) == score


@pytest.mark.parametrize(
    ("value", "on_oxygen", "score"),
    [
        # domain.md §3 NEWS2 scale 2: below 88 % the score does not depend on oxygen.
        *(
            (v, o2, s)
            for v, s in [(83, 3), (84, 2), (85, 2), (86, 1), (87, 1), (88, 0)]
            for o2 in (False, True)
        ),
        (83.99, True, 2),  # between bands: above 83 scores as 84-85
        (85.99, False, 1),
        (87.99, False, 0),
        # 88-92 scores 0 on air and on oxygen; >= 93 on air scores 0.
        (92, True, 0),
        (92, False, 0),
        (93, False, 0),
        (97, False, 0),
        (100, False, 0),
        # On oxygen: 93-94 scores 1, 95-96 scores 2, >= 97 scores 3 (over-oxygenation).
        (92.01, True, 1),
        (93, True, 1),
        (94, True, 1),
        (94.01, True, 2),
        (95, True, 2),
        (96, True, 2),
        (96.01, True, 3),
        (97, True, 3),
        (100, True, 3),
    ],
)
def test_spo2_scale2(value: float, on_oxygen: bool, score: int) -> None:
    """RCP 2017 scale 2 (domain.md section 3), each band boundary."""
    assert score_spo2_scale2(value, on_oxygen) == score


def test_scale2_in_the_aggregate() -> None:
    air = {Metric.SPO2_PCT: 88.0}
    assert news2(air, False, None).parts[Param.SPO2] == 3  # scale 1
    assert news2(air, False, None, spo2_scale=2).parts[Param.SPO2] == 0
    high = {Metric.SPO2_PCT: 97.0}
    on_o2 = news2(high, True, None, spo2_scale=2)
    assert on_o2.parts[Param.SPO2] == 3
    assert on_o2.total == 5
    # Oxygen status unknown: scored as air, and named as missing (the total is a lower bound).
    unknown = news2(high, None, None, spo2_scale=2)
    assert unknown.parts[Param.SPO2] == 0
    assert Param.SUPPLEMENTAL_O2 in unknown.missing


# domain.md §3 NEWS2: <= 90 scores 3, 91-100 scores 2, 101-110 scores 1, 111-219 scores 0, >= 220 scores 3.
@pytest.mark.parametrize(
    ("value", "score"),
    [
        (90, 3),
        (90.01, 2),
        (91, 2),
        (100, 2),
        (100.01, 1),
        (101, 1),
        (110, 1),
        (110.01, 0),
        (111, 0),
        (219, 0),
        (219.99, 0),
        (220, 3),
    ],
)
def test_systolic(value: float, score: int) -> None:
    assert score_systolic(value) == score


@pytest.mark.parametrize(
    ("value", "score"),
    # domain.md §3 NEWS2: <= 40 scores 3, 41-50 scores 1, 51-90 scores 0, 91-110 scores 1,
    # 111-130 scores 2, >= 131 scores 3.
    [
        (40, 3),
        (40.01, 1),
        (41, 1),
        (50, 1),
        (50.01, 0),
        (51, 0),
        (90, 0),
        (90.01, 1),
        (91, 1),
        (110, 1),
        (110.01, 2),
        (111, 2),
        (130, 2),
        (130.01, 3),
        (131, 3),
    ],
)
def test_pulse(value: float, score: int) -> None:
    assert score_pulse(value) == score


@pytest.mark.parametrize(
    ("value", "score"),
    # domain.md §3 NEWS2: <= 35.0 scores 3, 35.1-36.0 scores 1, 36.1-38.0 scores 0, 38.1-39.0
    # scores 1, >= 39.1 scores 2.
    [
        (35.0, 3),
        (35.01, 1),
        (35.1, 1),
        (36.0, 1),
        (36.01, 0),
        (36.1, 0),
        (38.0, 0),
        (38.01, 1),
        (38.1, 1),
        (38.2, 1),
        (39.0, 1),
        (39.01, 2),
        (39.1, 2),
    ],
)
def test_temperature(value: float, score: int) -> None:
    assert score_temperature(value) == score


@pytest.mark.parametrize(
    ("acvpu", "score"),
    # domain.md §3 NEWS2: Alert 0; new Confusion, Voice, Pain, Unresponsive 3.
    [(Acvpu.ALERT, 0), (Acvpu.NEW_CONFUSION, 3), (Acvpu.VOICE, 3), (Acvpu.PAIN, 3), (Acvpu.UNRESPONSIVE, 3)],
)
def test_consciousness(acvpu: Acvpu, score: int) -> None:
    assert score_consciousness(acvpu) == score


def test_supplemental_oxygen() -> None:
    """domain.md §3 NEWS2: on supplemental O2 scores 2, air 0."""
    assert (score_supplemental_o2(True), score_supplemental_o2(False)) == (2, 0)


def test_case_fever_scores_one() -> None:
    """domain.md section 0: 38.2 °C scores temperature 1 and nothing else."""
    values = {
        Metric.TEMP_C: 38.2,
        Metric.SBP_MMHG: 124,
        Metric.HR_PER_MIN: 88,
        Metric.SPO2_PCT: 97,
        Metric.RR_PER_MIN: 16,
    }
    result = news2(values, on_oxygen=False, acvpu=Acvpu.ALERT)
    assert result.total == 1
    assert result.missing == ()
    assert result.trigger is None


def test_triggers() -> None:
    assert news2({Metric.SBP_MMHG: 88}, None, None).trigger is Trigger.SINGLE_PARAMETER_3
    five = news2({Metric.SBP_MMHG: 95, Metric.HR_PER_MIN: 115, Metric.TEMP_C: 38.5}, None, None)
    assert five.total == 5
    assert five.trigger is Trigger.AGGREGATE_5
    seven = news2({Metric.SBP_MMHG: 88, Metric.HR_PER_MIN: 115, Metric.TEMP_C: 39.5}, True, None)
    assert seven.total == 9
    assert seven.trigger is Trigger.AGGREGATE_7


def test_missing_parameters_are_named() -> None:
    result = news2({Metric.TEMP_C: 37.0}, None, None)
    assert Param.CONSCIOUSNESS in result.missing
    assert Param.SUPPLEMENTAL_O2 in result.missing
    assert Param.TEMPERATURE not in result.missing


def vitals(minutes: float, **values: float) -> VitalSample:
    normal = {"temp_c": 36.8, "sbp_mmhg": 124.0, "hr_per_min": 78.0, "spo2_pct": 97.0, "rr_per_min": 16.0}
    merged = {Metric(k): v for k, v in {**normal, **values}.items()}
    return VitalSample("w1", "b1", "mon", T0 + timedelta(minutes=minutes), merged)


def test_rule_raises_escalates_and_clears() -> None:
    r = News2Rule(VitalThresholds(), BED)
    state, out = run(r, [vitals(0, sbp_mmhg=88), vitals(5, sbp_mmhg=88)])
    assert [(c.present, c.priority, dict(c.details)) for c in out] == [
        (True, Priority.MEDIUM, {"trigger": "single_parameter_3", "spo2_scale": 1})
    ]
    assert out[0].message is not None
    assert "partial" in out[0].message.en  # no O2 or consciousness observation
    obs = Observation(
        "w1", "b1", T0 + timedelta(minutes=6), o2_device="facemask", o2_flow_l_per_min=8, acvpu=Acvpu.VOICE
    )
    state, out = run(r, [obs], state)
    assert [(c.present, c.priority, dict(c.details)) for c in out] == [
        (True, Priority.HIGH, {"trigger": "aggregate_7", "spo2_scale": 1})
    ]
    back = Observation("w1", "b1", T0 + timedelta(minutes=7), o2_device="air", acvpu=Acvpu.ALERT)
    events: list[Event] = [back, *(vitals(m) for m in range(10, 40, 5))]
    state, out = run(r, events, state)
    assert [c.present for c in out] == [True, False]  # de-escalates, then clears after 15 min
    assert out[-1].time == T0 + timedelta(minutes=25)


def test_one_artifact_does_not_trigger() -> None:
    r = News2Rule(VitalThresholds(), BED)
    _, out = run(r, [vitals(0), vitals(5, spo2_pct=85), vitals(10)])
    assert out == []


def test_old_values_do_not_count() -> None:
    r = News2Rule(VitalThresholds(news2_max_age_s=600), BED)
    state, _ = run(r, [vitals(0, sbp_mmhg=88)])
    assert r.current(state, T0 + timedelta(minutes=5)).parts[Param.SYSTOLIC] == 3
    assert Param.SYSTOLIC in r.current(state, T0 + timedelta(minutes=11)).missing


def test_probe_off_drops_the_metric() -> None:
    r = News2Rule(VitalThresholds(), BED)
    state, _ = run(r, [vitals(0)])
    off = SourceHealth("w1", "b1", "monitor.spo2_pct", T0 + timedelta(minutes=1), Health.LOST, "probe-off")
    state, _ = run(r, [off], state)
    assert Metric.SPO2_PCT not in state.values


@pytest.mark.parametrize("device", ["nasal_cannula", "air"])
def test_state_round_trips(device: str) -> None:
    r = News2Rule(VitalThresholds(), BED)
    obs = Observation("w1", "b1", T0, o2_device=device, acvpu=Acvpu.ALERT)
    state, _ = run(r, [obs, vitals(0, sbp_mmhg=88), vitals(5, sbp_mmhg=88)])
    assert state.on_oxygen == (device != "air", T0)
    assert r.load(json.loads(json.dumps(r.dump(state)))) == state


SCALE2_BED = BED.model_copy(update={"news2_spo2_scale": 2})


def test_rule_on_scale2_says_so() -> None:
    r = News2Rule(VitalThresholds(), SCALE2_BED)
    oxygen = Observation("w1", "b1", T0 - timedelta(minutes=1), o2_device="nasal_cannula", acvpu=Acvpu.ALERT)
    _, out = run(r, [oxygen, vitals(0, spo2_pct=98), vitals(1, spo2_pct=98)])
    assert [(c.present, dict(c.details)) for c in out] == [
        (True, {"trigger": "aggregate_5", "spo2_scale": 2})
    ]
    assert out[0].message is not None
    assert "(SpO2 scale 2)" in out[0].message.en
    _, out = run(r, [vitals(0, spo2_pct=90), vitals(1, spo2_pct=88)])
    assert out == []  # 88-92 % scores 0 on scale 2


def test_late_vitals_are_scored_at_their_own_time() -> None:
    r = News2Rule(VitalThresholds(), BED)
    state, out = run(r, [vitals(m) for m in range(5, 11)])
    assert out == []
    # Systolic 88 (scores 3) measured at 0 and 1, arriving at 10: raised at 1, marked late.
    for minute in (0, 1):
        state, candidates = r.step(state, vitals(minute, sbp_mmhg=88), T0 + timedelta(minutes=10))
        out.extend(candidates)
    assert [(c.present, c.time, dict(c.details)) for c in out] == [
        (True, T0 + timedelta(minutes=1), {"trigger": "single_parameter_3", "spo2_scale": 1, "late_s": 540.0})
    ]
    # The state keeps the window and round-trips through JSON.
    assert r.load(json.loads(json.dumps(r.dump(state)))) == state
    # The latest systolic is still the 124 measured at 10.
    assert state.values[Metric.SBP_MMHG] == (124.0, T0 + timedelta(minutes=10))


@pytest.mark.parametrize(("late_by_s", "scored"), [(3600.0, True), (3600.5, False)])
def test_news2_lateness_window_edges(late_by_s: float, scored: bool) -> None:
    r = News2Rule(VitalThresholds(), BED)
    state, _ = run(r, [vitals(0), vitals(60)])
    arrival = T0 + timedelta(minutes=58, seconds=late_by_s)
    state, _ = r.step(state, vitals(58, sbp_mmhg=88), arrival)
    state, out = r.step(state, vitals(59, sbp_mmhg=88), arrival)
    assert bool(out) is scored


# --------------------------------------------------------------------------- trigger and time edges


def parts(*scores: int) -> dict[Param, int]:
    return dict(zip(Param, scores, strict=False))


@pytest.mark.parametrize(
    ("scores", "trigger"),
    [
        # domain.md §3 NEWS2 triggers: total 0-4 low risk unless one parameter scores 3;
        # 5-6 urgent review; >= 7 emergency assessment. The aggregate outranks a single 3.
        ((), None),
        ((2, 2), None),  # total 4, no 3
        ((2, 2, 0, 0, 0, 0, 0), None),
        ((3,), Trigger.SINGLE_PARAMETER_3),  # a single 3 on its own
        ((0, 0, 0, 0, 0, 0, 3), Trigger.SINGLE_PARAMETER_3),  # whichever parameter it is
        ((3, 1), Trigger.SINGLE_PARAMETER_3),  # total 4 with a 3
        ((2, 2, 1), Trigger.AGGREGATE_5),  # total 5
        ((3, 2), Trigger.AGGREGATE_5),  # total 5 with a 3: the aggregate decides
        ((2, 2, 2), Trigger.AGGREGATE_5),  # total 6
        ((2, 2, 2, 1), Trigger.AGGREGATE_7),  # total 7
        ((3, 3, 1), Trigger.AGGREGATE_7),
        ((3, 3, 2, 3, 3, 3, 3), Trigger.AGGREGATE_7),  # maximum 20
    ],
)
def test_trigger_edges(scores: tuple[int, ...], trigger: Trigger | None) -> None:
    result = News2(parts(*scores), ())
    assert result.total == sum(scores)
    assert result.trigger is trigger


@pytest.mark.parametrize(
    ("trigger", "priority"),
    # news2.py docstring (IEC 60601-1-8, domain.md §4): >= 7 high, 5-6 and a single 3 medium.
    [
        (Trigger.AGGREGATE_7, Priority.HIGH),
        (Trigger.AGGREGATE_5, Priority.MEDIUM),
        (Trigger.SINGLE_PARAMETER_3, Priority.MEDIUM),
    ],
)
def test_trigger_priorities_in_the_alert(trigger: Trigger, priority: Priority) -> None:
    values = {
        Trigger.AGGREGATE_7: {"sbp_mmhg": 88.0, "hr_per_min": 115.0, "temp_c": 39.5},  # 3 + 2 + 2
        Trigger.AGGREGATE_5: {"sbp_mmhg": 95.0, "hr_per_min": 115.0, "temp_c": 38.5},  # 2 + 2 + 1
        Trigger.SINGLE_PARAMETER_3: {"sbp_mmhg": 88.0},
    }[trigger]
    r = News2Rule(VitalThresholds(), BED)
    _, out = run(r, [vitals(0, **values), vitals(1, **values)])
    assert [(c.present, c.priority, c.details["trigger"]) for c in out] == [(True, priority, trigger.value)]
    total = {Trigger.AGGREGATE_7: 7.0, Trigger.AGGREGATE_5: 5.0, Trigger.SINGLE_PARAMETER_3: 3.0}[trigger]
    assert out[0].value == total


@pytest.mark.parametrize(("after", "raised"), [(59.999, False), (60.0, True)])
def test_news2_delay_edges(after: float, raised: bool) -> None:
    """news2_delay_s = 60 s (config.py, site choice), with 2 consecutive evaluations."""
    r = News2Rule(VitalThresholds(), BED)
    second = vitals(after / 60, sbp_mmhg=88)
    _, out = run(r, [vitals(0, sbp_mmhg=88), second])
    assert [(c.present, c.time) for c in out] == ([(True, second.time)] if raised else [])


@pytest.mark.parametrize(("after", "cleared"), [(899.999, False), (900.0, True)])
def test_news2_clear_edges(after: float, cleared: bool) -> None:
    """news2_clear_s = 900 s (config.py, site choice) of evaluations below every trigger."""
    r = News2Rule(VitalThresholds(), BED)
    state, out = run(r, [vitals(0, sbp_mmhg=88), vitals(1, sbp_mmhg=88)])
    assert [c.present for c in out] == [True]
    last = vitals(2 + after / 60)
    _, out = run(r, [vitals(2), last], state)
    assert [(c.present, c.time) for c in out] == ([(False, last.time)] if cleared else [])


@pytest.mark.parametrize(
    ("age_s", "fresh", "max_age_s"),
    [
        (14_400.0, True, 14_400.0),
        (14_400.000001, False, 14_400.0),  # a microsecond: the clock's resolution
        (14_400.001, False, 14_400.0),
        # Longer than a timedelta holds, or than datetimes reach back: every value is fresh.
        (365 * 86_400.0, True, float("inf")),
        (365 * 86_400.0, True, 1e18),
        (365 * 86_400.0, True, 7e10),
    ],
)
def test_news2_max_age_edges(age_s: float, fresh: bool, max_age_s: float) -> None:
    """news2_max_age_s = 4 h (config.py, site choice): older values and observations are missing."""
    r = News2Rule(VitalThresholds(news2_max_age_s=max_age_s), BED)
    obs = Observation("w1", "b1", T0, o2_device="nasal_cannula", acvpu=Acvpu.VOICE)
    state, _ = run(r, [obs, vitals(0)])
    result = r.current(state, T0 + timedelta(seconds=age_s))
    known = {Param.SPO2, Param.SUPPLEMENTAL_O2, Param.CONSCIOUSNESS, Param.SYSTOLIC}
    if fresh:
        assert result.missing == ()
        assert (result.parts[Param.SUPPLEMENTAL_O2], result.parts[Param.CONSCIOUSNESS]) == (2, 3)
    else:
        assert known <= set(result.missing)
        assert result.parts == {}


def test_messages_name_the_score_the_threes_and_the_guidance() -> None:
    """The action quoted for each trigger is domain.md §3's; a partial score says what is missing."""
    r = News2Rule(VitalThresholds(), BED)
    known = Observation("w1", "b1", T0 - timedelta(minutes=1), o2_device="air", acvpu=Acvpu.ALERT)
    events: list[Event] = [
        known,
        vitals(0, sbp_mmhg=88),
        vitals(1, sbp_mmhg=88),  # 3: single parameter
        vitals(2, sbp_mmhg=88, hr_per_min=115, temp_c=38.5),  # 3 + 2 + 1 = 6
        vitals(3, sbp_mmhg=88, hr_per_min=115, temp_c=39.5),  # 3 + 2 + 2 = 7
        *(vitals(m) for m in range(4, 20)),  # 0 from minute 4: cleared 15 min later
    ]
    _, out = run(r, events)
    got = [(c.present, c.time - T0, c.value, c.unit, c.priority, c.details.get("trigger")) for c in out]
    minute = timedelta(minutes=1)
    assert got == [
        (True, minute, 3.0, "{score}", Priority.MEDIUM, "single_parameter_3"),
        (True, 2 * minute, 6.0, "{score}", Priority.MEDIUM, "aggregate_5"),
        (True, 3 * minute, 7.0, "{score}", Priority.HIGH, "aggregate_7"),
        (False, 19 * minute, 0.0, "{score}", Priority.MEDIUM, None),
    ]
    assert out[-1].details == {}
    assert [(c.message.en, c.message.fr) for c in out if c.message is not None] == [
        (
            "NEWS2 3; scoring 3: systolic. NEWS2 guidance: urgent ward-based response.",
            "NEWS2 3 ; à 3 : systolic. Recommandation NEWS2 : réponse urgente par l'équipe du service.",
        ),
        (
            "NEWS2 6; scoring 3: systolic. NEWS2 guidance: urgent review within 1 h, observations at least hourly.",
            "NEWS2 6 ; à 3 : systolic. Recommandation NEWS2 : avis médical urgent sous 1 h, "
            "surveillance au moins horaire.",
        ),
        (
            "NEWS2 7; scoring 3: systolic. NEWS2 guidance: emergency assessment within 30 min, "
            "continuous monitoring.",
            "NEWS2 7 ; à 3 : systolic. Recommandation NEWS2 : évaluation en urgence sous 30 min, "
            "surveillance continue.",
        ),
        ("NEWS2 back below the triggers: 0.", "NEWS2 revenu sous les seuils d'alerte : 0."),
    ]


def test_partial_and_scale2_messages() -> None:
    r = News2Rule(VitalThresholds(), BED)
    _, out = run(r, [vitals(0, sbp_mmhg=88), vitals(1, sbp_mmhg=88)])
    assert out[0].message is not None
    assert (out[0].message.en, out[0].message.fr) == (
        "NEWS2 3 (partial: no recent supplemental_o2, consciousness); scoring 3: systolic. "
        "NEWS2 guidance: urgent ward-based response.",
        "NEWS2 3 (partiel : pas de valeur récente pour supplemental_o2, consciousness) ; à 3 : systolic. "
        "Recommandation NEWS2 : réponse urgente par l'équipe du service.",
    )
    r = News2Rule(VitalThresholds(), SCALE2_BED)
    oxygen = Observation("w1", "b1", T0 - timedelta(minutes=1), o2_device="nasal_cannula", acvpu=Acvpu.ALERT)
    _, out = run(r, [oxygen, vitals(0, spo2_pct=98), vitals(1, spo2_pct=98)])
    assert out[0].message is not None
    assert (out[0].message.en, out[0].message.fr) == (
        "NEWS2 5 (SpO2 scale 2); scoring 3: spo2. NEWS2 guidance: urgent review within 1 h, "
        "observations at least hourly.",
        "NEWS2 5 (SpO2 échelle 2) ; à 3 : spo2. Recommandation NEWS2 : avis médical urgent sous 1 h, "
        "surveillance au moins horaire.",
    )


def test_partial_clear_message() -> None:
    r = News2Rule(VitalThresholds(), BED)
    _, out = run(r, [vitals(0, sbp_mmhg=88), vitals(1, sbp_mmhg=88), *(vitals(m) for m in range(2, 18))])
    assert [(c.present, c.time - T0) for c in out] == [
        (True, timedelta(minutes=1)),
        (False, timedelta(minutes=17)),
    ]
    assert out[1].message is not None
    assert (out[1].message.en, out[1].message.fr) == (
        "NEWS2 back below the triggers: 0 (partial: no recent supplemental_o2, consciousness).",
        "NEWS2 revenu sous les seuils d'alerte : 0 (partiel : pas de valeur récente pour supplemental_o2, "
        "consciousness).",
    )


def test_a_late_normal_input_undoing_an_onset_reports_the_score_at_its_own_time() -> None:
    """Raised at 1 min from 88 mmHg at 0 and 1; a normal sample at 0.5 min, arriving at 2 min,
    breaks the run: cleared at 0.5 min with the score of that time (0), marked late."""
    r = News2Rule(VitalThresholds(), BED)
    state, out = run(r, [vitals(0, sbp_mmhg=88), vitals(1, sbp_mmhg=88)])
    assert [c.present for c in out] == [True]
    state, late = r.step(state, vitals(0.5), T0 + timedelta(minutes=2))
    assert [(c.present, c.time, c.value, dict(c.details)) for c in late] == [
        (False, T0 + timedelta(seconds=30), 0.0, {"late_s": 90.0})
    ]
    assert late[0].message is not None
    # Scored from the inputs up to 0.5 min (0 and 0.5): only oxygen and consciousness are missing.
    assert late[0].message.en == (
        "NEWS2 back below the triggers: 0 (partial: no recent supplemental_o2, consciousness). "
        "Late data: measured 2 min before it arrived."
    )
    assert not state.track.active
    # The same time again changes nothing.
    _, again = r.step(state, vitals(0.5, sbp_mmhg=88), T0 + timedelta(minutes=3))
    assert list(again) == []


@pytest.mark.parametrize(
    ("fields", "on_oxygen"),
    [
        ({"o2_device": "air"}, False),
        ({"o2_device": "nasal_cannula"}, True),
        ({"o2_device": "ventilator", "o2_flow_l_per_min": 0.0}, True),  # the device decides
        ({"o2_flow_l_per_min": 0.0}, False),
        ({"o2_flow_l_per_min": 0.5}, True),
        ({"acvpu": Acvpu.ALERT}, None),
    ],
)
def test_on_supplemental_oxygen(fields: dict[str, Any], on_oxygen: bool | None) -> None:
    assert on_supplemental_oxygen(Observation("w1", "b1", T0, **fields)) is on_oxygen


def test_an_older_observation_does_not_replace_a_newer_one() -> None:
    """The latest of each input counts; on equal times the later arrival wins."""
    r = News2Rule(VitalThresholds(), BED)
    ten = T0 + timedelta(minutes=10)
    state, _ = run(r, [Observation("w1", "b1", ten, o2_device="air", acvpu=Acvpu.ALERT)])
    older = Observation("w1", "b1", T0 + timedelta(minutes=5), o2_device="facemask", acvpu=Acvpu.VOICE)
    state, _ = r.step(state, older, ten)
    assert (state.on_oxygen, state.acvpu) == ((False, ten), (Acvpu.ALERT, ten))
    state, _ = r.step(state, Observation("w1", "b1", ten, o2_device="facemask", acvpu=Acvpu.PAIN), ten)
    assert (state.on_oxygen, state.acvpu) == ((True, ten), (Acvpu.PAIN, ten))
    state, _ = r.step(state, vitals(10, sbp_mmhg=100), ten)
    state, _ = r.step(state, vitals(10, sbp_mmhg=105), ten)
    assert state.values[Metric.SBP_MMHG] == (105.0, ten)


def test_health_events_other_than_a_probe_off_are_ignored() -> None:
    r = News2Rule(VitalThresholds(), BED)
    state, _ = run(r, [vitals(0)])
    for event in (
        SourceHealth("w1", "b1", "monitor.spo2_pct", T0 + timedelta(minutes=1), Health.CONNECTED),
        SourceHealth("w1", "b1", "pump[p1]", T0 + timedelta(minutes=1), Health.LOST),
    ):
        after, out = r.step(state, event, event.time)
        assert (after, list(out)) == (state, [])


def test_saved_states_load() -> None:
    r = News2Rule(VitalThresholds(), BED)
    assert r.load({}) == r.initial()
    off = SourceHealth("w1", "b1", "monitor.spo2_pct", T0 + timedelta(minutes=2), Health.LOST, "probe-off")
    obs = Observation("w1", "b1", T0 + timedelta(minutes=1), o2_flow_l_per_min=3.0, acvpu=Acvpu.VOICE)
    state, _ = run(r, [vitals(0, sbp_mmhg=88), obs, off, vitals(3, sbp_mmhg=88)])
    assert any(item.blind is Metric.SPO2_PCT and not item.scored for item in state.recent)
    data = json.loads(json.dumps(r.dump(state)))
    assert r.load(data) == state
    # Inputs without a time are dropped; so are oxygen and consciousness without one.
    data["recent"].append({"values": {"spo2_pct": 80.0}})
    data["on_oxygen"] = [True, None]
    data["acvpu"] = ["V", None]
    loaded = r.load(data)
    assert (loaded.recent, loaded.on_oxygen, loaded.acvpu) == (state.recent, None, None)


def test_an_observation_at_the_time_of_the_last_sample_is_not_late() -> None:
    r = News2Rule(VitalThresholds(), BED)
    state, out = run(r, [vitals(0, sbp_mmhg=88), vitals(1, sbp_mmhg=88)])
    assert state.trigger is Trigger.SINGLE_PARAMETER_3
    # Facemask (2) and voice (3) with systolic 88 (3): 8, at the time of the last sample.
    obs = Observation("w1", "b1", T0 + timedelta(minutes=1), o2_device="facemask", acvpu=Acvpu.VOICE)
    state, escalated = r.step(state, obs, T0 + timedelta(minutes=1))
    out = list(escalated)
    assert [(c.present, c.value, dict(c.details), c.ward, c.kind) for c in out] == [
        (True, 8.0, {"trigger": "aggregate_7", "spo2_scale": 1}, "w1", Kind.PHYSIOLOGICAL)
    ]
    assert out[0].message is not None
    assert out[0].message.en.startswith("NEWS2 8; scoring 3: systolic, consciousness. ")
    assert out[0].message.fr.startswith("NEWS2 8 ; à 3 : systolic, consciousness. ")
    assert state.trigger is Trigger.AGGREGATE_7
    # Cleared: the trigger is forgotten, so the next onset is announced afresh.
    back = Observation("w1", "b1", T0 + timedelta(minutes=2), o2_device="air", acvpu=Acvpu.ALERT)
    state, _ = run(r, [back, *(vitals(m) for m in range(2, 19))], state)
    assert (state.track.active, state.trigger) == (False, None)


def test_an_aggregate_without_a_three_names_none() -> None:
    r = News2Rule(VitalThresholds(), BED)
    values = {"sbp_mmhg": 95.0, "hr_per_min": 115.0, "temp_c": 38.5}  # 2 + 2 + 1
    _, out = run(r, [vitals(0, **values), vitals(1, **values)])
    assert out[0].message is not None
    assert out[0].message.en.startswith("NEWS2 5 (partial: no recent supplemental_o2, consciousness). NEWS2")
    assert out[0].message.fr == (
        "NEWS2 5 (partiel : pas de valeur récente pour supplemental_o2, consciousness). "
        "Recommandation NEWS2 : avis médical urgent sous 1 h, surveillance au moins horaire."
    )


def test_a_state_saved_before_the_window_ignores_older_inputs() -> None:
    r = News2Rule(VitalThresholds(), BED)
    legacy = r.load({"track": {"active": False, "last_time": "2026-03-02T20:10:00Z"}})
    assert r.step(legacy, vitals(5, sbp_mmhg=88), T0 + timedelta(minutes=11)) == (legacy, [])
    # Its last evaluation becomes the window's base: an input at exactly that time is a
    # repeat of what the base holds, ignored and not kept in the window.
    state, _ = r.step(legacy, vitals(11), T0 + timedelta(minutes=11))
    assert [item.time for item in state.recent] == [T0 + timedelta(minutes=11)]
    assert r.step(state, vitals(10, sbp_mmhg=88), T0 + timedelta(minutes=12)) == (state, [])
    # And an input older than that is older than anything the window holds: ignored too.
    assert r.step(state, vitals(5, sbp_mmhg=88), T0 + timedelta(minutes=12)) == (state, [])


# --------------------------------------------------------------------------- announcements and late inputs

MINUTE = timedelta(minutes=1)


def late_view(out: Sequence[AlertCandidate]) -> list[tuple[bool, datetime, str | None, Any]]:
    return [(c.present, c.time, c.details.get("trigger"), c.details.get("late_s")) for c in out]


def test_a_trigger_is_announced_once_while_it_holds() -> None:
    r = News2Rule(VitalThresholds(), BED)
    _, out = run(r, [vitals(m, sbp_mmhg=88) for m in range(6)])
    assert late_view(out) == [(True, T0 + MINUTE, "single_parameter_3", None)]


def test_a_late_observation_at_the_time_of_an_input_escalates_at_that_time() -> None:
    """Raised at 1 min (systolic 88: 3); an observation measured at 1 min (facemask: 2, voice: 3)
    arrives at 3 min: escalated to >= 7 at 1 min, marked late; the raise is not repeated."""
    r = News2Rule(VitalThresholds(), BED)
    state, out = run(r, [vitals(0, sbp_mmhg=88), vitals(1, sbp_mmhg=88), vitals(2, sbp_mmhg=88)])
    assert late_view(out) == [(True, T0 + MINUTE, "single_parameter_3", None)]
    obs = Observation("w1", "b1", T0 + MINUTE, o2_device="facemask", acvpu=Acvpu.VOICE)
    _, late = r.step(state, obs, T0 + 3 * MINUTE)
    assert late_view(late) == [(True, T0 + MINUTE, "aggregate_7", 120.0)]
    assert [c.value for c in late] == [8.0]


def test_a_late_input_completing_an_onset_raises_at_the_completing_inputs_time() -> None:
    """Systolic 88 at 1 and 1.5 min (30 s apart, delay 60 s); a late 88 at 0 completes the
    onset at 1 min, the first input one delay after the run's start."""
    r = News2Rule(VitalThresholds(), BED)
    state, out = run(r, [vitals(1, sbp_mmhg=88), vitals(1.5, sbp_mmhg=88)])
    assert out == []
    _, late = r.step(state, vitals(0, sbp_mmhg=88), T0 + 2 * MINUTE)
    assert late_view(late) == [(True, T0 + MINUTE, "single_parameter_3", 60.0)]


def test_a_late_input_that_changes_nothing_reports_nothing() -> None:
    """Raised at 1 min and cleared at 17 min; a late 88 at 0.5 min leaves both where they were."""
    r = News2Rule(VitalThresholds(), BED)
    events: list[Event] = [vitals(0, sbp_mmhg=88), vitals(1, sbp_mmhg=88), *(vitals(m) for m in range(2, 19))]
    state, out = run(r, events)
    assert [(c.present, c.time) for c in out] == [(True, T0 + MINUTE), (False, T0 + 17 * MINUTE)]
    _, late = r.step(state, vitals(0.5, sbp_mmhg=88), T0 + 18 * MINUTE)
    assert list(late) == []


def test_a_late_input_undoing_a_clearing_raises_again_at_its_own_time() -> None:
    """Raised at 1 min, cleared at 17 min after 15 min below the triggers; a late 88 at 10.5 min
    breaks that run: raised again at 10.5 min with the trigger last announced, marked late."""
    r = News2Rule(VitalThresholds(), BED)
    events: list[Event] = [vitals(0, sbp_mmhg=88), vitals(1, sbp_mmhg=88), *(vitals(m) for m in range(2, 18))]
    state, out = run(r, events)
    assert [(c.present, c.time) for c in out] == [(True, T0 + MINUTE), (False, T0 + 17 * MINUTE)]
    state, late = r.step(state, vitals(10.5, sbp_mmhg=88), T0 + 18 * MINUTE)
    assert late_view(late) == [(True, T0 + 10.5 * MINUTE, "single_parameter_3", 450.0)]
    assert [c.value for c in late] == [3.0]
    assert state.track.active


def test_only_the_changes_a_late_input_moves_are_reported() -> None:
    """news2_max_age_s = 600 s (a site's choice): a pulse of 115 (2) at 0 ages out at 10 min
    10 s. A late pulse of 115 at 0.5 min keeps it scored until 10.5 min: the common onset at
    2 min (5: aggregate) is not repeated; the step down to the systolic's 3 is reported at
    11.5 min, the first input after the late pulse aged out."""
    r = News2Rule(VitalThresholds(news2_max_age_s=600), BED)

    def sample(minutes: float, values: dict[Metric, float]) -> VitalSample:
        return VitalSample("w1", "b1", "mon", T0 + timedelta(minutes=minutes), values)

    low = {Metric.SBP_MMHG: 88.0}
    state, out = run(
        r,
        [
            sample(0, {Metric.SBP_MMHG: 88.0, Metric.HR_PER_MIN: 115.0}),
            sample(2, low),
            sample(10.5, low),
            sample(11.5, low),
        ],
    )
    assert late_view(out) == [
        (True, T0 + 2 * MINUTE, "aggregate_5", None),
        (True, T0 + 10.5 * MINUTE, "single_parameter_3", None),
    ]
    _, late = r.step(state, sample(0.5, {Metric.HR_PER_MIN: 115.0}), T0 + 12 * MINUTE)
    assert late_view(late) == [(True, T0 + 11.5 * MINUTE, "single_parameter_3", 30.0)]


def test_the_window_keeps_exactly_the_inputs_of_the_last_news2_late_s() -> None:
    """news2_late_s = 3600 s: an input exactly that old stays in the window, an older one is
    folded into the base."""
    r = News2Rule(VitalThresholds(), BED)
    state, _ = run(r, [vitals(0), vitals(10)])
    state, _ = r.step(state, vitals(60), T0 + 70 * MINUTE)
    assert [item.time for item in state.recent] == [T0 + 10 * MINUTE, T0 + 60 * MINUTE]
    assert state.base is not None
    assert state.base.track.last_time == T0


def test_a_probe_off_reported_after_the_window_still_takes_the_value_out() -> None:
    """A probe-off is not scored, so it has no lateness limit; arriving after every input of the
    window has left it, it empties the window into the base."""
    r = News2Rule(VitalThresholds(), BED)
    state, _ = run(r, [vitals(0), vitals(5)])
    off = SourceHealth("w1", "b1", "monitor.spo2_pct", T0 + 6 * MINUTE, Health.LOST, "probe-off")
    state, out = r.step(state, off, T0 + 3 * timedelta(hours=1))
    assert list(out) == []
    assert Metric.SPO2_PCT not in state.values
    assert state.recent == ()
    assert state.base is not None
    assert Metric.SPO2_PCT not in state.base.values


def test_window_hooks_keep_what_they_are_not_given_and_refuse_an_entry_without_a_time() -> None:
    """``daemon.rules.Windowed``: names not given are kept; a stored entry must have a time."""
    r = News2Rule(VitalThresholds(), BED)
    state, _ = run(r, [vitals(0), vitals(5)])
    assert r.with_windows(state, {}) == state
    assert r.with_windows(state, {"inputs": ()}).recent == ()
    with pytest.raises(ValueError, match=r"window entry without a time: \{'values'"):
        r.load_entry("inputs", {"values": {"spo2_pct": 97.0}})


def test_an_unbounded_lateness_window_is_a_weeks_as_for_the_vital_signs() -> None:
    """``news2_late_s`` takes any length (``ge=0``): an infinite one accepts late inputs of any
    age and keeps a week of them, as the vital-sign tracks do (it stopped the rule's start,
    a timedelta of an infinite length)."""
    r = News2Rule(VitalThresholds(news2_late_s=float("inf"), confirm_samples=2), BED)
    state, out = run(r, [vitals(0, sbp_mmhg=88), vitals(1, sbp_mmhg=88)])
    assert [c.present for c in out] == [True]
    # The window reaches a week back from the last input's arrival.
    assert state.folded_before == T0 + timedelta(minutes=1) - timedelta(days=7)
