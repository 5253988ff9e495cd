"""The pipeline: built from a config by ``build``, run under one TaskGroup by ``Pipeline.run``.

::

    pumps (serial) ──┐                         ┌──► InfluxSink ──► InfluxDB (v1/v2) | spool/
    MQTT vitals,     ├──► events ──► dispatch ─┼──► RuleEngine ──► AlertService ──► MQTT alerts,
    observations,    │    (bounded,   │        │    (pure rules)    (lifecycle,       retained state,
    bags ────────────┤    back-       │        │                     ack, escalation)  escalations,
    tick (clock) ────┘    pressure)   │        └──► capture (JSON lines, optional)     journal
                                      └── counters ──► InfluxDB (wardd_counters)

Start order: sinks, then the MQTT link, then sources. Stop order is the reverse:
sources are cancelled, the event queue drains through the rules, alerts reach the
broker (under a timeout), storage flushes (what cannot be written is spooled).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon import topics
from daemon.alerts import AlertService
from daemon.capture import CaptureWriter
from daemon.clock import Clock, SystemClock, every
from daemon.config import BedConfig, Config
from daemon.dose import dose_point, dose_rules, parse_bag
from daemon.events import BagHung, Event, Health, PumpReading, SourceHealth, Tick, VitalSample
from daemon.influx import InfluxSink, Spool, make_writer
from daemon.metrics import Counters
from daemon.mqtt import MqttLink
from daemon.points import Point
from daemon.pump import PumpSource, reading_point
from daemon.pump_rules import pump_rules
from daemon.rules import Rule, RuleEngine
from daemon.store import read_json, write_json_atomic
from daemon.tech_rules import tech_rules
from daemon.telemetry import Route, TelemetryRouter, vitals_decoder
from daemon.vitals import parse_observation, vital_rules

log = logging.getLogger(__name__)

EVENT_QUEUE_SIZE = 10_000
STATE_SAVE_INTERVAL_S = 10.0
COUNTERS_INTERVAL_S = 60.0


RULE_FAMILIES: dict[str, Callable[[Config, BedConfig], list[Rule[Any]]]] = {
    "tech": tech_rules,
    "pump": pump_rules,
    "dose": dose_rules,
    "vitals": vital_rules,
}
"""Rule families in evaluation order: technical, pump, dose, vital signs."""


def build_rules(
    config: Config, families: Sequence[str] | None = None, *, counters: Counters | None = None
) -> RuleEngine:
    """Every bed's rules (all families, or only those named); failures counted in ``counters``."""
    chosen = [RULE_FAMILIES[name] for name in RULE_FAMILIES if families is None or name in families]
    return RuleEngine(
        {bed.id: [rule for family in chosen for rule in family(config, bed)] for bed in config.beds},
        counters=counters,
        wards={bed.id: bed.ward for bed in config.beds},
    )


def vitals_point(sample: VitalSample) -> Point:
    """A vitals message as one point: one field per metric, named with its unit."""
    return Point(
        "vitals",
        {"ward": sample.ward, "bed": sample.bed, "device": sample.device},
        {str(metric): value for metric, value in sample.values.items()},
        sample.time,
    )


