"""``daemon.frozen``: ``replace`` gives what ``dataclasses.replace`` gives, slots or not; each
``Window`` method keeps its contract at its edges (the versions of one window: ``tests/test_windows.py``)."""

from __future__ import annotations

import dataclasses
import gc
import types
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from daemon import frozen
from daemon.frozen import EMPTY_WINDOW, Window, as_window, last_entry, replace, replacer


@dataclass(frozen=True)
class _Plain:
    a: int
    b: str = "b"


@dataclass(frozen=True, slots=True)
class _Slotted(_Plain):
    c: float = 1.5
    d: tuple[int, ...] = field(default=(), init=False)


@dataclass(frozen=True, slots=True)
class _Deeper(_Slotted):
    e: int | None = None


@pytest.mark.parametrize(
    ("obj", "changes"),
    [
        (_Plain(1), {"b": "x"}),
        (_Slotted(1, "y", 2.5), {"a": 7, "c": 3.5}),
        (_Slotted(1), {}),
        (_Deeper(1, "z", 0.5, 9), {"b": "w", "e": None}),
        (_Deeper(2), {"a": 3, "b": "v", "c": 4.5, "e": 5}),
    ],
)
def test_replace_is_dataclasses_replace(obj: _Plain, changes: dict[str, object]) -> None:
    new = replace(obj, **changes)
    assert replacer(type(obj))(obj, **changes) == new
    assert type(new) is type(obj)
    assert new == dataclasses.replace(obj, **changes)  # type: ignore[arg-type]
    assert new is not obj
    with pytest.raises(dataclasses.FrozenInstanceError):
        new.a = 0  # type: ignore[misc]


def test_a_field_outside_init_is_copied_and_cannot_be_changed() -> None:
    obj = _Slotted(1)
    object.__setattr__(obj, "d", (1, 2))
    assert replace(obj, a=2).d == (1, 2)
    with pytest.raises(TypeError):
        replace(obj, d=(3,))


@dataclass(frozen=True)
class _Checked:
    a: int

    def __post_init__(self) -> None:
        if self.a < 0:
            raise ValueError("negative")


def test_a_class_that_validates_in_post_init_is_refused() -> None:
    """Copying it without ``__init__`` would skip its checks: it is refused, by name."""
    with pytest.raises(TypeError, match=r"^_Checked has __post_init__; use dataclasses\.replace$"):
        replace(_Checked(1), a=-1)
    with pytest.raises(TypeError, match=r"^_Checked has __post_init__"):
        replacer(_Checked)


@dataclass(frozen=True, slots=True)
class _Once:
    a: int = 0


def test_the_copy_function_is_generated_once_per_class(monkeypatch: pytest.MonkeyPatch) -> None:
    first = replacer(_Once)
    assert replacer(_Once) is first
    assert replace(_Once(1), a=2) == _Once(2)

    def generate_again(cls: type) -> object:
        raise AssertionError(f"{cls.__name__}'s copy function generated a second time")

    monkeypatch.setattr(frozen, "_replacer", generate_again)
    assert replace(_Once(3), a=4) == _Once(4)
    assert replacer(_Once) is first


def test_a_slotted_field_is_found_in_the_class_that_declares_it() -> None:
    """Each slotted dataclass declares its own fields' slots; a plain dataclass has none,
    even where its class holds the field's default."""
    for cls, name, owner in [(_Slotted, "c", _Slotted), (_Deeper, "c", _Slotted), (_Deeper, "e", _Deeper)]:
        slot = frozen._slot(cls, name)
        assert slot is vars(owner)[name], (cls, name)
        assert isinstance(slot, types.MemberDescriptorType)
    assert vars(_Plain)["b"] == "b"
    assert frozen._slot(_Plain, "b") is None
    assert frozen._slot(_Plain, "a") is None


# --- Window: the contract of each method, at its edges ---------------------------------------------

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class _At:
    time: datetime


def _at(*minutes: int) -> list[_At]:
    return [_At(START + timedelta(minutes=m)) for m in minutes]


def test_a_window_is_a_copy_of_the_entries_it_is_made_from() -> None:
    source = [1, 2]
    window = Window(source)
    source.append(3)
    assert window == (1, 2)
    assert repr(window) == "Window((1, 2))"
    assert repr(EMPTY_WINDOW) == "Window(())"
    assert isinstance(as_window((1, 2)), Window)


def test_the_last_entry_of_a_window_or_a_tuple() -> None:
    window = Window([1, 2, 3])
    assert [last_entry(w) for w in (window, window[:1], window[1:1], EMPTY_WINDOW)] == [3, 1, None, None]
    assert [last_entry(t) for t in ((1, 2, 3), (5,), ())] == [3, 5, None]


