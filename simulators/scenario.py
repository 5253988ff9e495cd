"""Scenarios: a whole protocol rehearsed through the real pipeline on one simulated clock.

A scenario file (TOML, see README) describes beds: the patient, the protocol, the
pump's program over time, the monitor's vital signs, the nurses' observations and
acknowledgements. ``run_scenario`` starts, on one clock:

::

    script (pump program, observations, acks) ──► SimulatedPump (pty) ──serial──┐
                                              └──► MQTT (bags, observations) ───┤
    ScenarioMonitor (vitals, dropouts, artifacts) ──► MQTT ─────────────────────┤
                                                                                ▼
                           daemon pipeline (``daemon.app.build``: sources, rules, alerts)
                                                                                │
    alert recorder ◄── MQTT <prefix>/<ward>/bed/<bed>/alerts ◄───────────────────┘

With ``speed`` the clock runs that many times faster than real time. With ``fast``
a ``SteppedClock`` moves only when the runner says so: the runner wakes one sleeper
(or runs one scripted action) at a time, then waits until the whole system is
quiet (MQTT outboxes confirmed, every message delivered, the event queue joined,
every pump poll answered, every alert transition received) before moving time on.
Nothing then depends on how fast the machine is, so the same file and seed give
the same alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import io
import itertools
import json
import os
import random
import re
import sys
import tempfile
import time
import tomllib
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from daemon import config as config_module
from daemon import topics
from daemon.app import Pipeline, build
from daemon.capture import config_beside, write_config
from daemon.clock import Clock, ManualClock, ScaledClock, every
from daemon.config import AwareDatetime, Config, InfluxConfig, MqttConfig, PumpConfig
from daemon.devices.ne1000 import Alarm
from daemon.errors import ConfigError, ConfigIssue
from daemon.events import Metric
from daemon.links.mqtt import Ack, MqttLink
from daemon.metrics import Counters
from daemon.pump import DRIVERS, DriverFactory, FaultHandler, PumpDriver, PumpSource, PumpStatus
from daemon.timefmt import iso
from simulators.alaris import SimulatedAlaris
from simulators.broker import broker_for
from simulators.fresenius import DockedPump
from simulators.monitor import BASELINE, NOISE_SD, Excursion, Profile, vitals_payload
from simulators.pump import SimulatedPump
from simulators.secure import DAEMON, DEVICES, STATION, SecureBroker

BUILTIN_DIR = Path(__file__).parent / "scenarios"
DEFAULT_START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
# Loop iterations with nothing in flight before the system counts as quiet: a woken
# task needs one iteration to run and at most a few more to hand its work on to
# something the quiet check watches (a queue, an outbox, a pump poll).
QUIET_ROUNDS = 6
# Scenario state is thrown away: on a RAM disk the daemon's fsyncs cost nothing.
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 -- a private temp dir inside it
# After a cable is pulled, the daemon's serial reader learns it from the kernel in real
# time; the runner gives it this long before simulated time moves on, so that the next
# poll always finds the port closed (and every run takes the same path).
UNPLUG_GRACE_S = 0.05


_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str) -> timedelta:
    """``"7d2h"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"1d2h3m4.5s"``, ``"-6d"`` as a ``timedelta``."""
    body = text.strip()
    sign = -1 if body.startswith("-") else 1
    body = body.removeprefix("-")
    match = _DURATION.match(body)
    if not body or match is None:
        raise ValueError(f"{text!r} is not a duration like '12h', '7d2h', '30m' or '90s'")
    parts = {k: float(v) for k, v in match.groupdict().items() if v is not None}
    value = timedelta(days=parts.get("d", 0), hours=parts.get("h", 0), minutes=parts.get("m", 0))
    return sign * (value + timedelta(seconds=parts.get("s", 0)))


def format_offset(offset: timedelta) -> str:
    """An offset from the start as ``+3d04h05m`` (seconds shown only when present)."""
    total = int(offset.total_seconds())
    sign = "-" if total < 0 else "+"
    total = abs(total)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{sign}{days}d{hours:02d}h{minutes:02d}m"
    return text + (f"{seconds:02d}s" if seconds else "")


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError("must be a duration string like '12h', '7d2h' or '30m'")


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must not be negative")
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_not_negative)]
"""A time after the scenario start, or a length of time."""
Offset = Annotated[timedelta, BeforeValidator(_duration)]
"""A signed offset from the scenario start (``"-6d"``: six days before it)."""


class Model(BaseModel):
    """Base: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Repeat(Model):
    """Optional repetition of a timed step: ``count`` times, ``every`` apart."""

    every: Duration | None = None
    count: Annotated[int, Field(ge=1, le=10_000)] = 1

    @model_validator(mode="after")
    def _every_with_count(self) -> Repeat:
        if self.count > 1 and (self.every is None or self.every <= timedelta(0)):
            raise ValueError("a step repeated 'count' times needs a positive 'every'")
        return self

    def times(self, at: timedelta) -> Iterator[tuple[int, timedelta]]:
        """``(n, offset)`` for each repetition, ``n`` from 1."""
        step = self.every or timedelta(0)
        for n in range(self.count):
            yield n + 1, at + step * n


class PumpAction(StrEnum):
    """What can happen to a pump (a nurse at the keypad, the pump itself, the cable)."""

    HANG_BAG = "hang_bag"  # new bag: announced over MQTT, pump counter cleared
    RATE = "rate"  # program a rate
    START = "start"
    STOP = "stop"
    PAUSE = "pause"
    FLUSH = "flush"  # a flush of the line: flush_ml pushed at flush_rate_ml_per_h
    ALARM = "alarm"  # the pump raises an alarm (and stops, unless the alarm leaves it running)
    CLEAR_ALARM = "clear_alarm"  # the alarm is gone (cleared at the keypad); the pump does not restart
    DISCONNECT = "disconnect"  # the serial cable is pulled (the port vanishes)
    RECONNECT = "reconnect"  # the cable is back
    LINE_DEAD = "line_dead"  # the port stays, the pump answers nothing
    LINE_OK = "line_ok"  # answers again


