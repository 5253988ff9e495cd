"""Late-data windows stored entry by entry: what a checkpoint writes, and what a restart reads back."""

from __future__ import annotations

import bisect
import json
import random
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon import app
from daemon.app import stage_slice, stage_states
from daemon.clinical.verdicts import EMPTY_JUDGED, Judged, JudgedWindow, Verdict
from daemon.clinical.vitals import Condition
from daemon.clinical.watch import vital_rules
from daemon.config import Config
from daemon.events import AlertCandidate, Event, Health, Metric, SourceHealth, Tick, VitalSample
from daemon.links.store import Changes, Store
from daemon.rules import RuleEngine, StateChanges, WindowDelta, Windowed, epoch_us, window_delta
from tests.helpers import Counting, one_bed_config

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Entry:
    time: datetime
    name: str


def _entries(*minutes: int) -> tuple[Entry, ...]:
    return tuple(Entry(START + timedelta(minutes=m), f"e{m}") for m in minutes)


# --- window_delta: pure ------------------------------------------------------------------------


def test_an_unchanged_window_writes_nothing() -> None:
    window = _entries(1, 2, 3)
    assert window_delta(window, window) is None
    assert window_delta((), ()) is None


def test_appended_entries_are_the_only_rows_written() -> None:
    a, b, c = _entries(1, 2, 3)
    delta = window_delta((a, b), (a, b, c))
    assert delta is not None
    assert (delta.clear, delta.keep_from, delta.added) == (False, None, (c,))


def test_a_dropped_prefix_is_one_delete_by_time() -> None:
    a, b, c, d = _entries(1, 2, 3, 4)
    delta = window_delta((a, b, c), (b, c, d))
    assert delta is not None
    assert (delta.clear, delta.keep_from, delta.added) == (False, b.time, (d,))
    only_dropped = window_delta((a, b, c), (c,))
    assert only_dropped is not None
    assert (only_dropped.clear, only_dropped.keep_from, only_dropped.added) == (False, c.time, ())


def test_a_late_entry_inside_the_window_rewrites_it() -> None:
    a, b, c, d = _entries(1, 2, 3, 4)
    for stored, current in [((a, c), (a, b, c)), ((a, c), (a, b, c, d)), ((a, b, d), (b, c, d))]:
        delta = window_delta(stored, current)
        assert delta is not None
        assert (delta.clear, delta.added) == (True, current), (stored, current)


def test_a_window_that_moved_past_everything_stored_is_rewritten() -> None:
    a, b, c, d = _entries(1, 2, 3, 4)
    delta = window_delta((a, b), (c, d))
    assert delta is not None
    assert (delta.clear, delta.added) == (True, (c, d))
    emptied = window_delta((a, b), ())
    assert emptied is not None
    assert (emptied.clear, emptied.added) == (True, ())


def test_equal_copies_are_not_taken_for_the_stored_entries() -> None:
    """Identity, not equality, proves the middle unchanged: a copy is rewritten."""
    stored = _entries(1, 2)
    copies = tuple(Entry(e.time, e.name) for e in stored)
    delta = window_delta(stored, copies)
    assert delta is not None
    assert delta.clear


def test_entries_sharing_a_time_stay_in_their_order() -> None:
    a, b = _entries(1, 2)
    sentinel = Entry(a.time, "sentinel")
    delta = window_delta((a, sentinel), (a, sentinel, b))
    assert delta is not None
    assert (delta.clear, delta.added) == (False, (b,))


# --- window_delta of two versions of one column window: no search -------------------------------


def _applied(stored: list[Any], delta: WindowDelta | None) -> list[Any]:
    """The rows ``stored`` become once a checkpoint writes ``delta`` (``None``: nothing)."""
    if delta is None:
        return stored
    kept = [] if delta.clear else [e for e in stored if delta.keep_from is None or e.time >= delta.keep_from]
    return [*kept, *delta.added]


def _judged(second: int, name: float) -> Judged:
    return Judged(START + timedelta(seconds=second), Verdict.NORMAL, name)


