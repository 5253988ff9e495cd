"""Every vital-sign limit and time limit, one value or instant on each side of its edge.

All numbers are the configured defaults (``daemon.config.VitalThresholds``); each table
row names its source. "Just inside" and "just outside" are 0.01 of the unit for values
and 1 ms for times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from daemon.clinical.protocols import schedule_for
from daemon.clinical.vitals import (
    PHYSIOLOGICAL,
    Condition,
    Noise,
    Track,
    Transition,
    Verdict,
    VitalsRule,
    classify,
    classify_measured,
    deciding_metric,
    folded,
    interrupt,
    judge,
    late_dropped,
    late_note,
    load_track,
    mean_arterial_pressure,
    noise_for,
)
from daemon.config import VitalThresholds
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
    Text,
    Tick,
    VitalSample,
)
from tests.helpers import one_bed_config

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
T0 = START + timedelta(hours=12)  # on protocol
TH = VitalThresholds()
MS = timedelta(milliseconds=1)

A, B, N = Verdict.ABNORMAL, Verdict.BAND, Verdict.NORMAL


def test_the_defaults_these_tables_assume() -> None:
    """The edges below are written out in numbers: they must be the configured defaults."""
    assert (TH.fever_c, TH.fever_hysteresis_c) == (38.0, 0.3)
    assert (TH.hypotension_sbp_mmhg, TH.hypotension_map_mmhg, TH.hypotension_hysteresis_mmhg) == (
        90.0,
        65.0,
        5.0,
    )
    assert (TH.hypoxia_spo2_pct, TH.hypoxia_hysteresis_pct) == (92.0, 2.0)
    assert (TH.tachycardia_per_min, TH.tachycardia_hysteresis_per_min) == (131.0, 10.0)
    assert (TH.tachypnoea_per_min, TH.tachypnoea_hysteresis_per_min) == (25.0, 3.0)
    assert TH.confirm_samples == 2


# --------------------------------------------------------------------------- classification

# (condition, metric, value, verdict, source). The band is the hysteresis: between the
# alarm limit and the limit plus/minus the hysteresis, a value neither alarms nor clears.
CLASSIFY = [
    # domain.md §2 ASTCT: fever is >= 38.0 °C; hysteresis 0.3 °C (site choice).
    (Condition.FEVER, Metric.TEMP_C, 38.01, A, "ASTCT fever >= 38.0"),
    (Condition.FEVER, Metric.TEMP_C, 38.0, A, "ASTCT fever >= 38.0"),
    (Condition.FEVER, Metric.TEMP_C, 37.99, B, "just below the limit: band"),
    (Condition.FEVER, Metric.TEMP_C, 37.7, B, "38.0 - 0.3: still band"),
    (Condition.FEVER, Metric.TEMP_C, 37.69, N, "below 37.7: normal"),
    # domain.md §2 (ASTCT adaptations): SBP < 90 mmHg; hysteresis 5 mmHg (site choice).
    (Condition.HYPOTENSION, Metric.SBP_MMHG, 89.99, A, "SBP < 90"),
    (Condition.HYPOTENSION, Metric.SBP_MMHG, 90.0, B, "SBP 90 is not < 90: band"),
    (Condition.HYPOTENSION, Metric.SBP_MMHG, 94.99, B, "below 90 + 5: band"),
    (Condition.HYPOTENSION, Metric.SBP_MMHG, 95.0, N, "90 + 5: normal"),
    # domain.md §3 Surviving Sepsis: MAP < 65 mmHg; same hysteresis.
    (Condition.HYPOTENSION, Metric.MAP_MMHG, 64.99, A, "MAP < 65"),
    (Condition.HYPOTENSION, Metric.MAP_MMHG, 65.0, B, "MAP 65 is not < 65: band"),
    (Condition.HYPOTENSION, Metric.MAP_MMHG, 69.99, B, "below 65 + 5: band"),
    (Condition.HYPOTENSION, Metric.MAP_MMHG, 70.0, N, "65 + 5: normal"),
    # domain.md §3 NEWS2 scale 1: SpO2 <= 91 % scores 3, so alarm below 92; hysteresis 2 %.
    (Condition.HYPOXIA, Metric.SPO2_PCT, 91.99, A, "SpO2 < 92"),
    (Condition.HYPOXIA, Metric.SPO2_PCT, 92.0, B, "SpO2 92 is not < 92: band"),
    (Condition.HYPOXIA, Metric.SPO2_PCT, 93.99, B, "below 92 + 2: band"),
    (Condition.HYPOXIA, Metric.SPO2_PCT, 94.0, N, "92 + 2: normal"),
    # domain.md §3 NEWS2: pulse >= 131 /min scores 3; hysteresis 10 /min (site choice).
    (Condition.TACHYCARDIA, Metric.HR_PER_MIN, 131.0, A, "pulse >= 131"),
    (Condition.TACHYCARDIA, Metric.HR_PER_MIN, 130.99, B, "just below 131: band"),
    (Condition.TACHYCARDIA, Metric.HR_PER_MIN, 121.0, B, "131 - 10: still band"),
    (Condition.TACHYCARDIA, Metric.HR_PER_MIN, 120.99, N, "below 121: normal"),
    # domain.md §3 NEWS2: respiration >= 25 /min scores 3; hysteresis 3 /min (site choice).
    (Condition.TACHYPNOEA, Metric.RR_PER_MIN, 25.0, A, "respiration >= 25"),
    (Condition.TACHYPNOEA, Metric.RR_PER_MIN, 24.99, B, "just below 25: band"),
    (Condition.TACHYPNOEA, Metric.RR_PER_MIN, 22.0, B, "25 - 3: still band"),
    (Condition.TACHYPNOEA, Metric.RR_PER_MIN, 21.99, N, "below 22: normal"),
]


@pytest.mark.parametrize(("condition", "metric", "value", "verdict", "source"), CLASSIFY)
def test_limit_and_hysteresis_edges(
    condition: Condition, metric: Metric, value: float, verdict: Verdict, source: str
) -> None:
    assert classify(condition, {metric: value}, TH) == (verdict, value), source


@pytest.mark.parametrize(
    ("sbp", "map_mmhg", "verdict"),
    [
        # Either pressure below its limit is hypotension (domain.md §2 and §3).
        (89.99, 80.0, A),
        (120.0, 64.99, A),
        # Normal needs both pressures clear of their bands; one in its band keeps the band.
        (95.0, 70.0, N),
        (94.99, 70.0, B),
        (95.0, 69.99, B),
        (120.0, 65.0, B),
    ],
)
def test_hypotension_combines_sbp_and_map(sbp: float, map_mmhg: float, verdict: Verdict) -> None:
    values = {Metric.SBP_MMHG: sbp, Metric.MAP_MMHG: map_mmhg}
    judged = classify(Condition.HYPOTENSION, values, TH)
    # The track keeps the systolic, unless only the mean is below its limit: an alert
    # quotes the pressure that is low (tests/test_pressure_measure.py).
    mean_alone = verdict is A and sbp >= TH.hypotension_sbp_mmhg
    assert judged == (verdict, map_mmhg if mean_alone else sbp)
    assert deciding_metric(Condition.HYPOTENSION, values, TH) is (
        Metric.MAP_MMHG if mean_alone else Metric.SBP_MMHG
    )


def test_hypotension_from_map_alone_keeps_the_map() -> None:
    assert classify(Condition.HYPOTENSION, {Metric.MAP_MMHG: 60.0}, TH) == (A, 60.0)


@pytest.mark.parametrize(
    ("dbp", "estimated"),
    [
        (89.99, (89.99 + (90.0 - 89.99) / 3.0, True)),  # DBP just below SBP: estimated
        (90.0, (None, False)),  # DBP equal to SBP is not a pressure pair: no estimate
        (95.0, (None, False)),
    ],
)
def test_map_estimate_needs_dbp_below_sbp(dbp: float, estimated: tuple[float | None, bool]) -> None:
    assert mean_arterial_pressure({Metric.SBP_MMHG: 90.0, Metric.DBP_MMHG: dbp}, TH) == estimated


@pytest.mark.parametrize("condition", PHYSIOLOGICAL)
@pytest.mark.parametrize(
    "values",
    [
        {Metric.TEMP_C: 38.2, Metric.SPO2_PCT: 89.0, Metric.HR_PER_MIN: 125.0, Metric.RR_PER_MIN: 26.0},
        {Metric.SBP_MMHG: 120.0, Metric.MAP_MMHG: 60.0},
        {Metric.SBP_MMHG: 85.0, Metric.DBP_MMHG: 40.0},
        {Metric.SBP_MMHG: 100.0, Metric.DBP_MMHG: 45.0},
        {Metric.MAP_MMHG: 70.0},
        {Metric.DBP_MMHG: 50.0},
        {},
    ],
)
def test_classify_measured_is_classify_with_the_deciding_metric(
    condition: Condition, values: dict[Metric, float]
) -> None:
    judged = classify(condition, values, TH)
    expected = None if judged is None else (*judged, deciding_metric(condition, values, TH))
    assert classify_measured(condition, values, TH) == expected


def test_classify_refuses_a_technical_condition() -> None:
    with pytest.raises(ValueError, match="PROBE_OFF"):
        classify(Condition.PROBE_OFF, {Metric.SPO2_PCT: 90.0}, TH)


# --------------------------------------------------------------------------- the rule in time

# (condition, metric, abnormal, band, normal): values well inside each region (the edges
# themselves are pinned above).
RULE_CASES = [
    (Condition.FEVER, Metric.TEMP_C, 38.4, 37.8, 37.2),
    (Condition.HYPOTENSION, Metric.SBP_MMHG, 85.0, 92.0, 110.0),
    (Condition.HYPOXIA, Metric.SPO2_PCT, 88.0, 93.0, 97.0),
    (Condition.TACHYCARDIA, Metric.HR_PER_MIN, 140.0, 125.0, 90.0),
    (Condition.TACHYPNOEA, Metric.RR_PER_MIN, 30.0, 23.0, 16.0),
]
IDS = [c[0].value.lower() for c in RULE_CASES]


def vitals_rule() -> VitalsRule:
    cfg = one_bed_config(START)
    bed = cfg.bed("b1")
    return VitalsRule(cfg.thresholds_for("b1").vitals, bed, schedule_for(bed, cfg))


def sample(time: datetime, metric: Metric, value: float) -> VitalSample:
    return VitalSample("w1", "b1", "mon-1", time, {metric: value})


def feed(
    rule: VitalsRule, items: Sequence[tuple[datetime, Metric, float]], arrived: datetime | None = None
) -> list[tuple[str, bool, datetime]]:
    """Samples judged at ``arrived`` (default: their own time); (condition, present, since)."""
    state = rule.initial()
    out: list[AlertCandidate] = []
    for time, metric, value in items:
        state, candidates = rule.step(state, sample(time, metric, value), arrived or time)
        out.extend(candidates)
    return [(c.condition, c.present, c.time) for c in out]


@pytest.mark.parametrize(("condition", "metric", "bad", "band", "normal"), RULE_CASES, ids=IDS)
@pytest.mark.parametrize("raised", [False, True], ids=["just-before-delay", "at-delay"])
def test_onset_delay_edges(
    condition: Condition, metric: Metric, bad: float, band: float, normal: float, raised: bool
) -> None:
    """Defaults (config.py, site choices): onset after 2 abnormal samples, the first at least
    <condition>_delay_s (fever 120 s, hypotension 60 s, hypoxia 30 s, pulse and breathing
    120 s) before the last."""
    delay = timedelta(seconds=noise_for(condition, TH).delay_s)
    second = T0 + delay if raised else T0 + delay - MS
    got = feed(vitals_rule(), [(T0, metric, bad), (second, metric, bad)])
    assert got == ([(condition.value, True, second)] if raised else [])


@pytest.mark.parametrize(("condition", "metric", "bad", "band", "normal"), RULE_CASES, ids=IDS)
def test_one_abnormal_sample_never_raises_even_after_the_delay(
    condition: Condition, metric: Metric, bad: float, band: float, normal: float
) -> None:
    """confirm_samples = 2 (config.py: one artifact never alarms)."""
    late = T0 + timedelta(hours=1)
    assert feed(vitals_rule(), [(T0, metric, normal), (late, metric, bad)]) == []


@pytest.mark.parametrize(("condition", "metric", "bad", "band", "normal"), RULE_CASES, ids=IDS)
@pytest.mark.parametrize("breaker", ["band", "normal"])
def test_a_band_or_normal_value_breaks_an_onset(
    condition: Condition, metric: Metric, bad: float, band: float, normal: float, breaker: str
) -> None:
    """A value in the hysteresis band, or a normal one, does not count towards an onset and
    ends the abnormal run (vitals.py docstring): the delay restarts at the next abnormal sample."""
    delay = timedelta(seconds=noise_for(condition, TH).delay_s)
    between = band if breaker == "band" else normal
    items = [(T0, metric, bad), (T0 + delay / 2, metric, between), (T0 + delay, metric, bad)]
    assert feed(vitals_rule(), items) == []
    # Two delays after the first abnormal sample, but 1 ms short of one after the restart.
    items += [(T0 + 2 * delay - MS, metric, bad)]
    assert feed(vitals_rule(), items) == []
    items += [(T0 + 2 * delay, metric, bad)]
    assert feed(vitals_rule(), items) == [(condition.value, True, T0 + 2 * delay)]


def raised_then(
    condition: Condition, metric: Metric, bad: float, after: Sequence[tuple[float, float]]
) -> list[tuple[str, bool, datetime]]:
    """Raised at T0 + delay, then ``after``: (seconds after the onset, value)."""
    onset = T0 + timedelta(seconds=noise_for(condition, TH).delay_s)
    items = [(T0, metric, bad), (onset, metric, bad)]
    items += [(onset + timedelta(seconds=s), metric, v) for s, v in after]
    got = feed(vitals_rule(), items)
    assert got[0] == (condition.value, True, onset)
    return got[1:]


@pytest.mark.parametrize(("condition", "metric", "bad", "band", "normal"), RULE_CASES, ids=IDS)
@pytest.mark.parametrize("cleared", [False, True], ids=["just-before-clear", "at-clear"])
def test_clearing_time_edges(
    condition: Condition, metric: Metric, bad: float, band: float, normal: float, cleared: bool
) -> None:
    """Defaults (config.py, site choices): cleared once values stayed normal for
    <condition>_clear_s (fever 1800 s, hypotension 900 s, the others 300 s)."""
    clear_s = noise_for(condition, TH).clear_s
    last = clear_s if cleared else clear_s - 0.001
    got = raised_then(condition, metric, bad, [(60, normal), (60 + last, normal)])
    onset = T0 + timedelta(seconds=noise_for(condition, TH).delay_s)
    end = onset + timedelta(seconds=60 + last)
    assert got == ([(condition.value, False, end)] if cleared else [])


@pytest.mark.parametrize(("condition", "metric", "bad", "band", "normal"), RULE_CASES, ids=IDS)
def test_hysteresis_band_never_clears(
    condition: Condition, metric: Metric, bad: float, band: float, normal: float
) -> None:
    """A value inside the hysteresis band neither clears nor keeps a clearing run going:
    without the hysteresis these values would be normal and the alarm would clear."""
    clear_s = noise_for(condition, TH).clear_s
    steps = [(60 + k * clear_s / 4, band) for k in range(9)]  # two clearing times in the band
    assert raised_then(condition, metric, bad, steps) == []
    # A band value inside a normal run restarts the clearing time from the next normal one.
    steps = [(60, normal), (60 + clear_s / 2, band), (60 + clear_s, normal), (60 + 1.5 * clear_s, normal)]
    assert raised_then(condition, metric, bad, steps) == []
    steps += [(60 + 2 * clear_s, normal)]
    onset = T0 + timedelta(seconds=noise_for(condition, TH).delay_s)
    assert raised_then(condition, metric, bad, steps) == [
        (condition.value, False, onset + timedelta(seconds=60 + 2 * clear_s))
    ]


@pytest.mark.parametrize(("condition", "metric", "bad", "band", "normal"), RULE_CASES, ids=IDS)
@pytest.mark.parametrize("judged", [True, False], ids=["at-window", "just-beyond-window"])
def test_late_window_edges(
    condition: Condition, metric: Metric, bad: float, band: float, normal: float, judged: bool
) -> None:
    """<condition>_late_s (config.py, site choices: fever 3600 s, others 900 s): a sample
    that old on arrival is judged; one 1 ms older is stored but not judged."""
    noise = noise_for(condition, TH)
    second = T0 + timedelta(seconds=noise.delay_s)
    lateness = timedelta(seconds=noise.late_s) + (timedelta(0) if judged else MS)
    rule = vitals_rule()
    state, first = rule.step(rule.initial(), sample(T0, metric, bad), T0)
    state, out = rule.step(state, sample(second, metric, bad), second + lateness)
    assert first == []
    assert [(c.condition, c.present, c.time) for c in out] == (
        [(condition.value, True, second)] if judged else []
    )


@pytest.mark.parametrize(
    ("values", "late_by_s", "dropped"),
    [
        # config.py defaults: fever_late_s 3600, news2_late_s 3600, the others 900.
        ({Metric.TEMP_C: 37.0}, 3600.0, []),
        ({Metric.TEMP_C: 37.0}, 3600.001, ["fever", "news2"]),
        ({Metric.SBP_MMHG: 120.0}, 900.0, []),
        ({Metric.SBP_MMHG: 120.0}, 900.001, ["hypotension"]),
        ({Metric.DBP_MMHG: 80.0}, 900.001, ["hypotension"]),
        ({Metric.MAP_MMHG: 80.0}, 900.001, ["hypotension"]),
        ({Metric.SPO2_PCT: 97.0}, 900.0, []),
        ({Metric.SPO2_PCT: 97.0}, 900.001, ["hypoxia"]),
        ({Metric.HR_PER_MIN: 80.0}, 900.0, []),
        ({Metric.HR_PER_MIN: 80.0}, 900.001, ["tachycardia"]),
        ({Metric.RR_PER_MIN: 16.0}, 900.0, []),
        ({Metric.RR_PER_MIN: 16.0}, 900.001, ["tachypnoea"]),
        ({Metric.RR_PER_MIN: 16.0}, 3600.001, ["tachypnoea", "news2"]),
    ],
)
def test_late_dropped_edges_per_rule(
    values: dict[Metric, float], late_by_s: float, dropped: list[str]
) -> None:
    event = VitalSample("w1", "b1", "m", T0, values)
    assert late_dropped(event, TH, T0 + timedelta(seconds=late_by_s)) == dropped


@pytest.mark.parametrize(
    ("obs", "dropped"),
    [
        # news2_late_s = 3600 s; only what NEWS2 scores (consciousness, oxygen) has a window.
        (Observation("w1", "b1", T0, acvpu=Acvpu.VOICE), ["news2"]),
        (Observation("w1", "b1", T0, o2_device="nasal_cannula"), ["news2"]),
        (Observation("w1", "b1", T0, o2_flow_l_per_min=2.0), ["news2"]),
        (Observation("w1", "b1", T0, vasopressors=1), []),
        (Observation("w1", "b1", T0, ice_score=8), []),
    ],
)
def test_late_dropped_observations(obs: Observation, dropped: list[str]) -> None:
    assert late_dropped(obs, TH, T0 + timedelta(seconds=3600)) == []
    assert late_dropped(obs, TH, T0 + timedelta(seconds=3600.001)) == dropped


# --------------------------------------------------------------------------- technical conditions


def probe_off(time: datetime, metric: Metric = Metric.SPO2_PCT) -> SourceHealth:
    return SourceHealth("w1", "b1", f"monitor.{metric.value}", time, Health.LOST, "probe-off")


@pytest.mark.parametrize(
    ("after", "raised"),
    [(timedelta(seconds=30) - MS, False), (timedelta(seconds=30), True)],
    ids=["just-before", "at-delay"],
)
@pytest.mark.parametrize("via", ["sentinel", "tick"])
def test_probe_off_delay_edges(after: timedelta, raised: bool, via: str) -> None:
    """probe_off_delay_s = 30 s (config.py, site choice), judged on the next sentinel's
    time or on the daemon's clock."""
    rule = vitals_rule()
    state, out = rule.step(rule.initial(), probe_off(T0), T0)
    assert out == []
    event: Event = probe_off(T0 + after) if via == "sentinel" else Tick(T0 + after)
    state, out = rule.step(state, event, T0 + after)
    assert [(c.condition, c.present) for c in out] == ([("PROBE_OFF", True)] if raised else [])


