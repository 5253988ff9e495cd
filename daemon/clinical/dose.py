"""Dose-schedule compliance: what the pump really delivers against the bed's protocol.

One ``DoseRule`` watches one bed. It keeps a ledger of the µg delivered (the pump's
volume infused × the bag's concentration, summed across bags and pump counter
resets) and checks, on every event and every ``Tick``:

========================== ======== ==============================================
condition                  priority why that priority (domain.md section 4)
========================== ======== ==============================================
DOSE_RATE_HIGH             medium,  a wrong dose that stops when corrected: prompt;
                           high at  at 2× or more the patient gets a step dose the
                           2×       schedule (and its premedication) did not plan.
DOSE_RATE_LOW              medium   under-dosing is reversible: prompt response.
STEP_UP_DUE                low      awareness: ready the bag and premedication.
STEP_UP_LATE               medium   the patient stays under-dosed: prompt.
STEP_UP_EARLY              medium   the step dose may precede its premedication.
INFUSION_INTERRUPTED       medium,  a short break is reversible; from 4 h the label
                           high at  requires premedication and a supervised restart,
                           4 h      so a clinician must act before the pump restarts.
BOLUS_SUSPECTED            high     the label forbids flushing (overdose); a flush
                                    still running must be stopped immediately.
CUMULATIVE_DOSE_DEVIATION  medium   the course total is off plan: prompt review.
BAG_LOW                    low      awareness: the next bag is needed soon.
INFUSION_AFTER_PROTOCOL_END medium  unplanned exposure continues until stopped.
RESTART_REASON_NEEDED      medium   the infusion restarted after a break of more than
                                    7 days, or after a declared grade 3 reaction, and
                                    nobody declared which label rule applies: the
                                    expected dose may be wrong until they do.
DISCONTINUATION_RULE       high     the label says discontinue (CRS or neurotoxicity
                                    grade 4, more than one seizure, a grade 3 too slow
                                    to resolve) and the infusion runs on: a reminder,
                                    medium for "consider" (other reaction grade 4).
========================== ======== ==============================================

Which dose is expected (every dose alert names the rule in ``details["rule"]`` and in
its message): the protocol's calendar (``protocol_calendar``) until staff declare a
change in an observation (``daemon.clinical.dose_label``): a restart after a grade 3 reaction
(``restart_after_crs_g3``, ``..._neurotoxicity_g3``, ``..._other_g3``: the first step,
the higher dose 7 days after the infusion restarted, ending where the interrupted
cycle would have, moved by the break) or a new cycle (``new_cycle``: the protocol's
``next_cycle`` from its day 1, counted from the restart). While a declared plan waits
for the pump to restart, the break counts as no dose in the cumulative total.

Bags announced late: a bag whose ``hung_at`` is before the latest pump reading takes
over the volume of the readings after ``hung_at`` (within ``bag_late_window_s``), so
that the cumulative dose is the same whatever order the readings and the announcement
came in: each reading's volume belongs to the bag on the line at the reading's time.

STEP_UP_DUE is a scheduled reminder: it is raised ahead of every step-up even when
the infusion follows the protocol exactly, and clears when the higher dose runs or
its bag is on the line at the programmed rate (prepared). While no recent reading
and bag say what is on the line, it waits ``rate_delay_s`` for them. BAG_LOW counts the
time left at the steady rate, never at a spike's.

Gaps: the delivered rate is known only from a recent pump reading (``reading_stale_s``);
the ledger only adds volumes the pump measured, never a rate × time estimate.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import json
import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon import ids
from daemon.clinical.dose_label import (
    CALENDAR,
    MAX_REMEMBERED,
    NEW_CYCLE,
    RESTART_GRADE,
    SEIZURE,
    DeclaredReaction,
    Plan,
    dump_plan,
    dump_reaction,
    load_plan,
    load_reaction,
    restart_rule,
    rule_text,
    triggers,
)
from daemon.clinical.protocols import (
    Schedule,
    Step,
    StepUp,
    cycle_schedule,
    next_cycle_protocol,
    restart_schedule,
    schedule_for,
)
from daemon.config import BedConfig, Config, DoseThresholds
from daemon.errors import InputError
from daemon.events import (
    AlertCandidate,
    BagHung,
    DeclarationKind,
    Event,
    Kind,
    Observation,
    Priority,
    PumpReading,
    PumpState,
    Reaction,
    Text,
    Tick,
)
from daemon.frozen import replace
from daemon.numfmt import fmt
from daemon.payloads import DEFAULT_MAX_PAYLOAD_BYTES, finite_number, load_json_object
from daemon.points import Point
from daemon.rules import Rule, RuleEngine, epoch_us, from_epoch_us, idle_until_edge
from daemon.timefmt import iso, iso_or_none, parse_iso, parse_iso_or_none

RULE_NAME = "dose"
MEASUREMENT = "dose"

DOSE_RATE_HIGH = "DOSE_RATE_HIGH"
DOSE_RATE_LOW = "DOSE_RATE_LOW"
STEP_UP_DUE = "STEP_UP_DUE"
STEP_UP_LATE = "STEP_UP_LATE"
STEP_UP_EARLY = "STEP_UP_EARLY"
INFUSION_INTERRUPTED = "INFUSION_INTERRUPTED"
BOLUS_SUSPECTED = "BOLUS_SUSPECTED"
CUMULATIVE_DOSE_DEVIATION = "CUMULATIVE_DOSE_DEVIATION"
BAG_LOW = "BAG_LOW"
INFUSION_AFTER_PROTOCOL_END = "INFUSION_AFTER_PROTOCOL_END"
RESTART_REASON_NEEDED = "RESTART_REASON_NEEDED"
DISCONTINUATION_RULE = "DISCONTINUATION_RULE"

CONDITIONS = (
    DOSE_RATE_HIGH,
    DOSE_RATE_LOW,
    STEP_UP_DUE,
    STEP_UP_LATE,
    STEP_UP_EARLY,
    INFUSION_INTERRUPTED,
    BOLUS_SUSPECTED,
    CUMULATIVE_DOSE_DEVIATION,
    BAG_LOW,
    INFUSION_AFTER_PROTOCOL_END,
    RESTART_REASON_NEEDED,
    DISCONTINUATION_RULE,
)
# Conditions whose expected dose comes from the schedule in force: they name its rule.
_SCHEDULED = frozenset(
    {
        DOSE_RATE_HIGH,
        DOSE_RATE_LOW,
        STEP_UP_DUE,
        STEP_UP_LATE,
        STEP_UP_EARLY,
        INFUSION_INTERRUPTED,
        CUMULATIVE_DOSE_DEVIATION,
        INFUSION_AFTER_PROTOCOL_END,
    }
)

# A pump counter that goes down by more than this was reset (new bag, restart).
_RESET_EPSILON_ML = 0.001
UG_PER_DAY = "ug/d"


# --------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class Bag:
    """The bag on the line and the volume the pump has infused from it."""

    bag_id: str
    concentration_ug_per_ml: float
    volume_ml: float | None
    hung_at: datetime
    infused_ml: float = 0.0


@dataclass(frozen=True, slots=True)
class Reading:
    """The latest pump status (``volume_infused_ml`` may be ``None``)."""

    pump: str
    time: datetime
    state: PumpState
    rate_ml_per_h: float | None
    volume_infused_ml: float | None


@dataclass(frozen=True, slots=True)
class VolumeMark:
    """The last reading that carried a volume: the ledger's baseline."""

    pump: str
    time: datetime
    volume_infused_ml: float
    rate_ml_per_h: float  # 0 when the pump was not infusing


@dataclass(frozen=True, slots=True)
class Increment:
    """Volume counted at one reading, and the bag it was put down to (late bags move it)."""

    time: datetime
    ml: float
    concentration_ug_per_ml: float | None  # None: no bag known, the µg were unknown
    hung_at: datetime | None  # the bag's hung_at, None when no bag was known


@dataclass(frozen=True, slots=True)
class DoseState:
    """Everything the dose rule remembers for one bed. JSON round-trips via the rule."""

    bag: Bag | None = None
    last: Reading | None = None
    mark: VolumeMark | None = None
    delivered_ug: float = 0.0  # measured volume × concentration, all bags
    delivered_ml: float = 0.0
    unattributed_ml: float = 0.0  # infused while no bag was known: µg unknown
    ledger_start: datetime | None = None  # first volume reading: the ledger covers from here
    ledger_time: datetime | None = None  # time of the last volume counted
    gap_s: float = 0.0  # total time between readings further apart than reading_stale_s
    steady_rate_ml_per_h: float | None = None
    interrupted_since: datetime | None = None
    bag_changed_at: datetime | None = None
    bolus_at: datetime | None = None
    bolus_details: Mapping[str, Any] = field(default_factory=dict)
    pending: Mapping[str, datetime] = field(default_factory=dict)  # condition -> first seen
    active: Mapping[str, str] = field(default_factory=dict)  # condition -> signature
    plans: tuple[Plan, ...] = ()  # declared restarts and new cycles, in declaration order
    reactions: tuple[DeclaredReaction, ...] = ()  # declared reactions and seizures
    break_start: datetime | None = None  # the last stop after infusing
    break_end: datetime | None = None  # when the infusion resumed after it (None: still stopped)
    prompt: Mapping[str, str] | None = None  # RESTART_REASON_NEEDED: reason, since, resumed_at
    increments: tuple[Increment, ...] = ()  # volumes of the last bag_late_window_s
    previous_bag: Bag | None = None  # the bag before ``bag``: readings up to its hung_at


