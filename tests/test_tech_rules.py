"""STORAGE_UNAVAILABLE and BROKER_UNAVAILABLE: the daemon's own technical rules, as pure unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemon.events import Health, Kind, Priority, SourceHealth, Tick
from daemon.tech_rules import (
    BROKER_UNAVAILABLE,
    STORAGE_UNAVAILABLE,
    BrokerRule,
    BrokerState,
    StorageRule,
    StorageState,
    tech_rules,
)
from tests.helpers import one_bed_config

T0 = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)


def _rule() -> StorageRule:
    config = one_bed_config(T0)
    [rule, _] = tech_rules(config, "w1")
    assert isinstance(rule, StorageRule)
    return rule


def _broker_rule(alert_after_s: float | None = None) -> BrokerRule:
    config = one_bed_config(T0)
    if alert_after_s is not None:
        config = config.model_copy(
            update={"mqtt": config.mqtt.model_copy(update={"alert_after_s": alert_after_s})}
        )
    [_, rule] = tech_rules(config, "w1")
    assert isinstance(rule, BrokerRule)
    return rule


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _health(health: Health, source: str = "storage", at_s: float = 0) -> SourceHealth:
    return SourceHealth("w1", "_w1", source, T0 + timedelta(seconds=at_s), health, "HTTP 503")


def test_storage_down_raises_a_low_priority_technical_alert_at_the_event_time() -> None:
    rule = _rule()
    state, [candidate] = rule.step(rule.initial(), _health(Health.LOST, at_s=5), T0 + timedelta(seconds=9))
    assert state == StorageState(down=True)
    assert candidate.condition == STORAGE_UNAVAILABLE
    assert (candidate.ward, candidate.bed) == ("w1", "_w1")
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


# --- BROKER_UNAVAILABLE ---------------------------------------------------------------------------


def _link(
    health: Health, at_s: float = 0, detail: str = "TLS: the server's certificate has expired"
) -> SourceHealth:
    return SourceHealth(
        "w1", "_w1", "mqtt", _at(at_s), health, detail if health is not Health.CONNECTED else ""
    )


def test_a_broker_loss_is_announced_once_it_has_lasted_the_configured_time() -> None:
    rule = _broker_rule()  # mqtt.alert_after_s: 30 s by default
    state, out = rule.step(rule.initial(), _link(Health.LOST, at_s=0), _at(0))
    assert out == ()
    assert state == BrokerState(down_since=_at(0), detail="TLS: the server's certificate has expired")
    state, out = rule.step(state, Tick(_at(29.999)), _at(29.999))
    assert out == (), "29.999 s: not yet"
    state, [candidate] = rule.step(state, Tick(_at(30)), _at(30))
    assert state.raised
    assert (candidate.condition, candidate.present, candidate.time) == (BROKER_UNAVAILABLE, True, _at(30))
    assert (candidate.ward, candidate.bed) == ("w1", "_w1")
    assert (candidate.kind, candidate.priority) == (Kind.TECHNICAL, Priority.MEDIUM)
    assert candidate.message is not None
    assert candidate.message.en.startswith("MQTT broker unreachable")
    assert "(TLS: the server's certificate has expired)" in candidate.message.en
    assert candidate.message.fr.startswith("Broker MQTT injoignable")
    assert rule.step(state, Tick(_at(90)), _at(90)) == (state, ()), "announced once"


def test_the_delay_comes_from_the_config_and_counts_from_the_first_loss() -> None:
    rule = _broker_rule(alert_after_s=5)
    state, _ = rule.step(rule.initial(), _link(Health.LOST, at_s=0), _at(0))
    # Each failed reconnection reports again; the loss still began at the first.
    state, out = rule.step(state, _link(Health.LOST, at_s=4, detail="connection refused"), _at(4))
    assert out == ()
    assert (state.down_since, state.detail) == (_at(0), "connection refused")
    state, [candidate] = rule.step(state, _link(Health.LOST, at_s=5, detail="connection refused"), _at(5))
    assert candidate.present is True
    assert candidate.message is not None
    assert "(connection refused)" in candidate.message.en


def test_a_short_loss_stays_silent_and_a_long_one_is_cleared_when_the_broker_is_back() -> None:
    rule = _broker_rule(alert_after_s=10)
    state, _ = rule.step(rule.initial(), _link(Health.LOST), _at(0))
    state, out = rule.step(state, _link(Health.CONNECTED, at_s=9), _at(9))
    assert (state, out) == (BrokerState(), ())
    assert rule.step(state, Tick(_at(60)), _at(60)) == (state, ()), "back up: the old loss is forgotten"

    state, _ = rule.step(state, _link(Health.LOST, at_s=100), _at(100))
    state, [down] = rule.step(state, Tick(_at(110)), _at(110))
    state, [up] = rule.step(state, _link(Health.CONNECTED, at_s=120), _at(120))
    assert (down.present, up.present, up.time) == (True, False, _at(120))
    assert (up.condition, up.ward, up.bed, up.kind) == (BROKER_UNAVAILABLE, "w1", "_w1", Kind.TECHNICAL)
    assert up.message is not None
    assert up.message.en == "MQTT broker reachable again."
    assert up.message.fr == "Broker MQTT de nouveau joignable."
    assert state == BrokerState()


def test_the_broker_rule_reads_only_its_own_source() -> None:
    rule = _broker_rule(alert_after_s=1)
    start = rule.initial()
    assert rule.step(start, _health(Health.LOST), _at(5)) == (start, ()), "storage is another rule's"
    assert rule.step(start, Tick(_at(5)), _at(5)) == (start, ())
    down, _ = rule.step(start, _link(Health.LOST), _at(0))
    assert rule.step(down, _health(Health.CONNECTED, at_s=1), _at(1)) == (down, ())


def test_broker_state_round_trips() -> None:
    rule = _broker_rule()
    for state in (BrokerState(), BrokerState(_at(3.5), "TLS: name mismatch", raised=True)):
        assert rule.load(rule.dump(state)) == state
    # A state saved without its optional keys: not down, no detail, not announced.
    assert rule.load({}) == BrokerState(None, "", raised=False)
    assert rule.load({"down_since": "2026-03-02T20:00:01Z"}) == BrokerState(_at(1), "", raised=False)
