"""Ticks skipped while a rule says they change nothing (``daemon.rules.Idle``): the vital-sign
staleness, the neurological-check reminder, the dose checks and the CRS grade's fever
masking. Through the engine the rules give exactly what they give stepped alone on every
event; the skipped ticks are real; a bed's new settings, a failing rule and the edge of each
idle time still reach the rule's own step."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from daemon.clinical.crs import CrsRule, NeuroCheckRule
from daemon.clinical.dose import DoseRule, dose_rules
from daemon.clinical.protocols import schedule_for
from daemon.clinical.vitals import VitalsRule, VitalsState
from daemon.config import BedConfig, Config, VitalThresholds
from daemon.events import (
    AlertCandidate,
    BagHung,
    DeclarationKind,
    DoseDeclaration,
    Event,
    Handwriting,
    Health,
    Metric,
    Observation,
    PumpReading,
    PumpState,
    Reaction,
    SourceHealth,
    Tick,
    VitalSample,
)
from daemon.rules import IDLE_FOREVER, RULE_FAILED, RuleEngine
from tests.helpers import one_bed_config

START = datetime.fromisoformat("2026-03-02T08:00:00+00:00")
S = timedelta(seconds=1)
CFG = one_bed_config(START)
BED = CFG.bed("b1")
# Short intervals, so that staleness and reminders fall due, and clear, many times a run.
TH = VitalThresholds(telemetry_stale_s=40.0, neuro_check_interval_s=90.0, neuro_check_first_s=60.0)


def _rules(th: VitalThresholds = TH, bed: BedConfig = BED) -> list[Any]:
    schedule = schedule_for(bed, CFG)
    return [VitalsRule(th, bed, schedule), CrsRule(th, bed, schedule), NeuroCheckRule(th, bed, schedule)]


def _events(rng: random.Random, n: int, t0: datetime) -> list[tuple[Event, datetime]]:
    """Ticks every second, with samples in bursts and silences (some late, some fevers),
    probe-offs, handwriting tests and ICE scores, and nurses' observations between them."""
    out: list[tuple[Event, datetime]] = []
    silent_until = t0
    for i in range(n):
        now = t0 + i * S
        out.append((Tick(now), now))
        roll = rng.random()
        if now >= silent_until and roll < 0.3:
            at = now - (rng.choice([2, 30]) if rng.random() < 0.1 else 0) * S
            values = {Metric.TEMP_C: rng.choice([36.8, 38.6]), Metric.SBP_MMHG: rng.choice([118.0, 84.0])}
            out.append((VitalSample("w1", "b1", "mon", at, values), now))
            if rng.random() < 0.05:
                silent_until = now + rng.choice([20, 45, 120]) * S
        elif roll < 0.32:
            health = rng.choice([Health.LOST, Health.CONNECTED])
            out.append((SourceHealth("w1", "b1", "monitor.temp_c", now, health, "probe-off"), now))
        elif roll < 0.35:
            at = now - rng.choice([0, 5]) * S
            observation = rng.choice(
                [
                    Observation("w1", "b1", at, handwriting=Handwriting.NORMAL),
                    Observation("w1", "b1", at, ice_score=10),
                    Observation("w1", "b1", at, o2_device="air"),
                ]
            )
            out.append((observation, now))
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("hours", [-0.05, 12.0])  # a watch that starts before the protocol, and on it
def test_the_engine_gives_what_each_rule_gives_stepped_on_every_event(seed: int, hours: float) -> None:
    rng = random.Random(seed)
    events = _events(rng, 600, START + timedelta(hours=hours))
    engine = RuleEngine({"b1": _rules()}, wards={"b1": "w1"})
    alone = _rules()
    states = [rule.initial() for rule in alone]
    for event, now in events:
        expected: list[AlertCandidate] = []
        for i, rule in enumerate(alone):
            if isinstance(event, getattr(rule, "consumes", object)):
                states[i], candidates = rule.step(states[i], event, now)
                expected.extend(candidates)
        assert engine.handle(event, now) == expected, (event, now)
    for rule, state in zip(alone, states, strict=True):
        assert engine.state("b1", rule.name) == state


