"""Normalised, frozen event types: the contract between sources, rules and sinks.

Every time is an aware UTC ``datetime``. Sources stamp measurements with the
device's own time (event time); ``Tick`` carries the daemon's clock, so rules
that are about absence (staleness, escalation, due checks) run on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from daemon.ids import is_ward_subject


class Metric(StrEnum):
    """Vital-sign metrics, named with their unit (the InfluxDB field names)."""

    TEMP_C = "temp_c"
    SBP_MMHG = "sbp_mmhg"
    DBP_MMHG = "dbp_mmhg"
    MAP_MMHG = "map_mmhg"
    HR_PER_MIN = "hr_per_min"
    SPO2_PCT = "spo2_pct"
    RR_PER_MIN = "rr_per_min"


class PumpState(StrEnum):
    """What a pump reports doing (NE-1000 status characters map onto these)."""

    INFUSING = "infusing"
    WITHDRAWING = "withdrawing"
    STOPPED = "stopped"
    PAUSED = "paused"
    PURGING = "purging"
    WAITING = "waiting"  # pause phase or trigger wait
    ALARM = "alarm"


class Kind(StrEnum):
    """Alarm kind, IEC 60601-1-8 / BICEPS AlertConditionKind."""

    PHYSIOLOGICAL = "physiological"
    TECHNICAL = "technical"


class Priority(StrEnum):
    """Alarm priority, IEC 60601-1-8."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        """0 for low, 1 for medium, 2 for high: for comparisons."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.LOW: 0, Priority.MEDIUM: 1, Priority.HIGH: 2}


class Health(StrEnum):
    """A source's link state."""

    CONNECTED = "connected"
    LOST = "lost"
    STALE = "stale"


OnHealth = Callable[[Health, str], Awaitable[None]]
"""A link's report of its own health, with what failed (``""`` when connected)."""


@dataclass(frozen=True, slots=True)
class VitalSample:
    """One monitor message: several metrics measured at one time at one bed."""

    ward: str
    bed: str
    device: str
    time: datetime
    values: Mapping[Metric, float]


@dataclass(frozen=True, slots=True)
class PumpReading:
    """One poll of one pump. ``None`` means the pump did not say."""

    ward: str
    bed: str
    pump: str
    time: datetime
    state: PumpState
    rate_ml_per_h: float | None
    volume_infused_ml: float | None
    alarm: str | None = None  # vendor alarm code, e.g. "S" (stall) for the NE-1000


@dataclass(frozen=True, slots=True)
class BagHung:
    """A bag announced for a bed: the concentration turns mL into µg."""

    ward: str
    bed: str
    time: datetime  # when it was hung
    bag_id: str
    concentration_ug_per_ml: float
    volume_ml: float | None = None


class Acvpu(StrEnum):
    """Consciousness scale used by NEWS2."""

    ALERT = "A"
    NEW_CONFUSION = "C"
    VOICE = "V"
    PAIN = "P"
    UNRESPONSIVE = "U"


class Handwriting(StrEnum):
    """Daily handwriting test result."""

    NORMAL = "normal"
    CHANGED = "changed"
    UNABLE = "unable"


class Reaction(StrEnum):
    """Adverse-reaction families of the label's dose-modification table (domain.md section 1)."""

    CRS = "crs"
    NEUROTOXICITY = "neurotoxicity"
    OTHER = "other"


class DeclarationKind(StrEnum):
    """What staff declare about the dose (``DoseDeclaration.kind``)."""

    REACTION = "reaction"  # an adverse reaction and its grade
    SEIZURE = "seizure"  # one seizure
    RESTART_AFTER_REACTION = "restart_after_reaction"  # the label's restart at the first step
    NEW_CYCLE = "new_cycle"  # the schedule starts again at the cycle's day 1


@dataclass(frozen=True, slots=True)
class DoseDeclaration:
    """A clinician's statement the dose rule cannot infer from the pump (validated input).

    ``reaction`` and ``grade`` are set for ``reaction`` and ``restart_after_reaction``;
    ``onset`` and ``resolved_at`` optionally date the reaction a restart follows.
    """

    kind: DeclarationKind
    reaction: Reaction | None = None
    grade: int | None = None
    onset: datetime | None = None
    resolved_at: datetime | None = None


class Seizure(StrEnum):
    """A seizure seen since the last check (ASTCT ICANS seizure domain); ``none`` clears it."""

    NONE = "none"
    CLINICAL = "clinical"  # focal or generalised, seen at the bedside
    ELECTROGRAPHIC = "electrographic"  # non-convulsive, on EEG


class SeizurePattern(StrEnum):
    """Whether a seizure came alone or repeated, and whether the patient came back in between."""

    SINGLE = "single"
    REPEATED_BACK_TO_BASELINE = "repeated_back_to_baseline"
    REPEATED_NO_BASELINE = "repeated_no_baseline"  # ASTCT grade 4