@pytest.mark.parametrize(
    ("after", "raised"),
    [(timedelta(seconds=120) - MS, False), (timedelta(seconds=120), True)],
    ids=["just-before", "at-limit"],
)
def test_telemetry_stale_edges(after: timedelta, raised: bool) -> None:
    """telemetry_stale_s = 120 s (config.py: issue default), on the daemon's clock."""
    rule = vitals_rule()
    state, _ = rule.step(rule.initial(), sample(T0, Metric.HR_PER_MIN, 80.0), T0)
    state, out = rule.step(state, Tick(T0 + after), T0 + after)
    assert [(c.condition, c.present) for c in out] == ([("TELEMETRY_STALE", True)] if raised else [])


def test_staleness_counts_from_the_first_tick_on_protocol_without_any_sample() -> None:
    rule = vitals_rule()
    state, out = rule.step(rule.initial(), Tick(T0), T0)
    assert out == []
    later = T0 + timedelta(seconds=120)
    state, out = rule.step(state, Tick(later - MS), later - MS)
    assert out == []
    _, out = rule.step(state, Tick(later), later)
    assert [(c.condition, c.present) for c in out] == [("TELEMETRY_STALE", True)]


# --------------------------------------------------------------------------- what the alerts say

MESSAGES = {
    Condition.FEVER: (
        ("Fever 38.4 °C (limit 38.0 °C).", "Fièvre 38,4 °C (seuil 38,0 °C)."),
        ("Temperature back to normal.", "Température revenue à la normale."),
        "Cel",
    ),
    Condition.HYPOTENSION: (
        (
            "Low blood pressure: systolic 85 mmHg (limits: systolic < 90, mean < 65 mmHg).",
            "Pression artérielle basse : systolique 85 mmHg (seuils : systolique < 90, moyenne < 65 mmHg).",
        ),
        ("Blood pressure back to normal.", "Pression artérielle revenue à la normale."),
        "mm[Hg]",
    ),
    Condition.HYPOXIA: (
        ("Low SpO2 88 % (limit 92 %).", "SpO2 basse 88 % (seuil 92 %)."),
        ("SpO2 back to normal.", "SpO2 revenue à la normale."),
        "%",
    ),
    Condition.TACHYCARDIA: (
        ("Fast pulse 140 /min (limit 131 /min).", "Pouls rapide 140 /min (seuil 131 /min)."),
        ("Pulse back to normal.", "Pouls revenu à la normale."),
        "/min",
    ),
    Condition.TACHYPNOEA: (
        ("Fast breathing 30 /min (limit 25 /min).", "Respiration rapide 30 /min (seuil 25 /min)."),
        ("Breathing rate back to normal.", "Fréquence respiratoire revenue à la normale."),
        "/min",
    ),
}


