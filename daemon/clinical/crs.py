"""CRS and neurotoxicity watch: ``CRS_SUSPECTED``, ``ICANS_SUSPECTED``, ``NEURO_CHECK_DUE``.

Grades follow ASTCT (Lee 2019, domain.md section 2) and are *suggestions* for the
clinician: messages say "suggests" and "consider", and quote the label's action for
that grade (domain.md section 1) as a reminder, never as an order.

CRS grade, from the latest state of the bed:

- fever: the vital-sign rule's ``FEVER`` condition (same noise control); once an
  antipyretic, a corticosteroid or an anti-cytokine therapy (tocilizumab) is
  recorded, fever is no longer required for ``fever_masking_s`` (ASTCT: once
  antipyretic or anti-cytokine therapy is started, fever is no longer required; the
  duration is a site choice);
- haemodynamics: ``HYPOTENSION`` without vasopressor 2, one vasopressor with or without
  vasopressin 3, several vasopressors 4. Vasopressin is recorded apart and never
  counted (ASTCT: "multiple vasopressors (excluding vasopressin)"). Vasopressin alone
  counts as one vasopressor (grade 3): ASTCT does not state this case; assumption;
- oxygen (the nurses' observations): low-flow nasal cannula <= 6 L/min or blow-by 2;
  high flow > 6 L/min, facemask, non-rebreather or Venturi 3; CPAP, BiPAP or
  ventilation 4;
- grade = the more severe of haemodynamics and oxygen, at least 1 with fever.

The fever and hypotension tracks are the vital-sign rule's: through the engine this
rule reads that rule's state and takes its tracks (``CrsRule.step_after``), and alone
it judges the samples exactly as that rule does (``fever_late_s``,
``hypotension_late_s``; see ``daemon.clinical.vitals.judge``).
Late vital samples: when a late sample changes a track, the grade is set again
at the time of that change, and the candidate carries ``details["late_s"]`` and a
note. The message and the basis name the pressure behind a hypotension: systolic, or
the mean arterial pressure of a monitor that sends no systolic (``basis`` ``measure``).
Observations are taken as the latest of each kind, whenever they arrive.

ICANS grade: the most severe of its domains, each able to set the grade on its own:

- ICE score (10: none, 7-9: 1, 3-6: 2, 0-2: 3, 0 and unresponsive: 4);
- consciousness. ACVPU is the only consciousness scale the ward records; it is read
  as: voice = "wakes to voice" (2), pain = "wakes only to touch" (3), unresponsive
  (4). New confusion and a changed or impossible handwriting test (the writing item
  of ICE, domain.md section 0) suggest at least grade 1 until a later ICE score
  supersedes them. These readings of ACVPU are this module's interpretation, not
  ASTCT text;
- seizure: any clinical seizure that resolves rapidly, or non-convulsive seizures on
  EEG that resolve with intervention, 3; a prolonged seizure (> 5 min) or repeated
  seizures without return to baseline in between, 4. Assumptions where ASTCT is
  silent: a seizure not (yet) resolved that is not known to last > 5 min, and
  repeated seizures with return to baseline in between, are 3 (grade 4 needs one of
  its two stated conditions); the message says a seizure beyond 5 min makes it 4;
- motor: deep focal motor weakness (hemiparesis, paraparesis) 4;
- raised intracranial pressure / cerebral oedema: focal or local oedema on imaging
  3; diffuse cerebral oedema, decerebrate or decorticate posturing, cranial nerve VI
  palsy, papilloedema or Cushing's triad 4.

A seizure, a motor finding or an ICP finding stays in the grade until a later entry
records ``none`` (``[]`` for ICP): they are events, and only a person can say the
patient is back to baseline.

Who recorded what and when: the rules keep the nurses' entries in a
``daemon.clinical.chart.Chart``, so a correction replaces an entry and a withdrawal removes it
and the grade follows. Alert details carry ``basis`` (the domains that set the grade,
each with its value and who recorded it when) and, when the transition follows a
correction or a withdrawal, ``change`` (which id, by whom, when).

Priorities (IEC 60601-1-8, domain.md section 4): grade 1 medium (prompt review of a
reversible state); grade 2 and above high (label actions start at grade 3, and
grade 2 can progress to organ injury). ``NEURO_CHECK_DUE`` is a low-priority
technical reminder.

The nurses' JSON entries are validated by ``daemon.clinical.observations``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from daemon.clinical.chart import Chart, Entry, change_of, dump_chart, legacy_entry, load_chart, record
from daemon.clinical.protocols import Schedule
from daemon.clinical.verdicts import as_judged
from daemon.clinical.vitals import (
    EMPTY_TRACK,
    METRICS,
    Change,
    Condition,
    Judged,
    Track,
    Transition,
    VitalsState,
    classify_measured,
    dump_judged,
    dump_judged_entries,
    dump_track,
    in_order,
    interrupt,
    judge,
    late_note,
    load_judged,
    load_track,
    noise_for,
    probe_metric,
)
from daemon.config import BedConfig, VitalThresholds
from daemon.events import (
    Acvpu,
    AlertCandidate,
    BagHung,
    Event,
    Handwriting,
    Health,
    IcpFinding,
    Kind,
    Metric,
    MotorWeakness,
    Observation,
    Priority,
    PumpReading,
    PumpState,
    Seizure,
    SeizurePattern,
    SourceHealth,
    Text,
    Tick,
    VitalSample,
)
from daemon.frozen import replace
from daemon.numfmt import fmt
from daemon.rules import IDLE_FOREVER, idle_before, idle_until_edge
from daemon.timefmt import iso_or_none, parse_iso_or_none

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
    condition: str,
    bed: BedConfig,
    time: datetime,
    *,
    present: bool,
    grade: int,
    message: Text,
    basis: Sequence[Mapping[str, Any]] = (),
    change: Mapping[str, Any] | None = None,
) -> AlertCandidate:
    """CRS_SUSPECTED or ICANS_SUSPECTED at ``grade``; the grade sets the priority.

    Details: ``grade`` and ``basis`` while present; ``change`` whenever the candidate
    follows a correction or a withdrawal.
    """
    details: dict[str, Any] = {"grade": grade, "basis": [dict(b) for b in basis]} if present else {}
    if change is not None:
        details["change"] = dict(change)
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
        details=details,
    )


def oxygen_grade(device: str | None, flow_l_per_min: float | None) -> int:
    """The CRS grade suggested by the oxygen support alone (0: none)."""
    if device == "air":
        return 0
    grade = O2_DEVICE_GRADE.get(device, 0) if device is not None else 0
    if flow_l_per_min is not None and flow_l_per_min > 0:
        grade = max(grade, 3 if flow_l_per_min > LOW_FLOW_MAX_L_PER_MIN else 2)
    return grade


def haemodynamic_grade(hypotension: bool, vasopressors: int | None, vasopressin: bool = False) -> int:
    """The CRS grade suggested by blood pressure and vasopressors alone (0: none).

    ``vasopressors`` does not count vasopressin: one vasopressor with vasopressin is
    3, not 4 (ASTCT). Vasopressin alone is read as one vasopressor (3): an assumption,
    ASTCT does not state it.
    """
    if vasopressors is not None and vasopressors >= 2:
        return 4
    if vasopressors == 1 or vasopressin:
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

# The pressure a hypotension track's value is (``daemon.clinical.vitals.deciding_metric``).
_PRESSURE_NAMES: Mapping[Metric, tuple[str, str]] = {
    Metric.SBP_MMHG: ("systolic", "systolique"),
    Metric.MAP_MMHG: ("mean arterial pressure", "pression artérielle moyenne"),
}


def _standing(track: Track) -> tuple[float | None, Metric]:
    """The value a raised condition stands on, and its metric: the latest beyond the limit.

    The latest value may be a normal one while the condition waits out its clearing time, and
    "fever 37.2 °C" would misstate the grade's basis. A track saved before the latest abnormal
    value was kept gives its latest value; a metric not kept reads as systolic.
    """
    if track.abnormal_value is not None:
        return track.abnormal_value, track.abnormal_measure or Metric.SBP_MMHG
    return track.value, track.measure or Metric.SBP_MMHG


@dataclass(frozen=True, slots=True)
class CrsState:
    """What the CRS rule remembers about one bed."""

    # The vital-sign rule's FEVER and HYPOTENSION tracks, the same objects while the two
    # rules are in step (``CrsRule.step_after``).
    fever: Track = EMPTY_TRACK
    hypotension: Track = EMPTY_TRACK
    # The nurses' entries: vasopressors, vasopressin, oxygen device and flow, treatments.
    chart: Chart = field(default_factory=Chart)
    rate_ml_per_h: float | None = None  # latest pump rate while infusing (0 when not)
    concentration_ug_per_ml: float | None = None  # latest bag hung
    grade: int = 0  # the grade last announced


# Treatments after which fever is no longer required (ASTCT), as the chart names them.
TREATMENTS: Mapping[str, tuple[str, str]] = {
    "antipyretic": ("an antipyretic", "un antipyrétique"),
    "corticosteroid": ("a corticosteroid", "un corticoïde"),
    "anti_cytokine": ("an anti-cytokine therapy", "un anti-cytokine"),
    # From a state saved before the chart, which did not say which of the two it was.
    "antipyretic_or_corticosteroid": (
        "an antipyretic or a corticosteroid",
        "un antipyrétique ou un corticoïde",
    ),
}


def crs_values(obs: Observation) -> dict[str, Any]:
    """The fields of ``obs`` the CRS rule grades, as plain values."""
    values: dict[str, Any] = {}
    if obs.vasopressors is not None:
        values["vasopressors"] = obs.vasopressors
    if obs.vasopressin is not None:
        values["vasopressin"] = obs.vasopressin
    if obs.o2_device is not None:
        values["o2_device"] = obs.o2_device
        if obs.o2_device == "air" and obs.o2_flow_l_per_min is None:
            values["o2_flow_l_per_min"] = 0.0
    if obs.o2_flow_l_per_min is not None:
        values["o2_flow_l_per_min"] = obs.o2_flow_l_per_min
    given = (
        ("antipyretic", obs.antipyretic_given),
        ("corticosteroid", obs.corticosteroid_given),
        ("anti_cytokine", obs.anti_cytokine_given),
    )
    treatments = tuple(name for name, yes in given if yes)
    if treatments:
        values["treatment"] = treatments
    return values


class CrsRule:
    """``CRS_SUSPECTED`` with a suggested ASTCT grade and the infusion context."""

    name = "crs"
    reads = "vitals"
    """The rule at the same bed whose state ``step_after`` is given (``daemon.rules.Reader``)."""

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
            state = replace(state, chart=record(state.chart, event, crs_values(event)))
            return self._grade(state, event.time, change_of(event))
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
            if metric is None or event.health is Health.CONNECTED:
                return state, ()
            # A sentinel breaks the runs before it; a late one may undo a change (vitals.interrupt).
            before = state
            broken: list[tuple[Condition, Change]] = []
            if metric in METRICS[Condition.FEVER]:
                fever, changes = interrupt(state.fever, event.time, self._fever_noise, now=now)
                state = replace(state, fever=fever)
                broken.extend((Condition.FEVER, c) for c in changes)
            if metric in METRICS[Condition.HYPOTENSION]:
                low, changes = interrupt(state.hypotension, event.time, self._hypotension_noise, now=now)
                state = replace(state, hypotension=low)
                broken.extend((Condition.HYPOTENSION, c) for c in changes)
            return self._late(before, state, broken) if broken else (state, ())
        return state, ()

    def idle_until(self, state: CrsState, now: datetime) -> datetime | None:
        """Until when a tick changes nothing (``daemon.rules.Idle``). A tick only grades
        again, and with time alone only a treatment's masking of the fever requirement
        changes: never without a treatment charted; otherwise at the treatment's time and
        at the end of ``fever_masking_s``, provided the grade is already the one at ``now``
        (a sample graded at its own, older, time may not be)."""
        entry = state.chart.latest("treatment")
        if entry is None:
            return IDLE_FOREVER
        if self._grade(state, now)[0] is not state:
            return None
        return idle_until_edge((entry.time, entry.time + timedelta(seconds=self.th.fever_masking_s)), now)

    def step_after(
        self,
        state: CrsState,
        event: Event,
        now: datetime,
        vitals_before: VitalsState,
        vitals_after: VitalsState,
    ) -> tuple[CrsState, Sequence[AlertCandidate]]:
        """``step``, given the vital-sign rule's state before and after the same event
        (``daemon.rules.Reader``; the engine steps that rule first, and calls this only
        when it did so without failing).

        While this rule's tracks are the vital-sign rule's own objects, its judgement of
        the event is this rule's too (the same samples, the same noise control): its
        tracks are taken instead of judging each sample twice. A late sample or a
        sentinel is still judged here, for the late changes the grade is set again at;
        the tracks that gives are equal to the vital-sign rule's, whose objects are kept.
        """
        fever_up, low_up = vitals_before.tracks[Condition.FEVER], vitals_before.tracks[Condition.HYPOTENSION]
        if state.fever is not fever_up or state.hypotension is not low_up:
            return self.step(state, event, now)  # not in step (a restart, a failure): judged here
        fever_after = vitals_after.tracks[Condition.FEVER]
        low_after = vitals_after.tracks[Condition.HYPOTENSION]
        if isinstance(event, VitalSample) and in_order(fever_up, event.time) and in_order(low_up, event.time):
            if fever_after is not fever_up or low_after is not low_up:
                state = replace(state, fever=fever_after, hypotension=low_after)
            return self._grade(state, event.time)
        new, candidates = self.step(state, event, now)
        if new.fever is not fever_after or new.hypotension is not low_after:
            new = replace(new, fever=fever_after, hypotension=low_after)
        return new, candidates

    def linked(self, state: CrsState, vitals: VitalsState) -> CrsState:
        """``state`` sharing ``vitals``' tracks where they are equal (after a restart each
        rule loads its own copy), so that ``step_after`` takes them from then on."""
        fever, low = vitals.tracks[Condition.FEVER], vitals.tracks[Condition.HYPOTENSION]
        if state.fever is fever and state.hypotension is low:
            return state
        if state.fever == fever and state.hypotension == low:
            return replace(state, fever=fever, hypotension=low)
        return state

    def _sample(
        self, state: CrsState, event: VitalSample, now: datetime
    ) -> tuple[CrsState, list[tuple[Condition, Change]]]:
        """The tracks after ``event``, and the changes late data made to them."""
        late: list[tuple[Condition, Change]] = []
        fever_track, low_track = state.fever, state.hypotension
        fever = classify_measured(Condition.FEVER, event.values, self.th)
        if fever is not None:
            fever_track, changes = judge(
                fever_track, fever[0], event.time, fever[1], self._fever_noise, now=now, measure=fever[2]
            )
            late.extend((Condition.FEVER, c) for c in changes if c.late_s is not None)
        low = classify_measured(Condition.HYPOTENSION, event.values, self.th)
        if low is not None:
            low_track, changes = judge(
                low_track, low[0], event.time, low[1], self._hypotension_noise, now=now, measure=low[2]
            )
            late.extend((Condition.HYPOTENSION, c) for c in changes if c.late_s is not None)
        if fever is None and low is None:
            return state, late  # nothing this rule reads: the same state
        return replace(state, fever=fever_track, hypotension=low_track), late

    def _late(
        self, before: CrsState, after: CrsState, late: list[tuple[Condition, Change]]
    ) -> tuple[CrsState, list[AlertCandidate]]:
        """Grade again at each change late data made, in time order, marked late."""
        fever, hypotension = before.fever.active, before.hypotension.active
        fever_value, _ = _standing(after.fever)
        low_value, low_standing = _standing(after.hypotension)
        low_measure: Metric | None = low_standing
        state = replace(after, grade=before.grade)
        out: list[AlertCandidate] = []
        for condition, change in sorted(late, key=lambda item: item[1].time):
            active = change.transition is Transition.RAISED
            if condition is Condition.FEVER:
                fever, fever_value = active, change.value
            else:
                hypotension, low_value, low_measure = active, change.value, change.measure
            view = replace(
                state,
                fever=replace(after.fever, active=fever, abnormal_value=fever_value),
                hypotension=replace(
                    after.hypotension,
                    active=hypotension,
                    abnormal_value=low_value,
                    abnormal_measure=low_measure,
                ),
            )
            view, candidates = self._grade(view, change.time)
            state = replace(state, grade=view.grade)
            out.extend(late_note(c, change.late_s) for c in candidates)
        return state, out

    def treatment(self, state: CrsState, time: datetime) -> Entry | None:
        """The recent treatment entry that makes fever no longer required, if any."""
        entry = state.chart.latest("treatment")
        if entry is None or time < entry.time:
            return None
        return entry if (time - entry.time).total_seconds() <= self.th.fever_masking_s else None

    def masked(self, state: CrsState, time: datetime) -> bool:
        """Whether a recent antipyretic, corticosteroid or anti-cytokine therapy makes
        fever no longer required."""
        return self.treatment(state, time) is not None

    def grades(self, state: CrsState) -> tuple[int, int]:
        """The haemodynamic and oxygen grades from what is known now."""
        chart = state.chart
        haemodynamic = haemodynamic_grade(
            state.hypotension.active, chart.value("vasopressors"), bool(chart.value("vasopressin"))
        )
        return haemodynamic, oxygen_grade(chart.value("o2_device"), chart.value("o2_flow_l_per_min"))

    def _grade(
        self, state: CrsState, time: datetime, change: Mapping[str, Any] | None = None
    ) -> tuple[CrsState, list[AlertCandidate]]:
        haemodynamic, oxygen = self.grades(state)
        grade = crs_grade(state.fever.active, self.masked(state, time), haemodynamic, oxygen)
        if grade == state.grade:
            return state, []
        new = replace(state, grade=grade)
        if grade == 0:
            message = Text("CRS criteria no longer met.", "Les critères de SRC ne sont plus remplis.")
            return new, [
                _grade_candidate(
                    CRS_SUSPECTED,
                    self.bed,
                    time,
                    present=False,
                    grade=state.grade,
                    message=message,
                    change=change,
                )
            ]
        return new, [
            _grade_candidate(
                CRS_SUSPECTED,
                self.bed,
                time,
                present=True,
                grade=grade,
                message=self._message(new, time),
                basis=self.basis(new, time),
                change=change,
            )
        ]

    def basis(self, state: CrsState, time: datetime) -> list[dict[str, Any]]:
        """What sets the grade now: fever (or the treatment that waives it), then the
        domains at the grade, each with who recorded it and when."""
        out: list[dict[str, Any]] = []
        if state.fever.active:
            out.append({"domain": "fever", "value": _standing(state.fever)[0], "source": "monitor"})
        else:
            treated = self.treatment(state, time)
            if treated is not None:
                out.append(
                    {"domain": "treatment", "value": list(treated.values["treatment"]), **treated.who_when()}
                )
        haemodynamic, oxygen = self.grades(state)
        chart = state.chart
        if haemodynamic and haemodynamic == state.grade:
            pressors = chart.latest("vasopressors")
            vasopressin = chart.latest("vasopressin")
            if pressors is not None and pressors.values["vasopressors"]:
                out.append(
                    {
                        "domain": "vasopressors",
                        "value": pressors.values["vasopressors"],
                        **pressors.who_when(),
                    }
                )
            if vasopressin is not None and vasopressin.values["vasopressin"]:
                out.append({"domain": "vasopressin", "value": True, **vasopressin.who_when()})
            if haemodynamic == 2:
                low_value, low_measure = _standing(state.hypotension)
                out.append(
                    {
                        "domain": "hypotension",
                        "value": low_value,
                        "measure": low_measure.value,
                        "source": "monitor",
                    }
                )
        if oxygen and oxygen == state.grade:
            for name in ("o2_device", "o2_flow_l_per_min"):
                entry = chart.latest(name)
                if entry is not None:
                    out.append({"domain": name, "value": entry.values[name], **entry.who_when()})
        return out

    def current_ug_per_day(self, state: CrsState) -> float | None:
        """The dose rate now from the latest pump rate and bag: mL/h × µg/mL × 24."""
        if state.rate_ml_per_h is None or state.concentration_ug_per_ml is None:
            return None
        return state.rate_ml_per_h * state.concentration_ug_per_ml * 24.0

    def _message(self, state: CrsState, time: datetime) -> Text:
        grade = state.grade
        en: list[str] = []
        fr: list[str] = []
        treated = self.treatment(state, time)
        fever_c, _ = _standing(state.fever)
        low_value, low_measure = _standing(state.hypotension)
        if state.fever.active and fever_c is not None:
            en.append(f"fever {fmt(fever_c, 1)} °C")
            fr.append(f"fièvre {fmt(fever_c, 1, 'fr')} °C")
        elif treated is not None:
            names = [TREATMENTS[n] for n in treated.values["treatment"] if n in TREATMENTS]
            en.append("no fever required after " + " and ".join(n[0] for n in names))
            fr.append("fièvre non exigée après " + " et ".join(n[1] for n in names))
        vasopressors = state.chart.value("vasopressors") or 0
        vasopressin = bool(state.chart.value("vasopressin"))
        if vasopressors:
            en.append(
                f"{vasopressors} vasopressor(s)" + (" plus vasopressin (not counted)" if vasopressin else "")
            )
            fr.append(
                f"{vasopressors} vasopresseur(s)"
                + (" plus vasopressine (non comptée)" if vasopressin else "")
            )
        elif vasopressin:
            en.append("vasopressin alone (read as one vasopressor)")
            fr.append("vasopressine seule (lue comme un vasopresseur)")
        elif state.hypotension.active and low_value is not None:
            name_en, name_fr = _PRESSURE_NAMES[low_measure]
            en.append(f"hypotension ({name_en} {fmt(low_value, 0)} mmHg) without vasopressor")
            fr.append(f"hypotension ({name_fr} {fmt(low_value, 0, 'fr')} mmHg) sans vasopresseur")
        device = state.chart.value("o2_device")
        flow = state.chart.value("o2_flow_l_per_min")
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
            "chart": dump_chart(state.chart),
            "rate_ml_per_h": state.rate_ml_per_h,
            "concentration_ug_per_ml": state.concentration_ug_per_ml,
            "grade": state.grade,
        }

    def windows(self, state: CrsState) -> Mapping[str, Sequence[Judged]]:
        """The late-data windows of the fever and hypotension tracks (``daemon.rules.Windowed``)."""
        return {"fever": state.fever.recent, "hypotension": state.hypotension.recent}

    def with_windows(self, state: CrsState, windows: Mapping[str, Sequence[Any]]) -> CrsState:
        """``state`` with these tracks' windows replaced."""
        changes = {
            name: replace(getattr(state, name), recent=as_judged(entries))
            for name, entries in windows.items()
        }
        return replace(state, **changes)

    def dump_entry(self, window: str, entry: Judged) -> Any:
        """One verdict of a window."""
        return dump_judged(entry)

    def dump_entries(self, window: str, entries: Sequence[Judged]) -> list[Any]:
        """Verdicts of a window (``daemon.rules.DumpsEntries``)."""
        return dump_judged_entries(entries)

    def load_entry(self, window: str, data: Any) -> Judged:
        """A verdict from ``dump_entry`` (a fever verdict saved without its measure gets it)."""
        entry = load_judged(data)
        if window == "fever" and entry.verdict is not None and entry.measure is None:
            return replace(entry, measure=Metric.TEMP_C)
        return entry

    def load(self, data: Mapping[str, Any]) -> CrsState:
        """A state from ``dump``'s output, or from the form saved before charts."""
        rate = data.get("rate_ml_per_h")
        conc = data.get("concentration_ug_per_ml")
        if "chart" in data:
            chart = load_chart(data["chart"])
        else:
            legacy = [
                legacy_entry(name, data.get(name))
                for name in ("vasopressors", "o2_device", "o2_flow_l_per_min")
            ]
            treated = parse_iso_or_none(data.get("treated_at"))
            if treated is not None:
                legacy.append(Entry(treated, None, (), {"treatment": ("antipyretic_or_corticosteroid",)}))
            chart = Chart(tuple(e for e in legacy if e is not None))
        return CrsState(
            fever=_fever_measured(load_track(data["fever"])) if "fever" in data else EMPTY_TRACK,
            hypotension=load_track(data["hypotension"]) if "hypotension" in data else EMPTY_TRACK,
            chart=chart,
            rate_ml_per_h=None if rate is None else float(rate),
            concentration_ug_per_ml=None if conc is None else float(conc),
            grade=int(data.get("grade", 0)),
        )


