"""``daemon.schedule``: the due times that the engine, the alert book and the router share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemon.schedule import Schedule, floor_us

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_the_keys_due_come_earliest_first_each_once_at_its_latest_time() -> None:
    schedule = Schedule([("a", at(5)), ("b", at(1))])
    schedule.put("c", at(3))
    schedule.put("a", at(2))  # put again: this time, not the one before
    schedule.put("b", at(9))
    schedule.discard("c")
    assert schedule.pop_due(at(4)) == ["a"]
    assert schedule.pop_due(at(4)) == []
    assert (len(schedule), schedule.get("b")) == (1, at(9))
    assert schedule.pop_due(at(9)) == ["b"], "due at its time exactly"
    assert len(schedule) == 0


def test_stale_entries_never_outnumber_the_live_ones_beyond_the_slack() -> None:
    schedule: Schedule[str] = Schedule()
    for n in range(1000):
        schedule.put("a", at(1000 - n))  # brought forward again and again
    assert schedule.heap_size <= 2 * len(schedule) + Schedule.SLACK
    assert schedule.pop_due(at(1)) == ["a"]


def test_a_wait_is_rounded_down_to_the_microsecond() -> None:
    assert floor_us(0.7) == timedelta(microseconds=700_000)
    assert floor_us(3 * 0.7) == timedelta(microseconds=2_099_999)  # 2.0999999999999996 s
    assert floor_us(300) == timedelta(seconds=300)
