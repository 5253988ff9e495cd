"""What the Alaris and Fresenius pseudo-terminal tests share: a pump source polling a
simulator, and the checks every driver must pass the same way.

Each test file keeps its protocol's own: the simulator, the config, the faults it can
make on the line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

import pytest

from daemon.clock import Clock
from daemon.config import PumpConfig
from daemon.events import Health, PumpState
from daemon.metrics import Counters
from daemon.pump import PumpSource
from tests.helpers import WAIT_S, Events

Sim = TypeVar("Sim")

# Polling and line timing that make a fault show within a second of a test's time.
FAST_LINE: dict[str, object] = {
    "poll_interval_s": 0.05,
    "comm_lost_after_s": 0.6,
    "reply_timeout_s": 0.15,
    "retries": 1,
    "reconnect_min_s": 0.02,
    "reconnect_max_s": 0.1,
}


class Running(Generic[Sim]):
    """A PumpSource polling a simulator: what it emitted (``events``) and counted (``faults``)."""

    def __init__(self, sim: Sim, counters: Counters, events: Events, pump_id: str) -> None:
        self.sim = sim
        self.counters = counters
        self.events = events
        self.pump_id = pump_id

    def faults(self, reason: str) -> int:
        """How many faults of ``reason`` the source counted."""
        return self.counters.get(f"pump.{self.pump_id}", reason)


@contextlib.asynccontextmanager
async def polling(sim: Sim, pump: PumpConfig, clock: Clock) -> AsyncIterator[Running[Sim]]:
    """Poll ``sim`` with a source for ``pump`` from the first CONNECTED until the block ends."""
    counters = Counters()
    events = Events()
    task = asyncio.create_task(PumpSource(pump, "w1", clock, counters).run(events.emit))
    try:
        await events.health(Health.CONNECTED)
        yield Running(sim, counters, events, pump.id)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def spoiled_replies_are_counted(
    running: Running[Sim], spoil: Callable[[], None], reasons: set[str], rate_ml_per_h: float
) -> None:
    """Replies spoiled by ``spoil`` are counted under ``reasons``, and polling goes on: the
    next readings are right and the link is never judged lost."""
    await running.events.reading(lambda r: r.state is PumpState.INFUSING)
    spoil()
    async with asyncio.timeout(WAIT_S):
        while not all(running.faults(reason) >= 1 for reason in reasons):
            await running.events.reading()
    reading = await running.events.reading(lambda r: r.state is PumpState.INFUSING)
    assert reading.rate_ml_per_h == rate_ml_per_h
    assert not any(getattr(e, "health", None) is Health.LOST for e in running.events.seen)


async def cable_pulled_and_put_back(
    running: Running[Sim],
    disconnect: Callable[[], Awaitable[None]],
    reconnect: Callable[[], Awaitable[str]],
    rate_ml_per_h: float,
) -> None:
    """The cable pulled: the link is lost and counted; put back: it answers and infuses again."""
    await disconnect()
    await running.events.health(Health.LOST)
    assert running.faults("link_closed") >= 1
    await reconnect()
    await running.events.health(Health.CONNECTED)
    reading = await running.events.reading(lambda r: r.state is PumpState.INFUSING)
    assert reading.rate_ml_per_h == rate_ml_per_h
