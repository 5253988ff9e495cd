"""A low-pressure alert names the pressure it quotes: systolic or mean arterial pressure.

A monitor may send the mean arterial pressure (MAP) without the systolic. The vital-sign
rule's live message already names each pressure it has ("systolic 85 mmHg", "mean
60 mmHg"); the message of a HYPOTENSION completed by a late sample, and the CRS
suggestion's "hypotension (...)", are built from the one value a track keeps, and once
called it "systolic" whatever it was. Each side is tested: MAP only, systolic only, both;
and with both sent, the value kept is the pressure that is low (the mean when the
systolic is normal), so that no alert quotes a normal pressure as the reason.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.clinical.crs import CrsRule
from daemon.clinical.protocols import schedule_for
from daemon.clinical.vitals import (
    Judged,
    Track,
    Verdict,
    VitalsRule,
    dump_judged,
    dump_track,
    load_judged,
    load_track,
)
from daemon.events import AlertCandidate, Event, Health, Metric, SourceHealth, VitalSample
from tests.helpers import one_bed_config

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
T0 = START + timedelta(hours=12)  # on protocol
S = timedelta(seconds=1)

LIMITS_EN = "(limits: systolic < 90, mean < 65 mmHg)"
LIMITS_FR = "(seuils : systolique < 90, moyenne < 65 mmHg)"
LATE_EN = " Late data: measured 1 min before it arrived."
LATE_FR = " Données tardives : mesurées 1 min avant leur arrivée."


def vitals_rule() -> VitalsRule:
    cfg = one_bed_config(START)
    bed = cfg.bed("b1")
    return VitalsRule(cfg.thresholds_for("b1").vitals, bed, schedule_for(bed, cfg))


def crs_rule() -> CrsRule:
    cfg = one_bed_config(START)
    bed = cfg.bed("b1")
    return CrsRule(cfg.thresholds_for("b1").vitals, bed, schedule_for(bed, cfg))


def sample(time: datetime, values: dict[Metric, float]) -> VitalSample:
    return VitalSample("w1", "b1", "mon", time, values)


def steps(rule: Any, arrivals: list[tuple[Event, datetime]]) -> tuple[Any, list[AlertCandidate]]:
    state = rule.initial()
    out: list[AlertCandidate] = []
    for event, arrived in arrivals:
        state, candidates = rule.step(state, event, arrived)
        out.extend(candidates)
    return state, out


MAP_ONLY = ({Metric.MAP_MMHG: 60.0}, {Metric.MAP_MMHG: 58.0}, "map_mmhg", "mean 60 mmHg", "moyenne 60 mmHg")
SBP_ONLY = (
    {Metric.SBP_MMHG: 85.0},
    {Metric.SBP_MMHG: 83.0},
    "sbp_mmhg",
    "systolic 85 mmHg",
    "systolique 85 mmHg",
)
# Both sent and both low: the track keeps the systolic (test_vital_edges), and says so.
BOTH = (
    {Metric.SBP_MMHG: 85.0, Metric.MAP_MMHG: 60.0},
    {Metric.SBP_MMHG: 83.0, Metric.MAP_MMHG: 58.0},
    "sbp_mmhg",
    "systolic 85 mmHg",
    "systolique 85 mmHg",
)
CASES = [MAP_ONLY, SBP_ONLY, BOTH]
IDS = ["map-only", "sbp-only", "both"]


@pytest.mark.parametrize(("values", "late", "measure", "en", "fr"), CASES, ids=IDS)
def test_a_late_hypotension_names_the_pressure_of_the_sample_that_completed_it(
    values: dict[Metric, float], late: dict[Metric, float], measure: str, en: str, fr: str
) -> None:
    """Low pressure at 60 s and 90 s (30 s: under the 60 s onset delay); a late low sample at
    0 s completes the onset at 60 s, with the 60 s sample's value and measure."""
    rule = vitals_rule()
    arrivals: list[tuple[Event, datetime]] = [
        (sample(T0 + 60 * S, values), T0 + 60 * S),
        (sample(T0 + 90 * S, values), T0 + 90 * S),
        (sample(T0, late), T0 + 120 * S),
    ]
    _, out = steps(rule, arrivals)
    (alert,) = out
    assert (alert.condition, alert.time, alert.value, alert.unit) == (
        "HYPOTENSION",
        T0 + 60 * S,
        values[Metric(measure)],
        "mm[Hg]",
    )
    assert alert.message is not None
    assert (alert.message.en, alert.message.fr) == (
        f"Low blood pressure: {en} {LIMITS_EN}.{LATE_EN}",
        f"Pression artérielle basse : {fr} {LIMITS_FR}.{LATE_FR}",
    )
    assert dict(alert.details) == {"measure": measure, "late_s": 60.0}


