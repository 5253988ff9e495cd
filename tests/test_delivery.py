"""Delivery to people, with real parts: the daemon's pipeline and broker, a webhook
server (aiohttp, signatures checked), a mail relay (aiosmtpd) reached through Apprise.

Each receiver is taken away for a while and brought back: nothing is lost, each
alert's notices arrive in order, ``DELIVERY_FAILED`` is raised and then cleared, the
next level is told at once, and a restart in between loses nothing.
"""

from __future__ import annotations

import email
import email.policy
import functools
import itertools
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.alerts import AlertState
from daemon.app import Pipeline, build
from daemon.clock import ManualClock
from daemon.config import Config, parse
from daemon.delivery.service import DELIVERY_FAILED, DeliveryService, told_lines
from daemon.events import AlertCandidate, Kind, Priority
from daemon.metrics import Counters
from tests.helpers import running
from tests.mqtt_watch import until
from tests.servers import Mosquitto, SmtpServer, WebhookServer

pytestmark = pytest.mark.integration  # real servers, processes or pseudo-terminals

WARD, BED = "haem", "12"
KEY = "k3y-for-the-test"
RETRY = {"retry_min_s": 0.2, "retry_max_s": 0.4, "failed_after_attempts": 3, "timeout_s": 2.0}


def _config(tmp_path: Path, mosquitto: Mosquitto, prefix: str, receivers: list[dict[str, Any]]) -> Config:
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
            "routes": [
                {"name": "all", "levels": [[r["name"]] for r in receivers], "repeat_after_s": 0},
            ],
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


def _hook(name: str, server: WebhookServer) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "url": f"{server.url}/{name}", "secret": {"value": KEY}, **RETRY}


def _candidate(condition: str, priority: Priority, *, present: bool = True) -> AlertCandidate:
    return AlertCandidate(condition, WARD, BED, datetime.now(UTC), present=present, priority=priority)


def _delivery(pipeline: Pipeline) -> DeliveryService:
    return next(s for s in pipeline.services if isinstance(s, DeliveryService))


def _attempted(counters: Counters, n: int) -> bool:
    return counters.total("delivery.attempts") >= n


def _open(pipeline: Pipeline, condition: str) -> list[AlertState]:
    return [a.state for a in pipeline.alerts.book.open_alerts() if a.condition == condition]


def _journal(pipeline: Pipeline, what: str) -> list[dict[str, Any]]:
    return [e for e in pipeline.store.journal() if e.get("what") == what]


def _notices(server: WebhookServer, path: str) -> list[tuple[str, str]]:
    """(notice, condition) of each signed request on ``path``, in arrival order."""
    return [
        (r.body["notice"], ",".join(a["condition"] for a in r.body["alerts"]))
        for r in server.received
        if r.path == path and r.signed
    ]


