"""Delivery to an alert manager over HL7 v2 and MLLP (IHE PCD ACM), with real parts: the
daemon's pipeline and a private broker, and MLLP listeners that parse every message with
hl7apy and answer AA, AE or AR (``tests.servers.AcmListener``).

The alert manager is taken away and brought back: nothing is lost, each alert's messages
arrive in order and link to its start, ``DELIVERY_FAILED`` is raised and cleared, the
next level is told at once. AE and a missing answer are retried, AR is refused at once.
"""

from __future__ import annotations

import itertools
import json
import ssl
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.alerts import AlertState
from daemon.app import Pipeline, build
from daemon.config import Config, Hl7ReceiverConfig, parse
from daemon.delivery.receivers import Hl7Receiver, Outcome
from daemon.delivery.service import DELIVERY_FAILED, DeliveryService
from daemon.events import AlertCandidate, Priority
from daemon.web.probes import metrics_text
from simulators import tls_certs
from tests.helpers import running
from tests.mqtt_watch import until
from tests.servers import AcmListener, AcmMessage, Mosquitto

pytestmark = pytest.mark.integration  # real servers and a broker

WARD, BED, PATIENT = "haem", "12", "SSC-001"
RETRY = {"retry_min_s": 0.2, "retry_max_s": 0.4, "failed_after_attempts": 3, "timeout_s": 1.0}


def _config(tmp_path: Path, mosquitto: Mosquitto, prefix: str, listeners: dict[str, AcmListener]) -> Config:
    receivers = [
        {
            "name": name,
            "type": "hl7",
            "host": "127.0.0.1",
            "port": listener.port,
            "sending_facility": "HAEM",
            "receiving_application": "AM",
            **RETRY,
        }
        for name, listener in listeners.items()
    ]
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
            "routing": {"group_window_s": 0, "check_interval_s": 0.1},
            "receivers": receivers,
            "routes": [{"name": "all", "levels": [[name] for name in listeners], "repeat_after_s": 0}],
            "beds": [
                {
                    "ward": WARD,
                    "id": BED,
                    "patient": PATIENT,
                    "weight_kg": 63,
                    "height_cm": 165,
                    "protocol_start": (datetime.now(UTC) - timedelta(hours=12)).isoformat(),
                }
            ],
        }
    )


def running_pipeline(config: Config) -> AbstractAsyncContextManager[Pipeline]:
    """The pipeline ``build`` makes of ``config``, running for the block."""
    return running(build(config))


def _candidate(condition: str, priority: Priority, *, present: bool = True, **extra: Any) -> AlertCandidate:
    return AlertCandidate(
        condition, WARD, BED, datetime.now(UTC), present=present, priority=priority, **extra
    )


def _delivery(pipeline: Pipeline) -> DeliveryService:
    return next(s for s in pipeline.services if isinstance(s, DeliveryService))


def _open(pipeline: Pipeline, condition: str) -> list[AlertState]:
    return [a.state for a in pipeline.alerts.book.open_alerts() if a.condition == condition]


