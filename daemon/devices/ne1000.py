"""The New Era NE-500/NE-1000 serial protocol: a pure codec, no I/O.

Shared by the pump driver (``daemon.pump``) and the simulator
(``simulators.pump``). Facts come from ``shared/domain.md`` section 6:

- Basic mode. Host: ``[addr]<cmd>`` + CR. Pump: STX + ``<2-digit addr><status>[data]`` + ETX.
- Safe mode. Both ways: STX + ``<len>`` + data + CRC-16/XMODEM (high byte first) + ETX,
  where ``len`` counts the bytes after STX, itself included.
- Status characters ``IWSPTUX``; ``A`` + ``?<code>`` is an alarm; ``?``, ``?NA``,
  ``?OOR``, ``?COM``, ``?IGN`` after the status are command errors.

Every parse either returns a typed value or raises ``FrameError`` whose ``reason`` is
a stable counter label: ``garbage``, ``truncated``, ``bad_length``, ``bad_crc``,
``wrong_address``, ``unknown_status``, ``unknown_alarm``, ``unknown_error``, ``bad_data``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from daemon.devices.framing import StreamBuffer
from daemon.errors import FrameError

STX = 0x02
ETX = 0x03
CR = 0x0D

MAX_ADDRESS = 99
# Longest reply the protocol produces is ``00S`` + ``NE1000X99V99.999``; anything much
# longer is noise, so a decoder never buffers without bound.
MAX_FRAME_BYTES = 64
# Safe mode: len byte + at least "00S" + 2 CRC bytes + ETX.
MIN_SAFE_LENGTH = 1 + 3 + 2 + 1
# Kept below ASCII "0" so that the byte after STX tells a safe packet (length) from a
# basic reply (first address digit); real packets are far shorter.
MAX_SAFE_LENGTH = 0x2F


class Status(StrEnum):
    """The status character of every reply."""

    INFUSING = "I"
    WITHDRAWING = "W"
    STOPPED = "S"
    PAUSED = "P"
    PAUSE_PHASE = "T"
    TRIGGER_WAIT = "U"
    PURGING = "X"
    ALARM = "A"


class Alarm(StrEnum):
    """Alarm codes that follow ``A?``."""

    RESET = "R"  # power was lost and restored
    STALL = "S"  # motor stall: occlusion or end of syringe
    SAFE_MODE_TIMEOUT = "T"  # no valid safe-mode packet in time; pumping stopped
    PROGRAM_ERROR = "E"
    PHASE_OUT_OF_RANGE = "O"


class CommandError(StrEnum):
    """Error replies to a command (they follow the status character)."""

    UNRECOGNISED = "?"
    NOT_APPLICABLE = "?NA"
    OUT_OF_RANGE = "?OOR"
    COMMUNICATION = "?COM"  # the pump saw a corrupted packet
    IGNORED = "?IGN"


class RateUnit(StrEnum):
    """Rate units of ``RAT``."""

    UL_PER_MIN = "UM"
    ML_PER_MIN = "MM"
    UL_PER_H = "UH"
    ML_PER_H = "MH"


class VolumeUnit(StrEnum):
    """Volume units of ``VOL`` and ``DIS``."""

    UL = "UL"
    ML = "ML"


_TO_ML_PER_H = {
    RateUnit.UL_PER_MIN: 60.0 / 1000.0,
    RateUnit.ML_PER_MIN: 60.0,
    RateUnit.UL_PER_H: 1.0 / 1000.0,
    RateUnit.ML_PER_H: 1.0,
}
_TO_ML = {VolumeUnit.UL: 1.0 / 1000.0, VolumeUnit.ML: 1.0}


def rate_to_ml_per_h(value: float, unit: RateUnit) -> float:
    """A rate in ``unit`` converted to mL/h."""
    return value * _TO_ML_PER_H[unit]


def volume_to_ml(value: float, unit: VolumeUnit) -> float:
    """A volume in ``unit`` converted to mL."""
    return value * _TO_ML[unit]


@dataclass(frozen=True, slots=True)
class Reply:
    """One parsed pump reply.

    ``data`` is what follows the status character (and the alarm or error, when
    there is one). ``safe`` says whether it came as a CRC-protected packet.
    """

    address: int
    status: Status
    data: str = ""
    alarm: Alarm | None = None
    error: CommandError | None = None
    safe: bool = False


@dataclass(frozen=True, slots=True)
class Rate:
    """A ``RAT`` reply."""

    value: float
    unit: RateUnit

    @property
    def ml_per_h(self) -> float:
        """The rate in mL/h."""
        return rate_to_ml_per_h(self.value, self.unit)


@dataclass(frozen=True, slots=True)
class Dispensed:
    """A ``DIS`` reply: volumes infused and withdrawn since last cleared."""

    infused: float
    withdrawn: float
    unit: VolumeUnit

    @property
    def infused_ml(self) -> float:
        """Volume infused in mL."""
        return volume_to_ml(self.infused, self.unit)

    @property
    def withdrawn_ml(self) -> float:
        """Volume withdrawn in mL."""
        return volume_to_ml(self.withdrawn, self.unit)


@dataclass(frozen=True, slots=True)
class Version:
    """A ``VER`` reply such as ``NE1000V3.928`` or ``NE1000X2V3.928``."""

    model: int
    major: int
    minor: str  # kept as text: "928" and "0928" are different firmware
    upgrade: int | None = None

    def __str__(self) -> str:
        upgrade = f"X{self.upgrade}" if self.upgrade is not None else ""
        return f"NE{self.model}{upgrade}V{self.major}.{self.minor}"


# ---------------------------------------------------------------- checksums


def crc16_xmodem(data: bytes) -> int:
    """CRC-16/XMODEM: polynomial 0x1021, initial value 0, no reflection, no final xor."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


