"""The demo ward: embedded broker when none answers, simulated pumps and monitors, alerts shown."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon.demo import default_config, run_demo
from tests.servers import free_port


class Terminal(io.StringIO):
    """Captured output that claims to be a terminal, so the live console draws."""

    def isatty(self) -> bool:
        return True


def _config(tmp_path: Path) -> Path:
    start = datetime.now(UTC) - timedelta(hours=11, minutes=55)
    path = tmp_path / "ward.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "{tmp_path / "state"}"
tick_interval_s = 5.0
[mqtt]
url = "mqtt://127.0.0.1:{free_port()}"
topic_prefix = "demo-test"
[influx]
api = "v1"
url = "http://127.0.0.1:{free_port()}"
"""
        + "".join(
            f"""
[[beds]]
ward = "w"
id = "b{i}"
patient = "P{i}"
weight_kg = 63
height_cm = 165
protocol_start = "{start.isoformat()}"
[[pumps]]
id = "p{i}"
bed = "b{i}"
url = "/dev/ttyUSB{i}"
poll_interval_s = 10
reply_timeout_s = 10
comm_lost_after_s = 120
[[bags]]
bed = "b{i}"
bag_id = "bag{i}"
concentration_ug_per_ml = 0.0375
hung_at = "{start.isoformat()}"
"""
            for i in range(2)
        )
    )
    return path


async def test_demo_starts_its_own_broker_and_shows_the_fever(tmp_path: Path) -> None:
    out = Terminal()
    seen = await run_demo(speed=120.0, duration_s=8.0, config_path=_config(tmp_path), out=out)
    text = out.getvalue()
    assert "started an embedded one" in text
    assert "keeping points as line protocol" in text  # the configured database does not answer
    assert "w/b0" in text
    assert "dose   9.0 /  9.0 µg/day" in text  # the simulated pump delivers the protocol dose
    assert "FEVER" in text  # bed b1 follows the published case
    assert seen >= 1


def test_default_ward_has_a_pump_and_bag_per_bed(tmp_path: Path) -> None:
    config = default_config(6, tmp_path, datetime.now(UTC))
    assert len(config.beds) == len(config.pumps) == len(config.bags) == 6
