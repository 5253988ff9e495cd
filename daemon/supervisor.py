"""``wardd run`` with ``daemon.workers > 1``: one supervisor, one forked worker per partition.

The supervisor forks the workers once it has read the config and imported the
pipeline, so that each inherits them (and the layout's lock, an ``flock``) instead of
reading and importing again. It passes SIGTERM and SIGINT on to every worker; a worker
that exits with an error stops the others, and the supervisor then fails, so that the
service manager restarts the whole daemon (each worker recovers from its own store).

Under systemd it is the one process systemd listens to (``NotifyAccess=main`` in
``config/wardd.service``, ``$WATCHDOG_PID``). Each worker sends its notifications to
the supervisor instead, on a socket of its own that takes datagrams from that worker's
pid only, and the supervisor tells systemd what holds for them all
(``daemon.health.NotifyRelay``). With ``health.port`` set, it serves the HTTP probes
the same way: each worker answers on a private socket, and the supervisor answers for
them all (``daemon.web.probes.WorkerProbes``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import selectors
import signal
import socket
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NoReturn

from daemon.health import NotifyRelay, sd_notify
from daemon.partition import Partition

if TYPE_CHECKING:
    from daemon.web.probes import WorkerProbes

log = logging.getLogger("wardd")

RunWorker = Callable[[Partition, str | None], NoReturn]
"""A worker's life (it never returns): its partition, and the private socket it serves
its probes on (``None`` without probes)."""

_CREDENTIALS = struct.Struct("3i")
"""``struct ucred`` (pid, uid, gid): who sent a datagram, as the kernel says (SO_PASSCRED)."""
_STOPS = frozenset({signal.SIGTERM, signal.SIGINT})


class _NotifySocket:
    """Where worker ``index`` sends its systemd notifications: an abstract datagram
    socket (no file to leave behind) that keeps only what that worker's pid sent."""

    def __init__(self, index: int) -> None:
        name = f"wardd-notify-{os.getpid()}-{index}"
        self.index = index
        self.address = "@" + name  # as $NOTIFY_SOCKET spells an abstract socket
        self.pid = 0  # the worker's, once forked
        self.sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        )
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + name)

    def receive(self) -> Iterator[str]:
        """The messages waiting, the worker's only: anyone on the machine can reach an
        abstract socket, and a stranger's ``WATCHDOG=1`` would hide a stalled worker."""
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(_CREDENTIALS.size))
            except BlockingIOError:
                return
            sender = next(
                (
                    _CREDENTIALS.unpack(body[: _CREDENTIALS.size])[0]
                    for level, kind, body in ancillary
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
                ),
                None,
            )
            if sender != self.pid:
                log.warning(
                    "systemd notification from pid %s refused: only worker %d (pid %d) sends there",
                    sender,
                    self.index,
                    self.pid,
                )
                continue
            yield data.decode("utf-8", "replace")


def supervise(count: int, run_worker: RunWorker, probes: Sequence[socket.socket] = ()) -> bool:
    """Fork ``count`` workers, each running ``run_worker`` on its partition (it must never
    return), and wait until all have stopped; ``True`` when every one exited with 0.
    ``probes``: the listening sockets of the HTTP probes (``daemon.web.probes.bind_probes``),
    served for all the workers once they are forked (none: no probes)."""
    return _Supervisor(count, probes).run(run_worker)


