"""Vital-sign rules for one bed: fever, hypotension, hypoxia, tachycardia, tachypnoea.

Every physiological condition goes through the same noise control, on the
measurements' own timestamps (``VitalThresholds`` holds the numbers):

- onset: ``confirm_samples`` consecutive abnormal samples, the first one at least
  ``<condition>_delay_s`` before the last. One implausible-but-possible value (a
  45 °C spike between two normal readings) therefore never alarms: the next normal
  sample ends the run. A probe-off sentinel ends the run too.
- clearing: values beyond the limit plus the hysteresis for ``<condition>_clear_s``.
  A value inside the hysteresis band neither clears nor counts towards an onset, so
  a temperature hovering around 38.0 °C does not make the alarm flap.
- late data (a buffering monitor, a gateway catching up, an HL7 batch) are judged at
  their own time. Each condition keeps the verdicts of its lateness window
  (``<condition>_late_s``, on the daemon's clock): a sample that arrives after newer
  ones but within the window is inserted in time order and the window is judged
  again (``judge``), so it can complete an onset or a clearing, or break a run. The
  alert carries its true onset (``since`` = the measurement time of the sample that
  completed it), ``details["late_s"]`` and a note in its message. A sample older
  than the window on arrival, in order or not, is stored but not judged;
  ``late_dropped`` names the rules that skip it so that the pipeline can count it
  (``vitals.late_dropped``). A repeated measurement time is ignored.

  Before this, a condition ignored any sample older than the last one it had seen:
  a late fever raised nothing, and neither did its CRS suggestion.

Technical conditions: ``PROBE_OFF`` when the monitor keeps sending a "no value"
sentinel for a metric (``SourceHealth(source="monitor.<metric>", health=LOST,
detail="probe-off")`` from ``daemon.telemetry``), and ``TELEMETRY_STALE`` when a bed
on protocol sends no vitals for ``telemetry_stale_s`` of daemon time (``Tick``).

A sentinel affects only the readings before it (``interrupt``): a late one takes its
place in the window in time order and breaks only the runs before it; a probe-off older
than the newest reading of its metric does not count towards ``PROBE_OFF`` (the probe
is back), and a reading older than a probe-off does not end it. Entries of the same
time keep their arrival order.

When a monitor sends systolic and diastolic pressure without the mean, the mean is
estimated as DBP + (SBP - DBP) / 3 (``map_from_sbp_dbp``; the message says so). The
hypotension track keeps the pressure that is below its limit, the systolic first (the
mean when only the mean is low, or when the monitor sends no systolic: see
``deciding_metric``), with the metric it is: a HYPOTENSION alert
completed by a late sample names that pressure, and every HYPOTENSION alert says it in
``details["measure"]`` (``sbp_mmhg`` or ``map_mmhg``).

The nurses' entries that the CRS and NEWS2 rules read are validated in
``daemon.clinical.observations``; ``daemon.clinical.watch`` puts this family together.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from daemon.clinical.protocols import Schedule
from daemon.clinical.verdicts import (
    EMPTY_JUDGED,
    MEASURE_CODE,
    MEASURES,
    VERDICT_CODE,
    VERDICTS,
    JudgedWindow,
    as_judged,
)
from daemon.clinical.verdicts import Judged as Judged  # noqa: PLC0414 -- re-exported: read here
from daemon.clinical.verdicts import Verdict as Verdict  # noqa: PLC0414 -- re-exported: read here
from daemon.config import BedConfig, VitalThresholds
from daemon.events import (
    AlertCandidate,
    Event,
    Health,
    Kind,
    Metric,
    Observation,
    Priority,
    SourceHealth,
    Text,
    Tick,
    VitalSample,
)
from daemon.frozen import replace, replacer
from daemon.numfmt import fmt
from daemon.rules import IDLE_FOREVER, idle_before
from daemon.timefmt import iso, iso_or_none, parse_iso, parse_iso_or_none


class Condition(StrEnum):
    """Conditions raised by the vital-sign rule."""

    FEVER = "FEVER"
    HYPOTENSION = "HYPOTENSION"
    HYPOXIA = "HYPOXIA"
    TACHYCARDIA = "TACHYCARDIA"
    TACHYPNOEA = "TACHYPNOEA"
    PROBE_OFF = "PROBE_OFF"
    TELEMETRY_STALE = "TELEMETRY_STALE"


PHYSIOLOGICAL: tuple[Condition, ...] = (
    Condition.FEVER,
    Condition.HYPOTENSION,
    Condition.HYPOXIA,
    Condition.TACHYCARDIA,
    Condition.TACHYPNOEA,
)

# IEC 60601-1-8 priorities (domain.md section 4). Low blood pressure and low
# saturation can cause irreversible organ injury within minutes: high. Fever and a
# fast pulse or breathing call for a prompt review of a reversible state: medium.
PRIORITY: Mapping[Condition, Priority] = {
    Condition.FEVER: Priority.MEDIUM,
    Condition.HYPOTENSION: Priority.HIGH,
    Condition.HYPOXIA: Priority.HIGH,
    Condition.TACHYCARDIA: Priority.MEDIUM,
    Condition.TACHYPNOEA: Priority.MEDIUM,
    # A blind parameter or a silent monitor hides the conditions above: prompt.
    Condition.PROBE_OFF: Priority.MEDIUM,
    Condition.TELEMETRY_STALE: Priority.MEDIUM,
}

# Which metrics feed which condition (a probe-off on one ends that condition's run).
METRICS: Mapping[Condition, frozenset[Metric]] = {
    Condition.FEVER: frozenset({Metric.TEMP_C}),
    Condition.HYPOTENSION: frozenset({Metric.SBP_MMHG, Metric.DBP_MMHG, Metric.MAP_MMHG}),
    Condition.HYPOXIA: frozenset({Metric.SPO2_PCT}),
    Condition.TACHYCARDIA: frozenset({Metric.HR_PER_MIN}),
    Condition.TACHYPNOEA: frozenset({Metric.RR_PER_MIN}),
}

PROBE_SOURCE_PREFIX = "monitor."
"""``SourceHealth.source`` of a per-metric probe signal: ``monitor.<metric>``."""


class Transition(StrEnum):
    """A change of a tracked condition."""

    RAISED = "raised"
    CLEARED = "cleared"


@dataclass(frozen=True, slots=True)
class Noise:
    """Noise control for one condition, in seconds of measurement time."""

    delay_s: float
    clear_s: float
    confirm_samples: int
    late_s: float = float("inf")  # samples older than this on arrival are not judged


class Track(NamedTuple):
    """Onset and clearing progress of one condition (immutable).

    ``recent`` keeps the verdicts of the lateness window and ``base`` the track as it
    stood before the first of them, so that a late sample can be inserted in time
    order and the window judged again (``judge``).

    A named tuple, not a frozen dataclass: a track is copied several times a message
    (``daemon.frozen.replacer``), and a tuple is made in one call where a frozen
    dataclass's slots are set one call each (about half the instructions of a copy).
    """

    active: bool = False
    run_start: datetime | None = None  # first sample of the current abnormal run
    run_count: int = 0
    normal_since: datetime | None = None  # first sample of the current normal run
    last_time: datetime | None = None
    value: float | None = None  # the latest value that decided a verdict
    measure: Metric | None = None  # the metric ``value`` is (see ``Judged``)
    # The latest value beyond the limit, and its metric: what an alert that stays raised
    # quotes when the latest value is a normal one (see ``interrupt``).
    abnormal_value: float | None = None
    abnormal_measure: Metric | None = None
    recent: Sequence[Judged] = EMPTY_JUDGED  # a ``JudgedWindow`` (a tuple is taken too)
    base: Track | None = None
    # The verdicts older than this have left the window: ``judge`` folds them into the
    # base in batches (``FOLD_SLACK``), so ``recent`` may still hold some; ``None``: none.
    folded_before: datetime | None = None

    def broken(self) -> Track:
        """This track with its abnormal run ended (a sentinel interrupted the series)."""
        return _copy_track(self, run_start=None, run_count=0, normal_since=None)


_copy_track = replacer(Track)  # ``replace`` for tracks: several copies a message

EMPTY_TRACK = Track()
"""The track before any sample: every rule's initial tracks are this one object, so that
a rule that reads another's tracks (``daemon.clinical.crs``) starts out sharing them."""


