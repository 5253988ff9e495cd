"""CRS and neurotoxicity watch: ``CRS_SUSPECTED``, ``ICANS_SUSPECTED``, ``NEURO_CHECK_DUE``.

Grades follow ASTCT (Lee 2019, domain.md section 2) and are *suggestions* for the
clinician: messages say "suggests" and "consider", and quote the label's action for
that grade (domain.md section 1) as a reminder, never as an order.

CRS grade, from the latest state of the bed:

- fever: the vital-sign rule's ``FEVER`` condition (same noise control); once an
  antipyretic or a corticosteroid is recorded, fever is no longer required for
  ``fever_masking_s`` (ASTCT: treatment masks fever; its duration is a site choice);
- haemodynamics: ``HYPOTENSION`` without vasopressor 2, one vasopressor 3, several 4;
- oxygen (the nurses' observations): low-flow nasal cannula <= 6 L/min or blow-by 2;
  high flow > 6 L/min, facemask, non-rebreather or Venturi 3; CPAP, BiPAP or
  ventilation 4;
- grade = the more severe of haemodynamics and oxygen, at least 1 with fever.

Late vital samples are judged by the fever and hypotension tracks exactly as the
vital-sign rule judges them (``fever_late_s``, ``hypotension_late_s``; see
``daemon.vitals.judge``): when a late sample changes a track, the grade is set again
at the time of that change, and the candidate carries ``details["late_s"]`` and a
note. Observations are taken as the latest of each kind, whenever they arrive.

ICANS grade: the most severe of the ICE score (10: none, 7-9: 1, 3-6: 2, 0-2: 3,
0 and unresponsive: 4) and consciousness. ACVPU is the only consciousness scale the
ward records; it is read as: voice = "wakes to voice" (2), pain = "wakes only to
touch" (3), unresponsive (4). New confusion and a changed or impossible handwriting
test (the writing item of ICE, domain.md section 0) suggest at least grade 1 until
a later ICE score supersedes them. These readings of ACVPU are this module's
interpretation, not ASTCT text.

Priorities (IEC 60601-1-8, domain.md section 4): grade 1 medium (prompt review of a
reversible state); grade 2 and above high (label actions start at grade 3, and
grade 2 can progress to organ injury). ``NEURO_CHECK_DUE`` is a low-priority
technical reminder.

The nurses' JSON entries are validated by ``daemon.vitals.parse_observation``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from daemon.config import BedConfig, VitalThresholds
from daemon.events import (
    Acvpu,
    AlertCandidate,
    BagHung,
    Event,
    Handwriting,
    Health,
    Kind,
    Observation,
    Priority,
    PumpReading,
    PumpState,
    SourceHealth,
    Text,
    Tick,
    VitalSample,
)
from daemon.numfmt import fmt
from daemon.protocols import Schedule
from daemon.timefmt import iso, iso_or_none, parse_iso_or_none
from daemon.vitals import (
    METRICS,
    Change,
    Condition,
    Track,
    Transition,
    classify,
    dump_track,
    interrupt,
    judge,
    late_note,
    load_track,
    noise_for,
    probe_metric,
)

CRS_SUSPECTED = "CRS_SUSPECTED"
ICANS_SUSPECTED = "ICANS_SUSPECTED"
NEURO_CHECK_DUE = "NEURO_CHECK_DUE"

# Oxygen devices a nurse may record, by the ASTCT CRS grade they suggest on their own.
O2_DEVICE_GRADE: Mapping[str, int] = {
    "air": 0,
    "nasal_cannula": 2,  # low flow (<= 6 L/min); above that it counts as high flow
    "blow_by": 2,
    "high_flow": 3,
    "facemask": 3,
    "non_rebreather": 3,
    "venturi": 3,
    "cpap": 4,
    "bipap": 4,
    "ventilator": 4,
}
LOW_FLOW_MAX_L_PER_MIN = 6.0  # ASTCT low-flow nasal cannula limit, domain.md section 2


def grade_priority(grade: int) -> Priority:
    """Grade 1: medium; grade 2 and above: high."""
    return Priority.MEDIUM if grade <= 1 else Priority.HIGH


def _grade_candidate(
    condition: str, bed: BedConfig, time: datetime, *, present: bool, grade: int, message: Text
) -> AlertCandidate:
    """CRS_SUSPECTED or ICANS_SUSPECTED at ``grade``; the grade sets the priority."""
    return AlertCandidate(
        condition=condition,
        ward=bed.ward,
        bed=bed.id,
        time=time,
        present=present,
        kind=Kind.PHYSIOLOGICAL,
        priority=grade_priority(grade),
        value=float(grade),
        unit="{grade}",
        message=message,
        details={"grade": grade} if present else {},
    )


def oxygen_grade(device: str | None, flow_l_per_min: float | None) -> int:
    """The CRS grade suggested by the oxygen support alone (0: none)."""
    if device == "air":
        return 0
    grade = O2_DEVICE_GRADE.get(device, 0) if device is not None else 0
    if flow_l_per_min is not None and flow_l_per_min > 0:
        grade = max(grade, 3 if flow_l_per_min > LOW_FLOW_MAX_L_PER_MIN else 2)
    return grade


def haemodynamic_grade(hypotension: bool, vasopressors: int | None) -> int:
    """The CRS grade suggested by blood pressure and vasopressors alone (0: none)."""
    if vasopressors is not None and vasopressors >= 2:
        return 4
    if vasopressors == 1:
        return 3
    return 2 if hypotension else 0


def crs_grade(fever: bool, fever_masked: bool, haemodynamic: int, oxygen: int) -> int:
    """The suggested ASTCT CRS grade (0: no CRS suggested)."""
    worst = max(haemodynamic, oxygen)
    if fever:
        return max(1, worst)
    return worst if fever_masked else 0


def ice_grade(ice_score: int, acvpu: Acvpu | None) -> int:
    """The ICANS grade suggested by an ICE score (10: 0)."""
    if ice_score >= 10:
        return 0
    if ice_score >= 7:
        return 1
    if ice_score >= 3:
        return 2
    if ice_score == 0 and acvpu is Acvpu.UNRESPONSIVE:
        return 4
    return 3


CONSCIOUSNESS_GRADE: Mapping[Acvpu, int] = {
    Acvpu.ALERT: 0,
    Acvpu.NEW_CONFUSION: 1,
    Acvpu.VOICE: 2,
    Acvpu.PAIN: 3,
    Acvpu.UNRESPONSIVE: 4,
}

_CRS_LABEL: Mapping[int, tuple[str, str]] = {
    1: (
        "The label has no rule for grade 1; an ASH review table suggests symptomatic care.",
        "Le RCP ne prévoit rien au grade 1 ; une revue de l'ASH propose un traitement symptomatique.",
    ),
    2: (
        "The label has no rule for grade 2; an ASH review table suggests considering an interruption.",
        "Le RCP ne prévoit rien au grade 2 ; une revue de l'ASH propose d'envisager une interruption.",
    ),
    3: (
        "Label, CRS grade 3: interrupt; dexamethasone 8 mg every 8 h for up to 3 days, then "
        "taper over 4 days; once resolved, restart at 9 µg/day, 28 µg/day after 7 days "
        "without recurrence.",
        "RCP, SRC grade 3 : interrompre ; dexaméthasone 8 mg toutes les 8 h jusqu'à 3 jours, "
        "puis décroissance sur 4 jours ; après résolution, reprise à 9 µg/jour, 28 µg/jour "
        "après 7 jours sans récidive.",
    ),
    4: (
        "Label, CRS grade 4: discontinue permanently; dexamethasone as for grade 3.",
        "RCP, SRC grade 4 : arrêt définitif ; dexaméthasone comme au grade 3.",
    ),
}

_ICANS_LABEL: Mapping[int, tuple[str, str]] = {
    1: (
        "The label has no rule for neurotoxicity grade 1.",
        "Le RCP ne prévoit rien pour une neurotoxicité de grade 1.",
    ),
    2: (
        "Whether the current label has a neurotoxicity grade 2 rule is unconfirmed.",
        "L'existence d'une règle du RCP pour une neurotoxicité de grade 2 n'est pas confirmée.",
    ),
    3: (
        "Label, neurotoxicity grade 3: withhold until grade 1 or less for at least 3 days, "
        "then restart at 9 µg/day, 28 µg/day after 7 days.",
        "RCP, neurotoxicité grade 3 : suspendre jusqu'à un grade 1 ou moins pendant au moins "
        "3 jours, puis reprendre à 9 µg/jour, 28 µg/jour après 7 jours.",
    ),
    4: (
        "Label, neurotoxicity grade 4: discontinue permanently.",
        "RCP, neurotoxicité grade 4 : arrêt définitif.",
    ),
}


# --------------------------------------------------------------------------- CRS


@dataclass(frozen=True, slots=True)
class CrsState:
    """What the CRS rule remembers about one bed."""

    fever: Track = field(default_factory=Track)
    hypotension: Track = field(default_factory=Track)
    vasopressors: tuple[int, datetime] | None = None
    o2_device: tuple[str, datetime] | None = None
    o2_flow_l_per_min: tuple[float, datetime] | None = None
    treated_at: datetime | None = None  # latest antipyretic or corticosteroid
    rate_ml_per_h: float | None = None  # latest pump rate while infusing (0 when not)
    concentration_ug_per_ml: float | None = None  # latest bag hung
    grade: int = 0  # the grade last announced


class CrsRule:
    """``CRS_SUSPECTED`` with a suggested ASTCT grade and the infusion context."""

    name = "crs"

    def __init__(
        self,
        thresholds: VitalThresholds,
        bed: BedConfig,
        schedule: Schedule,
        concentration_ug_per_ml: float | None = None,
    ) -> None:
        """Watch ``bed``; ``schedule`` gives the protocol day and expected dose;
        ``concentration_ug_per_ml`` is that of a bag the config says is on the line."""
        self.th = thresholds
        self.bed = bed
        self.schedule = schedule
        self._initial_concentration = concentration_ug_per_ml
        self._fever_noise = noise_for(Condition.FEVER, thresholds)
        self._hypotension_noise = noise_for(Condition.HYPOTENSION, thresholds)

    def initial(self) -> CrsState:
        """Nothing known but the configured bag, if any."""
        return CrsState(concentration_ug_per_ml=self._initial_concentration)

    def step(self, state: CrsState, event: Event, now: datetime) -> tuple[CrsState, Sequence[AlertCandidate]]:
        """Update what is known about the bed, then re-grade."""
        if isinstance(event, VitalSample):
            before = state
            state, late = self._sample(state, event, now)
            if late:
                return self._late(before, state, late)
            return self._grade(state, event.time)
        if isinstance(event, Observation):
            state = _observe(state, event)
            return self._grade(state, event.time)
        if isinstance(event, Tick):
            # Only the masking window can change with time alone.
            return self._grade(state, event.time)
        if isinstance(event, PumpReading):
            if event.state is PumpState.INFUSING:
                return replace(state, rate_ml_per_h=event.rate_ml_per_h), ()
            return replace(state, rate_ml_per_h=0.0), ()
        if isinstance(event, BagHung):
            return replace(state, concentration_ug_per_ml=event.concentration_ug_per_ml), ()
        if isinstance(event, SourceHealth):
            metric = probe_metric(event)
            if metric is not None and event.health is not Health.CONNECTED:
                if metric in METRICS[Condition.FEVER]:
                    state = replace(state, fever=interrupt(state.fever, event.time))
                if metric in METRICS[Condition.HYPOTENSION]:
                    state = replace(state, hypotension=interrupt(state.hypotension, event.time))
            return state, ()
        return state, ()

    def _sample(
        self, state: CrsState, event: VitalSample, now: datetime
    ) -> tuple[CrsState, list[tuple[Condition, Change]]]:
        """The tracks after ``event``, and the changes late data made to them."""
        late: list[tuple[Condition, Change]] = []
        fever = classify(Condition.FEVER, event.values, self.th)
        if fever is not None:
            track, changes = judge(state.fever, fever[0], event.time, fever[1], self._fever_noise, now=now)
            state = replace(state, fever=track)
            late.extend((Condition.FEVER, c) for c in changes if c.late_s is not None)
        low = classify(Condition.HYPOTENSION, event.values, self.th)
        if low is not None:
            track, changes = judge(
                state.hypotension, low[0], event.time, low[1], self._hypotension_noise, now=now
            )
            state = replace(state, hypotension=track)
            late.extend((Condition.HYPOTENSION, c) for c in changes if c.late_s is not None)
        return state, late

    def _late(
        self, before: CrsState, after: CrsState, late: list[tuple[Condition, Change]]
    ) -> tuple[CrsState, list[AlertCandidate]]:
        """Grade again at each change late data made, in time order, marked late."""
        fever, hypotension = before.fever.active, before.hypotension.active
        fever_value, low_value = after.fever.value, after.hypotension.value
        state = replace(after, grade=before.grade)
        out: list[AlertCandidate] = []
        for condition, change in sorted(late, key=lambda item: item[1].time):
            active = change.transition is Transition.RAISED
            if condition is Condition.FEVER:
                fever, fever_value = active, change.value
            else:
                hypotension, low_value = active, change.value
            view = replace(
                state,
                fever=replace(after.fever, active=fever, value=fever_value),
                hypotension=replace(after.hypotension, active=hypotension, value=low_value),
            )
            view, candidates = self._grade(view, change.time)
            state = replace(state, grade=view.grade)
            out.extend(late_note(c, change.late_s) for c in candidates)
        return state, out

    def masked(self, state: CrsState, time: datetime) -> bool:
        """Whether a recent antipyretic or corticosteroid makes fever no longer required."""
        if state.treated_at is None or time < state.treated_at:
            return False
        return (time - state.treated_at).total_seconds() <= self.th.fever_masking_s

    def _grade(self, state: CrsState, time: datetime) -> tuple[CrsState, list[AlertCandidate]]:
        vasopressors = state.vasopressors[0] if state.vasopressors else None
        device = state.o2_device[0] if state.o2_device else None
        flow = state.o2_flow_l_per_min[0] if state.o2_flow_l_per_min else None
        grade = crs_grade(
            state.fever.active,
            self.masked(state, time),
            haemodynamic_grade(state.hypotension.active, vasopressors),
            oxygen_grade(device, flow),
        )
        if grade == state.grade:
            return state, []
        new = replace(state, grade=grade)
        if grade == 0:
            message = Text("CRS criteria no longer met.", "Les critères de SRC ne sont plus remplis.")
            return new, [
                _grade_candidate(
                    CRS_SUSPECTED, self.bed, time, present=False, grade=state.grade, message=message
                )
            ]
        return new, [
            _grade_candidate(
                CRS_SUSPECTED, self.bed, time, present=True, grade=grade, message=self._message(new, time)
            )
        ]

    def current_ug_per_day(self, state: CrsState) -> float | None:
        """The dose rate now from the latest pump rate and bag: mL/h × µg/mL × 24."""
        if state.rate_ml_per_h is None or state.concentration_ug_per_ml is None:
            return None
        return state.rate_ml_per_h * state.concentration_ug_per_ml * 24.0

    def _message(self, state: CrsState, time: datetime) -> Text:
        grade = state.grade
        en: list[str] = []
        fr: list[str] = []
        if state.fever.active and state.fever.value is not None:
            en.append(f"fever {fmt(state.fever.value, 1)} °C")
            fr.append(f"fièvre {fmt(state.fever.value, 1, 'fr')} °C")
        elif self.masked(state, time):
            en.append("no fever required after an antipyretic or corticosteroid")
            fr.append("fièvre non exigée après antipyrétique ou corticoïde")
        vasopressors = state.vasopressors[0] if state.vasopressors else 0
        if vasopressors:
            en.append(f"{vasopressors} vasopressor(s)")
            fr.append(f"{vasopressors} vasopresseur(s)")
        elif state.hypotension.active and state.hypotension.value is not None:
            en.append(f"hypotension (systolic {fmt(state.hypotension.value, 0)} mmHg) without vasopressor")
            fr.append(f"hypotension (systolique {fmt(state.hypotension.value, 0)} mmHg) sans vasopresseur")
        device = state.o2_device[0] if state.o2_device else None
        flow = state.o2_flow_l_per_min[0] if state.o2_flow_l_per_min else None
        if oxygen_grade(device, flow):
            what = (device or "O2") + (f" {fmt(flow, 1)} L/min" if flow else "")
            what_fr = (device or "O2") + (f" {fmt(flow, 1, 'fr')} L/min" if flow else "")
            en.append(f"oxygen: {what}")
            fr.append(f"oxygène : {what_fr}")
        day = self.schedule.protocol_day(time)
        context_en = [f"protocol day {day}"] if day else ["before the protocol start"]
        context_fr = [f"jour {day} du protocole"] if day else ["avant le début du protocole"]
        if day and self.schedule.in_protocol(time):
            expected = self.schedule.expected_dose_ug_per_day(time)
            context_en.append(f"planned {fmt(expected, 1)} µg/day")
            context_fr.append(f"prévu {fmt(expected, 1, 'fr')} µg/jour")
        current = self.current_ug_per_day(state)
        if current is not None:
            context_en.append(f"infusing {fmt(current, 1)} µg/day")
            context_fr.append(f"perfusion {fmt(current, 1, 'fr')} µg/jour")
        label_en, label_fr = _CRS_LABEL[grade]
        return Text(
            f"Suggests CRS grade {grade} (ASTCT): {'; '.join(en)}. Consider medical review. "
            f"Infusion: {', '.join(context_en)}. Reminder, not an order: {label_en}",
            f"Évoque un SRC de grade {grade} (ASTCT) : {' ; '.join(fr)}. Envisager un avis "
            f"médical. Perfusion : {', '.join(context_fr)}. Rappel, pas une prescription : "
            f"{label_fr}",
        )

    def dump(self, state: CrsState) -> Mapping[str, Any]:
        """The state as JSON-compatible data."""
        return {
            "fever": dump_track(state.fever),
            "hypotension": dump_track(state.hypotension),
            "vasopressors": _dump_pair(state.vasopressors),
            "o2_device": _dump_pair(state.o2_device),
            "o2_flow_l_per_min": _dump_pair(state.o2_flow_l_per_min),
            "treated_at": iso_or_none(state.treated_at),
            "rate_ml_per_h": state.rate_ml_per_h,
            "concentration_ug_per_ml": state.concentration_ug_per_ml,
            "grade": state.grade,
        }

    def load(self, data: Mapping[str, Any]) -> CrsState:
        """A state from ``dump``'s output."""
        vaso = _load_pair(data.get("vasopressors"))
        device = _load_pair(data.get("o2_device"))
        flow = _load_pair(data.get("o2_flow_l_per_min"))
        rate = data.get("rate_ml_per_h")
        conc = data.get("concentration_ug_per_ml")
        return CrsState(
            fever=load_track(data["fever"]) if "fever" in data else Track(),
            hypotension=load_track(data["hypotension"]) if "hypotension" in data else Track(),
            vasopressors=None if vaso is None else (int(vaso[0]), vaso[1]),
            o2_device=None if device is None else (str(device[0]), device[1]),
            o2_flow_l_per_min=None if flow is None else (float(flow[0]), flow[1]),
            treated_at=parse_iso_or_none(data.get("treated_at")),
            rate_ml_per_h=None if rate is None else float(rate),
            concentration_ug_per_ml=None if conc is None else float(conc),
            grade=int(data.get("grade", 0)),
        )


