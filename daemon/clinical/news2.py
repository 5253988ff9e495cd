"""NEWS2 (RCP 2017) scoring and the ``NEWS2_HIGH`` rule.

Scoring follows the chart in domain.md section 3. SpO2 is scored on scale 1 unless
a clinician set the bed's ``news2_spo2_scale = 2`` (hypercapnic respiratory failure,
target 88-92 %): on scale 2, 88-92 % scores 0, and so does 93 % or more on air, but
on supplemental oxygen 93-94 % scores 1, 95-96 % 2 and 97 % or more 3
(over-oxygenation). The alert's details say which scale was used (``spo2_scale``).
When the oxygen status is unknown, a scale-2 saturation of 93 % or more is scored as
on air (0): the parameter "supplemental O2" is then missing too, and the total is a
lower bound like any partial score.

The score is computed from the latest value of each parameter no older than
``news2_max_age_s``. A parameter with no recent value is left out and named in
``missing``: the total is then a lower bound, so a trigger it reaches is a real one,
and the message says the score is partial.

Late data: each vital sample and observation is scored at its own time. One that
arrives after newer inputs, but no more than ``news2_late_s`` before the daemon's
clock, is inserted among the inputs of that window in time order and the window is
scored again from the state before it; the alert changes that differ are returned
with ``details["late_s"]`` and a note in the message, at the time they happened
(``since``). An input older than ``news2_late_s`` on arrival is not scored (the
pipeline counts it as ``vitals.late_dropped`` ``news2``).

A probe-off (``SourceHealth`` LOST for ``monitor.<metric>``) removes only the values
before it: a late one takes its place in the window in time order (after the inputs of
its own time, which arrived before it) and the window is scored again; one older than
the window is applied to the state the window starts from. Before, it removed the
metric's newest value whatever its time and went to the end of the window.

Triggers (domain.md section 3) and their IEC 60601-1-8 priorities (section 4):

- aggregate >= 7, "emergency assessment within 30 min": **high** (immediate
  response, risk of death or irreversible harm);
- aggregate 5-6, "urgent review within 1 h": **medium** (prompt response);
- any single parameter scoring 3, "urgent ward-based response": **medium**.

The rule uses the same onset and clearing noise control as the vital-sign rule
(``news2_delay_s``, ``news2_clear_s``, ``confirm_samples`` consecutive
evaluations), so one artifact does not raise it.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from daemon.clinical.vitals import (
    EMPTY_TRACK,
    FOLD_SLACK,
    Noise,
    Track,
    Transition,
    Verdict,
    advance,
    dump_track,
    kept_for,
    late_note,
    latest,
    load_track,
    probe_metric,
)
from daemon.config import BedConfig, VitalThresholds
from daemon.events import (
    Acvpu,
    AlertCandidate,
    Event,
    Health,
    Kind,
    Metric,
    Observation,
    Priority,
    SourceHealth,
    Text,
    VitalSample,
)
from daemon.frozen import ColumnWindow, replace, replacer
from daemon.timefmt import iso, iso_or_none, parse_iso_or_none

CONDITION = "NEWS2_HIGH"


class Param(StrEnum):
    """The seven NEWS2 parameters."""

    RESPIRATION = "respiration"
    SPO2 = "spo2"
    SUPPLEMENTAL_O2 = "supplemental_o2"
    SYSTOLIC = "systolic"
    PULSE = "pulse"
    CONSCIOUSNESS = "consciousness"
    TEMPERATURE = "temperature"


_PARAMS = tuple(Param)  # iterating the enum itself costs a generator of its members each time


class Trigger(StrEnum):
    """NEWS2 escalation triggers, lowest first."""

    SINGLE_PARAMETER_3 = "single_parameter_3"
    AGGREGATE_5 = "aggregate_5"
    AGGREGATE_7 = "aggregate_7"


TRIGGER_PRIORITY: Mapping[Trigger, Priority] = {
    Trigger.SINGLE_PARAMETER_3: Priority.MEDIUM,
    Trigger.AGGREGATE_5: Priority.MEDIUM,
    Trigger.AGGREGATE_7: Priority.HIGH,
}


def score_respiration(rr_per_min: float) -> int:
    """≤8: 3; 9-11: 1; 12-20: 0; 21-24: 2; ≥25: 3."""
    if rr_per_min <= 8:
        return 3
    if rr_per_min <= 11:
        return 1
    if rr_per_min <= 20:
        return 0
    if rr_per_min <= 24:
        return 2
    return 3


def score_spo2_scale1(spo2_pct: float) -> int:
    """≤91: 3; 92-93: 2; 94-95: 1; ≥96: 0."""
    if spo2_pct <= 91:
        return 3
    if spo2_pct <= 93:
        return 2
    if spo2_pct <= 95:
        return 1
    return 0


def score_spo2_scale2(spo2_pct: float, on_oxygen: bool) -> int:
    """≤83: 3; 84-85: 2; 86-87: 1; 88-92: 0; ≥93 on air: 0; on O2 93-94: 1, 95-96: 2, ≥97: 3."""
    if spo2_pct <= 83:
        return 3
    if spo2_pct <= 85:
        return 2
    if spo2_pct <= 87:
        return 1
    if spo2_pct <= 92 or not on_oxygen:
        return 0
    if spo2_pct <= 94:
        return 1
    if spo2_pct <= 96:
        return 2
    return 3


def score_supplemental_o2(on_oxygen: bool) -> int:
    """Supplemental oxygen: 2; air: 0."""
    return 2 if on_oxygen else 0


def score_systolic(sbp_mmhg: float) -> int:
    """≤90: 3; 91-100: 2; 101-110: 1; 111-219: 0; ≥220: 3."""
    if sbp_mmhg <= 90:
        return 3
    if sbp_mmhg <= 100:
        return 2
    if sbp_mmhg <= 110:
        return 1
    if sbp_mmhg < 220:
        return 0
    return 3


def score_pulse(hr_per_min: float) -> int:
    """≤40: 3; 41-50: 1; 51-90: 0; 91-110: 1; 111-130: 2; ≥131: 3."""
    if hr_per_min <= 40:
        return 3
    if hr_per_min <= 50:
        return 1
    if hr_per_min <= 90:
        return 0
    if hr_per_min <= 110:
        return 1
    if hr_per_min <= 130:
        return 2
    return 3


def score_consciousness(acvpu: Acvpu) -> int:
    """Alert: 0; new confusion, voice, pain or unresponsive: 3."""
    return 0 if acvpu is Acvpu.ALERT else 3


def score_temperature(temp_c: float) -> int:
    """≤35.0: 3; 35.1-36.0: 1; 36.1-38.0: 0; 38.1-39.0: 1; ≥39.1: 2."""
    if temp_c <= 35.0:
        return 3
    if temp_c <= 36.0:
        return 1
    if temp_c <= 38.0:
        return 0
    if temp_c <= 39.0:
        return 1
    return 2


@dataclass(frozen=True, slots=True)
class News2:
    """A NEWS2 result: per-parameter scores and what could not be scored."""

    parts: Mapping[Param, int]
    missing: tuple[Param, ...]

    @property
    def total(self) -> int:
        """The aggregate score (a lower bound when ``missing`` is not empty)."""
        return sum(self.parts.values())

    @property
    def trigger(self) -> Trigger | None:
        """The highest trigger reached, if any."""
        return trigger_of(self.total, self.parts)


def trigger_of(total: int, parts: Mapping[Param, int]) -> Trigger | None:
    """The highest trigger an aggregate ``total`` of ``parts`` reaches, if any (``News2.trigger``,
    given the total: the rule reads both, once a message)."""
    if total >= 7:
        return Trigger.AGGREGATE_7
    if total >= 5:
        return Trigger.AGGREGATE_5
    if 3 in parts.values():
        return Trigger.SINGLE_PARAMETER_3
    return None


_LONGEST_S = timedelta.max.total_seconds()

# Each measured parameter, its metric and its scoring (``None``: SpO2, scored on a scale),
# in the order of the chart.
_METRIC_SCORES: tuple[tuple[Param, Metric, Callable[[float], int] | None], ...] = (
    (Param.RESPIRATION, Metric.RR_PER_MIN, score_respiration),
    (Param.SPO2, Metric.SPO2_PCT, None),
    (Param.SYSTOLIC, Metric.SBP_MMHG, score_systolic),
    (Param.PULSE, Metric.HR_PER_MIN, score_pulse),
    (Param.TEMPERATURE, Metric.TEMP_C, score_temperature),
)


def news2(
    values: Mapping[Metric, float], on_oxygen: bool | None, acvpu: Acvpu | None, spo2_scale: int = 1
) -> News2:
    """Score what is known; ``None`` or an absent metric counts as missing.

    ``spo2_scale`` is 1 or 2; on scale 2 an unknown oxygen status scores as air.
    """
    parts: dict[Param, int] = {}
    for param, metric, score in _METRIC_SCORES:
        value = values.get(metric)
        if value is not None:
            if score is None:  # SpO2: on the bed's scale
                parts[param] = (
                    score_spo2_scale2(value, bool(on_oxygen)) if spo2_scale == 2 else score_spo2_scale1(value)
                )
            else:
                parts[param] = score(value)
    if on_oxygen is not None:
        parts[Param.SUPPLEMENTAL_O2] = score_supplemental_o2(on_oxygen)
    if acvpu is not None:
        parts[Param.CONSCIOUSNESS] = score_consciousness(acvpu)
    missing = tuple(p for p in _PARAMS if p not in parts)
    return News2(parts, missing)


def on_supplemental_oxygen(obs: Observation) -> bool | None:
    """What an observation says about supplemental O2 (``None``: it does not say)."""
    if obs.o2_device is not None:
        return obs.o2_device != "air"
    if obs.o2_flow_l_per_min is not None:
        return obs.o2_flow_l_per_min > 0
    return None


@dataclass(frozen=True, slots=True)
class Input:
    """One input kept for re-scoring late data: a sample's values, an observation's
    oxygen and consciousness, or a probe that came off (``blind``)."""

    time: datetime
    values: Mapping[Metric, float] = field(default_factory=dict)
    on_oxygen: bool | None = None
    acvpu: Acvpu | None = None
    blind: Metric | None = None
    scored: bool = True  # False for a probe-off: it removes a value, nothing is scored


_METRICS = tuple(Metric)
_ACVPU: tuple[Acvpu | None, ...] = (None, *Acvpu)
_ACVPU_CODE = {a: i for i, a in enumerate(_ACVPU)}
_BLIND: tuple[Metric | None, ...] = (None, *Metric)
_BLIND_CODE = {m: i for i, m in enumerate(_BLIND)}
_OXYGEN: tuple[bool | None, ...] = (None, False, True)
_TRIGGERS: tuple[Trigger | None, ...] = (None, *Trigger)
_TRIGGER_CODE = {t: i for i, t in enumerate(_TRIGGERS)}
# The columns of an ``InputWindow``: time, which metrics are present (a bit each), one
# column per metric, oxygen, ACVPU, blind metric, scored, and the score cache.
_PRESENT = 1
_VALUES = 2
_OXYGEN_AT = _VALUES + len(_METRICS)
_ACVPU_AT, _BLIND_AT, _SCORED_AT, _TOTAL_AT, _TRIGGER_AT = range(_OXYGEN_AT + 1, _OXYGEN_AT + 6)
_UNKNOWN = -1  # the total of an entry whose score is not kept
_scorers = itertools.count(1)


class InputWindow(ColumnWindow[Input]):
    """The window of inputs in columns (``daemon.frozen.ColumnWindow``): a sample's values as
    seven floats and a bit mask, not a dictionary.

    Each entry also keeps the total and trigger it scored when it was last applied in
    order (``_UNKNOWN`` when not known): the score the base gets when the input leaves
    the window, since the base is then exactly the state it was applied to. The columns'
    ``tag`` names the rule (``News2Rule._scorer``) that scored them; another rule (new
    settings) scores again. Not part of an entry: neither compared nor stored.
    """

    __slots__ = ()

    @staticmethod
    def _new_data() -> list[Any]:
        return [
            [],
            bytearray(),
            *(array("d") for _ in _METRICS),
            bytearray(),
            bytearray(),
            bytearray(),
            bytearray(),
            array("b"),
            bytearray(),
        ]

    @staticmethod
    def _row(entry: Input) -> tuple[Any, ...]:
        present = 0
        values = entry.values
        for bit, metric in enumerate(_METRICS):
            if metric in values:
                present |= 1 << bit
        return (
            entry.time,
            present,
            *(values.get(metric, 0.0) for metric in _METRICS),
            _OXYGEN.index(entry.on_oxygen),
            _ACVPU_CODE[entry.acvpu],
            _BLIND_CODE[entry.blind],
            int(entry.scored),
            _UNKNOWN,
            0,
        )

    @staticmethod
    def _entry(data: list[Any], i: int) -> Input:
        present = data[_PRESENT][i]
        values = {m: data[_VALUES + bit][i] for bit, m in enumerate(_METRICS) if present >> bit & 1}
        return Input(
            data[0][i],
            values,
            _OXYGEN[data[_OXYGEN_AT][i]],
            _ACVPU[data[_ACVPU_AT][i]],
            _BLIND[data[_BLIND_AT][i]],
            bool(data[_SCORED_AT][i]),
        )

    def appended_scored(
        self, entry: Input, score: tuple[int, Trigger | None] | None, scorer: int
    ) -> InputWindow:
        """``appended(entry)``, keeping the score ``scorer`` gave it (``_remember``),
        without the general path's loop over the columns (once per sample)."""
        new = self._appended_in_place(entry) if self._grows_in_place() else self.appended(entry)
        if score is not None:
            _remember(new, len(new) - 1, score, scorer)
        return new

    def _appended_in_place(self, entry: Input) -> InputWindow:
        """``appended(entry)`` when this window ends at its columns' end: the entry's row
        added to them, with no score kept."""
        cols, start, stop = self._cols, self._start, self._stop
        data = cols.data
        # The codes first: a value without one raises before any column has grown.
        oxygen, acvpu, blind = (
            _OXYGEN.index(entry.on_oxygen),
            _ACVPU_CODE[entry.acvpu],
            _BLIND_CODE[entry.blind],
        )
        values, present = entry.values, 0
        for bit, metric in enumerate(_METRICS):
            value = values.get(metric)
            if value is None:
                data[_VALUES + bit].append(0.0)
            else:
                data[_VALUES + bit].append(value)
                present |= 1 << bit
        data[0].append(entry.time)
        data[_PRESENT].append(present)
        data[_OXYGEN_AT].append(oxygen)
        data[_ACVPU_AT].append(acvpu)
        data[_BLIND_AT].append(blind)
        data[_SCORED_AT].append(entry.scored)
        data[_TOTAL_AT].append(_UNKNOWN)
        data[_TRIGGER_AT].append(0)
        return self._view(cols, start, stop + 1)