def test_the_delta_between_versions_of_one_window_is_the_searched_delta() -> None:
    """``window_delta`` of two versions of one column window skips the search: applied to the
    older's rows it gives the newer's entries, and where the newer is the older with a
    prefix dropped and entries appended, it is what the search gives for the same entries
    as tuples, whatever came between (entries of the same time, compactions)."""
    rng = random.Random(5)
    canonical: dict[Judged, Judged] = {}

    def entries(window: JudgedWindow) -> tuple[Judged, ...]:
        """The window's entries as one object each however often read (values are unique):
        the search tells entries apart by identity."""
        return tuple(canonical.setdefault(entry, entry) for entry in window)

    for _ in range(200):
        window: JudgedWindow = EMPTY_JUDGED
        versions = [window]
        second = 0
        for n in range(rng.randrange(1, 60)):
            op = rng.random()
            if op < 0.6 or not window:
                second += rng.choice([0, 1, 1, 2])
                window = window.appended(_judged(second, n))
            elif op < 0.9:
                window = window[rng.randrange(min(len(window), 20) + 1) :]
            else:
                at = rng.randrange(len(window) + 1)
                before = window[at - 1].time if at else START
                window = window.inserted(at, Judged(before, Verdict.BAND, -1000.0 - n))
            versions.append(window)
        for _ in range(20):
            old, new = sorted(rng.sample(range(len(versions)), 2))
            stored, current = versions[old], versions[new]
            delta = window_delta(stored, current)
            assert _applied(list(stored), delta) == list(current), (stored, current)
            if current.since(stored) is not None:  # else a late insert came between: rewritten
                searched = window_delta(entries(stored), entries(current)) if current is not stored else None
                assert delta == searched, (stored, current)


def test_a_window_and_a_tuple_give_the_delta_that_makes_the_rows_its_entries() -> None:
    """The store's side may be a tuple (nothing stored yet, or rows read back) and the rule's a
    column window, or the other way round: the delta turns the stored rows into the current
    entries."""
    a, b, c, d = (_judged(s, s) for s in (1, 2, 3, 4))
    for stored, current in [((a, b, c), (b, c, d)), ((a, b), (c, d)), ((a, c), (a, b, c)), ((a, b), (a, b))]:
        for older, newer in [(JudgedWindow(stored), current), (stored, JudgedWindow(current))]:
            assert _applied(list(older), window_delta(older, newer)) == list(current), (older, newer)


