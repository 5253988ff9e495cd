"""RFC 3339 text for aware UTC datetimes: one writer and one reader for every module.

Messages, alert payloads, state files and captures all write ``2026-03-02T08:00:00Z``
(microseconds only when present) and read any RFC 3339 time that carries an offset.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

ISO_CACHE_SIZE = 4096
"""Times whose text is remembered. A vital sample's time is written again and again: in
each late-data window entry it makes (eight for a full message) and in each rule state
that keeps it, at every checkpoint; at 1,000 beds a checkpoint meets a few thousand
distinct times."""


def iso(when: datetime) -> str:
    """``when`` in UTC as RFC 3339 with a ``Z``, microseconds only when present."""
    return _iso(when)


def iso_once(when: datetime) -> str:
    """``iso(when)`` for a time written once (the moment an input is logged), which the
    remembered times would only crowd out."""
    if when.tzinfo is not UTC:
        when = when.astimezone(UTC)
    # An aware UTC time's isoformat ends in "+00:00".
    return when.isoformat()[:-6] + "Z"


@functools.lru_cache(maxsize=ISO_CACHE_SIZE)
def _iso(when: datetime) -> str:
    # Equal aware times are the same instant, whatever their zone: the same text.
    return iso_once(when)


def iso_or_none(when: datetime | None) -> str | None:
    """``iso(when)``, with ``None`` kept as ``None`` (optional times in state files)."""
    return None if when is None else iso(when)


def parse_iso(text: object) -> datetime:
    """An RFC 3339 time with an offset, as aware UTC.

    Raises ``TypeError`` when ``text`` is not a string and ``ValueError`` when it is not
    RFC 3339 or has no offset; the error text is short enough to log and completes a
    sentence that starts with the field's name ("'ts' is not RFC 3339: ...").
    """
    if not isinstance(text, str):
        raise TypeError(f"must be an RFC 3339 string, got {type(text).__name__}")
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"is not RFC 3339: {text[:40]!r}") from exc
    if when.tzinfo is None:
        # A time without an offset is ambiguous across a daylight-saving change.
        raise ValueError(f"has no time zone offset: {text[:40]!r}")
    try:
        return when.astimezone(UTC)
    except OverflowError as exc:
        # 0001-01-01T00:00:00+01:00 is valid RFC 3339 but before datetime.min in UTC.
        raise ValueError(f"is out of range: {text[:40]!r}") from exc


def parse_iso_or_none(value: object) -> datetime | None:
    """``parse_iso(value)``, with ``None`` kept as ``None``."""
    return None if value is None else parse_iso(value)
