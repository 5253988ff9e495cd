"""The BD Alaris (Asena GH/CC) syringe pump RS-232 protocol: a pure codec, and the driver.

Facts and their status (confirmed by infupy 2022.1.11's code, or inferred) are in
``docs/pump-protocols.md``. In short:

- A frame, both ways: ``!`` + body + ``|`` + checksum + CR. The checksum is the
  CRC-16/CCITT-FALSE of the body (polynomial 0x1021, initial value 0xFFFF) written as
  four upper-case hex digits. Fields in the body are separated by ``^``; the first is
  the command. An ESC byte abandons a frame being received.
- Host commands: ``INST_SERIALNO``; ``REMOTE_CTRL`` and ``REMOTE_CFG`` with
  ``ENABLED^<security code>`` (re-sent as a keep-alive) or ``DISABLED``; ``INF_RATE``
  and ``INF_VI`` (rate and volume infused); ``ALARM`` (the alarm present, a code such
  as ``AL_OCCLU``, or ``AL_NOALM``: from OpenICE's Alaris code, not infupy's). The security code is the same checksum,
  computed over the serial number the pump reports.
- A reply repeats the command as its first field, then the values (inferred).

The daemon only reads: ``encode_command`` refuses ``INF_START``, ``INF_STOP`` and a
rate setting, so no code path of the driver can send one.

Every parse returns a typed value or raises ``FrameError`` whose ``reason`` is a
stable counter label: ``garbage``, ``truncated``, ``aborted``, ``bad_length``,
``bad_crc``, ``bad_data``, ``unknown_unit``, ``unexpected_reply``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar

from daemon.clock import Clock, every
from daemon.config import PumpConfig
from daemon.devices.framing import StreamBuffer
from daemon.devices.pump_alarms import ALARIS_NO_ALARM
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

START = 0x21  # "!"
CHECKSUM_SEPARATOR = 0x7C  # "|"
END = 0x0D  # CR
ESC = 0x1B  # abandons the frame being received
FIELD_SEPARATOR = "^"
CHECKSUM_DIGITS = 4
# The longest frame either side is known to send is well under 100 bytes; anything much
# longer without a CR is noise, so a decoder never buffers without bound.
MAX_FRAME_BYTES = 256
# Bounds that keep parsed values physical: a syringe pump rate beyond 9999 mL/h or a
# volume beyond 99999 mL is a corrupted reply, not a reading.
MAX_RATE_ML_PER_H = 9999.0
MAX_VOLUME_ML = 99999.0
_BODY_FORBIDDEN = frozenset({START, CHECKSUM_SEPARATOR, END, ESC})


class Command(StrEnum):
    """The commands infupy 2022.1.11 sends, and the alarm query OpenICE's Alaris code sends."""

    SERIAL_NUMBER = "INST_SERIALNO"
    REMOTE_CONTROL = "REMOTE_CTRL"
    REMOTE_CONFIG = "REMOTE_CFG"
    RATE = "INF_RATE"
    VOLUME_INFUSED = "INF_VI"
    ALARM = "ALARM"  # not in infupy: the alarm query of OpenICE's Alaris code
    START = "INF_START"
    STOP = "INF_STOP"


REMOTE_COMMANDS = (Command.REMOTE_CONTROL, Command.REMOTE_CONFIG)
ENABLED = "ENABLED"
DISABLED = "DISABLED"

# The unit fields this codec understands, and their factor to mL/h or mL. "ml/h" is
# the unit infupy writes when it sets a rate; "ml" for the volume is inferred. Any
# other unit is refused (``unknown_unit``), never guessed.
RATE_UNITS_TO_ML_PER_H = {"ml/h": 1.0}
VOLUME_UNITS_TO_ML = {"ml": 1.0}


class ForbiddenCommandError(ValueError):
    """A command that would change the infusion; the daemon never sends one."""


# ---------------------------------------------------------------- checksum


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no reflection, no final xor."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def checksum(body: bytes) -> bytes:
    """The four upper-case hex digits that follow ``|`` in a frame of ``body``."""
    return b"%04X" % crc16_ccitt_false(body)


def security_code(serial_number: str) -> str:
    """The remote-enable security code of a pump: the checksum of its serial number."""
    return checksum(serial_number.encode("ascii")).decode("ascii")


# ---------------------------------------------------------------- frames


@dataclass(frozen=True, slots=True)
class Frame:
    """One checked frame: its fields, the first being the command it answers or carries."""

    fields: tuple[str, ...]

    @property
    def command(self) -> str:
        """The first field."""
        return self.fields[0]

    @property
    def values(self) -> tuple[str, ...]:
        """The fields after the command."""
        return self.fields[1:]


