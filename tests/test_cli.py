"""The command line as a user meets it: every wrong invocation is one line and an exit code.

Each row of ``WRONG`` is a real ``wardd`` process given a mistake; its standard error
must be one line that starts with the command's name and says what and where, its
exit code 2 for a usage or input error and 1 for a run-time failure, and no output may
hold a traceback. The rows run before any work could start (or, for a broker that is
down, before anything connects), so they take a second each.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w

from daemon import cli
from daemon.capture import config_beside, config_fingerprint, write_config
from daemon.config import Config, DaemonConfig, MqttConfig, load, parse
from daemon.plausible import review
from daemon.replay import survey
from daemon.resources import EXAMPLE_CONFIG, EXAMPLES_DIR
from simulators.broker import broker_for
from tests.helpers import wardd
from tests.servers import free_port

SCENARIO = "wrong-strength-bag"  # 4 simulated hours: the shortest built-in story


def _config(
    tmp_path: Path,
    extra: str = "",
    *,
    bag_ug_per_ml: float | None = None,
    bed: str = "b1",
    protocol: str = "ssc-14d",
) -> Path:
    """A valid one-bed config in ``tmp_path`` (its state there too)."""
    bag = (
        f'[[bags]]\nbed = "{bed}"\nbag_id = "bag-1"\nconcentration_ug_per_ml = {bag_ug_per_ml}\n'
        'hung_at = "2026-03-02T08:00:00Z"\n'
        if bag_ug_per_ml is not None
        else ""
    )
    path = tmp_path / "ward.toml"
    path.write_text(
        f'{extra}\n[daemon]\nstate_dir = "{tmp_path / "state"}"\n[influx]\napi = "none"\n'
        '[[beds]]\nward = "w1"\npatient = "P-1"\nweight_kg = 70\nheight_cm = 170\n'
        f'id = "{bed}"\nprotocol = "{protocol}"\nprotocol_start = "2026-03-02T08:00:00Z"\n{bag}',
        encoding="utf-8",
    )
    return path


def _state_is_a_file(tmp_path: Path) -> Path:
    config = _config(tmp_path)
    (tmp_path / "state").write_text("")
    return config


def _capture(tmp_path: Path, fingerprint: str | None) -> Path:
    path = tmp_path / "run.jsonl"
    header = [{"type": "capture", "config_sha256": fingerprint, "wardd": "0"}] if fingerprint else []
    event = {
        "type": "vitals",
        "ward": "w1",
        "bed": "b1",
        "device": "m1",
        "time": "2026-03-02T09:00:00Z",
        "values": {"temp_c": 38.4},
    }
    path.write_text("".join(json.dumps(line) + "\n" for line in [*header, event]), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Wrong:
    """One wrong invocation: its arguments (built in a test folder), exit code and message."""

    name: str
    args: Callable[[Path], list[str]]
    code: int
    says: Callable[[Path], str]
    details: int = 0  # lines under the message (each warning of a refused config)


def _down(tmp_path: Path) -> int:
    """A port nobody listens on, the same for the arguments and the expected message."""
    marker = tmp_path / "port"
    if not marker.exists():
        marker.write_text(str(free_port()))
    return int(marker.read_text())


def _file_in(tmp_path: Path, name: str, text: str = "") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


WRONG = [
    # scenario: arguments checked before the run starts
    Wrong(
        "speed negative",
        lambda t: ["scenario", SCENARIO, "--speed", "-5"],
        2,
        lambda t: "wardd scenario: argument --speed: must be above 0 and at most 300, got -5",
    ),
    Wrong(
        "speed zero",
        lambda t: ["scenario", SCENARIO, "--speed", "0"],
        2,
        lambda t: "argument --speed: must be above 0",
    ),
    Wrong(
        "speed not a number",
        lambda t: ["scenario", SCENARIO, "--speed", "fast"],
        2,
        lambda t: "argument --speed: not a number: 'fast'",
    ),
    Wrong(
        "speed and fast",
        lambda t: ["scenario", SCENARIO, "--fast", "--speed", "2"],
        2,
        lambda t: "argument --speed: not allowed with argument --fast",
    ),
    Wrong(
        "alerts-out in a missing folder",
        lambda t: ["scenario", SCENARIO, "--alerts-out", f"{t}/no/a.jsonl"],
        2,
        lambda t: f"argument --alerts-out: cannot write {t}/no/a.jsonl: folder {t}/no does not exist",
    ),
    Wrong(
        "alerts-out is a folder",
        lambda t: ["scenario", SCENARIO, "--alerts-out", str(t)],
        2,
        lambda t: f"argument --alerts-out: {t} is a folder, not a file",
    ),
    Wrong(
        "capture in a missing folder",
        lambda t: ["scenario", SCENARIO, "--capture", f"{t}/no/c.jsonl"],
        2,
        lambda t: f"argument --capture: cannot write {t}/no/c.jsonl: folder {t}/no does not exist",
    ),
    Wrong(
        "influx-out not a URL",
        lambda t: ["scenario", SCENARIO, "--influx-out", "ftp://db"],
        2,
        lambda t: "argument --influx-out: not an InfluxDB URL or a folder: 'ftp://db'",
    ),
    Wrong(
        "influx-out is a file",
        lambda t: ["scenario", SCENARIO, "--influx-out", _file_in(t, "f")],
        2,
        lambda t: f"argument --influx-out: {t}/f is a file, not a folder",
    ),
    Wrong(
        "mqtt not a URL",
        lambda t: ["scenario", SCENARIO, "--mqtt", "bogus://x"],
        2,
        lambda t: "argument --mqtt: not a broker URL: 'bogus://x'",
    ),
    Wrong(
        "mqtt broker down",
        lambda t: ["scenario", SCENARIO, "--mqtt", f"mqtt://127.0.0.1:{_down(t)}"],
        1,
        lambda t: f"wardd scenario: no MQTT broker answers at 127.0.0.1:{_down(t)} (--mqtt)",
    ),
    Wrong(
        "config's broker down",
        lambda t: [
            "scenario",
            SCENARIO,
            "--config",
            str(_config(t, f'[mqtt]\nurl = "mqtt://127.0.0.1:{_down(t)}"')),
        ],
        1,
        lambda t: f"no MQTT broker answers at 127.0.0.1:{_down(t)} (mqtt.url in {t}/ward.toml)",
    ),
    Wrong(
        "config missing",
        lambda t: ["scenario", SCENARIO, "--config", f"{t}/none.toml"],
        2,
        lambda t: f"argument --config: {t}/none.toml: no such file",
    ),
    Wrong(
        "unknown scenario",
        lambda t: ["scenario", "no-such-story"],
        2,
        lambda t: (
            "wardd scenario: no-such-story: cannot read: No such file or directory (built-in scenarios: "
        ),
    ),
    Wrong(
        "scenario is a folder",
        lambda t: ["scenario", str(t)],
        2,
        lambda t: f"wardd scenario: {t}: cannot read: Is a directory",
    ),
    Wrong(
        "scenario not TOML",
        lambda t: ["scenario", _file_in(t, "s.toml", "name = \n")],
        2,
        lambda t: f"wardd scenario: {t}/s.toml: not valid TOML",
    ),
    Wrong(
        "check without expected alerts",
        lambda t: [
            "scenario",
            _file_in(
                t,
                "s.toml",
                'name = "s"\nduration = "1h"\n[[beds]]\nid = "1"\nweight_kg = 60\nheight_cm = 160\n',
            ),
            "--check",
        ],
        2,
        lambda t: (
            f"wardd scenario: --check: no expected alerts for {t}/s.toml ({t}/s.expected.jsonl does not exist)"
        ),
    ),
    # replay
    Wrong(
        "replay of a missing file",
        lambda t: ["replay", f"{t}/none.jsonl", "--config", str(_config(t))],
        2,
        lambda t: f"wardd replay: argument CAPTURE: {t}/none.jsonl: no such file",
    ),
    Wrong(
        "replay of a folder",
        lambda t: ["replay", str(t), "--config", str(_config(t))],
        2,
        lambda t: f"argument CAPTURE: {t} is a folder, not a file",
    ),
    Wrong(
        "replay of a config file",
        lambda t: ["replay", str(EXAMPLE_CONFIG), "--config", str(_config(t))],
        2,
        lambda t: f"wardd replay: {EXAMPLE_CONFIG} is not a capture: line 1 is not a JSON object",
    ),
    Wrong(
        "replay of an empty file",
        lambda t: ["replay", _file_in(t, "e.jsonl"), "--config", str(_config(t))],
        2,
        lambda t: f"wardd replay: {t}/e.jsonl holds no event to replay",
    ),
    Wrong(
        "replay of JSON that is not events",
        lambda t: ["replay", _file_in(t, "j.jsonl", '{"a": 1}\n'), "--config", str(_config(t))],
        2,
        lambda t: f"{t}/j.jsonl is not a capture: line 1 is not an event",
    ),
    Wrong(
        "replay under another config",
        lambda t: ["replay", str(_capture(t, "0" * 64)), "--config", str(_config(t))],
        2,
        lambda t: (
            f"wardd replay: {t}/run.jsonl was captured under another config than {t}/ward.toml "
            "(fingerprint 000000000000, made by wardd 0, this one "
        ),
    ),
    Wrong(
        "replay with none of its beds",
        lambda t: ["replay", str(_capture(t, None)), "--config", str(_config(t, bed="b9"))],
        2,
        lambda t: f"wardd replay: none of the beds in {t}/run.jsonl (b1) is in {t}/ward.toml",
    ),
    Wrong(
        "replay with a missing config",
        lambda t: ["replay", str(_capture(t, None)), "--config", f"{t}/none.toml"],
        2,
        lambda t: f"wardd replay: {t}/none.toml: cannot read: No such file or directory",
    ),
    Wrong(
        "replay tick zero",
        lambda t: ["replay", str(_capture(t, None)), "--config", str(_config(t)), "--tick", "0"],
        2,
        lambda t: "argument --tick: must be above 0",
    ),
    Wrong(
        "replay alerts-out in a missing folder",
        lambda t: [
            "replay",
            str(_capture(t, None)),
            "--config",
            str(_config(t)),
            "--alerts-out",
            f"{t}/no/a.jsonl",
        ],
        2,
        lambda t: f"argument --alerts-out: cannot write {t}/no/a.jsonl: folder {t}/no does not exist",
    ),
    # run, status, check-config
    Wrong(
        "run with its state folder under a file",
        lambda t: ["run", "--config", str(_state_is_a_file(t))],
        1,
        lambda t: (
            f"wardd run: cannot use {t}/state (daemon.state_dir in {t}/ward.toml): {t}/state is a file, not a folder"
        ),
    ),
    Wrong(
        "run with an unwritable capture folder",
        lambda t: ["run", "--config", str(_config(t)), "--capture", f"{t}/no/c.jsonl"],
        2,
        lambda t: f"argument --capture: cannot write {t}/no/c.jsonl: folder {t}/no does not exist",
    ),
    Wrong(
        "run with a missing config",
        lambda t: ["run", "--config", f"{t}/none.toml"],
        2,
        lambda t: f"wardd run: {t}/none.toml: cannot read: No such file or directory; nothing was started",
    ),
    Wrong(
        "run with a config that is not TOML",
        lambda t: ["run", "--config", _file_in(t, "bad.toml", "[daemon\n")],
        2,
        lambda t: f"wardd run: {t}/bad.toml: not valid TOML",
    ),
    Wrong(
        "run with a bad partition",
        lambda t: ["run", "--config", str(_config(t)), "--partition", "3/2"],
        2,
        lambda t: "wardd run: --partition: ",
    ),
    Wrong(
        "check-config of a missing file",
        lambda t: ["check-config", f"{t}/none.toml"],
        2,
        lambda t: f"wardd check-config: {t}/none.toml: cannot read: No such file or directory",
    ),
    Wrong(
        "check-config of a folder",
        lambda t: ["check-config", str(t)],
        2,
        lambda t: f"wardd check-config: {t}: cannot read: Is a directory",
    ),
    Wrong(
        "check-config strict with a warning",
        lambda t: ["check-config", "--strict", str(_config(t, bag_ug_per_ml=37.5))],
        2,
        lambda t: f"wardd check-config: {t}/ward.toml: 1 warning(s), refused under --strict",
        details=1,
    ),
    Wrong(
        "status with a missing config",
        lambda t: ["status", "--config", f"{t}/none.toml"],
        2,
        lambda t: f"wardd status: {t}/none.toml: cannot read: No such file or directory",
    ),
    Wrong(
        "routes at a time that is not one",
        lambda t: ["routes", "--config", str(_config(t)), "--at", "yesterday"],
        2,
        lambda t: "wardd routes: --at 'yesterday' is not an ISO 8601 time",
    ),
    Wrong(
        "routes of an unknown condition",
        lambda t: ["routes", "--config", str(_config(t)), "--condition", "NOPE"],
        2,
        lambda t: "wardd routes: unknown condition 'NOPE'",
    ),
    # demo, ack, init, schema, the top level
    Wrong(
        "demo beds zero",
        lambda t: ["demo", "--beds", "0"],
        2,
        lambda t: "wardd demo: argument --beds: must be above 0 and at most 50, got 0",
    ),
    Wrong(
        "demo speed too high",
        lambda t: ["demo", "--speed", "1000"],
        2,
        lambda t: "wardd demo: argument --speed: must be above 0 and at most 300, got 1000",
    ),
    Wrong(
        "demo secure with a config",
        lambda t: ["demo", "--secure", "--config", str(_config(t))],
        2,
        lambda t: "wardd demo: --secure runs a broker of its own; it does not take --config",
    ),
    Wrong(
        "demo with a missing config",
        lambda t: ["demo", "--config", f"{t}/none.toml"],
        2,
        lambda t: f"wardd demo: argument --config: {t}/none.toml: no such file",
    ),
    Wrong(
        "ack with the broker down",
        lambda t: [
            "ack",
            "--config",
            str(_config(t, f'[mqtt]\nurl = "mqtt://127.0.0.1:{_down(t)}"')),
            "1-FEVER-1",
            "--user",
            "nurse",
        ],
        1,
        lambda t: f"wardd ack: cannot reach the broker at 127.0.0.1:{_down(t)}",
    ),
    Wrong(
        "ack without a user",
        lambda t: ["ack", "--config", str(_config(t)), "1-FEVER-1"],
        2,
        lambda t: "wardd ack: who acknowledges?",
    ),
    Wrong(
        "ack of something that is not an alert id",
        lambda t: ["ack", "--config", str(_config(t)), "b1/FEVER/#", "--user", "nurse"],
        2,
        lambda t: "wardd ack: argument ALERT_ID: 'b1/FEVER/#' is not an alert id",
    ),
    Wrong(
        "ack as a user name that cannot be one",
        lambda t: ["ack", "--config", str(_config(t)), "b1-FEVER-1", "--user", "nurse 2"],
        2,
        lambda t: "wardd ack: argument --user: 'nurse 2' is not a user name",
    ),
    Wrong(
        "init without a place",
        lambda t: ["init"],
        2,
        lambda t: "wardd init: say where to write: --config FILE, --unit FILE, or both",
    ),
    Wrong(
        "init over a file",
        lambda t: ["init", "--config", _file_in(t, "ward.toml", "# mine\n")],
        2,
        lambda t: f"wardd init: {t}/ward.toml already exists; nothing was written",
    ),
    Wrong(
        "schema unknown",
        lambda t: ["schema", "pumps"],
        2,
        lambda t: "wardd schema: argument which: invalid choice: 'pumps'",
    ),
    Wrong("no command", lambda t: [], 2, lambda t: "wardd: the following arguments are required: COMMAND"),
    Wrong(
        "unknown command",
        lambda t: ["start"],
        2,
        lambda t: "wardd: argument COMMAND: invalid choice: 'start'",
    ),
]


@pytest.mark.integration
@pytest.mark.parametrize("wrong", WRONG, ids=[w.name for w in WRONG])
def test_a_wrong_invocation_is_one_line_and_an_exit_code(wrong: Wrong, tmp_path: Path) -> None:
    result = wardd(*wrong.args(tmp_path))
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == wrong.code, result.stderr
    assert len(lines) == 1 + wrong.details, result.stderr
    assert all(line.startswith("  ") for line in lines[1:]), result.stderr
    assert lines[0].startswith("wardd"), lines[0]
    assert wrong.says(tmp_path) in lines[0]
    # A broker that is down is never replaced by an embedded one, and the run said nothing.
    assert "embedded" not in result.stdout
    assert "demo:" not in result.stdout


@pytest.mark.integration
def test_a_config_with_errors_lists_each_under_one_line(tmp_path: Path) -> None:
    config = _file_in(
        tmp_path, "bad.toml", '[mqtt]\nqos = 7\n[[pumps]]\nid = "p"\nbed = "b9"\naddress = 200\nurl = "x"\n'
    )
    result = wardd("run", "--config", config)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"wardd run: {config}: 3 error(s); nothing was started",
        "  mqtt.qos: Input should be 0, 1 or 2",
        "  pumps[0].address: Input should be less than or equal to 99",
        "  pumps[0].bed: no bed with id 'b9'",
    ]


@pytest.mark.integration
def test_version_names_the_installed_package() -> None:
    result = wardd("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"wardd {cli.version()}"


# --- replays that cannot lie ------------------------------------------------------------------


@pytest.mark.integration
def test_a_scenario_capture_replays_under_the_config_written_beside_it(tmp_path: Path) -> None:
    capture, alerts = tmp_path / "run.jsonl", tmp_path / "alerts.jsonl"
    # A story nobody acknowledges in (a replay has no acknowledgements).
    ran = wardd(
        "scenario", "pump-occlusion-comm-loss", "--capture", str(capture), "--alerts-out", str(alerts)
    )
    assert ran.returncode == 0, ran.stderr
    written = config_beside(capture)
    assert f"made under {written}" in ran.stdout
    header = json.loads(capture.read_text().splitlines()[0])
    assert header["type"] == "capture"
    assert header["config_sha256"] == config_fingerprint(load(written))

    replayed = wardd("replay", str(capture), "--config", str(written))
    assert replayed.returncode == 0, replayed.stderr
    live = [json.loads(line) for line in alerts.read_text().splitlines()]
    again = [json.loads(line) for line in replayed.stdout.splitlines()]

    def key(items: list[dict[str, object]]) -> list[tuple[object, ...]]:
        return [(a["at"], a["condition"], a["phase"]) for a in items if a["phase"] != "overdue"]

    assert key(again) == key(live)
    assert ("PUMP_STALL", "start") in [k[1:] for k in key(live)]

    # The same capture under another config is refused, and replayed when told to.
    warmer = tomllib.loads(written.read_text())
    warmer.setdefault("thresholds", {}).setdefault("vitals", {})["fever_c"] = 38.5
    other = _file_in(tmp_path, "other.toml", tomli_w.dumps(warmer))
    refused = wardd("replay", str(capture), "--config", other)
    assert refused.returncode == 2
    assert f"use --config {written}" not in refused.stderr
    assert f"replay it with --config {written}, or add --force" in refused.stderr
    forced = wardd("replay", str(capture), "--config", other, "--force")
    assert forced.returncode == 0, forced.stderr


def test_the_fingerprint_follows_what_decides_the_alerts(tmp_path: Path) -> None:
    base = load(_config(tmp_path))
    moved = base.model_copy(
        update={
            "daemon": base.daemon.model_copy(update={"state_dir": Path("/elsewhere")}),
            "mqtt": base.mqtt.model_copy(update={"url": "mqtt://broker:1883", "topic_prefix": "x"}),
        }
    )
    assert config_fingerprint(moved) == config_fingerprint(base)
    warmer = parse({**base.model_dump(mode="json"), "thresholds": {"vitals": {"fever_c": 38.5}}})
    assert config_fingerprint(warmer) != config_fingerprint(base)
    language = base.model_copy(update={"daemon": base.daemon.model_copy(update={"language": "fr"})})
    assert config_fingerprint(language) != config_fingerprint(base)


def test_a_written_config_loads_to_the_same_fingerprint_without_inline_secrets(tmp_path: Path) -> None:
    data = tomllib.loads(EXAMPLE_CONFIG.read_text())
    data["mqtt"]["password"] = {"value": "s3cret-value"}
    with_secret = parse(data)
    path = tmp_path / "c.config.toml"
    write_config(with_secret, path, "a note\non two lines")
    text = path.read_text()
    assert text.startswith("# a note\n# on two lines\n")
    assert "s3cret-value" not in text
    assert config_fingerprint(load(path)) == config_fingerprint(with_secret)


def test_survey_finds_the_headers_the_beds_and_what_is_not_a_capture(tmp_path: Path) -> None:
    found = survey(_capture(tmp_path, "ab" * 32))
    assert (found.events, found.fingerprints, found.beds, found.problem) == (1, {"ab" * 32}, {"b1"}, None)
    assert (
        survey(EXAMPLE_CONFIG).problem == "line 1 is not a JSON object (a capture holds one event per line)"
    )


def test_replay_refuses_another_config_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    capture = _capture(tmp_path, config_fingerprint(load(config)))
    assert cli.main(["replay", str(capture), "--config", str(config)]) == 0
    assert "FEVER" not in capsys.readouterr().err  # one sample: nothing raised, nothing refused
    other = _capture(tmp_path, "f" * 64)
    assert cli.main(["replay", str(other), "--config", str(config)]) == 2
    assert "captured under another config" in capsys.readouterr().err


# --- check-config -------------------------------------------------------------------------------


def test_check_config_reports_references_of_invalid_items_with_the_field_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The pump is invalid itself (address), its bed unknown; the bed invalid, its protocol unknown.
    bad = _file_in(
        tmp_path,
        "bad.toml",
        '[[beds]]\nward = "w"\nid = "1"\npatient = "p"\nweight_kg = 0\nheight_cm = 160\n'
        'protocol = "ssc-99d"\nprotocol_start = "2026-03-02T08:00:00Z"\n'
        '[[pumps]]\nid = "p1"\nbed = "nope"\naddress = 200\nurl = "/dev/ttyUSB0"\n',
    )
    assert cli.main(["check-config", bad]) == 2
    err = capsys.readouterr().err
    for line in (
        "beds[0].weight_kg: Input should be greater than 0",
        "beds[0].protocol: unknown protocol 'ssc-99d'",
        "pumps[0].address: Input should be less than or equal to 99",
        "pumps[0].bed: no bed with id 'nope'",
    ):
        assert f"  {line}\n" in err


def test_check_config_warns_about_a_bag_far_from_what_the_protocol_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, bag_ug_per_ml=37.5)  # 1,000 times a 24 h bag at 9 µg/day
    assert cli.main(["check-config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert out.strip().endswith("; 1 warning(s)")
    assert (
        "warning: bags[0].concentration_ug_per_ml: 37.5 µg/mL is 19.3 times above the most that "
        "protocol 'ssc-14d' needs for bed b1 from any of the label's bags (0.0375 to 1.944 µg/mL: "
        "9 µg/day at 10 mL/h to 28 µg/day at 0.6 mL/h)"
    ) in err
    assert "bag_concentration_plausible_factor, a site choice" in err


@pytest.mark.parametrize(
    ("concentration", "extra", "warned"),
    [
        (0.0375, "", False),  # the label's 24 h bag at 9 µg/day
        (1.944, "", False),  # its 7-day bag at 28 µg/day
        (5.8, "", False),  # within the default factor of 3
        (5.9, "", True),
        (0.0124, "", True),  # below 0.0375 / 3
        (5.9, "[thresholds.dose]\nbag_concentration_plausible_factor = 4\n", False),
    ],
)
def test_the_bag_bound_is_the_label_bags_times_a_site_factor(
    tmp_path: Path, concentration: float, extra: str, warned: bool
) -> None:
    config = load(_config(tmp_path, extra, bag_ug_per_ml=concentration))
    assert bool(review(config)) is warned


def test_a_patient_of_45_kg_or_more_on_a_per_m2_protocol_is_flagged(tmp_path: Path) -> None:
    config = load(_config(tmp_path, protocol="ssc-14d-bsa"))
    [issue] = review(config)
    assert issue.location == "beds[0].protocol"
    assert "doses per m² below 45 kg only, and in flat µg/day from 45 kg" in issue.reason
    lighter = config.model_copy(update={"beds": [config.beds[0].model_copy(update={"weight_kg": 40})]})
    assert not review(lighter)


# --- init and the default state folder ------------------------------------------------------------


def test_init_writes_the_commented_config_and_the_unit_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, unit = tmp_path / "etc" / "ward.toml", tmp_path / "wardd.service"
    assert cli.main(["init", "--config", str(config), "--unit", str(unit)]) == 0
    assert f"wrote config {config} and systemd unit {unit}" in capsys.readouterr().out
    text = config.read_text()
    assert text.endswith(EXAMPLE_CONFIG.read_text())  # every option, commented
    assert '# state_dir = "/var/lib/wardd"' in text
    assert load(config).daemon.state_dir == Path("/var/lib/wardd")
    assert oct(config.stat().st_mode & 0o777) == "0o640"
    service = unit.read_text().splitlines()
    shipped = (EXAMPLES_DIR / "wardd.service").read_text().splitlines()
    assert [line for line in service if not line.startswith("ExecStart=")] == [
        line for line in shipped if not line.startswith("ExecStart=")
    ]
    [start] = [line for line in service if line.startswith("ExecStart=")]
    assert start.endswith(f" run --config {config}")
    before = config.read_text()
    assert cli.main(["init", "--config", str(config)]) == 2
    assert "already exists; nothing was written" in capsys.readouterr().err
    assert config.read_text() == before
    # The unit alone, with the service's config path.
    other = tmp_path / "other.service"
    assert cli.main(["init", "--unit", str(other)]) == 0
    assert "run --config /etc/wardd/ward.toml\n" in other.read_text()


def test_the_default_state_folder_is_the_services_absolute_one() -> None:
    assert DaemonConfig().state_dir == Path("/var/lib/wardd")
    assert Config().daemon.store_path == Path("/var/lib/wardd/wardd.sqlite")
    assert os.path.isabs(DaemonConfig().state_dir)


def test_check_config_finds_a_missing_tls_file_before_any_connection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, f'[mqtt]\nurl = "mqtts://broker:8883"\ntls.ca_file = "{tmp_path}/ca.pem"\n')
    assert cli.main(["check-config", str(config)]) == 2
    assert f"  mqtt.tls.ca_file: {tmp_path}/ca.pem is not a readable file\n" in capsys.readouterr().err
    (tmp_path / "ca.pem").write_text("")
    assert cli.main(["check-config", str(config)]) == 0


@pytest.mark.integration
@pytest.mark.parametrize(
    ("table", "what"), [("health", "the health probes"), ("hl7", "HL7 v2 in")], ids=["health", "hl7"]
)
def test_a_port_in_use_is_named_with_its_options(tmp_path: Path, table: str, what: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # No broker answers: the run fails on the port alone, whoever else uses a broker here.
        config = _config(
            tmp_path, f'[{table}]\nport = {port}\n[mqtt]\nurl = "mqtt://127.0.0.1:{_down(tmp_path)}"\n'
        )
        result = wardd("run", "--config", str(config), "--log-level", "ERROR")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"wardd run: cannot serve {what} on 127.0.0.1:{port} ({table}.host, {table}.port): "
        "Address already in use"
    )


@pytest.mark.integration
def test_the_unit_init_writes_is_valid_for_systemd(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "wardd.service"
    assert wardd("init", "--unit", str(unit)).returncode == 0
    result = subprocess.run(
        [analyze, "verify", str(unit)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_config_shows_the_warnings_of_the_valid_part_with_the_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Bed b0 is invalid (its bag is not judged: its error says why); bed b1 and its bag are valid.
    text = _config(tmp_path, bag_ug_per_ml=37.5).read_text()
    bad_bed = (
        '[[beds]]\nward = "w1"\nid = "b0"\npatient = "P-0"\nweight_kg = 0\nheight_cm = 170\n'
        'protocol_start = "2026-03-02T08:00:00Z"\n'
        '[[bags]]\nbed = "b0"\nbag_id = "bag-0"\nconcentration_ug_per_ml = 37.5\nhung_at = "2026-03-02T08:00:00Z"\n'
    )
    config = _file_in(tmp_path, "both.toml", "[mqtt]\nqos = 7\n" + bad_bed + text)
    assert cli.main(["check-config", config]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[:3] == [
        f"wardd check-config: {config}: 2 error(s)",
        "  mqtt.qos: Input should be 0, 1 or 2",
        "  beds[0].weight_kg: Input should be greater than 0",
    ]
    [warning] = lines[3:]
    assert warning.startswith(f"{config}: warning: bags[1].concentration_ug_per_ml: 37.5 µg/mL is 19.3 times")


@pytest.mark.integration
async def test_the_embedded_broker_is_announced_with_the_command_and_both_ports(tmp_path: Path) -> None:
    down = _down(tmp_path)
    out = io.StringIO()
    async with broker_for(Config(mqtt=MqttConfig(url=f"mqtt://127.0.0.1:{down}")), out, "scenario") as used:
        port = int(used.mqtt.url.rsplit(":", 1)[1])
    assert port != down
    assert out.getvalue() == (
        f"scenario: no broker at 127.0.0.1:{down}; started an embedded one on 127.0.0.1:{port}\n"
    )
