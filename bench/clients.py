"""The MQTT client for the daemon's hot path, chosen by measurement: ``python -m bench.clients``.

Each client drains the same queue: ``--messages`` QoS 1 messages of the full vitals
payload, published while its persistent session was offline, on a private mosquitto
from the shipped configuration (1,000 messages in flight). The clock runs from the
connection until the last message is acknowledged, in the way the daemon needs it:
the PUBACK leaves only after an asynchronous handler has returned (the daemon's
handler returns once the message is durable in its store). Rounds alternate the
clients; the table gives each one's median and its ratio to aiomqtt.

- ``aiomqtt``: aiomqtt over paho-mqtt, paho's ``manual_ack`` (the daemon's client before gmqtt);
- ``paho-thread``: paho-mqtt's own network thread, acknowledging in its callback
  (no asyncio: the ceiling of paho itself);
- ``gmqtt``: gmqtt with ``optimistic_acknowledgement=False`` (the PUBACK is sent when the
  handler's coroutine finishes);
- ``link``: the daemon's own ``MqttLink`` (whichever client it is built on), its handler
  handing each ``ack`` to a stand-in for the daemon's group commit, which calls the acks
  of every message handed in since its last pass on the next pass of the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.broker import broker
from daemon.clock import SystemClock
from daemon.config import MqttConfig
from daemon.links.mqtt import Ack, MqttLink
from daemon.metrics import Counters
from tests.servers import Mosquitto
from tests.ward_load import vitals_payload

TOPIC = "bench/w/bed/{bed}/vitals"
CLIENTS = ("aiomqtt", "paho-thread", "gmqtt", "link")


def _address(server: Mosquitto) -> tuple[str, int]:
    host, port = server.url.removeprefix("mqtt://").split(":")
    return host, int(port)


def _paho(client_id: str, clean: bool) -> paho.Client:
    return paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)


def _open_session(server: Mosquitto, client_id: str) -> None:
    """Connect once, subscribe QoS 1, leave: the broker then queues for ``client_id``."""
    host, port = _address(server)
    client = _paho(client_id, clean=False)
    done = threading.Event()
    client.on_subscribe = lambda *_: done.set()
    client.connect(host, port)
    client.loop_start()
    client.subscribe(TOPIC.format(bed="+"), qos=1)
    if not done.wait(10):
        raise RuntimeError("no SUBACK")
    client.disconnect()
    client.loop_stop()


def _publish(server: Mosquitto, messages: int, beds: int) -> None:
    host, port = _address(server)
    client = _paho("bench-publisher", clean=True)
    client.max_inflight_messages_set(1000)
    client.connect(host, port)
    client.loop_start()
    start = datetime.now(UTC) - timedelta(seconds=messages // beds + 10)
    infos = []
    for k in range(messages):
        bed = str(k % beds + 1)
        payload = vitals_payload(bed, start + timedelta(seconds=k // beds), k, febrile=False)
        infos.append(client.publish(TOPIC.format(bed=bed), payload, qos=1))
        if len(infos) >= 1000:
            for info in infos:
                info.wait_for_publish(30)
            infos.clear()
    for info in infos:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


def _decode(payload: bytes | bytearray) -> None:
    json.loads(payload)


async def _aiomqtt(server: Mosquitto, client_id: str, messages: int) -> float:
    host, port = _address(server)
    client = aiomqtt.Client(host, port, identifier=client_id, clean_session=False)
    core = client._client  # paho's client, for manual acknowledgement (the daemon's way before gmqtt)
    core.manual_ack_set(True)
    received = 0
    async with client:
        start = time.perf_counter()
        async for message in client.messages:
            payload = message.payload
            assert isinstance(payload, bytes | bytearray)
            _decode(bytes(payload))
            await asyncio.sleep(0)  # the handler's await (the daemon awaits its commit)
            core.ack(message.mid, message.qos)
            received += 1
            if received == messages:
                return time.perf_counter() - start
    raise RuntimeError("the queue ended early")


def _paho_thread(server: Mosquitto, client_id: str, messages: int) -> float:
    host, port = _address(server)
    client = _paho(client_id, clean=False)
    client.manual_ack_set(True)
    done = threading.Event()
    count = [0]

    def on_message(cl: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        _decode(message.payload)
        cl.ack(message.mid, message.qos)
        count[0] += 1
        if count[0] == messages:
            done.set()

    client.on_message = on_message
    start = time.perf_counter()
    client.connect(host, port)
    client.loop_start()
    if not done.wait(600):
        raise RuntimeError("the queue was not drained")
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return elapsed


async def _gmqtt(server: Mosquitto, client_id: str, messages: int) -> float:
    import gmqtt  # noqa: PLC0415 -- imported only by the runner that measures it

    host, port = _address(server)
    done = asyncio.Event()
    count = 0

    async def on_message(_client: Any, _topic: str, payload: bytes, _qos: int, _props: Any) -> int:
        nonlocal count
        _decode(payload)
        await asyncio.sleep(0)
        count += 1
        if count == messages:
            done.set()
        return 0  # success: the PUBACK goes now

    client = gmqtt.Client(client_id, clean_session=False, optimistic_acknowledgement=False)
    client.on_message = on_message
    start = time.perf_counter()
    await client.connect(host, port, version=gmqtt.constants.MQTTv311)
    await asyncio.wait_for(done.wait(), 600)
    elapsed = time.perf_counter() - start
    await client.disconnect()
    return elapsed


async def _link(server: Mosquitto, client_id: str, messages: int) -> float:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    count = 0
    uncommitted: list[Ack] = []

    def commit() -> None:
        # The daemon's group commit: every message handed in since the last one is
        # acknowledged together, after the handler returned (here on the next loop pass).
        nonlocal count
        acks = uncommitted.copy()
        uncommitted.clear()
        for ack in acks:
            ack()
        count += len(acks)
        if count >= messages:
            done.set()

    async def on_message(_topic: str, payload: bytes, ack: Ack) -> None:
        _decode(payload)
        if not uncommitted:
            loop.call_soon(commit)
        uncommitted.append(ack)

    link = MqttLink(
        MqttConfig(url=server.url, client_id=client_id),
        password=None,
        subscriptions=[TOPIC.format(bed="+")],
        on_message=on_message,
        counters=Counters(),
        clock=SystemClock(),
    )
    start = time.perf_counter()
    task = asyncio.create_task(link.run(), name="bench.link")
    await asyncio.wait_for(done.wait(), 600)
    elapsed = time.perf_counter() - start
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return elapsed


RUNNERS: dict[str, Callable[[Mosquitto, str, int], float]] = {
    "aiomqtt": lambda s, c, n: asyncio.run(_aiomqtt(s, c, n)),
    "paho-thread": _paho_thread,
    "gmqtt": lambda s, c, n: asyncio.run(_gmqtt(s, c, n)),
    "link": lambda s, c, n: asyncio.run(_link(s, c, n)),
}


def measure(name: str, messages: int, beds: int, workdir: Path) -> tuple[float, float]:
    """One client draining one queue of ``messages``: messages per second, and the
    client's CPU time per message in µs (this process's, which runs nothing else then:
    the steadier figure on a machine shared with other work)."""
    with broker(workdir) as server:
        client_id = f"bench-{name}"
        _open_session(server, client_id)
        _publish(server, messages, beds)
        cpu_s = time.process_time()
        elapsed = RUNNERS[name](server, client_id, messages)
        cpu_s = time.process_time() - cpu_s
    return messages / elapsed, cpu_s / messages * 1e6


def main(argv: list[str] | None = None) -> None:
    """Measure every client, alternating, and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.clients", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--beds", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--clients", default=",".join(CLIENTS), help="comma-separated, of: " + ", ".join(CLIENTS)
    )
    args = parser.parse_args(argv)
    clients = tuple(name for name in CLIENTS if name in args.clients.split(","))
    rates: dict[str, list[float]] = {name: [] for name in clients}
    cpus: dict[str, list[float]] = {name: [] for name in clients}
    with tempfile.TemporaryDirectory(prefix="wardd-clients-") as tmp:
        for round_ in range(args.rounds):
            order = clients[round_ % len(clients) :] + clients[: round_ % len(clients)]
            for name in order:
                rate, cpu_us = measure(name, args.messages, args.beds, Path(tmp) / f"{round_}-{name}")
                rates[name].append(rate)
                cpus[name].append(cpu_us)
    base = statistics.median(rates[clients[0]])
    print(
        f"{args.messages:,} queued QoS 1 vitals messages, PUBACK after an async handler; median of {args.rounds}"
    )
    for name in clients:
        median = statistics.median(rates[name])
        print(
            f"  {name:12} {median:9,.0f} msg/s   {median / base:4.1f}x {clients[0]}   "
            f"{statistics.median(cpus[name]):5.1f} µs CPU/msg   rounds: "
            + ", ".join(f"{r:,.0f}" for r in rates[name])
        )


if __name__ == "__main__":
    main()
