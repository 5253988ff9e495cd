"""Late-data windows kept in columns (``daemon.frozen.ColumnWindow``): the vital-sign tracks'
verdicts (``JudgedWindow``) and NEWS2's inputs with the scores they keep (``InputWindow``)."""

from __future__ import annotations

import gc
import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.clinical.news2 import EMPTY_INPUTS, Input, InputWindow, News2Rule, News2State, as_inputs
from daemon.clinical.protocols import schedule_for
from daemon.clinical.verdicts import EMPTY_JUDGED, Judged, JudgedWindow, Verdict, as_judged
from daemon.clinical.vitals import VitalsRule, dump_judged, dump_judged_entries
from daemon.config import BedConfig, VitalThresholds
from daemon.events import Acvpu, Event, Health, Metric, Observation, SourceHealth, VitalSample
from daemon.frozen import ColumnWindow
from daemon.rules import WindowChange, WindowDelta, epoch_us, window_delta
from tests.helpers import assert_window_is_tuple, one_bed_config

T0 = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
S = timedelta(seconds=1)
BED = BedConfig(
    ward="w1",
    id="b1",
    patient="p-1",
    weight_kg=63,
    height_cm=165,
    protocol_start=datetime(2026, 3, 2, 8, tzinfo=UTC),
)
_VERDICTS = (Verdict.ABNORMAL, Verdict.BAND, Verdict.NORMAL, None)
_MEASURES = (None, Metric.SBP_MMHG, Metric.MAP_MMHG)


def _judged(rng: random.Random, second: int) -> Judged:
    return Judged(
        T0 + second * S, rng.choice(_VERDICTS), rng.choice([0.0, 36.6, 84.5, -0.0]), rng.choice(_MEASURES)
    )


def _entries(*seconds: int) -> list[Judged]:
    return [Judged(T0 + s * S, Verdict.NORMAL, float(s)) for s in seconds]


def _since(window: JudgedWindow, older: JudgedWindow) -> tuple[int, tuple[Judged, ...]] | None:
    """``window.since(older)`` with the appended entries as a tuple."""
    found = window.since(older)
    return None if found is None else (found[0], tuple(found[1]))


def _applied(stored: list[Any], delta: Any) -> list[Any]:
    """The rows ``stored`` become once a checkpoint writes ``delta`` (``None``: nothing)."""
    if delta is None:
        return stored
    kept = [] if delta.clear else [e for e in stored if delta.keep_from is None or e.time >= delta.keep_from]
    return [*kept, *delta.added]


def test_every_version_of_a_column_window_keeps_its_entries() -> None:
    """Appends, late inserts, dropped prefixes (with the copies that compact them) and
    slices on old and new versions alike, against tuples."""
    rng = random.Random(13)
    versions: list[tuple[JudgedWindow, tuple[Judged, ...]]] = [(EMPTY_JUDGED, ())]
    second = 0
    for _ in range(3000):
        window, model = versions[-1] if rng.random() < 0.8 else rng.choice(versions)
        op = rng.random()
        if op < 0.55:
            second += rng.choice([0, 1, 1, 2])
            entry = _judged(rng, second)
            window, model = window.appended(entry), (*model, entry)
        elif op < 0.6:
            entry = _judged(rng, second)
            window, model = (
                window.appended_codes(entry.time, 0, 0.0, 0),
                (*model, Judged(entry.time, None, 0.0)),
            )
        elif op < 0.65:
            at = rng.randrange(len(model) + 1)
            entry = _judged(rng, second)
            window, model = window.inserted(at, entry), (*model[:at], entry, *model[at:])
        elif op < 0.9:
            drop = rng.randrange(min(len(model), 40) + 1)
            if rng.random() < 0.5 and model:
                before = model[drop - 1].time + S if drop else T0 - S
                cut = next((i for i, e in enumerate(model) if e.time >= before), len(model))
                split = window.split_before(before)
                assert split is not None or cut == 0
                if split is not None:
                    old, window = split
                    assert tuple(old) == model[:cut]
                model = model[cut:]
            else:
                window, model = window[drop:], model[drop:]
        else:
            lo, hi = sorted(rng.randrange(-len(model) - 2, len(model) + 3) for _ in range(2))
            window, model = window[lo:hi], model[lo:hi]
        versions.append((window, model))
        versions = versions[-50:]
        for old_window, expected in versions[-5:]:
            assert tuple(old_window) == expected
    for window, model in versions:
        assert_window_is_tuple(window, model)
        assert window.last_time() == (model[-1].time if model else None)
        assert as_judged(model) == window