class PumpAlarm(StrEnum):
    """Pump alarms a scenario can raise; each pump model raises its own code for it (``vendor_code``)."""

    OCCLUSION = "occlusion"  # the NE-1000 reports an occlusion as a motor stall (S)
    STALL = "stall"
    RESET = "reset"
    PROGRAM_ERROR = "program_error"
    PHASE_OUT_OF_RANGE = "phase_out_of_range"
    END_OF_INFUSION = "end_of_infusion"  # syringe or volume done, the pump stops
    NEAR_END_OF_INFUSION = "near_end_of_infusion"  # the pump keeps infusing
    BATTERY_LOW = "battery_low"  # the pump keeps infusing
    BATTERY_EMPTY = "battery_empty"
    ON_BATTERY = "on_battery"  # mains power lost; the pump keeps infusing

    @property
    def code(self) -> Alarm:
        """The NE-1000 alarm this scenario alarm raises (``KeyError`` for one it has no code for)."""
        return _NE1000_ALARMS[self]

    @property
    def stops(self) -> bool:
        """Whether the pump stops when it raises this alarm."""
        return self not in _RUNNING_ALARMS


_NE1000_ALARMS: Mapping[PumpAlarm, Alarm] = {
    PumpAlarm.OCCLUSION: Alarm.STALL,
    PumpAlarm.STALL: Alarm.STALL,
    PumpAlarm.RESET: Alarm.RESET,
    PumpAlarm.PROGRAM_ERROR: Alarm.PROGRAM_ERROR,
    PumpAlarm.PHASE_OUT_OF_RANGE: Alarm.PHASE_OUT_OF_RANGE,
}
# The Alaris codes of docs/pump-protocols.md whose meaning fits; the NE-1000's own
# alarms (stall, reset, program error, phase) have no Alaris code known.
_ALARIS_ALARMS: Mapping[PumpAlarm, str] = {
    PumpAlarm.OCCLUSION: "AL_OCCLU",
    PumpAlarm.END_OF_INFUSION: "AL_EOIST",
    PumpAlarm.NEAR_END_OF_INFUSION: "AL_NEOIN",
    PumpAlarm.BATTERY_LOW: "AL_LWBAT",
    PumpAlarm.BATTERY_EMPTY: "AL_EMBAT",
    PumpAlarm.ON_BATTERY: "AL_ACDIS",
}
_RUNNING_ALARMS = frozenset({PumpAlarm.NEAR_END_OF_INFUSION, PumpAlarm.BATTERY_LOW, PumpAlarm.ON_BATTERY})


_ACTION_FIELDS: Mapping[PumpAction, tuple[frozenset[str], frozenset[str]]] = {
    # action: (required fields, optional fields)
    PumpAction.HANG_BAG: (frozenset({"bag_id", "concentration_ug_per_ml"}), frozenset({"volume_ml"})),
    PumpAction.RATE: (frozenset({"rate_ml_per_h"}), frozenset()),
    PumpAction.FLUSH: (frozenset({"flush_ml"}), frozenset({"flush_rate_ml_per_h"})),
    PumpAction.ALARM: (frozenset({"alarm"}), frozenset()),
}
_ACTION_OPTIONAL = frozenset({"bag_id", "concentration_ug_per_ml", "volume_ml", "rate_ml_per_h"})
_ACTION_OPTIONAL |= {"flush_ml", "flush_rate_ml_per_h", "alarm"}


class PumpStep(Repeat):
    """One thing that happens to the pump at ``at`` (repeatable; ``{n}`` in a bag id counts)."""

    at: Duration
    do: PumpAction
    bag_id: Annotated[str, Field(min_length=1, max_length=60)] | None = None
    concentration_ug_per_ml: Annotated[float, Field(gt=0, lt=100)] | None = None
    volume_ml: Annotated[float, Field(gt=0, le=5000)] | None = None
    rate_ml_per_h: Annotated[float, Field(ge=0, le=999)] | None = None
    flush_ml: Annotated[float, Field(gt=0, le=100)] | None = None
    flush_rate_ml_per_h: Annotated[float, Field(gt=0, le=999)] = 600.0
    alarm: PumpAlarm | None = None

    @model_validator(mode="after")
    def _fields_fit_action(self) -> PumpStep:
        required, optional = _ACTION_FIELDS.get(self.do, (frozenset(), frozenset()))
        missing = sorted(name for name in required if getattr(self, name) is None)
        if missing:
            raise ValueError(f"'{self.do}' needs {', '.join(missing)}")
        extra = sorted(
            name
            for name in _ACTION_OPTIONAL - required - optional
            if name in self.model_fields_set and getattr(self, name) is not None
        )
        if extra:
            raise ValueError(f"'{self.do}' does not take {', '.join(extra)}")
        return self


class PumpModel(StrEnum):
    """The pump a bed's program runs on: its simulator, and the daemon's driver for it."""

    NE1000 = "ne1000"
    ALARIS_ASENA = "alaris-asena"
    FRESENIUS_BASE_A = "fresenius-base-a"  # one pump docked in its own base


class PumpProgram(Model):
    """The bed's pump: its model, how the daemon polls it and what happens to it over time."""

    model: PumpModel = PumpModel.NE1000
    address: Annotated[int, Field(ge=0, le=99)] = 0  # NE-1000 only
    rate_ml_per_h: Annotated[float, Field(ge=0, le=999)] = 10.0  # programmed before the first step
    poll_interval: Duration = timedelta(seconds=30)
    comm_lost_after: Duration = timedelta(seconds=120)
    steps: list[PumpStep] = []

    @model_validator(mode="after")
    def _timing(self) -> PumpProgram:
        if self.poll_interval <= timedelta(0):
            raise ValueError("poll_interval must be positive")
        if self.comm_lost_after <= self.poll_interval:
            raise ValueError("comm_lost_after must be longer than poll_interval")
        for step in self.steps:
            if step.alarm is not None and not can_raise(self.model, step.alarm):
                raise ValueError(
                    f"the {self.model.value} pump has no alarm code for {step.alarm.value!r} "
                    f"(it can raise: {', '.join(a.value for a in PumpAlarm if can_raise(self.model, a))})"
                )
        return self


def can_raise(model: PumpModel, alarm: PumpAlarm) -> bool:
    """Whether a pump of ``model`` has an alarm code for ``alarm`` (a Fresenius base has one for all)."""
    if model is PumpModel.NE1000:
        return alarm in _NE1000_ALARMS
    if model is PumpModel.ALARIS_ASENA:
        return alarm in _ALARIS_ALARMS
    return True


class ExcursionSpec(Model):
    """A vital sign moves to ``target`` over ``ramp`` from ``at``, until ``until`` (if given)."""

    metric: Metric
    at: Duration
    target: float
    ramp: Duration = timedelta(0)
    until: Duration | None = None

    @model_validator(mode="after")
    def _order(self) -> ExcursionSpec:
        if self.until is not None and self.until <= self.at:
            raise ValueError("'until' must be after 'at'")
        return self


class Dropout(Model):
    """The monitor sends nothing from ``at`` until ``until``."""

    at: Duration
    until: Duration

    @model_validator(mode="after")
    def _order(self) -> Dropout:
        if self.until <= self.at:
            raise ValueError("'until' must be after 'at'")
        return self


