"""CRS and ICANS grade boundaries (ASTCT, domain.md §2), one case on each side of each edge.

The neuro-check reminder is tested in test_crs.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.clinical.crs import (
    CrsRule,
    IcansRule,
    crs_grade,
    crs_values,
    grade_priority,
    haemodynamic_grade,
    ice_grade,
    oxygen_grade,
)
from daemon.clinical.protocols import schedule_for
from daemon.config import VitalThresholds
from daemon.events import (
    Acvpu,
    BagHung,
    Event,
    Handwriting,
    Health,
    IcpFinding,
    Metric,
    MotorWeakness,
    Observation,
    Priority,
    PumpReading,
    PumpState,
    Seizure,
    SeizurePattern,
    SourceHealth,
    Tick,
    VitalSample,
)
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
        ("air", 10.0, 0),  # room air: a flow reading does not make it oxygen support
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


# --------------------------------------------------------------------------- what the CRS alert says

GRADE_2_EN = (
    "Suggests CRS grade 2 (ASTCT): no fever required after an antipyretic and a corticosteroid; "
    "hypotension (systolic 84 mmHg) without vasopressor. Consider medical review. Infusion: protocol "
    "day 1, planned 9.0 µg/day, infusing 9.0 µg/day. Reminder, not an order: The label has no rule for "
    "grade 2; an ASH review table suggests considering an interruption."
)
GRADE_2_FR = (
    "Évoque un SRC de grade 2 (ASTCT) : fièvre non exigée après un antipyrétique et un corticoïde ; "
    "hypotension (systolique 84 mmHg) sans vasopresseur. Envisager un avis médical. Perfusion : jour 1 "
    "du protocole, prévu 9,0 µg/jour, perfusion 9,0 µg/jour. Rappel, pas une prescription : Le RCP ne "
    "prévoit rien au grade 2 ; une revue de l'ASH propose d'envisager une interruption."
)
LABEL_3_EN = (
    "Label, CRS grade 3: interrupt; dexamethasone 8 mg every 8 h for up to 3 days, then taper over "
    "4 days; once resolved, restart at 9 µg/day, 28 µg/day after 7 days without recurrence."
)
LABEL_3_FR = (
    "RCP, SRC grade 3 : interrompre ; dexaméthasone 8 mg toutes les 8 h jusqu'à 3 jours, puis "
    "décroissance sur 4 jours ; après résolution, reprise à 9 µg/jour, 28 µg/jour après 7 jours sans "
    "récidive."
)
MASKED_EN = "no fever required after an antipyretic and a corticosteroid"
MASKED_FR = "fièvre non exigée après un antipyrétique et un corticoïde"
GRADE_3_EN = (
    f"Suggests CRS grade 3 (ASTCT): {MASKED_EN}; vasopressin alone (read as one vasopressor); oxygen: "
    "nasal_cannula 2.5 L/min. Consider medical review. Infusion: protocol day 1, planned 9.0 µg/day, "
    "infusing {rate} µg/day. Reminder, not an order: " + LABEL_3_EN
)
GRADE_3_FR = (
    f"Évoque un SRC de grade 3 (ASTCT) : {MASKED_FR} ; vasopressine seule (lue comme un vasopresseur) ; "
    "oxygène : nasal_cannula 2,5 L/min. Envisager un avis médical. Perfusion : jour 1 du protocole, "
    "prévu 9,0 µg/jour, perfusion {rate} µg/jour. Rappel, pas une prescription : " + LABEL_3_FR
)
GRADE_4_EN = (
    f"Suggests CRS grade 4 (ASTCT): {MASKED_EN}; 2 vasopressor(s) plus vasopressin (not counted); "
    "oxygen: high_flow 30.0 L/min. Consider medical review. Infusion: protocol day 1, planned "
    "9.0 µg/day, infusing 9.0 µg/day. Reminder, not an order: Label, CRS grade 4: discontinue "
    "permanently; dexamethasone as for grade 3."
)
GRADE_4_FR = (
    f"Évoque un SRC de grade 4 (ASTCT) : {MASKED_FR} ; 2 vasopresseur(s) plus vasopressine (non "
    "comptée) ; oxygène : high_flow 30,0 L/min. Envisager un avis médical. Perfusion : jour 1 du "
    "protocole, prévu 9,0 µg/jour, perfusion 9,0 µg/jour. Rappel, pas une prescription : RCP, SRC "
    "grade 4 : arrêt définitif ; dexaméthasone comme au grade 3."
)


def test_crs_messages_details_and_basis_through_a_course() -> None:
    """Masked fever, hypotension, vasopressin alone, two vasopressors, a withdrawal, the
    masking window running out: every message, basis and change in full."""
    r = crs_rule()
    minute = timedelta(minutes=1)
    events: list[Event] = [
        BagHung("w1", "b1", START, "bag-1", 0.0375, 270),
        PumpReading("w1", "b1", "p1", START, PumpState.INFUSING, 10.0, 0.0),
        low_bp(T0),
        low_bp(T0 + 2 * minute),
        Observation("w1", "b1", T0 + 3 * minute, antipyretic_given=True, corticosteroid_given=True, by="n-a"),
        Observation(
            "w1",
            "b1",
            T0 + 4 * minute,
            vasopressin=True,
            o2_device="nasal_cannula",
            o2_flow_l_per_min=2.5,
            by="n-a",
        ),
        Observation(
            "w1",
            "b1",
            T0 + 5 * minute,
            vasopressors=2,
            o2_device="high_flow",
            o2_flow_l_per_min=30.0,
            by="n-b",
            id="x1",
        ),
        PumpReading("w1", "b1", "p1", T0 + 6 * minute, PumpState.STOPPED, 0.0, 0.0),
        Observation("w1", "b1", T0 + 7 * minute, withdraws="x1", by="n-c"),
        Tick(T0 + timedelta(days=2)),
    ]
    _, out = run(r, events)
    treatment = {
        "domain": "treatment",
        "value": ["antipyretic", "corticosteroid"],
        "by": "n-a",
        "time": "2026-03-02T20:03:00Z",
    }
    vasopressin = {"domain": "vasopressin", "value": True, "by": "n-a", "time": "2026-03-02T20:04:00Z"}
    pressors = {"domain": "vasopressors", "value": 2, "by": "n-b", "time": "2026-03-02T20:05:00Z", "id": "x1"}
    got = [(c.present, c.time - T0, c.value, c.unit, c.priority, dict(c.details)) for c in out]
    assert got == [
        (
            True,
            3 * minute,
            2.0,
            "{grade}",
            Priority.HIGH,
            {
                "grade": 2,
                "basis": [
                    treatment,
                    {"domain": "hypotension", "value": 84.0, "measure": "sbp_mmhg", "source": "monitor"},
                ],
            },
        ),
        (True, 4 * minute, 3.0, "{grade}", Priority.HIGH, {"grade": 3, "basis": [treatment, vasopressin]}),
        (
            True,
            5 * minute,
            4.0,
            "{grade}",
            Priority.HIGH,
            {"grade": 4, "basis": [treatment, pressors, vasopressin]},
        ),
        (
            True,
            7 * minute,
            3.0,
            "{grade}",
            Priority.HIGH,
            {
                "grade": 3,
                "basis": [treatment, vasopressin],
                "change": {"withdraws": "x1", "by": "n-c", "time": "2026-03-02T20:07:00Z"},
            },
        ),
        # Two days on, fever is required again and there is none: cleared, at the grade it had.
        (False, timedelta(days=2), 3.0, "{grade}", Priority.HIGH, {}),
    ]
    assert [(c.message.en, c.message.fr) for c in out if c.message is not None] == [
        (GRADE_2_EN, GRADE_2_FR),
        (GRADE_3_EN.format(rate="9.0"), GRADE_3_FR.format(rate="9,0")),
        (GRADE_4_EN, GRADE_4_FR),
        (GRADE_3_EN.format(rate="0.0"), GRADE_3_FR.format(rate="0,0")),
        ("CRS criteria no longer met.", "Les critères de SRC ne sont plus remplis."),
    ]


def test_crs_message_before_the_protocol_start() -> None:
    r = crs_rule()
    before = START - timedelta(hours=1)
    fever = [
        VitalSample("w1", "b1", "m", before + timedelta(minutes=m), {Metric.TEMP_C: 38.4}) for m in (0, 2)
    ]
    _, out = run(r, fever)
    assert [dict(c.details) for c in out] == [
        {"grade": 1, "basis": [{"domain": "fever", "value": 38.4, "source": "monitor"}]}
    ]
    assert out[0].priority is Priority.MEDIUM
    assert out[0].message is not None
    assert (out[0].message.en, out[0].message.fr) == (
        "Suggests CRS grade 1 (ASTCT): fever 38.4 °C. Consider medical review. Infusion: before the "
        "protocol start. Reminder, not an order: The label has no rule for grade 1; an ASH review table "
        "suggests symptomatic care.",
        "Évoque un SRC de grade 1 (ASTCT) : fièvre 38,4 °C. Envisager un avis médical. Perfusion : avant "
        "le début du protocole. Rappel, pas une prescription : Le RCP ne prévoit rien au grade 1 ; une "
        "revue de l'ASH propose un traitement symptomatique.",
    )


# --------------------------------------------------------------------------- what the ICANS alert says

ICANS_LABEL = {
    1: (
        "The label has no rule for neurotoxicity grade 1.",
        "Le RCP ne prévoit rien pour une neurotoxicité de grade 1.",
    ),
    2: (
        "Whether the current label has a neurotoxicity grade 2 rule is unconfirmed.",
        "L'existence d'une règle du RCP pour une neurotoxicité de grade 2 n'est pas confirmée.",
    ),
    3: (
        "Label, neurotoxicity grade 3: withhold until grade 1 or less for at least 3 days, then restart at "
        "9 µg/day, 28 µg/day after 7 days.",
        "RCP, neurotoxicité grade 3 : suspendre jusqu'à un grade 1 ou moins pendant au moins 3 jours, puis "
        "reprendre à 9 µg/jour, 28 µg/jour après 7 jours.",
    ),
    4: (
        "Label, neurotoxicity grade 4: discontinue permanently.",
        "RCP, neurotoxicité grade 4 : arrêt définitif.",
    ),
}
NO_ICE_EN = "Consider medical review and a full ICE assessment."
NO_ICE_FR = "Envisager un avis médical et un score ICE complet."


def icans_text(grade: int, more: bool, en: str, fr: str, by: str, ice: bool = False) -> tuple[str, str]:
    label_en, label_fr = ICANS_LABEL[grade]
    or_more = (" or more", " ou plus") if more else ("", "")
    review = ("Consider medical review.", "Envisager un avis médical.") if ice else (NO_ICE_EN, NO_ICE_FR)
    by_en = f" Recorded by {by}." if by else ""
    by_fr = f" Saisi par {by}." if by else ""
    return (
        f"Suggests ICANS grade {grade}{or_more[0]} (ASTCT): {en}.{by_en} {review[0]} Reminder, not an order: "
        + label_en,
        f"Évoque une neurotoxicité (ICANS) de grade {grade}{or_more[1]} (ASTCT) : {fr}.{by_fr} {review[1]} "
        "Rappel, pas une prescription : " + label_fr,
    )


def test_icans_messages_and_basis_through_a_course() -> None:
    """Handwriting, consciousness, a seizure not resolved, a prolonged seizure, an ICE score:
    every domain's text, who recorded it, and "or more" while no ICE score is known."""
    minute = timedelta(minutes=1)
    r = IcansRule(one_bed_config(START).bed("b1"))
    events = [
        icans_obs(0, handwriting=Handwriting.UNABLE, by="n-a"),
        icans_obs(1, acvpu=Acvpu.VOICE, by="n-b", id="c1"),
        icans_obs(
            2,
            seizure=Seizure.CLINICAL,
            seizure_pattern=SeizurePattern.REPEATED_BACK_TO_BASELINE,
            seizure_resolved=False,
            by="n-a",
        ),
        icans_obs(
            3,
            seizure=Seizure.ELECTROGRAPHIC,
            seizure_pattern=SeizurePattern.SINGLE,
            seizure_over_5_min=True,
            by="n-a",
            id="s2",
        ),
        icans_obs(4, seizure=Seizure.NONE, ice_score=4, by="n-c"),
        icans_obs(5, ice_score=10, acvpu=Acvpu.ALERT, by="n-c"),
    ]
    _, out = run(r, events)
    hand = ("handwriting test unable", "test d'écriture impossible")
    voice = ("consciousness V (ACVPU)", "conscience V (ACVPU)")
    seizure3 = (
        "clinical seizure, repeated, back to baseline in between, not resolved (grade 4 if it lasts over 5 min)",
        "crise clinique, répétées, retour à l'état de base entre elles, non résolue (grade 4 au-delà de 5 min)",
    )
    seizure4 = ("seizure on EEG, single, over 5 min", "crise électrique (EEG), isolée, plus de 5 min")
    assert [(c.present, c.time - T0, c.value, c.unit, c.priority) for c in out] == [
        (True, timedelta(0), 1.0, "{grade}", Priority.MEDIUM),
        (True, minute, 2.0, "{grade}", Priority.HIGH),
        (True, 2 * minute, 3.0, "{grade}", Priority.HIGH),
        (True, 3 * minute, 4.0, "{grade}", Priority.HIGH),
        (True, 4 * minute, 2.0, "{grade}", Priority.HIGH),
        (False, 5 * minute, 2.0, "{grade}", Priority.HIGH),
    ]
    assert [c.details.get("basis") for c in out] == [
        [
            {
                "domain": "handwriting",
                "grade": 1,
                "value": "unable",
                "by": "n-a",
                "time": "2026-03-02T20:00:00Z",
            }
        ],
        [
            {
                "domain": "consciousness",
                "grade": 2,
                "value": "V",
                "by": "n-b",
                "time": "2026-03-02T20:01:00Z",
                "id": "c1",
            }
        ],
        [
            {
                "domain": "seizure",
                "grade": 3,
                "value": {
                    "seizure": "clinical",
                    "seizure_pattern": "repeated_back_to_baseline",
                    "seizure_resolved": False,
                },
                "by": "n-a",
                "time": "2026-03-02T20:02:00Z",
            }
        ],
        [
            {
                "domain": "seizure",
                "grade": 4,
                "value": {
                    "seizure": "electrographic",
                    "seizure_pattern": "single",
                    "seizure_over_5_min": True,
                },
                "by": "n-a",
                "time": "2026-03-02T20:03:00Z",
                "id": "s2",
            }
        ],
        [
            {"domain": "ice_score", "grade": 2, "value": 4, "by": "n-c", "time": "2026-03-02T20:04:00Z"},
            {
                "domain": "consciousness",
                "grade": 2,
                "value": "V",
                "by": "n-b",
                "time": "2026-03-02T20:01:00Z",
                "id": "c1",
            },
        ],
        None,
    ]
    assert out[-1].details == {}

    def joined(*parts: tuple[str, str]) -> tuple[str, str]:
        return "; ".join(p[0] for p in parts), " ; ".join(p[1] for p in parts)

    assert [(c.message.en, c.message.fr) for c in out if c.message is not None] == [
        icans_text(1, True, *hand, by="n-a"),
        icans_text(2, True, *joined(voice, hand), by="n-b"),
        icans_text(3, True, *joined(voice, hand, seizure3), by="n-a"),
        icans_text(4, False, *joined(voice, hand, seizure4), by="n-a"),
        # The ICE score supersedes the handwriting test; grade 2 from two domains, two authors.
        icans_text(2, False, *joined(("ICE score 4/10", "score ICE 4/10"), voice), by="n-b, n-c", ice=True),
        ("Neurological checks back to normal.", "Examens neurologiques redevenus normaux."),
    ]