def in_order(track: Track, time: datetime) -> bool:
    """Whether a sample at ``time`` is newer than every sample and sentinel ``track`` holds:
    ``judge`` then advances the track in order, and returns no late change."""
    return _in_order(track, as_judged(track.recent).last_time(), time)


def _in_order(track: Track, newest: datetime | None, time: datetime) -> bool:
    """``in_order``, given the time of the newest entry of ``track``'s window (``judge`` has it)."""
    return (track.last_time is None or time > track.last_time) and (newest is None or time >= newest)


def advance(
    track: Track,
    verdict: Verdict,
    time: datetime,
    value: float,
    noise: Noise,
    *,
    measure: Metric | None = None,
) -> tuple[Track, Transition | None]:
    """Feed one sample's verdict to a track; return the new track and any transition.

    ``measure`` is the metric ``value`` is (kept with it, see ``Judged``).
    """
    if track.last_time is not None and time <= track.last_time:
        return track, None  # repeated sample (``judge`` inserts late ones in order)
    return _advanced(
        track,
        verdict,
        time,
        value,
        noise,
        measure=measure,
        recent=track.recent,
        base=track.base,
        folded_before=track.folded_before,
    )


def _advanced(
    track: Track,
    verdict: Verdict,
    time: datetime,
    value: float,
    noise: Noise,
    *,
    measure: Metric | None,
    recent: Sequence[Judged],
    base: Track | None,
    folded_before: datetime | None,
) -> tuple[Track, Transition | None]:
    """``advance`` for a sample newer than the track's last, the new track holding the
    window ``recent``, ``base`` and ``folded_before`` (one copy of the track, not one for each)."""
    if verdict is Verdict.ABNORMAL:
        start = track.run_start or time
        new = _copy_track(
            track,
            run_start=start,
            run_count=track.run_count + 1,
            normal_since=None,
            last_time=time,
            value=value,
            measure=measure,
            abnormal_value=value,
            abnormal_measure=measure,
            recent=recent,
            base=base,
            folded_before=folded_before,
        )
        if (
            not track.active
            and new.run_count >= noise.confirm_samples
            and (time - start).total_seconds() >= noise.delay_s
        ):
            return _copy_track(new, active=True), Transition.RAISED
        return new, None
    if verdict is Verdict.BAND:
        return _copy_track(
            track,
            run_start=None,
            run_count=0,
            normal_since=None,
            last_time=time,
            value=value,
            measure=measure,
            recent=recent,
            base=base,
            folded_before=folded_before,
        ), None
    since = track.normal_since or time
    new = _copy_track(
        track,
        run_start=None,
        run_count=0,
        normal_since=since,
        last_time=time,
        value=value,
        measure=measure,
        recent=recent,
        base=base,
        folded_before=folded_before,
    )
    if track.active and (time - since).total_seconds() >= noise.clear_s:
        return _copy_track(new, active=False, normal_since=None), Transition.CLEARED
    return new, None


_MAX_WINDOW_S = 7 * 86_400.0  # an infinite window (the default of ``Noise``) keeps a week

# The in-order path folds the verdicts that left the window into its base in batches:
# only once the oldest has been out of it this long, so that most samples fold nothing
# and a quiet run folds in one copy (``_quiet_run``). A late sample or sentinel first
# folds all that has left (``folded``), so that the batches change no decision.
# At 1 Hz it keeps up to 60 more verdicts a track (about 1 KiB).
FOLD_SLACK = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Change:
    """A transition of a track, at the measurement time of the sample that made it.

    ``late_s`` is set when a late sample made it (see ``judge``): how old that
    measurement time was on the daemon's clock when the late sample arrived.
    """

    transition: Transition
    time: datetime
    value: float
    late_s: float | None = None
    measure: Metric | None = None  # the metric ``value`` is (see ``Judged``)


def _fold(base: Track, recent: Sequence[Judged], noise: Noise) -> tuple[Track, list[Change]]:
    """``base`` after the entries of ``recent``, and the transitions they make.

    A base holds no window of its own (``recent`` empty, ``base`` None): it is made from
    a track without them (``judge``), and folding keeps them so.
    """
    cols, lo, hi = as_judged(recent).columns()
    return _fold_rows(base, cols.data, lo, hi, noise)


def _fold_rows(base: Track, data: list[Any], lo: int, hi: int, noise: Noise) -> tuple[Track, list[Change]]:
    """``_fold`` of rows ``[lo, hi)`` of a ``JudgedWindow``'s columns (``data``), read from
    the columns: no ``Judged`` made for the entries that leave a window. What ``advance``
    gives row by row; a run of normal and in-band rows on an inactive track is one copy."""
    track = base
    changes: list[Change] = []
    times, verdicts, values, measures = data
    i = lo
    while i < hi:
        if not track.active:
            track, i = _quiet_run(track, data, i, hi)
            if i == hi:
                break
        code = verdicts[i]
        if code == 0:
            track = track.broken()
        else:
            time, value, measure = times[i], values[i], MEASURES[measures[i]]
            track, transition = advance(track, VERDICTS[code], time, value, noise, measure=measure)
            if transition is not None:
                changes.append(Change(transition, time, value, measure=measure))
        i += 1
    return track, changes


