"""An NE-1000 syringe pump on a pseudo-terminal, for tests, scenarios and the demo.

It speaks the published protocol (``shared/domain.md`` section 6, codec in
``daemon.devices.ne1000``): basic and safe mode, every documented command, alarms that
a valid command acknowledges, a safe-mode timeout, and a volume infused that
advances with an injected clock while infusing. A Python API lets tests break
the line: garbage, dropped, delayed, split or corrupted replies, another
address, and a device that vanishes (the pty master is closed) and returns.

Command line::

    python -m simulators.pump --link /tmp/pump0 [--address N] [--rate-ml-per-h R]
                              [--running] [--baud B]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import sys
from collections import deque
from enum import StrEnum
from pathlib import Path

from daemon.clock import Clock, SystemClock
from daemon.devices.ne1000 import (
    CR,
    MAX_FRAME_BYTES,
    MAX_SAFE_LENGTH,
    STX,
    Alarm,
    Command,
    CommandError,
    RateUnit,
    Status,
    VolumeUnit,
    encode_reply,
    format_float,
    parse_command,
    parse_safe_command,
    rate_to_ml_per_h,
    volume_to_ml,
)
from daemon.errors import FrameError
from simulators.ptyport import PtyPort

log = logging.getLogger(__name__)

VERSION = "NE1000V3.928"
# The manual: a partial safe-mode packet is dropped after a 0.5 s gap between bytes.
INTER_BYTE_GAP_S = 0.5
# A 60 mL syringe; above 14 mm the default volume unit is mL (domain.md section 6).
DEFAULT_DIAMETER_MM = 26.59
SMALL_SYRINGE_MAX_MM = 14.0
MAX_SAFE_TIMEOUT_S = 255
# Length byte + at least one data byte + CRC + ETX.
MIN_HOST_PACKET = 5

# The NE-1000's serial speeds (domain.md section 6).
BAUD_RATES = (300, 1200, 2400, 9600, 19200)
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_SET_RATE = re.compile(rf"(?P<value>{_NUMBER})(?P<unit>UM|MM|UH|MH)?")
_SET_NUMBER = re.compile(_NUMBER)


class ReplyFault(StrEnum):
    """Ways to spoil one reply (``SimulatedPump.spoil``)."""

    BAD_CRC = "bad_crc"  # safe mode: wrong CRC; basic mode: an unknown status character
    WRONG_ADDRESS = "wrong_address"  # sent as if from the next address instead
    PARTIAL = "partial"  # only the first half is sent
    SPLIT = "split"  # sent in two pieces, 50 ms apart
    GARBAGE_BEFORE = "garbage_before"  # noise bytes, then the reply


class SimulatedPump:
    """One NE-1000 on its own pseudo-terminal.

    Use as ``async with SimulatedPump(clock=...) as pump:``; ``pump.link`` (or
    ``pump.device_path``) is what a host opens.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        address: int = 0,
        link: Path | None = None,
        rate_ml_per_h: float = 10.0,
        running: bool = False,
        baudrate: int = 19200,
        diameter_mm: float = DEFAULT_DIAMETER_MM,
    ) -> None:
        """A stopped pump at ``rate_ml_per_h`` (infusing if ``running``); ``open`` makes its pty."""
        if baudrate not in BAUD_RATES:
            raise ValueError(f"baud rate must be one of {list(BAUD_RATES)}, got {baudrate}")
        self.clock = clock
        self.address = address
        self.baudrate = baudrate
        self.diameter_mm = diameter_mm
        self.rate_value = rate_ml_per_h
        self.rate_unit = RateUnit.ML_PER_H
        self.volume_unit = VolumeUnit.UL if diameter_mm <= SMALL_SYRINGE_MAX_MM else VolumeUnit.ML
        self.volume_target = 0.0  # 0 = continuous
        self.direction = "INF"
        self.phase = 1
        self.safe_timeout_s = 0
        self.alarm: Alarm | None = None
        self.infused_ml = 0.0
        self.withdrawn_ml = 0.0
        self.commands_seen = 0  # valid commands, for tests
        self._status = Status.INFUSING if running else Status.STOPPED
        self._last_update_s = clock.monotonic()
        self._last_packet_s = clock.monotonic()
        self._rx_basic = bytearray()
        self._rx_safe = bytearray()
        self._last_byte_s = clock.monotonic()
        self._faults: deque[ReplyFault] = deque()
        self.port = PtyPort(
            clock=clock, baudrate=baudrate, link=link, on_bytes=self._on_bytes, name=f"sim-pump[{address}]"
        )
        self._watchdog: asyncio.Task[None] | None = None
        self._mode_changed = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> SimulatedPump:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> str:
        """Create the pty (and the link), start serving; return the device path."""
        path = await self.port.start()
        self._watchdog = asyncio.create_task(self._safe_watchdog(), name=f"sim-pump[{self.address}].safe")
        return path

    async def close(self) -> None:
        """Stop serving and remove the pty and the link."""
        task, self._watchdog = self._watchdog, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.port.stop()
        self._clear_input()

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

    def _clear_input(self) -> None:
        self._rx_basic.clear()
        self._rx_safe.clear()

    async def disconnect(self) -> None:
        """The cable is pulled: the pty (and the link) vanish; the host read fails."""
        self.port.disconnect()
        self._clear_input()

    async def reconnect(self) -> str:
        """The cable is back: a new pty, the link re-pointed to it. Returns the new path."""
        return self.port.reconnect()

    # ------------------------------------------------------------ scenario API

    def set_rate(self, value: float, unit: RateUnit = RateUnit.ML_PER_H) -> None:
        """Program a rate, as a nurse would at the keypad."""
        self._advance()
        self.rate_value, self.rate_unit = value, unit

    @property
    def rate_ml_per_h(self) -> float:
        """The programmed rate in mL/h."""
        return rate_to_ml_per_h(self.rate_value, self.rate_unit)

    @property
    def running(self) -> bool:
        """Whether the pump moves its plunger now (infusing or withdrawing)."""
        return self.status in (Status.INFUSING, Status.WITHDRAWING)

    @property
    def status(self) -> Status:
        """The status character the pump would answer now."""
        self._advance()
        return self._status

    def start(self) -> None:
        """Start pumping in the programmed direction."""
        self._advance()
        self._status = Status.INFUSING if self.direction == "INF" else Status.WITHDRAWING

    def stop(self) -> None:
        """Stop pumping."""
        self._advance()
        self._status = Status.STOPPED

    def pause(self) -> None:
        """Pause pumping."""
        self._advance()
        self._status = Status.PAUSED

    def clear_alarm(self) -> None:
        """The alarm is cleared at the keypad; the pump stays stopped (a host's command clears it too)."""
        self.alarm = None

    def raise_alarm(self, alarm: Alarm) -> None:
        """An alarm: pumping stops; in safe mode the alarm packet is pushed at once."""
        self._advance()
        self._status = Status.STOPPED
        self.alarm = alarm
        if self.safe_timeout_s > 0:
            self._send(
                encode_reply(self.address, Status.ALARM, f"?{alarm.value}", safe=True), spoilable=False
            )

    def inject_garbage(self, data: bytes) -> None:
        """Write noise bytes on the line now."""
        self._send(data, spoilable=False)

    def drop_replies(self, count: int = -1) -> None:
        """Answer nothing to the next ``count`` commands (-1: until ``drop_replies(0)``)."""
        self.port.drop_replies(count)

    def delay_replies(self, seconds: float) -> None:
        """Send each reply ``seconds`` (clock time) late; 0 to stop."""
        self.port.delay_s = seconds

    def spoil(self, fault: ReplyFault, count: int = 1) -> None:
        """Spoil the next ``count`` replies with ``fault``."""
        self._faults.extend([fault] * count)

    # ------------------------------------------------------------ time

    def _advance(self) -> None:
        now_s = self.clock.monotonic()
        elapsed_h = max(0.0, now_s - self._last_update_s) / 3600.0
        self._last_update_s = now_s
        if self._status not in (Status.INFUSING, Status.WITHDRAWING) or elapsed_h == 0:
            return
        moved_ml = self.rate_ml_per_h * elapsed_h
        target_ml = volume_to_ml(self.volume_target, self.volume_unit)
        if self._status is Status.INFUSING:
            if target_ml > 0 and self.infused_ml + moved_ml >= target_ml:
                self.infused_ml = target_ml
                self._status = Status.STOPPED
            else:
                self.infused_ml += moved_ml
        else:
            self.withdrawn_ml += moved_ml

    async def _safe_watchdog(self) -> None:
        while True:
            if self.safe_timeout_s <= 0:
                await self._mode_changed.wait()
                self._mode_changed.clear()
                continue
            deadline = self._last_packet_s + self.safe_timeout_s
            now_s = self.clock.monotonic()
            if now_s < deadline:
                await self.clock.sleep(deadline - now_s)
                continue
            if self.alarm is None:
                log.info("simulated pump %d: safe-mode timeout", self.address)
                self.raise_alarm(Alarm.SAFE_MODE_TIMEOUT)
            # Wait for the next valid packet before judging again.
            self._last_packet_s = self.clock.monotonic()

    # ------------------------------------------------------------ line

    def _on_bytes(self, data: bytes) -> None:
        now_s = self.clock.monotonic()
        if now_s - self._last_byte_s > INTER_BYTE_GAP_S:
            self._rx_safe.clear()
        self._last_byte_s = now_s
        for byte in data:
            self._on_byte(byte)

    def _on_byte(self, byte: int) -> None:
        if self._rx_safe:
            self._rx_safe.append(byte)
            length = self._rx_safe[1]
            if length < MIN_HOST_PACKET or length > MAX_SAFE_LENGTH:
                self._rx_safe.clear()  # not a packet: drop it
            elif len(self._rx_safe) == length + 1:
                packet = bytes(self._rx_safe)
                self._rx_safe.clear()
                self._on_safe_packet(packet)
            return
        if byte == STX:
            self._rx_basic.clear()
            self._rx_safe.append(byte)
        elif byte == CR:
            body = bytes(self._rx_basic)
            self._rx_basic.clear()
            self._on_basic(body)
        elif len(self._rx_basic) < MAX_FRAME_BYTES:
            self._rx_basic.append(byte)

    def _on_basic(self, body: bytes) -> None:
        if self.safe_timeout_s > 0:
            return  # in safe mode only packets count
        try:
            command = parse_command(body)
        except FrameError:
            return
        if self._for_me(command):
            self._answer(command)

    def _on_safe_packet(self, packet: bytes) -> None:
        try:
            command = parse_safe_command(packet)
        except FrameError:
            # A corrupted packet: the pump says so (the host may re-send).
            self._reply(self.status, CommandError.COMMUNICATION.value)
            return
        self._last_packet_s = self.clock.monotonic()
        if self._for_me(command):
            self._answer(command)

    def _for_me(self, command: Command) -> bool:
        return command.system or command.address is None or command.address == self.address

    def _reply(self, status: Status, data: str = "") -> None:
        self._send(encode_reply(self.address, status, data, safe=self.safe_timeout_s > 0), spoilable=True)

    def _send(self, frame: bytes, *, spoilable: bool) -> None:
        if spoilable:
            if self.port.should_drop():
                return
            if self._faults:
                frame = self._spoiled(frame, self._faults.popleft())
                if not frame:
                    return
        self.port.send(frame)

    def _spoiled(self, frame: bytes, fault: ReplyFault) -> bytes:
        safe = frame[1] < 0x30
        if fault is ReplyFault.BAD_CRC:
            if safe:
                return frame[:-2] + bytes([frame[-2] ^ 0xFF]) + frame[-1:]
            return frame[:3] + b"#" + frame[4:]
        if fault is ReplyFault.WRONG_ADDRESS:
            other = (self.address + 1) % 100
            body = frame[2:-3] if safe else frame[1:-1]
            return encode_reply(other, Status(chr(body[2])), body[3:].decode("ascii"), safe=safe)
        if fault is ReplyFault.PARTIAL:
            return frame[: len(frame) // 2]
        if fault is ReplyFault.SPLIT:
            half = len(frame) // 2
            self.port.send(frame[:half])
            self.port.send(b"")  # marks a pause
            return frame[half:]
        return b"\x7f\xff garbage \x00" + frame

    # ------------------------------------------------------------ commands

    def _answer(self, command: Command) -> None:
        self.commands_seen += 1
        self._advance()
        if self.alarm is not None:
            # The reply to any valid command acknowledges the alarm; the command itself is not run.
            alarm, self.alarm = self.alarm, None
            self._reply(Status.ALARM, f"?{alarm.value}")
            return
        text = command.text
        handler = _HANDLERS.get(text[:3])
        if handler is None and text:
            self._reply(self._status, CommandError.UNRECOGNISED.value)
            return
        if handler is None:
            self._reply(self._status)
            return
        result = handler(self, text[3:])
        if result is None:
            return  # answered already (SAF switches mode before replying)
        self._reply(self._status, result)

    def _error(self, error: CommandError) -> str:
        return error.value

    def _cmd_rat(self, arg: str) -> str:
        if not arg:
            return f"{format_float(self.rate_value)}{self.rate_unit.value}"
        match = _SET_RATE.fullmatch(arg)
        if match is None:
            return self._error(CommandError.UNRECOGNISED)
        unit = RateUnit(match["unit"]) if match["unit"] else self.rate_unit
        running = self._status in (Status.INFUSING, Status.WITHDRAWING)
        if running and unit is not self.rate_unit:
            return self._error(CommandError.NOT_APPLICABLE)  # units cannot change while running
        value = float(match["value"])
        try:
            format_float(value)
        except ValueError:
            return self._error(CommandError.OUT_OF_RANGE)
        self.rate_value, self.rate_unit = value, unit
        return ""

    def _cmd_vol(self, arg: str) -> str:
        if not arg:
            return f"{format_float(self.volume_target)}{self.volume_unit.value}"
        if arg in ("UL", "ML"):
            self.volume_unit = VolumeUnit(arg)
            return ""
        if not _SET_NUMBER.fullmatch(arg):
            return self._error(CommandError.UNRECOGNISED)
        value = float(arg)
        try:
            format_float(value)
        except ValueError:
            return self._error(CommandError.OUT_OF_RANGE)
        self.volume_target = value
        return ""

    def _cmd_dia(self, arg: str) -> str:
        if not arg:
            return format_float(self.diameter_mm)
        if not _SET_NUMBER.fullmatch(arg):
            return self._error(CommandError.UNRECOGNISED)
        if self._status is not Status.STOPPED:
            return self._error(CommandError.NOT_APPLICABLE)
        value = float(arg)
        if not 0.1 <= value <= 50.0:
            return self._error(CommandError.OUT_OF_RANGE)
        self.diameter_mm = value
        return ""

    def _cmd_dir(self, arg: str) -> str:
        if not arg:
            return self.direction
        if arg == "REV":
            self.direction = "WDR" if self.direction == "INF" else "INF"
        elif arg in ("INF", "WDR"):
            self.direction = arg
        elif arg != "STK":
            return self._error(CommandError.UNRECOGNISED)
        if self._status in (Status.INFUSING, Status.WITHDRAWING):
            self._status = Status.INFUSING if self.direction == "INF" else Status.WITHDRAWING
        return ""

    def _cmd_run(self, arg: str) -> str:
        if arg:
            return self._error(CommandError.UNRECOGNISED)
        self.start()
        return ""

    def _cmd_stp(self, arg: str) -> str:
        if arg:
            return self._error(CommandError.UNRECOGNISED)
        # The first STP pauses a running pump; a second stops it.
        running = self._status in (Status.INFUSING, Status.WITHDRAWING, Status.PURGING)
        self._status = Status.PAUSED if running else Status.STOPPED
        return ""

    def _cmd_pur(self, arg: str) -> str:
        if arg:
            return self._error(CommandError.UNRECOGNISED)
        self._status = Status.PURGING
        return ""

    def _cmd_phn(self, arg: str) -> str:
        if not arg:
            return f"{self.phase:02d}"
        if not arg.isdigit() or not 1 <= int(arg) <= 41:
            return self._error(CommandError.OUT_OF_RANGE)
        self.phase = int(arg)
        return ""

    def _cmd_fun(self, arg: str) -> str:
        if arg in ("", "RAT"):
            return "RAT" if not arg else ""
        return self._error(CommandError.NOT_APPLICABLE)

    def _cmd_dis(self, arg: str) -> str:
        if arg:
            return self._error(CommandError.UNRECOGNISED)
        per_ml = 1000.0 if self.volume_unit is VolumeUnit.UL else 1.0
        infused = format_float(min(self.infused_ml * per_ml, 9999.0))
        withdrawn = format_float(min(self.withdrawn_ml * per_ml, 9999.0))
        return f"I{infused}W{withdrawn}{self.volume_unit.value}"

    def _cmd_cld(self, arg: str) -> str:
        if arg == "INF":
            self.infused_ml = 0.0
        elif arg == "WDR":
            self.withdrawn_ml = 0.0
        else:
            return self._error(CommandError.UNRECOGNISED)
        return ""

    def _cmd_ver(self, arg: str) -> str:
        return VERSION if not arg else self._error(CommandError.UNRECOGNISED)

    def _cmd_saf(self, arg: str) -> str | None:
        if not arg:
            return str(self.safe_timeout_s)
        if not arg.isdigit() or int(arg) > MAX_SAFE_TIMEOUT_S:
            return self._error(CommandError.OUT_OF_RANGE)
        # The answer goes in the new mode: safe when n > 0, basic when n = 0.
        self.safe_timeout_s = int(arg)
        self._last_packet_s = self.clock.monotonic()
        self._mode_changed.set()
        self._reply(self._status)
        return None


_HANDLERS = {
    "RAT": SimulatedPump._cmd_rat,
    "VOL": SimulatedPump._cmd_vol,
    "DIA": SimulatedPump._cmd_dia,
    "DIR": SimulatedPump._cmd_dir,
    "RUN": SimulatedPump._cmd_run,
    "STP": SimulatedPump._cmd_stp,
    "PUR": SimulatedPump._cmd_pur,
    "PHN": SimulatedPump._cmd_phn,
    "FUN": SimulatedPump._cmd_fun,
    "DIS": SimulatedPump._cmd_dis,
    "CLD": SimulatedPump._cmd_cld,
    "VER": SimulatedPump._cmd_ver,
    "SAF": SimulatedPump._cmd_saf,
}

# ------------------------------------------------------------ command line


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pump = SimulatedPump(
        clock=SystemClock(),
        address=args.address,
        link=Path(args.link),
        rate_ml_per_h=args.rate_ml_per_h,
        running=args.running,
        baudrate=args.baud,
    )
    async with pump:
        sys.stdout.write(f"{pump.device_path}\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Run one simulated pump until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m simulators.pump", description=__doc__.splitlines()[0])
    parser.add_argument("--link", required=True, help="symbolic link to create to the pty")
    parser.add_argument("--address", type=int, default=0, choices=range(100), metavar="N", help="0-99")
    parser.add_argument("--rate-ml-per-h", type=float, default=10.0)
    parser.add_argument("--running", action="store_true", help="start infusing")
    parser.add_argument("--baud", type=int, default=19200, choices=BAUD_RATES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