# --------------------------------------------------------------------------- formatting


def _when(time: datetime) -> str:
    return time.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _dur(seconds: float, lang: str) -> str:
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = seconds / 3600
    if hours < 48:
        return f"{fmt(hours, 1, lang)} h"
    return f"{fmt(hours / 24, 1, lang)} " + ("jours" if lang == "fr" else "days")


# --------------------------------------------------------------------------- ledger


def delivered_rate_ug_per_day(state: DoseState, now: datetime, stale_s: float) -> float | None:
    """The dose rate the pump delivers now, or ``None`` when it is not known.

    Unknown when there is no recent reading, no reported rate, or no bag: a data gap
    is never read as delivery.
    """
    last = state.last
    if last is None or (now - last.time).total_seconds() > stale_s:
        return None
    if last.state is not PumpState.INFUSING:
        return 0.0
    if last.rate_ml_per_h is None:
        return None
    if last.rate_ml_per_h <= 0:
        return 0.0
    if state.bag is None:
        return None
    return last.rate_ml_per_h * state.bag.concentration_ug_per_ml * 24.0


def programmed_dose_ug_per_day(state: DoseState, now: datetime, stale_s: float) -> float | None:
    """The dose the bag on the line gives at the pump's programmed rate, running or not
    (``None`` without a recent reading that reports a rate, or without a bag)."""
    last, bag = state.last, state.bag
    if last is None or bag is None or last.rate_ml_per_h is None:
        return None
    if (now - last.time).total_seconds() > stale_s:
        return None
    return last.rate_ml_per_h * bag.concentration_ug_per_ml * 24.0


def _infusing_rate(reading: Reading | PumpReading) -> float:
    if reading.state is PumpState.INFUSING and reading.rate_ml_per_h is not None:
        return max(0.0, reading.rate_ml_per_h)
    return 0.0


def _count(state: DoseState, time: datetime, delta_ml: float, gap_s: float, th: DoseThresholds) -> DoseState:
    """Add ``delta_ml`` read at ``time`` to the bag it ran from (or to the unattributed mL)."""
    conc = state.bag.concentration_ug_per_ml if state.bag is not None else None
    bag = state.bag
    # Volume read at or before the bag's hung_at ran from the bag before it (a
    # reading that arrives after the announcement of the next bag).
    earlier = state.previous_bag if bag is not None and time <= bag.hung_at else None
    owner: Bag | None = None
    if earlier is not None:
        owner = earlier
        state = replace(
            state,
            previous_bag=replace(earlier, infused_ml=earlier.infused_ml + delta_ml),
            delivered_ug=state.delivered_ug + delta_ml * earlier.concentration_ug_per_ml,
            delivered_ml=state.delivered_ml + delta_ml,
        )
    elif bag is not None and conc is not None:
        owner = bag
        bag = replace(bag, infused_ml=bag.infused_ml + delta_ml)
        state = replace(
            state,
            bag=bag,
            delivered_ug=state.delivered_ug + delta_ml * conc,
            delivered_ml=state.delivered_ml + delta_ml,
        )
    else:
        state = replace(state, unattributed_ml=state.unattributed_ml + delta_ml)
    return replace(
        state,
        gap_s=gap_s,
        ledger_time=time,
        increments=_remember(state, time, delta_ml, th.bag_late_window_s, owner),
    )


def _ingest(state: DoseState, reading: PumpReading, schedule: Schedule, th: DoseThresholds) -> DoseState:
    """Add one pump reading to the ledger; note a bolus if the volume or rate says so."""
    last = state.last
    if last is not None and last.pump == reading.pump and reading.time <= last.time:
        return state  # duplicate or out of order: the ledger only moves forward
    new_last = Reading(
        reading.pump, reading.time, reading.state, reading.rate_ml_per_h, reading.volume_infused_ml
    )
    state = replace(state, last=new_last)
    evidence: dict[str, Any] | None = None
    conc = state.bag.concentration_ug_per_ml if state.bag is not None else None

    volume = reading.volume_infused_ml
    mark = state.mark
    if volume is not None and math.isfinite(volume) and volume >= 0:
        if mark is not None and mark.pump == reading.pump and reading.time > mark.time:
            # A counter that went down was reset (new bag, pump restart): what it shows now
            # was infused since the reset; what ran between the last reading and the reset
            # is unknown and is not counted.
            reset = volume < mark.volume_infused_ml - _RESET_EPSILON_ML
            delta_ml = volume if reset else max(0.0, volume - mark.volume_infused_ml)
            interval_s = (reading.time - mark.time).total_seconds()
            gap_s = state.gap_s + (interval_s if interval_s > th.reading_stale_s else 0.0)
            state = _count(state, reading.time, delta_ml, gap_s, th)
            explained_ml = max(mark.rate_ml_per_h, _infusing_rate(reading)) * interval_s / 3600.0
            excess_ml = delta_ml - explained_ml
            limit_ml = max(th.bolus_min_excess_ml, explained_ml * th.bolus_excess_pct / 100.0)
            if excess_ml > limit_ml:
                evidence = {"cause": "volume", "excess_ml": round(excess_ml, 2)}
                if conc is not None:
                    evidence["excess_ug"] = round(excess_ml * conc, 3)
        elif state.ledger_time is None:
            state = replace(state, ledger_start=reading.time, ledger_time=reading.time)
        state = replace(
            state,
            mark=VolumeMark(reading.pump, reading.time, volume, _infusing_rate(reading)),
        )

    rate = _infusing_rate(reading)
    expected = schedule.expected_dose_ug_per_day(reading.time)
    if reading.state is PumpState.PURGING:
        evidence = {"cause": "purge"}
    elif rate > 0:
        steady = state.steady_rate_ml_per_h
        spike = (
            steady is not None
            and rate > th.bolus_rate_ratio * steady
            and conc is not None
            and expected > 0
            and rate * conc * 24.0 > th.bolus_rate_ratio * expected
        )
        if spike and evidence is None:
            evidence = {"cause": "rate_spike", "rate_ml_per_h": round(rate, 2)}
        if not spike:
            state = replace(state, steady_rate_ml_per_h=rate)

    if evidence is not None:
        near = state.bag_changed_at is not None and (
            abs((reading.time - state.bag_changed_at).total_seconds()) <= th.bolus_bag_change_window_s
        )
        evidence["near_bag_change"] = near
        state = replace(state, bolus_at=reading.time, bolus_details=evidence)
    return state


def _remember(
    state: DoseState, time: datetime, ml: float, window_s: float, bag: Bag | None
) -> tuple[Increment, ...]:
    """The increments of the late-bag window, with ``ml`` counted at ``time`` for ``bag``."""
    oldest = time - timedelta(seconds=window_s)
    kept = tuple(i for i in state.increments if i.time >= oldest)
    if ml <= 0:
        return kept
    return (
        *kept,
        Increment(time, ml, bag.concentration_ug_per_ml if bag else None, bag.hung_at if bag else None),
    )


def _hang(state: DoseState, bag: BagHung) -> DoseState:
    """Put ``bag`` on the line; a late announcement takes over the volume since ``hung_at``.

    A reading's volume was infused since the reading before it, so it belongs to the bag
    with the latest ``hung_at`` before the reading's time, whatever order the
    announcement and the readings arrive in (a reading stamped exactly at ``hung_at``
    counts for the bag before, as when it arrives first). The volume counted before
    ``bag_late_window_s`` is kept as it was.
    """
    if state.bag is not None and state.bag.bag_id == bag.bag_id:
        return state  # the same announcement again (retained MQTT message, config + MQTT)
    conc = bag.concentration_ug_per_ml
    moved_ml = moved_ug = unattributed_ml = 0.0
    increments: list[Increment] = []
    for inc in state.increments:
        if inc.time <= bag.time or (inc.hung_at is not None and inc.hung_at >= bag.time):
            increments.append(inc)
            continue
        moved_ml += inc.ml
        if inc.concentration_ug_per_ml is None:
            unattributed_ml += inc.ml
        else:
            moved_ug -= inc.ml * inc.concentration_ug_per_ml
        moved_ug += inc.ml * conc
        increments.append(Increment(inc.time, inc.ml, conc, bag.time))
    current, changed_at, previous = state.bag, state.bag_changed_at, state.previous_bag
    announced = Bag(bag.bag_id, conc, bag.volume_ml, bag.time, moved_ml)
    if current is None or current.hung_at <= bag.time:
        current, changed_at, previous = announced, bag.time, state.bag
    elif previous is None or previous.hung_at < bag.time:
        # An older bag announced after a newer one: it takes over its own volume only.
        previous = announced
    return replace(
        state,
        bag=current,
        previous_bag=previous,
        bag_changed_at=changed_at,
        delivered_ug=state.delivered_ug + moved_ug,
        delivered_ml=state.delivered_ml + unattributed_ml,
        unattributed_ml=max(0.0, state.unattributed_ml - unattributed_ml),
        increments=tuple(increments),
    )


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True, slots=True)
class _Finding:
    priority: Priority
    message: Text
    details: Mapping[str, Any]
    value: float | None = None
    unit: str | None = None
    kind: Kind = Kind.PHYSIOLOGICAL


