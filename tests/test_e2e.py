"""End to end: `wardd run` as a real process, a private broker and a real database.

The published case (hour 12: 38.2 °C, normal blood pressure) goes in as monitor
messages; points come out in InfluxDB through the v1 API (influxd 1.x) and the v2
API (victoria-metrics), and a FEVER alert arrives on the bed's alert topic. Every
kind of bad input is sent too: the daemon keeps running, stores none of it, and
counts each one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.helpers import wardd, write_ward_config
from tests.mqtt_watch import until, watch
from tests.servers import Influxd, Mosquitto, VictoriaMetrics
from tests.ward_load import WarddProcess

pytestmark = pytest.mark.integration  # real servers, processes or pseudo-terminals

WARD, BED = "haem", "12"
BAD_INPUTS: dict[str, bytes] = {
    "invalid_json": b"{this is not json",
    "missing_field": json.dumps({"device": "monitor-12", "obs": []}).encode(),
    "unknown_code": b"",  # filled per test: needs a fresh timestamp
    "wrong_unit": b"",
    "sentinel": b"",
    "implausible": b"",
    "future_timestamp": b"",
    "too_large": b'{"pad": "' + b"x" * 70_000 + b'"}',
}


def _vitals(ts: datetime, obs: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        {"ts": ts.isoformat().replace("+00:00", "Z"), "device": "monitor-12", "obs": obs}
    ).encode()


def _normal(ts: datetime, temp_c: float) -> bytes:
    return _vitals(
        ts,
        [
            {"code": "MDC_TEMP_BODY", "value": temp_c, "unit": "Cel"},
            {"code": "MDC_PRESS_BLD_NONINV_SYS", "value": 118, "unit": "mm[Hg]"},
            {"code": "MDC_PRESS_BLD_NONINV_DIA", "value": 72, "unit": "mm[Hg]"},
            {"code": "MDC_ECG_HEART_RATE", "value": 96, "unit": "/min"},
            {"code": "MDC_PULS_OXIM_SAT_O2", "value": 97, "unit": "%"},
            {"code": "MDC_RESP_RATE", "value": 18, "unit": "/min"},
        ],
    )


def _bad_inputs(now: datetime) -> dict[str, bytes]:
    bad = dict(BAD_INPUTS)
    bad["unknown_code"] = _vitals(now, [{"code": "MDC_NOT_A_CODE", "value": 1, "unit": "%"}])
    bad["wrong_unit"] = _vitals(now, [{"code": "MDC_TEMP_BODY", "value": 311.35, "unit": "K"}])
    bad["sentinel"] = _vitals(now, [{"code": "MDC_PULS_OXIM_SAT_O2", "value": 8388607, "unit": "%"}])
    bad["implausible"] = _vitals(now, [{"code": "MDC_TEMP_BODY", "value": 55.5, "unit": "Cel"}])
    bad["future_timestamp"] = _normal(now + timedelta(hours=1), 36.6)
    return bad


def write_config(
    path: Path, *, mqtt_url: str, prefix: str, start: datetime, influx: str = 'api = "none"', tables: str = ""
) -> Path:
    """A real config file for the case report's patient (60 kg) on the SSc protocol;
    ``tables``, more tables."""
    return write_ward_config(
        path,
        mqtt_url=mqtt_url,
        prefix=prefix,
        ward=WARD,
        beds={BED: "SSC-001"},
        start=start,
        weight_kg=60,
        daemon="tick_interval_s = 0.5",
        mqtt="",
        influx=influx,
        tables=tables,
    )


def route_to(receiver: str, table: str) -> str:
    """The ``[[receivers]]`` ``table`` of ``receiver`` and a route that tells it of every
    alert of the bed at once."""
    return f"""
[routing]
group_window_s = 0
{table}
[[routes]]
name = "bed-{BED}"
beds = ["{BED}"]
levels = [["{receiver}"]]
"""


async def fever_queued_then_kill(
    daemon: WarddProcess, broker_url: str, prefix: str, hour12: datetime, retried: str
) -> None:
    """Start ``daemon``, publish the published case's hour 12 (ten normal minutes, then ten
    at 38.2 °C), wait until its log says ``retried`` (the receiver is down), then kill it
    (SIGKILL): what it has to tell is in its store only."""
    daemon.start()
    await until(lambda: "MQTT connected" in daemon.output(), 30, "the daemon's MQTT connection")
    host, port = broker_url.removeprefix("mqtt://").split(":")
    async with aiomqtt.Client(host, int(port)) as client:
        for minute in range(-10, 11):
            temp_c = 36.8 if minute < 0 else 38.2
            payload = _normal(hour12 + timedelta(minutes=minute), temp_c)
            await client.publish(f"{prefix}/{WARD}/bed/{BED}/vitals", payload, qos=1)
    await until(lambda: retried in daemon.output(), 30, "the receiver retried")
    daemon.kill()


@pytest.fixture
def daemon_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Daemon:
    """`wardd run` in a subprocess."""

    def __init__(self, config: Path, log: Path, env: dict[str, str]) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def stop(self) -> int:
        """SIGTERM, then wait; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def running(tmp_path: Path, daemon_env: dict[str, str]) -> Iterator[list[Daemon]]:
    daemons: list[Daemon] = []
    yield daemons
    for d in daemons:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


