"""The MQTT link against a private broker: a PUBACK only when the handler says so, an
outgoing message reported only once the broker has it, gmqtt kept from reconnecting
on its own (the link does it, with its backoff), and QoS 1 messages taken and
acknowledged on the link's shorter path through gmqtt."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt
import pytest
from gmqtt.mqtt.connection import MQTTConnection
from gmqtt.mqtt.constants import MQTTv311

from daemon.clock import SystemClock
from daemon.config import MqttConfig
from daemon.links import mqtt
from daemon.links.mqtt import Ack, MqttLink, Outgoing
from daemon.metrics import Counters
from tests.mqtt_watch import until
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration  # a private mosquitto


class Inbox:
    """A handler that keeps each message with its ``ack`` and acknowledges nothing itself."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, Ack]] = []

    async def __call__(self, topic: str, payload: bytes, ack: Ack) -> None:
        self.messages.append((topic, payload, ack))

    def payloads(self) -> list[bytes]:
        return [payload for _, payload, _ in self.messages]


@asynccontextmanager
async def running(link: MqttLink) -> AsyncIterator[MqttLink]:
    task = asyncio.create_task(link.run(), name="test.link")
    try:
        await asyncio.wait_for(link.connected.wait(), 10)
        yield link
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def _link(
    server: Mosquitto, client_id: str, topics: list[str], on_message: Any, counters: Counters
) -> MqttLink:
    config = MqttConfig(url=server.url, client_id=client_id, reconnect_min_s=0.05, reconnect_max_s=0.2)
    return MqttLink(
        config,
        password=None,
        subscriptions=topics,
        on_message=on_message,
        counters=counters,
        clock=SystemClock(),
    )


async def _publish(server: Mosquitto, topic: str, *payloads: bytes) -> None:
    async with aiomqtt.Client(server.host, server.port) as client:
        for payload in payloads:
            await client.publish(topic, payload, qos=1)


