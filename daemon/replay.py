"""``wardd replay``: recorded events back through the rules and the alert engine.

A capture (``wardd run --capture FILE`` or ``wardd scenario --capture FILE``) holds
every input event the daemon handled, in the order it handled them. Replaying it
with the same configuration reproduces the alert transitions on a simulated clock,
in a fraction of the time, without a broker, a pump or a database::

    capture.jsonl ──► events ──► RuleEngine ──► AlertBook ──► transitions (JSON lines)
                      ▲ Tick every tick_interval_s of event time

The daemon's clock during a replay is the events' own time: each event is handled
at its time (never going backwards), with a ``Tick`` every ``tick_s`` in between,
and the alert book's escalation is judged at each tick, as ``AlertService`` does.
Acknowledgements are not in a capture, so a replay shows alerts as nobody answered
them. A line that is not a valid event is reported with its place, counted under
``replay.rejected`` and skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from daemon import capture
from daemon.alerts import AlertBook, Transition
from daemon.app import build_rules
from daemon.config import Config
from daemon.errors import InputError
from daemon.events import Event, Tick
from daemon.metrics import Counters


def _iso(when: datetime) -> str:
    return capture.to_dict(Tick(when))["time"]  # type: ignore[no-any-return]


def transition_record(transition: Transition, start: datetime | None = None) -> dict[str, Any]:
    """One transition in the JSON-lines form ``wardd scenario --alerts-out`` writes too."""
    alert = transition.alert
    record: dict[str, Any] = {"at": _iso(alert.updated)}
    if start is not None:
        record["offset"] = _offset(alert.updated - start)
    record.update(
        {
            "id": alert.id,
            "ward": alert.ward,
            "bed": alert.bed,
            "condition": alert.condition,
            "phase": str(alert.phase),
            "state": str(alert.state),
            "priority": str(alert.priority),
            "kind": str(alert.kind),
            "value": alert.value,
            "unit": alert.unit,
            "details": dict(alert.details),
            "escalation_level": alert.escalation_level,
            "message": alert.message.en,
        }
    )
    return record


def _offset(delta: timedelta) -> str:
    total = int(delta.total_seconds())
    days, rest = divmod(abs(total), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{'-' if total < 0 else '+'}{days}d{hours:02d}h{minutes:02d}m"
    return text + (f"{seconds:02d}s" if seconds else "")


@dataclass
class ReplayResult:
    """What a replay gave: transitions, events handled and lines refused."""

    transitions: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0
    ticks: int = 0
    rejected: int = 0
    start: datetime | None = None
    end: datetime | None = None


def read_events(path: Path, counters: Counters, out: TextIO | None = None) -> Iterator[Event]:
    """The events of a capture file; bad lines are reported, counted and skipped."""
    try:
        for number, data in _lines(path):
            where = f"{path}:{number}"
            if isinstance(data, InputError):
                _refuse(counters, data, out)
                continue
            try:
                event = capture.from_dict(data, where)
            except InputError as exc:
                _refuse(counters, exc, out)
                continue
            if isinstance(event, Tick):
                continue  # the replay makes its own ticks
            yield event
    except OSError as exc:
        raise InputError("unreadable", f"cannot read {path}: {exc.strerror}", str(path)) from exc


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | InputError]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, InputError("invalid_json", str(exc), where)
                continue
            if not isinstance(data, dict):
                yield number, InputError("not_object", "a capture line must be a JSON object", where)
                continue
            yield number, data


def _refuse(counters: Counters, exc: InputError, out: TextIO | None) -> None:
    counters.inc("replay.rejected", exc.reason)
    if out is not None:
        print(f"replay: skipped {exc.where}: {exc.reason}: {exc.detail}", file=out)


def replay(
    config: Config,
    events: Iterable[Event],
    *,
    tick_s: float | None = None,
    until: datetime | None = None,
) -> ReplayResult:
    """Feed ``events`` (in the order given) through the rules and a fresh alert book."""
    tick = timedelta(seconds=tick_s or config.daemon.tick_interval_s)
    engine = build_rules(config)
    book = AlertBook(escalate_after_s=config.alerts.escalate_after_s)
    result = ReplayResult()
    # The simulated clock: the events' own time, never going backwards.
    now: datetime | None = None
    next_tick: datetime | None = None

    def apply(transitions: list[Transition]) -> None:
        result.transitions.extend(transition_record(t, result.start) for t in transitions)

    def ticks_until(when: datetime) -> None:
        nonlocal next_tick, now
        assert next_tick is not None
        while next_tick <= when:
            now = next_tick if now is None else max(now, next_tick)
            apply(book.apply_all(engine.handle(Tick(now), now), now))
            apply(book.tick(now))
            result.ticks += 1
            next_tick += tick

    for event in events:
        if next_tick is None:
            result.start = event.time
            next_tick = event.time
        ticks_until(event.time)
        now = event.time if now is None else max(now, event.time)
        apply(book.apply_all(engine.handle(event, now), now))
        result.events += 1
    if until is not None and next_tick is not None:
        ticks_until(until)
    result.end = now
    return result
