"""Bedside-monitor vital signs over MQTT: the payload contract and its decoder.

Payload (JSON, UTF-8), published to ``<prefix>/<ward>/bed/<bed>/vitals``::

    {"ts": "2026-03-02T20:00:00Z", "device": "monitor-12",
     "obs": [{"code": "MDC_TEMP_BODY", "value": 38.2, "unit": "Cel"}, ...]}

``code`` is an IEEE 11073 reference id or its numeric code; ``unit`` is UCUM.
A malformed message is rejected whole. Within a well-formed message, each bad
observation is rejected on its own (counted, logged) and the good ones are kept,
so a probe-off SpO2 does not discard the temperature taken with it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from daemon import mdc
from daemon.errors import InputError
from daemon.events import Emit, Event, Health, Metric, SourceHealth, VitalSample
from daemon.metrics import Counters, reject
from daemon.payloads import load_json_object
from daemon.timefmt import parse_iso

log = logging.getLogger(__name__)

REJECTED = "mqtt.rejected"
"""Counter of rejected messages and observations, labelled by reason."""

VITALS_SCHEMA: Mapping[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://wardd.invalid/schemas/vitals.json",
    "title": "wardd vital-sign message",
    "type": "object",
    "additionalProperties": False,
    "required": ["ts", "device", "obs"],
    "properties": {
        "ts": {
            "type": "string",
            "format": "date-time",
            "description": "Measurement time, RFC 3339 with offset.",
        },
        "device": {"type": "string", "minLength": 1, "maxLength": 64},
        "obs": {
            "type": "array",
            "minItems": 1,
            "maxItems": 64,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["code", "value", "unit"],
                "properties": {
                    "code": {
                        "oneOf": [
                            {"type": "string", "enum": sorted(mdc.BY_REF_ID)},
                            {"type": "integer", "enum": sorted(mdc.BY_CODE)},
                        ]
                    },
                    "value": {"type": "number"},
                    "unit": {"type": "string", "description": "UCUM: Cel, [degF], mm[Hg], /min, %"},
                },
            },
        },
    },
}


@dataclass(frozen=True, slots=True)
class DecodedVitals:
    """What one vitals message gave: a sample (if any value survived) and what was refused."""

    time: datetime  # the message's own timestamp
    sample: VitalSample | None
    rejected: tuple[InputError, ...]
    probe_off: tuple[Metric, ...]


def parse_time(text: object, field: str, where: str) -> datetime:
    """An RFC 3339 timestamp with an offset, as aware UTC."""
    if not isinstance(text, str):
        raise InputError("bad_timestamp", f"'{field}' must be an RFC 3339 string", where)
    try:
        return parse_iso(text)
    except ValueError as exc:
        raise InputError("bad_timestamp", f"'{field}' {exc}", where) from exc


def decode_vitals(
    payload: bytes,
    *,
    ward: str,
    bed: str,
    where: str,
    now: datetime,
    max_bytes: int = 65_536,
    max_future_skew_s: float = 300.0,
) -> DecodedVitals:
    """Validate one vitals message; raise ``InputError`` when it is unusable as a whole."""
    data = load_json_object(payload, where, max_bytes=max_bytes)
    unknown = sorted(set(data) - {"ts", "device", "obs"})
    if unknown:
        raise InputError("unknown_field", f"unexpected field(s) {', '.join(unknown)}", where)
    for name in ("ts", "device", "obs"):
        if name not in data:
            raise InputError("missing_field", f"'{name}' is required", where)
    time = parse_time(data["ts"], "ts", where)
    if time - now > timedelta(seconds=max_future_skew_s):
        raise InputError(
            "future_timestamp",
            f"'ts' {data['ts']} is {(time - now).total_seconds():.0f} s ahead of the daemon's clock "
            f"(limit {max_future_skew_s:.0f} s)",
            where,
        )
    device = data["device"]
    if not isinstance(device, str) or not 0 < len(device) <= 64:
        raise InputError("bad_device", "'device' must be a string of 1-64 characters", where)
    obs = data["obs"]
    if not isinstance(obs, list) or not obs:
        raise InputError("bad_obs", "'obs' must be a non-empty list", where)
    if len(obs) > 64:
        raise InputError("bad_obs", f"'obs' has {len(obs)} items (limit 64)", where)

    values: dict[Metric, float] = {}
    rejected: list[InputError] = []
    probe_off: list[Metric] = []
    for i, item in enumerate(obs):
        at = f"{where} obs[{i}]"
        try:
            metric, value = _observation(item, at)
        except _ProbeOff as off:
            probe_off.append(off.metric)
            rejected.append(InputError("sentinel", f"{off.metric} sent the 11073 '{off.name}' value", at))
            continue
        except InputError as exc:
            rejected.append(exc)
            continue
        if metric in values:
            rejected.append(InputError("duplicate_metric", f"{metric} appears twice", at))
            continue
        values[metric] = value
    sample = VitalSample(ward, bed, device, time, values) if values else None
    return DecodedVitals(time, sample, tuple(rejected), tuple(probe_off))


class _ProbeOff(Exception):  # noqa: N818 -- control flow, not an error to report
    def __init__(self, metric: Metric, name: str) -> None:
        self.metric = metric
        self.name = name


def _observation(item: object, at: str) -> tuple[Metric, float]:
    if not isinstance(item, dict):
        raise InputError("bad_obs", "each observation must be an object", at)
    unknown = sorted(set(item) - {"code", "value", "unit"})
    if unknown:
        raise InputError("unknown_field", f"unexpected field(s) {', '.join(unknown)}", at)
    missing = [k for k in ("code", "value", "unit") if k not in item]
    if missing:
        raise InputError("missing_field", f"missing {', '.join(missing)}", at)
    term = mdc.lookup(item["code"])
    if term is None:
        raise InputError("unknown_code", f"unknown or unsupported MDC code {item['code']!r}", at)
    metric = term.metric
    value = item["value"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError("not_a_number", f"{term.ref_id} value {value!r} is not a number", at)
    if isinstance(value, int) and value in mdc.SENTINELS:
        raise _ProbeOff(metric, mdc.SENTINELS[value])
    unit = item["unit"]
    convert = mdc.UNITS[metric].get(unit) if isinstance(unit, str) else None
    if convert is None:
        allowed = ", ".join(mdc.UNITS[metric])
        raise InputError("wrong_unit", f"{term.ref_id} in {unit!r}; expected one of {allowed}", at)
    converted = convert(float(value))
    if not math.isfinite(converted) or not mdc.plausible(metric, converted):
        raise InputError("implausible", f"{term.ref_id} {value} {unit} is outside the possible range", at)
    return metric, converted


Decoder = Callable[[bytes, str, str, str, datetime], Sequence[Event]]
"""Turns one payload into events: ``(payload, ward, bed, where, now)``; raises InputError."""


@dataclass(frozen=True, slots=True)
class Route:
    """What arrives on one topic: whose it is and how to read it."""

    ward: str
    bed: str
    decoder: Decoder
    counter: str = REJECTED


class TelemetryRouter:
    """Routes incoming MQTT messages by topic to decoders, and their events to the pipeline."""

    def __init__(
        self, routes: Mapping[str, Route], emit: Emit, counters: Counters, now: Callable[[], datetime]
    ):
        self._routes = dict(routes)
        self._emit = emit
        self._counters = counters
        self._now = now

    @property
    def topics(self) -> list[str]:
        """The topics to subscribe to."""
        return sorted(self._routes)

    def add(self, topic: str, route: Route) -> None:
        """Route one more topic."""
        self._routes[topic] = route

    async def on_message(self, topic: str, payload: bytes) -> None:
        """Decode one message; a bad one is counted and logged, never raised."""
        route = self._routes.get(topic)
        if route is None:
            reject(
                self._counters,
                REJECTED,
                "unexpected_topic",
                "no route for this topic",
                where=topic,
                payload=payload,
            )
            return
        try:
            events = route.decoder(payload, route.ward, route.bed, topic, self._now())
        except InputError as exc:
            reject(
                self._counters,
                route.counter,
                exc.reason,
                exc.detail,
                where=exc.where or topic,
                payload=payload,
            )
            return
        self._counters.inc("mqtt.accepted", topic.rsplit("/", 1)[-1])
        for event in events:
            await self._emit(event)


def vitals_decoder(counters: Counters, max_bytes: int, max_future_skew_s: float) -> Decoder:
    """A decoder for the vitals topic that counts per-observation rejections itself."""

    def decode(payload: bytes, ward: str, bed: str, where: str, now: datetime) -> Sequence[Event]:
        decoded = decode_vitals(
            payload,
            ward=ward,
            bed=bed,
            where=where,
            now=now,
            max_bytes=max_bytes,
            max_future_skew_s=max_future_skew_s,
        )
        for exc in decoded.rejected:
            reject(counters, REJECTED, exc.reason, exc.detail, where=exc.where, payload=payload)
        events: list[Event] = []
        for metric in decoded.probe_off:
            # A sentinel is a device matter (probe off, no reading): a technical signal.
            events.append(
                SourceHealth(ward, bed, f"monitor.{metric}", decoded.time, Health.LOST, "probe-off")
            )
        if decoded.sample is not None:
            events.append(decoded.sample)
        return events

    return decode
