"""Rules: pure functions of (state, event, now) that suggest alert conditions.

A rule never does I/O, never reads a clock, never awaits. ``RuleEngine`` keeps one
state per (bed, rule), routes each event to the rules of its bed (a ``Tick`` to
every bed where it may change something), and returns the candidates for the alert
engine. States are plain
frozen values, so the engine can persist and reload them (``snapshot``/``restore``).

A rule whose state holds late-data windows (long, time-ordered runs of immutable
entries: the last hour of samples) also implements ``Windowed``. The store then keeps
each window's entries as rows, and a checkpoint writes only what changed since the
last one: the entries appended, and a delete of those that left the window
(``window_delta``). Dumping whole windows at every checkpoint cost work in proportion
to their length: at 1,000 beds sending every second, about 15 million entries per
checkpoint. A checkpoint may take the changed states a slice at a time
(``take_changed(keys)``), each slice stored with the position of the inputs it includes;
after a crash, ``restore`` takes those positions and the replay of the logged inputs
skips, for each state, the inputs it already includes (``replaying``).

A rule may read the state of an earlier rule of its bed (``Reader``: CRS reads the
vital-sign tracks rather than judging the same samples again), and may say until when
its ticks change nothing (``Idle``): the engine skips its step on those ticks, and a
tick for every bed reaches only the beds where some rule is due by its time (a heap of
each bed's next due time), so that a tick costs in proportion to the beds due, not to
the ward.

A rule that raises is contained: its state at that bed is left as it was, the
failure is logged and counted (``rules.failed``, labelled with the rule's name), and
the engine returns a ``RULE_FAILED`` technical alert candidate for the bed. The other
rules, and the same rule at other beds, carry on.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

from daemon.events import AlertCandidate, Event, Kind, Priority, Text, Tick, place
from daemon.frozen import ColumnWindow
from daemon.metrics import Counters
from daemon.schedule import Schedule

log = logging.getLogger(__name__)

S = TypeVar("S")
S_contra = TypeVar("S_contra", contravariant=True)

_NONE: Any = object()  # no state yet (``RuleEngine`` makes them on first use)

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

    A rule may declare ``consumes``, a tuple of event types: the engine then hands it
    only those (a vitals sample never reaches the storage rule, a tick never reaches
    NEWS2). Its promise: ``step`` returns its state unchanged and no candidate for any
    other event. Without it, the rule sees every event of its bed.
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


class Reader(Protocol[S]):
    """A rule that reads the state of another rule of its bed, named ``reads``, which comes
    before it in evaluation order (CRS reads the vital-sign rule's tracks instead of
    judging the same samples again).

    For an event that rule was stepped with, without failing, the engine calls
    ``step_after`` with that rule's state before and after the event; for any other
    (a rule that failed, or was skipped in a replay), ``step``. Both must give the same
    result: ``step_after`` only saves work. After a restore and a replay, ``linked`` is
    given the other rule's state, for the reader to share what is equal.
    """

    reads: str

    def step_after(
        self, state: S, event: Event, now: datetime, before: Any, after: Any
    ) -> tuple[S, Sequence[AlertCandidate]]:
        """``step``, given the state of rule ``reads`` before and after ``event``."""
        ...

    def linked(self, state: S, read: Any) -> S:
        """``state`` sharing with ``read`` (the state of rule ``reads``) what is equal."""
        ...


class Idle(Protocol[S_contra]):
    """A rule whose ticks do nothing for a while, and that says until when: the engine then
    skips its ``step`` on the ticks before (the staleness of a bed's vitals falls due once
    they have been silent ``telemetry_stale_s``, not at every tick of every bed).

    The promise: ``state`` having just been given by ``step`` at ``now``, for any later
    tick whose time is before ``idle_until(state, now)``, ``step`` returns ``state`` itself
    and no candidate. ``None``: no such time, every tick is stepped. The engine asks after
    every step of the rule, and trusts the answer only while the bed's state is that same
    object and the rule the same.
    """

    def idle_until(self, state: S_contra, now: datetime) -> datetime | None:
        """The time before which a tick leaves ``state`` (given by a step at ``now``) as it
        is and raises nothing."""
        ...


IDLE_FOREVER = datetime.max.replace(tzinfo=UTC)
"""``Idle.idle_until`` of a state that no tick changes (only another event can)."""

_IDLE_MARGIN = timedelta(milliseconds=1)

_DUE_NOW = datetime.min.replace(tzinfo=UTC)
"""A bed's due time when its next tick must reach it, whenever that comes."""


