"""CRS and ICANS grade boundaries (ASTCT, domain.md §2), one case on each side of each edge.

The neuro-check reminder is tested in test_crs.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.config import VitalThresholds
from daemon.crs import (
    CrsRule,
    IcansRule,
    crs_grade,
    grade_priority,
    haemodynamic_grade,
    ice_grade,
    oxygen_grade,
)
from daemon.events import Acvpu, Event, Metric, Observation, Priority, Tick, VitalSample
from daemon.protocols import schedule_for
from tests.helpers import one_bed_config, run

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
T0 = START + timedelta(hours=12)
MS = timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("device", "flow", "grade"),
    [
        # domain.md §2 ASTCT: low-flow nasal cannula <= 6 L/min or blow-by: 2; high flow
        # > 6 L/min, facemask, non-rebreather, Venturi: 3; CPAP, BiPAP, ventilation: 4.
        (None, 0.0, 0),  # no flow is no oxygen
        (None, 0.01, 2),
        (None, 6.0, 2),
        (None, 6.01, 3),
        ("nasal_cannula", None, 2),
        ("nasal_cannula", 6.0, 2),
        ("nasal_cannula", 6.01, 3),
        ("blow_by", 6.0, 2),
        ("blow_by", 6.01, 3),
        ("air", None, 0),
        ("air", 0.0, 0),
        ("facemask", 2.0, 3),  # the device decides when it is worse than the flow
        ("high_flow", None, 3),
        ("cpap", 10.0, 4),
        ("bipap", None, 4),
        ("ventilator", 0.0, 4),
        ("unknown-device", None, 0),  # parse_observation refuses these; graded as no support
    ],
)
def test_oxygen_grade_edges(device: str | None, flow: float | None, grade: int) -> None:
    assert oxygen_grade(device, flow) == grade


@pytest.mark.parametrize(
    ("hypotension", "vasopressors", "vasopressin", "grade"),
    [
        # domain.md §2 ASTCT: hypotension without vasopressor 2, one vasopressor (with or
        # without vasopressin) 3, several vasopressors (vasopressin excluded) 4.
        (False, None, False, 0),
        (False, 0, False, 0),
        (True, None, False, 2),
        (True, 0, False, 2),
        (False, 1, False, 3),  # a vasopressor implies the hypotension it treats
        (True, 1, False, 3),
        (False, 2, False, 4),
        (True, 5, False, 4),
        (False, 1, True, 3),  # vasopressin is not counted
        (False, 2, True, 4),
        (False, None, True, 3),  # vasopressin alone: one vasopressor (assumption, crs.py)
        (True, 0, True, 3),
    ],
)
def test_haemodynamic_grade_edges(
    hypotension: bool, vasopressors: int | None, vasopressin: bool, grade: int
) -> None:
    assert haemodynamic_grade(hypotension, vasopressors, vasopressin) == grade


@pytest.mark.parametrize(
    ("fever", "masked", "haemodynamic", "oxygen", "grade"),
    [
        # domain.md §2 ASTCT: fever is required unless antipyretic or anti-cytokine therapy
        # was started; the more severe of hypotension and hypoxia sets the grade.
        (True, False, 0, 0, 1),
        (True, True, 0, 0, 1),
        (False, True, 0, 0, 0),
        (False, False, 4, 4, 0),
        (False, True, 2, 0, 2),
        (False, True, 0, 3, 3),
        (True, False, 2, 3, 3),
        (True, False, 3, 2, 3),
        (True, False, 4, 2, 4),
        (True, False, 2, 4, 4),
    ],
)
def test_crs_grade_edges(fever: bool, masked: bool, haemodynamic: int, oxygen: int, grade: int) -> None:
    assert crs_grade(fever, masked, haemodynamic, oxygen) == grade


@pytest.mark.parametrize(
    ("grade", "priority"),
    # crs.py docstring (domain.md §4): grade 1 medium, grade 2 and above high.
    [(1, Priority.MEDIUM), (2, Priority.HIGH), (3, Priority.HIGH), (4, Priority.HIGH)],
)
def test_grade_priority(grade: int, priority: Priority) -> None:
    assert grade_priority(grade) is priority


def crs_rule() -> CrsRule:
    cfg = one_bed_config(START)
    bed = cfg.bed("b1")
    return CrsRule(cfg.thresholds_for("b1").vitals, bed, schedule_for(bed, cfg))


def low_bp(time: datetime) -> VitalSample:
    return VitalSample("w1", "b1", "mon", time, {Metric.SBP_MMHG: 84.0, Metric.TEMP_C: 37.0})


@pytest.mark.parametrize("treatment", ["antipyretic_given", "corticosteroid_given", "anti_cytokine_given"])
@pytest.mark.parametrize(
    ("after", "masked"), [(timedelta(seconds=86_400), True), (timedelta(seconds=86_400) + MS, False)]
)
def test_fever_masking_window_edges(treatment: str, after: timedelta, masked: bool) -> None:
    """fever_masking_s = 24 h (config.py; ASTCT gives no duration, domain.md §2): fever is no
    longer required up to and including 24 h after the treatment, and required again after."""
    assert VitalThresholds().fever_masking_s == 86_400
    r = crs_rule()
    events: list[Event] = [
        low_bp(T0),
        low_bp(T0 + timedelta(minutes=2)),
        Observation("w1", "b1", T0 + timedelta(minutes=3), **{treatment: True}),  # type: ignore[arg-type]
    ]
    state, out = run(r, events)
    assert [(c.present, c.details["grade"]) for c in out] == [(True, 2)]
    treated = T0 + timedelta(minutes=3)
    assert r.masked(state, treated - MS) is False  # not before it was given
    assert r.masked(state, treated + after) is masked
    _, out = run(r, [Tick(treated + after)], state)
    assert [c.present for c in out] == ([] if masked else [False])


def test_a_treatment_recorded_as_not_given_does_not_mask() -> None:
    r = crs_rule()
    events: list[Event] = [
        low_bp(T0),
        low_bp(T0 + timedelta(minutes=2)),
        Observation("w1", "b1", T0 + timedelta(minutes=3), antipyretic_given=False),
    ]
    state, out = run(r, events)
    assert out == []
    assert not r.masked(state, T0 + timedelta(minutes=4))


@pytest.mark.parametrize(
    ("fields", "grade"),
    [
        # Rule level, with fever (38.4 °C): oxygen flow and vasopressor counts at their edges.
        ({"o2_flow_l_per_min": 6.0}, 2),
        ({"o2_flow_l_per_min": 6.01}, 3),
        ({"o2_device": "nasal_cannula", "o2_flow_l_per_min": 6.0}, 2),
        ({"o2_device": "nasal_cannula", "o2_flow_l_per_min": 6.01}, 3),
        ({"vasopressors": 1}, 3),
        ({"vasopressors": 2}, 4),
        ({"vasopressors": 1, "vasopressin": True}, 3),
        ({"vasopressin": True}, 3),
        ({"o2_device": "bipap"}, 4),
    ],
)
def test_crs_rule_grades_at_the_edges(fields: dict[str, Any], grade: int) -> None:
    r = crs_rule()
    fever = [VitalSample("w1", "b1", "mon", T0 + timedelta(minutes=m), {Metric.TEMP_C: 38.4}) for m in (0, 2)]
    state, out = run(r, fever)
    assert [(c.present, c.details["grade"]) for c in out] == [(True, 1)]
    _, out = run(r, [Observation("w1", "b1", T0 + timedelta(minutes=3), **fields)], state)
    assert [(c.present, c.details["grade"], c.priority) for c in out] == [(True, grade, Priority.HIGH)]


# --------------------------------------------------------------------------- ICANS


@pytest.mark.parametrize(
    ("score", "acvpu", "grade"),
    [
        # domain.md §2 ASTCT ICE: 10 none; 7-9 grade 1; 3-6 grade 2; 0-2 grade 3; 0 and
        # unarousable grade 4.
        (10, Acvpu.ALERT, 0),
        (9, Acvpu.ALERT, 1),
        (7, Acvpu.ALERT, 1),
        (6, Acvpu.ALERT, 2),
        (3, Acvpu.ALERT, 2),
        (2, Acvpu.ALERT, 3),
        (1, Acvpu.ALERT, 3),
        (0, Acvpu.ALERT, 3),  # awake with global aphasia: 3
        (0, None, 3),
        (0, Acvpu.PAIN, 3),  # the ICE domain alone: consciousness grades itself
        (0, Acvpu.UNRESPONSIVE, 4),
        (1, Acvpu.UNRESPONSIVE, 3),  # grade 4 needs an ICE score of 0
    ],
)
def test_ice_grade_edges(score: int, acvpu: Acvpu | None, grade: int) -> None:
    assert ice_grade(score, acvpu) == grade


def icans(*observations: Observation) -> list[tuple[bool, Any, Priority]]:
    _, out = run(IcansRule(one_bed_config(START).bed("b1")), observations)
    return [(c.present, c.details.get("grade"), c.priority) for c in out]


def icans_obs(minutes: float = 0, **fields: Any) -> Observation:
    return Observation("w1", "b1", T0 + timedelta(minutes=minutes), **fields)


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        # domain.md §2 ASTCT ICE bands, through the rule: grade 1 medium, 2 and above high.
        (10, []),
        (9, [(True, 1, Priority.MEDIUM)]),
        (7, [(True, 1, Priority.MEDIUM)]),
        (6, [(True, 2, Priority.HIGH)]),
        (3, [(True, 2, Priority.HIGH)]),
        (2, [(True, 3, Priority.HIGH)]),
        (0, [(True, 3, Priority.HIGH)]),
    ],
)
def test_icans_rule_at_each_ice_band(score: int, expected: list[tuple[bool, int, Priority]]) -> None:
    assert icans(icans_obs(ice_score=score)) == expected


@pytest.mark.parametrize(
    ("acvpu", "grade"),
    # crs.py docstring (reading of ASTCT consciousness, domain.md §2): voice = wakes to voice
    # 2, pain = wakes only to touch 3, unresponsive 4; new confusion at least 1; alert none.
    [
        (Acvpu.ALERT, None),
        (Acvpu.NEW_CONFUSION, 1),
        (Acvpu.VOICE, 2),
        (Acvpu.PAIN, 3),
        (Acvpu.UNRESPONSIVE, 4),
    ],
)
def test_icans_rule_at_each_acvpu_reading(acvpu: Acvpu, grade: int | None) -> None:
    out = icans(icans_obs(acvpu=acvpu))
    assert out == ([] if grade is None else [(True, grade, grade_priority(grade))])


def test_icans_grade_follows_the_worst_domain_down_and_up() -> None:
    """ICE 6 (2) then 7 (1) then 10 with alert (cleared): each band edge crossed in the rule."""
    out = icans(
        icans_obs(0, ice_score=6),
        icans_obs(1, ice_score=7),
        icans_obs(2, ice_score=10, acvpu=Acvpu.ALERT),
        icans_obs(3, ice_score=10, acvpu=Acvpu.PAIN),
    )
    assert out == [
        (True, 2, Priority.HIGH),
        (True, 1, Priority.MEDIUM),
        (False, None, Priority.MEDIUM),
        (True, 3, Priority.HIGH),
    ]