def _within(dose: float, target: float, tolerance_pct: float) -> bool:
    return target > 0 and abs(dose - target) <= target * tolerance_pct / 100.0


def _step_details(up: StepUp) -> dict[str, Any]:
    return {
        "step_time": iso(up.time),
        "lower_ug_per_day": round(up.lower_ug_per_day, 2),
        "higher_ug_per_day": round(up.higher_ug_per_day, 2),
    }


def _rate_findings(
    schedule: Schedule,
    th: DoseThresholds,
    delivered: float | None,
    now: datetime,
    programmed: float | None,
) -> tuple[dict[str, _Finding], dict[str, _Finding]]:
    """(findings present at once, findings that must last ``rate_delay_s``).

    ``programmed`` is the dose the bag on the line gives at the pump's programmed rate,
    running or not (``programmed_dose_ug_per_day``).
    """
    now_f: dict[str, _Finding] = {}
    delayed: dict[str, _Finding] = {}
    expected = schedule.expected_dose_ug_per_day(now)
    window = timedelta(seconds=th.step_window_s)
    tol = th.rate_tolerance_pct
    infusing = delivered is not None and delivered > 0

    for up in schedule.step_ups():
        higher_running = delivered is not None and _within(delivered, up.higher_ug_per_day, tol)
        # The higher-dose bag already on the line at the programmed rate: prepared. If
        # the pump then stays stopped, INFUSION_INTERRUPTED says so.
        higher_ready = programmed is not None and _within(programmed, up.higher_ug_per_day, tol)
        due_from = up.time - timedelta(seconds=th.step_up_due_before_s)
        if due_from <= now < up.time + window and not higher_running and not higher_ready:
            due = {"step_time": iso(up.time), "dose_ug_per_day": round(up.higher_ug_per_day, 2)}
            # While the daemon does not know the bag on the line and the pump's rate (just
            # started at the step time: the first poll may come before the bag's
            # announcement), the reminder waits rate_delay_s rather than flash until
            # they show the higher dose prepared.
            (now_f if programmed is not None else delayed)[STEP_UP_DUE] = _Finding(
                Priority.LOW,
                Text(
                    f"Step-up to {fmt(up.higher_ug_per_day, 1, 'en')} µg/day due at "
                    f"{_when(up.time)}: prepare the bag and the premedication.",
                    f"Palier à {fmt(up.higher_ug_per_day, 1, 'fr')} µg/jour prévu le "
                    f"{_when(up.time)} : préparer la poche et la prémédication.",
                ),
                due,
            )

    if not schedule.in_protocol(now) or delivered is None:
        return now_f, delayed
    if not infusing:
        return now_f, delayed

    assert delivered is not None
    acceptable = [expected] if expected > 0 else []
    for up in schedule.step_ups():
        # The window is closed at both ends: an early step-up ends where it begins, and
        # from its end on the lower dose is late (so the lower dose never lands here).
        if abs(now - up.time) <= window:
            acceptable += [up.lower_ug_per_day, up.higher_ug_per_day]
        early_from = up.time - timedelta(seconds=th.step_early_horizon_s)
        if early_from <= now < up.time - window and _within(delivered, up.higher_ug_per_day, tol):
            delayed[STEP_UP_EARLY] = _Finding(
                Priority.MEDIUM,
                Text(
                    f"Step-up started early: {fmt(delivered, 1, 'en')} µg/day running, "
                    f"the step to {fmt(up.higher_ug_per_day, 1, 'en')} µg/day is due at "
                    f"{_when(up.time)}. Check the premedication.",
                    f"Palier commencé en avance : {fmt(delivered, 1, 'fr')} µg/jour en cours, "
                    f"le passage à {fmt(up.higher_ug_per_day, 1, 'fr')} µg/jour est prévu le "
                    f"{_when(up.time)}. Vérifier la prémédication.",
                ),
                _step_details(up),
                delivered,
                UG_PER_DAY,
            )
            return now_f, delayed
        higher_step = schedule.step_at(now)
        if (
            now >= up.time + window
            and higher_step is not None
            and schedule.step_time(higher_step) == up.time
            and _within(delivered, up.lower_ug_per_day, tol)
        ):
            late_s = (now - up.time).total_seconds()
            now_f[STEP_UP_LATE] = _Finding(
                Priority.MEDIUM,
                Text(
                    f"Step-up late: still {fmt(delivered, 1, 'en')} µg/day; "
                    f"{fmt(up.higher_ug_per_day, 1, 'en')} µg/day was due at {_when(up.time)} "
                    f"(over {_dur(th.step_window_s, 'en')} ago).",
                    f"Palier en retard : toujours {fmt(delivered, 1, 'fr')} µg/jour ; "
                    f"{fmt(up.higher_ug_per_day, 1, 'fr')} µg/jour étaient prévus le "
                    f"{_when(up.time)} (il y a plus de {_dur(th.step_window_s, 'fr')}).",
                ),
                _step_details(up),
                late_s,
                "s",
            )
            return now_f, delayed

    if any(_within(delivered, target, tol) for target in acceptable):
        return now_f, delayed
    top = max(acceptable, default=0.0)
    if delivered > top:
        ratio = delivered / expected if expected > 0 else math.inf
        priority = Priority.HIGH if ratio >= th.rate_high_escalate_ratio else Priority.MEDIUM
        delayed[DOSE_RATE_HIGH] = _Finding(
            priority,
            Text(
                f"Dose rate high: {fmt(delivered, 1, 'en')} µg/day delivered, protocol "
                f"{fmt(expected, 1, 'en')} µg/day (±{fmt(tol, 0, 'en')} %). "
                "Check the bag's strength and the pump rate.",
                f"Débit de dose élevé : {fmt(delivered, 1, 'fr')} µg/jour délivrés, protocole "
                f"{fmt(expected, 1, 'fr')} µg/jour (±{fmt(tol, 0, 'fr')} %). "
                "Vérifier la concentration de la poche et le débit de la pompe.",
            ),
            {"expected_ug_per_day": round(expected, 2)},
            delivered,
            UG_PER_DAY,
        )
    else:
        delayed[DOSE_RATE_LOW] = _Finding(
            Priority.MEDIUM,
            Text(
                f"Dose rate low: {fmt(delivered, 1, 'en')} µg/day delivered, protocol "
                f"{fmt(expected, 1, 'en')} µg/day (±{fmt(tol, 0, 'en')} %). "
                "Check the bag's strength and the pump rate.",
                f"Débit de dose bas : {fmt(delivered, 1, 'fr')} µg/jour délivrés, protocole "
                f"{fmt(expected, 1, 'fr')} µg/jour (±{fmt(tol, 0, 'fr')} %). "
                "Vérifier la concentration de la poche et le débit de la pompe.",
            ),
            {"expected_ug_per_day": round(expected, 2)},
            delivered,
            UG_PER_DAY,
        )
    return now_f, delayed


