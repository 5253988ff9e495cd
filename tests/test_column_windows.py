"""Late-data windows kept in columns (``daemon.frozen.ColumnWindow``): the vital-sign tracks'
verdicts (``JudgedWindow``) and NEWS2's inputs with the scores they keep (``InputWindow``)."""

from __future__ import annotations

import gc
import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon.clinical.news2 import Input, InputWindow, News2Rule, News2State
from daemon.clinical.verdicts import EMPTY_JUDGED, Judged, JudgedWindow, Verdict, as_judged
from daemon.config import BedConfig, VitalThresholds
from daemon.events import Acvpu, Event, Health, Metric, Observation, SourceHealth, VitalSample
from daemon.rules import window_delta
from tests.helpers import assert_window_is_tuple

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