@dataclass
class Pipeline:
    """Everything ``build`` made from one config; ``run`` drives it until ``stop`` is set."""

    config: Config
    clock: Clock
    counters: Counters
    engine: RuleEngine
    sink: InfluxSink
    link: MqttLink
    router: TelemetryRouter
    alerts: AlertService
    pumps: Sequence[PumpSource]
    capture: CaptureWriter | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    events: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(EVENT_QUEUE_SIZE))
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    observers: list[Callable[[Event], None]] = field(default_factory=list)
    """Called with each event after the rules have seen it (console views, progress)."""

    @property
    def state_path(self) -> Path:
        """Where the rules' states are persisted."""
        return self.config.daemon.state_dir / "rules.json"

    async def emit(self, event: Event) -> None:
        """Hand one event to the pipeline (waits when the queue is full: back-pressure)."""
        await self.events.put(event)

    async def on_message(self, topic: str, payload: bytes) -> None:
        """Every MQTT message: acknowledgement commands to the alert engine, the rest to the router."""
        if topic.endswith("/ack"):
            await self.alerts.handle_ack_message(topic, payload)
        else:
            await self.router.on_message(topic, payload)

    async def storage_health(self, health: Health, detail: str) -> None:
        """Storage degraded or back: a technical signal for every bed (their data is being spooled)."""
        now = self.clock.now()
        for bed in self.config.beds:
            await self.emit(SourceHealth(bed.ward, bed.id, "storage", now, health, detail))

    async def run(self) -> None:
        """Run until ``stop`` is set, then shut down in order. Exceptions propagate."""
        self.restore()
        async with asyncio.TaskGroup() as group:
            sink_task = group.create_task(self.sink.run(), name="influx.flush")
            dispatch_task = group.create_task(self._dispatch(), name="pipeline.dispatch")
            link_task = group.create_task(self.link.run(), name="mqtt.link")
            alerts_task = group.create_task(self.alerts.run(), name="alerts.escalation")
            sources = [
                group.create_task(self._ticks(), name="clock.tick"),
                group.create_task(self._counters(), name="counters.export"),
                *(group.create_task(pump.run(self.emit), name=pump.name) for pump in self.pumps),
            ]
            self.ready.set()
            await self.stop.wait()
            log.info("stopping: sources first")
            for task in sources:
                task.cancel()
            await asyncio.gather(*sources, return_exceptions=True)
            timeout_s = self.config.daemon.shutdown_timeout_s
            try:
                async with asyncio.timeout(timeout_s):
                    await self.events.join()
            except TimeoutError:
                self.counters.inc("shutdown.unprocessed", "", self.events.qsize())
                log.warning("%d event(s) not processed at shutdown", self.events.qsize())
            dispatch_task.cancel()
            alerts_task.cancel()
            self.save()
            try:
                async with asyncio.timeout(timeout_s):
                    await self.link.drained()
            except TimeoutError:
                self.counters.inc("shutdown.unpublished", "", self.link.pending)
                log.warning("%d MQTT message(s) not delivered at shutdown", self.link.pending)
            link_task.cancel()
            sink_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sink_task
            for point in self.counters.points(self.clock.now(), self.config.mqtt.client_id):
                self.sink.put(point)
            await self.sink.close()
            if self.capture is not None:
                self.capture.close()
        log.info("stopped")

    async def _dispatch(self) -> None:
        # Saving is disk I/O, paced on real time: on an accelerated clock a simulated
        # interval would mean an fsync for nearly every event.
        last_save = time.monotonic()
        while True:
            event = await self.events.get()
            try:
                await self.process(event)
            finally:
                self.events.task_done()
            if time.monotonic() - last_save >= STATE_SAVE_INTERVAL_S:
                self.save()
                last_save = time.monotonic()

    async def process(self, event: Event) -> None:
        """One event through capture, storage and the rules, and its alerts out."""
        # Ticks too: they are the daemon's clock, and where one fell among the events
        # decides what the rules that judge time passing saw (``wardd replay``).
        if self.capture is not None:
            self.capture.write(event)
        if isinstance(event, VitalSample):
            self.sink.put(vitals_point(event))
        elif isinstance(event, PumpReading):
            self.sink.put(reading_point(event))
        now = self.clock.now()
        candidates = self.engine.handle(event, now)
        if isinstance(event, PumpReading | BagHung):
            point = dose_point(self.engine, self.config.bed(event.bed), now, config=self.config)
            if point is not None:
                self.sink.put(point)
        if candidates:
            await self.alerts.handle(candidates)
        for observer in self.observers:
            observer(event)

    async def _ticks(self) -> None:
        async for _ in every(self.clock, self.config.daemon.tick_interval_s):
            await self.emit(Tick(self.clock.now()))

    async def _counters(self) -> None:
        async for _ in every(self.clock, COUNTERS_INTERVAL_S):
            for point in self.counters.points(self.clock.now(), self.config.mqtt.client_id):
                self.sink.put(point)

    def save(self) -> None:
        """Persist every rule state (atomically)."""
        write_json_atomic(self.state_path, self.engine.snapshot())

    def restore(self) -> None:
        """Reload rule states saved by an earlier run, if any."""
        snapshot = read_json(self.state_path)
        if snapshot:
            self.engine.restore(snapshot)
            log.info("restored rule state from %s", self.state_path)


