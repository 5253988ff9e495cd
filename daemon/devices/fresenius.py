"""The Fresenius Kabi "Base A" (Orchestra/Agilia docking station) RS-232 protocol: codec and driver.

Facts and their status (confirmed by infupy 2022.1.11's code, or inferred) are in
``docs/pump-protocols.md``. In short:

- 19,200 baud, 7 data bits, even parity, 1 stop bit.
- A frame, both ways: STX + address + message + checksum + ETX. The address is the
  module's index as one ASCII digit (``0`` the base itself, ``1``... the pumps docked
  in it; none for a pump on its own). The checksum is two upper-case hex digits of
  0xFF minus the byte sum, modulo 256, of address and message.
- A reply's message starts with the origin and a status (``C`` correct, ``I``
  incorrect, ``E`` / ``M`` spontaneous), then ``;`` and the data: variables as one
  identifier letter and a hex value, separated by ``;`` (``d`` rate in 0.1 mL/h,
  ``r`` volume infused in 0.001 mL, ``b`` the docked modules as a bit map), or an
  error code after ``I``.
- Link control: every frame received is acknowledged at once with ACK, or NAK and a
  one-character error code; the base's ENQ is answered with DC4 (its keep-alive);
  a spontaneous message is acknowledged with a frame of its origin and status.
- Host commands: ``DC`` opens a module's communication session, ``FC`` closes it,
  ``LE;<ids>`` reads variables.

The daemon only reads: ``encode_command`` refuses every command that sets the pump
(rate, pause, bolus, volume reset, mode, drug, pressure ...).

Every parse returns a typed value or raises ``FrameError`` whose ``reason`` is a
stable counter label: ``garbage``, ``truncated``, ``bad_length``, ``bad_crc``,
``bad_data``, ``unexpected_reply``, ``error_reply``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from daemon.clock import Clock
from daemon.config import PumpConfig
from daemon.devices.framing import StreamBuffer
from daemon.devices.pump_alarms import FRESENIUS_ALARM_ERROR
from daemon.devices.pumplink import (
    Exchanger,
    FaultHandler,
    InfusionTracker,
    LinkClosedError,
    Miss,
    NoReplyError,
    PumpStatus,
    ReadingPendingError,
    SerialLine,
)
from daemon.errors import FrameError
from daemon.events import PumpState

STX = 0x02
ETX = 0x03
ENQ = 0x05  # the base's keep-alive question
ACK = 0x06
DC4 = 0x14  # the host's keep-alive answer
NAK = 0x15
# infupy: a message of more than 80 characters is refused by the pump ("message too
# long"); with address and checksum a frame stays well under this bound.
MAX_FRAME_BYTES = 96
BASE = 0  # the docking station's own address
MAX_MODULE = 9  # the address is one digit

RATE_ML_PER_H_PER_COUNT = 0.1  # variable d
VOLUME_ML_PER_COUNT = 0.001  # variable r
_HEX = re.compile(r"[0-9A-Fa-f]{1,8}")


class Command(StrEnum):
    """The commands infupy 2022.1.11 declares (the first three are the only ones wardd sends)."""

    CONNECT = "DC"
    DISCONNECT = "FC"
    READ_VARIABLES = "LE"
    READ_FIXED = "LF"
    MODE = "MO"
    RESET = "RZ"
    OFF = "OF"
    SILENCE = "SI"
    SET_DRUG = "EP"
    READ_DRUG = "LP"
    SHOW_DRUG = "AP"
    SET_ID = "EN"
    READ_ID = "LN"
    SPONTANEOUS_ON = "DE"
    SPONTANEOUS_OFF = "AE"
    SPONTANEOUS_ADJUST_ON = "DM"
    SPONTANEOUS_ADJUST_OFF = "AM"
    READ_ADJUST = "LM"
    SET_RATE = "PR"
    PAUSE = "PO"
    BOLUS = "PB"
    EMPTY_SYRINGE = "PF"
    LIMIT_VOLUME = "PV"
    RESET_VOLUME = "RV"
    PRESSURE_LIMIT = "PP"
    DYNAMIC_PRESSURE = "PS"


# What the daemon may send: open and close a session, read. Everything else changes
# the pump, its display or its alarms.
READ_ONLY = frozenset({Command.CONNECT, Command.DISCONNECT, Command.READ_VARIABLES})


class Variable(StrEnum):
    """Variable identifiers of ``LE`` (infupy 2022.1.11)."""

    ALARM = "a"
    ERROR = "e"
    MODE = "m"
    RATE = "d"
    VOLUME = "r"
    BOLUS_RATE = "k"
    BOLUS_VOLUME = "s"
    MODULE_COUNT = "i"
    MODULES = "b"


class Status(StrEnum):
    """The status letter after a reply's origin."""

    CORRECT = "C"
    INCORRECT = "I"
    SPONTANEOUS = "E"
    SPONTANEOUS_ADJUST = "M"


