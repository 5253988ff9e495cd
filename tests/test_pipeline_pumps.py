"""Component: the whole pipeline in-process against NE-1000 and Alaris simulators on real
pseudo-terminals, a private mosquitto and a private influxd.

The pump's readings become `infusion` and `dose` points; a vanished pump raises
PUMP_COMM_LOST and its return resolves it; a stall raises PUMP_STALL until the pump
runs again (NE-1000, basic and safe mode both). The Alaris, whose known commands
report no alarm, loses the link the same way when its cable is pulled or its
remote-access keep-alives stop getting through; so does a pump docked in a Fresenius
base when its cable is pulled or it is taken off the base. Both lose the link too
while every reply comes with a bad checksum, and find it again on a clean line.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.app import Pipeline, build
from daemon.clock import SystemClock
from daemon.config import parse
from daemon.devices.ne1000 import Alarm
from simulators.alaris import AlarisFault, SimulatedAlaris
from simulators.fresenius import BaseFault, SimulatedBase
from simulators.pump import SimulatedPump
from tests.helpers import running
from tests.mqtt_watch import until, watch
from tests.servers import Influxd, Mosquitto

pytestmark = pytest.mark.integration  # real servers, processes or pseudo-terminals

WARD, BED = "haem", "12"
CONCENTRATION_UG_PER_ML = 0.0375  # 24 h bag at 10 mL/h for 9 µg/day (domain.md section 1)


def _config(
    tmp_path: Path, mosquitto: Mosquitto, influx: Influxd, prefix: str, link: Path, pump: dict[str, Any]
) -> Any:
    start = datetime.now(UTC) - timedelta(hours=3)
    return parse(
        {
            "daemon": {"state_dir": str(tmp_path / "state"), "tick_interval_s": 0.2},
            "mqtt": {"url": mosquitto.url, "client_id": f"wardd-{prefix}", "topic_prefix": prefix},
            "influx": {"api": "v1", "url": influx.url, "database": "wardd", "flush_interval_s": 0.2},
            "beds": [
                {
                    "ward": WARD,
                    "id": BED,
                    "patient": "SSC-001",
                    "weight_kg": 63,
                    "height_cm": 165,
                    "protocol_start": start.isoformat(),
                }
            ],
            "pumps": [
                {
                    "id": "p12",
                    "bed": BED,
                    "url": str(link),
                    "poll_interval_s": 0.1,
                    "comm_lost_after_s": 0.8,
                    "reply_timeout_s": 0.2,
                    "retries": 1,
                    "reconnect_min_s": 0.05,
                    "reconnect_max_s": 0.2,
                    **pump,
                }
            ],
            "bags": [
                {
                    "bed": BED,
                    "bag_id": "B1",
                    "concentration_ug_per_ml": CONCENTRATION_UG_PER_ML,
                    "volume_ml": 270,
                    "hung_at": start.isoformat(),
                }
            ],
        }
    )


def _phases(alerts: list[dict[str, Any]], condition: str) -> list[str]:
    return [a["phase"] for a in alerts if a["condition"] == condition]


async def _bad_checksums_then_clean(
    pipeline: Pipeline, alerts: list[dict[str, Any]], spoil: Callable[[], None], mend: Callable[[], None]
) -> None:
    """A line that corrupts every reply (``spoil``): bad checksums only, the link lost; then
    clean again (``mend``): the link back and readings stored again."""
    spoil()
    await until(lambda: _phases(alerts, "PUMP_COMM_LOST")[-1:] == ["start"], 15, "bad checksums")
    assert pipeline.counters.get("pump.p12", "bad_crc") >= 1
    mend()
    await until(lambda: _phases(alerts, "PUMP_COMM_LOST")[-2:] == ["start", "end"], 15, "clean line")
    accepted = pipeline.counters.get("influx.accepted")
    await until(lambda: pipeline.counters.get("influx.accepted") >= accepted + 10, 15, "readings again")


def _assert_steady_infusion_stored(influx: Influxd) -> None:
    """The readings of a pump infusing at 10 mL/h throughout, its volume counting up, and
    the dose delivered all along the 9 µg/day expected."""
    rows = influx.query("wardd", "SELECT rate_ml_per_h, volume_infused_ml, state FROM infusion")
    assert len(rows) >= 10
    assert {r["state"] for r in rows} == {"infusing"}
    assert {r["rate_ml_per_h"] for r in rows} == {10.0}
    volumes = [r["volume_infused_ml"] for r in rows]
    assert volumes == sorted(volumes)
    assert volumes[-1] > volumes[0]
    dose = influx.query("wardd", "SELECT expected_ug_per_day, delivered_ug_per_day FROM dose")
    assert {r["expected_ug_per_day"] for r in dose} == {9.0}
    delivered = [r["delivered_ug_per_day"] for r in dose if r["delivered_ug_per_day"] is not None]
    assert delivered
    assert delivered == pytest.approx([9.0] * len(delivered))


@pytest.mark.parametrize("safe_s", [0, 2], ids=["basic", "safe"])
async def test_pump_readings_storage_and_technical_alerts(
    tmp_path: Path, mosquitto: Mosquitto, influx1: Influxd, prefix: str, safe_s: int
) -> None:
    influx1.create_database("wardd")
    link = tmp_path / "pump0"
    async with SimulatedPump(clock=SystemClock(), link=link, rate_ml_per_h=10.0, running=True) as pump:
        config = _config(tmp_path, mosquitto, influx1, prefix, link, {"safe_mode_timeout_s": safe_s})
        async with (
            watch(mosquitto.url, f"{prefix}/{WARD}/bed/{BED}/alerts") as alerts,
            running(build(config)) as pipeline,
        ):
            await until(lambda: pipeline.counters.get("influx.accepted") >= 20, 15, "pump readings")

            await pump.disconnect()
            await until(lambda: _phases(alerts, "PUMP_COMM_LOST") == ["start"], 15, "PUMP_COMM_LOST")
            lost = next(a for a in alerts if a["condition"] == "PUMP_COMM_LOST")
            assert lost["kind"] == "technical"
            await pump.reconnect()
            await until(
                lambda: _phases(alerts, "PUMP_COMM_LOST")[-1:] == ["end"], 15, "PUMP_COMM_LOST to end"
            )

            pump.raise_alarm(Alarm.STALL)
            await until(lambda: _phases(alerts, "PUMP_STALL") == ["start"], 15, "PUMP_STALL")
            pump.start()
            await until(lambda: _phases(alerts, "PUMP_STALL")[-1:] == ["end"], 15, "PUMP_STALL to end")
            dose_alerts = [a for a in alerts if a["condition"].startswith(("DOSE_", "BOLUS"))]
            assert dose_alerts == []

    rows = influx1.query("wardd", "SELECT rate_ml_per_h, volume_infused_ml, state FROM infusion")
    assert len(rows) >= 10
    assert {r["rate_ml_per_h"] for r in rows if r["state"] == "infusing"} == {10.0}
    volumes = [r["volume_infused_ml"] for r in rows]
    assert volumes == sorted(volumes)
    assert any(r["state"] == "alarm" for r in rows)
    dose = influx1.query("wardd", "SELECT expected_ug_per_day, delivered_ug_per_day FROM dose")
    assert dose
    assert {r["expected_ug_per_day"] for r in dose} == {9.0}
    delivered = [r["delivered_ug_per_day"] for r in dose if r["delivered_ug_per_day"] is not None]
    assert delivered
    assert delivered[0] == pytest.approx(9.0)


async def test_alaris_readings_dose_and_line_faults(
    tmp_path: Path, mosquitto: Mosquitto, influx1: Influxd, prefix: str
) -> None:
    influx1.create_database("wardd")
    link = tmp_path / "alaris0"
    async with SimulatedAlaris(
        clock=SystemClock(), link=link, rate_ml_per_h=10.0, running=True, remote_timeout_s=0.4
    ) as pump:
        alaris = {"driver": "alaris-asena", "keepalive_interval_s": 0.1}
        config = _config(tmp_path, mosquitto, influx1, prefix, link, alaris)
        async with (
            watch(mosquitto.url, f"{prefix}/{WARD}/bed/{BED}/alerts") as alerts,
            running(build(config)) as pipeline,
        ):
            await until(lambda: pipeline.counters.get("influx.accepted") >= 20, 15, "pump readings")

            await pump.disconnect()
            await until(lambda: _phases(alerts, "PUMP_COMM_LOST") == ["start"], 15, "PUMP_COMM_LOST")
            await pump.reconnect()
            await until(lambda: _phases(alerts, "PUMP_COMM_LOST") == ["start", "end"], 15, "link back")

            # Keep-alives that no longer reach the pump: its remote access lapses.
            pump.deaf_to_keepalives = True
            await until(
                lambda: _phases(alerts, "PUMP_COMM_LOST") == ["start", "end", "start"], 15, "keep-alive lost"
            )
            pump.deaf_to_keepalives = False
            await until(
                lambda: _phases(alerts, "PUMP_COMM_LOST") == ["start", "end", "start", "end"],
                15,
                "keep-alive back",
            )

            await _bad_checksums_then_clean(
                pipeline, alerts, lambda: pump.spoil(AlarisFault.BAD_CRC, 100_000), pump.mend
            )
            assert [a for a in alerts if a["condition"] != "PUMP_COMM_LOST"] == []
            assert all(a["kind"] == "technical" for a in alerts)

    _assert_steady_infusion_stored(influx1)


async def test_fresenius_module_readings_dose_and_line_faults(
    tmp_path: Path, mosquitto: Mosquitto, influx1: Influxd, prefix: str
) -> None:
    influx1.create_database("wardd")
    link = tmp_path / "base0"
    async with SimulatedBase(
        clock=SystemClock(), link=link, modules=3, rate_ml_per_h=10.0, running=True, enq_interval_s=0.2
    ) as base:
        # A pseudo-terminal cannot carry the base's 7E1: 8N1 carries the same characters.
        fresenius = {"driver": "fresenius-base-a", "module": 3, "bytesize": 8, "parity": "N"}
        config = _config(tmp_path, mosquitto, influx1, prefix, link, fresenius)
        async with (
            watch(mosquitto.url, f"{prefix}/{WARD}/bed/{BED}/alerts") as alerts,
            running(build(config)) as pipeline,
        ):
            await until(lambda: pipeline.counters.get("influx.accepted") >= 20, 15, "pump readings")

            await base.disconnect()
            await until(lambda: _phases(alerts, "PUMP_COMM_LOST") == ["start"], 15, "PUMP_COMM_LOST")
            await base.reconnect()
            await until(lambda: _phases(alerts, "PUMP_COMM_LOST") == ["start", "end"], 15, "link back")

            # The pump is taken off the base: the base answers "module impossible".
            module = base.modules.pop(3)
            await until(
                lambda: _phases(alerts, "PUMP_COMM_LOST") == ["start", "end", "start"], 15, "module off"
            )
            base.modules[3] = module
            await until(
                lambda: _phases(alerts, "PUMP_COMM_LOST") == ["start", "end", "start", "end"],
                15,
                "module back",
            )

            await _bad_checksums_then_clean(
                pipeline, alerts, lambda: base.spoil(BaseFault.BAD_CRC, 100_000), base.mend
            )
            assert [a for a in alerts if a["condition"] != "PUMP_COMM_LOST"] == []
            assert pipeline.counters.get("pump.p12", "error_reply") >= 1
            # The daemon answered the base's keep-alive (one may go unheard while the cable is out).
            assert base.keepalives_answered >= 1

    _assert_steady_infusion_stored(influx1)