class _CountsTicks:
    """Counts the ticks a rule is stepped on (before the rule class in the bases)."""

    ticks = 0

    def step(self, state: Any, event: Event, now: datetime) -> Any:
        if isinstance(event, Tick):
            self.ticks += 1
        return super().step(state, event, now)  # type: ignore[misc]


class _Counting(_CountsTicks, VitalsRule):
    """The vital-sign rule, counting its ticks."""


def test_ticks_while_the_vitals_are_fresh_are_not_stepped_and_the_one_at_the_edge_is() -> None:
    rule = _Counting(TH, BED, schedule_for(BED, CFG))
    engine = RuleEngine({"b1": [rule]}, wards={"b1": "w1"})
    t0 = START + timedelta(hours=12)
    engine.handle(Tick(t0), t0)  # starts the watch
    engine.handle(VitalSample("w1", "b1", "mon", t0, {Metric.TEMP_C: 36.8}), t0)
    stepped = rule.ticks
    for s in range(1, 40):
        assert engine.handle(Tick(t0 + s * S), t0 + s * S) == []
    assert rule.ticks == stepped
    (stale,) = engine.handle(Tick(t0 + 40 * S), t0 + 40 * S)
    assert (stale.condition, stale.present) == ("TELEMETRY_STALE", True)
    assert rule.ticks == stepped + 1


def test_a_bed_given_new_settings_is_judged_by_them_at_the_next_tick() -> None:
    engine = RuleEngine({"b1": _rules()}, wards={"b1": "w1"})
    t0 = START + timedelta(hours=12)
    engine.handle(Tick(t0), t0)
    engine.handle(VitalSample("w1", "b1", "mon", t0, {Metric.TEMP_C: 36.8}), t0)
    assert engine.handle(Tick(t0 + 10 * S), t0 + 10 * S) == []  # idle until 40 s
    engine.set_bed("b1", "w1", _rules(TH.model_copy(update={"telemetry_stale_s": 15.0})), keep_states=True)
    conditions = [c.condition for c in engine.handle(Tick(t0 + 16 * S), t0 + 16 * S) if c.present]
    assert conditions == ["TELEMETRY_STALE"]


class _FailsOnFever(VitalsRule):
    def step(
        self, state: VitalsState, event: Event, now: datetime
    ) -> tuple[VitalsState, Sequence[AlertCandidate]]:
        if isinstance(event, VitalSample) and event.values.get(Metric.TEMP_C, 0.0) >= 40:
            raise RuntimeError("a bug")
        return super().step(state, event, now)


def test_a_rule_that_failed_is_stepped_at_the_next_tick_which_ends_rule_failed() -> None:
    engine = RuleEngine({"b1": [_FailsOnFever(TH, BED, schedule_for(BED, CFG))]}, wards={"b1": "w1"})
    t0 = START + timedelta(hours=12)
    engine.handle(Tick(t0), t0)
    engine.handle(VitalSample("w1", "b1", "mon", t0, {Metric.TEMP_C: 36.8}), t0)
    (failed,) = engine.handle(VitalSample("w1", "b1", "mon", t0 + S, {Metric.TEMP_C: 40.5}), t0 + S)
    assert (failed.condition, failed.present) == (RULE_FAILED, True)
    (recovered,) = engine.handle(Tick(t0 + 2 * S), t0 + 2 * S)
    assert (recovered.condition, recovered.present) == (RULE_FAILED, False)