_NORMAL_CODE = VERDICT_CODE[Verdict.NORMAL]
_BAND_CODE = VERDICT_CODE[Verdict.BAND]
_QUIET_CODES = frozenset((_NORMAL_CODE, _BAND_CODE))


def _quiet_run(track: Track, data: list[Any], i: int, hi: int) -> tuple[Track, int]:
    """``track`` (not active) after the normal and in-band rows from row ``i`` on, and the
    index of the first other row (or ``hi``).

    Such rows change no transition on an inactive track, only the run fields and the
    latest value (``_advanced``): the last one's copy is what ``advance`` gives row by row,
    without the copies between. A row no newer than the one before is skipped, as
    ``advance`` skips it."""
    times, verdicts, values, measures = data
    last, since, newest = track.last_time, track.normal_since, -1
    while i < hi:
        code = verdicts[i]
        if code not in _QUIET_CODES:
            break
        time = times[i]
        if last is None or time > last:
            if code == _BAND_CODE:
                since = None
            elif since is None:
                since = time
            last, newest = time, i
        i += 1
    if newest < 0:
        return track, i
    return _copy_track(
        track,
        run_start=None,
        run_count=0,
        normal_since=since,
        last_time=last,
        value=values[newest],
        measure=MEASURES[measures[newest]],
    ), i


def judge(
    track: Track,
    verdict: Verdict,
    time: datetime,
    value: float,
    noise: Noise,
    *,
    now: datetime,
    measure: Metric | None = None,
) -> tuple[Track, list[Change]]:
    """Judge one sample at its own ``time``, whenever it arrives (``now``: daemon clock).

    ``measure`` is the metric ``value`` is (``deciding_metric``); it stays with the value
    in the window, the track and the changes, so that a message names it.

    - A sample more than ``noise.late_s`` older than ``now`` is not judged (the caller stores
      and counts it).
    - A sample newer than the last one judged advances the track as ``advance`` does.
    - An older one (late) is inserted among the verdicts of the window in time order
      and the window is judged again from the track as it stood before it: a late
      sample can complete an onset or a clearing, or break a run. The changes that
      differ from what the window gave before are returned, marked with ``late_s``;
      when the late sample only undoes the last transition, the opposite transition
      is returned at the late sample's time. A repeated time is ignored.
    """
    late_s = noise.late_s
    if (now - time).total_seconds() > late_s:
        return track, []
    window = track.recent
    if type(window) is not JudgedWindow:
        window = as_judged(window)
    # Newer than every sample and every sentinel of the window: judged in order. Nearly
    # every sample, 7 times a message: ``_in_order``, ``_pruned``'s first test and
    # ``latest`` are written out here.
    last, newest = track.last_time, window.last_time()
    if (last is None or time > last) and (newest is None or time >= newest):
        recent = window.appended_codes(time, VERDICT_CODE[verdict], value, MEASURE_CODE[measure])
        first = track.base if track.base is not None else _bare(track)
        cut = now - kept_for(late_s)
        if recent.time_at(0) < cut - FOLD_SLACK:
            first, recent = _pruned(first, recent, cut, noise, slack=FOLD_SLACK)
        folded_before = track.folded_before
        new, transition = _advanced(
            track,
            verdict,
            time,
            value,
            noise,
            measure=measure,
            recent=recent,
            base=first,
            folded_before=cut if folded_before is None or cut > folded_before else folded_before,
        )
        return new, [] if transition is None else [Change(transition, time, value, measure=measure)]
    settled = folded(track, noise)
    base = settled.base
    if base is None or (base.last_time is not None and time <= base.last_time):
        return track, []  # older than anything the window still holds
    if any(item.time == time and item.verdict is not None for item in settled.recent):
        return track, []
    at = next((i for i, item in enumerate(settled.recent) if item.time > time), len(settled.recent))
    recent = as_judged(settled.recent).inserted(at, Judged(time, verdict, value, measure))
    return _rejudge(
        settled, base, recent, Change(Transition.RAISED, time, value, measure=measure), noise, now=now
    )


def _rejudge(
    track: Track, base: Track, recent: JudgedWindow, late: Change, noise: Noise, *, now: datetime
) -> tuple[Track, list[Change]]:
    """``track`` with its window replaced by ``recent`` (one late entry inserted at ``late.time``),
    judged again from ``base``; the changes that differ, marked late.

    When the late entry only undoes the last transition, the opposite one is returned at
    ``late.time`` with ``late``'s value and measure.
    """
    time = late.time
    _, before = _fold(base, track.recent, noise)
    rejudged, after = _fold(base, recent, noise)
    before = [c for c in before if c.time >= time]
    after = [c for c in after if c.time >= time]
    same = 0
    while same < min(len(before), len(after)) and before[same] == after[same]:
        same += 1
    changes = after[same:]
    if not changes and rejudged.active != track.active:
        undone = Transition.RAISED if rejudged.active else Transition.CLEARED
        changes = [replace(late, transition=undone)]
    changes = [replace(c, late_s=(now - c.time).total_seconds()) for c in changes]
    return _prune(rejudged, base, recent, now, noise, folded_before=track.folded_before), changes


def interrupt(track: Track, time: datetime, noise: Noise, *, now: datetime) -> tuple[Track, list[Change]]:
    """A sentinel at ``time`` ends the run of the samples before it; kept in the window so
    that re-judging sees it. Returns the track and the changes it makes (late ones only).

    - Newer than every entry of the window (or at the time of the newest, after it): the
      current run ends; nothing changes until the next sample.
    - Older (late: a monitor or gateway delivered it after newer samples): it takes its
      place in time order, after the entries of its own time, and the window is judged
      again as for a late sample (``judge``), so only the runs before it are broken. When
      that undoes the last transition, the opposite one is returned at the sentinel's time
      with the latest value beyond the limit before it: for an undone onset, the last
      sample of the run it broke; for an undone clearing (raised again: the sentinel broke
      the normal run), the value the alert stands on, not a normal one.
    - Older than anything the window holds: nothing (the samples it would break have been
      judged for good).

    Before, a late sentinel broke the current run, made of samples newer than it.
    """
    window = as_judged(track.recent)
    newest = window.last_time()
    if (track.last_time is None or time >= track.last_time) and (newest is None or time >= newest):
        if track.base is None:
            return track.broken(), []
        return replace(track.broken(), recent=window.appended_codes(time, 0, 0.0, 0)), []
    settled = folded(track, noise)
    base = settled.base
    if base is None or (base.last_time is not None and time < base.last_time):
        return track, []
    at = next((i for i, item in enumerate(settled.recent) if item.time > time), len(settled.recent))
    recent = as_judged(settled.recent).inserted(at, Judged(time, None, 0.0))
    # The latest value beyond the limit before the sentinel: an undone onset's run is all
    # abnormal up to it, and an undone clearing leaves the alert standing on that value.
    last = next((item for item in reversed(settled.recent[:at]) if item.verdict is Verdict.ABNORMAL), None)
    if last is not None:
        value, measure = last.value, last.measure
    elif base.abnormal_value is not None:
        value, measure = base.abnormal_value, base.abnormal_measure
    else:  # a base saved before the latest abnormal value was kept
        value, measure = base.value or 0.0, base.measure
    return _rejudge(
        settled, base, recent, Change(Transition.CLEARED, time, value, measure=measure), noise, now=now
    )