def test_versions_of_one_window_are_compared_without_searching_or_reading_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The common step between two checkpoints, a prefix dropped and entries appended to the
    same columns, is read from the two versions' bounds and the time column: no search
    through an hour of entries, and no entry made to read a time."""
    a, b, c, d, e = (_judged(s, s) for s in (1, 2, 3, 4, 5))
    stored = JudgedWindow([a, b, c])
    moved = stored.appended(d).appended(e)[1:]
    fresh = JudgedWindow([a, b, c])
    same_time = fresh.appended(Judged(c.time, Verdict.BAND, 9.0))[3:]

    def no_search(*args: object, **kwargs: object) -> int:
        raise AssertionError("the stored entries were searched")

    def no_entry(*args: object, **kwargs: object) -> Judged:
        raise AssertionError("an entry was made")

    appended = JudgedWindow([a, b])
    monkeypatch.setattr(bisect, "bisect_left", no_search)
    monkeypatch.setattr(JudgedWindow, "_entry", staticmethod(no_entry))
    deltas = [
        window_delta(stored, moved),
        window_delta(appended, appended.appended(c)),
        window_delta(stored, moved[4:]),
        window_delta(fresh, same_time),  # a dropped entry of the first kept one's time
        window_delta(EMPTY_JUDGED, stored[3:]),
    ]
    monkeypatch.undo()
    assert deltas == [
        WindowDelta(clear=False, keep_from=b.time, added=(d, e)),
        WindowDelta(clear=False, keep_from=None, added=(c,)),
        WindowDelta(clear=True, keep_from=None, added=()),
        WindowDelta(clear=True, keep_from=None, added=same_time),
        None,
    ]


# --- the vital-sign family through a real store -------------------------------------------------


def _config() -> Config:
    return one_bed_config(START - timedelta(hours=12))


def _engine(config: Config) -> RuleEngine:
    return RuleEngine({"b1": vital_rules(config, config.bed("b1"))}, wards={"b1": "w1"})


def _checkpoint(engine: RuleEngine, store: Store) -> StateChanges:
    taken = engine.take_changed()
    changes = Changes()
    stage_states(changes, taken, 0)
    store.apply(changes)
    return taken


def _reloaded(config: Config, store: Store) -> RuleEngine:
    engine = _engine(config)
    engine.restore(store.rule_states(), store.rule_windows())
    return engine


def _sample(at: datetime, temp_c: float, rng: random.Random) -> VitalSample:
    values = {
        Metric.TEMP_C: temp_c,
        Metric.SBP_MMHG: rng.choice([85.0, 118.0]),
        Metric.DBP_MMHG: 70.0,
        Metric.HR_PER_MIN: rng.choice([88.0, 131.0]),
        Metric.SPO2_PCT: rng.choice([89.0, 97.0]),
        Metric.RR_PER_MIN: 18.0,
    }
    return VitalSample("w1", "b1", "m1", at, values)


def _events(rng: random.Random) -> list[tuple[Event, datetime]]:
    """Two hours of samples each minute, some late, a probe off, and ticks: ``(event, now)``."""
    out: list[tuple[Event, datetime]] = []
    held: list[VitalSample] = []
    for minute in range(120):
        now = START + timedelta(minutes=minute, seconds=30)
        sample = _sample(START + timedelta(minutes=minute), rng.choice([36.8, 38.4, 38.6]), rng)
        if rng.random() < 0.1:
            held.append(sample)  # a monitor that buffers: sent a few minutes late
        else:
            out.append((sample, now))
        if held and rng.random() < 0.3:
            out.append((held.pop(0), now))
        if minute == 50:
            out.append((SourceHealth("w1", "b1", "monitor.spo2_pct", now, Health.LOST, "probe-off"), now))
        out.append((Tick(now), now))
    return out


def test_windows_survive_every_checkpoint_and_restart_exactly(tmp_path: Path) -> None:
    config = _config()
    store = Store(tmp_path / "wardd.sqlite")
    engine = _engine(config)
    rng = random.Random(7)
    rewrites = appends = 0
    for i, (event, now) in enumerate(_events(rng)):
        engine.handle(event, now)
        if i % 5 == 4:
            taken = _checkpoint(engine, store)
            rewrites += sum(change.delta.clear for change in taken.windows)
            appends += sum(not change.delta.clear for change in taken.windows)
            assert _reloaded(config, store).snapshot() == engine.snapshot()
    # The test makes both kinds of change: appends, and rewrites after late samples.
    assert appends > 0
    assert rewrites > 0
    # Every stored row belongs to a window; none is left behind (the last events checkpointed too).
    _checkpoint(engine, store)
    stored = sum(len(entries) for windows in store.rule_windows().values() for entries in windows.values())
    held = sum(
        len(entries)
        for rule in vital_rules(config, config.bed("b1"))
        if isinstance(rule, Windowed)
        for entries in rule.windows(engine.state("b1", rule.name)).values()
    )
    assert stored == held > 0


def test_rule_states_are_stored_without_their_windows(tmp_path: Path) -> None:
    config = _config()
    store = Store(tmp_path / "wardd.sqlite")
    engine = _engine(config)
    rng = random.Random(3)
    for event, now in _events(rng)[:40]:
        engine.handle(event, now)
    _checkpoint(engine, store)
    with sqlite3.connect(tmp_path / "wardd.sqlite") as db:
        data = dict(db.execute("SELECT rule, data FROM rule_state WHERE bed = 'b1'").fetchall())
    vitals = json.loads(data["vitals"])
    assert all(track["recent"] == [] for track in vitals["tracks"].values())
    assert json.loads(data["news2"])["recent"] == []
    assert json.loads(data["crs"])["fever"]["recent"] == []
    fever_rows = store.rule_windows()[("b1", "vitals")][Condition.FEVER.value]
    assert len(fever_rows) > 10


def test_a_state_saved_with_its_windows_inside_loads_and_moves_them_out(tmp_path: Path) -> None:
    """States checkpointed before windows were stored apart hold them inline."""
    config = _config()
    engine = _engine(config)
    rng = random.Random(5)
    events = _events(rng)
    for event, now in events[:60]:
        engine.handle(event, now)
    store = Store(tmp_path / "wardd.sqlite")
    changes = Changes()
    for rule_name, data in engine.snapshot()["b1"].items():
        changes.rule_states[("b1", rule_name)] = json.dumps(data)  # the whole dump, windows inside
    store.apply(changes)
    assert store.rule_windows() == {}
    reloaded = _reloaded(config, store)
    assert reloaded.snapshot() == engine.snapshot()
    for event, now in events[60:70]:
        engine.handle(event, now)
        reloaded.handle(event, now)
    _checkpoint(reloaded, store)
    assert store.rule_windows()[("b1", "vitals")][Condition.FEVER.value]
    assert _reloaded(config, store).snapshot() == engine.snapshot()


# --- edges of the delta and of the engine's bookkeeping ------------------------------------------


def test_epoch_microseconds_are_exact_integers_even_far_ahead() -> None:
    # Beyond 2**53 microseconds a float would round: integer division keeps every digit.
    latest = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert epoch_us(latest) == 253_402_300_799_999_999
    assert isinstance(epoch_us(START), int)


def test_a_single_dropped_entry_and_a_copy_of_the_same_window() -> None:
    a, b, c = _entries(1, 2, 3)
    one_dropped = window_delta((a, b, c), (b, c))
    assert one_dropped is not None
    assert (one_dropped.clear, one_dropped.keep_from, one_dropped.added) == (False, b.time, ())
    # The same entries in another tuple: nothing to write.
    stored, copy = (a, b, c), (a, b, c)
    assert copy is not stored
    assert window_delta(stored, copy) is None


@dataclass(frozen=True)
class _State:
    log: tuple[Entry, ...] = ()
    other: tuple[Entry, ...] = ()


class _Logger:
    """A windowed rule whose entries' stored form names their window (to see it is passed on)."""

    name = "logger"

    def initial(self) -> _State:
        return _State()

    def step(self, state: _State, event: Event, now: datetime) -> tuple[_State, list[AlertCandidate]]:
        entry = Entry(event.time, f"e{len(state.log)}")
        return _State(log=(*state.log, entry), other=(*state.other, entry)), []

    def dump(self, state: _State) -> dict[str, Any]:
        return {"log": [e.name for e in state.log], "other": [e.name for e in state.other]}

    def load(self, data: Mapping[str, Any]) -> _State:
        return _State()  # the windows come back through with_windows

    def windows(self, state: _State) -> Mapping[str, tuple[Entry, ...]]:
        return {"log": state.log, "other": state.other}

    def with_windows(self, state: _State, windows: Mapping[str, tuple[Any, ...]]) -> _State:
        return _State(
            log=tuple(windows.get("log", state.log)), other=tuple(windows.get("other", state.other))
        )

    def dump_entry(self, window: str, entry: Entry) -> Any:
        return [window, entry.time.isoformat(), entry.name]

    def load_entry(self, window: str, data: Any) -> Entry:
        stored_window, when, name = data
        assert stored_window == window, "an entry comes back to the window it was stored from"
        return Entry(datetime.fromisoformat(when), name)