class Artifact(Model):
    """The next ``messages`` monitor messages from ``at`` carry ``value`` for ``metric``."""

    at: Duration
    metric: Metric
    value: float
    messages: Annotated[int, Field(ge=1, le=100)] = 1


class MonitorProgram(Model):
    """The bedside monitor: how often it sends, baselines, noise and what goes wrong."""

    interval: Duration = timedelta(seconds=30)
    baseline: dict[Metric, float] = {}  # overrides of the simulator's adult baseline
    noise_sd: dict[Metric, float] = {}  # overrides of its noise
    excursions: list[ExcursionSpec] = []
    dropouts: list[Dropout] = []
    artifacts: list[Artifact] = []

    @model_validator(mode="after")
    def _positive(self) -> MonitorProgram:
        if self.interval <= timedelta(0):
            raise ValueError("interval must be positive")
        return self


class ObservationStep(Repeat):
    """A nurse's entry (the fields of the observation payload), repeatable."""

    at: Duration
    by: config_module.UserId = "nurse"  # the station's broker user
    handwriting: Literal["normal", "changed", "unable"] | None = None
    ice_score: Annotated[int, Field(ge=0, le=10)] | None = None
    acvpu: Literal["A", "C", "V", "P", "U"] | None = None
    o2_flow_l_per_min: Annotated[float, Field(ge=0)] | None = None
    o2_device: str | None = None
    vasopressors: Annotated[int, Field(ge=0)] | None = None
    antipyretic_given: bool | None = None
    corticosteroid_given: bool | None = None

    def payload(self, when: datetime) -> bytes:
        """The JSON a nursing application would publish."""
        body: dict[str, Any] = {"time": iso(when), "by": self.by}
        body.update(self.model_dump(exclude={"at", "by", "every", "count"}, exclude_none=True))
        return json.dumps(body).encode()


class AckStep(Model):
    """A person acknowledges the bed's open alert for ``condition`` at ``at`` (if one is open)."""

    at: Duration
    condition: Annotated[str, Field(min_length=1, max_length=64)]
    by: config_module.UserId = "nurse"  # the station's broker user


class BedScenario(Model):
    """One bed: patient, protocol, pump, monitor, observations."""

    id: config_module.Ident
    patient: Annotated[str, Field(min_length=1, max_length=64)] = "SIM-001"  # a pseudonym
    weight_kg: Annotated[float, Field(gt=0, lt=400)]
    height_cm: Annotated[float, Field(gt=30, lt=260)]
    protocol: str = "ssc-14d"
    # Protocol start relative to the scenario start: "-6d20h" starts the scenario on
    # protocol day 7 at hour 20 (the dose ledger starts with the first pump reading).
    start: Offset = timedelta(0)
    thresholds: dict[str, dict[str, Any]] = {}
    pump: PumpProgram | None = None
    monitor: MonitorProgram | None = MonitorProgram()
    observations: list[ObservationStep] = []
    acks: list[AckStep] = []


class Scenario(Model):
    """A whole scenario file."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str = ""
    seed: int = 0
    start: AwareDatetime = DEFAULT_START
    duration: Duration
    ward: config_module.Ident = "sim"
    tick_interval: Duration = timedelta(seconds=60)  # the daemon's Tick (staleness, due checks)
    escalate_after: Duration = timedelta(minutes=5)
    thresholds: dict[str, Any] = {}  # the ward's [thresholds] table
    protocols: dict[str, Any] = {}  # site step schedules, as in the config
    beds: Annotated[list[BedScenario], Field(min_length=1, max_length=50)]

    @model_validator(mode="after")
    def _unique_beds(self) -> Scenario:
        ids = [bed.id for bed in self.beds]
        doubled = sorted({i for i in ids if ids.count(i) > 1})
        if doubled:
            raise ValueError(f"bed id(s) used twice: {', '.join(doubled)}")
        addresses = [
            bed.pump.address
            for bed in self.beds
            if bed.pump is not None and bed.pump.model is PumpModel.NE1000
        ]
        if len(set(addresses)) != len(addresses):
            raise ValueError("each bed's pump needs its own address")
        if self.duration <= timedelta(0):
            raise ValueError("duration must be positive")
        return self


# --------------------------------------------------------------------------- loading


def _issues(exc: ValidationError) -> list[ConfigIssue]:
    out = []
    for error in exc.errors():
        where = config_module._location(error["loc"])
        if error["type"] == "extra_forbidden":
            reason = "unknown option (see the scenario format in README)"
        elif error["type"] == "missing":
            reason = "required option is missing"
        else:
            reason = str(error["msg"]).removeprefix("Value error, ")
        out.append(ConfigIssue(where, reason))
    return out


def parse_scenario(data: Mapping[str, Any], source: str = "<scenario>") -> Scenario:
    """Validate a decoded scenario; ``ConfigError`` lists every problem with its place."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _issues(exc)) from exc


def builtin_path(name: str) -> Path | None:
    """The built-in scenario of this name, if any."""
    path = BUILTIN_DIR / f"{name}.toml"
    return path if path.is_file() else None


def builtin_names() -> list[str]:
    """The built-in scenarios' names."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def load_scenario(path_or_name: Path | str) -> Scenario:
    """Read a scenario file (or a built-in by name); ``ConfigError`` on any problem."""
    path = Path(path_or_name)
    if not path.exists() and (builtin := builtin_path(str(path_or_name))) is not None:
        path = builtin
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        known = ", ".join(builtin_names())
        detail = f"cannot read: {exc.strerror} (built-in scenarios: {known})"
        raise ConfigError(str(path), [ConfigIssue("", detail)]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [ConfigIssue("", f"not valid TOML: {exc}")]) from exc
    return parse_scenario(data, str(path))


def pump_id(bed: str) -> str:
    """The pump id the scenario gives a bed's pump."""
    return f"{bed}-pump"


def _ack_users(scenario: Scenario, broker: MqttConfig | None) -> tuple[str, ...]:
    """Who acknowledges in ``scenario``, for ``[alerts] ack_users`` when the run logs in.

    On a broker without logins the list may stay empty (anyone). With logins the daemon
    requires one; a scenario without acknowledgements lists the runner's own login,
    the only user that publishes anything.
    """
    if broker is None or broker.username is None:
        return ()
    users = sorted({ack.by for bed in scenario.beds for ack in bed.acks})
    return tuple(users) or (broker.username,)


def login_settings(broker: MqttConfig | None) -> dict[str, Any]:
    """A broker's login and TLS settings, as ``to_config``'s ``mqtt`` takes them."""
    if broker is None:
        return {}
    return broker.model_dump(mode="json", include={"username", "password", "tls"}, exclude_none=True)