def test_a_checkpoint_of_a_column_window_writes_what_makes_the_rows_its_entries() -> None:
    """The delta between any two versions, applied to the rows of the older, gives the
    newer's entries; a window that only grows and drops its oldest entries, compacting
    copies included, is written by appends and deletes, never rewritten."""
    rng = random.Random(17)
    window: JudgedWindow = EMPTY_JUDGED
    versions = [window]
    for second in range(1000):
        window = window.appended(_judged(rng, second))
        if len(window) > 120:
            split = window.split_before(T0 + (second - 119) * S)
            assert split is not None
            window = split[1]
        versions.append(window)
    for old, new in itertools.pairwise(versions[1:]):
        delta = window_delta(old, new)
        assert delta is not None
        assert not delta.clear
        assert _applied(list(old), delta) == list(new)
    for _ in range(300):
        i, j = sorted(rng.sample(range(len(versions)), 2))
        delta = window_delta(versions[i], versions[j])
        assert _applied(list(versions[i]), delta) == list(versions[j])


def test_a_late_insert_and_an_append_to_an_old_version_are_rewritten() -> None:
    rng = random.Random(19)
    window = JudgedWindow(_judged(rng, s) for s in range(0, 10, 2))
    grown = window.appended(_judged(rng, 20))
    branch = window.appended(_judged(rng, 30))  # an older version grows apart
    late = grown.inserted(1, _judged(rng, 1))
    for old, new in [(grown, branch), (grown, late), (window, late)]:
        delta = window_delta(old, new)
        assert delta is not None
        assert delta.clear
        assert list(delta.added) == list(new)


# --- NEWS2: an input leaving the window is not scored again ---------------------------------------


class _Rescoring(News2Rule):
    """NEWS2 as before the scores were kept: the base scores every input it takes."""

    def _fold_base(self, base: News2State, items: InputWindow) -> News2State:
        return self._fold(base, items)[0]


def _events(rng: random.Random, n: int) -> list[tuple[Event, datetime]]:
    """Samples each 20 s, each metric in half of them, a few late; observations; probe-offs,
    most of them older than the window (they change the base the window is scored from)."""
    out: list[tuple[Event, datetime]] = []
    for i in range(n):
        now = T0 + i * 20 * S
        kind = rng.random()
        at = now - (rng.choice([30, 200, 700]) if rng.random() < 0.03 else 0) * S
        if kind < 0.85:
            values = {
                Metric.RR_PER_MIN: rng.choice([8.0, 16.0, 22.0, 26.0]),
                Metric.SPO2_PCT: rng.choice([90.0, 94.0, 97.0]),
                Metric.SBP_MMHG: rng.choice([88.0, 105.0, 120.0]),
                Metric.HR_PER_MIN: rng.choice([45.0, 80.0, 115.0, 135.0]),
                Metric.TEMP_C: rng.choice([35.0, 37.0, 38.5, 39.5]),
                Metric.DBP_MMHG: 70.0,
            }
            values = {m: v for m, v in values.items() if rng.random() < 0.5}
            out.append((VitalSample("w1", "b1", "m1", at, values), now))
        elif kind < 0.93:
            observation = Observation(
                "w1",
                "b1",
                at,
                o2_device=rng.choice([None, "air", "nasal_cannula"]),
                acvpu=rng.choice([None, Acvpu.ALERT, Acvpu.VOICE]),
            )
            out.append((observation, now))
        else:
            blind = rng.choice(["spo2_pct", "rr_per_min", "hr_per_min"])
            off_at = now - rng.choice([0, 925, 945, 950, 970]) * S
            out.append((SourceHealth("w1", "b1", f"monitor.{blind}", off_at, Health.LOST, "probe-off"), now))
    return out


