"""Line-protocol encoding of points: exact output, refusals, and that no input makes a second line."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.points import FieldValue, Point, time_ns

T0 = datetime(2026, 3, 2, 20, 0, 0, 123456, tzinfo=UTC)
T0_NS = 1_772_481_600_123_456_000


def _line(
    measurement: str = "vitals",
    tags: dict[str, str] | None = None,
    fields: dict[str, FieldValue] | None = None,
) -> str:
    return Point(measurement, tags or {}, fields if fields is not None else {"v": 1.5}, T0).to_line()


def test_time_ns_is_exact() -> None:
    assert time_ns(T0) == T0_NS
    assert time_ns(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    assert time_ns(datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC)) == 9_223_372_036_854_775_000
    # The same instant in another zone.
    assert time_ns(T0.astimezone(timezone(timedelta(hours=-5)))) == T0_NS
    for micro in (1, 999_999, 500_000):
        assert time_ns(T0.replace(microsecond=micro)) % 1_000_000_000 == micro * 1000


def test_time_ns_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        time_ns(datetime(2026, 3, 2, 20, 0))


def test_line_is_sorted_typed_and_nanosecond() -> None:
    line = _line(
        tags={"ward": "h", "bed": "12"},
        fields={"temp_c": 37.2, "hr": 80, "ok": True, "note": 'probe "B"', "whole": 37.0},
    )
    assert line == f'vitals,bed=12,ward=h hr=80i,note="probe \\"B\\"",ok=true,temp_c=37.2,whole=37 {T0_NS}'


def test_field_types() -> None:
    assert _line(fields={"b": False}).endswith(f" b=false {T0_NS}")
    assert _line(fields={"i": -(2**63)}).endswith(f" i=-9223372036854775808i {T0_NS}")
    assert _line(fields={"f": 1e-5}).endswith(f" f=1e-05 {T0_NS}")
    assert _line(fields={"s": "tab\there NUL\x00 back\\slash"}).endswith(
        f' s="tab\there NUL\x00 back\\\\slash" {T0_NS}'
    )


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="not storable"):
        _line(fields={"temp_c": value, "hr": 80})


def test_integers_beyond_64_bits_are_refused() -> None:
    with pytest.raises(ValueError, match="64-bit"):
        _line(fields={"n": 2**63})


def test_a_point_without_fields_is_refused() -> None:
    with pytest.raises(ValueError, match="no fields"):
        _line(fields={})


def test_unsupported_field_types_are_refused() -> None:
    with pytest.raises(TypeError, match="unsupported"):
        _line(fields={"x": None})  # type: ignore[dict-item]


def test_empty_tag_values_are_left_out() -> None:
    assert _line(tags={"bed": "12", "device": ""}) == f"vitals,bed=12 v=1.5 {T0_NS}"


def test_separators_in_names_and_tag_values_are_escaped() -> None:
    line = _line("my vitals,x", {"dev ice": "a,b=c d"}, {"t=c,x y": 1.5})
    assert line == f"my\\ vitals\\,x,dev\\ ice=a\\,b\\=c\\ d t\\=c\\,x\\ y=1.5 {T0_NS}"


@pytest.mark.parametrize(
    "text",
    ["\x00\n", "a\nb", "a\rb", "a\tb", "ab\\", "a\\,b", "\x7f", "a\x85b", "a\u2028b", "a\u2029b", "\ud800"],
)
def test_names_and_tag_values_that_cannot_round_trip_are_refused(text: str) -> None:
    for point in (
        Point("vitals", {"device": text}, {"v": 1.0}, T0),
        Point("vitals", {text: "x"}, {"v": 1.0}, T0),
        Point("vitals", {}, {text: 1.0}, T0),
        Point(text, {}, {"v": 1.0}, T0),
    ):
        with pytest.raises(ValueError, match="line protocol cannot carry"):
            point.to_line()


@pytest.mark.parametrize("text", ["a\nb", 'x"\nevil v=1 1772481600000000000\n', "a\rb", "a\u2028b", "a\x1eb"])
def test_string_fields_that_would_break_the_line_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="break the line"):
        _line(fields={"note": text})


def test_empty_names_and_comment_measurements_are_refused() -> None:
    with pytest.raises(ValueError, match="empty measurement"):
        _line("")
    with pytest.raises(ValueError, match="empty tag key"):
        _line(tags={"": "x"})
    with pytest.raises(ValueError, match="empty field key"):
        _line(fields={"": 1.0})
    with pytest.raises(ValueError, match="comment"):
        _line("#vitals")


def _split_unescaped(text: str, separators: str) -> list[str]:
    """Split at separators not preceded by a backslash (influxd 1.x's own rule)."""
    parts, start = [], 0
    for i, ch in enumerate(text):
        if ch in separators and (i == 0 or text[i - 1] != "\\"):
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _unescape(text: str) -> str:
    return text.replace("\\,", ",").replace("\\=", "=").replace("\\ ", " ")


def _parse_series(line: str) -> tuple[str, dict[str, str]]:
    """Measurement and tags of a line whose fields are plain numbers."""
    series, _fields, _time = _split_unescaped(line, " ")
    measurement, *tags = _split_unescaped(series, ",")
    pairs = [_split_unescaped(tag, "=") for tag in tags]
    assert all(len(pair) == 2 for pair in pairs)
    return _unescape(measurement), {_unescape(k): _unescape(v) for k, v in pairs}


@settings(max_examples=300, deadline=None)
@given(
    measurement=st.text(min_size=1, max_size=12),
    tags=st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=4),
    field_key=st.text(min_size=1, max_size=8),
    note=st.text(max_size=20),
)
def test_no_input_makes_a_second_line_or_moves_the_point(
    measurement: str, tags: dict[str, str], field_key: str, note: str
) -> None:
    try:
        line = Point(measurement, tags, {field_key: 1.5}, T0).to_line()
    except ValueError:
        pass
    else:
        assert len(line.splitlines()) == 1
        assert "\n" not in line
        assert "\r" not in line
        assert _parse_series(line) == (measurement, {k: v for k, v in tags.items() if v})
        assert line.endswith(f"=1.5 {T0_NS}")
    try:
        line = Point("notes", {}, {"text": note}, T0).to_line()
    except ValueError:
        pass
    else:
        assert len(line.splitlines()) == 1
        assert line.startswith('notes text="')