def idle_until_edge(edges: Iterable[datetime], now: datetime) -> datetime:
    """``Idle.idle_until`` of a state whose ticks change something only at ``edges``: just
    before the first at or after ``now`` (one at ``now`` itself is still ahead of a test
    that compares with ``>``); ``IDLE_FOREVER`` when none is."""
    ahead = [edge for edge in edges if edge >= now]
    return idle_before(min(ahead)) if ahead else IDLE_FOREVER


def idle_before(deadline: datetime) -> datetime:
    """``deadline`` as an ``Idle.idle_until`` for a rule whose own test compares seconds as
    floats: a millisecond earlier, so that no rounding skips a tick the test would pass."""
    return deadline - _IDLE_MARGIN


_Route = tuple[
    tuple[
        "Rule[Any]",
        tuple[str, str],
        tuple[str, str] | None,
        bool,
        Callable[[Any, datetime], datetime | None] | None,
    ],
    ...,
]
"""A bed's rules for one event type: each with its state's key, the key of the state it
reads (``Reader``, ``None``: none), whether a rule after it reads its state, and its
``Idle.idle_until`` (``None``: not an ``Idle`` rule)."""


@runtime_checkable
class Windowed(Protocol[S]):
    """A rule whose state holds late-data windows, persisted entry by entry.

    A window is a sequence of immutable entries in time order (each has a ``time``), to
    which a step appends, inserts a late entry, or drops a prefix that left the
    window; it never changes an entry, nor a window once made (a tuple, or a
    ``daemon.frozen.ColumnWindow``, which appends without copying). ``dump`` still writes
    the whole state; the engine persists ``dump(with_windows(state, empty))`` plus the windows' rows.
    """

    def windows(self, state: S) -> Mapping[str, Sequence[Any]]:
        """The state's windows by a stable name."""
        ...

    def with_windows(self, state: S, windows: Mapping[str, Sequence[Any]]) -> S:
        """``state`` with the named windows replaced (names not given are kept)."""
        ...

    def dump_entry(self, window: str, entry: Any) -> Any:
        """One entry as JSON-compatible data."""
        ...

    def load_entry(self, window: str, data: Any) -> Any:
        """An entry from ``dump_entry``'s output."""
        ...


class DumpsEntries(Protocol):
    """A ``Windowed`` rule that also dumps a run of entries at once, as ``dump_entry``
    dumps each, for less than one call per entry (from a ``ColumnWindow``'s columns)."""

    def dump_entries(self, window: str, entries: Sequence[Any]) -> list[Any]:
        """``[dump_entry(window, entry) for entry in entries]``."""
        ...


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_us(when: datetime) -> int:
    """Microseconds since the epoch, exactly."""
    return (when - _EPOCH) // _MICROSECOND


def from_epoch_us(us: int) -> datetime:
    """The UTC time ``us`` microseconds after the epoch (``epoch_us`` undone)."""
    return _EPOCH + us * _MICROSECOND


@dataclass(frozen=True, slots=True)
class WindowDelta:
    """What turns the stored rows of a window into its current entries.

    ``clear``: delete every row first; else ``keep_from`` (when set): delete the rows
    older than it. Then insert ``added``, in order.
    """

    clear: bool
    keep_from: datetime | None
    added: Sequence[Any]