# Link-layer error codes after NAK, and command error codes after "I;" (infupy 2022.1.11).
LINK_ERRORS: Mapping[str, str] = {
    "1": "character reception problem",
    "2": "incorrect checksum",
    "4": "incorrect address",
    "5": "end of ACK character time-out",
    "6": "receiver not ready",
    "7": "incorrect frame length",
    "8": "presence of a control code",
}
COMMAND_ERRORS: Mapping[str, str] = {
    "01": "unknown command",
    "02": "command disabled in the current mode",
    "03": "command disabled in this status",
    "04": "syntax error",
    "05": "operating mode not authorised",
    "06": "operating mode already active",
    "07": "new operating mode disabled in this mode",
    "08": "parameter out of limit",
    "09": "new operating mode disabled in this status",
    "0A": "identifier not used",
    "0B": "identifier incorrect",
    "0C": "message too long",
    "0D": "communication session with the base not open",
    "0E": "communication with the module impossible",
    "12": "presence of an alarm",
    "14": "attempt to launch the infusion before the rate is selected",
    "15": "insufficient volume to launch a bolus",
    "16": "impossible to launch the empty-syringe mode",
    "1A": "recorded event number incorrect",
    "1E": "communication with the module is not open",
    "1F": "one of the modules is not in manual mode",
    "20": "command not authorised on this port",
    "22": "new mode not authorised",
    "24": "connection mode incorrect",
    "25": "drug number incorrect",
}
ALARM_MEANING = COMMAND_ERRORS[FRESENIUS_ALARM_ERROR]
# After these the session must be opened again (DC) before anything is read.
SESSION_ERRORS = frozenset({"0D", "1E"})


class ForbiddenCommandError(ValueError):
    """A command that would change the pump; the daemon never sends one."""


# ---------------------------------------------------------------- checksum and frames


def checksum(body: bytes) -> bytes:
    """Two upper-case hex digits: 0xFF minus the byte sum of ``body`` modulo 256."""
    return b"%02X" % (0xFF - sum(body) % 0x100)


def _address(address: int | None) -> bytes:
    if address is None:
        return b""
    if not 0 <= address <= MAX_MODULE:
        raise ValueError(f"a module address is one digit, 0-{MAX_MODULE}, got {address}")
    return str(address).encode("ascii")


def _printable(text: str) -> bytes:
    raw = text.encode("ascii", "strict")
    if any(b < 0x20 or b > 0x7E for b in raw):
        raise ValueError(f"a message must be printable ASCII: {text!r}")
    return raw


def encode_frame(address: int | None, message: str) -> bytes:
    """Any frame (the simulator's replies): STX, address, message, checksum, ETX."""
    body = _address(address) + _printable(message)
    return bytes([STX]) + body + checksum(body) + bytes([ETX])


def encode_command(address: int | None, command: Command, *variables: Variable) -> bytes:
    """A host command to ``address``; refuses every command that would change the pump."""
    if command not in READ_ONLY:
        raise ForbiddenCommandError(f"{command.name} ({command.value}) changes the pump; wardd only reads")
    if command is Command.READ_VARIABLES:
        if not variables:
            raise ValueError("LE needs at least one variable")
        return encode_frame(address, f"{command.value};{''.join(v.value for v in variables)}")
    if variables:
        raise ValueError(f"{command.value} takes no variables")
    return encode_frame(address, command.value)


def encode_spontaneous_ack(origin: str, status: Status) -> bytes:
    """The frame that acknowledges a spontaneous message: its origin and its status."""
    return encode_frame(None, origin + status.value)


@dataclass(frozen=True, slots=True)
class Reply:
    """One checked reply: where it comes from, its status and its data after ``;``."""

    origin: str | None
    status: Status
    data: str | None


