"""A device's end of a serial line, on a pseudo-terminal: what every simulated pump shares.

The simulator gets each chunk of bytes the host writes (``on_bytes``) and queues its
own frames (``send``); a writer task puts them on the line, late if told to
(``delay_s``), with a pause where an empty frame was queued. ``disconnect`` is the
cable pulled (the pty vanishes, so the host's read fails) and ``reconnect`` the cable
back (a new pty, the symbolic link re-pointed at it). ``drop_replies`` silences the
device for a number of replies (``should_drop`` tells the simulator which).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import termios
import tty
from collections.abc import Callable
from pathlib import Path

from daemon.clock import Clock

log = logging.getLogger(__name__)

BAUD_RATES = {
    300: termios.B300,
    1200: termios.B1200,
    2400: termios.B2400,
    9600: termios.B9600,
    19200: termios.B19200,
    38400: termios.B38400,
}
SPLIT_PAUSE_S = 0.05  # what an empty queued frame stands for: a gap between two pieces
READ_CHUNK_BYTES = 1024


class PtyPort:
    """The device side of one pseudo-terminal (and an optional symbolic link to it)."""

    def __init__(
        self,
        *,
        clock: Clock,
        baudrate: int,
        link: Path | None,
        on_bytes: Callable[[bytes], None],
        name: str,
    ) -> None:
        """A port at ``baudrate``; ``start`` makes the pty, ``on_bytes`` hears the host."""
        if baudrate not in BAUD_RATES:
            raise ValueError(f"baud rate must be one of {sorted(BAUD_RATES)}, got {baudrate}")
        self.clock = clock
        self.baudrate = baudrate
        self.link = link
        self.name = name
        self.device_path = ""
        self.delay_s = 0.0  # every frame goes this late (clock time)
        self._on_bytes = on_bytes
        self._master: int | None = None
        self._slave: int | None = None
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._drop = 0  # replies still to drop; -1 = all

    async def start(self) -> str:
        """Create the pty (and the link) and start writing; return the device path."""
        self._open_pty()
        self._writer = asyncio.create_task(self._write_loop(), name=f"{self.name}.write")
        return self.device_path

    async def stop(self) -> None:
        """Stop writing, remove the pty and the link."""
        task, self._writer = self._writer, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._close_pty()

    @property
    def connected(self) -> bool:
        """Whether the pty exists (``disconnect`` removes it)."""
        return self._master is not None

    def disconnect(self) -> None:
        """The cable is pulled: the pty (and the link) vanish, queued frames are lost."""
        self._close_pty()
        while not self._outbox.empty():
            self._outbox.get_nowait()

    def reconnect(self) -> str:
        """The cable is back: a new pty, the link re-pointed to it. Returns the new path."""
        if self._master is None:
            self._open_pty()
        return self.device_path

    def drop_replies(self, count: int = -1) -> None:
        """Send none of the next ``count`` replies (-1: until ``drop_replies(0)``)."""
        self._drop = count

    def should_drop(self) -> bool:
        """Whether the reply about to be sent is one ``drop_replies`` swallows (counts it)."""
        if self._drop == 0:
            return False
        self._drop -= 1 if self._drop > 0 else 0
        return True

    def send(self, frame: bytes) -> None:
        """Queue ``frame`` for the line (``b""``: a short pause between two pieces)."""
        self._outbox.put_nowait(frame)

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[4] = attrs[5] = BAUD_RATES[self.baudrate]
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.device_path = os.ttyname(slave)
        # The slave stays open here too: otherwise the master reads EIO whenever no host has it open.
        asyncio.get_running_loop().add_reader(master, self._on_readable)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.device_path)
            tmp.replace(self.link)  # atomic: a host never sees the link missing mid-switch

    def _close_pty(self) -> None:
        master, slave = self._master, self._slave
        self._master = self._slave = None
        if master is not None:
            asyncio.get_running_loop().remove_reader(master)
            os.close(master)
        if slave is not None:
            os.close(slave)
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()

    def _on_readable(self) -> None:
        if self._master is None:
            return
        try:
            data = os.read(self._master, READ_CHUNK_BYTES)
        except BlockingIOError:
            return
        except OSError:
            return  # no host side yet
        self._on_bytes(data)

    async def _write_loop(self) -> None:
        while True:
            frame = await self._outbox.get()
            if self.delay_s > 0:
                await self.clock.sleep(self.delay_s)
            if not frame:
                await self.clock.sleep(SPLIT_PAUSE_S)
                continue
            if self._master is None:
                continue  # disconnected: the bytes go nowhere
            try:
                os.write(self._master, frame)
            except OSError as exc:
                log.debug("%s: write failed: %s", self.name, exc)