def test_each_idle_time_is_the_last_tick_that_changes_nothing() -> None:
    """Just before the time a rule gives, its tick changes nothing; at the edge of what the
    rule judges (the interval itself), the tick acts: the idle time is not far too early
    either, which would make the promise true and the skipping useless."""
    vitals, _, neuro = _rules()
    t0 = START + timedelta(hours=12)
    state, _ = vitals.step(vitals.initial(), Tick(t0), t0)
    state, _ = vitals.step(state, VitalSample("w1", "b1", "mon", t0, {Metric.TEMP_C: 36.8}), t0)
    until = vitals.idle_until(state, t0)
    assert until is not None
    assert t0 + 40 * S - timedelta(milliseconds=2) < until < t0 + 40 * S
    before = until - timedelta(microseconds=1)
    assert vitals.step(state, Tick(before), before) == (state, [])
    stale, out = vitals.step(state, Tick(t0 + 40 * S), t0 + 40 * S)
    assert [c.condition for c in out] == ["TELEMETRY_STALE"]
    assert vitals.idle_until(stale, t0 + 40 * S) == IDLE_FOREVER

    first, _ = neuro.step(neuro.initial(), Tick(t0), t0)
    until = neuro.idle_until(first, t0)
    assert until is not None
    assert t0 + 60 * S - timedelta(milliseconds=2) < until < t0 + 60 * S
    before = until - timedelta(microseconds=1)
    assert neuro.step(first, Tick(before), before) == (first, ())
    due, out = neuro.step(first, Tick(t0 + 60 * S), t0 + 60 * S)
    assert [c.condition for c in out] == ["NEURO_CHECK_DUE"]
    assert neuro.idle_until(due, t0 + 60 * S) == IDLE_FOREVER
    checked, _ = neuro.step(
        due, Observation("w1", "b1", t0 + 70 * S, handwriting=Handwriting.NORMAL), t0 + 70 * S
    )
    assert checked.last_check == t0 + 70 * S
    until = neuro.idle_until(checked, t0 + 70 * S)
    assert until is not None
    assert t0 + 160 * S - timedelta(milliseconds=2) < until < t0 + 160 * S


def test_before_the_protocol_starts_a_tick_changes_nothing_until_its_start() -> None:
    vitals, _, neuro = _rules()
    early = START - timedelta(hours=1)
    state = vitals.initial()
    assert vitals.idle_until(state, early) == START
    assert vitals.step(state, Tick(early), early) == (state, [])
    watched, _ = neuro.step(neuro.initial(), Tick(early), early)  # the watch began before the start
    until = neuro.idle_until(watched, early)
    assert until is not None
    assert START + 60 * S - timedelta(milliseconds=2) < until < START + 60 * S


def test_a_probe_off_matures_on_ticks_while_the_monitor_is_silent() -> None:
    engine = RuleEngine({"b1": _rules()}, wards={"b1": "w1"})
    t0 = START + timedelta(hours=12)
    engine.handle(Tick(t0), t0)
    engine.handle(VitalSample("w1", "b1", "mon", t0, {Metric.TEMP_C: 36.8}), t0)
    lost = SourceHealth("w1", "b1", "monitor.temp_c", t0 + S, Health.LOST, "probe-off")
    engine.handle(lost, t0 + S)
    for s in range(2, 31):
        assert engine.handle(Tick(t0 + s * S), t0 + s * S) == []
    raised = [c.condition for c in engine.handle(Tick(t0 + 31 * S), t0 + 31 * S) if c.present]
    assert raised == ["PROBE_OFF"]


# --------------------------------------------------------------------------- dose and CRS

# Short delays and windows, so that a run of a few hours crosses each of them many times.
DOSE_TH = {
    "rate_delay_s": 60.0,
    "step_up_due_before_s": 900.0,
    "step_window_s": 600.0,
    "step_early_horizon_s": 1800.0,
    "interruption_delay_s": 120.0,
    "interruption_supervised_restart_s": 600.0,
    "interruption_new_cycle_s": 1800.0,
    "reading_stale_s": 300.0,
    "bolus_hold_s": 180.0,
}
DOSE_CFG = one_bed_config(START, weight_kg=60, dose=DOSE_TH, vitals={"fever_masking_s": 600.0})
DOSE_BED = DOSE_CFG.bed("b1")
C9, C28 = 0.0375, 0.1167  # µg/mL: 9 and 28 µg/day at 10 mL/h


def _dose_rules() -> list[Any]:
    return [*dose_rules(DOSE_CFG, DOSE_BED), *_vital_rules()]


def _vital_rules() -> list[Any]:
    schedule = schedule_for(DOSE_BED, DOSE_CFG)
    th = VitalThresholds(fever_masking_s=600.0, telemetry_stale_s=86_400.0)
    return [VitalsRule(th, DOSE_BED, schedule), CrsRule(th, DOSE_BED, schedule)]


