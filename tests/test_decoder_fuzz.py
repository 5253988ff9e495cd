"""Fuzzing the MQTT decoders: any bytes give events or an ``InputError``, nothing else.

Each decoder gets arbitrary bytes, mutated valid payloads, and structured hostile JSON
(valid messages with fields replaced by nested containers, huge integers, extreme
floats, control characters and wrong types). ``WARDD_FUZZ_EXAMPLES`` sets the number
of examples per test (default 300, a few seconds in all; 100000 for the full run).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon import mdc
from daemon.alerts import _parse_ack
from daemon.clinical.dose import parse_bag
from daemon.clinical.observations import parse_observation
from daemon.errors import InputError
from daemon.events import BagHung, Health, Observation, SourceHealth, VitalSample
from daemon.metrics import Counters
from daemon.payloads import load_json_object
from daemon.telemetry import (
    ProbeOff,
    _plain_values,
    _well_formed,
    _WireObservation,
    check_observation,
    decode_vitals,
    vitals_decoder,
)

EXAMPLES = int(os.environ.get("WARDD_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NOW = datetime(2026, 3, 2, 20, 0, 5, tzinfo=UTC)
WHERE = "ward/w1/bed/b1/x"
REASON = re.compile(r"^[a-z_]{3,40}$")

VITALS: dict[str, Any] = {
    "ts": "2026-03-02T20:00:00Z",
    "device": "monitor-12",
    "obs": [
        {"code": "MDC_TEMP_BODY", "value": 38.2, "unit": "Cel"},
        {"code": 150022, "value": 72, "unit": "mm[Hg]"},
        {"code": "150456", "value": 97, "unit": "%"},
    ],
}
OBSERVATION: dict[str, Any] = {
    "by": "nurse-a",
    "time": "2026-03-02T19:00:00Z",
    "o2_flow_l_per_min": 2,
    "o2_device": "nasal_cannula",
    "vasopressors": 0,
    "acvpu": "A",
    "antipyretic_given": False,
    "corticosteroid_given": False,
    "handwriting": "normal",
    "ice_score": 10,
}
BAG: dict[str, Any] = {
    "bag_id": "B-1",
    "concentration_ug_per_ml": 0.0375,
    "volume_ml": 270,
    "hung_at": "2026-03-02T08:00:00Z",
}
ACK: dict[str, Any] = {"by": "nurse-a"}

# --- strategies --------------------------------------------------------------------------------

NASTY_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\u0000",
        "\u0000\n",
        "monitor\n",
        "monitor\\",
        "a,b=c d",
        '"quoted"',
        "\u2028",
        "\u202e",
        "\x1b[2J",
        "é" * 70,
        "x" * 65,
        "1²",
        "9" * 5000,
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2026-03-02T20:00:00",
        "NaN",
        "MDC_TEMP_BODY",
        "150364",
        "Cel",
        "[degF]",
    ]
)
TEXT = st.one_of(NASTY_TEXT, st.text(max_size=30), st.text(st.characters(max_codepoint=0x1F), max_size=5))
HUGE_INT = st.builds(
    lambda sign, digits: sign * 10**digits + 7, st.sampled_from([1, -1]), st.integers(15, 400)
)
NUMBER = st.one_of(
    st.integers(),
    HUGE_INT,
    st.floats(),  # NaN and infinities included: json.dumps writes them as NaN, Infinity
    st.sampled_from([0, -1, 1e308, -1e308, 5e-324, 8388607, 8388608, 0x7FFFFF, 2**53 + 1]),
)
LEAF = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)
JSON_VALUE = st.recursive(
    LEAF,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)),
    max_leaves=12,
)
# Raw JSON fragments that json.dumps cannot produce.
RAW = st.one_of(
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 1200).map(lambda n: '{"a":' * n + "0" + "}" * n),
    st.integers(1, 3000).map(lambda n: "[" * n),
    st.integers(18, 6000).map(lambda n: "9" * n),
    st.sampled_from(
        ["NaN", "Infinity", "-Infinity", "1e400", "-1e999", '"\\ud800"', '"\\udfff x"', "1.0e-400"]
    ),
)


def _raw_field(base: dict[str, Any], key: str, raw: str) -> bytes:
    return json.dumps({**base, key: "__RAW__"}).replace('"__RAW__"', raw).encode()


def payloads(base: dict[str, Any], nested: str | None = None) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, and ``base`` with fields replaced, added, removed or mutated."""
    keys = st.sampled_from([*sorted(base), "extra"])

    @st.composite
    def replaced(draw: st.DrawFn) -> bytes:
        body = dict(base)
        for _ in range(draw(st.integers(1, 3))):
            key = draw(keys)
            if draw(st.booleans()):
                body.pop(key, None)
            else:
                body[key] = draw(JSON_VALUE)
        return json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")

    @st.composite
    def nested_replaced(draw: st.DrawFn) -> bytes:
        # Hostile values inside a list of objects (the vitals ``obs`` items).
        assert nested is not None
        items = [dict(item) for item in base[nested]]
        item = items[draw(st.integers(0, len(items) - 1))]
        item[draw(st.sampled_from([*sorted(item), "extra"]))] = draw(JSON_VALUE)
        return json.dumps({**base, nested: items}).encode()

    @st.composite
    def raw(draw: st.DrawFn) -> bytes:
        return _raw_field(base, draw(keys), draw(RAW))

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(json.dumps(base).encode())
        for _ in range(draw(st.integers(1, 4))):
            index = draw(st.integers(0, len(data) - 1))
            op = draw(st.sampled_from(["flip", "insert", "delete"]))
            if op == "flip":
                data[index] ^= 1 << draw(st.integers(0, 7))
            elif op == "insert":
                data.insert(index, draw(st.integers(0, 255)))
            elif len(data) > 1:
                del data[index]
        return bytes(data)

    options = [st.binary(max_size=200), replaced(), raw(), mutated()]
    if nested is not None:
        options.append(nested_replaced())
    return st.one_of(options)


