"""The pipeline: built from a config by ``build``, run under one TaskGroup by ``Pipeline.run``.

::

    pumps (serial) ──┐  store.inbound                   store.point_outbox ──► InfluxSink ──► InfluxDB
    MQTT vitals,     ├─► (PUBACK after ─► dispatch ─┬──► RuleEngine ──► AlertService ──► store.alerts,
    observations,    │    the commit)      │        │    (pure rules)    (lifecycle,      journal, and
    bags ────────────┤                     │        │                     ack, escalation) mqtt_outbox ──► MQTT
    tick (clock) ────┘                     │        └──► capture (JSON lines, optional)
                                           └── counters ──► InfluxDB (wardd_counters)

Every input is logged in the store (``daemon.links.store``) and acknowledged to its sender
only once that commit is durable; rule states are checkpointed with the log position
they stand for, and a restart replays the log after it (see README, "Nothing lost").
The periodic checkpoint is written in slices of states between inputs, so that no
input's commit waits behind a whole ward's states (``stage_slice``).

Start order: the store's writer, recovery (rule states, unconfirmed MQTT messages,
replay of the log), the sinks, the MQTT link, then sources. Stop order is the reverse:
reading stops, sources are cancelled, what is logged is processed, a checkpoint is
written, alerts reach the broker and storage flushes under a timeout (what is cut
short stays in the store for the next run).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from daemon import admissions, capture, dedup, partition, topics
from daemon.admission_desk import AdmissionDesk, is_admin_topic
from daemon.alerts import AlertService, is_ack_topic
from daemon.capture import CaptureWriter
from daemon.clinical.dose import dose_point, dose_rules, parse_bag
from daemon.clinical.observations import parse_observation
from daemon.clinical.vitals import late_dropped
from daemon.clinical.watch import vital_rules
from daemon.clock import Clock, SystemClock, every
from daemon.config import BedConfig, Config, VitalThresholds, WebConfig
from daemon.dedup import RecentDigests
from daemon.errors import InputError
from daemon.events import (
    AlertCandidate,
    BagHung,
    Event,
    Health,
    Observation,
    PumpReading,
    SourceHealth,
    Text,
    Tick,
    VitalSample,
)
from daemon.health import (
    LATENCY_BOUNDS_S,
    Gauge,
    Heartbeat,
    Histogram,
    Readiness,
    Watchdog,
    last_will,
    sd_notify,
    watchdog_interval_s,
)
from daemon.hl7 import adt, hl7in, hl7pump
from daemon.ids import is_ward_subject, subject_ward, ward_subject
from daemon.links.influx import InfluxSink, make_writer
from daemon.links.mllp import MllpListener, Reply
from daemon.links.mqtt import Ack, DurablePublisher, MqttLink
from daemon.links.store import ONE_LANE, Changes, InboundRow, Lane, Store, StoreWriter, WindowWrite, json_text
from daemon.metrics import Counters, reject
from daemon.points import Point
from daemon.pump import PumpSource, reading_point
from daemon.pump_rules import pump_rules
from daemon.rules import Rule, RuleEngine, StateChanges, epoch_us
from daemon.tech_rules import WARD_CONDITIONS, tech_rules
from daemon.telemetry import Decoder, Route, TelemetryRouter, vitals_decoder
from daemon.timefmt import iso, iso_once

if TYPE_CHECKING:
    from daemon.delivery.service import DeliveryService
    from daemon.web.server import WardPage

log = logging.getLogger(__name__)

COUNTERS_INTERVAL_S = 60.0
TICK_SLICE_BEDS = 20
"""Beds per slice of a tick: about half a millisecond of rules on this project's 2-core
machine (a tick costs about 25 µs a bed, most of it the dose checks)."""
TICK_SPREAD = 0.5
"""The share of the tick interval over which a sliced tick's slices are spread. Slices
run back to back kept the event loop busy for the whole tick (about 30 ms at 1,000
beds), and the store's thread, whose commits the inputs and alerts wait for, got the
interpreter's lock only every switch interval meanwhile: the alerts of samples that
arrived during a tick waited 30 to 70 ms."""
CHECKPOINT_SLICE_STATES = 15
"""Rule states per slice of a periodic checkpoint, at most. At 1,000 beds sending every
second a whole checkpoint (about 4,000 states and 40,000 window rows) was one transaction
of 0.7 to 1.2 s, and every input arriving meanwhile waited for it. See
``CHECKPOINT_SLICE_ROWS`` for why so few."""
CHECKPOINT_SLICE_ROWS = 60
"""Late-data window rows per slice of a periodic checkpoint: a slice ends with the state
whose rows reach it (a window rewritten whole by a late entry is not split). A slice
shares the group commit of the inputs staged with it, which wait for its dumps and rows:
slices of 50 states (about 650 rows at 1,000 beds × 1 Hz) took 7 ms of the store's CPU
each, and the commits that carried one 38 to 52 ms against 3 to 7 ms for the others in
the daemon on a loaded machine; slices of 200 rows take 2 ms (``python -m bench.checkpoint``).
An alert whose input comes while a slice is committed waits for it, so the slice's time
is the tail of the alert latency: slices of 60 rows or 15 states (1.1 ms a commit against
2.1 at 1,000 beds × 1 Hz) gave a p95 of 2.8, 3.1, 3.0 and 4.2 ms against 3.6 and 4.2; at 5,000
beds × 0.2 Hz a p99 of 11 and 13 ms against 25 and 18 (runs alternating)."""
CHECKPOINT_SPREAD = 0.9
"""The share of ``checkpoint_interval_s`` over which a periodic checkpoint's slices are
spread. Each slice was staged as soon as the one before it was committed, so at 1,000
beds × 1 Hz about a second in every five had a slice in every commit, and the alerts of
the samples arriving then waited 15 to 40 ms. A slice that is due later waits; one that
is late goes at once (a checkpoint is never slowed below its interval). Over half the
interval, 5,000 beds × 0.2 Hz (15,000 states a round) still gave a p50 of 19 to 22 ms;
over nine tenths, 9.6 to 9.8 ms."""
DEDUP_CAPACITY = 8192  # recent message digests kept; redeliveries come within the in-flight window
SEEN_KEY = "inbound.seen"  # the digests, in the store's meta
LATE_DROPPED = "vitals.late_dropped"
"""Counter of inputs stored but not judged by a vital-sign rule: they arrived later than
that rule's ``<rule>_late_s`` window (label: the rule, ``fever`` ... ``news2``)."""


RULE_FAMILIES: dict[str, Callable[[Config, BedConfig], list[Rule[Any]]]] = {
    "pump": pump_rules,
    "dose": dose_rules,
    "vitals": vital_rules,
}
"""A bed's rule families in evaluation order: pump, dose, vital signs."""
WARD_RULE_FAMILIES: dict[str, Callable[[Config, str], list[Rule[Any]]]] = {"tech": tech_rules}
"""A ward's own rule families, run at its ``ward_subject``: the daemon's links."""


