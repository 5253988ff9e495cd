"""End to end: `wardd run` as a real process tells a webhook of the published case's fever.

The monitor messages go over a private broker; the rules raise FEVER; the route sends
it to a webhook that is down at first. The daemon is killed (SIGKILL) with the notice
queued, the webhook comes back, the daemon restarts: the notice arrives, signed, once
per delivery number, and the daemon stops cleanly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.servers import Mosquitto, WebhookServer
from tests.test_e2e import BED, WARD, fever_queued_then_kill, route_to, write_config
from tests.ward_load import WarddProcess

pytestmark = pytest.mark.integration  # real servers, processes or pseudo-terminals

KEY = "e2e-webhook-key"


async def test_wardd_run_tells_a_webhook_of_the_fever_across_a_crash(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str
) -> None:
    hook = WebhookServer(KEY.encode())  # not listening yet: connections refused
    now = datetime.now(UTC).replace(microsecond=0)
    hour12 = now - timedelta(minutes=15)
    config = write_config(
        tmp_path / "ward.toml",
        mqtt_url=mosquitto.url,
        prefix=prefix,
        start=hour12 - timedelta(hours=12),
        tables=route_to(
            "nurse-12",
            f"""
[[receivers]]
name = "nurse-12"
type = "webhook"
url = "{hook.url}/wardd"
secret.env = "WARDD_TEST_WEBHOOK_KEY"
retry_min_s = 0.2
retry_max_s = 0.5
""",
        ),
    )
    daemon = WarddProcess(config, tmp_path / "wardd.log", env={"WARDD_TEST_WEBHOOK_KEY": KEY})
    try:
        await fever_queued_then_kill(daemon, mosquitto.url, prefix, hour12, "to nurse-12: retry (attempt 2)")
        await hook.start()
        daemon.start()
        await hook.wait_for(lambda got: any(r.body["alerts"][0]["condition"] == "FEVER" for r in got), 30)
        fever = next(r for r in hook.received if r.body["alerts"][0]["condition"] == "FEVER")
        assert fever.signed
        assert fever.path == "/wardd"
        assert fever.body["notice"] == "alert"
        assert fever.body["alerts"][0]["value"] == 38.2
        assert fever.body["alerts"][0]["priority"] == "medium"
        assert fever.body["title"] == f"MEDIUM FEVER, bed {BED} ({WARD})"
        numbers = [r.delivery for r in hook.received]
        assert len(numbers) == len(set(numbers)), "each delivery taken once"
        assert daemon.terminate() == 0
    finally:
        daemon.close()
        await hook.stop()
    assert KEY not in daemon.output()
