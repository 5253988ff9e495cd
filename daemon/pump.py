"""Infusion pumps over a serial line: the NE-1000 driver, the driver registry, the source.

The driver contract, the serial line every driver uses and the request/reply loop
(retries, strays) are in ``daemon.devices.pumplink``; each other vendor's codec and
driver in its own module (``daemon.devices.alaris``).

::

    serial URL --(PumpDriver: open/read/close)--> PumpSource --emit--> PumpReading
                                                             \\-----> SourceHealth

The daemon only reads a pump. It never starts, stops or reprograms one. The only
NE-1000 commands it sends are queries (status, ``RAT``, ``DIS``) and, when the site
configures safe mode, ``SAF<n>``. A query also acknowledges a pending NE-1000 alarm,
because the pump takes any valid command as acknowledgement. That changes nothing
about the infusion.

A line misbehaves in many ways: garbage, partial frames, bad CRCs, replies from
another address, timeouts, slow replies, a port that vanishes. Each fault is counted
under ``pump.<id>`` with a stable reason and logged with its bytes in hex (WARNING
the first time per reason per link episode, DEBUG after that). Commands are
retried a bounded number of times. A lost port is reopened with capped, jittered
exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from daemon.clock import Clock, every
from daemon.config import PumpConfig
from daemon.devices.alaris import alaris_driver
from daemon.devices.fresenius import fresenius_driver
from daemon.devices.ne1000 import (
    CommandError,
    Decoded,
    Reply,
    ReplyDecoder,
    Status,
    encode_command,
    parse_dispensed,
    parse_rate,
)
from daemon.devices.pumplink import (
    DriverFactory,
    Exchanger,
    FaultHandler,
    LinkClosedError,
    Miss,
    NoReplyError,
    PumpDriver,
    PumpStatus,
    ReadingPendingError,
    SerialLine,
)
from daemon.errors import FrameError
from daemon.events import Emit, Health, PumpReading, PumpState, SourceHealth
from daemon.metrics import Counters
from daemon.points import FieldValue, Point

log = logging.getLogger(__name__)

MAX_LOGGED_BYTES = 64
MAX_FAULT_CHARS = 160  # the last fault as a lost link's alert says it

_STATES = {
    Status.INFUSING: PumpState.INFUSING,
    Status.WITHDRAWING: PumpState.WITHDRAWING,
    Status.STOPPED: PumpState.STOPPED,
    Status.PAUSED: PumpState.PAUSED,
    Status.PAUSE_PHASE: PumpState.WAITING,
    Status.TRIGGER_WAIT: PumpState.WAITING,
    Status.PURGING: PumpState.PURGING,
    Status.ALARM: PumpState.ALARM,
}

# Faults after which the same command is re-sent at once; after the others (stray
# bytes, a neighbour's reply on a shared line) our own reply may still be coming.
_RETRY_NOW = frozenset(
    {"bad_crc", "truncated", "bad_length", "unknown_status", "unknown_alarm", "unknown_error"}
)


class NE1000Driver:
    """The New Era NE-500/NE-1000 protocol (``daemon.devices.ne1000``) over pyserial-asyncio-fast."""

    def __init__(self, pump: PumpConfig, clock: Clock, on_fault: FaultHandler) -> None:
        """One driver for one open of ``pump.url``; faults go to ``on_fault``."""
        self._pump = pump
        self._on_fault = on_fault
        self._where = f"pump[{pump.id}] {pump.url}"
        self._safe = pump.safe_mode_timeout_s > 0
        self._safe_confirmed = False
        self._line: SerialLine[Decoded] = SerialLine(
            pump, ReplyDecoder(address=pump.address, where=self._where), self._where
        )
        self._exchanger: Exchanger[Decoded] = Exchanger(
            pump, clock, self._where, on_fault, retry_now=_RETRY_NOW, stray=self._stray
        )

    async def open(self) -> None:
        """Open the port; in safe mode, send ``SAF<n>`` (retried on later polls if unanswered)."""
        await self._line.open()
        if self._safe:
            with contextlib.suppress(NoReplyError):
                await self._enable_safe_mode()

    async def _enable_safe_mode(self) -> None:
        # The pump recognises a safe-mode packet in either mode, so SAF always goes as one.
        await self._exchange(f"SAF{self._pump.safe_mode_timeout_s}")
        self._safe_confirmed = True

    async def close(self) -> None:
        """Stop reading and close the port."""
        await self._line.close()

    async def read(self) -> PumpStatus:
        """Status, rate (``RAT``) and volume infused (``DIS``) in one poll."""
        if self._safe and not self._safe_confirmed:
            await self._enable_safe_mode()
        status_reply = await self._exchange("")
        rate_reply = await self._exchange("RAT")
        dis_reply = await self._exchange("DIS")
        alarm = next((r.alarm for r in (status_reply, rate_reply, dis_reply) if r.alarm is not None), None)
        rate_ml_per_h = self._value(rate_reply, lambda data: parse_rate(data, self._where).ml_per_h)
        volume_ml = self._value(dis_reply, lambda data: parse_dispensed(data, self._where).infused_ml)
        state = PumpState.ALARM if alarm is not None else _STATES[status_reply.status]
        return PumpStatus(state, rate_ml_per_h, volume_ml, alarm.value if alarm is not None else None)

    def _value(self, reply: Reply, parse: Callable[[str], float]) -> float | None:
        if reply.alarm is not None or reply.error is not None:
            # An alarm answers instead of the query; an error reply carries no value.
            if reply.error is not None:
                self._fault(FrameError("error_reply", f"pump answered {reply.error.value}", self._where), b"")
            return None
        try:
            return parse(reply.data)
        except FrameError as exc:
            self._fault(exc, reply.data.encode("ascii", "backslashreplace"))
            return None

    def _fault(self, error: FrameError, raw: bytes) -> None:
        self._on_fault(error, raw)

    def _stray(self, item: Decoded) -> FrameError:
        # A frame arrived unasked: a pushed safe-mode alarm, a late reply to an earlier attempt.
        return FrameError("unsolicited", "reply nobody asked for (ignored)", self._where)

    async def _exchange(self, command: str) -> Reply:
        safe = self._safe or command.startswith("SAF")
        frame = encode_command(command, self._pump.address, safe=safe)
        shown = command or "status"

        def match(item: Decoded) -> Reply | Miss:
            reply = item.reply
            assert reply is not None  # a Decoded holds a reply or an error
            if self._safe and not reply.safe and not command.startswith("SAF"):
                return Miss(FrameError("wrong_mode", "unprotected reply in safe mode", self._where))
            if reply.error is CommandError.COMMUNICATION:
                # The pump saw our packet corrupted: send it again.
                return Miss(
                    FrameError("pump_saw_bad_packet", f"pump answered ?COM to {shown}", self._where),
                    resend=True,
                )
            return reply

        try:
            return await self._exchanger.ask(self._line, frame, shown, match)
        except NoReplyError:
            self._safe_confirmed = False
            raise


def ne1000_driver(pump: PumpConfig, clock: Clock, on_fault: FaultHandler) -> PumpDriver:
    """The ``DriverFactory`` for ``driver = "ne1000"``."""
    return NE1000Driver(pump, clock, on_fault)


DRIVERS: dict[str, DriverFactory] = {
    "ne1000": ne1000_driver,
    "alaris-asena": alaris_driver,
    "fresenius-base-a": fresenius_driver,
}


class PumpSource:
    """Polls one pump and emits ``PumpReading`` and ``SourceHealth`` events.

    Guarantees: ``CONNECTED`` is emitted at the first valid reply, and again at the
    first after a loss; ``LOST`` once the pump has given no valid reply for
    ``comm_lost_after_s`` (counted from the start, so a pump never reached is lost
    too); events of one source are emitted in order; cancelling ``run`` closes the
    port and emits nothing more.
    """

    def __init__(
        self,
        pump: PumpConfig,
        ward: str,
        clock: Clock,
        counters: Counters,
        *,
        driver_factory: DriverFactory | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``driver_factory`` defaults to the one named by ``pump.driver``; ``rng`` is for jitter."""
        self.pump = pump
        self.ward = ward
        self.name = f"pump[{pump.id}]"
        self._clock = clock
        self._counters = counters
        self._factory = driver_factory or DRIVERS[pump.driver]
        self._rng = rng or random.Random()
        self._counter = f"pump.{pump.id}"
        self._health: Health | None = None
        self._last_valid_s = 0.0
        self._logged: set[str] = set()
        self._last_fault: str | None = None  # since the last valid reply: said when the link is lost
        self._emit_lock = asyncio.Lock()

    @property
    def health(self) -> Health | None:
        """The last health emitted (``None`` before any)."""
        return self._health

    async def run(self, emit: Emit) -> None:
        """Poll until cancelled."""
        self._last_valid_s = self._clock.monotonic()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watchdog(emit), name=f"{self.name}.watchdog")
            await self._poll(emit)

    def backoff_s(self, attempt: int) -> float:
        """Delay before reopening after ``attempt`` failures in a row: capped, with equal jitter."""
        cap = min(self.pump.reconnect_max_s, self.pump.reconnect_min_s * 2.0 ** min(attempt, 30))
        return cap / 2 + self._rng.uniform(0, cap / 2)

    async def _poll(self, emit: Emit) -> None:
        failures = 0
        while True:
            driver = self._factory(self.pump, self._clock, self._fault)
            try:
                await driver.open()
                log.info("%s: opened %s", self.name, self.pump.url)
                async for _ in every(self._clock, self.pump.poll_interval_s):
                    try:
                        status = await driver.read()
                    except NoReplyError as exc:
                        log.debug("%s", exc)
                        continue
                    except ReadingPendingError as exc:
                        log.debug("%s", exc)
                        failures = 0
                        await self._answers(emit)
                        continue
                    failures = 0
                    await self._valid(emit, status)
            except LinkClosedError as exc:
                self._fault(FrameError("link_closed", str(exc), self.pump.line), b"")
            finally:
                await driver.close()
            delay = self.backoff_s(failures)
            failures += 1
            await self._clock.sleep(delay)

    async def _answers(self, emit: Emit) -> None:
        """The pump answered validly (with or without a reading): the link is alive."""
        self._last_valid_s = self._clock.monotonic()
        self._last_fault = None
        async with self._emit_lock:
            await self._connected(emit)

    async def _connected(self, emit: Emit) -> None:
        if self._health is not Health.CONNECTED:
            self._health = Health.CONNECTED
            self._logged.clear()
            log.info("%s: pump answers", self.name)
            await emit(SourceHealth(self.ward, self.pump.bed, self.name, self._clock.now(), Health.CONNECTED))

    async def _valid(self, emit: Emit, status: PumpStatus) -> None:
        self._last_valid_s = self._clock.monotonic()
        self._last_fault = None
        now = self._clock.now()
        async with self._emit_lock:
            await self._connected(emit)
            await emit(
                PumpReading(
                    ward=self.ward,
                    bed=self.pump.bed,
                    pump=self.pump.id,
                    time=now,
                    state=status.state,
                    rate_ml_per_h=status.rate_ml_per_h,
                    volume_infused_ml=status.volume_infused_ml,
                    alarm=status.alarm,
                )
            )

    async def _watchdog(self, emit: Emit) -> None:
        lost_after_s = self.pump.comm_lost_after_s
        while True:
            deadline = self._last_valid_s + lost_after_s
            now_s = self._clock.monotonic()
            if now_s < deadline:
                await self._clock.sleep(deadline - now_s)
                continue
            async with self._emit_lock:
                if (
                    self._health is not Health.LOST
                    and self._clock.monotonic() >= self._last_valid_s + lost_after_s
                ):
                    self._health = Health.LOST
                    detail = f"no valid reply for {lost_after_s:g} s"
                    if self._last_fault is not None:
                        # What the pump or the line said last: a vendor error code's
                        # meaning (a module off its base, a refused frame) reaches the alert.
                        detail += f"; last fault: {self._last_fault}"
                    log.warning("%s: %s", self.name, detail)
                    await emit(
                        SourceHealth(
                            self.ward, self.pump.bed, self.name, self._clock.now(), Health.LOST, detail
                        )
                    )
            await self._clock.sleep(lost_after_s)

    def _fault(self, error: FrameError, raw: bytes) -> None:
        self._counters.inc(self._counter, error.reason)
        fault = f"{error.reason}: {error.detail}"
        # It reaches an alert's details: bounded, whatever a pump sent.
        self._last_fault = fault if len(fault) <= MAX_FAULT_CHARS else fault[: MAX_FAULT_CHARS - 3] + "..."
        shown = raw[:MAX_LOGGED_BYTES].hex(" ") + ("..." if len(raw) > MAX_LOGGED_BYTES else "")
        level = logging.DEBUG if error.reason in self._logged else logging.WARNING
        self._logged.add(error.reason)
        log.log(level, "%s: %s; bytes: [%s]", self.name, error, shown)


def reading_point(reading: PumpReading) -> Point:
    """A reading as an ``infusion`` point (fields the pump did not report are left out)."""
    fields: dict[str, FieldValue] = {"state": reading.state.value}
    if reading.rate_ml_per_h is not None:
        fields["rate_ml_per_h"] = float(reading.rate_ml_per_h)
    if reading.volume_infused_ml is not None:
        fields["volume_infused_ml"] = float(reading.volume_infused_ml)
    if reading.alarm is not None:
        fields["alarm"] = reading.alarm
    return Point(
        "infusion", {"ward": reading.ward, "bed": reading.bed, "pump": reading.pump}, fields, reading.time
    )


__all__ = [
    "DRIVERS",
    "DriverFactory",
    "FaultHandler",
    "LinkClosedError",
    "NE1000Driver",
    "NoReplyError",
    "PumpDriver",
    "PumpSource",
    "PumpStatus",
    "ReadingPendingError",
    "reading_point",
]
