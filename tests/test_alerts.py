"""Unit tests of the alert engine: the pure AlertBook, and AlertService without a broker."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon import ids
from daemon.alerts import (
    AckVia,
    Alert,
    AlertBook,
    AlertService,
    AlertState,
    Phase,
    UnknownAlertError,
    is_ack_topic,
    load_book,
)
from daemon.clock import ManualClock
from daemon.config import AlertsConfig, Config
from daemon.errors import InputError, WarddError
from daemon.events import AlertCandidate, Kind, Priority, Text
from daemon.links.store import StoreWriter
from daemon.metrics import Counters
from daemon.points import Point
from tests.helpers import commit_staged, store_writer

T0 = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
FEVER_TEXT = Text(en="Fever 38.2 °C", fr="Fièvre 38,2 °C")


def cand(
    condition: str = "FEVER",
    *,
    present: bool = True,
    priority: Priority = Priority.MEDIUM,
    value: float | None = 38.2,
    details: dict[str, Any] | None = None,
    bed: str = "b1",
    ward: str = "w1",
    at_s: float = 0.0,
    kind: Kind = Kind.PHYSIOLOGICAL,
) -> AlertCandidate:
    """A candidate as a rule would emit it."""
    return AlertCandidate(
        condition=condition,
        ward=ward,
        bed=bed,
        time=T0 + timedelta(seconds=at_s),
        present=present,
        kind=kind,
        priority=priority,
        value=value,
        unit="Cel",
        message=FEVER_TEXT,
        details=details or {},
    )


def at(seconds: float) -> datetime:
    """Daemon time ``seconds`` after T0."""
    return T0 + timedelta(seconds=seconds)


# --- AlertBook: lifecycle ---------------------------------------------------------------------


def test_first_candidate_starts_an_active_alert() -> None:
    book = AlertBook()
    [t] = book.apply(cand(details={"grade": 1}), at(5))
    alert = t.alert
    assert t.phase is Phase.START
    assert t.previous is None
    assert alert.state is AlertState.ACTIVE
    assert alert.id == "b1-FEVER-1"
    assert (alert.condition, alert.ward, alert.bed, alert.value, alert.unit) == (
        "FEVER",
        "w1",
        "b1",
        38.2,
        "Cel",
    )
    assert alert.since == T0  # the condition's onset: event time
    assert alert.updated == at(5)  # daemon time
    assert alert.details == {"grade": 1}
    assert book.open_alerts() == [alert]


def test_repeats_are_deduplicated_even_when_the_value_moves() -> None:
    book = AlertBook()
    [start] = book.apply(cand(), at(0))
    for i in range(1, 20):
        assert book.apply(cand(value=38.2 + i / 10, at_s=i), at(i)) == []
    # The alert stays as last published: what stations show is what was sent.
    assert book.open_alerts() == [start.alert]


def test_new_details_are_an_update() -> None:
    book = AlertBook()
    book.apply(cand(details={"grade": 1}), at(0))
    [t] = book.apply(cand(details={"grade": 1, "reason": "x"}, value=38.5), at(10))
    assert t.phase is Phase.UPDATE
    assert t.alert.value == 38.5
    assert t.alert.state is AlertState.ACTIVE


def test_priority_rise_escalates_and_reactivates_an_acknowledged_alert() -> None:
    book = AlertBook()
    [start] = book.apply(cand("CRS_SUSPECTED", details={"grade": 1}), at(0))
    book.acknowledge(start.alert.id, "nurse-1", at(60))
    [t] = book.apply(cand("CRS_SUSPECTED", priority=Priority.HIGH, details={"grade": 2}), at(3600))
    assert t.phase is Phase.ESCALATE
    assert t.previous is AlertState.ACKNOWLEDGED
    assert t.alert.state is AlertState.ACTIVE
    assert t.alert.id == start.alert.id
    assert t.alert.acked_by is None
    assert t.alert.active_since == at(3600)
    assert t.alert.details == {"grade": 2}


def test_priority_fall_deescalates_and_keeps_the_acknowledgement() -> None:
    book = AlertBook()
    [start] = book.apply(cand(priority=Priority.HIGH), at(0))
    book.acknowledge(start.alert.id, "nurse-1", at(10))
    [t] = book.apply(cand(priority=Priority.MEDIUM), at(20))
    assert t.phase is Phase.DEESCALATE
    assert t.alert.state is AlertState.ACKNOWLEDGED
    assert t.alert.acked_by == "nurse-1"


def test_grade_rise_within_high_escalates_without_restarting_the_timer() -> None:
    book = AlertBook(escalate_after_s=300)
    book.apply(cand("CRS_SUSPECTED", priority=Priority.HIGH, details={"grade": 2}), at(0))
    [overdue] = book.tick(at(300))
    [t] = book.apply(cand("CRS_SUSPECTED", priority=Priority.HIGH, details={"grade": 3}), at(400))
    assert t.phase is Phase.ESCALATE
    assert t.alert.active_since == at(0)
    assert t.alert.escalation_level == overdue.alert.escalation_level == 1
    [down] = book.apply(cand("CRS_SUSPECTED", priority=Priority.HIGH, details={"grade": 2}), at(500))
    assert down.phase is Phase.DEESCALATE
    assert down.alert.escalation_level == 1
    [second] = book.tick(at(600))
    assert second.alert.escalation_level == 2


def test_grade_rise_reactivates_an_acknowledged_alert() -> None:
    book = AlertBook()
    [start] = book.apply(cand("CRS_SUSPECTED", priority=Priority.HIGH, details={"grade": 2}), at(0))
    book.acknowledge(start.alert.id, "nurse", at(10))
    [t] = book.apply(cand("CRS_SUSPECTED", priority=Priority.HIGH, details={"grade": 3}), at(20))
    assert t.phase is Phase.ESCALATE
    assert t.alert.state is AlertState.ACTIVE
    assert t.alert.acked_by is None
    assert t.alert.active_since == at(20)


@pytest.mark.parametrize("priority", [Priority.LOW, Priority.MEDIUM])
def test_unacknowledged_low_and_medium_alerts_close_when_cleared(priority: Priority) -> None:
    book = AlertBook()
    book.apply(cand(priority=priority), at(0))
    [t] = book.apply(cand(present=False, priority=priority), at(30))
    assert t.phase is Phase.END
    assert t.alert.state is AlertState.RESOLVED
    assert t.closed
    assert book.open_alerts() == []
    assert book.apply(cand(present=False), at(31)) == []


def test_high_alert_latches_until_acknowledged() -> None:
    book = AlertBook()
    [start] = book.apply(cand(priority=Priority.HIGH), at(0))
    [latch] = book.apply(cand(present=False, priority=Priority.HIGH), at(30))
    assert latch.phase is Phase.LATCH
    assert latch.alert.state is AlertState.LATCHED
    assert not latch.closed
    assert book.apply(cand(present=False, priority=Priority.HIGH), at(31)) == []
    [ack] = book.acknowledge(start.alert.id, "nurse-2", at(40))
    assert ack.phase is Phase.ACK
    assert ack.alert.state is AlertState.RESOLVED
    assert ack.closed
    assert ack.alert.acked_by == "nurse-2"
    assert ack.alert.acked_at == at(40)
    assert book.open_alerts() == []


def test_latched_alert_raised_again_returns_to_active_with_the_same_id() -> None:
    book = AlertBook()
    [start] = book.apply(cand(priority=Priority.HIGH), at(0))
    book.apply(cand(present=False, priority=Priority.HIGH), at(30))
    [again] = book.apply(cand(priority=Priority.HIGH, at_s=100), at(100))
    assert again.phase is Phase.REACTIVATE
    assert again.previous is AlertState.LATCHED
    assert again.alert.state is AlertState.ACTIVE
    assert again.alert.id == start.alert.id
    assert again.alert.since == at(100)
    assert again.alert.active_since == at(100)


def test_acknowledged_alert_resolves_when_cleared() -> None:
    book = AlertBook()
    [start] = book.apply(cand(priority=Priority.HIGH), at(0))
    [ack] = book.acknowledge(start.alert.id, "  nurse-3 ", at(5))
    assert ack.alert.state is AlertState.ACKNOWLEDGED
    assert ack.alert.acked_by == "nurse-3"
    assert book.acknowledge(start.alert.id, "nurse-4", at(6)) == []  # already: no change
    [end] = book.apply(cand(present=False, priority=Priority.HIGH), at(10))
    assert end.phase is Phase.END
    assert end.closed
    assert end.alert.acked_by == "nurse-3"


def test_a_new_episode_after_closing_gets_a_new_id() -> None:
    book = AlertBook()
    [first] = book.apply(cand(), at(0))
    book.apply(cand(present=False), at(10))
    [second] = book.apply(cand(), at(20))
    assert second.phase is Phase.START
    assert second.alert.id != first.alert.id


def test_one_open_alert_per_bed_and_condition() -> None:
    book = AlertBook()
    book.apply(cand("FEVER", bed="b1"), at(0))
    book.apply(cand("FEVER", bed="b2"), at(0))
    book.apply(cand("HYPOTENSION", bed="b1"), at(0))
    book.apply(cand("FEVER", bed="b1"), at(1))
    ids = [a.id for a in book.open_alerts()]
    assert len(ids) == 3
    assert len(set(ids)) == 3


def test_ids_are_topic_safe_whatever_the_condition() -> None:
    book = AlertBook()
    [t] = book.apply(cand("ODD/NAME+#", bed="b 1"), at(0))
    assert t.alert.id == "b_1-ODD_NAME__-1"
    # Numbered one after the other, whatever the condition.
    [u] = book.apply(cand("OTHER"), at(0))
    assert u.alert.id == "b1-OTHER-2"


def test_missing_message_gets_a_default_in_both_languages() -> None:
    book = AlertBook()
    candidate = AlertCandidate("PUMP_COMM_LOST", "w1", "b1", T0, True, kind=Kind.TECHNICAL)
    [t] = book.apply(candidate, at(0))
    assert "PUMP_COMM_LOST" in t.alert.message.en
    assert "lit b1" in t.alert.message.fr
    assert t.alert.kind is Kind.TECHNICAL


# --- AlertBook: acknowledgement errors --------------------------------------------------------


def test_acknowledging_an_unknown_id_raises_a_typed_error() -> None:
    book = AlertBook()
    with pytest.raises(UnknownAlertError) as info:
        book.acknowledge("nope-1", "nurse", at(0))
    assert info.value.alert_id == "nope-1"
    assert isinstance(info.value, WarddError)


def test_acknowledging_a_closed_alert_raises() -> None:
    book = AlertBook()
    [start] = book.apply(cand(), at(0))
    book.apply(cand(present=False), at(1))
    with pytest.raises(UnknownAlertError):
        book.acknowledge(start.alert.id, "nurse", at(2))


def test_acknowledgement_needs_a_name() -> None:
    book = AlertBook()
    [start] = book.apply(cand(), at(0))
    with pytest.raises(InputError) as info:
        book.acknowledge(start.alert.id, "   ", at(1))
    assert info.value.reason == "missing_by"
    assert info.value.detail == "an acknowledgement needs the name of the person who gives it"
    assert book.get(start.alert.id).state is AlertState.ACTIVE


# --- AlertBook: escalation timing -------------------------------------------------------------


def test_unacknowledged_high_alert_escalates_each_period() -> None:
    book = AlertBook(escalate_after_s=300)
    book.apply(cand(priority=Priority.HIGH), at(0))
    assert book.tick(at(299.9)) == []
    [first] = book.tick(at(300))
    assert first.phase is Phase.OVERDUE
    assert first.alert.escalation_level == 1
    assert first.alert.state is AlertState.ACTIVE
    assert book.tick(at(300)) == []
    assert book.tick(at(599)) == []
    [second] = book.tick(at(600))
    assert second.alert.escalation_level == 2
    # A late tick jumps to the level due, in one transition.
    [late] = book.tick(at(1500))
    assert late.alert.escalation_level == 5


def test_medium_acknowledged_and_latched_alerts_do_not_escalate() -> None:
    book = AlertBook(escalate_after_s=300)
    book.apply(cand("FEVER", priority=Priority.MEDIUM), at(0))
    [acked] = book.apply(cand("HYPOTENSION", priority=Priority.HIGH), at(0))
    book.acknowledge(acked.alert.id, "nurse", at(10))
    book.apply(cand("HYPOXIA", priority=Priority.HIGH), at(0))
    book.apply(cand("HYPOXIA", priority=Priority.HIGH, present=False), at(10))
    assert book.tick(at(3600)) == []


def test_escalation_timer_starts_when_priority_becomes_high() -> None:
    book = AlertBook(escalate_after_s=300)
    book.apply(cand(priority=Priority.MEDIUM), at(0))
    book.apply(cand(priority=Priority.HIGH), at(1000))
    assert book.tick(at(1299)) == []
    [t] = book.tick(at(1300))
    assert t.alert.escalation_level == 1


def _due_by_scan(book: AlertBook, now: datetime) -> list[tuple[str, int]]:
    """What a check at ``now`` escalates, found by walking every open alert (the reference
    the book's schedule must agree with): (id, new level), oldest first."""
    out = []
    for alert in book.open_alerts():
        if alert.state is not AlertState.ACTIVE or alert.priority is not Priority.HIGH:
            continue
        waited_s = (now - alert.active_since).total_seconds()
        level = math.floor(waited_s / book.escalate_after_s) if waited_s > 0 else 0
        if level > alert.escalation_level:
            out.append((alert.id, level))
    return out


_STEP = st.one_of(
    st.tuples(
        st.just("candidate"),
        st.sampled_from(["FEVER", "HYPOTENSION"]),
        st.sampled_from(["b1", "b2", "b3"]),
        st.booleans(),
        st.sampled_from([Priority.MEDIUM, Priority.HIGH]),
    ),
    st.tuples(st.just("ack"), st.integers(0, 5)),
    st.tuples(st.just("reload")),
    st.tuples(st.just("move"), st.sampled_from(["b1", "b2", "b3"]), st.sampled_from(["b4", "b5"])),
)


@settings(max_examples=300, deadline=None)
@given(
    escalate_after_s=st.sampled_from([0.3, 1.0, 7.0, 300.0]),
    steps=st.lists(st.tuples(_STEP, st.floats(0, 400, allow_nan=False)), max_size=40),
)
def test_the_escalation_schedule_finds_what_a_walk_over_every_alert_finds(
    escalate_after_s: float, steps: list[tuple[tuple[Any, ...], float]]
) -> None:
    """Checks at irregular gaps, among starts, clears (latching), rises and falls of
    priority, acknowledgements, transfers and reloads: each check escalates exactly the
    alerts, at the levels and in the order, that walking every open alert gives; and the
    open alerts counted by condition and found by bed are those the walk finds."""
    book = AlertBook(escalate_after_s=escalate_after_s)
    now = T0
    for step, gap_s in steps:
        now += timedelta(seconds=gap_s)
        if step[0] == "candidate":
            _, condition, bed, present, priority = step
            book.apply(cand(condition, bed=bed, present=present, priority=priority), now)
        elif step[0] == "ack":
            alerts = book.open_alerts()
            if alerts:
                book.acknowledge(alerts[step[1] % len(alerts)].id, "nurse", now)
        elif step[0] == "reload":
            book = AlertBook.load(book.dump(), escalate_after_s=escalate_after_s)
        else:
            _, bed, to_bed = step
            book.move_bed("w1", bed, "w1", to_bed, now)
        expected = _due_by_scan(book, now)
        assert [(t.alert.id, t.alert.escalation_level) for t in book.tick(now)] == expected
        assert _due_by_scan(book, now) == []
        # The lookups that spare a walk over every open alert agree with one.
        alerts = book.open_alerts()
        for condition in ("FEVER", "HYPOTENSION"):
            assert book.open_count(condition) == sum(a.condition == condition for a in alerts)
        for alert in alerts:
            assert book.find_open(alert.ward, alert.bed, alert.condition) == alert


def test_restoring_a_closed_alert_removes_it_from_the_counts() -> None:
    book = AlertBook()
    [start] = book.apply(cand(), at(0))
    book.apply(cand(bed="b2"), at(0))
    assert book.open_count("FEVER") == 2
    book.restore(replace(start.alert, state=AlertState.RESOLVED, phase=Phase.END))
    assert book.open_count("FEVER") == 1
    assert book.find_open("w1", "b1", "FEVER") is None
    book.restore(start.alert)  # open again, then the same alert restored twice: counted once
    book.restore(start.alert)
    assert book.open_count("FEVER") == 2


def test_a_check_with_many_open_alerts_reads_only_those_due() -> None:
    """No work that grows with the open alerts: a check walks only the alerts due."""
    book = AlertBook(escalate_after_s=300)
    [one] = book.apply(cand(bed="early", priority=Priority.HIGH), at(0))
    for i in range(2000):
        book.apply(cand(bed=f"b{i}", priority=Priority.HIGH), at(100))
    read: list[str] = []
    find = book.find

    def counted(alert_id: str) -> Alert | None:
        read.append(alert_id)
        return find(alert_id)

    book.find = counted  # type: ignore[method-assign]
    assert book.tick(at(299)) == []
    assert read == []
    [t] = book.tick(at(300))  # only the alert opened at 0 s is due by 300 s
    assert t.alert.id == one.alert.id
    assert read == [one.alert.id]
    assert len(book.tick(at(400))) == 2000


def test_a_check_just_before_a_period_ends_keeps_the_alert_scheduled() -> None:
    # 3 × 0.7 s is 2.0999999999999996 s in floating point: the schedule says 2.099999 s
    # (rounded down to the microsecond, never late), where the period has not quite run.
    book = AlertBook(escalate_after_s=0.7)
    book.apply(cand(priority=Priority.HIGH), at(0))
    assert [t.alert.escalation_level for t in book.tick(at(1.4))] == [2]
    assert book.tick(at(2.099999)) == []
    assert [t.alert.escalation_level for t in book.tick(at(2.1))] == [3]


def test_the_escalation_schedule_stays_bounded_while_alerts_change() -> None:
    book = AlertBook(escalate_after_s=300)
    book.apply(cand(priority=Priority.HIGH), at(0))
    for i in range(1, 1001):
        # Each change of priority schedules the alert again; the earlier entries are stale.
        priority = Priority.HIGH if i % 2 == 0 else Priority.MEDIUM
        book.apply(cand(priority=priority), at(i))
    assert book._escalations.heap_size <= 2 * len(book.open_alerts()) + 64
    assert book.tick(at(1000 + 299)) == []
    [t] = book.tick(at(1000 + 300))  # high again since 1,000 s
    assert t.alert.escalation_level == 1


def test_escalate_after_must_be_positive() -> None:
    with pytest.raises(ValueError, match="escalate_after_s"):
        AlertBook(escalate_after_s=0)


# --- AlertBook: persistence -------------------------------------------------------------------


def test_dump_load_round_trip() -> None:
    book = AlertBook(escalate_after_s=120)
    [a] = book.apply(cand("FEVER", details={"grade": 1, "ctx": (1, 2)}), at(0))
    [b] = book.apply(cand("HYPOTENSION", priority=Priority.HIGH), at(0))
    book.acknowledge(a.alert.id, "nurse", at(5), name="A. Martin")
    book.apply(cand("HYPOTENSION", priority=Priority.HIGH, present=False), at(6))
    book.tick(at(7))
    data = json.loads(json.dumps(book.dump()))
    again = AlertBook.load(data, escalate_after_s=120)
    assert again.open_alerts() == book.open_alerts()
    assert (again.get(a.alert.id).acked_by, again.get(a.alert.id).acked_name) == ("nurse", "A. Martin")
    assert again.next_seq == book.next_seq
    assert again.get(b.alert.id).state is AlertState.LATCHED
    # No spurious update after reload: details were normalised before comparison.
    assert again.apply(cand("FEVER", details={"grade": 1, "ctx": (1, 2)}), at(8)) == []
    [new] = again.apply(cand("TACHYCARDIA"), at(9))
    assert new.alert.id.endswith(f"-{book.next_seq}")


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"version": 99, "next_seq": 1, "alerts": []},
        {"version": 1, "next_seq": "x", "alerts": []},
        {"version": 1, "next_seq": 1, "alerts": [{"id": "a"}]},
        {"version": 1, "next_seq": 1, "alerts": "nope"},
    ],
)
def test_load_rejects_malformed_state(data: dict[str, Any]) -> None:
    with pytest.raises(InputError) as info:
        AlertBook.load(data)
    assert info.value.reason == "bad_state"


