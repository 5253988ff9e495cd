"""Alert lifecycle against a real private mosquitto: ack, latching, escalation, retained state, restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from daemon.alerts import AlertService, AlertState, send_ack
from daemon.clock import ManualClock
from daemon.events import AlertCandidate, Priority, Text
from daemon.links.store import StoreWriter
from daemon.metrics import Counters
from daemon.points import Point
from tests.helpers import commit_staged, store_writer, wardd
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
WAIT_S = 5.0
OnMessage = Callable[[str, bytes], Any]


def cand(condition: str, *, present: bool = True, priority: Priority = Priority.HIGH) -> AlertCandidate:
    """A candidate for bed b1 of ward w1."""
    return AlertCandidate(
        condition=condition,
        ward="w1",
        bed="b1",
        time=T0,
        present=present,
        priority=priority,
        value=85.0,
        unit="mm[Hg]",
        message=Text(en=f"{condition} at b1", fr=f"{condition} au lit b1"),
    )


def _bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


class Link:
    """A tiny ``Publisher`` over aiomqtt that queues like the daemon's link, and routes acks in."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[str, bytes, int, bool]] = asyncio.Queue()

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Queue one message (never waits on the broker, as the Publisher contract says)."""
        self._queue.put_nowait((topic, payload, qos, retain))

    async def drained(self) -> None:
        """Wait until the broker has every queued message."""
        await self._queue.join()

    @contextlib.asynccontextmanager
    async def connected(
        self, server: Mosquitto, subscriptions: Sequence[str] = (), on_message: OnMessage | None = None
    ) -> AsyncIterator[None]:
        """Connect, route ``subscriptions`` to ``on_message``, send the queue; stop on exit."""
        async with aiomqtt.Client(server.host, server.port, identifier=f"d-{uuid.uuid4().hex[:8]}") as client:
            for subscription in subscriptions:
                await client.subscribe(subscription, qos=1)
            tasks = [asyncio.create_task(self._write(client))]
            if on_message is not None:
                tasks.append(asyncio.create_task(self._read(client, on_message)))
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _write(self, client: aiomqtt.Client) -> None:
        while True:
            topic, payload, qos, retain = await self._queue.get()
            await client.publish(topic, payload, qos=qos, retain=retain)
            self._queue.task_done()

    @staticmethod
    async def _read(client: aiomqtt.Client, on_message: OnMessage) -> None:
        async for message in client.messages:
            await on_message(str(message.topic), _bytes(message.payload))


@dataclass
class Seen:
    """One message a station received."""

    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        """The payload decoded."""
        return json.loads(self.payload)


@dataclass
class Station:
    """A nursing station: collects what it is subscribed to."""

    client: aiomqtt.Client
    seen: list[Seen] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, match: Callable[[Seen], bool]) -> Seen:
        """The first message (already seen or to come) that matches, or fail after WAIT_S."""
        async with asyncio.timeout(WAIT_S):
            while True:
                for message in self.seen:
                    if match(message):
                        return message
                self.changed.clear()
                await self.changed.wait()

    async def sync(self, link: Link, prefix: str) -> None:
        """Wait until everything ``link`` queued so far has reached this station.

        A marker sent after it on the same connection arrives after it (mosquitto keeps
        one ordered queue per client), so absence can be checked without sleeping.
        """
        marker = f"{prefix}/marker/{uuid.uuid4().hex}"
        await self.client.subscribe(marker, qos=1)
        await link.publish(marker, b"m")
        await self.wait_for(lambda m: m.topic == marker)

    async def _read(self) -> None:
        async for message in self.client.messages:
            self.seen.append(Seen(str(message.topic), _bytes(message.payload), bool(message.retain)))
            self.changed.set()


@contextlib.asynccontextmanager
async def station(server: Mosquitto, *filters: str) -> AsyncIterator[Station]:
    """A station subscribed to ``filters`` (retained messages included)."""
    async with aiomqtt.Client(server.host, server.port, identifier=f"s-{uuid.uuid4().hex[:8]}") as client:
        st = Station(client)
        reader = asyncio.create_task(st._read())
        for topic in filters:
            await client.subscribe(topic, qos=1)
        try:
            yield st
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


@contextlib.asynccontextmanager
async def cli(server: Mosquitto) -> AsyncIterator[aiomqtt.Client]:
    """The client ``wardd ack`` would open."""
    async with aiomqtt.Client(server.host, server.port, identifier=f"c-{uuid.uuid4().hex[:8]}") as client:
        yield client


@dataclass
class Ward:
    """An alert service, its link and its files."""

    service: AlertService
    link: Link
    clock: ManualClock
    writer: StoreWriter
    points: list[Point]

    def journal_lines(self) -> list[dict[str, Any]]:
        """The audit journal, once what is staged is committed."""
        commit_staged(self.writer)
        return self.writer.store.journal()


class ListSink:
    """Keeps points in a list."""

    def __init__(self, points: list[Point]) -> None:
        self.points = points

    def put(self, point: Point) -> None:
        """Keep one point."""
        self.points.append(point)


def make_ward(tmp_path: Path, prefix: str, clock: ManualClock | None = None) -> Ward:
    """A service restored from ``tmp_path`` (empty the first time)."""
    link, clock = Link(), clock or ManualClock(T0)
    points: list[Point] = []
    writer = store_writer(tmp_path)
    service = AlertService.restore(
        publisher=link,
        sink=ListSink(points),
        clock=clock,
        counters=Counters(),
        prefix=prefix,
        writer=writer,
        escalate_after_s=300,
    )
    return Ward(service, link, clock, writer, points)


@contextlib.asynccontextmanager
async def running(ward: Ward, server: Mosquitto) -> AsyncIterator[None]:
    """The ward's link up with acks routed to the service, and its escalation loop running."""
    async with ward.link.connected(server, ward.service.ack_subscriptions(), ward.service.handle_ack_message):
        task = asyncio.create_task(ward.service.run(), name="alerts.escalation")
        for _ in range(1000):  # let the loop start sleeping on the manual clock
            if ward.clock.next_wake() is not None:
                break
            await asyncio.sleep(0)
        try:
            yield
        finally:
            await ward.link.drained()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