def _fever_measured(track: Track) -> Track:
    """A fever track as CRS judges it now, from one saved before it named the measure (the
    temperature) beside each value as the vital-sign rule does: equal to that rule's track
    again, so that the two are linked after a restart (``CrsRule.linked``)."""
    base = None if track.base is None else _fever_measured(track.base)
    recent = as_judged(
        [
            replace(item, measure=Metric.TEMP_C)
            if item.verdict is not None and item.measure is None
            else item
            for item in track.recent
        ]
    )
    return replace(
        track,
        measure=Metric.TEMP_C if track.value is not None and track.measure is None else track.measure,
        abnormal_measure=Metric.TEMP_C
        if track.abnormal_value is not None and track.abnormal_measure is None
        else track.abnormal_measure,
        recent=recent,
        base=base,
    )


# --------------------------------------------------------------------------- ICANS


# Grades of the ICANS domains recorded as findings (ASTCT, domain.md section 2).
MOTOR_GRADE: Mapping[MotorWeakness, int] = {
    MotorWeakness.NONE: 0,
    MotorWeakness.HEMIPARESIS: 4,
    MotorWeakness.PARAPARESIS: 4,
    MotorWeakness.OTHER_DEEP_FOCAL: 4,
}
ICP_GRADE: Mapping[IcpFinding, int] = {
    IcpFinding.FOCAL_OEDEMA: 3,
    IcpFinding.DIFFUSE_OEDEMA: 4,
    IcpFinding.DECEREBRATE_POSTURING: 4,
    IcpFinding.DECORTICATE_POSTURING: 4,
    IcpFinding.CRANIAL_NERVE_VI_PALSY: 4,
    IcpFinding.PAPILLOEDEMA: 4,
    IcpFinding.CUSHINGS_TRIAD: 4,
}