def _metrics(pipeline: Pipeline) -> dict[str, float]:
    """/metrics as the health server would serve it, by sample name and labels (sorted)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text(pipeline.counters, pipeline.gauges()).decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def _seen(listener: AcmListener) -> list[tuple[str, str]]:
    """(condition, phase) of each message taken, in arrival order."""
    return [(m.condition, m.phase) for m in listener.received]


def _answers(*codes: str | None) -> Iterator[str | None]:
    """The given answers, then AA for ever."""
    return itertools.chain(codes, itertools.repeat("AA"))


async def test_alert_manager_down_then_back_loses_nothing_keeps_order_and_raises_then_clears_delivery_failed(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str
) -> None:
    am, backup = AcmListener(), AcmListener()
    await am.start()
    await backup.start()
    config = _config(tmp_path, mosquitto, prefix, {"am": am, "backup": backup})
    try:
        async with running_pipeline(config) as pipeline:
            alerts = pipeline.alerts
            made = time.monotonic()
            await alerts.handle([_candidate("FEVER", Priority.MEDIUM, value=38.6, unit="Cel")])
            await am.wait_for(lambda got: len(got) == 1)
            latency_s = am.received[0].at - made
            first = am.received[0]
            assert (first.message_type, first.profile) == ("ORU^R40^ORU_R40", "IHE_PCD_ACM_001")
            assert (first.patient, first.ward, first.bed) == (PATIENT, WARD, BED)
            assert (first.condition, first.phase, first.parent) == ("FEVER", "start", "")
            assert first.alert.endswith("-0")
            assert first.codes["1.0.0.0.1"] == "196648"  # MDC_EVT_HI
            assert first.flags == "H~PM~SP"
            assert (first.codes["1.0.0.0.2"], first.facets["1.0.0.0.2"]) == ("150364", "38.6")

            # The alert manager goes away: connections refused.
            await am.stop()
            down_at = time.monotonic()
            await alerts.handle([_candidate("HYPOXIA", Priority.HIGH)])
            await alerts.handle([_candidate("FEVER", Priority.MEDIUM, present=False)])
            # Three failed attempts (0, +0.2 s, +0.4 s): the next level is told at once.
            await backup.wait_for(lambda got: ("HYPOXIA", "start") in _seen(backup))
            escalated_s = time.monotonic() - down_at
            assert _open(pipeline, DELIVERY_FAILED) == [AlertState.ACTIVE]
            # The next level's manager hears of HYPOXIA first from the escalation: a start.
            told_backup = next(m for m in backup.received if m.condition == "HYPOXIA")
            assert (told_backup.phase, told_backup.parent) == ("start", "")
            metrics = _metrics(pipeline)
            assert metrics['wardd_delivery_failing{receiver="am"}'] == 1
            assert metrics['wardd_delivery_failing{receiver="backup"}'] == 0
            assert metrics['wardd_delivery_outbox_notices{receiver="am"}'] >= 2
            assert metrics['wardd_delivery_oldest_waiting_seconds{receiver="am"}'] > 0
            assert metrics['wardd_delivery_attempts_by_receiver_total{outcome="retry",receiver="am"}'] >= 3

            # Back: what it missed arrives in the order it was queued.
            await am.start()
            back_at = time.monotonic()
            await am.wait_for(lambda got: len(got) >= 4)
            drained_s = am.received[-1].at - back_at
            assert _seen(am) == [
                ("FEVER", "start"),
                ("HYPOXIA", "start"),
                ("FEVER", "end"),
                (DELIVERY_FAILED, "start"),
            ]
            fever_start, hypoxia, fever_end, failed = am.received
            # The end links to the start (OBR-29) and carries a larger update counter.
            assert fever_end.parent == fever_start.alert
            assert fever_end.alert.rsplit("-", 1)[0] == fever_start.alert.rsplit("-", 1)[0]
            assert int(fever_end.alert.rsplit("-", 1)[1]) > 0
            assert fever_end.facets["1.0.0.0.4"] == "inactive"
            assert hypoxia.flags == "L~PH~SP"
            assert hypoxia.codes["1.0.0.0.1"] == "HYPOXIA"  # no confirmed MDC code: local 99WARDD
            assert failed.flags == "A~PH~ST"
            assert len({m.control_id for m in am.received}) == 4
            await until(
                lambda: _open(pipeline, DELIVERY_FAILED) == [AlertState.LATCHED],
                20,
                "DELIVERY_FAILED cleared (latched)",
            )
            await until(lambda: _delivery(pipeline).pending() == 0, 20, "every notice delivered")
            counters = pipeline.counters
            assert counters.get("delivery.failed", "am") == 1
            assert counters.get("delivery.delivered", "am") == 4
            metrics = _metrics(pipeline)
            assert (
                metrics['wardd_delivery_attempts_by_receiver_total{outcome="delivered",receiver="am"}'] == 4
            )
            assert metrics['wardd_delivery_attempts_by_receiver_total{outcome="refused",receiver="am"}'] == 0
            assert metrics['wardd_delivery_outbox_notices{receiver="am"}'] == 0
            assert metrics['wardd_delivery_failing{receiver="am"}'] == 0
            assert 'wardd_delivery_oldest_waiting_seconds{receiver="am"}' not in metrics
    finally:
        await am.stop()
        await backup.stop()
    print(  # figures for the report (pytest -s)
        f"hl7: first message acknowledged {latency_s * 1000:.1f} ms after the alert; next level "
        f"told {escalated_s:.2f} s after the alert manager went down; backlog of 4 delivered "
        f"{drained_s:.2f} s after it came back"
    )


@pytest.mark.parametrize(
    ("answers", "retries"),
    [
        pytest.param(("AE", "AE"), 2, id="AE-retried"),
        pytest.param((None,), 1, id="no-answer-retried"),
    ],
)
async def test_an_error_or_no_answer_is_retried_until_accepted(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str, answers: tuple[str | None, ...], retries: int
) -> None:
    am = AcmListener()
    given = _answers(*answers)

    def answer(message: AcmMessage) -> str | None:
        return next(given)

    am.answer = answer
    await am.start()
    config = _config(tmp_path, mosquitto, prefix, {"am": am})
    try:
        async with running_pipeline(config) as pipeline:
            await pipeline.alerts.handle([_candidate("TACHYCARDIA", Priority.MEDIUM)])
            await until(
                lambda: pipeline.counters.get("delivery.delivered", "am") == 1, 20, "accepted at last"
            )
            assert pipeline.counters.get("delivery.attempts", "retry") == retries
            assert pipeline.counters.get("delivery.failed", "am") == 0
            assert _open(pipeline, DELIVERY_FAILED) == []
            await pipeline.writer.flush()
            attempts = [e for e in pipeline.store.journal() if e.get("what") == "delivery"]
            assert [e["outcome"] for e in attempts] == ["retry"] * retries + ["delivered"]
            said = "AE" if answers[0] == "AE" else "no acknowledgement within the timeout"
            assert said in attempts[0]["detail"]
            assert attempts[-1]["detail"].startswith(f"AA {BED}-TACHYCARDIA-")
            # Every retry is the same message: the same control id, for the manager to drop repeats.
            assert {m.control_id for m in am.received} == {attempts[0]["detail"].split(":")[0].split()[-1]}
    finally:
        await am.stop()


async def test_a_rejection_counts_as_failed_at_once_and_the_next_level_is_told(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str
) -> None:
    am, backup = AcmListener(), AcmListener()
    am.answer = lambda message: "AR"
    await am.start()
    await backup.start()
    config = _config(tmp_path, mosquitto, prefix, {"am": am, "backup": backup})
    try:
        async with running_pipeline(config) as pipeline:
            await pipeline.alerts.handle([_candidate("HYPOTENSION", Priority.HIGH)])
            await backup.wait_for(lambda got: ("HYPOTENSION", "start") in _seen(backup))
            assert [m.condition for m in am.received].count("HYPOTENSION") == 1  # not retried
            assert _open(pipeline, DELIVERY_FAILED) == [AlertState.ACTIVE]
            assert pipeline.counters.get("delivery.attempts", "refused") >= 1
    finally:
        await am.stop()
        await backup.stop()


def _receiver(listener: AcmListener) -> Hl7Receiver:
    config = Hl7ReceiverConfig.model_validate(
        {"name": "am", "type": "hl7", "host": "127.0.0.1", "port": listener.port, **RETRY}
    )
    return Hl7Receiver(config, {(WARD, BED): PATIENT})


def _body(delivery: int, *conditions: str) -> bytes:
    at = datetime.now(UTC).isoformat()
    alerts: list[dict[str, Any]] = [
        {
            "id": f"{BED}-{condition}-1",
            "ward": WARD,
            "bed": BED,
            "condition": condition,
            "priority": "medium",
            "kind": "physiological",
            "state": "active",
            "phase": "start",
            "value": None,
            "unit": None,
            "since": at,
            "updated": at,
            "message": condition.lower(),
            "details": {},
        }
        for condition in conditions
    ]
    return json.dumps({"delivery": delivery, "notice": "alert", "at": at, "alerts": alerts}).encode()


async def test_a_retried_group_does_not_send_again_what_was_accepted() -> None:
    am = AcmListener()
    given = _answers("AA", "AE")
    am.answer = lambda message: next(given)
    await am.start()
    receiver = _receiver(am)
    try:
        first = await receiver.send(5, _body(5, "FEVER", "TACHYCARDIA"), "", "")
        assert (first.outcome, first.detail) == (
            Outcome.RETRY,
            f"AE {BED}-TACHYCARDIA-1.5: the test alert manager says AE",
        )
        again = await receiver.send(5, _body(5, "FEVER", "TACHYCARDIA"), "", "")
        assert again.outcome is Outcome.DELIVERED
        assert [(m.control_id, m.answer) for m in am.received] == [
            (f"{BED}-FEVER-1.5", "AA"),
            (f"{BED}-TACHYCARDIA-1.5", "AE"),
            (f"{BED}-TACHYCARDIA-1.5", "AA"),
        ]
        assert am.connections == 1  # one connection, kept open between messages
    finally:
        await receiver.close()
        await am.stop()


async def test_a_manager_that_closes_each_connection_after_answering_costs_no_retry() -> None:
    """As hl7apy's MLLPServer: one message per connection. The next message goes on a new one."""
    am = AcmListener()
    am.close_after_answer = True
    await am.start()
    receiver = _receiver(am)
    try:
        for delivery in range(1, 6):
            attempt = await receiver.send(delivery, _body(delivery, "FEVER"), "", "")
            assert attempt.outcome is Outcome.DELIVERED, attempt.detail
        assert [m.control_id for m in am.received] == [f"{BED}-FEVER-1.{n}" for n in range(1, 6)]
        assert am.connections == 5
    finally:
        await receiver.close()
        await am.stop()


