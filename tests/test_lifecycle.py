"""Process lifecycle against a private broker: persistent session across a daemon restart,
an outbox that survives a broker restart, and a clear non-zero exit on failure."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from daemon.app import build
from daemon.config import Config, parse
from daemon.events import Metric, VitalSample
from tests.helpers import running, wardd
from tests.mqtt_watch import until, watch
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration  # real servers, processes or pseudo-terminals

WARD, BED = "haem", "12"


def _config(tmp_path: Path, mosquitto: Mosquitto, prefix: str) -> Config:
    return parse(
        {
            "daemon": {"state_dir": str(tmp_path / "state")},
            "mqtt": {
                "url": mosquitto.url,
                "client_id": f"wardd-{prefix}",
                "topic_prefix": prefix,
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.3,
            },
            "influx": {"api": "none"},
            "beds": [
                {
                    "ward": WARD,
                    "id": BED,
                    "patient": "SSC-001",
                    "weight_kg": 63,
                    "height_cm": 165,
                    "protocol_start": (datetime.now(UTC) - timedelta(hours=12)).isoformat(),
                }
            ],
        }
    )


def _vitals(minute: int, temp_c: float) -> bytes:
    ts = datetime.now(UTC) - timedelta(minutes=30 - minute)
    obs = [{"code": "MDC_TEMP_BODY", "value": temp_c, "unit": "Cel"}]
    return json.dumps({"ts": ts.isoformat(), "device": "m1", "obs": obs}).encode()


async def test_vitals_published_while_the_daemon_restarts_are_delivered_after(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str
) -> None:
    config = _config(tmp_path, mosquitto, prefix)
    async with running(build(config)):
        pass  # the first run creates the persistent session and its subscriptions
    host, port = mosquitto.url.removeprefix("mqtt://").split(":")
    async with aiomqtt.Client(host, int(port)) as client:
        for minute in range(5):
            await client.publish(f"{prefix}/{WARD}/bed/{BED}/vitals", _vitals(minute, 36.9), qos=1)
    async with running(build(config)) as pipeline:
        await until(lambda: pipeline.counters.get("mqtt.accepted", "vitals") == 5, 10, "the queued vitals")


async def test_alerts_raised_while_the_broker_is_down_are_delivered_when_it_returns(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str
) -> None:
    config = _config(tmp_path, mosquitto, prefix)
    async with running(build(config)) as pipeline:
        mosquitto.stop()
        await until(lambda: not pipeline.link.connected.is_set(), 10, "the link to notice")
        start = datetime.now(UTC) - timedelta(minutes=10)
        for minute in range(6):
            await pipeline.emit(
                VitalSample(WARD, BED, "m1", start + timedelta(minutes=minute), {Metric.TEMP_C: 38.4})
            )
        await until(lambda: pipeline.link.pending > 0, 10, "a queued alert")
        mosquitto.start()
        async with watch(mosquitto.url, f"{prefix}/{WARD}/bed/{BED}/alerts/+") as retained:
            await until(
                lambda: any(a.get("condition") == "FEVER" for a in retained), 15, "the retained FEVER state"
            )
        await asyncio.wait_for(pipeline.link.drained(), 10)
        assert pipeline.counters.get("mqtt.connections", "lost") >= 1


def test_a_failure_at_start_exits_non_zero_with_a_clear_message(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    config = tmp_path / "ward.toml"
    config.write_text(f'[daemon]\nstate_dir = "{blocker}/state"\n[influx]\napi = "none"\n')
    result = wardd("run", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr == (
        f"wardd run: cannot use {blocker}/state (daemon.state_dir in {config}): "
        f"{blocker} is a file, not a folder; nothing was started\n"
    )