def _remember(window: InputWindow, index: int, score: tuple[int, Trigger | None], scorer: int) -> None:
    """Keep ``score`` (given by ``scorer``) with entry ``index`` of ``window``, which no
    other window sees yet (just appended, or in columns of its own); not when the columns
    hold another rule's scores."""
    cols, lo, _ = window.columns()
    if cols.tag is None:
        cols.tag = scorer  # no entry of these columns has a score yet
    if cols.tag == scorer:
        cols.data[_TOTAL_AT][lo + index] = score[0]
        cols.data[_TRIGGER_AT][lo + index] = _TRIGGER_CODE[score[1]]


def _quiet_run(state: News2State, data: list[Any], i: int, hi: int) -> tuple[News2State, int]:
    """``state`` (its track not active) after the inputs from row ``i`` of an ``InputWindow``'s
    columns (``data``) that kept a score without a trigger, and the index of the first other
    row (or ``hi``).

    Such an input updates the latest values and adds a normal verdict to an inactive
    track: no transition, no candidate (``News2Rule._evaluate``). One copy of the values
    and of the state for the run, not several for each input; the track as
    ``daemon.clinical.vitals.advance`` gives it (an input no newer than the track's last
    verdict updates the values only)."""
    times, present, totals = data[0], data[_PRESENT], data[_TOTAL_AT]
    triggers, blind = data[_TRIGGER_AT], data[_BLIND_AT]
    oxygen_codes, acvpu_codes = data[_OXYGEN_AT], data[_ACVPU_AT]
    track = state.track
    last, since, newest = track.last_time, track.normal_since, -1
    values: dict[Metric, tuple[float, datetime]] | None = None
    on_oxygen, acvpu = state.on_oxygen, state.acvpu
    start = i
    while i < hi and totals[i] != _UNKNOWN and not triggers[i] and not blind[i]:
        time = times[i]
        bits = present[i]
        if bits:
            if values is None:
                values = dict(state.values)
            for bit, metric in enumerate(_METRICS):
                if bits >> bit & 1:
                    known = values.get(metric)
                    if known is None or known[1] <= time:
                        values[metric] = (data[_VALUES + bit][i], time)
        oxygen = _OXYGEN[oxygen_codes[i]]
        if oxygen is not None and (on_oxygen is None or on_oxygen[1] <= time):
            on_oxygen = (oxygen, time)
        level = _ACVPU[acvpu_codes[i]]
        if level is not None and (acvpu is None or acvpu[1] <= time):
            acvpu = (level, time)
        if last is None or time > last:
            since = since or time
            last, newest = time, i
        i += 1
    if i == start:
        return state, i
    if newest >= 0:
        track = _copy_track(
            track,
            run_start=None,
            run_count=0,
            normal_since=since,
            last_time=last,
            value=float(totals[newest]),
            measure=None,
        )
    return _copy_state(
        state,
        values=state.values if values is None else values,
        on_oxygen=on_oxygen,
        acvpu=acvpu,
        track=track,
    ), i