async def test_a_message_is_acknowledged_when_its_ack_is_called_late_or_never(
    mosquitto: Mosquitto, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker sends again what was not acknowledged, and only that: ``ack`` called
    after the handler returned sends the PUBACK then; never called, none is sent."""
    topic = f"{prefix}/in"
    counters = Counters()
    first = Inbox()
    async with running(_link(mosquitto, f"{prefix}-d", [topic], first, counters)):
        await _publish(mosquitto, topic, b"late", b"never")
        await until(lambda: len(first.messages) == 2, 10, "both messages")
        assert first.payloads() == [b"late", b"never"]
        first.messages[0][2]()  # its handler returned long ago
    stale_ack = first.messages[1][2]
    stale_ack()  # that session is gone: nothing is sent, and it is counted
    assert counters.get("mqtt.ack_skipped", "reconnected") == 1

    second = Inbox()
    async with running(_link(mosquitto, f"{prefix}-d", [topic], second, counters)):
        await _publish(mosquitto, topic, b"after")
        await until(lambda: b"after" in second.payloads(), 10, "the message after the restart")
        assert second.payloads() == [b"never", b"after"]
        for _, _, ack in second.messages:
            ack()
    # gmqtt's own lines are kept below errors (they repeat the link's, and list topics).
    assert not [r for r in caplog.records if r.name.startswith("gmqtt") and r.levelno >= logging.WARNING]


async def test_an_outgoing_message_is_reported_once_the_broker_has_it(
    mosquitto: Mosquitto, prefix: str
) -> None:
    delivered: list[int] = []
    link = _link(mosquitto, f"{prefix}-d", [], Inbox(), Counters())
    link.on_delivered = delivered.append
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as watcher:
        await watcher.subscribe(f"{prefix}/out/#", qos=1)
        link.enqueue(Outgoing(f"{prefix}/out/1", b"one", qos=1, retain=False, store_id=7))
        link.enqueue(Outgoing(f"{prefix}/out/2", b"two", qos=0, retain=False, store_id=8))
        link.enqueue(Outgoing(f"{prefix}/out/3", b"three", qos=2, retain=True, store_id=9))
        assert delivered == []  # no session yet: queued, not sent
        async with running(link):
            await asyncio.wait_for(link.drained(), 10)
            assert delivered == [7, 8, 9]
            assert link.pending == 0
            received = []
            async with asyncio.timeout(10):
                async for message in watcher.messages:
                    received.append((str(message.topic), message.payload))
                    if len(received) == 3:
                        break
    assert received == [
        (f"{prefix}/out/1", b"one"),
        (f"{prefix}/out/2", b"two"),
        (f"{prefix}/out/3", b"three"),
    ]


async def test_outgoing_messages_await_their_pubacks_together_and_leave_in_order(
    mosquitto: Mosquitto, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queue of messages is not sent one round trip at a time: up to
    ``OUTGOING_IN_FLIGHT`` await their PUBACK together; they arrive, and are reported
    delivered, in the order queued."""
    count = mqtt.OUTGOING_IN_FLIGHT * 2 + 50
    awaiting: list[int] = []  # how many awaited their PUBACK as each next one was sent
    push = mqtt._Confirmations.push_message

    def watched(self: Any, mid: int, raw_package: bytes) -> None:
        awaiting.append(len(self.waiting))
        push(self, mid, raw_package)

    monkeypatch.setattr(mqtt._Confirmations, "push_message", watched)
    delivered: list[int] = []
    link = _link(mosquitto, f"{prefix}-d", [], Inbox(), Counters())
    link.on_delivered = delivered.append
    for n in range(count):
        link.enqueue(Outgoing(f"{prefix}/out", str(n).encode(), qos=1, retain=False, store_id=n))
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as watcher:
        await watcher.subscribe(f"{prefix}/out", qos=1)
        async with running(link):
            await asyncio.wait_for(link.drained(), 10)
        received: list[bytes] = []
        async with asyncio.timeout(10):
            async for message in watcher.messages:
                assert isinstance(message.payload, bytes)
                received.append(message.payload)
                if len(received) == count:
                    break
    assert delivered == list(range(count))
    assert received == [str(n).encode() for n in range(count)]
    assert max(awaiting) == mqtt.OUTGOING_IN_FLIGHT - 1


async def test_gmqtt_hands_a_lost_connection_to_reconnect_which_the_link_keeps_to_itself(
    mosquitto: Mosquitto, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gmqtt would connect again by itself, with its fixed delay, beside the link's new
    client (the same client id: each would throw the other off). The link's client
    replaces ``reconnect``, which must stay the way gmqtt reconnects, with a no-op."""
    asked = asyncio.Event()

    class Watched(mqtt._Client):
        async def reconnect(self, delay: bool = False) -> None:
            asked.set()
            await super().reconnect(delay)

    monkeypatch.setattr(mqtt, "_Client", Watched)
    counters = Counters()
    async with running(_link(mosquitto, f"{prefix}-d", [f"{prefix}/in"], Inbox(), counters)) as link:
        mosquitto.stop()
        await asyncio.wait_for(asked.wait(), 10)
        await until(lambda: not link.connected.is_set(), 10, "the link to notice")
        mosquitto.start()
        await asyncio.wait_for(link.connected.wait(), 10)
        assert counters.get("mqtt.connections", "up") == 2

    client = mqtt._Client(f"{prefix}-alone")
    await client.connect(mosquitto.host, mosquitto.port, version=MQTTv311)
    try:
        await client.reconnect()
        assert client.is_connected, "the no-op reconnect left the connection as it was"
    finally:
        await client.disconnect()


async def test_qos1_messages_come_without_a_task_each_and_their_pubacks_leave_together(
    mosquitto: Mosquitto, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gmqtt hands a QoS 1 message to the session's ``_qos1`` (no task per message); the
    PUBACKs acknowledged in one pass of the event loop leave in one write, and only
    those: the broker sends again the one left unacknowledged, and an ``ack`` called
    twice sends nothing the second time (its packet id may by then be another message's)."""
    topic = f"{prefix}/in"
    counters = Counters()
    writes: list[bytes] = []
    send_package = MQTTConnection.send_package

    def watched(self: Any, package: Any) -> None:
        writes.append(bytes(package))
        send_package(self, package)

    monkeypatch.setattr(MQTTConnection, "send_package", watched)
    first = Inbox()
    payloads = [f"m{i}".encode() for i in range(20)]
    async with running(_link(mosquitto, f"{prefix}-d", [topic], first, counters)):
        await _publish(mosquitto, topic, *payloads)
        await until(lambda: len(first.messages) == 20, 10, "the messages")
        assert all(isinstance(ack, mqtt._PubAck) for _, _, ack in first.messages)
        for _, _, ack in first.messages[:19]:
            ack()
        first.messages[0][2]()  # again
        assert counters.get("mqtt.ack_skipped", "reconnected") == 1
        await until(lambda: len(writes) == 1, 10, "the PUBACKs")
        assert len(writes[0]) == 19 * 4  # one write: 19 PUBACKs of 4 bytes
        assert writes[0][:2] == b"\x40\x02"

    second = Inbox()
    async with running(_link(mosquitto, f"{prefix}-d", [topic], second, counters)):
        await _publish(mosquitto, topic, b"after")
        await until(lambda: b"after" in second.payloads(), 10, "the message after the restart")
        assert second.payloads() == [b"m19", b"after"]


async def test_qos2_messages_keep_gmqtts_coroutine_path(mosquitto: Mosquitto, prefix: str) -> None:
    """Subscribed at QoS 2, a message takes gmqtt's own way (its coroutine waits for the
    ``ack``): acknowledged, it is not sent again; not acknowledged, it is."""
    topic = f"{prefix}/in"
    config = MqttConfig(
        url=mosquitto.url, client_id=f"{prefix}-d", qos=2, reconnect_min_s=0.05, reconnect_max_s=0.2
    )

    def link(inbox: Inbox) -> MqttLink:
        return MqttLink(
            config,
            password=None,
            subscriptions=[topic],
            on_message=inbox,
            counters=Counters(),
            clock=SystemClock(),
        )

    first = Inbox()
    async with running(link(first)):
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.publish(topic, b"acked", qos=2)
            await client.publish(topic, b"kept", qos=2)
        await until(lambda: len(first.messages) == 2, 10, "both messages")
        assert not any(isinstance(ack, mqtt._PubAck) for _, _, ack in first.messages)
        first.messages[0][2]()  # its PUBREC leaves before the DISCONNECT, on the same socket
    second = Inbox()
    async with running(link(second)):
        await _publish(mosquitto, topic, b"after")
        await until(lambda: b"after" in second.payloads(), 10, "the message after the restart")
        assert second.payloads() == [b"kept", b"after"]