def state_topic(prefix: str, alert_id: str) -> str:
    """The retained state topic of an alert at w1/b1."""
    return f"{prefix}/w1/bed/b1/alerts/{alert_id}"


async def test_acknowledgement_over_mqtt(mosquitto: Mosquitto, prefix: str, tmp_path: Path) -> None:
    ward = make_ward(tmp_path, prefix)
    async with (
        running(ward, mosquitto),
        station(mosquitto, f"{prefix}/+/bed/+/alerts", f"{prefix}/+/bed/+/alerts/+/ack/#") as st,
    ):
        [start] = await ward.service.handle([cand("HYPOTENSION")])
        aid = start.alert.id
        await st.wait_for(lambda m: m.topic.endswith("/alerts") and m.json()["phase"] == "start")

        async with cli(mosquitto) as client:
            reply = await send_ack(client, prefix=prefix, alert_id=aid, user="nurse-1")
        assert reply.ok, reply.error
        assert (reply.state, reply.ward, reply.bed) == ("acknowledged", "w1", "b1")
        ack = await st.wait_for(lambda m: m.topic.endswith("/alerts") and m.json()["phase"] == "ack")
        assert ack.json()["acked_by"] == "nurse-1"
        assert ack.json()["state"] == "acknowledged"
        assert ward.service.book.get(aid).state is AlertState.ACKNOWLEDGED

        # Unknown ids are told at once (no retained state), without a timeout.
        async with cli(mosquitto) as client:
            unknown = await send_ack(
                client, prefix=prefix, alert_id="b1-NOPE-99", user="nurse-1", timeout_s=3
            )
        assert (unknown.ok, unknown.reason) == (False, "unknown_id")

        # A malformed command from a station gets a clear error and changes nothing.
        await st.client.publish(f"{state_topic(prefix, aid)}/ack/by/nurse-9", b"{oops", qos=1)
        bad = await st.wait_for(lambda m: m.topic.endswith("/ack/by/nurse-9/reply"))
        assert (bad.json()["ok"], bad.json()["reason"]) == (False, "invalid_json")
        # So does one on the path that does not prove its author.
        await st.client.publish(f"{state_topic(prefix, aid)}/ack", b'{"by": "Dr. Nobody"}', qos=1)
        spoofed = await st.wait_for(lambda m: m.topic.endswith(f"{aid}/ack/reply"))
        assert (spoofed.json()["ok"], spoofed.json()["reason"]) == (False, "unauthenticated")
        assert ward.service.book.get(aid).acked_by == "nurse-1"
    whats = [(line["what"], line["who"]) for line in ward.journal_lines()]
    assert whats == [("service_start", "wardd"), ("start", "wardd"), ("ack", "nurse-1")]