def check_frame(frame: bytes, where: str = "") -> str:
    """One whole frame from STX to ETX, its checksum checked: the address and message."""
    if not frame or frame[0] != STX:
        raise FrameError("garbage", "a frame must start with STX", where)
    if frame[-1] != ETX:
        raise FrameError("truncated", "a frame must end with ETX", where)
    if len(frame) > MAX_FRAME_BYTES:
        raise FrameError("bad_length", f"frame of {len(frame)} bytes is too long", where)
    body, received = frame[1:-3], frame[-3:-1]
    if len(frame) < 5 or not re.fullmatch(rb"[0-9A-Fa-f]{2}", received):
        raise FrameError("truncated", "no two-digit checksum before ETX", where)
    expected = checksum(body)
    if received.upper() != expected:
        raise FrameError("bad_crc", f"checksum {received.decode()}, computed {expected.decode()}", where)
    if any(b < 0x20 or b > 0x7E for b in body):
        raise FrameError("garbage", f"control bytes in the frame: {body!r}", where)
    return body.decode("ascii")


def parse_reply(text: str, where: str = "") -> Reply:
    """A checked frame's text as a reply: origin (when more than the status), status, data."""
    meta, _, data = text.partition(";")
    origin = meta[0] if len(meta) > 1 else None
    try:
        status = Status(meta[-1:])
    except ValueError as exc:
        raise FrameError("bad_data", f"unknown status in {text!r}", where) from exc
    if len(meta) > 2 or (origin is not None and not origin.isdigit()):
        raise FrameError("bad_data", f"not an origin and a status: {meta!r}", where)
    return Reply(origin, status, data if ";" in text else None)


def parse_frame(frame: bytes, where: str = "") -> Reply:
    """One whole reply frame from STX to ETX, its checksum checked."""
    return parse_reply(check_frame(frame, where), where)


@dataclass(frozen=True, slots=True)
class HostCommand:
    """A command as the base receives it: the address (``None``: a pump on its own), command, data."""

    address: int | None
    command: str
    data: str | None


_HOST_COMMAND = re.compile(r"(?P<address>\d?)(?P<command>[A-Z]{2})(?:;(?P<data>.*))?")


def parse_host_command(text: str, where: str = "") -> HostCommand:
    """A checked frame's text as a host command (simulator side), e.g. ``1LE;d``."""
    match = _HOST_COMMAND.fullmatch(text)
    if match is None:
        raise FrameError("bad_data", f"not a command: {text!r}", where)
    address = match["address"]
    return HostCommand(int(address) if address else None, match["command"], match["data"])


def parse_variables(reply: Reply, where: str = "") -> dict[Variable, int]:
    """The variables of a correct reply: identifier letter, hex value, separated by ``;``."""
    if reply.status is not Status.CORRECT and reply.status is not Status.SPONTANEOUS:
        raise FrameError(
            "unexpected_reply", f"a {reply.status.name.lower()} reply carries no variables", where
        )
    out: dict[Variable, int] = {}
    for item in (reply.data or "").split(";"):
        if not item:
            continue
        try:
            variable = Variable(item[0])
        except ValueError:
            continue  # infupy skips identifiers it does not know, and so do we
        if not _HEX.fullmatch(item[1:]):
            raise FrameError("bad_data", f"variable {item[0]} is not hex: {item[1:]!r}", where)
        out[variable] = int(item[1:], 16)
    return out


def error_of(reply: Reply) -> tuple[str, str] | None:
    """An incorrect reply's code and meaning (``None`` for another reply)."""
    if reply.status is not Status.INCORRECT:
        return None
    code = (reply.data or "").upper()
    return code, COMMAND_ERRORS.get(code, "unknown error code")


def rate_ml_per_h(variables: Mapping[Variable, int], where: str = "") -> float:
    """Variable ``d``: the rate, counted in 0.1 mL/h."""
    if Variable.RATE not in variables:
        raise FrameError("bad_data", "no rate (d) in the reply", where)
    return round(variables[Variable.RATE] * RATE_ML_PER_H_PER_COUNT, 1)


def volume_infused_ml(variables: Mapping[Variable, int], where: str = "") -> float:
    """Variable ``r``: the volume infused, counted in 0.001 mL."""
    if Variable.VOLUME not in variables:
        raise FrameError("bad_data", "no volume (r) in the reply", where)
    return round(variables[Variable.VOLUME] * VOLUME_ML_PER_COUNT, 3)