@pytest.mark.parametrize(("condition", "metric", "bad", "band", "normal"), RULE_CASES, ids=IDS)
def test_raise_and_clear_messages(
    condition: Condition, metric: Metric, bad: float, band: float, normal: float
) -> None:
    raised, cleared, unit = MESSAGES[condition]
    noise = noise_for(condition, TH)
    onset = T0 + timedelta(seconds=noise.delay_s)
    back = onset + timedelta(seconds=1)
    end = back + timedelta(seconds=noise.clear_s)
    rule = vitals_rule()
    state = rule.initial()
    out: list[AlertCandidate] = []
    for time, value in [(T0, bad), (onset, bad), (back, normal), (end, normal)]:
        state, candidates = rule.step(state, sample(time, metric, value), time)
        out.extend(candidates)
    assert {(c.ward, c.bed, c.condition) for c in out} == {("w1", "b1", condition.value)}
    got = [(c.present, c.time, c.value, c.unit, c.message, dict(c.details)) for c in out]
    # Hypotension reads two pressures: its details say which one the value is.
    details = {"measure": metric.value} if condition is Condition.HYPOTENSION else {}
    assert [(p, t, v, u, m and (m.en, m.fr), d) for p, t, v, u, m, d in got] == [
        (True, onset, bad, unit, raised, details),
        (False, end, normal, unit, cleared, details),
    ]