def test_entries_are_stored_and_loaded_with_their_windows_name(tmp_path: Path) -> None:
    store = Store(tmp_path / "wardd.sqlite")
    engine = RuleEngine({"b1": [_Logger()]}, wards={"b1": "w1"})
    for minute in range(3):
        engine.handle(Tick(START + timedelta(minutes=minute), beds=("b1",)), START)
    _checkpoint(engine, store)
    rows = store.rule_windows()[("b1", "logger")]
    assert [row[0] for row in rows["log"]] == ["log"] * 3
    assert [row[0] for row in rows["other"]] == ["other"] * 3
    again = RuleEngine({"b1": [_Logger()]}, wards={"b1": "w1"})
    again.restore(store.rule_states(), store.rule_windows())
    assert again.state("b1", "logger") == engine.state("b1", "logger")


def test_a_restored_engine_goes_on_storing_only_what_changes(tmp_path: Path) -> None:
    store = Store(tmp_path / "wardd.sqlite")
    engine = RuleEngine({"b1": [_Logger()]}, wards={"b1": "w1"})
    engine.handle(Tick(START, beds=("b1",)), START)
    _checkpoint(engine, store)
    again = RuleEngine({"b1": [_Logger()]}, wards={"b1": "w1"})
    again.restore(store.rule_states(), store.rule_windows())
    again.handle(Tick(START + timedelta(minutes=1), beds=("b1",)), START)
    taken = _checkpoint(again, store)
    assert [(c.window, c.delta.clear, len(c.delta.added)) for c in taken.windows] == [
        ("log", False, 1),
        ("other", False, 1),
    ]
    third = RuleEngine({"b1": [_Logger()]}, wards={"b1": "w1"})
    third.restore(store.rule_states(), store.rule_windows())
    assert third.state("b1", "logger") == again.state("b1", "logger")


