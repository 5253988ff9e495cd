"""Time-series points and their InfluxDB line-protocol encoding."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

FieldValue = float | int | str | bool


@dataclass(frozen=True, slots=True)
class Point:
    """One row of one measurement at one time."""

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time: datetime

    def to_line(self) -> str:
        """InfluxDB line protocol with a nanosecond timestamp."""
        tags = "".join(f",{_escape_key(k)}={_escape_key(v)}" for k, v in sorted(self.tags.items()) if v != "")
        fields = ",".join(f"{_escape_key(k)}={_field(v)}" for k, v in self.fields.items())
        return f"{_escape_measurement(self.measurement)}{tags} {fields} {time_ns(self.time)}"


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


def _escape_measurement(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def _escape_key(text: str) -> str:
    return _escape_measurement(text).replace("=", "\\=")


def _field(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
