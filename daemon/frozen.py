"""Immutable values for the rules' states at a fraction of the usual cost: ``replace`` and ``ColumnWindow``.

``replace``: the rules return a new state on nearly every step (about 30 replacements per vitals
message), and ``dataclasses.replace`` looks up and filters the class's fields and
runs ``__init__`` on every call: it was the largest single cost of a message. This
``replace`` copies the fields into a new instance with a function generated once
per class, as ``dataclasses`` itself generates ``__init__``. It accepts the same
changes (``__init__`` fields only) and is meant for classes without ``__post_init__``
(checked when the class is first seen): nothing is validated that the constructor
would have validated. A ``typing.NamedTuple`` (the vital-sign tracks) is copied the same
way, made in one call.

``ColumnWindow``: the late-data windows hold up to an hour of entries (3,600 at 1 Hz), and
a step appends one entry and drops the oldest. As a tuple, every step copied the whole
window; the versions of a ``ColumnWindow`` share their storage, so both cost O(1) (see its
docstring). The entries are kept as rows of columns of plain values (a list of times,
arrays of floats and codes), for the windows of the vital-sign tracks and NEWS2: an hour
of entries as objects made about 2.5 MiB per bed, and one object each for the cyclic
collector to walk.
"""

from __future__ import annotations

import dataclasses
import itertools
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar, overload

T = TypeVar("T")


class _HasTime(Protocol):
    @property
    def time(self) -> datetime: ...


_MISSING = object()
_REPLACERS: dict[type, Callable[..., Any]] = {}


def _replacer(cls: type) -> Callable[..., Any]:
    named_tuple = issubclass(cls, tuple)  # a flag: mypy would narrow ``cls`` to no dataclass
    if named_tuple:
        return _tuple_replacer(cls)
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__; use dataclasses.replace")
    fields = dataclasses.fields(cls)
    init = [f.name for f in fields if f.init]
    params = ", ".join(f"{name}=_MISSING" for name in init)
    lines = [f"def replace(obj, /, {params}):", "    new = _new(_cls)"]
    namespace: dict[str, Any] = {
        "_MISSING": _MISSING,
        "_new": object.__new__,
        "_set": object.__setattr__,
        "_cls": cls,
    }
    for f in fields:
        value = f"obj.{f.name} if {f.name} is _MISSING else {f.name}" if f.init else f"obj.{f.name}"
        slot = _slot(cls, f.name)
        if slot is None:
            lines.append(f"    _set(new, {f.name!r}, {value})")
        else:
            # The slot's own setter: what object.__setattr__ ends up calling, without
            # finding it by name first (2.6 times faster per field).
            namespace[f"_set_{f.name}"] = slot.__set__
            lines.append(f"    _set_{f.name}(new, {value})")
    lines.append("    return new")
    exec("\n".join(lines), namespace)  # noqa: S102 -- source built from the class's own field names
    function: Callable[..., Any] = namespace["replace"]
    _REPLACERS[cls] = function
    return function


def _tuple_replacer(cls: type) -> Callable[..., Any]:
    """``replace`` for a ``typing.NamedTuple``: the new tuple made in one call, a field
    taken from ``obj`` by its index unless changed."""
    names: tuple[str, ...] = getattr(cls, "_fields", ())
    if not names:
        raise TypeError(f"{cls.__name__} is a tuple but not a NamedTuple")
    params = ", ".join(f"{name}=_MISSING" for name in names)
    items = ", ".join(f"obj[{i}] if {name} is _MISSING else {name}" for i, name in enumerate(names))
    source = f"def replace(obj, /, {params}):\n    return _new(_cls, ({items},))"
    namespace: dict[str, Any] = {"_MISSING": _MISSING, "_new": tuple.__new__, "_cls": cls}
    exec(source, namespace)  # noqa: S102 -- source built from the class's own field names
    function: Callable[..., Any] = namespace["replace"]
    _REPLACERS[cls] = function
    return function


def _slot(cls: type, name: str) -> types.MemberDescriptorType | None:
    """The slot that holds attribute ``name`` of ``cls``'s instances, if a slot does."""
    for klass in cls.__mro__:
        if name in vars(klass):
            found = vars(klass)[name]
            return found if isinstance(found, types.MemberDescriptorType) else None
    return None


def replace(obj: T, /, **changes: Any) -> T:
    """A copy of the dataclass instance (or named tuple) ``obj`` with ``changes``, as
    ``dataclasses.replace`` (or ``_replace``)."""
    cls = type(obj)
    function = _REPLACERS.get(cls) or _replacer(cls)
    new: T = function(obj, **changes)
    return new


