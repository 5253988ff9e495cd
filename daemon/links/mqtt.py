"""The daemon's one MQTT connection: subscriptions in, an outbox that never drops out.

The session is persistent (fixed client id, ``clean_session=False``) and the
subscriptions are QoS 1, so the broker keeps what is published for us while the
daemon restarts. The link reconnects with capped, jittered exponential backoff
that resets after a successful connection.

At least once, end to end: an incoming QoS 1 message is acknowledged (PUBACK) only
when the handler calls the ``ack`` it was given, which the daemon does once the
message is durable in its store. The broker holds what is not yet acknowledged (up
to its in-flight window: back-pressure) and sends it again after a reconnect, so a
lost link or a crash loses nothing. Outgoing messages that come from the store carry
its row id and are reported back once the broker has them.

The client is gmqtt, asyncio-native: the receive path is the daemon's hot path, and
gmqtt drains a queue several times faster than aiomqtt over paho-mqtt (README,
"Scale"). Its one documented way to acknowledge late is its own: with
``optimistic_acknowledgement=False`` it sends the PUBACK when the ``on_message``
coroutine returns, so each message's coroutine waits until the daemon calls ``ack``.
That costs a task, a future and a socket write per message; a QoS 1 message, the
daemon's every input, takes a shorter path instead (``_Session``): gmqtt hands it
over without a task, and the PUBACKs of all the messages acknowledged in one pass of
the event loop leave in one write. ``tests/test_mqtt_link.py`` fails if gmqtt stops
offering either.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import ssl
import struct
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv311
from gmqtt.storage import PersistentStorage

from daemon.clock import Clock
from daemon.config import MqttConfig
from daemon.errors import LinkDownError
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

ANSWER_TIMEOUT_S = 10.0
"""The broker's CONNACK, each SUBACK and each PUBACK within this, or the link is made again."""

OUTGOING_IN_FLIGHT = 100
"""Outgoing QoS 1 messages sent and not yet confirmed by the broker, at most (the broker
keeps their order; MQTT 3.1.1 asks a client for no limit)."""

PUBACK_SUCCESS = 0  # the reason code gmqtt is given with the PUBACK (MQTT 3.1.1 sends none)

_PUBACK = struct.Struct("!BBH")
"""An MQTT 3.1.1 PUBACK: packet type 4 (``0x40``), remaining length 2, the packet id."""

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


class _Client(gmqtt.Client):  # type: ignore[misc]  # gmqtt has no type hints
    """gmqtt's client, without its own reconnection.

    gmqtt reconnects on its own, with a fixed delay, and gives the caller no say; the
    link does it instead (``MqttLink.run``), with its backoff, a new client and a
    report of each loss. ``reconnect`` is what gmqtt calls when a connection ends.
    """

    async def reconnect(self, delay: bool = False) -> None:
        """Do nothing: the link connects again itself."""


class _Confirmations(PersistentStorage):  # type: ignore[misc]  # gmqtt has no type hints
    """Where gmqtt keeps each outgoing QoS 1 or 2 message until the broker confirms it.

    gmqtt's ``publish`` returns nothing; this store, which its client takes as
    ``persistent_storage``, is where it files the message under its packet id and
    removes it on the PUBACK (PUBCOMP): the one place that tells which message the
    broker has. ``tests/test_mqtt_link.py`` fails if gmqtt stops using it so.
    """

    def __init__(self) -> None:
        super().__init__()
        self.last_mid: int | None = None
        self.waiting: dict[int, asyncio.Future[None]] = {}

    def push_message(self, mid: int, raw_package: bytes) -> None:
        """gmqtt files a message it sent (or, for QoS 2, its PUBREL)."""
        super().push_message(mid, raw_package)
        self.last_mid = mid

    def remove_message_by_mid(self, mid: int) -> None:
        """gmqtt drops a message the broker has confirmed."""
        super().remove_message_by_mid(mid)
        confirmed = self.waiting.pop(mid, None)
        if confirmed is not None and not confirmed.done():
            confirmed.set_result(None)


