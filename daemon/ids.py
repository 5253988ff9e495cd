"""Identifiers and names that arrive from outside: what characters and lengths they may have.

Ids end up as MQTT topic levels, InfluxDB tags, alert ids and file names, so they are
restricted to characters that are plain data in every one of those syntaxes. Names of
people are free text shown to people, so they only have to be printable.

- **config ids** (ward, bed, pump, MQTT client id and topic prefix): 1-64 ASCII
  letters, digits, ``_``, ``.`` or ``-``, starting with a letter or digit.
- **device ids** (a monitor's ``device``) and **bag ids** (``bag_id``): the same, and
  ``:`` too (device serials and barcodes often use it).
- **user names** (the broker's authenticated user, a topic level of an
  acknowledgement): the same as device ids, and ``@`` too (directory logins).
- **names** (``by``): 1-64 printable characters once the surrounding blanks are
  trimmed; any script, no control, format or line-separator characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypeGuard

from daemon.errors import InputError

MAX_ID_CHARS = 64
MAX_NAME_CHARS = 64

CONFIG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""Ward, bed and pump ids, the MQTT client id and topic prefix (full match)."""

DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
"""Device ids and bag ids (full match)."""

USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")
"""MQTT user names that may acknowledge (full match): they are topic levels and journal actors."""

CONFIG_ID_RULE = "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
DEVICE_ID_RULE = "1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
USER_ID_RULE = "1-64 letters, digits, '_', '.', ':', '@' or '-', starting with a letter or digit"
NAME_RULE = f"1-{MAX_NAME_CHARS} printable characters (no control characters)"


WARD_SUBJECT_PREFIX = "_"
"""What starts the bed level of a ward's own alerts (``ward_subject``): no config id does."""


def ward_subject(ward: str) -> str:
    """Where a ward's own alerts live, in the place of a bed id: ``_<ward>``.

    The daemon's links (the database, the broker) serve every bed of a ward at once, so
    their loss is one alert for the ward, not one per bed. It stands where a bed id
    stands (rule states, alert topics ``<prefix>/<ward>/bed/_<ward>/alerts/...``, the
    ``bed`` tag of points) and cannot be a bed's: config ids start with a letter or digit.
    """
    return WARD_SUBJECT_PREFIX + ward


def subject_ward(subject: str) -> str:
    """The ward of a ward's own subject (``ward_subject``'s inverse)."""
    return subject.removeprefix(WARD_SUBJECT_PREFIX)


def is_ward_subject(bed: str) -> bool:
    """Whether ``bed`` is a ward's own subject (``ward_subject``) rather than a bed id."""
    return bed.startswith(WARD_SUBJECT_PREFIX)


def is_config_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a valid ward, bed or pump id."""
    # fullmatch, not match with "$": "$" also matches before a trailing newline.
    return isinstance(value, str) and CONFIG_ID.fullmatch(value) is not None


def is_device_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a valid device id or bag id."""
    return isinstance(value, str) and DEVICE_ID.fullmatch(value) is not None


def config_id(value: str) -> str:
    """``value`` if it is a valid config id; ``ValueError`` otherwise (a pydantic validator)."""
    if not is_config_id(value):
        raise ValueError(f"must be {CONFIG_ID_RULE}")
    return value


def is_user_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a valid MQTT user name for acknowledgements."""
    return isinstance(value, str) and USER_ID.fullmatch(value) is not None


def user_id(value: str) -> str:
    """``value`` if it is a valid user name; ``ValueError`` otherwise (a pydantic validator)."""
    if not is_user_id(value):
        raise ValueError(f"must be {USER_ID_RULE}")
    return value


def bag_id_value(value: str) -> str:
    """``value`` if it is a valid bag id; ``ValueError`` otherwise (a pydantic validator)."""
    if not is_device_id(value):
        raise ValueError(f"must be {DEVICE_ID_RULE}")
    return value


def device_id(value: object, field: str, where: str, *, reason: str = "bad_device") -> str:
    """A device id from a message, or ``InputError(reason)`` naming the field."""
    if not is_device_id(value):
        raise InputError(reason, f"'{field}' must be {DEVICE_ID_RULE}, got {shown(value)}", where)
    return value


def bag_id(value: object, field: str, where: str, *, reason: str = "bad_bag_id") -> str:
    """A bag id from a message (surrounding blanks trimmed), or ``InputError(reason)``."""
    trimmed = value.strip() if isinstance(value, str) else value
    return device_id(trimmed, field, where, reason=reason)


def name_problem(value: object) -> str | None:
    """Why ``value`` is not an acceptable person's name, or ``None`` when it is."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    text = value.strip()
    if not text:
        return "must not be empty"
    if len(text) > MAX_NAME_CHARS:
        return f"has {len(text)} characters (limit {MAX_NAME_CHARS})"
    if not text.isprintable():
        return "must be printable text (no control or line-break characters)"
    return None


def person_name(value: object, field: str, where: str, *, reason: str = "bad_name") -> str:
    """A person's name from a message, trimmed, or ``InputError(reason)`` saying what is wrong."""
    problem = name_problem(value)
    if problem is not None or not isinstance(value, str):
        raise InputError(reason, f"'{field}' {problem}; a name is {NAME_RULE}", where)
    return value.strip()


def shown(value: object, limit: int = 40) -> str:
    """``value`` for an error message: a short ``repr``, so that it reads as data."""
    if isinstance(value, str):
        text = repr(value[:limit]) + ("..." if len(value) > limit else "")
    elif isinstance(value, bool | int | float) or value is None:
        text = repr(value) if not isinstance(value, int) or abs(value) < 10**40 else "a huge integer"
    else:
        # Never repr a container: it may be nested deep enough to overflow the stack.
        text = f"a {type(value).__name__}"
    return text


def shown_fields(names: Iterable[str], limit: int = 5) -> str:
    """Field names for an error message, each quoted as data, at most ``limit`` of them."""
    listed = sorted(names)
    text = ", ".join(shown(name) for name in listed[:limit])
    return text + (f" and {len(listed) - limit} more" if len(listed) > limit else "")
