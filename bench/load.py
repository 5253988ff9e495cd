"""Load on the broker: vitals payloads, a burst publisher, a paced publisher and an alert observer.

Every system under test reads the same topics (``<prefix>/<ward>/bed/<bed>/vitals``)
and answers on the same ones (``<prefix>/<ward>/bed/<bed>/alerts``) with a JSON alert
that names its ``bed`` and the measurement time of the sample that triggered it
(wardd: ``since`` of a ``FEVER`` ``start``; the baselines copy the sample's ``ts``).
So one observer measures all three, and a fever sample is both a probe (is the
system ready?) and a marker (it has processed everything before it: each system
handles one session's messages in order).

All clients here are paho-mqtt with its own network thread, QoS 1, 1,000 publishes in
flight; a message counts as published once the broker has acknowledged it.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

WARD = "haem"
FEVER_C = 39.1
NORMAL_C = 36.8
INFLIGHT = 1000


@dataclass(frozen=True)
class Ward:
    """The topics of one ward of ``beds`` beds (ids ``"1"`` ... ``"N"``) under ``prefix``."""

    prefix: str
    beds: int

    @property
    def bed_ids(self) -> list[str]:
        """``["1", "2", ...]``."""
        return [str(i) for i in range(1, self.beds + 1)]

    def vitals_topic(self, bed: str) -> str:
        """Where a bed's monitor publishes."""
        return f"{self.prefix}/{WARD}/bed/{bed}/vitals"

    @property
    def vitals_filter(self) -> str:
        """Every bed's vitals."""
        return f"{self.prefix}/+/bed/+/vitals"

    @property
    def alerts_filter(self) -> str:
        """Every bed's alert transitions."""
        return f"{self.prefix}/+/bed/+/alerts"