def test_payload_is_rendered_in_the_configured_language() -> None:
    book = AlertBook()
    [t] = book.apply(cand(details={"grade": 1}), at(0))
    en = t.alert.to_payload("en")
    fr = t.alert.to_payload("fr")
    assert en["message"] == "Fever 38.2 °C"
    assert fr["message"] == "Fièvre 38,2 °C"
    for key in (
        "id",
        "condition",
        "kind",
        "priority",
        "state",
        "phase",
        "ward",
        "bed",
        "value",
        "unit",
        "since",
        "message",
        "details",
        "escalation_level",
        "acked_by",
        "acked_name",
    ):
        assert key in en
    assert en["since"] == "2026-03-02T20:00:00Z"
    assert Alert.load(t.alert.dump()) == t.alert


_ops = st.lists(
    st.tuples(
        st.sampled_from(["raise", "clear", "ack", "tick", "discharge", "move"]),
        st.sampled_from(["FEVER", "HYPOTENSION"]),
        st.sampled_from(["b1", "b2", "b3"]),
        st.sampled_from(list(Priority)),
        st.integers(0, 2),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_invariants_hold_for_any_sequence(ops: list[tuple[str, str, str, Priority, int]]) -> None:
    book = AlertBook(escalate_after_s=60)
    seen_ids: dict[str, tuple[str, str]] = {}
    closed: set[str] = set()
    for step, (op, condition, bed, priority, detail) in enumerate(ops):
        now = at(step * 45)
        if op == "raise":
            out = book.apply(cand(condition, bed=bed, priority=priority, details={"d": detail}), now)
        elif op == "clear":
            out = book.apply(cand(condition, bed=bed, present=False), now)
        elif op == "ack":
            open_ids = [a.id for a in book.open_alerts()]
            out = book.acknowledge(open_ids[detail % len(open_ids)], "nurse", now) if open_ids else []
        elif op == "discharge":
            out = book.close_bed("w1", bed, now, "discharged")
        elif op == "move":
            # A transfer goes to an empty bed: the first of the others without open alerts.
            empty = [b for b in ("b1", "b2", "b3") if b != bed and not book.of_bed("w1", b)]
            out = book.move_bed("w1", bed, "w1", empty[0], now) if empty else []
        else:
            out = book.tick(now)
        for t in out:
            where = (t.alert.bed, t.alert.condition)
            if op == "move":
                seen_ids[t.alert.id] = where
            assert seen_ids.setdefault(t.alert.id, where) == where, "an id names one bed and condition"
            assert t.alert.id not in closed, "a closed alert never changes again"
            if t.closed:
                closed.add(t.alert.id)
        keys = [(a.ward, a.bed, a.condition) for a in book.open_alerts()]
        assert len(keys) == len(set(keys))
        for each in ("b1", "b2", "b3"):
            assert book.of_bed("w1", each) == [a for a in book.open_alerts() if a.bed == each]
        assert sorted(book.unordered(), key=lambda a: a.id) == sorted(book.open_alerts(), key=lambda a: a.id)
        assert all(not a.closed for a in book.open_alerts())
        assert all(
            a.state is not AlertState.LATCHED or a.priority is Priority.HIGH for a in book.open_alerts()
        )
    assert AlertBook.load(json.loads(json.dumps(book.dump()))).open_alerts() == book.open_alerts()


# --- AlertService without a broker ------------------------------------------------------------


@dataclass
class Sent:
    """One message given to the fake publisher."""

    topic: str
    payload: bytes
    qos: int
    retain: bool

    def json(self) -> Any:
        """The payload decoded."""
        return json.loads(self.payload)


@dataclass
class FakePublisher:
    """Records what would be published."""

    sent: list[Sent] = field(default_factory=list)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Record one message."""
        self.sent.append(Sent(topic, payload, qos, retain))

    def on(self, suffix: str) -> list[Sent]:
        """Messages whose topic ends with ``suffix``."""
        return [m for m in self.sent if m.topic.endswith(suffix)]


@dataclass
class ListSink:
    """Keeps points in a list."""

    points: list[Point] = field(default_factory=list)

    def put(self, point: Point) -> None:
        """Keep one point."""
        self.points.append(point)


@dataclass
class Rig:
    """A service with fakes around it."""

    service: AlertService
    publisher: FakePublisher
    sink: ListSink
    clock: ManualClock
    counters: Counters
    writer: StoreWriter

    def journal_lines(self) -> list[dict[str, Any]]:
        """The audit journal, once what is staged is committed."""
        commit_staged(self.writer)
        return self.writer.store.journal()


async def until_sleeping(clock: ManualClock) -> None:
    """Yield to the loop until a task sleeps on ``clock`` (a started loop), without real time."""
    for _ in range(1000):
        if clock.next_wake() is not None:
            return
        await asyncio.sleep(0)
    raise AssertionError("nothing sleeps on the clock")


def make_rig(
    tmp_path: Path,
    *,
    language: str = "en",
    clock: ManualClock | None = None,
    ack_users: tuple[str, ...] = (),
    qos: int = 1,
) -> Rig:
    """A fresh (or restored, if files exist) service in ``tmp_path``."""
    publisher, sink, counters = FakePublisher(), ListSink(), Counters()
    clock = clock or ManualClock(T0)
    writer = store_writer(tmp_path)
    service = AlertService.restore(
        publisher=publisher,
        sink=sink,
        clock=clock,
        counters=counters,
        prefix="ward",
        writer=writer,
        language=language,
        escalate_after_s=300,
        ack_users=ack_users,
        qos=qos,
    )
    return Rig(service, publisher, sink, clock, counters, writer)


async def test_service_delivers_a_start_everywhere(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, language="fr")
    [t] = await rig.service.handle([cand(details={"grade": 1})])
    alert_id = t.alert.id
    [event] = rig.publisher.on("/bed/b1/alerts")
    assert event.topic == "ward/w1/bed/b1/alerts"
    assert (event.qos, event.retain) == (1, False)
    body = event.json()
    assert body["id"] == alert_id
    assert body["phase"] == "start"
    assert body["message"] == "Fièvre 38,2 °C"
    [state] = rig.publisher.on(f"/alerts/{alert_id}")
    assert (state.qos, state.retain) == (1, True)
    assert state.json()["state"] == "active"
    [point] = rig.sink.points
    assert point.measurement == "alerts"
    assert point.tags["condition"] == "FEVER"
    assert point.fields["id"] == alert_id
    lines = rig.journal_lines()
    assert lines[0]["what"] == "service_start"
    assert lines[1]["what"] == "start"
    assert lines[1]["who"] == "wardd"
    assert lines[1]["id"] == alert_id
    [row] = rig.writer.store.alerts()
    assert (row.id, row.open, row.data["state"]) == (alert_id, True, "active")
    # Repeats deliver nothing.
    assert await rig.service.handle([cand(value=38.4, details={"grade": 1})]) == []
    assert len(rig.publisher.sent) == 2


async def test_service_clears_the_retained_state_on_close(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    [t] = await rig.service.handle([cand()])
    await rig.service.handle([cand(present=False)])
    states = rig.publisher.on(f"/alerts/{t.alert.id}")
    assert [s.retain for s in states] == [True, True]
    assert states[-1].payload == b""
    assert rig.publisher.on("/bed/b1/alerts")[-1].json()["state"] == "resolved"
    commit_staged(rig.writer)
    assert rig.writer.store.alerts() == []


async def test_ack_message_accepted_with_reply_and_journal(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    [t] = await rig.service.handle([cand(priority=Priority.HIGH)])
    aid = t.alert.id
    await rig.service.handle_ack_message(
        f"ward/w1/bed/b1/alerts/{aid}/ack/by/station-3", b'{"by": "A. Martin"}'
    )
    [reply] = rig.publisher.on("/reply")
    assert reply.topic == f"ward/w1/bed/b1/alerts/{aid}/ack/by/station-3/reply"
    assert reply.json() == {
        "ok": True,
        "id": aid,
        "state": "acknowledged",
        "by": "station-3",
        "name": "A. Martin",
    }
    last = rig.journal_lines()[-1]
    assert (last["what"], last["who"], last["name"], last["to"]) == (
        "ack",
        "station-3",
        "A. Martin",
        "acknowledged",
    )
    [alert] = rig.service.book.open_alerts()
    assert (alert.acked_by, alert.acked_name) == ("station-3", "A. Martin")
    assert rig.publisher.on(f"/alerts/{aid}")[-1].json()["acked_name"] == "A. Martin"
    assert rig.sink.points[-1].fields["acked_by"] == "station-3"
    assert rig.sink.points[-1].fields["acked_name"] == "A. Martin"
    assert rig.counters.get("alerts.acks", "accepted") == 1
    assert last["via"] == "mqtt"


async def test_an_ack_from_the_page_is_the_same_operation_journaled_via_web(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    [t] = await rig.service.handle([cand(priority=Priority.HIGH)])
    [acked] = await rig.service.acknowledge(t.alert.id, "a.martin", name="Anne Martin", via=AckVia.WEB)
    assert (acked.alert.state, acked.alert.acked_by, acked.alert.acked_name) == (
        AlertState.ACKNOWLEDGED,
        "a.martin",
        "Anne Martin",
    )
    last = rig.journal_lines()[-1]
    assert (last["what"], last["who"], last["name"], last["via"]) == ("ack", "a.martin", "Anne Martin", "web")
    # The same retained state and transition as an acknowledgement over MQTT.
    assert rig.publisher.on(f"/alerts/{t.alert.id}")[-1].json()["acked_by"] == "a.martin"
    assert rig.publisher.on("/bed/b1/alerts")[-1].json()["phase"] == "ack"


async def test_only_a_persons_acknowledgement_carries_via(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    [t] = await rig.service.handle([cand(priority=Priority.HIGH)])
    await rig.service.handle([cand(present=False, priority=Priority.HIGH)])
    await rig.service.acknowledge(t.alert.id, "nurse")
    lines = [line for line in rig.journal_lines() if line.get("id") == t.alert.id]
    assert [(line["what"], "via" in line) for line in lines] == [
        ("start", False),
        ("latch", False),
        ("ack", True),
    ]


async def test_listeners_see_every_transition_in_order(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    seen: list[tuple[str, str]] = []
    rig.service.listeners.append(lambda t: seen.append((t.alert.condition, str(t.phase))))
    [t] = await rig.service.handle([cand("HYPOTENSION", priority=Priority.HIGH)])
    await rig.service.acknowledge(t.alert.id, "nurse")
    await rig.service.handle([cand("HYPOTENSION", present=False)])
    assert seen == [("HYPOTENSION", "start"), ("HYPOTENSION", "ack"), ("HYPOTENSION", "end")]


@pytest.mark.parametrize("payload", [b"", b"{}", b'{"by": null}', b'{"other": 1}'])
async def test_an_ack_without_a_display_name_is_journaled_under_the_user(
    tmp_path: Path, payload: bytes
) -> None:
    rig = make_rig(tmp_path)
    [t] = await rig.service.handle([cand(priority=Priority.HIGH)])
    await rig.service.handle_ack_message(f"ward/w1/bed/b1/alerts/{t.alert.id}/ack/by/nurse-7", payload)
    [reply] = rig.publisher.on("/reply")
    assert (reply.json()["ok"], reply.json()["by"], reply.json()["name"]) == (True, "nurse-7", None)
    last = rig.journal_lines()[-1]
    assert (last["who"], last["name"]) == ("nurse-7", None)
    assert "acked_name" not in rig.sink.points[-1].fields


async def test_the_display_name_cannot_stand_in_for_the_user(tmp_path: Path) -> None:
    """What the payload says is only a display name: the author is the topic's user."""
    rig = make_rig(tmp_path)
    [t] = await rig.service.handle([cand(priority=Priority.HIGH)])
    await rig.service.handle_ack_message(
        f"ward/w1/bed/b1/alerts/{t.alert.id}/ack/by/monitor-b1", b'{"by": "Dr. Nobody", "user": "station-1"}'
    )
    last = rig.journal_lines()[-1]
    assert (last["who"], last["name"]) == ("monitor-b1", "Dr. Nobody")


async def test_the_unauthenticated_ack_path_is_refused_with_the_path_to_use(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    [t] = await rig.service.handle([cand(priority=Priority.HIGH)])
    aid = t.alert.id
    before_open, before_journal = rig.service.book.open_alerts(), rig.journal_lines()
    await rig.service.handle_ack_message(f"ward/w1/bed/b1/alerts/{aid}/ack", b'{"by": "Dr. Nobody"}')
    [reply] = rig.publisher.on("/reply")
    assert reply.topic == f"ward/w1/bed/b1/alerts/{aid}/ack/reply"
    body = reply.json()
    assert (body["ok"], body["reason"]) == (False, "unauthenticated")
    assert f"ward/w1/bed/b1/alerts/{aid}/ack/by/<your MQTT user name>" in body["error"]
    assert rig.counters.get("alerts.ack_rejected", "unauthenticated") == 1
    assert rig.service.book.open_alerts() == before_open
    assert rig.journal_lines() == before_journal


@pytest.mark.parametrize(
    ("user", "accepted"), [("station-icu", True), ("nurse-2", True), ("monitor-b1", False)]
)
async def test_only_the_configured_users_may_acknowledge(tmp_path: Path, user: str, accepted: bool) -> None:
    rig = make_rig(tmp_path, ack_users=("station-icu", "nurse-2"))
    [t] = await rig.service.handle([cand(priority=Priority.HIGH)])
    await rig.service.handle_ack_message(f"ward/w1/bed/b1/alerts/{t.alert.id}/ack/by/{user}", b"{}")
    [reply] = rig.publisher.on("/reply")
    assert reply.topic.endswith(f"/ack/by/{user}/reply")
    assert reply.json()["ok"] is accepted
    [alert] = rig.service.book.open_alerts()
    assert (alert.state is AlertState.ACKNOWLEDGED) is accepted
    if not accepted:
        assert reply.json()["reason"] == "not_allowed"
        assert "ack_users" in reply.json()["error"]
        assert rig.counters.get("alerts.ack_rejected", "not_allowed") == 1


@pytest.mark.parametrize(
    ("topic_id", "bed", "user", "payload", "reason"),
    [
        ("ID", "b1", "n", b"{not json", "invalid_json"),
        ("ID", "b1", "n", b"\xff\xfe", "invalid_json"),
        ("ID", "b1", "n", b"[1, 2]", "not_object"),
        ("ID", "b1", "n", b'{"by": ""}', "bad_by"),
        ("ID", "b1", "n", b'{"by": "   "}', "bad_by"),
        ("ID", "b1", "n", b'{"by": 42}', "bad_by"),
        ("ID", "b1", "n", b'{"by": "a\\u0000b"}', "bad_by"),
        ("ID", "b1", "n", b'{"by": "' + b"x" * 65 + b'"}', "bad_by"),
        ("ID", "b1", "n", b'{"by": "n"}' + b" " * 5000, "too_large"),
        ("ID", "b1", "-n", b"{}", "bad_user"),
        ("ID", "b1", "n n", b"{}", "bad_user"),
        ("ID", "b1", "x" * 65, b"{}", "bad_user"),
        ("b1-NOPE-9", "b1", "n", b"{}", "unknown_id"),
        ("ID", "b2", "n", b"{}", "wrong_bed"),
    ],
)
async def test_bad_ack_messages_get_a_clear_reply_and_change_nothing(
    tmp_path: Path, topic_id: str, bed: str, user: str, payload: bytes, reason: str
) -> None:
    rig = make_rig(tmp_path)
    [t] = await rig.service.handle([cand(priority=Priority.HIGH)])
    aid = t.alert.id if topic_id == "ID" else topic_id
    before_open, before_journal = rig.service.book.open_alerts(), rig.journal_lines()
    await rig.service.handle_ack_message(f"ward/w1/bed/{bed}/alerts/{aid}/ack/by/{user}", payload)
    [reply] = rig.publisher.on("/reply")
    assert reply.topic == f"ward/w1/bed/{bed}/alerts/{aid}/ack/by/{user}/reply"
    body = reply.json()
    assert body["ok"] is False
    assert body["reason"] == reason
    assert body["error"]
    assert rig.counters.get("alerts.ack_rejected", reason) == 1
    assert rig.service.book.open_alerts() == before_open
    assert rig.journal_lines() == before_journal


@pytest.mark.parametrize(
    "topic",
    [
        "other/w1/bed/b1/alerts/x/ack/by/n",
        "ward/w1/bed/b1/alerts/ack",
        "ward/w1/room/b1/alerts/x/ack/by/n",
        "ward/w1/bed/b1/alarms/x/ack/by/n",
        "ward/w1/bed/b1/alerts/x/nack/by/n",
        "ward/w1/bed/b1/alerts/x/ack/as/n",
        "ward/w1/bed/b1/alerts/x/ack/by",
        "ward/w1/bed/b1/alerts/x/ack/by/n/reply",
    ],
)
async def test_ack_on_a_foreign_topic_is_counted_without_reply(tmp_path: Path, topic: str) -> None:
    rig = make_rig(tmp_path)
    await rig.service.handle_ack_message(topic, b'{"by": "n"}')
    assert rig.publisher.sent == []
    assert rig.counters.get("alerts.ack_rejected", "bad_topic") == 1


async def test_escalation_loop_on_a_manual_clock(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    [t] = await rig.service.handle([cand(priority=Priority.HIGH)])
    task = asyncio.create_task(rig.service.run(), name="alerts.escalation")
    await until_sleeping(rig.clock)
    await rig.clock.advance(299)
    assert rig.publisher.on("/escalations") == []
    await rig.clock.advance(1)
    [first] = rig.publisher.on("/escalations")
    assert first.topic == "ward/w1/escalations"
    body = first.json()
    assert (body["id"], body["escalation_level"], body["phase"]) == (t.alert.id, 1, "overdue")
    assert "5 min" in body["notice"]
    await rig.clock.advance(300)
    assert [m.json()["escalation_level"] for m in rig.publisher.on("/escalations")] == [1, 2]
    await rig.service.acknowledge(t.alert.id, "nurse")
    await rig.clock.advance(900)
    assert len(rig.publisher.on("/escalations")) == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_restart_restores_open_alerts_and_continues_the_journal(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    [fever] = await rig.service.handle([cand("FEVER")])
    [hypo] = await rig.service.handle([cand("HYPOTENSION", priority=Priority.HIGH)])
    await rig.service.handle([cand("HYPOTENSION", priority=Priority.HIGH, present=False)])
    lines_before = len(rig.journal_lines())
    rig.writer.store.close()

    again = make_rig(tmp_path, clock=rig.clock)
    assert again.service.book.open_alerts() == rig.service.book.open_alerts()
    assert again.service.book.get(hypo.alert.id).state is AlertState.LATCHED
    lines = again.journal_lines()
    assert len(lines) == lines_before + 1
    assert lines[-1]["what"] == "service_start"
    assert sorted(lines[-1]["open"]) == sorted([fever.alert.id, hypo.alert.id])
    await again.service.acknowledge(hypo.alert.id, "nurse")
    assert again.journal_lines()[-1]["what"] == "ack"
    # Retained states are published again when the service runs.
    task = asyncio.create_task(again.service.run())
    await until_sleeping(again.clock)
    assert again.publisher.on(f"/alerts/{fever.alert.id}")[-1].json()["state"] == "active"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_escalation_timer_keeps_running_across_a_restart(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    [t] = await rig.service.handle([cand(priority=Priority.HIGH)])
    await rig.clock.advance(200)
    commit_staged(rig.writer)
    rig.writer.store.close()

    again = make_rig(tmp_path, clock=rig.clock)
    task = asyncio.create_task(again.service.run(), name="alerts.escalation")
    await until_sleeping(again.clock)
    await again.clock.advance(99)
    assert again.publisher.on("/escalations") == [], "299 s after onset: not yet"
    await again.clock.advance(1)
    [overdue] = again.publisher.on("/escalations")
    # 300 s after the alert began, counting the time before the restart: not 300 s after it.
    assert (overdue.json()["id"], overdue.json()["escalation_level"]) == (t.alert.id, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_unreadable_alert_row_is_skipped_and_counted(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    [fever] = await rig.service.handle([cand("FEVER")])
    [tachy] = await rig.service.handle([cand("TACHYCARDIA")])
    commit_staged(rig.writer)
    rig.writer.store._db.execute("UPDATE alerts SET data = '{\"id\": 1}' WHERE id = ?", (tachy.alert.id,))
    counters = Counters()
    book = load_book(rig.writer.store, counters=counters)
    assert [a.id for a in book.open_alerts()] == [fever.alert.id]
    assert book.next_seq > int(tachy.alert.id.rsplit("-", 1)[1]), "alert numbers are never reused"
    assert counters.get("alerts.state_errors", "unreadable") == 1


def test_a_new_store_gives_an_empty_book(tmp_path: Path) -> None:
    book = load_book(store_writer(tmp_path).store)
    assert book.open_alerts() == []
    assert book.next_seq == 1


async def test_closed_alerts_stay_in_the_store_with_their_last_state(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    [t] = await rig.service.handle([cand()])
    await rig.service.handle([cand(present=False)])
    commit_staged(rig.writer)
    assert rig.writer.store.alerts() == []
    [row] = rig.writer.store.alerts(open_only=False)
    assert (row.id, row.open, row.data["state"]) == (t.alert.id, False, "resolved")
    assert [e["what"] for e in rig.writer.store.journal(bed="b1")] == ["start", "end"]


def test_service_refuses_an_unknown_language(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="language"):
        AlertService(
            book=AlertBook(),
            publisher=FakePublisher(),
            sink=ListSink(),
            clock=ManualClock(T0),
            counters=Counters(),
            prefix="ward",
            writer=store_writer(tmp_path),
            language="de",
        )


def test_alerts_config_section() -> None:
    config = Config.model_validate({"alerts": {"escalate_after_s": 120}})
    assert config.alerts.escalate_after_s == 120
    assert Config().alerts == AlertsConfig()
    assert AlertsConfig().escalate_after_s == 300
    with pytest.raises(ValueError, match="escalate_after_s"):
        AlertsConfig.model_validate({"escalate_after_s": 0})
    assert AlertsConfig().ack_users == []
    assert AlertsConfig.model_validate({"ack_users": ["station-icu", "a.martin@chu"]}).ack_users == [
        "station-icu",
        "a.martin@chu",
    ]
    for bad in ("station/icu", "station+", "#", "", "-x", "x" * 65):
        with pytest.raises(ValueError, match="ack_users"):
            AlertsConfig.model_validate({"ack_users": [bad]})


async def test_service_from_config_uses_the_state_dir(tmp_path: Path) -> None:
    config = Config.model_validate(
        {
            "daemon": {"state_dir": str(tmp_path / "state"), "language": "fr"},
            "mqtt": {"topic_prefix": "icu"},
            "alerts": {"escalate_after_s": 60},
        }
    )
    publisher = FakePublisher()
    writer = store_writer(tmp_path / "state")
    service = AlertService.from_config(
        config,
        publisher=publisher,
        sink=ListSink(),
        clock=ManualClock(T0),
        counters=Counters(),
        writer=writer,
    )
    assert service.ack_subscriptions() == ["icu/+/bed/+/alerts/+/ack/by/+", "icu/+/bed/+/alerts/+/ack"]
    assert service.book.escalate_after_s == 60
    await service.handle([cand()])
    assert publisher.sent[0].topic == "icu/w1/bed/b1/alerts"
    assert publisher.sent[0].json()["message"] == "Fièvre 38,2 °C"
    commit_staged(writer)
    assert [e["what"] for e in writer.store.journal()] == ["service_start", "start"]


def test_an_alert_that_does_not_escalate_does_not_stop_the_others_escalating() -> None:
    book = AlertBook(escalate_after_s=300)
    book.apply(cand("FEVER", priority=Priority.MEDIUM), at(0))  # opened first, never escalates
    book.apply(cand("HYPOTENSION", priority=Priority.HIGH), at(0))
    [t] = book.tick(at(300))
    assert (t.alert.condition, t.alert.escalation_level) == ("HYPOTENSION", 1)


def test_a_sub_second_escalation_period_counts_from_the_first_period() -> None:
    book = AlertBook(escalate_after_s=0.5)
    book.apply(cand(priority=Priority.HIGH), at(0))
    assert book.tick(at(0.25)) == []
    [t] = book.tick(at(1))
    assert t.alert.escalation_level == 2


# --------------------------------------------------------------------------- delivery and acknowledgement details


@pytest.mark.parametrize(
    ("topic", "command"),
    [
        ("ward/w1/bed/b1/alerts/b1-FEVER-1/ack/by/nurse-7", True),
        ("ward/w1/bed/b1/alerts/b1-FEVER-1/ack", True),
        ("ward/w1/bed/b1/alerts/b1-FEVER-1/ack/reply", False),
        ("ward/w1/bed/b1/alerts/b1-FEVER-1", False),
        ("ward/w1/bed/b1/alerts", False),
    ],
)
def test_is_ack_topic_knows_both_forms_of_the_command(topic: str, command: bool) -> None:
    """(A reply to the proven form is never delivered: the daemon subscribes to ``.../ack/by/+``.)"""
    assert is_ack_topic(topic) is command


async def test_every_message_uses_the_configured_qos_and_only_the_state_is_retained(tmp_path: Path) -> None:
    """``[mqtt] qos`` 2: the transition, the retained state, the escalation and the ack reply."""
    rig = make_rig(tmp_path, qos=2)
    [t] = await rig.service.handle([cand(priority=Priority.HIGH)])
    task = asyncio.create_task(rig.service.run(), name="alerts.escalation")
    await until_sleeping(rig.clock)
    await rig.clock.advance(300)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await rig.service.handle_ack_message(f"ward/w1/bed/b1/alerts/{t.alert.id}/ack/by/nurse-7", b"")
    await rig.service.handle_ack_message(f"ward/w1/bed/b1/alerts/{t.alert.id}/ack", b"")
    by_topic = {(m.topic, m.qos, m.retain) for m in rig.publisher.sent}
    aid = t.alert.id
    assert by_topic == {
        ("ward/w1/bed/b1/alerts", 2, False),
        (f"ward/w1/bed/b1/alerts/{aid}", 2, True),
        ("ward/w1/escalations", 2, False),
        (f"ward/w1/bed/b1/alerts/{aid}/ack/by/nurse-7/reply", 2, False),
        (f"ward/w1/bed/b1/alerts/{aid}/ack/reply", 2, False),
    }


async def test_a_second_acknowledgement_is_answered_as_already_acknowledged(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    [t] = await rig.service.handle([cand(priority=Priority.HIGH)])
    topic = f"ward/w1/bed/b1/alerts/{t.alert.id}/ack/by/nurse-7"
    await rig.service.handle_ack_message(topic, b"")
    await rig.service.handle_ack_message(topic, b"")
    replies = [m.json() for m in rig.publisher.on("/reply")]
    assert [(r["ok"], r["state"]) for r in replies] == [(True, "acknowledged"), (True, "acknowledged")]
    assert rig.counters.get("alerts.acks", "accepted") == 1
    assert rig.counters.get("alerts.acks", "already_acknowledged") == 1


async def test_acknowledging_a_latched_alert_replies_resolved(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    [t] = await rig.service.handle([cand(priority=Priority.HIGH)])
    await rig.service.handle([cand(priority=Priority.HIGH, present=False)])
    await rig.service.handle_ack_message(f"ward/w1/bed/b1/alerts/{t.alert.id}/ack/by/nurse-7", b"")
    [reply] = rig.publisher.on("/reply")
    assert (reply.json()["ok"], reply.json()["state"]) == (True, "resolved")


@pytest.mark.parametrize(
    ("topic_id", "user", "payload", "reason", "error"),
    [
        ("b1-NOPE-9", "/by/n", b"", "unknown_id", "no open alert with id 'b1-NOPE-9'"),
        (
            "ID",
            "",
            b"",
            "unauthenticated",
            "an acknowledgement must prove its author: publish it on "
            "ward/w1/bed/b1/alerts/ID/ack/by/<your MQTT user name>",
        ),
        ("ID", "/by/-n", b"", "bad_user", f"user '-n' in the topic: a user name is {ids.USER_ID_RULE}"),
        ("ID", "/by/n", b'{"by": ""}', "bad_by", f"'by' {ids.name_problem('')}; a name is {ids.NAME_RULE}"),
    ],
    ids=["unknown_id", "unauthenticated", "bad_user", "bad_by"],
)
async def test_a_refused_acknowledgement_says_which_alert_and_why(
    tmp_path: Path, topic_id: str, user: str, payload: bytes, reason: str, error: str
) -> None:
    rig = make_rig(tmp_path)
    [t] = await rig.service.handle([cand(priority=Priority.HIGH)])
    aid = t.alert.id if topic_id == "ID" else topic_id
    await rig.service.handle_ack_message(f"ward/w1/bed/b1/alerts/{aid}/ack{user}", payload)
    [reply] = rig.publisher.on("/reply")
    assert reply.json() == {
        "ok": False,
        "id": aid,
        "reason": reason,
        "error": error.replace("/ID/", f"/{aid}/"),
    }


async def test_a_foreign_topic_is_logged_with_the_topic_an_acknowledgement_needs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig(tmp_path)
    await rig.service.handle_ack_message("ward/w1/bed/b1/alerts/x/nack/by/n", b"")
    assert "bad_topic: not <prefix>/<ward>/bed/<bed>/alerts/<id>/ack/by/<user>; payload" in caplog.text


async def test_the_journal_names_the_user_only_on_the_acknowledgement(tmp_path: Path) -> None:
    """After an acknowledgement, the daemon's own transitions (here the clearing) are journaled
    under wardd, without the user's display name; each line says the state it left."""
    rig = make_rig(tmp_path)
    [t] = await rig.service.handle([cand()])
    await rig.service.handle_ack_message(
        f"ward/w1/bed/b1/alerts/{t.alert.id}/ack/by/nurse-7", b'{"by": "A. M"}'
    )
    await rig.service.handle([cand(present=False)])
    lines = rig.journal_lines()[1:]
    assert [(x["what"], x["who"], x["name"], x["from"], x["to"]) for x in lines] == [
        ("start", "wardd", None, None, "active"),
        ("ack", "nurse-7", "A. M", "active", "acknowledged"),
        ("end", "wardd", None, "acknowledged", "resolved"),
    ]


async def test_each_transition_is_counted_logged_and_stored_as_a_point(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="daemon.alerts")
    rig = make_rig(tmp_path, language="fr")
    [t] = await rig.service.handle([cand(priority=Priority.HIGH)])
    aid = t.alert.id
    assert rig.counters.get("alerts.transitions", "start") == 1
    assert f"alert {aid} start: FEVER high at w1/b1 (active)" in caplog.messages
    [point] = rig.sink.points
    assert point.measurement == "alerts"
    assert point.time == T0
    assert point.tags == {
        "ward": "w1",
        "bed": "b1",
        "condition": "FEVER",
        "kind": "physiological",
        "priority": "high",
        "state": "active",
        "phase": "start",
    }
    assert point.fields == {"id": aid, "escalation_level": 0, "message": "Fièvre 38,2 °C", "value": 38.2}
    # Published as UTF-8 text, not \u escapes; the retained state in the service's language.
    [event] = rig.publisher.on("/bed/b1/alerts")
    assert "Fièvre 38,2 °C".encode() in event.payload
    [state] = rig.publisher.on(f"ward/w1/bed/b1/alerts/{aid}")
    assert state.json()["message"] == "Fièvre 38,2 °C"


async def test_the_overdue_notice_is_in_the_services_language(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, language="fr")
    await rig.service.handle([cand(priority=Priority.HIGH)])
    task = asyncio.create_task(rig.service.run(), name="alerts.escalation")
    await until_sleeping(rig.clock)
    await rig.clock.advance(300)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [escalation] = rig.publisher.on("/escalations")
    assert escalation.json()["notice"] == (
        "Non acquittée depuis 5 min (niveau d'escalade 1) : Fièvre 38,2 °C"
    )


# --------------------------------------------------------------------------- AlertBook: details, restore, load


def test_a_clearing_candidate_adds_why_to_the_alerts_details() -> None:
    book = AlertBook()
    book.apply(cand(details={"grade": 1}), at(0))
    [end] = book.apply(cand(present=False, details={"withdrawn": "obs-1"}), at(5))
    assert end.alert.phase is Phase.END
    assert end.alert.details == {"grade": 1, "withdrawn": "obs-1"}
    assert end.alert.updated == at(5)


def test_details_are_stored_as_json_would_reload_them() -> None:
    """Sorted keys and anything JSON cannot hold as text: what is compared is what is stored."""
    book = AlertBook()
    [t] = book.apply(cand(details={"b": (1, 2), "a": T0}), at(0))
    assert list(t.alert.details) == ["a", "b"]
    assert t.alert.details == {"a": str(T0), "b": [1, 2]}


def test_a_grade_is_a_rise_over_no_grade() -> None:
    """Within one priority a numeric grade orders severity; an alert without one is below any."""
    book = AlertBook()
    book.apply(cand(), at(0))
    [t] = book.apply(cand(details={"grade": 1}), at(1))
    assert t.alert.phase is Phase.ESCALATE


def test_a_reactivated_alert_takes_the_new_candidate_and_restarts_its_escalation() -> None:
    book = AlertBook(escalate_after_s=300)
    book.apply(cand(priority=Priority.HIGH, value=38.2), at(0))
    [overdue] = book.tick(at(300))
    assert overdue.alert.escalation_level == 1
    book.apply(cand(priority=Priority.HIGH, present=False), at(310))
    new_text = Text(en="Fever 39.0 °C", fr="Fièvre 39,0 °C")
    candidate = replace(cand(priority=Priority.HIGH, value=39.0, at_s=400), message=new_text)
    [again] = book.apply(candidate, at(400))
    assert again.alert.phase is Phase.REACTIVATE
    assert (again.alert.value, again.alert.message, again.alert.escalation_level) == (39.0, new_text, 0)
    assert (again.alert.since, again.alert.active_since, again.alert.updated) == (at(400), at(400), at(400))


def test_an_escalation_of_an_acknowledged_alert_forgets_the_acknowledgement() -> None:
    book = AlertBook(escalate_after_s=300)
    [t] = book.apply(cand(priority=Priority.HIGH, details={"grade": 2}), at(0))
    book.tick(at(300))
    book.acknowledge(t.alert.id, "nurse", at(310), name="A. M")
    [up] = book.apply(cand(priority=Priority.HIGH, details={"grade": 3}), at(320))
    alert = up.alert
    assert (alert.phase, alert.state) == (Phase.ESCALATE, AlertState.ACTIVE)
    assert (alert.acked_by, alert.acked_name, alert.acked_at, alert.escalation_level) == (None, None, None, 0)


@pytest.mark.parametrize(
    ("priority", "level"), [(Priority.HIGH, 1), (Priority.MEDIUM, 0)], ids=["still-high", "medium"]
)
def test_a_deescalation_keeps_the_escalation_level_only_while_high(priority: Priority, level: int) -> None:
    book = AlertBook(escalate_after_s=300)
    book.apply(cand(priority=Priority.HIGH, details={"grade": 3}), at(0))
    book.tick(at(300))
    [down] = book.apply(cand(priority=priority, details={"grade": 2}), at(310))
    assert (down.alert.phase, down.alert.priority, down.alert.escalation_level) == (
        Phase.DEESCALATE,
        priority,
        level,
    )


def test_restoring_alerts_keeps_one_id_per_open_alert_and_numbers_after_them() -> None:
    source = AlertBook()
    [t] = source.apply(cand(), at(0))
    book = AlertBook()
    book.restore(replace(t.alert, id="b1-FEVER-7"))
    assert book.next_seq == 8
    # A newer row for the same bed and condition replaces it: the old id is no longer open.
    book.restore(replace(t.alert, id="b1-FEVER-9"))
    assert book.find("b1-FEVER-7") is None
    assert [a.id for a in book.open_alerts()] == ["b1-FEVER-9"]
    # A closed row removes the open alert with its id; one whose id is not open changes nothing.
    book.restore(replace(t.alert, id="b1-FEVER-3", state=AlertState.RESOLVED))
    assert [a.id for a in book.open_alerts()] == ["b1-FEVER-9"]
    book.restore(replace(t.alert, id="b1-FEVER-9", state=AlertState.RESOLVED))
    assert book.open_alerts() == []
    assert book.find("b1-FEVER-9") is None
    # An id without a number (a hand edit) does not move the numbering.
    fresh = AlertBook()
    fresh.restore(replace(t.alert, id="legacy"))
    assert fresh.next_seq == 1


def test_an_alert_without_value_or_unit_round_trips_and_an_old_row_loads() -> None:
    book = AlertBook()
    [t] = book.apply(cand(value=None), at(0))
    alert = replace(t.alert, unit=None)
    assert Alert.load(alert.dump()) == alert
    data = alert.dump()
    del data["escalation_level"]
    assert Alert.load(data).escalation_level == 0


def test_a_malformed_alert_says_what_is_wrong() -> None:
    book = AlertBook()
    [t] = book.apply(cand(), at(0))
    with pytest.raises(InputError) as info:
        Alert.load({**t.alert.dump(), "ward": 7})
    assert (info.value.reason, info.value.detail) == ("bad_alert", "TypeError: expected a string, got int")
    with pytest.raises(InputError) as book_info:
        AlertBook.load({"version": 1, "next_seq": 1, "alerts": [{"id": "a"}]})
    assert (book_info.value.reason, book_info.value.detail) == ("bad_state", "bad_alert: KeyError: 'value'")
    with pytest.raises(InputError) as version_info:
        AlertBook.load({"version": 99})
    assert version_info.value.detail == "not an alert book of version 1"


def test_a_loaded_book_keeps_its_escalation_period() -> None:
    assert AlertBook.load(AlertBook().dump(), escalate_after_s=60).escalate_after_s == 60


async def test_the_service_counts_and_logs_an_unreadable_row_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig(tmp_path)
    [tachy] = await rig.service.handle([cand("TACHYCARDIA")])
    commit_staged(rig.writer)
    rig.writer.store._db.execute("UPDATE alerts SET data = '{\"id\": 1}' WHERE id = ?", (tachy.alert.id,))
    again = make_rig(tmp_path)
    assert again.counters.get("alerts.state_errors", "unreadable") == 1
    assert f"alert row {tachy.alert.id} unreadable, skipped: bad_alert: KeyError: 'value'" in caplog.messages


async def test_service_defaults_english_qos_1_and_a_check_every_second(tmp_path: Path) -> None:
    publisher, clock = FakePublisher(), ManualClock(T0)
    service = AlertService.restore(
        publisher=publisher,
        sink=ListSink(),
        clock=clock,
        counters=Counters(),
        prefix="ward",
        writer=store_writer(tmp_path),
    )
    await service.handle([cand()])
    assert {(m.qos, m.json()["message"]) for m in publisher.sent} == {(1, "Fever 38.2 °C")}
    task = asyncio.create_task(service.run(), name="alerts.escalation")
    await until_sleeping(clock)
    assert clock.next_wake() == 1.0  # monotonic seconds from the start
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_service_from_config_takes_qos_check_interval_and_ack_users(tmp_path: Path) -> None:
    config = Config.model_validate(
        {
            "daemon": {"state_dir": str(tmp_path / "state")},
            "mqtt": {"topic_prefix": "icu", "qos": 2},
            "alerts": {"check_interval_s": 5, "ack_users": ["station-icu"]},
        }
    )
    publisher, clock = FakePublisher(), ManualClock(T0)
    service = AlertService.from_config(
        config,
        publisher=publisher,
        sink=ListSink(),
        clock=clock,
        counters=Counters(),
        writer=store_writer(tmp_path / "state"),
    )
    [t] = await service.handle([cand()])
    await service.handle_ack_message(f"icu/w1/bed/b1/alerts/{t.alert.id}/ack/by/nurse-2", b"")
    [reply] = publisher.on("/reply")
    assert (reply.qos, reply.json()["reason"]) == (2, "not_allowed")
    assert {m.qos for m in publisher.sent} == {2}
    task = asyncio.create_task(service.run(), name="alerts.escalation")
    await until_sleeping(clock)
    assert clock.next_wake() == 5.0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_long_overdue_alert_says_how_long_in_whole_minutes(tmp_path: Path) -> None:
    """Level 10 after 10 periods of 300 s: 50 min."""
    rig = make_rig(tmp_path)
    await rig.service.handle([cand(priority=Priority.HIGH)])
    task = asyncio.create_task(rig.service.run(), name="alerts.escalation")
    await until_sleeping(rig.clock)
    await rig.clock.advance(3000)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    notices = [m.json()["notice"] for m in rig.publisher.on("/escalations")]
    assert notices[-1].startswith("Not acknowledged for 50 min (escalation level 10): ")


async def test_the_journal_rows_carry_the_alert_id_for_queries(tmp_path: Path) -> None:
    """The audit journal table has its own ``alert_id`` column (beside the JSON entry), so that
    one alert's history can be selected in SQL; the service's own lines have none."""
    rig = make_rig(tmp_path)
    [t] = await rig.service.handle([cand()])
    commit_staged(rig.writer)
    rows = rig.writer.store._db.execute("SELECT what, alert_id FROM journal ORDER BY seq").fetchall()
    assert [tuple(row) for row in rows] == [("service_start", None), ("start", t.alert.id)]