def test_icans_motor_icp_and_correction_texts() -> None:
    def messages(*events: Observation) -> list[tuple[str, str]]:
        _, out = run(IcansRule(one_bed_config(START).bed("b1")), events)
        return [(c.message.en, c.message.fr) for c in out if c.message is not None]

    assert messages(icans_obs(motor_weakness=MotorWeakness.HEMIPARESIS, ice_score=9, by="n-a")) == [
        icans_text(
            4,
            False,
            "ICE score 9/10; deep focal motor weakness: hemiparesis",
            "score ICE 9/10 ; déficit moteur focal profond : hemiparesis",
            by="n-a",
            ice=True,
        )
    ]
    # No author recorded: no "Recorded by".
    assert messages(icans_obs(raised_icp=(IcpFinding.FOCAL_OEDEMA, IcpFinding.PAPILLOEDEMA))) == [
        icans_text(
            4,
            False,
            "raised intracranial pressure / oedema: focal_oedema, papilloedema",
            "hypertension intracrânienne / œdème : focal_oedema, papilloedema",
            by="",
        )
    ]
    corrected = messages(
        icans_obs(raised_icp=(IcpFinding.FOCAL_OEDEMA,), id="i1", by="n-a"),
        icans_obs(corrects="i1", ice_score=5, by="dr-d"),
    )
    en, fr = icans_text(2, False, "ICE score 5/10", "score ICE 5/10", by="dr-d", ice=True)
    assert corrected[1] == ("Entry i1 corrected by dr-d. " + en, "Saisie i1 corrigée par dr-d. " + fr)
    withdrawn = messages(
        icans_obs(ice_score=8, by="n-a"),
        icans_obs(1, ice_score=2, id="i2", by="n-a"),
        icans_obs(2, withdraws="i2", by="dr-d"),
    )
    en, fr = icans_text(1, False, "ICE score 8/10", "score ICE 8/10", by="n-a", ice=True)
    assert withdrawn[2] == ("Entry i2 withdrawn by dr-d. " + en, "Saisie i2 retirée par dr-d. " + fr)


