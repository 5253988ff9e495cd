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
from daemon.config import BagConfig, BedConfig, Config, DaemonConfig, InfluxConfig, MqttConfig, PumpConfig
from daemon.console import WardConsole
from daemon.events import Metric
from daemon.metrics import Counters
from daemon.mqtt import MqttLink, OnMessage, broker_address
from simulators.monitor import Excursion, MonitorSim, Profile
from simulators.pump import SimulatedPump

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


# A 24 h bag at 10 mL/h delivers 9 µg/day at this concentration (domain.md section 1).
BAG_RATE_ML_PER_H = 10.0
BAG_CONCENTRATION_UG_PER_ML = 0.0375


def default_config(beds: int, state_dir: Path, now: datetime) -> Config:
    """The embedded demo ward: ``beds`` beds on the SSc protocol, started 11 h 55 min ago,
    each with a simulated NE-1000 pump on a pseudo-terminal in ``state_dir``."""
    start = now - timedelta(hours=11, minutes=55)
    ids = [f"{i + 1:02d}" for i in range(beds)]
    return Config(
        daemon=DaemonConfig(state_dir=state_dir, tick_interval_s=5.0),
        mqtt=MqttConfig(client_id="wardd-demo", topic_prefix="wardd-demo"),
        influx=InfluxConfig(api="none"),
        beds=[
            BedConfig(
                ward=DEMO_WARD,
                id=bed,
                patient=f"DEMO-{bed}",
                weight_kg=63,
                height_cm=165,
                protocol="ssc-14d",
                protocol_start=start,
            )
            for bed in ids
        ],
        # Simulated seconds: generous reply timeouts, as the clock runs fast.
        pumps=[
            PumpConfig(
                id=f"pump-{bed}",
                bed=bed,
                url=str(state_dir / f"pump-{bed}"),
                poll_interval_s=10.0,
                reply_timeout_s=10.0,
                comm_lost_after_s=120.0,
                reconnect_min_s=5.0,
                reconnect_max_s=60.0,
            )
            for bed in ids
        ],
        bags=[
            BagConfig(
                bed=bed,
                bag_id=f"DEMO-BAG-{bed}",
                concentration_ug_per_ml=BAG_CONCENTRATION_UG_PER_ML,
                volume_ml=270,
                hung_at=start,
            )
            for bed in ids
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


def with_simulated_pumps(config: Config, folder: Path) -> Config:
    """Every configured pump moved onto a simulated pump's pseudo-terminal in ``folder``."""
    pumps = [p.model_copy(update={"url": str(folder / f"pump-{p.id}")}) for p in config.pumps]
    return config.model_copy(update={"pumps": pumps})


async def run_demo(
    *,
    beds: int = 4,
    speed: float = 30.0,
    duration_s: float | None = None,
    config_path: Path | None = None,
    out: TextIO = sys.stdout,
    console: bool | None = None,
) -> int:
    """Run the demo ward; returns the number of alert transitions seen.

    ``console`` (default: when ``out`` is a terminal) redraws a live view of the ward;
    otherwise each alert transition is printed as a line.
    """
    now = datetime.now(UTC)
    live = out.isatty() if console is None else console
    with tempfile.TemporaryDirectory(prefix="wardd-demo-") as tmp:
        folder = Path(tmp)
        base = config_module.load(config_path) if config_path else default_config(beds, folder, now)
        clock = ScaledClock(now, speed)
        seen = 0
        async with (
            broker_for(storage_for(with_simulated_pumps(base, folder), out), out) as config,
            contextlib.AsyncExitStack() as stack,
        ):
            for pump in config.pumps:
                await stack.enter_async_context(
                    SimulatedPump(
                        clock=clock,
                        link=Path(pump.url),
                        address=pump.address,
                        rate_ml_per_h=BAG_RATE_ML_PER_H,
                        running=True,
                    )
                )
            pipeline = build(config, clock=clock, clean_session=True)
            view = WardConsole(pipeline, out) if live else None
            prefix = config.mqtt.topic_prefix

            async def show(topic: str, payload: bytes) -> None:
                nonlocal seen
                line = alert_line(payload, clock)
                if line is None or not topic.endswith("/alerts"):
                    return
                seen += 1
                if view is not None:
                    view.recent.append(line)
                else:
                    print(line, file=out, flush=True)

            watcher = _link(config, clock, "console", [f"{prefix}/+/bed/+/alerts"], show)
            monitors_link = _link(config, clock, "monitors", [], show)
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
                    group.create_task(watcher.run(), name="demo.alerts"),
                    group.create_task(monitors_link.run(), name="demo.monitors.link"),
                    *(group.create_task(m.run(), name=f"demo.monitor[{m.device}]") for m in monitors),
                ]
                if view is not None:
                    helpers.append(group.create_task(view.run(), name="demo.console"))
                if duration_s is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(pipeline.stop.wait()), duration_s)
                    pipeline.stop.set()
                await daemon_task
                for task in helpers:
                    task.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        print(f"demo: stopped after {seen} alert transition(s)", file=out)
        return seen


def _link(
    config: Config, clock: Clock, role: str, subscriptions: list[str], on_message: OnMessage
) -> MqttLink:
    """A simulator-side MQTT connection with its own client id and a clean session."""
    return MqttLink(
        config.mqtt,
        password=config.mqtt.password.resolve(),
        subscriptions=subscriptions,
        on_message=on_message,
        counters=Counters(),
        clock=clock,
        client_id=f"{config.mqtt.client_id}-{role}",
        clean_session=True,
    )


def _print_ward(beds: list[BedConfig], out: TextIO, speed: float) -> None:
    print(f"demo: {len(beds)} bed(s), simulated clock at {speed:g}x real time; Ctrl-C stops", file=out)
    for i, bed in enumerate(beds):
        story = STORIES[i % len(STORIES)][0]
        print(f"  {bed.ward}/{bed.id} {bed.patient} on {bed.protocol}: {story}", file=out)
