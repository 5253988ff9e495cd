"""``wardd demo``: a ward of built-in scenarios that runs on a fresh machine with nothing set up by hand.

Bed ``i`` plays the ``i``-th bed of the built-in scenarios (``simulators/scenarios/``, in
the order of their bed ids, wrapping round) through the scenario runner: simulated
pumps on pseudo-terminals (NE-1000, Alaris and Fresenius in turn, each raising its own
alarm codes; a story's alarm that a vendor has no code for keeps the story's pump),
simulated monitors and nurses over MQTT, and the
real daemon pipeline, on one clock ``speed`` times faster than real time. Each bed
joins its story shortly before the story's first medium or high alert, so that the
ward is busy from the first minute. A live console view redraws the ward (without a
terminal, each alert transition is printed as a line), and the run ends with each
bed's timeline.

It uses the broker and the database of ``--config`` where they answer. Where no broker
answers it starts an embedded one in-process; where no database is configured (or it
does not answer) it keeps points as line protocol in a temporary folder.

``--secure`` runs it all behind the locked-down broker instead (``simulators.secure``):
mosquitto with the shipped secure configuration and ACL, TLS with a CA made for the
run, and a login for the daemon, the simulated devices and the station; the station's
acknowledgements are journaled under its login.

The ward page is served too, on a free loopback port, with two logins made for the run
(a nurse who may acknowledge and a viewer, random passwords); the demo prints its
address and the logins.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import secrets
import signal
import sys
import tempfile
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import aiomqtt

from daemon import config as config_module
from daemon.app import Pipeline, add_web
from daemon.config import Config, InfluxConfig, MqttConfig, TlsConfig, WebConfig, WebUserConfig
from daemon.console import WardConsole
from daemon.errors import ConfigError, ConfigIssue
from daemon.events import Priority
from daemon.links.mqtt import broker_address
from daemon.links.tls import client_context
from daemon.timefmt import parse_iso
from daemon.web.passwords import hash_password
from daemon.web.server import WardPage
from simulators.broker import answers, broker_for
from simulators.scenario import (
    BedScenario,
    PumpModel,
    Scenario,
    ScenarioRun,
    builtin_names,
    builtin_path,
    can_raise,
    expected_path,
    format_offset,
    load_expected,
    load_scenario,
    parse_duration,
)
from simulators.secure import DAEMON, DEVICES, STATION, SecureBroker, secure_broker

DEMO_WARD = "demo"
DEFAULT_BEDS = 6
MAX_BEDS = 50  # a scenario's limit
# One simulated minute per real second: the first alerts come within seconds and each
# story's main events within about five minutes.
DEFAULT_SPEED = 60.0
# Each bed joins its story this long (simulated) before the story's first medium or
# high alert: long enough to see the bed stable first.
JOIN_LEAD = timedelta(minutes=15)
# Without --duration the demo runs until stopped, at most the SSc protocol's 14 days.
OPEN_ENDED = timedelta(days=14)
SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The ward page's logins for a demo run: (login, role, display name).
DEMO_USERS = (("nurse-demo", "nurse", "Demo Nurse"), ("viewer-demo", "viewer", "Demo Viewer"))


def demo_page(log2_n: int | None = None) -> tuple[WebConfig, dict[str, str]]:
    """The ward page of a demo run: any free loopback port, and ``DEMO_USERS`` with random
    passwords; the settings, and each login's password. ``log2_n``: scrypt's cost (tests)."""
    passwords = {name: secrets.token_urlsafe(9) for name, _, _ in DEMO_USERS}
    cost = {} if log2_n is None else {"log2_n": log2_n}
    users = [
        WebUserConfig(
            name=name,
            role=role,
            display_name=display,
            password_hash=hash_password(passwords[name], **cost),
        )
        for name, role, display in DEMO_USERS
    ]
    return WebConfig(enabled=True, port=0, users=users), passwords


@dataclasses.dataclass(frozen=True)
class Story:
    """One bed of a built-in scenario, and how far into it the demo joins it."""

    scenario: Scenario
    bed: BedScenario
    join: timedelta


def join_offset(bed_id: str, expected: Sequence[Mapping[str, Any]]) -> timedelta:
    """``JOIN_LEAD`` before the bed's first expected medium or high alert (0 when sooner or none)."""
    times = [
        parse_duration(str(want["at"]))
        for want in expected
        if "at" in want
        and want.get("bed", bed_id) == bed_id
        and want.get("priority") in (Priority.MEDIUM, Priority.HIGH)
    ]
    return max(min(times, default=timedelta(0)) - JOIN_LEAD, timedelta(0))