def _interruption(
    state: DoseState, schedule: Schedule, th: DoseThresholds, now: datetime
) -> tuple[DoseState, _Finding | None]:
    last = state.last
    should_infuse = schedule.in_protocol(now) and schedule.expected_dose_ug_per_day(now) > 0
    stopped = (
        last is not None
        and _infusing_rate(last) <= 0
        and (last.state is not PumpState.INFUSING or last.rate_ml_per_h is not None)
    )
    if not should_infuse or not stopped or last is None:
        if state.interrupted_since is None:
            return state, None
        return replace(state, interrupted_since=None), None
    since = state.interrupted_since
    if since is None:
        since = max(last.time, schedule.start)
        state = replace(state, interrupted_since=since)
    elapsed_s = (now - since).total_seconds()
    if elapsed_s < th.interruption_delay_s:
        return state, None
    if elapsed_s > th.interruption_new_cycle_s:
        stage, priority = "new_cycle", Priority.HIGH
        en = (
            f"Infusion interrupted since {_when(since)}, more than "
            f"{_dur(th.interruption_new_cycle_s, 'en')}: the label starts a new cycle. "
            "Review the protocol before any restart."
        )
        fr = (
            f"Perfusion interrompue depuis le {_when(since)}, plus de "
            f"{_dur(th.interruption_new_cycle_s, 'fr')} : selon le RCP, un nouveau cycle "
            "commence. Revoir le protocole avant toute reprise."
        )
    elif elapsed_s >= th.interruption_supervised_restart_s:
        stage, priority = "supervised_restart", Priority.HIGH
        en = (
            f"Infusion interrupted since {_when(since)}, "
            f"{_dur(th.interruption_supervised_restart_s, 'en')} or more: the restart needs "
            "premedication and supervision (label)."
        )
        fr = (
            f"Perfusion interrompue depuis le {_when(since)}, "
            f"{_dur(th.interruption_supervised_restart_s, 'fr')} ou plus : la reprise "
            "nécessite une prémédication et une surveillance (RCP)."
        )
    else:
        stage, priority = "interrupted", Priority.MEDIUM
        expected = schedule.expected_dose_ug_per_day(now)
        en = (
            f"Infusion interrupted since {_when(since)} (pump {last.state}); the protocol "
            f"calls for {fmt(expected, 1, 'en')} µg/day."
        )
        fr = (
            f"Perfusion interrompue depuis le {_when(since)} (pompe {last.state}) ; le "
            f"protocole prévoit {fmt(expected, 1, 'fr')} µg/jour."
        )
    details = {"stage": stage, "since": iso(since)}
    return state, _Finding(priority, Text(en, fr), details, elapsed_s, "s")


@dataclass(frozen=True, slots=True)
class Timeline:
    """The schedules of one bed over time: the protocol's calendar, then each declared plan.

    The plan in force at a time is the last declared one whose ``since`` is at or before
    it. A plan still waiting for the infusion to restart is *pending*: ``at`` anchors
    it at the asked time (what a restart then would expect), and it counts no dose.
    """

    base: Schedule
    bed: BedConfig | None = None  # needed only once plans are declared
    config: Config | None = None

    def at(self, plans: Sequence[Plan], time: datetime) -> tuple[Schedule, str, bool]:
        """(schedule in force at ``time``, its rule, whether it is pending)."""
        for i in range(len(plans) - 1, -1, -1):
            if plans[i].since <= time:
                return self._plan(plans, i, time)
        return self.base, CALENDAR, False

    def _plan(self, plans: Sequence[Plan], i: int, time: datetime) -> tuple[Schedule, str, bool]:
        plan = plans[i]
        if self.bed is None:
            raise ValueError("a timeline with declared plans needs the bed")
        anchor = plan.start if plan.start is not None else max(time, plan.since)
        if plan.rule == NEW_CYCLE:
            schedule = cycle_schedule(self.bed, self.config, plan.protocol, start=anchor)
        else:
            stop = plan.stop if plan.stop is not None else self.restart_stop(plans[:i], plan, anchor)
            schedule = restart_schedule(self.bed, self.config, plan.protocol, start=anchor, stop=stop)
            if not plan.step_up:
                first = schedule.steps[0]
                schedule = dataclasses.replace(  # works out the schedule's end again
                    schedule, steps=(Step(first.day_from, 366, first.dose_ug_per_day),)
                )
        return schedule, plan.rule, plan.start is None

    def plan_schedules(self, plans: Sequence[Plan]) -> list[Schedule]:
        """The schedule of each declared plan the infusion has restarted on. A pending
        plan's is left out: it starts at the time it is asked for (``at``), so what it
        says of that time does not change as the clock moves."""
        return [self._plan(plans, i, plan.since)[0] for i, plan in enumerate(plans) if plan.start is not None]

    def restart_stop(self, before: Sequence[Plan], plan: Plan, start: datetime) -> datetime:
        """Where a restart plan ends: the interrupted schedule's end, moved by the break
        (label: a cycle keeps its number of infusion days after a break of <= 7 days)."""
        interrupted, _, _ = self.at(before, plan.since - timedelta(microseconds=1))
        return interrupted.end + max(timedelta(0), start - plan.since)

    def expected_between(self, plans: Sequence[Plan], begin: datetime, end: datetime) -> float:
        """The dose the schedules in force plan from ``begin`` to ``end`` (µg)."""
        if end <= begin:
            return 0.0
        points = sorted({begin, end, *(p.since for p in plans if begin < p.since < end)})
        total = 0.0
        for x, y in itertools.pairwise(points):
            schedule, _, pending = self.at(plans, x)
            if not pending:
                total += schedule.expected_total_ug(y) - schedule.expected_total_ug(x)
        return total


def expected_over_ledger_ug(state: DoseState, schedule: Schedule | Timeline) -> float:
    """The dose planned over the time the ledger covers (µg).

    The ledger starts at the first pump reading, so a daemon started mid-protocol
    compares what it saw with what was planned over the same span. Declared plans
    count from their start (a ``Timeline``; a bare ``Schedule`` knows no plans).
    """
    if state.ledger_start is None or state.ledger_time is None:
        return 0.0
    timeline = schedule if isinstance(schedule, Timeline) else Timeline(schedule)
    return timeline.expected_between(state.plans, state.ledger_start, state.ledger_time)


def _cumulative(state: DoseState, timeline: Timeline, th: DoseThresholds) -> _Finding | None:
    at, begin = state.ledger_time, state.ledger_start
    if at is None or begin is None:
        return None
    if (at - max(begin, timeline.base.start)).total_seconds() < th.cumulative_grace_s:
        return None
    expected = expected_over_ledger_ug(state, timeline)
    if expected <= 0:
        return None
    deviation_pct = (state.delivered_ug - expected) / expected * 100.0
    if abs(deviation_pct) <= th.cumulative_tolerance_pct:
        return None
    over = deviation_pct > 0
    bed = timeline.bed
    before: dict[str, Any] = {}
    note = Text("", "")
    if bed is not None and bed.starts_partway:
        # A watch started partway: the totals cover the watched span only.
        known = bed.delivered_before_watch_ug
        before = {"before_watch_ug": "unknown" if known is None else known}
        shown_en = "unknown" if known is None else f"{fmt(known, 1, 'en')} µg declared"
        shown_fr = "inconnu" if known is None else f"{fmt(known, 1, 'fr')} µg déclarés"
        note = Text(
            f" Watched span only; before the watch: {shown_en}.",
            f" Période surveillée seulement ; avant la surveillance : {shown_fr}.",
        )
    return _Finding(
        Priority.MEDIUM,
        Text(
            f"Cumulative dose {'above' if over else 'below'} plan: "
            f"{fmt(state.delivered_ug, 1, 'en')} µg delivered, {fmt(expected, 1, 'en')} µg "
            f"expected by {_when(at)} ({fmt(deviation_pct, 0, 'en')} %).{note.en}",
            f"Dose cumulée {'au-dessus' if over else 'en dessous'} du plan : "
            f"{fmt(state.delivered_ug, 1, 'fr')} µg délivrés, {fmt(expected, 1, 'fr')} µg "
            f"attendus au {_when(at)} ({fmt(deviation_pct, 0, 'fr')} %).{note.fr}",
        ),
        {"direction": "over" if over else "under", **before},
        deviation_pct,
        "%",
    )


def _bag_low(state: DoseState, th: DoseThresholds, now: datetime) -> _Finding | None:
    bag, last = state.bag, state.last
    if bag is None or bag.volume_ml is None or last is None:
        return None
    if (now - last.time).total_seconds() > th.reading_stale_s:
        return None
    if _infusing_rate(last) <= 0:
        return None
    # Time left at the steady rate: a spike (a flush, a bolus) is BOLUS_SUSPECTED's
    # business and says nothing of when the bag runs out.
    rate = state.steady_rate_ml_per_h or _infusing_rate(last)
    remaining_ml = max(0.0, bag.volume_ml - th.bag_line_fill_ml - bag.infused_ml)
    left_s = remaining_ml / rate * 3600.0
    if left_s > th.bag_low_s:
        return None
    return _Finding(
        Priority.LOW,
        Text(
            f"Bag {bag.bag_id} low: {fmt(remaining_ml, 1, 'en')} mL left at "
            f"{fmt(rate, 2, 'en')} mL/h, about {_dur(left_s, 'en')}. Prepare the next bag.",
            f"Poche {bag.bag_id} bientôt vide : {fmt(remaining_ml, 1, 'fr')} mL restants à "
            f"{fmt(rate, 2, 'fr')} mL/h, environ {_dur(left_s, 'fr')}. Préparer la poche "
            "suivante.",
        ),
        {"bag_id": bag.bag_id},
        remaining_ml,
        "mL",
    )


