"""Rules: pure functions of (state, event, now) that suggest alert conditions.

A rule never does I/O, never reads a clock, never awaits. ``RuleEngine`` keeps one
state per (bed, rule), routes each event to the rules of its bed (a ``Tick`` to
every bed), and returns the candidates for the alert engine. States are plain
frozen values, so the engine can persist and reload them (``snapshot``/``restore``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from daemon.events import AlertCandidate, Event, Tick

S = TypeVar("S")


class Rule(Protocol[S]):
    """One family of checks for one bed.

    Guarantees a rule gives: ``step`` is deterministic in its arguments; it returns a
    new state rather than changing the old one; ``dump``/``load`` round-trip a state
    through JSON-compatible data.
    """

    name: str

    def initial(self) -> S:
        """The state before any event."""
        ...

    def step(self, state: S, event: Event, now: datetime) -> tuple[S, Sequence[AlertCandidate]]:
        """Consume one event at daemon time ``now``."""
        ...

    def dump(self, state: S) -> Mapping[str, Any]:
        """The state as JSON-compatible data."""
        ...

    def load(self, data: Mapping[str, Any]) -> S:
        """A state from ``dump``'s output."""
        ...


class RuleEngine:
    """Routes events to per-bed rules and keeps their states."""

    def __init__(self, rules: Mapping[str, Sequence[Rule[Any]]]) -> None:
        """``rules`` maps a bed id to the rules that watch it, in evaluation order."""
        self._rules = {bed: tuple(bed_rules) for bed, bed_rules in rules.items()}
        self._states: dict[tuple[str, str], Any] = {
            (bed, rule.name): rule.initial() for bed, bed_rules in self._rules.items() for rule in bed_rules
        }
        # States replaced since the last ``take_changed``: the store writes only these.
        self._changed: set[tuple[str, str]] = set()

    def handle(self, event: Event, now: datetime) -> list[AlertCandidate]:
        """Run every rule concerned by ``event``; return their candidates in order."""
        beds = self._rules if isinstance(event, Tick) else (event.bed,)
        out: list[AlertCandidate] = []
        for bed in beds:
            for rule in self._rules.get(bed, ()):
                key = (bed, rule.name)
                before = self._states[key]
                after, candidates = rule.step(before, event, now)
                if after is not before:
                    self._states[key] = after
                    self._changed.add(key)
                out.extend(candidates)
        return out

    def state(self, bed: str, rule_name: str) -> Any:
        """The current state of one rule at one bed (for status views)."""
        return self._states[(bed, rule_name)]

    def take_changed(self) -> dict[tuple[str, str], Mapping[str, Any]]:
        """The states replaced since the last call, dumped: ``{(bed, rule): data}``."""
        rules = {(bed, rule.name): rule for bed, bed_rules in self._rules.items() for rule in bed_rules}
        out = {key: rules[key].dump(self._states[key]) for key in sorted(self._changed)}
        self._changed.clear()
        return out

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every state as JSON-compatible data: ``{bed: {rule: data}}``."""
        out: dict[str, dict[str, Any]] = {}
        for bed, bed_rules in self._rules.items():
            out[bed] = {rule.name: dict(rule.dump(self._states[(bed, rule.name)])) for rule in bed_rules}
        return out

    def restore(self, snapshot: Mapping[str, Mapping[str, Any]]) -> None:
        """Reload states from ``snapshot``; beds or rules not in it keep their initial state."""
        for bed, bed_rules in self._rules.items():
            for rule in bed_rules:
                data = snapshot.get(bed, {}).get(rule.name)
                if data is not None:
                    self._states[(bed, rule.name)] = rule.load(data)
