"""Validation of the nurses' observation JSON (``daemon.clinical.vitals.parse_observation``)."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.clinical.observations import parse_observation
from daemon.errors import InputError
from daemon.events import Acvpu, Handwriting, IcpFinding, MotorWeakness, Seizure, SeizurePattern
from daemon.timefmt import parse_iso

NOW = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
WHERE = "ward/w1/bed/b1/observations"


def parse(data: Any) -> Any:
    payload = data if isinstance(data, bytes) else json.dumps(data).encode()
    return parse_observation(payload, "w1", "b1", WHERE, NOW)


def reason(data: Any) -> str:
    with pytest.raises(InputError) as info:
        parse(data)
    assert info.value.where == WHERE
    return info.value.reason


def test_a_full_entry() -> None:
    obs = parse(
        {
            "time": "2026-03-02T21:00:00+01:00",
            "by": " nurse-a ",
            "o2_flow_l_per_min": 4,
            "o2_device": "nasal_cannula",
            "vasopressors": 0,
            "acvpu": "v",
            "antipyretic_given": True,
            "corticosteroid_given": False,
            "handwriting": "changed",
            "ice_score": 8,
        }
    )
    assert obs.time == NOW
    assert obs.time.tzinfo is UTC
    assert (obs.ward, obs.bed, obs.by) == ("w1", "b1", "nurse-a")
    assert obs.o2_flow_l_per_min == 4.0
    assert obs.acvpu is Acvpu.VOICE
    assert obs.handwriting is Handwriting.CHANGED
    assert obs.ice_score == 8
    assert obs.antipyretic_given is True
    assert obs.corticosteroid_given is False


def test_the_astct_fields() -> None:
    obs = parse(
        {
            "id": "obs-17",
            "by": "nurse-a",
            "vasopressors": 1,
            "vasopressin": True,
            "anti_cytokine_given": True,
            "seizure": "electrographic",
            "seizure_pattern": "repeated_no_baseline",
            "seizure_over_5_min": False,
            "seizure_resolved": False,
            "motor_weakness": "paraparesis",
            "raised_icp": ["cranial_nerve_vi_palsy", "focal_oedema"],
        }
    )
    assert obs.id == "obs-17"
    assert (obs.vasopressors, obs.vasopressin, obs.anti_cytokine_given) == (1, True, True)
    assert obs.seizure is Seizure.ELECTROGRAPHIC
    assert obs.seizure_pattern is SeizurePattern.REPEATED_NO_BASELINE
    assert (obs.seizure_over_5_min, obs.seizure_resolved) == (False, False)
    assert obs.motor_weakness is MotorWeakness.PARAPARESIS
    assert obs.raised_icp == (IcpFinding.CRANIAL_NERVE_VI_PALSY, IcpFinding.FOCAL_OEDEMA)
    assert parse({"raised_icp": []}).raised_icp == ()
    assert parse({"seizure": "none"}).seizure is Seizure.NONE


def test_corrections_and_withdrawals() -> None:
    fix = parse(
        {"corrects": "obs-17", "id": "obs-18", "by": "dr-b", "time": "2026-03-02T19:00:00Z", "ice_score": 9}
    )
    assert (fix.corrects, fix.id, fix.by, fix.ice_score) == ("obs-17", "obs-18", "dr-b", 9)
    gone = parse({"withdraws": "obs-17", "by": "dr-b"})
    assert (gone.withdraws, gone.by, gone.time) == ("obs-17", "dr-b", NOW)


def test_time_defaults_to_now() -> None:
    assert parse({"ice_score": 10}).time == NOW


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b'{"ice_score": NaN}', "invalid_json"),
        ([1, 2], "not_object"),
        (b'{"ice_score": 5, "ice_score": 6}', "duplicate_field"),
        ({"ice_score": 5, "bed": "b2"}, "unknown_field"),
        ({"temperature": 38}, "unknown_field"),
        ({"ice_score": 11}, "out_of_range"),
        ({"ice_score": -1}, "out_of_range"),
        ({"ice_score": 5.5}, "bad_type"),
        ({"ice_score": True}, "bad_type"),
        ({"ice_score": "5"}, "bad_type"),
        ({"o2_flow_l_per_min": 61}, "out_of_range"),
        ({"o2_flow_l_per_min": -1}, "out_of_range"),
        ({"o2_flow_l_per_min": "4"}, "bad_type"),
        ({"vasopressors": 6}, "out_of_range"),
        ({"vasopressors": 1.5}, "bad_type"),
        ({"o2_device": "nasal-prongs"}, "bad_value"),
        ({"o2_device": 3}, "bad_type"),
        ({"o2_device": "air", "o2_flow_l_per_min": 2}, "inconsistent"),
        ({"acvpu": "X"}, "bad_value"),
        ({"handwriting": "bad"}, "bad_value"),
        ({"antipyretic_given": "yes"}, "bad_type"),
        ({"antipyretic_given": 1}, "bad_type"),
        ({"by": ""}, "bad_name"),
        ({"by": 7, "ice_score": 10}, "bad_type"),
        ({"by": "x" * 65, "ice_score": 10}, "bad_name"),
        ({"ice_score": 10, "time": "2026-03-02T20:00:00"}, "bad_time"),
        ({"ice_score": 10, "time": "yesterday"}, "bad_time"),
        ({"ice_score": 10, "time": 1700000000}, "bad_time"),
        ({"ice_score": 10, "time": "2026-03-02T21:00:00Z"}, "future_time"),
        ({"ice_score": 10, "time": "2026-02-20T20:00:00Z"}, "too_old"),
        ({}, "empty"),
        ({"by": "nurse-a", "time": "2026-03-02T19:00:00Z"}, "empty"),
        ({"vasopressin": "yes"}, "bad_type"),
        ({"anti_cytokine_given": 1}, "bad_type"),
        ({"seizure": "grand_mal"}, "bad_value"),
        ({"seizure": "none", "seizure_over_5_min": True}, "inconsistent"),
        ({"seizure_pattern": "single"}, "inconsistent"),
        ({"seizure": "clinical", "seizure_pattern": "twice"}, "bad_value"),
        ({"seizure": "clinical", "seizure_resolved": "yes"}, "bad_type"),
        ({"motor_weakness": "tremor"}, "bad_value"),  # tremor is CTCAE, not ICANS
        ({"raised_icp": "papilloedema"}, "bad_type"),
        ({"raised_icp": ["papilledema"]}, "bad_value"),
        ({"raised_icp": [3]}, "bad_type"),
        ({"raised_icp": ["papilloedema", "papilloedema"]}, "bad_value"),
        ({"ice_score": 5, "id": "has space"}, "bad_id"),
        ({"ice_score": 5, "id": ""}, "bad_id"),
        ({"ice_score": 5, "id": 7}, "bad_type"),
        ({"withdraws": "o-1"}, "missing_by"),
        ({"withdraws": "o-1", "by": "b", "ice_score": 5}, "inconsistent"),
        ({"withdraws": "o-1", "by": "b", "id": "o-2"}, "inconsistent"),
        ({"withdraws": "o-1", "corrects": "o-1", "by": "b"}, "inconsistent"),
        ({"corrects": "o-1", "by": "b", "ice_score": 5}, "missing_time"),
        ({"corrects": "o-1", "ice_score": 5, "time": "2026-03-02T19:00:00Z"}, "missing_by"),
        (
            {"corrects": "o-1", "id": "o-1", "by": "b", "ice_score": 5, "time": "2026-03-02T19:00:00Z"},
            "inconsistent",
        ),
        ({"corrects": "o-1", "by": "b", "time": "2026-03-02T19:00:00Z"}, "empty"),
    ],
)
def test_rejections_have_stable_reasons(data: Any, expected: str) -> None:
    assert reason(data) == expected


def test_a_little_clock_skew_is_accepted() -> None:
    late = (NOW + timedelta(minutes=4)).isoformat()
    assert parse({"ice_score": 10, "time": late}).time == NOW + timedelta(minutes=4)


MS = timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # vitals.py site choices: oxygen flow 0-60 L/min, 0-5 vasopressors; ASTCT ICE 0-10.
        ({"o2_flow_l_per_min": 0}, None),
        ({"o2_flow_l_per_min": -0.01}, "out_of_range"),
        ({"o2_flow_l_per_min": 60}, None),
        ({"o2_flow_l_per_min": 60.01}, "out_of_range"),
        ({"vasopressors": 0}, None),
        ({"vasopressors": -1}, "out_of_range"),
        ({"vasopressors": 5}, None),
        ({"vasopressors": 6}, "out_of_range"),
        ({"ice_score": 0}, None),
        ({"ice_score": 10}, None),
        # Air with no flow, or a flow of 0, is consistent.
        ({"o2_device": "air", "o2_flow_l_per_min": 0}, None),
        ({"o2_device": "air", "o2_flow_l_per_min": 0.01}, "inconsistent"),
        # A nurse's clock may run up to 300 s ahead; entries up to 7 days old are accepted.
        ({"ice_score": 10, "time": NOW + timedelta(seconds=300)}, None),
        ({"ice_score": 10, "time": NOW + timedelta(seconds=300) + MS}, "future_time"),
        ({"ice_score": 10, "time": NOW - timedelta(days=7)}, None),
        ({"ice_score": 10, "time": NOW - timedelta(days=7) - MS}, "too_old"),
    ],
)
def test_range_and_time_edges(data: dict[str, Any], expected: str | None) -> None:
    data = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}
    if expected is None:
        obs = parse(data)
        assert obs.time == (parse_iso(data["time"]) if "time" in data else NOW)
    else:
        assert reason(data) == expected


@pytest.mark.parametrize(
    ("letter", "acvpu"),
    [
        ("A", Acvpu.ALERT),
        ("c", Acvpu.NEW_CONFUSION),
        ("V", Acvpu.VOICE),
        ("p", Acvpu.PAIN),
        ("U", Acvpu.UNRESPONSIVE),
    ],
)
def test_acvpu_letters_in_either_case(letter: str, acvpu: Acvpu) -> None:
    assert parse({"acvpu": letter}).acvpu is acvpu


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(payload: bytes) -> None:
    with contextlib.suppress(InputError):
        parse(payload)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-100, 100) | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "time",
                "by",
                "o2_flow_l_per_min",
                "o2_device",
                "vasopressors",
                "acvpu",
                "antipyretic_given",
                "handwriting",
                "ice_score",
                "id",
                "corrects",
                "withdraws",
                "vasopressin",
                "seizure",
                "seizure_pattern",
                "raised_icp",
                "motor_weakness",
            ]
        ),
        _json_values,
        max_size=5,
    )
)
def test_random_objects_either_parse_or_raise_input_error(data: dict[str, Any]) -> None:
    try:
        obs = parse(data)
    except InputError:
        return
    assert obs.ice_score is None or 0 <= obs.ice_score <= 10


@pytest.mark.parametrize(
    ("data", "expected", "detail"),
    [
        (
            {"ice_score": 5, "bed": "b2"},
            "unknown_field",
            "unknown field(s) 'bed' (allowed: acvpu, anti_cytokine_given, antipyretic_given, by, corrects, corticosteroid_given, dose_declaration, handwriting, ice_score, id, motor_weakness, o2_device, o2_flow_l_per_min, raised_icp, seizure, seizure_over_5_min, seizure_pattern, seizure_resolved, time, vasopressin, vasopressors, withdraws)",
        ),
        ({"by": 7, "ice_score": 10}, "bad_type", "'by' must be a string, got 7"),
        (
            {"by": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "ice_score": 10},
            "bad_name",
            "'by' has 65 characters (limit 64); a name is 1-64 printable characters (no control characters)",
        ),
        ({"o2_device": 3}, "bad_type", "'o2_device' must be a string"),
        (
            {"o2_device": "nasal-prongs"},
            "bad_value",
            "unknown o2_device 'nasal-prongs' (known: air, nasal_cannula, blow_by, high_flow, facemask, non_rebreather, venturi, cpap, bipap, ventilator)",
        ),
        (
            {"o2_device": "air", "o2_flow_l_per_min": 2},
            "inconsistent",
            "o2_device 'air' with an oxygen flow above 0",
        ),
        (
            {"withdraws": "o-1", "by": "b", "ice_score": 5},
            "inconsistent",
            "a withdrawal records nothing else (send a correction)",
        ),
        ({}, "empty", "the observation records nothing"),
        (
            {"withdraws": "o-1", "corrects": "o-1", "by": "b"},
            "inconsistent",
            "an entry either corrects or withdraws, not both",
        ),
        ({"withdraws": "o-1", "by": "b", "id": "o-2"}, "inconsistent", "a withdrawal has no 'id' of its own"),
        (
            {"corrects": "o-1", "id": "o-1", "by": "b", "ice_score": 5, "time": "2026-03-02T19:00:00Z"},
            "inconsistent",
            "an entry cannot correct itself",
        ),
        ({"withdraws": "o-1"}, "missing_by", "a correction or a withdrawal must say who makes it ('by')"),
        (
            {"corrects": "o-1", "by": "b", "ice_score": 5},
            "missing_time",
            "a correction must give the 'time' of the observation it restates",
        ),
        ({"ice_score": 5, "id": 7}, "bad_type", "'id' must be a string, got 7"),
        (
            {"ice_score": 5, "id": "has space"},
            "bad_id",
            "'id' must be 1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit, got 'has space'",
        ),
        (
            {"seizure": "none", "seizure_over_5_min": True},
            "inconsistent",
            "seizure_pattern, seizure_over_5_min and seizure_resolved describe a seizure",
        ),
        ({"raised_icp": "papilloedema"}, "bad_type", "'raised_icp' must be a list, got 'papilloedema'"),
        ({"raised_icp": [3]}, "bad_type", "'raised_icp' items must be strings, got 3"),
        (
            {"raised_icp": ["papilledema"]},
            "bad_value",
            "'raised_icp' item 'papilledema' is not one of focal_oedema, diffuse_oedema, decerebrate_posturing, decorticate_posturing, cranial_nerve_vi_palsy, papilloedema, cushings_triad",
        ),
        (
            {"raised_icp": ["papilloedema", "papilloedema"]},
            "bad_value",
            "'raised_icp' lists papilloedema twice",
        ),
        (
            {"ice_score": 10, "time": 1700000000},
            "bad_time",
            "'time' must be an RFC 3339 string, got 1700000000",
        ),
        (
            {"ice_score": 10, "time": "2026-03-02T21:00:00Z"},
            "future_time",
            "'time' 2026-03-02T21:00:00Z is ahead of the daemon's clock",
        ),
        (
            {"ice_score": 10, "time": "2026-02-20T20:00:00Z"},
            "too_old",
            "'time' 2026-02-20T20:00:00Z is more than 7 days old",
        ),
        ({"o2_flow_l_per_min": "4"}, "bad_type", "'o2_flow_l_per_min' must be a number, got '4'"),
        ({"ice_score": "5"}, "bad_type", "'ice_score' must be a whole number, got '5'"),
        ({"ice_score": 11}, "out_of_range", "'ice_score' 11 is outside 0-10"),
        ({"antipyretic_given": "yes"}, "bad_type", "'antipyretic_given' must be true or false, got 'yes'"),
        ({"acvpu": 3}, "bad_type", "'acvpu' must be a string, got 3"),
        ({"acvpu": "X"}, "bad_value", "'acvpu' 'X' is not one of A, C, V, P, U"),
        (
            {"corticosteroid_given": "yes"},
            "bad_type",
            "'corticosteroid_given' must be true or false, got 'yes'",
        ),
        (
            {"seizure": "clinical", "seizure_over_5_min": "yes"},
            "bad_type",
            "'seizure_over_5_min' must be true or false, got 'yes'",
        ),
        ({"dose_declaration": 5}, "bad_type", "'dose_declaration' must be an object, got 5"),
    ],
)
def test_rejections_say_what_is_wrong(data: dict[str, Any], expected: str, detail: str) -> None:
    """The detail is logged for the person who sent the entry: it names the field and the value."""
    with pytest.raises(InputError) as info:
        parse(data)
    assert (info.value.reason, info.value.detail, info.value.where) == (expected, detail, WHERE)
    assert str(info.value) == f"{WHERE}: {expected}: {detail}"


def test_a_large_payload_is_refused_under_the_given_limit() -> None:
    payload = json.dumps({"ice_score": 10, "by": "n" * 40}).encode()
    assert parse_observation(payload, "w1", "b1", WHERE, NOW, max_bytes=len(payload)).ice_score == 10
    with pytest.raises(InputError) as info:
        parse_observation(payload, "w1", "b1", WHERE, NOW, max_bytes=len(payload) - 1)
    assert info.value.reason == "too_large"


def test_every_field_reaches_the_observation() -> None:
    obs = parse(
        {
            "o2_device": "venturi",
            "corticosteroid_given": True,
            "seizure": "clinical",
            "seizure_over_5_min": True,
        }
    )
    assert (obs.o2_device, obs.corticosteroid_given, obs.seizure_over_5_min) == ("venturi", True, True)