GC_GEN0_THRESHOLD = 30_000
"""Allocations between two young-generation collections of the cyclic garbage collector,
at most (``GC_FREEZE_EVERY_ITEMS`` keeps the count from reaching it in the dispatcher):
the count is of objects allocated less objects freed, old ones included."""
GC_FREEZE_EVERY_ITEMS = 200
"""Work items (an input, a slice of a tick or of a checkpoint) between two ``gc.freeze``
calls of the dispatcher, which move what those items left alive out of the collector's
sight without walking it, and reset its count.

The collector's own trigger counts objects allocated less objects freed: in a ward whose
states live longer than the interval between two collections (5,000 beds × 1 Hz), every
message frees about as many old objects as it makes young ones, so the count crawls while
the young generation grows to 150,000 objects and more, and its collection held the event
loop 70 to 90 ms. A collection of the young generation every 200 items bounded that, but
walked about 25 objects an item that were almost all alive and in no cycle (no young
collection of the latency or the hostile-payload runs found any garbage): 8 to 11 µs of
CPU a message in a burst of 1,000 beds, and a stop of the loop of 0.5 to 1.5 ms five times
a second at 1,000 beds × 1 Hz. Freezing costs neither. A cycle dropped after it was
frozen is freed by ``collect_frozen``, whose trigger (the allocated memory blocks) sees
memory that such cycles would hold."""
GC_THAW_GROWTH = 2.0
"""A full collection runs (``collect_frozen``) once the memory blocks the interpreter has
allocated have grown by this factor since the last one."""
FULL_COLLECTIONS = "gc.full_collections"
"""Counter of the full collections ``collect_frozen`` made."""


class _Frozen:
    """What ``collect_frozen`` compares with (process-wide, as the collector)."""

    blocks = 0
    """``sys.getallocatedblocks()`` after the last full collection (0: not tuned; -1: tuned,
    taken at the first ``collect_frozen``, once the restored states are loaded). Unlike
    ``gc.get_freeze_count``, which walks every object, it costs a walk of the memory
    pools, about a millisecond for a heap of gigabytes."""


def _freeze_survivors(phase: str, info: Mapping[str, int]) -> None:
    if phase == "stop":
        gc.freeze()


def tune_gc() -> None:
    """Tune the cyclic garbage collector for a long-running daemon (call once, after ``build``).

    The rules' states are immutable trees without reference cycles, freed by reference
    counting as soon as they are replaced; their late-data windows hold millions of
    objects at 1,000 beds. Left to itself, the collector walks them, the event loop
    stopped meanwhile: with the default threshold (700 container allocations) every few
    messages, 35 % of the CPU of a burst; with a young generation of 100,000, the middle
    generation (a million objects, 0.5 s) every few minutes, and the whole heap whenever
    it had grown by a quarter. So every collection ends with ``gc.freeze``: what survives
    it is kept out of the collector's sight, each object is walked once, while young, and
    no collection walks more than the young generation (the load of ``bench.rules``,
    500 beds over ten minutes: the longest collection 15 ms against 539 ms, the total
    the same).
    Reference counting still frees a frozen object; a reference cycle alive at a
    collection and dropped later stays, until ``collect_frozen`` collects everything, and
    so does any cycle made between two of the dispatcher's freezes
    (``GC_FREEZE_EVERY_ITEMS``), which no young collection sees.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)
    _Frozen.blocks = -1


def collect_frozen(counters: Counters) -> None:
    """Collect every object, frozen ones included, once the memory blocks allocated have
    grown by ``GC_THAW_GROWTH`` since the last time or the first call (call now and then,
    the first time once the daemon has recovered; does nothing without ``tune_gc``).

    Cycles dropped after they were frozen are freed here, so they hold at most about as
    much memory as everything else. The late-data windows growing over their first hour
    bring it about a few times (a stop of the event loop in proportion to the heap, which
    the collector made every few minutes before); a steady ward, not again.
    """
    if _Frozen.blocks < 0:
        _Frozen.blocks = sys.getallocatedblocks()
    if not _Frozen.blocks or sys.getallocatedblocks() <= GC_THAW_GROWTH * _Frozen.blocks:
        return
    started = time.perf_counter()
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    _Frozen.blocks = sys.getallocatedblocks()
    counters.inc(FULL_COLLECTIONS)
    log.info(
        "full garbage collection: %d objects collected in %.0f ms",
        collected,
        (time.perf_counter() - started) * 1000,
    )


class InflightPlaces:
    """At most ``limit`` inputs received and not yet processed: ``take`` waits for a place.

    ``asyncio.Semaphore`` does the same, but in Python 3.11 its ``acquire`` builds a
    generator on every call, a percent of the event loop's time in a burst; a place taken
    here costs a comparison when one is free.
    """

    def __init__(self, limit: int) -> None:
        self.free = limit
        self._freed = asyncio.Event()

    async def take(self) -> None:
        """Take a place, waiting while none is free (back-pressure: the sender waits)."""
        while self.free <= 0:
            self._freed.clear()
            await self._freed.wait()
        self.free -= 1

    def give_back(self) -> None:
        """Free a place (its input is processed)."""
        self.free += 1
        self._freed.set()


class _NextSlice:
    """A work item: the last slice of the checkpoint under way is committed, stage the next."""


NEXT_SLICE = _NextSlice()


@dataclass
class CheckpointRound:
    """A periodic checkpoint under way: the states that had changed when it started,
    written a slice at a time (``stage_slice``)."""

    keys: list[tuple[str, str]]
    position: int
    """The last logged input processed when the round started: once every state of
    ``keys`` is written, the log up to it is covered."""
    seen: bytes | None
    """The recent-message digests at the start (``RecentDigests.take``; ``None``: unchanged),
    written at the end with ``position``: a replay from ``position`` must not take later
    inputs for repeats."""
    started_s: float
    """When the round started (``time.monotonic``): its slices are spread from then on."""
    done: int = 0


def stage_states(changes: Changes, taken: StateChanges, seq: int) -> None:
    """Stage a checkpoint's rule states, which include the logged inputs up to ``seq``, and
    their window rows; they are dumped and encoded on the store's writer thread, not on
    the event loop."""
    for key, dump in taken.states.items():
        changes.rule_states[key] = _encoder(dump)
        changes.state_seqs[key] = seq
    for change in taken.windows:
        delta = change.delta
        changes.windows.append(
            WindowWrite(
                change.bed,
                change.rule,
                change.window,
                delta.clear,
                None if delta.keep_from is None else epoch_us(delta.keep_from),
                change.rows,
            )
        )


def stage_slice(
    changes: Changes, engine: RuleEngine, keys: Sequence[tuple[str, str]], start: int, seq: int
) -> int:
    """Stage the next slice of a periodic checkpoint: the states of ``keys`` from ``start``
    on, as ``stage_states`` does, until ``CHECKPOINT_SLICE_STATES`` states or
    ``CHECKPOINT_SLICE_ROWS`` window rows; returns where the next slice starts."""
    states = rows = 0
    end = start
    while end < len(keys) and states < CHECKPOINT_SLICE_STATES and rows < CHECKPOINT_SLICE_ROWS:
        taken = engine.take_changed(keys[end : end + 1])
        end += 1
        if taken.states:
            stage_states(changes, taken, seq)
            states += 1
            rows += sum(len(change.delta.added) for change in taken.windows)
    return end


def _encoder(dump: Callable[[], Mapping[str, Any]]) -> Callable[[], str]:
    return lambda: json_text(dump())


def _digests_text(digests: bytes) -> Callable[[], str]:
    """The recent-message digests as the store keeps them, encoded on its thread."""
    return lambda: dedup.text(digests)


def bed_rules(config: Config, bed: BedConfig) -> list[Rule[Any]]:
    """One bed's rules, every family in evaluation order (a bed admitted at run time)."""
    return [rule for family in RULE_FAMILIES.values() for rule in family(config, bed)]