def docked_modules(variables: Mapping[Variable, int], where: str = "") -> list[int]:
    """Variable ``b`` of the base: bit i set means module i + 1 is docked."""
    if Variable.MODULES not in variables:
        raise FrameError("bad_data", "no module map (b) in the reply", where)
    bits = variables[Variable.MODULES]
    return [i + 1 for i in range(MAX_MODULE) if bits >> i & 1]


# ---------------------------------------------------------------- stream decoder


@dataclass(frozen=True, slots=True)
class Decoded:
    """One item from the line: a reply, a link control (ACK, NAK + code, ENQ, DC4), or an error."""

    raw: bytes
    reply: Reply | None = None
    control: int | None = None  # ACK, NAK, ENQ or DC4
    link_error: str | None = None  # the code after NAK
    error: FrameError | None = None
    text: str | None = None  # a frame whose checksum holds, even if it is no reply


class FrameDecoder(StreamBuffer):
    """Splits a byte stream into frames, link controls and errors, resynchronising on STX.

    ``feed`` never raises; each byte ends up in exactly one item, or stays buffered as
    the start of a frame (or a NAK waiting for its code) not yet complete.
    """

    def _error(self, reason: str, detail: str, n: int) -> Decoded:
        return Decoded(self._take(n), error=FrameError(reason, detail, self._where))

    def feed(self, data: bytes) -> list[Decoded]:
        """Add bytes from the line; return every item now complete."""
        self._buffer += data
        out: list[Decoded] = []
        while self._buffer:
            first = self._buffer[0]
            if first in (ACK, ENQ, DC4):
                out.append(Decoded(self._take(1), control=first))
            elif first == NAK:
                if len(self._buffer) < 2:
                    break
                code = chr(self._buffer[1])
                out.append(Decoded(self._take(2), control=NAK, link_error=code))
            elif first == STX:
                item = self._frame()
                if item is None:
                    break
                out.append(item)
            else:
                cut = next(
                    (i for i, b in enumerate(self._buffer) if b in (STX, ACK, ENQ, DC4, NAK)),
                    len(self._buffer),
                )
                out.append(self._error("garbage", "bytes outside a frame", cut))
        return out

    def _frame(self) -> Decoded | None:
        ends = [i for i in (self._buffer.find(b, 1) for b in (ETX, STX)) if i > 0]
        if not ends:
            if len(self._buffer) >= MAX_FRAME_BYTES:
                return self._error("bad_length", "no ETX within the longest frame", len(self._buffer))
            return None
        cut = min(ends)
        if cut >= MAX_FRAME_BYTES:
            return self._error("bad_length", "no ETX within the longest frame", cut)
        if self._buffer[cut] == STX:
            return self._error("truncated", "frame interrupted by a new STX", cut)
        raw = self._take(cut + 1)
        try:
            text = check_frame(raw, self._where)
        except FrameError as exc:
            return Decoded(raw, error=exc)
        try:
            return Decoded(raw, reply=parse_reply(text, self._where), text=text)
        except FrameError as exc:
            return Decoded(raw, error=exc, text=text)

    def flush(self) -> list[Decoded]:
        """End the stream (a timeout or a gap): pending bytes become a ``truncated`` error."""
        if not self._buffer:
            return []
        return [self._error("truncated", "incomplete frame at end of input", len(self._buffer))]


def link_answer(item: Decoded) -> bytes:
    """What a host sends back at once for one item: DC4 to ENQ, ACK to a good frame
    (then the acknowledgement of a spontaneous one), NAK ``2`` to a bad checksum."""
    if item.control == ENQ:
        return bytes([DC4])
    if item.text is not None:
        answer = bytes([ACK])
        if item.reply is not None and item.reply.status in (Status.SPONTANEOUS, Status.SPONTANEOUS_ADJUST):
            answer += encode_spontaneous_ack(item.reply.origin or "", item.reply.status)
        return answer
    if item.error is not None and item.error.reason == "bad_crc":
        return bytes([NAK]) + b"2"
    return b""


# ---------------------------------------------------------------- driver

# Faults after which the same command is re-sent at once.
_RETRY_NOW = frozenset({"bad_crc", "truncated", "bad_length", "nak"})