def check(decode: Callable[[bytes], object], payload: bytes, accepted: tuple[type, ...]) -> None:
    """The decoder returns one of ``accepted`` or raises an ``InputError`` with a stable reason."""
    error: InputError | None = None
    try:
        result = decode(payload)
    except InputError as exc:
        error = exc
    if error is None:
        assert isinstance(result, accepted), result
        return
    assert REASON.match(error.reason), error.reason
    assert error.detail
    str(error).encode("utf-8")  # the message itself is loggable text


# --- one fuzz test per decoder -----------------------------------------------------------------


@FUZZ
@given(payloads(VITALS, nested="obs"))
def test_vitals_decoder(payload: bytes) -> None:
    counters = Counters()
    decode = vitals_decoder(counters, 65_536, 300.0)

    def run(data: bytes) -> object:
        events = decode(data, "w1", "b1", WHERE, NOW)
        for event in events:
            assert isinstance(event, VitalSample | SourceHealth)
            if isinstance(event, VitalSample):
                assert event.values
                assert all(isinstance(v, float) for v in event.values.values())
                event.device.encode("ascii")
            else:
                assert event.health is Health.LOST
        return events

    check(run, payload, (list,))
    for reason in counters.snapshot().get("mqtt.rejected", {}):
        assert REASON.match(reason)


@FUZZ
@given(payloads(VITALS, nested="obs"))
def test_decode_vitals(payload: bytes) -> None:
    def run(data: bytes) -> object:
        decoded = decode_vitals(data, ward="w1", bed="b1", where=WHERE, now=NOW)
        assert all(REASON.match(e.reason) for e in decoded.rejected)
        return decoded

    check(run, payload, (object,))


@FUZZ
@given(payloads(OBSERVATION))
def test_parse_observation(payload: bytes) -> None:
    check(lambda data: parse_observation(data, "w1", "b1", WHERE, NOW), payload, (Observation,))


@FUZZ
@given(payloads(BAG))
def test_parse_bag(payload: bytes) -> None:
    check(lambda data: parse_bag(data, "w1", "b1", WHERE), payload, (BagHung,))


@FUZZ
@given(payloads(ACK))
def test_parse_ack(payload: bytes) -> None:
    check(_parse_ack, payload, (str, type(None)))


@FUZZ
@given(st.one_of(st.binary(max_size=300), payloads({"a": [1, {"b": "c"}]})))
def test_load_json_object(payload: bytes) -> None:
    check(lambda data: load_json_object(data, WHERE, unique_fields=True), payload, (dict,))


# --- the vitals fast path reads what the checked path reads ------------------------------------


def _checked(payload: bytes) -> dict[str, Any] | None:
    """What the checked path makes of a payload of the plain vitals shape, else None."""
    try:
        data = load_json_object(payload, WHERE)
    except InputError:
        return None
    if set(data) != {"ts", "device", "obs"}:
        return None
    return data


def _fast(payload: bytes) -> dict[str, Any] | None:
    """What the fast path reads, as the checked path's plain data."""
    wire = _well_formed(payload)
    return None if wire is None else dict(msgspec.to_builtins(wire))


def _same_reading(payload: bytes) -> None:
    fast = _fast(payload)
    if fast is None:
        return  # the checked path decides alone
    checked = _checked(payload)
    assert checked is not None, payload
    # The fields the decoder goes on to judge, with their types (1 and 1.0 differ there).
    assert [fast["ts"], fast["device"]] == [checked["ts"], checked["device"]]
    assert len(fast["obs"]) == len(checked["obs"])
    for mine, theirs in zip(fast["obs"], checked["obs"], strict=True):
        if isinstance(theirs, dict) and set(theirs) == {"code", "value", "unit"}:
            assert [(type(mine[k]), mine[k]) for k in ("code", "value", "unit")] == [
                (type(theirs[k]), theirs[k]) for k in ("code", "value", "unit")
            ]


