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
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec

from daemon import ids, mdc
from daemon.errors import InputError
from daemon.events import Emit, Event, Health, Metric, SourceHealth, VitalSample
from daemon.metrics import Counters, preview, reject, sanitize
from daemon.payloads import DEFAULT_MAX_PAYLOAD_BYTES, MAX_INT_DIGITS, finite_number, load_json_object
from daemon.timefmt import parse_iso

log = logging.getLogger(__name__)

REJECTED = "mqtt.rejected"
"""Counter of rejected messages and observations, labelled by reason."""

DECODER_ERROR = "decoder_error"
"""The reject reason of a message whose decoder failed unexpectedly (a bug, not bad input)."""

MAX_AGE_S = 7 * 86_400.0
"""Vitals stamped further back than this are refused (``too_old``): a monitor does not
buffer a week, and times near year 1 would overflow the rules' date arithmetic."""
_MAX_AGE = timedelta(seconds=MAX_AGE_S)

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
        "device": {
            "type": "string",
            "pattern": f"^{ids.DEVICE_ID.pattern}$",
            "description": "The monitor's id; stored as an InfluxDB tag.",
        },
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


def refuse_future(when: datetime, shown: str, now: datetime, max_future_skew_s: float, where: str) -> None:
    """Raise ``future_timestamp`` when ``when`` (named ``shown`` in the error) is more than
    ``max_future_skew_s`` ahead of ``now``: a source's clock set wrong, whatever the protocol."""
    if when - now > timedelta(seconds=max_future_skew_s):
        raise InputError(
            "future_timestamp",
            f"{shown} is {(when - now).total_seconds():.0f} s ahead of the daemon's clock "
            f"(limit {max_future_skew_s:.0f} s)",
            where,
        )


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
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    max_future_skew_s: float = 300.0,
) -> DecodedVitals:
    """Validate one vitals message; raise ``InputError`` when it is unusable as a whole.

    Whatever the bytes, the result is a ``DecodedVitals`` or an ``InputError``. Reasons
    for the whole message: those of ``load_json_object`` (``too_large``, ``invalid_json``,
    ``too_deep``, ``huge_number``, ``not_object``), ``unknown_field``,
    ``missing_field``, ``bad_timestamp``, ``future_timestamp``, ``too_old``,
    ``bad_device``, ``bad_obs``. Per observation (in ``rejected``): ``bad_obs``,
    ``unknown_field``, ``missing_field``, ``unknown_code``, ``not_a_number``,
    ``huge_number``, ``wrong_unit``, ``implausible``, ``sentinel``, ``duplicate_metric``.
    """
    wire = _well_formed(payload) if len(payload) <= max_bytes else None
    if wire is not None:
        ts, device_field, obs = wire.ts, wire.device, wire.obs
    else:
        # Anything but the plain well-formed shape takes the checked path, which
        # says precisely what is wrong.
        data = load_json_object(payload, where, max_bytes=max_bytes)
        unknown = sorted(set(data) - {"ts", "device", "obs"})
        if unknown:
            raise InputError("unknown_field", f"unexpected field(s) {ids.shown_fields(unknown)}", where)
        for name in ("ts", "device", "obs"):
            if name not in data:
                raise InputError("missing_field", f"'{name}' is required", where)
        ts, device_field, obs = data["ts"], data["device"], data["obs"]
    time = parse_time(ts, "ts", where)
    refuse_future(time, f"'ts' {ts}", now, max_future_skew_s, where)
    if now - time > _MAX_AGE:
        raise InputError("too_old", f"'ts' {ts} is more than {MAX_AGE_S / 86_400:.0f} days old", where)
    # The device becomes an InfluxDB tag: only characters that are data there.
    device = ids.device_id(device_field, "device", where)
    if not isinstance(obs, list) or not obs:
        raise InputError("bad_obs", f"'obs' must be a non-empty list, got {ids.shown(obs)}", where)
    if len(obs) > 64:
        raise InputError("bad_obs", f"'obs' has {len(obs)} items (limit 64)", where)

    rejected: list[InputError] = []
    probe_off: list[Metric] = []
    plain = _plain_values(obs) if wire is not None else None
    values: dict[Metric, float] = {} if plain is None else plain
    for i, item in enumerate(obs if plain is None else ()):
        at = f"{where} obs[{i}]"
        try:
            metric, value = check_observation(_as_dict(item), at)
        except ProbeOff as off:
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


_INT_LIMIT = 10**MAX_INT_DIGITS
_Int = Annotated[int, msgspec.Meta(gt=-_INT_LIMIT, lt=_INT_LIMIT)]
"""An integer the checked path takes (longer ones are ``huge_number`` there)."""
_Float = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
"""A finite float (msgspec already refuses numbers beyond the float range: said anyway)."""


class _WireObservation(msgspec.Struct, forbid_unknown_fields=True):
    code: str | _Int
    value: _Int | _Float
    unit: str


class _WireVitals(msgspec.Struct, forbid_unknown_fields=True):
    ts: str
    device: str
    obs: list[_WireObservation]


_WIRE = msgspec.json.Decoder(_WireVitals)


def _well_formed(payload: bytes) -> _WireVitals | None:
    """The message, when it has exactly the expected shape and reads as on the checked path.

    msgspec decodes and checks the shape in one pass, several times faster than
    ``json.loads`` followed by the checks of ``load_json_object``; the values are then
    judged by the same code as on the checked path (``_plain_values`` takes the
    common case). ``None`` for anything else, and for what msgspec takes but the checked
    path refuses (integers beyond ``MAX_INT_DIGITS`` digits, numbers beyond the float
    range): the checked path then decides. ``tests/test_decoder_fuzz.py`` holds the two
    paths to the same answers.
    """
    try:
        return _WIRE.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def _as_dict(item: object) -> object:
    """An observation as ``check_observation`` takes it (a wire struct as the dict it was)."""
    if isinstance(item, _WireObservation):
        return {"code": item.code, "value": item.value, "unit": item.unit}
    return item