# ---------------------------------------------------------------- numbers

_FLOAT = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)")
_MAX_DIGITS = 4
_MAX_DECIMALS = 3


def format_float(value: float) -> str:
    """A number as the pump writes it: at most 4 digits, at most 3 of them decimals.

    Raises ``ValueError`` for a negative value or one of 10000 or more.
    """
    if not 0 <= value < 10**_MAX_DIGITS or round(value) >= 10**_MAX_DIGITS:
        raise ValueError(f"{value} does not fit the pump's 4-digit number format")
    int_digits = len(str(round(value))) if value >= 1 else 1
    decimals = max(0, min(_MAX_DECIMALS, _MAX_DIGITS - int_digits))
    text = f"{value:.{decimals}f}"
    if len(text.replace(".", "")) > _MAX_DIGITS:
        # Rounding carried into a new digit, e.g. 9.9996 -> "10.000".
        text = f"{value:.{max(0, decimals - 1)}f}"
    return text


def parse_float(text: str, where: str = "") -> float:
    """A number as the pump writes it; ``FrameError("bad_data")`` otherwise."""
    if not _FLOAT.fullmatch(text):
        raise FrameError("bad_data", f"not a number: {text!r}", where)
    return float(text)


_RATE = re.compile(r"(?P<value>[0-9.]+)(?P<unit>UM|MM|UH|MH)")
_DISPENSED = re.compile(r"I(?P<infused>[0-9.]+)W(?P<withdrawn>[0-9.]+)(?P<unit>UL|ML)")
_VOLUME = re.compile(r"(?P<value>[0-9.]+)(?P<unit>UL|ML)")
_VERSION = re.compile(
    r"NE(?P<model>\d{3,4})(?:X(?P<upgrade>\d{1,3}))?V(?P<major>\d{1,2})\.(?P<minor>\d{1,4})"
)


def parse_rate(data: str, where: str = "") -> Rate:
    """The data of a ``RAT`` reply, e.g. ``10.00MH``."""
    match = _RATE.fullmatch(data)
    if match is None:
        raise FrameError("bad_data", f"not a rate: {data!r}", where)
    return Rate(parse_float(match["value"], where), RateUnit(match["unit"]))


def parse_dispensed(data: str, where: str = "") -> Dispensed:
    """The data of a ``DIS`` reply, e.g. ``I1.234W0.000ML``."""
    match = _DISPENSED.fullmatch(data)
    if match is None:
        raise FrameError("bad_data", f"not a dispensed volume: {data!r}", where)
    return Dispensed(
        parse_float(match["infused"], where),
        parse_float(match["withdrawn"], where),
        VolumeUnit(match["unit"]),
    )


def parse_volume(data: str, where: str = "") -> tuple[float, VolumeUnit]:
    """The data of a ``VOL`` reply, e.g. ``240.0ML``."""
    match = _VOLUME.fullmatch(data)
    if match is None:
        raise FrameError("bad_data", f"not a volume: {data!r}", where)
    return parse_float(match["value"], where), VolumeUnit(match["unit"])


def parse_version(data: str, where: str = "") -> Version:
    """The data of a ``VER`` reply, e.g. ``NE1000V3.928``."""
    match = _VERSION.fullmatch(data)
    if match is None:
        raise FrameError("bad_data", f"not an NE-1000 version: {data!r}", where)
    upgrade = match["upgrade"]
    return Version(
        int(match["model"]),
        int(match["major"]),
        match["minor"],
        int(upgrade) if upgrade is not None else None,
    )


# ---------------------------------------------------------------- encoding


def _check_address(address: int | None) -> None:
    if address is not None and not 0 <= address <= MAX_ADDRESS:
        raise ValueError(f"pump address must be 0-{MAX_ADDRESS}, got {address}")


