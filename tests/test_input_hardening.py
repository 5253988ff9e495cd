"""Hostile input on every inbound topic: refused with a stable reason, never raised otherwise."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from daemon.alerts import MAX_ACK_PAYLOAD_BYTES, _parse_ack
from daemon.clinical.dose import parse_bag
from daemon.clinical.observations import parse_observation
from daemon.errors import InputError
from daemon.events import BagHung, Event, Observation
from daemon.metrics import Counters
from daemon.payloads import MAX_INT_DIGITS, MAX_JSON_DEPTH, load_json_object
from daemon.telemetry import REJECTED, Route, TelemetryRouter, decode_vitals, vitals_decoder

NOW = datetime(2026, 3, 2, 20, 0, 5, tzinfo=UTC)
LIMIT = 65_536  # the default of mqtt.max_payload_bytes
WHERE = "ward/w1/bed/b1/x"

VITALS: dict[str, Any] = {
    "ts": "2026-03-02T20:00:00Z",
    "device": "monitor-12",
    "obs": [{"code": "MDC_TEMP_BODY", "value": 38.2, "unit": "Cel"}],
}
OBSERVATION: dict[str, Any] = {"by": "nurse-a", "ice_score": 10, "time": "2026-03-02T19:00:00Z"}
BAG: dict[str, Any] = {"bag_id": "B-1", "concentration_ug_per_ml": 0.0375, "hung_at": "2026-03-02T08:00:00Z"}
ACK: dict[str, Any] = {"by": "nurse-a"}


def vitals(payload: bytes) -> object:
    """The whole vitals message; a per-observation refusal is re-raised to be checked."""
    decoded = decode_vitals(payload, ward="w1", bed="b1", where=WHERE, now=NOW, max_bytes=LIMIT)
    if decoded.rejected:
        raise decoded.rejected[0]
    return decoded


def observation(payload: bytes) -> object:
    return parse_observation(payload, "w1", "b1", WHERE, NOW, max_bytes=LIMIT)


def bag(payload: bytes) -> object:
    return parse_bag(payload, "w1", "b1", WHERE, max_bytes=LIMIT)


def ack(payload: bytes) -> object:
    return _parse_ack(payload)


DECODERS: dict[str, tuple[Callable[[bytes], object], dict[str, Any]]] = {
    "vitals": (vitals, VITALS),
    "observations": (observation, OBSERVATION),
    "bag": (bag, BAG),
    "ack": (ack, ACK),
}


def refusal(decode: Callable[[bytes], object], payload: bytes) -> InputError:
    with pytest.raises(InputError) as caught:
        decode(payload)
    error = caught.value
    assert error.reason
    assert error.detail
    return error


def with_field(base: dict[str, Any], key: str, raw: str) -> bytes:
    """``base`` as JSON with ``key`` set to the raw JSON text ``raw`` (NaN, huge ints ...)."""
    body = json.dumps({**base, key: "__RAW__"})
    return body.replace('"__RAW__"', raw).encode()


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


HOSTILE_WHOLE: list[tuple[str, Callable[[dict[str, Any]], bytes], str]] = [
    ("not UTF-8", lambda base: b'{"by": "\xff\xfe"}', "invalid_json"),
    ("truncated", lambda base: json.dumps(base).encode()[:-3], "invalid_json"),
    ("NaN", lambda base: with_field(base, "x", "NaN"), "invalid_json"),
    ("Infinity", lambda base: with_field(base, "x", "-Infinity"), "invalid_json"),
    ("1e400", lambda base: with_field(base, "x", "1e400"), "huge_number"),
    ("huge integer", lambda base: with_field(base, "x", "9" * 400), "huge_number"),
    ("5000-digit integer", lambda base: with_field(base, "x", "1" * 5000), "huge_number"),
    ("deep arrays", lambda base: with_field(base, "x", deep(MAX_JSON_DEPTH + 1)), "too_deep"),
    ("very deep arrays", lambda base: with_field(base, "x", deep(3000)), "too_deep"),
    ("deep objects", lambda base: ('{"a":' * 1500 + "1" + "}" * 1500).encode(), "too_deep"),
    ("lone surrogate", lambda base: with_field(base, "x", '"\\ud800"'), "invalid_json"),
    ("oversize", lambda base: with_field(base, "x", '"' + "y" * LIMIT + '"'), "too_large"),
    ("array", lambda base: b"[1, 2]", "not_object"),
    ("string", lambda base: b'"text"', "not_object"),
    ("empty", lambda base: b"", "invalid_json"),
]


@pytest.mark.parametrize("topic", sorted(DECODERS))
@pytest.mark.parametrize(("case", "make", "reason"), HOSTILE_WHOLE, ids=[c[0] for c in HOSTILE_WHOLE])
def test_hostile_payloads_are_refused_with_their_reason_on_every_topic(
    topic: str, case: str, make: Callable[[dict[str, Any]], bytes], reason: str
) -> None:
    decode, base = DECODERS[topic]
    payload = make(base)
    if topic == "ack" and not payload:
        # The topic names the author; the payload only adds a display name.
        assert decode(payload) is None
        return
    if topic == "ack" and len(payload) > MAX_ACK_PAYLOAD_BYTES:
        # Acknowledgements have their own, smaller limit, checked first.
        reason = "too_large"
    assert refusal(decode, payload).reason == reason


def test_depth_and_digit_limits_accept_what_is_within_them() -> None:
    assert load_json_object(with_field({}, "x", deep(MAX_JSON_DEPTH - 1))) == {"x": _nest(MAX_JSON_DEPTH - 1)}
    assert load_json_object(with_field({}, "x", "9" * MAX_INT_DIGITS)) == {"x": int("9" * MAX_INT_DIGITS)}
    assert load_json_object(with_field({}, "x", "-" + "9" * MAX_INT_DIGITS))["x"] < 0
    # Brackets inside strings are text, not nesting.
    assert load_json_object(with_field({}, "x", json.dumps("[" * 100 + '\\"{'))) == {"x": "[" * 100 + '\\"{'}


def _nest(levels: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(levels - 1):
        out = [out]
    return out


def test_messages_say_what_and_where() -> None:
    error = refusal(bag, with_field(BAG, "x", deep(40)))
    assert error.where == WHERE
    assert "41 levels" in error.detail
    assert str(MAX_JSON_DEPTH) in error.detail
    error = refusal(bag, with_field(BAG, "x", "9" * 400))
    assert "400 digits" in error.detail
    error = refusal(bag, b'{"bag_id": "\xc3\x28"}')
    assert "not UTF-8" in error.detail
    assert "offset 12" in error.detail


# --- per-field refusals, topic by topic --------------------------------------------------------


def vitals_with(**top: Any) -> bytes:
    return json.dumps({**VITALS, **top}).encode()


def obs_with(**item: Any) -> bytes:
    return json.dumps(
        {**VITALS, "obs": [{"code": "MDC_TEMP_BODY", "value": 38.2, "unit": "Cel", **item}]}
    ).encode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (vitals_with(device="\u0000\n"), "bad_device"),
        (vitals_with(device="monitor\n"), "bad_device"),
        (vitals_with(device="monitor\\"), "bad_device"),
        (vitals_with(device="mon itor"), "bad_device"),
        (vitals_with(device="mon,itor=1"), "bad_device"),
        (vitals_with(device="x" * 65), "bad_device"),
        (vitals_with(device=""), "bad_device"),
        (vitals_with(device=12), "bad_device"),
        (vitals_with(device=["m"]), "bad_device"),
        (vitals_with(ts=12), "bad_timestamp"),
        (vitals_with(ts="0001-01-01T00:00:00+01:00"), "bad_timestamp"),
        (vitals_with(ts="2026-03-02T21:00:00Z"), "future_timestamp"),
        (vitals_with(ts="2026-02-01T20:00:00Z"), "too_old"),
        (vitals_with(obs={"code": 1}), "bad_obs"),
        (vitals_with(obs=[]), "bad_obs"),
        (vitals_with(obs=[[1]]), "bad_obs"),
        (vitals_with(extra=1), "unknown_field"),
        (json.dumps({"device": "m", "obs": []}).encode(), "missing_field"),
        (obs_with(value="38"), "not_a_number"),
        (obs_with(value=True), "not_a_number"),
        (obs_with(value=[[38]]), "not_a_number"),
        (obs_with(code=["MDC_TEMP_BODY"]), "unknown_code"),
        (obs_with(code="1²"), "unknown_code"),
        (obs_with(code="1" * 5000), "unknown_code"),
        (obs_with(unit={"u": 1}), "wrong_unit"),
        (obs_with(value=10**17), "implausible"),
        (obs_with(extra=1), "unknown_field"),
    ],
)
def test_vitals_refusals(payload: bytes, reason: str) -> None:
    assert refusal(vitals, payload).reason == reason


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("by", "nurse\u0000a", "bad_name"),
        ("by", "nurse\na", "bad_name"),
        ("by", "nurse\u2028a", "bad_name"),
        ("by", "\u202enurse", "bad_name"),
        ("by", "x" * 65, "bad_name"),
        ("by", " ", "bad_name"),
        ("by", 5, "bad_type"),
        ("by", {"n": 1}, "bad_type"),
        ("ice_score", 10**17, "out_of_range"),
        ("ice_score", 1.5, "bad_type"),
        ("ice_score", [10], "bad_type"),
        ("o2_flow_l_per_min", 10**17, "out_of_range"),
        ("o2_flow_l_per_min", "2", "bad_type"),
        ("o2_device", "air\n", "bad_value"),
        ("o2_device", [], "bad_type"),
        ("acvpu", ["A"], "bad_type"),
        ("time", "9999-12-31T23:59:59-01:00", "bad_time"),
        ("time", {"t": 1}, "bad_time"),
    ],
)
def test_observation_refusals(field: str, value: Any, reason: str) -> None:
    payload = json.dumps({**OBSERVATION, field: value}).encode()
    assert refusal(observation, payload).reason == reason


def test_observation_names_may_be_any_printable_script() -> None:
    entry = observation(json.dumps({**OBSERVATION, "by": "  Zoé Dupont-Ngô  "}).encode())
    assert isinstance(entry, Observation)
    assert entry.by == "Zoé Dupont-Ngô"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("bag_id", "B\n1", "bad_bag_id"),
        ("bag_id", "B 1", "bad_bag_id"),
        ("bag_id", "B\\", "bad_bag_id"),
        ("bag_id", "B/1", "bad_bag_id"),
        ("bag_id", "x" * 65, "bad_bag_id"),
        ("bag_id", ["B"], "bad_bag_id"),
        ("concentration_ug_per_ml", 10**17, "bad_concentration"),
        ("concentration_ug_per_ml", [1], "bad_concentration"),
        ("volume_ml", 10**17, "bad_volume"),
        ("volume_ml", {"ml": 1}, "bad_volume"),
        ("hung_at", "0001-01-01T00:00:00+01:00", "bad_time"),
        ("hung_at", [], "bad_time"),
        ("extra", 1, "unknown_field"),
    ],
)
def test_bag_refusals(field: str, value: Any, reason: str) -> None:
    payload = json.dumps({**BAG, field: value}).encode()
    assert refusal(bag, payload).reason == reason


def test_bag_ids_are_trimmed_and_may_hold_colons() -> None:
    hung = bag(json.dumps({**BAG, "bag_id": " LOT:2026.03-1 \n"}).encode())
    assert isinstance(hung, BagHung)
    assert hung.bag_id == "LOT:2026.03-1"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("nurse\u0000a", "bad_by"),
        ("nurse\x1b[2J", "bad_by"),
        ("nu\u2029rse", "bad_by"),
        ("x" * 65, "bad_by"),
        ("", "bad_by"),
        (["n"], "bad_by"),
    ],
)
def test_ack_refusals(value: Any, reason: str) -> None:
    assert refusal(ack, json.dumps({"by": value}).encode()).reason == reason


# --- the router: a decoder bug is counted, logged and survived ---------------------------------


class Collected:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def emit(self, event: Event) -> None:
        self.events.append(event)


async def test_a_decoder_bug_is_counted_as_decoder_error_and_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(payload: bytes, ward: str, bed: str, where: str, now: datetime) -> Sequence[Event]:
        return [BagHung(ward, bed, now, "B", 1 / 0)]

    counters = Counters()
    sink = Collected()
    router = TelemetryRouter(
        {"ward/w1/bed/b1/x": Route("w1", "b1", broken)}, sink.emit, counters, lambda: NOW
    )
    with caplog.at_level(logging.ERROR, logger="daemon.telemetry"):
        await router.on_message("ward/w1/bed/b1/x", b'{"secret": "' + b"z" * 5000 + b'"}')
    assert counters.get(REJECTED, "decoder_error") == 1
    assert sink.events == []
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None
    assert record.exc_info[0] is ZeroDivisionError
    message = record.getMessage()
    assert "ward/w1/bed/b1/x" in message
    assert "decoder_error" in message
    assert "... (5014 bytes)" in message  # the payload is truncated
    # The next message is handled as usual.
    good = Route("w1", "b1", lambda p, w, b, where, now: [parse_bag(p, w, b, where)])
    router.add("ward/w1/bed/b1/bag", good)
    await router.on_message("ward/w1/bed/b1/bag", json.dumps(BAG).encode())
    assert len(sink.events) == 1


async def test_router_refuses_hostile_vitals_without_raising(caplog: pytest.LogCaptureFixture) -> None:
    counters = Counters()
    sink = Collected()
    decode = vitals_decoder(counters, LIMIT, 300.0)
    router = TelemetryRouter({"t": Route("w1", "b1", decode)}, sink.emit, counters, lambda: NOW)
    payloads = [
        with_field(VITALS, "x", deep(5000)),
        with_field(VITALS, "x", "9" * 400),
        vitals_with(device="\u0000\n"),
        json.dumps({**VITALS, "obs": [{"code": "MDC_TEMP_BODY", "value": 10**17, "unit": "Cel"}]}).encode(),
    ]
    for payload in payloads:
        await router.on_message("t", payload)
    assert counters.snapshot()[REJECTED] == {
        "too_deep": 1,
        "huge_number": 1,
        "bad_device": 1,
        "implausible": 1,
    }
    assert counters.get(REJECTED, "decoder_error") == 0
    assert not any("\n" in r.getMessage() for r in caplog.records)


async def test_rejection_logs_escape_control_characters(caplog: pytest.LogCaptureFixture) -> None:
    counters = Counters()
    router = TelemetryRouter(
        {"t": Route("w1", "b1", lambda p, w, b, where, now: [parse_bag(p, w, b, where)])},
        Collected().emit,
        counters,
        lambda: NOW,
    )
    with caplog.at_level(logging.WARNING):
        await router.on_message("t", json.dumps({**BAG, "x\nFAKE LOG LINE": 1}).encode())
    assert counters.get(REJECTED, "unknown_field") == 1
    [record] = caplog.records
    assert "\n" not in record.getMessage()
