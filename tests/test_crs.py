"""CRS and ICANS grading (domain.md section 2) and the neuro-check reminder."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.config import Config, parse
from daemon.crs import (
    CrsRule,
    IcansRule,
    IcansState,
    NeuroCheckRule,
    crs_grade,
    haemodynamic_grade,
    icans_grade,
    ice_grade,
    oxygen_grade,
)
from daemon.events import (
    Acvpu,
    AlertCandidate,
    BagHung,
    Event,
    Handwriting,
    Kind,
    Metric,
    Observation,
    Priority,
    PumpReading,
    PumpState,
    Tick,
    VitalSample,
)
from daemon.protocols import schedule_for
from daemon.vitals import vital_rules
from tests.helpers import one_bed_config, run

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def config() -> Config:
    return one_bed_config(START)


def crs_rule() -> CrsRule:
    cfg = config()
    bed = cfg.bed("b1")
    return CrsRule(cfg.thresholds_for("b1").vitals, bed, schedule_for(bed, cfg))


def at(hours: float) -> datetime:
    return START + timedelta(hours=hours)


def vitals(hours: float, temp: float = 36.8, sbp: float = 124.0, dbp: float = 76.0) -> VitalSample:
    values = {Metric.TEMP_C: temp, Metric.SBP_MMHG: sbp, Metric.DBP_MMHG: dbp, Metric.HR_PER_MIN: 80.0}
    return VitalSample("w1", "b1", "mon", at(hours), values)


def obs(hours: float, **fields: Any) -> Observation:
    return Observation("w1", "b1", at(hours), **fields)


def grades(out: list[AlertCandidate]) -> list[tuple[bool, Any, Priority]]:
    return [(c.present, c.details.get("grade"), c.priority) for c in out]


# --------------------------------------------------------------------------- pure grading


@pytest.mark.parametrize(
    ("device", "flow", "grade"),
    [
        (None, None, 0),
        ("air", None, 0),
        ("nasal_cannula", 4.0, 2),
        ("nasal_cannula", 6.0, 2),
        ("nasal_cannula", 8.0, 3),  # above 6 L/min counts as high flow
        ("blow_by", None, 2),
        (None, 3.0, 2),
        ("high_flow", 40.0, 3),
        ("facemask", None, 3),
        ("non_rebreather", 15.0, 3),
        ("venturi", None, 3),
        ("cpap", None, 4),
        ("bipap", None, 4),
        ("ventilator", None, 4),
    ],
)
def test_oxygen_grade(device: str | None, flow: float | None, grade: int) -> None:
    assert oxygen_grade(device, flow) == grade


def test_haemodynamic_and_overall_grade() -> None:
    assert haemodynamic_grade(False, None) == 0
    assert haemodynamic_grade(True, 0) == 2
    assert haemodynamic_grade(True, 1) == 3
    assert haemodynamic_grade(False, 2) == 4
    assert crs_grade(True, False, 0, 0) == 1
    assert crs_grade(False, False, 2, 0) == 0  # fever required without treatment
    assert crs_grade(False, True, 2, 0) == 2  # ... but not after an antipyretic
    assert crs_grade(True, False, 3, 2) == 3  # the more severe decides
    assert crs_grade(False, True, 0, 0) == 0


@pytest.mark.parametrize(
    ("score", "grade"), [(10, 0), (9, 1), (7, 1), (6, 2), (5, 2), (3, 2), (2, 3), (0, 3)]
)
def test_ice_grade(score: int, grade: int) -> None:
    assert ice_grade(score, Acvpu.ALERT) == grade


def test_ice_zero_unarousable_is_grade_4() -> None:
    assert ice_grade(0, Acvpu.UNRESPONSIVE) == 4


def test_handwriting_is_superseded_by_a_later_ice_score() -> None:
    changed = IcansState(handwriting=(Handwriting.CHANGED, at(1)))
    assert icans_grade(changed) == 1
    assert icans_grade(IcansState(handwriting=(Handwriting.CHANGED, at(1)), ice_score=(10, at(2)))) == 0
    assert icans_grade(IcansState(handwriting=(Handwriting.UNABLE, at(3)), ice_score=(10, at(2)))) == 1


# --------------------------------------------------------------------------- CRS rule


def test_case_fever_alone_is_grade_1_medium_with_infusion_context() -> None:
    r = crs_rule()
    events: list[Event] = [
        BagHung("w1", "b1", at(0), "bag-1", 0.0375, 270),
        PumpReading("w1", "b1", "p1", at(0), PumpState.INFUSING, 10.0, 0.0),
        vitals(12, temp=38.2),
        vitals(12.1, temp=38.2),
    ]
    _, out = run(r, events)
    assert grades(out) == [(True, 1, Priority.MEDIUM)]
    msg = out[0].message
    assert msg is not None
    assert "Suggests CRS grade 1" in msg.en
    assert "protocol day 1" in msg.en
    assert "planned 9.0 µg/day" in msg.en
    assert "infusing 9.0 µg/day" in msg.en  # 10 mL/h × 0.0375 µg/mL × 24
    assert "not an order" in msg.en
    assert "SRC de grade 1" in msg.fr
    assert out[0].kind is Kind.PHYSIOLOGICAL


def test_fever_then_hypotension_escalates_to_grade_2_high() -> None:
    r = crs_rule()
    state, out = run(r, [vitals(12, temp=38.4), vitals(12.1, temp=38.4)])
    assert grades(out) == [(True, 1, Priority.MEDIUM)]
    state, out = run(
        r, [vitals(13, temp=38.4, sbp=85, dbp=50), vitals(13.1, temp=38.4, sbp=85, dbp=50)], state
    )
    assert grades(out) == [(True, 2, Priority.HIGH)]


def test_vasopressors_and_oxygen_raise_the_grade() -> None:
    r = crs_rule()
    state, _ = run(r, [vitals(12, temp=38.4), vitals(12.1, temp=38.4)])
    state, out = run(r, [obs(12.2, vasopressors=1)], state)
    assert grades(out) == [(True, 3, Priority.HIGH)]
    state, out = run(r, [obs(12.3, o2_device="cpap")], state)
    assert grades(out) == [(True, 4, Priority.HIGH)]
    assert out[0].message is not None
    assert "discontinue permanently" in out[0].message.en


def test_antipyretic_removes_the_fever_requirement_for_a_while() -> None:
    r = crs_rule()
    state, out = run(r, [vitals(11, sbp=84, dbp=52), vitals(11.1, sbp=84, dbp=52)])
    assert out == []  # hypotension without fever is not CRS by ASTCT
    state, out = run(r, [obs(11.2, antipyretic_given=True)], state)
    assert grades(out) == [(True, 2, Priority.HIGH)]
    # The masking window (24 h by default) runs out on the daemon's clock.
    state, out = run(r, [Tick(at(11.2 + 24.1))], state)
    assert [c.present for c in out] == [False]


def test_crs_state_round_trips() -> None:
    r = crs_rule()
    events: list[Event] = [
        BagHung("w1", "b1", at(0), "bag-1", 0.0375, 270),
        PumpReading("w1", "b1", "p1", at(0), PumpState.INFUSING, 10.0, 0.0),
        obs(1, antipyretic_given=True, o2_device="nasal_cannula", o2_flow_l_per_min=2.0, vasopressors=0),
        vitals(12, temp=38.4),
        vitals(12.1, temp=38.4),
    ]
    state, _ = run(r, events)
    assert r.load(json.loads(json.dumps(r.dump(state)))) == state


# --------------------------------------------------------------------------- ICANS rule


def test_ice_score_5_is_grade_2_high_and_clears() -> None:
    r = IcansRule(config().bed("b1"))
    state, out = run(r, [obs(12, ice_score=5)])
    assert grades(out) == [(True, 2, Priority.HIGH)]
    assert out[0].message is not None
    assert "ICE score 5/10" in out[0].message.en
    state, out = run(r, [obs(15, ice_score=10)], state)
    assert [c.present for c in out] == [False]


def test_changed_handwriting_raises_icans() -> None:
    r = IcansRule(config().bed("b1"))
    _, out = run(r, [obs(12, handwriting=Handwriting.CHANGED)])
    assert grades(out) == [(True, 1, Priority.MEDIUM)]
    assert out[0].message is not None
    assert "full ICE assessment" in out[0].message.en


def test_consciousness_sets_the_grade() -> None:
    r = IcansRule(config().bed("b1"))
    state, out = run(r, [obs(12, acvpu=Acvpu.VOICE)])
    assert grades(out) == [(True, 2, Priority.HIGH)]
    state, out = run(r, [obs(13, acvpu=Acvpu.UNRESPONSIVE, ice_score=0)], state)
    assert grades(out) == [(True, 4, Priority.HIGH)]
    assert r.load(json.loads(json.dumps(r.dump(state)))) == state


# --------------------------------------------------------------------------- neuro check


def neuro_rule(interval_s: float | None = None) -> NeuroCheckRule:
    cfg = config()
    bed = cfg.bed("b1")
    th = cfg.thresholds_for("b1").vitals
    if interval_s is not None:
        th = th.model_copy(update={"neuro_check_interval_s": interval_s})
    return NeuroCheckRule(th, bed, schedule_for(bed, cfg))


def test_neuro_check_due_after_24_h_without_a_check() -> None:
    r = neuro_rule()
    state, out = run(r, [obs(1, handwriting=Handwriting.NORMAL), Tick(at(24.9))])
    assert out == []
    state, out = run(r, [Tick(at(25)), Tick(at(25.5))], state)
    assert [(c.condition, c.present, c.priority, c.kind) for c in out] == [
        ("NEURO_CHECK_DUE", True, Priority.LOW, Kind.TECHNICAL)
    ]
    state, out = run(r, [obs(26, ice_score=10)], state)
    assert [c.present for c in out] == [False]
    assert r.load(json.loads(json.dumps(r.dump(state)))) == state


def test_neuro_check_counts_from_the_protocol_start_and_is_configurable() -> None:
    r = neuro_rule(interval_s=3600)
    _, out = run(r, [Tick(at(-1)), Tick(at(0.5)), Tick(at(1))])
    assert [c.time for c in out] == [at(1)]


def test_no_neuro_check_after_the_protocol() -> None:
    r = neuro_rule()
    _, out = run(r, [Tick(at(24 * 15))])
    assert out == []


def test_a_bag_announced_in_the_config_gives_the_infusion_context() -> None:
    """The CRS message names the µg/day infusing, from the configured bag and the pump rate."""
    start = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    config = parse(
        {
            "beds": [
                {
                    "ward": "w1",
                    "id": "b1",
                    "patient": "p-1",
                    "weight_kg": 63,
                    "height_cm": 165,
                    "protocol_start": start.isoformat(),
                }
            ],
            "bags": [
                {"bed": "b1", "bag_id": "B1", "concentration_ug_per_ml": 0.0375, "hung_at": start.isoformat()}
            ],
        }
    )
    rule = next(r for r in vital_rules(config, config.beds[0]) if r.name == "crs")
    t12 = start + timedelta(hours=12)
    events: list[Event] = [PumpReading("w1", "b1", "p1", t12, PumpState.INFUSING, 10.0, 120.0)]
    events += [
        VitalSample("w1", "b1", "m", t12 + timedelta(minutes=m), {Metric.TEMP_C: 38.2}) for m in range(1, 6)
    ]
    _, candidates = run(rule, events)
    raised = [c for c in candidates if c.present]
    assert raised
    assert raised[0].message is not None
    assert "infusing 9.0 µg/day" in raised[0].message.en


def test_a_late_fever_suggests_grade_1_at_its_own_time_marked_late() -> None:
    r = crs_rule()
    state = r.initial()
    out: list[AlertCandidate] = []
    minute = 1 / 60
    arrivals = [(vitals(12 + m * minute), 12 + m * minute) for m in range(5, 13)]
    arrivals += [(vitals(12 + m * minute, temp=38.4), 12 + 12 * minute) for m in range(3)]
    for event, arrived in arrivals:
        state, candidates = r.step(state, event, at(arrived))
        out.extend(candidates)
    assert grades(out) == [(True, 1, Priority.MEDIUM)]
    assert out[0].time == at(12 + 2 * minute)
    assert out[0].details["late_s"] == pytest.approx(600.0)
    assert out[0].message is not None
    assert "Late data" in out[0].message.en
    assert state.fever.active
    assert state.grade == 1


def test_a_fever_later_than_its_window_suggests_nothing() -> None:
    r = crs_rule()  # fever_late_s 3600 s by default
    state, _ = run(r, [vitals(12)])
    for hours in (10.90, 10.95, 11.0):
        state, candidates = r.step(state, vitals(hours, temp=38.4), at(12))
        assert list(candidates) == []
    assert not state.fever.active
