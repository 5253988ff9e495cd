"""JSON object payloads from devices and people, decoded with stable rejection reasons."""

from __future__ import annotations

import json
from typing import Any

from daemon.errors import InputError


class _DuplicateFieldError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateFieldError(key)
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_json_object(
    payload: bytes, where: str = "", *, max_bytes: int | None = None, unique_fields: bool = False
) -> dict[str, Any]:
    """Decode a payload that must be one JSON object; raise ``InputError`` when it is not.

    Reasons: ``too_large`` (more than ``max_bytes``), ``invalid_json`` (not UTF-8, not
    JSON, or NaN/Infinity, which JSON forbids), ``duplicate_field`` (a field twice, only
    with ``unique_fields``), ``not_object`` (valid JSON, but not an object).
    """
    if max_bytes is not None and len(payload) > max_bytes:
        raise InputError("too_large", f"{len(payload)} bytes > limit {max_bytes}", where)
    try:
        data = json.loads(
            payload.decode("utf-8"),
            parse_constant=_no_constants,
            object_pairs_hook=_no_duplicates if unique_fields else None,
        )
    except _DuplicateFieldError as exc:
        raise InputError("duplicate_field", f"field '{exc}' appears twice", where) from exc
    except UnicodeDecodeError as exc:
        raise InputError("invalid_json", f"not UTF-8 ({exc.reason})", where) from exc
    except ValueError as exc:
        raise InputError("invalid_json", str(exc), where) from exc
    if not isinstance(data, dict):
        raise InputError("not_object", f"top level is {type(data).__name__}, not an object", where)
    return data