def test_restoring_from_a_store_without_rows_forgets_the_rows_known_before(tmp_path: Path) -> None:
    """What the engine believes stored must be what this store holds, or deltas go wrong."""
    first = Store(tmp_path / "first.sqlite")
    engine = RuleEngine({"b1": [_Logger()]}, wards={"b1": "w1"})
    engine.handle(Tick(START, beds=("b1",)), START)
    _checkpoint(engine, first)
    engine.restore(first.rule_states(), first.rule_windows())
    engine.restore({}, {})  # another store, which knows nothing of this bed
    engine.handle(Tick(START + timedelta(minutes=1), beds=("b1",)), START)
    second = Store(tmp_path / "second.sqlite")
    taken = _checkpoint(engine, second)
    assert all(change.delta.clear for change in taken.windows)
    assert [len(v) for v in second.rule_windows()[("b1", "logger")].values()] == [2, 2]


# --- a checkpoint in slices: pure ----------------------------------------------------------------


def _counting_engine() -> RuleEngine:
    return RuleEngine({bed: [Counting()] for bed in ("b1", "b2")}, wards={"b1": "w1", "b2": "w1"})


def _vitals_at(bed: str, minute: int) -> VitalSample:
    return VitalSample("w1", bed, "m1", START + timedelta(minutes=minute), {Metric.TEMP_C: 37.0})


def test_a_slice_takes_only_the_changed_states_it_names() -> None:
    engine = _counting_engine()
    for bed, minute in (("b2", 0), ("b1", 0), ("b2", 1)):
        engine.handle(_vitals_at(bed, minute), START)
    assert engine.dirty() == [("b2", "acount"), ("b1", "acount")], "in the order first replaced"
    taken = engine.take_changed([("b2", "acount"), ("b3", "acount")])
    assert list(taken.states) == [("b2", "acount")]
    assert dict(taken.states[("b2", "acount")]()) == {"n": 2}
    assert engine.dirty() == [("b1", "acount")], "the other state waits for its slice"
    assert engine.take_changed([("b2", "acount")]).states == {}, "not changed since it was taken"
    assert list(engine.take_changed().states) == [("b1", "acount")]
    assert engine.dirty() == []


def test_a_replayed_input_skips_the_states_stored_with_it() -> None:
    """After a crash during a sliced checkpoint, b1's state was stored with inputs up to 3
    and b2's before any: replaying input 3 steps b2 only, input 4 both; once the replay is
    over the positions are forgotten."""
    engine = _counting_engine()
    engine.restore({"b1": {"acount": {"n": 3}}, "b2": {"acount": {"n": 0}}}, positions={("b1", "acount"): 3})
    engine.replaying(3)
    engine.handle(_vitals_at("b1", 3), START)
    engine.handle(_vitals_at("b2", 3), START)
    assert (engine.state("b1", "acount"), engine.state("b2", "acount")) == (3, 1)
    assert engine.dirty() == [("b2", "acount")]
    engine.replaying(4)
    engine.handle(_vitals_at("b1", 4), START)
    assert engine.state("b1", "acount") == 4
    engine.replaying(None)
    engine.replaying(2)  # no positions left: nothing is skipped
    engine.handle(_vitals_at("b1", 5), START)
    assert engine.state("b1", "acount") == 5