def admitted(
    config: Config, store: Store, writer: StoreWriter | None = None
) -> tuple[Config, admissions.Ward]:
    """``config`` with the beds admitted, moved and discharged at run time (the store's rows
    over the file's beds). Rows the file has overridden since are deleted and journaled
    when ``writer`` is given (``wardd run``); ``wardd status`` only reads."""
    ward, dropped = admissions.load(config, store.admissions())
    if writer is not None and dropped:
        changes = writer.stage()
        now = iso(datetime.now(UTC))
        for bed_id, why in dropped:
            log.warning("admission row of bed %s dropped: %s", bed_id, why)
            changes.admissions[bed_id] = None
            entry = {"at": now, "who": "config", "what": "admission_dropped", "via": "config", "bed": bed_id,
                     "detail": why}  # fmt: skip
            changes.journal.append((now, "config", "admission_dropped", None, bed_id, json_text(entry)))
    return ward.effective(), ward


def build_rules(
    config: Config, families: Sequence[str] | None = None, *, counters: Counters | None = None
) -> RuleEngine:
    """Every bed's and ward's rules (all families, or only those named); failures counted in ``counters``."""
    chosen = [RULE_FAMILIES[name] for name in RULE_FAMILIES if families is None or name in families]
    per_ward = [
        WARD_RULE_FAMILIES[name] for name in WARD_RULE_FAMILIES if families is None or name in families
    ]
    rules = {bed.id: [rule for family in chosen for rule in family(config, bed)] for bed in config.beds}
    wards = {bed.id: bed.ward for bed in config.beds}
    if per_ward:
        for ward in config.own_wards():
            rules[ward_subject(ward)] = [rule for family in per_ward for rule in family(config, ward)]
            wards[ward_subject(ward)] = ward
    return RuleEngine(rules, counters=counters, wards=wards)


def vitals_point(sample: VitalSample) -> Point:
    """A vitals message as one point: one field per metric, named with its unit."""
    return Point(
        "vitals",
        {"ward": sample.ward, "bed": sample.bed, "device": sample.device},
        {str(metric): value for metric, value in sample.values.items()},
        sample.time,
    )


class Service(Protocol):
    """A part that runs beside the pipeline and serves people (the ward page).

    ``run`` serves until cancelled and cleans up in ``finally``. Services start after
    the sinks, the MQTT link and the alert engine, and stop first, with the sources:
    what they send in (an acknowledgement) is an input.
    """

    name: str
    """The name of its task."""

    async def run(self) -> None:
        """Serve until cancelled."""
        ...