def replacer(cls: type[T]) -> Callable[..., T]:
    """``replace`` for instances of exactly ``cls``, called directly: for the copies made on
    every message, without ``replace``'s look-up and its second pass over the changes
    (a third of a small copy's cost)."""
    function: Callable[..., T] = _REPLACERS.get(cls) or _replacer(cls)
    return function


# A dropped prefix longer than this and than an eighth of the entries kept is copied away
# (``ColumnWindow._slice``): its rows would otherwise stay alive in the shared columns.
_COMPACT_MIN = 16
_COMPACT_RATIO = 8


_lineages = itertools.count()


class Columns:
    """The shared, append-only storage of a lineage of ``ColumnWindow`` versions: one
    column per field of an entry, the first holding the entries' times.

    ``origin`` is the absolute position of the first entry held; ``lineage`` names the
    history of appends that positions count (kept by a compacting copy, new for any other
    copy). ``sealed`` columns take no more appends in place: a compacting copy took over
    their lineage, and an append here would give one position two entries. ``tag`` is
    for the window's owner (what values derived from the entries were computed under).
    """

    __slots__ = ("data", "lineage", "origin", "sealed", "tag")

    data: list[Any]  # list, array or bytearray: each supports append, slicing and indexing
    origin: int
    lineage: int
    sealed: bool
    tag: object

    def __init__(self, data: list[Any], origin: int = 0, lineage: int | None = None) -> None:
        """Columns ``data`` (of equal length), whose first entry is at ``origin``."""
        self.data = data
        self.origin = origin
        self.lineage = next(_lineages) if lineage is None else lineage
        self.sealed = False
        self.tag = None

    def end(self) -> int:
        """The absolute position after the last entry held."""
        return self.origin + len(self.data[0])

    def copy(self, lo: int, hi: int, *, keep_lineage: bool) -> Columns:
        """Entries ``[lo, hi)`` (absolute) in new columns; a compacting copy keeps the lineage
        and the positions (and seals these columns), any other starts its own."""
        a, b = lo - self.origin, hi - self.origin
        new = Columns(
            [column[a:b] for column in self.data],
            lo if keep_lineage else 0,
            self.lineage if keep_lineage else None,
        )
        new.tag = self.tag
        if keep_lineage:
            self.sealed = True
        return new


Entry = TypeVar("Entry", bound=_HasTime)
SelfWindow = TypeVar("SelfWindow", bound="ColumnWindow[Any]")