def _slices(engine: RuleEngine) -> list[list[str]]:
    """The beds of each slice of a periodic checkpoint of every changed state."""
    keys = engine.dirty()
    out: list[list[str]] = []
    done = 0
    while done < len(keys):
        changes = Changes()
        done = stage_slice(changes, engine, keys, done, 0)
        out.append([bed for bed, _ in changes.rule_states])
    return out


@pytest.mark.parametrize(
    ("states", "rows", "slices"),
    [
        (50, 12, [["b1", "b2"], ["b3", "b4"], ["b5"]]),  # the second state's rows reach 12
        (50, 13, [["b1", "b2", "b3"], ["b4", "b5"]]),  # 12 rows are fewer than 13
        (2, 1000, [["b1", "b2"], ["b3", "b4"], ["b5"]]),
        (3, 1000, [["b1", "b2", "b3"], ["b4", "b5"]]),
    ],
)
def test_a_checkpoint_slice_ends_at_its_states_or_its_window_rows(
    monkeypatch: pytest.MonkeyPatch, states: int, rows: int, slices: list[list[str]]
) -> None:
    """Each state here has 6 window rows (3 events, 2 windows)."""
    monkeypatch.setattr(app, "CHECKPOINT_SLICE_STATES", states)
    monkeypatch.setattr(app, "CHECKPOINT_SLICE_ROWS", rows)
    beds = [f"b{i}" for i in range(1, 6)]
    engine = RuleEngine({bed: [_Logger()] for bed in beds}, wards=dict.fromkeys(beds, "w1"))
    for minute in range(3):
        engine.handle(Tick(START + timedelta(minutes=minute)), START)
    assert _slices(engine) == slices
    assert engine.dirty() == []


def test_a_state_taken_since_the_round_began_is_not_counted_in_a_slice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app, "CHECKPOINT_SLICE_STATES", 2)
    beds = [f"b{i}" for i in range(1, 5)]
    engine = RuleEngine({bed: [_Logger()] for bed in beds}, wards=dict.fromkeys(beds, "w1"))
    engine.handle(Tick(START), START)
    keys = engine.dirty()
    engine.take_changed([("b2", "logger")])  # a full checkpoint wrote it meanwhile
    changes = Changes()
    assert stage_slice(changes, engine, keys, 0, 0) == 3
    assert list(changes.rule_states) == [("b1", "logger"), ("b3", "logger")]


class _Later(Counting):
    """A second counting rule, evaluated after ``Counting`` at a bed."""

    name = "bcount"


def test_a_replayed_input_still_steps_a_beds_later_rules_not_stored_with_it() -> None:
    """Of two rules at one bed, the first stored with input 3 and the second before it:
    replaying 3 skips the first only, and the second still counts it."""
    engine = RuleEngine({"b1": [Counting(), _Later()]}, wards={"b1": "w1"})
    engine.restore(
        {"b1": {"acount": {"n": 3}, "bcount": {"n": 2}}},
        positions={("b1", "acount"): 3, ("b1", "bcount"): 2},
    )
    engine.replaying(3)
    engine.handle(_vitals_at("b1", 3), START)
    assert (engine.state("b1", "acount"), engine.state("b1", "bcount")) == (3, 3)
    assert engine.dirty() == [("b1", "bcount")]


def test_a_state_stored_without_a_position_replays_the_first_input_of_the_log() -> None:
    """Log positions start at 1: a state that has none (stored before a sliced checkpoint
    began) is stepped by every replayed input, the first one included."""
    engine = _counting_engine()
    engine.restore({"b1": {"acount": {"n": 1}}, "b2": {"acount": {"n": 0}}}, positions={("b1", "acount"): 1})
    engine.replaying(1)
    engine.handle(_vitals_at("b1", 1), START)
    engine.handle(_vitals_at("b2", 1), START)
    assert (engine.state("b1", "acount"), engine.state("b2", "acount")) == (1, 1)