def _newer(known: tuple[Any, datetime] | None, time: datetime) -> bool:
    return known is None or known[1] <= time


def _observe(state: CrsState, obs: Observation) -> CrsState:
    if obs.vasopressors is not None and _newer(state.vasopressors, obs.time):
        state = replace(state, vasopressors=(obs.vasopressors, obs.time))
    if obs.o2_device is not None and _newer(state.o2_device, obs.time):
        state = replace(state, o2_device=(obs.o2_device, obs.time))
        if obs.o2_device == "air" and obs.o2_flow_l_per_min is None:
            state = replace(state, o2_flow_l_per_min=(0.0, obs.time))
    if obs.o2_flow_l_per_min is not None and _newer(state.o2_flow_l_per_min, obs.time):
        state = replace(state, o2_flow_l_per_min=(obs.o2_flow_l_per_min, obs.time))
    if (obs.antipyretic_given or obs.corticosteroid_given) and (
        state.treated_at is None or state.treated_at < obs.time
    ):
        state = replace(state, treated_at=obs.time)
    return state


def _dump_pair(pair: tuple[Any, datetime] | None) -> list[Any] | None:
    return None if pair is None else [pair[0], iso(pair[1])]


def _load_pair(data: Any) -> tuple[Any, datetime] | None:
    if not data:
        return None
    when = parse_iso_or_none(data[1])
    return None if when is None else (data[0], when)


