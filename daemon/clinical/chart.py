"""The nurses' entries a rule keeps: who recorded what and when, with corrections and withdrawals.

A rule projects each ``Observation`` onto the fields it grades (plain JSON values)
and keeps them as an ``Entry`` with its time, author and ids. The current value of a
field is that of the latest entry (by observation time; on a tie, the later arrival)
that records it. An entry that ``corrects`` an id replaces the entry known by that id
(the replacement is known by both ids, so later entries may name either); one that
``withdraws`` an id removes it, so the previous entry for each of its fields becomes
current again. Naming an id the chart does not hold changes nothing for a withdrawal
and adds the correction as a new entry: a mistyped id never hides an observation.

An entry whose ``id`` the chart already holds is a repeat when it records the same
thing at the same time (ignored), otherwise it is kept without that id (the id keeps
naming the first entry).

Pure data and functions: the CRS and ICANS rules (``daemon.clinical.crs``) hold a ``Chart`` in
their state, and its ``dump``/``load`` form is part of their persisted state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon.events import Observation
from daemon.timefmt import iso, parse_iso_or_none

KEEP_PER_FIELD = 8  # entries kept per field: enough to fall back over a few withdrawals


@dataclass(frozen=True, slots=True)
class Entry:
    """One observation as a rule keeps it."""

    time: datetime  # when it was observed
    by: str | None  # who recorded it (for a correction: who corrected it)
    ids: tuple[str, ...]  # its id, then the ids of the corrections that replaced it
    values: Mapping[str, Any]  # field name -> plain JSON value
    corrects: str | None = None  # the id it replaced, when it is a correction

    def who_when(self) -> dict[str, Any]:
        """``by``, ``time`` and ``id`` (and ``corrects``) for alert details."""
        out: dict[str, Any] = {"by": self.by, "time": iso(self.time)}
        if self.ids:
            out["id"] = self.ids[-1]
        if self.corrects is not None:
            out["corrects"] = self.corrects
        return out


@dataclass(frozen=True, slots=True)
class Chart:
    """The entries a rule keeps for one bed, in arrival order."""

    entries: tuple[Entry, ...] = ()

    def latest(self, name: str) -> Entry | None:
        """The entry that gives ``name`` its current value, or None."""
        best: Entry | None = None
        for entry in self.entries:
            if name in entry.values and (best is None or entry.time >= best.time):
                best = entry
        return best

    def value(self, name: str) -> Any:
        """The current value of ``name``, or None."""
        entry = self.latest(name)
        return None if entry is None else entry.values[name]


def record(chart: Chart, obs: Observation, values: Mapping[str, Any], keep: int = KEEP_PER_FIELD) -> Chart:
    """``chart`` after ``obs``, whose projection onto the rule's fields is ``values``."""
    entries = list(chart.entries)
    ref = obs.withdraws or obs.corrects
    known_as: tuple[str, ...] = ()
    if ref is not None:
        for entry in [e for e in entries if ref in e.ids]:
            entries.remove(entry)
            known_as += tuple(i for i in entry.ids if i not in known_as)
        if obs.withdraws is not None:
            return _pruned(entries, keep)
        if ref not in known_as:
            known_as += (ref,)
    if obs.id is not None:
        twin = next((e for e in entries if obs.id in e.ids), None)
        if twin is not None and twin.time == obs.time and dict(twin.values) == dict(values):
            return chart  # the same entry again
        if twin is None and obs.id not in known_as:
            known_as += (obs.id,)
    if values:
        entries.append(Entry(obs.time, obs.by, known_as, dict(values), obs.corrects))
    return _pruned(entries, keep)


def _pruned(entries: list[Entry], keep: int) -> Chart:
    """The entries still able to give some field its value: the ``keep`` latest per field."""
    kept: set[int] = set()
    names = {name for entry in entries for name in entry.values}
    for name in names:
        holders = [i for i, e in enumerate(entries) if name in e.values]
        holders.sort(key=lambda i: (entries[i].time, i))
        kept.update(holders[-keep:])
    return Chart(tuple(e for i, e in enumerate(entries) if i in kept))


def change_of(obs: Observation) -> dict[str, Any] | None:
    """For alert details: the correction or withdrawal ``obs`` makes, with who and when."""
    if obs.withdraws is not None:
        return {"withdraws": obs.withdraws, "by": obs.by, "time": iso(obs.time)}
    if obs.corrects is not None:
        return {"corrects": obs.corrects, "by": obs.by, "time": iso(obs.time)}
    return None


def dump_chart(chart: Chart) -> list[dict[str, Any]]:
    """The chart as JSON-compatible data."""
    return [
        {
            "time": iso(e.time),
            "by": e.by,
            "ids": list(e.ids),
            "values": {k: list(v) if isinstance(v, tuple) else v for k, v in e.values.items()},
            "corrects": e.corrects,
        }
        for e in chart.entries
    ]


def load_chart(data: Any) -> Chart:
    """A chart from ``dump_chart``'s output (entries without a valid time are dropped)."""
    entries: list[Entry] = []
    for item in data or ():
        time = parse_iso_or_none(item.get("time"))
        if time is None:
            continue
        values = {
            k: tuple(v) if isinstance(v, list) else v for k, v in dict(item.get("values") or {}).items()
        }
        entries.append(
            Entry(time, item.get("by"), tuple(item.get("ids") or ()), values, item.get("corrects"))
        )
    return Chart(tuple(entries))


def legacy_entry(name: str, pair: Any) -> Entry | None:
    """An entry from a state persisted before charts (``[value, time]``, author unknown)."""
    if not pair:
        return None
    time = parse_iso_or_none(pair[1])
    return None if time is None else Entry(time, None, (), {name: pair[0]})
