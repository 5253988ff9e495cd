"""JSON object payloads from devices and people, decoded with stable rejection reasons.

``load_json_object`` turns any bytes whatsoever into a ``dict`` or an ``InputError``:
it bounds the size, the nesting depth and the numbers before any field is looked at,
so that the decoders built on it only meet plain, finite, shallow data.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from daemon.errors import InputError

DEFAULT_MAX_PAYLOAD_BYTES = 65_536
"""Size limit when a caller gives none (the default of ``mqtt.max_payload_bytes``)."""

MAX_JSON_DEPTH = 16
"""Deepest nesting of arrays and objects accepted. Our payloads nest three levels
(vitals: message, ``obs`` list, observation); the margin is for clients that wrap
values, while staying far below the interpreter's recursion limit."""

MAX_INT_DIGITS = 18
"""Longest integer accepted, in digits. No field of ours needs more (11073 codes and
sentinels have at most 8); longer ones overflow ``float`` or hit Python's limit on
converting long digit strings."""

# A JSON string, escapes included; the two alternatives never overlap, so matching
# is linear even on hostile input.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _RefusedError(Exception):
    """Raised from inside ``json.loads`` hooks; carries the reason to report."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(detail)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RefusedError("duplicate_field", f"field {key[:40]!r} appears twice")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _RefusedError("huge_number", f"an integer of {digits} digits (limit {MAX_INT_DIGITS})")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # 1e400 parses to inf: Infinity in disguise.
        raise _RefusedError("huge_number", f"the number {text[:40]} is too large for a float")
    return value


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects, ignoring brackets inside strings."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _lone_surrogate(data: Any) -> bool:
    """Whether any key or string value holds half of a UTF-16 pair (``"\\ud800"``).

    Such a string is valid JSON but not text: it cannot be encoded as UTF-8 again,
    so it would fail later in a log, a sink or a reply.
    """
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def load_json_object(
    payload: bytes,
    where: str = "",
    *,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    unique_fields: bool = False,
) -> dict[str, Any]:
    """Decode a payload that must be one JSON object; raise ``InputError`` when it is not.

    Never raises anything else, whatever the bytes. Reasons: ``too_large`` (more than
    ``max_bytes``), ``invalid_json`` (not UTF-8, not JSON, NaN/Infinity, which JSON
    forbids, or a lone UTF-16 surrogate escape), ``too_deep`` (arrays and objects
    nested more than ``MAX_JSON_DEPTH`` levels), ``huge_number`` (an integer of more
    than ``MAX_INT_DIGITS`` digits, or a number beyond the float range),
    ``duplicate_field`` (a field twice, only with ``unique_fields``), ``not_object``
    (valid JSON, but not an object).
    """
    if len(payload) > max_bytes:
        raise InputError("too_large", f"{len(payload)} bytes > limit {max_bytes}", where)
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            "invalid_json", f"not UTF-8 ({exc.reason} at byte offset {exc.start})", where
        ) from exc
    # Measured before parsing: the parser recurses once per level, so a deep enough
    # payload would otherwise exhaust the stack.
    depth = _depth(text)
    if depth > MAX_JSON_DEPTH:
        raise InputError("too_deep", f"nested {depth} levels deep (limit {MAX_JSON_DEPTH})", where)
    try:
        data = json.loads(
            text,
            parse_constant=_no_constants,
            parse_int=_bounded_int,
            parse_float=_finite_float,
            object_pairs_hook=_no_duplicates if unique_fields else None,
        )
    except _RefusedError as exc:
        raise InputError(exc.reason, exc.detail, where) from exc
    except RecursionError as exc:
        # Only reachable if the depth measure above missed a case; still refused cleanly.
        raise InputError("too_deep", "nested too deep to parse", where) from exc
    except ValueError as exc:
        raise InputError("invalid_json", str(exc), where) from exc
    if not isinstance(data, dict):
        raise InputError("not_object", f"top level is {type(data).__name__}, not an object", where)
    if _lone_surrogate(data):
        raise InputError("invalid_json", "a string holds a lone UTF-16 surrogate escape", where)
    return data


def finite_number(value: object) -> float | None:
    """A JSON number as a finite ``float``; ``None`` for anything else.

    ``None`` for booleans (JSON ``true`` is not 1), strings, containers, NaN,
    infinities and integers too large for a float.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