# --------------------------------------------------------------------------- ICANS


@dataclass(frozen=True, slots=True)
class IcansState:
    """The latest result of each neurological check, with its time."""

    ice_score: tuple[int, datetime] | None = None
    acvpu: tuple[Acvpu, datetime] | None = None
    handwriting: tuple[Handwriting, datetime] | None = None
    grade: int = 0  # the grade last announced


def icans_grade(state: IcansState) -> int:
    """The suggested ICANS grade from the latest checks (0: none suggested)."""
    acvpu = state.acvpu[0] if state.acvpu else None
    grade = CONSCIOUSNESS_GRADE[acvpu] if acvpu is not None else 0
    if state.ice_score is not None:
        grade = max(grade, ice_grade(state.ice_score[0], acvpu))
    if state.handwriting is not None and state.handwriting[0] is not Handwriting.NORMAL:
        # The ICE score includes a writing item: a later score supersedes the test.
        superseded = state.ice_score is not None and state.ice_score[1] > state.handwriting[1]
        if not superseded:
            grade = max(grade, 1)
    return grade


class IcansRule:
    """``ICANS_SUSPECTED`` from ICE scores, consciousness and the handwriting test."""

    name = "icans"

    def __init__(self, bed: BedConfig) -> None:
        """Watch ``bed``."""
        self.bed = bed

    def initial(self) -> IcansState:
        """No check recorded."""
        return IcansState()

    def step(
        self, state: IcansState, event: Event, now: datetime
    ) -> tuple[IcansState, Sequence[AlertCandidate]]:
        """Take the checks an observation carries, then re-grade."""
        if not isinstance(event, Observation):
            return state, ()
        t = event.time
        if event.ice_score is not None and _newer(state.ice_score, t):
            state = replace(state, ice_score=(event.ice_score, t))
        if event.acvpu is not None and _newer(state.acvpu, t):
            state = replace(state, acvpu=(event.acvpu, t))
        if event.handwriting is not None and _newer(state.handwriting, t):
            state = replace(state, handwriting=(event.handwriting, t))
        grade = icans_grade(state)
        if grade == state.grade:
            return state, ()
        previous = state.grade
        state = replace(state, grade=grade)
        if grade == 0:
            message = Text("Neurological checks back to normal.", "Examens neurologiques redevenus normaux.")
            return state, (
                _grade_candidate(
                    ICANS_SUSPECTED, self.bed, t, present=False, grade=previous, message=message
                ),
            )
        return state, (
            _grade_candidate(
                ICANS_SUSPECTED, self.bed, t, present=True, grade=grade, message=_icans_message(state)
            ),
        )

    def dump(self, state: IcansState) -> Mapping[str, Any]:
        """The state as JSON-compatible data."""
        return {
            "ice_score": _dump_pair(state.ice_score),
            "acvpu": None if state.acvpu is None else [state.acvpu[0].value, iso(state.acvpu[1])],
            "handwriting": None
            if state.handwriting is None
            else [state.handwriting[0].value, iso(state.handwriting[1])],
            "grade": state.grade,
        }

    def load(self, data: Mapping[str, Any]) -> IcansState:
        """A state from ``dump``'s output."""
        ice = _load_pair(data.get("ice_score"))
        acvpu = _load_pair(data.get("acvpu"))
        hand = _load_pair(data.get("handwriting"))
        return IcansState(
            ice_score=None if ice is None else (int(ice[0]), ice[1]),
            acvpu=None if acvpu is None else (Acvpu(acvpu[0]), acvpu[1]),
            handwriting=None if hand is None else (Handwriting(hand[0]), hand[1]),
            grade=int(data.get("grade", 0)),
        )