def test_news2_with_kept_scores_steps_as_news2_scoring_again() -> None:
    """Every state (the base included) and every alert change is the same as when the base
    scores each input again; so also when the rule is replaced (new settings) midway."""
    th = VitalThresholds(news2_late_s=900.0, news2_delay_s=40.0, news2_clear_s=60.0, confirm_samples=2)
    shorter = VitalThresholds(news2_late_s=900.0, news2_max_age_s=60.0, confirm_samples=2)
    for seed in range(5):
        rng = random.Random(seed)
        kept, again = News2Rule(th, BED), _Rescoring(th, BED)
        state = kept.initial()
        expected = again.initial()
        for i, (event, now) in enumerate(_events(rng, 500)):
            if i == 400:
                # New settings: the scores kept so far are not the new rule's.
                kept, again = News2Rule(shorter, BED), _Rescoring(shorter, BED)
            state, out = kept.step(state, event, now)
            expected, expected_out = again.step(expected, event, now)
            assert list(out) == list(expected_out), (seed, i, event)
            assert state == expected, (seed, i, event)
            if i % 50 == 0:
                assert kept.dump(state) == again.dump(expected)
        assert state.base is not None


def test_scores_another_rule_kept_are_not_taken_after_a_compacting_copy() -> None:
    """New settings score again what the old rule kept, also once the columns holding those
    scores have been copied away from their dropped prefix (the copy keeps their owner)."""
    older = News2Rule(VitalThresholds(news2_late_s=60.0), BED)
    th = VitalThresholds(news2_late_s=60.0, news2_max_age_s=5.0)  # only the newest sample counts
    newer, again = News2Rule(th, BED), _Rescoring(th, BED)
    state, expected = older.initial(), older.initial()
    for i in range(40):
        values = {Metric.RR_PER_MIN: 22.0} if i % 2 else {Metric.SPO2_PCT: 91.0}
        event = VitalSample("w1", "b1", "m1", T0 + 10 * i * S, values)
        # One input leaves at each step from 70 s; the 17th to leave (at 230 s) compacts.
        state, _ = (older if i < 20 else newer).step(state, event, event.time)
        expected, _ = (older if i < 20 else again).step(expected, event, event.time)
        assert state == expected, i
    assert state.base is not None


def test_news2_inputs_in_columns_are_the_inputs() -> None:
    items = [
        Input(T0, values={Metric.SPO2_PCT: 95.0, Metric.TEMP_C: -0.0}),
        Input(T0 + S, on_oxygen=True, acvpu=Acvpu.PAIN),
        Input(T0 + S, on_oxygen=False),
        Input(T0 + 2 * S, blind=Metric.RR_PER_MIN, scored=False),
        Input(T0 + 3 * S),
    ]
    window = InputWindow(items)
    assert list(window) == items
    assert window == tuple(items)
    assert window.appended(items[0])[1:] == (*items[1:], items[0])


