"""Load and fault helpers for the no-loss tests.

- ``write_load_config``: a real config file for a ward of N beds, stored in influxd (v1);
- ``WarddProcess``: ``wardd run`` as a real subprocess that a test starts, SIGKILLs,
  SIGTERMs and restarts;
- ``VitalsPublisher``: N beds × R Hz (or as fast as possible) of realistic vitals
  payloads over paho-mqtt at QoS 1, each with a measurement time unique per bed; a
  message counts as *sent* only once the broker has confirmed it (PUBACK);
- ``stored_vitals`` / ``tally``: what influxd holds per (bed, measurement time), so
  losses and duplicates are both computed; ``settle`` polls until that stops rising;
- ``daemon_counters``: the daemon's ``wardd_counters`` summed over its runs;
- ``retained_alerts`` / ``status_open_alerts``: the two views of open alerts that must
  agree after a restart.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from daemon.ids import ward_subject
from tests.helpers import QUICK_FEVER, write_ward_config
from tests.servers import Influxd

WARD = "haem"
DATABASE = "wardd"
FULL_ENV = "WARDD_FULL_NOLOSS"
"""Set to 1 to run the no-loss tests at their full sizes (``scripts/no-loss-full``)."""


def poll_until(predicate: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.1) -> None:
    """Wait until ``predicate()`` holds (an outside process's state, polled), or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def bed_ids(count: int) -> list[str]:
    """``["1", "2", ...]``."""
    return [str(i) for i in range(1, count + 1)]


def write_load_config(
    path: Path, *, mqtt_url: str, prefix: str, influx_url: str, beds: Sequence[str]
) -> Path:
    """The config file of ward ``WARD`` with ``beds``, storing in influxd ``DATABASE`` (v1).

    FEVER opens within seconds (``QUICK_FEVER``), so that febrile beds open alerts while
    the test runs; telemetry never goes stale, so that the end of a test's publishing does
    not open alerts while the test compares alert views.
    """
    return write_ward_config(
        path,
        mqtt_url=mqtt_url,
        prefix=prefix,
        ward=WARD,
        beds=beds,
        daemon="tick_interval_s = 0.5",
        mqtt="reconnect_min_s = 0.1\nreconnect_max_s = 1.0",
        influx=f'api = "v1"\nurl = "{influx_url}"\ndatabase = "{DATABASE}"\nflush_interval_s = 0.2\ntimeout_s = 2.0',
        tables=QUICK_FEVER,
    )


class WarddProcess:
    """``wardd run --config FILE`` as a real subprocess, restartable; output appended to ``log``."""

    def __init__(self, config: Path, log: Path, *, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log = log
        self.env = env or {}  # added to the test's own environment
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start a new process (the previous one must have ended)."""
        assert not self.alive, "wardd is already running"
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts + 1} at {datetime.now(UTC).isoformat()} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**_environ(), "PYTHONUNBUFFERED": "1", **self.env},
            )
        self.starts += 1

    @property
    def alive(self) -> bool:
        """Whether the current process is running."""
        return self.proc is not None and self.proc.poll() is None

    def wait_connected(self, timeout_s: float = 30.0) -> None:
        """Block until the current process has subscribed (it logs ``MQTT connected``)."""
        poll_until(
            lambda: self.output().count("MQTT connected") >= self.starts or not self.alive,
            timeout_s,
            "wardd's MQTT connection",
        )
        assert self.alive, f"wardd exited at start:\n{self.output()[-3000:]}"

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs at all."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, then wait for the orderly shutdown; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def close(self) -> None:
        """Kill whatever still runs (test teardown)."""
        if self.alive:
            self.kill()

    def output(self) -> str:
        """Everything every run has logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _environ() -> dict[str, str]:
    import os  # noqa: PLC0415 -- only here, for the child's environment

    return dict(os.environ)


@contextlib.contextmanager
def wardd_process(config: Path, log: Path) -> Iterator[WarddProcess]:
    """A started, subscribed ``WarddProcess``; killed at the end if still running."""
    daemon = WarddProcess(config, log)
    daemon.start()
    try:
        daemon.wait_connected()
        yield daemon
    finally:
        daemon.close()


@dataclass(frozen=True, slots=True, order=True)
class Sample:
    """One vitals message's identity: its bed and its measurement time (ns since the epoch)."""

    bed: str
    time_ns: int


def iso_us(when: datetime) -> str:
    """RFC 3339 with microseconds and ``Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def epoch_ns(when: datetime) -> int:
    """Nanoseconds since the epoch, exactly (microsecond resolution)."""
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def vitals_payload(bed: str, when: datetime, k: int, *, febrile: bool) -> bytes:
    """A realistic monitor message (~450 bytes, 6 observations) for ``bed`` at ``when``."""
    temp_c = 38.6 if febrile else 36.6 + 0.1 * (k % 5)
    obs = [
        {"code": "MDC_TEMP_BODY", "value": round(temp_c, 1), "unit": "Cel"},
        {"code": "MDC_PRESS_BLD_NONINV_SYS", "value": 112 + k % 9, "unit": "mm[Hg]"},
        {"code": "MDC_PRESS_BLD_NONINV_DIA", "value": 70 + k % 5, "unit": "mm[Hg]"},
        {"code": "MDC_ECG_HEART_RATE", "value": 72 + k % 11, "unit": "/min"},
        {"code": "MDC_PULS_OXIM_SAT_O2", "value": 96 + k % 3, "unit": "%"},
        {"code": "MDC_RESP_RATE", "value": 14 + k % 4, "unit": "/min"},
    ]
    return json.dumps({"ts": iso_us(when), "device": f"monitor-{bed}", "obs": obs}).encode()


MAX_UNCONFIRMED = 30_000
"""Unconfirmed QoS 1 publishes a publisher keeps at most (packet ids are 16-bit)."""


def connect(url: str, client_id: str = "") -> paho.Client:
    """A connected paho client (network loop in its own thread), clean session."""
    host, port = url.removeprefix("mqtt://").split(":")
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{uuid.uuid4().hex[:12]}")
    client.max_inflight_messages_set(1000)
    connected = threading.Event()
    client.on_connect = lambda _c, _u, _f, _rc, _p: connected.set()
    client.connect(host, int(port), keepalive=30)
    client.loop_start()
    if not connected.wait(10):
        client.loop_stop()
        raise AssertionError(f"could not connect to {url}")
    return client


@dataclass
class _Published:
    sample: Sample
    info: paho.MQTTMessageInfo
    at_s: float  # time.monotonic() when handed to paho


@dataclass
class VitalsPublisher:
    """Publishes ``per_bed`` vitals messages for each bed, QoS 1, in a thread.

    Message ``k`` of every bed is measured at ``first_time + k × step_s``, so every
    (bed, time) is unique. With ``rate_hz`` the beds publish in rounds paced at that
    rate on the monotonic clock (a monitor's own cadence); without it, as fast as paho
    takes them. ``sent`` holds only the messages the broker acknowledged (PUBACK).
    """

    url: str
    prefix: str
    beds: Sequence[str]
    per_bed: int
    first_time: datetime
    step_s: float
    rate_hz: float | None = None
    febrile: frozenset[str] = frozenset()
    confirm_timeout_s: float = 120.0
    _published: list[_Published] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None
    _done_publishing: threading.Event = field(default_factory=threading.Event)
    started_s: float | None = None
    """``time.monotonic()`` when round 0 was published; round ``k`` is due ``k / rate_hz`` later."""

    def start(self) -> VitalsPublisher:
        """Start publishing in the background."""
        self._thread = threading.Thread(target=self._run, name="test.vitals-publisher", daemon=True)
        self._thread.start()
        return self

    def sleep_until_just_after_round(self, not_before_s: float, rng: random.Random) -> float:
        """Sleep until 20-150 ms after the first paced round due at or after ``not_before_s``.

        That is while the round's messages are inside the daemon (decoded, queued,
        buffered for storage), the instant a crash costs most; the exact offset is random.
        Returns the instant, in ``time.monotonic()``.
        """
        assert self.rate_hz is not None
        poll_until(lambda: self.started_s is not None, 30, "the publisher's first round")
        assert self.started_s is not None
        period_s = 1.0 / self.rate_hz
        rounds = max(0, math.ceil((not_before_s - self.started_s) / period_s))
        at_s = self.started_s + rounds * period_s + rng.uniform(0.02, min(0.15, period_s * 0.9))
        time.sleep(max(0.0, at_s - time.monotonic()))
        return at_s

    def join(self, timeout_s: float = 600.0) -> None:
        """Wait until every message is handed over and confirmed (or the confirmation timeout)."""
        assert self._thread is not None
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "publisher did not finish"
        if self._error is not None:
            raise AssertionError(f"publisher failed: {self._error!r}") from self._error

    @property
    def done_publishing(self) -> bool:
        """Whether every message has been handed to paho (confirmations may still be due)."""
        return self._done_publishing.is_set()

    @property
    def handed_over(self) -> int:
        """Messages handed to paho so far."""
        return len(self._published)

    @property
    def sent(self) -> set[Sample]:
        """Messages the broker has confirmed (PUBACK received)."""
        return {p.sample for p in list(self._published) if p.info.is_published()}

    def sent_between(self, start_s: float, end_s: float) -> int:
        """Confirmed messages handed over between two ``time.monotonic()`` instants."""
        return sum(1 for p in list(self._published) if start_s <= p.at_s < end_s and p.info.is_published())

    def _run(self) -> None:
        try:
            client = connect(self.url)
        except BaseException as exc:  # reported by join()
            self._error = exc
            self._done_publishing.set()
            return
        try:
            start_s = self.started_s = time.monotonic()
            oldest = 0  # the first publish not yet known to be confirmed
            for k in range(self.per_bed):
                if self.rate_hz is not None:
                    delay_s = start_s + k / self.rate_hz - time.monotonic()
                    if delay_s > 0:
                        time.sleep(delay_s)  # a monitor's cadence, not a wait for a condition
                when = self.first_time + timedelta(microseconds=round(k * self.step_s * 1_000_000))
                for bed in self.beds:
                    # Packet ids are 16-bit: paho refuses a publish whose id is still
                    # outstanding, so keep fewer than 65,535 unconfirmed.
                    while len(self._published) - oldest >= MAX_UNCONFIRMED:
                        with contextlib.suppress(RuntimeError, ValueError):
                            self._published[oldest].info.wait_for_publish(self.confirm_timeout_s)
                        oldest += 1
                    payload = vitals_payload(bed, when, k, febrile=bed in self.febrile)
                    topic = f"{self.prefix}/{WARD}/bed/{bed}/vitals"
                    info = client.publish(topic, payload, qos=1)
                    self._published.append(_Published(Sample(bed, epoch_ns(when)), info, time.monotonic()))
            self._done_publishing.set()
            deadline = time.monotonic() + self.confirm_timeout_s
            for published in self._published:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with contextlib.suppress(RuntimeError, ValueError):
                    published.info.wait_for_publish(remaining)
        except BaseException as exc:  # reported by join()
            self._error = exc
        finally:
            self._done_publishing.set()
            client.disconnect()
            client.loop_stop()


def stored_rows(influx: Influxd, beds: Sequence[str]) -> list[dict[str, Any]]:
    """Every ``vitals`` row of ward ``WARD`` for ``beds`` (all devices), time in ns."""
    rows: list[dict[str, Any]] = []
    for bed in beds:
        rows.extend(
            influx.query(
                DATABASE, f"SELECT * FROM vitals WHERE ward = '{WARD}' AND bed = '{bed}'", epoch="ns"
            )
        )
    return rows


def stored_vitals(
    influx: Influxd, beds: Sequence[str], device: str | None = None
) -> collections.Counter[Sample]:
    """Rows per (bed, measurement time) in influxd; more than 1 is a duplicate in another series.

    ``device`` restricts the count to one device's rows (``None``: every device).
    """
    counts: collections.Counter[Sample] = collections.Counter()
    for row in stored_rows(influx, beds):
        if device is None or row.get("device") == device:
            counts[Sample(str(row["bed"]), int(row["time"]))] += 1
    return counts


@dataclass(frozen=True, slots=True, repr=False)
class Tally:
    """What went in against what came out; ``str`` is the failure message."""

    sent: int  # confirmed by the broker
    stored: int  # distinct (bed, time) of ``sent`` found in influxd
    lost: int  # sent - stored
    duplicated: int  # rows for one (bed, time) beyond the first
    unconfirmed_stored: int  # stored but never confirmed to the publisher (allowed by QoS 1)
    daemon_accepted: int | None = None  # the daemon's own count of accepted vitals, at least
    note: str = ""

    @property
    def redelivered(self) -> int | None:
        """Vitals the daemon accepted beyond one per distinct stored point (re-deliveries)."""
        if self.daemon_accepted is None:
            return None
        return max(0, self.daemon_accepted - self.stored - self.unconfirmed_stored)

    def __str__(self) -> str:
        accepted = "?" if self.daemon_accepted is None else str(self.daemon_accepted)
        return (
            f"sent={self.sent} stored={self.stored} lost={self.lost} duplicated={self.duplicated} "
            f"(unconfirmed_stored={self.unconfirmed_stored}, daemon_accepted>={accepted}, "
            f"redelivered={self.redelivered}) {self.note}"
        ).strip()

    __repr__ = __str__


def tally(
    sent: set[Sample], stored: collections.Counter[Sample], daemon_accepted: int | None = None, note: str = ""
) -> Tally:
    """Compare confirmed messages with stored rows."""
    found = sent & set(stored)
    return Tally(
        sent=len(sent),
        stored=len(found),
        lost=len(sent - found),
        duplicated=sum(n - 1 for n in stored.values() if n > 1),
        unconfirmed_stored=len(set(stored) - sent),
        daemon_accepted=daemon_accepted,
        note=note,
    )


def settle(
    read: Callable[[], int],
    target: int,
    *,
    quiet_s: float = 60.0,
    timeout_s: float = 180.0,
    every_s: float = 2.0,
) -> int:
    """Poll ``read()`` until it reaches ``target`` or stops rising for ``quiet_s`` (bounded); the last value.

    ``quiet_s`` is generous: a daemon working through a backlog on a loaded 2-core machine
    (or through inputs that store nothing, such as refused ones) may store nothing for a while.
    """
    deadline = time.monotonic() + timeout_s
    value = read()
    last_change = time.monotonic()
    while value < target and time.monotonic() < deadline and time.monotonic() - last_change < quiet_s:
        time.sleep(every_s)
        new = read()
        if new != value:
            value, last_change = new, time.monotonic()
    return value


def stored_count(influx: Influxd, beds: Sequence[str]) -> int:
    """Distinct (bed, time) vitals of ``beds`` in influxd, counted by the server (cheap to poll)."""
    wanted = "|".join(re.escape(bed) for bed in beds)
    rows = influx.query(
        DATABASE, f"SELECT COUNT(\"temp_c\") FROM vitals WHERE ward = '{WARD}' AND bed =~ /^({wanted})$/"
    )
    return int(rows[0]["count"]) if rows else 0


def settle_stored(influx: Influxd, beds: Sequence[str], sent: set[Sample], **kwargs: float) -> int:
    """``settle`` on the number of stored samples (polled cheaply; the exact tally comes after).

    Polling the whole series every time would load influxd, and so the daemon, on the
    machine under test; the server's count rises with every point the daemon stores.
    """
    return settle(lambda: stored_count(influx, beds), len(sent), **kwargs)


def daemon_counters(influx: Influxd) -> dict[tuple[str, str], int]:
    """``wardd_counters`` per (name, reason), summed over the daemon's runs.

    Each run counts from 0 and exports every 60 s and at an orderly shutdown; a value
    lower than the one before marks a new run, whose count is added to the total. A run
    killed before it exported adds nothing, so each total is a lower bound.
    """
    rows = influx.query(DATABASE, 'SELECT "count" FROM wardd_counters GROUP BY "name", "reason"', epoch="ns")
    series: dict[tuple[str, str], list[tuple[int, int]]] = collections.defaultdict(list)
    for row in rows:
        series[(str(row["name"]), str(row["reason"]))].append((int(row["time"]), int(row["count"])))
    totals: dict[tuple[str, str], int] = {}
    for key, points in series.items():
        total, previous = 0, 0
        for _, value in sorted(points):
            if value < previous:
                total += previous
            previous = value
        totals[key] = total + previous
    return totals


def counter_total(counters: dict[tuple[str, str], int], name: str) -> int:
    """One counter summed over its reasons."""
    return sum(v for (n, _), v in counters.items() if n == name)


@dataclass(frozen=True, slots=True, order=True)
class OpenAlert:
    """An open alert as both views show it."""

    bed: str
    id: str
    condition: str
    state: str


def retained_alerts(url: str, prefix: str, timeout_s: float = 15.0) -> set[OpenAlert]:
    """The non-empty retained alert states under ``<prefix>/<WARD>/bed/+/alerts/+``.

    The broker sends retained messages on subscription, before anything published
    after it; a marker published after the subscription is acknowledged therefore
    arrives after the last retained state.
    """
    marker = f"{prefix}/test-marker/{uuid.uuid4().hex}"
    found: set[OpenAlert] = set()
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(_client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        if message.topic == marker:
            done.set()
        elif message.retain and message.payload:
            body = json.loads(message.payload)
            found.add(
                OpenAlert(str(body["bed"]), str(body["id"]), str(body["condition"]), str(body["state"]))
            )

    client = connect(url)
    try:
        client.on_message = on_message
        client.on_subscribe = lambda _c, _u, _m, _rc, _p: subscribed.set()
        client.subscribe([(f"{prefix}/{WARD}/bed/+/alerts/+", 1), (marker, 1)])
        assert subscribed.wait(timeout_s), "no SUBACK"
        client.publish(marker, b"end", qos=1)
        assert done.wait(timeout_s), "the marker after the retained alert states never came"
    finally:
        client.disconnect()
        client.loop_stop()
    return found


_BED_LINE = re.compile(r"^(?P<ward>[^\s/]+)/(?P<bed>\S+): protocol ")
_WARD_LINE = re.compile(r"^ward (?P<ward>\S+): open alerts of the ward itself")
_ALERT_LINE = re.compile(
    r"^\s+(?:LOW|MEDIUM|HIGH)\s+(?P<condition>[A-Z0-9_]+) \[(?P<state>[a-z_]+)\] id (?P<id>\S+) since "
)


def status_open_alerts(config: Path) -> tuple[set[OpenAlert], str]:
    """The open alerts ``wardd status --config`` prints, and its whole output."""
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found: set[OpenAlert] = set()
    bed = ""
    for line in result.stdout.splitlines():
        if header := _BED_LINE.match(line):
            bed = header["bed"]
        elif ward := _WARD_LINE.match(line):
            bed = ward_subject(ward["ward"])  # a ward's own alerts, under the ward's subject
        elif alert := _ALERT_LINE.match(line):
            found.add(OpenAlert(bed, alert["id"], alert["condition"], alert["state"]))
    return found, result.stdout