_DECLARATIONS = [
    DoseDeclaration(DeclarationKind.REACTION, reaction=Reaction.CRS, grade=2),
    DoseDeclaration(DeclarationKind.REACTION, reaction=Reaction.CRS, grade=3),
    DoseDeclaration(DeclarationKind.RESTART_AFTER_REACTION, reaction=Reaction.CRS, grade=3),
    DoseDeclaration(DeclarationKind.NEW_CYCLE),
]


def _pump_events(rng: random.Random, n: int, t0: datetime) -> list[tuple[Event, datetime]]:
    """Ticks at irregular gaps (a second to a few minutes), with pump readings at the
    protocol's rates, too high, too low, stopped, spiking and silent; bags hung; dose
    declarations; fevers and antipyretics for the CRS grade."""
    out: list[tuple[Event, datetime]] = []
    now, volume_ml, rate_ml_per_h, last = t0, 0.0, 10.0, t0
    for _ in range(n):
        now += rng.choice([1, 1, 5, 15, 60]) * S
        out.append((Tick(now), now))
        roll = rng.random()
        # Readings at one tick in eight: most ticks fall between them, where only the
        # rule's own edges decide whether it is stepped.
        if roll < 0.12:
            volume_ml += rate_ml_per_h * (now - last).total_seconds() / 3600
            if rng.random() < 0.03:
                volume_ml += 2.0  # more than the rate explains: a bolus
            last = now
            rate_ml_per_h = rng.choice([10.0, 10.0, 31.1, 0.0, 13.0, 7.0, 60.0])
            state = rng.choice([PumpState.INFUSING] * 4 + [PumpState.STOPPED, PumpState.PAUSED])
            at = now - rng.choice([0, 0, 0, 20]) * S
            out.append((PumpReading("w1", "b1", "p1", at, state, rate_ml_per_h, volume_ml), now))
        elif roll < 0.14:
            bag = BagHung(
                "w1", "b1", now, f"bag{len(out)}", rng.choice([C9, C28]), rng.choice([None, 24.0, 240.0])
            )
            out.append((bag, now))
        elif roll < 0.15:
            declaration = rng.choice(_DECLARATIONS)
            # Dated by the ward's clock, which may run ahead of the daemon's.
            at = now + rng.choice([0, 0, 40]) * S
            out.append((Observation("w1", "b1", at, by="Dr A", dose_declaration=declaration), now))
        elif roll < 0.21:
            values = {Metric.TEMP_C: rng.choice([36.8, 38.6]), Metric.SBP_MMHG: rng.choice([118.0, 84.0])}
            out.append((VitalSample("w1", "b1", "mon", now - rng.choice([0, 30]) * S, values), now))
        elif roll < 0.23:
            out.append((Observation("w1", "b1", now - rng.choice([0, 60]) * S, antipyretic_given=True), now))
    return out


def _same_as_alone(rules: Any, events: list[tuple[Event, datetime]]) -> int:
    """Run ``events`` through an engine and through ``rules()`` stepped on every event;
    assert the same candidates at every event and the same states at the end. The number
    of candidates."""
    engine = RuleEngine({"b1": rules()}, wards={"b1": "w1"})
    alone = rules()
    states = [rule.initial() for rule in alone]
    raised = 0
    for event, now in events:
        expected: list[AlertCandidate] = []
        before = {rule.name: state for rule, state in zip(alone, states, strict=True)}
        for i, rule in enumerate(alone):
            if isinstance(event, getattr(rule, "consumes", object)):
                reads = getattr(rule, "reads", None)
                if reads in before:
                    after = states[[r.name for r in alone].index(reads)]
                    states[i], candidates = rule.step_after(states[i], event, now, before[reads], after)
                else:
                    states[i], candidates = rule.step(states[i], event, now)
                expected.extend(candidates)
        assert engine.handle(event, now) == expected, (event, now)
        raised += len(expected)
    for rule, state in zip(alone, states, strict=True):
        assert engine.state("b1", rule.name) == state, rule.name
    return raised


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(
    "at",
    [
        START - timedelta(minutes=20),  # the protocol starts
        START + timedelta(days=7) - timedelta(minutes=50),  # the step-up, its reminder and windows
        START + timedelta(days=14) - timedelta(minutes=40),  # the protocol ends
    ],
)
def test_the_dose_checks_and_crs_give_through_the_engine_what_they_give_on_every_tick(
    seed: int, at: datetime
) -> None:
    raised = _same_as_alone(_dose_rules, _pump_events(random.Random(seed), 500, at))
    assert raised > 0  # the run crosses edges, not a quiet stretch


