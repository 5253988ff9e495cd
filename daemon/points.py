"""Time-series points and their InfluxDB line-protocol encoding.

The encoding is influxdb-client's (``influxdb_client.Point.to_line_protocol``),
behind a check that refuses, with a ``ValueError``, anything the line protocol
cannot carry faithfully to both servers we write to (influxd 1.x and
victoria-metrics). ``to_line`` writes the same bytes itself, with the measurement and
tags of each series encoded once and remembered: building a library point per sample
was a tenth of the daemon's work per vitals message. ``library_line`` is the
library's own encoding, and ``tests/test_points.py`` holds the two to the same bytes.
What the library does on its own, and why each check exists:

- newline, carriage return and tab in names and tag values become the two
  characters ``\\n``, ``\\r``, ``\\t``; neither server turns them back, so the
  stored value would differ from the one sent: control characters are refused.
- backslash is not escaped in names and tag values; influxd 1.x and
  victoria-metrics read ``\\\\`` differently (one or two backslashes), and a
  trailing backslash would escape the separator after it (the library pads tag
  values with a space, which influxd stores): backslashes are refused there.
- empty tag values are left out (InfluxDB reads a missing tag as ""); an empty
  tag key with a value would be dropped silently: refused.
- NaN and infinities are skipped, and a point left without fields becomes an
  empty line: refused (InfluxDB cannot store them).
- a measurement starting with ``#`` is a comment line to the server: refused.
- string field values escape ``"`` and ``\\`` but keep newlines, which
  victoria-metrics reads as the end of the line (a second point could follow):
  line breaks in string fields are refused.

So no input string can produce a second line or change the measurement: the
names and tag values that reach the library hold no character it leaves raw
except those it escapes (``,``, ``=``, space).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

FieldValue = float | int | str | bool

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# Names and tag values: C0 and C1 control characters, DEL, backslash, the Unicode
# line and paragraph separators (str.splitlines breaks lines there, and spooled
# batches are read back line by line) and lone surrogates (not encodable as UTF-8).
_BAD_IN_NAME = re.compile("[\x00-\x1f\x7f-\x9f\\\\\u2028\u2029\ud800-\udfff]")
# String field values: only what ends a line (for either server or for
# str.splitlines) and lone surrogates. Tabs, NUL, quotes and backslashes round-trip.
_BAD_IN_STRING = re.compile("[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Point:
    """One row of one measurement at one time."""

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time: datetime

    def to_line(self) -> str:
        """InfluxDB line protocol with a nanosecond timestamp: one line, no newline.

        Tags and fields come out sorted by key. Raises ``ValueError`` for a point
        the databases cannot store as sent (see the module docstring).
        """
        # Keyed by the tags as given: the same tags in another order are one more entry,
        # never a wrong prefix, and sorting them for the key cost more than the lookup.
        series = (self.measurement, tuple(self.tags.items()))
        prefix = _SERIES.get(series)
        if prefix is None:
            prefix = _series_prefix(self.measurement, self.tags)
            if len(_SERIES) >= _MAX_SERIES:
                _SERIES.clear()  # a bound, not an eviction policy: a ward has far fewer series
            _SERIES[series] = prefix
        if not self.fields:
            raise ValueError(f"{self.measurement}: no fields")
        # Checked in the order given, as before; written sorted by key.
        parts: list[tuple[str, str]] = []
        for key, value in self.fields.items():
            escaped = _FIELD_KEYS.get(key)
            if escaped is None:
                _check_name("field key", key)
                if len(_FIELD_KEYS) >= _MAX_SERIES:
                    _FIELD_KEYS.clear()
                escaped = _FIELD_KEYS[key] = key.translate(_ESCAPE_KEY)
            if type(value) is float and math.isfinite(value):
                # The common field (every vital sign), written as ``_field_text`` does.
                text = str(value)
                text = text[:-2] if text.endswith(".0") else text
            else:
                _check_field(key, value)
                text = _field_text(value)
            parts.append((key, f"{escaped}={text}"))
        parts.sort()  # by key: keys are distinct, the second item is never compared
        return f"{prefix} {','.join([part for _, part in parts])} {time_ns(self.time)}"

    def library_line(self) -> str:
        """The same line, as influxdb-client encodes it (the reference ``to_line`` is held to)."""
        _check_name("measurement", self.measurement)
        if self.measurement.startswith("#"):
            raise ValueError(f"measurement {self.measurement!r} starts with '#' (a comment line)")
        # Imported here: the library takes half a second and megabytes to import, and
        # the daemon itself only needs ``to_line``.
        from influxdb_client.client.write.point import Point as LibraryPoint  # noqa: PLC0415
        from influxdb_client.domain.write_precision import WritePrecision  # noqa: PLC0415

        library: Any = LibraryPoint  # the library has no type hints; the tests check these calls
        point = library(self.measurement)
        for key, value in self.tags.items():
            _check_name("tag key", key)
            if value:
                _check_name(f"tag {key!r}", value)
                point.tag(key, value)
        if not self.fields:
            raise ValueError(f"{self.measurement}: no fields")
        for key, field in self.fields.items():
            _check_name("field key", key)
            _check_field(key, field)
            point.field(key, field)
        point.time(time_ns(self.time), WritePrecision.NS)
        line: str = point.to_line_protocol()
        return line


# What the library escapes (influxdb_client.client.write.point): in the measurement
# "," and space; in tag keys, tag values and field keys also "="; in string field
# values '"' and backslash. Control characters never get here (refused above).
_ESCAPE_MEASUREMENT = str.maketrans({",": "\\,", " ": "\\ "})
_ESCAPE_KEY = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_ESCAPE_STRING = str.maketrans({'"': '\\"', "\\": "\\\\"})
_MAX_SERIES = 100_000
_SERIES: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
_FIELD_KEYS: dict[str, str] = {}


def _series_prefix(measurement: str, tags: Mapping[str, str]) -> str:
    """``measurement,tag=value,...``: checked in the order given, written sorted by key."""
    _check_name("measurement", measurement)
    if measurement.startswith("#"):
        raise ValueError(f"measurement {measurement!r} starts with '#' (a comment line)")
    for key, value in tags.items():
        _check_name("tag key", key)
        if value:
            _check_name(f"tag {key!r}", value)
    out = [measurement.translate(_ESCAPE_MEASUREMENT)]
    out += [f"{k.translate(_ESCAPE_KEY)}={v.translate(_ESCAPE_KEY)}" for k, v in sorted(tags.items()) if v]
    return ",".join(out)


def _field_text(value: FieldValue) -> str:
    """A checked field value as the library writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        text = str(value)
        # The library drops the ".0" of whole numbers.
        return text[:-2] if text.endswith(".0") else text
    return f'"{value.translate(_ESCAPE_STRING)}"'