class _Supervisor:
    """The workers forked, their notification sockets, and whether a stop was passed on."""

    def __init__(self, count: int, probes: Sequence[socket.socket]) -> None:
        self.count = count
        self._probes = list(probes)
        self._gateway: WorkerProbes | None = None
        self._pipe: tuple[int, ...] = ()
        self.sockets = [_NotifySocket(i) for i in range(count)] if os.environ.get("NOTIFY_SOCKET") else []
        self.running: dict[int, Partition] = {}
        self.stopping = False

    def run(self, run_worker: RunWorker) -> bool:
        try:
            wake_r = self._fork(run_worker)
            log.info(
                "wardd supervising %d workers: %s",
                self.count,
                ", ".join(f"{part} (pid {pid})" for pid, part in self.running.items()),
            )
            return self._wait(wake_r)
        finally:
            if self._gateway is not None:
                self._gateway.stop()
            signal.set_wakeup_fd(-1)
            for fd in self._pipe:
                os.close(fd)
            for notify in self.sockets:
                notify.sock.close()

    def stop_all(self, signum: int, _frame: object = None) -> None:
        """Pass ``signum`` on to every worker (a signal handler, and on a worker's failure)."""
        if not self.stopping and self.sockets:
            sd_notify("STOPPING=1")
        self.stopping = True
        for pid in self.running:
            os.kill(pid, signum)  # a worker not yet reaped still has its pid

    def _fork(self, run_worker: RunWorker) -> int:
        """Fork the workers and install the handlers; the read end of the wake-up pipe."""
        # Held back while forking: a signal in between would stop the supervisor and
        # orphan the workers forked so far, or come before its handler. Delivered once
        # the handlers are in.
        held = {*_STOPS, signal.SIGCHLD}
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            # What the supervisor built stays out of the children's collections, which
            # would otherwise copy every page they walk (the gc module's advice for fork).
            gc.freeze()
            private: dict[str, str] = {}
            for index in range(self.count):
                part = Partition(index, self.count)
                address = _probe_socket(index) if self._probes else None
                pid = os.fork()
                if pid == 0:
                    _become_worker(self.sockets, index, self._probes)
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
                    run_worker(part, address)
                self.running[pid] = part
                if address is not None:
                    private[str(part)] = address
                if self.sockets:
                    self.sockets[index].pid = pid
            if self._probes:
                # A thread, started once every fork is done: a fork copies only the
                # thread that calls it, and would leave the child a loop it cannot run.
                from daemon.web.probes import WorkerProbes  # noqa: PLC0415 -- aiohttp only when served

                self._gateway = WorkerProbes(self._probes, private)
                self._gateway.start()
            # The supervisor sleeps in select: a signal with a Python handler also writes
            # to this pipe, so a worker's exit or a stop wakes it, without a race.
            wake_r, wake_w = self._pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            signal.set_wakeup_fd(wake_w)
            signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
            for sig in _STOPS:
                signal.signal(sig, self.stop_all)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
        return wake_r

    def _wait(self, wake_r: int) -> bool:
        """Reap the workers, relaying their notifications meanwhile; whether all exited with 0."""
        relay = NotifyRelay(self.count)
        failed = False
        with selectors.DefaultSelector() as selector:
            selector.register(wake_r, selectors.EVENT_READ)
            for notify in self.sockets:
                selector.register(notify.sock, selectors.EVENT_READ, notify)
            while True:
                for pid, code in _exited():
                    ended = self.running.pop(pid, None)
                    if ended is not None and code != 0:
                        failed = True
                        if not self.stopping:
                            log.error(
                                "worker %s (pid %d) exited with %d; stopping the others", ended, pid, code
                            )
                            self.stop_all(signal.SIGTERM)
                if not self.running:
                    return not failed
                for key, _ in selector.select():
                    if isinstance(key.data, _NotifySocket):
                        for message in key.data.receive():
                            for said in relay.heard(key.data.index, message):
                                sd_notify(said)
                    else:
                        with contextlib.suppress(BlockingIOError):
                            while os.read(wake_r, 512):
                                pass


def _probe_socket(index: int) -> str:
    """The abstract Unix socket worker ``index`` serves its probes on, for the supervisor
    (no file to leave behind, as the notification sockets). Any process on the machine
    can reach it, as it can a loopback port: what it serves is what ``health.port`` does."""
    return f"\0wardd-probes-{os.getpid()}-{index}"


def _become_worker(sockets: list[_NotifySocket], index: int, probes: Sequence[socket.socket]) -> None:
    """In a newly forked worker: its notifications go to the supervisor, and systemd's
    watchdog, which asks the supervisor's pid, is this worker's to feed (to the supervisor)."""
    for sock in probes:
        sock.close()  # the supervisor's to serve
    for notify in sockets:
        notify.sock.close()  # the supervisor's copies stay bound
    if sockets:
        os.environ["NOTIFY_SOCKET"] = sockets[index].address
        if "WATCHDOG_USEC" in os.environ:
            os.environ["WATCHDOG_PID"] = str(os.getpid())


def _exited() -> Iterator[tuple[int, int]]:
    """The workers that have exited since the last call, with their exit codes."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, os.waitstatus_to_exitcode(status)