def seizure_grade(seizure: Seizure | None, pattern: SeizurePattern | None, over_5_min: bool | None) -> int:
    """The ICANS grade a seizure suggests (0: none recorded).

    4 for a prolonged seizure (> 5 min) or repeated seizures without return to
    baseline in between; any other seizure 3 (ASTCT's grade 3 names one that resolves
    rapidly, or EEG seizures that resolve with intervention; that an unresolved or
    repeated-with-baseline seizure is 3 too is an assumption, see the module docstring).
    """
    if seizure is None or seizure is Seizure.NONE:
        return 0
    if over_5_min or pattern is SeizurePattern.REPEATED_NO_BASELINE:
        return 4
    return 3


def motor_grade(motor: MotorWeakness | None) -> int:
    """The ICANS grade deep focal motor weakness suggests (0: none recorded)."""
    return 0 if motor is None else MOTOR_GRADE[motor]


def icp_grade(findings: Sequence[IcpFinding]) -> int:
    """The ICANS grade raised-ICP or cerebral-oedema findings suggest (0: none)."""
    return max((ICP_GRADE[f] for f in findings), default=0)


@dataclass(frozen=True, slots=True)
class IcansState:
    """The nurses' neurological entries (who, when, corrections), and the grade last announced."""

    chart: Chart = field(default_factory=Chart)
    grade: int = 0