@pytest.mark.parametrize(("values", "late", "measure", "en", "fr"), CASES, ids=IDS)
def test_a_live_hypotension_says_in_its_details_which_pressure_its_value_is(
    values: dict[Metric, float], late: dict[Metric, float], measure: str, en: str, fr: str
) -> None:
    rule = vitals_rule()
    _, out = steps(rule, [(sample(T0, values), T0), (sample(T0 + 60 * S, values), T0 + 60 * S)])
    (alert,) = out
    assert (alert.time, alert.value, dict(alert.details)) == (
        T0 + 60 * S,
        values[Metric(measure)],
        {"measure": measure},
    )
    assert alert.message is not None
    assert alert.message.en.startswith(f"Low blood pressure: {en}")
    assert alert.message.fr.startswith(f"Pression artérielle basse : {fr}")
    # Cleared: the value is the last sample's pressure, named too.
    normal = {m: 120.0 if m is Metric.SBP_MMHG else 80.0 for m in values}
    # hypotension_clear_s is 900 s: normal from 120 s to 1020 s.
    later = [(sample(T0 + (120 + 300 * i) * S, normal), T0 + (120 + 300 * i) * S) for i in range(4)]
    _, out = steps(rule, [(sample(T0, values), T0), (sample(T0 + 60 * S, values), T0 + 60 * S), *later])
    cleared = [c for c in out if not c.present]
    assert [(c.value, dict(c.details)) for c in cleared] == [(normal[Metric(measure)], {"measure": measure})]


@pytest.mark.parametrize(("values", "late", "measure", "en", "fr"), CASES, ids=IDS)
def test_a_late_sample_changing_the_track_at_its_own_time_names_its_pressure(
    values: dict[Metric, float], late: dict[Metric, float], measure: str, en: str, fr: str
) -> None:
    """The late sample's own measure goes with the change it makes at its own time: (1) low at
    0 s, in the band at 100 s, then a late low sample at 60 s completes the onset (60 s delay) at
    60 s; (2) low at 0 s and 60 s raise at 60 s, then a late normal sample at 30 s undoes it."""
    rule = vitals_rule()
    band = {m: 92.0 if m is Metric.SBP_MMHG else 67.0 for m in values}
    normal = {m: 120.0 if m is Metric.SBP_MMHG else 80.0 for m in values}
    _, out = steps(
        rule,
        [
            (sample(T0, values), T0),
            (sample(T0 + 100 * S, band), T0 + 100 * S),
            (sample(T0 + 60 * S, late), T0 + 120 * S),
        ],
    )
    assert [(c.present, c.time, c.value, dict(c.details)) for c in out] == [
        (True, T0 + 60 * S, late[Metric(measure)], {"measure": measure, "late_s": 60.0})
    ]
    _, out = steps(
        rule,
        [
            (sample(T0, values), T0),
            (sample(T0 + 60 * S, values), T0 + 60 * S),
            (sample(T0 + 30 * S, normal), T0 + 70 * S),
        ],
    )
    assert [(c.present, c.time, c.value, dict(c.details)) for c in out] == [
        (True, T0 + 60 * S, values[Metric(measure)], {"measure": measure}),
        (False, T0 + 30 * S, normal[Metric(measure)], {"measure": measure, "late_s": 40.0}),
    ]


@pytest.mark.parametrize(("values", "late", "measure", "en", "fr"), CASES, ids=IDS)
def test_a_late_probe_off_undoing_a_hypotension_names_the_pressure_before_it(
    values: dict[Metric, float], late: dict[Metric, float], measure: str, en: str, fr: str
) -> None:
    """Low at 0 s and 60 s: raised at 60 s. A probe-off of the pressure the track reads, at 30 s,
    arriving at 70 s: the run was not continuous, the alert is cleared at 30 s with the value
    and measure of the 0 s sample, the latest before the probe-off."""
    rule = vitals_rule()
    off = SourceHealth("w1", "b1", f"monitor.{measure}", T0 + 30 * S, Health.LOST, "probe-off")
    _, out = steps(
        rule,
        [(sample(T0, values), T0), (sample(T0 + 60 * S, late), T0 + 60 * S), (off, T0 + 70 * S)],
    )
    assert [(c.condition, c.present, c.time, c.value, dict(c.details)) for c in out] == [
        ("HYPOTENSION", True, T0 + 60 * S, late[Metric(measure)], {"measure": measure}),
        ("HYPOTENSION", False, T0 + 30 * S, values[Metric(measure)], {"measure": measure, "late_s": 40.0}),
    ]
    assert out[-1].message is not None
    assert (out[-1].message.en, out[-1].message.fr) == (
        f"Blood pressure back to normal.{LATE_EN}",
        f"Pression artérielle revenue à la normale.{LATE_FR}",
    )