def _prune(
    track: Track,
    base: Track,
    recent: JudgedWindow,
    now: datetime,
    noise: Noise,
    *,
    folded_before: datetime | None,
) -> Track:
    """``track`` keeping the window's verdicts; older ones are folded into the base
    (``folded_before``: what had left the window before)."""
    cut = now - kept_for(noise.late_s)
    base, recent = _pruned(base, recent, cut, noise)
    return replace(track, recent=recent, base=base, folded_before=latest(folded_before, cut))


def folded(track: Track, noise: Noise) -> Track:
    """``track`` with the verdicts that have left its window (``folded_before``) folded into
    its base: the window and base a late sample or sentinel is judged against, whatever
    batches the in-order samples fold in (itself when there are none)."""
    if track.base is None or track.folded_before is None:
        return track
    base, recent = _pruned(track.base, as_judged(track.recent), track.folded_before, noise)
    if base is track.base:
        return track
    return replace(track, recent=recent, base=base)


def _pruned(
    base: Track, recent: JudgedWindow, cut: datetime, noise: Noise, *, slack: timedelta = timedelta(0)
) -> tuple[Track, JudgedWindow]:
    """The base and the window once the verdicts older than ``cut`` are folded into the base;
    nothing (the same two) while the oldest is no more than ``slack`` older than ``cut``."""
    oldest = recent.time_at(0) if recent else None
    if oldest is None or oldest >= cut - slack:
        return base, recent
    split = recent.split_rows(cut)
    if split is None:
        return base, recent
    data, lo, hi, recent = split
    base, _ = _fold_rows(base, data, lo, hi, noise)
    return base, recent


def latest(known: datetime | None, cut: datetime) -> datetime:
    """The later of a track's ``folded_before`` and a new cut (the daemon's clock may step back)."""
    return cut if known is None or cut > known else known


def _bare(track: Track) -> Track:
    """``track`` without a window: the first base of its window."""
    return replace(track, recent=EMPTY_JUDGED, base=None, folded_before=None)


@functools.cache
def kept_for(late_s: float) -> timedelta:
    """How long a late-data window of ``late_s`` keeps its entries (NEWS2's too): at most a week."""
    return timedelta(seconds=min(late_s, _MAX_WINDOW_S))


def noise_for(condition: Condition, th: VitalThresholds) -> Noise:
    """The noise-control settings of one physiological condition."""
    # A match reads only this condition's three fields: start-up makes seven per bed.
    match condition:
        case Condition.FEVER:
            delay_s, clear_s, late_s = th.fever_delay_s, th.fever_clear_s, th.fever_late_s
        case Condition.HYPOTENSION:
            delay_s, clear_s, late_s = th.hypotension_delay_s, th.hypotension_clear_s, th.hypotension_late_s
        case Condition.HYPOXIA:
            delay_s, clear_s, late_s = th.hypoxia_delay_s, th.hypoxia_clear_s, th.hypoxia_late_s
        case Condition.TACHYCARDIA:
            delay_s, clear_s, late_s = th.tachycardia_delay_s, th.tachycardia_clear_s, th.tachycardia_late_s
        case Condition.TACHYPNOEA:
            delay_s, clear_s, late_s = th.tachypnoea_delay_s, th.tachypnoea_clear_s, th.tachypnoea_late_s
        case _:
            raise KeyError(condition)
    return Noise(delay_s, clear_s, th.confirm_samples, late_s)


def late_note(candidate: AlertCandidate, late_s: float | None) -> AlertCandidate:
    """``candidate`` marked as raised from late data: ``details["late_s"]`` and a note.

    ``late_s`` is how old the measurement was on the daemon's clock when it arrived;
    ``candidate.time`` (the alert's ``since``) stays the measurement time.
    """
    if late_s is None:
        return candidate
    minutes = late_s / 60.0
    note = Text(
        f" Late data: measured {fmt(minutes, 0)} min before it arrived.",
        f" Données tardives : mesurées {fmt(minutes, 0)} min avant leur arrivée.",
    )
    message = candidate.message
    if message is not None:
        message = Text(message.en + note.en, message.fr + note.fr)
    return replace(candidate, message=message, details={**candidate.details, "late_s": round(late_s, 3)})


def late_dropped(event: Event, th: VitalThresholds, now: datetime) -> list[str]:
    """The vital-sign rules that will not judge ``event``: it arrived later than their window.

    Rules are pure and count nothing; the pipeline counts these under
    ``vitals.late_dropped`` (labels: ``fever`` ... ``tachypnoea``, ``news2``).
    """
    late_s = (now - event.time).total_seconds()
    shortest_s = min(
        th.fever_late_s,
        th.hypotension_late_s,
        th.hypoxia_late_s,
        th.tachycardia_late_s,
        th.tachypnoea_late_s,
        th.news2_late_s,
    )
    if late_s <= shortest_s:
        return []  # in time for every rule: nearly every input, decided at once
    out: list[str] = []
    if isinstance(event, VitalSample):
        for condition in PHYSIOLOGICAL:
            if METRICS[condition] & event.values.keys() and late_s > noise_for(condition, th).late_s:
                out.append(condition.value.lower())
    news2_input = isinstance(event, VitalSample) or (
        isinstance(event, Observation)
        and (event.acvpu is not None or event.o2_device is not None or event.o2_flow_l_per_min is not None)
    )
    if news2_input and late_s > th.news2_late_s:
        out.append("news2")
    return out


def mean_arterial_pressure(values: Mapping[Metric, float], th: VitalThresholds) -> tuple[float | None, bool]:
    """The MAP in mmHg and whether it was estimated from SBP and DBP."""
    sent = values.get(Metric.MAP_MMHG)
    if sent is not None:
        return sent, False
    sbp, dbp = values.get(Metric.SBP_MMHG), values.get(Metric.DBP_MMHG)
    if th.map_from_sbp_dbp and sbp is not None and dbp is not None and dbp < sbp:
        return dbp + (sbp - dbp) / 3.0, True
    return None, False