@dataclass(frozen=True, slots=True)
class Domain:
    """One ICANS domain as the latest entries set it."""

    name: str  # "ice_score", "consciousness", "handwriting", "seizure", "motor", "raised_icp"
    grade: int
    entry: Entry  # the entry that sets it: who and when
    value: Any  # plain value, as in alert details


def icans_values(obs: Observation) -> dict[str, Any]:
    """The fields of ``obs`` the ICANS rule grades, as plain values."""
    values: dict[str, Any] = {}
    if obs.ice_score is not None:
        values["ice_score"] = obs.ice_score
    if obs.acvpu is not None:
        values["acvpu"] = obs.acvpu.value
    if obs.handwriting is not None:
        values["handwriting"] = obs.handwriting.value
    if obs.seizure is not None:
        values["seizure"] = obs.seizure.value
        # The facts about a seizure belong to it: kept in the same entry.
        if obs.seizure_pattern is not None:
            values["seizure_pattern"] = obs.seizure_pattern.value
        if obs.seizure_over_5_min is not None:
            values["seizure_over_5_min"] = obs.seizure_over_5_min
        if obs.seizure_resolved is not None:
            values["seizure_resolved"] = obs.seizure_resolved
    if obs.motor_weakness is not None:
        values["motor_weakness"] = obs.motor_weakness.value
    if obs.raised_icp is not None:
        values["raised_icp"] = tuple(f.value for f in obs.raised_icp)
    return values


