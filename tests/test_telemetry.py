"""The vitals payload decoder: what is accepted, converted, and refused (and why)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from daemon.errors import InputError
from daemon.events import Health, Metric, SourceHealth, VitalSample
from daemon.metrics import Counters
from daemon.telemetry import VITALS_SCHEMA, decode_vitals, vitals_decoder

NOW = datetime(2026, 3, 2, 20, 0, 5, tzinfo=UTC)


def _payload(obs: list[dict[str, Any]] | None = None, **top: Any) -> bytes:
    body: dict[str, Any] = {
        "ts": "2026-03-02T20:00:00Z",
        "device": "monitor-12",
        "obs": obs
        if obs is not None
        else [
            {"code": "MDC_TEMP_BODY", "value": 38.2, "unit": "Cel"},
            {"code": "MDC_PRESS_BLD_NONINV_SYS", "value": 118, "unit": "mm[Hg]"},
            {"code": 150022, "value": 72, "unit": "mm[Hg]"},
            {"code": "150456", "value": 97, "unit": "%"},
            {"code": "MDC_ECG_HEART_RATE", "value": 92, "unit": "/min"},
            {"code": "MDC_RESP_RATE", "value": 18, "unit": "/min"},
        ],
    }
    body.update(top)
    return json.dumps(body).encode()


def _decode(payload: bytes) -> Any:
    return decode_vitals(payload, ward="haem", bed="12", where="ward/haem/bed/12/vitals", now=NOW)


def test_a_full_message_becomes_one_sample_with_event_time() -> None:
    decoded = _decode(_payload())
    assert decoded.rejected == ()
    assert decoded.sample == VitalSample(
        "haem",
        "12",
        "monitor-12",
        datetime(2026, 3, 2, 20, 0, tzinfo=UTC),
        {
            Metric.TEMP_C: 38.2,
            Metric.SBP_MMHG: 118.0,
            Metric.DBP_MMHG: 72.0,
            Metric.SPO2_PCT: 97.0,
            Metric.HR_PER_MIN: 92.0,
            Metric.RR_PER_MIN: 18.0,
        },
    )


def test_fahrenheit_is_converted_and_offsets_normalised() -> None:
    decoded = _decode(
        _payload(
            [{"code": "MDC_TEMP_BODY", "value": 100.76, "unit": "[degF]"}], ts="2026-03-02T21:00:00+01:00"
        )
    )
    assert decoded.sample is not None
    assert decoded.sample.values[Metric.TEMP_C] == pytest.approx(38.2)
    assert decoded.sample.time == datetime(2026, 3, 2, 20, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b'{"ts": NaN}', "invalid_json"),
        (b"[1, 2]", "not_object"),
        (json.dumps({"device": "m", "obs": []}).encode(), "missing_field"),
        (_payload(extra=1), "unknown_field"),
        (_payload(ts="yesterday"), "bad_timestamp"),
        (_payload(ts="2026-03-02T20:00:00"), "bad_timestamp"),
        (_payload(ts="2026-03-02T20:06:00Z"), "future_timestamp"),
        (_payload(device=""), "bad_device"),
        (_payload([]), "bad_obs"),
        (b"{" + b'"pad": "' + b"x" * 70_000 + b'"}', "too_large"),
    ],
)
def test_malformed_messages_are_refused_whole(payload: bytes, reason: str) -> None:
    with pytest.raises(InputError) as caught:
        _decode(payload)
    assert caught.value.reason == reason
    assert caught.value.where == "ward/haem/bed/12/vitals"


@pytest.mark.parametrize(
    ("obs", "reason"),
    [
        ({"code": "MDC_NOT_A_THING", "value": 1, "unit": "%"}, "unknown_code"),
        ({"code": 999999, "value": 1, "unit": "%"}, "unknown_code"),
        ({"code": "MDC_TEMP_BODY", "value": 38.2, "unit": "K"}, "wrong_unit"),
        ({"code": "MDC_TEMP_BODY", "value": "38.2", "unit": "Cel"}, "not_a_number"),
        ({"code": "MDC_TEMP_BODY", "value": True, "unit": "Cel"}, "not_a_number"),
        ({"code": "MDC_TEMP_BODY", "value": 55.0, "unit": "Cel"}, "implausible"),
        ({"code": "MDC_PULS_OXIM_SAT_O2", "value": 101, "unit": "%"}, "implausible"),
        ({"code": "MDC_RESP_RATE", "value": 0, "unit": "/min"}, "implausible"),
        ({"code": "MDC_PULS_OXIM_SAT_O2", "value": 8388607, "unit": "%"}, "sentinel"),
        ({"code": "MDC_TEMP_BODY", "value": 38.0}, "missing_field"),
        ({"code": "MDC_TEMP_BODY", "value": 38.0, "unit": "Cel", "x": 1}, "unknown_field"),
    ],
)
def test_a_bad_observation_is_refused_and_the_rest_kept(obs: dict[str, Any], reason: str) -> None:
    good = {"code": "MDC_ECG_HEART_RATE", "value": 80, "unit": "/min"}
    decoded = _decode(_payload([good, obs]))
    assert [e.reason for e in decoded.rejected] == [reason]
    assert decoded.rejected[0].where.endswith("obs[1]")
    assert decoded.sample is not None
    assert dict(decoded.sample.values) == {Metric.HR_PER_MIN: 80.0}


def test_sentinel_is_a_probe_off_signal_never_a_value() -> None:
    counters = Counters()
    decode = vitals_decoder(counters, 65_536, 300)
    payload = _payload([{"code": "MDC_PULS_OXIM_SAT_O2", "value": 8388607, "unit": "%"}])
    events = decode(payload, "haem", "12", "t", NOW)
    assert events == [
        SourceHealth(
            "haem",
            "12",
            "monitor.spo2_pct",
            datetime(2026, 3, 2, 20, 0, tzinfo=UTC),
            Health.LOST,
            "probe-off",
        )
    ]
    assert counters.get("mqtt.rejected", "sentinel") == 1


def test_schema_lists_every_supported_code() -> None:
    codes = VITALS_SCHEMA["properties"]["obs"]["items"]["properties"]["code"]["oneOf"]
    assert "MDC_TEMP_BODY" in codes[0]["enum"]
    assert 150456 in codes[1]["enum"]


def test_exported_schema_file_is_up_to_date() -> None:
    """schemas/vitals.schema.json is what `wardd schema vitals` prints (regenerate it if not)."""
    path = Path(__file__).parent.parent / "schemas" / "vitals.schema.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(VITALS_SCHEMA))