EMPTY_INPUTS = InputWindow()
"""The empty window of inputs (shared: appending to it starts columns of their own)."""


def as_inputs(entries: Sequence[Input]) -> InputWindow:
    """``entries`` as an ``InputWindow``: itself when it is one, else a copy."""
    if type(entries) is InputWindow:
        return entries
    return InputWindow(entries) if entries else EMPTY_INPUTS


class News2State(NamedTuple):
    """Latest inputs (with their times), the trigger's progress, and the late-data window.

    ``recent`` holds the inputs of the last ``news2_late_s`` and ``base`` the state
    before the first of them, so that a late input can be scored in time order.

    A named tuple, as ``Track`` is: copied three times a message, each made in one call.
    """

    values: Mapping[Metric, tuple[float, datetime]]
    on_oxygen: tuple[bool, datetime] | None = None
    acvpu: tuple[Acvpu, datetime] | None = None
    track: Track = EMPTY_TRACK
    trigger: Trigger | None = None  # the trigger last announced while active
    recent: Sequence[Input] = EMPTY_INPUTS  # an ``InputWindow`` (a tuple is taken too)
    base: News2State | None = None
    # The inputs older than this have left the window; ``step`` folds them into the base in
    # batches (``FOLD_SLACK``), so ``recent`` may still hold some (``settled``).
    folded_before: datetime | None = None