class PointSink(Protocol):
    """Where points go. ``put`` never blocks and never raises: the sink batches and spools."""

    def put(self, point: Point) -> None:
        """Accept one point for writing."""
        ...


def time_ns(when: datetime) -> int:
    """Nanoseconds since the epoch, exactly (no float rounding)."""
    if when.tzinfo is None:
        raise ValueError("naive datetime")
    return (when - _EPOCH) // _MICROSECOND * 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _check_name(what: str, text: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string, not {type(text).__name__}")
    if not text:
        raise ValueError(f"empty {what}")
    bad = _BAD_IN_NAME.search(text)
    if bad is not None:
        raise ValueError(f"{what} {text!r} holds {bad.group()!r}, which line protocol cannot carry")


def _check_field(key: str, value: FieldValue) -> None:
    # bool before int: bool is an int subclass, and the library writes it as true/false.
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"field {key!r}: {value} does not fit a 64-bit integer")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"field {key!r}: {value} is not storable (NaN and infinities are not)")
        return
    if isinstance(value, str):
        bad = _BAD_IN_STRING.search(value)
        if bad is not None:
            raise ValueError(f"field {key!r}: string holds {bad.group()!r}, which would break the line")
        return
    raise TypeError(f"field {key!r}: unsupported type {type(value).__name__}")
