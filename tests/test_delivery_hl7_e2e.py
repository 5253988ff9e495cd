"""End to end: `wardd run` as a real process reports the published case's fever to an
alert manager over MLLP (IHE PCD ACM ORU^R40).

The monitor messages go over a private broker; the rules raise FEVER; the route sends it
to an alert manager that is down at first. The daemon is killed (SIGKILL) with the
message queued, the manager comes back, the daemon restarts: the ORU^R40 arrives, parsed
by hl7apy, with the bed's pseudonym and the fever's value, and the daemon stops cleanly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.servers import AcmListener, Mosquitto
from tests.test_e2e import BED, WARD, fever_queued_then_kill, route_to, write_config
from tests.ward_load import WarddProcess

pytestmark = pytest.mark.integration  # real servers, processes or pseudo-terminals


async def test_wardd_run_reports_the_fever_to_an_alert_manager_across_a_crash(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str
) -> None:
    manager = AcmListener()  # not listening yet: connections refused
    now = datetime.now(UTC).replace(microsecond=0)
    hour12 = now - timedelta(minutes=15)
    config = write_config(
        tmp_path / "ward.toml",
        mqtt_url=mosquitto.url,
        prefix=prefix,
        start=hour12 - timedelta(hours=12),
        tables=route_to(
            "acm",
            f"""
[[receivers]]
name = "acm"
type = "hl7"
host = "127.0.0.1"
port = {manager.port}
receiving_application = "AM"
retry_min_s = 0.2
retry_max_s = 0.5
timeout_s = 2.0
""",
        ),
    )
    daemon = WarddProcess(config, tmp_path / "wardd.log")
    try:
        await fever_queued_then_kill(daemon, mosquitto.url, prefix, hour12, "to acm: retry (attempt 2)")
        await manager.start()
        daemon.start()
        await manager.wait_for(lambda got: any(m.condition == "FEVER" for m in got), 30)
        fever = next(m for m in manager.received if m.condition == "FEVER")
        assert (fever.message_type, fever.phase, fever.answer) == ("ORU^R40^ORU_R40", "start", "AA")
        assert (fever.patient, fever.ward, fever.bed) == ("SSC-001", WARD, BED)
        assert fever.facets["1.0.0.0.2"] == "38.2"
        assert fever.codes["1.0.0.0.1"] == "196648"  # MDC_EVT_HI
        assert fever.flags == "H~PM~SP"
        ids = [m.control_id for m in manager.received]
        assert len(ids) == len(set(ids)), "each message taken once"
        assert daemon.terminate() == 0
    finally:
        daemon.close()
        await manager.stop()
