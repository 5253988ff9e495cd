"""Pump rules: link loss and pump alarms become technical alert candidates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemon.config import Config, parse
from daemon.events import (
    AlertCandidate,
    Health,
    Kind,
    Priority,
    PumpReading,
    PumpState,
    SourceHealth,
    Text,
    Tick,
)
from daemon.pump_rules import ALARM_CONDITIONS, PumpRule, PumpRuleState, pump_rules

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _config() -> Config:
    return parse(
        {
            "beds": [
                {
                    "ward": "w1",
                    "id": "b1",
                    "patient": "P-001",
                    "weight_kg": 70,
                    "height_cm": 170,
                    "protocol_start": "2026-03-02T08:00:00Z",
                },
                {
                    "ward": "w1",
                    "id": "b2",
                    "patient": "P-002",
                    "weight_kg": 70,
                    "height_cm": 170,
                    "protocol_start": "2026-03-02T08:00:00Z",
                },
            ],
            "pumps": [
                {"id": "p1", "bed": "b1", "url": "/dev/ttyUSB0"},
                {"id": "p2", "bed": "b2", "url": "/dev/ttyUSB1"},
            ],
        }
    )


def _rule() -> PumpRule:
    config = _config()
    (rule,) = pump_rules(config, config.bed("b1"))
    assert isinstance(rule, PumpRule)
    return rule


def _reading(state: PumpState, alarm: str | None = None, pump: str = "p1", t: int = 0) -> PumpReading:
    return PumpReading("w1", "b1", pump, T0 + timedelta(seconds=t), state, 10.0, 1.0, alarm)


def _health(health: Health, source: str = "pump[p1]", t: int = 0) -> SourceHealth:
    return SourceHealth("w1", "b1", source, T0 + timedelta(seconds=t), health)


def test_factory_makes_one_rule_per_pump_of_the_bed() -> None:
    config = _config()
    assert [r.name for r in pump_rules(config, config.bed("b2"))] == ["pump[p2]"]


def test_comm_lost_then_connected() -> None:
    rule = _rule()
    state = rule.initial()
    state, out = rule.step(state, _health(Health.CONNECTED), T0)
    assert out == ()
    state, out = rule.step(state, _health(Health.LOST, t=30), T0)
    (lost,) = out
    assert (lost.condition, lost.present, lost.kind, lost.priority) == (
        "PUMP_COMM_LOST",
        True,
        Kind.TECHNICAL,
        Priority.MEDIUM,
    )
    assert lost.message is not None
    assert "pompe" in lost.message.fr
    assert lost.details["pump"] == "p1"
    state, out = rule.step(state, _health(Health.LOST, t=60), T0)
    assert out == ()  # no repeat
    state, out = rule.step(state, _health(Health.CONNECTED, t=90), T0)
    (cleared,) = out
    assert (cleared.condition, cleared.present) == ("PUMP_COMM_LOST", False)


def test_other_pumps_and_events_are_ignored() -> None:
    rule = _rule()
    state = rule.initial()
    for event in (
        _health(Health.LOST, source="pump[p2]"),
        _reading(PumpState.ALARM, "S", pump="p2"),
        Tick(T0),
    ):
        state, out = rule.step(state, event, T0)
        assert out == ()
    assert state == PumpRuleState()


def test_stall_is_held_until_the_pump_runs_again() -> None:
    rule = _rule()
    state = rule.initial()
    state, out = rule.step(state, _reading(PumpState.ALARM, "S"), T0)
    (raised,) = out
    assert (raised.condition, raised.present, raised.kind) == ("PUMP_STALL", True, Kind.TECHNICAL)
    # The poll acknowledged the alarm: the pump now says "stopped". Still interrupted.
    state, out = rule.step(state, _reading(PumpState.STOPPED, t=2), T0)
    assert out == ()
    state, out = rule.step(state, _reading(PumpState.INFUSING, t=60), T0)
    (cleared,) = out
    assert (cleared.condition, cleared.present) == ("PUMP_STALL", False)


def test_each_alarm_code_has_a_condition() -> None:
    rule = _rule()
    expected = {
        "S": "PUMP_STALL",
        "R": "PUMP_RESET",
        "T": "PUMP_SAFE_MODE_TIMEOUT",
        "E": "PUMP_PROGRAM_ERROR",
        "O": "PUMP_PHASE_OUT_OF_RANGE",
        "Q": "PUMP_ALARM",
    }
    for code, condition in expected.items():
        _, out = rule.step(rule.initial(), _reading(PumpState.ALARM, code), T0)
        assert [c.condition for c in out] == [condition]
        assert out[0].message is not None
        assert out[0].message.en
        assert out[0].message.fr


def test_a_new_alarm_replaces_the_old_one() -> None:
    rule = _rule()
    state, _ = rule.step(rule.initial(), _reading(PumpState.ALARM, "R"), T0)
    state, out = rule.step(state, _reading(PumpState.ALARM, "S"), T0)
    assert [(c.condition, c.present) for c in out] == [("PUMP_RESET", False), ("PUMP_STALL", True)]
    state, out = rule.step(state, _reading(PumpState.ALARM, "S"), T0)
    assert out == ()


def test_state_round_trips_through_dump_and_load() -> None:
    rule = _rule()
    state = PumpRuleState(comm_lost=True, alarm_condition="PUMP_STALL")
    assert rule.load(rule.dump(state)) == state
    assert rule.load({}) == PumpRuleState()


# --------------------------------------------------------------------------- whole candidates


def _at(t: int) -> datetime:
    return T0 + timedelta(seconds=t)


def test_comm_lost_and_back_are_whole_candidates_and_the_state_returns_to_initial() -> None:
    rule = _rule()
    lost_event = SourceHealth("w1", "b1", "pump[p1]", _at(30), Health.LOST, "no valid reply for 30 s")
    state, out = rule.step(rule.initial(), lost_event, _at(30))
    assert list(out) == [
        AlertCandidate(
            "PUMP_COMM_LOST",
            "w1",
            "b1",
            _at(30),
            True,
            Kind.TECHNICAL,
            Priority.MEDIUM,
            message=Text(
                "no answer from pump p1: infusion not monitored",
                "pas de réponse de la pompe p1 : perfusion non surveillée",
            ),
            details={"pump": "p1", "detail": "no valid reply for 30 s"},
        )
    ]
    assert state == PumpRuleState(comm_lost=True)
    state, out = rule.step(state, _health(Health.CONNECTED, t=90), _at(90))
    assert list(out) == [
        AlertCandidate(
            "PUMP_COMM_LOST",
            "w1",
            "b1",
            _at(90),
            False,
            Kind.TECHNICAL,
            Priority.MEDIUM,
            message=Text("pump p1 answers again", "la pompe p1 répond de nouveau"),
            details={"pump": "p1"},
        )
    ]
    assert state == PumpRuleState()
    # Lost again: a new episode, raised again.
    _, out = rule.step(state, _health(Health.LOST, t=200), _at(200))
    assert [(c.condition, c.present) for c in out] == [("PUMP_COMM_LOST", True)]


def test_a_pump_alarm_and_its_end_are_whole_candidates() -> None:
    rule = _rule()
    state, out = rule.step(rule.initial(), _reading(PumpState.ALARM, "S", t=60), _at(60))
    message = ALARM_CONDITIONS["S"][1]
    assert list(out) == [
        AlertCandidate(
            "PUMP_STALL",
            "w1",
            "b1",
            _at(60),
            True,
            Kind.TECHNICAL,
            Priority.MEDIUM,
            message=message,
            details={"pump": "p1", "alarm": "S"},
        )
    ]
    state, out = rule.step(state, _reading(PumpState.INFUSING, t=120), _at(120))
    assert list(out) == [
        AlertCandidate(
            "PUMP_STALL",
            "w1",
            "b1",
            _at(120),
            False,
            Kind.TECHNICAL,
            Priority.MEDIUM,
            message=Text("pump p1 is running again", "la pompe p1 fonctionne de nouveau"),
            details={"pump": "p1"},
        )
    ]
    assert state == PumpRuleState()


def test_an_alarm_replaced_is_cleared_at_the_new_reading_time() -> None:
    rule = _rule()
    state, _ = rule.step(rule.initial(), _reading(PumpState.ALARM, "R", t=10), _at(10))
    _, out = rule.step(state, _reading(PumpState.ALARM, "S", t=20), _at(20))
    assert [(c.condition, c.present, c.time) for c in out] == [
        ("PUMP_RESET", False, _at(20)),
        ("PUMP_STALL", True, _at(20)),
    ]


def test_an_alarm_code_counts_whatever_state_the_pump_reports() -> None:
    rule = _rule()
    _, out = rule.step(rule.initial(), _reading(PumpState.STOPPED, "S"), T0)
    assert [(c.condition, c.present) for c in out] == [("PUMP_STALL", True)]


def test_an_alarm_state_without_a_code_is_a_generic_alarm() -> None:
    rule = _rule()
    _, out = rule.step(rule.initial(), _reading(PumpState.ALARM, None), T0)
    (cand,) = out
    assert (cand.condition, cand.details) == ("PUMP_ALARM", {"pump": "p1", "alarm": ""})
    assert cand.message == Text("pump alarm ?: infusion stopped", "alarme pompe ? : perfusion arrêtée")
    _, out = rule.step(rule.initial(), _reading(PumpState.ALARM, "Q"), T0)
    assert out[0].message == Text("pump alarm Q: infusion stopped", "alarme pompe Q : perfusion arrêtée")
