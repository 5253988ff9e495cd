"""CRS and ICANS grading (domain.md section 2) and the neuro-check reminder."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.clinical.chart import record
from daemon.clinical.crs import (
    CrsRule,
    IcansRule,
    IcansState,
    NeuroCheckRule,
    crs_grade,
    haemodynamic_grade,
    icans_grade,
    icans_values,
    ice_grade,
    icp_grade,
    motor_grade,
    oxygen_grade,
    seizure_grade,
)
from daemon.clinical.protocols import schedule_for
from daemon.clinical.watch import vital_rules
from daemon.config import Config, parse
from daemon.events import (
    Acvpu,
    AlertCandidate,
    BagHung,
    Event,
    Handwriting,
    IcpFinding,
    Kind,
    Metric,
    MotorWeakness,
    Observation,
    Priority,
    PumpReading,
    PumpState,
    Seizure,
    SeizurePattern,
    Text,
    Tick,
    VitalSample,
)
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
    # Vasopressin is not counted (ASTCT): one vasopressor plus vasopressin stays 3.
    assert haemodynamic_grade(True, 1, vasopressin=True) == 3
    assert haemodynamic_grade(True, 2, vasopressin=True) == 4
    assert haemodynamic_grade(True, 0, vasopressin=True) == 3  # alone: read as one (assumption)
    assert haemodynamic_grade(True, 0, vasopressin=False) == 2
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


def icans_state(*observations: Observation) -> IcansState:
    state = IcansState()
    for o in observations:
        state = replace(state, chart=record(state.chart, o, icans_values(o)))
    return state


def test_handwriting_is_superseded_by_a_later_ice_score() -> None:
    changed = icans_state(obs(1, handwriting=Handwriting.CHANGED))
    assert icans_grade(changed) == 1
    assert icans_grade(icans_state(obs(1, handwriting=Handwriting.CHANGED), obs(2, ice_score=10))) == 0
    assert icans_grade(icans_state(obs(3, handwriting=Handwriting.UNABLE), obs(2, ice_score=10))) == 1


# Each ICANS domain at its grade boundaries (ASTCT, domain.md section 2).


@pytest.mark.parametrize(
    ("seizure", "pattern", "over_5_min", "grade"),
    [
        (None, None, None, 0),
        (Seizure.NONE, None, None, 0),
        (Seizure.CLINICAL, SeizurePattern.SINGLE, False, 3),  # resolves rapidly: 3
        (Seizure.ELECTROGRAPHIC, None, None, 3),  # EEG, resolved with intervention: 3
        (Seizure.CLINICAL, SeizurePattern.REPEATED_BACK_TO_BASELINE, False, 3),  # assumption: 3
        (Seizure.CLINICAL, SeizurePattern.SINGLE, True, 4),  # just outside: > 5 min
        (Seizure.CLINICAL, SeizurePattern.REPEATED_NO_BASELINE, False, 4),
        (Seizure.ELECTROGRAPHIC, SeizurePattern.REPEATED_NO_BASELINE, None, 4),
    ],
)
def test_seizure_grade(
    seizure: Seizure | None, pattern: SeizurePattern | None, over_5_min: bool | None, grade: int
) -> None:
    assert seizure_grade(seizure, pattern, over_5_min) == grade


@pytest.mark.parametrize(
    ("motor", "grade"),
    [
        (None, 0),
        (MotorWeakness.NONE, 0),
        (MotorWeakness.HEMIPARESIS, 4),
        (MotorWeakness.PARAPARESIS, 4),
        (MotorWeakness.OTHER_DEEP_FOCAL, 4),
    ],
)
def test_motor_grade(motor: MotorWeakness | None, grade: int) -> None:
    assert motor_grade(motor) == grade


@pytest.mark.parametrize(
    ("findings", "grade"),
    [
        ((), 0),
        ((IcpFinding.FOCAL_OEDEMA,), 3),
        ((IcpFinding.DIFFUSE_OEDEMA,), 4),
        ((IcpFinding.DECEREBRATE_POSTURING,), 4),
        ((IcpFinding.DECORTICATE_POSTURING,), 4),
        ((IcpFinding.CRANIAL_NERVE_VI_PALSY,), 4),
        ((IcpFinding.PAPILLOEDEMA,), 4),
        ((IcpFinding.CUSHINGS_TRIAD,), 4),
        ((IcpFinding.FOCAL_OEDEMA, IcpFinding.PAPILLOEDEMA), 4),  # the worst finding decides
    ],
)
def test_icp_grade(findings: tuple[IcpFinding, ...], grade: int) -> None:
    assert icp_grade(findings) == grade


@pytest.mark.parametrize(
    ("fields", "grade"),
    [
        ({"ice_score": 10, "acvpu": Acvpu.ALERT}, 0),
        ({"ice_score": 10, "seizure": Seizure.CLINICAL, "seizure_resolved": True}, 3),
        ({"ice_score": 10, "seizure": Seizure.CLINICAL, "seizure_over_5_min": True}, 4),
        ({"ice_score": 10, "motor_weakness": MotorWeakness.HEMIPARESIS}, 4),
        ({"ice_score": 10, "raised_icp": (IcpFinding.FOCAL_OEDEMA,)}, 3),
        ({"ice_score": 10, "raised_icp": (IcpFinding.CUSHINGS_TRIAD,)}, 4),
        ({"ice_score": 8, "raised_icp": (IcpFinding.FOCAL_OEDEMA,)}, 3),  # worst domain decides
        ({"ice_score": 2, "motor_weakness": MotorWeakness.NONE, "raised_icp": ()}, 3),
    ],
)
def test_each_icans_domain_raises_the_grade_on_its_own(fields: dict[str, Any], grade: int) -> None:
    assert icans_grade(icans_state(obs(1, **fields))) == grade


def test_a_finding_stays_until_none_is_recorded() -> None:
    state = icans_state(obs(1, seizure=Seizure.CLINICAL), obs(2, ice_score=10, acvpu=Acvpu.ALERT))
    assert icans_grade(state) == 3
    assert icans_grade(icans_state(obs(1, seizure=Seizure.CLINICAL), obs(2, seizure=Seizure.NONE))) == 0
    assert icans_grade(icans_state(obs(1, raised_icp=(IcpFinding.PAPILLOEDEMA,)), obs(2, raised_icp=()))) == 0


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


def test_a_due_neuro_check_survives_a_restart_and_names_its_ward_and_bed() -> None:
    r = neuro_rule()
    state, out = run(r, [Tick(at(0)), Tick(at(25))])
    assert [(c.ward, c.bed, c.present) for c in out] == [("w1", "b1", True)]
    assert state.due
    assert r.load(json.loads(json.dumps(r.dump(state)))) == state
    # A restart while due: the next check clears the reminder instead of raising it again.
    state, out = run(r, [Tick(at(26)), obs(27, ice_score=10)], r.load(r.dump(state)))
    assert [(c.ward, c.bed, c.present, c.message) for c in out] == [
        ("w1", "b1", False, Text("Neurological check recorded.", "Examen neurologique saisi."))
    ]


@pytest.mark.parametrize(
    ("events", "en", "fr"),
    [
        ([Tick(at(0)), Tick(at(24.505))], "since the protocol start", "depuis le début du protocole"),
        (
            [Tick(at(0)), obs(1, handwriting=Handwriting.NORMAL), Tick(at(25.505))],
            "since the last one",
            "depuis le dernier",
        ),
    ],
)
def test_a_neuro_check_reminder_says_how_many_whole_hours(events: list[Event], en: str, fr: str) -> None:
    # 24.505 h: 25 h to the nearest hour (24.498 h if an hour were 3,601 s).
    _, out = run(neuro_rule(), events)
    assert [c.message for c in out] == [
        Text(
            f"Neurological check due: no handwriting test or ICE score for 25 h ({en}).",
            f"Examen neurologique à faire : ni test d'écriture ni score ICE depuis 25 h ({fr}).",
        )
    ]


def test_a_check_that_arrives_late_does_not_bring_the_next_one_forward() -> None:
    # Checks at 5 h, then one made at 2 h arrives: the next is due 24 h after 5 h.
    r = neuro_rule()
    state, out = run(r, [Tick(at(0)), obs(5, ice_score=10), obs(2, handwriting=Handwriting.NORMAL)])
    assert state.last_check == at(5)
    _, out = run(r, [Tick(at(28.9)), Tick(at(29))], state)
    assert [c.time for c in out] == [at(29)]


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


# --------------------------------------------------------------------------- new ASTCT inputs


def test_anti_cytokine_therapy_removes_the_fever_requirement() -> None:
    r = crs_rule()
    state, out = run(r, [vitals(11, sbp=84, dbp=52), vitals(11.1, sbp=84, dbp=52)])
    assert out == []
    state, out = run(r, [obs(11.2, anti_cytokine_given=True, by="nurse-a")], state)
    assert grades(out) == [(True, 2, Priority.HIGH)]
    assert out[0].message is not None
    assert "no fever required after an anti-cytokine therapy" in out[0].message.en
    basis = out[0].details["basis"]
    assert basis[0] == {
        "domain": "treatment",
        "value": ["anti_cytokine"],
        "by": "nurse-a",
        "time": "2026-03-02T19:12:00Z",
    }


def test_corticosteroid_also_removes_the_fever_requirement() -> None:
    r = crs_rule()
    state, _ = run(r, [vitals(11, sbp=84, dbp=52), vitals(11.1, sbp=84, dbp=52)])
    _, out = run(r, [obs(11.2, corticosteroid_given=True)], state)
    assert grades(out) == [(True, 2, Priority.HIGH)]


def test_a_vasopressor_plus_vasopressin_is_grade_3_not_4() -> None:
    r = crs_rule()
    state, _ = run(r, [vitals(12, temp=38.4), vitals(12.1, temp=38.4)])
    state, out = run(r, [obs(12.2, vasopressors=1, vasopressin=True, by="nurse-a")], state)
    assert grades(out) == [(True, 3, Priority.HIGH)]
    assert out[0].message is not None
    assert "plus vasopressin (not counted)" in out[0].message.en
    domains = [b["domain"] for b in out[0].details["basis"]]
    assert domains == ["fever", "vasopressors", "vasopressin"]
    state, out = run(r, [obs(12.3, vasopressors=2)], state)
    assert grades(out) == [(True, 4, Priority.HIGH)]


def test_a_withdrawn_vasopressor_lowers_the_crs_grade() -> None:
    r = crs_rule()
    state, _ = run(r, [vitals(12, temp=38.4), vitals(12.1, temp=38.4)])
    state, out = run(r, [obs(12.2, vasopressors=1, id="n-1", by="nurse-a")], state)
    assert grades(out) == [(True, 3, Priority.HIGH)]
    state, out = run(r, [obs(12.5, withdraws="n-1", by="nurse-b")], state)
    assert grades(out) == [(True, 1, Priority.MEDIUM)]
    assert out[0].details["change"] == {"withdraws": "n-1", "by": "nurse-b", "time": "2026-03-02T20:30:00Z"}


def test_icans_withdrawal_falls_back_to_the_previous_entry() -> None:
    r = IcansRule(config().bed("b1"))
    state, out = run(r, [obs(12, ice_score=8, id="a", by="nurse-a")])
    assert grades(out) == [(True, 1, Priority.MEDIUM)]
    state, out = run(r, [obs(13, ice_score=2, id="b", by="nurse-a")], state)
    assert grades(out) == [(True, 3, Priority.HIGH)]
    state, out = run(r, [obs(14, withdraws="b", by="nurse-b")], state)
    assert grades(out) == [(True, 1, Priority.MEDIUM)]  # back to the ICE score of 8
    assert out[0].details["basis"] == [
        {
            "domain": "ice_score",
            "grade": 1,
            "value": 8,
            "by": "nurse-a",
            "time": "2026-03-02T20:00:00Z",
            "id": "a",
        }
    ]
    assert out[0].message is not None
    assert out[0].message.en.startswith("Entry b withdrawn by nurse-b.")


def test_a_withdrawn_seizure_clears_icans_and_says_who() -> None:
    r = IcansRule(config().bed("b1"))
    state, out = run(r, [obs(12, seizure=Seizure.CLINICAL, seizure_resolved=True, id="s1", by="nurse-a")])
    assert grades(out) == [(True, 3, Priority.HIGH)]
    assert out[0].details["basis"][0]["by"] == "nurse-a"
    state, out = run(r, [obs(12.5, withdraws="s1", by="nurse-b")], state)
    assert [c.present for c in out] == [False]
    assert out[0].details == {"change": {"withdraws": "s1", "by": "nurse-b", "time": "2026-03-02T20:30:00Z"}}
    # A withdrawal of an unknown id, or a repeat, changes nothing.
    state, out = run(r, [obs(13, withdraws="s1", by="nurse-b"), obs(13, withdraws="zz", by="nurse-b")], state)
    assert out == []


def test_a_correction_replaces_the_whole_entry() -> None:
    r = IcansRule(config().bed("b1"))
    state, out = run(
        r, [obs(12, ice_score=9, motor_weakness=MotorWeakness.HEMIPARESIS, id="m", by="nurse-a")]
    )
    assert grades(out) == [(True, 4, Priority.HIGH)]
    # Restated without the weakness: the ICE score of 9 alone is grade 1.
    state, out = run(r, [obs(12, ice_score=9, corrects="m", id="m2", by="dr-b")], state)
    assert grades(out) == [(True, 1, Priority.MEDIUM)]
    assert out[0].details["change"]["corrects"] == "m"
    assert out[0].details["basis"][0]["by"] == "dr-b"
    assert out[0].details["basis"][0]["corrects"] == "m"
    # The corrected entry answers to both ids.
    state, out = run(r, [obs(13, withdraws="m", by="dr-b")], state)
    assert [c.present for c in out] == [False]


def test_a_repeated_id_with_other_content_is_kept_without_the_id() -> None:
    r = IcansRule(config().bed("b1"))
    state, _ = run(r, [obs(12, ice_score=8, id="x", by="a"), obs(12, ice_score=8, id="x", by="a")])
    assert len(state.chart.entries) == 1  # the same entry again
    state, _ = run(r, [obs(13, ice_score=5, id="x", by="a")], state)
    assert [e.ids for e in state.chart.entries] == [("x",), ()]


def test_new_states_round_trip_and_old_states_load() -> None:
    r = IcansRule(config().bed("b1"))
    state, _ = run(
        r,
        [
            obs(12, ice_score=8, acvpu=Acvpu.VOICE, id="a", by="nurse-a"),
            obs(
                13, seizure=Seizure.CLINICAL, seizure_pattern=SeizurePattern.SINGLE, seizure_over_5_min=False
            ),
            obs(14, raised_icp=(IcpFinding.FOCAL_OEDEMA,), corrects="zz", by="dr-b"),
        ],
    )
    assert r.load(json.loads(json.dumps(r.dump(state)))) == state
    old = {"ice_score": [5, "2026-03-02T20:00:00Z"], "acvpu": ["V", "2026-03-02T20:00:00Z"], "grade": 2}
    assert icans_grade(r.load(old)) == 2
    c = crs_rule()
    crs_state, _ = run(
        c, [obs(1, vasopressors=1, vasopressin=True, anti_cytokine_given=True, id="v", by="n")]
    )
    assert c.load(json.loads(json.dumps(c.dump(crs_state)))) == crs_state
    legacy = {"vasopressors": [1, "2026-03-02T20:00:00Z"], "treated_at": "2026-03-02T19:00:00Z", "grade": 3}
    loaded = c.load(legacy)
    assert c.grades(loaded) == (3, 0)
    assert c.masked(loaded, at(12))


def test_states_saved_before_charts_load_every_recorded_field() -> None:
    when = "2026-03-02T20:00:00Z"
    icans = IcansRule(config().bed("b1")).load(
        {"ice_score": [5, when], "acvpu": ["V", when], "handwriting": ["changed", when], "grade": 2}
    )
    assert [dict(e.values) for e in icans.chart.entries] == [
        {"ice_score": 5},
        {"acvpu": "V"},
        {"handwriting": "changed"},
    ]
    c = crs_rule()
    legacy = {
        "vasopressors": [1, when],
        "o2_device": ["nasal_cannula", when],
        "o2_flow_l_per_min": [8.0, when],
        "treated_at": "2026-03-02T19:00:00Z",
        "grade": 3,
    }
    crs_state = c.load(legacy)
    assert [(e.by, e.ids, dict(e.values)) for e in crs_state.chart.entries] == [
        (None, (), {"vasopressors": 1}),
        (None, (), {"o2_device": "nasal_cannula"}),
        (None, (), {"o2_flow_l_per_min": 8.0}),
        (None, (), {"treatment": ("antipyretic_or_corticosteroid",)}),
    ]
    assert c.load(json.loads(json.dumps(c.dump(crs_state)))) == crs_state


def test_the_basis_names_only_the_domains_at_the_grade() -> None:
    # Hypotension without vasopressor (2) under high-flow oxygen (3): grade 3 rests on
    # the oxygen; the hypotension is no longer part of the basis.
    r = crs_rule()
    events: list[Event] = [vitals(12 + m / 60, temp=38.4, sbp=80, dbp=50) for m in range(4)]
    events.append(obs(12.1, o2_device="high_flow", o2_flow_l_per_min=30.0, by="nurse-a", id="o1"))
    _, out = run(r, events)
    assert [(c.details["grade"], c.details["basis"]) for c in out] == [
        (
            2,
            [
                {"domain": "fever", "value": 38.4, "source": "monitor"},
                {"domain": "hypotension", "value": 80, "measure": "sbp_mmhg", "source": "monitor"},
            ],
        ),
        (
            3,
            [
                {"domain": "fever", "value": 38.4, "source": "monitor"},
                {
                    "domain": "o2_device",
                    "value": "high_flow",
                    "by": "nurse-a",
                    "time": "2026-03-02T20:06:00Z",
                    "id": "o1",
                },
                {
                    "domain": "o2_flow_l_per_min",
                    "value": 30.0,
                    "by": "nurse-a",
                    "time": "2026-03-02T20:06:00Z",
                    "id": "o1",
                },
            ],
        ),
    ]


_GRADE_4_TAIL = (
    " Consider medical review. Infusion: protocol day 1, planned 9.0 µg/day. Reminder, not an "
    "order: Label, CRS grade 4: discontinue permanently; dexamethasone as for grade 3.",
    " Envisager un avis médical. Perfusion : jour 1 du protocole, prévu 9,0 µg/jour. Rappel, pas "
    "une prescription : RCP, SRC grade 4 : arrêt définitif ; dexaméthasone comme au grade 3.",
)


@pytest.mark.parametrize(
    ("observation", "en", "fr"),
    [
        (
            {"vasopressors": 2, "o2_flow_l_per_min": 3.0},  # no vasopressin; a flow, no device
            "fever 38.4 °C; 2 vasopressor(s); oxygen: O2 3.0 L/min.",
            "fièvre 38,4 °C ; 2 vasopresseur(s) ; oxygène : O2 3,0 L/min.",
        ),
        (
            {"o2_device": "cpap"},  # a device, no flow; the blood pressure is normal
            "fever 38.4 °C; oxygen: cpap.",
            "fièvre 38,4 °C ; oxygène : cpap.",
        ),
    ],
)
def test_a_crs_message_names_exactly_what_sets_the_grade(
    observation: dict[str, Any], en: str, fr: str
) -> None:
    events: list[Event] = [vitals(12 + m / 60, temp=38.4) for m in range(4)]
    _, out = run(crs_rule(), [*events, obs(12.1, **observation)])
    message = out[-1].message
    assert message is not None
    assert message.en == f"Suggests CRS grade 4 (ASTCT): {en}{_GRADE_4_TAIL[0]}"
    assert message.fr == f"Évoque un SRC de grade 4 (ASTCT) : {fr}{_GRADE_4_TAIL[1]}"


def test_an_ice_score_of_0_unresponsive_and_the_unresponsiveness_both_set_grade_4() -> None:
    r = IcansRule(config().bed("b1"))
    _, out = run(r, [obs(1, ice_score=0, acvpu=Acvpu.UNRESPONSIVE, by="n", id="i1")])
    who = {"by": "n", "time": "2026-03-02T09:00:00Z", "id": "i1"}
    assert out[0].details["basis"] == [
        {"domain": "ice_score", "grade": 4, "value": 0, **who},
        {"domain": "consciousness", "grade": 4, "value": "U", **who},
    ]


def test_a_handwriting_test_recorded_with_an_ice_score_of_10_still_counts() -> None:
    # Only a *later* ICE score supersedes the handwriting test.
    r = IcansRule(config().bed("b1"))
    _, out = run(r, [obs(1, ice_score=10, handwriting=Handwriting.CHANGED)])
    assert [(c.present, c.details["grade"]) for c in out] == [(True, 1)]


def test_a_bag_without_a_pump_reading_gives_no_infusing_dose() -> None:
    cfg = config()
    bed = cfg.bed("b1")
    r = CrsRule(cfg.thresholds_for("b1").vitals, bed, schedule_for(bed, cfg), 0.0375)
    _, out = run(r, [vitals(12 + m / 60, temp=38.4) for m in range(4)])
    message = out[0].message
    assert message is not None
    assert "Infusion: protocol day 1, planned 9.0 µg/day. Reminder" in message.en


def test_a_crs_cleared_by_a_withdrawal_says_which_entry_went() -> None:
    _, out = run(
        crs_rule(),
        [
            obs(12, antipyretic_given=True, o2_device="cpap", id="o1", by="nurse-a"),
            obs(13, withdraws="o1", by="dr-b"),
        ],
    )
    assert [(c.present, c.details) for c in out][1:] == [
        (False, {"change": {"withdraws": "o1", "by": "dr-b", "time": "2026-03-02T21:00:00Z"}})
    ]


def test_no_icans_domain_suggests_no_grade() -> None:
    assert icans_grade(IcansState()) == 0


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


def test_late_fever_and_hypotension_are_graded_in_measurement_order() -> None:
    # One late sample (12:00) completes both runs: hypotension at 12:01 (60 s), fever at
    # 12:02 (120 s). Graded in time order, hypotension alone at 12:01 suggests nothing, and
    # fever then hypotension at 12:02 is grade 2, each with its own measured value.
    r = crs_rule()
    state = r.initial()
    out: list[AlertCandidate] = []
    minute = 1 / 60
    arrivals = [(vitals(12 + m * minute), 12 + m * minute) for m in range(5, 13)]
    arrivals += [
        (vitals(12 + minute, temp=38.4, sbp=80, dbp=50), 12 + 12 * minute),
        (vitals(12 + 2 * minute, temp=38.4), 12 + 12 * minute),
        (vitals(12, temp=38.4, sbp=80, dbp=50), 12 + 12 * minute),
    ]
    for event, arrived in arrivals:
        state, candidates = r.step(state, event, at(arrived))
        out.extend(candidates)
    (candidate,) = out
    assert (candidate.present, candidate.time, candidate.priority) == (
        True,
        at(12 + 2 * minute),
        Priority.HIGH,
    )
    assert (candidate.ward, candidate.bed, candidate.kind) == ("w1", "b1", Kind.PHYSIOLOGICAL)
    assert candidate.details["grade"] == 2
    assert candidate.details["late_s"] == pytest.approx(600.0)
    assert candidate.details["basis"] == [
        {"domain": "fever", "value": 38.4, "source": "monitor"},
        {"domain": "hypotension", "value": 80, "measure": "sbp_mmhg", "source": "monitor"},
    ]
    assert candidate.message is not None
    assert candidate.message.en.startswith(
        "Suggests CRS grade 2 (ASTCT): fever 38.4 °C; hypotension (systolic 80 mmHg) without vasopressor."
    )
    assert state.grade == 2


def test_a_late_hypotension_after_a_late_fever_is_graded_at_its_own_time() -> None:
    # The last late sample (12:02) completes the fever run (12:00-12:02) and starts the
    # hypotension run (12:02-12:03): grade 1 at 12:02, grade 2 only from 12:03.
    r = crs_rule()
    state = r.initial()
    out: list[AlertCandidate] = []
    minute = 1 / 60
    arrivals = [(vitals(12 + m * minute), 12 + m * minute) for m in range(5, 13)]
    arrivals += [
        (vitals(12, temp=38.4), 12 + 12 * minute),
        (vitals(12 + minute, temp=38.4), 12 + 12 * minute),
        (vitals(12 + 3 * minute, sbp=80, dbp=50), 12 + 12 * minute),
        (vitals(12 + 2 * minute, temp=38.4, sbp=82, dbp=50), 12 + 12 * minute),
    ]
    for event, arrived in arrivals:
        state, candidates = r.step(state, event, at(arrived))
        out.extend(candidates)
    assert [(c.time, c.details["grade"], c.details["basis"]) for c in out] == [
        (at(12 + 2 * minute), 1, [{"domain": "fever", "value": 38.4, "source": "monitor"}]),
        (
            at(12 + 3 * minute),
            2,
            [
                {"domain": "fever", "value": 38.4, "source": "monitor"},
                {"domain": "hypotension", "value": 80, "measure": "sbp_mmhg", "source": "monitor"},
            ],
        ),
    ]


def test_a_fever_later_than_its_window_suggests_nothing() -> None:
    r = crs_rule()  # fever_late_s 3600 s by default
    state, _ = run(r, [vitals(12)])
    for hours in (10.90, 10.95, 11.0):
        state, candidates = r.step(state, vitals(hours, temp=38.4), at(12))
        assert list(candidates) == []
    assert not state.fever.active


def test_a_fever_waiting_out_its_clearing_time_is_quoted_by_its_latest_fever_reading() -> None:
    """38.6 and 38.5 °C at 12:00 and 12:02 raise the fever (2 samples over 120 s); 37.2 °C at
    12:03 is normal, but the fever clears only after fever_clear_s (1800 s), so it still counts.
    Systolic 80 mmHg at 12:04 and 12:05 raises hypotension: grade 2 at 12:05. The suggestion
    stands on the 38.5 °C reading, the latest fever, not on the normal 37.2 °C, and quotes the
    pressure the same way (grade 1 at 12:02 says 38.5 too)."""
    r = crs_rule()
    minute = 1 / 60
    temps_sbps = [(0, 38.6, 124.0), (2, 38.5, 124.0), (3, 37.2, 124.0), (4, 37.2, 80.0), (5, 37.1, 82.0)]
    arrivals = [(vitals(12 + m * minute, temp=t, sbp=p, dbp=50.0), 12 + m * minute) for m, t, p in temps_sbps]
    state = r.initial()
    out: list[AlertCandidate] = []
    for event, arrived in arrivals:
        state, candidates = r.step(state, event, at(arrived))
        out.extend(candidates)
    assert [(c.time, c.details["grade"]) for c in out] == [(at(12 + 2 * minute), 1), (at(12 + 5 * minute), 2)]
    assert all(c.message is not None and "fever 38.5 °C" in c.message.en for c in out)
    assert out[1].details["basis"] == [
        {"domain": "fever", "value": 38.5, "source": "monitor"},
        {"domain": "hypotension", "value": 82.0, "measure": "sbp_mmhg", "source": "monitor"},
    ]
    assert out[1].message is not None
    assert "hypotension (systolic 82 mmHg)" in out[1].message.en
    assert "fièvre 38,5 °C" in out[1].message.fr
