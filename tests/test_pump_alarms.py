"""Vendor alarm codes: what each means (daemon/devices/pump_alarms.py), how the Alaris and Fresenius
codecs read them, and how the pump rule raises and ends their conditions. Pure: no port."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from infupy.backends import fresenius as infupy_fresenius

from daemon.config import KNOWN_CONDITIONS, Config, parse
from daemon.devices.alaris import Command, Frame, encode_command, parse_alarm, parse_frame
from daemon.devices.fresenius import ALARM_MEANING, COMMAND_ERRORS
from daemon.devices.pump_alarms import (
    ALARIS,
    ALARIS_NO_ALARM,
    BY_DRIVER,
    FRESENIUS,
    FRESENIUS_ALARM_ERROR,
    GENERIC,
    NE1000,
    meaning,
)
from daemon.errors import FrameError
from daemon.events import Health, PumpReading, PumpState, SourceHealth, Text
from daemon.pump_rules import PumpRule, PumpRuleState, pump_rules
from simulators.scenario import PumpAlarm, PumpModel, can_raise

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

# The Alaris alarm codes listed in OpenICE (mdpnp/mdpnp, AlarisMITM.java), as spelt there
# ("AL DRDIS" with a space).
OPENICE_ALARIS_CODES = {
    "AL_ACDIS", "AL_CALLB", "AL_COMTO", "AL_LDSCN", "AL DRDIS", "AL_EMBAT", "AL_EOIKV", "AL_EOIST",
    "AL_FAULT", "AL_LBTAC", "AL_LWBAT", "AL_NOALM", "AL_OCCLU", "AL_NEOIN", "AL_PRDSC", "AL_RHIGH",
    "AL_SYRCO", "AL_TCITG", "AL_TITCA", "AL_TITNC", "AL_VTBIC", "AL_VTBIK", "AL_VTBIS",
}  # fmt: skip


# ---------------------------------------------------------------- the tables


def test_every_condition_a_table_raises_may_be_routed() -> None:
    """A route or an inhibition naming a vendor condition must pass the config's check."""
    conditions = {known.condition for table in BY_DRIVER.values() for known in table.values()}
    assert conditions | {GENERIC} <= KNOWN_CONDITIONS


def test_no_alaris_code_is_invented() -> None:
    """Every Alaris code wardd names is one OpenICE lists."""
    assert set(ALARIS) | {ALARIS_NO_ALARM} <= OPENICE_ALARIS_CODES


def test_the_fresenius_alarm_code_is_infupys_presence_of_an_alarm() -> None:
    assert set(FRESENIUS) == {FRESENIUS_ALARM_ERROR}
    assert infupy_fresenius.Error.EALARM.value.decode() == FRESENIUS_ALARM_ERROR
    assert ALARM_MEANING == COMMAND_ERRORS["12"] == "presence of an alarm"


def test_every_message_has_both_languages_and_every_code_its_own_table() -> None:
    for driver, table in BY_DRIVER.items():
        for code, known in table.items():
            assert known.message.en, (driver, code)
            assert known.message.fr, (driver, code)
            assert meaning(driver, code) is known
    assert meaning("ne1000", "S").condition == "PUMP_STALL"
    # One vendor's code means nothing for another's pump.
    assert meaning("alaris-asena", "S").condition == GENERIC
    assert meaning("ne1000", "AL_OCCLU").condition == GENERIC


@pytest.mark.parametrize(
    ("code", "condition", "stops"),
    [
        ("AL_OCCLU", "PUMP_OCCLUSION", True),
        ("AL_EOIST", "PUMP_END_OF_INFUSION", True),
        ("AL_EOIKV", "PUMP_END_OF_INFUSION", False),
        ("AL_NEOIN", "PUMP_NEAR_END_OF_INFUSION", False),
        ("AL_LWBAT", "PUMP_BATTERY_LOW", False),
        ("AL_EMBAT", "PUMP_BATTERY_EMPTY", True),
        ("AL_ACDIS", "PUMP_ON_BATTERY", False),
        ("AL_FAULT", GENERIC, True),
        ("AL DRDIS", GENERIC, True),
    ],
)
def test_alaris_codes(code: str, condition: str, stops: bool) -> None:
    known = meaning("alaris-asena", code)
    assert (known.condition, known.stops) == (condition, stops)


def test_an_unknown_code_says_so_and_counts_as_stopping() -> None:
    known = meaning("alaris-asena", "AL_VTBIS")
    assert (known.condition, known.stops) == (GENERIC, True)
    assert known.message == Text(
        "pump alarm AL_VTBIS (meaning not known): check the pump",
        "alarme pompe AL_VTBIS (signification inconnue) : vérifier la pompe",
    )
    # Every NE-1000 alarm stops the pump, a code it does not document too.
    assert meaning("ne1000", "Q").message == Text(
        "pump alarm Q: infusion stopped", "alarme pompe Q : perfusion arrêtée"
    )
    assert set(NE1000) == {"S", "R", "T", "E", "O"}