def _icans_message(state: IcansState) -> Text:
    en: list[str] = []
    fr: list[str] = []
    if state.ice_score is not None:
        en.append(f"ICE score {state.ice_score[0]}/10")
        fr.append(f"score ICE {state.ice_score[0]}/10")
    if state.acvpu is not None and state.acvpu[0] is not Acvpu.ALERT:
        en.append(f"consciousness {state.acvpu[0].value} (ACVPU)")
        fr.append(f"conscience {state.acvpu[0].value} (ACVPU)")
    if state.handwriting is not None and state.handwriting[0] is not Handwriting.NORMAL:
        en.append(f"handwriting test {state.handwriting[0].value}")
        fr.append(
            "test d'écriture " + ("modifié" if state.handwriting[0] is Handwriting.CHANGED else "impossible")
        )
    label_en, label_fr = _ICANS_LABEL[state.grade]
    ice_missing = state.ice_score is None
    return Text(
        f"Suggests ICANS grade {state.grade}{' or more' if ice_missing else ''} (ASTCT): "
        f"{'; '.join(en)}. Consider medical review"
        + (" and a full ICE assessment" if ice_missing else "")
        + f". Reminder, not an order: {label_en}",
        f"Évoque une neurotoxicité (ICANS) de grade {state.grade}"
        f"{' ou plus' if ice_missing else ''} (ASTCT) : {' ; '.join(fr)}. Envisager un avis "
        "médical"
        + (" et un score ICE complet" if ice_missing else "")
        + f". Rappel, pas une prescription : {label_fr}",
    )