def deciding_metric(condition: Condition, values: Mapping[Metric, float], th: VitalThresholds) -> Metric:
    """The metric of the value ``classify`` keeps for ``condition`` from ``values``.

    Hypotension keeps the systolic, unless only the mean arterial pressure (sent or
    estimated) is below its limit, or there is no systolic: an alert must quote the
    pressure that is low, not a normal one beside it.
    """
    if condition is Condition.HYPOTENSION:
        picked = _hypotension(values, th)
        if picked is not None:
            return picked[2]
    return _DECIDING[condition]


def classify_measured(
    condition: Condition, values: Mapping[Metric, float], th: VitalThresholds
) -> tuple[Verdict, float, Metric] | None:
    """``classify`` and ``deciding_metric`` in one pass (the pressures are read once)."""
    if condition is Condition.HYPOTENSION:
        return _hypotension(values, th)
    judged = classify(condition, values, th)
    return None if judged is None else (judged[0], judged[1], _DECIDING[condition])


def _high(value: float, limit: float, hysteresis: float) -> Verdict:
    if value >= limit:
        return Verdict.ABNORMAL
    return Verdict.NORMAL if value < limit - hysteresis else Verdict.BAND


def _low(value: float, limit: float, hysteresis: float) -> Verdict:
    if value < limit:
        return Verdict.ABNORMAL
    return Verdict.NORMAL if value >= limit + hysteresis else Verdict.BAND


_ABNORMAL, _BAND, _NORMAL = Verdict.ABNORMAL, Verdict.BAND, Verdict.NORMAL

# The conditions read from one metric: the metric, whether a high value is abnormal, and
# the names of the ``VitalThresholds`` fields of its limit and hysteresis. ``classify``
# reads them on each call, ``_limits`` once per bed.
_ONE_METRIC: Mapping[Condition, tuple[Metric, bool, str, str]] = {
    Condition.FEVER: (Metric.TEMP_C, True, "fever_c", "fever_hysteresis_c"),
    Condition.HYPOXIA: (Metric.SPO2_PCT, False, "hypoxia_spo2_pct", "hypoxia_hysteresis_pct"),
    Condition.TACHYCARDIA: (Metric.HR_PER_MIN, True, "tachycardia_per_min", "tachycardia_hysteresis_per_min"),
    Condition.TACHYPNOEA: (Metric.RR_PER_MIN, True, "tachypnoea_per_min", "tachypnoea_hysteresis_per_min"),
}

_Limits = tuple[Condition, Metric | None, bool, float, float]


def _limits(th: VitalThresholds) -> tuple[_Limits, ...]:
    """What ``classify`` reads for each physiological condition, in ``PHYSIOLOGICAL``'s
    order: the metric (``None``: hypotension, which reads two), whether a high value is
    abnormal, the limit, and the clearing limit (the limit minus or plus the hysteresis,
    computed as ``_high`` and ``_low`` compute it)."""
    out: list[_Limits] = []
    for condition in PHYSIOLOGICAL:
        one = _ONE_METRIC.get(condition)
        if one is None:
            out.append((condition, None, False, 0.0, 0.0))
            continue
        metric, high, limit_field, hysteresis_field = one
        limit: float = getattr(th, limit_field)
        hysteresis: float = getattr(th, hysteresis_field)
        out.append((condition, metric, high, limit, limit - hysteresis if high else limit + hysteresis))
    return tuple(out)


def classify(
    condition: Condition, values: Mapping[Metric, float], th: VitalThresholds
) -> tuple[Verdict, float] | None:
    """One sample's verdict on a physiological condition and the deciding value.

    ``None`` when the sample carries nothing about that condition.
    """
    if condition is Condition.HYPOTENSION:
        picked = _hypotension(values, th)
        return None if picked is None else picked[:2]
    one = _ONE_METRIC.get(condition)
    if one is None:
        raise ValueError(f"{condition} is not a physiological condition")
    metric, high, limit_field, hysteresis_field = one
    value = values.get(metric)
    if value is None:
        return None
    judged = _high if high else _low
    return judged(value, getattr(th, limit_field), getattr(th, hysteresis_field)), value


def _hypotension(values: Mapping[Metric, float], th: VitalThresholds) -> tuple[Verdict, float, Metric] | None:
    """The verdict, the value kept and its metric (see ``deciding_metric``)."""
    sbp = values.get(Metric.SBP_MMHG)
    map_mmhg, _ = mean_arterial_pressure(values, th)
    sbp_verdict = None if sbp is None else _low(sbp, th.hypotension_sbp_mmhg, th.hypotension_hysteresis_mmhg)
    map_verdict = (
        None if map_mmhg is None else _low(map_mmhg, th.hypotension_map_mmhg, th.hypotension_hysteresis_mmhg)
    )
    verdicts = [v for v in (sbp_verdict, map_verdict) if v is not None]
    if not verdicts:
        return None
    # Either pressure below its limit is hypotension; normal needs both clear of the band.
    if Verdict.ABNORMAL in verdicts:
        verdict = Verdict.ABNORMAL
    elif Verdict.BAND in verdicts:
        verdict = Verdict.BAND
    else:
        verdict = Verdict.NORMAL
    if sbp is not None and (sbp_verdict is Verdict.ABNORMAL or map_verdict is not Verdict.ABNORMAL):
        return verdict, sbp, Metric.SBP_MMHG
    assert map_mmhg is not None
    return verdict, map_mmhg, Metric.MAP_MMHG


