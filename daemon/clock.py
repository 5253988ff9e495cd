"""Injected clocks: wall time for the ward, scaled or manual time for scenarios and tests.

Everything that needs the time takes a ``Clock``; nothing else calls ``datetime.now``
or ``asyncio.sleep`` for scheduling, so a 14-day protocol can run in seconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """A source of time. ``now()`` is aware UTC; ``monotonic()`` never goes back."""

    def now(self) -> datetime:
        """The current time, aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for intervals and timeouts)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """Wall time, aware UTC."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep``."""
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """Simulated time running ``speed`` times faster than real time from ``start``."""

    def __init__(self, start: datetime, speed: float) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self._start = start
        self._speed = speed
        self._origin = time.monotonic()

    def now(self) -> datetime:
        """``start`` plus the scaled real time elapsed."""
        return self._start + timedelta(seconds=self.monotonic())

    def monotonic(self) -> float:
        """Simulated seconds since construction."""
        return (time.monotonic() - self._origin) * self._speed

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of simulated time."""
        await asyncio.sleep(max(0.0, seconds) / self._speed)


class ManualClock:
    """Time that moves only when told to (``advance``); sleepers wake in time order.

    Tests and ``--fast`` scenarios drive it, so no test sleeps to wait.
    """

    def __init__(self, start: datetime) -> None:
        self._start = start
        self._elapsed_s = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        """``start`` plus the time advanced so far."""
        return self._start + timedelta(seconds=self._elapsed_s)

    def monotonic(self) -> float:
        """Seconds advanced so far."""
        return self._elapsed_s

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced by ``seconds``."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._elapsed_s + max(0.0, seconds), next(self._seq), future))
        await future

    def next_wake(self) -> float | None:
        """Monotonic time of the earliest sleeper, if any."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its own time, in order."""
        target = self._elapsed_s + seconds
        while (wake := self.next_wake()) is not None and wake <= target:
            _, _, future = heapq.heappop(self._sleepers)
            self._elapsed_s = max(self._elapsed_s, wake)
            future.set_result(None)
            # Let the woken task run before time moves on.
            for _ in range(5):
                await asyncio.sleep(0)
        self._elapsed_s = target

    async def advance_to(self, when: datetime) -> None:
        """Advance to an absolute time (no-op if it is in the past)."""
        await self.advance(max(0.0, (when - self.now()).total_seconds()))


async def every(clock: Clock, interval_s: float) -> AsyncIterator[float]:
    """Drift-free periodic schedule: yields the monotonic deadline of each period.

    A slow iteration does not push later ones back; missed periods are skipped.
    """
    if interval_s <= 0:
        raise ValueError(f"interval must be > 0, got {interval_s}")
    deadline = clock.monotonic()
    while True:
        yield deadline
        deadline += interval_s
        now = clock.monotonic()
        if deadline < now:
            deadline += interval_s * ((now - deadline) // interval_s + 1)
        await clock.sleep(deadline - now)
