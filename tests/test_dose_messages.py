"""Every dose alert's message, word for word in English and French, with its value and unit.

A nurse reads the message, not the details: the numbers in it (the dose running, the
dose planned, the step's time, how long a break lasted) must be the ones the check
used, in the language's decimal style, and the label's instructions it repeats (never
flush, a supervised restart from 4 h, a new cycle after more than 7 days, discontinue)
are those of domain.md section 1; the priorities are section 4's. The edges of each
check are in ``tests/test_dose_edges.py``; here each message once.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from daemon.clinical.dose import (
    BAG_LOW,
    BOLUS_SUSPECTED,
    CUMULATIVE_DOSE_DEVIATION,
    DISCONTINUATION_RULE,
    DOSE_RATE_HIGH,
    DOSE_RATE_LOW,
    INFUSION_AFTER_PROTOCOL_END,
    INFUSION_INTERRUPTED,
    RESTART_REASON_NEEDED,
    STEP_UP_DUE,
    STEP_UP_EARLY,
    STEP_UP_LATE,
    _dur,
)
from daemon.events import (
    AlertCandidate,
    BagHung,
    DeclarationKind,
    DoseDeclaration,
    Kind,
    Priority,
    Reaction,
)
from tests.test_dose import C9, C28, MIN, START, Bed
from tests.test_dose_label import REACTION_CRS3, _stopped_course
from tests.test_dose_label import Bed as LabelBed

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
T = START + 2 * DAY  # 2026-03-04 08:00, a day of the 9 µg/day week of ssc-14d
STEP = START + 7 * DAY  # the step to 28 µg/day, 2026-03-09 08:00 (domain.md section 0)
CALENDAR_EN = " Rule: protocol ssc-14d calendar."
CALENDAR_FR = " Règle : calendrier du protocole ssc-14d."


def one(out: list[AlertCandidate], condition: str) -> AlertCandidate:
    (candidate,) = [c for c in out if c.condition == condition and c.present]
    return candidate


def said(c: AlertCandidate) -> tuple[str, str]:
    assert c.message is not None
    return c.message.en, c.message.fr


@pytest.mark.parametrize(
    ("seconds", "en", "fr"),
    [
        (7140, "119 min", "119 min"),
        (7200, "2.0 h", "2,0 h"),  # 120 minutes are written in hours
        (3 * 3600 + 181, "3.1 h", "3,1 h"),  # 3.0503 h
        (48 * 3600 - 1, "48.0 h", "48,0 h"),
        (48 * 3600, "2.0 days", "2,0 jours"),  # 48 hours are written in days
        (8 * 86_400, "8.0 days", "8,0 jours"),
    ],
)
def test_a_duration_is_written_in_minutes_then_hours_then_days(seconds: float, en: str, fr: str) -> None:
    assert (_dur(seconds, "en"), _dur(seconds, "fr")) == (en, fr)


# --------------------------------------------------------------------------- dose rate


@pytest.mark.parametrize(
    ("rate_ml_per_h", "condition", "priority", "en", "fr"),
    [
        (
            5,
            DOSE_RATE_LOW,
            Priority.MEDIUM,
            "Dose rate low: 4.5 µg/day delivered, protocol 9.0 µg/day (±10 %).",
            "Débit de dose bas : 4,5 µg/jour délivrés, protocole 9,0 µg/jour (±10 %).",
        ),
        (
            15,
            DOSE_RATE_HIGH,
            Priority.MEDIUM,
            "Dose rate high: 13.5 µg/day delivered, protocol 9.0 µg/day (±10 %).",
            "Débit de dose élevé : 13,5 µg/jour délivrés, protocole 9,0 µg/jour (±10 %).",
        ),
        (
            25,
            DOSE_RATE_HIGH,
            Priority.HIGH,
            "Dose rate high: 22.5 µg/day delivered, protocol 9.0 µg/day (±10 %).",
            "Débit de dose élevé : 22,5 µg/jour délivrés, protocole 9,0 µg/jour (±10 %).",
        ),
    ],
)
def test_a_wrong_dose_rate_says_what_runs_and_what_the_protocol_plans(
    rate_ml_per_h: float, condition: str, priority: Priority, en: str, fr: str
) -> None:
    bed = Bed()
    bed.bag(T, C9)
    bed.pump(T, rate_ml_per_h, 0)
    c = one(bed.tick(T + 5 * MIN), condition)
    assert (c.priority, c.kind, c.unit) == (priority, Kind.PHYSIOLOGICAL, "ug/d")
    assert c.value == pytest.approx(rate_ml_per_h * 0.9)
    assert c.details == {"expected_ug_per_day": 9.0, "rule": "protocol_calendar"}
    assert said(c) == (
        f"{en} Check the bag's strength and the pump rate.{CALENDAR_EN}",
        f"{fr} Vérifier la concentration de la poche et le débit de la pompe.{CALENDAR_FR}",
    )


# --------------------------------------------------------------------------- step-up


def test_the_step_up_reminder_names_the_dose_and_its_time() -> None:
    bed = Bed()
    bed.bag(STEP - 3 * HOUR, C9)
    bed.pump(STEP - 3 * HOUR, 10, 0)
    c = one(bed.tick(STEP - 2 * HOUR), STEP_UP_DUE)
    assert (c.priority, c.value, c.unit) == (Priority.LOW, None, None)
    assert c.details == {
        "step_time": "2026-03-09T08:00:00Z",
        "dose_ug_per_day": 28.0,
        "rule": "protocol_calendar",
    }
    assert said(c) == (
        "Step-up to 28.0 µg/day due at 2026-03-09 08:00 UTC: prepare the bag and the premedication."
        + CALENDAR_EN,
        "Palier à 28,0 µg/jour prévu le 2026-03-09 08:00 UTC : préparer la poche et la prémédication."
        + CALENDAR_FR,
    )


def test_a_late_step_up_says_the_dose_still_running_and_how_long_ago_it_was_due() -> None:
    bed = Bed()
    bed.bag(STEP - 3 * HOUR, C9)
    bed.pump(STEP - 3 * HOUR, 10, 0)
    bed.pump(STEP + HOUR, 10, 40)
    c = one(bed.tick(STEP + 2 * HOUR), STEP_UP_LATE)
    assert (c.priority, c.value, c.unit) == (Priority.MEDIUM, 7200.0, "s")
    assert c.details == {
        "step_time": "2026-03-09T08:00:00Z",
        "lower_ug_per_day": 9.0,
        "higher_ug_per_day": 28.0,
        "rule": "protocol_calendar",
    }
    assert said(c) == (
        "Step-up late: still 9.0 µg/day; 28.0 µg/day was due at 2026-03-09 08:00 UTC (over 2.0 h ago)."
        + CALENDAR_EN,
        "Palier en retard : toujours 9,0 µg/jour ; 28,0 µg/jour étaient prévus le 2026-03-09 08:00 UTC "
        "(il y a plus de 2,0 h)." + CALENDAR_FR,
    )


def test_an_early_step_up_says_the_dose_running_and_when_the_step_is_due() -> None:
    bed = Bed()
    bed.bag(STEP - 5 * HOUR, C28)
    bed.pump(STEP - 5 * HOUR, 10, 0)
    c = one(bed.tick(STEP - 5 * HOUR + 5 * MIN), STEP_UP_EARLY)
    assert c.details == {
        "step_time": "2026-03-09T08:00:00Z",
        "lower_ug_per_day": 9.0,
        "higher_ug_per_day": 28.0,
        "rule": "protocol_calendar",
    }
    assert (c.priority, c.unit) == (Priority.MEDIUM, "ug/d")
    assert c.value == pytest.approx(28.008)
    assert said(c) == (
        "Step-up started early: 28.0 µg/day running, the step to 28.0 µg/day is due at "
        "2026-03-09 08:00 UTC. Check the premedication." + CALENDAR_EN,
        "Palier commencé en avance : 28,0 µg/jour en cours, le passage à 28,0 µg/jour est prévu le "
        "2026-03-09 08:00 UTC. Vérifier la prémédication." + CALENDAR_FR,
    )


# --------------------------------------------------------------------------- interruption


def test_an_interruption_says_since_when_and_what_each_stage_requires() -> None:
    # domain.md section 1: from 4 h a restart needs premedication and supervision; after
    # more than 7 days the label starts a new cycle.
    bed = Bed()
    bed.bag(T, C9)
    bed.pump(T, 10, 0)
    bed.pump(T + HOUR, 0, 10, "stopped")
    first = one(bed.tick(T + HOUR + 15 * MIN), INFUSION_INTERRUPTED)
    assert (first.priority, first.value, first.unit) == (Priority.MEDIUM, 900.0, "s")
    assert first.details == {
        "stage": "interrupted",
        "since": "2026-03-04T09:00:00Z",
        "rule": "protocol_calendar",
    }
    assert said(first) == (
        "Infusion interrupted since 2026-03-04 09:00 UTC (pump stopped); the protocol calls for "
        "9.0 µg/day." + CALENDAR_EN,
        "Perfusion interrompue depuis le 2026-03-04 09:00 UTC (pompe stopped) ; le protocole prévoit "
        "9,0 µg/jour." + CALENDAR_FR,
    )
    supervised = one(bed.tick(T + 5 * HOUR), INFUSION_INTERRUPTED)
    assert (supervised.priority, supervised.value) == (Priority.HIGH, 14400.0)
    assert supervised.details == {
        "stage": "supervised_restart",
        "since": "2026-03-04T09:00:00Z",
        "rule": "protocol_calendar",
    }
    assert said(supervised) == (
        "Infusion interrupted since 2026-03-04 09:00 UTC, 4.0 h or more: the restart needs "
        "premedication and supervision (label)." + CALENDAR_EN,
        "Perfusion interrompue depuis le 2026-03-04 09:00 UTC, 4,0 h ou plus : la reprise nécessite "
        "une prémédication et une surveillance (RCP)." + CALENDAR_FR,
    )
    new_cycle = one(bed.tick(T + HOUR + 7 * DAY + MIN), INFUSION_INTERRUPTED)
    assert (new_cycle.priority, new_cycle.value) == (Priority.HIGH, 7 * 86_400.0 + 60)
    assert new_cycle.details == {
        "stage": "new_cycle",
        "since": "2026-03-04T09:00:00Z",
        "rule": "protocol_calendar",
    }
    assert said(new_cycle) == (
        "Infusion interrupted since 2026-03-04 09:00 UTC, more than 7.0 days: the label starts a new "
        "cycle. Review the protocol before any restart." + CALENDAR_EN,
        "Perfusion interrompue depuis le 2026-03-04 09:00 UTC, plus de 7,0 jours : selon le RCP, un "
        "nouveau cycle commence. Revoir le protocole avant toute reprise." + CALENDAR_FR,
    )


# --------------------------------------------------------------------------- cumulative dose


@pytest.mark.parametrize(
    ("strength", "value", "en", "fr"),
    [
        (
            1.3,
            30.0,
            "Cumulative dose above plan: 11.7 µg delivered, 9.0 µg expected by 2026-03-03 08:00 UTC (30 %).",
            "Dose cumulée au-dessus du plan : 11,7 µg délivrés, 9,0 µg attendus au 2026-03-03 08:00 UTC "
            "(30 %).",
        ),
        (
            0.8,
            -20.0,
            "Cumulative dose below plan: 7.2 µg delivered, 9.0 µg expected by 2026-03-03 08:00 UTC (-20 %).",
            "Dose cumulée en dessous du plan : 7,2 µg délivrés, 9,0 µg attendus au 2026-03-03 08:00 UTC "
            "(-20 %).",
        ),
    ],
)
def test_a_cumulative_deviation_says_both_totals_and_the_gap(
    strength: float, value: float, en: str, fr: str
) -> None:
    bed = Bed()
    bed.bag(START, C9 * strength)
    volume = 0.0
    t = START
    while t <= START + 25 * HOUR:
        bed.pump(t, 10, volume)
        t += 30 * MIN
        volume += 5
    (c,) = bed.raised(CUMULATIVE_DOSE_DEVIATION)
    assert c.details == {"direction": "over" if value > 0 else "under", "rule": "protocol_calendar"}
    assert (c.priority, c.unit) == (Priority.MEDIUM, "%")
    assert c.value == pytest.approx(value)
    assert said(c) == (en + CALENDAR_EN, fr + CALENDAR_FR)


# --------------------------------------------------------------------------- bag, bolus, end


def test_a_low_bag_says_what_is_left_at_the_steady_rate() -> None:
    bed = Bed(bag_line_fill_ml=30)
    bed.bag(START, C9, volume=270)
    bed.pump(START, 10, 0)
    bed.pump(START + 22 * HOUR, 10, 220)
    c = one(bed.pump(START + 23 * HOUR + MIN, 10, 230.2), BAG_LOW)
    assert c.details == {"bag_id": "bag"}
    assert (c.priority, c.unit) == (Priority.LOW, "mL")
    assert c.value == pytest.approx(9.8)
    assert said(c) == (
        "Bag bag low: 9.8 mL left at 10.00 mL/h, about 59 min. Prepare the next bag.",
        "Poche bag bientôt vide : 9,8 mL restants à 10,00 mL/h, environ 59 min. Préparer la poche suivante.",
    )


def test_a_bag_low_hours_ahead_says_the_hours_in_each_languages_decimals() -> None:
    bed = Bed(bag_low_s=3 * 3600)
    bed.bag(START, C9, volume=270)
    bed.pump(START, 10, 0)
    c = one(bed.pump(START + 24 * HOUR + 30 * MIN, 10, 245), BAG_LOW)
    assert said(c) == (
        "Bag bag low: 25.0 mL left at 10.00 mL/h, about 2.5 h. Prepare the next bag.",
        "Poche bag bientôt vide : 25,0 mL restants à 10,00 mL/h, environ 2,5 h. Préparer la poche suivante.",
    )


def test_a_volume_bolus_at_a_bag_change_says_how_much_and_asks_about_a_flush() -> None:
    bed = Bed()
    bed.bag(T, C9)
    bed.pump(T, 10, 0)
    bed.pump(T + HOUR, 10, 10)
    bed.bag(T + HOUR + MIN, C9, "bag-2")
    c = one(bed.pump(T + HOUR + 11 * MIN, 10, 5), BOLUS_SUSPECTED)
    assert c.details == {"cause": "volume", "excess_ml": 3.17, "excess_ug": 0.119, "near_bag_change": True}
    assert (c.priority, c.unit) == (Priority.HIGH, "mL")
    assert c.value == pytest.approx(3.17)
    assert said(c) == (
        "Bolus suspected at 2026-03-04 09:11 UTC: 3.2 mL more than the pump rate explains (0.12 µg) "
        "at a bag change: was the line flushed? Never flush the line (label).",
        "Bolus suspecté le 2026-03-04 09:11 UTC : 3,2 mL de plus que le débit ne l'explique (0,12 µg) "
        "lors d'un changement de poche : la ligne a-t-elle été rincée ? Ne jamais rincer la ligne (RCP).",
    )


def test_a_rate_spike_away_from_a_bag_change_names_the_rate() -> None:
    bed = Bed()
    bed.bag(T, C9)
    bed.pump(T, 10, 0)
    bed.pump(T + 40 * MIN, 10, 6.67)
    c = one(bed.pump(T + 41 * MIN, 100, 6.9), BOLUS_SUSPECTED)
    assert c.details == {"cause": "rate_spike", "rate_ml_per_h": 100, "near_bag_change": False}
    assert (c.priority, c.value, c.unit) == (Priority.HIGH, None, None)
    assert said(c) == (
        "Bolus suspected at 2026-03-04 08:41 UTC: rate spike to 100.0 mL/h. Never flush the line (label).",
        "Bolus suspecté le 2026-03-04 08:41 UTC : pic de débit à 100,0 mL/h. Ne jamais rincer la ligne (RCP).",
    )


def test_a_purge_says_the_pump_purged() -> None:
    bed = Bed()
    bed.bag(T, C9)
    bed.pump(T, 10, 0)
    c = one(bed.pump(T + MIN, 10, 0.2, "purging"), BOLUS_SUSPECTED)
    assert c.details == {"cause": "purge", "near_bag_change": True}
    assert said(c) == (
        "Bolus suspected at 2026-03-04 08:01 UTC: pump purging at a bag change: was the line flushed? "
        "Never flush the line (label).",
        "Bolus suspecté le 2026-03-04 08:01 UTC : purge de la pompe lors d'un changement de poche : "
        "la ligne a-t-elle été rincée ? Ne jamais rincer la ligne (RCP).",
    )


def test_an_infusion_after_the_end_says_when_the_protocol_ended() -> None:
    bed = Bed()
    end = START + 14 * DAY
    bed.bag(end - HOUR, C28)
    bed.pump(end - HOUR, 10, 0)
    bed.pump(end, 10, 10)
    c = one(bed.tick(end + 5 * MIN), INFUSION_AFTER_PROTOCOL_END)
    assert c.details == {"protocol_end": "2026-03-16T08:00:00Z", "rule": "protocol_calendar"}
    assert (c.priority, c.unit) == (Priority.MEDIUM, "ug/d")
    assert c.value == pytest.approx(28.008)
    assert said(c) == (
        "Still infusing 28.0 µg/day after the protocol ended at 2026-03-16 08:00 UTC." + CALENDAR_EN,
        "Perfusion toujours en cours (28,0 µg/jour) après la fin du protocole le 2026-03-16 08:00 UTC."
        + CALENDAR_FR,
    )


# --------------------------------------------------------------------------- declared rules


def test_a_restart_after_more_than_7_days_asks_for_the_new_cycle() -> None:
    bed = LabelBed()
    stop = START + 2 * DAY
    _stopped_course(bed, stop, stop + HOUR)
    c = one(bed.pump(stop + 8 * DAY, 10), RESTART_REASON_NEEDED)
    assert c.details == {
        "reason": "break_over_7_days",
        "since": "2026-03-04T08:00:00Z",
        "rule": "label_interruptions",
    }
    assert (c.priority, c.kind, c.value, c.unit) == (Priority.MEDIUM, Kind.TECHNICAL, None, None)
    assert said(c) == (
        "Infusion restarted at 2026-03-12 08:00 UTC after a break of 8.0 days: the label starts a new "
        "cycle after more than 7. Declare the new cycle (dose_declaration new_cycle); until then the old "
        "calendar is checked.",
        "Perfusion reprise le 2026-03-12 08:00 UTC après 8,0 jours d'arrêt : au-delà de 7, le RCP commence "
        "un nouveau cycle. Déclarer le nouveau cycle (dose_declaration new_cycle) ; d'ici là l'ancien "
        "calendrier est contrôlé.",
    )


def test_the_break_before_a_restart_is_said_in_days_to_the_tenth() -> None:
    bed = LabelBed()
    stop = START + 2 * DAY
    _stopped_course(bed, stop, stop + HOUR)
    c = one(
        bed.pump(stop + 8 * DAY + 72 * 60 * SECOND + SECOND, 10), RESTART_REASON_NEEDED
    )  # 8.05 days and 1 s
    assert said(c)[0].startswith("Infusion restarted at 2026-03-12 09:12 UTC after a break of 8.1 days:")


def test_a_restart_after_a_declared_grade_3_asks_for_the_restart() -> None:
    bed = LabelBed()
    stop, restart = START + 8 * DAY, START + 9 * DAY
    _stopped_course(bed, stop, restart)
    bed.declare(stop, REACTION_CRS3)
    c = one(bed.pump(restart, 10), RESTART_REASON_NEEDED)
    assert (c.priority, c.kind) == (Priority.MEDIUM, Kind.TECHNICAL)
    assert c.details == {
        "reason": "crs_grade_3",
        "since": "2026-03-10T08:00:00Z",
        "rule": "label_interruptions",
    }
    assert said(c) == (
        "Infusion restarted at 2026-03-11 08:00 UTC after a declared crs grade 3: the label restarts at "
        "the first step (9 µg/day). Declare the restart (dose_declaration restart_after_reaction); until "
        "then the calendar is checked.",
        "Perfusion reprise le 2026-03-11 08:00 UTC après un crs de grade 3 déclaré : le RCP reprend au "
        "premier palier (9 µg/jour). Déclarer la reprise (dose_declaration restart_after_reaction) ; "
        "d'ici là le calendrier est contrôlé.",
    )


@pytest.mark.parametrize(
    ("reaction", "priority", "en", "fr"),
    [
        (
            Reaction.CRS,
            Priority.HIGH,
            "discontinue: CRS grade 4 declared: the label discontinues permanently.",
            "arrêt ; SRC de grade 4 déclaré : le RCP arrête définitivement le traitement.",
        ),
        (
            Reaction.OTHER,
            Priority.MEDIUM,
            "consider discontinuing: another adverse reaction of grade 4 declared: the label says consider "
            "discontinuing.",
            "envisager l'arrêt ; autre effet indésirable de grade 4 déclaré : le RCP dit d'envisager l'arrêt.",
        ),
    ],
)
def test_a_reason_to_discontinue_says_what_the_label_says_and_who_decides(
    reaction: Reaction, priority: Priority, en: str, fr: str
) -> None:
    bed = LabelBed()
    bed.feed(BagHung("w1", "b1", START, "bag-1", C9))
    bed.run(START, START + 3 * HOUR, 10)
    bed.declare(START + 3 * HOUR + MIN, DoseDeclaration(DeclarationKind.REACTION, reaction, 4))
    c = one(bed.pump(START + 4 * HOUR, 10), DISCONTINUATION_RULE)
    rule = "crs_g4" if reaction is Reaction.CRS else "other_g4_consider"
    assert c.details == {"rule": rule, "rules": [rule], "since": "2026-03-02T11:01:00Z"}
    assert (c.priority, c.value, c.unit) == (priority, None, None)
    assert said(c) == (
        f"Infusion still running although the label says {en} The daemon stops nothing: the physician decides.",
        f"Perfusion toujours en cours alors que le RCP indique : {fr} Le démon n'arrête rien : le médecin décide.",
    )


# --------------------------------------------------------------------------- clearing


def test_a_raised_and_a_cleared_candidate_name_the_ward_the_bed_and_the_time() -> None:
    bed = Bed()
    bed.bag(T, C9)
    bed.pump(T, 25, 0)
    raised = one(bed.tick(T + 5 * MIN), DOSE_RATE_HIGH)
    assert (raised.ward, raised.bed, raised.time) == ("w1", "b1", T + 5 * MIN)
    (cleared,) = bed.pump(T + 10 * MIN, 10, 2.1)
    assert cleared == AlertCandidate(
        DOSE_RATE_HIGH, "w1", "b1", T + 10 * MIN, present=False, priority=Priority.HIGH
    )


def test_message_times_are_utc_whatever_the_hosts_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "EST+05")  # a POSIX zone five hours behind UTC, no zone database needed
    time.tzset()
    try:
        bed = Bed()
        bed.bag(STEP - 3 * HOUR, C9)
        bed.pump(STEP - 3 * HOUR, 10, 0)
        c = one(bed.tick(STEP - 2 * HOUR), STEP_UP_DUE)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert said(c)[0].startswith("Step-up to 28.0 µg/day due at 2026-03-09 08:00 UTC:")