_copy_state = replacer(News2State)  # ``replace`` for the state: several copies a message
_copy_track = replacer(Track)


class News2Rule:
    """``NEWS2_HIGH`` at the standard triggers."""

    consumes = (VitalSample, Observation, SourceHealth)
    """The events this rule reads (``daemon.rules.Rule``); it ignores every other."""

    name = "news2"

    def __init__(self, thresholds: VitalThresholds, bed: BedConfig) -> None:
        """Score ``bed`` with ``thresholds`` (max age, delay, clearing time, lateness window)
        on the bed's SpO2 scale."""
        self.th = thresholds
        self.bed = bed
        self.spo2_scale = bed.news2_spo2_scale
        self._noise = Noise(thresholds.news2_delay_s, thresholds.news2_clear_s, thresholds.confirm_samples)
        self._kept = kept_for(thresholds.news2_late_s)
        max_age_s = thresholds.news2_max_age_s
        # An age beyond what a timedelta holds (an infinite one) is longer than datetimes reach.
        self._max_age = timedelta.max if max_age_s >= _LONGEST_S else timedelta(seconds=max_age_s)
        self._scorer = next(_scorers)  # names the scores this rule keeps in its windows

    def initial(self) -> News2State:
        """Nothing known."""
        return News2State(values={})

    def current(self, state: News2State, time: datetime) -> News2:
        """The score at ``time`` from inputs no older than the maximum age."""
        # Fresh: ``time - at`` no more than the maximum age, compared as timedeltas (exact to
        # the microsecond, as ``total_seconds`` is), without a float made for each value.
        try:
            oldest = time - self._max_age
        except OverflowError:  # a maximum age reaching before the first datetime: all fresh
            oldest = datetime.min.replace(tzinfo=time.tzinfo)
        values = {m: v for m, (v, at) in state.values.items() if at >= oldest}
        on_oxygen = state.on_oxygen[0] if state.on_oxygen and state.on_oxygen[1] >= oldest else None
        acvpu = state.acvpu[0] if state.acvpu and state.acvpu[1] >= oldest else None
        return news2(values, on_oxygen, acvpu, self.spo2_scale)

    def step(
        self, state: News2State, event: Event, now: datetime
    ) -> tuple[News2State, Sequence[AlertCandidate]]:
        """Take an input and score at its own time (late inputs in time order, see module)."""
        if isinstance(event, VitalSample):
            item = Input(event.time, values=event.values)  # not kept: the window copies it into columns
        elif isinstance(event, Observation):
            item = Input(event.time, on_oxygen=on_supplemental_oxygen(event), acvpu=event.acvpu)
        elif isinstance(event, SourceHealth):
            blind = probe_metric(event)
            if blind is None or event.health is Health.CONNECTED:
                return state, ()
            # The values before a probe came off are no longer the patient's; it scores
            # nothing itself, so it has no lateness limit.
            item = Input(event.time, blind=blind, scored=False)
        else:
            return state, ()
        if item.scored and (now - item.time).total_seconds() > self.th.news2_late_s:
            return state, ()  # too late to be scored: stored, and counted by the pipeline
        last = state.track.last_time
        window = as_inputs(state.recent)
        newest = window.last_time()
        if (last is None or item.time >= last) and (newest is None or item.time >= newest):
            after, out, score = self._applied(state, item, None)
            recent = window.appended_scored(item, score, self._scorer)
            return self._keep(state, after, recent, now, slack=FOLD_SLACK), out
        return self._late(state, item, now)

    def _late(self, state: News2State, item: Input, now: datetime) -> tuple[News2State, list[AlertCandidate]]:
        """An input older than the newest of the window, scored in time order (module docstring).

        Entries of the same time keep their arrival order: the late input goes after them.
        A probe-off older than the window is applied to the state the window starts from
        (it removes the values before it there) and the window is scored again.
        """
        settled = self.settled(state)
        base = settled.base
        if base is None:
            return state, []  # nothing scored yet
        old = base.track.last_time is not None and item.time < base.track.last_time
        if not item.scored and old:
            # The same entries, scored again from another base: in columns of their own.
            at, recent, upto_base = 0, InputWindow(settled.recent), self._apply(base, item)[0]
        elif old or (item.scored and item.time == base.track.last_time):
            return state, []  # older than anything the window still holds
        else:
            at = next(
                (i for i, known in enumerate(settled.recent) if known.time > item.time), len(settled.recent)
            )
            recent, upto_base = as_inputs(settled.recent).inserted(at, item), base
        _, before = self._fold(base, settled.recent)
        folded, after = self._fold(upto_base, recent, remember=True)
        before = [c for c in before if c.time >= item.time]
        after = [c for c in after if c.time >= item.time]
        same = 0
        while same < min(len(before), len(after)) and before[same] == after[same]:
            same += 1
        out = after[same:]
        if not out and folded.track.active != settled.track.active:
            # The score at the late input's time: from the inputs up to it, not the later ones.
            upto, _ = self._fold(upto_base, recent[: at + 1] if upto_base is base else ())
            result = self.current(upto, item.time)
            out = [self._candidate(item.time, result, folded.trigger if folded.track.active else None)]
        out = [late_note(c, (now - c.time).total_seconds()) for c in out]
        return self._keep(replace(settled, base=upto_base), folded, recent, now), out

    def _fold(
        self, base: News2State, items: Sequence[Input], *, remember: bool = False
    ) -> tuple[News2State, list[AlertCandidate]]:
        """``base`` after ``items``, and the candidates they make; a base holds no window
        of its own (``recent`` empty, ``base`` None: ``_keep`` makes it so).

        ``remember``: keep each input's score in ``items``, an ``InputWindow`` in columns
        of its own (see ``_remember``)."""
        state = base
        out: list[AlertCandidate] = []
        for index, item in enumerate(items):
            state, candidates, score = self._applied(state, item, None)
            out.extend(candidates)
            if remember and score is not None:
                assert type(items) is InputWindow
                _remember(items, index, score, self._scorer)
        return state, out

    def _fold_base(self, base: News2State, items: InputWindow) -> News2State:
        """``base`` after ``items`` that left the window, with the scores they kept: the
        base is the state each was applied to (``InputWindow``), so it is not scored again.
        What ``_applied`` gives input by input; a quiet run is one copy (``_quiet_run``)."""
        cols, lo, hi = items.columns()
        data = cols.data
        totals, triggers = data[_TOTAL_AT], data[_TRIGGER_AT]
        kept = cols.tag == self._scorer
        state = base
        i = lo
        while i < hi:
            if kept and not state.track.active and state.trigger is None:
                state, i = _quiet_run(state, data, i, hi)
                if i == hi:
                    break
            total = totals[i]
            known = (total, _TRIGGERS[triggers[i]]) if kept and total != _UNKNOWN else None
            state, _, _ = self._applied(state, InputWindow._entry(data, i), known)
            i += 1
        return state

    def _keep(
        self,
        before: News2State,
        after: News2State,
        recent: InputWindow,
        now: datetime,
        *,
        slack: timedelta = timedelta(0),
    ) -> News2State:
        """``after`` keeping the window's inputs; those older than it at ``now`` are folded
        into the base (``before``, the state the inputs were applied to, is the first base),
        with ``slack`` only once the oldest is that much older than the window."""
        base = before.base
        if base is None:
            base = _copy_state(before, recent=EMPTY_INPUTS, base=None, folded_before=None)
        cut = now - self._kept
        base, recent = self._pruned(base, recent, cut, slack)
        return _copy_state(after, recent=recent, base=base, folded_before=latest(before.folded_before, cut))

    def _pruned(
        self, base: News2State, recent: InputWindow, cut: datetime, slack: timedelta
    ) -> tuple[News2State, InputWindow]:
        """The base and the window once the inputs older than ``cut`` are folded into the base;
        nothing (the same two) while the oldest is no more than ``slack`` older than ``cut``."""
        if not recent or recent.time_at(0) >= cut - slack:
            return base, recent
        split = recent.split_before(cut)
        if split is None:
            return base, recent
        old, recent = split
        return self._fold_base(base, old), recent

    def settled(self, state: News2State) -> News2State:
        """``state`` with the inputs that have left its window (``folded_before``) folded into
        its base: the window and base a late input is scored against, whatever batches the
        in-order inputs fold in (itself when there are none)."""
        if state.base is None or state.folded_before is None:
            return state
        base, recent = self._pruned(state.base, as_inputs(state.recent), state.folded_before, timedelta(0))
        if base is state.base:
            return state
        return _copy_state(state, recent=recent, base=base)

    def _apply(self, state: News2State, item: Input) -> tuple[News2State, list[AlertCandidate]]:
        state, out, _ = self._applied(state, item, None)
        return state, out

    def _applied(
        self, state: News2State, item: Input, scored: tuple[int, Trigger | None] | None
    ) -> tuple[News2State, list[AlertCandidate], tuple[int, Trigger | None] | None]:
        """``state`` after ``item``, the candidates, and the total and trigger it scored
        (``None`` for a probe-off: nothing scored). ``scored``: that score, kept from when
        ``item`` was applied to this very state (not scored again)."""
        if item.blind is not None:
            # Only the values before it (a value of its own time arrived before it).
            values = {m: v for m, v in state.values.items() if m != item.blind or v[1] > item.time}
            return _copy_state(state, values=values), [], None
        if item.values:
            values = dict(state.values)
            for metric, value in item.values.items():
                known = values.get(metric)
                if known is None or known[1] <= item.time:
                    values[metric] = (value, item.time)
            state = _copy_state(state, values=values)
        if item.on_oxygen is not None and (state.on_oxygen is None or state.on_oxygen[1] <= item.time):
            state = _copy_state(state, on_oxygen=(item.on_oxygen, item.time))
        if item.acvpu is not None and (state.acvpu is None or state.acvpu[1] <= item.time):
            state = _copy_state(state, acvpu=(item.acvpu, item.time))
        return self._evaluate(state, item.time, scored)

    def _evaluate(
        self, state: News2State, time: datetime, known: tuple[int, Trigger | None] | None
    ) -> tuple[News2State, list[AlertCandidate], tuple[int, Trigger | None]]:
        if known is None:
            result: News2 | None = self.current(state, time)
            assert result is not None
            total = result.total
            trigger = trigger_of(total, result.parts)
        else:
            result = None  # scored only if a candidate needs it
            total, trigger = known
        verdict = Verdict.NORMAL if trigger is None else Verdict.ABNORMAL
        track, transition = advance(state.track, verdict, time, float(total), self._noise)
        state = _copy_state(state, track=track)
        if transition is Transition.CLEARED:
            state = _copy_state(state, trigger=None)
            return state, [self._candidate(time, result or self.current(state, time), None)], (total, trigger)
        if (
            track.active
            and trigger is not None
            and (transition is Transition.RAISED or trigger != state.trigger)
        ):
            state = _copy_state(state, trigger=trigger)
            return (
                state,
                [self._candidate(time, result or self.current(state, time), trigger)],
                (total, trigger),
            )
        return state, [], (total, trigger)

    def _candidate(self, time: datetime, result: News2, trigger: Trigger | None) -> AlertCandidate:
        partial_en = f" (partial: no recent {', '.join(result.missing)})" if result.missing else ""
        partial_fr = (
            f" (partiel : pas de valeur récente pour {', '.join(result.missing)})" if result.missing else ""
        )
        if trigger is None:
            message = Text(
                f"NEWS2 back below the triggers: {result.total}{partial_en}.",
                f"NEWS2 revenu sous les seuils d'alerte : {result.total}{partial_fr}.",
            )
            priority = Priority.MEDIUM
            details: Mapping[str, Any] = {}
        else:
            action_en, action_fr = _ACTIONS[trigger]
            threes = [p.value for p, s in result.parts.items() if s == 3]
            scale_en = " (SpO2 scale 2)" if self.spo2_scale == 2 else ""
            scale_fr = " (SpO2 échelle 2)" if self.spo2_scale == 2 else ""
            message = Text(
                f"NEWS2 {result.total}{scale_en}{partial_en}"
                + (f"; scoring 3: {', '.join(threes)}" if threes else "")
                + f". {action_en}",
                f"NEWS2 {result.total}{scale_fr}{partial_fr}"
                + (f" ; à 3 : {', '.join(threes)}" if threes else "")
                + f". {action_fr}",
            )
            priority = TRIGGER_PRIORITY[trigger]
            details = {"trigger": trigger.value, "spo2_scale": self.spo2_scale}
        return AlertCandidate(
            condition=CONDITION,
            ward=self.bed.ward,
            bed=self.bed.id,
            time=time,
            present=trigger is not None,
            kind=Kind.PHYSIOLOGICAL,
            priority=priority,
            value=float(result.total),
            unit="{score}",
            message=message,
            details=details,
        )

    def dump(self, state: News2State) -> Mapping[str, Any]:
        """The state as JSON-compatible data."""
        return {
            "values": {m.value: [v, iso(at)] for m, (v, at) in state.values.items()},
            "on_oxygen": None if state.on_oxygen is None else [state.on_oxygen[0], iso(state.on_oxygen[1])],
            "acvpu": None if state.acvpu is None else [state.acvpu[0].value, iso(state.acvpu[1])],
            "track": dump_track(state.track),
            "trigger": None if state.trigger is None else state.trigger.value,
            "recent": [_dump_input(item) for item in state.recent],
            "base": None if state.base is None else self.dump(state.base),
            "folded_before": iso_or_none(state.folded_before),
        }

    def windows(self, state: News2State) -> Mapping[str, Sequence[Input]]:
        """The late-data window of inputs (``daemon.rules.Windowed``)."""
        return {"inputs": state.recent}

    def with_windows(self, state: News2State, windows: Mapping[str, Sequence[Any]]) -> News2State:
        """``state`` with its window of inputs replaced."""
        return replace(state, recent=as_inputs(windows["inputs"])) if "inputs" in windows else state

    def dump_entry(self, window: str, entry: Input) -> Any:
        """One input of the window."""
        return _dump_input(entry)

    def load_entry(self, window: str, data: Any) -> Input:
        """An input from ``dump_entry``."""
        item = _load_input(data)
        if item is None:
            raise ValueError(f"window entry without a time: {data!r}")
        return item

    def load(self, data: Mapping[str, Any]) -> News2State:
        """A state from ``dump``'s output."""
        values: dict[Metric, tuple[float, datetime]] = {}
        for key, (value, at) in data.get("values", {}).items():
            when = parse_iso_or_none(at)
            if when is not None:
                values[Metric(key)] = (float(value), when)
        on_oxygen = data.get("on_oxygen")
        acvpu = data.get("acvpu")
        oxygen_at = parse_iso_or_none(on_oxygen[1]) if on_oxygen else None
        acvpu_at = parse_iso_or_none(acvpu[1]) if acvpu else None
        trigger = data.get("trigger")
        base = data.get("base")
        return News2State(
            values=values,
            on_oxygen=(bool(on_oxygen[0]), oxygen_at) if on_oxygen and oxygen_at else None,
            acvpu=(Acvpu(acvpu[0]), acvpu_at) if acvpu and acvpu_at else None,
            track=load_track(data["track"]) if "track" in data else Track(),
            trigger=None if trigger is None else Trigger(trigger),
            recent=as_inputs([item for item in map(_load_input, data.get("recent", ())) if item is not None]),
            base=None if base is None else self.load(base),
            folded_before=parse_iso_or_none(data.get("folded_before")),
        )