CRS_MEASURES = [
    (
        {Metric.MAP_MMHG: 60.0},
        "map_mmhg",
        "hypotension (mean arterial pressure 60 mmHg) without vasopressor",
        "hypotension (pression artérielle moyenne 60 mmHg) sans vasopresseur",
    ),
    (
        {Metric.SBP_MMHG: 85.0},
        "sbp_mmhg",
        "hypotension (systolic 85 mmHg) without vasopressor",
        "hypotension (systolique 85 mmHg) sans vasopresseur",
    ),
    (
        {Metric.SBP_MMHG: 85.0, Metric.MAP_MMHG: 60.0},
        "sbp_mmhg",
        "hypotension (systolic 85 mmHg) without vasopressor",
        "hypotension (systolique 85 mmHg) sans vasopresseur",
    ),
]


def _crs_text(alert: AlertCandidate) -> tuple[str, str, list[dict[str, Any]]]:
    assert alert.message is not None
    return alert.message.en, alert.message.fr, alert.details["basis"]


@pytest.mark.parametrize("late", [False, True], ids=["in-order", "late"])
@pytest.mark.parametrize(("values", "measure", "en", "fr"), CRS_MEASURES, ids=IDS)
def test_the_crs_suggestion_names_the_pressure_it_quotes(
    values: dict[Metric, float], measure: str, en: str, fr: str, late: bool
) -> None:
    """Fever and low pressure for 60 s: CRS grade 2, in order or completed by a late sample."""
    fever = {Metric.TEMP_C: 38.4, **values}
    first, second = sample(T0, fever), sample(T0 + 120 * S, fever)
    arrivals: list[tuple[Event, datetime]] = [(first, T0), (second, T0 + 120 * S)]
    if late:
        # 120 s and 150 s (30 s: no onset), then the 0 s sample: both onsets complete at 120 s.
        arrivals = [
            (second, T0 + 120 * S),
            (sample(T0 + 150 * S, fever), T0 + 150 * S),
            (first, T0 + 180 * S),
        ]
    _, out = steps(crs_rule(), arrivals)
    graded = [c for c in out if c.details.get("grade") == 2]
    assert graded, out
    text_en, text_fr, basis = _crs_text(graded[-1])
    assert en in text_en
    assert fr in text_fr
    assert "systolic" not in text_en or measure == "sbp_mmhg"
    assert {
        "domain": "hypotension",
        "value": values[Metric(measure)],
        "measure": measure,
        "source": "monitor",
    } in basis
    assert ("late_s" in graded[-1].details) is late


def _graded(out: list[AlertCandidate], grade: int) -> AlertCandidate:
    [alert] = [c for c in out if c.details.get("grade") == grade]
    return alert


def test_a_late_fever_keeps_the_pressure_the_hypotension_track_names() -> None:
    """Low mean pressure (no systolic) at 0 s and 60 s: hypotension, no CRS grade without fever.
    Fever at 120 s and 150 s, then a late fever sample at 0 s completes the fever at 120 s: grade
    2, whose hypotension is still the mean arterial pressure (only the fever track changed)."""
    low_map, fever = {Metric.MAP_MMHG: 60.0}, {Metric.TEMP_C: 38.4}
    arrivals: list[tuple[Event, datetime]] = [
        (sample(T0, low_map), T0),
        (sample(T0 + 60 * S, low_map), T0 + 60 * S),
        (sample(T0 + 120 * S, fever), T0 + 120 * S),
        (sample(T0 + 150 * S, fever), T0 + 150 * S),
        (sample(T0 - S, fever), T0 + 180 * S),
    ]
    _, out = steps(crs_rule(), arrivals)
    alert = _graded(out, 2)
    assert (alert.time, alert.details["late_s"]) == (T0 + 120 * S, 60.0)
    text_en, text_fr, basis = _crs_text(alert)
    assert "hypotension (mean arterial pressure 60 mmHg) without vasopressor" in text_en
    assert "hypotension (pression artérielle moyenne 60 mmHg) sans vasopresseur" in text_fr
    assert {"domain": "hypotension", "value": 60.0, "measure": "map_mmhg", "source": "monitor"} in basis