def _body(fields: Sequence[str]) -> bytes:
    if not fields or not fields[0]:
        raise ValueError("a frame needs a command as its first field")
    text = FIELD_SEPARATOR.join(fields)
    raw = text.encode("ascii", "strict")
    if any(b < 0x20 or b > 0x7E or b in _BODY_FORBIDDEN for b in raw):
        raise ValueError(f"a field must be printable ASCII without '!', '|': {text!r}")
    return raw


def encode_frame(fields: Sequence[str]) -> bytes:
    """Any frame (the simulator's replies): ``!`` + fields joined by ``^`` + ``|`` + checksum + CR."""
    body = _body(fields)
    return b"!" + body + b"|" + checksum(body) + b"\r"


def encode_command(command: Command, *arguments: str) -> bytes:
    """A host command frame; refuses every command that would change the infusion.

    Allowed: ``INST_SERIALNO``, ``INF_RATE``, ``INF_VI`` and ``ALARM`` without arguments (queries),
    and ``REMOTE_CTRL`` / ``REMOTE_CFG`` with ``ENABLED, <code>`` or ``DISABLED``.
    """
    if command in (Command.START, Command.STOP):
        raise ForbiddenCommandError(f"{command} would start or stop the infusion; wardd only reads")
    if command in (Command.SERIAL_NUMBER, Command.RATE, Command.VOLUME_INFUSED, Command.ALARM):
        if arguments:
            raise ForbiddenCommandError(f"{command} with arguments sets the pump; wardd only reads")
    elif command in REMOTE_COMMANDS:
        enable = (
            len(arguments) == 2 and arguments[0] == ENABLED and re.fullmatch(r"[0-9A-F]{4}", arguments[1])
        )
        if not enable and arguments != (DISABLED,):
            raise ValueError(f"{command} takes ENABLED and a 4-hex-digit code, or DISABLED")
    return encode_frame([command.value, *arguments])


def parse_frame(frame: bytes, where: str = "") -> Frame:
    """One whole frame from ``!`` to CR, its checksum checked."""
    if not frame or frame[0] != START:
        raise FrameError("garbage", "a frame must start with '!'", where)
    if frame[-1] != END:
        raise FrameError("truncated", "a frame must end with CR", where)
    if len(frame) > MAX_FRAME_BYTES:
        raise FrameError("bad_length", f"frame of {len(frame)} bytes is too long", where)
    if ESC in frame:
        raise FrameError("aborted", "ESC inside the frame", where)
    inner = frame[1:-1]
    cut = inner.rfind(CHECKSUM_SEPARATOR)
    if cut == -1:
        raise FrameError("truncated", "no '|' before the checksum", where)
    body, received = inner[:cut], inner[cut + 1 :]
    if len(received) != CHECKSUM_DIGITS or not re.fullmatch(rb"[0-9A-Fa-f]{4}", received):
        raise FrameError("bad_length", f"checksum {received!r} is not 4 hex digits", where)
    expected = checksum(body)
    if received.upper() != expected:
        raise FrameError("bad_crc", f"checksum {received.decode()}, computed {expected.decode()}", where)
    if not body or any(b < 0x20 or b > 0x7E or b in _BODY_FORBIDDEN for b in body):
        raise FrameError("garbage", f"empty body or bytes that are not printable ASCII: {body!r}", where)
    fields = tuple(body.decode("ascii").split(FIELD_SEPARATOR))
    if not fields[0]:
        raise FrameError("bad_data", "the first field (the command) is empty", where)
    return Frame(fields)


@dataclass(frozen=True, slots=True)
class Decoded:
    """One item from the stream decoder: a frame, or an error with the bytes it covers."""

    raw: bytes
    frame: Frame | None = None
    error: FrameError | None = None


