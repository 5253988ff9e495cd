"""The routing configuration: what is refused, with where and why, all at once."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Any

import pytest

from daemon import cli
from daemon.config import KNOWN_CONDITIONS, QuietConfig, load, parse
from daemon.delivery.routing import in_period
from daemon.errors import ConfigError
from tests.test_config import EXAMPLE


def _hook(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "url": "http://127.0.0.1:9/x", "secret": {"value": "k"}, **extra}


def _errors(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse(data)
    return {issue.location: issue.reason for issue in caught.value.issues}


def test_the_example_routes_and_receivers_load() -> None:
    config = load(EXAMPLE)
    assert [r.name for r in config.receivers] == ["nurse-12", "charge", "alert-manager"]
    assert config.routes[0].levels == [["nurse-12"], ["charge"]]
    assert config.routing.quiet[0].priorities == ["low"]
    assert [rule.source for rule in config.routing.inhibit] == ["CRS_SUSPECTED", "PUMP_COMM_LOST"]


def test_every_routing_error_is_reported_with_its_place() -> None:
    errors = _errors(
        {
            "routing": {"timezone": "Mars/Olympus", "quiet": [{"start": "22:00", "end": "22:00"}]},
            "receivers": [
                _hook("n0"),
                _hook("n0"),
                {"name": "a1", "type": "apprise", "url": {}},
                {"name": "w2", "type": "webhook", "url": "http://127.0.0.1:9/x"},
            ],
            "routes": [
                {"name": "r", "levels": [["n0", "nobody"]], "conditions": ["FEVR"]},
                {"name": "s", "levels": [["n0"], []]},
                {"name": "t", "levels": [["n0"]], "priorities": ["urgent"]},
                {"name": "u", "levels": [["n0"]], "repeat_after_s": -1},
                {"name": "v", "levels": [["n0"]], "colour": "red"},
            ],
        }
    )
    assert "unknown time zone 'Mars/Olympus'" in errors["routing.timezone"]
    assert "empty" in errors["routing.quiet[0]"]
    assert "already used by receivers[0]" in errors["receivers[1].name"]
    assert "Apprise URL is required" in errors["receivers[2].url"]
    assert "HMAC key" in errors["receivers[3].secret"]
    assert "unknown alert condition 'FEVR'" in errors["routes[0].conditions[0]"]
    assert "level 1 names no receiver" in errors["routes[1].levels"]
    assert "routes[2].priorities[0]" in errors
    assert "routes[3].repeat_after_s" in errors
    assert "unknown option" in errors["routes[4].colour"]


def test_a_receiver_type_is_webhook_apprise_or_hl7() -> None:
    errors = _errors({"receivers": [{"name": "w3", "type": "pager", "url": "x"}]})
    assert list(errors) == ["receivers[0]"]
    assert "'webhook', 'apprise', 'hl7'" in errors["receivers[0]"]


def _am(**extra: Any) -> dict[str, Any]:
    return {"name": "am", "type": "hl7", "host": "127.0.0.1", "port": 2575, **extra}


def test_an_hl7_receiver_needs_an_address_and_checks_its_event_codes() -> None:
    assert (
        parse({"receivers": [_am(event_codes={"HYPOXIA": "196652^MDC_EVT_LO"})]}).receivers[0].type == "hl7"
    )
    errors = _errors(
        {
            "receivers": [
                {"name": "a0", "type": "hl7"},
                _am(name="a1", port=0),
                _am(name="a2", event_codes={"HYPOXIA": "MDC_EVT_LO"}),
                _am(name="a3", event_codes={"HYPOXEMIA": "1^MDC_X"}),
            ]
        }
    )
    assert errors["receivers[0].hl7.host"] == errors["receivers[0].hl7.port"] == "required option is missing"
    assert "receivers[1].hl7.port" in errors
    assert "is not '<code>^<MDC reference id>'" in errors["receivers[2].hl7.event_codes.HYPOXIA"]
    assert "unknown alert condition 'HYPOXEMIA'" in errors["receivers[3].hl7.event_codes.HYPOXEMIA.[key]"]


def test_a_route_may_name_only_configured_receivers() -> None:
    errors = _errors({"receivers": [_hook("n0")], "routes": [{"name": "r", "levels": [["n0", "nobody"]]}]})
    assert errors == {"routes[0].levels[0]": "no receiver named 'nobody' (known: n0)"}


def test_high_priority_cannot_be_quiet() -> None:
    errors = _errors({"routing": {"quiet": [{"start": "22:00", "end": "07:00", "priorities": ["high"]}]}})
    assert "routing.quiet[0].priorities[0]" in errors


@pytest.mark.parametrize(
    ("text", "ok"),
    [("00:00", True), ("23:59", True), ("24:00", False), ("7:00", False), ("07:60", False), ("", False)],
)
def test_quiet_times_are_hh_mm(text: str, ok: bool) -> None:
    data = {"routing": {"quiet": [{"start": text, "end": "12:30" if text != "12:30" else "13:00"}]}}
    if ok:
        parse(data)
    else:
        assert "routing.quiet[0].start" in _errors(data)


@pytest.mark.parametrize(
    ("start", "end", "at", "inside"),
    [
        ("22:00", "07:00", "21:59:59", False),
        ("22:00", "07:00", "22:00:00", True),
        ("22:00", "07:00", "00:00:00", True),
        ("22:00", "07:00", "06:59:59", True),
        ("22:00", "07:00", "07:00:00", False),
        ("13:00", "14:00", "12:59:59", False),
        ("13:00", "14:00", "13:00:00", True),
        ("13:00", "14:00", "13:59:59", True),
        ("13:00", "14:00", "14:00:00", False),
    ],
)
def test_quiet_period_edges(start: str, end: str, at: str, inside: bool) -> None:
    assert in_period(QuietConfig(start=start, end=end), time.fromisoformat(at)) is inside


def test_the_known_conditions_are_the_readme_list() -> None:
    readme = (EXAMPLE.parent.parent / "README.md").read_text()
    listed = readme.split("\nConditions: ", 1)[1].split("\n\n", 1)[0]
    named = {word.strip("`,. ") for word in listed.split() if word.startswith("`")}
    named = {n for n in named if n.isupper()}
    assert named == KNOWN_CONDITIONS


def test_wardd_routes_prints_who_is_told_and_when(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        ["routes", "--config", str(EXAMPLE), "--condition", "HYPOXIA", "--at", "2026-03-02T12:00:00+01:00"]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0] == "Sample alert: HIGH HYPOXIA (physiological), haematology/12, 2026-03-02 12:00:00 CET"
    assert out[1] == "Route: haematology; levels: 0: nurse-12 | 1: charge"
    # The grouping window (10 s), then escalation every alerts.escalate_after_s (300 s).
    assert "+10 s (12:00:10)  alert      level 0 -> nurse-12 (webhook https://" in out[2]
    assert out[3].strip().startswith("+5 min (12:05:00)  escalation level 1 -> charge (apprise)")
    assert "ntfy" not in "\n".join(out), "an Apprise URL carries a token: never printed"


def test_wardd_routes_shows_the_quiet_digest_and_inhibition(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        [
            "routes",
            "--config",
            str(EXAMPLE),
            "--condition",
            "BAG_LOW",
            "--priority",
            "low",
            "--at",
            "2026-03-02T23:00:00+01:00",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "Inhibited while a PUMP_COMM_LOST alert of at least its priority is open at the bed." in out
    assert "Quiet period: held for the digest at the period's end." in out
    assert "+8 h 00 min (07:00:00)  digest     level 0 -> nurse-12" in out


def test_wardd_routes_says_when_no_route_takes_the_alert(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["routes", "--config", str(EXAMPLE), "--ward", "elsewhere"])
    assert code == 0
    assert "No route takes it: nobody is told" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--condition", "FEVR"], "unknown condition 'FEVR'"),
        (["--at", "yesterday"], "is not an ISO 8601 time"),
        (["--at", "2026-03-02T23:00:00"], "needs a time zone offset"),
    ],
)
def test_wardd_routes_refuses_a_bad_sample(
    args: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["routes", "--config", str(EXAMPLE), *args]) == 2
    assert error in capsys.readouterr().err


def test_an_hl7_receivers_tls_files_are_checked_at_load(tmp_path: Path) -> None:
    errors = _errors({"receivers": [_am(tls={"ca_file": str(tmp_path / "missing.pem")})]})
    assert errors == {"receivers[0].tls.ca_file": f"{tmp_path / 'missing.pem'} is not a readable file"}


def test_wardd_routes_shows_a_routes_medium_escalation() -> None:
    from datetime import UTC, datetime  # noqa: PLC0415

    from daemon.delivery.preview import Sample, preview  # noqa: PLC0415
    from daemon.events import Kind, Priority  # noqa: PLC0415

    config = parse(
        {
            "routing": {"group_window_s": 0},
            "receivers": [_hook("n0"), _am(name="acm")],
            "routes": [
                {
                    "name": "r",
                    "levels": [["n0"], ["acm"]],
                    "repeat_after_s": 0,
                    "escalate_medium_after_s": 120,
                }
            ],
        }
    )
    at = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    lines = preview(config, Sample("FEVER", Priority.MEDIUM, Kind.PHYSIOLOGICAL, "w", "1", at), horizon_s=200)
    told = [line.split()[0:3] for line in lines if "level" in line and "->" in line]
    assert (
        [line for line in lines if "->" in line][1]
        .strip()
        .startswith("+2 min (12:02:00)  escalation level 1")
    )
    assert "acm (hl7 mllp://127.0.0.1:2575)" in lines[-2]
    assert len(told) == 2
