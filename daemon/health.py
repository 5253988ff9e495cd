"""The daemon's own health, for the people and machines that must know when it is down.

- **Status topic** (``topics.daemon_status``, retained): ``online`` with the time of the
  last heartbeat, renewed every ``health.heartbeat_s``; ``offline`` with the reason
  ``stopped`` at a clean stop; and ``offline`` with ``connection lost`` from the broker
  itself, the MQTT last will, when the connection drops without a goodbye (a crash,
  ``kill -9``, a power cut, or an event loop that stopped turning and so stopped
  answering the broker's keep-alive). A station that sees the heartbeat grow old knows
  the daemon is stuck even while its connection holds.
- **HTTP probes** (``health.port``, served by ``daemon.web.probes``): ``/healthz``
  (alive: the event loop answers and no input has been in processing for
  ``stall_after_s``), ``/readyz`` (recovered, broker connected, store writable),
  ``/metrics`` (Prometheus text format, prometheus-client).
- **systemd** (``Type=notify``): ``READY=1`` once recovered and serving, ``WATCHDOG=1``
  every half ``WatchdogSec`` while not stalled, ``STOPPING=1`` at shutdown, through
  ``$NOTIFY_SOCKET`` (the protocol is one datagram per message: sd_notify(3)).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from daemon import __version__
from daemon.clock import Clock
from daemon.config import HealthConfig
from daemon.links.mqtt import MqttLink, Outgoing
from daemon.metrics import Counters
from daemon.timefmt import iso

log = logging.getLogger(__name__)

OFFLINE_LOST = "connection lost"
OFFLINE_STOPPED = "stopped"
HEARTBEAT_POLL_S = 1.0  # how soon a new connection gets its "online", in real seconds


def status_payload(
    state: str, instance: str, *, at: datetime | None = None, heartbeat_s: float, reason: str = ""
) -> bytes:
    """The retained status of one instance: ``online`` (with ``at``) or ``offline`` (with ``reason``)."""
    body: dict[str, Any] = {"state": state, "instance": instance, "version": __version__}
    if at is not None:
        body["at"] = iso(at)
        body["heartbeat_s"] = heartbeat_s
    if reason:
        body["reason"] = reason
    return json.dumps(body, separators=(",", ":")).encode()


def sd_notify(message: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``message`` to systemd (``$NOTIFY_SOCKET``); ``False`` when not run by systemd.

    A failure to send is logged, never raised: the daemon's work matters more than
    telling systemd about it (a missed watchdog ping makes systemd act anyway).
    """
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("systemd notification %r not sent to %s: %s", message, address, exc)
        return False
    return True


def watchdog_interval_s(environ: Mapping[str, str] = os.environ) -> float | None:
    """Half systemd's ``WatchdogSec`` (``$WATCHDOG_USEC``), when it asks this process for pings."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class NotifyRelay:
    """What a supervisor tells systemd about its workers (``daemon.supervisor``).

    ``READY=1`` once every worker has said it; ``WATCHDOG=1`` each time every worker
    has pinged since the last one, so that one stalled worker gets the whole daemon
    restarted. The rest of what workers say (their status, their own ``STOPPING=1``)
    stays with the supervisor, which says ``STOPPING=1`` itself when it passes a stop on.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._ready: set[int] = set()
        self._pinged: set[int] = set()

    def heard(self, worker: int, message: str) -> list[str]:
        """What to send systemd now that worker ``worker`` sent ``message`` (sd_notify(3) lines)."""
        said = {key: value for key, _, value in (line.partition("=") for line in message.splitlines())}
        out: list[str] = []
        if said.get("READY") == "1" and worker not in self._ready:
            self._ready.add(worker)
            if len(self._ready) == self.workers:
                out.append(f"READY=1\nSTATUS={self.workers} workers ready")
        if said.get("WATCHDOG") == "1":
            self._pinged.add(worker)
            if len(self._pinged) == self.workers:
                self._pinged.clear()
                out.append("WATCHDOG=1")
        return out


@dataclass(frozen=True, slots=True)
class Readiness:
    """What ``/readyz`` checks."""

    recovered: bool
    broker_connected: bool
    store_writable: bool

    @property
    def ready(self) -> bool:
        """Every check passes."""
        return self.recovered and self.broker_connected and self.store_writable


@dataclass(frozen=True, slots=True)
class Gauge:
    """One metric family read at scrape time: ``samples`` maps label values to a value."""

    name: str
    help: str
    samples: Mapping[tuple[str, ...], float]
    labels: tuple[str, ...] = ()
    counter: bool = False  # a total that only grows (exposed with ``_total``)