# A site protocol whose steps do not all meet at a step-up: a first day and a day with
# no dose, then a step down (the dose expected changes where no step-up is).
GAP_CFG = one_bed_config(
    START,
    weight_kg=60,
    site_steps=[
        {"day_from": 2, "day_to": 2, "dose_ug_per_day": 9.0},
        {"day_from": 4, "day_to": 4, "dose_ug_per_day": 28.0},
        {"day_from": 5, "day_to": 5, "dose_ug_per_day": 9.0},
    ],
    dose=DOSE_TH,
)


def _gap_rules() -> list[Any]:
    return dose_rules(GAP_CFG, GAP_CFG.bed("b1"))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "at",
    [
        START - timedelta(minutes=40),  # the protocol starts, with no dose on its first day
        START + timedelta(days=1) - timedelta(minutes=40),  # the first dose
        START + timedelta(days=2) - timedelta(minutes=40),  # a day with no dose
        START + timedelta(days=3) - timedelta(minutes=40),  # the dose resumes, higher
        START + timedelta(days=4) - timedelta(minutes=40),  # the step down
        START + timedelta(days=5) - timedelta(minutes=40),  # the end
    ],
)
def test_a_site_protocols_steps_reach_the_dose_checks_through_the_engine(seed: int, at: datetime) -> None:
    _same_as_alone(_gap_rules, _pump_events(random.Random(seed), 400, at))


def test_dose_ticks_between_edges_are_not_stepped() -> None:
    counting = _dose_rule(_CountingDose)
    assert isinstance(counting, _CountingDose)
    engine = RuleEngine({"b1": [counting]}, wards={"b1": "w1"})
    t0 = START + timedelta(hours=12)
    engine.handle(PumpReading("w1", "b1", "p1", t0, PumpState.INFUSING, 10.0, 0.0), t0)
    stepped = counting.ticks
    # The reading goes stale 300 s after it: nothing changes on the ticks before.
    for s in range(1, 300):
        assert engine.handle(Tick(t0 + s * S), t0 + s * S) == []
    assert counting.ticks == stepped
    engine.handle(Tick(t0 + 300 * S), t0 + 300 * S)
    assert counting.ticks == stepped + 1


class _CountingDose(_CountsTicks, DoseRule):
    """The dose rule, counting its ticks."""


def _dose_rule(cls: type[DoseRule] = DoseRule) -> DoseRule:
    schedule = schedule_for(DOSE_BED, DOSE_CFG)
    return cls(DOSE_BED, schedule, DOSE_CFG.thresholds_for("b1").dose, None, DOSE_CFG)


STEP_UP = START + timedelta(days=7)
HORIZON = STEP_UP - timedelta(seconds=DOSE_TH["step_early_horizon_s"])
WINDOW_START = STEP_UP - timedelta(seconds=DOSE_TH["step_window_s"])
STOPPED_AT = START + timedelta(hours=12)
NEW_CYCLE_AT = STOPPED_AT + timedelta(seconds=DOSE_TH["interruption_new_cycle_s"])


def _infusing(bag: float, t0: datetime) -> list[Event]:
    """A bag hung at ``t0`` and two readings at 10 mL/h, the last a minute later."""
    return [
        BagHung("w1", "b1", t0, "bag", bag, 240.0),
        PumpReading("w1", "b1", "p1", t0, PumpState.INFUSING, 10.0, 0.0),
        PumpReading("w1", "b1", "p1", t0 + 60 * S, PumpState.INFUSING, 10.0, 10.0 / 60),
    ]


def _infusing_up_to(
    case: str, config: Config, bag: float, edge: datetime, raised: list[tuple[str, bool]], pending: set[str]
) -> tuple[Any, ...]:
    """A case of ``EDGES``: an infusion from two minutes before ``edge``, asked a minute
    before it, crossed at the edge itself."""
    return (case, config, _infusing(bag, edge - 120 * S), edge - 59 * S, edge, edge, raised, pending)