def to_config(
    scenario: Scenario,
    *,
    state_dir: Path,
    mqtt_url: str,
    prefix: str,
    influx: InfluxConfig,
    pump_links: Mapping[str, Path],
    capture: Path | None = None,
    mqtt: Mapping[str, Any] | None = None,
    ack_users: Sequence[str] = (),
) -> Config:
    """The daemon configuration a scenario runs under (validated like a config file).

    ``mqtt``: more broker settings (login, TLS); ``ack_users``: ``[alerts] ack_users``.
    """
    data: dict[str, Any] = {
        "daemon": {
            "state_dir": str(state_dir),
            "tick_interval_s": scenario.tick_interval.total_seconds(),
            "log_level": "WARNING",
            **({"capture": str(capture)} if capture is not None else {}),
        },
        "mqtt": {"url": mqtt_url, "client_id": f"{prefix}-daemon", "topic_prefix": prefix, **(mqtt or {})},
        "influx": influx.model_dump(mode="json", exclude_none=True),
        "thresholds": scenario.thresholds,
        "protocols": scenario.protocols,
        "alerts": {
            "escalate_after_s": scenario.escalate_after.total_seconds(),
            # Escalation is judged at the daemon's tick resolution: one wake a second
            # would be most of a 14-day run's work for nothing.
            "check_interval_s": scenario.tick_interval.total_seconds(),
            "ack_users": list(ack_users),
        },
        "beds": [
            {
                "ward": scenario.ward,
                "id": bed.id,
                "patient": bed.patient,
                "weight_kg": bed.weight_kg,
                "height_cm": bed.height_cm,
                "protocol": bed.protocol,
                "protocol_start": iso(scenario.start + bed.start),
                "thresholds": bed.thresholds,
            }
            for bed in scenario.beds
        ],
        "pumps": [
            {
                "id": pump_id(bed.id),
                "bed": bed.id,
                "url": str(pump_links[bed.id]),
                "poll_interval_s": bed.pump.poll_interval.total_seconds(),
                "comm_lost_after_s": bed.pump.comm_lost_after.total_seconds(),
                # The daemon reopens a vanished port within a couple of polls.
                "reconnect_max_s": max(0.5, bed.pump.poll_interval.total_seconds()),
                **_driver_settings(bed.pump),
            }
            for bed in scenario.beds
            if bed.pump is not None
        ],
    }
    return config_module.parse(data, f"scenario {scenario.name}")


def _driver_settings(pump: PumpProgram) -> dict[str, Any]:
    if pump.model is PumpModel.ALARIS_ASENA:
        # The keep-alive goes with each poll: every exchange is a tracked poll, so the
        # stepped clock never moves while a keep-alive reply is on its way.
        return {"driver": pump.model.value, "keepalive_interval_s": pump.poll_interval.total_seconds()}
    if pump.model is PumpModel.FRESENIUS_BASE_A:
        # Module 1 of its own base; a pseudo-terminal cannot carry 7E1, 8N1 carries the same.
        return {"driver": pump.model.value, "module": DockedPump.MODULE, "bytesize": 8, "parity": "N"}
    return {"driver": pump.model.value, "address": pump.address}


# --------------------------------------------------------------------------- clock


class SteppedClock(ManualClock):
    """Simulated time that moves only when the runner steps it (``Clock`` protocol).

    Unlike ``ManualClock.advance``, which wakes every sleeper up to a target with a
    few loop turns between them, ``wake_next`` wakes exactly one sleeper (the
    earliest; ties in the order they went to sleep), so the runner can let the
    whole system settle before the next one.
    """

    def __init__(self, start: datetime) -> None:
        """Time starts at ``start``."""
        super().__init__(start)
        self.wakes = 0

    def set(self, elapsed_s: float) -> None:
        """Move time to ``elapsed_s`` without waking anyone (never backwards)."""
        self._elapsed_s = max(self._elapsed_s, elapsed_s)

    def wake_next(self) -> bool:
        """Move time to the earliest sleeper and wake it; False when nobody sleeps."""
        if self.next_wake() is None:
            return False
        wake_s, _, future = heapq.heappop(self._sleepers)
        self.set(wake_s)
        future.set_result(None)
        self.wakes += 1
        return True


# --------------------------------------------------------------------------- instrumentation


class CountingPublisher:
    """A ``Publisher`` that counts what it queues (the daemon must receive as many)."""

    def __init__(self, link: MqttLink) -> None:
        """Publish through ``link``."""
        self.link = link
        self.sent = 0

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Queue one message on the link."""
        self.sent += 1
        await self.link.publish(topic, payload, qos=qos, retain=retain)


@dataclasses.dataclass
class PollActivity:
    """Pump driver calls in flight, so the runner knows a reply is still on its way."""

    in_flight: int = 0
    polls: int = 0


class TrackedDriver:
    """A ``PumpDriver`` that records its calls in a ``PollActivity``."""

    def __init__(self, inner: PumpDriver, activity: PollActivity) -> None:
        """Wrap ``inner``."""
        self._inner = inner
        self._activity = activity

    async def open(self) -> None:
        """Open the port (tracked)."""
        self._activity.in_flight += 1
        try:
            await self._inner.open()
        finally:
            self._activity.in_flight -= 1

    async def read(self) -> PumpStatus:
        """Poll once (tracked)."""
        self._activity.in_flight += 1
        self._activity.polls += 1
        try:
            return await self._inner.read()
        finally:
            self._activity.in_flight -= 1

    async def close(self) -> None:
        """Close the port."""
        await self._inner.close()


def tracked_factory(activity: PollActivity) -> DriverFactory:
    """The factory of the pump's own driver, with every driver tracked in ``activity``."""

    def factory(pump: PumpConfig, clock: Clock, on_fault: FaultHandler) -> PumpDriver:
        return TrackedDriver(DRIVERS[pump.driver](pump, clock, on_fault), activity)

    return factory


# --------------------------------------------------------------------------- simulators