def _tracked(root: object) -> int:
    """The objects the cyclic collector tracks among those reachable from ``root``, but
    for classes (and what they reach)."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or not gc.is_tracked(obj) or isinstance(obj, type):
            continue  # a class is shared, not the window's
        seen.add(id(obj))
        todo.extend(gc.get_referents(obj))
    return len(seen)


def test_an_hour_of_entries_is_no_object_for_the_collector() -> None:
    """The entries are values in columns, not objects: what the collector walks (the view,
    the columns and their containers) does not grow with the window."""
    rng = random.Random(23)
    verdicts: JudgedWindow = EMPTY_JUDGED
    inputs = InputWindow()
    counts = {}
    for second in range(3600):
        verdicts = verdicts.appended(_judged(rng, second))
        inputs = inputs.appended(Input(T0 + second * S, values={Metric.SPO2_PCT: 95.0, Metric.TEMP_C: 37.0}))
        if second in (10, 3599):
            counts[second] = (_tracked(verdicts), _tracked(inputs))
    assert counts[3599] == counts[10]
    assert max(counts[10]) < 20


def test_a_window_is_shown_as_its_class_and_entries() -> None:
    entry = Judged(T0, Verdict.BAND, 36.6, Metric.TEMP_C)
    assert repr(JudgedWindow([entry])) == f"JudgedWindow(({entry!r},))"
    assert repr(EMPTY_JUDGED) == "JudgedWindow(())"


def test_a_window_compacted_away_from_its_dropped_prefix_reads_its_entries_every_way() -> None:
    """A compacting copy keeps the positions (its columns start at the first entry kept):
    each read of the entries counts from there."""
    rng = random.Random(29)
    model = tuple(_judged(rng, second) for second in range(40))
    window = JudgedWindow(model)
    compacted = window[30:]
    assert compacted.columns()[1:] == (0, 10)  # the copy holds only the 10 entries kept
    assert_window_is_tuple(compacted, model[30:])
    assert compacted.last_time() == model[-1].time
    assert list(reversed(compacted[2:7])) == list(reversed(model[32:37]))


def test_column_windows_are_equal_only_with_the_same_entries_in_the_same_order() -> None:
    window = JudgedWindow(_entries(1, 2, 3))
    assert window != JudgedWindow(_entries(1, 2, 4))  # the same length, another entry
    assert window != tuple(_entries(3, 2, 1))
    assert window != tuple(_entries(1, 2))
    assert window == JudgedWindow(_entries(0, 1, 2, 3))[1:]
    assert window.__eq__(_entries(1, 2, 3)) is NotImplemented  # a list: no comparison


def test_an_index_past_a_column_views_end_is_out_of_range_though_the_columns_go_on() -> None:
    a, b, c = _entries(1, 2, 3)
    front = JudgedWindow([a, b, c])[:2]
    assert (front[0], front[1], front[-1], front[-2]) == (a, b, b, a)
    assert (front.time_at(0), front.time_at(1), front[1:].time_at(0)) == (a.time, b.time, b.time)
    for bad in (2, -3):
        with pytest.raises(IndexError, match=r"^window index out of range$"):
            front[bad]
    for bad in (2, -1):  # no index from the end: a time is read where the entry is known
        with pytest.raises(IndexError, match=r"^window index out of range$"):
            front.time_at(bad)


def test_since_names_the_dropped_prefix_and_the_appended_entries_of_a_column_window() -> None:
    a, b, c, d = _entries(1, 2, 3, 4)
    older = JudgedWindow([a, b])
    assert _since(older, older) == (0, ())
    grown = older.appended(c)
    assert _since(grown, older) == (0, (c,))
    moved = grown[1:]
    assert _since(moved, older) == (1, (c,))
    assert _since(moved, grown) == (1, ())  # a prefix dropped, nothing appended
    # Everything the older version held dropped, the newer one starting at its end.
    past = grown.appended(d)[2:]
    assert _since(past, older) == (2, (c, d))
    assert _since(grown[3:], grown) == (3, ())
    # Not "older with a prefix dropped and entries appended":
    assert older.since(grown) is None  # shorter at the end
    assert grown.since(moved) is None  # an entry before the older one's first
    assert grown[:2].since(grown) is None
    assert older.inserted(1, c).since(older) is None  # a copy
    assert JudgedWindow([a, b]).since(older) is None  # equal entries, other columns


def test_as_judged_takes_a_window_as_it_is_and_copies_anything_else() -> None:
    """A window is taken as it is (a copy would start other columns, and a checkpoint would
    write the whole window again); no entries give the shared empty window."""
    entries = _entries(1, 2)
    window = JudgedWindow(entries)
    assert as_judged(window) is window
    empty_view = window[1:1]
    assert as_judged(empty_view) is empty_view  # an empty view is a window too
    copied = as_judged(entries)
    assert type(copied) is JudgedWindow
    assert copied == tuple(entries)
    assert as_judged(()) is EMPTY_JUDGED
    assert as_judged([]) is EMPTY_JUDGED


class _Counting(News2Rule):
    """NEWS2 counting the scores it computes."""

    scored = 0

    def current(self, state: News2State, time: datetime) -> Any:
        self.scored += 1
        return super().current(state, time)


def test_an_input_leaving_the_window_is_not_scored_again() -> None:
    """Each input is scored when it is applied: on time once, and a late one once more with
    the window it re-scores; as each leaves the window, the base takes the score it kept."""
    rule = _Counting(VitalThresholds(news2_late_s=60.0), BED)
    state = rule.initial()
    normal = {Metric.RR_PER_MIN: 16.0, Metric.SPO2_PCT: 97.0}

    def sample(second: int, now: int | None = None) -> int:
        nonlocal state
        before = rule.scored
        event = VitalSample("w1", "b1", "m1", T0 + second * S, normal)
        state, out = rule.step(state, event, T0 + (second if now is None else now) * S)
        assert list(out) == []
        return rule.scored - before

    assert [sample(10 * i) for i in range(6)] == [1] * 6  # within the window: nothing leaves
    held = len(state.recent)
    assert sample(45, now=55) == 2 * held + 1  # the window scored again from the base, before and after it
    assert len(state.recent) == held + 1
    # One input leaves at each from 70 s; from the 17th, the columns are compacted (a copy
    # of the kept entries, with their scores).
    assert [sample(10 * i) for i in range(6, 40)] == [1] * 34
    scored = rule.scored
    settled = rule.settled(state)  # the inputs that left, folded with the scores they kept
    assert rule.scored == scored
    assert len(settled.recent) == 7
    assert settled.base is not None


def test_as_inputs_takes_a_window_as_it_is_and_copies_anything_else() -> None:
    items = [Input(T0, values={Metric.SPO2_PCT: 95.0}), Input(T0 + S, on_oxygen=True)]
    window = InputWindow(items)
    assert as_inputs(window) is window
    empty_view = window[1:1]
    assert as_inputs(empty_view) is empty_view
    copied = as_inputs(items)
    assert type(copied) is InputWindow
    assert copied == tuple(items)
    assert as_inputs(()) is EMPTY_INPUTS
    assert as_inputs([]) is EMPTY_INPUTS


def test_news2_keeps_each_input_it_takes_in_time_as_it_came() -> None:
    """The window appended on time (in place, after its first entry) holds each input with
    every field: values, oxygen, consciousness, a probe that came off."""
    rule = News2Rule(VitalThresholds(), BED)
    events: list[Event] = [
        VitalSample("w1", "b1", "m1", T0, {Metric.SPO2_PCT: 95.0}),
        Observation("w1", "b1", T0 + S, o2_device="nasal_cannula", acvpu=Acvpu.VOICE),
        Observation("w1", "b1", T0 + 2 * S, o2_device="air", acvpu=Acvpu.ALERT),
        VitalSample("w1", "b1", "m1", T0 + 3 * S, {Metric.RR_PER_MIN: 22.0, Metric.TEMP_C: 0.0}),
        SourceHealth("w1", "b1", "monitor.rr_per_min", T0 + 4 * S, Health.LOST, "probe-off"),
        VitalSample("w1", "b1", "m1", T0 + 5 * S, {}),
    ]
    state = rule.initial()
    for event in events:
        state, _ = rule.step(state, event, T0 + 5 * S)
    assert state.recent == (
        Input(T0, values={Metric.SPO2_PCT: 95.0}),
        Input(T0 + S, on_oxygen=True, acvpu=Acvpu.VOICE),
        Input(T0 + 2 * S, on_oxygen=False, acvpu=Acvpu.ALERT),
        Input(T0 + 3 * S, values={Metric.RR_PER_MIN: 22.0, Metric.TEMP_C: 0.0}),
        Input(T0 + 4 * S, blind=Metric.RR_PER_MIN, scored=False),
        Input(T0 + 5 * S),
    )


def test_a_long_dropped_prefix_of_a_column_window_is_copied_away_a_short_one_stays_shared() -> None:
    """A prefix of more than 16 entries and more than an eighth of the entries kept is
    copied away (the columns that held it can be freed); a shorter one stays a view of the
    columns. Counted from the columns' first entry, which after a compacting copy is the
    first entry it kept."""
    for dropped, kept, shared in [
        (16, 0, True),
        (17, 135, False),
        (17, 136, True),
        (40, 400, True),
        (2, 8, True),
    ]:
        model = tuple(_entries(*range(dropped + kept)))
        window = JudgedWindow(model)
        rest = window[dropped:]
        assert rest == model[dropped:]
        assert (rest.columns()[0] is window.columns()[0]) is shared, (dropped, kept)
        split = window.split_before(model[dropped].time if kept else T0 + timedelta(days=1))
        assert split is not None
        assert (split[1].columns()[0] is window.columns()[0]) is shared, (dropped, kept)
    compacted = JudgedWindow(_entries(*range(40)))[20:]
    assert compacted.columns()[1:] == (0, 20)
    assert compacted[2:].columns()[0] is compacted.columns()[0]  # 2 more dropped: still shared


def test_an_older_version_compacted_apart_does_not_take_the_newer_ones_positions() -> None:
    """Only the newest version's compacting copy carries the columns' positions on: an older
    version copies apart, so that an entry appended to it is never taken for the newer
    version's entry at the same position (a checkpoint would write the wrong rows)."""
    model = _entries(*range(40))
    window = JudgedWindow(model)
    newer = window.appended(_entries(40)[0])
    older_grown = window[20:].appended(Judged(T0 + 40 * S, Verdict.ABNORMAL, 99.0))
    assert older_grown.since(newer) is None
    delta = window_delta(newer, older_grown)
    assert _applied(list(newer), delta) == list(older_grown)
    assert newer.appended(_entries(41)[0])[:-1] == newer  # the newer one grows on
    # The newest version compacted: the version it was compacted from appends apart.
    newest = JudgedWindow(model).appended(_entries(40)[0])
    compacted = newest[20:]
    stale = newest.appended(Judged(T0 + 41 * S, Verdict.ABNORMAL, 98.0))
    fresh = compacted.appended(_entries(41)[0])
    assert fresh.since(stale) is None
    assert _applied(list(stale), window_delta(stale, fresh)) == list(fresh)
    assert _since(fresh, compacted) == (0, (_entries(41)[0],))  # the compacted one grows on


