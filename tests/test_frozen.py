"""``daemon.frozen``: ``replace`` gives what ``dataclasses.replace`` gives, slots or not (the
column windows: ``tests/test_column_windows.py``)."""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest

from daemon import frozen
from daemon.frozen import replace, replacer


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


class _Pair(NamedTuple):
    a: int
    b: str = "b"
    c: float = 1.5


@pytest.mark.parametrize("changes", [{}, {"b": "x"}, {"a": 2, "c": 0.5}, {"a": 3, "b": "y", "c": 2.5}])
def test_replace_of_a_named_tuple_is_its_own_replace(changes: dict[str, Any]) -> None:
    """A vital-sign ``Track`` is a named tuple, copied by the same ``replace``."""
    obj = _Pair(1, "z")
    new = replace(obj, **changes)
    assert replacer(_Pair)(obj, **changes) == new == obj._replace(**changes)
    assert type(new) is _Pair
    assert new is not obj


def test_replace_of_a_named_tuple_refuses_what_is_not_a_field() -> None:
    with pytest.raises(TypeError):
        replace(_Pair(1), d=2)
    with pytest.raises(TypeError, match="not a NamedTuple"):
        replacer(tuple)