def _dump_input(item: Input) -> dict[str, Any]:
    out: dict[str, Any] = {"time": iso(item.time)}
    if item.values:
        out["values"] = {m.value: v for m, v in item.values.items()}
    if item.on_oxygen is not None:
        out["on_oxygen"] = item.on_oxygen
    if item.acvpu is not None:
        out["acvpu"] = item.acvpu.value
    if item.blind is not None:
        out["blind"] = item.blind.value
    if not item.scored:
        out["scored"] = False
    return out


def _load_input(data: Mapping[str, Any]) -> Input | None:
    when = parse_iso_or_none(data.get("time"))
    if when is None:
        return None
    acvpu = data.get("acvpu")
    blind = data.get("blind")
    on_oxygen = data.get("on_oxygen")
    return Input(
        when,
        values={Metric(k): float(v) for k, v in data.get("values", {}).items()},
        on_oxygen=None if on_oxygen is None else bool(on_oxygen),
        acvpu=None if acvpu is None else Acvpu(acvpu),
        blind=None if blind is None else Metric(blind),
        scored=bool(data.get("scored", True)),
    )


_ACTIONS: Mapping[Trigger, tuple[str, str]] = {
    Trigger.AGGREGATE_7: (
        "NEWS2 guidance: emergency assessment within 30 min, continuous monitoring.",
        "Recommandation NEWS2 : évaluation en urgence sous 30 min, surveillance continue.",
    ),
    Trigger.AGGREGATE_5: (
        "NEWS2 guidance: urgent review within 1 h, observations at least hourly.",
        "Recommandation NEWS2 : avis médical urgent sous 1 h, surveillance au moins horaire.",
    ),
    Trigger.SINGLE_PARAMETER_3: (
        "NEWS2 guidance: urgent ward-based response.",
        "Recommandation NEWS2 : réponse urgente par l'équipe du service.",
    ),
}
