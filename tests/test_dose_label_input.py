"""Dose declarations as staff send them: every refusal names its reason, its field and
where it came from, and the accepted values reach their edges (grade 1-4, a resolution
at its onset, a time up to 5 minutes ahead)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from daemon.clinical.dose_label import parse_declaration
from daemon.errors import InputError
from daemon.events import DeclarationKind, DoseDeclaration, Reaction

T = datetime(2026, 3, 12, 8, tzinfo=UTC)
WHERE = "ward/w1/bed/b1/observations"
RESTART = {"kind": "restart_after_reaction", "reaction": "other", "grade": 3}


@pytest.mark.parametrize(
    ("raw", "by", "message"),
    [
        ("new_cycle", "A", "bad_type: 'dose_declaration' must be an object, got 'new_cycle'"),
        ({"kind": "new_cycle"}, None, "missing_by: a dose_declaration needs 'by': who declares it"),
        ({}, "A", "missing_field: dose_declaration needs 'kind'"),
        (
            {"kind": "restart"},
            "A",
            "bad_value: dose_declaration kind 'restart' is not one of reaction, seizure, "
            "restart_after_reaction, new_cycle",
        ),
        (
            {"kind": 5},
            "A",
            "bad_value: dose_declaration kind 5 is not one of reaction, seizure, restart_after_reaction, new_cycle",
        ),
        (
            {"kind": "new_cycle", "grade": 3},
            "A",
            "unknown_field: dose_declaration of kind new_cycle takes no 'grade' (allowed: kind)",
        ),
        (
            {"kind": "reaction", "reaction": "crs", "grade": 3, "onset": "2026-03-12T08:00:00Z"},
            "A",
            "unknown_field: dose_declaration of kind reaction takes no 'onset' (allowed: grade, kind, reaction)",
        ),
        ({"kind": "reaction"}, "A", "missing_field: dose_declaration of kind reaction needs grade, reaction"),
        (
            {"kind": "reaction", "reaction": "ics", "grade": 3},
            "A",
            "bad_value: reaction 'ics' is not one of crs, neurotoxicity, other",
        ),
        (
            {"kind": "reaction", "reaction": 7, "grade": 3},
            "A",
            "bad_value: reaction 7 is not one of crs, neurotoxicity, other",
        ),
        (
            {"kind": "reaction", "reaction": "crs", "grade": "3"},
            "A",
            "bad_type: 'grade' must be a whole number, got '3'",
        ),
        ({"kind": "reaction", "reaction": "crs", "grade": 0}, "A", "out_of_range: 'grade' 0 is outside 1-4"),
        ({"kind": "reaction", "reaction": "crs", "grade": 5}, "A", "out_of_range: 'grade' 5 is outside 1-4"),
        (
            {"kind": "restart_after_reaction", "reaction": "crs", "grade": 4},
            "A",
            "inconsistent: the label's restart at the first step follows a grade 3 reaction, not grade 4 "
            "(grade 4 CRS or neurotoxicity: discontinue permanently)",
        ),
        ({**RESTART, "onset": 5}, "A", "bad_time: 'onset' must be an RFC 3339 string, got 5"),
        (
            {**RESTART, "resolved_at": "yesterday"},
            "A",
            "bad_time: 'resolved_at' is not RFC 3339: 'yesterday' (write it like 2026-03-02T08:00:00Z)",
        ),
        (
            {**RESTART, "onset": "2026-03-12T08:05:01Z"},
            "A",
            "future_time: 'onset' 2026-03-12T08:05:01Z is after the declaration's time",
        ),
        (
            {**RESTART, "onset": "2026-03-10T00:00:00Z", "resolved_at": "2026-03-09T00:00:00Z"},
            "A",
            "inconsistent: 'resolved_at' is before 'onset'",
        ),
    ],
)
def test_each_refusal_says_why_and_where(raw: Any, by: str | None, message: str) -> None:
    with pytest.raises(InputError) as info:
        parse_declaration(raw, by, T, WHERE)
    assert str(info.value) == f"{WHERE}: {message}"
    assert (info.value.reason, info.value.where) == (message.split(":", maxsplit=1)[0], WHERE)


@pytest.mark.parametrize("grade", [1, 4])
def test_a_reaction_grade_from_1_to_4_is_accepted(grade: int) -> None:
    raw = {"kind": "reaction", "reaction": "neurotoxicity", "grade": grade}
    assert parse_declaration(raw, "A", T, WHERE) == DoseDeclaration(
        DeclarationKind.REACTION, Reaction.NEUROTOXICITY, grade
    )


def test_a_seizure_and_a_new_cycle_carry_only_their_kind() -> None:
    assert parse_declaration({"kind": "seizure"}, "A", T, WHERE) == DoseDeclaration(DeclarationKind.SEIZURE)
    assert parse_declaration({"kind": "new_cycle"}, "A", T, WHERE) == DoseDeclaration(
        DeclarationKind.NEW_CYCLE
    )


def test_a_resolution_at_its_onset_and_a_time_5_minutes_ahead_are_accepted() -> None:
    at = datetime(2026, 3, 12, 8, 5, tzinfo=UTC)  # exactly the 5 min allowance ahead
    raw = {**RESTART, "onset": "2026-03-12T08:05:00Z", "resolved_at": "2026-03-12T08:05:00Z"}
    assert parse_declaration(raw, "A", T, WHERE) == DoseDeclaration(
        DeclarationKind.RESTART_AFTER_REACTION, Reaction.OTHER, 3, at, at
    )