class FrameDecoder(StreamBuffer):
    """Splits a byte stream into frames and errors, resynchronising on ``!``.

    ``feed`` never raises for any input; each byte ends up in exactly one item, or
    stays buffered as the start of a frame not yet complete (``flush`` ends it).
    """

    def _error(self, reason: str, detail: str, n: int) -> Decoded:
        return Decoded(self._take(n), error=FrameError(reason, detail, self._where))

    def feed(self, data: bytes) -> list[Decoded]:
        """Add bytes from the line; return every item now complete."""
        self._buffer += data
        out: list[Decoded] = []
        while self._buffer:
            start = self._buffer.find(START)
            if start != 0:
                out.append(
                    self._error("garbage", "bytes outside a frame", start if start > 0 else len(self._buffer))
                )
                continue
            item = self._frame()
            if item is None:
                break
            out.append(item)
        return out

    def _frame(self) -> Decoded | None:
        # The first of CR, ESC or a new "!" after the start decides the frame's fate.
        ends = [i for i in (self._buffer.find(b, 1) for b in (END, ESC, START)) if i > 0]
        if not ends:
            if len(self._buffer) >= MAX_FRAME_BYTES:
                return self._error("bad_length", "no CR within the longest frame", len(self._buffer))
            return None
        cut = min(ends)
        if cut >= MAX_FRAME_BYTES:
            return self._error("bad_length", "no CR within the longest frame", cut)
        byte = self._buffer[cut]
        if byte == START:
            return self._error("truncated", "frame interrupted by a new '!'", cut)
        if byte == ESC:
            return self._error("aborted", "the sender abandoned the frame (ESC)", cut + 1)
        raw = self._take(cut + 1)
        try:
            return Decoded(raw, frame=parse_frame(raw, self._where))
        except FrameError as exc:
            return Decoded(raw, error=exc)

    def flush(self) -> list[Decoded]:
        """End the stream (a timeout or a gap): pending bytes become a ``truncated`` error."""
        if not self._buffer:
            return []
        return [self._error("truncated", "incomplete frame at end of input", len(self._buffer))]


# ---------------------------------------------------------------- replies


_NUMBER = re.compile(r"\d{1,6}(?:\.\d{1,6})?")


@dataclass(frozen=True, slots=True)
class Rate:
    """An ``INF_RATE`` reply: the value and the unit as the pump wrote them."""

    value: float
    unit: str

    @property
    def ml_per_h(self) -> float:
        """The rate in mL/h."""
        return self.value * RATE_UNITS_TO_ML_PER_H[self.unit]


@dataclass(frozen=True, slots=True)
class VolumeInfused:
    """An ``INF_VI`` reply: the value, its unit, and the resolution its digits give."""

    value: float
    unit: str
    decimals: int

    @property
    def ml(self) -> float:
        """The volume infused in mL."""
        return self.value * VOLUME_UNITS_TO_ML[self.unit]

    @property
    def resolution_ml(self) -> float:
        """The smallest step the reply can show, in mL (0.001 mL for three decimals)."""
        return 10.0**-self.decimals * VOLUME_UNITS_TO_ML[self.unit]


def _expect(frame: Frame, command: Command, count: int, where: str) -> tuple[str, ...]:
    if frame.command != command.value:
        raise FrameError("unexpected_reply", f"expected a reply to {command}, got {frame.command}", where)
    if len(frame.values) != count:
        raise FrameError(
            "bad_data", f"{command} reply has {len(frame.values)} value(s), expected {count}", where
        )
    return frame.values


def _number(text: str, limit: float, what: str, where: str) -> float:
    if not _NUMBER.fullmatch(text):
        raise FrameError("bad_data", f"{what} is not a number: {text!r}", where)
    value = float(text)
    if value > limit:
        raise FrameError("bad_data", f"{what} {value:g} is beyond {limit:g}", where)
    return value


def parse_serial_number(frame: Frame, where: str = "") -> str:
    """An ``INST_SERIALNO`` reply: the serial number (several values joined by spaces, as infupy does)."""
    if frame.command != Command.SERIAL_NUMBER.value:
        raise FrameError("unexpected_reply", f"expected a serial number, got {frame.command}", where)
    serial = " ".join(frame.values)
    if not serial.strip():
        raise FrameError("bad_data", "empty serial number", where)
    return serial


def parse_rate(frame: Frame, where: str = "") -> Rate:
    """An ``INF_RATE`` reply such as ``INF_RATE^10.00^ml/h``; the unit comes from the reply."""
    value, unit = _expect(frame, Command.RATE, 2, where)
    if unit not in RATE_UNITS_TO_ML_PER_H:
        raise FrameError("unknown_unit", f"rate unit {unit!r} is not one this codec knows", where)
    return Rate(_number(value, MAX_RATE_ML_PER_H, "rate", where), unit)


def parse_volume_infused(frame: Frame, where: str = "") -> VolumeInfused:
    """An ``INF_VI`` reply such as ``INF_VI^1.234^ml``; the unit comes from the reply."""
    value, unit = _expect(frame, Command.VOLUME_INFUSED, 2, where)
    if unit not in VOLUME_UNITS_TO_ML:
        raise FrameError("unknown_unit", f"volume unit {unit!r} is not one this codec knows", where)
    number = _number(value, MAX_VOLUME_ML, "volume infused", where)
    decimals = len(value.partition(".")[2])
    return VolumeInfused(number, unit, decimals)


