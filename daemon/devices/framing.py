"""The byte buffer that each pump codec's stream decoder splits its serial line from.

A decoder is fed whatever a read of the line gave: part of a frame, several frames,
garbage between them. It keeps the bytes not yet part of a finished item here, takes
each item's bytes from the front, and names its port in the errors it makes.
"""

from __future__ import annotations


class StreamBuffer:
    """The bytes a decoder holds between two reads of its line (``where``: the port)."""

    def __init__(self, where: str = "") -> None:
        """``where`` names the port in error messages."""
        self._where = where
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held as the start of an item not yet complete."""
        return len(self._buffer)

    def _take(self, n: int) -> bytes:
        """The first ``n`` bytes, removed from the buffer."""
        raw = bytes(self._buffer[:n])
        del self._buffer[:n]
        return raw