def _message(condition: Condition, values: Mapping[Metric, float], th: VitalThresholds) -> Text:
    def both(en: str, fr: str) -> Text:
        return Text(en, fr)

    if condition is Condition.FEVER:
        t = values.get(Metric.TEMP_C, float("nan"))
        return both(
            f"Fever {fmt(t, 1)} °C (limit {fmt(th.fever_c, 1)} °C).",
            f"Fièvre {fmt(t, 1, 'fr')} °C (seuil {fmt(th.fever_c, 1, 'fr')} °C).",
        )
    if condition is Condition.HYPOTENSION:
        sbp = values.get(Metric.SBP_MMHG)
        map_mmhg, estimated = mean_arterial_pressure(values, th)
        en_parts, fr_parts = [], []
        if sbp is not None:
            en_parts.append(f"systolic {fmt(sbp, 0)} mmHg")
            fr_parts.append(f"systolique {fmt(sbp, 0, 'fr')} mmHg")
        if map_mmhg is not None:
            en_parts.append(
                f"mean {fmt(map_mmhg, 0)} mmHg" + (" (estimated from SBP/DBP)" if estimated else "")
            )
            fr_parts.append(
                f"moyenne {fmt(map_mmhg, 0, 'fr')} mmHg" + (" (estimée depuis PAS/PAD)" if estimated else "")
            )
        return both(
            f"Low blood pressure: {', '.join(en_parts)} (limits: systolic "
            f"< {fmt(th.hypotension_sbp_mmhg, 0)}, mean < {fmt(th.hypotension_map_mmhg, 0)} mmHg).",
            f"Pression artérielle basse : {', '.join(fr_parts)} (seuils : systolique "
            f"< {fmt(th.hypotension_sbp_mmhg, 0)}, moyenne < {fmt(th.hypotension_map_mmhg, 0)} mmHg).",
        )
    if condition is Condition.HYPOXIA:
        s = values.get(Metric.SPO2_PCT, float("nan"))
        return both(
            f"Low SpO2 {fmt(s, 0)} % (limit {fmt(th.hypoxia_spo2_pct, 0)} %).",
            f"SpO2 basse {fmt(s, 0)} % (seuil {fmt(th.hypoxia_spo2_pct, 0)} %).",
        )
    if condition is Condition.TACHYCARDIA:
        hr = values.get(Metric.HR_PER_MIN, float("nan"))
        return both(
            f"Fast pulse {fmt(hr, 0)} /min (limit {fmt(th.tachycardia_per_min, 0)} /min).",
            f"Pouls rapide {fmt(hr, 0)} /min (seuil {fmt(th.tachycardia_per_min, 0)} /min).",
        )
    rr = values.get(Metric.RR_PER_MIN, float("nan"))
    return both(
        f"Fast breathing {fmt(rr, 0)} /min (limit {fmt(th.tachypnoea_per_min, 0)} /min).",
        f"Respiration rapide {fmt(rr, 0)} /min (seuil {fmt(th.tachypnoea_per_min, 0)} /min).",
    )


_CLEARED: Mapping[Condition, Text] = {
    Condition.FEVER: Text("Temperature back to normal.", "Température revenue à la normale."),
    Condition.HYPOTENSION: Text(
        "Blood pressure back to normal.", "Pression artérielle revenue à la normale."
    ),
    Condition.HYPOXIA: Text("SpO2 back to normal.", "SpO2 revenue à la normale."),
    Condition.TACHYCARDIA: Text("Pulse back to normal.", "Pouls revenu à la normale."),
    Condition.TACHYPNOEA: Text(
        "Breathing rate back to normal.", "Fréquence respiratoire revenue à la normale."
    ),
}

# The metric whose value a track keeps for each condition (hypotension: systolic first,
# see ``deciding_metric``; also the metric of a window row saved without its measure).
_DECIDING: Mapping[Condition, Metric] = {
    Condition.FEVER: Metric.TEMP_C,
    Condition.HYPOTENSION: Metric.SBP_MMHG,
    Condition.HYPOXIA: Metric.SPO2_PCT,
    Condition.TACHYCARDIA: Metric.HR_PER_MIN,
    Condition.TACHYPNOEA: Metric.RR_PER_MIN,
}

_UNITS: Mapping[Condition, str] = {
    Condition.FEVER: "Cel",
    Condition.HYPOTENSION: "mm[Hg]",
    Condition.HYPOXIA: "%",
    Condition.TACHYCARDIA: "/min",
    Condition.TACHYPNOEA: "/min",
}


def probe_metric(event: SourceHealth) -> Metric | None:
    """The metric a ``monitor.<metric>`` health event is about, else ``None``."""
    if not event.source.startswith(PROBE_SOURCE_PREFIX):
        return None
    try:
        return Metric(event.source.removeprefix(PROBE_SOURCE_PREFIX))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class VitalsState:
    """Everything the vital-sign rule remembers about one bed."""

    tracks: Mapping[Condition, Track]
    probe_off_since: Mapping[Metric, datetime]  # first sentinel of each blind metric
    probe_off_alerted: tuple[Metric, ...] = ()  # the metrics PROBE_OFF currently names
    last_vitals_at: datetime | None = None  # daemon time of the last sample received
    watch_since: datetime | None = None  # first daemon tick with the bed on protocol
    stale: bool = False
    # Measurement time of the newest reading of each metric: a probe-off older than it is
    # out of date (the probe is back), and only a reading newer than a probe-off ends it.
    seen_at: Mapping[Metric, datetime] = field(default_factory=dict)


_copy_vitals = replacer(VitalsState)  # ``replace`` for the state: once a message


def dump_track(track: Track) -> dict[str, Any]:
    """A track as JSON-compatible data."""
    return {
        "active": track.active,
        "run_start": iso_or_none(track.run_start),
        "run_count": track.run_count,
        "normal_since": iso_or_none(track.normal_since),
        "last_time": iso_or_none(track.last_time),
        "value": track.value,
        "measure": None if track.measure is None else track.measure.value,
        "abnormal_value": track.abnormal_value,
        "abnormal_measure": None if track.abnormal_measure is None else track.abnormal_measure.value,
        "recent": [dump_judged(item) for item in track.recent],
        "base": None if track.base is None else dump_track(track.base),
        "folded_before": iso_or_none(track.folded_before),
    }


def dump_judged(item: Judged) -> list[Any]:
    """One verdict of a window as JSON-compatible data: ``[time, verdict, value]``, plus
    the measure when there is one."""
    out = [iso(item.time), None if item.verdict is None else item.verdict.value, item.value]
    if item.measure is not None:
        out.append(item.measure.value)
    return out


_VERDICT_DATA = tuple(None if v is None else v.value for v in VERDICTS)
_MEASURE_DATA = tuple(None if m is None else m.value for m in MEASURES)


def dump_judged_entries(entries: Sequence[Judged]) -> list[list[Any]]:
    """``[dump_judged(item) for item in entries]``, read from a ``JudgedWindow``'s
    columns without making the verdicts (``daemon.rules.DumpsEntries``)."""
    if type(entries) is not JudgedWindow:
        return [dump_judged(item) for item in entries]
    cols, lo, hi = entries.columns()
    times, verdicts, values, measures = cols.data
    out: list[list[Any]] = []
    for i in range(lo, hi):
        row = [iso(times[i]), _VERDICT_DATA[verdicts[i]], values[i]]
        if measures[i]:
            row.append(_MEASURE_DATA[measures[i]])
        out.append(row)
    return out