def _check_text(text: str) -> bytes:
    raw = text.encode("ascii", "strict")
    if any(b < 0x20 or b > 0x7E for b in raw):
        raise ValueError(f"command must be printable ASCII: {text!r}")
    return raw


def safe_packet(data: bytes) -> bytes:
    """Wrap ``data`` in a safe-mode packet: STX, length, data, CRC high then low, ETX."""
    length = 1 + len(data) + 2 + 1
    if length > MAX_SAFE_LENGTH:
        raise ValueError(f"safe-mode packet too long: {length} bytes")
    crc = crc16_xmodem(data)
    return bytes([STX, length]) + data + bytes([crc >> 8, crc & 0xFF, ETX])


def encode_command(command: str, address: int | None, *, safe: bool) -> bytes:
    """A host command (``"RAT"``, ``"DIS"``, ``""`` for status) for one pump address.

    ``address=None`` sends no address (the pump's own rules apply).
    """
    _check_address(address)
    body = _check_text((str(address) if address is not None else "") + command)
    return safe_packet(body) if safe else body + bytes([CR])


def encode_reply(
    address: int,
    status: Status,
    data: str = "",
    *,
    safe: bool,
) -> bytes:
    """A pump reply, as the simulator sends it."""
    _check_address(address)
    body = _check_text(f"{address:02d}{status.value}{data}")
    return safe_packet(body) if safe else bytes([STX]) + body + bytes([ETX])


# ---------------------------------------------------------------- parsing


def _parse_payload(payload: bytes, *, address: int | None, safe: bool, where: str) -> Reply:
    if len(payload) < 3:
        raise FrameError("truncated", f"reply too short: {payload!r}", where)
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError as exc:
        raise FrameError("garbage", f"non-ASCII bytes in reply: {payload!r}", where) from exc
    if not text.isprintable():
        raise FrameError("garbage", f"control bytes in reply: {payload!r}", where)
    if not (text[0].isdigit() and text[1].isdigit()):
        raise FrameError("garbage", f"reply does not start with a 2-digit address: {text!r}", where)
    reply_address = int(text[:2])
    if address is not None and reply_address != address:
        raise FrameError("wrong_address", f"reply from address {reply_address}, expected {address}", where)
    try:
        status = Status(text[2])
    except ValueError as exc:
        raise FrameError("unknown_status", f"unknown status {text[2]!r} in {text!r}", where) from exc
    rest = text[3:]
    if status is Status.ALARM:
        if len(rest) < 2 or rest[0] != "?":
            raise FrameError("unknown_alarm", f"alarm reply without '?<code>': {text!r}", where)
        try:
            alarm = Alarm(rest[1])
        except ValueError as exc:
            raise FrameError("unknown_alarm", f"unknown alarm code {rest[1]!r}", where) from exc
        return Reply(reply_address, status, rest[2:], alarm=alarm, safe=safe)
    if rest.startswith("?"):
        try:
            error = CommandError(rest)
        except ValueError as exc:
            raise FrameError("unknown_error", f"unknown error reply {rest!r}", where) from exc
        return Reply(reply_address, status, "", error=error, safe=safe)
    return Reply(reply_address, status, rest, safe=safe)


def parse_reply(frame: bytes, *, address: int | None = None, where: str = "") -> Reply:
    """One whole reply frame, from STX to ETX, in basic or safe mode.

    The byte after STX tells the modes apart: an ASCII digit starts a basic reply's
    address; a safe packet's length is at most ``MAX_SAFE_LENGTH`` (< ``"0"``).
    ``address`` set means a reply from another address is a ``wrong_address`` error.
    """
    if len(frame) < 2 or frame[0] != STX:
        raise FrameError("garbage", "a reply must start with STX", where)
    if frame[-1] != ETX:
        raise FrameError("truncated", "a reply must end with ETX", where)
    if len(frame) > MAX_FRAME_BYTES:
        raise FrameError("bad_length", f"reply of {len(frame)} bytes is too long", where)
    if 0x30 <= frame[1] <= 0x39:
        return _parse_payload(frame[1:-1], address=address, safe=False, where=where)
    length = frame[1]
    if length != len(frame) - 1 or length < MIN_SAFE_LENGTH:
        raise FrameError("bad_length", f"length byte {length} for a {len(frame)}-byte packet", where)
    payload = frame[2:-3]
    received = (frame[-3] << 8) | frame[-2]
    expected = crc16_xmodem(payload)
    if received != expected:
        raise FrameError("bad_crc", f"CRC {received:04X}, computed {expected:04X}", where)
    return _parse_payload(payload, address=address, safe=True, where=where)


@dataclass(frozen=True, slots=True)
class Decoded:
    """One item from the stream decoder: a reply, or an error with the bytes it covers."""

    raw: bytes
    reply: Reply | None = None
    error: FrameError | None = None