@dataclass
class Pipeline:
    """Everything ``build`` made from one config; ``run`` drives it until ``stop`` is set."""

    config: Config
    clock: Clock
    counters: Counters
    engine: RuleEngine
    writer: StoreWriter
    sink: InfluxSink
    link: MqttLink
    publisher: DurablePublisher
    router: TelemetryRouter
    alerts: AlertService
    pumps: Sequence[PumpSource]
    capture: CaptureWriter | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    work: asyncio.Queue[InboundRow | Event | _NextSlice] = field(default_factory=asyncio.Queue)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    observers: list[Callable[[Event], None]] = field(default_factory=list)
    """Called with each event after the rules have seen it (console views, progress)."""
    seen: RecentDigests = field(default_factory=lambda: RecentDigests(DEDUP_CAPACITY))
    services: list[Service] = field(default_factory=list)
    """Run as named tasks of the pipeline's group (see ``Service``)."""
    processed_seq: int = 0
    """The last logged input whose effects are staged in the store."""
    checkpoint_round: CheckpointRound | None = None
    """The periodic checkpoint under way, if any."""
    pump_silence: hl7pump.PumpSilence | None = None
    """The link health of the pumps a pump server reports over HL7 (told of each reading)."""
    more_gauges: list[Callable[[], Sequence[Gauge]]] = field(default_factory=list)
    """Services' own metrics for /metrics (delivery: attempts by receiver, backlogs)."""
    desk: AdmissionDesk | None = None
    """Admissions at run time (README, "Admissions"); ``None`` with several workers."""
    config_listeners: list[Callable[[Config], None]] = field(default_factory=list)
    """Called with the new config when admissions change the beds (the ward page)."""

    def __post_init__(self) -> None:
        self._vital_thresholds: dict[str, VitalThresholds] = {
            bed.id: self.config.thresholds_for(bed.id).vitals for bed in self.config.beds
        }
        self._inflight = InflightPlaces(self.config.daemon.max_inflight_messages)
        # Logged inputs that hold an in-flight place, with how many of their two ends
        # (durable; processed) are still to come (``_settle``).
        self._live: dict[int, int] = {}
        self._tick_done = asyncio.Event()  # set when a tick (or a slice of one) is processed
        self._busy_since: float | None = None  # monotonic time the item in processing was taken
        self._beds = {(bed.ward, bed.id): bed for bed in self.config.beds}
        self._hl7_pumps = hl7pump.Hl7Pumps.from_config(self.config)
        self._rule_s = 0.0  # time in the rules, for /metrics
        self._rule_events = 0
        self.alert_latency = Histogram(
            "wardd_alert_latency_seconds",
            "From an input's arrival to the alert message it caused handed to the MQTT link, by stage",
            "stage",
            LATENCY_BOUNDS_S,
        )

    def reconfigure(self, config: Config) -> None:
        """Run on ``config`` from now on: its beds changed (``daemon.admission_desk``)."""
        self.config = config
        self._beds = {(bed.ward, bed.id): bed for bed in config.beds}
        self._vital_thresholds = {bed.id: config.thresholds_for(bed.id).vitals for bed in config.beds}
        for ward in config.own_wards():
            # A bed admitted in a ward new to the daemon: that ward's links are watched too.
            if not self.engine.watches(ward_subject(ward)):
                self.engine.set_bed(ward_subject(ward), ward, tech_rules(config, ward), keep_states=True)
        for listener in self.config_listeners:
            listener(config)

    @property
    def store(self) -> Store:
        """The durable store."""
        return self.writer.store

    async def emit(self, event: Event) -> None:
        """Hand one event to the pipeline: logged in the store first, then processed (ticks directly)."""
        if isinstance(event, Tick):
            self.work.put_nowait(event)
            return
        self._log("event", type(event).__name__, capture.dumps(event).encode(), ack=None)

    async def on_message(self, topic: str, payload: bytes, ack: Ack) -> None:
        """One MQTT message: logged in the store, acknowledged to the broker once that is durable.

        Waits while ``max_inflight_messages`` inputs are received and not yet both processed
        and durable: the broker then holds the rest (back-pressure, never a drop).
        """
        await self._inflight.take()
        self._log("mqtt", topic, payload, ack=ack, holds_place=True)

    async def on_hl7(self, raw: bytes, where: str, reply: Reply) -> None:
        """One HL7 v2 message (``daemon.links.mllp``): refused at once with AE or AR when
        nothing in it can be filed; else logged in the store, and AA once that is durable."""
        message = None
        try:
            message = hl7in.parse(raw, where)
            hl7in.check_escapes(message, where)
            if self.desk is not None and adt.is_adt(message):
                self.desk.check_adt(message, where)
            else:
                self._decode_hl7(message, where)
        except hl7in.Hl7Error as exc:
            reject(self.counters, hl7in.REJECTED, exc.reason, exc.detail, where=exc.where, payload=raw)
            if exc.reason == "unknown_bed" and self.desk is not None and message is not None:
                ward, bed = adt.location(message)
                await self.desk.unwatched(ward, bed, "hl7")
            reply(hl7in.acknowledgement(message, exc.code, exc))  # None: not HL7 at all
            return
        await self._inflight.take()
        self._log("hl7", where, raw, ack=lambda: reply(hl7in.acknowledgement(message)), holds_place=True)

    def _decode_hl7(self, message: hl7in.Message, where: str) -> hl7in.Decoded:
        if hl7pump.takes(message, self._hl7_pumps):
            return hl7pump.decode(
                message,
                where=where,
                now=self.clock.now(),
                pumps=self._hl7_pumps,
                max_future_skew_s=self.config.mqtt.max_future_skew_s,
                pseudonym_id=adt.pseudonym_id(self.config.admissions),
            )
        return hl7in.decode(
            message,
            where=where,
            now=self.clock.now(),
            bed_of=self._hl7_bed,
            max_future_skew_s=self.config.mqtt.max_future_skew_s,
            pseudonym_id=adt.pseudonym_id(self.config.admissions),
        )

    def _hl7_bed(self, ward: str, bed_id: str) -> hl7in.Bed | None:
        bed = self._beds.get((ward, bed_id))
        return None if bed is None else hl7in.Bed(bed.ward, bed.id, bed.patient)

    async def _process_hl7(self, topic: str, raw: bytes) -> None:
        if not self.seen.add(topic.split(" ", 1)[0], raw):
            # A sender that got no acknowledgement in time sends the message again.
            self.counters.inc("hl7.duplicates")
            return
        if self.desk is not None:
            message = hl7in.parse(raw, topic)
            if adt.is_adt(message):
                self.counters.inc("hl7.accepted", "adt")
                await self.desk.apply_adt(message, topic)
                return
        try:
            decoded = self._decode_hl7(hl7in.parse(raw, topic), topic)
        except hl7in.Hl7Error as exc:  # the config changed under a replayed message
            reject(self.counters, hl7in.REJECTED, exc.reason, exc.detail, where=exc.where, payload=raw)
            return
        self.counters.inc("hl7.accepted", "oru_r01")
        for error in decoded.rejected:
            reject(self.counters, hl7in.REJECTED, error.reason, error.detail, where=error.where, payload=raw)
        for event in decoded.events:
            await self.process(event)

    def _log(
        self, source: str, topic: str, payload: bytes, *, ack: Ack | None, holds_place: bool = False
    ) -> int:
        """Stage one input in the store's log and queue it for processing; ``ack`` once durable.

        It is processed without waiting for its commit: what it causes (an alert, its
        outgoing message, the rule states) is staged behind it, usually in the same
        commit, and nothing leaves the daemon before the commit that holds it (the
        acknowledgement, an alert's message, a notice). A crash before that commit
        loses the input and its effects together, and the sender, never answered, sends
        it again. One commit on an alert's path instead of two: the input's, then the
        alert's. ``holds_place``: the input took an in-flight place, which ``_settle``
        gives back.
        """
        row = InboundRow(
            self.store.next_id("inbound"),
            iso_once(self.clock.now()),
            source,
            topic,
            payload,
            time.monotonic(),
        )
        if holds_place:
            self._live[row.seq] = 2  # durable, processed: ``_settle`` frees it at the second
        # Queued before it is staged: the dispatcher, woken first, processes it before
        # the writer takes the unit (``StoreWriter`` lets ready work run before it does).
        self.work.put_nowait(row)
        self.writer.stage().inbound.append((row.seq, row.received_at, source, topic, payload))

        def committed() -> None:
            if ack is not None:
                ack()
            self._settle(row.seq)

        self.writer.after_commit(committed, urgent=False)
        return row.seq

    def _settle(self, seq: int) -> None:
        """One of the two ends of logged input ``seq``: durable, or processed. Its in-flight
        place is given back at the second, so that inputs neither processed nor durable
        (the store failing) are bounded as before."""
        left = self._live.get(seq)
        if left is None:
            return  # replayed, or an event without a place
        if left > 1:
            self._live[seq] = left - 1
            return
        del self._live[seq]
        self._inflight.give_back()

    async def admin_command(self, user: str, payload: bytes) -> dict[str, Any]:
        """An admin command from the ward page (a user of role admin): logged as an input,
        carried out in order with the others, and answered (the reply's body) once done."""
        desk = self.desk
        if desk is None:
            return {
                "ok": False,
                "reason": "unavailable",
                "error": "admissions at run time need daemon.workers = 1",
            }
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        await self._inflight.take()
        seq = self._log("admin", f"web/{user}", payload, ack=None, holds_place=True)
        desk.waiting[seq] = future
        return await future

    async def link_health(self, source: str, health: Health, detail: str) -> None:
        """A link (``storage``, ``mqtt``) lost or back: a technical signal for every ward (it serves each)."""
        now = self.clock.now()
        # Every ward watched since the start, even one whose last patient has left: an
        # alert raised there must still end when the link is back.
        for subject in [bed for bed in self.engine.beds if is_ward_subject(bed)]:
            self.work.put_nowait(SourceHealth(subject_ward(subject), subject, source, now, health, detail))

    async def run(self) -> None:
        """Run until ``stop`` is set, then shut down in order. Exceptions propagate."""
        try:
            async with asyncio.TaskGroup() as group:
                writer_task = group.create_task(self.writer.run(), name="store.commit")
                await self._recover()
                sink_task = group.create_task(self.sink.run(), name="influx.flush")
                dispatch_task = group.create_task(self._dispatch(), name="pipeline.dispatch")
                link_task = group.create_task(self.link.run(), name="mqtt.link")
                alerts_task = group.create_task(self.alerts.run(), name="alerts.escalation")
                sources = [
                    *(group.create_task(service.run(), name=service.name) for service in self.services),
                    group.create_task(self._ticks(), name="clock.tick"),
                    group.create_task(self._counters(), name="counters.export"),
                    *(group.create_task(pump.run(self.emit), name=pump.name) for pump in self.pumps),
                ]
                self.ready.set()
                sd_notify(f"READY=1\nSTATUS=watching {len(self.config.beds)} bed(s)")
                await self.stop.wait()
                await self._shutdown(sources, dispatch_task, alerts_task, link_task, sink_task)
                writer_task.cancel()
        finally:
            self.writer.close()
            if self.capture is not None:
                self.capture.close()
        log.info("stopped")

    async def _recover(self) -> None:
        """Put back what an earlier run left: rule states, unconfirmed messages, unprocessed inputs."""
        states = self.store.rule_states()
        if states:
            self.engine.restore(states, self.store.rule_windows(), self.store.rule_positions())
        seen = self.store.meta(SEEN_KEY)
        if isinstance(seen, str):
            self.seen.load(seen)
        self.processed_seq = self.store.processed_seq()
        resent = self.publisher.resend()
        rows = self.store.inbound_after(self.processed_seq)
        if states or resent or rows:
            log.info(
                "recovered from %s: %d rule state(s), %d unconfirmed message(s), %d input(s) to replay",
                self.store.path,
                sum(len(v) for v in states.values()),
                resent,
                len(rows),
            )
        for row in rows:
            self.engine.replaying(row.seq)
            await self.process_row(row, replay=True)
        self.engine.replaying(None)
        self.counters.inc("store.replayed", "", len(rows))
        await self._end_bed_link_alerts()
        self.checkpoint()

    async def _end_bed_link_alerts(self) -> None:
        """End what versions before ward alerts raised at every bed for a link (the
        database, the broker): no rule of a bed clears them now; the ward's own alert,
        raised again if the link is still lost, takes their place."""
        stale = [
            a
            for a in self.alerts.book.open_alerts()
            if a.condition in WARD_CONDITIONS and not is_ward_subject(a.bed)
        ]
        if not stale:
            return
        now = self.clock.now()
        moved = Text(
            en="Now raised once for the whole ward, not at each bed.",
            fr="Désormais signalée une fois pour tout le service, non à chaque lit.",
        )
        await self.alerts.handle(
            AlertCandidate(
                a.condition,
                a.ward,
                a.bed,
                now,
                present=False,
                kind=a.kind,
                priority=a.priority,
                message=moved,
            )
            for a in stale
        )
        log.info("ended %d link alert(s) raised at beds by an earlier version", len(stale))

    async def _shutdown(
        self,
        sources: list[asyncio.Task[None]],
        dispatch_task: asyncio.Task[None],
        alerts_task: asyncio.Task[None],
        link_task: asyncio.Task[None],
        sink_task: asyncio.Task[None],
    ) -> None:
        log.info("stopping: sources first")
        sd_notify("STOPPING=1")
        # Stop reading first: what is not yet acknowledged stays with the broker.
        self.link.stop_reading()
        for task in sources:
            task.cancel()
        await asyncio.gather(*sources, return_exceptions=True)
        timeout_s = self.config.daemon.shutdown_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await self.writer.flush()
                await self.work.join()
        except TimeoutError:
            # Logged inputs not processed yet are replayed by the next run: nothing is lost.
            self.counters.inc("shutdown.unprocessed", "", self.work.qsize())
            log.warning("%d input(s) left to replay at the next start", self.work.qsize())
        dispatch_task.cancel()
        alerts_task.cancel()
        await asyncio.gather(dispatch_task, alerts_task, return_exceptions=True)
        self.checkpoint()
        await self.writer.flush()
        try:
            async with asyncio.timeout(timeout_s):
                await self.link.drained()
        except TimeoutError:
            # They stay in the store's outbox and are sent by the next run.
            self.counters.inc("shutdown.unpublished", "", self.link.pending)
            log.warning(
                "%d MQTT message(s) not confirmed at shutdown; kept for the next run", self.link.pending
            )
        link_task.cancel()
        sink_task.cancel()
        await asyncio.gather(link_task, sink_task, return_exceptions=True)
        self.counters.rejections.flush(everything=True)
        for point in self.counters.points(self.clock.now(), self.config.mqtt.client_id):
            self.sink.put(point)
        await self.sink.close()
        await self.writer.flush()

    async def _dispatch(self) -> None:
        # Checkpoints are disk I/O, paced on real time: on an accelerated clock a
        # simulated interval would mean a write for nearly every event.
        last_checkpoint = time.monotonic()
        interval_s = self.config.daemon.checkpoint_interval_s
        since_freeze = 0
        while True:
            item = await self.work.get()
            self._busy_since = time.monotonic()
            try:
                if isinstance(item, InboundRow):
                    await self.process_row(item)
                elif isinstance(item, _NextSlice):
                    self._checkpoint_slice()
                else:
                    await self.process(item)
            finally:
                self.work.task_done()
                self._busy_since = None
            # Between two items the states include exactly the inputs up to processed_seq.
            if self.checkpoint_round is None and time.monotonic() - last_checkpoint >= interval_s:
                self.start_checkpoint()
                last_checkpoint = time.monotonic()
            since_freeze += 1
            if since_freeze >= GC_FREEZE_EVERY_ITEMS:
                since_freeze = 0
                gc.freeze()

    async def process_row(self, row: InboundRow, *, replay: bool = False) -> None:
        """One logged input: decoded and processed (a duplicate of a recent message is skipped)."""
        started_s = time.monotonic()
        published = self.publisher.published
        try:
            if row.source == "mqtt":
                await self._process_message(row.topic, row.payload)
            elif row.source == "hl7":
                await self._process_hl7(row.topic, row.payload)
            elif row.source == "admin":
                if self.desk is not None:
                    await self.desk.handle_web(row.seq, row.topic, row.payload)
            else:
                try:
                    event = capture.from_dict(json.loads(row.payload), where=f"inbound {row.seq}")
                except (ValueError, InputError) as exc:
                    self.counters.inc("store.replay_skipped", "unreadable")
                    log.error("logged input %d unreadable, skipped: %s", row.seq, exc)
                else:
                    await self.process(event)
        finally:
            self.processed_seq = max(self.processed_seq, row.seq)
            self._settle(row.seq)
            if self.desk is not None and self.desk.checkpoint_due:
                # An admission is stored with every rule state as it left them, and the log
                # position after it: the stored ward and the states agree, and it is not replayed.
                self.desk.checkpoint_due = False
                self.checkpoint()
        if replay:
            self.counters.inc("store.replayed_inputs", row.source)
        elif self.publisher.published != published:
            self._time_alert(row.arrived_s, started_s, time.monotonic())

    def _time_alert(self, arrived_s: float, started_s: float, processed_s: float) -> None:
        """Time, by stage, the path of an input whose processing published a message (an
        alert's), once the commit that holds it is done and the message is on the link."""

        def committed() -> None:
            # After the message's own callback, which queued it on the MQTT link.
            done_s = time.monotonic()
            latency = self.alert_latency
            latency.observe("waiting", started_s - arrived_s)
            latency.observe("processing", processed_s - started_s)
            latency.observe("storing", done_s - processed_s)
            latency.observe("total", done_s - arrived_s)

        self.writer.after_commit(committed, urgent=False)

    async def _process_message(self, topic: str, payload: bytes) -> None:
        if is_ack_topic(topic):
            # Not deduplicated: a person may well send the same acknowledgement twice.
            await self.alerts.handle_ack_message(topic, payload)
            return
        if is_admin_topic(topic):
            if self.desk is not None:
                await self.desk.handle_command(topic, payload)
            return
        if not self.seen.add(topic, payload):
            self.counters.inc("mqtt.duplicates", topic.rsplit("/", 1)[-1])
            return
        await self.router.on_message(topic, payload)

    def checkpoint(self) -> None:
        """Stage every changed rule state with the position it stands for, in one
        transaction (at start-up after the replay, and at shutdown)."""
        interrupted, self.checkpoint_round = self.checkpoint_round, None
        changes = self.writer.stage()
        # What a round under way had left to write is still changed: written here.
        stage_states(changes, self.engine.take_changed(), self.processed_seq)
        if self.seen.changed or (interrupted is not None and interrupted.seen is not None):
            # Up to 4 × max_inflight_messages digests: written only when a message was added.
            changes.meta[SEEN_KEY] = _digests_text(self.seen.take())
        changes.processed_seq = self.processed_seq
        changes.defer_inbound_delete = False  # the log emptied now (a repartition counts on it)

    def start_checkpoint(self) -> None:
        """Start a periodic checkpoint: the states changed so far, a slice per commit.

        Call between two work items. Each slice is staged once the previous one is
        committed, so an input waits for at most one slice; a state changed again before
        its slice is written as it is then, with the later position (see
        ``RuleEngine.replaying``).
        """
        seen = self.seen.take() if self.seen.changed else None
        self.checkpoint_round = CheckpointRound(
            self.engine.dirty(), self.processed_seq, seen, started_s=time.monotonic()
        )
        self._checkpoint_slice()

    def _checkpoint_slice(self) -> None:
        checkpoint = self.checkpoint_round
        if checkpoint is None:
            return  # a full checkpoint has written it all
        changes = self.writer.stage()
        checkpoint.done = stage_slice(
            changes, self.engine, checkpoint.keys, checkpoint.done, self.processed_seq
        )
        if checkpoint.done < len(checkpoint.keys):
            self.writer.after_commit(lambda: self._next_slice(checkpoint), urgent=False)
            return
        if checkpoint.seen is not None:
            changes.meta[SEEN_KEY] = _digests_text(checkpoint.seen)
        changes.processed_seq = checkpoint.position
        changes.defer_inbound_delete = True
        self.checkpoint_round = None

    def _next_slice(self, checkpoint: CheckpointRound) -> None:
        """Queue the next slice of ``checkpoint``, whose last slice is committed, at its
        share of ``CHECKPOINT_SPREAD`` (real time, as the checkpoints' interval is)."""
        if self.checkpoint_round is not checkpoint:
            return  # a full checkpoint has written the rest, and another round may be under way
        spread_s = self.config.daemon.checkpoint_interval_s * CHECKPOINT_SPREAD
        due_s = checkpoint.started_s + spread_s * checkpoint.done / len(checkpoint.keys)
        wait_s = due_s - time.monotonic()
        if wait_s <= 0:
            self.work.put_nowait(NEXT_SLICE)
        else:
            asyncio.get_running_loop().call_later(wait_s, self._next_slice, checkpoint)

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
        if isinstance(event, VitalSample | Observation):
            self._count_late(event, now)
        started = time.perf_counter()
        candidates = self.engine.handle(event, now)
        self._rule_s += time.perf_counter() - started
        self._rule_events += 1
        if isinstance(event, PumpReading | BagHung):
            bed = self._beds.get((event.ward, event.bed))
            if bed is None:
                # A pump of a bed whose patient left (or has no protocol yet): kept in
                # storage, judged by nothing, and said so.
                if self.desk is not None:
                    await self.desk.unwatched(event.ward, event.bed, "pump")
            else:
                point = dose_point(self.engine, bed, now, config=self.config)
                if point is not None:
                    self.sink.put(point)
        if candidates:
            await self.alerts.handle(candidates)
        if isinstance(event, PumpReading) and self.pump_silence is not None:
            await self.pump_silence.heard(event)
        for observer in self.observers:
            observer(event)
        if isinstance(event, Tick):
            self._tick_done.set()

    # --- daemon.health.Probes ----------------------------------------------------------

    def readiness(self) -> Readiness:
        """Recovered and serving, broker connected, store writable."""
        return Readiness(
            recovered=self.ready.is_set(),
            broker_connected=self.link.connected.is_set(),
            store_writable=not self.writer.failing,
        )

    def stalled_s(self) -> float:
        """How long the work item in processing has taken so far (0 when none is)."""
        busy_since = self._busy_since
        return 0.0 if busy_since is None else time.monotonic() - busy_since

    def gauges(self) -> list[Gauge | Histogram]:
        """Queue depths, backlogs, link states, open alerts, rule time and the alerts'
        latency, for /metrics."""
        open_alerts: dict[tuple[str, ...], float] = {}
        for alert in self.alerts.book.unordered():
            labels = (alert.priority.value, alert.state.value)
            open_alerts[labels] = open_alerts.get(labels, 0) + 1
        return [
            Gauge("wardd_up", "1 while the daemon runs", {(): 1}),
            Gauge(
                "wardd_ready",
                "1 once recovered, with the broker and the store usable",
                {(): float(self.readiness().ready)},
            ),
            Gauge("wardd_beds", "Beds this instance watches", {(): len(self.config.beds)}),
            Gauge(
                "wardd_work_queue_items", "Inputs and ticks waiting for the pipeline", {(): self.work.qsize()}
            ),
            Gauge(
                "wardd_inbound_in_flight",
                "Inputs received and not yet both processed and durable",
                {(): len(self._live)},
            ),
            Gauge(
                "wardd_stalled_seconds", "How long the input in processing has taken", {(): self.stalled_s()}
            ),
            Gauge(
                "wardd_mqtt_connected",
                "1 while the broker connection is up",
                {(): float(self.link.connected.is_set())},
            ),
            Gauge(
                "wardd_mqtt_outbox_messages",
                "Outgoing MQTT messages not yet confirmed",
                {(): self.link.pending},
            ),
            Gauge("wardd_store_writable", "0 while store commits fail", {(): float(not self.writer.failing)}),
            Gauge(
                "wardd_store_commits", "Store transactions committed", {(): self.writer.commits}, counter=True
            ),
            Gauge(
                "wardd_store_commit_seconds",
                "Time in store commits",
                {(): self.writer.commit_s},
                counter=True,
            ),
            Gauge(
                "wardd_point_outbox_bytes",
                "Points waiting for the time-series database",
                {(): self.sink.outbox_bytes},
            ),
            Gauge(
                "wardd_influx_degraded",
                "1 while the time-series database is unavailable",
                {(): float(self.sink.degraded)},
            ),
            Gauge(
                "wardd_alerts_open", "Open alerts by priority and state", open_alerts, ("priority", "state")
            ),
            Gauge("wardd_rule_events", "Events the rules were run on", {(): self._rule_events}, counter=True),
            Gauge("wardd_rule_seconds", "Time in the rules", {(): self._rule_s}, counter=True),
            self.alert_latency,
            *(gauge for source in self.more_gauges for gauge in source()),
        ]

    def _count_late(self, event: VitalSample | Observation, now: datetime) -> None:
        th = self._vital_thresholds.get(event.bed)
        if th is None:
            return  # not a configured bed: no rule judges it
        for rule in late_dropped(event, th, now):
            self.counters.inc(LATE_DROPPED, rule)

    async def _ticks(self) -> None:
        interval_s = self.config.daemon.tick_interval_s
        async for _ in every(self.clock, interval_s):
            # A tick reaches only the beds where it may change something, those due by
            # its time (``RuleEngine.due_beds``): most rules say when their ticks next
            # matter, so its work grows with the beds due, not with the ward.
            if self.engine.bed_count <= TICK_SLICE_BEDS:
                await self.emit(Tick(self.clock.now()))  # the engine takes the beds due
                continue
            beds = self.engine.due_beds(self.clock.now())
            # Many beds due (every bed at start-up), in slices: each slice is processed
            # before the next is queued, so inputs that arrive meanwhile wait for one
            # slice, not for the whole ward (at 5,000 beds a whole tick held the loop for
            # about half a second), and the slices are spread over part of the interval
            # (``TICK_SPREAD``). Each slice carries its own time: the inputs processed
            # between two slices are later.
            slices = [tuple(beds[i : i + TICK_SLICE_BEDS]) for i in range(0, len(beds), TICK_SLICE_BEDS)]
            slices = slices or [()]  # none due: still a tick, the clock of what else reads it
            start = self.clock.monotonic()
            gap_s = interval_s * TICK_SPREAD / len(slices)
            for n, part in enumerate(slices):
                wait_s = start + n * gap_s - self.clock.monotonic()
                if wait_s > 0:
                    await self.clock.sleep(wait_s)
                self._tick_done.clear()
                await self.emit(Tick(self.clock.now(), beds=part))
                await self._tick_done.wait()

    async def _counters(self) -> None:
        async for _ in every(self.clock, COUNTERS_INTERVAL_S):
            collect_frozen(self.counters)
            self.counters.rejections.flush()
            for point in self.counters.points(self.clock.now(), self.config.mqtt.client_id):
                self.sink.put(point)