def parse_remote(frame: Frame, command: Command, where: str = "") -> bool:
    """A ``REMOTE_CTRL`` / ``REMOTE_CFG`` reply: whether the pump now says ``ENABLED``."""
    if command not in REMOTE_COMMANDS:
        raise ValueError(f"{command} is not a remote-enable command")
    if frame.command != command.value:
        raise FrameError("unexpected_reply", f"expected a reply to {command}, got {frame.command}", where)
    if not frame.values or frame.values[0] not in (ENABLED, DISABLED):
        raise FrameError("bad_data", f"{command} reply without ENABLED or DISABLED: {frame.values}", where)
    return frame.values[0] == ENABLED


_ALARM_CODE = re.compile(r"[A-Z][A-Z0-9_ ]{0,15}")


def parse_alarm(frame: Frame, where: str = "") -> str | None:
    """An ``ALARM`` reply such as ``ALARM^AL_OCCLU^OCCLUSION^``: the alarm code, ``None`` for ``AL_NOALM``.

    The second field is the code; what follows (a text, or a blank) is not needed. A code
    this module does not know is returned as it is: ``daemon.devices.pump_alarms`` says
    what it means.
    """
    if frame.command != Command.ALARM.value:
        raise FrameError("unexpected_reply", f"expected a reply to ALARM, got {frame.command}", where)
    if not frame.values or not _ALARM_CODE.fullmatch(frame.values[0]):
        raise FrameError("bad_data", f"ALARM reply without an alarm code: {frame.values}", where)
    code = frame.values[0]
    return None if code == ALARIS_NO_ALARM else code


# ---------------------------------------------------------------- host commands, parsed (simulator side)


def parse_command(frame: Frame, where: str = "") -> tuple[Command, tuple[str, ...]]:
    """A host command as a pump receives it: which command, and its arguments."""
    try:
        command = Command(frame.command)
    except ValueError as exc:
        raise FrameError("bad_data", f"unknown command {frame.command!r}", where) from exc
    return command, frame.values


# ---------------------------------------------------------------- driver

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class _Parser(Protocol[T_co]):
    def __call__(self, frame: Frame, where: str = "", /) -> T_co: ...


# Faults after which the same command is re-sent at once; after the others (stray
# bytes, a late reply to an earlier attempt) our own reply may still be coming.
_RETRY_NOW = frozenset({"bad_crc", "truncated", "aborted", "bad_length"})


