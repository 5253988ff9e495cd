"""STORAGE_UNAVAILABLE: the daemon's own technical rule, as pure unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemon.events import Health, Kind, Priority, SourceHealth, Tick
from daemon.tech_rules import STORAGE_UNAVAILABLE, StorageRule, StorageState, tech_rules
from tests.helpers import one_bed_config

T0 = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)


def _rule() -> StorageRule:
    config = one_bed_config(T0)
    [rule] = tech_rules(config, config.beds[0])
    assert isinstance(rule, StorageRule)
    return rule


def _health(health: Health, source: str = "storage", at_s: float = 0) -> SourceHealth:
    return SourceHealth("w1", "b1", source, T0 + timedelta(seconds=at_s), health, "HTTP 503")


def test_storage_down_raises_a_low_priority_technical_alert_at_the_event_time() -> None:
    rule = _rule()
    state, [candidate] = rule.step(rule.initial(), _health(Health.LOST, at_s=5), T0 + timedelta(seconds=9))
    assert state == StorageState(down=True)
    assert candidate.condition == STORAGE_UNAVAILABLE
    assert (candidate.ward, candidate.bed) == ("w1", "b1")
    assert candidate.present is True
    assert candidate.time == T0 + timedelta(seconds=5)
    assert (candidate.kind, candidate.priority) == (Kind.TECHNICAL, Priority.LOW)
    assert candidate.message is not None
    assert candidate.message.en.startswith("Time-series storage unavailable")
    assert "(HTTP 503)" in candidate.message.en
    assert candidate.message.fr.startswith("Stockage des séries temporelles indisponible")


def test_stale_counts_as_down_and_connected_clears_once() -> None:
    rule = _rule()
    state, [down] = rule.step(rule.initial(), _health(Health.STALE), T0)
    assert down.present is True
    state, again = rule.step(state, _health(Health.LOST, at_s=1), T0)
    assert again == (), "already down: nothing new"
    state, [up] = rule.step(state, _health(Health.CONNECTED, at_s=2), T0)
    assert state == StorageState(down=False)
    assert up.present is False
    assert up.message is not None
    assert up.message.en == "Time-series storage reachable again."
    assert up.message.fr == "Stockage des séries temporelles de nouveau joignable."
    assert rule.step(state, _health(Health.CONNECTED, at_s=3), T0) == (state, ())


def test_other_sources_and_events_change_nothing() -> None:
    rule = _rule()
    start = rule.initial()
    assert start == StorageState(down=False)
    assert rule.step(start, _health(Health.LOST, source="pump[p1]"), T0) == (start, ())
    assert rule.step(start, Tick(T0), T0) == (start, ())


def test_state_round_trips() -> None:
    rule = _rule()
    assert rule.dump(StorageState(down=True)) == {"down": True}
    assert rule.load({"down": True}) == StorageState(down=True)
    assert rule.load({}) == StorageState(down=False)
    assert rule.name == "storage"