def _bolus(state: DoseState, th: DoseThresholds, now: datetime) -> _Finding | None:
    if state.bolus_at is None or (now - state.bolus_at).total_seconds() >= th.bolus_hold_s:
        return None
    d = dict(state.bolus_details)
    near = bool(d.get("near_bag_change"))
    cause = d.get("cause")
    if cause == "volume":
        en_what = f"{fmt(float(d['excess_ml']), 1, 'en')} mL more than the pump rate explains"
        fr_what = f"{fmt(float(d['excess_ml']), 1, 'fr')} mL de plus que le débit ne l'explique"
        if "excess_ug" in d:
            en_what += f" ({fmt(float(d['excess_ug']), 2, 'en')} µg)"
            fr_what += f" ({fmt(float(d['excess_ug']), 2, 'fr')} µg)"
    elif cause == "rate_spike":
        en_what = f"rate spike to {fmt(float(d['rate_ml_per_h']), 1, 'en')} mL/h"
        fr_what = f"pic de débit à {fmt(float(d['rate_ml_per_h']), 1, 'fr')} mL/h"
    else:
        en_what, fr_what = "pump purging", "purge de la pompe"
    en_tail = " at a bag change: was the line flushed?" if near else "."
    fr_tail = " lors d'un changement de poche : la ligne a-t-elle été rincée ?" if near else "."
    return _Finding(
        Priority.HIGH,
        Text(
            f"Bolus suspected at {_when(state.bolus_at)}: {en_what}{en_tail} Never flush the line (label).",
            f"Bolus suspecté le {_when(state.bolus_at)} : {fr_what}{fr_tail} "
            "Ne jamais rincer la ligne (RCP).",
        ),
        d,
        float(d["excess_ml"]) if cause == "volume" else None,
        "mL" if cause == "volume" else None,
    )


def _after_end(schedule: Schedule, delivered: float | None, now: datetime) -> _Finding | None:
    if now < schedule.end or delivered is None or delivered <= 0:
        return None
    return _Finding(
        Priority.MEDIUM,
        Text(
            f"Still infusing {fmt(delivered, 1, 'en')} µg/day after the protocol ended at "
            f"{_when(schedule.end)}.",
            f"Perfusion toujours en cours ({fmt(delivered, 1, 'fr')} µg/jour) après la fin "
            f"du protocole le {_when(schedule.end)}.",
        ),
        {"protocol_end": iso(schedule.end)},
        delivered,
        UG_PER_DAY,
    )


def _schedule_edges(schedule: Schedule, th: DoseThresholds) -> list[datetime]:
    """Every time at which a check of ``_evaluate`` against ``schedule`` may change its
    answer: the protocol's start, stop and end, each step's start and end (the dose
    expected), and each step-up with the windows the rate checks open around it."""
    # The end is the last step's end or the stop.
    edges = [schedule.start]
    if schedule.stop is not None:
        edges.append(schedule.stop)
    for step in schedule.steps:
        edges += [schedule.step_time(step), schedule.step_end(step)]
    offsets_s = (
        0.0,
        -th.step_up_due_before_s,
        -th.step_window_s,
        th.step_window_s,
        -th.step_early_horizon_s,
    )
    for up in schedule.step_ups():
        edges += [up.time + timedelta(seconds=s) for s in offsets_s]
    return edges


def _with_rule(finding: _Finding, rule: str, named: Text) -> _Finding:
    """``finding`` naming the dose rule it applied, in its details and its message."""
    message = finding.message
    return replace(
        finding,
        details={**finding.details, "rule": rule},
        message=Text(f"{message.en} Rule: {named.en}.", f"{message.fr} Règle : {named.fr}."),
    )


def _restart_reason(state: DoseState) -> _Finding | None:
    prompt = state.prompt
    if prompt is None:
        return None
    since, resumed = parse_iso(prompt["since"]), parse_iso(prompt["resumed_at"])
    days = (resumed - since).total_seconds() / 86_400.0
    if prompt["reason"] == "break_over_7_days":
        en = (
            f"Infusion restarted at {_when(resumed)} after a break of {fmt(days, 1, 'en')} days: "
            "the label starts a new cycle after more than 7. Declare the new cycle "
            "(dose_declaration new_cycle); until then the old calendar is checked."
        )
        fr = (
            f"Perfusion reprise le {_when(resumed)} après {fmt(days, 1, 'fr')} jours d'arrêt : "
            "au-delà de 7, le RCP commence un nouveau cycle. Déclarer le nouveau cycle "
            "(dose_declaration new_cycle) ; d'ici là l'ancien calendrier est contrôlé."
        )
    else:
        reaction = prompt["reason"].removesuffix("_grade_3")
        en = (
            f"Infusion restarted at {_when(resumed)} after a declared {reaction} grade 3: the label "
            "restarts at the first step (9 µg/day). Declare the restart "
            "(dose_declaration restart_after_reaction); until then the calendar is checked."
        )
        fr = (
            f"Perfusion reprise le {_when(resumed)} après un {reaction} de grade 3 déclaré : le RCP "
            "reprend au premier palier (9 µg/jour). Déclarer la reprise "
            "(dose_declaration restart_after_reaction) ; d'ici là le calendrier est contrôlé."
        )
    details = {"reason": prompt["reason"], "since": prompt["since"], "rule": "label_interruptions"}
    return _Finding(Priority.MEDIUM, Text(en, fr), details, None, None, Kind.TECHNICAL)


def _discontinuation(state: DoseState, th: DoseThresholds, now: datetime) -> _Finding | None:
    """DISCONTINUATION_RULE: a reason to discontinue is known and a later reading infuses."""
    last = state.last
    if last is None or _infusing_rate(last) <= 0 or (now - last.time).total_seconds() > th.reading_stale_s:
        return None
    known = [t for t in triggers(state.reactions, state.plans) if last.time > t.time]
    if not known:
        return None
    top = max(known, key=lambda t: t.priority.rank)
    priority = top.priority
    verb_en = "consider discontinuing" if priority is Priority.MEDIUM else "discontinue"
    verb_fr = "envisager l'arrêt" if priority is Priority.MEDIUM else "arrêt"
    return _Finding(
        priority,
        Text(
            f"Infusion still running although the label says {verb_en}: "
            + "; ".join(t.text.en for t in known)
            + ". The daemon stops nothing: the physician decides.",
            f"Perfusion toujours en cours alors que le RCP indique : {verb_fr} ; "
            + " ; ".join(t.text.fr for t in known)
            + ". Le démon n'arrête rien : le médecin décide.",
        ),
        {"rule": top.rule, "rules": [t.rule for t in known], "since": iso(known[0].time)},
    )


def _signature(finding: _Finding) -> str:
    return json.dumps([finding.priority.value, dict(finding.details)], sort_keys=True)


# --------------------------------------------------------------------------- the rule