class ReplyDecoder(StreamBuffer):
    """Splits a byte stream into replies and errors, resynchronising on STX.

    ``feed`` never raises for any input; each byte ends up in exactly one item, or
    stays buffered as the start of a frame not yet complete (``flush`` ends it).
    """

    def __init__(self, *, address: int | None = None, where: str = "") -> None:
        """``address``: replies from any other address become ``wrong_address`` errors."""
        super().__init__(where)
        self._address = address

    def _error(self, reason: str, detail: str, raw: bytes) -> Decoded:
        return Decoded(raw, error=FrameError(reason, detail, self._where))

    def feed(self, data: bytes) -> list[Decoded]:
        """Add bytes from the line; return every item now complete."""
        self._buffer += data
        out: list[Decoded] = []
        while self._buffer:
            start = self._buffer.find(STX)
            if start != 0:
                raw = self._take(start if start > 0 else len(self._buffer))
                out.append(self._error("garbage", "bytes outside a frame", raw))
                continue
            if len(self._buffer) < 2:
                break
            # Same rule as parse_reply: a digit after STX starts a basic reply.
            item = self._basic() if 0x30 <= self._buffer[1] <= 0x39 else self._safe()
            if item is None:
                break
            out.append(item)
        return out

    def _basic(self) -> Decoded | None:
        end = self._buffer.find(ETX, 1)
        restart = self._buffer.find(STX, 1)
        if restart != -1 and (end == -1 or restart < end):
            # A new frame began before this one ended: the first was cut short.
            return self._error("truncated", "frame interrupted by a new STX", self._take(restart))
        if end == -1:
            if len(self._buffer) >= MAX_FRAME_BYTES:
                return self._error(
                    "bad_length", "no ETX within the longest frame", self._take(len(self._buffer))
                )
            return None
        raw = self._take(end + 1)
        return self._parse(raw)

    def _safe(self) -> Decoded | None:
        length = self._buffer[1]
        if length < MIN_SAFE_LENGTH or length > MAX_SAFE_LENGTH:
            # Not a plausible packet: drop the STX and resynchronise on what follows.
            return self._error("bad_length", f"safe-mode length byte {length}", self._take(1))
        if len(self._buffer) < 1 + length:
            return None
        if self._buffer[length] != ETX:
            # The length byte lies (or the tail is lost): drop the STX and rescan.
            return self._error("truncated", "safe-mode packet does not end with ETX", self._take(1))
        return self._parse(self._take(1 + length))

    def _parse(self, raw: bytes) -> Decoded:
        try:
            return Decoded(raw, reply=parse_reply(raw, address=self._address, where=self._where))
        except FrameError as exc:
            return Decoded(raw, error=exc)

    def flush(self) -> list[Decoded]:
        """End the stream (a timeout or a gap): pending bytes become a ``truncated`` error."""
        if not self._buffer:
            return []
        return [self._error("truncated", "incomplete frame at end of input", self._take(len(self._buffer)))]


# ---------------------------------------------------------------- host commands, parsed (simulator side)


@dataclass(frozen=True, slots=True)
class Command:
    """A command as a pump receives it: address (``None`` if absent), text, system flag."""

    address: int | None
    text: str
    system: bool = False  # "*": every pump obeys regardless of address


_COMMAND = re.compile(r"(?P<address>\d{1,2})?(?P<text>.*?)(?P<system>\*)?")


def parse_command(body: bytes, where: str = "") -> Command:
    """A host command body (without CR or packet framing).

    As the pump does, spaces and control characters are stripped and text is
    upper-cased.
    """
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise FrameError("garbage", f"non-ASCII command: {body!r}", where) from exc
    cleaned = "".join(ch for ch in text if ch.isprintable() and ch != " ").upper()
    match = _COMMAND.fullmatch(cleaned)
    if match is None:  # pragma: no cover - the pattern accepts every string
        raise FrameError("garbage", f"not a command: {cleaned!r}", where)
    address = match["address"]
    return Command(int(address) if address is not None else None, match["text"], match["system"] is not None)


def parse_safe_command(packet: bytes, where: str = "") -> Command:
    """A whole safe-mode packet from a host, checked (length, CRC, ETX) and parsed."""
    if len(packet) < 5 or packet[0] != STX:
        raise FrameError("garbage", "a packet must start with STX", where)
    if packet[-1] != ETX:
        raise FrameError("truncated", "a packet must end with ETX", where)
    if packet[1] != len(packet) - 1:
        raise FrameError("bad_length", f"length byte {packet[1]} for a {len(packet)}-byte packet", where)
    payload = packet[2:-3]
    received = (packet[-3] << 8) | packet[-2]
    if received != crc16_xmodem(payload):
        raise FrameError("bad_crc", f"CRC {received:04X}, computed {crc16_xmodem(payload):04X}", where)
    return parse_command(payload, where)