def load_judged(data: Sequence[Any]) -> Judged:
    """A verdict from ``dump_judged``'s output (rows without a measure load too)."""
    when, verdict, value, *measure = data
    return Judged(
        parse_iso(when),
        None if verdict is None else Verdict(verdict),
        float(value),
        Metric(measure[0]) if measure and measure[0] is not None else None,
    )


def load_track(data: Mapping[str, Any]) -> Track:
    """A track from ``dump_track``'s output (a state written before ``recent``,
    ``abnormal_value`` or ``folded_before`` existed loads too)."""
    value = data.get("value")
    measure = data.get("measure")
    abnormal_value = data.get("abnormal_value")
    abnormal_measure = data.get("abnormal_measure")
    recent = [load_judged(item) for item in data.get("recent", ()) if item[0] is not None]
    base = data.get("base")
    return Track(
        active=bool(data["active"]),
        run_start=parse_iso_or_none(data.get("run_start")),
        run_count=int(data.get("run_count", 0)),
        normal_since=parse_iso_or_none(data.get("normal_since")),
        last_time=parse_iso_or_none(data.get("last_time")),
        value=None if value is None else float(value),
        measure=None if measure is None else Metric(measure),
        abnormal_value=None if abnormal_value is None else float(abnormal_value),
        abnormal_measure=None if abnormal_measure is None else Metric(abnormal_measure),
        recent=as_judged(recent),
        base=None if base is None else load_track(base),
        folded_before=parse_iso_or_none(data.get("folded_before")),
    )


