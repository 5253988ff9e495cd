"""When a pump's link counts as lost: exactly ``comm_lost_after_s`` after its last valid
reply, not a second earlier (a fake driver on a manual clock; no port, no server).

PUMP_COMM_LOST (pump_rules.py) follows the source's LOST health: while the link is
down nothing sees a stop or a wrong rate, a technical alarm (domain.md section 4).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from daemon.clock import Clock, ManualClock
from daemon.config import PumpConfig
from daemon.errors import FrameError
from daemon.events import Event, Health, PumpReading, PumpState, SourceHealth
from daemon.metrics import Counters
from daemon.pump import MAX_FAULT_CHARS, FaultHandler, NoReplyError, PumpDriver, PumpSource, PumpStatus

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class QuietDriver:
    """Answers while ``answering`` is set, then gives no reply."""

    answering = True

    def __init__(self, pump: PumpConfig, clock: Clock, on_fault: FaultHandler) -> None:
        pass

    async def open(self) -> None:
        pass

    async def read(self) -> PumpStatus:
        if not QuietDriver.answering:
            raise NoReplyError("no reply")
        return PumpStatus(PumpState.INFUSING, 10.0, 1.0)

    async def close(self) -> None:
        pass


def _quiet(pump: PumpConfig, clock: Clock, on_fault: FaultHandler) -> PumpDriver:
    return QuietDriver(pump, clock, on_fault)


async def test_the_link_is_lost_exactly_comm_lost_after_s_after_the_last_reply() -> None:
    clock = ManualClock(T0)
    seen: list[Event] = []

    async def emit(event: Event) -> None:
        seen.append(event)

    pump = PumpConfig(id="p1", bed="b1", url="/fake", poll_interval_s=2, comm_lost_after_s=30)
    QuietDriver.answering = True
    source = PumpSource(pump, "w1", clock, Counters(), driver_factory=_quiet)
    task = asyncio.create_task(source.run(emit))
    await asyncio.sleep(0)
    await clock.advance(10)  # polls at 0, 2, ... 10 s: the last valid reply at 10 s
    assert source.health is Health.CONNECTED
    QuietDriver.answering = False
    readings = sum(isinstance(e, PumpReading) for e in seen)
    await clock.advance(30 - 1 / 1024)  # 1/1024 s short of 30 s without a reply (exact in binary)
    assert source.health is Health.CONNECTED
    await clock.advance(1 / 1024)  # 40 s: exactly comm_lost_after_s
    lost = [e for e in seen if isinstance(e, SourceHealth) and e.health is Health.LOST]
    assert [(e.time - T0).total_seconds() for e in lost] == [40.0]
    assert sum(isinstance(e, PumpReading) for e in seen) == readings
    QuietDriver.answering = True
    await clock.advance(2)
    assert source.health is Health.CONNECTED
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class FaultyDriver:
    """Answers while ``fault`` is None; else gives no reply, reporting ``fault`` unless it is SILENT."""

    fault: FrameError | None = None

    def __init__(self, pump: PumpConfig, clock: Clock, on_fault: FaultHandler) -> None:
        self._on_fault = on_fault

    async def open(self) -> None:
        pass

    async def read(self) -> PumpStatus:
        if FaultyDriver.fault is None:
            return PumpStatus(PumpState.INFUSING, 10.0, 1.0)
        if FaultyDriver.fault is not SILENT:
            self._on_fault(FaultyDriver.fault, b"")
        raise NoReplyError("no reply")

    async def close(self) -> None:
        pass


SILENT = FrameError("silent", "not reported")


def _faulty(pump: PumpConfig, clock: Clock, on_fault: FaultHandler) -> PumpDriver:
    return FaultyDriver(pump, clock, on_fault)


async def _lost_detail(*phases: FrameError | None) -> str | None:
    """The detail of the one LOST after ``phases`` of 4 s each, the last one 40 s long."""
    clock = ManualClock(T0)
    seen: list[Event] = []

    async def emit(event: Event) -> None:
        seen.append(event)

    pump = PumpConfig(id="p1", bed="b1", url="/fake", poll_interval_s=2, comm_lost_after_s=30)
    FaultyDriver.fault = None
    source = PumpSource(pump, "w1", clock, Counters(), driver_factory=_faulty)
    task = asyncio.create_task(source.run(emit))
    await asyncio.sleep(0)
    for phase in phases[:-1]:
        FaultyDriver.fault = phase
        await clock.advance(4)
    FaultyDriver.fault = phases[-1]
    await clock.advance(40)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (lost,) = [e for e in seen if isinstance(e, SourceHealth) and e.health is Health.LOST]
    return lost.detail


_ROOM = MAX_FAULT_CHARS - len("error_reply: ")


@pytest.mark.parametrize(
    ("detail", "shown"),
    [("x" * _ROOM, "x" * _ROOM), ("x" * (_ROOM + 1), "x" * (_ROOM - 3) + "...")],
)
async def test_a_lost_link_says_its_last_fault_within_bounds(detail: str, shown: str) -> None:
    said = await _lost_detail(None, FrameError("error_reply", detail))
    assert said == f"no valid reply for 30 s; last fault: error_reply: {shown}"


async def test_a_fault_before_the_last_valid_reply_is_not_the_reason_of_a_later_loss() -> None:
    old = FrameError("error_reply", "pump answered error 0E: communication with the module impossible")
    assert await _lost_detail(None, old, None, SILENT) == "no valid reply for 30 s"
    assert await _lost_detail(None, old, SILENT) == (
        "no valid reply for 30 s; last fault: error_reply: pump answered error 0E: "
        "communication with the module impossible"
    )