def icans_domains(state: IcansState) -> list[Domain]:
    """Every domain some entry sets, with the grade it suggests on its own."""
    chart = state.chart
    out: list[Domain] = []
    acvpu_entry = chart.latest("acvpu")
    acvpu = Acvpu(acvpu_entry.values["acvpu"]) if acvpu_entry is not None else None
    ice = chart.latest("ice_score")
    if ice is not None:
        score = int(ice.values["ice_score"])
        out.append(Domain("ice_score", ice_grade(score, acvpu), ice, score))
    if acvpu_entry is not None and acvpu is not None:
        out.append(Domain("consciousness", CONSCIOUSNESS_GRADE[acvpu], acvpu_entry, acvpu.value))
    hand = chart.latest("handwriting")
    # The ICE score includes a writing item: a later score supersedes the test.
    if (
        hand is not None
        and hand.values["handwriting"] != Handwriting.NORMAL.value
        and (ice is None or ice.time <= hand.time)
    ):
        out.append(Domain("handwriting", 1, hand, hand.values["handwriting"]))
    seizure = chart.latest("seizure")
    if seizure is not None:
        v = seizure.values
        pattern = v.get("seizure_pattern")
        grade = seizure_grade(
            Seizure(v["seizure"]),
            None if pattern is None else SeizurePattern(pattern),
            v.get("seizure_over_5_min"),
        )
        facts = {
            k: v[k]
            for k in ("seizure", "seizure_pattern", "seizure_over_5_min", "seizure_resolved")
            if k in v
        }
        out.append(Domain("seizure", grade, seizure, facts))
    motor = chart.latest("motor_weakness")
    if motor is not None:
        weakness = MotorWeakness(motor.values["motor_weakness"])
        out.append(Domain("motor", motor_grade(weakness), motor, weakness.value))
    icp = chart.latest("raised_icp")
    if icp is not None:
        findings = [IcpFinding(f) for f in icp.values["raised_icp"]]
        out.append(Domain("raised_icp", icp_grade(findings), icp, [f.value for f in findings]))
    return out