# --------------------------------------------------------------------------- neuro check


@dataclass(frozen=True, slots=True)
class NeuroCheckState:
    """When the last handwriting test or ICE score was taken, and whether one is due."""

    last_check: datetime | None = None
    due: bool = False


class NeuroCheckRule:
    """``NEURO_CHECK_DUE`` when a bed on protocol has had no neurological check lately."""

    name = "neuro_check"

    def __init__(self, thresholds: VitalThresholds, bed: BedConfig, schedule: Schedule) -> None:
        """Remind every ``neuro_check_interval_s`` while ``schedule`` is running."""
        self.th = thresholds
        self.bed = bed
        self.schedule = schedule

    def initial(self) -> NeuroCheckState:
        """No check recorded."""
        return NeuroCheckState()

    def step(
        self, state: NeuroCheckState, event: Event, now: datetime
    ) -> tuple[NeuroCheckState, Sequence[AlertCandidate]]:
        """Record checks from observations; judge absence on ticks (daemon time)."""
        if isinstance(event, Observation):
            if event.handwriting is None and event.ice_score is None:
                return state, ()
            last = event.time if state.last_check is None else max(state.last_check, event.time)
            new = replace(state, last_check=last)
            if state.due:
                return replace(new, due=False), (
                    self._candidate(
                        event.time,
                        present=False,
                        message=Text("Neurological check recorded.", "Examen neurologique saisi."),
                    ),
                )
            return new, ()
        if not isinstance(event, Tick) or state.due or not self.schedule.in_protocol(event.time):
            return state, ()
        since = state.last_check or self.schedule.start
        hours = (event.time - since).total_seconds() / 3600.0
        if hours * 3600.0 < self.th.neuro_check_interval_s:
            return state, ()
        what = "since the protocol start" if state.last_check is None else "since the last one"
        what_fr = "depuis le début du protocole" if state.last_check is None else "depuis le dernier"
        return replace(state, due=True), (
            self._candidate(
                event.time,
                present=True,
                message=Text(
                    f"Neurological check due: no handwriting test or ICE score for "
                    f"{fmt(hours, 0)} h ({what}).",
                    f"Examen neurologique à faire : ni test d'écriture ni score ICE depuis "
                    f"{fmt(hours, 0)} h ({what_fr}).",
                ),
            ),
        )

    def _candidate(self, time: datetime, *, present: bool, message: Text) -> AlertCandidate:
        return AlertCandidate(
            condition=NEURO_CHECK_DUE,
            ward=self.bed.ward,
            bed=self.bed.id,
            time=time,
            present=present,
            kind=Kind.TECHNICAL,
            priority=Priority.LOW,
            message=message,
        )

    def dump(self, state: NeuroCheckState) -> Mapping[str, Any]:
        """The state as JSON-compatible data."""
        return {"last_check": iso_or_none(state.last_check), "due": state.due}

    def load(self, data: Mapping[str, Any]) -> NeuroCheckState:
        """A state from ``dump``'s output."""
        return NeuroCheckState(parse_iso_or_none(data.get("last_check")), bool(data.get("due", False)))
