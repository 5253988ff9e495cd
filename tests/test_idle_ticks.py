"""Ticks skipped while a rule says they change nothing (``daemon.rules.Idle``): the vital-sign
staleness and the neurological-check reminder. Through the engine the rules give exactly what
they give stepped alone on every event; the skipped ticks are real; a bed's new settings, a
failing rule and the edge of each idle time still reach the rule's own step."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from daemon.clinical.crs import CrsRule, NeuroCheckRule
from daemon.clinical.protocols import schedule_for
from daemon.clinical.vitals import VitalsRule, VitalsState
from daemon.config import BedConfig, VitalThresholds
from daemon.events import (
    AlertCandidate,
    Event,
    Handwriting,
    Health,
    Metric,
    Observation,
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


class _Counting(VitalsRule):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.ticks = 0

    def step(
        self, state: VitalsState, event: Event, now: datetime
    ) -> tuple[VitalsState, Sequence[AlertCandidate]]:
        if isinstance(event, Tick):
            self.ticks += 1
        return super().step(state, event, now)


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
    until = vitals.idle_until(state)
    assert until is not None
    assert t0 + 40 * S - timedelta(milliseconds=2) < until < t0 + 40 * S
    before = until - timedelta(microseconds=1)
    assert vitals.step(state, Tick(before), before) == (state, [])
    stale, out = vitals.step(state, Tick(t0 + 40 * S), t0 + 40 * S)
    assert [c.condition for c in out] == ["TELEMETRY_STALE"]
    assert vitals.idle_until(stale) == IDLE_FOREVER

    first, _ = neuro.step(neuro.initial(), Tick(t0), t0)
    until = neuro.idle_until(first)
    assert until is not None
    assert t0 + 60 * S - timedelta(milliseconds=2) < until < t0 + 60 * S
    before = until - timedelta(microseconds=1)
    assert neuro.step(first, Tick(before), before) == (first, ())
    due, out = neuro.step(first, Tick(t0 + 60 * S), t0 + 60 * S)
    assert [c.condition for c in out] == ["NEURO_CHECK_DUE"]
    assert neuro.idle_until(due) == IDLE_FOREVER
    checked, _ = neuro.step(
        due, Observation("w1", "b1", t0 + 70 * S, handwriting=Handwriting.NORMAL), t0 + 70 * S
    )
    assert checked.last_check == t0 + 70 * S
    until = neuro.idle_until(checked)
    assert until is not None
    assert t0 + 160 * S - timedelta(milliseconds=2) < until < t0 + 160 * S


def test_before_the_protocol_starts_a_tick_changes_nothing_until_its_start() -> None:
    vitals, _, neuro = _rules()
    early = START - timedelta(hours=1)
    state = vitals.initial()
    assert vitals.idle_until(state) == START
    assert vitals.step(state, Tick(early), early) == (state, [])
    watched, _ = neuro.step(neuro.initial(), Tick(early), early)  # the watch began before the start
    until = neuro.idle_until(watched)
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
