"""RFC 3339 writing and reading of aware UTC times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from daemon.timefmt import ISO_CACHE_SIZE, iso, iso_once, iso_or_none, parse_iso, parse_iso_or_none

T = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def test_iso_writes_utc_with_z_and_microseconds_only_when_present() -> None:
    assert iso(T) == "2026-03-02T08:00:00Z"
    assert iso(T.replace(microsecond=250)) == "2026-03-02T08:00:00.000250Z"
    assert iso(T.astimezone(timezone(timedelta(hours=1)))) == "2026-03-02T08:00:00Z"
    assert iso_or_none(None) is None
    assert iso_or_none(T) == "2026-03-02T08:00:00Z"


def test_parse_iso_reads_any_offset_as_utc() -> None:
    for text in ("2026-03-02T08:00:00Z", "2026-03-02T08:00:00+00:00", "2026-03-02T09:00:00+01:00"):
        when = parse_iso(text)
        assert when == T
        assert when.tzinfo is UTC
    assert parse_iso_or_none(None) is None
    assert parse_iso(iso(T)) == T


def test_parse_iso_refuses_naive_garbage_and_non_strings() -> None:
    with pytest.raises(ValueError, match="has no time zone offset"):
        parse_iso("2026-03-02T08:00:00")
    with pytest.raises(ValueError, match="is not RFC 3339"):
        parse_iso("yesterday")
    with pytest.raises(TypeError, match="must be an RFC 3339 string"):
        parse_iso(1234)
    with pytest.raises(ValueError, match="is not RFC 3339") as info:
        parse_iso("x" * 500)
    assert len(str(info.value)) < 80


def test_remembered_times_are_written_as_fresh_ones() -> None:
    """``iso`` remembers recent times; the text is that of ``iso_once``, zone and all."""
    base = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    for k in range(3 * ISO_CACHE_SIZE):
        when = base + timedelta(microseconds=k % 1000, seconds=k // 1000)
        assert iso(when) == iso_once(when)
    paris = base.astimezone(timezone(timedelta(hours=1)))
    assert iso(paris) == iso(base) == "2026-03-02T08:00:00Z"
    assert iso(base + timedelta(microseconds=5)) == "2026-03-02T08:00:00.000005Z"