def test_a_late_hypotension_names_the_pressure_of_its_change_not_of_the_newest_sample() -> None:
    """Fever from 0 s (grade 1 at 120 s). Low mean pressure alone at 190 s, then a monitor sending
    the systolic too at 200 s (85 mmHg); a late mean pressure at 130 s completes the hypotension
    at 190 s: grade 2 at 190 s, quoting that sample's mean pressure, not the newer systolic."""
    fever = {Metric.TEMP_C: 38.4}
    arrivals: list[tuple[Event, datetime]] = [
        (sample(T0, fever), T0),
        (sample(T0 + 120 * S, fever), T0 + 120 * S),
        (sample(T0 + 190 * S, {Metric.MAP_MMHG: 58.0}), T0 + 190 * S),
        (sample(T0 + 200 * S, {Metric.SBP_MMHG: 85.0, Metric.MAP_MMHG: 59.0}), T0 + 200 * S),
        (sample(T0 + 130 * S, {Metric.MAP_MMHG: 60.0}), T0 + 210 * S),
    ]
    _, out = steps(crs_rule(), arrivals)
    alert = _graded(out, 2)
    assert (alert.time, alert.details["late_s"]) == (T0 + 190 * S, 20.0)
    text_en, _, basis = _crs_text(alert)
    assert "hypotension (mean arterial pressure 58 mmHg) without vasopressor" in text_en
    assert {"domain": "hypotension", "value": 58.0, "measure": "map_mmhg", "source": "monitor"} in basis


def test_window_entries_and_tracks_keep_the_measure_and_old_rows_still_load() -> None:
    item = Judged(T0, Verdict.ABNORMAL, 60.0, Metric.MAP_MMHG)
    assert dump_judged(item) == ["2026-03-02T20:00:00Z", "abnormal", 60.0, "map_mmhg"]
    assert load_judged(dump_judged(item)) == item
    # A row written before the measure was kept: three fields, no measure.
    assert load_judged(["2026-03-02T20:00:00Z", "abnormal", 60.0]) == Judged(T0, Verdict.ABNORMAL, 60.0)
    assert dump_judged(Judged(T0, None, 0.0)) == ["2026-03-02T20:00:00Z", None, 0.0]
    track = Track(value=60.0, measure=Metric.MAP_MMHG, last_time=T0, recent=(item,), base=Track())
    assert load_track(dump_track(track)) == track
    assert load_track({"active": False}).measure is None


# --- systolic normal, mean low: the alert quotes the mean ------------------------------------------
# Either pressure below its limit is hypotension (daemon/clinical/vitals.py, _hypotension);
# the value an alert carries and quotes is then the one that is low, not the normal
# systolic beside it. Limits from the config: systolic < 90, mean < 65 mmHg.

MEAN_LOW = {Metric.SBP_MMHG: 118.0, Metric.MAP_MMHG: 60.0}
MEAN_LOW_LATE = {Metric.SBP_MMHG: 118.0, Metric.MAP_MMHG: 58.0}


def test_a_late_hypotension_by_the_mean_alone_quotes_the_mean() -> None:
    rule = vitals_rule()
    arrivals: list[tuple[Event, datetime]] = [
        (sample(T0 + 60 * S, MEAN_LOW), T0 + 60 * S),
        (sample(T0 + 90 * S, MEAN_LOW), T0 + 90 * S),
        (sample(T0, MEAN_LOW_LATE), T0 + 120 * S),
    ]
    _, out = steps(rule, arrivals)
    (alert,) = out
    assert (alert.value, dict(alert.details)) == (60.0, {"measure": "map_mmhg", "late_s": 60.0})
    assert alert.message is not None
    assert (alert.message.en, alert.message.fr) == (
        f"Low blood pressure: mean 60 mmHg {LIMITS_EN}.{LATE_EN}",
        f"Pression artérielle basse : moyenne 60 mmHg {LIMITS_FR}.{LATE_FR}",
    )


@pytest.mark.parametrize(
    ("values", "value", "measure"),
    [
        ({Metric.SBP_MMHG: 118.0, Metric.MAP_MMHG: 64.0}, 64.0, "map_mmhg"),  # mean just under 65
        ({Metric.SBP_MMHG: 89.0, Metric.MAP_MMHG: 60.0}, 89.0, "sbp_mmhg"),  # both low: systolic first
        ({Metric.SBP_MMHG: 100.0, Metric.DBP_MMHG: 40.0}, 60.0, "map_mmhg"),  # estimated mean 60
    ],
    ids=["mean-only", "both-low", "estimated-mean"],
)
def test_a_live_hypotension_carries_the_pressure_that_is_low(
    values: dict[Metric, float], value: float, measure: str
) -> None:
    rule = vitals_rule()
    _, out = steps(rule, [(sample(T0, values), T0), (sample(T0 + 60 * S, values), T0 + 60 * S)])
    (alert,) = out
    assert (alert.value, dict(alert.details)) == (value, {"measure": measure})


