"""Recognising a message seen before: the broker sends again what it was not sure we had.

A QoS 1 message whose acknowledgement was lost (a reconnect, a crash after the store
commit) arrives a second time. Storage does not mind (same series, same time), but a
rule must not count one observation twice. The digests of the most recent messages
are kept, and persisted with each checkpoint so a restart remembers them.
"""

from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict
from collections.abc import Sequence


class RecentDigests:
    """The last ``capacity`` message digests, oldest forgotten first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self.changed = False
        """True once a digest was added since the last ``dump`` or ``load``."""

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, topic: str, payload: bytes) -> bool:
        """Remember a message; ``False`` if it was already there (a duplicate)."""
        digest = hashlib.blake2b(
            topic.encode("utf-8", "surrogateescape") + b"\0" + payload, digest_size=16
        ).digest()
        if digest in self._seen:
            return False
        self._seen[digest] = None
        self.changed = True
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True

    def dump(self) -> str:
        """The digests, oldest first, as one base64 string."""
        self.changed = False
        return base64.b64encode(b"".join(self._seen)).decode("ascii")

    def load(self, data: str) -> None:
        """Put back what ``dump`` gave (the most recent ``capacity`` of them)."""
        raw = base64.b64decode(data)
        digests: Sequence[bytes] = [raw[i : i + 16] for i in range(0, len(raw) - 15, 16)]
        self._seen = OrderedDict((d, None) for d in digests[-self._capacity :])
        self.changed = False
