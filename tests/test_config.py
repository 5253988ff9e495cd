"""Configuration: the example loads and documents every option; errors come all at once."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from daemon import cli
from daemon.config import (
    AppriseReceiverConfig,
    BedConfig,
    Config,
    Hl7ReceiverConfig,
    PumpConfig,
    RouteConfig,
    WebhookReceiverConfig,
    WebUserConfig,
    load,
    parse,
)
from daemon.errors import ConfigError
from tests.helpers import wardd

EXAMPLE = Path(__file__).parent.parent / "config" / "ward.example.toml"


def _paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out: list[str] = []
    for name, field in model.model_fields.items():
        default = field.default
        if isinstance(default, BaseModel):
            out.extend(_paths(type(default), f"{prefix}{name}."))
        else:
            out.append(f"{prefix}{name}")
    return out


def test_example_config_loads() -> None:
    config = load(EXAMPLE)
    assert [b.id for b in config.beds] == ["12", "14"]
    assert config.thresholds_for("12").vitals.fever_c == 38.0
    assert config.pumps[0].bed == "12"
    assert config.bags[0].concentration_ug_per_ml == 0.0375


@pytest.mark.parametrize(
    "path",
    _paths(Config)
    + [f"beds.{p}" for p in _paths(BedConfig)]
    + [f"pumps.{p}" for p in _paths(PumpConfig)]
    + [f"web.users.{p}" for p in _paths(WebUserConfig)]
    + sorted(
        {
            f"receivers.{p}"
            for p in _paths(WebhookReceiverConfig) + _paths(AppriseReceiverConfig) + _paths(Hl7ReceiverConfig)
        }
    )
    + [f"routes.{p}" for p in _paths(RouteConfig)],
)
def test_example_config_documents_every_option(path: str) -> None:
    """Every option appears in the example in its own section, set or commented with its default."""
    text = EXAMPLE.read_text()
    parts = path.split(".")
    if len(parts) == 1 or re.search(rf"^\[\[?{re.escape(path)}[.\]]", text, re.MULTILINE):
        # A whole table: [thresholds.vitals], [[beds]], [beds.thresholds.vitals] ...
        assert parts[0] in text, f"{path} is not documented in {EXAMPLE.name}"
        return
    # "mqtt.password.env" is the key "password.env" of [mqtt]: try each split of the path.
    documented = any(
        re.search(
            rf"^#? ?{re.escape('.'.join(parts[i:]))}(\.\w+)? =",
            _section(text, ".".join(parts[:i])),
            re.MULTILINE,
        )
        for i in range(len(parts) - 1, 0, -1)
    )
    assert documented, f"{path} is not documented in its own section of {EXAMPLE.name}"


def _section(text: str, name: str) -> str:
    """The lines of one TOML section of the example (all its tables of that name, for arrays)."""
    headers = {f"[{name}]", f"[[{name}]]"}
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("#"):
            inside = stripped.split("#")[0].strip() in headers
            continue
        if inside:
            out.append(line)
    return "\n".join(out)


def test_the_documentation_check_looks_in_the_right_section() -> None:
    text = "[a]\n# x = 1\n[b]\ny = 2\n[[c]]\n# z.env = 3\n"
    assert "x = 1" in _section(text, "a")
    assert "x = 1" not in _section(text, "b"), "a key of the same name elsewhere does not count"
    assert "z.env = 3" in _section(text, "c")


def _base() -> dict[str, Any]:
    return {
        "beds": [
            {
                "ward": "haem",
                "id": "12",
                "patient": "P1",
                "weight_kg": 63,
                "height_cm": 165,
                "protocol_start": "2026-03-02T08:00:00Z",
            }
        ]
    }


def test_every_error_is_reported_at_once_with_its_location() -> None:
    data = _base()
    data["beds"].append(
        {
            "ward": "haem",
            "id": "13",
            "patient": "P2",
            "weight_kg": -3,
            "height_cm": 165,
            "protocol_start": "2026-03-02T08:00:00",
        }
    )
    data["beds"].append(dict(data["beds"][0]))  # duplicate id 12
    data["mqtt"] = {"url": "http://nope", "qos": 3, "colour": "blue"}
    data["pumps"] = [{"id": "p1", "bed": "99", "url": "/dev/ttyUSB0"}]
    data["beds"][0]["protocol"] = "no-such-protocol"
    with pytest.raises(ConfigError) as caught:
        parse(data, "ward.toml")
    issues = {i.location: i.reason for i in caught.value.issues}
    assert "beds[1].weight_kg" in issues
    assert "beds[1].protocol_start" in issues
    assert "time zone" in issues["beds[1].protocol_start"]
    assert "mqtt.url" in issues
    assert "mqtt.qos" in issues
    assert issues["mqtt.colour"].startswith("unknown option")
    assert "pumps[0].bed" in issues
    assert "beds[0].protocol" in issues
    assert "beds[2].id" in issues
    assert len(caught.value.issues) == 8


def test_bed_threshold_overrides_are_validated_and_applied() -> None:
    data = _base()
    data["beds"][0]["thresholds"] = {"vitals": {"fever_c": 38.5}}
    assert parse(data).thresholds_for("12").vitals.fever_c == 38.5
    data["beds"][0]["thresholds"] = {"vitals": {"fever_c": "hot", "nonsense": 1}, "colour": {}}
    with pytest.raises(ConfigError) as caught:
        parse(data)
    locations = {i.location for i in caught.value.issues}
    assert {
        "beds[0].thresholds.vitals.fever_c",
        "beds[0].thresholds.vitals.nonsense",
        "beds[0].thresholds.colour",
    } <= locations


def test_a_bed_has_at_most_one_pump() -> None:
    data = _base()
    data["pumps"] = [
        {"id": "p1", "bed": "12", "url": "/dev/ttyUSB0"},
        {"id": "p2", "bed": "12", "url": "/dev/ttyUSB1"},
    ]
    with pytest.raises(ConfigError) as caught:
        parse(data)
    assert [str(i) for i in caught.value.issues] == [
        "pumps[1].bed: bed '12' already has pumps[0]: one blinatumomab pump per bed"
    ]


def test_secret_from_a_missing_environment_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WARDD_TEST_UNSET", raising=False)
    data = _base()
    data["mqtt"] = {"password": {"env": "WARDD_TEST_UNSET"}}
    with pytest.raises(ConfigError) as caught:
        parse(data)
    assert [str(i) for i in caught.value.issues] == [
        "mqtt.password.env: environment variable WARDD_TEST_UNSET is not set"
    ]


def test_invalid_toml_is_reported_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[mqtt]\nurl = \n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert "line 2" in str(caught.value)


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", str(EXAMPLE)]) == 0
    assert "2 bed(s)" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[beds]]\nward = "w"\nid = "1"\nweight_kg = 0\n')
    assert cli.main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "beds[0].weight_kg" in err
    assert "beds[0].patient: required option is missing" in err


@pytest.mark.integration
def test_run_refuses_an_invalid_config_before_starting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[mqtt]\nqos = 7\n[[beds]]\nward = "w"\n')
    result = wardd("run", "--config", str(bad))
    assert result.returncode == 2
    assert "mqtt.qos" in result.stderr
    assert "nothing was started" in result.stderr


def test_looked_up_beds_and_thresholds_follow_a_copy_with_other_beds() -> None:
    """``bed`` and ``thresholds_for`` remember what they found; a copy with other beds is not fooled."""
    data = _base()
    data["beds"][0]["thresholds"] = {"vitals": {"fever_c": 38.5}}
    config = parse(data)
    assert config.thresholds_for("12").vitals.fever_c == 38.5
    assert config.thresholds_for("12") is config.thresholds_for("12")  # merged once
    plain = config.beds[0].model_copy(update={"thresholds": {}})
    copy = config.model_copy(update={"beds": [plain]})
    assert copy.bed("12") is plain
    assert copy.thresholds_for("12").vitals.fever_c == 38.0
    assert copy.thresholds_for("12") is copy.thresholds  # no override: the ward's own
    assert config.thresholds_for("12").vitals.fever_c == 38.5
    with pytest.raises(KeyError):
        config.bed("no-such-bed")


@pytest.mark.parametrize(
    ("mqtt", "alerts", "beds", "refused"),
    [
        ({"username": "wardd"}, {}, True, True),
        ({"username": "wardd"}, {"ack_users": ["station-icu"]}, True, False),
        ({}, {}, True, False),  # no logins: a development broker without an ACL
        ({"username": "station-icu"}, {}, False, False),  # a station's config for `wardd ack`
    ],
)
def test_a_daemon_that_logs_in_must_say_who_may_acknowledge(
    mqtt: dict[str, Any], alerts: dict[str, Any], beds: bool, refused: bool
) -> None:
    data = _base()
    data["mqtt"], data["alerts"] = mqtt, alerts
    if not beds:
        data["beds"] = []
    if not refused:
        parse(data)
        return
    with pytest.raises(ConfigError) as caught:
        parse(data)
    [issue] = caught.value.issues
    assert issue.location == "alerts.ack_users"
    assert "monitors included" in issue.reason