async def test_webhook_down_then_back_loses_nothing_keeps_order_and_raises_then_clears_delivery_failed(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str
) -> None:
    nurse, charge = WebhookServer(KEY.encode()), WebhookServer(KEY.encode())
    await nurse.start()
    await charge.start()
    config = _config(tmp_path, mosquitto, prefix, [_hook("nurse", nurse), _hook("charge", charge)])
    try:
        async with running(build(config)) as pipeline:
            alerts = pipeline.alerts
            made = time.monotonic()
            await alerts.handle([_candidate("FEVER", Priority.MEDIUM)])
            await nurse.wait_for(lambda got: len(got) == 1)
            first = nurse.received[0]
            assert first.signed
            assert (first.path, first.body["notice"]) == ("/nurse", "alert")
            assert first.delivery == str(first.body["delivery"])
            assert first.body["alerts"][0]["condition"] == "FEVER"
            latency_first_s = first.at - made

            # The nurse's receiver goes away: connections refused.
            await nurse.stop()
            down_at = time.monotonic()
            await alerts.handle([_candidate("HYPOXIA", Priority.HIGH)])
            await alerts.handle([_candidate("FEVER", Priority.MEDIUM, present=False)])
            # Three failed attempts (0, +0.2 s, +0.4 s): DELIVERY_FAILED, and the charge nurse is told at once.
            await charge.wait_for(lambda got: ("escalation", "HYPOXIA") in _notices(charge, "/charge"))
            escalated_after_s = time.monotonic() - down_at
            assert _open(pipeline, DELIVERY_FAILED) == [AlertState.ACTIVE]
            failed = next(a for a in alerts.book.open_alerts() if a.condition == DELIVERY_FAILED)
            assert (failed.kind, failed.priority, failed.details) == (
                Kind.TECHNICAL,
                Priority.HIGH,
                {"receivers": ["nurse"]},
            )
            assert ("escalation", "HYPOXIA") in _notices(charge, "/charge")
            # DELIVERY_FAILED is itself an alert the route takes: the nurse's copy waits in
            # line behind the failed one, so the charge nurse is told at once.
            await charge.wait_for(lambda got: ("escalation", DELIVERY_FAILED) in _notices(charge, "/charge"))

            # Back: everything the nurse missed arrives, in the order it was queued.
            await nurse.start()
            back_at = time.monotonic()
            await nurse.wait_for(lambda got: len(got) >= 4)
            drained_s = nurse.received[-1].at - back_at
            assert _notices(nurse, "/nurse") == [
                ("alert", "FEVER"),
                ("alert", "HYPOXIA"),
                ("closing", "FEVER"),
                ("alert", DELIVERY_FAILED),
            ]
            # Cleared once the nurse's receiver takes deliveries again (high: latched until acknowledged).
            await until(
                lambda: _open(pipeline, DELIVERY_FAILED) == [AlertState.LATCHED],
                20,
                "DELIVERY_FAILED cleared (latched)",
            )
            await until(lambda: _delivery(pipeline).pending() == 0, 20, "every notice delivered")

            attempts = _journal(pipeline, "delivery")
            failing = [
                e for e in attempts if e["receiver"] == "nurse" and e["alerts"][0].startswith("12-HYPOXIA")
            ]
            outcomes = [e["outcome"] for e in failing]
            assert outcomes[:3] == ["retry", "retry", "retry"]
            assert outcomes[-1] == "delivered"
            gaps = [
                (datetime.fromisoformat(b["at"]) - datetime.fromisoformat(a["at"])).total_seconds()
                for a, b in itertools.pairwise(failing[:3])
            ]
            assert 0.15 < gaps[0] < 1.0  # 0.2 s
            assert 0.35 < gaps[1] < 1.2  # then 0.4 s
            assert all("attempt_ms" in e and "age_s" in e for e in attempts)
            counters = pipeline.counters
            assert counters.get("delivery.failed", "nurse") == 1
            assert counters.get("delivery.delivered", "nurse") == 4
            assert counters.get("delivery.attempts", "retry") >= 3
    finally:
        await nurse.stop()
        await charge.stop()
    print(  # figures for the report (pytest -s)
        f"webhook: first delivery {latency_first_s * 1000:.1f} ms after the alert; "
        f"next level told {escalated_after_s:.2f} s after the receiver went down; "
        f"backlog of 4 delivered {drained_s:.2f} s after it came back; retry gaps {gaps}"
    )


async def test_deliveries_queued_while_the_receiver_is_down_survive_a_restart(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str
) -> None:
    nurse = WebhookServer(KEY.encode())
    config = _config(tmp_path, mosquitto, prefix, [_hook("nurse", nurse)])
    async with running(build(config)) as pipeline:
        await pipeline.alerts.handle([_candidate("FEVER", Priority.MEDIUM)])
        await pipeline.alerts.handle([_candidate("TACHYCARDIA", Priority.MEDIUM)])
        await pipeline.alerts.handle([_candidate("FEVER", Priority.MEDIUM, present=False)])
        await until(
            lambda: _open(pipeline, DELIVERY_FAILED) == [AlertState.ACTIVE], 20, "DELIVERY_FAILED raised"
        )
        await pipeline.writer.flush()
        assert len(pipeline.store.deliveries_pending()) == 4  # fever, tachycardia, closing, DELIVERY_FAILED
        journal = await pipeline.writer.call(pipeline.store.journal)
        tachycardia = next(a.id for a in pipeline.alerts.book.open_alerts() if a.condition == "TACHYCARDIA")
        [told] = told_lines(journal, tachycardia)  # what `wardd status` prints under the alert
        # Behind the fever's notice, which the receiver has not taken: not attempted yet.
        assert re.fullmatch(r"nurse: alert at \S+, waiting \(0 attempts\)", told), told
    await nurse.start()
    try:
        async with running(build(config)) as again:
            await nurse.wait_for(lambda got: len(got) >= 4)
            assert _notices(nurse, "/nurse") == [
                ("alert", "FEVER"),
                ("alert", "TACHYCARDIA"),
                ("closing", "FEVER"),
                ("alert", DELIVERY_FAILED),
            ]
            await until(
                lambda: _open(again, DELIVERY_FAILED) == [AlertState.LATCHED],
                20,
                "DELIVERY_FAILED cleared (latched)",
            )
            await until(lambda: _delivery(again).pending() == 0, 20, "every notice delivered")
    finally:
        await nurse.stop()


