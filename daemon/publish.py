"""The outbound side of MQTT, as a contract that sinks depend on."""

from __future__ import annotations

from typing import Protocol


class Publisher(Protocol):
    """Publishes to the broker.

    Guarantees: ``publish`` never drops a message. While the broker is away it
    queues, and the queue is drained in order once the link is back. It returns once
    the message is queued, not when the broker has it.
    """

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Queue one message."""
        ...
