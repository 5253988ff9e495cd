"""Rules see only the events they consume: the engine's routing, and each rule's promise behind it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon import capture
from daemon.app import TICK_SLICE_BEDS, TICK_SPREAD, build, build_rules
from daemon.clinical.dose import dose_rules
from daemon.clinical.watch import vital_rules
from daemon.clock import ManualClock
from daemon.config import Config, PumpConfig
from daemon.errors import InputError
from daemon.events import (
    Acvpu,
    AlertCandidate,
    BagHung,
    Event,
    Handwriting,
    Health,
    Metric,
    Observation,
    PumpReading,
    PumpState,
    SourceHealth,
    Tick,
    VitalSample,
)
from daemon.pump_rules import pump_rules
from daemon.rules import Rule, RuleEngine
from daemon.tech_rules import tech_rules
from tests.helpers import committing, one_bed_config

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _config() -> Config:
    base = one_bed_config(START - timedelta(hours=20))
    pump = PumpConfig(id="p1", bed="b1", url="/fake")
    return base.model_copy(update={"pumps": [pump]})


def _one_of_each(at: datetime) -> list[Event]:
    """An event of every type, each one that its consumers would act on."""
    return [
        VitalSample(
            "w1", "b1", "m1", at, {Metric.TEMP_C: 38.6, Metric.HR_PER_MIN: 131.0, Metric.SPO2_PCT: 88.0}
        ),
        Observation(
            "w1", "b1", at, by="nurse-a", acvpu=Acvpu.VOICE, handwriting=Handwriting.CHANGED, ice_score=6
        ),
        SourceHealth("w1", "b1", "monitor.spo2_pct", at, Health.LOST, "probe-off"),
        # The links' health goes to the ward's own subject (daemon.ids.ward_subject).
        SourceHealth("w1", "_w1", "storage", at, Health.LOST, "down"),
        SourceHealth("w1", "_w1", "mqtt", at, Health.LOST, "connection refused"),
        SourceHealth("w1", "b1", "pump[p1]", at, Health.LOST, "timeout"),
        PumpReading("w1", "b1", "p1", at, PumpState.INFUSING, 10.0, 12.0, alarm="S"),
        BagHung("w1", "b1", at, "B-1", 0.0375, 270.0),
        Tick(at),
    ]


def _all_rules(config: Config) -> list[Rule[Any]]:
    bed = config.bed("b1")
    return [
        *tech_rules(config, bed.ward),
        *pump_rules(config, bed),
        *dose_rules(config, bed),
        *vital_rules(config, bed),
    ]


def _history(rule: Rule[Any]) -> Any:
    """A state with something in it: an hour of every kind of event."""
    state = rule.initial()
    for minute in range(0, 60, 5):
        at = START + timedelta(minutes=minute)
        for event in _one_of_each(at):
            state, _ = rule.step(state, event, at + timedelta(seconds=1))
    return state


def _declared(config: Config) -> list[tuple[str, Rule[Any]]]:
    return [(rule.name, rule) for rule in _all_rules(config) if getattr(rule, "consumes", None) is not None]


def test_rules_that_ignore_some_events_declare_what_they_consume() -> None:
    # The CRS rule reads every type of event there is.
    assert [name for name, _ in _declared(_config())] == [
        "storage",
        "broker",
        "pump[p1]",
        "dose",
        "vitals",
        "news2",
        "icans",
        "neuro_check",
    ]


@pytest.mark.parametrize("name", [name for name, _ in _declared(_config())])
def test_a_rule_ignores_what_it_does_not_consume(name: str) -> None:
    """The promise ``consumes`` makes, checked on a state with history: same state, no candidate."""
    rule = dict(_declared(_config()))[name]
    consumes = rule.consumes  # type: ignore[attr-defined]
    state = _history(rule)
    at = START + timedelta(hours=2)
    ignored = [e for e in _one_of_each(at) if not isinstance(e, consumes)]
    assert ignored, f"{name} consumes every event type: declare nothing instead"
    for event in ignored:
        after, candidates = rule.step(state, event, at)
        assert after is state, (name, type(event).__name__)
        assert list(candidates) == [], (name, type(event).__name__)


def test_a_rule_sees_what_it_consumes() -> None:
    """Each declared type reaches the rule: a consumer that never acts would prove nothing."""
    config = _config()
    for name, rule in _declared(config):
        state = rule.initial()
        changed = False
        for minute in range(0, 60, 5):
            at = START + timedelta(minutes=minute)
            for event in _one_of_each(at):
                if isinstance(event, rule.consumes):  # type: ignore[attr-defined]
                    after, _ = rule.step(state, event, at + timedelta(seconds=1))
                    changed = changed or after is not state
                    state = after
        assert changed, name


class _Recorder:
    """A rule that records what it was given."""

    def __init__(self, name: str, consumes: tuple[type, ...] | None) -> None:
        self.name = name
        self.seen: list[str] = []
        if consumes is not None:
            self.consumes = consumes

    def initial(self) -> int:
        return 0

    def step(self, state: int, event: Event, now: datetime) -> tuple[int, Sequence[AlertCandidate]]:
        self.seen.append(type(event).__name__)
        return state + 1, ()

    def dump(self, state: int) -> dict[str, Any]:
        return {"n": state}

    def load(self, data: Mapping[str, Any]) -> int:
        return int(data["n"])


def test_the_engine_routes_by_declared_type() -> None:
    everything = _Recorder("all", None)
    samples = _Recorder("samples", (VitalSample,))
    ticks = _Recorder("ticks", (Tick, Observation))
    engine = RuleEngine({"b1": [everything, samples, ticks]}, wards={"b1": "w1"})
    events = [e for e in _one_of_each(START) if getattr(e, "bed", "b1") == "b1"]
    for event in events:
        engine.handle(event, START)
    assert everything.seen == [type(e).__name__ for e in events]
    assert samples.seen == ["VitalSample"]
    assert ticks.seen == ["Observation", "Tick"]


def test_the_published_rule_set_is_unchanged_by_routing() -> None:
    """The same events through routed and unrouted engines give the same candidates and states."""
    config = _config()
    routed = build_rules(config)
    bed_rules, ward_rules = _all_rules(config)[2:], _all_rules(config)[:2]
    plain = RuleEngine(
        {"b1": [_Unrouted(rule) for rule in bed_rules], "_w1": [_Unrouted(rule) for rule in ward_rules]},
        wards={"b1": "w1", "_w1": "w1"},
    )
    for minute in range(0, 120, 3):
        at = START + timedelta(minutes=minute)
        for event in _one_of_each(at):
            assert routed.handle(event, at) == plain.handle(event, at), (minute, event)
    assert routed.snapshot() == plain.snapshot()


class _Unrouted:
    """A rule without its ``consumes``: the engine hands it every event."""

    def __init__(self, rule: Rule[Any]) -> None:
        self._rule = rule
        self.name = rule.name

    def initial(self) -> Any:
        return self._rule.initial()

    def step(self, state: Any, event: Event, now: datetime) -> tuple[Any, Sequence[AlertCandidate]]:
        return self._rule.step(state, event, now)

    def dump(self, state: Any) -> Any:
        return self._rule.dump(state)

    def load(self, data: Any) -> Any:
        return self._rule.load(data)


# --- ticks for some beds, and a large ward's tick in slices --------------------------------------


def test_a_tick_for_some_beds_reaches_only_theirs() -> None:
    first, second = _Recorder("r", (Tick,)), _Recorder("r", (Tick,))
    engine = RuleEngine({"b1": [first], "b2": [second]}, wards={"b1": "w1", "b2": "w1"})
    engine.handle(Tick(START, beds=("b2",)), START)
    assert (first.seen, second.seen) == ([], ["Tick"])
    engine.handle(Tick(START), START)
    assert (first.seen, second.seen) == (["Tick"], ["Tick", "Tick"])


def test_a_sliced_tick_is_captured_and_read_back_as_such() -> None:
    sliced = Tick(START, beds=("1", "2"))
    assert capture.from_dict(capture.to_dict(sliced)) == sliced
    # A tick for every bed is written as ticks always were (older captures read the same).
    assert capture.to_dict(Tick(START)) == {"type": "tick", "time": "2026-03-02T08:00:00Z"}
    with pytest.raises(InputError):
        capture.from_dict({"type": "tick", "time": "2026-03-02T08:00:00Z", "beds": "1"})


async def test_a_large_wards_tick_comes_in_slices_with_inputs_between(tmp_path: Path) -> None:
    beds = TICK_SLICE_BEDS * 2 + 1
    config = _ward(tmp_path, beds)
    clock = ManualClock(START)
    pipeline = build(config, clock=clock)
    seen: list[Event] = []
    sample = VitalSample("w1", "1", "m1", START, {Metric.TEMP_C: 36.8})

    def observe(event: Event) -> None:
        seen.append(event)
        if len(seen) == 1:
            # An input that arrives while the first slice is being processed.
            pipeline.work.put_nowait(sample)

    pipeline.observers.append(observe)
    interval_s = config.daemon.tick_interval_s
    gap_s = interval_s * TICK_SPREAD / 3

    def ticks_seen() -> int:
        return sum(isinstance(e, Tick) for e in seen)

    async with committing(pipeline.writer), asyncio.TaskGroup() as group:
        dispatch = group.create_task(pipeline._dispatch(), name="dispatch")
        ticks = group.create_task(pipeline._ticks(), name="ticks")
        await until_true(lambda: ticks_seen() == 1)
        for count in (2, 3):
            # The next slice waits for its share of the interval, not for the last one only.
            due_s = (count - 1) * gap_s
            await until_true(lambda: clock.next_wake() == pytest.approx(due_s))  # noqa: B023 -- awaited in this pass
            assert ticks_seen() == count - 1
            await clock.advance(gap_s)
            await until_true(lambda: ticks_seen() == count)  # noqa: B023 -- awaited in this pass
        await until_true(lambda: clock.next_wake() == pytest.approx(interval_s))  # the next tick
        await clock.advance(interval_s - 2 * gap_s)
        await until_true(lambda: ticks_seen() == 4)
        ticks.cancel()
        dispatch.cancel()
    # It waited for one slice, not for the whole ward.
    assert seen[1] is sample
    slices = [e for e in seen if isinstance(e, Tick)]
    # The last slice: the last bed and the ward's own subject (its broker rule waits on ticks).
    assert [len(t.beds or ()) for t in slices] == [TICK_SLICE_BEDS, TICK_SLICE_BEDS, 2, 1]
    covered = [bed for t in slices[:3] for bed in t.beds or ()]
    assert covered == [*(bed.id for bed in config.beds), "_w1"]
    # The next tick goes to what a tick may change: the ward's subject, whose rule is stepped
    # on every tick; every bed's rules said that theirs change nothing for now.
    assert slices[3].beds == ("_w1",)
    # Each slice carries the time it was processed at, spread over TICK_SPREAD of the interval.
    assert [t.time for t in slices] == [
        START,
        START + timedelta(seconds=gap_s),
        START + timedelta(seconds=2 * gap_s),
        START + timedelta(seconds=interval_s),
    ]


async def until_true(predicate: Callable[[], bool]) -> None:
    """Let the loop run until ``predicate`` holds (no real time passes in these tests)."""
    for _ in range(10_000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def _ward(tmp_path: Path, beds: int) -> Config:
    base = one_bed_config(START - timedelta(hours=12))
    template = base.beds[0]
    return base.model_copy(
        update={
            "beds": [
                template.model_copy(update={"id": str(i), "patient": f"P-{i}"}) for i in range(1, beds + 1)
            ],
            "daemon": base.daemon.model_copy(update={"state_dir": tmp_path / "state"}),
            "influx": base.influx.model_copy(update={"api": "none"}),
        }
    )


def test_an_event_for_a_bed_the_engine_does_not_know_is_ignored() -> None:
    recorder = _Recorder("r", (VitalSample, Tick))
    engine = RuleEngine({"b1": [recorder]}, wards={"b1": "w1"})
    stranger = VitalSample("w1", "b9", "m1", START, {Metric.TEMP_C: 39.0})
    assert engine.handle(stranger, START) == []
    assert engine.handle(Tick(START, beds=("b9",)), START) == []
    assert recorder.seen == []
