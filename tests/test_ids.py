"""Identifiers and names from outside: the shared rules, in messages and in the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon import ids
from daemon.config import load, parse
from daemon.errors import ConfigError, InputError

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize("value", ["b1", "12", "haem", "pump-12", "w_1.a", "x" * 64])
def test_config_ids_accepted(value: str) -> None:
    assert ids.is_config_id(value)
    assert ids.config_id(value) == value


@pytest.mark.parametrize(
    "value", ["", "-b1", ".b1", "b 1", "b1\n", "b/1", "b+", "b#", "é", "b:1", "x" * 65, "b1\\", 12, None]
)
def test_config_ids_refused(value: Any) -> None:
    assert not ids.is_config_id(value)


@pytest.mark.parametrize("value", ["monitor-12", "m1", "MX800:00:09:FB", "bag-d1", "d8-28ug", "x" * 64])
def test_device_ids_accepted(value: str) -> None:
    assert ids.device_id(value, "device", "t") == value


@pytest.mark.parametrize(
    "value", ["", "\u0000\n", "monitor\n", "monitor\\", "a,b", "a=b", "a b", 'a"b', "x" * 65, 3, ["m"]]
)
def test_device_ids_refused_with_what_and_where(value: Any) -> None:
    with pytest.raises(InputError) as caught:
        ids.device_id(value, "device", "ward/w1/bed/b1/vitals")
    assert (caught.value.reason, caught.value.where) == ("bad_device", "ward/w1/bed/b1/vitals")
    assert "'device' must be" in caught.value.detail


def test_bag_ids_are_trimmed_then_checked() -> None:
    assert ids.bag_id("  B-1\n", "bag_id", "t") == "B-1"
    with pytest.raises(InputError) as caught:
        ids.bag_id("B\n1", "bag_id", "t")
    assert caught.value.reason == "bad_bag_id"


@pytest.mark.parametrize("value", ["n", "nurse-a", " Zoé Dupont ", "Dr O'Brien", "李雷", "x" * 64])
def test_names_accepted(value: str) -> None:
    assert ids.person_name(value, "by", "t") == value.strip()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * 65, "65 characters"),
        ("a\u0000b", "printable"),
        ("a\nb", "printable"),
        ("a\u2028b", "printable"),
        ("\u202eevil", "printable"),
        ("a\x7fb", "printable"),
        (5, "string"),
    ],
)
def test_names_refused(value: Any, problem: str) -> None:
    with pytest.raises(InputError) as caught:
        ids.person_name(value, "by", "t")
    assert caught.value.reason == "bad_name"
    assert problem in caught.value.detail


def test_shown_quotes_data_and_never_reprs_containers() -> None:
    assert ids.shown("a\nb") == "'a\\nb'"
    assert ids.shown("x" * 100).endswith("...")
    assert ids.shown(10**400) == "a huge integer"
    nested: list[Any] = []
    for _ in range(5000):
        nested = [nested]
    assert ids.shown(nested) == "a list"
    assert ids.shown_fields(["b", "a\n", *"cdefg"]) == "'a\\n', 'b', 'c', 'd', 'e' and 2 more"


def _bed(**overrides: Any) -> dict[str, Any]:
    return {
        "ward": "haem",
        "id": "12",
        "patient": "P1",
        "weight_kg": 70,
        "height_cm": 175,
        "protocol_start": "2026-03-02T08:00:00Z",
        **overrides,
    }


@pytest.mark.parametrize(
    ("data", "location"),
    [
        ({"beds": [_bed(id="12\n")]}, "beds[0].id"),
        ({"beds": [_bed(ward="ha em")]}, "beds[0].ward"),
        ({"beds": [_bed()], "pumps": [{"id": "p\\1", "bed": "12", "url": "/dev/ttyUSB0"}]}, "pumps[0].id"),
        (
            {
                "beds": [_bed()],
                "bags": [
                    {
                        "bed": "12",
                        "bag_id": "bag 1",
                        "concentration_ug_per_ml": 0.0375,
                        "hung_at": "2026-03-02T08:00:00Z",
                    }
                ],
            },
            "bags[0].bag_id",
        ),
        ({"mqtt": {"topic_prefix": "ward/x"}}, "mqtt.topic_prefix"),
    ],
)
def test_config_refuses_bad_ids(data: dict[str, Any], location: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(data)
    assert location in [issue.location for issue in caught.value.issues]


def test_every_shipped_config_passes_the_id_rules() -> None:
    load(ROOT / "config" / "ward.example.toml")
    configs = sorted((ROOT / "tests" / "cases").glob("*/config.toml"))
    assert configs
    for path in configs:
        load(path)