class BaseLine:
    """One base's port, shared by the drivers of the modules configured on it.

    The first driver to open it opens the port; the last to close it closes it. One
    exchange at a time (``turn``); the base's own session is opened once for all.
    A line whose port has died is not handed out again: the next driver to open gets
    a new one, while the holders of the old one find it closed and let it go.
    """

    def __init__(self, pump: PumpConfig) -> None:
        """The line of ``pump.url``, with ``pump``'s line settings."""
        where = f"base {pump.url}"
        self.line: SerialLine[Decoded] = SerialLine(pump, FrameDecoder(where), where, link_answer)
        self.turn = asyncio.Lock()
        self.opening = asyncio.Lock()
        self.opened = False
        self.base_session = False
        self.users = 0

    @property
    def dead(self) -> bool:
        """Whether the port was opened and has gone since."""
        return self.opened and not self.line.is_open


# Open base lines by event loop and URL: the pump sources of one pipeline share them.
_LINES: dict[tuple[int, str], BaseLine] = {}


def _acquire(pump: PumpConfig) -> BaseLine:
    key = (id(asyncio.get_running_loop()), pump.line)
    shared = _LINES.get(key)
    if shared is None or shared.dead:
        shared = _LINES[key] = BaseLine(pump)
    shared.users += 1
    return shared


async def _release(pump: PumpConfig, shared: BaseLine) -> None:
    shared.users -= 1
    if shared.users > 0:
        return
    key = (id(asyncio.get_running_loop()), pump.line)
    if _LINES.get(key) is shared:
        del _LINES[key]
    await shared.line.close()


