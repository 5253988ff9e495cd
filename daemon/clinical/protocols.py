"""Dose protocols as data: built-in step schedules and the arithmetic on them.

A protocol is a list of steps, each a dose over a range of protocol days. Day 1
starts at the bed's ``protocol_start``; day ``n`` covers ``[start + (n-1) days,
start + n days)``. Body-surface doses (µg/m²/day) are resolved once, from the bed's
weight and height, into a ``Schedule`` of flat µg/day steps. Everything here is
pure: times come in as arguments.

Built-in protocols (domain.md sections 0-1):

- ``ssc-14d`` (default): 9 µg/day on days 1-7, 28 µg/day on days 8-14 (the SSc case).
- ``all-cycle1``: 9 µg/day on days 1-7, 28 µg/day on days 8-28 (label, R/R ALL cycle 1).
- ``all-cycle2``: 28 µg/day on days 1-28 (label, later cycles).
- ``*-bsa``: the < 45 kg variants, 5 then 15 µg/m²/day capped at 9 and 28 µg/day.

A new cycle (a break of more than 7 days, label) follows the protocol's ``next_cycle``
(``all-cycle1`` -> ``all-cycle2``; ``ssc-14d`` starts again at its own day 1). A
restart after a grade 3 adverse reaction follows ``restart_steps`` (default: the
label's 9 µg/day for 7 days, then 28; 5 then 15 µg/m²/day for per-m² protocols).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from daemon.config import BedConfig, Config, ProtocolConfig, ProtocolStep, Thresholds

DAY = timedelta(days=1)


class BsaFormula(StrEnum):
    """Body-surface-area formulas."""

    MOSTELLER = "mosteller"
    DUBOIS = "dubois"


def bsa_m2(weight_kg: float, height_cm: float, formula: BsaFormula | str) -> float:
    """Body surface area in m² from weight and height.

    Mosteller: sqrt(height_cm × weight_kg / 3600). Du Bois: 0.007184 × W^0.425 × H^0.725.
    """
    if weight_kg <= 0 or height_cm <= 0:
        raise ValueError(f"weight and height must be > 0, got {weight_kg} kg and {height_cm} cm")
    if BsaFormula(formula) is BsaFormula.MOSTELLER:
        return math.sqrt(height_cm * weight_kg / 3600.0)
    return float(0.007184 * weight_kg**0.425 * height_cm**0.725)


def _flat(day_from: int, day_to: int, dose: float) -> ProtocolStep:
    return ProtocolStep(day_from=day_from, day_to=day_to, dose_ug_per_day=dose)


def _per_m2(day_from: int, day_to: int, dose: float, cap: float) -> ProtocolStep:
    return ProtocolStep(day_from=day_from, day_to=day_to, dose_ug_per_m2_per_day=dose, max_ug_per_day=cap)


# domain.md section 0 (SSc case) and section 1 (label step-up schedule, < 45 kg dosing).
BUILTIN: Mapping[str, ProtocolConfig] = {
    "ssc-14d": ProtocolConfig(steps=[_flat(1, 7, 9.0), _flat(8, 14, 28.0)]),
    "all-cycle1": ProtocolConfig(steps=[_flat(1, 7, 9.0), _flat(8, 28, 28.0)], next_cycle="all-cycle2"),
    "all-cycle2": ProtocolConfig(steps=[_flat(1, 28, 28.0)]),
    "ssc-14d-bsa": ProtocolConfig(steps=[_per_m2(1, 7, 5.0, 9.0), _per_m2(8, 14, 15.0, 28.0)]),
    "all-cycle1-bsa": ProtocolConfig(
        steps=[_per_m2(1, 7, 5.0, 9.0), _per_m2(8, 28, 15.0, 28.0)], next_cycle="all-cycle2-bsa"
    ),
    "all-cycle2-bsa": ProtocolConfig(steps=[_per_m2(1, 28, 15.0, 28.0)]),
}

# Label, dose modifications (domain.md section 1): after CRS, neurotoxicity or another
# reaction of grade 3, restart at 9 µg/day, 28 µg/day after 7 days without recurrence
# (< 45 kg: 5 then 15 µg/m²/day). Day 366 stands for "until the plan ends".
LABEL_RESTART_FLAT = (_flat(1, 7, 9.0), _flat(8, 366, 28.0))
LABEL_RESTART_BSA = (_per_m2(1, 7, 5.0, 9.0), _per_m2(8, 366, 15.0, 28.0))


def restart_steps(protocol: ProtocolConfig) -> list[ProtocolStep]:
    """The steps after a restart following a grade 3 reaction on ``protocol``."""
    if protocol.restart_steps is not None:
        return list(protocol.restart_steps)
    per_m2 = all(step.dose_ug_per_day is None for step in protocol.steps)
    return list(LABEL_RESTART_BSA if per_m2 else LABEL_RESTART_FLAT)


@dataclass(frozen=True, slots=True)
class Step:
    """One resolved step: a flat dose over protocol days ``day_from..day_to`` inclusive."""

    day_from: int
    day_to: int
    dose_ug_per_day: float


@dataclass(frozen=True, slots=True)
class StepUp:
    """A dose increase between two adjoining steps, at ``time``."""

    time: datetime
    lower_ug_per_day: float
    higher_ug_per_day: float


@dataclass(frozen=True, slots=True)
class Schedule:
    """A protocol resolved for one bed: flat steps anchored at the protocol start."""

    name: str
    start: datetime
    steps: tuple[Step, ...]  # sorted by day, non-overlapping
    bsa_m2: float | None = None  # set when a step was dosed per m²
    stop: datetime | None = None  # an end before the last step's (a restart plan)
    # Worked out once: the dose checks read them at every tick of every bed.
    _end: datetime = field(init=False, repr=False, compare=False)
    _step_ups: tuple[StepUp, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        last = self.step_end(self.steps[-1])
        object.__setattr__(self, "_end", last if self.stop is None else min(last, self.stop))
        object.__setattr__(self, "_step_ups", self._find_step_ups())

    def protocol_day(self, now: datetime) -> int:
        """The 1-based protocol day at ``now``; 0 before the start."""
        if now < self.start:
            return 0
        return (now - self.start) // DAY + 1

    def step_at(self, now: datetime) -> Step | None:
        """The step in force at ``now``, or ``None`` (before, between or after steps)."""
        if self.stop is not None and now >= self.stop:
            return None
        day = self.protocol_day(now)
        return next((s for s in self.steps if s.day_from <= day <= s.day_to), None)

    def expected_dose_ug_per_day(self, now: datetime) -> float:
        """The protocol's dose rate at ``now`` (0 when it says not to infuse)."""
        step = self.step_at(now)
        return step.dose_ug_per_day if step is not None else 0.0

    def step_time(self, step: Step) -> datetime:
        """When ``step`` starts."""
        return self.start + (step.day_from - 1) * DAY

    def step_end(self, step: Step) -> datetime:
        """When ``step`` ends (exclusive)."""
        return self.start + step.day_to * DAY

    @property
    def end(self) -> datetime:
        """When the last step ends (or ``stop``, when earlier): the protocol's end."""
        return self._end

    def in_protocol(self, now: datetime) -> bool:
        """Whether ``now`` lies between the protocol's start and end."""
        return self.start <= now < self.end

    def step_ups(self) -> tuple[StepUp, ...]:
        """Every dose increase between adjoining steps, in time order."""
        return self._step_ups

    def _find_step_ups(self) -> tuple[StepUp, ...]:
        out: list[StepUp] = []
        for before, after in zip(self.steps, self.steps[1:], strict=False):
            if after.day_from == before.day_to + 1 and after.dose_ug_per_day > before.dose_ug_per_day:
                if self.step_time(after) >= self.end:
                    continue
                out.append(StepUp(self.step_time(after), before.dose_ug_per_day, after.dose_ug_per_day))
        return tuple(out)

    def next_step_time(self, now: datetime) -> datetime | None:
        """The start of the next step after ``now``, or the protocol's end, or ``None`` after it."""
        for step in self.steps:
            if now < self.step_time(step) < self.end:
                return self.step_time(step)
        return self.end if now < self.end else None

    def expected_total_ug(self, now: datetime) -> float:
        """The dose the protocol plans from its start up to ``now``, in µg."""
        total = 0.0
        for step in self.steps:
            begin = self.step_time(step)
            stop = min(now, self.step_end(step), self.end)
            if stop > begin:
                total += step.dose_ug_per_day * ((stop - begin) / DAY)
        return total


