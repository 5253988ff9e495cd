"""Rejections are all counted, and logged without flooding: one line in full per counter,
reason and period, then one summary line for the rest."""

from __future__ import annotations

import logging

import pytest

from daemon.metrics import Counters, RejectionLog, reject


class _Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_a_burst_of_one_reason_is_one_line_then_one_summary(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    counters = Counters()
    counters.rejections = RejectionLog(60.0, clock)
    with caplog.at_level(logging.WARNING):
        for i in range(1000):
            clock.now_s = i * 0.05  # 50 s in all: one period
            reject(counters, "mqtt.rejected", "invalid_json", f"bad {i}", where=f"t/{i}", payload=b"{")
        reject(counters, "mqtt.rejected", "unknown_bed", "no such bed", where="t/x", payload=b"{}")
        assert _lines(caplog) == [
            "rejected mqtt.rejected at t/0: invalid_json: bad 0; payload: {",
            "rejected mqtt.rejected at t/x: unknown_bed: no such bed; payload: {}",
        ]
        clock.now_s = 59.999  # the period of the first has not ended: nothing to say yet
        counters.rejections.flush()
        assert len(caplog.records) == 2
        clock.now_s = 60.0
        counters.rejections.flush()
    assert _lines(caplog)[2:] == [
        "rejected mqtt.rejected: 999 more invalid_json in 60 s, the last at t/999: bad 999"
    ]
    assert counters.get("mqtt.rejected", "invalid_json") == 1000
    assert counters.get("mqtt.rejected", "unknown_bed") == 1


def test_after_its_period_a_rejection_is_logged_in_full_again(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    log = RejectionLog(60.0, clock)
    with caplog.at_level(logging.WARNING):
        log.log("mqtt.rejected", "invalid_json", "a", where="t/1", payload=b"")
        clock.now_s = 30.0
        log.log("mqtt.rejected", "invalid_json", "b", where="t/2", payload=b"")
        clock.now_s = 60.0  # the next period: the summary of the last, then this one in full
        log.log("mqtt.rejected", "invalid_json", "c", where="t/3", payload=b"")
        clock.now_s = 61.0
        log.flush(everything=True)  # shutdown: nothing more to summarise (no other in the period)
    assert _lines(caplog) == [
        "rejected mqtt.rejected at t/1: invalid_json: a; payload: ",
        "rejected mqtt.rejected: 1 more invalid_json in 60 s, the last at t/2: b",
        "rejected mqtt.rejected at t/3: invalid_json: c; payload: ",
    ]


def test_a_summary_escapes_what_came_from_outside(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    log = RejectionLog(60.0, clock)
    with caplog.at_level(logging.WARNING):
        log.log("mqtt.rejected", "bad\nreason", "x", where="t", payload=b"")
        log.log("mqtt.rejected", "bad\nreason", "detail\nFAKE", where="t\n2", payload=b"")
        log.flush(everything=True)
    assert len(caplog.records) == 2
    assert not any("\n" in line for line in _lines(caplog))