def test_estimated_map_message_in_both_languages() -> None:
    values = {Metric.SBP_MMHG: 95.0, Metric.DBP_MMHG: 45.0}  # MAP 45 + 50 / 3 = 61.7
    rule = vitals_rule()
    state, _ = rule.step(rule.initial(), VitalSample("w1", "b1", "m", T0, values), T0)
    later = T0 + timedelta(seconds=60)
    _, out = rule.step(state, VitalSample("w1", "b1", "m", later, values), later)
    assert len(out) == 1
    assert out[0].message is not None
    assert (out[0].message.en, out[0].message.fr) == (
        "Low blood pressure: systolic 95 mmHg, mean 62 mmHg (estimated from SBP/DBP) "
        "(limits: systolic < 90, mean < 65 mmHg).",
        "Pression artérielle basse : systolique 95 mmHg, moyenne 62 mmHg (estimée depuis PAS/PAD) "
        "(seuils : systolique < 90, moyenne < 65 mmHg).",
    )
    # A MAP the monitor sent is not called an estimate.
    values = {Metric.MAP_MMHG: 60.0}
    state, _ = rule.step(rule.initial(), VitalSample("w1", "b1", "m", T0, values), T0)
    _, out = rule.step(state, VitalSample("w1", "b1", "m", later, values), later)
    assert out[0].message is not None
    assert (out[0].message.en, out[0].message.fr) == (
        "Low blood pressure: mean 60 mmHg (limits: systolic < 90, mean < 65 mmHg).",
        "Pression artérielle basse : moyenne 60 mmHg (seuils : systolique < 90, moyenne < 65 mmHg).",
    )
    assert out[0].value == 60.0


