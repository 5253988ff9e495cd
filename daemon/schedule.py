"""When each of many keys is next due: checks that take only what is due, instead of
walking everything at every turn (the engine's ticks, the alerts' escalation, the
delivery router's repeats and escalations)."""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Iterable
from datetime import datetime, timedelta
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Schedule(Generic[K]):
    """Each key's next due time, in a heap; ``pop_due`` takes the keys due by a time.

    A key put again gets the new time; the heap entry of its old time stays, stale, until
    it comes up (skipped) or the heap is rebuilt from the live times, which happens before
    stale entries outnumber live ones by more than ``SLACK``.
    """

    SLACK = 64

    def __init__(self, times: Iterable[tuple[K, datetime]] = ()) -> None:
        self._at: dict[K, datetime] = dict(times)
        self._heap: list[tuple[datetime, K]] = [(at, key) for key, at in self._at.items()]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._at)

    @property
    def heap_size(self) -> int:
        """Entries in the heap, stale ones included (the bound's measure)."""
        return len(self._heap)

    def get(self, key: K) -> datetime | None:
        """When ``key`` is due, if it is scheduled."""
        return self._at.get(key)

    def put(self, key: K, at: datetime) -> None:
        """``key`` is due at ``at`` (whatever time it had before)."""
        self._at[key] = at
        heap = self._heap
        heapq.heappush(heap, (at, key))
        if len(heap) > 2 * len(self._at) + self.SLACK:
            heap[:] = [(when, name) for name, when in self._at.items()]
            heapq.heapify(heap)

    def discard(self, key: K) -> None:
        """``key`` is due at no time now."""
        self._at.pop(key, None)

    def pop_due(self, now: datetime) -> list[K]:
        """The keys due by ``now``, earliest first, taken off the schedule."""
        heap, at = self._heap, self._at
        out: list[K] = []
        while heap and heap[0][0] <= now:
            when, key = heapq.heappop(heap)
            if at.get(key) == when:
                del at[key]
                out.append(key)
        return out


def floor_us(seconds: float) -> timedelta:
    """``seconds`` as a wait rounded down to the microsecond: a due time made with it is
    never after the exact one (at worst a check comes a microsecond early, and finds
    nothing due yet)."""
    return timedelta(microseconds=math.floor(seconds * 1e6))