def add_web(pipeline: Pipeline, settings: WebConfig) -> WardPage:
    """Serve the ward page with ``settings`` beside ``pipeline`` (a service; nothing runs yet)."""
    # aiohttp is imported only when a page is served.
    from daemon.web.server import WardPage  # noqa: PLC0415

    page = WardPage(
        settings,
        config=pipeline.config,
        engine=pipeline.engine,
        alerts=pipeline.alerts,
        clock=pipeline.clock,
        counters=pipeline.counters,
        writer=pipeline.writer,
    )
    pipeline.observers.append(page.observe)
    pipeline.config_listeners.append(page.use_config)
    if pipeline.desk is not None:
        page.admin_command = pipeline.admin_command
    pipeline.services.append(page)
    return page


def add_delivery(pipeline: Pipeline) -> DeliveryService:
    """Route the alerts to people and deliver the notices (README, "Routing and delivery")."""
    # Imported only when routes are configured (Apprise is a large library).
    from daemon.delivery.service import DeliveryService  # noqa: PLC0415

    service = DeliveryService(
        pipeline.config,
        alerts=pipeline.alerts,
        writer=pipeline.writer,
        clock=pipeline.clock,
        counters=pipeline.counters,
    )
    pipeline.services.append(service)
    pipeline.more_gauges.append(service.gauges)
    return service


