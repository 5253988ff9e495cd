"""``wardd replay``: recorded events back through the rules and the alert engine.

A capture (``wardd run --capture FILE`` or ``wardd scenario --capture FILE``) holds
every event the daemon handled, in the order it handled them, its own ticks
included. Replaying it with the same configuration reproduces the alert transitions
on a simulated clock, in a fraction of the time, without a broker, a pump or a
database::

    capture.jsonl ──► events and ticks ──► RuleEngine ──► AlertBook ──► transitions (JSON lines)

The daemon's clock during a replay:

* Ticks come from the capture. The rules that judge time passing (staleness, checks
  due, step-up due, interruptions) run on ticks, and a tick and an event at the same
  instant give different alerts depending on which came first (a neurological check
  recorded exactly when it falls due): only the recorded ticks say which did.
* A capture without tick lines (hand-written, or made before ticks were recorded) has
  them rebuilt: one every ``tick_s`` from the first event, each placed before the
  events of its own instant. Such a replay can differ from the live run wherever an
  event and a tick coincided. Once a tick line is read, no tick is rebuilt any more
  (a stopped daemon had no ticks either), except after the last one up to ``until``.
* Each event is handled at the later of its own time and the last tick's. The live
  daemon handled it at its clock's reading then, which on a real clock can be later
  by up to one tick interval (on the scenario runner's stepped clock, never).
* Escalation of unacknowledged alerts is judged at each tick; the live daemon judges
  it every ``alerts.check_interval_s``, so ``overdue`` transitions can fall at other
  times when that interval is not the tick interval.

Acknowledgements are not in a capture, so a replay shows alerts as nobody answered
them. A line that is not a valid event is reported with its place, counted under
``replay.rejected`` and skipped. Header lines (``capture.HEADER_TYPE``) carry the
fingerprint of the config the capture was made under; ``survey`` collects them, with
the beds the events name, before anything is replayed.
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
    """The events and ticks of a capture file; bad lines are reported, counted and skipped."""
    try:
        for number, data in _lines(path):
            where = f"{path}:{number}"
            if isinstance(data, InputError):
                _refuse(counters, data, out)
                continue
            if data.get("type") in {capture.HEADER_TYPE, capture.ADMISSION_TYPE}:
                continue
            try:
                event = capture.from_dict(data, where)
            except InputError as exc:
                _refuse(counters, exc, out)
                continue
            yield event
    except OSError as exc:
        raise InputError("unreadable", f"cannot read {path}: {exc.strerror}", str(path)) from exc


@dataclass
class Survey:
    """What a capture file holds, read before replaying it."""

    events: int = 0  # ticks included
    fingerprints: set[str] = field(default_factory=set)
    beds: set[str] = field(default_factory=set)
    versions: set[str] = field(default_factory=set)  # of the wardd that wrote each header
    admissions: list[str] = field(default_factory=list)  # beds changed at run time: what, where
    # Why the file is not a capture at all (its first line is not a capture line).
    problem: str | None = None


def survey(path: Path) -> Survey:
    """The headers, the number of event lines and the beds of the capture at ``path``.

    A file whose first line is not a capture line (an event or a header) is not a
    capture (a config given in its place, say); later bad lines are only skipped.
    """
    found = Survey()
    try:
        for number, data in _lines(path):
            if not isinstance(data, InputError) and data.get("type") == capture.ADMISSION_TYPE:
                found.admissions.append(f"line {number}: {data.get('action')} ({data.get('detail')})")
                continue
            if isinstance(data, InputError) or data.get("type") not in {*capture.TYPES, capture.HEADER_TYPE}:
                if not found.events and not found.fingerprints:
                    found.problem = (
                        f"line {number} is not a JSON object (a capture holds one event per line)"
                        if isinstance(data, InputError)
                        else f"line {number} is not an event (its 'type' is none of {', '.join(capture.TYPES)})"
                    )
                    return found
                continue
            if data["type"] == capture.HEADER_TYPE:
                sha = data.get("config_sha256")
                if isinstance(sha, str):
                    found.fingerprints.add(sha)
                if isinstance(data.get("wardd"), str):
                    found.versions.add(data["wardd"])
                continue
            found.events += 1
            bed = data.get("bed")
            if isinstance(bed, str):
                found.beds.add(bed)
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text (a capture is JSON lines)"
        raise InputError("unreadable", str(detail), str(path)) from exc
    return found


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
    """Feed ``events`` (in the order given) through the rules and a fresh alert book.

    Ticks among ``events`` are the daemon's clock; without any, one is made every
    ``tick_s`` (default: the config's tick interval). After the last event, ticks go
    on every ``tick_s`` up to ``until``.
    """
    tick = timedelta(seconds=tick_s or config.daemon.tick_interval_s)
    engine = build_rules(config)
    book = AlertBook(escalate_after_s=config.alerts.escalate_after_s)
    result = ReplayResult()
    # The simulated clock: the events' own time, never going backwards.
    now: datetime | None = None
    next_tick: datetime | None = None
    recorded = False  # the capture carries the daemon's own ticks

    def apply(transitions: list[Transition]) -> None:
        result.transitions.extend(transition_record(t, result.start) for t in transitions)

    def advance(when: datetime) -> datetime:
        nonlocal now
        now = when if now is None else max(now, when)
        return now

    def run_tick(event: Tick) -> None:
        at = advance(event.time)
        apply(book.apply_all(engine.handle(event, at), at))
        apply(book.tick(at))
        result.ticks += 1

    def ticks_until(when: datetime) -> None:
        nonlocal next_tick
        while next_tick is not None and next_tick <= when:
            run_tick(Tick(next_tick if now is None else max(now, next_tick)))
            next_tick += tick

    for event in events:
        if result.start is None:
            result.start = event.time
            next_tick = event.time
        if isinstance(event, Tick):
            recorded = True
            run_tick(event)
            next_tick = event.time + tick
            continue
        if not recorded:
            ticks_until(event.time)
        at = advance(event.time)
        apply(book.apply_all(engine.handle(event, at), at))
        result.events += 1
    if until is not None:
        ticks_until(until)
    result.end = now
    return result