# ---------------------------------------------------------------- the Alaris ALARM query


def test_the_alarm_query_is_openices_frame() -> None:
    # OpenICE's Alaris code compares what its host sends with "!ALARM|50B2".
    assert encode_command(Command.ALARM) == b"!ALARM|50B2\r"


def test_openices_no_alarm_reply_parses_to_none() -> None:
    # A reply with a space before its checksum, as OpenICE's test peer writes it.
    assert parse_alarm(parse_frame(b"!ALARM^AL_NOALM^ ^ |C73B\r")) is None


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        (("ALARM", "AL_OCCLU", "OCCLUSION", ""), "AL_OCCLU"),
        (("ALARM", "AL_VTBIS", "", ""), "AL_VTBIS"),
        (("ALARM", "AL DRDIS"), "AL DRDIS"),
        (("ALARM", "AL_NOALM"), None),
    ],
)
def test_alarm_replies(fields: tuple[str, ...], code: str | None) -> None:
    assert parse_alarm(Frame(fields)) == code


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (("INF_RATE", "AL_OCCLU"), "unexpected_reply"),
        (("ALARM",), "bad_data"),
        (("ALARM", ""), "bad_data"),
        (("ALARM", "al_occlu"), "bad_data"),
        (("ALARM", " AL_OCCLU"), "bad_data"),
        (("ALARM", "A" * 17), "bad_data"),
    ],
)
def test_alarm_reply_refusals(fields: tuple[str, ...], reason: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_alarm(Frame(fields))
    assert info.value.reason == reason


def test_an_alarm_code_of_sixteen_characters_is_the_longest_taken() -> None:
    assert parse_alarm(Frame(("ALARM", "A" * 16))) == "A" * 16


def test_the_alarm_query_takes_no_arguments() -> None:
    with pytest.raises(ValueError, match="only reads"):
        encode_command(Command.ALARM, "AL_OCCLU")


# ---------------------------------------------------------------- the rule


def _config(driver: str) -> Config:
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
                }
            ],
            "pumps": [{"id": "p1", "bed": "b1", "url": "/dev/ttyUSB0", "driver": driver}],
        }
    )


def _rule(driver: str = "alaris-asena") -> PumpRule:
    config = _config(driver)
    (rule,) = pump_rules(config, config.bed("b1"))
    assert isinstance(rule, PumpRule)
    return rule


def _reading(state: PumpState, alarm: str | None = None, t: int = 0) -> PumpReading:
    return PumpReading("w1", "b1", "p1", T0 + timedelta(seconds=t), state, 10.0, 1.0, alarm)


def _steps(rule: PumpRule, *readings: PumpReading) -> list[list[tuple[str, bool]]]:
    state = rule.initial()
    out: list[list[tuple[str, bool]]] = []
    for reading in readings:
        state, candidates = rule.step(state, reading, reading.time)
        out.append([(c.condition, c.present) for c in candidates])
    return out


def test_an_occlusion_stays_while_the_pump_is_stopped_and_ends_when_it_runs() -> None:
    steps = _steps(
        _rule(),
        _reading(PumpState.STOPPED, "AL_OCCLU"),
        _reading(PumpState.STOPPED, None, 30),  # cleared at the keypad, not restarted
        _reading(PumpState.INFUSING, None, 60),
    )
    assert steps == [[("PUMP_OCCLUSION", True)], [], [("PUMP_OCCLUSION", False)]]


def test_a_low_battery_ends_when_no_longer_reported_even_if_the_pump_is_stopped() -> None:
    steps = _steps(
        _rule(),
        _reading(PumpState.INFUSING, "AL_LWBAT"),
        _reading(PumpState.INFUSING, "AL_LWBAT", 30),
        _reading(PumpState.STOPPED, None, 60),
    )
    assert steps == [[("PUMP_BATTERY_LOW", True)], [], [("PUMP_BATTERY_LOW", False)]]


def test_a_non_stopping_alarm_ended_says_so() -> None:
    rule = _rule()
    state, _ = rule.step(rule.initial(), _reading(PumpState.INFUSING, "AL_ACDIS"), T0)
    assert state == PumpRuleState(alarm_condition="PUMP_ON_BATTERY", alarm_stops=False)
    state, out = rule.step(state, _reading(PumpState.INFUSING, None, 30), T0)
    (ended,) = out
    assert ended.message == Text(
        "pump p1 no longer reports the alarm", "la pompe p1 ne signale plus l'alarme"
    )
    assert state == PumpRuleState()


def test_end_of_infusion_keeping_the_vein_open_then_stopped_is_one_condition_that_now_stops() -> None:
    rule = _rule()
    state, out = rule.step(rule.initial(), _reading(PumpState.INFUSING, "AL_EOIKV"), T0)
    assert [(c.condition, c.present) for c in out] == [("PUMP_END_OF_INFUSION", True)]
    state, out = rule.step(state, _reading(PumpState.STOPPED, "AL_EOIST", 30), T0)
    assert out == ()
    assert state.alarm_stops
    # Now a stopping alarm: gone from the pump but not running, it stays.
    state, out = rule.step(state, _reading(PumpState.STOPPED, None, 60), T0)
    assert out == ()
    state, out = rule.step(state, _reading(PumpState.INFUSING, None, 90), T0)
    assert [(c.condition, c.present) for c in out] == [("PUMP_END_OF_INFUSION", False)]