# --------------------------------------------------------------------------- CRS inputs


def test_crs_values_project_an_observation() -> None:
    """Air without a flow records a flow of 0; treatments are named; other fields are left out."""
    obs = Observation(
        "w1",
        "b1",
        T0,
        o2_device="air",
        vasopressors=0,
        vasopressin=False,
        antipyretic_given=True,
        corticosteroid_given=False,
        anti_cytokine_given=True,
        ice_score=8,
    )
    assert crs_values(obs) == {
        "vasopressors": 0,
        "vasopressin": False,
        "o2_device": "air",
        "o2_flow_l_per_min": 0.0,
        "treatment": ("antipyretic", "anti_cytokine"),
    }
    assert crs_values(Observation("w1", "b1", T0, o2_device="nasal_cannula")) == {
        "o2_device": "nasal_cannula"
    }
    assert crs_values(Observation("w1", "b1", T0, o2_flow_l_per_min=2.0)) == {"o2_flow_l_per_min": 2.0}
    assert crs_values(Observation("w1", "b1", T0, antipyretic_given=False, ice_score=3)) == {}


def test_no_vasopressor_recorded_is_not_a_basis() -> None:
    """Vasopressors 0 and vasopressin false are recorded but do not set the grade: fever and
    hypotension do (grade 2, domain.md §2)."""
    r = crs_rule()
    fever_low = {Metric.TEMP_C: 38.4, Metric.SBP_MMHG: 85.0}
    events: list[Event] = [
        Observation("w1", "b1", T0, vasopressors=0, vasopressin=False, by="n"),
        VitalSample("w1", "b1", "m", T0 + timedelta(minutes=1), fever_low),
        VitalSample("w1", "b1", "m", T0 + timedelta(minutes=3), fever_low),
    ]
    _, out = run(r, events)
    assert [dict(c.details) for c in out] == [
        {
            "grade": 2,
            "basis": [
                {"domain": "fever", "value": 38.4, "source": "monitor"},
                {"domain": "hypotension", "value": 85.0, "measure": "sbp_mmhg", "source": "monitor"},
            ],
        }
    ]


