"""``wardd demo``: a small ward that runs on a fresh machine with nothing set up by hand.

It uses the broker and the database in its config where they answer. Where no broker
answers it starts an embedded one in-process; where no database is configured (or
it does not answer) it keeps points in a local folder. Simulated monitors feed the
real daemon pipeline on an accelerated clock, and alerts are printed as they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
import tempfile
import urllib.parse
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from daemon import config as config_module
from daemon.app import build
from daemon.clock import Clock, ScaledClock
from daemon.config import BedConfig, Config, DaemonConfig, InfluxConfig, MqttConfig
from daemon.events import Metric
from daemon.metrics import Counters
from daemon.mqtt import MqttLink, broker_address
from simulators.monitor import Excursion, MonitorSim, Profile

DEMO_WARD = "demo"
# Each bed's story, in simulated seconds after the demo starts (at protocol hour 11:55).
STORIES: tuple[tuple[str, tuple[Excursion, ...]], ...] = (
    ("stable", ()),
    # The published case: fever of 38.2 °C at hour 12, no haemodynamic change.
    ("fever at hour 12 (the published case)", (Excursion(Metric.TEMP_C, 300, 38.2, ramp_s=120),)),
    ("stable", ()),
    (
        "fever, then hypotension an hour later",
        (
            Excursion(Metric.TEMP_C, 200, 38.6, ramp_s=120),
            Excursion(Metric.SBP_MMHG, 3800, 84, ramp_s=300),
            Excursion(Metric.DBP_MMHG, 3800, 50, ramp_s=300),
        ),
    ),
)


def default_config(beds: int, state_dir: Path, now: datetime) -> Config:
    """The embedded demo ward: ``beds`` beds on the SSc protocol, started 11 h 55 min ago."""
    start = now - timedelta(hours=11, minutes=55)
    return Config(
        daemon=DaemonConfig(state_dir=state_dir, tick_interval_s=5.0),
        mqtt=MqttConfig(client_id="wardd-demo", topic_prefix="wardd-demo"),
        influx=InfluxConfig(api="none"),
        beds=[
            BedConfig(
                ward=DEMO_WARD,
                id=f"{i + 1:02d}",
                patient=f"DEMO-{i + 1:03d}",
                weight_kg=63,
                height_cm=165,
                protocol="ssc-14d",
                protocol_start=start,
            )
            for i in range(beds)
        ],
    )


def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def broker_for(config: Config, out: TextIO) -> AsyncIterator[Config]:
    """The config's broker if it answers, else an embedded one (the config is rewritten to it)."""
    host, port, _ = broker_address(config.mqtt.url)
    if _answers(host, port):
        print(f"demo: using the MQTT broker at {host}:{port}", file=out)
        yield config
        return
    from amqtt.broker import Broker  # noqa: PLC0415 -- only needed when no broker answers

    port = _free_port()
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
    )
    await broker.start()
    print(f"demo: no broker at {host}:{port}; started an embedded one on 127.0.0.1:{port}", file=out)
    try:
        yield config.model_copy(
            update={"mqtt": config.mqtt.model_copy(update={"url": f"mqtt://127.0.0.1:{port}"})}
        )
    finally:
        await broker.shutdown()


def storage_for(config: Config, out: TextIO) -> Config:
    """The config's database if it answers, else the local spool folder."""
    influx = config.influx
    spool = influx.spool_dir or config.daemon.state_dir / "spool"
    if influx.api != "none":
        parsed = urllib.parse.urlsplit(influx.url)
        if _answers(parsed.hostname or "127.0.0.1", parsed.port or 8086):
            print(f"demo: storing points in InfluxDB ({influx.api}) at {influx.url}", file=out)
            return config
        print(f"demo: no database answers at {influx.url}", file=out)
    print(f"demo: keeping points as line protocol in {spool}", file=out)
    return config.model_copy(update={"influx": influx.model_copy(update={"api": "none"})})


def alert_line(payload: bytes, clock: Clock) -> str | None:
    """One console line for an alert transition, or ``None`` for a cleared retained state."""
    if not payload:
        return None
    alert = json.loads(payload)
    stamp = clock.now().strftime("%Y-%m-%d %H:%M")
    return (
        f"[{stamp}] {alert.get('ward')}/{alert.get('bed')} {str(alert.get('priority', '')).upper():6} "
        f"{alert.get('condition')} {alert.get('phase', alert.get('state', ''))}: {alert.get('message', '')}"
    )


async def run_demo(
    *,
    beds: int = 4,
    speed: float = 30.0,
    duration_s: float | None = None,
    config_path: Path | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Run the demo ward; returns the number of alert transitions printed."""
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="wardd-demo-") as tmp:
        base = config_module.load(config_path) if config_path else default_config(beds, Path(tmp), now)
        clock = ScaledClock(now, speed)
        printed = 0
        async with broker_for(storage_for(base, out), out) as config:
            pipeline = build(config, clock=clock)
            prefix = config.mqtt.topic_prefix

            async def show(topic: str, payload: bytes) -> None:
                nonlocal printed
                line = alert_line(payload, clock)
                if line is not None and topic.endswith("/alerts"):
                    printed += 1
                    print(line, file=out, flush=True)

            watcher = MqttLink(
                config.mqtt,
                password=config.mqtt.password.resolve(),
                subscriptions=[f"{prefix}/+/bed/+/alerts"],
                on_message=show,
                counters=Counters(),
                clock=clock,
                client_id=f"{config.mqtt.client_id}-console",
                clean_session=True,
            )
            monitors_link = MqttLink(
                config.mqtt,
                password=config.mqtt.password.resolve(),
                subscriptions=[],
                on_message=show,
                counters=Counters(),
                clock=clock,
                client_id=f"{config.mqtt.client_id}-monitors",
                clean_session=True,
            )
            monitors = [
                MonitorSim(
                    monitors_link,
                    prefix=prefix,
                    ward=bed.ward,
                    bed=bed.id,
                    clock=clock,
                    profile=Profile(excursions=STORIES[i % len(STORIES)][1]),
                    interval_s=30.0,
                    seed=i,
                )
                for i, bed in enumerate(config.beds)
            ]
            _print_ward(config.beds, out, speed)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, pipeline.stop.set)
            async with asyncio.TaskGroup() as group:
                daemon_task = group.create_task(pipeline.run(), name="demo.daemon")
                helpers = [
                    group.create_task(watcher.run(), name="demo.console"),
                    group.create_task(monitors_link.run(), name="demo.monitors.link"),
                    *(group.create_task(m.run(), name=f"demo.monitor[{m.device}]") for m in monitors),
                ]
                if duration_s is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(pipeline.stop.wait()), duration_s)
                    pipeline.stop.set()
                await daemon_task
                for task in helpers:
                    task.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        print(f"demo: stopped after {printed} alert transition(s)", file=out)
        return printed


def _print_ward(beds: list[BedConfig], out: TextIO, speed: float) -> None:
    print(f"demo: {len(beds)} bed(s), simulated clock at {speed:g}x real time; Ctrl-C stops", file=out)
    for i, bed in enumerate(beds):
        story = STORIES[i % len(STORIES)][0]
        print(f"  {bed.ward}/{bed.id} {bed.patient} on {bed.protocol}: {story}", file=out)