def window_delta(stored: Sequence[Any], current: Sequence[Any]) -> WindowDelta | None:
    """The change from ``stored`` to ``current`` (``None``: nothing to write).

    The common step, a prefix dropped and entries appended, costs a binary search and
    the appended entries; any other (a late entry inserted inside the window) rewrites
    the window. Relies on the ``Windowed`` guarantees: entries are never changed, and
    dropped only as a prefix, so identical ends mean an identical middle.
    """
    if current is stored:
        return None
    if not current:
        return WindowDelta(clear=True, keep_from=None, added=()) if stored else None
    if type(current) is type(stored) and isinstance(current, ColumnWindow):
        grown = current.since(stored)  # type: ignore[arg-type]
        if grown is not None:
            return _grown_delta(stored, current, *grown)  # type: ignore[arg-type]
    first = current[0].time
    start = bisect.bisect_left(stored, first, key=_time)
    kept = len(stored) - start
    if kept == 0:
        return WindowDelta(clear=True, keep_from=None, added=current)
    if kept <= len(current) and current[0] is stored[start] and current[kept - 1] is stored[-1]:
        added = current[kept:]
        if not added and start == 0:
            return None
        return WindowDelta(clear=False, keep_from=first if start else None, added=added)
    return WindowDelta(clear=True, keep_from=None, added=current)


def _grown_delta(
    stored: ColumnWindow[Any], current: ColumnWindow[Any], dropped: int, added: Sequence[Any]
) -> WindowDelta | None:
    """``window_delta`` of two versions of one window's columns (``ColumnWindow.since``),
    without a search, and without making an entry to read a time.

    The same delta as the search finds: it would stop at ``stored[dropped]``
    (``current[0]`` itself) unless a dropped entry has the same time, and then rewrite.
    """
    if dropped == len(stored):
        return WindowDelta(clear=True, keep_from=None, added=current)
    if not dropped:
        return WindowDelta(clear=False, keep_from=None, added=added) if added else None
    first = current.time_at(0)
    if stored.time_at(dropped - 1) == first:
        return WindowDelta(clear=True, keep_from=None, added=current)
    return WindowDelta(clear=False, keep_from=first, added=added)


def _time(entry: Any) -> datetime:
    when: datetime = entry.time
    return when


@dataclass(frozen=True, slots=True)
class WindowChange:
    """One window's ``WindowDelta`` at one bed, with the rule that encodes its entries."""

    bed: str
    rule: str
    window: str
    delta: WindowDelta
    codec: Windowed[Any]

    def rows(self) -> list[tuple[int, Any]]:
        """``(epoch microseconds, entry data)`` of the added entries."""
        added = self.delta.added
        dump_entries = getattr(self.codec, "dump_entries", None)
        if dump_entries is None or not isinstance(added, ColumnWindow):
            return [(epoch_us(e.time), self.codec.dump_entry(self.window, e)) for e in added]
        # Read from the columns: no entry is made (a checkpoint writes tens of thousands).
        cols, lo, hi = added.columns()
        return list(zip(map(epoch_us, cols.data[0][lo:hi]), dump_entries(self.window, added), strict=True))


