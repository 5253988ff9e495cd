"""The label's dose rules that staff declare: restarts, new cycles, discontinuation,
late bag announcements and the < 45 kg refusal (``daemon.clinical.dose_label``, ``daemon.clinical.dose``)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon import capture
from daemon.clinical.dose import (
    DISCONTINUATION_RULE,
    RESTART_REASON_NEEDED,
    Bag,
    DoseRule,
    DoseState,
    Increment,
    Timeline,
    dose_rules,
    dump_state,
    load_state,
)
from daemon.clinical.dose_label import (
    DeclaredReaction,
    Plan,
    Trigger,
    dump_plan,
    dump_reaction,
    load_plan,
    load_reaction,
    rule_text,
    triggers,
)
from daemon.clinical.observations import parse_observation
from daemon.clinical.protocols import bsa_m2
from daemon.config import parse
from daemon.errors import ConfigError, InputError
from daemon.events import (
    AlertCandidate,
    BagHung,
    DeclarationKind,
    DoseDeclaration,
    Event,
    Observation,
    Priority,
    PumpReading,
    PumpState,
    Reaction,
    Text,
    Tick,
)

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
C9 = 0.0375
C28 = 0.116667
WHERE = "ward/w1/bed/b1/observations"


def _config(protocol: str = "all-cycle1", weight_kg: float = 60, **dose: Any) -> Any:
    return parse(
        {
            "thresholds": {"dose": dose},
            "beds": [
                {
                    "ward": "w1",
                    "id": "b1",
                    "patient": "p-1",
                    "weight_kg": weight_kg,
                    "height_cm": 165,
                    "protocol": protocol,
                    "protocol_start": START.isoformat(),
                }
            ],
        }
    )


class Bed:
    """One dose rule driven by hand."""

    def __init__(self, protocol: str = "all-cycle1", weight_kg: float = 60, **dose: Any) -> None:
        config = _config(protocol, weight_kg, **dose)
        (rule,) = dose_rules(config, config.beds[0])
        assert isinstance(rule, DoseRule)
        self.rule = rule
        self.state: DoseState = rule.initial()
        self.out: list[AlertCandidate] = []
        self.volume = 0.0
        self.last: datetime | None = None
        self.rate = 0.0

    def feed(self, event: Event) -> list[AlertCandidate]:
        self.state, out = self.rule.step(self.state, event, event.time)
        self.out.extend(out)
        return list(out)

    def pump(self, when: datetime, rate: float) -> list[AlertCandidate]:
        if self.last is not None:
            self.volume += self.rate * (when - self.last).total_seconds() / 3600
        self.last, self.rate = when, rate
        state = PumpState.INFUSING if rate > 0 else PumpState.STOPPED
        return self.feed(PumpReading("w1", "b1", "p1", when, state, rate, self.volume))

    def run(self, begin: datetime, end: datetime, rate: float, step: timedelta = HOUR) -> None:
        when = begin
        while when <= end:
            self.pump(when, rate)
            when += step

    def declare(self, when: datetime, declaration: DoseDeclaration, by: str = "Dr A") -> list[AlertCandidate]:
        return self.feed(Observation("w1", "b1", when, by=by, dose_declaration=declaration))

    def expected(self, when: datetime) -> float:
        schedule, _, _ = self.rule.timeline.at(self.state.plans, when)
        return schedule.expected_dose_ug_per_day(when)

    def present(self, condition: str) -> bool:
        return condition in self.state.active


REACTION_CRS3 = DoseDeclaration(DeclarationKind.REACTION, Reaction.CRS, 3)
RESTART_CRS3 = DoseDeclaration(DeclarationKind.RESTART_AFTER_REACTION, Reaction.CRS, 3)
NEW_CYCLE = DoseDeclaration(DeclarationKind.NEW_CYCLE)


def _stopped_course(bed: Bed, stop: datetime, restart: datetime) -> None:
    bed.feed(BagHung("w1", "b1", START, "bag-1", C9))
    bed.run(START, stop - HOUR, 10)
    bed.run(stop, restart - HOUR, 0)


# --------------------------------------------------------------------------- input


def _parse(data: dict[str, Any]) -> Observation:
    now = datetime(2026, 3, 12, 8, 0, tzinfo=UTC)
    return parse_observation(json.dumps(data).encode(), "w1", "b1", WHERE, now)


def _reason(data: dict[str, Any]) -> str:
    with pytest.raises(InputError) as info:
        _parse(data)
    return info.value.reason


def test_a_declaration_alone_is_an_observation_and_survives_the_capture() -> None:
    obs = _parse(
        {
            "by": "Dr A",
            "time": "2026-03-12T07:30:00Z",
            "dose_declaration": {
                "kind": "restart_after_reaction",
                "reaction": "neurotoxicity",
                "grade": 3,
                "onset": "2026-03-05T07:00:00Z",
                "resolved_at": "2026-03-12T07:00:00Z",
            },
        }
    )
    assert obs.dose_declaration == DoseDeclaration(
        DeclarationKind.RESTART_AFTER_REACTION,
        Reaction.NEUROTOXICITY,
        3,
        datetime(2026, 3, 5, 7, tzinfo=UTC),
        datetime(2026, 3, 12, 7, tzinfo=UTC),
    )
    assert capture.from_dict(json.loads(capture.dumps(obs))) == obs
    assert _parse({"by": "Dr A", "dose_declaration": {"kind": "new_cycle"}}).dose_declaration == NEW_CYCLE


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"dose_declaration": {"kind": "new_cycle"}}, "missing_by"),
        ({"by": "A", "dose_declaration": "new_cycle"}, "bad_type"),
        ({"by": "A", "dose_declaration": {}}, "missing_field"),
        ({"by": "A", "dose_declaration": {"kind": "restart"}}, "bad_value"),
        ({"by": "A", "dose_declaration": {"kind": "new_cycle", "grade": 3}}, "unknown_field"),
        ({"by": "A", "dose_declaration": {"kind": "reaction", "reaction": "crs"}}, "missing_field"),
        ({"by": "A", "dose_declaration": {"kind": "reaction", "reaction": "ics", "grade": 3}}, "bad_value"),
        (
            {"by": "A", "dose_declaration": {"kind": "reaction", "reaction": "crs", "grade": 5}},
            "out_of_range",
        ),
        ({"by": "A", "dose_declaration": {"kind": "reaction", "reaction": "crs", "grade": 2.5}}, "bad_type"),
        ({"by": "A", "dose_declaration": {"kind": "reaction", "reaction": "crs", "grade": True}}, "bad_type"),
        (
            {
                "by": "A",
                "dose_declaration": {"kind": "restart_after_reaction", "reaction": "crs", "grade": 4},
            },
            "inconsistent",
        ),
        (
            {
                "by": "A",
                "dose_declaration": {
                    "kind": "restart_after_reaction",
                    "reaction": "other",
                    "grade": 3,
                    "onset": "2026-03-10T00:00:00Z",
                    "resolved_at": "2026-03-09T00:00:00Z",
                },
            },
            "inconsistent",
        ),
        (
            {
                "by": "A",
                "dose_declaration": {
                    "kind": "restart_after_reaction",
                    "reaction": "other",
                    "grade": 3,
                    "onset": "yesterday",
                },
            },
            "bad_time",
        ),
    ],
)
def test_declarations_are_validated_strictly(data: dict[str, Any], reason: str) -> None:
    assert _reason(data) == reason


# --------------------------------------------------------------------------- restart after a reaction


def test_a_declared_restart_expects_9_then_28_exactly_7_days_after_the_restart() -> None:
    bed = Bed()
    stop, restart = START + 8 * DAY + 2 * HOUR, START + 10 * DAY
    _stopped_course(bed, stop, restart)
    bed.declare(stop, REACTION_CRS3)
    bed.declare(restart - HOUR, RESTART_CRS3)
    assert bed.expected(restart - HOUR) == 9.0  # pending: what a restart now would expect
    bed.feed(BagHung("w1", "b1", restart, "bag-r", C9))
    bed.pump(restart, 10)
    assert bed.state.plans[-1].start == restart
    assert bed.expected(restart + 7 * DAY - SECOND) == 9.0
    assert bed.expected(restart + 7 * DAY) == 28.0
    # The cycle keeps its 28 infusion days: it ends later by the break.
    assert bed.state.plans[-1].stop == START + 28 * DAY + (restart - stop)
    assert not bed.present(RESTART_REASON_NEEDED)


def test_a_recurrence_after_the_restart_holds_the_first_step() -> None:
    bed = Bed()
    stop, restart = START + 8 * DAY, START + 9 * DAY
    _stopped_course(bed, stop, restart)
    bed.declare(restart - HOUR, RESTART_CRS3)
    bed.pump(restart, 10)
    bed.declare(restart + 2 * DAY, REACTION_CRS3)
    assert bed.expected(restart + 8 * DAY) == 9.0


def test_the_restart_of_a_child_is_per_m2() -> None:
    bed = Bed("all-cycle1-bsa", weight_kg=30)
    stop, restart = START + 8 * DAY, START + 9 * DAY
    _stopped_course(bed, stop, restart)
    bed.declare(restart - HOUR, RESTART_CRS3)
    bed.pump(restart, 10)
    area = bsa_m2(30, 165, "mosteller")
    assert bed.expected(restart + HOUR) == pytest.approx(5 * area)
    assert bed.expected(restart + 7 * DAY) == pytest.approx(15 * area)


def test_a_restart_without_declaration_after_a_grade_3_prompts() -> None:
    bed = Bed()
    stop, restart = START + 8 * DAY, START + 9 * DAY
    _stopped_course(bed, stop, restart)
    bed.declare(stop, REACTION_CRS3)
    bed.pump(restart, 10)
    assert bed.present(RESTART_REASON_NEEDED)
    assert bed.expected(restart + HOUR) == 28.0  # the calendar until someone declares
    bed.declare(restart + HOUR, RESTART_CRS3)
    assert not bed.present(RESTART_REASON_NEEDED)
    assert bed.expected(restart + 2 * HOUR) == 9.0


def test_a_restart_declared_with_the_reactions_own_time_answers_the_prompt() -> None:
    # A declaration answers a reaction declared at or before it: one charted with the
    # reaction's own time (both entered at once, sent after the pump restarted) does.
    bed = Bed()
    stop, restart = START + 8 * DAY, START + 9 * DAY
    _stopped_course(bed, stop, restart)
    bed.declare(stop, REACTION_CRS3)
    bed.pump(restart, 10)
    assert bed.present(RESTART_REASON_NEEDED)
    late = Observation("w1", "b1", stop, by="Dr A", dose_declaration=RESTART_CRS3)
    bed.state, _ = bed.rule.step(bed.state, late, restart + HOUR)
    assert bed.state.plans[-1].declared_at == stop
    assert not bed.present(RESTART_REASON_NEEDED)


def test_a_restart_declaration_records_who_when_the_break_and_how_long_the_reaction_took() -> None:
    # Without an onset, the reaction a restart follows is the latest declared reaction of
    # the same kind and of grade 3 or more, at or before the declaration.
    bed = Bed()
    stop, restart = START + 8 * DAY, START + 9 * DAY
    _stopped_course(bed, stop, restart)
    crs2 = DoseDeclaration(DeclarationKind.REACTION, Reaction.CRS, 2)
    other3 = DoseDeclaration(DeclarationKind.REACTION, Reaction.OTHER, 3)
    for when, declaration, by in (
        (stop - 3 * HOUR, REACTION_CRS3, "Dr A"),
        (stop - HOUR, REACTION_CRS3, "Dr B"),  # the onset
        (stop - 50 * MINUTE, other3, "Dr A"),  # another kind
        (stop - 40 * MINUTE, crs2, "Dr A"),  # below grade 3
        (stop + 3 * HOUR, REACTION_CRS3, "Dr A"),  # stamped after the restart declaration
    ):
        bed.declare(when, declaration, by=by)
    resolved = DoseDeclaration(
        DeclarationKind.RESTART_AFTER_REACTION, Reaction.CRS, 3, resolved_at=stop + 30 * MINUTE
    )
    bed.declare(stop + 2 * HOUR, resolved, by="Dr C")
    assert bed.state.reactions == (
        DeclaredReaction(stop - 3 * HOUR, "crs", 3, "Dr A", False),
        DeclaredReaction(stop - HOUR, "crs", 3, "Dr B", False),
        DeclaredReaction(stop - 50 * MINUTE, "other", 3, "Dr A", False),
        DeclaredReaction(stop - 40 * MINUTE, "crs", 2, "Dr A", False),
        DeclaredReaction(stop + 3 * HOUR, "crs", 3, "Dr A", False),
    )
    # Pending (the pump is still stopped): the break since ``stop``, declared by Dr C.
    assert bed.state.plans == (
        Plan(
            "restart_after_crs_g3",
            stop,
            stop + 2 * HOUR,
            "Dr C",
            "all-cycle1",
            reaction="crs",
            resolution_s=5400.0,
        ),
    )


@pytest.mark.parametrize(
    ("onset", "resolved", "took_s"),
    [
        (timedelta(hours=-6), timedelta(hours=-5), 3600.0),  # the declared onset, not the reaction's time
        (timedelta(hours=-5), timedelta(hours=-5), 0.0),
        (timedelta(hours=-5), timedelta(hours=-6), 0.0),  # resolved before its onset: never negative
    ],
)
def test_a_declared_onset_dates_the_reaction(onset: timedelta, resolved: timedelta, took_s: float) -> None:
    bed = Bed()
    stop = START + 8 * DAY
    _stopped_course(bed, stop, stop + DAY)
    bed.declare(stop - HOUR, REACTION_CRS3)
    declaration = DoseDeclaration(
        DeclarationKind.RESTART_AFTER_REACTION,
        Reaction.CRS,
        3,
        onset=stop + onset,
        resolved_at=stop + resolved,
    )
    bed.declare(stop + HOUR, declaration)
    assert bed.state.plans[-1].resolution_s == took_s


def test_a_reaction_declared_with_the_restarts_own_time_is_its_onset() -> None:
    bed = Bed()
    stop = START + 8 * DAY
    _stopped_course(bed, stop, stop + DAY)
    bed.declare(stop + HOUR, REACTION_CRS3)
    resolved = DoseDeclaration(
        DeclarationKind.RESTART_AFTER_REACTION, Reaction.CRS, 3, resolved_at=stop + 2 * HOUR
    )
    bed.declare(stop + HOUR, resolved)
    assert bed.state.plans[-1].resolution_s == 3600.0  # not from the break's start (7200 s)


def test_only_a_neurotoxicity_grade_3_is_marked_at_the_first_step() -> None:
    # domain.md section 1: a neurotoxicity of grade 3 at 9 µg/day discontinues; the
    # same grade of CRS or of another reaction does not.
    bed = Bed("ssc-14d")
    t = START + DAY  # day 2: the first step, 9 µg/day
    for reaction in (Reaction.CRS, Reaction.NEUROTOXICITY, Reaction.OTHER):
        bed.declare(t, DoseDeclaration(DeclarationKind.REACTION, reaction, 3))
    assert [r.at_first_step for r in bed.state.reactions] == [False, True, False]


def test_a_declaration_at_the_breaks_first_second_waits_for_the_restart() -> None:
    bed = Bed()
    stop = START + 8 * DAY
    _stopped_course(bed, stop, stop + DAY)
    bed.declare(stop, NEW_CYCLE, by="Dr D")
    assert bed.state.plans == (Plan("new_cycle", stop, stop, "Dr D", "all-cycle2"),)


def test_a_recurrence_at_the_restarts_first_second_holds_the_first_step_of_that_plan_only() -> None:
    bed = Bed()
    stop, restart = START + 8 * DAY, START + 9 * DAY
    _stopped_course(bed, stop, restart)
    bed.declare(stop + HOUR, NEW_CYCLE)
    bed.declare(stop + 2 * HOUR, RESTART_CRS3)
    bed.pump(restart, 10)
    first, second = bed.state.plans
    bed.declare(restart, REACTION_CRS3)
    assert bed.state.plans == (first, replace(second, step_up=False))


def test_a_grade_3_declared_at_the_second_the_pump_restarts_prompts() -> None:
    bed = Bed()
    stop, restart = START + 8 * DAY, START + 9 * DAY
    _stopped_course(bed, stop, restart)
    bed.declare(restart, REACTION_CRS3)
    bed.pump(restart, 10)
    assert bed.state.prompt is not None
    assert bed.state.prompt["reaction_at"] == "2026-03-11T08:00:00Z"


def test_a_restart_declared_with_the_reactions_time_before_the_pump_restarts_answers_it() -> None:
    bed = Bed()
    stop, restart = START + 8 * DAY, START + 9 * DAY
    _stopped_course(bed, stop, restart)
    bed.declare(stop + HOUR, REACTION_CRS3)
    bed.declare(stop + HOUR, RESTART_CRS3)
    bed.pump(restart, 10)
    assert bed.state.prompt is None
    assert not bed.present(RESTART_REASON_NEEDED)


def test_a_restart_declared_during_a_break_of_more_than_7_days_does_not_answer_the_new_cycle() -> None:
    bed = Bed()
    stop = START + 2 * DAY
    _stopped_course(bed, stop, stop + HOUR)
    bed.declare(stop + 3 * DAY, RESTART_CRS3)
    bed.pump(stop + 8 * DAY, 10)
    assert bed.state.prompt is not None
    assert bed.state.prompt["reason"] == "break_over_7_days"


@pytest.mark.parametrize(
    ("rule", "en", "fr"),
    [
        ("protocol_calendar", "protocol ssc-14d calendar", "calendrier du protocole ssc-14d"),
        (
            "new_cycle",
            "new cycle of ssc-14d from its day 1 (label: a break of more than 7 days)",
            "nouveau cycle de ssc-14d depuis son jour 1 (RCP : interruption de plus de 7 jours)",
        ),
        (
            "restart_after_crs_g3",
            "restart after CRS grade 3 (label: first step, the higher dose after 7 days without recurrence)",
            "reprise après SRC de grade 3 (RCP : premier palier, la dose supérieure après 7 jours sans récidive)",
        ),
        (
            "restart_after_neurotoxicity_g3",
            "restart after neurotoxicity grade 3 (label: first step, the higher dose after 7 days without "
            "recurrence)",
            "reprise après neurotoxicité de grade 3 (RCP : premier palier, la dose supérieure après 7 jours "
            "sans récidive)",
        ),
        (
            "restart_after_other_g3",
            "restart after another adverse reaction grade 3 (label: first step, the higher dose after 7 days "
            "without recurrence)",
            "reprise après un autre effet indésirable de grade 3 (RCP : premier palier, la dose supérieure "
            "après 7 jours sans récidive)",
        ),
        ("site_rule", "site_rule", "site_rule"),  # a rule this version does not know: its name
    ],
)
def test_each_dose_rule_is_named_in_both_languages(rule: str, en: str, fr: str) -> None:
    assert rule_text(rule, "ssc-14d") == Text(en, fr)


# --------------------------------------------------------------------------- breaks and new cycles


def test_a_break_starts_when_a_pump_that_infused_stops_and_ends_when_it_infuses_again() -> None:
    # A 7-day bag at 0.6 mL/h is infusing; a stopped pump that reports no rate has
    # stopped, and so has one that reports infusing at 0 mL/h.
    t = START + DAY
    bed = Bed("ssc-14d")
    breaks = []
    for minutes, state, rate in (
        (0, PumpState.STOPPED, 0.0),
        (1, PumpState.STOPPED, 0.0),  # it never infused: no break
        (2, PumpState.INFUSING, 0.6),
        (60, PumpState.INFUSING, 0.6),
        (120, PumpState.STOPPED, None),  # the break starts
        (180, PumpState.INFUSING, 0.6),  # and ends
        (240, PumpState.INFUSING, 0.0),  # a second break
    ):
        bed.feed(PumpReading("w1", "b1", "p1", t + minutes * MINUTE, state, rate, None))
        breaks.append((bed.state.break_start, bed.state.break_end))
    at = [t + m * MINUTE for m in (120, 180, 240)]
    assert breaks == [(None, None)] * 4 + [(at[0], None), (at[0], at[1]), (at[2], None)]


@pytest.mark.parametrize(("extra", "prompted"), [(timedelta(0), False), (SECOND, True)])
def test_a_break_of_more_than_7_days_prompts_for_a_new_cycle(extra: timedelta, prompted: bool) -> None:
    bed = Bed()
    stop = START + 2 * DAY
    _stopped_course(bed, stop, stop + HOUR)
    bed.pump(stop + 7 * DAY + extra, 10)
    assert bed.present(RESTART_REASON_NEEDED) is prompted


def test_the_prompt_can_be_turned_off() -> None:
    bed = Bed(restart_reason_prompt=False)
    stop = START + 2 * DAY
    _stopped_course(bed, stop, stop + HOUR)
    bed.pump(stop + 9 * DAY, 10)
    assert not bed.present(RESTART_REASON_NEEDED)


@pytest.mark.parametrize(("protocol", "first_dose"), [("all-cycle1", 28.0), ("ssc-14d", 9.0)])
def test_a_new_cycle_starts_at_its_day_1(protocol: str, first_dose: float) -> None:
    bed = Bed(protocol)
    stop, restart = START + 2 * DAY, START + 11 * DAY
    _stopped_course(bed, stop, restart)
    bed.declare(restart - HOUR, NEW_CYCLE)
    bed.pump(restart, 10)
    assert bed.expected(restart + HOUR) == first_dose
    schedule, rule, _ = bed.rule.timeline.at(bed.state.plans, restart + HOUR)
    assert (rule, schedule.protocol_day(restart + HOUR), schedule.start) == ("new_cycle", 1, restart)
    assert not bed.present(RESTART_REASON_NEEDED)


def test_declared_plans_survive_a_restart_of_the_daemon() -> None:
    bed = Bed()
    stop, restart = START + 8 * DAY, START + 9 * DAY
    _stopped_course(bed, stop, restart)
    bed.declare(stop, REACTION_CRS3)
    bed.pump(restart, 10)
    bed.declare(restart + HOUR, RESTART_CRS3)
    assert load_state(json.loads(json.dumps(dump_state(bed.state)))) == bed.state


# --------------------------------------------------------------------------- discontinuation


def _discontinuation_after(declarations: list[tuple[timedelta, DoseDeclaration]]) -> Bed:
    bed = Bed()
    bed.feed(BagHung("w1", "b1", START, "bag-1", C9))
    bed.run(START, START + DAY, 10)
    for offset, declaration in declarations:
        bed.declare(START + DAY + offset, declaration)
    bed.run(START + DAY + HOUR, START + DAY + 2 * HOUR, 10)
    return bed


def test_one_seizure_is_not_a_reason_to_discontinue_two_are() -> None:
    seizure = DoseDeclaration(DeclarationKind.SEIZURE)
    assert not _discontinuation_after([(SECOND, seizure)]).present(DISCONTINUATION_RULE)
    bed = _discontinuation_after([(SECOND, seizure), (2 * SECOND, seizure)])
    assert bed.present(DISCONTINUATION_RULE)
    raised = [c for c in bed.out if c.condition == DISCONTINUATION_RULE and c.present]
    assert raised[0].details["rule"] == "more_than_one_seizure"


@pytest.mark.parametrize(
    ("reaction", "grade", "priority"),
    [
        (Reaction.CRS, 4, "high"),
        (Reaction.NEUROTOXICITY, 4, "high"),
        (Reaction.OTHER, 4, "medium"),
        (Reaction.CRS, 3, None),
        (Reaction.NEUROTOXICITY, 3, "high"),  # declared on day 2, at 9 µg/day
    ],
)
def test_grade_4_and_neurotoxicity_at_the_first_step(
    reaction: Reaction, grade: int, priority: str | None
) -> None:
    bed = _discontinuation_after([(SECOND, DoseDeclaration(DeclarationKind.REACTION, reaction, grade))])
    raised = [c for c in bed.out if c.condition == DISCONTINUATION_RULE and c.present]
    assert (raised[0].priority.value if raised else None) == priority


@pytest.mark.parametrize(
    ("reaction", "limit"), [(Reaction.NEUROTOXICITY, 7 * DAY), (Reaction.OTHER, 14 * DAY)]
)
@pytest.mark.parametrize(("extra", "reminded"), [(timedelta(0), False), (SECOND, True)])
def test_a_grade_3_too_slow_to_resolve(
    reaction: Reaction, limit: timedelta, extra: timedelta, reminded: bool
) -> None:
    bed = Bed()
    stop = START + 8 * DAY + 2 * HOUR  # on 28 µg/day: not the first step
    restart = stop + limit + DAY
    _stopped_course(bed, stop, restart)
    declaration = DoseDeclaration(
        DeclarationKind.RESTART_AFTER_REACTION, reaction, 3, onset=stop, resolved_at=stop + limit + extra
    )
    bed.declare(restart - HOUR, declaration)
    bed.run(restart, restart + HOUR, 10)
    assert bed.present(DISCONTINUATION_RULE) is reminded


def test_the_reminder_names_every_reason_and_takes_the_highest_priority() -> None:
    bed = _discontinuation_after(
        [
            (SECOND, DoseDeclaration(DeclarationKind.REACTION, Reaction.OTHER, 4)),
            (2 * SECOND, DoseDeclaration(DeclarationKind.REACTION, Reaction.CRS, 4)),
        ]
    )
    (reminder,) = [c for c in bed.out if c.condition == DISCONTINUATION_RULE and c.present]
    assert (reminder.priority, reminder.details) == (
        Priority.HIGH,
        {"rule": "crs_g4", "rules": ["other_g4_consider", "crs_g4"], "since": "2026-03-03T08:00:01Z"},
    )
    assert reminder.message == Text(
        "Infusion still running although the label says discontinue: another adverse reaction of grade 4 "
        "declared: the label says consider discontinuing; CRS grade 4 declared: the label discontinues "
        "permanently. The daemon stops nothing: the physician decides.",
        "Perfusion toujours en cours alors que le RCP indique : arrêt ; autre effet indésirable de grade 4 "
        "déclaré : le RCP dit d'envisager l'arrêt ; SRC de grade 4 déclaré : le RCP arrête définitivement "
        "le traitement. Le démon n'arrête rien : le médecin décide.",
    )


def test_the_reminder_needs_a_fresh_reading_infusing_after_the_reason() -> None:
    # A 7-day bag at 0.6 mL/h is infusing; a reading at the reason's own second is not after it.
    bed = Bed(reading_stale_s=600)
    t = START + DAY
    bed.feed(BagHung("w1", "b1", START, "bag-7d", 0.625))
    bed.feed(PumpReading("w1", "b1", "p1", t - HOUR, PumpState.INFUSING, 0.6, 0))
    bed.declare(t, DoseDeclaration(DeclarationKind.REACTION, Reaction.CRS, 4))
    bed.feed(PumpReading("w1", "b1", "p1", t, PumpState.INFUSING, 0.6, 0.6))
    assert not bed.present(DISCONTINUATION_RULE)
    bed.feed(PumpReading("w1", "b1", "p1", t + SECOND, PumpState.INFUSING, 0.6, 0.6))
    assert bed.present(DISCONTINUATION_RULE)
    bed.feed(Tick(t + SECOND + 600 * SECOND))  # reading_stale_s: still fresh
    assert bed.present(DISCONTINUATION_RULE)
    bed.feed(Tick(t + SECOND + 601 * SECOND))
    assert not bed.present(DISCONTINUATION_RULE)


def test_the_reminder_clears_when_the_pump_stops() -> None:
    bed = _discontinuation_after([(SECOND, DoseDeclaration(DeclarationKind.REACTION, Reaction.CRS, 4))])
    assert bed.present(DISCONTINUATION_RULE)
    bed.pump(START + DAY + 3 * HOUR, 0)
    assert not bed.present(DISCONTINUATION_RULE)


def _reaction(day: int, reaction: str, grade: int | None, at_first_step: bool = False) -> DeclaredReaction:
    return DeclaredReaction(START + day * DAY, reaction, grade, "Dr A", at_first_step)


def _resolved(day: int, reaction: Reaction, took: timedelta) -> Plan:
    return Plan(
        f"restart_after_{reaction.value}_g3",
        START + day * DAY,
        START + day * DAY + HOUR,
        "Dr A",
        "all-cycle1",
        reaction=reaction.value,
        resolution_s=took.total_seconds(),
    )


def test_each_reason_to_discontinue_names_its_rule_time_priority_and_text_in_time_order() -> None:
    # The French texts write the days with a decimal comma, as every French message does.
    # domain.md section 1: discontinue after more than one seizure, a CRS or neurotoxicity
    # of grade 4, a neurotoxicity of grade 3 at the first step or one that took more than
    # 7 days to resolve, another reaction of grade 3 that took more than 14; consider it
    # after another reaction of grade 4.
    reactions = (
        _reaction(1, "seizure", None),
        _reaction(2, "crs", 4),
        _reaction(3, "seizure", None),
        _reaction(4, "neurotoxicity", 4),
        _reaction(5, "neurotoxicity", 3, at_first_step=True),
        _reaction(6, "neurotoxicity", 3),  # not at the first step: a restart, no reason
        _reaction(7, "other", 4),
        _reaction(8, "crs", 3),
        _reaction(8, "other", 3),  # a restart, no reason
        _reaction(9, "seizure", None),
    )
    plans = (
        Plan("new_cycle", START + 9 * DAY, START + 9 * DAY, "Dr A", "all-cycle2"),  # no reaction to resolve
        _resolved(10, Reaction.NEUROTOXICITY, 8 * DAY + 72 * 60 * SECOND + SECOND),  # 8.05 days and 1 s
        _resolved(11, Reaction.OTHER, 15 * DAY),
        _resolved(12, Reaction.CRS, 30 * DAY),  # no limit for CRS
        _resolved(13, Reaction.NEUROTOXICITY, 7 * DAY),  # not more than 7 days
    )
    assert triggers(reactions, plans) == [
        Trigger(
            "crs_g4",
            START + 2 * DAY,
            Priority.HIGH,
            Text(
                "CRS grade 4 declared: the label discontinues permanently",
                "SRC de grade 4 déclaré : le RCP arrête définitivement le traitement",
            ),
        ),
        Trigger(
            "more_than_one_seizure",
            START + 3 * DAY,  # the second seizure
            Priority.HIGH,
            Text(
                "3 seizures declared: the label discontinues after more than one",
                "3 crises convulsives déclarées : le RCP arrête le traitement au-delà d'une",
            ),
        ),
        Trigger(
            "neurotoxicity_g4",
            START + 4 * DAY,
            Priority.HIGH,
            Text(
                "neurotoxicity grade 4 declared: the label discontinues permanently",
                "neurotoxicité de grade 4 déclarée : le RCP arrête définitivement le traitement",
            ),
        ),
        Trigger(
            "neurotoxicity_g3_at_first_step",
            START + 5 * DAY,
            Priority.HIGH,
            Text(
                "neurotoxicity grade 3 declared while the first step's dose (9 µg/day) was due: "
                "the label discontinues",
                "neurotoxicité de grade 3 déclarée pendant le premier palier (9 µg/jour) : le RCP arrête "
                "le traitement",
            ),
        ),
        Trigger(
            "other_g4_consider",
            START + 7 * DAY,
            Priority.MEDIUM,
            Text(
                "another adverse reaction of grade 4 declared: the label says consider discontinuing",
                "autre effet indésirable de grade 4 déclaré : le RCP dit d'envisager l'arrêt",
            ),
        ),
        Trigger(
            "neurotoxicity_g3_resolved_after_7_days",
            START + 10 * DAY + HOUR,  # when the restart was declared
            Priority.HIGH,
            Text(
                "neurotoxicity grade 3 took 8.1 days to resolve: the label discontinues after more than 7",
                "la neurotoxicité de grade 3 a mis 8,1 jours à se résoudre : le RCP arrête le traitement "
                "au-delà de 7",
            ),
        ),
        Trigger(
            "other_g3_resolved_after_14_days",
            START + 11 * DAY + HOUR,
            Priority.HIGH,
            Text(
                "the grade 3 reaction took 15.0 days to resolve: the label discontinues after more than 14",
                "l'effet indésirable de grade 3 a mis 15,0 jours à se résoudre : le RCP arrête le traitement "
                "au-delà de 14",
            ),
        ),
    ]


def test_one_seizure_and_a_new_cycle_are_no_reason_to_discontinue() -> None:
    plan = Plan("new_cycle", START + 2 * DAY, START + 2 * DAY, "Dr A", "all-cycle2")
    assert triggers((_reaction(1, "seizure", None),), (plan,)) == []


# --------------------------------------------------------------------------- late bags


def _bag_orders() -> list[list[Event]]:
    readings: list[Event] = [
        PumpReading(
            "w1", "b1", "p1", START + i * 30 * timedelta(minutes=1), PumpState.INFUSING, 10.0, 5.0 * i
        )
        for i in range(13)
    ]
    first = BagHung("w1", "b1", START, "bag-1", C9)
    late = BagHung("w1", "b1", START + 2 * HOUR, "bag-2", C28)
    return [[first, *readings[:k], late, *readings[k:]] for k in range(len(readings) + 1)]


def test_a_late_bag_gives_the_same_total_whatever_order_the_events_came_in() -> None:
    exact = 20 * C9 + 40 * C28  # 20 mL up to the 10:00 reading, 40 mL after it
    totals = []
    for events in _bag_orders():
        bed = Bed("ssc-14d")
        for event in events:
            bed.feed(event)
        totals.append(
            (bed.state.delivered_ug, bed.state.delivered_ml, bed.state.bag and bed.state.bag.infused_ml)
        )
    assert {round(t[0], 9) for t in totals} == {round(exact, 9)}
    assert {t[1] for t in totals} == {60.0}
    assert {t[2] for t in totals} == {40.0}


def test_a_bag_announced_later_than_the_window_keeps_the_older_volume() -> None:
    bed = Bed("ssc-14d", bag_late_window_s=3600)
    bed.feed(BagHung("w1", "b1", START, "bag-1", C9))
    for i in range(13):
        bed.feed(
            PumpReading(
                "w1", "b1", "p1", START + i * 30 * timedelta(minutes=1), PumpState.INFUSING, 10.0, 5.0 * i
            )
        )
    bed.feed(BagHung("w1", "b1", START + 2 * HOUR, "bag-2", C28))
    # Only the readings of the last hour (at +5 h, +5.5 h and +6 h: 15 mL) move to bag-2.
    assert bed.state.delivered_ug == pytest.approx(45 * C9 + 15 * C28)


def test_three_bags_announced_out_of_order_each_keep_the_volume_read_while_on_the_line() -> None:
    # Bag a hung at 08:00, b announced for 10:00, then the 10:00 reading (at b's own
    # time: still a's), then c announced late for 09:30, between a and b: the volume read
    # from 09:30 to 10:00 moves from a to c; b keeps what ran after 10:00.
    a, b, c = 0.0375, 0.05, 0.025
    t = START + 2 * DAY
    bed = Bed("ssc-14d")

    def read(hours: float, volume_ml: float) -> None:
        bed.feed(PumpReading("w1", "b1", "p1", t + hours * HOUR, PumpState.INFUSING, 10.0, volume_ml))

    bed.feed(BagHung("w1", "b1", t, "bag-a", a, 270))
    read(0, 0)
    read(1, 10)
    bed.feed(BagHung("w1", "b1", t + 2 * HOUR, "bag-b", b, 270))
    read(2, 20)
    assert bed.state.previous_bag == Bag("bag-a", a, 270, t, 20.0)
    assert (bed.state.bag, bed.state.delivered_ug) == (Bag("bag-b", b, 270, t + 2 * HOUR, 0.0), 20 * a)
    read(3, 30)
    bed.feed(BagHung("w1", "b1", t + 90 * MINUTE, "bag-c", c, 270))
    state = bed.state
    assert state.delivered_ug == pytest.approx(10 * a + 10 * b + 10 * c)
    assert (state.delivered_ml, state.unattributed_ml) == (30.0, 0.0)
    assert state.bag == Bag("bag-b", b, 270, t + 2 * HOUR, 10.0)
    assert state.previous_bag == Bag("bag-c", c, 270, t + 90 * MINUTE, 10.0)
    assert state.bag_changed_at == t + 2 * HOUR
    assert state.increments == (
        Increment(t + HOUR, 10, a, t),
        Increment(t + 2 * HOUR, 10, c, t + 90 * MINUTE),
        Increment(t + 3 * HOUR, 10, b, t + 2 * HOUR),
    )


def test_of_two_bags_announced_for_the_same_time_the_later_announcement_is_on_the_line() -> None:
    t = START + 2 * DAY
    bed = Bed("ssc-14d")
    bed.feed(BagHung("w1", "b1", t, "bag-1", C9, 270))
    bed.feed(BagHung("w1", "b1", t, "bag-2", C28, 270))
    assert (bed.state.bag, bed.state.previous_bag) == (
        Bag("bag-2", C28, 270, t, 0.0),
        Bag("bag-1", C9, 270, t, 0.0),
    )


def test_of_two_bags_announced_for_the_same_time_the_earlier_keeps_the_volume_it_counted() -> None:
    """Ties between two bags' hanging times (README, "[[bags]]"): the later announcement goes
    on the line, but the volume already counted for the earlier one since that time stays
    with it, at its concentration: a tie is not taken for a correction, which nothing in
    the announcement says it is, and a delivered amount is not recomputed on a guess."""
    t = START + 2 * DAY
    bed = Bed("ssc-14d")
    bed.feed(BagHung("w1", "b1", t, "bag-1", C9, 270))
    bed.feed(PumpReading("w1", "b1", "p1", t + MINUTE, PumpState.INFUSING, 10.0, 0.0))
    bed.feed(PumpReading("w1", "b1", "p1", t + 31 * MINUTE, PumpState.INFUSING, 10.0, 5.0))
    counted = bed.state.delivered_ug
    assert counted == pytest.approx(5 * C9)
    bed.feed(BagHung("w1", "b1", t, "bag-2", C28, 270))
    assert bed.state.bag == Bag("bag-2", C28, 270, t, 0.0), "nothing moved to the later announcement"
    assert bed.state.delivered_ug == pytest.approx(counted)
    assert [(i.concentration_ug_per_ml, i.hung_at) for i in bed.state.increments] == [(C9, t)]


def test_a_bag_announced_for_the_same_time_as_the_previous_one_does_not_replace_it() -> None:
    """The same tie behind the bag on the line: the previous bag stays the one announced first."""
    t = START + 2 * DAY
    bed = Bed("ssc-14d")
    bed.feed(BagHung("w1", "b1", t, "bag-1", C9, 270))
    bed.feed(BagHung("w1", "b1", t + 2 * HOUR, "bag-3", C28, 270))
    bed.feed(BagHung("w1", "b1", t, "bag-2", C9, 270))
    assert (bed.state.bag, bed.state.previous_bag) == (
        Bag("bag-3", C28, 270, t + 2 * HOUR, 0.0),
        Bag("bag-1", C9, 270, t, 0.0),
    )


def test_a_bag_announced_older_than_both_bags_known_replaces_neither() -> None:
    t = START + 2 * DAY
    bed = Bed("ssc-14d")
    bed.feed(BagHung("w1", "b1", t, "bag-1", C9, 270))
    bed.feed(BagHung("w1", "b1", t + 2 * HOUR, "bag-2", C28, 270))
    bed.feed(BagHung("w1", "b1", t - HOUR, "bag-0", C9, 270))
    assert (bed.state.bag, bed.state.previous_bag) == (
        Bag("bag-2", C28, 270, t + 2 * HOUR, 0.0),
        Bag("bag-1", C9, 270, t, 0.0),
    )


def test_a_late_first_bag_takes_over_every_small_volume_read_without_a_bag() -> None:
    # A 7-day bag at 0.6 mL/h: half a millilitre between two readings is a real volume.
    t = START + 2 * DAY
    bed = Bed("ssc-14d")
    for i, volume_ml in enumerate((0.0, 0.5, 0.5, 1.0)):  # the third reading adds nothing
        bed.feed(PumpReading("w1", "b1", "p1", t + i * 50 * MINUTE, PumpState.INFUSING, 0.6, volume_ml))
    assert bed.state.unattributed_ml == 1.0
    assert [i.ml for i in bed.state.increments] == [0.5, 0.5]
    bed.feed(BagHung("w1", "b1", t, "bag-7d", 0.625, None))
    assert (bed.state.delivered_ml, bed.state.unattributed_ml) == (1.0, 0.0)
    assert bed.state.delivered_ug == pytest.approx(0.625)
    assert bed.state.increments == (
        Increment(t + 50 * MINUTE, 0.5, 0.625, t),
        Increment(t + 150 * MINUTE, 0.5, 0.625, t),
    )


# --------------------------------------------------------------------------- < 45 kg


@pytest.mark.parametrize(
    ("weight_kg", "protocol", "refused"),
    [
        (45.0, "ssc-14d", False),
        (44.99, "ssc-14d", True),
        (44.99, "all-cycle2", True),
        (30.0, "ssc-14d-bsa", False),
        (30.0, "all-cycle1-bsa", False),
        (80.0, "all-cycle1-bsa", False),
    ],
)
def test_a_flat_dose_protocol_is_refused_below_45_kg(weight_kg: float, protocol: str, refused: bool) -> None:
    if not refused:
        _config(protocol, weight_kg)
        return
    with pytest.raises(ConfigError) as info:
        _config(protocol, weight_kg)
    (issue,) = info.value.issues
    assert issue.location == "beds[0].protocol"
    assert "below 45 kg the label doses by body surface" in issue.reason


def test_a_site_protocol_with_flat_steps_or_a_flat_next_cycle_is_refused_below_45_kg() -> None:
    bed = {
        "ward": "w1",
        "id": "b1",
        "patient": "p",
        "weight_kg": 30,
        "height_cm": 135,
        "protocol_start": START.isoformat(),
    }
    per_m2 = [{"day_from": 1, "day_to": 7, "dose_ug_per_m2_per_day": 5, "max_ug_per_day": 9}]
    ok = {"protocols": {"kids": {"steps": per_m2}}, "beds": [{**bed, "protocol": "kids"}]}
    parse(ok)
    flat_next = {
        "protocols": {"kids": {"steps": per_m2, "next_cycle": "all-cycle2"}},
        "beds": [{**bed, "protocol": "kids"}],
    }
    with pytest.raises(ConfigError) as info:
        parse(flat_next)
    assert [i.location for i in info.value.issues] == ["beds[0].protocol"]
    unknown = {
        "protocols": {"kids": {"steps": per_m2, "next_cycle": "nope"}},
        "beds": [{**bed, "protocol": "kids"}],
    }
    with pytest.raises(ConfigError) as info:
        parse(unknown)
    assert [i.location for i in info.value.issues] == ["protocols.kids.next_cycle"]


# --------------------------------------------------------------------------- stored declarations


@pytest.mark.parametrize(
    "reaction",
    [
        DeclaredReaction(START, "seizure", None, None),
        DeclaredReaction(START + HOUR, "neurotoxicity", 3, "Dr A", at_first_step=True),
    ],
)
def test_a_declared_reaction_round_trips_through_json(reaction: DeclaredReaction) -> None:
    assert load_reaction(json.loads(json.dumps(dump_reaction(reaction)))) == reaction


@pytest.mark.parametrize(
    "plan",
    [
        Plan("new_cycle", START, START + HOUR, None, "all-cycle2"),
        Plan(
            "restart_after_other_g3",
            START,
            START + HOUR,
            "Dr A",
            "all-cycle1",
            START + 2 * HOUR,
            START + 20 * DAY,
            step_up=False,
            reaction="other",
            resolution_s=3600.0,
        ),
    ],
)
def test_a_declared_plan_round_trips_through_json(plan: Plan) -> None:
    assert load_plan(json.loads(json.dumps(dump_plan(plan)))) == plan


# --------------------------------------------------------------------------- where a restart ends


def test_a_restart_ends_where_the_schedule_in_force_just_before_it_would_have() -> None:
    # A new cycle (all-cycle2, 28 days from t), then a restart declared 1 µs later: the
    # restart interrupts the new cycle, so it ends at t + 28 days, not at the end of the
    # first cycle (START + 28 days).
    bed = Bed()
    t = START + 10 * DAY
    bed.declare(t, NEW_CYCLE)
    bed.declare(t + timedelta(microseconds=1), RESTART_CRS3)
    assert bed.state.plans[-1].stop == t + 28 * DAY
    assert bed.expected(START + 30 * DAY) == 28.0


def test_a_second_declaration_for_the_same_break_restarts_the_schedule_before_the_break() -> None:
    # A new cycle declared, then corrected to a restart after CRS grade 3, both for the
    # break from day 9: the restart replaces the first cycle's calendar (ends on day 28,
    # moved by the 1-day break), not the new cycle that was declared for the same break.
    bed = Bed()
    stop, restart = START + 8 * DAY, START + 9 * DAY
    _stopped_course(bed, stop, restart)
    bed.declare(stop + HOUR, NEW_CYCLE)
    bed.declare(stop + 2 * HOUR, RESTART_CRS3)
    bed.pump(restart, 10)
    assert bed.state.plans[-1].stop == START + 29 * DAY
    assert bed.expected(START + 29 * DAY - SECOND) == 28.0
    assert bed.expected(START + 29 * DAY) == 0.0


def test_a_pending_restart_ends_where_the_interrupted_cycle_would_moved_by_the_wait() -> None:
    # Declared during the break, before the pump restarts: asked at a time, the plan is
    # anchored there, and ends at the first cycle's end (day 28) moved by the break so far.
    bed = Bed()
    stop = START + 8 * DAY
    _stopped_course(bed, stop, stop + DAY)
    bed.declare(stop + HOUR, RESTART_CRS3)
    schedule, rule, pending = bed.rule.timeline.at(bed.state.plans, stop + 5 * HOUR)
    assert (rule, pending, schedule.start) == ("restart_after_crs_g3", True, stop + 5 * HOUR)
    assert schedule.end == START + 28 * DAY + 5 * HOUR


def test_the_plan_in_force_is_the_last_one_declared_since_before_the_time_asked() -> None:
    bed = Bed()
    stop = START + 8 * DAY
    _stopped_course(bed, stop, stop + 2 * DAY)
    first = Plan("new_cycle", stop, stop, "Dr A", "all-cycle2", start=stop + DAY)
    second = Plan("new_cycle", stop + 3 * DAY, stop + 3 * DAY, "Dr A", "all-cycle2", start=stop + 3 * DAY)
    third = Plan("new_cycle", stop + 5 * DAY, stop + 5 * DAY, "Dr A", "all-cycle2", start=stop + 5 * DAY)
    plans = (first, second, third)
    timeline = bed.rule.timeline
    assert [timeline.at(plans, stop + d * DAY)[0].start for d in (1, 4, 6)] == [
        stop + DAY,
        stop + 3 * DAY,
        stop + 5 * DAY,
    ]
    assert timeline.at(plans, stop - DAY)[1] == "protocol_calendar"


def test_a_timeline_without_the_bed_refuses_declared_plans() -> None:
    bed = Bed()
    bed.declare(START + DAY, NEW_CYCLE)
    bare = Timeline(bed.rule.schedule)
    assert bare.at((), START + 2 * DAY) == (bed.rule.schedule, "protocol_calendar", False)
    with pytest.raises(ValueError, match=r"^a timeline with declared plans needs the bed$"):
        bare.at(bed.state.plans, START + 2 * DAY)


def test_a_restart_keeps_its_end_when_older_declarations_are_forgotten() -> None:
    # A new cycle from day 11 (ends day 39), then 64 restarts declared: the rule keeps
    # the last 64 declarations, so the new cycle is forgotten; the restarts keep the end
    # they were given, not the first cycle's (day 29).
    bed = Bed()
    t = START + 10 * DAY
    bed.declare(t, NEW_CYCLE)
    for n in range(1, 65):
        bed.declare(t + n * SECOND, RESTART_CRS3)
    assert [p.rule for p in bed.state.plans] == ["restart_after_crs_g3"] * 64
    assert bed.state.plans[-1].stop == t + 28 * DAY
    assert bed.expected(START + 30 * DAY) == 28.0


def test_a_restart_declaration_does_not_answer_the_new_cycle_prompt() -> None:
    # After a break of more than 7 days the label starts a new cycle; declaring a restart
    # after a reaction instead leaves the prompt up until the new cycle is declared.
    bed = Bed()
    stop = START + 2 * DAY
    _stopped_course(bed, stop, stop + HOUR)
    bed.pump(stop + 8 * DAY, 10)
    assert bed.present(RESTART_REASON_NEEDED)
    bed.declare(stop + 8 * DAY + HOUR, RESTART_CRS3)
    assert bed.present(RESTART_REASON_NEEDED)
    bed.declare(stop + 8 * DAY + 2 * HOUR, NEW_CYCLE)
    assert not bed.present(RESTART_REASON_NEEDED)
    new_cycle = bed.state.plans[-1]
    assert (new_cycle.rule, new_cycle.start, new_cycle.stop) == ("new_cycle", stop + 8 * DAY, None)