def _add_staff_services(pipeline: Pipeline) -> None:
    """What the config asks for staff: the ward page, the routing of alerts to people (and
    the page's receipts endpoint for the receivers' gateways)."""
    page = add_web(pipeline, pipeline.config.web) if pipeline.config.web.enabled else None
    if pipeline.config.routes:
        delivery = add_delivery(pipeline)
        if page is not None:
            page.receipts = delivery.receipt


def _add_hl7_pumps(pipeline: Pipeline) -> None:
    """Watch the link health of the pumps a pump server reports (``driver = "hl7"``)."""
    pumps = hl7pump.Hl7Pumps.from_config(pipeline.config)
    if pumps.by_device:
        pipeline.pump_silence = hl7pump.PumpSilence(pumps, pipeline.clock, pipeline.emit)
        pipeline.services.append(pipeline.pump_silence)


def _unknown_bed(holder: Mapping[str, Pipeline]) -> Callable[[str], Awaitable[None]]:
    """What hears a message for a bed nobody watches: the admission desk's notice."""

    async def on_unknown_bed(topic: str) -> None:
        desk = holder["pipeline"].desk
        parts = topic.split("/")  # <prefix>/<ward>/bed/<bed>/<kind...>
        if desk is not None and len(parts) >= 5 and parts[2] == "bed":
            await desk.unwatched(parts[1], parts[3], "mqtt")

    return on_unknown_bed