class ScenarioMonitor:
    """A bedside monitor following a ``MonitorProgram``: vitals with noise and excursions,
    dropouts (it sends nothing) and artifacts (a wrong value in a message)."""

    def __init__(
        self,
        publisher: CountingPublisher,
        program: MonitorProgram,
        *,
        prefix: str,
        ward: str,
        bed: str,
        clock: Clock,
        seed: int,
    ) -> None:
        """Start counting the program's offsets from the clock's time now."""
        self._publisher = publisher
        self._program = program
        self._topic = topics.vitals(prefix, ward, bed)
        self._clock = clock
        self._rng = random.Random(seed)
        self._origin_s = clock.monotonic()
        self.device = f"monitor-{bed}"
        self._profile = Profile(
            baseline={**BASELINE, **program.baseline},
            noise_sd={**NOISE_SD, **program.noise_sd},
            excursions=tuple(
                Excursion(
                    e.metric,
                    e.at.total_seconds(),
                    e.target,
                    ramp_s=e.ramp.total_seconds(),
                    end_s=None if e.until is None else e.until.total_seconds(),
                )
                for e in program.excursions
            ),
        )
        self._artifacts_left = {id(a): a.messages for a in program.artifacts}
        self.sent = 0
        self.skipped = 0

    def _elapsed(self) -> timedelta:
        return timedelta(seconds=self._clock.monotonic() - self._origin_s)

    async def publish_once(self) -> None:
        """Send one message now, unless a dropout is on."""
        elapsed = self._elapsed()
        if any(d.at <= elapsed < d.until for d in self._program.dropouts):
            self.skipped += 1
            return
        elapsed_s = elapsed.total_seconds()
        values = {m: self._profile.value(m, elapsed_s, self._rng) for m in self._profile.baseline}
        for artifact in self._program.artifacts:
            if artifact.at <= elapsed and self._artifacts_left[id(artifact)] > 0:
                self._artifacts_left[id(artifact)] -= 1
                values[artifact.metric] = artifact.value
        await self._publisher.publish(self._topic, vitals_payload(self.device, self._clock.now(), values))
        self.sent += 1

    async def run(self) -> None:
        """Send on a drift-free schedule until cancelled."""
        async for _ in every(self._clock, self._program.interval.total_seconds()):
            await self.publish_once()


@dataclasses.dataclass(order=True)
class ScriptedAction:
    """One scripted thing at one simulated offset; ties run in file order."""

    offset_s: float
    order: int
    bed: str = dataclasses.field(compare=False)
    label: str = dataclasses.field(compare=False)
    run: Callable[[], Coroutine[Any, Any, None]] = dataclasses.field(compare=False)


# --------------------------------------------------------------------------- results


@dataclasses.dataclass
class ScenarioResult:
    """What one run produced."""

    scenario: Scenario
    alerts: list[dict[str, Any]]
    wall_s: float
    simulated_s: float
    counts: dict[str, int]
    timeline: list[str]

    def alert_lines(self) -> list[str]:
        """The alert transitions as JSON lines (no newline)."""
        return [json.dumps(a, ensure_ascii=False, sort_keys=True) for a in self.alerts]


ALERT_FIELDS = ("id", "ward", "bed", "condition", "phase", "state", "priority", "kind", "value", "unit")


def alert_record(payload: Mapping[str, Any], start: datetime) -> dict[str, Any]:
    """One alert transition as written to ``--alerts-out``: simulated time and offset first."""
    at = datetime.fromisoformat(str(payload["updated"]))
    record: dict[str, Any] = {"at": iso(at), "offset": format_offset(at - start)}
    record.update({k: payload.get(k) for k in ALERT_FIELDS})
    record["details"] = payload.get("details") or {}
    record["escalation_level"] = payload.get("escalation_level", 0)
    record["message"] = payload.get("message")
    return record


# --------------------------------------------------------------------------- runner


_run_ids = itertools.count()


