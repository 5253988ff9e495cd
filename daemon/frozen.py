"""``replace`` for the rules' frozen dataclasses, at a fraction of ``dataclasses.replace``'s cost.

The rules return a new state on nearly every step (about 20 replacements per vitals
message), and ``dataclasses.replace`` looks up and filters the class's fields and
runs ``__init__`` on every call: it was the largest single cost of a message. This
``replace`` copies the fields into a new instance with a function generated once
per class, as ``dataclasses`` itself generates ``__init__``. It accepts the same
changes (``__init__`` fields only) and is meant for classes without ``__post_init__``
(checked when the class is first seen): nothing is validated that the constructor
would have validated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_MISSING = object()
_REPLACERS: dict[type, Callable[..., Any]] = {}


def _replacer(cls: type) -> Callable[..., Any]:
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__; use dataclasses.replace")
    fields = dataclasses.fields(cls)
    init = [f.name for f in fields if f.init]
    params = ", ".join(f"{name}=_MISSING" for name in init)
    lines = [f"def replace(obj, /, {params}):", "    new = _new(_cls)"]
    for f in fields:
        if f.init:
            lines.append(f"    _set(new, {f.name!r}, obj.{f.name} if {f.name} is _MISSING else {f.name})")
        else:
            lines.append(f"    _set(new, {f.name!r}, obj.{f.name})")
    lines.append("    return new")
    namespace: dict[str, Any] = {
        "_MISSING": _MISSING,
        "_new": object.__new__,
        "_set": object.__setattr__,
        "_cls": cls,
    }
    exec("\n".join(lines), namespace)  # noqa: S102 -- source built from the class's own field names
    function: Callable[..., Any] = namespace["replace"]
    _REPLACERS[cls] = function
    return function


def replace(obj: T, /, **changes: Any) -> T:
    """A copy of the dataclass instance ``obj`` with ``changes``, as ``dataclasses.replace``."""
    cls = type(obj)
    function = _REPLACERS.get(cls) or _replacer(cls)
    new: T = function(obj, **changes)
    return new