class ColumnWindow(Sequence[Entry]):
    """An immutable sequence of timed entries that the versions of a late-data window
    share, kept as rows of ``Columns`` (plain values in lists and arrays) instead of
    objects: a fraction of the memory, and nothing for the cyclic collector to walk. An
    entry is made only when it is read as one.

    A window is a view ``[start, stop)`` of absolute positions in columns that only ever
    grow at their end. Its entries never change: appending goes in place only when the
    view ends at the columns' end (no other view sees past its own ``stop``), and copies
    otherwise; a slice is another view, and a long dropped prefix is copied away, so that
    the rows no window holds can be freed. Another thread may read a window while the
    columns grow: a view never reads past its ``stop``. Since positions are absolute and
    a compacting copy keeps its lineage, ``since`` also tells two versions apart across
    that copy. It compares equal to the tuple of its entries, and hashes as it, so that a
    state holding one compares as a state holding the tuple did.

    A subclass says how an entry becomes a row and back (``_new_data``, ``_row``,
    ``_entry``); the first column holds the entries' times.
    """

    __slots__ = ("_cols", "_start", "_stop")

    _cols: Columns
    _start: int
    _stop: int

    @staticmethod
    def _new_data() -> list[Any]:
        """Empty columns."""
        raise NotImplementedError

    @staticmethod
    def _row(entry: Any) -> tuple[Any, ...]:
        """``entry`` as one value per column."""
        raise NotImplementedError

    @staticmethod
    def _entry(data: list[Any], i: int) -> Any:
        """The entry of row ``i`` (an index into the columns)."""
        raise NotImplementedError

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        """A window of ``entries``, in order (copied into columns)."""
        data = self._new_data()
        for entry in entries:
            for column, value in zip(data, self._row(entry), strict=True):
                column.append(value)
        self._cols, self._start, self._stop = Columns(data), 0, len(data[0])

    def _view(self: SelfWindow, cols: Columns, start: int, stop: int) -> SelfWindow:
        new: SelfWindow = object.__new__(type(self))
        new._cols = cols
        new._start = start
        new._stop = stop
        return new

    def _grows_in_place(self) -> bool:
        """Whether an entry appended to this window can go at its columns' end: it ends
        there, is not empty (the shared empty window's columns stay empty), and no
        compacting copy took the columns' lineage over."""
        cols = self._cols
        return self._stop == cols.origin + len(cols.data[0]) and self._stop > self._start and not cols.sealed

    def appended_row(self: SelfWindow, row: tuple[Any, ...]) -> SelfWindow:
        """This window with one entry, given as its row, after its last entry."""
        cols, start, stop = self._cols, self._start, self._stop
        if self._grows_in_place():
            for column, value in zip(cols.data, row, strict=True):
                column.append(value)
            return self._view(cols, start, stop + 1)
        copy = cols.copy(start, stop, keep_lineage=False)
        for column, value in zip(copy.data, row, strict=True):
            column.append(value)
        return self._view(copy, 0, len(copy.data[0]))

    def appended(self: SelfWindow, entry: Entry) -> SelfWindow:
        """This window with ``entry`` after its last entry."""
        return self.appended_row(self._row(entry))

    def inserted(self: SelfWindow, at: int, entry: Entry) -> SelfWindow:
        """This window with ``entry`` inserted before its entry at index ``at`` (a copy)."""
        entries = list(self)
        entries.insert(at, entry)
        new = type(self)(entries)
        new._cols.tag = self._cols.tag
        return new

    def since(self: SelfWindow, older: SelfWindow) -> tuple[int, SelfWindow] | None:
        """When this window is ``older`` with a prefix dropped and entries appended, in one
        lineage of columns: how many entries it dropped, and the entries appended. ``None``
        when it cannot tell so (a late insert, or an append to an older version, came
        between)."""
        if self._cols.lineage != older._cols.lineage or not (
            older._start <= self._start <= older._stop <= self._stop
        ):
            return None
        return self._start - older._start, self._view(self._cols, older._stop, self._stop)

    def last_time(self) -> datetime | None:
        """The time of the last entry, or ``None`` when there is none."""
        if self._stop == self._start:
            return None
        cols = self._cols
        when: datetime = cols.data[0][self._stop - 1 - cols.origin]
        return when

    def time_at(self, index: int) -> datetime:
        """The time of entry ``index`` (from 0; not negative), read from its column without
        making the entry."""
        if not 0 <= index < self._stop - self._start:
            raise IndexError("window index out of range")
        cols = self._cols
        when: datetime = cols.data[0][self._start + index - cols.origin]
        return when

    def split_before(self: SelfWindow, time: datetime) -> tuple[SelfWindow, SelfWindow] | None:
        """The leading entries whose time is before ``time``, and the window without them;
        ``None`` when there are none (nearly every call: nothing is made then)."""
        at = self._leading_end(time)
        if at == self._start:
            return None
        return self._view(self._cols, self._start, at), self._slice(at, self._stop)

    def _leading_end(self, time: datetime) -> int:
        """The position in the columns after the leading entries whose time is before ``time``."""
        times, origin, stop = self._cols.data[0], self._cols.origin, self._stop
        at = self._start
        while at < stop and times[at - origin] < time:
            at += 1
        return at

    def columns(self) -> tuple[Columns, int, int]:
        """The columns and the indices ``[lo, hi)`` into them of this window's entries (to
        read them without making entries)."""
        origin = self._cols.origin
        return self._cols, self._start - origin, self._stop - origin

    def _slice(self: SelfWindow, lo: int, hi: int) -> SelfWindow:
        """Entries ``[lo, hi)`` (absolute, ``lo <= hi``), copied away from a long dead prefix."""
        cols = self._cols
        dead = lo - cols.origin
        if dead > _COMPACT_MIN and dead > (hi - lo) // _COMPACT_RATIO:
            # Only the newest version carries the lineage on: an older one copies apart.
            newest = hi == cols.end() and not cols.sealed
            copy = cols.copy(lo, hi, keep_lineage=newest)
            return self._view(copy, copy.origin, copy.end())
        return self._view(cols, lo, hi)

    def __len__(self) -> int:
        return self._stop - self._start

    @overload
    def __getitem__(self, index: int) -> Entry: ...

    @overload
    def __getitem__(self: SelfWindow, index: slice) -> SelfWindow: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            first, last, step = index.indices(self._stop - self._start)
            if step != 1:
                new = type(self)(tuple(self)[index])
                new._cols.tag = self._cols.tag
                return new
            lo = self._start + first
            return self._slice(lo, max(lo, self._start + last))
        size = self._stop - self._start
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError("window index out of range")
        return self._entry(self._cols.data, self._start + index - self._cols.origin)

    def __iter__(self) -> Iterator[Entry]:
        data, origin, make = self._cols.data, self._cols.origin, self._entry
        return (make(data, i) for i in range(self._start - origin, self._stop - origin))

    def __reversed__(self) -> Iterator[Entry]:
        data, origin, make = self._cols.data, self._cols.origin, self._entry
        return (make(data, i) for i in range(self._stop - 1 - origin, self._start - 1 - origin, -1))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ColumnWindow | tuple):
            return len(self) == len(other) and tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({tuple(self)!r})"