class FreseniusDriver:
    """The Base A protocol over pyserial-asyncio-fast: reads one module's rate and volume infused.

    The modules of one base configured on one line share its port (``BaseLine``).
    ``open`` opens the communication sessions (the base's once, then the module's, as
    infupy does); a poll reads ``d`` (rate) and ``r`` (volume infused). Link control
    happens as bytes arrive (``link_answer``): ACK or NAK to every frame, DC4 to the
    base's ENQ, the acknowledgement of a spontaneous message. A reply saying a session
    is not open (``0D``, ``1E``) makes the next poll open it again. A reply saying an
    alarm is present (``12``) is a reading in alarm, code ``12``, without values. ``close`` closes
    the module's session (best effort) and lets the port go.
    """

    def __init__(self, pump: PumpConfig, clock: Clock, on_fault: FaultHandler) -> None:
        """One driver for one open of ``pump.url``; faults go to ``on_fault``."""
        self._pump = pump
        self._clock = clock
        self._on_fault = on_fault
        self._where = f"pump[{pump.id}] {pump.url}"
        self._module = pump.module
        self._shared: BaseLine | None = None
        self._session = False
        self._tracker = InfusionTracker()
        self._exchanger: Exchanger[Decoded] = Exchanger(
            pump, clock, self._where, on_fault, retry_now=_RETRY_NOW, stray=self._stray
        )

    @property
    def _base(self) -> BaseLine:
        if self._shared is None:
            raise LinkClosedError(f"{self._where}: not open")
        return self._shared

    @property
    def _line(self) -> SerialLine[Decoded]:
        return self._base.line

    async def open(self) -> None:
        """Open (or share) the port and open the sessions (retried at the next poll if unanswered)."""
        shared = self._shared = _acquire(self._pump)
        try:
            async with shared.opening:
                if not shared.opened:
                    await shared.line.open()
                    shared.opened = True
        except LinkClosedError:
            self._shared = None
            await _release(self._pump, shared)
            raise
        with contextlib.suppress(NoReplyError):
            async with shared.turn:
                await self._connect()

    async def close(self) -> None:
        """Close the module's session if the line is up, then let the port go (idempotent)."""
        shared = self._shared
        if shared is None:
            return
        try:
            if shared.line.is_open and self._session:
                with contextlib.suppress(NoReplyError, LinkClosedError, TimeoutError):
                    async with asyncio.timeout(2 * self._pump.reply_timeout_s), shared.turn:
                        await self._exchange(self._module, Command.DISCONNECT, attempts=1)
        finally:
            self._shared = None
            await _release(self._pump, shared)

    async def read(self) -> PumpStatus:
        """Rate (``LE;d``) and volume infused (``LE;r``), and the state they show."""
        async with self._base.turn:
            if not self._session:
                await self._connect()
            rate_reply = await self._exchange(self._module, Command.READ_VARIABLES, Variable.RATE)
            volume_reply = await self._exchange(self._module, Command.READ_VARIABLES, Variable.VOLUME)
        if any(
            error_of(reply) == (FRESENIUS_ALARM_ERROR, ALARM_MEANING) for reply in (rate_reply, volume_reply)
        ):
            # "Presence of an alarm": the pump answers, so the link is alive, but it says
            # neither which alarm nor its rate and volume while the alarm lasts. The volume
            # seen before the alarm says nothing of what came after (the pump infused up to
            # the alarm, then stopped): after it, infusing or stopped is judged afresh.
            self._tracker = InfusionTracker()
            return PumpStatus(PumpState.ALARM, None, None, FRESENIUS_ALARM_ERROR)
        rate = self._variable(rate_reply, rate_ml_per_h)
        volume = self._variable(volume_reply, volume_infused_ml)
        if rate is None or volume is None:
            # The state comes from both values: without them this poll shows nothing (the
            # faults are counted already).
            raise NoReplyError(f"{self._where}: no usable rate and volume in this poll")
        state = self._tracker.observe(self._clock.monotonic(), volume, VOLUME_ML_PER_COUNT, rate)
        if state is None:
            raise ReadingPendingError(f"{self._where}: volume infused not yet seen to move or stay put")
        return PumpStatus(state, rate, volume)

    async def _connect(self) -> None:
        base = self._base
        if self._module is not None and not base.base_session:
            self._opened(await self._exchange(BASE, Command.CONNECT), BASE)
            base.base_session = True
        self._opened(await self._exchange(self._module, Command.CONNECT), self._module)
        self._session = True

    def _opened(self, reply: Reply, address: int | None) -> None:
        failure = error_of(reply)
        if failure is not None:
            self._error_reply(failure)
            raise NoReplyError(f"{self._where}: session with {address} refused: {failure[1]}")

    def _variable(self, reply: Reply, extract: _Extract) -> float | None:
        failure = error_of(reply)
        if failure is not None:
            self._error_reply(failure)
            if failure[0] in SESSION_ERRORS:
                self._session = False
                if failure[0] == "0D" and self._shared is not None:
                    self._shared.base_session = False
            return None
        try:
            return extract(parse_variables(reply, self._where), self._where)
        except FrameError as exc:
            self._fault(exc, (reply.data or "").encode("ascii", "backslashreplace"))
            return None

    def _error_reply(self, failure: tuple[str, str]) -> None:
        code, meaning = failure
        self._fault(FrameError("error_reply", f"pump answered error {code}: {meaning}", self._where), b"")

    def _fault(self, error: FrameError, raw: bytes) -> None:
        self._on_fault(error, raw)

    def _stray(self, item: Decoded) -> FrameError | None:
        if item.reply is not None and item.reply.status is Status.CORRECT:
            return FrameError("unsolicited", "reply nobody asked for (ignored)", self._where)
        if item.control == NAK:
            return FrameError("nak", "NAK nobody expected", self._where)
        # ACK, ENQ, a spontaneous message (acknowledged as it came), an error reply
        # to an abandoned attempt.
        return None

    async def _exchange(
        self, address: int | None, command: Command, *variables: Variable, attempts: int | None = None
    ) -> Reply:
        origin = str(address) if address is not None else None
        shown = command.value + (f";{''.join(v.value for v in variables)}" if variables else "")

        def match(item: Decoded) -> Reply | Miss:
            if item.control == NAK:
                meaning = LINK_ERRORS.get(item.link_error or "", "unknown link error")
                return Miss(
                    FrameError("nak", f"pump refused our frame: {item.link_error} {meaning}", self._where),
                    resend=True,
                )
            if item.control is not None:
                return Miss()  # ACK of our frame, or ENQ (answered as it came)
            reply = item.reply
            assert reply is not None  # a frame item holds a reply or an error
            if reply.status in (Status.SPONTANEOUS, Status.SPONTANEOUS_ADJUST):
                return Miss()  # acknowledged as it came; wardd reads by polling
            if reply.origin != origin:
                return Miss(
                    FrameError(
                        "unexpected_reply", f"reply from {reply.origin} to {shown} for {origin}", self._where
                    )
                )
            return reply

        frame = encode_command(address, command, *variables)
        return await self._exchanger.ask(self._line, frame, shown, match, attempts)


class _Extract(Protocol):
    def __call__(self, variables: Mapping[Variable, int], where: str = "", /) -> float: ...


def fresenius_driver(pump: PumpConfig, clock: Clock, on_fault: FaultHandler) -> FreseniusDriver:
    """The ``DriverFactory`` for ``driver = "fresenius-base-a"``."""
    return FreseniusDriver(pump, clock, on_fault)
