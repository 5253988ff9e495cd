"""``daemon.frozen.replace`` gives what ``dataclasses.replace`` gives, slots or not."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

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