async def test_latching_until_acknowledged(mosquitto: Mosquitto, prefix: str, tmp_path: Path) -> None:
    ward = make_ward(tmp_path, prefix)
    async with running(ward, mosquitto):
        [start] = await ward.service.handle([cand("HYPOXIA")])
        aid = start.alert.id
        [latch] = await ward.service.handle([cand("HYPOXIA", present=False)])
        assert latch.alert.state is AlertState.LATCHED
        await ward.link.drained()
        async with station(mosquitto, f"{prefix}/+/bed/+/alerts/+") as late:
            seen = await late.wait_for(lambda m: m.topic == state_topic(prefix, aid))
            assert seen.retain
            assert seen.json()["state"] == "latched"

        async with cli(mosquitto) as client:
            reply = await send_ack(client, prefix=prefix, alert_id=aid, user="nurse-2")
        assert reply.ok, reply.error
        assert reply.state == "resolved"
        assert ward.service.book.open_alerts() == []

        async with station(mosquitto, f"{prefix}/+/bed/+/alerts/+") as later:
            await later.sync(ward.link, prefix)
            assert [m for m in later.seen if m.topic == state_topic(prefix, aid)] == []


async def test_retained_state_for_late_subscribers_cleared_on_close(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    ward = make_ward(tmp_path, prefix)
    async with running(ward, mosquitto):
        [start] = await ward.service.handle([cand("FEVER", priority=Priority.MEDIUM)])
        aid = start.alert.id
        await ward.link.drained()
        async with station(mosquitto, f"{prefix}/+/bed/+/alerts/+") as late:
            seen = await late.wait_for(lambda m: m.topic == state_topic(prefix, aid))
            assert seen.retain
            body = seen.json()
            assert (body["id"], body["condition"], body["state"], body["priority"]) == (
                aid,
                "FEVER",
                "active",
                "medium",
            )
            assert body["message"] == "FEVER at b1"

            [end] = await ward.service.handle([cand("FEVER", present=False, priority=Priority.MEDIUM)])
            assert end.closed
            cleared = await late.wait_for(lambda m: m.topic == state_topic(prefix, aid) and not m.payload)
            assert not cleared.retain  # delivered live; the broker has dropped the retained state

        async with station(mosquitto, f"{prefix}/+/bed/+/alerts/+") as later:
            await later.sync(ward.link, prefix)
            assert [m for m in later.seen if m.topic.startswith(f"{prefix}/w1/")] == []
    assert [p.tags["phase"] for p in ward.points] == ["start", "end"]


async def test_escalation_timing_on_the_injected_clock(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    ward = make_ward(tmp_path, prefix)
    async with (
        station(mosquitto, f"{prefix}/+/escalations") as st,
        running(ward, mosquitto),
    ):
        [start] = await ward.service.handle([cand("HYPOTENSION")])
        await ward.clock.advance(299)
        await st.sync(ward.link, prefix)
        assert [m for m in st.seen if m.topic.endswith("/escalations")] == []

        await ward.clock.advance(1)
        first = await st.wait_for(lambda m: m.topic == f"{prefix}/w1/escalations")
        body = first.json()
        assert (body["id"], body["escalation_level"], body["phase"]) == (start.alert.id, 1, "overdue")
        assert body["updated"] == "2026-03-02T20:05:00Z"

        await ward.clock.advance(300)
        second = await st.wait_for(
            lambda m: m.topic.endswith("/escalations") and m.json()["escalation_level"] == 2
        )
        assert second.json()["updated"] == "2026-03-02T20:10:00Z"

        async with cli(mosquitto) as client:
            assert (await send_ack(client, prefix=prefix, alert_id=start.alert.id, user="nurse-3")).ok
        await ward.clock.advance(1200)
        await st.sync(ward.link, prefix)
        assert len([m for m in st.seen if m.topic.endswith("/escalations")]) == 2


async def test_restart_with_open_alerts(mosquitto: Mosquitto, prefix: str, tmp_path: Path) -> None:
    first = make_ward(tmp_path, prefix)
    async with running(first, mosquitto):
        [fever] = await first.service.handle([cand("FEVER", priority=Priority.MEDIUM)])
        [hypo] = await first.service.handle([cand("HYPOTENSION")])

    # The broker forgets retained messages too (no persistence): the new service re-publishes them.
    mosquitto.stop()
    mosquitto.start()

    commit_staged(first.writer)
    second = make_ward(tmp_path, prefix, clock=first.clock)
    assert [a.id for a in second.service.book.open_alerts()] == [fever.alert.id, hypo.alert.id]
    async with running(second, mosquitto):
        async with station(mosquitto, f"{prefix}/+/bed/+/alerts/+") as late:
            await late.sync(second.link, prefix)
            states = {m.topic: m.json()["state"] for m in late.seen if m.payload and "/alerts/" in m.topic}
            assert states == {
                state_topic(prefix, fever.alert.id): "active",
                state_topic(prefix, hypo.alert.id): "active",
            }
        async with cli(mosquitto) as client:
            reply = await send_ack(client, prefix=prefix, alert_id=hypo.alert.id, user="nurse-4")
        assert reply.ok, reply.error
        # Repeats after the restart are still the same alert; ids keep counting.
        assert await second.service.handle([cand("FEVER", priority=Priority.MEDIUM)]) == []
        [new] = await second.service.handle([cand("TACHYCARDIA", priority=Priority.MEDIUM)])
        assert new.alert.id == "b1-TACHYCARDIA-3"

    whats = [line["what"] for line in second.journal_lines()]
    assert whats == ["service_start", "start", "start", "service_start", "ack", "start"]


@pytest.mark.parametrize(
    ("mqtt", "args", "error"),
    [
        ('url = "mqtt://127.0.0.1:9"', (), "who acknowledges? Set mqtt.username"),
        (
            'url = "mqtt://127.0.0.1:9"\nusername = "station-icu"',
            ("--user", "station-2"),
            "--user 'station-2' is not the broker login of this config ('station-icu')",
        ),
    ],
)
def test_wardd_ack_will_not_act_for_someone_the_broker_does_not_know(
    tmp_path: Path, mqtt: str, args: tuple[str, ...], error: str
) -> None:
    """Refused before connecting: the author is the broker's user, never a typed name."""
    config = tmp_path / "station.toml"
    config.write_text(f"[mqtt]\n{mqtt}\n")
    result = wardd("ack", "--config", str(config), "b1-FEVER-1", "--by", "A. Martin", *args)
    assert result.returncode == 2, result.stderr
    assert error in result.stderr
    assert "Traceback" not in result.stderr