@dataclass(frozen=True, slots=True)
class StateChanges:
    """What a checkpoint writes: dump functions of the replaced states, and window changes."""

    states: dict[tuple[str, str], Callable[[], Mapping[str, Any]]]
    windows: list[WindowChange]


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
        # A bed's states are made on first use: start-up does not build 8 states for each
        # of thousands of beds, and a bed that never sees an event keeps none.
        self._states: dict[tuple[str, str], Any] = {}
        # (bed, event type) -> the rules that consume it (``Rule.consumes``), built on first use.
        self._routes: dict[tuple[str, type[Event]], _Route] = {}
        # Whether a rule's class is ``Windowed`` (a protocol check walks the class each time).
        self._windowed: dict[type, bool] = {}
        # States replaced since the last ``take_changed``: the store writes only these. A
        # dict for its order: a checkpoint round takes the keys as they are, where sorting
        # them held the event loop 4 ms at 5,000 beds.
        self._changed: dict[tuple[str, str], None] = {}
        # The windows as last handed to the store, per (bed, rule) of a ``Windowed`` rule.
        self._stored_windows: dict[tuple[str, str], Mapping[str, Sequence[Any]]] = {}
        self._counters = counters if counters is not None else Counters()
        self._wards = dict(wards or {})
        # Rules failing now, per bed: RULE_FAILED clears once none is left at the bed.
        self._failing: dict[str, set[str]] = {}
        # After a crash during a sliced checkpoint: the last input each stored state
        # includes, and the input being replayed (``replaying``).
        self._positions: dict[tuple[str, str], int] = {}
        self._replay_seq: int | None = None
        # (bed, rule) of an ``Idle`` rule -> (the state it answered for, its idle_until).
        self._idle: dict[tuple[str, str], tuple[Any, datetime]] = {}
        # When a tick may next change something at each bed: the earliest time any of its
        # rules stepped on ticks is not idle. A tick for every bed goes to the beds due by
        # its time only, taken from a heap of (due, bed): its cost grows with the beds
        # due, not with the ward. An entry whose time is no longer the bed's is stale.
        self._due: Schedule[str] = Schedule((bed, _DUE_NOW) for bed in self._rules)
        # The order beds were added in: a tick takes its beds in it, as when it took them all.
        self._order: dict[str, int] = {bed: i for i, bed in enumerate(self._rules)}
        self._next_order = itertools.count(len(self._order))

    @property
    def counters(self) -> Counters:
        """Where rule failures are counted."""
        return self._counters

    def handle(self, event: Event, now: datetime) -> list[AlertCandidate]:
        """Run every rule concerned by ``event``; return their candidates in order.

        Never raises ``Exception``: a rule that does is contained (see the module
        docstring) and its ``RULE_FAILED`` candidate takes the place of its own.
        """
        kind = type(event)
        beds, tick_time = self._targets(event, now)
        out: list[AlertCandidate] = []
        replayed = self._replay_seq if self._positions else None
        states, failing = self._states, self._failing
        for bed in beds:
            route = self._routes.get((bed, kind))
            if route is None:
                route = self._routes[(bed, kind)] = self._route(bed, kind)
            # The states before this event of the rules read by a later one (``Reader``).
            read: dict[tuple[str, str], Any] | None = None
            for rule, key, reads, is_read, idle_until in route:
                if replayed is not None and self._positions.get(key, -1) >= replayed:
                    continue  # this state was stored with the input's effects already
                before = states.get(key, _NONE)
                if before is _NONE:
                    before = states[key] = rule.initial()
                if tick_time is not None and idle_until is not None and self._idle_at(key, before, tick_time):
                    # What the step would give: this very state and nothing raised.
                    if is_read:
                        if read is None:
                            read = {}
                        read[key] = before
                    continue
                try:
                    if reads is not None and read is not None and reads in read:
                        after, candidates = cast("Reader[Any]", rule).step_after(
                            before, event, now, read[reads], states[reads]
                        )
                    else:
                        after, candidates = rule.step(before, event, now)
                    if type(candidates) is not list and type(candidates) is not tuple:
                        candidates = list(candidates)  # a lazy sequence may raise too
                except Exception as exc:
                    # One rule's bug must not stop the others. Exception, not
                    # BaseException: cancellation and exit still propagate.
                    out.append(self._failed(bed, rule.name, event, now, exc))
                    # Stepped again at every tick, to recover.
                    self._note_idle(key, before, None, ticked=tick_time is not None)
                    continue
                if idle_until is not None:
                    self._note_idle(key, after, idle_until(after, now), ticked=tick_time is not None)
                if is_read:
                    if read is None:
                        read = {}
                    read[key] = before
                if after is not before:
                    states[key] = after
                    self._changed[key] = None
                if candidates:
                    out.extend(candidates)
                if failing:
                    out.extend(self._recovered(bed, rule.name, event, now))
            if tick_time is not None:
                self._schedule(bed, self._next_due(route, tick_time))
        return out

    def _targets(self, event: Event, now: datetime) -> tuple[Iterable[str], datetime | None]:
        """The beds ``event`` is for, and the time a tick is judged at (``None``: not a tick)."""
        if not isinstance(event, Tick):
            return (event.bed,), None
        # A rule may judge a tick at its time or at ``now``, whichever is later: it is
        # skipped only when both are before the time the rule gave.
        tick_time = max(event.time, now)
        return (self.due_beds(tick_time) if event.beds is None else event.beds), tick_time

    def due_beds(self, time: datetime) -> list[str]:
        """The beds a tick at ``time`` may change something at, taken off the schedule: a
        tick for them must follow, which schedules each again (``handle``). The others'
        rules all said that such a tick leaves their states as they are (``Idle``)."""
        beds = self._due.pop_due(time)
        beds.sort(key=self._order.__getitem__)
        return beds

    def _next_due(self, route: _Route, time: datetime) -> datetime:
        """When the next tick may change something at a bed just ticked at ``time``
        (``route``: its rules stepped on ticks)."""
        states, idle = self._states, self._idle
        due = IDLE_FOREVER
        for _, key, _, _, idle_until in route:
            said = idle.get(key) if idle_until is not None else None
            if said is None or said[0] is not states.get(key, _NONE):
                return time
            due = min(due, said[1])
        return due

    def _schedule(self, bed: str, at: datetime) -> None:
        """Make sure a tick at ``at`` or later reaches ``bed`` (an earlier due time stays)."""
        due = self._due.get(bed)
        if (due is not None and at >= due) or bed not in self._rules:
            return
        self._due.put(bed, at)

    def _idle_at(self, key: tuple[str, str], state: Any, time: datetime) -> bool:
        """Whether the rule of ``key``, in ``state``, said its ticks before a later time
        than ``time`` change nothing (``Idle``)."""
        idle = self._idle.get(key)
        return idle is not None and idle[0] is state and time < idle[1]

    def _note_idle(self, key: tuple[str, str], state: Any, until: datetime | None, *, ticked: bool) -> None:
        """Note what the rule of ``key`` said of its ticks in ``state``; a step on another
        event than a tick may bring its bed's next tick forward (``ticked``: a tick's step,
        after which the bed is scheduled whole)."""
        if until is None:
            self._idle.pop(key, None)
        else:
            self._idle[key] = (state, until)
        if not ticked:
            self._schedule(key[0], _DUE_NOW if until is None else until)

    def _route(self, bed: str, kind: type[Event]) -> _Route:
        """The rules of ``bed`` that consume events of type ``kind``, in evaluation order
        (see ``_Route``)."""
        rules = self._rules.get(bed, ())
        reads = self._reads(bed)
        return tuple(
            (
                rule,
                (bed, rule.name),
                reads.get(rule.name),
                (bed, rule.name) in reads.values(),
                getattr(rule, "idle_until", None),
            )
            for rule in rules
            if (consumes := getattr(rule, "consumes", None)) is None or issubclass(kind, consumes)
        )

    def _reads(self, bed: str) -> dict[str, tuple[str, str]]:
        """The ``Reader`` rules of ``bed`` whose rule ``reads`` comes before them: name ->
        the key of the state each reads."""
        out: dict[str, tuple[str, str]] = {}
        earlier: set[str] = set()
        for rule in self._rules.get(bed, ()):
            name = getattr(rule, "reads", None)
            if isinstance(name, str) and name in earlier:
                out[rule.name] = (bed, name)
            earlier.add(rule.name)
        return out

    def _link(self) -> None:
        """Let every ``Reader`` share what is equal with the state it reads (``linked``):
        after a restore each loaded its own copy."""
        for bed in self._rules:
            for name, read in self._reads(bed).items():
                key = (bed, name)
                state = self._states.get(key, _NONE)
                if state is _NONE or read not in self._states:
                    continue
                rule = self._rule[key]
                linked = cast("Reader[Any]", rule).linked(state, self._states[read])
                if linked is state:
                    continue
                self._states[key] = linked
                if key not in self._changed and key in self._stored_windows and self._is_windowed(rule):
                    # Equal windows: the stored rows are theirs too, and the next delta
                    # is found by identity again instead of rewriting them.
                    self._stored_windows[key] = cast("Windowed[Any]", rule).windows(linked)

    def _is_windowed(self, rule: Rule[Any]) -> bool:
        """Whether ``rule`` is ``Windowed``, decided once per class (its methods are)."""
        known = self._windowed.get(type(rule))
        if known is None:
            known = self._windowed[type(rule)] = isinstance(rule, Windowed)
        return known

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
        ward = self._ward(bed, event)
        where = place(ward, bed, at=True)
        return AlertCandidate(
            condition=RULE_FAILED,
            ward=ward,
            bed=bed,
            time=now,
            present=True,
            kind=Kind.TECHNICAL,
            priority=Priority.HIGH,
            message=Text(
                en=f"Rule {rule} failed {where.en}; its checks are not being made ({error})",
                fr=f"La règle {rule} a échoué {where.fr} ; ses contrôles ne sont plus faits ({error})",
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
        return self._state((bed, rule_name))

    def rule(self, bed: str, rule_name: str) -> Rule[Any] | None:
        """The rule of that name at one bed, if it watches the bed (for views that read
        what the rule was built with)."""
        return self._rule.get((bed, rule_name))

    def _state(self, key: tuple[str, str]) -> Any:
        state = self._states.get(key, _NONE)
        if state is _NONE:
            state = self._states[key] = self._rule[key].initial()
        return state

    def dirty(self) -> list[tuple[str, str]]:
        """The (bed, rule) keys of the states replaced since they were last taken, in the
        order they were first replaced since then."""
        return list(self._changed)

    def take_changed(self, keys: Iterable[tuple[str, str]] | None = None) -> StateChanges:
        """The states replaced since they were last taken (all, or those of ``keys``), and
        their windows' changes.

        States are immutable, so each dump may run later and on another thread (the
        store's writer does it): the event loop only collects them, and finds each
        window's change in time that does not grow with the window (``window_delta``).
        A key of ``keys`` whose state has not changed since is skipped.
        """
        states: dict[tuple[str, str], Callable[[], Mapping[str, Any]]] = {}
        windows: list[WindowChange] = []
        taken = list(self._changed) if keys is None else [key for key in keys if key in self._changed]
        for key in taken:
            rule, state = self._rule[key], self._state(key)
            if not self._is_windowed(rule):
                states[key] = functools.partial(rule.dump, state)
                continue
            codec = cast("Windowed[Any]", rule)
            current = codec.windows(state)
            stored = self._stored_windows.get(key, {})
            for name, entries in current.items():
                delta = window_delta(stored.get(name, ()), entries)
                if delta is not None:
                    windows.append(WindowChange(key[0], key[1], name, delta, codec))
            self._stored_windows[key] = current
            core = codec.with_windows(state, dict.fromkeys(current, ()))
            states[key] = functools.partial(rule.dump, core)
        changed = self._changed
        for key in taken:
            del changed[key]
        return StateChanges(states, windows)

    def replaying(self, seq: int | None) -> None:
        """The events handled from now on come from the logged input ``seq``, replayed
        after a crash: a rule whose restored state already includes it is not stepped
        again. ``None``: the replay is over (live inputs reach every rule)."""
        self._replay_seq = seq
        if seq is None:
            self._positions.clear()
            self._link()

    # --- beds changed at run time (daemon.admissions) ------------------------------------

    @property
    def beds(self) -> list[str]:
        """The beds watched, in the order they were added."""
        return list(self._rules)

    @property
    def bed_count(self) -> int:
        """How many beds (and wards' own subjects) are watched, without copying the list."""
        return len(self._rules)

    def watches(self, bed: str) -> bool:
        """Whether ``bed`` (or a ward's own subject) has rules, without copying the list."""
        return bed in self._rules

    def set_bed(self, bed: str, ward: str, rules: Sequence[Rule[Any]], *, keep_states: bool) -> None:
        """Watch ``bed`` with ``rules`` from now on (a new bed, or new settings of one).

        ``keep_states``: the states of rules of the same name go on (a new weight, a
        protocol set for the same patient); otherwise the bed starts afresh.
        """
        if not keep_states:
            self.drop_bed(bed)
        self._rules[bed] = tuple(rules)
        for key in [key for key in self._rule if key[0] == bed]:
            del self._rule[key]
        self._rule.update({(bed, rule.name): rule for rule in rules})
        self._routes = {key: value for key, value in self._routes.items() if key[0] != bed}
        # What the former rules said of their ticks: new settings may say otherwise.
        self._idle = {key: value for key, value in self._idle.items() if key[0] != bed}
        self._wards[bed] = ward
        if bed not in self._order:
            self._order[bed] = next(self._next_order)
        self._schedule(bed, _DUE_NOW)

    def drop_bed(self, bed: str) -> None:
        """Stop watching ``bed`` and forget its states (the store deletes their rows apart)."""
        self._rules.pop(bed, None)
        self._failing.pop(bed, None)
        self._wards.pop(bed, None)
        self._due.discard(bed)
        self._order.pop(bed, None)
        for table in (self._rule, self._states, self._stored_windows, self._positions, self._idle):
            for key in [key for key in table if key[0] == bed]:
                del table[key]
        self._routes = {key: value for key, value in self._routes.items() if key[0] != bed}
        self._changed = {key: None for key in self._changed if key[0] != bed}

    def move_bed(self, old: str, new: str, ward: str, rules: Sequence[Rule[Any]]) -> None:
        """The patient of ``old`` moves to ``new``: every state goes with them, under the
        new bed's ``rules`` (of the same names), and is marked changed so that a
        checkpoint writes it whole under the new bed."""
        states = {name: state for (bed, name), state in self._states.items() if bed == old}
        self.drop_bed(old)
        self.set_bed(new, ward, rules, keep_states=False)
        for name, state in states.items():
            if (new, name) in self._rule:
                self._states[(new, name)] = state
                self._changed[(new, name)] = None

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every state as JSON-compatible data: ``{bed: {rule: data}}``."""
        out: dict[str, dict[str, Any]] = {}
        for bed, bed_rules in self._rules.items():
            out[bed] = {rule.name: dict(rule.dump(self._state((bed, rule.name)))) for rule in bed_rules}
        return out

    def restore(
        self,
        snapshot: Mapping[str, Mapping[str, Any]],
        windows: Mapping[tuple[str, str], Mapping[str, Sequence[Any]]] | None = None,
        positions: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        """Reload states from ``snapshot``; beds or rules not in it keep their initial state.

        ``windows`` holds the stored entries (``dump_entry`` data, in order) of the
        ``Windowed`` rules: ``{(bed, rule): {window: [data, ...]}}``. A state saved
        with its windows inside (before they were stored apart) loads with them, and
        the next checkpoint moves them out. ``positions`` gives, for states stored by a
        checkpoint that a crash interrupted, the last logged input each includes: see
        ``replaying``.
        """
        windows = windows or {}
        self._positions = dict(positions or {})
        for bed, bed_rules in self._rules.items():
            for rule in bed_rules:
                key = (bed, rule.name)
                data = snapshot.get(bed, {}).get(rule.name)
                if data is not None:
                    self._states[key] = rule.load(data)
                if not self._is_windowed(rule):
                    continue
                codec = cast("Windowed[Any]", rule)
                stored = windows.get(key)
                if stored:
                    loaded = {
                        name: tuple(codec.load_entry(name, item) for item in items)
                        for name, items in stored.items()
                    }
                    self._states[key] = codec.with_windows(self._state(key), loaded)
                    # The very windows of the state: the next delta is found by identity.
                    self._stored_windows[key] = codec.windows(self._state(key))
                else:
                    self._stored_windows.pop(key, None)
        for bed in self._rules:
            self._schedule(bed, _DUE_NOW)  # the rules have not said anything of these states
        self._link()