# (case, the rule's config, events, the last tick before the edge is asked, the edge, the
# tick that crosses it, what that tick raises and what it leaves pending)
EDGES = [
    # The higher dose before the horizon is a high rate; within it, an early step-up,
    # which must last rate_delay_s before it is raised.
    _infusing_up_to("early horizon", DOSE_CFG, C28, HORIZON, [("DOSE_RATE_HIGH", False)], {"STEP_UP_EARLY"}),
    # From the step window on, the higher dose is the step-up itself.
    _infusing_up_to("step window", DOSE_CFG, C28, WINDOW_START, [("STEP_UP_EARLY", False)], set()),
    # A protocol with no dose on its first day: a dose running before it starts is judged
    # from the start on.
    _infusing_up_to("protocol start", GAP_CFG, C9, START, [], {"DOSE_RATE_HIGH"}),
    (
        # A stop longer than interruption_new_cycle_s: the label's new cycle.
        "new cycle",
        DOSE_CFG,
        [
            *_infusing(C9, STOPPED_AT - 120 * S),
            PumpReading("w1", "b1", "p1", STOPPED_AT, PumpState.STOPPED, 10.0, 20.0 / 60),
        ],
        STOPPED_AT + 601 * S,
        NEW_CYCLE_AT,
        NEW_CYCLE_AT + S,
        [("INFUSION_INTERRUPTED", True)],
        set(),
    ),
]


@pytest.mark.parametrize(
    ("config", "events", "asked", "edge", "crossing", "raised", "pending"),
    [case[1:] for case in EDGES],
    ids=[case[0] for case in EDGES],
)
def test_a_dose_idle_time_ends_at_the_edge_a_check_changes_at(
    config: Config,
    events: list[Event],
    asked: datetime,
    edge: datetime,
    crossing: datetime,
    raised: list[tuple[str, bool]],
    pending: set[str],
) -> None:
    """Just before the edge a tick changes nothing; the tick that crosses it does: the idle
    time is neither late (a check delayed) nor much too early."""
    (rule,) = dose_rules(config, config.bed("b1"))
    assert isinstance(rule, DoseRule)
    state = rule.initial()
    for event in events:
        state, _ = rule.step(state, event, event.time)
    state, _ = rule.step(state, Tick(asked), asked)
    until = rule.idle_until(state, asked)
    assert until is not None
    assert edge - timedelta(milliseconds=2) < until < edge
    before = until - timedelta(microseconds=1)
    assert rule.step(state, Tick(before), before) == (state, [])
    after, out = rule.step(state, Tick(crossing), crossing)
    assert [(c.condition, c.present) for c in out] == raised
    assert set(after.pending) == pending


def test_a_crs_grade_set_at_a_late_samples_time_is_graded_again_at_the_next_tick() -> None:
    """A late sample graded inside the antipyretic's masking, processed after it ended:
    the next tick grades at its own time, without the masking."""
    t0 = START + timedelta(hours=12)
    masking_end = t0 + 600 * S
    low = {Metric.TEMP_C: 36.8, Metric.SBP_MMHG: 84.0}
    events: list[tuple[Event, datetime]] = [
        (Tick(t0), t0),
        (Observation("w1", "b1", t0, antipyretic_given=True), t0),
        *((VitalSample("w1", "b1", "mon", t0 + s * S, low), t0 + s * S) for s in range(1, 120, 10)),
        (VitalSample("w1", "b1", "mon", masking_end - 10 * S, low), masking_end + 30 * S),
        (Tick(masking_end + 31 * S), masking_end + 31 * S),
    ]
    engine = RuleEngine({"b1": _vital_rules()}, wards={"b1": "w1"})
    out = [engine.handle(event, now) for event, now in events]
    assert any(c.condition == "CRS_SUSPECTED" and c.present for batch in out[:-1] for c in batch)
    assert [(c.condition, c.present) for c in out[-1]] == [("CRS_SUSPECTED", False)]
    assert _same_as_alone(_vital_rules, events) > 0


# --------------------------------------------------------------------------- the engine's schedule


def _ward_engine(beds: int) -> tuple[RuleEngine, list[_Counting]]:
    rules = {f"b{i}": [_Counting(TH, BED, schedule_for(BED, CFG))] for i in range(beds)}
    counting = [bed_rules[0] for bed_rules in rules.values()]
    return RuleEngine(rules, wards=dict.fromkeys(rules, "w1")), counting