def protocol_config(name: str, config: Config | None = None) -> ProtocolConfig:
    """The protocol called ``name``: the site's own definition first, then the built-ins."""
    if config is not None and name in config.protocols:
        return config.protocols[name]
    try:
        return BUILTIN[name]
    except KeyError:
        known = ", ".join(sorted(set(BUILTIN) | set(config.protocols if config else ())))
        raise KeyError(f"unknown protocol '{name}' (known: {known})") from None


def resolve(
    name: str,
    protocol: ProtocolConfig,
    *,
    start: datetime,
    weight_kg: float,
    height_cm: float,
    default_bsa_formula: str = "mosteller",
) -> Schedule:
    """Resolve ``protocol`` for one patient into flat µg/day steps."""
    formula = protocol.bsa_formula or default_bsa_formula
    area: float | None = None
    steps: list[Step] = []
    for raw in sorted(protocol.steps, key=lambda s: s.day_from):
        if raw.dose_ug_per_day is not None:
            dose = raw.dose_ug_per_day
        else:
            assert raw.dose_ug_per_m2_per_day is not None  # the config validator ensures one
            area = bsa_m2(weight_kg, height_cm, formula)
            dose = raw.dose_ug_per_m2_per_day * area
            if raw.max_ug_per_day is not None:
                dose = min(dose, raw.max_ug_per_day)
        steps.append(Step(raw.day_from, raw.day_to, dose))
    return Schedule(name=name, start=start, steps=tuple(steps), bsa_m2=area)