async def test_over_tls_the_managers_certificate_is_checked(tmp_path: Path) -> None:
    """A manager whose certificate the hospital's CA signed takes the message; one signed by
    another CA is never sent anything (the handshake fails, retried, said in plain words)."""
    ca, stranger = (
        tls_certs.authority(tmp_path / "ca"),
        tls_certs.authority(tmp_path / "other", "stranger-ca"),
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    good = tls_certs.server_cert(tmp_path / "good", ca)
    context.load_cert_chain(str(good.cert), str(good.key))
    am = AcmListener(tls=context)
    await am.start()
    config = Hl7ReceiverConfig.model_validate(
        {
            "name": "am",
            "type": "hl7",
            "host": "127.0.0.1",
            "port": am.port,
            "tls": {"ca_file": str(ca.cert)},
            **RETRY,
        }
    )
    wrong = Hl7ReceiverConfig.model_validate(
        {**config.model_dump(mode="json"), "tls": {"ca_file": str(stranger.cert)}}
    )
    receiver, doubtful = Hl7Receiver(config, {}), Hl7Receiver(wrong, {})
    try:
        attempt = await receiver.send(1, _body(1, "FEVER"), "", "")
        assert attempt.outcome is Outcome.DELIVERED, attempt.detail
        refused = await doubtful.send(2, _body(2, "FEVER"), "", "")
        assert refused.outcome is Outcome.RETRY
        assert "TLS" in refused.detail
        assert [m.control_id for m in am.received] == [f"{BED}-FEVER-1.1"]
    finally:
        await receiver.close()
        await doubtful.close()
        await am.stop()
