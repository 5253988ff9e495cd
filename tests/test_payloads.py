"""JSON object payloads: one decoder, stable rejection reasons."""

from __future__ import annotations

import pytest

from daemon.errors import InputError
from daemon.payloads import load_json_object


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b'{"x": NaN}', "invalid_json"),
        (b'{"x": -Infinity}', "invalid_json"),
        (b"[1, 2]", "not_object"),
        (b'"text"', "not_object"),
        (b'{"x": "' + b"y" * 100 + b'"}', "too_large"),
    ],
)
def test_rejections_have_stable_reasons_and_say_where(payload: bytes, reason: str) -> None:
    with pytest.raises(InputError) as caught:
        load_json_object(payload, "ward/w1/bed/b1/x", max_bytes=64)
    assert (caught.value.reason, caught.value.where) == (reason, "ward/w1/bed/b1/x")


def test_duplicate_fields_are_refused_only_when_asked() -> None:
    payload = b'{"a": 1, "a": 2}'
    assert load_json_object(payload) == {"a": 2}
    with pytest.raises(InputError) as caught:
        load_json_object(payload, unique_fields=True)
    assert caught.value.reason == "duplicate_field"
    assert load_json_object(b'{"a": {"b": 1}}', unique_fields=True) == {"a": {"b": 1}}
