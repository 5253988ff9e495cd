"""Login throttling: a few wrong passwords for one login, or many from one address, and
further attempts are refused for a short while without checking the password.

Known and unknown logins are throttled alike (a refusal tells nothing about whether a
login exists). Times are the daemon's clock. The memory is bounded whatever the number
of names tried: entries that can no longer matter are dropped first, then the oldest.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from daemon.clock import Clock

MAX_KEYS = 10_000
"""Logins and addresses remembered at most (a spray of made-up names cannot grow it further)."""


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)  # monotonic times, newest last
    locked_until: float = 0.0


class LoginThrottle:
    """Counts wrong passwords per login and per client address; says when to refuse."""

    def __init__(
        self, clock: Clock, *, failures: int, per_address: int, window_s: float, lockout_s: float
    ) -> None:
        self._clock = clock
        self._limits = {"user": failures, "address": per_address}
        self._window_s = window_s
        self._lockout_s = lockout_s
        self._records: dict[tuple[str, str], _Record] = {}

    def wait_s(self, user: str, address: str) -> float:
        """Seconds before this login from this address may be tried again (0: now)."""
        now = self._clock.monotonic()
        waits = [
            record.locked_until - now
            for key in (("user", user), ("address", address))
            if (record := self._records.get(key)) is not None
        ]
        return max([0.0, *waits])

    def failed(self, user: str, address: str) -> None:
        """One wrong password (or unknown login) for ``user`` from ``address``."""
        now = self._clock.monotonic()
        for key in (("user", user), ("address", address)):
            record = self._records.pop(key, None) or _Record()
            self._records[key] = record  # most recently failed last: the oldest go first
            record.failures.append(now)
            while record.failures and now - record.failures[0] > self._window_s:
                record.failures.popleft()
            if len(record.failures) >= self._limits[key[0]]:
                record.locked_until = now + self._lockout_s
                record.failures.clear()
        if len(self._records) > MAX_KEYS:
            self._prune(now)

    def succeeded(self, user: str) -> None:
        """A right password: the login's count starts again (its address's does not)."""
        self._records.pop(("user", user), None)

    def _prune(self, now: float) -> None:
        for key in [
            k for k, r in self._records.items() if r.locked_until <= now and not self._recent(r, now)
        ]:
            del self._records[key]
        while len(self._records) > MAX_KEYS:
            del self._records[next(iter(self._records))]

    def _recent(self, record: _Record, now: float) -> bool:
        return bool(record.failures) and now - record.failures[-1] <= self._window_s

    def __len__(self) -> int:
        return len(self._records)