def iso_ms(when: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and ``Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def ms_key(text: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 time (samples and alerts are matched on it)."""
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def vitals_payload(bed: str, when: datetime, k: int, temp_c: float = NORMAL_C) -> bytes:
    """A full monitor message: 7 observations (temperature, NIBP sys/dia/mean, HR, SpO2, RR), valid values."""
    sys_mmhg, dia_mmhg = 112 + k % 9, 70 + k % 5
    obs = [
        {"code": "MDC_TEMP_BODY", "value": temp_c, "unit": "Cel"},
        {"code": "MDC_PRESS_BLD_NONINV_SYS", "value": sys_mmhg, "unit": "mm[Hg]"},
        {"code": "MDC_PRESS_BLD_NONINV_DIA", "value": dia_mmhg, "unit": "mm[Hg]"},
        {
            "code": "MDC_PRESS_BLD_NONINV_MEAN",
            "value": round(dia_mmhg + (sys_mmhg - dia_mmhg) / 3),
            "unit": "mm[Hg]",
        },
        {"code": "MDC_ECG_HEART_RATE", "value": 72 + k % 11, "unit": "/min"},
        {"code": "MDC_PULS_OXIM_SAT_O2", "value": 96 + k % 3, "unit": "%"},
        {"code": "MDC_RESP_RATE", "value": 14 + k % 4, "unit": "/min"},
    ]
    return json.dumps({"ts": iso_ms(when), "device": f"monitor-{bed}", "obs": obs}).encode()


def connect(url: str, client_id: str | None = None) -> paho.Client:
    """A connected paho client, clean session, network loop in its own thread."""
    host, port = url.removeprefix("mqtt://").split(":")
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"bench-{uuid.uuid4().hex[:10]}")
    client.max_inflight_messages_set(INFLIGHT)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda _c, _u, _f, _rc, _p: connected.set()
    client.connect(host, int(port), keepalive=60)
    client.loop_start()
    if not connected.wait(10):
        client.loop_stop()
        raise RuntimeError(f"could not connect to {url}")
    return client


@dataclass
class Alert:
    """One alert message as the observer saw it."""

    at_s: float  # time.time() on arrival
    bed: str
    key_ms: int  # measurement time of the triggering sample
    condition: str
    phase: str


class Observer:
    """Subscribed to every alert topic; keeps what arrives and wakes up waiters.

    Only alert *starts* are kept (wardd also publishes ends, updates and other
    conditions, such as the CRS suggestion that a fever brings).
    """

    def __init__(self, url: str, ward: Ward) -> None:
        self._lock = threading.Condition()
        self.alerts: list[Alert] = []
        self.by_key: dict[tuple[str, int], float] = {}
        self.others = 0
        self._client = connect(url)
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_message = self._on_message
        self._client.subscribe(ward.alerts_filter, qos=1)
        if not subscribed.wait(10):
            raise RuntimeError("observer not subscribed")

    def _on_message(self, _client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        at_s = time.time()
        try:
            data = json.loads(message.payload)
            alert = Alert(at_s, str(data["bed"]), ms_key(data["since"]), data["condition"], data["phase"])
        except (ValueError, KeyError, TypeError):
            self.others += 1
            return
        if alert.condition != "FEVER" or alert.phase != "start":
            self.others += 1
            return
        with self._lock:
            self.alerts.append(alert)
            self.by_key.setdefault((alert.bed, alert.key_ms), at_s)
            self._lock.notify_all()

    def wait_for(self, bed: str, key_ms: int, timeout_s: float) -> float | None:
        """The arrival time of the alert for ``bed``'s sample at ``key_ms``, or ``None`` after ``timeout_s``."""
        return self.wait_any([(bed, key_ms)], timeout_s)

    def wait_any(self, keys: Sequence[tuple[str, int]], timeout_s: float) -> float | None:
        """The earliest arrival among the alerts for ``keys`` (bed, sample time), or ``None`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                arrived = [self.by_key[key] for key in keys if key in self.by_key]
                if arrived:
                    return min(arrived)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(min(left, 0.5))

    def count(self) -> int:
        """Alert starts seen so far."""
        with self._lock:
            return len(self.alerts)

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()


class Publisher:
    """A paho publisher at QoS 1; ``publish_all`` returns once the broker has every message."""

    def __init__(self, url: str) -> None:
        self._client = connect(url)
        self._acked = 0
        self._cond = threading.Condition()
        self._client.on_publish = self._on_publish

    def _on_publish(self, *_: Any) -> None:
        with self._cond:
            self._acked += 1
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue one message (returns at once)."""
        self._client.publish(topic, payload, qos=1)

    def publish_all(self, messages: Sequence[tuple[str, bytes]], timeout_s: float = 600.0) -> float:
        """Publish ``messages`` as fast as the broker takes them; the seconds until it acknowledged them all.

        At most ``INFLIGHT`` messages are handed to paho and not yet acknowledged:
        paho-mqtt scans its whole queue of unsent messages on every acknowledgement,
        so handing it 100,000 at once makes the publisher, not the broker, the limit.
        """
        with self._cond:
            first = self._acked
        started = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        for index, (topic, payload) in enumerate(messages):
            with self._cond:
                while index - (self._acked - first) >= INFLIGHT:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"broker acknowledged {self._acked - first} of {len(messages)}")
                    self._cond.wait(0.5)
            self._client.publish(topic, payload, qos=1)
        with self._cond:
            while self._acked - first < len(messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"broker acknowledged {self._acked - first} of {len(messages)}")
                self._cond.wait(min(left, 0.5))
        return time.perf_counter() - started

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()


class Prober:
    """Fever probes on some beds, each followed by a normal sample, with increasing measurement times.

    Probe times start ``behind_s`` in the past (inside every lateness window of wardd),
    10 ms apart, so that they stay older than any burst generated later. The system is
    ready once a probe of every bed has its alert: one bed per worker of a wardd with
    several (``partition_beds``), since each worker starts on its own.
    """

    def __init__(self, ward: Ward, beds: Sequence[str] = ("1",), behind_s: float = 600.0) -> None:
        self._ward = ward
        self._beds = tuple(dict.fromkeys(beds))
        self._base = datetime.now(UTC) - timedelta(seconds=behind_s)
        self._n = 0

    def wait_ready(
        self, publisher: Publisher, observer: Observer, timeout_s: float, every_s: float = 0.2
    ) -> float:
        """Probe every ``every_s`` until every bed has a probe's alert; the last bed's first arrival (time.time()).

        Raises after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        sent: dict[str, list[tuple[str, int]]] = {bed: [] for bed in self._beds}
        ready: dict[str, float] = {}
        while time.monotonic() < deadline:
            when = self._base + timedelta(milliseconds=10 * self._n)
            self._n += 2
            pending = [bed for bed in self._beds if bed not in ready]
            for bed in pending:
                topic = self._ward.vitals_topic(bed)
                publisher.publish(topic, vitals_payload(bed, when, self._n, FEVER_C))
                publisher.publish(
                    topic, vitals_payload(bed, when + timedelta(milliseconds=10), self._n, NORMAL_C)
                )
                sent[bed].append((bed, ms_key(iso_ms(when))))
            for i, bed in enumerate(pending):
                arrived = observer.wait_any(sent[bed], every_s if i == 0 else 0.0)
                if arrived is not None:
                    ready[bed] = arrived
            if len(ready) == len(self._beds):
                return max(ready.values())
        raise RuntimeError(f"no probe alert within {timeout_s} s (beds answered: {sorted(ready)})")


@dataclass
class Burst:
    """A burst of vitals: a fever marker first, ``per_bed`` normal samples per bed, fever sentinels last.

    One sentinel per bed of ``sentinel_beds``: with several workers each takes its own
    beds' messages, so the burst is processed once the sentinel of every worker has
    raised its alert, not only the first bed's.
    """

    messages: list[tuple[str, bytes]]
    bed: str
    first_key: int
    last_key: int
    sentinels: tuple[tuple[str, int], ...]  # (bed, sample key) of every last fever

    @property
    def normal(self) -> int:
        """Messages between the marker and the sentinels."""
        return len(self.messages) - 1 - len(self.sentinels)


def make_burst(ward: Ward, per_bed: int, spacing_s: float = 1.0, sentinel_beds: Sequence[str] = ()) -> Burst:
    """Samples 1 s apart per bed, in time order across beds, ending now (as a backlog after an outage).

    The sentinels are on the first bed and on each of ``sentinel_beds``.
    """
    end = datetime.now(UTC)
    base = end - timedelta(seconds=per_bed * spacing_s)
    bed = ward.bed_ids[0]
    first = base - timedelta(milliseconds=500)
    last = end + timedelta(milliseconds=500)
    messages = [(ward.vitals_topic(bed), vitals_payload(bed, first, 0, FEVER_C))]
    for k in range(per_bed):
        when = base + timedelta(seconds=k * spacing_s)
        messages.extend((ward.vitals_topic(b), vitals_payload(b, when, k)) for b in ward.bed_ids)
    last_beds = [bed, *(b for b in dict.fromkeys(sentinel_beds) if b != bed)]
    messages.extend((ward.vitals_topic(b), vitals_payload(b, last, per_bed, FEVER_C)) for b in last_beds)
    last_key = ms_key(iso_ms(last))
    return Burst(messages, bed, ms_key(iso_ms(first)), last_key, tuple((b, last_key) for b in last_beds))


@dataclass
class PacedResult:
    """What the paced publisher did."""

    sent: int = 0
    duration_s: float = 0.0
    max_behind_s: float = 0.0  # worst lag behind its schedule
    fevers: list[tuple[str, int, float]] = field(default_factory=list)  # bed, sample key, time.time() sent

    @property
    def rate(self) -> float:
        """Achieved messages per second."""
        return self.sent / self.duration_s if self.duration_s else 0.0


@dataclass(frozen=True)
class Pace:
    """The paced load: every bed of ``ward`` at ``hz`` for ``duration_s``, one sample in ``fever_every`` febrile."""

    url: str
    ward: Ward
    hz: float
    duration_s: float
    fever_every: int


def _paced(pace: Pace, out: Any) -> None:
    """Child process: every bed's vitals each period, spread evenly over the period."""
    ward, fever_every = pace.ward, pace.fever_every
    publisher = Publisher(pace.url)
    beds = ward.bed_ids
    period_s = 1.0 / pace.hz
    step_s = period_s / len(beds)
    result = PacedResult()
    periods = max(1, round(pace.duration_s * pace.hz))
    started = time.perf_counter()
    for k in range(periods):
        for j, bed in enumerate(beds):
            due = started + k * period_s + j * step_s
            lag = time.perf_counter() - due
            if lag < 0:
                time.sleep(-lag)
            else:
                result.max_behind_s = max(result.max_behind_s, lag)
            febrile = (k + j) % fever_every == 0
            when = datetime.now(UTC)
            payload = vitals_payload(bed, when, k, FEVER_C if febrile else NORMAL_C)
            if febrile:
                result.fevers.append((bed, ms_key(iso_ms(when)), time.time()))
            publisher.publish(ward.vitals_topic(bed), payload)
            result.sent += 1
    result.duration_s = time.perf_counter() - started
    publisher.close()
    out.put(result)


class PacedLoad:
    """The paced publisher in its own process, so that it keeps its schedule while the system works."""

    def __init__(self, pace: Pace) -> None:
        context = multiprocessing.get_context("spawn")
        self._out: Any = context.Queue()
        self._proc = context.Process(target=_paced, args=(pace, self._out), name="bench.paced")

    def start(self) -> None:
        """Start publishing."""
        self._proc.start()

    def result(self, timeout_s: float) -> PacedResult:
        """Wait for the publisher to finish; what it did."""
        try:
            result: PacedResult = self._out.get(timeout=timeout_s)
        finally:
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
        return result