class ScenarioRun:
    """One run of one scenario (``run_scenario`` is the convenient entry point)."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        workdir: Path,
        fast: bool,
        speed: float,
        mqtt_url: str,
        influx: InfluxConfig,
        out: TextIO,
        capture: Path | None,
        progress: bool,
        on_pipeline: Callable[[Pipeline], None] | None = None,
        on_alert: Callable[[Mapping[str, Any]], None] | None = None,
        secure: SecureBroker | None = None,
        broker: MqttConfig | None = None,
        at_end: Callable[[Pipeline], Awaitable[None]] | None = None,
    ) -> None:
        """``on_pipeline`` is called with the daemon's pipeline before it runs (to attach
        observers, or to stop the run early by setting its ``stop``); ``on_alert`` with
        each alert transition as recorded. ``at_end`` is awaited once the scenario's end is
        reached, before the daemon stops: its services (the ward page) still serve, on a
        clock that no longer moves in fast mode (screenshots of the end of a story).

        ``secure``: a locked-down broker (``simulators.secure``, its ``mqtt_url``): the
        daemon logs in as ``wardd``, the simulated devices as one gateway user, and the
        station, which reads the alerts and acknowledges them, as its own user, with the
        scenario's ``by`` as the display name. The topic prefix is then the ACL's ``ward``.
        ``broker``: otherwise, the login and TLS settings of the broker at ``mqtt_url``
        (a config's ``[mqtt]``), used by the daemon and the runner's links alike.
        """
        self.scenario = scenario
        self.on_pipeline = on_pipeline
        self.on_alert = on_alert
        self.at_end = at_end
        self.fast = fast
        self.out = out
        self.progress = progress
        self.start = scenario.start
        self.clock: SteppedClock | ScaledClock = (
            SteppedClock(self.start) if fast else ScaledClock(self.start, speed)
        )
        # A prefix of its own on a shared broker; the ACL's on a locked-down one (its own).
        self.prefix = "ward" if secure is not None else f"wardd-scn{os.getpid()}x{next(_run_ids)}"
        self.secure = secure
        self.links = {bed.id: workdir / f"{bed.id}.pty" for bed in scenario.beds if bed.pump is not None}
        self.config = to_config(
            scenario,
            state_dir=workdir / "state",
            mqtt_url=mqtt_url,
            prefix=self.prefix,
            influx=influx,
            pump_links=self.links,
            capture=capture,
            mqtt=login_settings(broker)
            if secure is None
            else {
                "username": DAEMON,
                "password": {"value": secure.passwords[DAEMON]},
                "tls": {"ca_file": str(secure.ca_file)},
            },
            ack_users=(STATION,) if secure is not None else _ack_users(scenario, broker),
        )
        if capture is not None:
            # Beside the capture, so that `wardd replay` can be given the config it was made under.
            write_config(
                self.config,
                config_beside(capture),
                f"The config `wardd scenario {scenario.name}` ran under, written beside its capture\n"
                f"{capture.name} for `wardd replay {capture.name} --config {config_beside(capture).name}`.",
            )
        self.counters = Counters()
        self.alerts: list[dict[str, Any]] = []
        self.activity = PollActivity()
        self.pumps: dict[str, SimulatedPump | SimulatedAlaris | DockedPump] = {}
        self.line_dead: set[str] = set()
        self.received_by_daemon = 0
        self.open_ids: dict[tuple[str, str], str] = {}
        self._alert_seen = asyncio.Event()
        self._before_flush: dict[str, float] = {}
        self.station_sent: Callable[[], int] = lambda: 0

    # -- wiring

    def _link(
        self, name: str, subscriptions: Sequence[str], on_message: Any, user: str | None = None
    ) -> MqttLink:
        mqtt, password = self.config.mqtt, self.config.mqtt.password.resolve()
        if self.secure is not None and user is not None:
            mqtt, password = mqtt.model_copy(update={"username": user}), self.secure.passwords[user]
        return MqttLink(
            mqtt,
            # The config's own TLS, and a login: a locked-down broker refuses anonymous links.
            password=password,
            subscriptions=subscriptions,
            on_message=on_message,
            counters=Counters(),
            clock=self.clock,
            client_id=f"{self.prefix}-{name}",
            clean_session=True,
        )

    async def _on_alert(self, topic: str, payload: bytes, ack: Ack) -> None:
        ack()  # a console: nothing to make durable first
        if not payload or not topic.endswith("/alerts"):
            return
        body = json.loads(payload)
        record = alert_record(body, self.start)
        self.alerts.append(record)
        self._alert_seen.set()
        if self.on_alert is not None:
            self.on_alert(record)
        key = (str(body.get("bed")), str(body.get("condition")))
        if body.get("state") == "resolved":
            self.open_ids.pop(key, None)
        else:
            self.open_ids[key] = str(body.get("id"))
        if self.progress:
            print(
                f"  {record['offset']} {record['bed']} {str(record['priority']).upper():6} "
                f"{record['condition']} {record['phase']}",
                file=self.out,
                flush=True,
            )

    def _instrument(self, pipeline: Pipeline) -> None:
        # Seeded jitter and tracked drivers: the same run every time, and the runner
        # knows when a pump reply is still on its way.
        pipeline.pumps = [
            PumpSource(
                pump,
                self.config.bed(pump.bed).ward,
                self.clock,
                self.counters,
                driver_factory=tracked_factory(self.activity),
                rng=random.Random(self.scenario.seed + i),
            )
            for i, pump in enumerate(self.config.pumps)
        ]
        inner = pipeline.on_message

        async def counted(topic: str, payload: bytes, ack: Ack) -> None:
            await inner(topic, payload, ack)
            self.received_by_daemon += 1

        # The daemon's link calls the pipeline's on_message for every message it gets.
        setattr(pipeline, "on_message", counted)  # noqa: B010 -- instrumentation of one instance

    def _script(self, sims: CountingPublisher, station: CountingPublisher) -> list[ScriptedAction]:
        actions: list[ScriptedAction] = []
        order = itertools.count()
        ward, prefix = self.scenario.ward, self.prefix
        for bed in self.scenario.beds:
            if bed.pump is not None:
                for step in bed.pump.steps:
                    for n, offset in step.times(step.at):
                        actions.append(
                            ScriptedAction(
                                offset.total_seconds(),
                                next(order),
                                bed.id,
                                f"pump {step.do}",
                                self._pump_action(bed.id, step, n, sims),
                            )
                        )
                        if step.do is PumpAction.FLUSH:
                            assert step.flush_ml is not None
                            flush_s = step.flush_ml / step.flush_rate_ml_per_h * 3600.0
                            actions.append(
                                ScriptedAction(
                                    offset.total_seconds() + flush_s,
                                    next(order),
                                    bed.id,
                                    "pump flush end",
                                    self._flush_end(bed.id),
                                )
                            )
            for obs in bed.observations:
                for _, offset in obs.times(obs.at):
                    actions.append(
                        ScriptedAction(
                            offset.total_seconds(),
                            next(order),
                            bed.id,
                            "observation",
                            self._publish_observation(sims, topics.observations(prefix, ward, bed.id), obs),
                        )
                    )
            for ack in bed.acks:
                actions.append(
                    ScriptedAction(
                        ack.at.total_seconds(), next(order), bed.id, "ack", self._ack(station, bed.id, ack)
                    )
                )
        return sorted(actions)

    def _publish_observation(
        self, sims: CountingPublisher, topic: str, obs: ObservationStep
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        async def run() -> None:
            await sims.publish(topic, obs.payload(self.clock.now()))

        return run

    def _ack(
        self, station: CountingPublisher, bed: str, ack: AckStep
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        async def run() -> None:
            alert_id = self.open_ids.get((bed, ack.condition))
            if alert_id is None:
                print(f"scenario: {bed}: no open {ack.condition} to acknowledge", file=self.out)
                return
            if self.secure is None:
                # As a station logged in as ``ack.by`` would (this broker has no logins).
                topic = topics.alert_ack_by(self.prefix, self.scenario.ward, bed, alert_id, ack.by)
                await station.publish(topic, b"{}")
            else:
                # The station's login is the author; the person at it gives a name.
                topic = topics.alert_ack_by(self.prefix, self.scenario.ward, bed, alert_id, STATION)
                await station.publish(topic, json.dumps({"by": ack.by}).encode())

        return run

    def _flush_end(self, bed: str) -> Callable[[], Coroutine[Any, Any, None]]:
        async def run() -> None:
            self.pumps[bed].set_rate(self._before_flush.pop(bed, self.pumps[bed].rate_ml_per_h))

        return run

    def _pump_action(
        self, bed: str, step: PumpStep, n: int, sims: CountingPublisher
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        async def run() -> None:
            sim = self.pumps[bed]
            if step.do is PumpAction.HANG_BAG:
                assert step.bag_id is not None
                assert step.concentration_ug_per_ml is not None
                # A bag change clears the pump's volume counter for the new bag.
                running = sim.running
                sim.stop()
                sim.infused_ml = 0.0
                if running:
                    sim.start()
                body = {
                    "bag_id": step.bag_id.replace("{n}", str(n)),
                    "concentration_ug_per_ml": step.concentration_ug_per_ml,
                    "hung_at": iso(self.clock.now()),
                    **({"volume_ml": step.volume_ml} if step.volume_ml is not None else {}),
                }
                await sims.publish(
                    topics.bag(self.prefix, self.scenario.ward, bed), json.dumps(body).encode()
                )
            elif step.do is PumpAction.RATE:
                assert step.rate_ml_per_h is not None
                sim.set_rate(step.rate_ml_per_h)
            elif step.do is PumpAction.START:
                sim.start()
            elif step.do is PumpAction.STOP:
                sim.stop()
            elif step.do is PumpAction.PAUSE:
                sim.pause()
            elif step.do is PumpAction.FLUSH:
                self._before_flush[bed] = sim.rate_ml_per_h
                sim.set_rate(step.flush_rate_ml_per_h)
                sim.start()
            elif step.do is PumpAction.ALARM:
                assert step.alarm is not None
                if isinstance(sim, SimulatedPump):
                    sim.raise_alarm(step.alarm.code)
                elif isinstance(sim, SimulatedAlaris):
                    sim.raise_alarm(_ALARIS_ALARMS[step.alarm])
                else:
                    sim.raise_alarm(step.alarm.value, stops=step.alarm.stops)
            elif step.do is PumpAction.CLEAR_ALARM:
                sim.clear_alarm()
            elif step.do is PumpAction.DISCONNECT:
                await sim.disconnect()
                if self.fast:
                    await asyncio.sleep(UNPLUG_GRACE_S)
            elif step.do is PumpAction.RECONNECT:
                await sim.reconnect()
            elif step.do is PumpAction.LINE_DEAD:
                self.line_dead.add(bed)
                sim.drop_replies(-1)
            elif step.do is PumpAction.LINE_OK:
                self.line_dead.discard(bed)
                sim.drop_replies(0)

        return run

    def _simulator(self, pump: PumpProgram, bed: str) -> SimulatedPump | SimulatedAlaris | DockedPump:
        if pump.model is PumpModel.FRESENIUS_BASE_A:
            return DockedPump(clock=self.clock, link=self.links[bed], rate_ml_per_h=pump.rate_ml_per_h)
        if pump.model is PumpModel.ALARIS_ASENA:
            return SimulatedAlaris(
                clock=self.clock,
                link=self.links[bed],
                rate_ml_per_h=pump.rate_ml_per_h,
                # Remote access outlasts the keep-alive that each poll sends.
                remote_timeout_s=pump.comm_lost_after.total_seconds(),
            )
        return SimulatedPump(
            clock=self.clock, address=pump.address, link=self.links[bed], rate_ml_per_h=pump.rate_ml_per_h
        )

    # -- quiet detection (fast mode)

    def _busy(self, pipeline: Pipeline, sims: CountingPublisher, console: MqttLink) -> bool:
        answering = all(sim.connected and bed not in self.line_dead for bed, sim in self.pumps.items())
        return (
            sims.link.pending > 0
            or pipeline.link.pending > 0
            or sims.sent + self.station_sent() != self.received_by_daemon
            or self.counters.total("alerts.transitions") != len(self.alerts)
            or pipeline.work.qsize() > 0
            or not pipeline.writer.idle
            or (self.activity.in_flight > 0 and answering)
            or console.pending > 0
        )

    async def settle(self, pipeline: Pipeline, sims: CountingPublisher, console: MqttLink) -> None:
        """Wait until nothing is in flight anywhere (fast mode)."""
        quiet = 0
        while quiet < QUIET_ROUNDS:
            await asyncio.sleep(0)
            await pipeline.writer.flush()
            await pipeline.work.join()
            quiet = 0 if self._busy(pipeline, sims, console) else quiet + 1

    # -- running

    async def run(self) -> ScenarioResult:
        """Run the scenario to its end; the alert transitions and a summary come back."""
        wall_start = time.perf_counter()
        pipeline = build(self.config, clock=self.clock, counters=self.counters)
        self._instrument(pipeline)
        if self.on_pipeline is not None:
            self.on_pipeline(pipeline)
        sims = CountingPublisher(self._link("sims", [], self._ignore, user=DEVICES))
        # The console is the station: it reads the alerts and acknowledges them.
        console = self._link("console", [topics.alerts(self.prefix, "+", "+")], self._on_alert, user=STATION)
        station = CountingPublisher(console)
        self.station_sent = lambda: station.sent
        end_s = self.scenario.duration.total_seconds()
        async with contextlib.AsyncExitStack() as stack:
            for bed in self.scenario.beds:
                if bed.pump is not None:
                    self.pumps[bed.id] = await stack.enter_async_context(self._simulator(bed.pump, bed.id))
            async with asyncio.TaskGroup() as group:
                helpers = [
                    group.create_task(sims.link.run(), name="scenario.sims.link"),
                    group.create_task(console.run(), name="scenario.console"),
                ]
                await asyncio.wait_for(
                    asyncio.gather(sims.link.connected.wait(), console.connected.wait()), 30
                )
                daemon = group.create_task(pipeline.run(), name="scenario.daemon")
                await asyncio.wait_for(
                    asyncio.gather(pipeline.ready.wait(), pipeline.link.connected.wait()), 30
                )
                monitors = [
                    ScenarioMonitor(
                        sims,
                        bed.monitor,
                        prefix=self.prefix,
                        ward=self.scenario.ward,
                        bed=bed.id,
                        clock=self.clock,
                        seed=self.scenario.seed * 1000 + i,
                    )
                    for i, bed in enumerate(self.scenario.beds)
                    if bed.monitor is not None
                ]
                helpers += [group.create_task(m.run(), name=f"scenario.{m.device}") for m in monitors]
                script = self._script(sims, station)
                if isinstance(self.clock, SteppedClock):
                    await self._run_fast(
                        clock=self.clock,
                        script=script,
                        end_s=end_s,
                        pipeline=pipeline,
                        sims=sims,
                        console=console,
                    )
                else:
                    await self._run_scaled(script, end_s, helpers, group, pipeline.stop)
                if self.at_end is not None:
                    await self.at_end(pipeline)
                pipeline.stop.set()
                await daemon
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        while len(self.alerts) < self.counters.total("alerts.transitions"):
                            self._alert_seen.clear()
                            await self._alert_seen.wait()
                for task in helpers:
                    task.cancel()
        counts = {
            "vitals_sent": sum(m.sent for m in monitors),
            "vitals_skipped": sum(m.skipped for m in monitors),
            "messages_to_daemon": sims.sent + station.sent,
            "pump_polls": self.activity.polls,
            "alert_transitions": len(self.alerts),
            "clock_steps": self.clock.wakes if isinstance(self.clock, SteppedClock) else 0,
        }
        return ScenarioResult(
            self.scenario,
            self.alerts,
            time.perf_counter() - wall_start,
            end_s,
            counts,
            timeline(self.scenario, self.alerts),
        )

    @staticmethod
    async def _ignore(topic: str, payload: bytes) -> None:
        return None

    async def _run_fast(
        self,
        *,
        clock: SteppedClock,
        script: list[ScriptedAction],
        end_s: float,
        pipeline: Pipeline,
        sims: CountingPublisher,
        console: MqttLink,
    ) -> None:
        pending = list(script)
        pending.reverse()
        shown_hour = -1
        while not pipeline.stop.is_set():
            await self.settle(pipeline, sims, console)
            wake = clock.next_wake()
            action_s = pending[-1].offset_s if pending else None
            if action_s is not None and action_s <= end_s and (wake is None or action_s <= wake):
                action = pending.pop()
                clock.set(action.offset_s)
                await action.run()
            elif wake is not None and wake <= end_s:
                clock.wake_next()
            else:
                break
            hour = int(clock.monotonic() // 3600)
            if hour != shown_hour:
                shown_hour = hour
                self._show_progress(clock.monotonic())
        if not pipeline.stop.is_set():
            clock.set(end_s)
            await self.settle(pipeline, sims, console)

    async def _run_scaled(
        self,
        script: list[ScriptedAction],
        end_s: float,
        helpers: list[asyncio.Task[None]],
        group: asyncio.TaskGroup,
        stop: asyncio.Event,
    ) -> None:
        async def play() -> None:
            for action in script:
                if action.offset_s > end_s:
                    return
                await self.clock.sleep(action.offset_s - self.clock.monotonic())
                await action.run()

        async def show() -> None:
            async for _ in every(self.clock, 3600.0):
                self._show_progress(self.clock.monotonic())

        helpers.append(group.create_task(play(), name="scenario.script"))
        helpers.append(group.create_task(show(), name="scenario.progress"))
        # The end, or earlier when the daemon is told to stop (a signal handler of the caller).
        end = asyncio.ensure_future(self.clock.sleep(end_s))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({end, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            end.cancel()
            stopped.cancel()

    def _show_progress(self, elapsed_s: float) -> None:
        if not self.progress:
            return
        day, rest = divmod(int(elapsed_s), 86400)
        print(
            f"scenario {self.scenario.name}: day {day + 1} hour {rest // 3600:02d}, "
            f"{len(self.alerts)} alert transition(s)",
            file=self.out,
            flush=True,
        )


def timeline(scenario: Scenario, alerts: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per bed, each alert transition (escalation reminders counted, not listed)."""
    lines = []
    for bed in scenario.beds:
        mine = [a for a in alerts if a.get("bed") == bed.id]
        overdue = sum(1 for a in mine if a.get("phase") == "overdue")
        lines.append(f"{scenario.ward}/{bed.id} ({bed.patient}, {bed.protocol}): {len(mine)} transition(s)")
        for alert in mine:
            if alert.get("phase") == "overdue":
                continue
            grade = alert.get("details", {}).get("grade")
            lines.append(
                f"  {alert['offset']}  {str(alert['priority']).upper():6} {alert['condition']:<28} "
                f"{alert['phase']}{'' if grade is None else f' (grade {grade})'}"
            )
        if overdue:
            lines.append(f"  ({overdue} escalation reminder(s) of unacknowledged high-priority alerts)")
        if not mine:
            lines.append("  no alert")
    return lines


async def run_scenario(
    scenario: Scenario,
    *,
    fast: bool = True,
    speed: float = 60.0,
    mqtt_url: str | None = None,
    influx: InfluxConfig | None = None,
    out: TextIO = sys.stdout,
    capture: Path | None = None,
    progress: bool = True,
    workdir: Path | None = None,
    broker: MqttConfig | None = None,
) -> ScenarioResult:
    """Run a scenario (``fast``: stepped clock; else ``speed`` × real time) and return its alerts.

    ``mqtt_url``: the broker (default: ``broker``'s url, else the local one, if it
    answers, else an embedded one). ``broker``: a config's ``[mqtt]``, whose login and
    TLS settings every link uses. ``influx``: storage (default: line protocol kept in
    the work folder).
    """

    with contextlib.ExitStack() as stack:
        # Scenario state is thrown away: on a RAM disk the daemon's fsyncs cost nothing.
        folder = workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="wardd-scenario-", dir=_SCRATCH))
        )
        storage = influx or InfluxConfig(api="none", spool_dir=folder / "points")
        settings = broker or config_module.MqttConfig()
        probe = Config(mqtt=settings.model_copy(update={"url": mqtt_url or settings.url}))
        async with broker_for(probe, out if progress else io.StringIO(), "scenario") as reachable:
            run = ScenarioRun(
                scenario,
                workdir=folder,
                fast=fast,
                speed=speed,
                mqtt_url=reachable.mqtt.url,
                influx=storage,
                out=out,
                capture=capture,
                progress=progress,
                broker=reachable.mqtt,
            )
            return await run.run()


