"""What every pump driver shares: the driver contract, the serial line under it, and
the request/reply loop over that line (send, await the answer, retry).

``daemon.pump`` holds the polling source and the NE-1000 driver; each other vendor's
module (``daemon.devices.alaris``, ``daemon.devices.fresenius``) holds its codec and
driver. Both sides import this module, never each other. A driver gives the loop only
what its protocol decides: which decoding errors call for sending again at once, what
a frame nobody asked for means, and which item is the answer. Here too: the judgement
of infusing or stopped from the volume infused, for protocols that do not report it.
"""

from __future__ import annotations

import asyncio
import contextlib
import termios
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import serial_asyncio_fast

from daemon.clock import Clock
from daemon.config import PumpConfig
from daemon.errors import DeviceError, FrameError
from daemon.events import PumpState

READ_CHUNK_BYTES = 256


@dataclass(frozen=True, slots=True)
class PumpStatus:
    """What one poll learned from a pump. ``None`` means the pump did not say."""

    state: PumpState
    rate_ml_per_h: float | None
    volume_infused_ml: float | None
    alarm: str | None = None  # vendor alarm code


class LinkClosedError(DeviceError):
    """The port could not be opened or went away; the source reopens it."""


class NoReplyError(DeviceError):
    """No valid reply after every retry; the port stays open."""


class ReadingPendingError(DeviceError):
    """The pump answered validly, but one poll is not enough for a reading yet.

    The source counts the link as alive and emits no reading (a protocol that does not
    report whether the pump runs needs two samples of its volume to tell).
    """


FaultHandler = Callable[[FrameError, bytes], None]
"""Told about every bad or missing reply, with the bytes concerned (may be empty)."""


class PumpDriver(Protocol):
    """A vendor protocol. One instance serves one open of one port.

    Guarantees a driver gives: ``read`` is only called after ``open`` returned;
    ``read`` raises ``LinkClosedError`` when the port is gone (the caller makes a
    new driver), ``NoReplyError`` when the pump did not answer validly and
    ``ReadingPendingError`` when it answered but a reading needs another poll;
    every bad reply is reported to the fault handler before ``read`` returns or
    raises; ``close`` is idempotent and never raises; nothing a driver sends
    changes the infusion.
    """

    async def open(self) -> None:
        """Open the port and prepare the link; ``LinkClosedError`` if impossible."""
        ...

    async def read(self) -> PumpStatus:
        """Poll the pump once."""
        ...

    async def close(self) -> None:
        """Release the port."""
        ...


DriverFactory = Callable[[PumpConfig, Clock, FaultHandler], PumpDriver]


@dataclass(frozen=True, slots=True)
class Closed:
    """The reader saw the port close."""

    reason: str


Item = TypeVar("Item")


class StreamDecoder(Protocol[Item]):
    """A vendor's incremental decoder: bytes in, frames or errors out, never raising."""

    def feed(self, data: bytes) -> list[Item]:
        """Add bytes; return every item now complete."""
        ...

    def flush(self) -> list[Item]:
        """End the stream: pending bytes become an error item."""
        ...