LATENCY_BOUNDS_S = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Bucket bounds of the latency histograms: fine under 10 ms, where an alert is meant to
leave, coarse above it, where what counts is that it is seen at all."""


class Histogram:
    """Observations counted by bucket, for a Prometheus histogram family with one label.

    ``observe`` is a bisection and two additions (it runs on the event loop); the
    cumulative counts Prometheus wants are made at scrape time (``buckets``).
    """

    def __init__(self, name: str, help_text: str, label: str, bounds: Sequence[float]) -> None:
        self.name = name
        self.help = help_text
        self.label = label
        self.bounds = tuple(bounds)
        self._series: dict[str, tuple[list[int], list[float]]] = {}  # value -> (counts, [sum])

    def observe(self, value: str, amount: float) -> None:
        """Count ``amount`` under label value ``value``."""
        series = self._series.get(value)
        if series is None:
            series = self._series[value] = ([0] * (len(self.bounds) + 1), [0.0])
        counts, total = series
        counts[bisect.bisect_left(self.bounds, amount)] += 1
        total[0] += amount

    def buckets(self) -> dict[str, tuple[list[tuple[str, int]], float]]:
        """Per label value: cumulative counts by upper bound (``+Inf`` last), and the sum."""
        out: dict[str, tuple[list[tuple[str, int]], float]] = {}
        for value, (counts, total) in self._series.items():
            running, cumulative = 0, []
            for bound, count in zip([*map(repr, self.bounds), "+Inf"], counts, strict=True):
                running += count
                cumulative.append((bound, running))
            out[value] = (cumulative, total[0])
        return out


class Probes(Protocol):
    """What the health parts read from the pipeline (``daemon.app.Pipeline`` implements it)."""

    def readiness(self) -> Readiness:
        """The checks of ``/readyz``."""
        ...

    def stalled_s(self) -> float:
        """How long the input in processing has been (0 when none is)."""
        ...

    def gauges(self) -> Sequence[Gauge | Histogram]:
        """The pipeline's own metrics, beside the counters."""
        ...


def last_will(settings: HealthConfig, topic: str, instance: str) -> Outgoing:
    """What the broker publishes for us when our connection drops without a goodbye."""
    payload = status_payload("offline", instance, heartbeat_s=settings.heartbeat_s, reason=OFFLINE_LOST)
    return Outgoing(topic, payload, qos=1, retain=True)


class Heartbeat:
    """The retained ``online`` status, renewed every ``heartbeat_s``; ``offline`` at the end."""

    name = "health.heartbeat"

    def __init__(
        self, settings: HealthConfig, link: MqttLink, topic: str, instance: str, clock: Clock
    ) -> None:
        self._settings = settings
        self._link = link
        self._topic = topic
        self._instance = instance
        self._clock = clock

    async def run(self) -> None:
        """Beat until cancelled; then say ``offline`` (queued: the shutdown drains the link)."""
        loop = asyncio.get_running_loop()
        last_session, last_beat = -1, float("-inf")
        try:
            while True:
                # Real time: an accelerated scenario clock must not flood the broker.
                await asyncio.sleep(HEARTBEAT_POLL_S)
                if not self._link.connected.is_set():
                    continue  # a heartbeat queued while down would arrive stale
                due = loop.time() - last_beat >= self._settings.heartbeat_s
                if self._link.sessions != last_session or due:
                    last_session, last_beat = self._link.sessions, loop.time()
                    payload = status_payload(
                        "online", self._instance, at=self._clock.now(), heartbeat_s=self._settings.heartbeat_s
                    )
                    self._link.enqueue(Outgoing(self._topic, payload, qos=1, retain=True))
        finally:
            payload = status_payload(
                "offline", self._instance, heartbeat_s=self._settings.heartbeat_s, reason=OFFLINE_STOPPED
            )
            self._link.enqueue(Outgoing(self._topic, payload, qos=1, retain=True))


class Watchdog:
    """Feeds systemd's watchdog while the pipeline is not stalled (``WatchdogSec``)."""

    name = "systemd.watchdog"

    def __init__(self, interval_s: float, probes: Probes, stall_after_s: float, counters: Counters) -> None:
        self._interval_s = interval_s
        self._probes = probes
        self._stall_after_s = stall_after_s
        self._counters = counters

    async def run(self) -> None:
        """Ping until cancelled (real time: systemd's clock)."""
        stalled = False
        while True:
            if self._probes.stalled_s() < self._stall_after_s:
                if stalled:
                    log.info("pipeline moving again: systemd watchdog fed again")
                stalled = False
                sd_notify("WATCHDOG=1")
            elif not stalled:
                stalled = True
                self._counters.inc("health.stalled")
                log.error(
                    "an input has been in processing for %.0f s: systemd watchdog no longer fed",
                    self._probes.stalled_s(),
                )
            await asyncio.sleep(self._interval_s)