async def _publish_case(mosquitto: Mosquitto, prefix: str, hour12: datetime, daemon: Daemon) -> None:
    topic = f"{prefix}/{WARD}/bed/{BED}/vitals"
    host, port = mosquitto.url.removeprefix("mqtt://").split(":")
    async with aiomqtt.Client(host, int(port)) as client:
        # Wait until the daemon has subscribed: its persistent session then queues for it anyway,
        # but only once it exists.
        await until(lambda: "MQTT connected" in daemon.output(), 30, "the daemon's MQTT connection")
        # Baseline before hour 12, then the fever, each minute of event time.
        for minute in range(-10, 11):
            ts = hour12 + timedelta(minutes=minute)
            await client.publish(topic, _normal(ts, 36.8 if minute < 0 else 38.2), qos=1)
        for payload in _bad_inputs(hour12 + timedelta(minutes=11)).values():
            await client.publish(topic, payload, qos=1)
        # A good message for a bed that is not configured: the wildcard subscription
        # brings it in, and it is refused as such.
        unknown = f"{prefix}/{WARD}/bed/99/vitals"
        await client.publish(unknown, _normal(hour12 + timedelta(minutes=11), 36.8), qos=1)


@pytest.mark.parametrize("api", ["v1", "v2"])
async def test_published_case_reaches_storage_and_raises_fever(
    api: str,
    tmp_path: Path,
    mosquitto: Mosquitto,
    prefix: str,
    running: list[Daemon],
    daemon_env: dict[str, str],
    request: pytest.FixtureRequest,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    hour12 = now - timedelta(minutes=15)
    start = hour12 - timedelta(hours=12)
    if api == "v1":
        influx: Influxd | VictoriaMetrics = request.getfixturevalue("influx1")
        assert isinstance(influx, Influxd)
        influx.create_database("wardd")
        section = f'api = "v1"\nurl = "{influx.url}"\ndatabase = "wardd"\nflush_interval_s = 0.2'
    else:
        influx = request.getfixturevalue("victoria")
        section = f'api = "v2"\nurl = "{influx.url}"\norg = "ward"\nbucket = "wardd"\nflush_interval_s = 0.2'
    config = write_config(
        tmp_path / "ward.toml", mqtt_url=mosquitto.url, prefix=prefix, influx=section, start=start
    )
    daemon = Daemon(config, tmp_path / "wardd.log", daemon_env)
    running.append(daemon)

    async with watch(mosquitto.url, f"{prefix}/{WARD}/bed/{BED}/alerts") as alert_watch:
        await _publish_case(mosquitto, prefix, hour12, daemon)
        await until(lambda: any(a["condition"] == "FEVER" for a in alert_watch), 30, "a FEVER alert")
        fever = next(a for a in alert_watch if a["condition"] == "FEVER")
        assert fever["kind"] == "physiological"
        assert fever["ward"] == WARD
        assert fever["bed"] == BED
        assert fever["value"] == 38.2
        assert fever["unit"] == "Cel"
        assert fever["priority"] == "medium"  # FEVER's priority (daemon/clinical/vitals.py PRIORITY)
        assert fever["state"] == "active"
        assert fever["id"]
        assert fever["message"]
        # Event time, not arrival time: the fever began at hour 12.
        since = datetime.fromisoformat(fever["since"])
        assert hour12 <= since <= hour12 + timedelta(minutes=5)
        assert not any(a["condition"] == "HYPOTENSION" for a in alert_watch)
        assert daemon.proc.poll() is None, daemon.output()

        # A nurse acknowledges it from the command line; the transition is published.
        ack = await asyncio.to_thread(
            wardd, "ack", "--config", str(config), fever["id"], "--user", "station-3", "--by", "Ward nurse 3"
        )
        assert ack.returncode == 0, ack.stderr
        assert "by station-3 (Ward nurse 3): now acknowledged" in ack.stdout
        await until(
            lambda: any(a["id"] == fever["id"] and a["state"] == "acknowledged" for a in alert_watch),
            10,
            "the acknowledgement",
        )
        [acked] = [a for a in alert_watch if a["id"] == fever["id"] and a["state"] == "acknowledged"]
        assert (acked["acked_by"], acked["acked_name"]) == ("station-3", "Ward nurse 3")
        unknown = await asyncio.to_thread(
            wardd, "ack", "--config", str(config), "no-such-id", "--user", "station-3"
        )
        assert unknown.returncode == 1
        assert "no open alert" in unknown.stderr
    assert daemon.stop() == 0, daemon.output()

    if isinstance(influx, Influxd):
        rows = influx.query("wardd", "SELECT temp_c, sbp_mmhg FROM vitals")
        assert len(rows) == 21
        first = rows[0]
        assert datetime.fromisoformat(first["time"]) == hour12 - timedelta(minutes=10)
        assert first["temp_c"] == 36.8
        assert rows[10]["temp_c"] == 38.2
        assert max(r["temp_c"] for r in rows) == 38.2  # the 55.5 artifact was not stored
        counters = {
            r["reason"]: r["count"]
            for r in influx.query(
                "wardd",
                "SELECT last(count) AS count FROM wardd_counters WHERE \"name\" = 'mqtt.rejected' GROUP BY reason",
            )
        }
    else:
        series = influx.export('{__name__="vitals_temp_c"}')
        assert len(series) == 1
        assert len(series[0]["values"]) == 21
        assert series[0]["timestamps"][0] == int((hour12 - timedelta(minutes=10)).timestamp() * 1000)
        assert max(series[0]["values"]) == 38.2
        counters = {
            s["metric"]["reason"]: s["values"][-1]
            for s in influx.export('{__name__="wardd_counters_count", name="mqtt.rejected"}')
        }
    for reason in [*BAD_INPUTS, "unknown_bed"]:
        assert counters.get(reason, 0) >= 1, (reason, counters)

    status = wardd("status", "--config", str(config), check=True)
    assert f"{WARD}/{BED}: protocol ssc-14d, day 1" in status.stdout
    assert f"FEVER [acknowledged] id {fever['id']}" in status.stdout
