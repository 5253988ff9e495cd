"""Time-series points and their InfluxDB line-protocol encoding.

The encoding is influxdb-client's own (``influxdb_client.Point.to_line_protocol``),
behind a check that refuses, with a ``ValueError``, anything the line protocol
cannot carry faithfully to both servers we write to (influxd 1.x and
victoria-metrics). What the library does on its own, and why each check exists:

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
from datetime import datetime
from typing import Any, Protocol

from influxdb_client.client.write.point import Point as _LibraryPoint
from influxdb_client.domain.write_precision import WritePrecision

# influxdb-client's Point has no type hints; calls on it are checked by the tests.
LibraryPoint: Any = _LibraryPoint

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
        _check_name("measurement", self.measurement)
        if self.measurement.startswith("#"):
            raise ValueError(f"measurement {self.measurement!r} starts with '#' (a comment line)")
        point = LibraryPoint(self.measurement)
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


class PointSink(Protocol):
    """Where points go. ``put`` never blocks and never raises: the sink batches and spools."""

    def put(self, point: Point) -> None:
        """Accept one point for writing."""
        ...


def time_ns(when: datetime) -> int:
    """Nanoseconds since the epoch, exactly (no float rounding)."""
    if when.tzinfo is None:
        raise ValueError("naive datetime")
    # timestamp() goes through a float; whole seconds are exact, microseconds added apart.
    whole_s = int(when.replace(microsecond=0).timestamp())
    return whole_s * 1_000_000_000 + when.microsecond * 1000


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
