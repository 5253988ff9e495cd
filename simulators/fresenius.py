"""A Fresenius Kabi Base A with 1 to 6 docked syringe pumps on a pseudo-terminal.

It speaks the protocol of ``docs/pump-protocols.md`` (codec in ``daemon.devices.fresenius``):
ACK or NAK to every frame, ``DC`` / ``FC`` sessions (the base's first), ``LE`` reads of
the module map (``b``, ``i``) and of each module's rate (``d``) and volume infused
(``r``), error replies with the protocol's codes, its ENQ keep-alive (when
``enq_interval_s`` is set; a keep-alive not answered with DC4 in time closes every
session) and spontaneous messages that a host must acknowledge. Where the sources
are silent the behaviour is the simulator's choice, marked as such in the docs.

Each module follows a pump program (rate, start, stop, pause, alarm, cable pulled);
while a module's alarm lasts it answers reads with ``12`` ("presence of an alarm",
the simulator's choice). The line can be broken on demand: garbage, dropped, delayed, split or corrupted
replies, keep-alives that go unheard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from daemon.clock import Clock
from daemon.devices.fresenius import (
    ACK,
    BASE,
    DC4,
    ENQ,
    NAK,
    Command,
    FrameDecoder,
    Status,
    Variable,
    encode_frame,
    parse_host_command,
)
from daemon.devices.pump_alarms import FRESENIUS_ALARM_ERROR
from daemon.errors import FrameError
from simulators.ptyport import PtyPort

log = logging.getLogger(__name__)

BAUD_RATE = 19200
MAX_MODULES = 6  # the Base A holds up to six pumps (the range)
HEX_DIGITS = 4  # "0064": the simulator's choice; infupy reads any number of hex digits
# Error codes the simulator answers with (their meanings are in daemon.devices.fresenius).
UNKNOWN_COMMAND = "01"
SYNTAX_ERROR = "04"
BASE_SESSION_NOT_OPEN = "0D"
MODULE_IMPOSSIBLE = "0E"
MODULE_SESSION_NOT_OPEN = "1E"


class BaseFault(StrEnum):
    """Ways to spoil one reply (``SimulatedBase.spoil``)."""

    BAD_CRC = "bad_crc"  # one checksum digit changed
    PARTIAL = "partial"  # only the first half, no ETX
    SPLIT = "split"  # sent in two pieces, 50 ms apart
    GARBAGE_BEFORE = "garbage_before"  # noise bytes, then the reply


@dataclass
class Module:
    """One docked syringe pump."""

    rate_ml_per_h: float = 10.0
    running: bool = False
    infused_ml: float = 0.0
    alarm: str | None = None
    session: bool = False
    last_update_s: float = 0.0
    spontaneous_acks: list[str] = field(default_factory=list)


class SimulatedBase:
    """A Base A on its own pseudo-terminal; ``modules`` maps index (1-6) to ``Module``.

    Use as ``async with SimulatedBase(clock=..., modules=2) as base:``; ``base.link``
    (or ``base.device_path``) is what a host opens.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        link: Path | None = None,
        modules: int = 1,
        rate_ml_per_h: float = 10.0,
        running: bool = False,
        enq_interval_s: float | None = None,
        enq_timeout_s: float = 0.5,
    ) -> None:
        """A base with ``modules`` pumps at ``rate_ml_per_h`` (infusing if ``running``)."""
        if not 1 <= modules <= MAX_MODULES:
            raise ValueError(f"a base holds 1 to {MAX_MODULES} modules, got {modules}")
        self.clock = clock
        self.modules = {
            i: Module(rate_ml_per_h, running, last_update_s=clock.monotonic()) for i in range(1, modules + 1)
        }
        self.base_session = False
        self.enq_interval_s = enq_interval_s
        self.enq_timeout_s = enq_timeout_s
        self.deaf_to_keepalives = False
        self.keepalives_answered = 0
        self.keepalives_missed = 0
        self.acks_received = 0
        self.naks_received = 0
        self.refuse_with: str | None = None  # a NAK code: every frame refused with it
        self.commands_seen: list[str] = []
        self.sessions_ended = asyncio.Event()  # set whenever every session ends (tests clear it)
        self._dc4 = asyncio.Event()
        self._decoder = FrameDecoder("sim-base")
        self._faults: deque[BaseFault] = deque()
        self._keepalive: asyncio.Task[None] | None = None
        self.port = PtyPort(
            clock=clock, baudrate=BAUD_RATE, link=link, on_bytes=self._on_bytes, name="sim-base"
        )

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> SimulatedBase:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> str:
        """Create the pty (and the link), start serving; return the device path."""
        path = await self.port.start()
        if self.enq_interval_s is not None:
            self._keepalive = asyncio.create_task(self._ask_keepalive(), name="sim-base.enq")
        return path

    async def close(self) -> None:
        """Stop serving and remove the pty and the link."""
        task, self._keepalive = self._keepalive, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.port.stop()
        self._decoder.flush()

    @property
    def link(self) -> Path | None:
        """The symbolic link to the pty, if any."""
        return self.port.link

    @property
    def device_path(self) -> str:
        """The pty a host opens."""
        return self.port.device_path

    @property
    def connected(self) -> bool:
        """Whether the pty exists (``disconnect`` removes it)."""
        return self.port.connected

    async def disconnect(self) -> None:
        """The cable is pulled: the pty vanishes and every session ends."""
        self.port.disconnect()
        self._decoder.flush()
        self._end_sessions()

    async def reconnect(self) -> str:
        """The cable is back: a new pty, the link re-pointed to it."""
        return self.port.reconnect()

    # ------------------------------------------------------------ pump program

    def _advance(self, module: Module) -> None:
        now_s = self.clock.monotonic()
        if module.running:
            module.infused_ml += module.rate_ml_per_h * max(0.0, now_s - module.last_update_s) / 3600.0
        module.last_update_s = now_s

    def set_rate(self, index: int, rate_ml_per_h: float) -> None:
        """Program a module's rate, as a nurse would at the keypad."""
        module = self.modules[index]
        self._advance(module)
        module.rate_ml_per_h = rate_ml_per_h

    def start(self, index: int) -> None:
        """A module starts infusing."""
        module = self.modules[index]
        self._advance(module)
        module.running, module.alarm = True, None

    def raise_alarm(self, index: int, alarm: str, *, stops: bool = True) -> None:
        """An alarm at a module (``alarm`` names it for the test; the base never says which).

        The module stops, unless ``stops`` is false (a low battery leaves a pump running).
        """
        if stops:
            self.stop(index)
        self.modules[index].alarm = alarm

    def clear_alarm(self, index: int) -> None:
        """A module's alarm is gone (cleared at the keypad); it does not restart."""
        self.modules[index].alarm = None

    def stop(self, index: int) -> None:
        """A module stops infusing."""
        module = self.modules[index]
        self._advance(module)
        module.running = False

    def infused_ml(self, index: int) -> float:
        """A module's volume infused now."""
        module = self.modules[index]
        self._advance(module)
        return module.infused_ml

    def push_spontaneous(self, index: int, data: str) -> None:
        """A module sends a spontaneous message (``<index>E;<data>``) that a host must acknowledge."""
        self.port.send(encode_frame(None, f"{index}{Status.SPONTANEOUS.value};{data}"))

    def inject_garbage(self, data: bytes) -> None:
        """Write noise bytes on the line now."""
        self.port.send(data)

    def drop_replies(self, count: int = -1) -> None:
        """Answer nothing to the next ``count`` frames (-1: until ``drop_replies(0)``)."""
        self.port.drop_replies(count)

    def spoil(self, fault: BaseFault, count: int = 1) -> None:
        """Spoil the next ``count`` replies with ``fault``."""
        self._faults.extend([fault] * count)

    def mend(self) -> None:
        """The line is clean again: no more spoiled replies."""
        self._faults.clear()

    # ------------------------------------------------------------ keep-alive

    def _end_sessions(self) -> None:
        self.base_session = False
        for module in self.modules.values():
            module.session = False
        self.sessions_ended.set()

    async def _ask_keepalive(self) -> None:
        assert self.enq_interval_s is not None
        while True:
            await self.clock.sleep(self.enq_interval_s)
            if not self.port.connected:
                continue
            self._dc4.clear()
            self.port.send(bytes([ENQ]))
            try:
                async with asyncio.timeout(self.enq_timeout_s):
                    await self._dc4.wait()
            except TimeoutError:
                # The simulator's choice: a host that does not answer has gone; its sessions end.
                self.keepalives_missed += 1
                self._end_sessions()
            else:
                self.keepalives_answered += 1

    # ------------------------------------------------------------ line

    def _on_bytes(self, data: bytes) -> None:
        for item in self._decoder.feed(data):
            if item.control == DC4:
                if not self.deaf_to_keepalives:
                    self._dc4.set()
            elif item.control == ACK:
                self.acks_received += 1
            elif item.control == NAK:
                self.naks_received += 1
            elif item.text is None:
                if item.error is not None and item.error.reason == "bad_crc":
                    self.port.send(bytes([NAK]) + b"2")
            else:
                self._on_frame(item.text)

    def _on_frame(self, text: str) -> None:
        if len(text) == 2 and text[0].isdigit() and text[1] in "EM":
            # The acknowledgement of a spontaneous message: no ACK, no reply.
            self.modules.get(int(text[0]), Module()).spontaneous_acks.append(text)
            return
        if self.port.should_drop():
            return
        if self.refuse_with is not None:
            # A base that refuses every frame at the link layer (NAK and a code): nothing answered.
            self.port.send(bytes([NAK]) + self.refuse_with.encode("ascii"))
            return
        self.port.send(bytes([ACK]))
        try:
            command = parse_host_command(text)
        except FrameError:
            self._reply(None, Status.INCORRECT, SYNTAX_ERROR)
            return
        self.commands_seen.append(command.command)
        self._answer(command.address, command.command, command.data)

    def _reply(self, address: int | None, status: Status, data: str | None = None) -> None:
        origin = "" if address is None else str(address)
        frame = encode_frame(None, origin + status.value + (f";{data}" if data is not None else ""))
        if not self._faults:
            self.port.send(frame)
            return
        fault = self._faults.popleft()
        half = len(frame) // 2
        if fault is BaseFault.BAD_CRC:
            digit = frame[-2:-1]
            self.port.send(frame[:-2] + (b"0" if digit != b"0" else b"1") + frame[-1:])
        elif fault is BaseFault.PARTIAL:
            self.port.send(frame[:half])
        elif fault is BaseFault.SPLIT:
            self.port.send(frame[:half])
            self.port.send(b"")
            self.port.send(frame[half:])
        else:
            self.port.send(b"\x7f garbage " + frame)

    def _answer(self, address: int | None, command: str, data: str | None) -> None:
        if address is None:
            # A pump on its own has no address; this base answers only addressed frames.
            self._reply(None, Status.INCORRECT, SYNTAX_ERROR)
            return
        module = self.modules.get(address) if address != BASE else None
        if address != BASE and module is None:
            self._reply(address, Status.INCORRECT, MODULE_IMPOSSIBLE)
            return
        if command == Command.CONNECT.value:
            if module is None:
                self.base_session = True
            elif not self.base_session:
                self._reply(address, Status.INCORRECT, BASE_SESSION_NOT_OPEN)
                return
            else:
                module.session = True
            self._reply(address, Status.CORRECT)
        elif command == Command.DISCONNECT.value:
            if module is None:
                self._end_sessions()
            else:
                module.session = False
            self._reply(address, Status.CORRECT)
        elif command == Command.READ_VARIABLES.value:
            self._read(address, module, data or "")
        else:
            # Commands that set the pump are outside this simulator: it changes nothing.
            self._reply(address, Status.INCORRECT, UNKNOWN_COMMAND)

    def _read(self, address: int, module: Module | None, wanted: str) -> None:
        if not self.base_session:
            self._reply(address, Status.INCORRECT, BASE_SESSION_NOT_OPEN)
            return
        if module is not None and not module.session:
            self._reply(address, Status.INCORRECT, MODULE_SESSION_NOT_OPEN)
            return
        if module is not None and module.alarm is not None:
            # "Presence of an alarm": the simulator's choice of answer to a read while an
            # alarm lasts (whether a real base answers a read so is not known).
            self._reply(address, Status.INCORRECT, FRESENIUS_ALARM_ERROR)
            return
        values: dict[str, int] = {}
        if module is None:
            values[Variable.MODULES.value] = sum(1 << (i - 1) for i in self.modules)
            values[Variable.MODULE_COUNT.value] = len(self.modules)
        else:
            self._advance(module)
            values[Variable.RATE.value] = round(module.rate_ml_per_h * 10)
            values[Variable.VOLUME.value] = round(module.infused_ml * 1000)
        if not wanted or any(v not in values for v in wanted):
            self._reply(address, Status.INCORRECT, "0A")  # identifier not used
            return
        self._reply(address, Status.CORRECT, ";".join(f"{v}{values[v]:0{HEX_DIGITS}X}" for v in wanted))


