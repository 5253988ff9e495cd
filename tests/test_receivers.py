"""Receivers one attempt at a time: the webhook's signature and its reading of HTTP
answers (a real aiohttp server), and the retry schedule."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from aiohttp import web

from daemon.config import WebhookReceiverConfig
from daemon.delivery.receivers import DELIVERY_HEADER, SIGNATURE_HEADER, Outcome, WebhookReceiver, signature
from daemon.delivery.service import retry_delay_s, told_lines
from tests.servers import free_port


def test_the_signature_is_hmac_sha256_of_the_body_in_hex() -> None:
    body = b'{"notice":"alert"}'
    assert signature(b"key", body) == "sha256=" + hmac.new(b"key", body, hashlib.sha256).hexdigest()
    assert signature(b"key", body) != signature(b"key", body + b" ")
    assert signature(b"key", body) != signature(b"other", body)


def _hook(url: str, **extra: float) -> WebhookReceiverConfig:
    return WebhookReceiverConfig.model_validate(
        {"name": "n0", "type": "webhook", "url": url, "secret": {"value": "k"}, **extra}
    )


@pytest.mark.parametrize(
    ("attempts", "wait_s"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (8, 60.0), (50, 60.0)],
)
def test_retries_double_from_retry_min_s_up_to_retry_max_s(attempts: int, wait_s: float) -> None:
    assert retry_delay_s(_hook("http://127.0.0.1:9/x"), attempts) == wait_s


@pytest.mark.integration
@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (299, Outcome.DELIVERED),
        (300, Outcome.REFUSED),
        (302, Outcome.REFUSED),
        (400, Outcome.REFUSED),
        (407, Outcome.REFUSED),
        (408, Outcome.RETRY),
        (409, Outcome.REFUSED),
        (428, Outcome.REFUSED),
        (429, Outcome.RETRY),
        (430, Outcome.REFUSED),
        (499, Outcome.REFUSED),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
    ],
)
async def test_the_webhook_reads_the_answer(status: int, outcome: Outcome) -> None:
    seen: list[tuple[bytes, str, str]] = []

    async def take(request: web.Request) -> web.Response:
        seen.append(
            (await request.read(), request.headers[SIGNATURE_HEADER], request.headers[DELIVERY_HEADER])
        )
        headers = {"Location": "/elsewhere"} if 300 <= status < 400 else {}
        return web.Response(status=status, text="said", headers=headers)

    app = web.Application()
    app.router.add_post("/hook", take)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    receiver = WebhookReceiver(_hook(f"http://127.0.0.1:{port}/hook"), b"k")
    try:
        attempt = await receiver.send(7, b'{"a":1}', "title", "text")
    finally:
        await receiver.close()
        await runner.cleanup()
    assert attempt.outcome is outcome
    assert attempt.detail.startswith(f"HTTP {status}")
    assert seen == [(b'{"a":1}', signature(b"k", b'{"a":1}'), "7")]


@pytest.mark.integration
async def test_no_answer_is_a_retry() -> None:
    receiver = WebhookReceiver(_hook(f"http://127.0.0.1:{free_port()}/hook", timeout_s=1.0), b"k")
    try:
        attempt = await receiver.send(1, b"{}", "t", "x")
    finally:
        await receiver.close()
    assert attempt.outcome is Outcome.RETRY
    assert "Connect" in attempt.detail


def test_status_says_what_was_sent_to_whom_from_the_journal() -> None:
    entries: list[dict[str, Any]] = [
        {"what": "start", "id": "12-FEVER-1"},
        {
            "what": "notice",
            "at": "t1",
            "receiver": "nurse",
            "notice": "alert",
            "delivery": 1,
            "alerts": ["12-FEVER-1"],
        },
        {
            "what": "notice",
            "at": "t1",
            "receiver": "nurse",
            "notice": "alert",
            "delivery": 2,
            "alerts": ["12-HYPOXIA-2"],
        },
        {"what": "delivery", "delivery": 1, "attempt": 1, "outcome": "delivered", "detail": "HTTP 200"},
        {
            "what": "notice",
            "at": "t2",
            "receiver": "charge",
            "notice": "escalation",
            "delivery": 3,
            "alerts": ["12-FEVER-1"],
        },
        {"what": "delivery", "delivery": 3, "attempt": 1, "outcome": "retry", "detail": "HTTP 503"},
        {"what": "delivery", "delivery": 3, "attempt": 2, "outcome": "retry", "detail": "HTTP 502"},
        {
            "what": "notice",
            "at": "t3",
            "receiver": "doctor",
            "notice": "escalation",
            "delivery": 4,
            "alerts": ["12-FEVER-1"],
        },
        {"what": "delivery", "delivery": 4, "attempt": 1, "outcome": "refused", "detail": "HTTP 401"},
    ]
    assert told_lines(entries, "12-FEVER-1") == [
        "nurse: alert at t1, delivered (1 attempt)",
        "charge: escalation at t2, waiting (2 attempts, last: HTTP 502)",
        "doctor: escalation at t3, refused (1 attempt, last: HTTP 401)",
    ]
    assert told_lines(entries, "12-FEVER-1", limit=1) == [
        "doctor: escalation at t3, refused (1 attempt, last: HTTP 401)"
    ]
    assert told_lines(entries, "12-HYPOXIA-2") == ["nurse: alert at t1, waiting (0 attempts)"]
    assert told_lines(entries, "12-OTHER-9") == []


def test_status_says_what_a_receipt_said_a_person_did() -> None:
    entries: list[dict[str, Any]] = [
        {
            "what": "notice",
            "at": "t1",
            "receiver": "nurse",
            "notice": "alert",
            "delivery": 1,
            "alerts": ["a"],
        },
        {"what": "delivery", "delivery": 1, "attempt": 1, "outcome": "delivered", "detail": "HTTP 200"},
        {"what": "receipt", "delivery": 1, "status": "read", "by": "nurse-a"},
        {"what": "receipt", "delivery": 9, "status": "accepted", "by": "nurse-b"},  # not a known delivery
    ]
    assert told_lines(entries, "a") == ["nurse: alert at t1, delivered (1 attempt), read by nurse-a"]
    entries.append(
        {"what": "receipt", "delivery": 1, "status": "accepted", "by": "nurse-a", "name": "A. Nurse"}
    )
    assert told_lines(entries, "a") == ["nurse: alert at t1, delivered (1 attempt), accepted by A. Nurse"]