def icans_grade(state: IcansState) -> int:
    """The suggested ICANS grade: the most severe domain (0: none suggested)."""
    return max((d.grade for d in icans_domains(state)), default=0)


class IcansRule:
    """``ICANS_SUSPECTED`` from ICE scores, consciousness, the handwriting test,
    seizures, motor findings and raised intracranial pressure."""

    consumes = (Observation,)
    """The events this rule reads (``daemon.rules.Rule``); it ignores every other."""

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
        """Take the checks an observation carries (or corrects, or withdraws), then re-grade."""
        if not isinstance(event, Observation):
            return state, ()
        t = event.time
        state = replace(state, chart=record(state.chart, event, icans_values(event)))
        domains = icans_domains(state)
        grade = max((d.grade for d in domains), default=0)
        if grade == state.grade:
            return state, ()
        previous = state.grade
        state = replace(state, grade=grade)
        change = change_of(event)
        if grade == 0:
            message = Text("Neurological checks back to normal.", "Examens neurologiques redevenus normaux.")
            return state, (
                _grade_candidate(
                    ICANS_SUSPECTED,
                    self.bed,
                    t,
                    present=False,
                    grade=previous,
                    message=message,
                    change=change,
                ),
            )
        basis = [
            {"domain": d.name, "grade": d.grade, "value": d.value, **d.entry.who_when()}
            for d in domains
            if d.grade == grade
        ]
        return state, (
            _grade_candidate(
                ICANS_SUSPECTED,
                self.bed,
                t,
                present=True,
                grade=grade,
                message=_icans_message(grade, domains, change),
                basis=basis,
                change=change,
            ),
        )

    def dump(self, state: IcansState) -> Mapping[str, Any]:
        """The state as JSON-compatible data."""
        return {"chart": dump_chart(state.chart), "grade": state.grade}

    def load(self, data: Mapping[str, Any]) -> IcansState:
        """A state from ``dump``'s output, or from the form saved before charts."""
        if "chart" in data:
            chart = load_chart(data["chart"])
        else:
            legacy = [legacy_entry(name, data.get(name)) for name in ("ice_score", "acvpu", "handwriting")]
            chart = Chart(tuple(e for e in legacy if e is not None))
        return IcansState(chart=chart, grade=int(data.get("grade", 0)))