def _watched_ward(beds: int, t0: datetime) -> RuleEngine:
    """``_ward_engine`` after a first tick and a sample of every bed at ``t0``."""
    engine, _ = _ward_engine(beds)
    engine.handle(Tick(t0), t0)
    for i in range(beds):
        engine.handle(VitalSample("w1", f"b{i}", "mon", t0, {Metric.TEMP_C: 36.8}), t0)
    return engine


def test_a_tick_for_every_bed_reaches_only_the_beds_due_by_its_time() -> None:
    engine, counting = _ward_engine(50)
    t0 = START + timedelta(hours=12)
    engine.handle(Tick(t0), t0)  # every bed: nothing said yet
    assert sum(rule.ticks for rule in counting) == 50
    for i in range(50):
        # Bed b7 falls silent early, so that it goes stale first.
        at = t0 + (S if i != 7 else timedelta(0))
        engine.handle(VitalSample("w1", f"b{i}", "mon", at, {Metric.TEMP_C: 36.8}), at)
    assert engine.due_beds(t0 + 39 * S) == []
    for s in range(2, 40):
        assert engine.handle(Tick(t0 + s * S), t0 + s * S) == []
    assert sum(rule.ticks for rule in counting) == 50
    (stale,) = engine.handle(Tick(t0 + 40 * S), t0 + 40 * S)
    assert (stale.bed, stale.condition) == ("b1", "TELEMETRY_STALE")  # the test's rules name bed b1
    assert counting[7].ticks == 2
    assert sum(rule.ticks for rule in counting) == 51


def test_a_bed_dropped_or_set_again_is_scheduled_as_it_now_is() -> None:
    t0 = START + timedelta(hours=12)
    engine = _watched_ward(3, t0)
    engine.drop_bed("b1")
    assert engine.due_beds(t0 + 60 * S) == ["b0", "b2"]  # the dropped bed's entry is stale
    fresh = _Counting(TH, BED, schedule_for(BED, CFG))
    engine.set_bed("b1", "w1", [fresh], keep_states=False)
    engine.handle(Tick(t0 + 61 * S), t0 + 61 * S)
    assert fresh.ticks == 1  # a bed set anew is due at the next tick


def test_restored_states_are_ticked_at_the_next_tick() -> None:
    t0 = START + timedelta(hours=12)
    engine = _watched_ward(2, t0)
    snapshot = engine.snapshot()
    assert engine.due_beds(t0 + S) == []
    # States saved stale: what the rule said of the states before is void.
    for data in snapshot.values():
        data["vitals"]["stale"] = False
        data["vitals"]["last_vitals_at"] = (t0 - 60 * S).isoformat()
    engine.restore(snapshot)
    raised = engine.handle(Tick(t0 + 2 * S), t0 + 2 * S)
    assert [(c.condition, c.present) for c in raised] == [("TELEMETRY_STALE", True)] * 2


def test_the_schedule_of_due_times_stays_the_size_of_the_ward() -> None:
    """A probe-off makes its bed due at once, over and over: the later due times it leaves
    behind in the heap do not pile up until their own time comes."""
    engine = _watched_ward(3, START + timedelta(hours=12))
    t = START + timedelta(hours=12)
    tenth = timedelta(milliseconds=100)
    for _ in range(500):
        t += tenth
        # The tick schedules b0 at its staleness, 40 s on; the probe-off brings it forward.
        engine.handle(Tick(t), t)
        engine.handle(SourceHealth("w1", "b0", "monitor.temp_c", t, Health.LOST, "probe-off"), t)
        engine.handle(SourceHealth("w1", "b0", "monitor.temp_c", t, Health.CONNECTED, "back"), t)
        engine.handle(VitalSample("w1", "b0", "mon", t, {Metric.TEMP_C: 36.8}), t)
    assert engine._due.heap_size <= 2 * 3 + 64
    engine.handle(Tick(t + tenth), t + tenth)
    (stale,) = engine.handle(Tick(t + 40 * S), t + 40 * S)  # b0 is still scheduled
    assert stale.condition == "TELEMETRY_STALE"