class DockedPump:
    """One pump docked in its own base, driven like the other simulated pumps (scenarios, demo).

    A scenario's pump program speaks to "the pump": here that is module 1 of ``base``.
    The base asks no keep-alive (its ENQ would wake a stepped clock every interval).
    """

    MODULE = 1

    def __init__(self, *, clock: Clock, link: Path | None = None, rate_ml_per_h: float = 10.0) -> None:
        """A base holding one stopped pump at ``rate_ml_per_h``."""
        self.base = SimulatedBase(clock=clock, link=link, modules=1, rate_ml_per_h=rate_ml_per_h)

    async def __aenter__(self) -> DockedPump:
        await self.base.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.base.close()

    @property
    def _pump(self) -> Module:
        return self.base.modules[self.MODULE]

    @property
    def connected(self) -> bool:
        """Whether the pty exists."""
        return self.base.connected

    async def disconnect(self) -> None:
        """The cable is pulled."""
        await self.base.disconnect()

    async def reconnect(self) -> str:
        """The cable is back."""
        return await self.base.reconnect()

    def drop_replies(self, count: int = -1) -> None:
        """Answer nothing to the next ``count`` frames (-1: until ``drop_replies(0)``)."""
        self.base.drop_replies(count)

    @property
    def rate_ml_per_h(self) -> float:
        """The pump's programmed rate."""
        return self._pump.rate_ml_per_h

    @property
    def running(self) -> bool:
        """Whether the pump infuses now."""
        return self._pump.running

    @property
    def infused_ml(self) -> float:
        """The pump's volume infused now."""
        return self.base.infused_ml(self.MODULE)

    @infused_ml.setter
    def infused_ml(self, value: float) -> None:
        self.base.infused_ml(self.MODULE)  # count what was infused up to now first
        self._pump.infused_ml = value

    def set_rate(self, rate_ml_per_h: float) -> None:
        """Program the pump's rate."""
        self.base.set_rate(self.MODULE, rate_ml_per_h)

    def start(self) -> None:
        """The pump starts infusing."""
        self.base.start(self.MODULE)

    def stop(self) -> None:
        """The pump stops infusing."""
        self.base.stop(self.MODULE)

    def pause(self) -> None:
        """A pause: for the line, the same as a stop (no variable known tells them apart)."""
        self.stop()

    def raise_alarm(self, alarm: str, *, stops: bool = True) -> None:
        """An alarm at the pump: it answers reads with ``12`` (presence of an alarm), and stops if ``stops``."""
        self.base.raise_alarm(self.MODULE, alarm, stops=stops)

    def clear_alarm(self) -> None:
        """The pump's alarm is gone; it does not restart."""
        self.base.clear_alarm(self.MODULE)