def test_technical_alerts_say_what_is_missing() -> None:
    rule = vitals_rule()
    events: list[Event] = [
        probe_off(T0),
        probe_off(T0, Metric.HR_PER_MIN),
        Tick(T0 + timedelta(seconds=30)),
        VitalSample("w1", "b1", "m", T0 + timedelta(seconds=40), {Metric.SPO2_PCT: 97.0}),
        VitalSample("w1", "b1", "m", T0 + timedelta(seconds=50), {Metric.HR_PER_MIN: 80.0}),
        Tick(T0 + timedelta(seconds=200)),
        VitalSample("w1", "b1", "m", T0 + timedelta(seconds=300), {Metric.HR_PER_MIN: 80.0}),
    ]
    state = rule.initial()
    out: list[AlertCandidate] = []
    for event in events:
        state, candidates = rule.step(state, event, event.time)
        out.extend(candidates)
    got = [
        (
            c.condition,
            c.present,
            c.time - T0,
            c.value,
            c.unit,
            dict(c.details),
            c.kind.value,
            c.priority.value,
        )
        for c in out
    ]
    s = timedelta(seconds=1)
    assert {(c.ward, c.bed) for c in out} == {("w1", "b1")}
    assert got == [
        (
            "PROBE_OFF",
            True,
            30 * s,
            None,
            None,
            {"metrics": ["hr_per_min", "spo2_pct"]},
            "technical",
            "medium",
        ),
        ("PROBE_OFF", True, 40 * s, None, None, {"metrics": ["hr_per_min"]}, "technical", "medium"),
        ("PROBE_OFF", False, 50 * s, None, None, {}, "technical", "medium"),
        ("TELEMETRY_STALE", True, 200 * s, 150.0, "s", {}, "technical", "medium"),
        ("TELEMETRY_STALE", False, 300 * s, None, None, {}, "technical", "medium"),
    ]
    assert [(c.message.en, c.message.fr) for c in out if c.message is not None] == [
        (
            "No reading from the monitor (probe off?): hr_per_min, spo2_pct.",
            "Pas de mesure du moniteur (capteur débranché ?) : hr_per_min, spo2_pct.",
        ),
        (
            "No reading from the monitor (probe off?): hr_per_min.",
            "Pas de mesure du moniteur (capteur débranché ?) : hr_per_min.",
        ),
        ("Probe signal back.", "Signal du capteur revenu."),
        (
            "No vital signs received from this bed for 2 min.",
            "Aucun signe vital reçu de ce lit depuis 2 min.",
        ),
        ("Vital signs received again.", "Signes vitaux de nouveau reçus."),
    ]


# --------------------------------------------------------------------------- sentinels and saved state

S = timedelta(seconds=1)
NO_DELAY = Noise(delay_s=0, clear_s=60, confirm_samples=2, late_s=900)


def test_a_sentinel_restarts_the_sample_count() -> None:
    """With no onset delay, two abnormal samples raise; a sentinel between them resets the count."""
    track, changes = judge(Track(), A, T0, 0.0, NO_DELAY, now=T0)
    track, _ = interrupt(track, T0 + S, NO_DELAY, now=T0 + S)
    track, changes = judge(track, A, T0 + 2 * S, 0.0, NO_DELAY, now=T0 + 2 * S)
    assert changes == []
    _, changes = judge(track, A, T0 + 3 * S, 0.0, NO_DELAY, now=T0 + 3 * S)
    assert [(c.transition, c.time) for c in changes] == [(Transition.RAISED, T0 + 3 * S)]


@pytest.mark.parametrize("between", [B, N], ids=["band", "normal"])
def test_a_band_or_normal_value_restarts_the_sample_count(between: Verdict) -> None:
    """With no onset delay, two abnormal samples raise; a band or normal one between them
    resets the count, as a sentinel does."""
    track, _ = judge(Track(), A, T0, 0.0, NO_DELAY, now=T0)
    track, _ = judge(track, between, T0 + S, 0.0, NO_DELAY, now=T0 + S)
    track, changes = judge(track, A, T0 + 2 * S, 0.0, NO_DELAY, now=T0 + 2 * S)
    assert changes == []
    _, changes = judge(track, A, T0 + 3 * S, 0.0, NO_DELAY, now=T0 + 3 * S)
    assert [(c.transition, c.time) for c in changes] == [(Transition.RAISED, T0 + 3 * S)]


def test_a_sentinel_restarts_the_onset_delay() -> None:
    """Hypoxia (delay 30 s): abnormal at 0 and 40 s with a sentinel at 10 s is not 40 s of hypoxia."""
    rule = vitals_rule()
    events: list[Event] = [
        sample(T0, Metric.SPO2_PCT, 88.0),
        probe_off(T0 + 10 * S),
        sample(T0 + 20 * S, Metric.SPO2_PCT, 88.0),
        sample(T0 + 40 * S, Metric.SPO2_PCT, 88.0),
    ]
    state = rule.initial()
    out: list[AlertCandidate] = []
    for event in events:
        state, candidates = rule.step(state, event, event.time)
        out.extend(candidates)
    assert out == []  # 20 s since the run restarted at 20 s
    _, last = rule.step(state, sample(T0 + 50 * S, Metric.SPO2_PCT, 88.0), T0 + 50 * S)
    assert [(c.condition, c.time) for c in last] == [("HYPOXIA", T0 + 50 * S)]


def test_a_sentinel_restarts_the_clearing_time() -> None:
    noise = NO_DELAY
    track, _ = judge(Track(), A, T0, 0.0, noise, now=T0)
    track, _ = judge(track, A, T0 + S, 0.0, noise, now=T0 + S)
    assert track.active
    track, _ = judge(track, N, T0 + 10 * S, 0.0, noise, now=T0 + 10 * S)
    track, _ = interrupt(track, T0 + 20 * S, noise, now=T0 + 20 * S)
    track, changes = judge(track, N, T0 + 30 * S, 0.0, noise, now=T0 + 30 * S)
    track, changes = judge(track, N, T0 + 70 * S, 0.0, noise, now=T0 + 70 * S)
    assert changes == []  # 40 s since the normal run restarted at 30 s, not 60 s since 10 s
    _, changes = judge(track, N, T0 + 90 * S, 0.0, noise, now=T0 + 90 * S)
    assert [(c.transition, c.time) for c in changes] == [(Transition.CLEARED, T0 + 90 * S)]


def test_a_sentinel_is_kept_for_re_judging_late_samples() -> None:
    """A late sample is judged with the sentinels of the window in their place (vitals.py docstring)."""
    noise = Noise(delay_s=30, clear_s=60, confirm_samples=2, late_s=900)
    track, _ = judge(Track(), A, T0, 0.0, noise, now=T0)
    track, _ = judge(track, A, T0 + 10 * S, 0.0, noise, now=T0 + 10 * S)
    # Same time as the sample, arriving after it: it ends that sample's run.
    track, _ = interrupt(track, T0 + 10 * S, noise, now=T0 + 10 * S)
    track, changes = judge(track, A, T0 + 45 * S, 0.0, noise, now=T0 + 45 * S)
    assert changes == []
    # A late abnormal sample at 5 s: 0, 5, 10 then the break, then 45 alone: still nothing.
    track, changes = judge(track, A, T0 + 5 * S, 0.0, noise, now=T0 + 50 * S)
    assert changes == []
    assert not track.active
    assert [item.verdict for item in track.recent] == [A, A, A, None, A]