def schedule_for(bed: BedConfig, config: Config | None = None) -> Schedule:
    """The schedule of ``bed``, from its protocol name, start, weight and height.

    ``config`` supplies site-defined protocols and the bed's thresholds (BSA formula);
    without it only built-in protocols and the default formula are known.
    """
    protocol = protocol_config(bed.protocol, config)
    thresholds = config.thresholds_for(bed.id) if config is not None else Thresholds()
    return resolve(
        bed.protocol,
        protocol,
        start=bed.protocol_start,
        weight_kg=bed.weight_kg,
        height_cm=bed.height_cm,
        default_bsa_formula=thresholds.dose.bsa_formula,
    )


def restart_schedule(
    bed: BedConfig, config: Config | None, protocol: str, *, start: datetime, stop: datetime
) -> Schedule:
    """The restart after a grade 3 reaction on ``protocol``, resolved for ``bed``: from
    ``start`` (the infusion's restart) to ``stop`` (the interrupted cycle's end, moved by
    the break)."""
    definition = protocol_config(protocol, config)
    steps = ProtocolConfig(steps=restart_steps(definition), bsa_formula=definition.bsa_formula)
    # dataclasses.replace: a schedule works out its end again (``__post_init__``).
    return dataclasses.replace(_resolve_for(bed, config, protocol, steps, start), stop=stop)


def next_cycle_protocol(name: str, config: Config | None = None) -> str:
    """The protocol of the cycle after one on ``name`` (itself unless ``next_cycle`` says)."""
    return protocol_config(name, config).next_cycle or name


def cycle_schedule(bed: BedConfig, config: Config | None, protocol: str, *, start: datetime) -> Schedule:
    """Protocol ``protocol`` resolved for ``bed`` from ``start`` (a new cycle's day 1)."""
    return _resolve_for(bed, config, protocol, protocol_config(protocol, config), start)


def _resolve_for(
    bed: BedConfig, config: Config | None, name: str, protocol: ProtocolConfig, start: datetime
) -> Schedule:
    thresholds = config.thresholds_for(bed.id) if config is not None else Thresholds()
    return resolve(
        name,
        protocol,
        start=start,
        weight_kg=bed.weight_kg,
        height_cm=bed.height_cm,
        default_bsa_formula=thresholds.dose.bsa_formula,
    )