class DoseRule:
    """The dose-schedule rule of one bed (implements ``daemon.rules.Rule[DoseState]``)."""

    name = RULE_NAME

    consumes = (PumpReading, BagHung, Observation, Tick)
    """The events this rule reads (``daemon.rules.Rule``). Its checks judge time passing
    at the daemon's ``now``; the tick is what brings them that time, so a vital sign or
    a link's health, which change nothing in the ledger, need not run them again."""

    def __init__(
        self,
        bed: BedConfig,
        schedule: Schedule,
        thresholds: DoseThresholds,
        initial_bag: BagHung | None = None,
        config: Config | None = None,
    ) -> None:
        """Watch ``bed`` on ``schedule``; ``initial_bag`` is a bag known from the config;
        ``config`` supplies site protocols for declared plans (built-ins only without it)."""
        self.bed = bed
        self.schedule = schedule
        self.thresholds = thresholds
        self.timeline = Timeline(schedule, bed, config)
        self._initial_bag = initial_bag

    def initial(self) -> DoseState:
        """No reading yet; the configured bag, if any, is on the line."""
        state = DoseState()
        return _hang(state, self._initial_bag) if self._initial_bag is not None else state

    def step(
        self, state: DoseState, event: Event, now: datetime
    ) -> tuple[DoseState, Sequence[AlertCandidate]]:
        """Update the ledger with ``event`` and re-evaluate every check at ``now``."""
        if not isinstance(event, self.consumes):
            return state, ()
        if isinstance(event, PumpReading):
            if event.bed != self.bed.id:
                return state, ()
            before = state.last
            schedule, _, _ = self.timeline.at(state.plans, event.time)
            state = _ingest(state, event, schedule, self.thresholds)
            if state.last is not before:
                state = self._track_break(state, before, event)
        elif isinstance(event, BagHung):
            if event.bed != self.bed.id:
                return state, ()
            state = _hang(state, event)
        elif isinstance(event, Observation):
            if event.bed != self.bed.id or event.dose_declaration is None:
                return state, ()
            state = self._declare(state, event)
        return self._evaluate(state, now)

    @functools.cached_property
    def _calendar_us(self) -> array[int]:
        """Where the calendar's checks change their answer (``idle_until``), in time order,
        as microseconds since the epoch: 8 bytes each where a datetime takes 48, and every
        bed keeps its own. Worked out at the first tick, not while the daemon starts."""
        return array("q", sorted(map(epoch_us, _schedule_edges(self.timeline.base, self.thresholds))))

    def idle_until(self, state: DoseState, now: datetime) -> datetime | None:
        """Until when a tick changes nothing (``daemon.rules.Idle``): the next time, from
        ``now`` on, at which a check of ``_evaluate`` compares the clock with something
        else (a declared plan's ``since`` may lie ahead: an observation's own time)."""
        calendar = self._calendar_us
        at = bisect.bisect_left(calendar, epoch_us(now))
        edges = [from_epoch_us(calendar[at])] if at < len(calendar) else []
        if state.plans:
            edges += [plan.since for plan in state.plans]
            for schedule in self.timeline.plan_schedules(state.plans):
                edges += _schedule_edges(schedule, self.thresholds)
        th = self.thresholds
        if state.last is not None:
            # The reading goes stale: delivered and programmed doses, bag low, discontinuation.
            edges.append(state.last.time + timedelta(seconds=th.reading_stale_s))
        if state.interrupted_since is not None:
            since = state.interrupted_since
            edges += [
                since + timedelta(seconds=th.interruption_delay_s),
                since + timedelta(seconds=th.interruption_supervised_restart_s),
                since + timedelta(seconds=th.interruption_new_cycle_s),
            ]
        edges += [since + timedelta(seconds=th.rate_delay_s) for since in state.pending.values()]
        if state.bolus_at is not None:
            edges.append(state.bolus_at + timedelta(seconds=th.bolus_hold_s))
        return idle_until_edge(edges, now)

    # ----------------------------------------------------------------- declarations

    def _track_break(self, state: DoseState, before: Reading | None, reading: PumpReading) -> DoseState:
        """Note a stop after infusing, and the restart that ends it (anchoring plans)."""
        was_infusing = before is not None and _infusing_rate(before) > 0
        infusing = _infusing_rate(reading) > 0
        stopped = not infusing and (
            reading.state is not PumpState.INFUSING or reading.rate_ml_per_h is not None
        )
        open_break = state.break_start is not None and state.break_end is None
        if stopped and was_infusing and not open_break:
            return replace(state, break_start=reading.time, break_end=None)
        if not (infusing and open_break and state.break_start is not None):
            return state
        since = state.break_start
        plans = list(state.plans)
        for i, plan in enumerate(plans):
            if plan.start is None:
                plans[i] = self._anchored(plans[:i], plan, reading.time)
        state = replace(state, break_end=reading.time, plans=tuple(plans))
        return replace(state, prompt=self._prompt(state, since, reading.time))

    def _anchored(self, before: Sequence[Plan], plan: Plan, start: datetime) -> Plan:
        stop = None if plan.rule == NEW_CYCLE else self.timeline.restart_stop(before, plan, start)
        return replace(plan, start=start, stop=stop)

    def _prompt(self, state: DoseState, since: datetime, resumed: datetime) -> Mapping[str, str] | None:
        """RESTART_REASON_NEEDED's reason when the infusion resumes at ``resumed``, if any."""
        if not self.thresholds.restart_reason_prompt:
            return None
        if (resumed - since).total_seconds() > self.thresholds.interruption_new_cycle_s and not any(
            p.rule == NEW_CYCLE and p.since >= since for p in state.plans
        ):
            return {"reason": "break_over_7_days", "since": iso(since), "resumed_at": iso(resumed)}
        unanswered = [
            r
            for r in state.reactions
            if r.grade == RESTART_GRADE
            and r.reaction != SEIZURE
            and r.time <= resumed
            and not any(p.declared_at >= r.time for p in state.plans)
        ]
        if unanswered:
            return {
                "reason": f"{unanswered[-1].reaction}_grade_3",
                "since": iso(since),
                "resumed_at": iso(resumed),
                "reaction_at": iso(unanswered[-1].time),
            }
        return None

    @staticmethod
    def _answered(state: DoseState) -> bool:
        prompt = state.prompt
        if prompt is None:
            return True
        if prompt["reason"] == "break_over_7_days":
            since = parse_iso(prompt["since"])
            return any(p.rule == NEW_CYCLE and p.since >= since for p in state.plans)
        reaction_at = parse_iso(prompt["reaction_at"])
        return any(p.declared_at >= reaction_at for p in state.plans)

    def _first_step_ug_per_day(self, protocol: str, time: datetime) -> float:
        restart = restart_schedule(
            self.bed, self.timeline.config, protocol, start=time, stop=time + timedelta(days=366)
        )
        return restart.steps[0].dose_ug_per_day

    def _declare(self, state: DoseState, obs: Observation) -> DoseState:
        """Remember what staff declared; a restart or a new cycle becomes the plan in force."""
        declaration = obs.dose_declaration
        assert declaration is not None
        time = obs.time
        schedule, _, _ = self.timeline.at(state.plans, time)
        if declaration.kind in (DeclarationKind.REACTION, DeclarationKind.SEIZURE):
            reaction = declaration.reaction
            at_first = False
            if reaction is Reaction.NEUROTOXICITY and declaration.grade == RESTART_GRADE:
                expected = schedule.expected_dose_ug_per_day(time)
                first = self._first_step_ug_per_day(schedule.name, time)
                at_first = _within(expected, first, self.thresholds.rate_tolerance_pct)
            record = DeclaredReaction(
                time, reaction.value if reaction is not None else SEIZURE, declaration.grade, obs.by, at_first
            )
            plans = state.plans
            last = plans[-1] if plans else None
            if (
                declaration.grade is not None
                and declaration.grade >= RESTART_GRADE
                and last is not None
                and last.rule != NEW_CYCLE
                and last.start is not None
                and time >= last.start
            ):
                # A recurrence after the restart: the label's higher dose is not due.
                plans = (*plans[:-1], replace(last, step_up=False))
            reactions = (*state.reactions, record)[-MAX_REMEMBERED:]
            return replace(state, reactions=reactions, plans=plans)

        if state.break_start is not None and state.break_start <= time:
            since, start = state.break_start, state.break_end
        else:
            since, start = time, time
        cycle = schedule.name
        if declaration.kind is DeclarationKind.NEW_CYCLE:
            plan = Plan(NEW_CYCLE, since, time, obs.by, next_cycle_protocol(cycle, self.timeline.config))
        else:
            reaction = declaration.reaction
            assert reaction is not None
            onset = declaration.onset
            if onset is None:
                same = [
                    r.time
                    for r in state.reactions
                    if r.reaction == reaction.value and (r.grade or 0) >= RESTART_GRADE and r.time <= time
                ]
                onset = same[-1] if same else since
            resolved = declaration.resolved_at or time
            plan = Plan(
                restart_rule(reaction),
                since,
                time,
                obs.by,
                cycle,
                reaction=reaction.value,
                resolution_s=max(0.0, (resolved - onset).total_seconds()),
            )
        if start is not None:
            plan = self._anchored(state.plans, plan, start)
        state = replace(state, plans=(*state.plans, plan)[-MAX_REMEMBERED:])
        return replace(state, prompt=None) if self._answered(state) else state

    # ----------------------------------------------------------------- checks

    def _evaluate(self, state: DoseState, now: datetime) -> tuple[DoseState, list[AlertCandidate]]:
        th = self.thresholds
        schedule, rule, _ = self.timeline.at(state.plans, now)
        delivered = delivered_rate_ug_per_day(state, now, th.reading_stale_s)
        programmed = programmed_dose_ug_per_day(state, now, th.reading_stale_s)
        present, delayed = _rate_findings(schedule, th, delivered, now, programmed)
        after_end = _after_end(schedule, delivered, now)
        if after_end is not None:
            delayed[INFUSION_AFTER_PROTOCOL_END] = after_end
        state, interrupted = _interruption(state, schedule, th, now)
        for condition, finding in (
            (INFUSION_INTERRUPTED, interrupted),
            (CUMULATIVE_DOSE_DEVIATION, _cumulative(state, self.timeline, th)),
            (BAG_LOW, _bag_low(state, th, now)),
            (BOLUS_SUSPECTED, _bolus(state, th, now)),
            (RESTART_REASON_NEEDED, _restart_reason(state)),
            (DISCONTINUATION_RULE, _discontinuation(state, th, now)),
        ):
            if finding is not None:
                present[condition] = finding
        if not (present or delayed or state.pending or state.active):
            return state, []  # what the steps below give then, at a fraction of the cost
        named = rule_text(rule, schedule.name)
        for findings in (present, delayed):
            for condition, finding in findings.items():
                if condition in _SCHEDULED:
                    findings[condition] = _with_rule(finding, rule, named)

        pending = {c: t for c, t in state.pending.items() if c in delayed}
        for condition, finding in delayed.items():
            since = pending.setdefault(condition, now)
            if (now - since).total_seconds() >= th.rate_delay_s:
                present[condition] = finding

        active = dict(state.active)
        out: list[AlertCandidate] = []
        for condition in CONDITIONS:
            finding = present.get(condition)
            if finding is None:
                signature = active.pop(condition, None)
                if signature is not None:
                    out.append(self._cleared(condition, now, signature))
                continue
            signature = _signature(finding)
            if active.get(condition) != signature:
                active[condition] = signature
                out.append(self._candidate(condition, now, finding))
        if pending != state.pending or active != state.active:
            state = replace(state, pending=pending, active=active)
        return state, out

    def _cleared(self, condition: str, now: datetime, signature: str) -> AlertCandidate:
        priority = Priority(json.loads(signature)[0])
        return AlertCandidate(condition, self.bed.ward, self.bed.id, now, present=False, priority=priority)

    def _candidate(self, condition: str, now: datetime, finding: _Finding) -> AlertCandidate:
        return AlertCandidate(
            condition,
            self.bed.ward,
            self.bed.id,
            now,
            present=True,
            kind=finding.kind,
            priority=finding.priority,
            value=finding.value,
            unit=finding.unit,
            message=finding.message,
            details=dict(finding.details),
        )

    def dump(self, state: DoseState) -> Mapping[str, Any]:
        """The state as JSON-compatible data (times as RFC 3339 strings)."""
        return dump_state(state)

    def load(self, data: Mapping[str, Any]) -> DoseState:
        """A state from ``dump``'s output."""
        return load_state(data)


