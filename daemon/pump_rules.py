"""Technical alert conditions from the pumps of one bed: link lost, pump alarms.

Priorities (IEC 60601-1-8, domain.md section 4), all MEDIUM ("prompt response,
reversible injury"), and why:

- ``PUMP_COMM_LOST``: the pump keeps infusing and keeps its own bedside alarms, so
  nothing stops at once; but while the link is down the daemon cannot see a stop,
  a wrong rate or a dose error, so a person must look promptly.
- Pump alarms that stop the pump (NE-1000 stall, power loss, safe-mode timeout,
  program error, phase out of range; an Alaris occlusion, end of infusion or empty
  battery; any code whose meaning is unknown): the infusion has stopped.
  Blinatumomab's half-life is about 2.1 h and a break of 4 h or more needs
  premedication and a supervised restart (domain.md section 1): harm grows with time
  but is reversible if someone acts promptly, which is MEDIUM, not HIGH.
- Pump alarms that do not stop it yet (Alaris low battery, mains power lost, syringe
  nearly empty, end of infusion keeping the vein open): each one, left alone, ends in
  a stop or an underdose, the same harm later. domain.md gives no priority for these
  device advisories, so they keep the pump alarms' MEDIUM rather than an invented one.

What each vendor code means is in ``daemon.devices.pump_alarms`` (looked up by the pump's
``driver``): no vendor code is read here.

A stopping alarm stays present until the pump is running again. Any valid command
acknowledges an NE-1000 alarm, and the daemon's own poll is one, so the pump's
next answer is merely "stopped". Clearing on that would make the alert flash for
a single poll while the infusion stays interrupted. A pump deliberately left
stopped after an alarm keeps the condition until staff acknowledge it in the
alert engine. An alarm that did not stop the pump ends at the first reading that
no longer reports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon.config import BedConfig, Config, PumpConfig
from daemon.devices.pump_alarms import GENERIC, NE1000, meaning
from daemon.events import (
    AlertCandidate,
    Event,
    Health,
    Kind,
    Priority,
    PumpReading,
    PumpState,
    SourceHealth,
    Text,
)
from daemon.frozen import replace
from daemon.rules import Rule

COMM_LOST = "PUMP_COMM_LOST"
GENERIC_ALARM = GENERIC

# NE-1000 alarm codes (domain.md section 6) -> condition and message, as before the
# vendor tables moved to ``daemon.devices.pump_alarms``.
ALARM_CONDITIONS: Mapping[str, tuple[str, Text]] = {
    code: (known.condition, known.message) for code, known in NE1000.items()
}

_RUNNING = frozenset({PumpState.INFUSING, PumpState.WITHDRAWING, PumpState.PURGING, PumpState.WAITING})


@dataclass(frozen=True, slots=True)
class PumpRuleState:
    """What this rule has announced for one pump."""

    comm_lost: bool = False
    alarm_condition: str | None = None  # the pump-alarm condition currently present
    alarm_stops: bool = True  # whether it means the pump stopped (``daemon.devices.pump_alarms``)


class PumpRule:
    """Technical conditions of one pump at one bed (``Rule[PumpRuleState]``)."""

    consumes = (SourceHealth, PumpReading)
    """The events this rule reads (``daemon.rules.Rule``); it ignores every other."""

    def __init__(self, pump: PumpConfig, ward: str) -> None:
        """Watch ``pump`` (its events carry source ``pump[<id>]`` and pump ``<id>``)."""
        self.pump_id = pump.id
        self.driver = pump.driver
        self.ward = ward
        self.bed = pump.bed
        self.source = f"pump[{pump.id}]"
        self.name = f"pump[{pump.id}]"

    def initial(self) -> PumpRuleState:
        """Nothing announced."""
        return PumpRuleState()

    def step(
        self, state: PumpRuleState, event: Event, now: datetime
    ) -> tuple[PumpRuleState, Sequence[AlertCandidate]]:
        """Link health and pump alarms in; technical candidates out, on changes only."""
        if isinstance(event, SourceHealth) and event.source == self.source:
            return self._health(state, event)
        if isinstance(event, PumpReading) and event.pump == self.pump_id:
            return self._reading(state, event)
        return state, ()

    def _candidate(
        self, condition: str, time: datetime, present: bool, message: Text, **details: Any
    ) -> AlertCandidate:
        return AlertCandidate(
            condition=condition,
            ward=self.ward,
            bed=self.bed,
            time=time,
            present=present,
            kind=Kind.TECHNICAL,
            priority=Priority.MEDIUM,
            message=message,
            details={"pump": self.pump_id, **details},
        )

    def _health(
        self, state: PumpRuleState, event: SourceHealth
    ) -> tuple[PumpRuleState, Sequence[AlertCandidate]]:
        if event.health is Health.LOST and not state.comm_lost:
            message = Text(
                f"no answer from pump {self.pump_id}: infusion not monitored",
                f"pas de réponse de la pompe {self.pump_id} : perfusion non surveillée",
            )
            return replace(state, comm_lost=True), [
                self._candidate(COMM_LOST, event.time, True, message, detail=event.detail)
            ]
        if event.health is Health.CONNECTED and state.comm_lost:
            message = Text(
                f"pump {self.pump_id} answers again",
                f"la pompe {self.pump_id} répond de nouveau",
            )
            return replace(state, comm_lost=False), [self._candidate(COMM_LOST, event.time, False, message)]
        return state, ()

    def _reading(
        self, state: PumpRuleState, event: PumpReading
    ) -> tuple[PumpRuleState, Sequence[AlertCandidate]]:
        out: list[AlertCandidate] = []
        if event.alarm is not None or event.state is PumpState.ALARM:
            code = event.alarm or ""
            known = meaning(self.driver, code)
            if known.condition == state.alarm_condition:
                return replace(state, alarm_stops=known.stops), ()
            if state.alarm_condition is not None:
                out.append(self._cleared(state.alarm_condition, event.time, self._replaced()))
            out.append(self._candidate(known.condition, event.time, True, known.message, alarm=code))
            return replace(state, alarm_condition=known.condition, alarm_stops=known.stops), out
        # A stopping alarm ends when the pump runs again; one that did not stop the pump
        # ends at the first reading without it.
        if state.alarm_condition is not None and (event.state in _RUNNING or not state.alarm_stops):
            ended = self._running_again() if state.alarm_stops else self._gone()
            out.append(self._cleared(state.alarm_condition, event.time, ended))
            return replace(state, alarm_condition=None, alarm_stops=True), out
        return state, ()

    def _cleared(self, condition: str, time: datetime, message: Text) -> AlertCandidate:
        return self._candidate(condition, time, False, message)

    def _running_again(self) -> Text:
        return Text(f"pump {self.pump_id} is running again", f"la pompe {self.pump_id} fonctionne de nouveau")

    def _gone(self) -> Text:
        return Text(
            f"pump {self.pump_id} no longer reports the alarm",
            f"la pompe {self.pump_id} ne signale plus l'alarme",
        )

    def _replaced(self) -> Text:
        return Text(
            f"pump {self.pump_id} reports another alarm instead",
            f"la pompe {self.pump_id} signale une autre alarme à la place",
        )

    def dump(self, state: PumpRuleState) -> Mapping[str, Any]:
        """The state as JSON-compatible data."""
        return {
            "comm_lost": state.comm_lost,
            "alarm_condition": state.alarm_condition,
            "alarm_stops": state.alarm_stops,
        }

    def load(self, data: Mapping[str, Any]) -> PumpRuleState:
        """A state from ``dump``'s output."""
        condition = data.get("alarm_condition")
        return PumpRuleState(
            comm_lost=bool(data.get("comm_lost", False)),
            alarm_condition=str(condition) if condition is not None else None,
            alarm_stops=bool(data.get("alarm_stops", True)),
        )


def pump_rules(config: Config, bed: BedConfig) -> list[Rule[Any]]:
    """One ``PumpRule`` per pump configured at ``bed``."""
    return [PumpRule(pump, bed.ward) for pump in config.pumps if pump.bed == bed.id]
