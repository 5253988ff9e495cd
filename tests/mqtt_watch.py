"""A test-side MQTT subscriber that collects JSON messages, and a wait helper."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt


async def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Wait until ``predicate()`` holds (polled), or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@contextlib.asynccontextmanager
async def watch(url: str, topic_filter: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Collect the JSON payloads published on ``topic_filter`` while the block runs."""
    host, port = url.removeprefix("mqtt://").split(":")
    received: list[dict[str, Any]] = []
    ready = asyncio.Event()

    async def collect() -> None:
        async with aiomqtt.Client(host, int(port)) as client:
            await client.subscribe(topic_filter, qos=1)
            ready.set()
            async for message in client.messages:
                if message.payload:
                    received.append(json.loads(bytes(message.payload)))

    task = asyncio.create_task(collect(), name=f"test.watch[{topic_filter}]")
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield received
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