class AlarisDriver:
    """The Alaris protocol over pyserial-asyncio-fast: reads rate and volume infused.

    ``open`` asks the serial number (for the security code) and enables remote
    access; it is re-sent every ``keepalive_interval_s``, as infupy does: before a
    poll when the last one is that old, and from a task of its own when polls come
    less often than that. Polls ask ``INF_RATE``, ``INF_VI`` and ``ALARM``. One exchange at a
    time: the keep-alive and the poll take turns on the line. ``close`` disables
    remote access (best effort) and releases the port.
    """

    def __init__(self, pump: PumpConfig, clock: Clock, on_fault: FaultHandler) -> None:
        """One driver for one open of ``pump.url``; faults go to ``on_fault``."""
        self._pump = pump
        self._clock = clock
        self._on_fault = on_fault
        self._where = f"pump[{pump.id}] {pump.url}"
        self._line: SerialLine[Decoded] = SerialLine(pump, FrameDecoder(self._where), self._where)
        self._exchanger: Exchanger[Decoded] = Exchanger(
            pump, clock, self._where, on_fault, retry_now=_RETRY_NOW, stray=self._stray
        )
        self._turn = asyncio.Lock()
        self._code: str | None = None
        self._enabled_at_s: float | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._tracker = InfusionTracker()

    @property
    def security_code(self) -> str | None:
        """The code in use (``None`` until the serial number is known)."""
        return self._code

    async def open(self) -> None:
        """Open the port, enable remote access (retried later if unanswered), start the keep-alive."""
        await self._line.open()
        with contextlib.suppress(NoReplyError):
            async with self._turn:
                await self._enable()
        if self._pump.keepalive_interval_s < self._pump.poll_interval_s:
            # Otherwise every poll re-enables first, and a task would only add traffic.
            self._keepalive = asyncio.create_task(self._keep_alive(), name=f"pump[{self._pump.id}].keepalive")

    async def close(self) -> None:
        """Stop the keep-alive, disable remote access if the line is up, close the port."""
        task, self._keepalive = self._keepalive, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._line.is_open and self._enabled_at_s is not None:
            # Hand remote access back, as infupy does when it stops; never wait long for it.
            with contextlib.suppress(NoReplyError, LinkClosedError, TimeoutError):
                async with asyncio.timeout(2 * self._pump.reply_timeout_s):
                    for command in REMOTE_COMMANDS:
                        await self._answer(command, DISABLED, attempts=1)
        await self._line.close()

    async def read(self) -> PumpStatus:
        """Rate (``INF_RATE``) and volume infused (``INF_VI``), and the state they show."""
        async with self._turn:
            now_s = self._clock.monotonic()
            if self._enabled_at_s is None or now_s - self._enabled_at_s >= self._pump.keepalive_interval_s:
                await self._enable()
            rate = self._value(await self._answer(Command.RATE), parse_rate)
            volume = self._value(await self._answer(Command.VOLUME_INFUSED), parse_volume_infused)
            alarm_frame = await self._answer(Command.ALARM)
        alarm_valid, alarm = self._alarm(alarm_frame)
        if rate is None or volume is None or not alarm_valid:
            # The state comes from both values, and an unread alarm must not read as
            # "none" (that would end an alarm still there): without all three this poll
            # shows nothing (the faults are counted already).
            raise NoReplyError(f"{self._where}: no usable rate, volume and alarm in this poll")
        state = self._tracker.observe(self._clock.monotonic(), volume.ml, volume.resolution_ml, rate.ml_per_h)
        if state is None:
            raise ReadingPendingError(f"{self._where}: volume infused not yet seen to move or stay put")
        return PumpStatus(state, rate.ml_per_h, volume.ml, alarm)

    def _alarm(self, frame: Frame) -> tuple[bool, str | None]:
        try:
            return True, parse_alarm(frame, self._where)
        except FrameError as exc:
            self._fault(exc, "^".join(frame.fields).encode("ascii", "backslashreplace"))
            return False, None

    async def _keep_alive(self) -> None:
        interval_s = self._pump.keepalive_interval_s
        # A drift-free schedule; its first round, at once, finds open() has just enabled.
        async for _ in every(self._clock, interval_s):
            async with self._turn:
                if (
                    self._enabled_at_s is not None
                    and self._clock.monotonic() - self._enabled_at_s < interval_s
                ):
                    continue  # a poll has just re-enabled
                try:
                    await self._enable()
                except NoReplyError:
                    continue  # counted as faults; the poll will find out what it means
                except LinkClosedError:
                    return  # the next read raises it too; the source reopens the port

    async def _enable(self) -> None:
        if self._code is None:
            serial = self._value(await self._answer(Command.SERIAL_NUMBER), parse_serial_number)
            if serial is None:
                raise NoReplyError(f"{self._where}: no serial number, so no security code")
            self._code = security_code(serial)
        for command in REMOTE_COMMANDS:
            enabled = self._value(await self._answer(command, ENABLED, self._code), _remote(command))
            if not enabled:
                if enabled is False:
                    # A wrong code: another pump on this cable? Ask its serial number again.
                    self._fault(FrameError("remote_refused", f"pump refused {command}", self._where), b"")
                    self._code = None
                self._enabled_at_s = None
                raise NoReplyError(f"{self._where}: remote access not enabled")
        self._enabled_at_s = self._clock.monotonic()

    def _value(self, frame: Frame, parse: _Parser[T]) -> T | None:
        try:
            return parse(frame, self._where)
        except FrameError as exc:
            self._fault(exc, "^".join(frame.fields).encode("ascii", "backslashreplace"))
            return None

    def _fault(self, error: FrameError, raw: bytes) -> None:
        self._on_fault(error, raw)

    async def _answer(self, command: Command, *arguments: str, attempts: int | None = None) -> Frame:
        def match(item: Decoded) -> Frame | Miss:
            assert item.frame is not None  # a Decoded holds a frame or an error
            if item.frame.command != command.value:
                # A late answer to an earlier attempt, or to the other remote command.
                return Miss(
                    FrameError(
                        "unexpected_reply", f"{item.frame.command} while waiting for {command}", self._where
                    )
                )
            return item.frame

        frame = encode_command(command, *arguments)
        return await self._exchanger.ask(self._line, frame, command.value, match, attempts)

    def _stray(self, item: Decoded) -> FrameError:
        return FrameError("unsolicited", "frame nobody asked for (ignored)", self._where)


def _remote(command: Command) -> _Parser[bool]:
    def parse(frame: Frame, where: str = "") -> bool:
        return parse_remote(frame, command, where)

    return parse


def alaris_driver(pump: PumpConfig, clock: Clock, on_fault: FaultHandler) -> AlarisDriver:
    """The ``DriverFactory`` for ``driver = "alaris-asena"``."""
    return AlarisDriver(pump, clock, on_fault)