def stories() -> list[Story]:
    """Every bed of every built-in scenario, in the order of their bed ids."""
    found: list[Story] = []
    for name in builtin_names():
        path = builtin_path(name)
        assert path is not None  # the name came from the folder
        scenario = load_scenario(path)
        expected = load_expected(expected_path(path)) if expected_path(path).is_file() else []
        found.extend(Story(scenario, bed, join_offset(bed.id, expected)) for bed in scenario.beds)
    return sorted(found, key=lambda story: (story.bed.id, story.scenario.name))


def joined(bed: BedScenario, skip: timedelta) -> BedScenario:
    """``bed``'s story from ``skip`` after its start, with every time moved ``skip`` earlier.

    What was scripted before ``skip`` happens at once, in its order (the bag hung, the
    pump's program, the day's observations), so the bed starts in the state its story
    has reached; acknowledgements and monitor artifacts from before are dropped, and an
    excursion under way goes on from the start over what is left of its ramp.
    """
    if skip <= timedelta(0):
        return bed

    def moved(at: timedelta) -> timedelta:
        return max(at - skip, timedelta(0))

    pump = bed.pump
    if pump is not None:
        # Repetitions are unrolled (with their {n} filled in) so that each can move alone.
        steps = sorted(
            ((at, step, n) for step in pump.steps for n, at in step.times(step.at)), key=lambda item: item[0]
        )
        pump = pump.model_copy(
            update={
                "steps": [
                    step.model_copy(
                        update={
                            "at": moved(at),
                            "count": 1,
                            "every": None,
                            "bag_id": None if step.bag_id is None else step.bag_id.replace("{n}", str(n)),
                        }
                    )
                    for at, step, n in steps
                ]
            }
        )
    observations = sorted(
        ((at, obs) for obs in bed.observations for _, at in obs.times(obs.at)), key=lambda item: item[0]
    )
    monitor = bed.monitor
    if monitor is not None:
        monitor = monitor.model_copy(
            update={
                "excursions": [
                    e.model_copy(
                        update={
                            "at": moved(e.at),
                            "ramp": max(e.ramp - max(skip - e.at, timedelta(0)), timedelta(0)),
                            "until": None if e.until is None else e.until - skip,
                        }
                    )
                    for e in monitor.excursions
                    if e.until is None or e.until > skip
                ],
                "dropouts": [
                    d.model_copy(update={"at": moved(d.at), "until": d.until - skip})
                    for d in monitor.dropouts
                    if d.until > skip
                ],
                "artifacts": [
                    a.model_copy(update={"at": a.at - skip}) for a in monitor.artifacts if a.at >= skip
                ],
            }
        )
    return bed.model_copy(
        update={
            "start": bed.start - skip,
            "pump": pump,
            "monitor": monitor,
            "observations": [
                obs.model_copy(update={"at": moved(at), "count": 1, "every": None})
                for at, obs in observations
            ],
            "acks": [a.model_copy(update={"at": a.at - skip}) for a in bed.acks if a.at >= skip],
        }
    )