async def test_a_refused_delivery_counts_as_failed_at_once(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str
) -> None:
    """A 4xx (here a wrong key: 401) is not retried: DELIVERY_FAILED and the next level at once."""
    nurse, charge = WebhookServer(b"another key"), WebhookServer(KEY.encode())
    await nurse.start()
    await charge.start()
    config = _config(tmp_path, mosquitto, prefix, [_hook("nurse", nurse), _hook("charge", charge)])
    try:
        async with running(build(config)) as pipeline:
            await pipeline.alerts.handle([_candidate("HYPOXIA", Priority.HIGH)])
            await charge.wait_for(lambda got: ("escalation", "HYPOXIA") in _notices(charge, "/charge"))
            assert len([r for r in nurse.received if r.body["alerts"][0]["condition"] == "HYPOXIA"]) == 1
            assert _open(pipeline, DELIVERY_FAILED) == [AlertState.ACTIVE]
            refused = [e for e in _journal(pipeline, "delivery") if e["outcome"] == "refused"]
            assert refused[0]["detail"].startswith("HTTP 401")
    finally:
        await nurse.stop()
        await charge.stop()


async def test_email_through_apprise_down_then_back(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str
) -> None:
    relay = SmtpServer()
    relay.start()
    receivers = [
        {
            "name": "mail",
            "type": "apprise",
            "url": {
                "value": f"mailto://127.0.0.1:{relay.port}?from=wardd@ward.test&to=charge@ward.test&mode=insecure"
            },
            "language": "fr",
            "min_gap_s": 0,  # the ward's own relay: no need to space the messages
            **RETRY,
        }
    ]
    config = _config(tmp_path, mosquitto, prefix, receivers)
    mails: list[Any] = []

    def subjects() -> list[str]:
        mails[:] = [email.message_from_bytes(m[2], policy=email.policy.default) for m in relay.messages]
        return [str(m["subject"]) for m in mails]

    try:
        async with running(build(config)) as pipeline:
            made = time.monotonic()
            await pipeline.alerts.handle([_candidate("FEVER", Priority.MEDIUM)])
            await until(lambda: len(relay.messages) == 1, 20, "the first e-mail")
            latency_s = relay.messages[0][0] - made
            assert relay.messages[0][1] == ["charge@ward.test"]
            assert subjects() == ["MEDIUM FEVER, lit 12 (haem)"]
            relay.stop()
            await pipeline.alerts.handle([_candidate("FEVER", Priority.MEDIUM, present=False)])
            await pipeline.alerts.handle([_candidate("HYPOXIA", Priority.HIGH)])
            await until(
                lambda: _open(pipeline, DELIVERY_FAILED) == [AlertState.ACTIVE], 20, "DELIVERY_FAILED raised"
            )
            relay.start()
            await until(lambda: len(relay.messages) >= 4, 20, "the e-mails held while the relay was away")
            assert subjects() == [
                "MEDIUM FEVER, lit 12 (haem)",
                "Close : MEDIUM FEVER, lit 12 (haem)",
                "HIGH HYPOXIA, lit 12 (haem)",
                f"HIGH {DELIVERY_FAILED}, lit 12 (haem)",
            ]
            body = mails[1].get_body(preferencelist=("plain",))
            assert body is not None
            assert "Terminée." in body.get_content()
            await until(
                lambda: _open(pipeline, DELIVERY_FAILED) == [AlertState.LATCHED],
                20,
                "DELIVERY_FAILED cleared (latched)",
            )
            await until(lambda: _delivery(pipeline).pending() == 0, 20, "every notice delivered")
    finally:
        relay.stop()
    print(f"e-mail: first message at the relay {latency_s * 1000:.1f} ms after the alert")


