"""The rule engine contains a rule that raises: old state kept, RULE_FAILED, others carry on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, cast

import pytest

from daemon.events import AlertCandidate, BagHung, Event, Kind, Priority, Tick
from daemon.metrics import Counters
from daemon.rules import FAILED, RULE_FAILED, RuleEngine

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@dataclass
class Counting:
    """A rule that counts the events it saw and says so in one candidate per event."""

    name: str = "counting"

    def initial(self) -> int:
        return 0

    def step(self, state: int, event: Event, now: datetime) -> tuple[int, Sequence[AlertCandidate]]:
        bed = event.bed if not isinstance(event, Tick) else "?"
        return state + 1, [AlertCandidate(f"SEEN_{self.name}", "w1", bed, now, True, value=state + 1)]

    def dump(self, state: int) -> Mapping[str, Any]:
        return {"n": state}

    def load(self, data: Mapping[str, Any]) -> int:
        return int(data["n"])


@dataclass
class Broken(Counting):
    """Counts too, but divides by zero on every second event."""

    name: str = "broken"

    def step(self, state: int, event: Event, now: datetime) -> tuple[int, Sequence[AlertCandidate]]:
        if state % 2 == 1:
            _ = 1 / 0
        return super().step(state, event, now)


def bag(bed: str, minutes: float) -> BagHung:
    return BagHung("w1", bed, at(minutes), "B-1", 1.0)


def engine(counters: Counters) -> RuleEngine:
    return RuleEngine(
        {
            "b1": [Counting("first"), Broken(), Counting("last")],
            "b2": [Counting("first"), Counting("last")],
        },
        counters=counters,
        wards={"b1": "w1", "b2": "w1"},
    )


def test_a_failing_rule_keeps_its_state_and_the_others_run(caplog: pytest.LogCaptureFixture) -> None:
    counters = Counters()
    rules = engine(counters)
    assert [c.condition for c in rules.handle(bag("b1", 0), at(0))] == [
        "SEEN_first",
        "SEEN_broken",
        "SEEN_last",
    ]
    with caplog.at_level(logging.ERROR, logger="daemon.rules"):
        out = rules.handle(bag("b1", 1), at(1))
    assert [c.condition for c in out] == ["SEEN_first", RULE_FAILED, "SEEN_last"]
    failed = out[1]
    assert failed == AlertCandidate(
        condition=RULE_FAILED,
        ward="w1",
        bed="b1",
        time=at(1),
        present=True,
        kind=Kind.TECHNICAL,
        priority=Priority.HIGH,
        message=failed.message,
        details={"rule": "broken", "error": "ZeroDivisionError: division by zero"},
    )
    assert failed.message is not None
    assert "broken" in failed.message.en
    assert "broken" in failed.message.fr
    assert "ZeroDivisionError" in failed.message.en
    # The failing rule's state is the one before the failure; the others moved on.
    assert (rules.state("b1", "broken"), rules.state("b1", "first"), rules.state("b1", "last")) == (1, 2, 2)
    assert counters.get(FAILED, "broken") == 1
    assert rules.failing("b1") == {"broken"}
    [record] = caplog.records
    assert record.exc_info is not None
    assert record.exc_info[0] is ZeroDivisionError
    assert "BagHung(" in record.getMessage()  # the event that caused it
    assert record.getMessage().startswith("rule broken failed at bed b1 on BagHung(")
    assert record.getMessage().endswith("; its state is kept")


def test_a_tick_reaches_every_bed_even_when_one_fails() -> None:
    counters = Counters()
    rules = engine(counters)
    rules.handle(bag("b1", 0), at(0))
    out = rules.handle(Tick(at(1)), at(1))
    assert [(c.bed if c.condition == RULE_FAILED else "", c.condition) for c in out] == [
        ("", "SEEN_first"),
        ("b1", RULE_FAILED),
        ("", "SEEN_last"),
        ("", "SEEN_first"),
        ("", "SEEN_last"),
    ]
    assert out[1].ward == "w1"  # from ``wards``: a tick names no ward
    assert rules.state("b2", "first") == 1
    assert rules.state("b2", "last") == 1


def test_failures_are_counted_each_time_and_the_traceback_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counters = Counters()
    rules = RuleEngine({"b1": [Broken()]}, counters=counters)
    rules.handle(bag("b1", 0), at(0))  # state 1: every later step fails
    with caplog.at_level(logging.ERROR, logger="daemon.rules"):
        for minute in range(1, 4):
            [failed] = rules.handle(bag("b1", minute), at(minute))
            assert failed.condition == RULE_FAILED
            assert failed.present
    assert counters.get(FAILED, "broken") == 3
    assert [r.exc_info is not None for r in caplog.records] == [True, False, False]
    assert rules.state("b1", "broken") == 1


def test_rule_failed_clears_once_the_rule_works_again() -> None:
    class Flaky(Counting):
        """Raises while ``broken`` holds anything."""

        broken: ClassVar[list[bool]] = [True]

        def step(self, state: int, event: Event, now: datetime) -> tuple[int, Sequence[AlertCandidate]]:
            if self.broken:
                raise RuntimeError("bug")
            return state + 1, []

    rules = RuleEngine({"b1": [Flaky("flaky")]})
    [failed] = rules.handle(bag("b1", 0), at(0))
    assert failed.present
    assert failed.details == {"rule": "flaky", "error": "RuntimeError: bug"}
    Flaky.broken.clear()
    [cleared] = rules.handle(bag("b1", 1), at(1))
    assert (cleared.condition, cleared.present, cleared.bed, cleared.ward) == (RULE_FAILED, False, "b1", "w1")
    assert rules.handle(bag("b1", 2), at(2)) == []
    assert rules.failing("b1") == frozenset()
    assert rules.counters.get(FAILED, "flaky") == 1  # a private counter set by default


def test_cancellation_is_not_contained() -> None:
    class Cancelled(Counting):
        def step(self, state: int, event: Event, now: datetime) -> tuple[int, Sequence[AlertCandidate]]:
            raise asyncio.CancelledError

    rules = RuleEngine({"b1": [Cancelled()]})
    with pytest.raises(asyncio.CancelledError):
        rules.handle(bag("b1", 0), at(0))


def test_a_rule_failing_on_a_tick_at_a_bed_of_no_known_ward_names_no_ward() -> None:
    # A Tick carries no ward: the engine's ``wards`` map gives it, and without one the
    # RULE_FAILED candidate's ward is empty rather than invented.
    rules = RuleEngine({"b9": [Broken()]})
    rules.handle(Tick(at(0)), at(0))
    out = rules.handle(Tick(at(1)), at(1))
    assert [(c.condition, c.ward, c.bed) for c in out] == [(RULE_FAILED, "", "b9")]


def test_restore_leaves_beds_and_rules_missing_from_the_snapshot_as_they_are() -> None:
    rules = engine(Counters())
    rules.handle(bag("b1", 1), at(1))
    rules.handle(bag("b2", 1), at(1))
    rules.restore({"b1": {"first": {"n": 7}}})
    assert [rules.state("b1", name) for name in ("first", "broken", "last")] == [7, 1, 1]
    assert [rules.state("b2", name) for name in ("first", "last")] == [1, 1]


def test_a_rule_that_works_again_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Flaky(Counting):
        """Raises while ``broken`` holds anything."""

        broken: ClassVar[list[bool]] = [True]

        def step(self, state: int, event: Event, now: datetime) -> tuple[int, Sequence[AlertCandidate]]:
            if self.broken:
                raise RuntimeError("bug")
            return state + 1, []

    rules = RuleEngine({"b1": [Flaky("flaky")]})
    rules.handle(bag("b1", 0), at(0))
    Flaky.broken.clear()
    with caplog.at_level(logging.INFO, logger="daemon.rules"):
        [cleared] = rules.handle(bag("b1", 1), at(1))
    assert (cleared.condition, cleared.present, cleared.time, cleared.kind, cleared.priority) == (
        RULE_FAILED,
        False,
        at(1),
        Kind.TECHNICAL,
        Priority.HIGH,
    )
    assert caplog.messages[-1] == "rule flaky works again at bed b1"


def test_a_rule_that_works_again_on_a_tick_clears_at_its_beds_ward() -> None:
    class Flaky(Counting):
        """Raises while ``broken`` holds anything."""

        broken: ClassVar[list[bool]] = [True]

        def step(self, state: int, event: Event, now: datetime) -> tuple[int, Sequence[AlertCandidate]]:
            if self.broken:
                raise RuntimeError("bug")
            return state + 1, []

    rules = RuleEngine({"b1": [Flaky("flaky")]}, wards={"b1": "w7"})
    [failed] = rules.handle(Tick(at(0)), at(0))
    Flaky.broken.clear()
    [cleared] = rules.handle(Tick(at(1)), at(1))
    assert [(c.ward, c.bed, c.present) for c in (failed, cleared)] == [
        ("w7", "b1", True),
        ("w7", "b1", False),
    ]


def test_candidates_given_lazily_are_read_inside_the_containment() -> None:
    """A rule may return any sequence or iterable of candidates: the engine reads it while
    the rule is still contained, so one that raises while it is read fails like a step."""

    class Lazy(Counting):
        def step(self, state: int, event: Event, now: datetime) -> tuple[int, Sequence[AlertCandidate]]:
            new, candidates = super().step(state, event, now)

            def read() -> Iterator[AlertCandidate]:
                if state % 2 == 1:
                    raise ValueError("read")
                yield from candidates

            return new, cast("Sequence[AlertCandidate]", read())

    rules = RuleEngine({"b1": [Lazy("lazy"), Counting("last")]})
    assert [c.condition for c in rules.handle(bag("b1", 0), at(0))] == ["SEEN_lazy", "SEEN_last"]
    out = rules.handle(bag("b1", 1), at(1))
    assert [(c.condition, c.details.get("rule")) for c in out] == [(RULE_FAILED, "lazy"), ("SEEN_last", None)]
    assert rules.state("b1", "lazy") == 1, "the state of a step whose candidates failed is not kept"
    assert isinstance(out, list)