def _merged(tables: Sequence[Mapping[str, Any]], what: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for table in tables:
        for key, value in table.items():
            if merged.setdefault(key, value) != value:
                raise ConfigError("demo", [ConfigIssue(f"{what}.{key}", "built-in scenarios disagree")])
    return merged


def demo_mix(beds: int) -> list[Story]:
    """The story of each of ``beds`` beds: bed ``i`` plays story ``i`` modulo their number."""
    mix = stories()
    return [mix[i % len(mix)] for i in range(beds)]


def demo_scenario(chosen: Sequence[Story], *, start: datetime, duration: timedelta) -> Scenario:
    """The demo ward as one scenario: bed ``i`` (id ``01``, ``02``, ...) plays ``chosen[i]``
    on its own pump address and its own timeline."""
    played: collections.Counter[tuple[str, str]] = collections.Counter()
    beds = []
    for i, story in enumerate(chosen):
        played[story.scenario.name, story.bed.id] += 1
        beds.append(_demo_bed(i, story, played[story.scenario.name, story.bed.id]))
    return Scenario(
        name="demo",
        description="a mix of the built-in scenarios",
        start=start,
        duration=duration,
        ward=DEMO_WARD,
        tick_interval=min(story.scenario.tick_interval for story in chosen),
        escalate_after=min(story.scenario.escalate_after for story in chosen),
        protocols=_merged([story.scenario.protocols for story in chosen], "protocols"),
        beds=beds,
    )


def _demo_bed(i: int, story: Story, played: int) -> BedScenario:
    bed = joined(story.bed, story.join)
    ward = story.scenario.thresholds
    return bed.model_copy(
        update={
            "id": f"{i + 1:02d}",
            # The story's pseudonym, numbered when the story plays on several beds.
            "patient": bed.patient if played == 1 else f"{bed.patient}-{played}",
            # The story's ward thresholds travel with its bed.
            "thresholds": {
                g: {**ward.get(g, {}), **bed.thresholds.get(g, {})} for g in {*ward, *bed.thresholds}
            },
            "pump": None
            if bed.pump is None
            else bed.pump.model_copy(update={"address": i, "model": _model(i, bed)}),
        }
    )


_VENDORS = (PumpModel.NE1000, PumpModel.ALARIS_ASENA, PumpModel.FRESENIUS_BASE_A)


def _model(i: int, bed: BedScenario) -> PumpModel:
    """The ward mixes vendors in turn. A story whose pump raises an alarm that the turn's
    vendor has no code for (an NE-1000 reset on an Alaris) keeps the story's own model."""
    model = _VENDORS[i % len(_VENDORS)]
    if bed.pump is None:
        return model
    alarms = {step.alarm for step in bed.pump.steps if step.alarm is not None}
    return model if all(can_raise(model, alarm) for alarm in alarms) else bed.pump.model


def page_lines(url: str, passwords: Mapping[str, str]) -> list[str]:
    """What the demo says about its ward page: the address and the logins."""
    logins = ", ".join(
        f"{name} / {passwords[name]} ({'may acknowledge' if role != 'viewer' else 'view only'})"
        for name, role, _ in DEMO_USERS
    )
    return [f"demo: ward page at {url} (log in as {logins})"]


class DemoPage:
    """The ward page of a demo run (``demo_page``): served beside the pipeline, announced once up."""

    def __init__(self, log2_n: int | None = None) -> None:
        self.settings, self.passwords = demo_page(log2_n)
        self.page: WardPage | None = None

    def attach(self, pipeline: Pipeline) -> None:
        """Serve the page beside ``pipeline`` (before it runs)."""
        self.page = add_web(pipeline, self.settings)

    async def announce(self, out: TextIO, view: WardConsole | None) -> None:
        """Once the page listens, print its address and logins (and keep them in the console's view)."""
        if self.page is None:
            return
        await self.page.started.wait()
        lines = page_lines(self.page.url, self.passwords)
        if view is not None:
            view.notes.extend(lines)
        print("\n".join(lines), file=out, flush=True)


def storage_for(config: Config, out: TextIO, folder: Path) -> InfluxConfig:
    """The config's database if it answers, else line protocol in its spool folder
    (default: ``folder``)."""
    influx = config.influx
    if influx.api != "none":
        parsed = urllib.parse.urlsplit(influx.url)
        if answers(parsed.hostname or "127.0.0.1", parsed.port or 8086):
            print(f"demo: storing points in InfluxDB ({influx.api}) at {influx.url}", file=out)
            return influx
        print(f"demo: no database answers at {influx.url}", file=out)
    spool = influx.spool_dir or folder
    print(f"demo: keeping points as line protocol in {spool}", file=out)
    return influx.model_copy(update={"api": "none", "spool_dir": spool})


def alert_line(record: Mapping[str, Any]) -> str:
    """One console line for an alert transition as the scenario runner records it."""
    stamp = f"{parse_iso(record['at']):%Y-%m-%d %H:%M}"
    return (
        f"[{stamp}] {record.get('ward')}/{record.get('bed')} {str(record.get('priority', '')).upper():6} "
        f"{record.get('condition')} {record.get('phase')}: {record.get('message') or ''}"
    )


async def run_demo(
    *,
    beds: int = DEFAULT_BEDS,
    speed: float = DEFAULT_SPEED,
    duration_s: float | None = None,
    config_path: Path | None = None,
    out: TextIO = sys.stdout,
    console: bool | None = None,
    secure: bool = False,
    page_cost_log2_n: int | None = None,
) -> int:
    """Run the demo ward for ``duration_s`` real seconds (default: until a signal); returns
    the number of alert transitions seen.

    ``config_path``: a config whose broker and database are used where they answer.
    ``console`` (default: when ``out`` is a terminal) redraws a live view of the ward;
    otherwise each alert transition is printed as a line. ``secure``: behind a
    locked-down broker of its own (see the module's docstring). The ward page is served
    beside it (``page_cost_log2_n``: the scrypt cost of its demo passwords, for tests).
    """
    base = config_module.load(config_path) if config_path else Config(influx=InfluxConfig(api="none"))
    live = out.isatty() if console is None else console
    start = datetime.now(UTC).replace(microsecond=0)
    duration = OPEN_ENDED if duration_s is None else timedelta(seconds=duration_s * speed)
    chosen = demo_mix(beds)
    scenario = demo_scenario(chosen, start=start, duration=duration)
    labels = {bed.id: story.scenario.name for bed, story in zip(scenario.beds, chosen, strict=True)}
    loop = asyncio.get_running_loop()
    view: WardConsole | None = None
    attached = asyncio.Event()
    web = DemoPage(page_cost_log2_n)

    def attach(pipeline: Pipeline) -> None:
        nonlocal view
        if live:
            view = WardConsole(pipeline, out, labels=labels)
        web.attach(pipeline)
        for sig in SIGNALS:
            loop.add_signal_handler(sig, pipeline.stop.set)
        attached.set()

    def show(record: Mapping[str, Any]) -> None:
        if view is not None:
            view.recent.append(alert_line(record))
        else:
            print(alert_line(record), file=out, flush=True)

    async def redraw() -> None:
        await attached.wait()
        await web.announce(out, view)
        if view is not None:
            await view.run()

    with tempfile.TemporaryDirectory(prefix="wardd-demo-") as tmp:
        folder = Path(tmp)
        influx = storage_for(base, out, folder / "points")
        _print_ward(scenario, chosen, out, speed)
        async with contextlib.AsyncExitStack() as brokers:
            url, locked, settings = await _broker(brokers, base, folder, out, secure=secure)
            group = await brokers.enter_async_context(asyncio.TaskGroup())
            drawing = group.create_task(redraw(), name="demo.console")
            try:
                run = ScenarioRun(
                    scenario,
                    workdir=folder,
                    fast=False,
                    speed=speed,
                    mqtt_url=url,
                    secure=locked,
                    broker=settings,
                    influx=influx,
                    out=out,
                    capture=None,
                    progress=False,
                    on_pipeline=attach,
                    on_alert=show,
                )
                result = await run.run()
            finally:
                drawing.cancel()
                for sig in SIGNALS:
                    loop.remove_signal_handler(sig)
    print("\n".join(result.timeline), file=out)
    print(f"demo: stopped after {len(result.alerts)} alert transition(s)", file=out)
    return len(result.alerts)


async def _broker(
    brokers: contextlib.AsyncExitStack, base: Config, folder: Path, out: TextIO, *, secure: bool
) -> tuple[str, SecureBroker | None, MqttConfig | None]:
    """The run's broker, held open by ``brokers``: its URL, and the locked-down broker it
    is (``secure``) or the settings (login, TLS) it takes."""
    if secure:
        locked = await brokers.enter_async_context(secure_broker(folder, ward=DEMO_WARD))
        await _show_locked_down(locked, out)
        return locked.url, locked, None
    # The config's broker with its login and TLS settings, or an embedded one.
    settings = (await brokers.enter_async_context(broker_for(base, out))).mqtt
    return settings.url, None, settings


async def _show_locked_down(broker: SecureBroker, out: TextIO) -> None:
    """Say what protects the broker, and show that it refuses a client without a login."""
    host, port, _ = broker_address(broker.url)
    print(
        f"demo: locked-down mosquitto on {broker.url}: TLS 1.2+ with a CA made for this run, "
        f"config/mosquitto-acl.conf; logins {DAEMON} (the daemon), {DEVICES} (the simulated "
        f"monitors, nurses and pharmacy) and {STATION} (the station, the only user in "
        "alerts.ack_users)",
        file=out,
    )
    context = client_context(TlsConfig(ca_file=broker.ca_file), "mqtt")
    try:
        async with aiomqtt.Client(host, port, tls_context=context, timeout=5):
            refused = "NOT refused"
    except aiomqtt.MqttError as exc:
        refused = f"refused ({exc})"
    print(f"demo: a client without a login: {refused}", file=out)


def _print_ward(scenario: Scenario, chosen: Sequence[Story], out: TextIO, speed: float) -> None:
    print(
        f"demo: {len(scenario.beds)} bed(s), simulated clock at {speed:g}x real time; Ctrl-C stops",
        file=out,
    )
    for bed, story in zip(scenario.beds, chosen, strict=True):
        print(
            f"  {scenario.ward}/{bed.id} {bed.patient} on {bed.protocol}: {story.scenario.name} "
            f"from {format_offset(story.join)} ({story.scenario.description})"
            + (f", {bed.pump.model.value} pump" if bed.pump is not None else ""),
            file=out,
        )