# --- the encoder written here and the library's write the same bytes ---------------------------

_NAME = st.one_of(
    st.text(min_size=0, max_size=12),
    st.sampled_from(["vitals", "a b", "a,b", "a=b", "#c", "é µ", "x\\y", "tab\there", " ", ",", "="]),
)
_FIELD = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from([37.0, -0.0, 1e-5, 1e300, 'quote"back\\slash', "line\nbreak"]),
)


def _outcome(encode: object) -> tuple[str, str]:
    try:
        return ("line", encode())  # type: ignore[operator]
    except (ValueError, TypeError) as exc:
        return (type(exc).__name__, str(exc))


@settings(max_examples=500, deadline=None)
@given(
    _NAME,
    st.dictionaries(_NAME, st.one_of(_NAME, st.just("")), max_size=3),
    st.dictionaries(_NAME, _FIELD, max_size=4),
)
def test_to_line_writes_the_librarys_bytes(
    measurement: str, tags: dict[str, str], fields: dict[str, FieldValue]
) -> None:
    point = Point(measurement, tags, fields, T0)
    assert _outcome(point.to_line) == _outcome(point.library_line)


def test_to_line_writes_the_librarys_bytes_for_a_remembered_series() -> None:
    """The second sample of a series takes the remembered prefix: still the same bytes."""
    for k in range(3):
        point = Point("vitals", {"ward": "a b", "bed": "1,2", "device": "m=1"}, {"t c": 36.5 + k, "n": k}, T0)
        assert point.to_line() == point.library_line()
        assert point.to_line().startswith("vitals,bed=1\\,2,device=m\\=1,ward=a\\ b ")
