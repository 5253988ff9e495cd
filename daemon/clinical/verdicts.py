"""The verdicts a vital-sign track keeps for late data, stored in columns: ``JudgedWindow``.

A track's late-data window holds up to an hour of verdicts (3,600 at 1 Hz, and a bed has
seven such tracks). As ``Judged`` objects in a list, each entry cost about 90 bytes and
was one more object for the cyclic collector to walk; here an entry is a pointer to its
measurement time (the sample's own ``datetime``, shared with the other tracks), a verdict
code, a float and a metric code: 18 bytes, and no object of its own. ``Judged`` objects
are made only when an entry is read as one (a late sample's re-judging, a checkpoint's
rows, the tests).

Versions of a window share their columns as ``daemon.frozen.Window`` versions share their
list (``daemon.frozen.ColumnWindow``).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from daemon.events import Metric
from daemon.frozen import ColumnWindow


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


class JudgedWindow(ColumnWindow[Judged]):
    """A track's window of verdicts: columns of times, verdict codes, values and metric codes."""

    __slots__ = ()

    @staticmethod
    def _new_data() -> list[Any]:
        return [[], bytearray(), array("d"), bytearray()]

    @staticmethod
    def _row(entry: Judged) -> tuple[Any, ...]:
        return entry.time, VERDICT_CODE[entry.verdict], entry.value, MEASURE_CODE[entry.measure]

    @staticmethod
    def _entry(data: list[Any], i: int) -> Judged:
        return Judged(data[0][i], VERDICTS[data[1][i]], data[2][i], MEASURES[data[3][i]])

    def appended_codes(self, time: datetime, verdict: int, value: float, measure: int) -> JudgedWindow:
        """This window with one entry (codes: ``VERDICTS``, ``MEASURES``) after its last:
        ``appended`` without making a ``Judged`` (once per sample and track)."""
        if self._grows_in_place():
            cols, start, stop = self._cols, self._start, self._stop
            times, verdicts, values, measures = cols.data
            times.append(time)
            verdicts.append(verdict)
            values.append(value)
            measures.append(measure)
            return self._view(cols, start, stop + 1)
        return self.appended_row((time, verdict, value, measure))

    def split_rows(self, time: datetime) -> tuple[list[Any], int, int, JudgedWindow] | None:
        """``split_before`` as the columns and the row indices ``[lo, hi)`` of the leading
        entries, with the window without them: nothing made for the entries that leave."""
        at = self._leading_end(time)
        if at == self._start:
            return None
        origin = self._cols.origin
        return self._cols.data, self._start - origin, at - origin, self._slice(at, self._stop)


EMPTY_JUDGED = JudgedWindow()
"""The empty window (shared: appending to it starts columns of their own)."""


def as_judged(entries: Sequence[Any]) -> JudgedWindow:
    """``entries`` (``Judged``) as a ``JudgedWindow``: itself when it is one, else a copy."""
    if type(entries) is JudgedWindow:
        return entries
    return JudgedWindow(entries) if entries else EMPTY_JUDGED