def test_a_mean_at_its_limit_with_a_normal_systolic_is_not_hypotension() -> None:
    """The other side of the edge: mean 65 mmHg is not below 65."""
    rule = vitals_rule()
    values = {Metric.SBP_MMHG: 118.0, Metric.MAP_MMHG: 65.0}
    _, out = steps(rule, [(sample(T0, values), T0), (sample(T0 + 60 * S, values), T0 + 60 * S)])
    assert out == []


@pytest.mark.parametrize("late", [False, True], ids=["in-order", "late"])
def test_the_crs_suggestion_quotes_the_low_mean_beside_a_normal_systolic(late: bool) -> None:
    fever = {Metric.TEMP_C: 38.4, **MEAN_LOW}
    first, second = sample(T0, fever), sample(T0 + 120 * S, fever)
    arrivals: list[tuple[Event, datetime]] = [(first, T0), (second, T0 + 120 * S)]
    if late:
        arrivals = [
            (second, T0 + 120 * S),
            (sample(T0 + 150 * S, fever), T0 + 150 * S),
            (first, T0 + 180 * S),
        ]
    _, out = steps(crs_rule(), arrivals)
    graded = [c for c in out if c.details.get("grade") == 2]
    assert graded, out
    text_en, text_fr, basis = _crs_text(graded[-1])
    assert "hypotension (mean arterial pressure 60 mmHg) without vasopressor" in text_en
    assert "hypotension (pression artérielle moyenne 60 mmHg) sans vasopresseur" in text_fr
    assert {"domain": "hypotension", "value": 60.0, "measure": "map_mmhg", "source": "monitor"} in basis


def test_a_late_fever_quotes_the_temperature_of_its_change_not_the_newest_fever() -> None:
    """Fever 38.4 °C at 120 s and 39.1 °C at 180 s (a run of 60 s: no fever yet); a late 38.5 °C
    at 0 s completes the run: fever from 120 s (2 samples over 120 s), grade 1 at 120 s. The
    suggestion quotes the 38.4 of its own time, not the 39.1 measured later."""
    arrivals: list[tuple[Event, datetime]] = [
        (sample(T0 + 120 * S, {Metric.TEMP_C: 38.4}), T0 + 120 * S),
        (sample(T0 + 180 * S, {Metric.TEMP_C: 39.1}), T0 + 180 * S),
        (sample(T0, {Metric.TEMP_C: 38.5}), T0 + 190 * S),
    ]
    _, out = steps(crs_rule(), arrivals)
    alert = _graded(out, 1)
    assert alert.time == T0 + 120 * S
    text_en, text_fr, basis = _crs_text(alert)
    assert "fever 38.4 °C" in text_en
    assert "fièvre 38,4 °C" in text_fr
    assert basis[0] == {"domain": "fever", "value": 38.4, "source": "monitor"}


def test_a_track_saved_before_its_latest_abnormal_value_was_kept_keeps_its_pressure_name() -> None:
    """A CRS state written by an earlier version: its hypotension track has a value and a measure
    (mean pressure) but no latest abnormal value. Graded again, the suggestion names the mean
    pressure, not the systolic that is assumed only when no measure was kept at all."""
    rule = crs_rule()
    state, _ = steps(
        rule,
        [
            (sample(T0, {Metric.TEMP_C: 38.4, Metric.MAP_MMHG: 60.0}), T0),
            (sample(T0 + 120 * S, {Metric.TEMP_C: 38.4, Metric.MAP_MMHG: 60.0}), T0 + 120 * S),
        ],
    )
    assert state.grade == 2
    saved = dict(rule.dump(state))
    for name in ("fever", "hypotension"):
        saved[name] = {k: v for k, v in saved[name].items() if not k.startswith("abnormal_")}
    old = rule.load(saved)
    assert old.hypotension.abnormal_value is None
    assert old.hypotension.measure is Metric.MAP_MMHG
    basis = rule.basis(old, T0 + 121 * S)
    assert {"domain": "hypotension", "value": 60.0, "measure": "map_mmhg", "source": "monitor"} in basis