class SerialLine(Generic[Item]):
    """One open port: a reader task feeding a vendor decoder into a queue of items.

    A driver sends a frame, then awaits items until its deadline; whatever arrived
    before it sent (``take_stale``) is not the answer. ``answer``, when given, is asked
    about every item as it arrives and what it returns is written at once, before the
    item is queued: a protocol's link-level acknowledgements and keep-alive answers
    cannot wait for the next poll. Once the reader sees the port close, every later
    call raises ``LinkClosedError``.
    """

    def __init__(
        self,
        pump: PumpConfig,
        decoder: StreamDecoder[Item],
        where: str,
        answer: Callable[[Item], bytes] | None = None,
    ) -> None:
        """The line of ``pump`` (URL and settings), decoded by ``decoder``."""
        self._pump = pump
        self._decoder = decoder
        self._where = where
        self._answer = answer
        self._items: asyncio.Queue[Item | Closed] = asyncio.Queue()
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self.closed: Closed | None = None

    async def open(self) -> None:
        """Open the port with the pump's line settings; ``LinkClosedError`` if impossible."""
        try:
            reader, writer = await serial_asyncio_fast.open_serial_connection(
                url=self._pump.url,
                baudrate=self._pump.baudrate,
                bytesize=self._pump.bytesize,
                parity=self._pump.parity,
                stopbits=self._pump.stopbits,
            )
        except (OSError, ValueError, termios.error) as exc:
            # pyserial's SerialException is an OSError; ValueError is a bad setting; a
            # termios error is a setting the device refuses (a pseudo-terminal cannot
            # carry 7 data bits with parity, for one).
            raise LinkClosedError(f"{self._where}: cannot open: {exc}") from exc
        self._writer = writer
        self._reader_task = asyncio.create_task(self._read_loop(reader), name=f"pump[{self._pump.id}].read")

    @property
    def is_open(self) -> bool:
        """Whether the port is open and the reader has not seen it close."""
        return self._writer is not None and self.closed is None and not self._writer.transport.is_closing()

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                data = await reader.read(READ_CHUNK_BYTES)
            except OSError as exc:
                # A USB adapter unplugged or a pty master closed: EIO.
                self._items.put_nowait(Closed(f"read failed: {exc}"))
                return
            if not data:
                self._items.put_nowait(Closed("port closed (end of file)"))
                return
            for item in self._decoder.feed(data):
                if self._answer is not None and self._writer is not None:
                    reply = self._answer(item)
                    if reply:
                        self._writer.write(reply)
                self._items.put_nowait(item)

    async def close(self) -> None:
        """Stop reading and close the port (idempotent, never raises)."""
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    def send(self, data: bytes) -> None:
        """Write one frame; ``LinkClosedError`` if the port is gone."""
        writer = self._writer
        if self.closed is not None:
            raise LinkClosedError(f"{self._where}: {self.closed.reason}")
        if writer is None or writer.transport.is_closing():
            raise LinkClosedError(f"{self._where}: port is closed")
        writer.write(data)

    def take_stale(self) -> list[Item]:
        """Every item that arrived unasked; ``LinkClosedError`` if the port closed meanwhile."""
        out: list[Item] = []
        while not self._items.empty():
            item = self._items.get_nowait()
            if isinstance(item, Closed):
                self.closed = item
            else:
                out.append(item)
        if self.closed is not None and not out:
            raise LinkClosedError(f"{self._where}: {self.closed.reason}")
        return out

    def flush(self) -> list[Item]:
        """What the decoder still holds, as error items (after a timeout)."""
        return self._decoder.flush()

    async def next_item(self, clock: Clock, deadline: float) -> Item | Closed | None:
        """The next item, or ``None`` at ``deadline`` (``clock.monotonic`` time)."""
        remaining = deadline - clock.monotonic()
        if remaining <= 0:
            return None
        getter = asyncio.ensure_future(self._items.get())
        timer = asyncio.ensure_future(clock.sleep(remaining))
        try:
            await asyncio.wait({getter, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            getter.cancel()
            timer.cancel()
        if getter.done() and not getter.cancelled():
            item = getter.result()
            if isinstance(item, Closed):
                self.closed = item
            return item
        return None


class LineItem(Protocol):
    """What every vendor decoder's item tells: the bytes it covers, and what was wrong with them."""

    @property
    def raw(self) -> bytes:
        """The bytes of the line this item covers."""
        ...

    @property
    def error(self) -> FrameError | None:
        """Why these bytes are no frame (``None`` for a frame or a link control)."""
        ...


LineItemT = TypeVar("LineItemT", bound=LineItem)
Answer = TypeVar("Answer")


@dataclass(frozen=True, slots=True)
class Miss:
    """An item that is not the answer awaited: the fault it shows, and what to do next."""

    fault: FrameError | None = None  # counted against the item's bytes; None: nothing wrong
    resend: bool = False  # the pump lost or refused our frame: send it again at once, else wait on


class Exchanger(Generic[LineItemT]):
    """The request/reply loop of one driver: send a command, await its answer, retry.

    A command goes out after everything that arrived unasked is reported as a stray.
    Then items are awaited until the reply timeout: a decoding error is counted, and
    sends the command again at once if its reason is one of ``retry_now`` (the
    answer was corrupted, so it will not come) or else is waited past (stray bytes, a
    neighbour's frame: ours may still come); every other item goes to the command's
    ``match``, which returns the answer or a ``Miss``. At the timeout what the decoder
    still holds is reported as a stray and a ``timeout`` counted. After the last
    attempt ``NoReplyError``; ``LinkClosedError`` as soon as the line closes.

    ``stray`` says what a frame without a decoding error that nobody asked for shows
    (``None``: nothing worth counting, such as a link control). Every fault goes to
    ``on_fault`` with the bytes concerned, before ``ask`` returns or raises.
    """

    def __init__(
        self,
        pump: PumpConfig,
        clock: Clock,
        where: str,
        on_fault: FaultHandler,
        *,
        retry_now: frozenset[str],
        stray: Callable[[LineItemT], FrameError | None],
    ) -> None:
        """The loop of ``pump`` (retries, reply timeout) for the driver at ``where``."""
        self._pump = pump
        self._clock = clock
        self._where = where
        self._on_fault = on_fault
        self._retry_now = retry_now
        self._stray = stray

    async def ask(
        self,
        line: SerialLine[LineItemT],
        frame: bytes,
        shown: str,
        match: Callable[[LineItemT], Answer | Miss],
        attempts: int | None = None,
    ) -> Answer:
        """Send ``frame`` until ``match`` accepts a reply (``shown`` names it in faults).

        ``attempts`` defaults to ``pump.retries + 1``.
        """
        tries = self._pump.retries + 1 if attempts is None else attempts
        for _ in range(tries):
            # Whatever arrived unasked (a pushed alarm, a late reply to an earlier
            # attempt) must not be taken for the answer to this one.
            self._strays(line.take_stale())
            line.send(frame)
            deadline = self._clock.monotonic() + self._pump.reply_timeout_s
            while True:
                item = await line.next_item(self._clock, deadline)
                if item is None:
                    self._strays(line.flush())
                    self._on_fault(FrameError("timeout", f"no reply to {shown}", self._where), b"")
                    break
                if isinstance(item, Closed):
                    raise LinkClosedError(f"{self._where}: {item.reason}")
                if item.error is not None:
                    self._on_fault(item.error, item.raw)
                    if item.error.reason in self._retry_now:
                        break
                    continue
                verdict = match(item)
                if not isinstance(verdict, Miss):
                    return verdict
                if verdict.fault is not None:
                    self._on_fault(verdict.fault, item.raw)
                if verdict.resend:
                    break
        raise NoReplyError(f"{self._where}: no valid reply to {shown} after {tries} attempt(s)")

    def _strays(self, items: list[LineItemT]) -> None:
        for item in items:
            fault = item.error if item.error is not None else self._stray(item)
            if fault is not None:
                self._on_fault(fault, item.raw)


class InfusionTracker:
    """Tells whether a pump infuses from its volume infused, for protocols that do not say.

    The volume grew since the last sample: the pump infuses. It stayed put over a
    time in which the reported rate would have moved it by at least
    ``STEPS_FOR_STOPPED`` steps of the reply's resolution: it has stopped. In between
    nothing can be told and the last answer stands (``None`` before the first).
    """

    STEPS_FOR_STOPPED = 2.0  # one step may hide in the pump's rounding

    def __init__(self) -> None:
        """No sample yet."""
        self._base_s: float | None = None
        self._base_ml = 0.0
        self.state: PumpState | None = None

    def observe(
        self, t_s: float, volume_ml: float, resolution_ml: float, rate_ml_per_h: float
    ) -> PumpState | None:
        """A new sample at monotonic ``t_s``; the state it shows, or ``None`` if not yet known."""
        if self._base_s is None or volume_ml < self._base_ml:
            # First sample, or the counter was cleared (a new bag): a new baseline.
            self._base_s, self._base_ml = t_s, volume_ml
            if rate_ml_per_h <= 0:
                self.state = PumpState.STOPPED
            return self.state
        if volume_ml > self._base_ml:
            self._base_s, self._base_ml = t_s, volume_ml
            self.state = PumpState.INFUSING
        elif rate_ml_per_h <= 0:
            # Nothing can flow at a rate of zero, whatever the pump's state.
            self._base_s = t_s
            self.state = PumpState.STOPPED
        elif rate_ml_per_h * (t_s - self._base_s) / 3600.0 >= self.STEPS_FOR_STOPPED * resolution_ml:
            self._base_s = t_s
            self.state = PumpState.STOPPED
        return self.state