def test_after_the_protocol_the_message_gives_no_planned_dose() -> None:
    r = crs_rule()
    end = START + timedelta(days=20)
    fever = {Metric.TEMP_C: 38.4}
    events: list[Event] = [
        BagHung("w1", "b1", START, "bag-1", 0.0375, 270),
        PumpReading("w1", "b1", "p1", START, PumpState.INFUSING, 10.0, 0.0),
        VitalSample("w1", "b1", "m", end, fever),
        VitalSample("w1", "b1", "m", end + timedelta(minutes=2), fever),
    ]
    _, out = run(r, events)
    assert out[0].message is not None
    assert "Infusion: protocol day 21, infusing 9.0 µg/day." in out[0].message.en
    assert "Perfusion : jour 21 du protocole, perfusion 9,0 µg/jour." in out[0].message.fr


def test_pump_bag_and_probe_events_update_the_crs_state() -> None:
    r = crs_rule()
    state, out = run(
        r,
        [
            BagHung("w1", "b1", START, "bag-2", 0.05, 270),
            PumpReading("w1", "b1", "p1", START, PumpState.INFUSING, 12.0, 0.0),
        ],
    )
    assert out == []
    assert (state.concentration_ug_per_ml, state.rate_ml_per_h) == (0.05, 12.0)
    assert r.current_ug_per_day(state) == pytest.approx(14.4)
    state, _ = run(r, [PumpReading("w1", "b1", "p1", START, PumpState.STOPPED, 12.0, 0.0)], state)
    assert state.rate_ml_per_h == 0.0
    assert r.current_ug_per_day(r.initial()) is None
    # A probe-off on the thermometer breaks the fever run; on SpO2 it does not.
    fever = [VitalSample("w1", "b1", "m", T0, {Metric.TEMP_C: 38.4, Metric.SBP_MMHG: 85.0})]
    state, _ = run(r, fever)
    for metric, fever_broken, low_broken in [
        ("spo2_pct", False, False),
        ("temp_c", True, False),
        ("sbp_mmhg", False, True),
        ("map_mmhg", False, True),
    ]:
        off = SourceHealth(
            "w1", "b1", f"monitor.{metric}", T0 + timedelta(seconds=10), Health.LOST, "probe-off"
        )
        after, candidates = r.step(state, off, off.time)
        assert list(candidates) == []
        assert (after.fever.run_count == 0, after.hypotension.run_count == 0) == (fever_broken, low_broken)
    back = SourceHealth("w1", "b1", "monitor.temp_c", T0 + timedelta(seconds=10), Health.CONNECTED)
    assert r.step(state, back, back.time) == (state, ())


def test_changed_handwriting_text_and_empty_saved_states() -> None:
    def messages(*events: Observation) -> list[tuple[str, str]]:
        _, out = run(IcansRule(one_bed_config(START).bed("b1")), events)
        return [(c.message.en, c.message.fr) for c in out if c.message is not None]

    assert messages(icans_obs(handwriting=Handwriting.CHANGED)) == [
        icans_text(1, True, "handwriting test changed", "test d'écriture modifié", by="")
    ]
    assert messages(icans_obs(handwriting=Handwriting.NORMAL)) == []
    icans_rule = IcansRule(one_bed_config(START).bed("b1"))
    assert icans_rule.load({}) == icans_rule.initial()
    r = crs_rule()
    assert r.load({}) == r.initial()