def test_a_probe_back_before_the_delay_does_not_alarm() -> None:
    rule = vitals_rule()
    back = SourceHealth("w1", "b1", "monitor.spo2_pct", T0 + 10 * S, Health.CONNECTED)
    state, _ = rule.step(rule.initial(), probe_off(T0), T0)
    state, out = rule.step(state, back, back.time)
    assert out == []
    assert state.probe_off_since == {}
    _, out = rule.step(state, Tick(T0 + 60 * S), T0 + 60 * S)
    assert out == []
    # A probe reported back that was never off changes nothing.
    state, out = rule.step(rule.initial(), back, back.time)
    assert (state, out) == (rule.initial(), [])


def test_an_empty_saved_state_loads_as_the_initial_state() -> None:
    rule = vitals_rule()
    assert rule.load({}) == rule.initial()


def test_late_note_rounds_the_lateness_to_the_millisecond_and_says_minutes() -> None:
    """``details["late_s"]`` to 1 ms; the message in whole minutes (3000.2504 s is 50 min)."""
    candidate = AlertCandidate(
        condition="FEVER",
        ward="w1",
        bed="b1",
        time=T0,
        present=True,
        kind=Kind.PHYSIOLOGICAL,
        priority=Priority.MEDIUM,
        message=Text("Fever.", "Fièvre."),
        details={"grade": 1},
    )
    noted = late_note(candidate, 3000.2504)
    assert noted.details == {"grade": 1, "late_s": 3000.25}
    assert noted.message is not None
    assert (noted.message.en, noted.message.fr) == (
        "Fever. Late data: measured 50 min before it arrived.",
        "Fièvre. Données tardives : mesurées 50 min avant leur arrivée.",
    )
    assert noted.time == T0
    assert late_note(candidate, None) is candidate
    assert late_note(replace(candidate, message=None), 60.0).message is None


def test_re_judging_goes_past_a_sentinel_and_keeps_the_values() -> None:
    """A late sample re-judges the whole window: past a sentinel, with each sample's own value."""
    noise = Noise(delay_s=30, clear_s=60, confirm_samples=2, late_s=900)
    track, _ = judge(Track(), A, T0, 88.0, noise, now=T0)
    track, _ = interrupt(track, T0 + 10 * S, noise, now=T0 + 10 * S)
    track, _ = judge(track, A, T0 + 20 * S, 87.0, noise, now=T0 + 20 * S)
    track, changes = judge(track, A, T0 + 60 * S, 86.0, noise, now=T0 + 60 * S)
    assert [(c.transition, c.time, c.value) for c in changes] == [(Transition.RAISED, T0 + 60 * S, 86.0)]
    # A late normal sample before the sentinel changes nothing after it.
    track, changes = judge(track, N, T0 + 5 * S, 97.0, noise, now=T0 + 70 * S)
    assert changes == []
    assert track.active
    assert track.value == 86.0  # the latest sample's value, after re-judging
    # A late abnormal sample completes an onset at a later sample's time, with that sample's value.
    track, _ = judge(Track(), A, T0 + 100 * S, 85.0, noise, now=T0 + 100 * S)
    track, _ = judge(track, A, T0 + 120 * S, 84.0, noise, now=T0 + 120 * S)
    track, changes = judge(track, A, T0 + 80 * S, 83.0, noise, now=T0 + 130 * S)
    assert [(c.transition, c.time, c.value, c.late_s) for c in changes] == [
        (Transition.RAISED, T0 + 120 * S, 84.0, 10.0)
    ]
    assert track.value == 84.0


def test_a_late_sample_completing_an_onset_reports_the_completing_samples_value() -> None:
    """Fever at 1 and 2 min (60 s apart, delay 120 s); a late 38.9 °C at 0 completes the onset at
    2 min: the alert's value and message are those of the 2 min sample (vitals.py ``_sample``)."""
    rule = vitals_rule()
    minute = timedelta(minutes=1)
    state, _ = rule.step(rule.initial(), sample(T0 + minute, Metric.TEMP_C, 38.5), T0 + minute)
    state, out = rule.step(state, sample(T0 + 2 * minute, Metric.TEMP_C, 38.6), T0 + 2 * minute)
    assert out == []
    _, out = rule.step(state, sample(T0, Metric.TEMP_C, 38.9), T0 + 3 * minute)
    assert [(c.condition, c.time, c.value, dict(c.details)) for c in out] == [
        ("FEVER", T0 + 2 * minute, 38.6, {"late_s": 60.0})
    ]
    assert out[0].message is not None
    assert out[0].message.en == "Fever 38.6 °C (limit 38.0 °C). Late data: measured 1 min before it arrived."


def test_vitals_received_again_is_said_once() -> None:
    rule = vitals_rule()
    state, _ = rule.step(rule.initial(), sample(T0, Metric.HR_PER_MIN, 80.0), T0)
    stale = T0 + timedelta(seconds=120)
    state, out = rule.step(state, Tick(stale), stale)
    assert [(c.condition, c.present) for c in out] == [("TELEMETRY_STALE", True)]
    assert state.stale is True
    for k in (1, 2):
        state, out = rule.step(state, sample(stale + k * S, Metric.HR_PER_MIN, 80.0), stale + k * S)
        assert [(c.condition, c.present) for c in out] == ([("TELEMETRY_STALE", False)] if k == 1 else [])
        assert state.stale is False


def test_the_window_keeps_exactly_the_samples_of_the_last_late_s() -> None:
    """late_s 900 s: on each arrival, verdicts older than 900 s are folded into the base; one
    exactly 900 s old stays in the window."""
    noise = Noise(delay_s=0, clear_s=60, confirm_samples=2, late_s=900)
    minute = timedelta(minutes=1)
    track = Track()
    for m in (0, 10, 20):
        track, _ = judge(track, N, T0 + m * minute, 97.0, noise, now=T0 + m * minute)
    assert [item.time for item in track.recent] == [T0 + 10 * minute, T0 + 20 * minute]
    assert track.base is not None
    assert track.base.last_time == T0
    track, _ = judge(track, N, T0 + 25 * minute, 97.0, noise, now=T0 + 25 * minute)
    assert [item.time for item in track.recent] == [T0 + 10 * minute, T0 + 20 * minute, T0 + 25 * minute]


def test_an_unbounded_window_keeps_a_week() -> None:
    """Without a lateness limit (``Noise`` default) any sample is judged; the window keeps 7 days."""
    noise = Noise(delay_s=0, clear_s=60, confirm_samples=1)
    week = timedelta(days=7)
    track, changes = judge(Track(), A, T0, 38.5, noise, now=T0 + week + S)
    assert [c.transition for c in changes] == [Transition.RAISED]
    assert folded(track, noise).recent == ()
    base = folded(track, noise).base
    assert base is not None
    assert base.active
    track, _ = judge(track, N, T0 + S, 37.0, noise, now=T0 + week + S)
    assert [item.time for item in folded(track, noise).recent] == [T0 + S]  # exactly 7 days old: kept


