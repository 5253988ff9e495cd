"""Rules: pure functions of (state, event, now) that suggest alert conditions.

A rule never does I/O, never reads a clock, never awaits. ``RuleEngine`` keeps one
state per (bed, rule), routes each event to the rules of its bed (a ``Tick`` to
every bed), and returns the candidates for the alert engine. States are plain
frozen values, so the engine can persist and reload them (``snapshot``/``restore``).

A rule that raises is contained: its state at that bed is left as it was, the
failure is logged and counted (``rules.failed``, labelled with the rule's name), and
the engine returns a ``RULE_FAILED`` technical alert candidate for the bed. The other
rules, and the same rule at other beds, carry on.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from daemon.events import AlertCandidate, Event, Kind, Priority, Text, Tick
from daemon.metrics import Counters

log = logging.getLogger(__name__)

S = TypeVar("S")

RULE_FAILED = "RULE_FAILED"
"""Technical condition: a rule raised instead of judging an event, so its checks at
that bed are not being made."""

FAILED = "rules.failed"
"""Counter of rule steps that raised, labelled with the rule's name."""

_MAX_ERROR_CHARS = 200  # enough to identify the error in an alert; tracebacks go to the log


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
    """Routes events to per-bed rules and keeps their states; contains a rule that raises."""

    def __init__(
        self,
        rules: Mapping[str, Sequence[Rule[Any]]],
        *,
        counters: Counters | None = None,
        wards: Mapping[str, str] | None = None,
    ) -> None:
        """``rules`` maps a bed id to the rules that watch it, in evaluation order.

        ``counters`` receives ``rules.failed`` (a private set when not given);
        ``wards`` maps a bed id to its ward, for the ``RULE_FAILED`` candidate of a
        rule that fails on a ``Tick`` (other events carry their ward).
        """
        self._rules = {bed: tuple(bed_rules) for bed, bed_rules in rules.items()}
        self._rule = {(bed, rule.name): rule for bed, bed_rules in self._rules.items() for rule in bed_rules}
        self._states: dict[tuple[str, str], Any] = {
            (bed, rule.name): rule.initial() for bed, bed_rules in self._rules.items() for rule in bed_rules
        }
        # States replaced since the last ``take_changed``: the store writes only these.
        self._changed: set[tuple[str, str]] = set()
        self._counters = counters if counters is not None else Counters()
        self._wards = dict(wards or {})
        # Rules failing now, per bed: RULE_FAILED clears once none is left at the bed.
        self._failing: dict[str, set[str]] = {}

    @property
    def counters(self) -> Counters:
        """Where rule failures are counted."""
        return self._counters

    def handle(self, event: Event, now: datetime) -> list[AlertCandidate]:
        """Run every rule concerned by ``event``; return their candidates in order.

        Never raises ``Exception``: a rule that does is contained (see the module
        docstring) and its ``RULE_FAILED`` candidate takes the place of its own.
        """
        beds = self._rules if isinstance(event, Tick) else (event.bed,)
        out: list[AlertCandidate] = []
        for bed in beds:
            for rule in self._rules.get(bed, ()):
                key = (bed, rule.name)
                before = self._states[key]
                try:
                    after, candidates = rule.step(before, event, now)
                    candidates = list(candidates)  # a lazy sequence may raise too
                except Exception as exc:
                    # One rule's bug must not stop the others. Exception, not
                    # BaseException: cancellation and exit still propagate.
                    out.append(self._failed(bed, rule.name, event, now, exc))
                    continue
                if after is not before:
                    self._states[key] = after
                    self._changed.add(key)
                out.extend(candidates)
                out.extend(self._recovered(bed, rule.name, event, now))
        return out

    def failing(self, bed: str) -> frozenset[str]:
        """The names of the rules whose last step at ``bed`` raised."""
        return frozenset(self._failing.get(bed, ()))

    def _ward(self, bed: str, event: Event) -> str:
        return self._wards.get(bed, "") if isinstance(event, Tick) else event.ward

    def _failed(self, bed: str, rule: str, event: Event, now: datetime, exc: Exception) -> AlertCandidate:
        first = rule not in self._failing.get(bed, set())
        self._failing.setdefault(bed, set()).add(rule)
        self._counters.inc(FAILED, rule)
        # The traceback once per failure run, so that a rule failing on every tick
        # does not flood the log; every later failure still gets one line.
        log.error(
            "rule %s failed at bed %s on %r; its state is kept",
            rule,
            bed,
            event,
            exc_info=exc if first else None,
        )
        error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]
        return AlertCandidate(
            condition=RULE_FAILED,
            ward=self._ward(bed, event),
            bed=bed,
            time=now,
            present=True,
            kind=Kind.TECHNICAL,
            priority=Priority.HIGH,
            message=Text(
                en=f"Rule {rule} failed at bed {bed}; its checks are not being made ({error})",
                fr=f"La règle {rule} a échoué au lit {bed} ; ses contrôles ne sont plus faits ({error})",
            ),
            details={"rule": rule, "error": error},
        )

    def _recovered(self, bed: str, rule: str, event: Event, now: datetime) -> list[AlertCandidate]:
        failing = self._failing.get(bed)
        if not failing or rule not in failing:
            return []
        failing.discard(rule)
        log.info("rule %s works again at bed %s", rule, bed)
        if failing:
            return []
        del self._failing[bed]
        return [
            AlertCandidate(
                condition=RULE_FAILED,
                ward=self._ward(bed, event),
                bed=bed,
                time=now,
                present=False,
                kind=Kind.TECHNICAL,
                priority=Priority.HIGH,
            )
        ]

    def state(self, bed: str, rule_name: str) -> Any:
        """The current state of one rule at one bed (for status views)."""
        return self._states[(bed, rule_name)]

    def take_changed(self) -> dict[tuple[str, str], Callable[[], Mapping[str, Any]]]:
        """The states replaced since the last call, each as a function that dumps it.

        ``{(bed, rule): dump}``. States are immutable, so a dump may run later and on
        another thread (the store's writer does it): the event loop only collects them.
        """
        out: dict[tuple[str, str], Callable[[], Mapping[str, Any]]] = {
            key: functools.partial(self._rule[key].dump, self._states[key]) for key in sorted(self._changed)
        }
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