_SEIZURE_TEXT: Mapping[str, tuple[str, str]] = {
    "clinical": ("clinical seizure", "crise clinique"),
    "electrographic": ("seizure on EEG", "crise électrique (EEG)"),
    "single": ("single", "isolée"),
    "repeated_back_to_baseline": (
        "repeated, back to baseline in between",
        "répétées, retour à l'état de base entre elles",
    ),
    "repeated_no_baseline": ("repeated without return to baseline", "répétées sans retour à l'état de base"),
}


def _domain_text(domain: Domain) -> tuple[str, str]:
    """One domain, in English and French."""
    value = domain.value
    if domain.name == "ice_score":
        return f"ICE score {value}/10", f"score ICE {value}/10"
    if domain.name == "consciousness":
        return f"consciousness {value} (ACVPU)", f"conscience {value} (ACVPU)"
    if domain.name == "handwriting":
        return f"handwriting test {value}", "test d'écriture " + (
            "modifié" if value == "changed" else "impossible"
        )
    if domain.name == "seizure":
        en, fr = _SEIZURE_TEXT[value["seizure"]]
        parts_en, parts_fr = [en], [fr]
        pattern = value.get("seizure_pattern")
        if pattern is not None:
            parts_en.append(_SEIZURE_TEXT[pattern][0])
            parts_fr.append(_SEIZURE_TEXT[pattern][1])
        if value.get("seizure_over_5_min"):
            parts_en.append("over 5 min")
            parts_fr.append("plus de 5 min")
        if value.get("seizure_resolved") is False:
            parts_en.append("not resolved (grade 4 if it lasts over 5 min)")
            parts_fr.append("non résolue (grade 4 au-delà de 5 min)")
        return ", ".join(parts_en), ", ".join(parts_fr)
    if domain.name == "motor":
        return f"deep focal motor weakness: {value}", f"déficit moteur focal profond : {value}"
    findings = ", ".join(value)
    return (
        f"raised intracranial pressure / oedema: {findings}",
        f"hypertension intracrânienne / œdème : {findings}",
    )