_PLAIN_TERMS: Mapping[tuple[str | int, str], tuple[Metric, Callable[[float], float]]] = {
    (code, unit): (term.metric, convert)
    for term in mdc.TERMS
    for code in (term.ref_id, term.code)
    for unit, convert in mdc.UNITS[term.metric].items()
}
"""Each code and unit as a monitor sends them (the reference id or the numeric code, a
UCUM unit of the metric): the metric and the conversion ``check_observation`` finds."""


def _plain_values(obs: list[_WireObservation]) -> dict[Metric, float] | None:
    """The values ``check_observation`` makes of a message's observations when it accepts
    every one as it stands (a known code in a unit of its metric, a plausible number, no
    sentinel, no metric twice): what monitors send, without the checks msgspec and
    ``_well_formed`` have made. ``None``: anything else, for it to judge one by one."""
    values: dict[Metric, float] = {}
    for item in obs:
        known = _PLAIN_TERMS.get((item.code, item.unit))
        if known is None:
            return None
        metric, convert = known
        value = item.value
        if isinstance(value, int) and value in mdc.SENTINELS:
            return None
        # Finite, and an integer below 10**18: float() is exact enough and cannot overflow.
        converted = convert(float(value))
        if not math.isfinite(converted) or not mdc.plausible(metric, converted) or metric in values:
            return None
        values[metric] = converted
    return values


class ProbeOff(Exception):  # noqa: N818 -- control flow, not an error to report
    """An observation carried an 11073 "no value" sentinel: the probe is off, not a value."""

    def __init__(self, metric: Metric, name: str) -> None:
        self.metric = metric
        self.name = name


def check_observation(item: object, at: str) -> tuple[Metric, float]:
    """One ``{code, value, unit}`` observation as a metric and its value in the metric's
    unit; ``InputError`` with the reason, or ``ProbeOff`` (the HL7 path shares it)."""
    if not isinstance(item, dict):
        raise InputError("bad_obs", f"each observation must be an object, got {ids.shown(item)}", at)
    unknown = sorted(set(item) - {"code", "value", "unit"})
    if unknown:
        raise InputError("unknown_field", f"unexpected field(s) {ids.shown_fields(unknown)}", at)
    missing = [k for k in ("code", "value", "unit") if k not in item]
    if missing:
        raise InputError("missing_field", f"missing {', '.join(missing)}", at)
    term = mdc.lookup(item["code"])
    if term is None:
        raise InputError("unknown_code", f"unknown or unsupported MDC code {ids.shown(item['code'])}", at)
    metric = term.metric
    value = item["value"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError("not_a_number", f"{term.ref_id} value {ids.shown(value)} is not a number", at)
    if isinstance(value, int) and value in mdc.SENTINELS:
        raise ProbeOff(metric, mdc.SENTINELS[value])
    unit = item["unit"]
    convert = mdc.UNITS[metric].get(unit) if isinstance(unit, str) else None
    if convert is None:
        allowed = ", ".join(mdc.UNITS[metric])
        raise InputError("wrong_unit", f"{term.ref_id} in {ids.shown(unit)}; expected one of {allowed}", at)
    number = finite_number(value)
    if number is None:
        raise InputError(
            "huge_number", f"{term.ref_id} value {ids.shown(value)} is beyond the float range", at
        )
    converted = convert(number)
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
        self,
        routes: Mapping[str, Route],
        emit: Emit,
        counters: Counters,
        now: Callable[[], datetime],
        *,
        on_unknown: Callable[[str], Awaitable[None]] | None = None,
    ):
        """``on_unknown`` hears the topic of each message for a bed with no route (after it
        is counted): data for a bed with no patient on protocol (``daemon.admission_desk``)."""
        self._routes = dict(routes)
        self._emit = emit
        self._counters = counters
        self._now = now
        self._on_unknown = on_unknown

    @property
    def topics(self) -> list[str]:
        """The topics to subscribe to."""
        return sorted(self._routes)

    def add(self, topic: str, route: Route) -> None:
        """Route one more topic."""
        self._routes[topic] = route

    def remove(self, topic: str) -> None:
        """Stop routing a topic (its bed's watch ended)."""
        self._routes.pop(topic, None)

    async def on_message(self, topic: str, payload: bytes) -> None:
        """Decode one message; a bad one is counted and logged, never raised.

        An ``InputError`` is counted under the route's counter with its reason; any
        other exception from the decoder is a bug, counted with reason
        ``decoder_error`` and logged with its traceback.
        """
        route = self._routes.get(topic)
        if route is None:
            # Subscriptions are wildcards: a monitor of a bed that is not (or no longer)
            # configured ends here, and its refusals say so.
            reject(
                self._counters,
                REJECTED,
                "unknown_bed",
                "no configured bed has this topic",
                where=topic,
                payload=payload,
            )
            if self._on_unknown is not None:
                await self._on_unknown(topic)
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
        except Exception:
            # A decoder bug, not bad input: one message is lost, the daemon is not.
            # Exception, not BaseException: cancellation and exit still propagate.
            self._counters.inc(route.counter, DECODER_ERROR)
            log.exception(
                "decoder failed on a message at %s (counted as %s/%s); payload: %s",
                sanitize(topic),
                route.counter,
                DECODER_ERROR,
                preview(payload),
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
