"""The verdicts a vital-sign track keeps for late data, stored in columns: ``JudgedWindow``.

A track's late-data window holds up to an hour of verdicts (3,600 at 1 Hz, and a bed has
seven such tracks). As ``Judged`` objects in a list, each entry cost about 90 bytes and
was one more object for the cyclic collector to walk; here an entry is a pointer to its
measurement time (the sample's own ``datetime``, shared with the other tracks), a verdict
code, a float and a metric code: 18 bytes, and no object of its own. ``Judged`` objects
are made only when an entry is read as one (a late sample's re-judging, a checkpoint's
rows, the tests).

Versions of a window share their columns as ``daemon.frozen.Window`` versions share their
list: appending an entry and dropping a prefix cost O(1), a late insert copies, and a
long dropped prefix is copied away (``_COMPACT_MIN``, ``_COMPACT_RATIO``). Positions are
absolute (the count of entries ever appended to a lineage of columns), so that
``since`` also tells the difference between two versions across such a copy: a
checkpoint then writes only the appended rows, not the whole window again.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, overload

from daemon.events import Metric
from daemon.frozen import Window

# As ``daemon.frozen.Window``: a dropped prefix longer than this and than an eighth of the
# entries kept is copied away.
_COMPACT_MIN = 16
_COMPACT_RATIO = 8


class Verdict(StrEnum):
    """What one sample says about one condition."""

    ABNORMAL = "abnormal"  # beyond the alarm limit
    BAND = "band"  # between the alarm limit and the clearing limit (hysteresis)
    NORMAL = "normal"  # beyond the clearing limit


@dataclass(frozen=True, slots=True)
class Judged:
    """One sample's verdict kept for re-judging; ``verdict=None`` marks a break (a sentinel).

    ``measure`` is the metric ``value`` is, where a condition reads several (hypotension:
    systolic or mean arterial pressure); ``None`` in rows saved before it was kept.
    """

    time: datetime
    verdict: Verdict | None
    value: float
    measure: Metric | None = None


# Codes of the columns: 0 is ``None`` (a break; no measure).
VERDICTS: tuple[Verdict | None, ...] = (None, *Verdict)
VERDICT_CODE: dict[Verdict | None, int] = {v: i for i, v in enumerate(VERDICTS)}
MEASURES: tuple[Metric | None, ...] = (None, *Metric)
MEASURE_CODE: dict[Metric | None, int] = {m: i for i, m in enumerate(MEASURES)}

_lineages = itertools.count()


class Columns:
    """The shared, append-only storage of a lineage of window versions.

    ``origin`` is the absolute position of the first entry held; ``lineage`` names the
    history of appends the positions count (kept by a compacting copy, new for any other
    copy). ``sealed`` columns take no more appends in place: a copy made from them took
    over their lineage, and an append here would give one position two entries.
    """

    __slots__ = ("lineage", "measures", "origin", "sealed", "times", "values", "verdicts")

    times: list[datetime]
    verdicts: bytearray
    values: array[float]
    measures: bytearray
    origin: int
    lineage: int
    sealed: bool

    def __init__(self, origin: int = 0, lineage: int | None = None) -> None:
        """Empty columns whose first entry will be at ``origin``."""
        self.times = []
        self.verdicts = bytearray()
        self.values = array("d")
        self.measures = bytearray()
        self.origin = origin
        self.lineage = next(_lineages) if lineage is None else lineage
        self.sealed = False

    def end(self) -> int:
        """The absolute position after the last entry held."""
        return self.origin + len(self.times)

    def append(self, time: datetime, verdict: int, value: float, measure: int) -> None:
        """Add one entry (codes) at the end."""
        self.times.append(time)
        self.verdicts.append(verdict)
        self.values.append(value)
        self.measures.append(measure)

    def copy(self, lo: int, hi: int, *, keep_lineage: bool) -> Columns:
        """Entries ``[lo, hi)`` (absolute) in new columns; a compaction keeps the lineage
        and positions, and seals these columns."""
        a, b = lo - self.origin, hi - self.origin
        new = Columns(lo if keep_lineage else 0, self.lineage if keep_lineage else None)
        new.times = self.times[a:b]
        new.verdicts = self.verdicts[a:b]
        new.values = self.values[a:b]
        new.measures = self.measures[a:b]
        if keep_lineage:
            self.sealed = True
        return new


def _judged(cols: Columns, at: int) -> Judged:
    i = at - cols.origin
    return Judged(cols.times[i], VERDICTS[cols.verdicts[i]], cols.values[i], MEASURES[cols.measures[i]])


class JudgedWindow(Sequence[Judged]):
    """An immutable window of verdicts in columns, read as a sequence of ``Judged``.

    A view ``[start, stop)`` (absolute positions) of ``Columns`` that only grow at their
    end: ``appended`` adds in place only when the view ends at the columns' end, as
    ``daemon.frozen.Window`` does. It compares equal to the tuple of its entries, and
    hashes as it.
    """

    __slots__ = ("_cols", "_start", "_stop")

    _cols: Columns
    _start: int
    _stop: int

    def __init__(self, entries: Iterable[Judged] = ()) -> None:
        """A window of ``entries``, in order."""
        cols = Columns()
        for e in entries:
            cols.append(e.time, VERDICT_CODE[e.verdict], e.value, MEASURE_CODE[e.measure])
        self._cols, self._start, self._stop = cols, 0, len(cols.times)

    @classmethod
    def _view(cls, cols: Columns, start: int, stop: int) -> JudgedWindow:
        new: JudgedWindow = object.__new__(cls)
        new._cols = cols
        new._start = start
        new._stop = stop
        return new

    def appended_codes(self, time: datetime, verdict: int, value: float, measure: int) -> JudgedWindow:
        """This window with one entry (codes, see ``VERDICTS`` and ``MEASURES``) after its last."""
        cols, start, stop = self._cols, self._start, self._stop
        if stop == cols.origin + len(cols.times) and stop > start and not cols.sealed:
            cols.append(time, verdict, value, measure)
            return JudgedWindow._view(cols, start, stop + 1)
        copy = cols.copy(start, stop, keep_lineage=False)
        copy.append(time, verdict, value, measure)
        return JudgedWindow._view(copy, 0, len(copy.times))

    def appended(self, entry: Judged) -> JudgedWindow:
        """This window with ``entry`` after its last entry."""
        return self.appended_codes(
            entry.time, VERDICT_CODE[entry.verdict], entry.value, MEASURE_CODE[entry.measure]
        )

    def inserted(self, at: int, entry: Judged) -> JudgedWindow:
        """This window with ``entry`` inserted before its entry at index ``at`` (a copy)."""
        entries = list(self)
        entries.insert(at, entry)
        return JudgedWindow(entries)

    def since(self, older: JudgedWindow) -> tuple[int, JudgedWindow] | None:
        """When this window is ``older`` with a prefix dropped and entries appended, in one
        lineage of columns: how many entries it dropped, and the entries appended. ``None``
        when it cannot tell so (a late insert, or an append to an older version, came between)."""
        cols = self._cols
        if cols.lineage != older._cols.lineage or not (
            older._start <= self._start <= older._stop <= self._stop
        ):
            return None
        return self._start - older._start, JudgedWindow._view(cols, older._stop, self._stop)

    def last_time(self) -> datetime | None:
        """The time of the last entry, or ``None`` when there is none."""
        if self._stop == self._start:
            return None
        cols = self._cols
        return cols.times[self._stop - 1 - cols.origin]

    def split_before(self, time: datetime) -> tuple[JudgedWindow, JudgedWindow]:
        """The leading entries whose time is before ``time``, and the window without them."""
        cols, start, stop = self._cols, self._start, self._stop
        times, origin = cols.times, cols.origin
        at = start
        while at < stop and times[at - origin] < time:
            at += 1
        if at == start:
            return EMPTY_JUDGED, self
        return JudgedWindow._view(cols, start, at), self._slice(at, stop)

    def columns(self) -> tuple[Columns, int, int]:
        """The columns and the indices ``[lo, hi)`` into them of this window's entries (to
        read them without making ``Judged`` objects)."""
        origin = self._cols.origin
        return self._cols, self._start - origin, self._stop - origin

    def _slice(self, lo: int, hi: int) -> JudgedWindow:
        """Entries ``[lo, hi)`` (absolute, ``lo <= hi``), copied away from a long dead prefix."""
        cols = self._cols
        dead = lo - cols.origin
        if dead > _COMPACT_MIN and dead > (hi - lo) // _COMPACT_RATIO:
            # Only the newest version may move the lineage on: an older one copies apart.
            newest = hi == cols.end() and not cols.sealed
            copy = cols.copy(lo, hi, keep_lineage=newest)
            return JudgedWindow._view(copy, copy.origin, copy.end())
        return JudgedWindow._view(cols, lo, hi)

    def __len__(self) -> int:
        return self._stop - self._start

    @overload
    def __getitem__(self, index: int) -> Judged: ...

    @overload
    def __getitem__(self, index: slice) -> JudgedWindow: ...

    def __getitem__(self, index: int | slice) -> Judged | JudgedWindow:
        if isinstance(index, slice):
            first, last, step = index.indices(self._stop - self._start)
            if step != 1:
                return JudgedWindow(tuple(self)[index])
            lo = self._start + first
            return self._slice(lo, max(lo, self._start + last))
        size = self._stop - self._start
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError("window index out of range")
        return _judged(self._cols, self._start + index)

    def __iter__(self) -> Iterator[Judged]:
        cols = self._cols
        return (_judged(cols, at) for at in range(self._start, self._stop))

    def __reversed__(self) -> Iterator[Judged]:
        cols = self._cols
        return (_judged(cols, at) for at in range(self._stop - 1, self._start - 1, -1))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JudgedWindow | Window | tuple):
            return len(self) == len(other) and tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"JudgedWindow({tuple(self)!r})"


EMPTY_JUDGED = JudgedWindow()
"""The empty window (shared: appending to it starts columns of their own)."""


def as_judged(entries: Sequence[Any]) -> JudgedWindow:
    """``entries`` (``Judged``) as a ``JudgedWindow``: itself when it is one, else a copy."""
    if type(entries) is JudgedWindow:
        return entries
    return JudgedWindow(entries) if entries else EMPTY_JUDGED