def _bed_routes(
    router: TelemetryRouter,
    prefix: str,
    decoders: tuple[Decoder, Decoder, Decoder],
    beds: Sequence[BedConfig],
) -> tuple[Callable[[BedConfig], None], Callable[[BedConfig], None]]:
    """Route the topics of ``beds`` (vitals, observations, bag); and the functions that
    route another bed's and stop routing one's."""

    def bed_topics(bed: BedConfig) -> list[tuple[str, Route]]:
        names = (topics.vitals, topics.observations, topics.bag)
        return [
            (name(prefix, bed.ward, bed.id), Route(bed.ward, bed.id, decoder))
            for name, decoder in zip(names, decoders, strict=True)
        ]

    def route(bed: BedConfig) -> None:
        for topic, bed_route in bed_topics(bed):
            router.add(topic, bed_route)

    def unroute(bed: BedConfig) -> None:
        for topic, _ in bed_topics(bed):
            router.remove(topic)

    for bed in beds:
        route(bed)
    return route, unroute


def build(
    config: Config,
    *,
    clock: Clock | None = None,
    counters: Counters | None = None,
    clean_session: bool = False,
    probes: str | None = None,
    part: partition.Partition | None = None,
) -> Pipeline:
    """Turn a validated config into a pipeline (nothing runs until ``Pipeline.run``).

    ``clean_session`` is for throw-away runs (demo, scenarios): the broker then keeps
    no session for the daemon's client id after it leaves. ``probes``: a worker's
    private socket, where it serves its health probes for the supervisor
    (``daemon.supervisor``) instead of on ``health.port``. ``part``: the worker's
    partition (its config as ``partition.for_partition`` gave it), whose lane of delivery
    numbers its store gives.
    """
    clock = clock or SystemClock()
    counters = counters or Counters()
    state_dir = config.daemon.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    writer = StoreWriter(
        Store(
            config.daemon.store_path,
            synchronous=config.daemon.store_synchronous,
            lane=ONE_LANE if part is None else Lane(part.index, part.count),
        ),
        # The log line says what failed; the counter makes a failing disk visible in metrics.
        on_error=lambda detail: counters.inc("store.errors", "commit") if detail else None,
        commit_gap_s=config.daemon.store_commit_gap_s,
    )
    # Admissions at run time (one worker): the file's beds overlaid with those admitted since.
    # Pumps stay with the bed the file gives them, whoever lies there.
    pump_wards = {bed.id: bed.ward for bed in config.beds}
    config, ward = admitted(config, writer.store, writer) if config.daemon.workers == 1 else (config, None)
    influx = config.influx
    secret = influx.token.resolve() if influx.api == "v2" else influx.password.resolve()
    holder: dict[str, Pipeline] = {}

    async def on_storage_health(health: Health, detail: str) -> None:
        await holder["pipeline"].link_health("storage", health, detail)

    async def on_broker_health(health: Health, detail: str) -> None:
        await holder["pipeline"].link_health("mqtt", health, detail)

    async def on_message(topic: str, payload: bytes, ack: Ack) -> None:
        await holder["pipeline"].on_message(topic, payload, ack)

    async def process(event: Event) -> None:
        await holder["pipeline"].process(event)

    sink = InfluxSink(
        influx,
        make_writer(influx, secret, state_dir),
        writer,
        counters=counters,
        clock=clock,
        on_health=on_storage_health,
    )
    prefix = config.mqtt.topic_prefix
    # Decoded events go straight to processing: their message is already in the store.
    router = TelemetryRouter({}, process, counters, clock.now, on_unknown=_unknown_bed(holder))
    max_bytes = config.mqtt.max_payload_bytes
    decode_vitals = vitals_decoder(counters, max_bytes, config.mqtt.max_future_skew_s)

    def decode_observation(payload: bytes, ward: str, bed: str, where: str, now: datetime) -> list[Event]:
        return [parse_observation(payload, ward, bed, where, now, max_bytes=max_bytes)]

    def decode_bag(payload: bytes, ward: str, bed: str, where: str, now: datetime) -> list[Event]:
        return [parse_bag(payload, ward, bed, where, max_bytes=max_bytes)]

    route, unroute = _bed_routes(router, prefix, (decode_vitals, decode_observation, decode_bag), config.beds)
    subscriptions = partition.subscriptions(config)
    status_topic = topics.daemon_status(prefix, config.mqtt.client_id)
    link = MqttLink(
        config.mqtt,
        password=config.mqtt.password.resolve(),
        subscriptions=subscriptions,
        on_message=on_message,
        counters=counters,
        clock=clock,
        clean_session=clean_session,
        on_health=on_broker_health,
        command=lambda topic: is_ack_topic(topic) or is_admin_topic(topic),
        will=last_will(config.health, status_topic, config.mqtt.client_id),
    )
    publisher = DurablePublisher(writer, link)
    link.on_delivered = publisher.delivered
    alerts = AlertService.from_config(
        config, publisher=publisher, sink=sink, clock=clock, counters=counters, writer=writer
    )
    pumps = [PumpSource(pump, pump_wards[pump.bed], clock, counters) for pump in config.pumps if pump.serial]
    capture_writer = CaptureWriter(config.daemon.capture, config) if config.daemon.capture else None
    pipeline = Pipeline(
        config=config,
        clock=clock,
        counters=counters,
        engine=build_rules(config, counters=counters),
        writer=writer,
        sink=sink,
        link=link,
        publisher=publisher,
        router=router,
        alerts=alerts,
        pumps=pumps,
        capture=capture_writer,
        seen=RecentDigests(max(DEDUP_CAPACITY, 4 * config.daemon.max_inflight_messages)),
    )
    holder["pipeline"] = pipeline
    pipeline.desk = (
        None
        if ward is None
        else AdmissionDesk(pipeline, ward, rules_for=bed_rules, route=route, unroute=unroute)
    )
    _add_staff_services(pipeline)
    pipeline.services.append(Heartbeat(config.health, link, status_topic, config.mqtt.client_id, clock))
    if config.health.port is not None or probes is not None:
        from daemon.web.probes import HealthServer  # noqa: PLC0415 -- aiohttp only when served

        pipeline.services.append(HealthServer(config.health, pipeline, counters, private=probes))
    if config.hl7.port is not None:
        pipeline.services.append(MllpListener(config.hl7, pipeline.on_hl7, counters))
        _add_hl7_pumps(pipeline)
    interval_s = watchdog_interval_s()
    if interval_s is not None:
        pipeline.services.append(Watchdog(interval_s, pipeline, config.health.stall_after_s, counters))
    return pipeline