def test_appending_to_the_empty_column_window_leaves_its_columns_empty() -> None:
    """The empty windows are shared by every track: an entry appended to one goes into
    columns of its own, never into the shared ones."""
    empties: list[tuple[ColumnWindow[Any], Any]] = [
        (EMPTY_JUDGED, _entries(1)[0]),
        (EMPTY_INPUTS, Input(T0, values={Metric.SPO2_PCT: 95.0})),
    ]
    for empty, entry in empties:
        grown = empty.appended(entry)
        assert grown == (entry,)
        assert grown.columns()[0] is not empty.columns()[0]
        assert [len(column) for column in empty.columns()[0].data] == [0] * len(empty.columns()[0].data)
    scored = EMPTY_INPUTS.appended_scored(Input(T0), (0, None), 1)
    assert scored.columns()[0] is not EMPTY_INPUTS.columns()[0]
    assert len(EMPTY_INPUTS.columns()[0].data[0]) == 0


@pytest.mark.parametrize("seed", range(5))
def test_a_window_of_verdicts_dumps_from_its_columns_what_each_entry_dumps(seed: int) -> None:
    """``dump_judged_entries`` (a checkpoint's window rows) reads the columns; a view into
    shared columns dumps only its own rows, with the measure only where there is one."""
    rng = random.Random(seed)

    def judged(second: int) -> Judged:  # every measure, the first of them too
        return Judged(T0 + second * S, rng.choice(_VERDICTS), rng.random() * 100, rng.choice((None, *Metric)))

    window: JudgedWindow = EMPTY_JUDGED
    for second in range(40):
        window = window.appended(judged(second))
    older, window = window, window[rng.randrange(1, 20) :].appended(judged(40))
    found = window.since(older)
    assert found is not None
    added = found[1]
    for part in (window, added, window[3:9], EMPTY_JUDGED, tuple(window)):
        assert dump_judged_entries(part) == [dump_judged(entry) for entry in part]
    config = one_bed_config(T0)
    rule = VitalsRule(
        config.thresholds_for("b1").vitals, config.bed("b1"), schedule_for(config.bed("b1"), config)
    )
    change = WindowChange("b1", "vitals", "fever", WindowDelta(False, None, window[2:]), rule)
    assert change.rows() == [(epoch_us(e.time), dump_judged(e)) for e in window[2:]]
    rows = [row for _, row in change.rows()]
    assert [len(row) for row in rows] == [3 if e.measure is None else 4 for e in window[2:]]