# --------------------------------------------------------------------------- expectations


def expected_path(scenario_path: Path) -> Path:
    """``name.expected.jsonl`` beside ``name.toml``."""
    return scenario_path.with_name(scenario_path.stem + ".expected.jsonl")


def load_expected(path: Path) -> list[dict[str, Any]]:
    """The expected transitions: one JSON object per line (``#`` lines are comments)."""
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(str(path), [ConfigIssue(f"line {number}", f"not JSON: {exc}")]) from exc
        if not isinstance(item, dict) or "condition" not in item or "phase" not in item:
            raise ConfigError(str(path), [ConfigIssue(f"line {number}", "needs 'condition' and 'phase'")])
        out.append(item)
    return out


def _matches(want: Mapping[str, Any], got: Mapping[str, Any], start: datetime) -> bool:
    for key in ("condition", "phase", "bed", "priority", "state"):
        if key in want and want[key] != got.get(key):
            return False
    for key, value in want.get("details", {}).items():
        if got.get("details", {}).get(key) != value:
            return False
    if "at" in want:
        at = start + parse_duration(want["at"])
        tolerance = parse_duration(want.get("tolerance", "15m"))
        if abs(datetime.fromisoformat(got["at"]) - at) > tolerance:
            return False
    return True


def check_expected(
    start: datetime, actual: Sequence[Mapping[str, Any]], expected: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Differences between the run and the expectations (empty when they agree).

    Each expected line must match its own transition: ``condition`` and ``phase``,
    and ``bed``, ``priority``, ``state``, a subset of ``details``, ``at`` (an offset
    from the start) within ``tolerance`` (default 15m) when given. Every actual
    transition except ``overdue`` reminders must be expected.
    """
    left = [
        a for a in actual if a.get("phase") != "overdue" or any(e["phase"] == "overdue" for e in expected)
    ]
    problems = []
    for want in expected:
        hit = next((a for a in left if _matches(want, a, start)), None)
        if hit is None:
            problems.append(f"missing: {json.dumps(want)}")
        else:
            left.remove(hit)
    problems.extend(
        f"unexpected: {a['offset']} {a['bed']} {a['condition']} {a['phase']} {a['priority']} {a['details']}"
        for a in left
    )
    return problems