def _quiet_gmqtt() -> None:
    """gmqtt's own log lines repeat what the link says (and list every topic of a
    SUBSCRIBE, or a payload at debug level): only its errors are kept, less the one that
    says it will not reconnect, which is true of gmqtt alone (the link reconnects)."""
    logger = logging.getLogger("gmqtt")
    if logger.level < logging.ERROR:
        logger.setLevel(logging.ERROR)
    handler_log = logging.getLogger("gmqtt.mqtt.handler")
    if not any(isinstance(f, _NotReconnecting) for f in handler_log.filters):
        handler_log.addFilter(_NotReconnecting())


class _NotReconnecting(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "not reconnecting" not in str(record.msg)


Decision = asyncio.Future[int] | int | None
"""How a received message is acknowledged: QoS 0 needs nothing; QoS 1 is its packet id,
whose PUBACK the session writes (``puback``); QoS 2 (and QoS 1 if gmqtt ever stops
calling ``_qos1``) is the future its ``receive`` coroutine waits on."""


class _Session:
    """One connection: its gmqtt client, and what it received and has not acknowledged.

    A QoS 1 message (what the daemon subscribes with) comes through ``_qos1``, which
    gmqtt's package handler calls in place of its own method of that name: queued with
    its packet id, no task made. Its ``ack`` queues the PUBACK, and every PUBACK queued
    in one pass of the event loop leaves in one write, on the connection it came on
    and only while that connection lasts. Any other QoS 1 or 2 message is one gmqtt
    coroutine (``receive``) that waits on its ``decision`` future; gmqtt sends the
    PUBACK (PUBREC) when that coroutine returns. ``inbox`` keeps the arrival order for
    the link's one reader.
    """

    def __init__(
        self,
        config: MqttConfig,
        password: str | None,
        client_id: str,
        *,
        clean_session: bool,
        tls_context: ssl.SSLContext | None,
        will: Outgoing | None = None,
    ) -> None:
        self.config = config
        self.tls_context = tls_context
        self.confirmations = _Confirmations()
        self.client = _Client(
            client_id,
            clean_session=clean_session,
            # The PUBACK leaves when ``receive`` returns, that is once ``ack`` is called.
            optimistic_acknowledgement=False,
            will_message=None
            if will is None
            else gmqtt.Message(will.topic, will.payload, qos=will.qos, retain=will.retain),
            persistent_storage=self.confirmations,
        )
        if config.username is not None:
            self.client.set_auth_credentials(config.username, password)
        self.client.on_message = self.receive
        self.client.on_subscribe = self._subscribed
        self.client.on_disconnect = self._disconnected
        handler = self.client._package_handler  # gmqtt's parser of incoming packets: see _qos1
        if getattr(handler, "_handle_qos_1_publish_packet", None) is None:
            raise RuntimeError("gmqtt no longer has _handle_qos_1_publish_packet; see _Session._qos1")
        handler._handle_qos_1_publish_packet = self._qos1
        self.inbox: collections.deque[tuple[str, bytes, bool, Decision]] = collections.deque()
        self.arrived = asyncio.Event()
        self.lost = asyncio.Event()
        self.closed = False
        self.unacknowledged: set[asyncio.Future[int]] = set()
        self._pubacks: list[int] = []
        self._subacks: dict[int, asyncio.Future[tuple[int, ...]]] = {}

    def _qos1(self, mid: int, payload: bytes, topic: str | bytes, properties: Any) -> None:
        """gmqtt's package handler, for one QoS 1 PUBLISH that it has parsed: queued with
        its packet id. (gmqtt's own would start ``receive`` as a task per message.)"""
        if isinstance(topic, bytes):  # gmqtt passes a topic that is not UTF-8 as it came
            topic = topic.decode(errors="replace")
        self.inbox.append((topic, payload, bool(properties.get("retain")), mid))
        self.arrived.set()

    def puback(self, mid: int) -> bool:
        """Acknowledge the QoS 1 message ``mid`` of this connection (written at the end of
        this pass of the event loop, with the others); ``False`` once the connection is gone."""
        if self.closed or self.lost.is_set():
            return False
        if not self._pubacks:
            asyncio.get_running_loop().call_soon(self.flush_pubacks)
        self._pubacks.append(mid)
        return True

    def flush_pubacks(self) -> None:
        """Write the PUBACKs queued so far, in the order they were acknowledged."""
        mids, self._pubacks = self._pubacks, []
        if not mids or self.closed or self.lost.is_set():
            return  # the broker sends those messages again on the next connection
        connection = self.client._connection  # gmqtt's, of this session's one connection
        connection.send_package(b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids]))

    async def receive(
        self, _client: Any, topic: str | bytes, payload: bytes, qos: int, properties: Any
    ) -> int:
        """gmqtt's handler for one message; the PUBACK leaves when it returns."""
        if isinstance(topic, bytes):  # gmqtt passes a topic that is not UTF-8 as it came
            topic = topic.decode(errors="replace")
        retain = bool(properties.get("retain"))
        if qos == 0:
            self.inbox.append((topic, payload, retain, None))
            self.arrived.set()
            return PUBACK_SUCCESS
        decision: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.unacknowledged.add(decision)
        self.inbox.append((topic, payload, retain, decision))
        self.arrived.set()
        try:
            return await decision
        finally:
            self.unacknowledged.discard(decision)

    def close(self) -> None:
        """End every waiting ``receive``: call only once the connection is closed, so
        that what gmqtt then writes (their PUBACKs) reaches no broker."""
        self.closed = True
        self._pubacks.clear()
        for decision in self.unacknowledged:
            if not decision.done():
                decision.set_result(PUBACK_SUCCESS)
        self.unacknowledged.clear()

    async def connect(self) -> None:
        """Connect and log in; ``LinkDownError`` if the broker is away, refuses or does not answer."""
        host, port, _ = broker_address(self.config.url)
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                await self.client.connect(
                    host,
                    port,
                    ssl=self.tls_context or False,
                    keepalive=self.config.keepalive_s,
                    # 3.1.1, as before: a session kept by clean_session=False alone
                    # (MQTT 5 would end it at the disconnect unless given an expiry).
                    version=MQTTv311,
                )
        except TimeoutError as exc:
            raise LinkDownError(f"no CONNACK within {ANSWER_TIMEOUT_S:.0f} s") from exc
        except (OSError, gmqtt.MQTTConnectError) as exc:
            raise LinkDownError(str(exc) or type(exc).__name__) from exc

    async def end(self) -> None:
        """Disconnect (if connected), then end every waiting ``receive``: no PUBACK leaves
        after the PUBACKs already acknowledged, which are written first."""
        try:
            self.flush_pubacks()
            await self.client.disconnect()
        except OSError as exc:
            log.debug("MQTT connection closed with %s", exc)
        finally:
            self.close()

    async def subscribe_all(self, topics: Sequence[str], counters: Counters | None = None) -> None:
        """Subscribe to ``topics`` at the config's QoS, many to a SUBSCRIBE packet (one
        round trip per topic made a worker with thousands of bed topics take seconds to
        start); a topic the broker refuses is logged and counted."""
        for start in range(0, len(topics), SUBSCRIBE_BATCH):
            batch = topics[start : start + SUBSCRIBE_BATCH]
            granted = await self.subscribe(batch, self.config.qos)
            refused = [topic for topic, qos in zip(batch, granted, strict=False) if qos >= 0x80]
            if refused:
                if counters is not None:
                    counters.inc("mqtt.subscribe_refused", "", len(refused))
                log.warning("the broker refused %d subscription(s): %s", len(refused), ", ".join(refused[:5]))

    async def subscribe(self, topics: Sequence[str], qos: int) -> tuple[int, ...]:
        """One SUBSCRIBE packet; the QoS the broker granted each topic (128: refused)."""
        mid = self.client.subscribe([gmqtt.Subscription(topic, qos=qos) for topic in topics])
        granted: asyncio.Future[tuple[int, ...]] = asyncio.get_running_loop().create_future()
        self._subacks[mid] = granted
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                return await granted
        except TimeoutError as exc:
            raise LinkDownError(f"no SUBACK within {ANSWER_TIMEOUT_S:.0f} s") from exc
        finally:
            del self._subacks[mid]

    def _subscribed(self, _client: Any, mid: int, granted: Sequence[int], _properties: Any) -> None:
        waiting = self._subacks.get(mid)
        if waiting is not None and not waiting.done():
            waiting.set_result(tuple(granted))

    def _disconnected(self, _client: Any, _packet: Any, _exc: Any = None) -> None:
        self.lost.set()
        for waiting in self._subacks.values():
            if not waiting.done():
                waiting.set_exception(LinkDownError("the connection was lost"))

    def start(self, message: Outgoing) -> asyncio.Future[None] | None:
        """Publish one message without waiting: the future is done once the broker has it
        (``None`` for QoS 0, which is done once written)."""
        self.confirmations.last_mid = None
        self.client.publish(
            gmqtt.Message(message.topic, message.payload, qos=message.qos, retain=message.retain)
        )
        if message.qos == 0:
            return None
        mid = self.confirmations.last_mid
        if mid is None:
            # Sent, and no way left to learn when the broker has it: not a guess to make.
            raise RuntimeError("gmqtt no longer files its messages in persistent_storage; see _Confirmations")
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.confirmations.waiting[mid] = confirmed
        return confirmed