def build(
    config: Config,
    *,
    clock: Clock | None = None,
    counters: Counters | None = None,
    clean_session: bool = False,
) -> Pipeline:
    """Turn a validated config into a pipeline (nothing runs until ``Pipeline.run``).

    ``clean_session`` is for throw-away runs (demo, scenarios): the broker then keeps
    no session for the daemon's client id after it leaves.
    """
    clock = clock or SystemClock()
    counters = counters or Counters()
    state_dir = config.daemon.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    influx = config.influx
    secret = influx.token.resolve() if influx.api == "v2" else influx.password.resolve()
    spool = Spool(influx.spool_dir or state_dir / "spool", influx.spool_max_mb * 1024 * 1024)
    holder: dict[str, Pipeline] = {}

    async def on_storage_health(health: Health, detail: str) -> None:
        await holder["pipeline"].storage_health(health, detail)

    async def on_message(topic: str, payload: bytes) -> None:
        await holder["pipeline"].on_message(topic, payload)

    async def emit(event: Event) -> None:
        await holder["pipeline"].emit(event)

    sink = InfluxSink(
        influx,
        make_writer(influx, secret),
        spool,
        counters=counters,
        clock=clock,
        on_health=on_storage_health,
    )
    prefix = config.mqtt.topic_prefix
    router = TelemetryRouter({}, emit, counters, clock.now)
    max_bytes = config.mqtt.max_payload_bytes
    decode_vitals = vitals_decoder(counters, max_bytes, config.mqtt.max_future_skew_s)

    def decode_observation(payload: bytes, ward: str, bed: str, where: str, now: datetime) -> list[Event]:
        return [parse_observation(payload, ward, bed, where, now, max_bytes=max_bytes)]

    def decode_bag(payload: bytes, ward: str, bed: str, where: str, now: datetime) -> list[Event]:
        return [parse_bag(payload, ward, bed, where, max_bytes=max_bytes)]

    for bed in config.beds:
        router.add(topics.vitals(prefix, bed.ward, bed.id), Route(bed.ward, bed.id, decode_vitals))
        router.add(topics.observations(prefix, bed.ward, bed.id), Route(bed.ward, bed.id, decode_observation))
        router.add(topics.bag(prefix, bed.ward, bed.id), Route(bed.ward, bed.id, decode_bag))
    subscriptions = [*router.topics, topics.alert_ack(prefix, "+", "+", "+")]
    link = MqttLink(
        config.mqtt,
        password=config.mqtt.password.resolve(),
        subscriptions=subscriptions,
        on_message=on_message,
        counters=counters,
        clock=clock,
        clean_session=clean_session,
    )
    alerts = AlertService.restore(
        publisher=link,
        sink=sink,
        clock=clock,
        counters=counters,
        prefix=prefix,
        journal_path=config.alerts.journal or state_dir / "alerts.jsonl",
        state_path=config.alerts.state_file or state_dir / "alerts.json",
        language=config.daemon.language,
        escalate_after_s=config.alerts.escalate_after_s,
        check_interval_s=config.alerts.check_interval_s,
        qos=config.mqtt.qos,
    )
    pumps = [PumpSource(pump, config.bed(pump.bed).ward, clock, counters) for pump in config.pumps]
    capture = CaptureWriter(config.daemon.capture) if config.daemon.capture else None
    pipeline = Pipeline(
        config=config,
        clock=clock,
        counters=counters,
        engine=build_rules(config, counters=counters),
        sink=sink,
        link=link,
        router=router,
        alerts=alerts,
        pumps=pumps,
        capture=capture,
    )
    holder["pipeline"] = pipeline
    return pipeline
