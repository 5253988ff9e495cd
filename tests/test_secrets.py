"""Secrets never leak: the daemon runs into refusals with secrets configured, and every line it
writes (log, command output, the store) is searched for them."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from daemon.metrics import REDACTED, RedactingFilter
from simulators.secure import find_binary
from tests.helpers import FAST_RECONNECT, wardd, write_ward_config
from tests.mqtt_watch import until
from tests.servers import Mosquitto, free_port, mosquitto, readable_copies
from tests.ward_load import WarddProcess

MQTT_PASSWORD = "mqtt-S3cr3t-0x4f2a"
INFLUX_TOKEN = "influx-T0k3n-0x77b1"
SECRETS = (MQTT_PASSWORD, INFLUX_TOKEN)


@pytest.fixture
def locked_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A mosquitto that knows user ``wardd`` with another password than the daemon's."""
    passwords = tmp_path / "passwd"
    subprocess.run(
        [
            find_binary("mosquitto_passwd", "/usr/bin/mosquitto_passwd"),
            "-b",
            "-c",
            str(passwords),
            "wardd",
            "other",
        ],
        check=True,
        capture_output=True,
    )
    with (
        readable_copies(passwords) as (password_file,),
        mosquitto(
            tmp_path / "mosquitto", access=f"allow_anonymous false\npassword_file {password_file}\n"
        ) as server,
    ):
        yield server


def _echoing_database(port: int, seen: list[str]) -> web.Application:
    """A database that refuses every write and echoes what it was sent, headers included."""

    async def write(request: web.Request) -> web.Response:
        echoed = f"unauthorized: {dict(request.headers)} {request.query_string}"
        seen.append(echoed)
        return web.Response(status=401, text=echoed)

    app = web.Application()
    app.router.add_post("/api/v2/write", write)
    return app


def _config(path: Path, *, mqtt_port: int, influx_port: int) -> Path:
    return write_ward_config(
        path,
        mqtt_url=f"mqtt://127.0.0.1:{mqtt_port}",
        ward="haem",
        beds=["1"],
        daemon='tick_interval_s = 0.5\nlog_level = "DEBUG"',
        mqtt=f'username = "wardd"\npassword.env = "WARDD_TEST_MQTT_PASSWORD"\n{FAST_RECONNECT}',
        influx=f'api = "v2"\nurl = "http://127.0.0.1:{influx_port}"\ntoken.value = "{INFLUX_TOKEN}"\nflush_interval_s = 0.2',
        tables='[alerts]\nack_users = ["station-haem"]',
    )


@pytest.mark.integration
async def test_no_secret_reaches_a_log_an_output_or_the_store(
    tmp_path: Path, locked_broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    influx_port = free_port()
    runner = web.AppRunner(_echoing_database(influx_port, seen))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", influx_port)
    await site.start()
    config = _config(tmp_path / "ward.toml", mqtt_port=locked_broker.port, influx_port=influx_port)
    monkeypatch.setenv("WARDD_TEST_MQTT_PASSWORD", MQTT_PASSWORD)
    daemon = WarddProcess(config, tmp_path / "wardd.log")
    try:
        daemon.start()
        # Until both refusals have happened several times: the broker's (bad password)
        # and the database's (401 echoing the token).
        await until(
            lambda: daemon.output().count("MQTT link") >= 2 and len(seen) >= 2, 30, "both refusals, twice"
        )
        daemon.terminate()
    finally:
        daemon.close()
        await runner.cleanup()
    assert any(INFLUX_TOKEN in s for s in seen), "the bait: the database did receive the token"
    outputs = {"wardd run": daemon.output()}
    for args in (("check-config", str(config)), ("status", "--config", str(config))):
        result = wardd(*args)
        outputs[f"wardd {args[0]}"] = result.stdout + result.stderr
    ack = wardd("ack", "--config", str(config), "x-1", "--by", "nurse-a")
    outputs["wardd ack"] = ack.stdout + ack.stderr
    outputs["store"] = b"".join(p.read_bytes() for p in (tmp_path / "state").glob("*.sqlite*")).decode(
        errors="replace"
    )
    for name, text in outputs.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked into {name}"
    # The database's 401 (echoing the token) was seen and kept: redacted, not dropped.
    assert "[redacted]" in outputs["wardd run"]


def test_the_log_filter_removes_secrets_from_messages_arguments_and_tracebacks() -> None:
    redacting = RedactingFilter((MQTT_PASSWORD, "", MQTT_PASSWORD[:4]))
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "link down (%s)", (MQTT_PASSWORD,), None)
    assert redacting.filter(record)
    assert record.getMessage() == f"link down ({REDACTED})"  # the longer secret first, whole
    try:
        raise RuntimeError(f"refused {MQTT_PASSWORD}")
    except RuntimeError:
        failure = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    redacting.filter(failure)
    formatted = logging.Formatter().format(failure)
    assert MQTT_PASSWORD not in formatted
    assert REDACTED in formatted
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "nothing secret %d", (3,), None)
    redacting.filter(plain)
    assert plain.getMessage() == "nothing secret 3"