@FUZZ
@given(payloads(VITALS, nested="obs"))
def test_vitals_fast_path_reads_what_the_checked_path_reads(payload: bytes) -> None:
    _same_reading(payload)


def test_vitals_fast_path_leaves_the_edges_to_the_checked_path() -> None:
    """Inputs msgspec would take but the checked path refuses, or reads differently."""
    edges = [
        _raw_field(VITALS, "ts", '"\\ud800"'),
        b"\xef\xbb\xbf" + json.dumps(VITALS).encode(),  # a UTF-8 byte order mark
        json.dumps({**VITALS, "obs": [{"code": 150364, "value": 10**18, "unit": "Cel"}]}).encode(),
        json.dumps({**VITALS, "obs": [{"code": 10**18, "value": 38, "unit": "Cel"}]}).encode(),
        _raw_field(VITALS, "obs", '[{"code": 150364, "value": 1e400, "unit": "Cel"}]'),
        _raw_field(VITALS, "obs", '[{"code": 150364, "value": NaN, "unit": "Cel"}]'),
        json.dumps({**VITALS, "extra": 1}).encode(),
        json.dumps({k: v for k, v in VITALS.items() if k != "device"}).encode(),
    ]
    for payload in edges:
        assert _fast(payload) is None, payload
    # The largest integer the checked path takes is taken by both.
    plain = json.dumps({**VITALS, "obs": [{"code": 150364, "value": 10**18 - 1, "unit": "Cel"}]})
    assert _fast(plain.encode()) is not None
    _same_reading(plain.encode())


def test_vitals_fast_path_takes_a_plain_message() -> None:
    payload = json.dumps(VITALS).encode()
    assert _fast(payload) == load_json_object(payload)
    # Duplicate fields: the last one counts on both paths.
    twice = b'{"ts": "2026-03-01T00:00:00Z", ' + json.dumps(VITALS).encode()[1:]
    assert _fast(twice) == load_json_object(twice)


_KNOWN = [
    (code, unit)
    for term in mdc.TERMS
    for code in (term.ref_id, term.code, str(term.code))
    for unit in mdc.UNITS[term.metric]
]
_UNITS = sorted({unit for units in mdc.UNITS.values() for unit in units})


_OBSERVATION = st.tuples(
    st.one_of(
        st.sampled_from(_KNOWN),  # mostly a code in a unit of its metric, as monitors send them
        st.sampled_from(_KNOWN),
        st.tuples(
            st.one_of(st.text(max_size=12), st.integers(-(10**17), 10**17)),
            st.one_of(st.sampled_from(_UNITS), st.text(max_size=12)),
        ),
    ),
    st.one_of(
        st.sampled_from(sorted(mdc.SENTINELS)),
        st.integers(-(10**17), 10**17),
        st.integers(-20, 400),
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(-50.0, 500.0),
    ),
)


def _checked_values(obs: list[tuple[tuple[str | int, str], float]]) -> dict[str, float] | None:
    """What ``check_observation`` makes of each observation, when it takes all of them
    and no metric twice; else None."""
    values: dict[str, float] = {}
    for (code, unit), value in obs:
        try:
            metric, converted = check_observation({"code": code, "value": value, "unit": unit}, WHERE)
        except (InputError, ProbeOff):
            return None
        if metric in values:
            return None
        values[metric] = converted
    return values


@FUZZ
@given(st.lists(_OBSERVATION, min_size=1, max_size=4))
def test_plain_values_read_as_check_observation(obs: list[tuple[tuple[str | int, str], float]]) -> None:
    """The decoder's shortcut for the common message: where it answers, it answers as
    ``check_observation`` does for each observation; it leaves anything refused to it."""
    plain = _plain_values([_WireObservation(code, value, unit) for (code, unit), value in obs])
    checked = _checked_values(obs)
    if checked is None:
        assert plain is None
    elif plain is not None:
        assert plain == checked
        assert all(type(v) is float for v in plain.values())


def test_plain_values_take_the_monitor_forms() -> None:
    assert _plain_values(
        [
            _WireObservation("MDC_TEMP_BODY", 38.2, "Cel"),
            _WireObservation(150456, 97, "%"),
            _WireObservation(147842, 80, "/min"),
        ]
    ) == {"temp_c": 38.2, "spo2_pct": 97.0, "hr_per_min": 80.0}
    twice = [_WireObservation("MDC_TEMP_BODY", 38.2, "Cel"), _WireObservation(150364, 38.3, "Cel")]
    assert _plain_values(twice) is None, "a metric twice is judged one by one"