class MotorWeakness(StrEnum):
    """Deep focal motor weakness (ASTCT ICANS motor domain); ``none`` clears it."""

    NONE = "none"
    HEMIPARESIS = "hemiparesis"
    PARAPARESIS = "paraparesis"
    OTHER_DEEP_FOCAL = "other_deep_focal"


class IcpFinding(StrEnum):
    """A finding of raised intracranial pressure or cerebral oedema (ASTCT ICANS)."""

    FOCAL_OEDEMA = "focal_oedema"  # focal or local oedema on neuroimaging: grade 3
    DIFFUSE_OEDEMA = "diffuse_oedema"  # diffuse cerebral oedema on neuroimaging: grade 4
    DECEREBRATE_POSTURING = "decerebrate_posturing"
    DECORTICATE_POSTURING = "decorticate_posturing"
    CRANIAL_NERVE_VI_PALSY = "cranial_nerve_vi_palsy"
    PAPILLOEDEMA = "papilloedema"
    CUSHINGS_TRIAD = "cushings_triad"


@dataclass(frozen=True, slots=True)
class Observation:
    """A nurse's manual entry. Every field is optional: only what was observed is set.

    ``time`` is when it was observed and ``by`` who recorded it. An entry with an ``id``
    can later be replaced by one that ``corrects`` that id, or removed by one that
    ``withdraws`` it (a withdrawal records nothing else).
    """

    ward: str
    bed: str
    time: datetime
    by: str | None = None
    id: str | None = None
    corrects: str | None = None  # the id of the entry this one replaces
    withdraws: str | None = None  # the id of the entry this one removes
    o2_flow_l_per_min: float | None = None
    o2_device: str | None = None  # "air", "nasal_cannula", "high_flow", "facemask", "cpap", ...
    vasopressors: int | None = None  # how many run now, vasopressin not counted
    vasopressin: bool | None = None  # whether vasopressin runs too (ASTCT does not count it)
    acvpu: Acvpu | None = None
    antipyretic_given: bool | None = None
    corticosteroid_given: bool | None = None
    anti_cytokine_given: bool | None = None  # tocilizumab or another anti-cytokine therapy
    seizure: Seizure | None = None
    seizure_pattern: SeizurePattern | None = None
    seizure_over_5_min: bool | None = None
    seizure_resolved: bool | None = None  # clinical: rapidly; EEG: with intervention
    motor_weakness: MotorWeakness | None = None
    raised_icp: tuple[IcpFinding, ...] | None = None  # () records that none was found
    handwriting: Handwriting | None = None
    ice_score: int | None = None
    dose_declaration: DoseDeclaration | None = None  # read by the dose rule only


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """A source's link changed state; rules turn a lasting loss into a technical alert."""

    ward: str
    bed: str
    source: str  # e.g. "pump[p1]", "monitor"
    time: datetime
    health: Health
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Tick:
    """The daemon's clock, delivered periodically so that absence can be judged.

    ``beds``: the beds it is for (``None``: every bed, of which the rule engine steps
    those due by its time: ``RuleEngine.due_beds``). When many beds are due, a tick is
    delivered in slices of beds, with the inputs that arrive meanwhile in between
    (``daemon.app``).
    """

    time: datetime
    beds: tuple[str, ...] | None = None


Event = VitalSample | PumpReading | BagHung | Observation | SourceHealth | Tick


@dataclass(frozen=True, slots=True)
class Text:
    """A human-readable message in every supported language (keys: "en", "fr")."""

    en: str
    fr: str

    def get(self, language: str) -> str:
        """The message in ``language``, English when that language is missing."""
        return self.fr if language == "fr" else self.en


def place(ward: str, bed: str, *, at: bool = False) -> Text:
    """Where, in words: ``bed 3`` (``at``: ``at bed 3``), or for a ward's own alert
    (``daemon.ids.ward_subject``) or no bed, ``ward haem`` (``in ward haem``)."""
    if not bed or is_ward_subject(bed):
        return (
            Text(f"in ward {ward}", f"dans le service {ward}")
            if at
            else Text(f"ward {ward}", f"service {ward}")
        )
    return Text(f"at bed {bed}", f"au lit {bed}") if at else Text(f"bed {bed}", f"lit {bed}")


@dataclass(frozen=True, slots=True)
class AlertCandidate:
    """What a rule says about one condition at one bed at one time.

    ``present=True`` raises or updates the condition; ``present=False`` says it has
    cleared. The alert engine turns candidates into alerts with a lifecycle: rules
    never track acknowledgement, latching or escalation.
    """

    condition: str  # e.g. "FEVER", "PUMP_COMM_LOST"
    ward: str
    bed: str
    time: datetime
    present: bool
    kind: Kind = Kind.PHYSIOLOGICAL
    priority: Priority = Priority.MEDIUM
    value: float | None = None
    unit: str | None = None
    message: Text | None = None
    details: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"grade": 2}


Emit = Callable[[Event], Awaitable[None]]
"""How a source hands an event to the pipeline; awaiting it applies back-pressure."""