def test_judge_ignores_repeats_and_samples_older_than_the_window() -> None:
    noise = Noise(delay_s=0, clear_s=60, confirm_samples=2, late_s=900)
    minute = timedelta(minutes=1)
    track = Track()
    for m in range(30):
        track, _ = judge(track, N, T0 + m * minute, 97.0, noise, now=T0 + m * minute)
        assert track.value == 97.0
    assert track.base is not None
    assert track.base.last_time == T0 + 13 * minute  # 29 - 15 min: older ones folded into the base
    for m in (29, 13, 5):  # a repeat of the last time, the base's last time, older
        same, changes = judge(track, A, T0 + m * minute, 80.0, noise, now=T0 + 29 * minute)
        assert (same, changes) == (track, [])
    # A track saved before windows existed (no base) ignores any older sample.
    legacy = load_track({"active": False, "last_time": "2026-03-02T20:00:00Z"})
    assert judge(legacy, A, T0 - S, 80.0, noise, now=T0) == (legacy, [])


def test_a_late_sample_at_a_sentinels_time_comes_after_it() -> None:
    noise = NO_DELAY
    track, _ = judge(Track(), A, T0, 80.0, noise, now=T0)
    track, _ = interrupt(track, T0 + 10 * S, noise, now=T0 + 10 * S)
    track, changes = judge(track, A, T0 + 20 * S, 81.0, noise, now=T0 + 20 * S)
    assert changes == []
    _, changes = judge(track, A, T0 + 10 * S, 82.0, noise, now=T0 + 30 * S)
    assert [(c.transition, c.time, c.value) for c in changes] == [(Transition.RAISED, T0 + 20 * S, 81.0)]


def test_a_late_sample_can_raise_at_its_own_time_and_clear_later() -> None:
    """Both changes are reported, the first at the late sample's time with its value."""
    noise = Noise(delay_s=0, clear_s=60, confirm_samples=2, late_s=900)
    track, _ = judge(Track(), A, T0, 80.0, noise, now=T0)
    track, _ = judge(track, N, T0 + 30 * S, 97.0, noise, now=T0 + 30 * S)
    track, changes = judge(track, N, T0 + 100 * S, 98.0, noise, now=T0 + 100 * S)
    assert changes == []
    track, changes = judge(track, A, T0 + 10 * S, 79.0, noise, now=T0 + 110 * S)
    assert [(c.transition, c.time, c.value, c.late_s) for c in changes] == [
        (Transition.RAISED, T0 + 10 * S, 79.0, 100.0),
        (Transition.CLEARED, T0 + 100 * S, 98.0, 10.0),
    ]
    assert not track.active


def test_a_late_sample_that_changes_nothing_after_it_reports_nothing() -> None:
    """Changes after the late sample that stay the same are not reported again."""
    noise = Noise(delay_s=0, clear_s=40, confirm_samples=3, late_s=900)
    track = Track()
    for t, verdict in [(30, A), (40, A), (50, A), (60, N), (110, N)]:
        track, changes = judge(track, verdict, T0 + t * S, 0.0, noise, now=T0 + t * S)
    assert [c.transition for c in changes] == [Transition.CLEARED]
    _, changes = judge(track, A, T0 + 55 * S, 0.0, noise, now=T0 + 120 * S)
    assert changes == []


def test_staleness_message_counts_whole_minutes() -> None:
    rule = vitals_rule()
    state, _ = rule.step(rule.initial(), sample(T0, Metric.HR_PER_MIN, 80.0), T0)
    later = T0 + timedelta(minutes=90)
    _, out = rule.step(state, Tick(later), later)
    assert [(c.value, c.message and c.message.en) for c in out] == [
        (5400.0, "No vital signs received from this bed for 90 min.")
    ]


def test_the_track_keeps_the_value_of_the_latest_sample_whatever_its_verdict() -> None:
    """``Track.value`` is the latest value that decided a verdict, band values included: CRS
    quotes it in its basis and message (crs.py), so a fever settling into the hysteresis band
    is quoted at its current temperature, not at its peak."""
    track = Track()
    for k, (verdict, value) in enumerate([(A, 38.4), (A, 38.6), (B, 37.8), (N, 37.2), (B, 37.8), (A, 38.1)]):
        track, _ = judge(track, verdict, T0 + k * 60 * S, value, NO_DELAY, now=T0 + k * 60 * S)
        assert track.value == value


@pytest.mark.parametrize("later", [timedelta(0), MS], ids=["same-time", "1-ms-later"])
def test_a_band_sample_is_the_last_sample_judged(later: timedelta) -> None:
    """A band value is judged like any other: an abnormal sample with its time is a repeat
    (ignored), one 1 ms later starts a run."""
    track, _ = judge(Track(), B, T0, 92.0, NO_DELAY, now=T0)
    assert track.last_time == T0
    after, changes = judge(track, A, T0 + later, 85.0, NO_DELAY, now=T0 + S)
    assert changes == []
    assert after.run_count == (1 if later else 0)


@pytest.mark.parametrize("verdict", [A, B, N], ids=["abnormal", "band", "normal"])
def test_a_sample_that_moves_the_window_keeps_what_left_it_in_the_base(verdict: Verdict) -> None:
    """late_s 30 s, confirm 3: abnormal samples at 0 and 20 s, then one at 40 s of each verdict,
    which moves the window past the 0 s sample: that sample is folded into the base. A late
    abnormal sample at 15 s then makes 0, 15, 20 s a run of three: raised at 20 s, late."""
    noise = Noise(delay_s=0, clear_s=60, confirm_samples=3, late_s=30)
    track = Track()
    for t in (0, 20):
        track, _ = judge(track, A, T0 + t * S, 85.0, noise, now=T0 + t * S)
    track, _ = judge(track, verdict, T0 + 40 * S, 85.0 if verdict is A else 92.0, noise, now=T0 + 40 * S)
    window = folded(track, noise)
    assert window.base is not None
    assert (window.base.last_time, window.base.run_count) == (T0, 1)
    assert [item.time for item in window.recent] == [T0 + 20 * S, T0 + 40 * S]
    _, changes = judge(track, A, T0 + 15 * S, 84.0, noise, now=T0 + 41 * S)
    assert [(c.transition, c.time, c.late_s) for c in changes] == [(Transition.RAISED, T0 + 20 * S, 21.0)]