class MqttLink:
    """Implements ``daemon.publish.Publisher`` and feeds subscribed messages to a handler.

    Guarantees: ``publish`` never drops; messages leave in the order they were queued,
    each one at least once (a message whose publish was interrupted is sent again).
    Messages reach the handler in the order they arrived, one at a time. ``connected``
    is set while a session is up.
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
        self._outbox: collections.deque[Outgoing] = collections.deque()
        self._wakeup = asyncio.Event()
        self.connected = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        _quiet_gmqtt()

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
            try:
                await self._session(host, port, backoff)
            except* LinkDownError as errors:
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

    async def _session(self, host: str, port: int, backoff: Backoff) -> None:
        session = _Session(
            self._config,
            self._password,
            self._client_id,
            clean_session=self._clean_session,
            tls_context=self._tls_context,
            will=self._will,
        )
        try:
            await session.connect()
            await session.subscribe_all(self._subscriptions, self._counters)
            log.info("MQTT connected to %s:%d as %s", host, port, self._client_id)
            self._counters.inc("mqtt.connections", "up")
            backoff.reset()
            self.sessions += 1
            self.connected.set()
            if self._on_health is not None:
                await self._on_health(Health.CONNECTED, "")
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._read(session), name="mqtt.read")
                    group.create_task(self._write(session), name="mqtt.write")
                    group.create_task(_until_lost(session), name="mqtt.watch")
            finally:
                self.connected.clear()
        finally:
            await session.end()

    async def _read(self, session: _Session) -> None:
        taken = 0
        while True:
            if not session.inbox:
                session.arrived.clear()
                await session.arrived.wait()
                taken = 0
            elif taken >= READ_BATCH:
                taken = 0
                await asyncio.sleep(0)  # lets the rest of the event loop run
            topic, payload, retain, decision = session.inbox.popleft()
            taken += 1
            if not self._reading:
                continue  # not acknowledged: the broker keeps it for the next run
            acker = self._acker(session, decision)
            if retain and self._command is not None and self._command(topic):
                # The broker hands a retained command to every new subscription, ours
                # after each restart included: it was given once, when it was live.
                reject(
                    self._counters,
                    "mqtt.rejected",
                    "retained_command",
                    "a command (acknowledgement) sent with the retain flag is not carried out again",
                    where=topic,
                    payload=payload,
                )
                acker()
                continue
            await self._on_message(topic, payload, acker)

    def _acker(self, session: _Session, decision: Decision) -> Ack:
        if decision is None:
            return _nothing_to_acknowledge  # QoS 0
        if isinstance(decision, int):
            return _PubAck(session, decision, self._counters)

        def ack() -> None:
            if decision.done():
                # That connection is gone; the broker sends the message again on the
                # new one, and the daemon drops the duplicate (``daemon.dedup``).
                self._counters.inc("mqtt.ack_skipped", "reconnected")
                return
            decision.set_result(PUBACK_SUCCESS)

        return ack

    async def _write(self, session: _Session) -> None:
        # Up to OUTGOING_IN_FLIGHT messages await their PUBACK at once, instead of a round
        # trip to the broker per message (which made a queue of alerts wait behind each
        # other's). A message leaves the outbox only once the broker has it and every one
        # queued before it: after a lost link the next session sends again from the first
        # one not confirmed, in the same order.
        in_flight: collections.deque[asyncio.Future[None] | None] = collections.deque()
        while True:
            while self._outbox:
                while len(in_flight) < min(OUTGOING_IN_FLIGHT, len(self._outbox)):
                    in_flight.append(session.start(self._outbox[len(in_flight)]))
                first = in_flight[0]
                if first is not None and not first.done():
                    try:
                        async with asyncio.timeout(ANSWER_TIMEOUT_S):
                            await first
                    except TimeoutError as exc:
                        raise LinkDownError(f"no PUBACK within {ANSWER_TIMEOUT_S:.0f} s") from exc
                while in_flight and (in_flight[0] is None or in_flight[0].done()):
                    in_flight.popleft()
                    message = self._outbox.popleft()
                    self._counters.inc("mqtt.published", "")
                    if message.store_id is not None and self.on_delivered is not None:
                        self.on_delivered(message.store_id)
            self._drained.set()
            self._wakeup.clear()
            await self._wakeup.wait()


def _nothing_to_acknowledge() -> None:
    """The ``ack`` of a QoS 0 message."""


class _PubAck:
    """The ``ack`` of a QoS 1 message: its PUBACK, once, on the connection it came on."""

    __slots__ = ("_counters", "_mid", "_session")

    def __init__(self, session: _Session, mid: int, counters: Counters) -> None:
        self._session: _Session | None = session
        self._mid = mid
        self._counters = counters

    def __call__(self) -> None:
        session, self._session = self._session, None
        if session is None or not session.puback(self._mid):
            # That connection is gone (or this was acknowledged already: a packet id
            # is the broker's to use again once acknowledged). The broker sends the
            # message again on the new connection, and the daemon drops the
            # duplicate (``daemon.dedup``).
            self._counters.inc("mqtt.ack_skipped", "reconnected")


async def _until_lost(session: _Session) -> None:
    await session.lost.wait()
    raise LinkDownError("the connection was lost")


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
        self.published = 0
        """Messages staged so far (whether an input's processing published one)."""

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Stage one message; it leaves after the commit (see the class guarantees)."""
        self.published += 1
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


async def keep_session(
    config: MqttConfig, password: str | None, client_id: str, subscriptions: Sequence[str]
) -> None:
    """Make the broker keep a session under ``client_id`` with ``subscriptions`` (QoS as the
    daemon's): what is published to them from now on waits there for the daemon that
    connects under that id (a worker of a new layout, before it first starts).
    ``LinkDownError`` if the broker cannot be reached or refuses the login."""
    session = _lone_session(config, password, client_id, clean=False)
    try:
        await session.connect()
        # A session that already holds messages delivers them on connecting: none is
        # acknowledged here, so the broker keeps each for the daemon.
        await session.subscribe_all(subscriptions)
    finally:
        await session.end()


async def end_session(config: MqttConfig, password: str | None, client_id: str) -> None:
    """Make the broker drop the session of ``client_id``, with what waits in it."""
    session = _lone_session(config, password, client_id, clean=True)
    try:
        await session.connect()
    finally:
        await session.end()


def _lone_session(config: MqttConfig, password: str | None, client_id: str, *, clean: bool) -> _Session:
    _, _, tls = broker_address(config.url)
    context = client_context(config.tls, "mqtt") if tls else None
    return _Session(config, password, client_id, clean_session=clean, tls_context=context)
