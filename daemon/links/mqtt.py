"""The daemon's one MQTT connection: subscriptions in, an outbox that never drops out.

The session is persistent (fixed client id, ``clean_session=False``) and the
subscriptions are QoS 1, so the broker keeps what is published for us while the
daemon restarts. The link reconnects with capped, jittered exponential backoff
that resets after a successful connection.

At least once, end to end: incoming QoS 1 messages are acknowledged manually
(paho-mqtt's ``manual_ack``), when the handler calls the ``ack`` it was given, which
the daemon does once the message is durable in its store. The broker holds what is
not yet acknowledged (up to its in-flight window: back-pressure) and sends it again
after a reconnect, so a lost link or a crash loses nothing. Outgoing messages that
come from the store carry its row id and are reported back once the broker has them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt

from daemon.clock import Clock
from daemon.config import MqttConfig
from daemon.events import Health, OnHealth
from daemon.links.store import StoreWriter
from daemon.links.tls import client_context
from daemon.links.tls import describe as tls_reason
from daemon.metrics import Counters, reject

log = logging.getLogger(__name__)

READ_BATCH = 100
"""Queued messages taken in a row before the reader lets the rest of the event loop run."""

SUBSCRIBE_BATCH = 500
"""Topics per SUBSCRIBE packet (about 20 kB: well under any broker's packet limit)."""

Ack = Callable[[], None]
OnMessage = Callable[[str, bytes, Ack], Awaitable[None]]
"""``(topic, payload, ack)``: call ``ack`` once the message's effect is durable."""
OnDelivered = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One queued message."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    store_id: int | None = None  # the row in the store's mqtt_outbox, if it came from there


class Backoff:
    """Capped exponential backoff with full jitter; ``reset`` after a success."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self._min_s = min_s
        self._max_s = max(min_s, max_s)
        self._attempt = 0
        self._rng = rng or random.Random()

    def next_delay_s(self) -> float:
        """The next wait: uniform in [min, min × 2^attempt], capped."""
        ceiling = min(self._max_s, self._min_s * (2**self._attempt))
        self._attempt = min(self._attempt + 1, 30)
        return self._rng.uniform(self._min_s, ceiling)

    def reset(self) -> None:
        """Start again from the minimum."""
        self._attempt = 0


def broker_address(url: str) -> tuple[str, int, bool]:
    """``(host, port, tls)`` from ``mqtt://host:port`` or ``mqtts://host:port``."""
    parsed = urllib.parse.urlsplit(url)
    tls = parsed.scheme == "mqtts"
    return parsed.hostname or "127.0.0.1", parsed.port or (8883 if tls else 1883), tls


class MqttLink:
    """Implements ``daemon.publish.Publisher`` and feeds subscribed messages to a handler.

    Guarantees: ``publish`` never drops; messages leave in the order they were queued,
    each one at least once (a message whose publish was interrupted is sent again).
    ``connected`` is set while a session is up.
    """

    def __init__(
        self,
        config: MqttConfig,
        *,
        password: str | None,
        subscriptions: Sequence[str],
        on_message: OnMessage,
        counters: Counters,
        clock: Clock,
        client_id: str | None = None,
        clean_session: bool = False,
        on_delivered: OnDelivered | None = None,
        on_health: OnHealth | None = None,
        command: Callable[[str], bool] | None = None,
        will: Outgoing | None = None,
    ) -> None:
        self._config = config
        self._password = password
        self._subscriptions = tuple(subscriptions)
        self._on_message = on_message
        self._counters = counters
        self._clock = clock
        self._client_id = client_id or config.client_id
        self._clean_session = clean_session
        self.on_delivered = on_delivered
        self._on_health = on_health
        self._command = command
        self._will = will
        self.sessions = 0  # connections made so far: a new one needs its status again
        self._reading = True
        _, _, tls = broker_address(config.url)
        # Built once, here: an unusable ca_file or certificate stops the start, with its place.
        self._tls_context = client_context(config.tls, "mqtt") if tls else None
        self._paho: Any = None  # the connected client's paho-mqtt core, for manual acks
        self._outbox: collections.deque[Outgoing] = collections.deque()
        self._wakeup = asyncio.Event()
        self.connected = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()

    @property
    def pending(self) -> int:
        """Messages queued but not yet confirmed by the broker."""
        return len(self._outbox)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Queue one message (returns at once; see the class guarantees)."""
        self.enqueue(Outgoing(topic, payload, qos, retain))

    def enqueue(self, message: Outgoing) -> None:
        """Queue one message; one with a ``store_id`` is reported to ``on_delivered`` once sent."""
        self._outbox.append(message)
        self._drained.clear()
        self._wakeup.set()

    def stop_reading(self) -> None:
        """Hand no more messages to the handler (shutdown: what is not acknowledged stays with the broker)."""
        self._reading = False

    async def drained(self) -> None:
        """Wait until every queued message has been confirmed by the broker."""
        await self._drained.wait()

    async def run(self) -> None:
        """Connect, subscribe, read and write until cancelled, reconnecting as needed."""
        host, port, _ = broker_address(self._config.url)
        backoff = Backoff(self._config.reconnect_min_s, self._config.reconnect_max_s)
        while True:
            client = aiomqtt.Client(
                host,
                port,
                identifier=self._client_id,
                clean_session=self._clean_session,
                username=self._config.username,
                password=self._password,
                keepalive=self._config.keepalive_s,
                tls_context=self._tls_context,
                timeout=10,
                will=None
                if self._will is None
                else aiomqtt.Will(self._will.topic, self._will.payload, self._will.qos, self._will.retain),
            )
            # Before connecting: a resumed session delivers at once. paho-mqtt's client is
            # aiomqtt's private attribute; manual acknowledgement is its public API.
            paho = client._client
            paho.manual_ack_set(True)
            try:
                async with client:
                    # Many topics per SUBSCRIBE packet: one round trip per topic made a
                    # worker with thousands of bed topics take seconds to start.
                    for start in range(0, len(self._subscriptions), SUBSCRIBE_BATCH):
                        batch = self._subscriptions[start : start + SUBSCRIBE_BATCH]
                        qos: int = self._config.qos
                        await client.subscribe([(topic, qos) for topic in batch])
                    log.info("MQTT connected to %s:%d as %s", host, port, self._client_id)
                    self._counters.inc("mqtt.connections", "up")
                    backoff.reset()
                    self.sessions += 1
                    self._paho = paho
                    self.connected.set()
                    if self._on_health is not None:
                        await self._on_health(Health.CONNECTED, "")
                    try:
                        async with asyncio.TaskGroup() as group:
                            group.create_task(self._read(client), name="mqtt.read")
                            group.create_task(self._write(client), name="mqtt.write")
                    finally:
                        self.connected.clear()
                        self._paho = None
            except* aiomqtt.MqttError as errors:
                delay_s = backoff.next_delay_s()
                reason = tls_reason(errors.exceptions[0])
                self._counters.inc("mqtt.connections", "lost" if reason is None else "tls_failed")
                log.warning(
                    "MQTT link to %s:%d down (%s); retrying in %.1f s, %d message(s) queued",
                    host,
                    port,
                    reason or errors.exceptions[0],
                    delay_s,
                    len(self._outbox),
                )
                if self._on_health is not None:
                    await self._on_health(Health.LOST, reason or str(errors.exceptions[0]))
                await self._clock.sleep(delay_s)

    async def _read(self, client: aiomqtt.Client) -> None:
        paho = self._paho
        # aiomqtt's iterator starts a task and an asyncio.wait for every message, a third
        # of the receive path's time in a burst. Messages already queued are taken
        # straight from its queue (aiomqtt's private attribute, like ``_client``); the
        # iterator is used only to wait, so that a lost connection still ends the loop.
        queue: asyncio.Queue[aiomqtt.Message] = client._queue
        waiting = aiter(client.messages)
        taken = 0
        while True:
            if queue.empty() or taken >= READ_BATCH:
                taken = 0
                message = await anext(waiting)  # also lets the rest of the loop run
            else:
                taken += 1
                message = queue.get_nowait()
            if not self._reading:
                continue  # not acknowledged: the broker keeps it for the next run
            payload = message.payload
            if isinstance(payload, str):
                payload = payload.encode()
            elif not isinstance(payload, bytes | bytearray):
                payload = b"" if payload is None else str(payload).encode()
            topic = str(message.topic)
            acker = self._acker(paho, message.mid, message.qos)
            if message.retain and self._command is not None and self._command(topic):
                # The broker hands a retained command to every new subscription, ours
                # after each restart included: it was given once, when it was live.
                reject(
                    self._counters,
                    "mqtt.rejected",
                    "retained_command",
                    "a command (acknowledgement) sent with the retain flag is not carried out again",
                    where=topic,
                    payload=bytes(payload),
                )
                acker()
                continue
            await self._on_message(topic, bytes(payload), acker)

    def _acker(self, paho: Any, mid: int, qos: int) -> Ack:
        def ack() -> None:
            if qos == 0:
                return
            if paho is not self._paho:
                # That connection is gone; the broker sends the message again on the
                # new one, and the daemon drops the duplicate (``daemon.dedup``).
                self._counters.inc("mqtt.ack_skipped", "reconnected")
                return
            paho.ack(mid, qos)

        return ack

    async def _write(self, client: aiomqtt.Client) -> None:
        while True:
            while self._outbox:
                message = self._outbox[0]
                await client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
                _raise_if_cancelling()
                # Removed only once the broker has it: a lost link re-sends it.
                self._outbox.popleft()
                self._counters.inc("mqtt.published", "")
                if message.store_id is not None and self.on_delivered is not None:
                    self.on_delivered(message.store_id)
            self._drained.set()
            self._wakeup.clear()
            await self._wakeup.wait()


def _raise_if_cancelling() -> None:
    """Re-raise a cancellation that an awaited call returned through.

    Python 3.11's ``asyncio.wait_for`` (which aiomqtt's publish uses) returns the
    result when the awaited future completes in the same loop step as a cancellation,
    and the cancellation is lost: the task would then wait forever for its next message.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class DurablePublisher:
    """Implements ``daemon.publish.Publisher``: a message is in the store before it is queued.

    It is staged in the store's ``mqtt_outbox`` with whatever else the caller staged
    (an alert row, its journal line), queued on the link once that commit is done, and
    deleted from the store once the broker has it. After a crash, ``resend`` queues
    again what the broker never confirmed.
    """

    def __init__(self, writer: StoreWriter, link: MqttLink) -> None:
        self._writer = writer
        self._link = link

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Stage one message; it leaves after the commit (see the class guarantees)."""
        message = Outgoing(topic, payload, qos, retain, self._writer.store.next_id("mqtt_outbox"))
        self._writer.stage().mqtt_out.append((message.store_id or 0, topic, payload, qos, retain))
        self._writer.after_commit(lambda: self._link.enqueue(message))

    def delivered(self, store_id: int) -> None:
        """The broker has the message: forget it (in the next commit)."""
        self._writer.stage().mqtt_done.append(store_id)

    def resend(self) -> int:
        """Queue again every message of an earlier run that the broker never confirmed."""
        pending = self._writer.store.mqtt_pending()
        for row in pending:
            self._link.enqueue(Outgoing(row.topic, row.payload, row.qos, row.retain, row.id))
        return len(pending)


def _session_client(
    config: MqttConfig, password: str | None, client_id: str, *, clean: bool
) -> aiomqtt.Client:
    host, port, tls = broker_address(config.url)
    client = aiomqtt.Client(
        host,
        port,
        identifier=client_id,
        clean_session=clean,
        username=config.username,
        password=password,
        keepalive=config.keepalive_s,
        tls_context=client_context(config.tls, "mqtt") if tls else None,
        timeout=10,
    )
    # A session that already holds messages delivers them on connecting: none is
    # acknowledged here, so the broker keeps each for the daemon.
    client._client.manual_ack_set(True)
    return client


async def keep_session(
    config: MqttConfig, password: str | None, client_id: str, subscriptions: Sequence[str]
) -> None:
    """Make the broker keep a session under ``client_id`` with ``subscriptions`` (QoS as the
    daemon's): what is published to them from now on waits there for the daemon that
    connects under that id (a worker of a new layout, before it first starts)."""
    async with _session_client(config, password, client_id, clean=False) as client:
        for start in range(0, len(subscriptions), SUBSCRIBE_BATCH):
            qos: int = config.qos
            await client.subscribe([(topic, qos) for topic in subscriptions[start : start + SUBSCRIBE_BATCH]])


async def end_session(config: MqttConfig, password: str | None, client_id: str) -> None:
    """Make the broker drop the session of ``client_id``, with what waits in it."""
    async with _session_client(config, password, client_id, clean=True):
        pass