def dump_state(state: DoseState) -> dict[str, Any]:
    """``state`` as JSON-compatible data."""
    bag, last, mark = state.bag, state.last, state.mark
    return {
        "version": 1,
        "bag": None
        if bag is None
        else {
            "bag_id": bag.bag_id,
            "concentration_ug_per_ml": bag.concentration_ug_per_ml,
            "volume_ml": bag.volume_ml,
            "hung_at": iso(bag.hung_at),
            "infused_ml": bag.infused_ml,
        },
        "last": None
        if last is None
        else {
            "pump": last.pump,
            "time": iso(last.time),
            "state": last.state.value,
            "rate_ml_per_h": last.rate_ml_per_h,
            "volume_infused_ml": last.volume_infused_ml,
        },
        "mark": None
        if mark is None
        else {
            "pump": mark.pump,
            "time": iso(mark.time),
            "volume_infused_ml": mark.volume_infused_ml,
            "rate_ml_per_h": mark.rate_ml_per_h,
        },
        "delivered_ug": state.delivered_ug,
        "delivered_ml": state.delivered_ml,
        "unattributed_ml": state.unattributed_ml,
        "ledger_start": iso_or_none(state.ledger_start),
        "ledger_time": iso_or_none(state.ledger_time),
        "gap_s": state.gap_s,
        "steady_rate_ml_per_h": state.steady_rate_ml_per_h,
        "interrupted_since": iso_or_none(state.interrupted_since),
        "bag_changed_at": iso_or_none(state.bag_changed_at),
        "bolus_at": iso_or_none(state.bolus_at),
        "bolus_details": dict(state.bolus_details),
        "pending": {c: iso(t) for c, t in state.pending.items()},
        "active": dict(state.active),
        "plans": [dump_plan(p) for p in state.plans],
        "reactions": [dump_reaction(r) for r in state.reactions],
        "break_start": iso_or_none(state.break_start),
        "break_end": iso_or_none(state.break_end),
        "prompt": None if state.prompt is None else dict(state.prompt),
        "previous_bag": None if state.previous_bag is None else _dump_bag(state.previous_bag),
        "increments": [
            [iso(i.time), i.ml, i.concentration_ug_per_ml, iso_or_none(i.hung_at)] for i in state.increments
        ],
    }


def _dump_bag(bag: Bag) -> dict[str, Any]:
    return {
        "bag_id": bag.bag_id,
        "concentration_ug_per_ml": bag.concentration_ug_per_ml,
        "volume_ml": bag.volume_ml,
        "hung_at": iso(bag.hung_at),
        "infused_ml": bag.infused_ml,
    }


def _load_bag(bag: Mapping[str, Any]) -> Bag:
    return Bag(
        str(bag["bag_id"]),
        float(bag["concentration_ug_per_ml"]),
        None if bag["volume_ml"] is None else float(bag["volume_ml"]),
        parse_iso(bag["hung_at"]),
        float(bag["infused_ml"]),
    )


def load_state(data: Mapping[str, Any]) -> DoseState:
    """A ``DoseState`` from ``dump_state``'s output."""
    bag = data.get("bag")
    last = data.get("last")
    mark = data.get("mark")
    return DoseState(
        bag=None
        if bag is None
        else Bag(
            str(bag["bag_id"]),
            float(bag["concentration_ug_per_ml"]),
            None if bag["volume_ml"] is None else float(bag["volume_ml"]),
            parse_iso(bag["hung_at"]),
            float(bag["infused_ml"]),
        ),
        last=None
        if last is None
        else Reading(
            str(last["pump"]),
            parse_iso(last["time"]),
            PumpState(last["state"]),
            None if last["rate_ml_per_h"] is None else float(last["rate_ml_per_h"]),
            None if last["volume_infused_ml"] is None else float(last["volume_infused_ml"]),
        ),
        mark=None
        if mark is None
        else VolumeMark(
            str(mark["pump"]),
            parse_iso(mark["time"]),
            float(mark["volume_infused_ml"]),
            float(mark["rate_ml_per_h"]),
        ),
        delivered_ug=float(data["delivered_ug"]),
        delivered_ml=float(data["delivered_ml"]),
        unattributed_ml=float(data["unattributed_ml"]),
        ledger_start=parse_iso_or_none(data["ledger_start"]),
        ledger_time=parse_iso_or_none(data["ledger_time"]),
        gap_s=float(data["gap_s"]),
        steady_rate_ml_per_h=None
        if data["steady_rate_ml_per_h"] is None
        else float(data["steady_rate_ml_per_h"]),
        interrupted_since=parse_iso_or_none(data["interrupted_since"]),
        bag_changed_at=parse_iso_or_none(data["bag_changed_at"]),
        bolus_at=parse_iso_or_none(data["bolus_at"]),
        bolus_details=dict(data["bolus_details"]),
        pending={str(c): parse_iso(t) for c, t in dict(data["pending"]).items()},
        active={str(c): str(s) for c, s in dict(data["active"]).items()},
        # States written before declared plans existed have none of what follows.
        plans=tuple(load_plan(p) for p in data.get("plans", ())),
        reactions=tuple(load_reaction(r) for r in data.get("reactions", ())),
        break_start=parse_iso_or_none(data.get("break_start")),
        break_end=parse_iso_or_none(data.get("break_end")),
        prompt=None if data.get("prompt") is None else {str(k): str(v) for k, v in data["prompt"].items()},
        previous_bag=None if data.get("previous_bag") is None else _load_bag(data["previous_bag"]),
        increments=tuple(
            Increment(
                parse_iso(t),
                float(ml),
                None if conc is None else float(conc),
                parse_iso_or_none(hung),
            )
            for t, ml, conc, hung in data.get("increments", ())
        ),
    )


# --------------------------------------------------------------------------- factory


def configured_bag(config: Config, bed: BedConfig) -> BagHung | None:
    """The most recent bag the config announces for ``bed`` (on the line at start)."""
    bags = [b for b in config.bags if b.bed == bed.id]
    if not bags:
        return None
    bag = max(bags, key=lambda b: b.hung_at)
    return BagHung(bed.ward, bed.id, bag.hung_at, bag.bag_id, bag.concentration_ug_per_ml, bag.volume_ml)


def dose_rules(config: Config, bed: BedConfig) -> list[Rule[Any]]:
    """The dose rules of ``bed``: one ``DoseRule`` on the bed's resolved protocol."""
    schedule = schedule_for(bed, config)
    thresholds = config.thresholds_for(bed.id).dose
    return [DoseRule(bed, schedule, thresholds, configured_bag(config, bed), config)]


# --------------------------------------------------------------------------- views


def bed_state(source: DoseState | RuleEngine, bed: BedConfig) -> DoseState:
    """The dose state of ``bed``, given the state itself or the engine that holds it."""
    if isinstance(source, DoseState):
        return source
    state = source.state(bed.id, RULE_NAME)
    if not isinstance(state, DoseState):
        raise TypeError(f"rule {RULE_NAME!r} of bed {bed.id} holds {type(state).__name__}")
    return state


def _timeline(source: DoseState | RuleEngine, bed: BedConfig, config: Config | None) -> Timeline:
    """The bed's timeline: when ``source`` is the engine that judges the bed, the one its
    dose rule was built with, so that a view shows what the rule goes by (and resolving
    the protocol again for every view of every bed was a third of the ward page's
    time); else resolved from ``config``."""
    if isinstance(source, RuleEngine):
        rule = source.rule(bed.id, RULE_NAME)
        if isinstance(rule, DoseRule) and rule.bed == bed:
            return rule.timeline
    return Timeline(schedule_for(bed, config), bed, config)


