"""The label's dose-modification rules that a pump cannot show: what staff declare.

The pump tells the dose rule *that* the infusion stopped and restarted; only staff
know *why*. They say it in a nurse's or physician's observation (MQTT
``.../observations``, field ``dose_declaration``, validated by ``parse_declaration``):

- ``{"kind": "reaction", "reaction": "crs"|"neurotoxicity"|"other", "grade": 1-4}``:
  an adverse reaction and its grade;
- ``{"kind": "seizure"}``: one seizure;
- ``{"kind": "restart_after_reaction", "reaction": ..., "grade": 3}`` (optional
  ``onset`` and ``resolved_at``, RFC 3339): the infusion restarts after a grade 3
  reaction, so the label's restart applies: 9 µg/day, the higher dose after 7 days
  without recurrence (< 45 kg: 5 then 15 µg/m²/day);
- ``{"kind": "new_cycle"}``: after a break of more than 7 days the label starts a new
  cycle: the schedule starts again at the cycle's day 1 (``next_cycle`` protocol).

Every declaration needs ``by`` (who declares) and takes the observation's ``time``.
This module holds the declarations as the dose rule remembers them (``Plan``,
``DeclaredReaction``), the names of the rules that alerts quote, and the label's
discontinuation reminders (domain.md section 1, dose modifications):

=========================================== ======== ================================
rule                                        priority label text
=========================================== ======== ================================
crs_g4                                      high     CRS grade 4: discontinue
neurotoxicity_g4                            high     neurotoxicity grade 4: discontinue
more_than_one_seizure                       high     discontinue if more than one
neurotoxicity_g3_at_first_step              high     neurotoxicity grade 3 at 9 µg/day
neurotoxicity_g3_resolved_after_7_days      high     took > 7 days to resolve
other_g3_resolved_after_14_days             high     takes > 14 days to resolve
other_g4_consider                           medium   other grade 4: *consider* it
=========================================== ======== ================================

The dose rule cannot see the CRS and ICANS rules' grade suggestions: the rule engine
gives each rule the events only, never another rule's candidates. Reaction grades
therefore come from staff declarations; a ``CRS_SUSPECTED`` grade 4 suggestion alone
does not raise a discontinuation reminder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from daemon import ids
from daemon.errors import InputError
from daemon.events import DeclarationKind, DoseDeclaration, Priority, Reaction, Text
from daemon.numfmt import fmt
from daemon.timefmt import iso, iso_or_none, parse_iso, parse_iso_or_none

CALENDAR = "protocol_calendar"
NEW_CYCLE = "new_cycle"
SEIZURE = "seizure"  # a DeclaredReaction's reaction for a declared seizure

# Label, dose modifications (domain.md section 1).
NEUROTOXICITY_RESOLUTION_MAX = timedelta(days=7)  # "took > 7 days to resolve": discontinue
OTHER_RESOLUTION_MAX = timedelta(days=14)  # "takes > 14 days to resolve": discontinue
RESTART_GRADE = 3  # the label's restart at the first step follows a grade 3 reaction
MAX_REMEMBERED = 64  # declarations kept per bed; a course has a handful

_MAX_FUTURE_SKEW = timedelta(minutes=5)  # same allowance as an observation's time
_FIELDS: Mapping[DeclarationKind, frozenset[str]] = {
    DeclarationKind.REACTION: frozenset({"kind", "reaction", "grade"}),
    DeclarationKind.SEIZURE: frozenset({"kind"}),
    DeclarationKind.RESTART_AFTER_REACTION: frozenset({"kind", "reaction", "grade", "onset", "resolved_at"}),
    DeclarationKind.NEW_CYCLE: frozenset({"kind"}),
}


def restart_rule(reaction: Reaction) -> str:
    """The rule name of a restart after a grade 3 ``reaction``, e.g. ``restart_after_crs_g3``."""
    return f"restart_after_{reaction.value}_g{RESTART_GRADE}"


_REACTION_TEXT = {
    Reaction.CRS: Text("CRS", "SRC"),
    Reaction.NEUROTOXICITY: Text("neurotoxicity", "neurotoxicité"),
    Reaction.OTHER: Text("another adverse reaction", "un autre effet indésirable"),
}


def rule_text(rule: str, protocol: str) -> Text:
    """How a message names the dose rule it applied."""
    if rule == CALENDAR:
        return Text(f"protocol {protocol} calendar", f"calendrier du protocole {protocol}")
    if rule == NEW_CYCLE:
        return Text(
            f"new cycle of {protocol} from its day 1 (label: a break of more than 7 days)",
            f"nouveau cycle de {protocol} depuis son jour 1 (RCP : interruption de plus de 7 jours)",
        )
    for reaction in Reaction:
        if rule == restart_rule(reaction):
            what = _REACTION_TEXT[reaction]
            return Text(
                f"restart after {what.en} grade 3 (label: first step, the higher dose after 7 days "
                "without recurrence)",
                f"reprise après {what.fr} de grade 3 (RCP : premier palier, la dose supérieure après "
                "7 jours sans récidive)",
            )
    return Text(rule, rule)


# --------------------------------------------------------------------------- input


def parse_declaration(raw: Any, by: str | None, time: datetime, where: str) -> DoseDeclaration:
    """Validate an observation's ``dose_declaration``; raise ``InputError`` with a reason.

    Reasons: ``bad_type`` (not an object, or a field of the wrong type),
    ``missing_by`` (a declaration names who makes it), ``missing_field``,
    ``unknown_field`` (a field the kind does not take), ``bad_value`` (unknown kind or
    reaction), ``out_of_range`` (grade), ``bad_time``, ``future_time``,
    ``inconsistent`` (a restart after anything but grade 3, a resolution before onset).
    """
    if not isinstance(raw, dict):
        raise InputError("bad_type", f"'dose_declaration' must be an object, got {ids.shown(raw)}", where)
    if by is None:
        raise InputError("missing_by", "a dose_declaration needs 'by': who declares it", where)
    kind_raw = raw.get("kind")
    if kind_raw is None:
        raise InputError("missing_field", "dose_declaration needs 'kind'", where)
    try:
        kind = DeclarationKind(kind_raw) if isinstance(kind_raw, str) else None
    except ValueError:
        kind = None
    if kind is None:
        known = ", ".join(k.value for k in DeclarationKind)
        raise InputError(
            "bad_value", f"dose_declaration kind {ids.shown(kind_raw)} is not one of {known}", where
        )
    unknown = set(raw) - _FIELDS[kind]
    if unknown:
        allowed = ", ".join(sorted(_FIELDS[kind]))
        raise InputError(
            "unknown_field",
            f"dose_declaration of kind {kind.value} takes no {ids.shown_fields(unknown)} (allowed: {allowed})",
            where,
        )
    if kind in (DeclarationKind.SEIZURE, DeclarationKind.NEW_CYCLE):
        return DoseDeclaration(kind)
    missing = sorted({"reaction", "grade"} - set(raw))
    if missing:
        raise InputError(
            "missing_field", f"dose_declaration of kind {kind.value} needs {', '.join(missing)}", where
        )
    reaction_raw = raw["reaction"]
    try:
        reaction = Reaction(reaction_raw) if isinstance(reaction_raw, str) else None
    except ValueError:
        reaction = None
    if reaction is None:
        known = ", ".join(r.value for r in Reaction)
        raise InputError("bad_value", f"reaction {ids.shown(reaction_raw)} is not one of {known}", where)
    grade = raw["grade"]
    if isinstance(grade, bool) or not isinstance(grade, int):
        raise InputError("bad_type", f"'grade' must be a whole number, got {ids.shown(grade)}", where)
    if not 1 <= grade <= 4:
        raise InputError("out_of_range", f"'grade' {grade} is outside 1-4", where)
    if kind is DeclarationKind.REACTION:
        return DoseDeclaration(kind, reaction, grade)
    if grade != RESTART_GRADE:
        raise InputError(
            "inconsistent",
            f"the label's restart at the first step follows a grade 3 reaction, not grade {grade} "
            "(grade 4 CRS or neurotoxicity: discontinue permanently)",
            where,
        )
    onset = _time(raw.get("onset"), "onset", time, where)
    resolved = _time(raw.get("resolved_at"), "resolved_at", time, where)
    if onset is not None and resolved is not None and resolved < onset:
        raise InputError("inconsistent", "'resolved_at' is before 'onset'", where)
    return DoseDeclaration(kind, reaction, grade, onset, resolved)


def _time(raw: Any, key: str, time: datetime, where: str) -> datetime | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InputError("bad_time", f"'{key}' must be an RFC 3339 string, got {ids.shown(raw)}", where)
    try:
        value = parse_iso(raw)
    except ValueError as exc:
        raise InputError("bad_time", f"'{key}' {exc} (write it like 2026-03-02T08:00:00Z)", where) from exc
    if value - time > _MAX_FUTURE_SKEW:
        raise InputError("future_time", f"'{key}' {raw} is after the declaration's time", where)
    return value


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True, slots=True)
class DeclaredReaction:
    """A reaction (or a seizure) staff declared, as the dose rule keeps it."""

    time: datetime
    reaction: str  # a Reaction value, or "seizure"
    grade: int | None
    by: str | None
    at_first_step: bool = False  # the expected dose then was the first step's (9 µg/day)


@dataclass(frozen=True, slots=True)
class Plan:
    """A declared change of schedule: a restart after a reaction, or a new cycle.

    The schedule in force before it stops counting at ``since`` (the break's start);
    the plan's own schedule starts at ``start``, when the infusion restarted (``None``
    while it has not). A restart plan ends at ``stop``: where the interrupted cycle
    would have ended, moved by the break (label: 28 infusion days in a cycle).
    """

    rule: str  # restart_after_<reaction>_g3 or new_cycle
    since: datetime
    declared_at: datetime
    by: str | None
    protocol: str  # the cycle's protocol (new cycle) or the bed's (restart)
    start: datetime | None = None
    stop: datetime | None = None
    step_up: bool = True  # False once a grade >= 3 recurrence is declared after the restart
    reaction: str | None = None
    resolution_s: float | None = None  # onset to resolution of the reaction it follows


@dataclass(frozen=True, slots=True)
class Trigger:
    """A known reason to discontinue (or to consider it) under the label."""

    rule: str
    time: datetime
    priority: Priority
    text: Text


def triggers(reactions: tuple[DeclaredReaction, ...], plans: tuple[Plan, ...]) -> list[Trigger]:
    """Every discontinuation reason known from the declarations, in time order."""
    out: list[Trigger] = []
    seizures = [r for r in reactions if r.reaction == SEIZURE]
    if len(seizures) > 1:
        out.append(
            Trigger(
                "more_than_one_seizure",
                seizures[1].time,
                Priority.HIGH,
                Text(
                    f"{len(seizures)} seizures declared: the label discontinues after more than one",
                    f"{len(seizures)} crises convulsives déclarées : le RCP arrête le traitement "
                    "au-delà d'une",
                ),
            )
        )
    for r in reactions:
        if r.reaction == Reaction.CRS and r.grade == 4:
            out.append(
                Trigger(
                    "crs_g4",
                    r.time,
                    Priority.HIGH,
                    Text(
                        "CRS grade 4 declared: the label discontinues permanently",
                        "SRC de grade 4 déclaré : le RCP arrête définitivement le traitement",
                    ),
                )
            )
        elif r.reaction == Reaction.NEUROTOXICITY and r.grade == 4:
            out.append(
                Trigger(
                    "neurotoxicity_g4",
                    r.time,
                    Priority.HIGH,
                    Text(
                        "neurotoxicity grade 4 declared: the label discontinues permanently",
                        "neurotoxicité de grade 4 déclarée : le RCP arrête définitivement le traitement",
                    ),
                )
            )
        elif r.reaction == Reaction.NEUROTOXICITY and r.grade == 3 and r.at_first_step:
            out.append(
                Trigger(
                    "neurotoxicity_g3_at_first_step",
                    r.time,
                    Priority.HIGH,
                    Text(
                        "neurotoxicity grade 3 declared while the first step's dose (9 µg/day) was due: "
                        "the label discontinues",
                        "neurotoxicité de grade 3 déclarée pendant le premier palier (9 µg/jour) : "
                        "le RCP arrête le traitement",
                    ),
                )
            )
        elif r.reaction == Reaction.OTHER and r.grade == 4:
            out.append(
                Trigger(
                    "other_g4_consider",
                    r.time,
                    Priority.MEDIUM,
                    Text(
                        "another adverse reaction of grade 4 declared: the label says consider discontinuing",
                        "autre effet indésirable de grade 4 déclaré : le RCP dit d'envisager l'arrêt",
                    ),
                )
            )
    for plan in plans:
        took = plan.resolution_s
        if took is None:
            continue
        days = took / 86_400.0
        if plan.reaction == Reaction.NEUROTOXICITY and took > NEUROTOXICITY_RESOLUTION_MAX.total_seconds():
            out.append(
                Trigger(
                    "neurotoxicity_g3_resolved_after_7_days",
                    plan.declared_at,
                    Priority.HIGH,
                    Text(
                        f"neurotoxicity grade 3 took {fmt(days, 1, 'en')} days to resolve: the label discontinues "
                        "after more than 7",
                        f"la neurotoxicité de grade 3 a mis {fmt(days, 1, 'fr')} jours à se résoudre : le RCP arrête "
                        "le traitement au-delà de 7",
                    ),
                )
            )
        elif plan.reaction == Reaction.OTHER and took > OTHER_RESOLUTION_MAX.total_seconds():
            out.append(
                Trigger(
                    "other_g3_resolved_after_14_days",
                    plan.declared_at,
                    Priority.HIGH,
                    Text(
                        f"the grade 3 reaction took {fmt(days, 1, 'en')} days to resolve: the label discontinues "
                        "after more than 14",
                        f"l'effet indésirable de grade 3 a mis {fmt(days, 1, 'fr')} jours à se résoudre : le RCP "
                        "arrête le traitement au-delà de 14",
                    ),
                )
            )
    return sorted(out, key=lambda t: t.time)


# --------------------------------------------------------------------------- JSON


def dump_reaction(r: DeclaredReaction) -> dict[str, Any]:
    """``r`` as JSON-compatible data."""
    return {
        "time": iso(r.time),
        "reaction": r.reaction,
        "grade": r.grade,
        "by": r.by,
        "at_first_step": r.at_first_step,
    }


def load_reaction(data: Mapping[str, Any]) -> DeclaredReaction:
    """A ``DeclaredReaction`` from ``dump_reaction``'s output."""
    grade = data["grade"]
    return DeclaredReaction(
        parse_iso(data["time"]),
        str(data["reaction"]),
        None if grade is None else int(grade),
        None if data["by"] is None else str(data["by"]),
        bool(data["at_first_step"]),
    )


def dump_plan(plan: Plan) -> dict[str, Any]:
    """``plan`` as JSON-compatible data."""
    return {
        "rule": plan.rule,
        "since": iso(plan.since),
        "declared_at": iso(plan.declared_at),
        "by": plan.by,
        "protocol": plan.protocol,
        "start": iso_or_none(plan.start),
        "stop": iso_or_none(plan.stop),
        "step_up": plan.step_up,
        "reaction": plan.reaction,
        "resolution_s": plan.resolution_s,
    }


def load_plan(data: Mapping[str, Any]) -> Plan:
    """A ``Plan`` from ``dump_plan``'s output."""
    return Plan(
        rule=str(data["rule"]),
        since=parse_iso(data["since"]),
        declared_at=parse_iso(data["declared_at"]),
        by=None if data["by"] is None else str(data["by"]),
        protocol=str(data["protocol"]),
        start=parse_iso_or_none(data["start"]),
        stop=parse_iso_or_none(data["stop"]),
        step_up=bool(data["step_up"]),
        reaction=None if data["reaction"] is None else str(data["reaction"]),
        resolution_s=None if data["resolution_s"] is None else float(data["resolution_s"]),
    )
