"""A broker for runs that may have none: the configured one if it answers, else an
embedded amqtt broker on a free port (``wardd demo`` and ``wardd scenario``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import TextIO

from daemon.config import Config, MqttConfig
from daemon.links.mqtt import broker_address


def answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def broker_for(config: Config, out: TextIO, label: str = "demo") -> AsyncIterator[Config]:
    """The config's broker if it answers, else an embedded one (the config is rewritten to it).

    ``label`` starts the line that says which (the command's name).
    """
    host, port, _ = broker_address(config.mqtt.url)
    if answers(host, port):
        print(f"{label}: using the MQTT broker at {host}:{port}", file=out)
        yield config
        return
    from amqtt.broker import Broker  # noqa: PLC0415 -- only needed when no broker answers

    class EmbeddedBroker(Broker):  # type: ignore[misc]  # amqtt is untyped here (pyproject)
        """amqtt's broker, with each client connection closed when its handler ends: amqtt
        0.12 leaves the socket open when the client has gone before the broker closes it
        (its close stops at a failing ``write_eof``)."""

        async def stream_connected(
            self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
        ) -> None:
            try:
                await super().stream_connected(reader, writer, listener_name)
            finally:
                writer.close()

    embedded_port = free_port()
    broker = EmbeddedBroker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{embedded_port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
    )
    await broker.start()
    print(
        f"{label}: no broker at {host}:{port}; started an embedded one on 127.0.0.1:{embedded_port}",
        file=out,
    )
    try:
        # The embedded broker takes anyone, in plain text: the config's login and TLS
        # settings were for its own broker.
        embedded = MqttConfig(**config.mqtt.model_dump(exclude={"url", "username", "password", "tls"}))
        yield config.model_copy(
            update={"mqtt": embedded.model_copy(update={"url": f"mqtt://127.0.0.1:{embedded_port}"})}
        )
    finally:
        await broker.shutdown()