def _icans_message(grade: int, domains: Sequence[Domain], change: Mapping[str, Any] | None) -> Text:
    shown = [d for d in domains if d.grade > 0]
    texts = [_domain_text(d) for d in shown]
    authors = sorted({d.entry.by for d in shown if d.grade == grade and d.entry.by})
    label_en, label_fr = _ICANS_LABEL[grade]
    ice_missing = not any(d.name == "ice_score" for d in domains)
    more = ice_missing and grade < 4
    before_en = before_fr = ""
    if change is not None:
        ref = change.get("withdraws") or change.get("corrects")
        verb_en, verb_fr = ("withdrawn", "retirée") if "withdraws" in change else ("corrected", "corrigée")
        before_en = f"Entry {ref} {verb_en} by {change.get('by')}. "
        before_fr = f"Saisie {ref} {verb_fr} par {change.get('by')}. "
    by_en = f" Recorded by {', '.join(authors)}." if authors else ""
    by_fr = f" Saisi par {', '.join(authors)}." if authors else ""
    return Text(
        f"{before_en}Suggests ICANS grade {grade}{' or more' if more else ''} (ASTCT): "
        f"{'; '.join(t[0] for t in texts)}.{by_en} Consider medical review"
        + (" and a full ICE assessment" if ice_missing else "")
        + f". Reminder, not an order: {label_en}",
        f"{before_fr}Évoque une neurotoxicité (ICANS) de grade {grade}"
        f"{' ou plus' if more else ''} (ASTCT) : {' ; '.join(t[1] for t in texts)}.{by_fr} Envisager "
        "un avis médical"
        + (" et un score ICE complet" if ice_missing else "")
        + f". Rappel, pas une prescription : {label_fr}",
    )


# --------------------------------------------------------------------------- neuro check


@dataclass(frozen=True, slots=True)
class NeuroCheckState:
    """When the last handwriting test or ICE score was taken, whether one is due, and
    when the daemon began watching the bed (its first tick)."""

    last_check: datetime | None = None
    due: bool = False
    watch_start: datetime | None = None


class NeuroCheckRule:
    """``NEURO_CHECK_DUE`` when a bed on protocol has had no neurological check lately."""

    consumes = (Observation, Tick)
    """The events this rule reads (``daemon.rules.Rule``); it ignores every other."""

    name = "neuro_check"

    def __init__(self, thresholds: VitalThresholds, bed: BedConfig, schedule: Schedule) -> None:
        """Remind every ``neuro_check_interval_s`` while ``schedule`` is running."""
        self.th = thresholds
        self.bed = bed
        self.schedule = schedule
        self._first_s = thresholds.neuro_check_first_s or thresholds.neuro_check_interval_s
        self._interval = timedelta(seconds=thresholds.neuro_check_interval_s)
        self._first = timedelta(seconds=self._first_s)

    def initial(self) -> NeuroCheckState:
        """No check recorded."""
        return NeuroCheckState()

    def idle_until(self, state: NeuroCheckState, now: datetime) -> datetime | None:
        """Until when a tick changes nothing (``daemon.rules.Idle``): from the first tick on,
        until the next check falls due (not before the protocol starts); once due, until
        a check is recorded."""
        if state.watch_start is None:
            return None  # the first tick marks when the watch began
        if state.due:
            return IDLE_FOREVER
        if state.last_check is not None:
            due = state.last_check + self._interval
        else:
            due = max(self.schedule.start, state.watch_start) + self._first
        return idle_before(max(due, self.schedule.start))

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
        if not isinstance(event, Tick):
            return state, ()
        if state.watch_start is None:
            state = replace(state, watch_start=event.time)
        if state.due or not self.schedule.in_protocol(event.time):
            return state, ()
        if state.last_check is not None:
            since = state.last_check
            hours = (event.time - since).total_seconds() / 3600.0
            if hours * 3600.0 < self.th.neuro_check_interval_s:
                return state, ()
        else:
            # No check known: the first is due neuro_check_first_s after the protocol
            # start, or after the daemon began watching a bed already on protocol (it
            # cannot know of checks made before).
            assert state.watch_start is not None
            since = self.schedule.start
            baseline = max(self.schedule.start, state.watch_start)
            hours = (event.time - since).total_seconds() / 3600.0
            if (event.time - baseline).total_seconds() < self._first_s:
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
        return {
            "last_check": iso_or_none(state.last_check),
            "due": state.due,
            "watch_start": iso_or_none(state.watch_start),
        }

    def load(self, data: Mapping[str, Any]) -> NeuroCheckState:
        """A state from ``dump``'s output."""
        return NeuroCheckState(
            parse_iso_or_none(data.get("last_check")),
            bool(data.get("due", False)),
            parse_iso_or_none(data.get("watch_start")),
        )