class VitalsRule:
    """FEVER, HYPOTENSION, HYPOXIA, TACHYCARDIA, TACHYPNOEA, PROBE_OFF, TELEMETRY_STALE."""

    consumes = (VitalSample, SourceHealth, Tick)
    """The events this rule reads (``daemon.rules.Rule``); it ignores every other."""

    name = "vitals"

    def __init__(self, thresholds: VitalThresholds, bed: BedConfig, schedule: Schedule) -> None:
        """Watch ``bed`` with ``thresholds`` (the bed's overrides already applied).

        ``schedule`` says when the bed is on protocol (staleness is judged only then).
        """
        self.th = thresholds
        self.bed = bed
        self.schedule = schedule
        self._noise = {c: noise_for(c, thresholds) for c in PHYSIOLOGICAL}
        self._stale_after = timedelta(seconds=thresholds.telemetry_stale_s)
        self._limits = _limits(thresholds)

    def initial(self) -> VitalsState:
        """No sample seen."""
        return VitalsState(tracks=dict.fromkeys(PHYSIOLOGICAL, EMPTY_TRACK), probe_off_since={})

    def step(
        self, state: VitalsState, event: Event, now: datetime
    ) -> tuple[VitalsState, Sequence[AlertCandidate]]:
        """Consume one event (samples on their own time, ticks on the daemon's)."""
        if isinstance(event, VitalSample):
            return self._sample(state, event, now)
        if isinstance(event, SourceHealth):
            return self._health(state, event, now)
        if isinstance(event, Tick):
            return self._tick(state, event.time)
        return state, ()

    def _candidate(
        self,
        condition: Condition,
        time: datetime,
        *,
        present: bool,
        value: float | None = None,
        unit: str | None = None,
        message: Text | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AlertCandidate:
        technical = condition in (Condition.PROBE_OFF, Condition.TELEMETRY_STALE)
        return AlertCandidate(
            condition=condition.value,
            ward=self.bed.ward,
            bed=self.bed.id,
            time=time,
            present=present,
            kind=Kind.TECHNICAL if technical else Kind.PHYSIOLOGICAL,
            priority=PRIORITY[condition],
            value=value,
            unit=unit,
            message=message,
            details=details or {},
        )

    def _sample(
        self, state: VitalsState, event: VitalSample, now: datetime
    ) -> tuple[VitalsState, list[AlertCandidate]]:
        out: list[AlertCandidate] = []
        tracks = dict(state.tracks)
        values, noises = event.values, self._noise
        for condition, metric, high, limit, clear in self._limits:
            if metric is None:
                judged = _hypotension(values, self.th)
                if judged is None:
                    continue
                verdict, value, measure = judged
            else:
                # ``classify`` written out for the four conditions of one metric.
                found = values.get(metric)
                if found is None:
                    continue
                value, measure = found, metric
                if high:
                    verdict = _ABNORMAL if value >= limit else _NORMAL if value < clear else _BAND
                else:
                    verdict = _ABNORMAL if value < limit else _NORMAL if value >= clear else _BAND
            tracks[condition], changes = judge(
                tracks[condition], verdict, event.time, value, noises[condition], now=now, measure=measure
            )
            if changes:
                out.extend(self._changed(condition, change, event) for change in changes)
        # A real value for a metric means its probe is back, unless the probe went off after it.
        blind = state.probe_off_since
        if blind:
            blind = {m: t for m, t in blind.items() if m not in event.values or event.time < t}
        seen = dict(state.seen_at)
        for metric in event.values:
            known = seen.get(metric)
            seen[metric] = event.time if known is None else max(known, event.time)
        new = _copy_vitals(state, tracks=tracks, probe_off_since=blind, last_vitals_at=now, seen_at=seen)
        new, probe = self._probe_candidates(new, event.time)
        out.extend(probe)
        if state.stale:
            new = replace(new, stale=False)
            out.append(
                self._candidate(
                    Condition.TELEMETRY_STALE,
                    event.time,
                    present=False,
                    message=Text("Vital signs received again.", "Signes vitaux de nouveau reçus."),
                )
            )
        return new, out

    def _changed(self, condition: Condition, change: Change, event: VitalSample | None) -> AlertCandidate:
        """The alert change of one track transition (``event``: the sample just judged)."""
        # A late entry may make a transition at another sample's time: that sample's
        # value, named by its own measure (mean or systolic pressure).
        measure = change.measure or _DECIDING[condition]
        at_event = event is not None and change.time == event.time
        values = event.values if event is not None and at_event else {measure: change.value}
        raised = change.transition is Transition.RAISED
        # Hypotension reads two pressures: the details say which one the value is.
        details = {"measure": measure.value} if condition is Condition.HYPOTENSION else None
        return late_note(
            self._candidate(
                condition,
                change.time,
                present=raised,
                value=change.value,
                unit=_UNITS[condition],
                message=_message(condition, values, self.th) if raised else _CLEARED[condition],
                details=details,
            ),
            change.late_s,
        )

    def _health(
        self, state: VitalsState, event: SourceHealth, now: datetime
    ) -> tuple[VitalsState, list[AlertCandidate]]:
        metric = probe_metric(event)
        if metric is None:
            return state, []
        blind = dict(state.probe_off_since)
        tracks = dict(state.tracks)
        out: list[AlertCandidate] = []
        if event.health is Health.CONNECTED:
            since = blind.get(metric)
            # A "back" older than the probe-off (delivered late) does not end it.
            if since is not None and event.time >= since:
                del blind[metric]
        else:
            seen = state.seen_at.get(metric)
            if seen is None or seen <= event.time:  # else a newer reading shows the probe back
                known = blind.get(metric)
                blind[metric] = event.time if known is None else min(known, event.time)
            # The sentinel is not a number: it interrupts the series it belongs to.
            for condition, metrics in METRICS.items():
                if metric in metrics:
                    tracks[condition], changes = interrupt(
                        tracks[condition], event.time, self._noise[condition], now=now
                    )
                    out.extend(self._changed(condition, change, None) for change in changes)
        state, probe = self._probe_candidates(
            replace(state, tracks=tracks, probe_off_since=blind), event.time
        )
        return state, [*out, *probe]

    def _probe_candidates(
        self, state: VitalsState, time: datetime
    ) -> tuple[VitalsState, list[AlertCandidate]]:
        if not state.probe_off_since and not state.probe_off_alerted:
            return state, []  # no probe off, none named: nearly every sample
        due = tuple(
            sorted(
                m
                for m, since in state.probe_off_since.items()
                if (time - since).total_seconds() >= self.th.probe_off_delay_s
            )
        )
        # Once named, a metric stays in the alert until its probe is back.
        named = tuple(sorted({*due, *(m for m in state.probe_off_alerted if m in state.probe_off_since)}))
        if named == state.probe_off_alerted:
            return state, []
        new = replace(state, probe_off_alerted=named)
        if not named:
            return new, [
                self._candidate(
                    Condition.PROBE_OFF,
                    time,
                    present=False,
                    message=Text("Probe signal back.", "Signal du capteur revenu."),
                )
            ]
        names = ", ".join(named)
        return new, [
            self._candidate(
                Condition.PROBE_OFF,
                time,
                present=True,
                message=Text(
                    f"No reading from the monitor (probe off?): {names}.",
                    f"Pas de mesure du moniteur (capteur débranché ?) : {names}.",
                ),
                details={"metrics": [m.value for m in named]},
            )
        ]

    def idle_until(self, state: VitalsState, now: datetime) -> datetime | None:
        """Until when a tick changes nothing (``daemon.rules.Idle``): while no probe is off,
        until the protocol starts the watch, then until the vitals have been silent
        ``telemetry_stale_s``; once stale, until a sample."""
        if state.probe_off_since or state.probe_off_alerted:
            return None  # a probe-off matures on ticks too
        if state.watch_since is None:
            return self.schedule.start
        if state.stale:
            return IDLE_FOREVER
        return idle_before((state.last_vitals_at or state.watch_since) + self._stale_after)

    def _tick(self, state: VitalsState, now: datetime) -> tuple[VitalsState, list[AlertCandidate]]:
        out: list[AlertCandidate] = []
        # Probe-off also matures on the daemon's clock: a monitor that went quiet
        # after its sentinel must not hide it.
        state, probe = self._probe_candidates(state, now)
        out.extend(probe)
        if not self.schedule.in_protocol(now):
            return state, out
        if state.watch_since is None:
            state = replace(state, watch_since=now)
        since = state.last_vitals_at or state.watch_since
        assert since is not None
        silent_s = (now - since).total_seconds()
        if not state.stale and silent_s >= self.th.telemetry_stale_s:
            minutes = silent_s / 60.0
            out.append(
                self._candidate(
                    Condition.TELEMETRY_STALE,
                    now,
                    present=True,
                    value=silent_s,
                    unit="s",
                    message=Text(
                        f"No vital signs received from this bed for {fmt(minutes, 0)} min.",
                        f"Aucun signe vital reçu de ce lit depuis {fmt(minutes, 0)} min.",
                    ),
                )
            )
            state = replace(state, stale=True)
        return state, out

    def dump(self, state: VitalsState) -> Mapping[str, Any]:
        """The state as JSON-compatible data."""
        return {
            "tracks": {c.value: dump_track(t) for c, t in state.tracks.items()},
            "probe_off_since": {m.value: iso(t) for m, t in state.probe_off_since.items()},
            "probe_off_alerted": [m.value for m in state.probe_off_alerted],
            "last_vitals_at": iso_or_none(state.last_vitals_at),
            "watch_since": iso_or_none(state.watch_since),
            "stale": state.stale,
            "seen_at": {m.value: iso(t) for m, t in state.seen_at.items()},
        }

    def windows(self, state: VitalsState) -> Mapping[str, Sequence[Judged]]:
        """Each condition's late-data window (``daemon.rules.Windowed``)."""
        return {c.value: state.tracks[c].recent for c in PHYSIOLOGICAL}

    def with_windows(self, state: VitalsState, windows: Mapping[str, Sequence[Any]]) -> VitalsState:
        """``state`` with these conditions' windows replaced."""
        tracks = dict(state.tracks)
        for name, entries in windows.items():
            condition = Condition(name)
            tracks[condition] = replace(tracks[condition], recent=as_judged(entries))
        return replace(state, tracks=tracks)

    def dump_entry(self, window: str, entry: Judged) -> Any:
        """One verdict of a window."""
        return dump_judged(entry)

    def dump_entries(self, window: str, entries: Sequence[Judged]) -> list[Any]:
        """Verdicts of a window (``daemon.rules.DumpsEntries``)."""
        return dump_judged_entries(entries)

    def load_entry(self, window: str, data: Any) -> Judged:
        """A verdict from ``dump_entry``."""
        return load_judged(data)

    def load(self, data: Mapping[str, Any]) -> VitalsState:
        """A state from ``dump``'s output."""
        tracks = {c: Track() for c in PHYSIOLOGICAL}
        for key, value in data.get("tracks", {}).items():
            tracks[Condition(key)] = load_track(value)
        blind: dict[Metric, datetime] = {}
        for key, value in data.get("probe_off_since", {}).items():
            when = parse_iso_or_none(value)
            if when is not None:
                blind[Metric(key)] = when
        seen: dict[Metric, datetime] = {}
        for key, value in data.get("seen_at", {}).items():
            when = parse_iso_or_none(value)
            if when is not None:
                seen[Metric(key)] = when
        return VitalsState(
            tracks=tracks,
            probe_off_since=blind,
            probe_off_alerted=tuple(Metric(m) for m in data.get("probe_off_alerted", ())),
            last_vitals_at=parse_iso_or_none(data.get("last_vitals_at")),
            watch_since=parse_iso_or_none(data.get("watch_since")),
            stale=bool(data.get("stale", False)),
            seen_at=seen,
        )