def test_appending_to_the_empty_window_shares_no_list_with_it() -> None:
    """The empty window is one object for every track: an entry appended to it must not
    stay alive in a list that the empty window keeps."""
    entry = _At(START)
    ref = weakref.ref(entry)
    window = EMPTY_WINDOW.appended(entry)
    assert window == (entry,)
    assert EMPTY_WINDOW == ()
    del window, entry
    gc.collect()
    assert ref() is None
    assert len(EMPTY_WINDOW) == 0


def test_an_empty_view_at_the_end_of_its_list_appends_to_a_list_of_its_own() -> None:
    a, b, c = _at(1, 2, 3)
    window = Window([a, b])
    emptied = window[2:]
    grown = emptied.appended(c)
    assert grown == (c,)
    assert grown.since(window) is None  # not a version of the shared list
    assert window == (a, b)


def test_equality_needs_the_same_entries_in_the_same_order() -> None:
    window = Window([1, 2, 3])
    assert window != (1, 2, 4)
    assert window != (3, 2, 1)
    assert window != Window([1, 2, 4])
    assert window == Window([0, 1, 2, 3])[1:]
    assert (window == [1, 2, 3]) is False  # a list is not a window's kind: no comparison
    assert (window != [1, 2, 3]) is True
    assert window.__eq__([1, 2, 3]) is NotImplemented
    by_entries: dict[object, str] = {window: "w"}
    assert by_entries[(1, 2, 3)] == "w"  # hashed as the tuple of its entries


def test_an_index_past_a_views_end_is_out_of_range_though_the_list_goes_on() -> None:
    window = Window([1, 2, 3])
    front = window[:2]
    assert (front[0], front[1], front[-1], front[-2]) == (1, 2, 2, 1)
    for bad in (2, -3):
        with pytest.raises(IndexError, match=r"^window index out of range$"):
            front[bad]
    assert list(front) == [1, 2]
    assert list(reversed(front)) == [2, 1]
    middle = window[1:2]
    assert (list(middle), list(reversed(middle)), len(middle)) == ([2], [2], 1)


def test_since_names_the_dropped_prefix_and_the_appended_entries() -> None:
    a, b, c, d = _at(1, 2, 3, 4)
    older = Window([a, b])
    assert older.since(older) == (0, Window())
    grown = older.appended(c)
    assert grown.since(older) == (0, Window([c]))
    moved = grown[1:]
    assert moved.since(older) == (1, Window([c]))
    assert moved.since(grown) == (1, Window())
    # Everything the older version held dropped, the newer one starting at its end.
    past = grown.appended(d)[2:]
    assert past.since(older) == (2, Window([c, d]))
    # Not "older with a prefix dropped and entries appended":
    assert older.since(grown) is None  # shorter at the end
    assert grown.since(moved) is None  # an entry before the older one's first
    assert grown[:2].since(grown) is None
    assert grown.appended(d)[3:].since(older) is None  # a gap: c was never in older
    assert older.inserted(1, c).since(older) is None  # a copy
    assert Window([a, b]).since(older) is None  # equal entries, another list


def test_a_long_dropped_prefix_is_copied_away_a_short_one_stays_shared() -> None:
    """A prefix of more than 16 entries and more than an eighth of the entries kept is
    copied away (its entries can be freed); a shorter one stays a view of the list."""
    for dropped, kept, shared in [(16, 0, True), (17, 135, False), (17, 136, True), (40, 400, True)]:
        window = Window(_at(*range(dropped + kept)))
        rest = window[dropped:]
        assert rest == tuple(window)[dropped:]
        assert (rest.since(window) is not None) is shared, (dropped, kept)
        split = window.split_before(window[dropped].time if kept else START + timedelta(days=1))[1]
        assert (split.since(window) is not None) is shared, (dropped, kept)


def test_split_before_takes_the_entries_strictly_before_the_time() -> None:
    a, b, c, d = _at(1, 2, 2, 3)
    window = Window([a, b, c, d])
    old, rest = window.split_before(b.time)
    assert (old, rest) == ([a], Window([b, c, d]))
    assert type(old) is list
    old, rest = window.split_before(a.time)
    assert old == []
    assert rest is window  # nothing dropped: the same window, for the identity checks of the store
    # A view that ends before its list does: never past its own end.
    front = window[:2]
    old, rest = front.split_before(d.time + timedelta(minutes=1))
    assert (old, rest) == ([a, b], Window())