def test_the_entries_that_left_the_window_are_folded_into_the_base_once() -> None:
    """late_s 30 s: a sentinel at 5 s leaves the window with the sample before it; the samples
    that leave it after are folded into the base after it, and it is not applied again (it
    would end the base's run)."""
    noise = Noise(delay_s=0, clear_s=60, confirm_samples=3, late_s=30)
    track, _ = judge(Track(), A, T0, 85.0, noise, now=T0)
    track, _ = interrupt(track, T0 + 5 * S, noise, now=T0 + 5 * S)
    for t in (10, 20, 40, 50, 60):
        track, _ = judge(track, A, T0 + t * S, 85.0, noise, now=T0 + t * S)
    window = folded(track, noise)
    assert window.base is not None
    assert (window.base.last_time, window.base.run_start, window.base.run_count) == (
        T0 + 20 * S,
        T0 + 10 * S,
        2,
    )
    assert [item.time for item in window.recent] == [T0 + 40 * S, T0 + 50 * S, T0 + 60 * S]


def test_the_track_keeps_the_measure_of_its_latest_value_whatever_its_verdict() -> None:
    """A monitor may send the mean arterial pressure without the systolic (``deciding_metric``):
    the track names the pressure its value is, whatever the verdict and after a late sample is
    judged in the window; CRS names it in its message (tests/test_pressure_measure.py)."""
    sbp, map_mmhg = Metric.SBP_MMHG, Metric.MAP_MMHG
    track = Track()
    for k, (verdict, value, measure) in enumerate(
        [(A, 85.0, sbp), (B, 67.0, map_mmhg), (N, 75.0, map_mmhg), (B, 92.0, sbp), (N, 72.0, map_mmhg)]
    ):
        track, _ = judge(
            track, verdict, T0 + k * 60 * S, value, NO_DELAY, now=T0 + k * 60 * S, measure=measure
        )
        assert (track.value, track.measure) == (value, measure)
    track, _ = judge(track, A, T0 + 30 * S, 60.0, NO_DELAY, now=T0 + 300 * S, measure=map_mmhg)
    assert (track.value, track.measure) == (72.0, map_mmhg)


def test_a_repeat_of_the_last_sample_before_the_window_changes_nothing() -> None:
    """A track saved before windows existed keeps its last sample as the window's base; a late
    sample at exactly that time is a repeat: ignored, and not kept in the window either."""
    noise = Noise(delay_s=0, clear_s=60, confirm_samples=2, late_s=900)
    legacy = load_track({"active": False, "last_time": "2026-03-02T20:00:00Z"})
    assert legacy.last_time == T0
    track, _ = judge(legacy, N, T0 + 60 * S, 97.0, noise, now=T0 + 60 * S)
    assert [item.time for item in track.recent] == [T0 + 60 * S]
    assert judge(track, A, T0, 80.0, noise, now=T0 + 120 * S) == (track, [])


def test_a_late_sample_that_changes_nothing_reports_nothing_before_several_changes() -> None:
    """Two raises and two clearings after the late sample, the same with it or without it."""
    noise = Noise(delay_s=0, clear_s=40, confirm_samples=3, late_s=900)
    track = Track()
    got: list[Transition] = []
    for t, verdict in [(30, A), (40, A), (50, A), (60, N), (110, N), (120, A), (130, A), (140, A), (150, N)]:
        track, changes = judge(track, verdict, T0 + t * S, 0.0, noise, now=T0 + t * S)
        got += [c.transition for c in changes]
    track, changes = judge(track, N, T0 + 190 * S, 0.0, noise, now=T0 + 190 * S)
    got += [c.transition for c in changes]
    assert got == [Transition.RAISED, Transition.CLEARED, Transition.RAISED, Transition.CLEARED]
    after, changes = judge(track, A, T0 + 55 * S, 0.0, noise, now=T0 + 200 * S)
    assert changes == []
    assert [item.time for item in after.recent][:4] == [T0 + t * S for t in (30, 40, 50, 55)]


def test_a_late_sample_undoing_the_last_change_reports_the_opposite_at_its_own_time() -> None:
    """A late sample that only undoes the last transition: the opposite transition, at the late
    sample's time, with its value and lateness (vitals.py ``judge``)."""
    noise = NO_DELAY  # raises on 2 abnormal samples, clears after 60 s of normal ones
    # A late normal sample between the two abnormal ones undoes the onset: cleared.
    track, _ = judge(Track(), A, T0, 88.0, noise, now=T0)
    track, changes = judge(track, A, T0 + 10 * S, 87.0, noise, now=T0 + 10 * S)
    assert [c.transition for c in changes] == [Transition.RAISED]
    track, changes = judge(track, N, T0 + 5 * S, 97.0, noise, now=T0 + 20 * S)
    assert [(c.transition, c.time, c.value, c.late_s) for c in changes] == [
        (Transition.CLEARED, T0 + 5 * S, 97.0, 15.0)
    ]
    assert not track.active
    # A late abnormal sample inside the normal run undoes the clearing: raised again.
    track, _ = judge(Track(), A, T0, 88.0, noise, now=T0)
    track, _ = judge(track, A, T0 + 10 * S, 87.0, noise, now=T0 + 10 * S)
    track, _ = judge(track, N, T0 + 20 * S, 97.0, noise, now=T0 + 20 * S)
    track, changes = judge(track, N, T0 + 80 * S, 98.0, noise, now=T0 + 80 * S)
    assert [c.transition for c in changes] == [Transition.CLEARED]
    track, changes = judge(track, A, T0 + 50 * S, 86.0, noise, now=T0 + 90 * S)
    assert [(c.transition, c.time, c.value, c.late_s) for c in changes] == [
        (Transition.RAISED, T0 + 50 * S, 86.0, 40.0)
    ]
    assert track.active


@pytest.mark.parametrize(
    ("window", "values", "dropped"),
    [
        ("fever_late_s", {Metric.TEMP_C: 37.0}, ["fever"]),
        ("hypotension_late_s", {Metric.SBP_MMHG: 120.0}, ["hypotension"]),
        ("hypoxia_late_s", {Metric.SPO2_PCT: 97.0}, ["hypoxia"]),
        ("tachycardia_late_s", {Metric.HR_PER_MIN: 80.0}, ["tachycardia"]),
        ("tachypnoea_late_s", {Metric.RR_PER_MIN: 16.0}, ["tachypnoea"]),
        ("news2_late_s", {Metric.HR_PER_MIN: 80.0}, ["news2"]),
    ],
)
def test_late_dropped_edges_when_one_window_is_the_shortest(
    window: str, values: dict[Metric, float], dropped: list[str]
) -> None:
    """Each window is a setting of its own (config.py): whichever one a site makes the
    shortest still drops a sample just beyond it; the others keep their defaults."""
    th = VitalThresholds.model_validate({window: 60.0})
    event = VitalSample("w1", "b1", "m", T0, values)
    assert late_dropped(event, th, T0 + 60 * S) == []
    assert late_dropped(event, th, T0 + 60 * S + MS) == dropped