def test_a_running_alarm_replaced_by_a_stopping_one() -> None:
    steps = _steps(
        _rule(),
        _reading(PumpState.INFUSING, "AL_NEOIN"),
        _reading(PumpState.STOPPED, "AL_EOIST", 30),
    )
    assert steps == [
        [("PUMP_NEAR_END_OF_INFUSION", True)],
        [("PUMP_NEAR_END_OF_INFUSION", False), ("PUMP_END_OF_INFUSION", True)],
    ]


def test_a_fresenius_alarm_is_a_generic_alarm_that_ends_when_the_pump_runs() -> None:
    rule = _rule("fresenius-base-a")
    state, out = rule.step(rule.initial(), _reading(PumpState.ALARM, "12"), T0)
    (raised,) = out
    assert (raised.condition, raised.details) == (GENERIC, {"pump": "p1", "alarm": "12"})
    assert raised.message == FRESENIUS["12"].message
    state, out = rule.step(state, _reading(PumpState.STOPPED, None, 30), T0)
    assert out == ()
    _, out = rule.step(state, _reading(PumpState.INFUSING, None, 60), T0)
    assert [(c.condition, c.present) for c in out] == [(GENERIC, False)]


def test_an_alarm_replaced_says_so_whatever_the_old_one_was() -> None:
    rule = _rule()
    replaced = Text(
        "pump p1 reports another alarm instead", "la pompe p1 signale une autre alarme à la place"
    )
    for first in ("AL_OCCLU", "AL_LWBAT"):
        state, _ = rule.step(rule.initial(), _reading(PumpState.STOPPED, first), T0)
        _, out = rule.step(state, _reading(PumpState.STOPPED, "AL_EMBAT", 30), T0)
        assert [(c.condition, c.present, c.message) for c in out[:1]] == [
            (meaning("alaris-asena", first).condition, False, replaced)
        ]


def test_a_stopping_alarm_ended_says_the_pump_runs_again() -> None:
    rule = _rule()
    state, _ = rule.step(rule.initial(), _reading(PumpState.STOPPED, "AL_OCCLU"), T0)
    _, out = rule.step(state, _reading(PumpState.INFUSING, None, 30), T0)
    (ended,) = out
    assert ended.message == Text("pump p1 is running again", "la pompe p1 fonctionne de nouveau")


def test_a_driver_without_a_table_still_raises_every_alarm() -> None:
    known = meaning("some-future-driver", "X1")
    assert (known.condition, known.stops) == (GENERIC, True)
    assert "X1" in known.message.en


def test_the_state_with_a_running_alarm_round_trips() -> None:
    rule = _rule()
    state = PumpRuleState(alarm_condition="PUMP_BATTERY_LOW", alarm_stops=False)
    assert rule.load(rule.dump(state)) == state
    # A state saved before alarms could leave the pump running: a stopping one.
    assert rule.load({"comm_lost": False, "alarm_condition": "PUMP_STALL"}).alarm_stops


def test_a_lost_link_says_the_last_fault() -> None:
    rule = _rule("fresenius-base-a")
    detail = "no valid reply for 120 s; last fault: error_reply: pump answered error 0E: communication with the module impossible"
    _, out = rule.step(rule.initial(), SourceHealth("w1", "b1", "pump[p1]", T0, Health.LOST, detail), T0)
    (lost,) = out
    assert lost.details == {"pump": "p1", "detail": detail}


# ---------------------------------------------------------------- the scenario's alarms


def test_each_pump_model_raises_only_the_alarms_it_has_a_code_for() -> None:
    assert {a for a in PumpAlarm if can_raise(PumpModel.NE1000, a)} == {
        PumpAlarm.OCCLUSION,
        PumpAlarm.STALL,
        PumpAlarm.RESET,
        PumpAlarm.PROGRAM_ERROR,
        PumpAlarm.PHASE_OUT_OF_RANGE,
    }
    assert {a for a in PumpAlarm if can_raise(PumpModel.ALARIS_ASENA, a)} == {
        PumpAlarm.OCCLUSION,
        PumpAlarm.END_OF_INFUSION,
        PumpAlarm.NEAR_END_OF_INFUSION,
        PumpAlarm.BATTERY_LOW,
        PumpAlarm.BATTERY_EMPTY,
        PumpAlarm.ON_BATTERY,
    }
    assert all(can_raise(PumpModel.FRESENIUS_BASE_A, a) for a in PumpAlarm)
    assert {a for a in PumpAlarm if not a.stops} == {
        PumpAlarm.NEAR_END_OF_INFUSION,
        PumpAlarm.BATTERY_LOW,
        PumpAlarm.ON_BATTERY,
    }
