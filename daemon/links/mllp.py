"""The HL7 v2 listener: MLLP over TCP (python-hl7's asyncio streams), one message at a time
per connection, each answered once the daemon has it durably (``OnHl7``).

MLLP frames a message as 0x0B, the message, 0x1C 0x0D (domain.md section 5). A sender
waits for the acknowledgement of one message before the next, or pipelines them; either
way the answers leave in the order the messages came, since each connection's messages
are logged in order and a commit's callbacks run in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import hl7.mllp

from daemon.config import Hl7Config
from daemon.errors import ListenError
from daemon.links.tls import server_context
from daemon.metrics import Counters

log = logging.getLogger(__name__)

Reply = Callable[[bytes], None]
"""Sends one acknowledgement back on the connection the message came from."""
OnHl7 = Callable[[bytes, str, Reply], Awaitable[None]]
"""``(message, where, reply)``: ``reply`` is called with the acknowledgement, once."""


class MllpListener:
    """Accepts MLLP connections on ``hl7.host``:``hl7.port`` (a pipeline service)."""

    name = "hl7.mllp"

    def __init__(self, settings: Hl7Config, on_message: OnHl7, counters: Counters) -> None:
        self._settings = settings
        self._on_message = on_message
        self._counters = counters
        self.port: int | None = None  # the bound port, once listening
        self.listening = asyncio.Event()
        self._writers: set[hl7.mllp.HL7StreamWriter] = set()
        # Built here: an unusable certificate stops the start, with its place in the config.
        self._tls = None if settings.tls is None else server_context(settings.tls, "hl7")

    async def run(self) -> None:
        """Listen until cancelled; open connections are closed on the way out."""
        host, port = self._settings.host, self._settings.port or 0
        try:
            server = await hl7.mllp.start_hl7_server(
                self._serve, host, port, limit=self._settings.max_message_bytes, ssl=self._tls
            )
        except OSError as exc:
            raise ListenError("HL7 v2 in", "hl7.host, hl7.port", host, port, exc) from exc
        try:
            sockets = server.sockets or ()
            self.port = sockets[0].getsockname()[1] if sockets else self._settings.port
            log.info(
                "HL7 v2 (MLLP%s) listener on %s:%s",
                "" if self._tls is None else " over TLS",
                self._settings.host,
                self.port,
            )
            self.listening.set()
            await asyncio.Event().wait()
        finally:
            server.close()
            # asyncio runs each connection in a task of its own (as aiohttp does for the
            # ward page); closing its transport ends that task's read.
            for writer in list(self._writers):
                writer.close()
            await server.wait_closed()

    async def _serve(self, reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        host, port = (writer.get_extra_info("peername") or ("?", 0))[:2]
        where = f"mllp {host}:{port}"
        self._counters.inc("hl7.connections", "up")
        self._writers.add(writer)

        def reply(ack: bytes) -> None:
            if not writer.is_closing():
                writer.writeblock(ack)

        try:
            while True:
                try:
                    raw = await reader.readblock()
                except asyncio.IncompleteReadError:
                    return  # the peer closed the connection (between or inside a frame)
                except hl7.mllp.InvalidBlockError:
                    self._counters.inc("hl7.rejected", "bad_frame")
                    log.warning("%s: data outside an MLLP frame, connection closed", where)
                    return
                except ValueError:
                    self._counters.inc("hl7.rejected", "too_large")
                    log.warning(
                        "%s: a message over %d bytes, connection closed",
                        where,
                        self._settings.max_message_bytes,
                    )
                    return
                await self._on_message(bytes(raw), where, reply)
        finally:
            self._counters.inc("hl7.connections", "down")
            self._writers.discard(writer)
            writer.close()
