"""Recognising a message seen before: the broker sends again what it was not sure we had.

A QoS 1 message whose acknowledgement was lost (a reconnect, a crash after the store
commit) arrives a second time. Storage does not mind (same series, same time), but a
rule must not count one observation twice. The digests of the most recent messages
are kept, and persisted with each checkpoint so a restart remembers them.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence


class RecentDigests:
    """The last ``capacity`` message digests, oldest forgotten first.

    Besides the set that answers "seen before?", the digests are kept in arrival order
    in one ring of bytes, so that a checkpoint copies them in one move (``take``) and
    encodes them off the event loop (``text``): joining 40,000 digests (the default
    capacity, 4 × ``max_inflight_messages``) and encoding them held the loop for 5 to
    12 ms at every checkpoint.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._seen: set[bytes] = set()
        self._ring = bytearray(capacity * _SIZE)
        self._next = 0  # the ring slot the next digest goes to: the oldest, once the ring is full
        self.changed = False
        """True once a digest was added since the last ``take``, ``dump`` or ``load``."""

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, topic: str, payload: bytes) -> bool:
        """Remember a message; ``False`` if it was already there (a duplicate)."""
        digest = hashlib.blake2b(
            topic.encode("utf-8", "surrogateescape") + b"\0" + payload, digest_size=_SIZE
        ).digest()
        if digest in self._seen:
            return False
        at = self._next * _SIZE
        if len(self._seen) == self._capacity:
            self._seen.discard(bytes(self._ring[at : at + _SIZE]))
        self._ring[at : at + _SIZE] = digest
        self._seen.add(digest)
        self._next = (self._next + 1) % self._capacity
        self.changed = True
        return True

    def take(self) -> bytes:
        """The digests, oldest first, as one run of bytes (``text`` encodes it as ``dump``)."""
        self.changed = False
        at = self._next * _SIZE
        if len(self._seen) < self._capacity:
            return bytes(self._ring[:at])
        return bytes(self._ring[at:]) + bytes(self._ring[:at])

    def dump(self) -> str:
        """The digests, oldest first, as one base64 string."""
        return text(self.take())

    def load(self, data: str) -> None:
        """Put back what ``dump`` gave (the most recent ``capacity`` of them)."""
        raw = base64.b64decode(data)
        digests: Sequence[bytes] = [raw[i : i + _SIZE] for i in range(0, len(raw) - _SIZE + 1, _SIZE)]
        kept = list(dict.fromkeys(digests[-self._capacity :]))
        self._seen = set(kept)
        self._ring = bytearray(self._capacity * _SIZE)
        self._ring[: len(kept) * _SIZE] = b"".join(kept)
        self._next = len(kept) % self._capacity
        self.changed = False


_SIZE = 16  # bytes per digest


def text(digests: bytes) -> str:
    """``take``'s digests as ``dump`` gives them: one base64 string."""
    return base64.b64encode(digests).decode("ascii")