@pytest.mark.parametrize(("back_before_attempt", "failed"), [(3, False), (4, True)])
async def test_delivery_counts_as_failed_at_exactly_failed_after_attempts(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str, back_before_attempt: int, failed: bool
) -> None:
    """failed_after_attempts = 3: a receiver back before the third attempt raises nothing;
    back only before the fourth, DELIVERY_FAILED came with the third. On a manual clock:
    the retries wait 0.2 s, then 0.4 s, then 0.4 s (retry_max_s)."""
    nurse = WebhookServer(KEY.encode())
    clock = ManualClock(datetime.now(UTC))
    config = _config(tmp_path, mosquitto, prefix, [_hook("nurse", nurse)])
    pipeline = build(config, clock=clock)
    counters = pipeline.counters
    try:
        async with running(pipeline):
            await pipeline.alerts.handle([_candidate("HYPOXIA", Priority.HIGH)])
            await until(lambda: counters.total("delivery.attempts") >= 1, 20, "the first attempt")
            for attempt, wait_s in ((2, 0.2), (3, 0.4), (4, 0.4)):
                if attempt == back_before_attempt:
                    await nurse.start()
                await clock.advance(wait_s)
                await until(functools.partial(_attempted, counters, attempt), 20, "the next attempt")
                if attempt == back_before_attempt:
                    break
            # Failed: the DELIVERY_FAILED alert's own notice waited behind, and follows.
            await until(
                lambda: counters.get("delivery.delivered", "nurse") == 1 + int(failed),
                20,
                "the deliveries once the receiver is back",
            )
            assert counters.get("delivery.attempts", "retry") == back_before_attempt - 1
            assert counters.get("delivery.failed", "nurse") == int(failed)
            if failed:
                await until(
                    lambda: _open(pipeline, DELIVERY_FAILED) == [AlertState.LATCHED],
                    20,
                    "DELIVERY_FAILED cleared (latched)",
                )
            states = _open(pipeline, DELIVERY_FAILED)
            # Raised at the third failure, then cleared by the delivery (latched: high).
            assert states == ([AlertState.LATCHED] if failed else [])
    finally:
        await nurse.stop()


async def test_receiver_secrets_reach_neither_the_store_nor_the_log(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The HMAC key and an Apprise URL's credentials: a failing receiver's log lines and
    everything the store keeps (notices, journal, routing state) are searched for them."""
    nurse = WebhookServer(KEY.encode())  # never started: connections refused
    token = "tk-Zq81vXw3Pp"  # a test credential
    receivers = [
        _hook("nurse", nurse),
        {
            "name": "phone",
            "type": "apprise",
            "url": {"value": f"ntfy://wardd:{token}@127.0.0.1:{nurse.port}/ward-12"},
            "min_gap_s": 0,
            **RETRY,
        },
    ]
    config = _config(tmp_path, mosquitto, prefix, receivers)
    async with running(build(config)) as pipeline:
        await pipeline.alerts.handle([_candidate("HYPOXIA", Priority.HIGH)])
        await until(
            lambda: pipeline.counters.get("delivery.failed", "phone") == 1, 20, "the phone's delivery failed"
        )
        await pipeline.writer.flush()
    stored = b"".join(p.read_bytes() for p in (tmp_path / "state").glob("*.sqlite*"))
    assert b"12-HYPOXIA" in stored, "the bait: the notices are in the store"
    for secret in (KEY, token):
        assert secret.encode() not in stored
        assert secret not in caplog.text
    assert "to phone: retry (attempt 1)" in caplog.text
