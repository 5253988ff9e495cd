"""A BD Alaris (Asena GH/CC) syringe pump on a pseudo-terminal, for tests, scenarios and the demo.

It speaks the protocol of ``docs/pump-protocols.md`` (codec in ``daemon.devices.alaris``):
``INST_SERIALNO``, ``REMOTE_CTRL`` / ``REMOTE_CFG`` with the security code derived
from its serial number (a wrong code is refused), ``INF_RATE``, ``INF_VI`` and ``ALARM``; its
volume infused advances with an injected clock while it infuses. Remote access
lapses when no keep-alive comes within ``remote_timeout_s``, and queries are then
left unanswered (``queries_need_remote``). What a real pump answers where the
sources are silent is marked there as the simulator's choice.

A Python API follows a scenario's pump program (rate, start, stop, pause, alarm,
cable pulled) and lets tests break the line: garbage, dropped, delayed, split,
aborted (ESC) or corrupted replies, missed keep-alives, another pump on the cable.

Command line::

    python -m simulators.alaris --link /tmp/alaris0 [--serial-number S] [--rate-ml-per-h R] [--running]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from daemon.clock import Clock, SystemClock
from daemon.devices.alaris import (
    DISABLED,
    ENABLED,
    ESC,
    REMOTE_COMMANDS,
    Command,
    FrameDecoder,
    encode_frame,
    parse_command,
    security_code,
)
from daemon.devices.pump_alarms import ALARIS_NO_ALARM, meaning
from daemon.errors import FrameError
from simulators.ptyport import PtyPort

log = logging.getLogger(__name__)

BAUD_RATE = 38400  # the only speed infupy 2022.1.11 uses
# A serial number in the shape of the ones seen in public host code ("8002-51740").
DEFAULT_SERIAL_NUMBER = "8002-50001"
# How long remote access lasts without a keep-alive: the simulator's choice (the real
# pump's timeout is not known; infupy re-sends every second).
DEFAULT_REMOTE_TIMEOUT_S = 5.0
RATE_DECIMALS = 2  # "10.00": the simulator's format (a host sets rates with two decimals)
VOLUME_DECIMALS = 3  # "1.234": the simulator's format


class AlarisFault(StrEnum):
    """Ways to spoil one reply (``SimulatedAlaris.spoil``)."""

    BAD_CRC = "bad_crc"  # one checksum digit changed
    PARTIAL = "partial"  # only the first half, no CR
    SPLIT = "split"  # sent in two pieces, 50 ms apart
    GARBAGE_BEFORE = "garbage_before"  # noise bytes, then the reply
    ABORTED = "aborted"  # half the reply, ESC, then the whole reply


@dataclass(frozen=True, slots=True)
class RemoteRequest:
    """A remote-access request the pump heard (enable with a code, or disable), and its outcome."""

    command: Command
    enable: bool
    code: str  # "" for a disable
    accepted: bool


class SimulatedAlaris:
    """One Alaris syringe pump on its own pseudo-terminal.

    Use as ``async with SimulatedAlaris(clock=...) as pump:``; ``pump.link`` (or
    ``pump.device_path``) is what a host opens.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        link: Path | None = None,
        serial_number: str = DEFAULT_SERIAL_NUMBER,
        rate_ml_per_h: float = 10.0,
        running: bool = False,
        remote_timeout_s: float = DEFAULT_REMOTE_TIMEOUT_S,
        queries_need_remote: bool = True,
    ) -> None:
        """A stopped pump at ``rate_ml_per_h`` (infusing if ``running``); ``open`` makes its pty."""
        self.clock = clock
        self.serial_number = serial_number
        self.rate_ml_per_h = rate_ml_per_h
        self.remote_timeout_s = remote_timeout_s
        self.queries_need_remote = queries_need_remote
        self.infused_ml = 0.0
        self.alarm: str | None = None  # the alarm code ``ALARM`` reports (None: AL_NOALM)
        self.remote_requests: list[RemoteRequest] = []
        self.commands_seen: list[Command] = []
        self.deaf_to_keepalives = False
        self._running = running
        self._last_update_s = clock.monotonic()
        self._remote_at_s: dict[Command, float] = {}
        self._decoder = FrameDecoder("sim-alaris")
        self._faults: deque[AlarisFault] = deque()
        self.port = PtyPort(
            clock=clock, baudrate=BAUD_RATE, link=link, on_bytes=self._on_bytes, name="sim-alaris"
        )

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> SimulatedAlaris:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> str:
        """Create the pty (and the link), start serving; return the device path."""
        return await self.port.start()

    async def close(self) -> None:
        """Stop serving and remove the pty and the link."""
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
        """The cable is pulled: the pty (and the link) vanish; the host read fails."""
        self.port.disconnect()
        self._decoder.flush()

    async def reconnect(self) -> str:
        """The cable is back: a new pty, the link re-pointed to it. Returns the new path."""
        return self.port.reconnect()

    # ------------------------------------------------------------ scenario API

    def set_rate(self, rate_ml_per_h: float) -> None:
        """Program a rate, as a nurse would at the keypad."""
        self._advance()
        self.rate_ml_per_h = rate_ml_per_h

    @property
    def running(self) -> bool:
        """Whether the pump infuses now."""
        self._advance()
        return self._running

    def start(self) -> None:
        """Start infusing."""
        self._advance()
        self._running = True
        self.alarm = None

    def stop(self) -> None:
        """Stop infusing."""
        self._advance()
        self._running = False

    def pause(self) -> None:
        """Pause: for the line, the same as a stop (no command known tells them apart)."""
        self.stop()

    def raise_alarm(self, code: str) -> None:
        """An alarm at the pump (an Alaris code such as ``AL_OCCLU``), reported by ``ALARM``.

        It stops infusing unless the code is one that leaves the pump running
        (``daemon.devices.pump_alarms``: a low battery, the syringe nearly empty ...).
        """
        if meaning("alaris-asena", code).stops:
            self.stop()
        self.alarm = code

    def clear_alarm(self) -> None:
        """The alarm is gone (cleared at the keypad, the battery charged ...); the pump does not restart."""
        self.alarm = None

    def remote_enabled(self, command: Command = Command.REMOTE_CONTROL) -> bool:
        """Whether ``command``'s remote access is on (enabled, and kept alive in time)."""
        at_s = self._remote_at_s.get(command)
        return at_s is not None and self.clock.monotonic() - at_s <= self.remote_timeout_s

    def inject_garbage(self, data: bytes) -> None:
        """Write noise bytes on the line now."""
        self.port.send(data)

    def drop_replies(self, count: int = -1) -> None:
        """Answer nothing to the next ``count`` commands (-1: until ``drop_replies(0)``)."""
        self.port.drop_replies(count)

    def delay_replies(self, seconds: float) -> None:
        """Send each reply ``seconds`` (clock time) late; 0 to stop."""
        self.port.delay_s = seconds

    def spoil(self, fault: AlarisFault, count: int = 1) -> None:
        """Spoil the next ``count`` replies with ``fault``."""
        self._faults.extend([fault] * count)

    def mend(self) -> None:
        """The line is clean again: no more spoiled replies."""
        self._faults.clear()

    # ------------------------------------------------------------ time

    def _advance(self) -> None:
        now_s = self.clock.monotonic()
        elapsed_h = max(0.0, now_s - self._last_update_s) / 3600.0
        self._last_update_s = now_s
        if self._running:
            self.infused_ml += self.rate_ml_per_h * elapsed_h

    # ------------------------------------------------------------ line

    def _on_bytes(self, data: bytes) -> None:
        for item in self._decoder.feed(data):
            if item.frame is None:
                # A corrupted command: what a real pump answers is not known; this one stays silent.
                log.debug("simulated Alaris: ignored %r (%s)", item.raw, item.error)
                continue
            try:
                command, arguments = parse_command(item.frame)
            except FrameError as exc:
                log.debug("simulated Alaris: %s", exc)
                continue
            self._answer(command, arguments)

    def _reply(self, *fields: str) -> None:
        if self.port.should_drop():
            return
        frame = encode_frame(fields)
        if not self._faults:
            self.port.send(frame)
            return
        fault = self._faults.popleft()
        half = len(frame) // 2
        if fault is AlarisFault.BAD_CRC:
            digit = frame[-2:-1]
            self.port.send(frame[:-2] + (b"0" if digit != b"0" else b"1") + frame[-1:])
        elif fault is AlarisFault.PARTIAL:
            self.port.send(frame[:half])
        elif fault is AlarisFault.SPLIT:
            self.port.send(frame[:half])
            self.port.send(b"")  # a pause between the pieces
            self.port.send(frame[half:])
        elif fault is AlarisFault.GARBAGE_BEFORE:
            self.port.send(b"\x7f\xff garbage \x00" + frame)
        else:
            self.port.send(frame[:half] + bytes([ESC]) + frame)

    # ------------------------------------------------------------ commands

    def _answer(self, command: Command, arguments: tuple[str, ...]) -> None:
        self.commands_seen.append(command)
        self._advance()
        if command is Command.SERIAL_NUMBER and not arguments:
            self._reply(command.value, self.serial_number)
        elif command in REMOTE_COMMANDS:
            self._remote(command, arguments)
        elif self.queries_need_remote and not self.remote_enabled():
            return  # remote access is off: the simulator's choice is silence
        elif command is Command.RATE and not arguments:
            self._reply(command.value, f"{self.rate_ml_per_h:.{RATE_DECIMALS}f}", "ml/h")
        elif command is Command.VOLUME_INFUSED and not arguments:
            self._reply(command.value, f"{self.infused_ml:.{VOLUME_DECIMALS}f}", "ml")
        elif command is Command.ALARM and not arguments:
            # The shape of the reply in OpenICE's sample, "ALARM^AL_NOALM^ ^ " (its checksum holds).
            self._reply(command.value, self.alarm or ALARIS_NO_ALARM, " ", " ")
        # Anything else (a rate setting, INF_START, INF_STOP) is outside what this
        # simulator implements: no reply, and nothing changes.

    def _remote(self, command: Command, arguments: tuple[str, ...]) -> None:
        if arguments == (DISABLED,):
            self._remote_at_s.pop(command, None)
            self.remote_requests.append(RemoteRequest(command, enable=False, code="", accepted=True))
            self._reply(command.value, DISABLED)
            return
        if len(arguments) != 2 or arguments[0] != ENABLED:
            return
        if self.deaf_to_keepalives:
            return  # as if the keep-alive never reached the pump
        accepted = arguments[1] == security_code(self.serial_number)
        self.remote_requests.append(RemoteRequest(command, enable=True, code=arguments[1], accepted=accepted))
        if accepted:
            self._remote_at_s[command] = self.clock.monotonic()
            self._reply(command.value, ENABLED)
        else:
            self._remote_at_s.pop(command, None)
            self._reply(command.value, DISABLED)


# ------------------------------------------------------------ command line


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pump = SimulatedAlaris(
        clock=SystemClock(),
        link=Path(args.link),
        serial_number=args.serial_number,
        rate_ml_per_h=args.rate_ml_per_h,
        running=args.running,
    )
    async with pump:
        sys.stdout.write(f"{pump.device_path}\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Run one simulated Alaris until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m simulators.alaris", description=__doc__.splitlines()[0])
    parser.add_argument("--link", required=True, help="symbolic link to create to the pty")
    parser.add_argument("--serial-number", default=DEFAULT_SERIAL_NUMBER)
    parser.add_argument("--rate-ml-per-h", type=float, default=10.0)
    parser.add_argument("--running", action="store_true", help="start infusing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