def dose_point(
    state: DoseState | RuleEngine,
    bed: BedConfig,
    now: datetime,
    *,
    config: Config | None = None,
) -> Point | None:
    """The ``dose`` measurement at ``now``: expected and delivered µg/day and totals.

    ``None`` before the protocol starts. The delivered rate is left out when unknown
    (a gap stays a gap). ``config`` supplies site protocols and thresholds; without it
    only built-in protocols and default thresholds are known.
    """
    timeline = _timeline(state, bed, config)
    base = timeline.base
    state = bed_state(state, bed)
    schedule, _, _ = timeline.at(state.plans, now)
    th = config.thresholds_for(bed.id).dose if config is not None else DoseThresholds()
    if now < base.start:
        return None
    fields: dict[str, float | int | str | bool] = {
        "protocol_day": schedule.protocol_day(now),
        "expected_ug_per_day": schedule.expected_dose_ug_per_day(now),
        "expected_total_ug": timeline.expected_between(state.plans, base.start, now),
        "delivered_total_ug": state.delivered_ug,
        "expected_ledger_total_ug": expected_over_ledger_ug(state, timeline),
        "delivered_total_ml": state.delivered_ml,
        "unattributed_ml": state.unattributed_ml,
        "gap_s": state.gap_s,
    }
    if bed.delivered_before_watch_ug is not None:
        fields["delivered_before_watch_ug"] = bed.delivered_before_watch_ug
    delivered = delivered_rate_ug_per_day(state, now, th.reading_stale_s)
    if delivered is not None:
        fields["delivered_ug_per_day"] = delivered
    return Point(MEASUREMENT, {"ward": bed.ward, "bed": bed.id, "protocol": bed.protocol}, fields, now)


def next_step(
    state: DoseState | RuleEngine, bed: BedConfig, now: datetime, *, config: Config | None = None
) -> tuple[datetime, float] | None:
    """The next change of the schedule in force at ``now``: when, and the µg/day it
    brings (0 at the protocol's end); ``None`` once the protocol has ended."""
    timeline = _timeline(state, bed, config)
    schedule, _, _ = timeline.at(bed_state(state, bed).plans, now)
    when = schedule.next_step_time(now)
    if when is None:
        return None
    return when, schedule.expected_dose_ug_per_day(when) if when < schedule.end else 0.0


def status_lines(
    state: DoseState | RuleEngine,
    bed: BedConfig,
    now: datetime,
    *,
    config: Config | None = None,
    language: str = "en",
) -> list[str]:
    """What ``wardd status`` prints for one bed's dose (open alerts are listed apart)."""
    state = bed_state(state, bed)
    timeline = Timeline(schedule_for(bed, config), bed, config)
    schedule, rule, _ = timeline.at(state.plans, now)
    th = config.thresholds_for(bed.id).dose if config is not None else DoseThresholds()
    fr = language == "fr"
    day = schedule.protocol_day(now)
    delivered = delivered_rate_ug_per_day(state, now, th.reading_stale_s)
    nxt = schedule.next_step_time(now)
    lang = "fr" if fr else "en"
    rate_text = (
        f"{fmt(delivered, 1, lang)} µg/" + ("jour" if fr else "day")
        if delivered is not None
        else ("inconnu (pas de lecture récente)" if fr else "unknown (no recent reading)")
    )
    per_day = "µg/jour" if fr else "µg/day"
    if day == 0:
        day_text = ("débute le " if fr else "starts ") + _when(schedule.start)
    elif now >= schedule.end:
        day_text = ("terminé le " if fr else "ended ") + _when(schedule.end)
    else:
        day_text = f"{'jour' if fr else 'day'} {day}"
    bed_label = f"{bed.ward}/{bed.id}"
    lines = [
        f"{bed_label}: protocol {schedule.name}, {day_text}"
        if not fr
        else f"{bed_label} : protocole {schedule.name}, {day_text}",
        ("  dose attendue : " if fr else "  expected dose: ")
        + f"{fmt(schedule.expected_dose_ug_per_day(now), 1, lang)} {per_day}",
        ("  dose délivrée : " if fr else "  delivered dose: ") + rate_text,
        ("  total attendu : " if fr else "  expected total: ")
        + f"{fmt(timeline.expected_between(state.plans, timeline.base.start, now), 1, lang)} µg",
        ("  total délivré : " if fr else "  delivered total: ")
        + (
            (
                f"{fmt(state.delivered_ug, 1, lang)} µg"
                f" ({'du' if fr else 'from'} {_when(state.ledger_start)} "
                f"{'au' if fr else 'to'} {_when(state.ledger_time)}; "
                f"{'prévu sur cette période' if fr else 'planned over that span'} "
                f"{fmt(expected_over_ledger_ug(state, timeline), 1, lang)} µg)"
            )
            if state.ledger_time is not None and state.ledger_start is not None
            # No pump volume yet: nothing measured, which is not 0 µg delivered.
            else ("pas encore de volume lu sur la pompe" if fr else "no pump volume read yet")
        ),
        *_before_watch(bed, lang),
        ("  prochain palier : " if fr else "  next step: ") + (_when(nxt) if nxt is not None else "-"),
        ("  règle : " if fr else "  dose rule: ") + rule_text(rule, schedule.name).get(lang),
    ]
    if state.bag is not None:
        lines.append(
            ("  poche : " if fr else "  bag: ")
            + f"{state.bag.bag_id}, {fmt(state.bag.concentration_ug_per_ml, 4, lang)} µg/mL"
        )
    if state.unattributed_ml > 0:
        lines.append(
            f"  {fmt(state.unattributed_ml, 1, lang)} mL "
            + ("perfusés sans poche connue" if fr else "infused with no bag known")
        )
    return lines


def _before_watch(bed: BedConfig, lang: str) -> list[str]:
    """What a watch started partway says of the doses before it (README, "Admissions")."""
    if not bed.starts_partway or bed.watch_from is None:
        return []
    fr = lang == "fr"
    began = _when(bed.watch_from)
    if bed.delivered_before_watch_ug is None:
        known = "inconnu" if fr else "unknown"
    else:
        known = f"{fmt(bed.delivered_before_watch_ug, 1, lang)} µg " + (
            "déclarés par l'équipe" if fr else "declared by staff"
        )
    span = (
        "les contrôles de dose ne jugent que la période surveillée"
        if fr
        else "the dose checks judge only the watched span"
    )
    if fr:
        return [f"  avant la surveillance (début {began}) : {known} ; {span}"]
    return [f"  before the watch (began {began}): {known}; {span}"]


# --------------------------------------------------------------------------- bag input

_BAG_KEYS = frozenset({"bag_id", "concentration_ug_per_ml", "volume_ml", "hung_at"})
_MAX_CONCENTRATION_UG_PER_ML = 100.0  # same bound as BagConfig; the vial is 12.5 µg/mL
_MAX_BAG_ML = 5000.0


def parse_bag(
    payload: bytes, ward: str, bed: str, where: str, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> BagHung:
    """Validate a bag announcement from MQTT; raise ``InputError`` with a stable reason.

    Whatever the bytes, the result is a ``BagHung`` or an ``InputError``. ``bag_id``
    is trimmed, then must be a device id (``daemon.ids``). Reasons: those of
    ``load_json_object`` (``too_large``, ``invalid_json``, ``too_deep``,
    ``huge_number``, ``not_object``), ``unknown_field``, ``missing_field``,
    ``bad_bag_id``, ``bad_concentration``, ``bad_volume``, ``bad_time``.
    """
    data = load_json_object(payload, where, max_bytes=max_bytes)
    unknown = set(data) - _BAG_KEYS
    if unknown:
        raise InputError("unknown_field", f"unknown field(s): {ids.shown_fields(unknown)}", where)
    missing = sorted({"bag_id", "concentration_ug_per_ml", "hung_at"} - set(data))
    if missing:
        raise InputError("missing_field", f"missing field(s): {', '.join(missing)}", where)
    bag_id = ids.bag_id(data["bag_id"], "bag_id", where)
    conc = finite_number(data["concentration_ug_per_ml"])
    if conc is None or not 0 < conc < _MAX_CONCENTRATION_UG_PER_ML:
        raise InputError(
            "bad_concentration",
            f"concentration_ug_per_ml must be a number in (0, {_MAX_CONCENTRATION_UG_PER_ML:g}), "
            f"got {ids.shown(data['concentration_ug_per_ml'])}",
            where,
        )
    volume: float | None = None
    if data.get("volume_ml") is not None:
        volume = finite_number(data["volume_ml"])
        if volume is None or not 0 < volume <= _MAX_BAG_ML:
            raise InputError(
                "bad_volume",
                f"volume_ml must be a number in (0, {_MAX_BAG_ML:g}], got {ids.shown(data['volume_ml'])}",
                where,
            )
    hung = data["hung_at"]
    hung_at: datetime | None = None
    if isinstance(hung, str):
        try:
            hung_at = parse_iso(hung)
        except ValueError:
            hung_at = None
    if hung_at is None:
        raise InputError(
            "bad_time", f"hung_at must be an RFC 3339 time with a zone, got {ids.shown(hung)}", where
        )
    return BagHung(ward, bed, hung_at, bag_id, conc, volume)
