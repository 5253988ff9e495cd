"""A ward's own alerts: a lost link (the database, the broker) is one alert per ward, not one per bed.

Every bed of a ward is served by the same database and broker, so before these alerts
a database outage at 1,000 beds opened 1,000 STORAGE_UNAVAILABLE alerts, and with
routing, paged staff 1,000 times (issue "Run it as a ward service": "one storage
alert per outage, not one per bed").
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.alerts import AlertBook, is_alert_id
from daemon.app import build, build_rules
from daemon.clock import ManualClock
from daemon.config import Config
from daemon.delivery.routing import Notice, NoticeKind
from daemon.events import AlertCandidate, Health, Kind, Priority, SourceHealth, Tick
from daemon.ids import is_config_id, is_ward_subject, ward_subject
from daemon.partition import Partition, for_partition
from daemon.tech_rules import BROKER_UNAVAILABLE, STORAGE_UNAVAILABLE
from daemon.wardview import book_ward_alerts, ward_alerts
from tests.helpers import bed_tables, committing, one_bed_config, wardd
from tests.servers import Influxd, Mosquitto, influxd, mosquitto
from tests.ward_load import (
    DATABASE,
    WARD,
    WarddProcess,
    connect,
    poll_until,
    vitals_payload,
    write_load_config,
)

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _wards(*beds: tuple[str, str], state_dir: Path | None = None) -> Config:
    """Beds given as (ward, bed), on protocol since 12 h."""
    base = one_bed_config(T0 - timedelta(hours=12), state_dir=state_dir)
    template = base.beds[0]
    return base.model_copy(
        update={
            "beds": [
                template.model_copy(update={"ward": ward, "id": bed, "patient": f"P-{bed}"})
                for ward, bed in beds
            ]
        }
    )


def test_a_ward_subject_is_never_a_bed_id() -> None:
    assert ward_subject("haem") == "_haem"
    assert is_ward_subject("_haem")
    assert not is_ward_subject("haem")
    assert not is_config_id(ward_subject("haem")), "a bed could have the ward's own subject"


def test_a_link_lost_is_one_candidate_per_ward_whatever_the_number_of_beds() -> None:
    config = _wards(("haem", "1"), ("haem", "2"), ("haem", "3"), ("onco", "4"))
    engine = build_rules(config)
    out = []
    for ward in config.own_wards():
        out += engine.handle(
            SourceHealth(ward, ward_subject(ward), "storage", T0, Health.LOST, "HTTP 503"), T0
        )
    assert [(c.condition, c.ward, c.bed, c.present) for c in out] == [
        (STORAGE_UNAVAILABLE, "haem", "_haem", True),
        (STORAGE_UNAVAILABLE, "onco", "_onco", True),
    ]
    # The beds themselves have no link rule left: a link's health sent to a bed raises nothing.
    assert engine.handle(SourceHealth("haem", "1", "storage", T0, Health.LOST, "HTTP 503"), T0) == []


def test_the_broker_rule_of_a_ward_is_ticked_like_a_bed() -> None:
    config = _wards(("haem", "1")).model_copy(
        update={"mqtt": one_bed_config(T0).mqtt.model_copy(update={"alert_after_s": 30.0})}
    )
    engine = build_rules(config)
    assert engine.handle(SourceHealth("haem", "_haem", "mqtt", T0, Health.LOST, "refused"), T0) == []
    just_before = T0 + timedelta(seconds=29.999)
    assert [c.condition for c in engine.handle(Tick(just_before), just_before)] == []
    at = T0 + timedelta(seconds=30)
    assert [(c.condition, c.bed) for c in engine.handle(Tick(at), at)] == [(BROKER_UNAVAILABLE, "_haem")]


def test_each_ward_is_owned_by_exactly_one_partition() -> None:
    wards = [f"w{i}" for i in range(12)]
    config = _wards(*((w, f"b{i}") for i, w in enumerate(wards)))
    config = config.model_copy(update={"daemon": config.daemon.model_copy(update={"workers": 3})})
    owned = [for_partition(config, Partition(i, 3)).own_wards() for i in range(3)]
    flat = [w for part in owned for w in part]
    assert sorted(flat) == sorted(wards), "every ward once, none twice"
    # Chosen by the ward's own subject, not by where its beds went: some partition owns a
    # ward none of whose beds it runs (with 12 wards over 3 partitions, by the hash).
    beds_of = [{b.ward for b in for_partition(config, Partition(i, 3)).beds} for i in range(3)]
    assert any(set(mine) - beds for mine, beds in zip(owned, beds_of, strict=True))


def test_a_ward_alert_has_a_safe_id_that_names_the_ward() -> None:
    book = AlertBook()
    candidate = AlertCandidate(
        STORAGE_UNAVAILABLE, "haem", "_haem", T0, present=True, kind=Kind.TECHNICAL, priority=Priority.LOW
    )
    [transition] = book.apply(candidate, T0)
    assert transition.alert.id == "ward.haem-STORAGE_UNAVAILABLE-1"
    assert is_alert_id(transition.alert.id)
    assert ward_alerts(_wards(("haem", "1"), ("onco", "2")), book.open_alerts()) == {
        "haem": [transition.alert]
    }


def test_a_books_ward_alerts_are_looked_up_at_each_wards_subject() -> None:
    """What the ward page and the console show of the wards themselves: each ward's own
    alerts, as picking them out of every open alert gives, without a bed's."""
    book = AlertBook()
    for ward, subject, condition, priority in (
        ("haem", "_haem", STORAGE_UNAVAILABLE, Priority.LOW),
        ("haem", "_haem", "BROKER_UNAVAILABLE", Priority.HIGH),
        ("haem", "1", "FEVER", Priority.MEDIUM),  # a bed's: not the ward's
        ("onco", "2", "FEVER", Priority.MEDIUM),
        ("gone", "_gone", STORAGE_UNAVAILABLE, Priority.LOW),  # a ward no bed is in
    ):
        book.apply(AlertCandidate(condition, ward, subject, T0, present=True, priority=priority), T0)
    config = _wards(("haem", "1"), ("onco", "2"))
    assert book_ward_alerts(config, book) == ward_alerts(config, book.open_alerts())
    assert [a.condition for a in book_ward_alerts(config, book)["haem"]] == [
        "BROKER_UNAVAILABLE",
        STORAGE_UNAVAILABLE,
    ]
    assert set(book_ward_alerts(config, book)) == {"haem"}


def test_a_notice_of_a_ward_alert_says_ward_not_bed() -> None:
    book = AlertBook()
    candidate = AlertCandidate(
        STORAGE_UNAVAILABLE, "haem", "_haem", T0, present=True, kind=Kind.TECHNICAL, priority=Priority.LOW
    )
    [transition] = book.apply(candidate, T0)
    notice = Notice(NoticeKind.ALERT, "tech", 0, ("pager",), "haem", "_haem", (transition.alert,), T0)
    assert notice.title().en.endswith(", ward haem")
    assert notice.title().fr.endswith(", service haem")
    assert "STORAGE_UNAVAILABLE ward haem:" in notice.text().en
    assert "_haem" not in notice.title().en + notice.text().en


async def test_link_alerts_an_earlier_version_raised_at_beds_are_ended_at_start(tmp_path: Path) -> None:
    """Before ward alerts, each bed had its own STORAGE_UNAVAILABLE; no bed rule clears it now."""
    config = _wards(("haem", "1"), ("haem", "2"), state_dir=tmp_path / "state")
    old = build(config, clock=ManualClock(T0))
    async with committing(old.writer):
        await old.alerts.handle(
            AlertCandidate(
                STORAGE_UNAVAILABLE, "haem", bed, T0, present=True, kind=Kind.TECHNICAL, priority=Priority.LOW
            )
            for bed in ("1", "2")
        )
        await old.writer.flush()
    old.store.close()
    new = build(config, clock=ManualClock(T0 + timedelta(minutes=5)))
    assert len(new.alerts.book.open_alerts()) == 2
    async with committing(new.writer):
        await new._recover()
        await new.writer.flush()
    assert new.alerts.book.open_alerts() == []
    new.store.close()


# --- a real daemon, a real database taken away and brought back ---------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with mosquitto(tmp_path / "mosquitto") as server:
        yield server


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Influxd]:
    with influxd(tmp_path / "influxd") as server:
        server.create_database(DATABASE)
        yield server


@pytest.mark.integration
def test_a_database_outage_is_one_alert_per_ward_raised_and_ended(
    tmp_path: Path, broker: Mosquitto, database: Influxd
) -> None:
    config = write_load_config(
        tmp_path / "ward.toml",
        mqtt_url=broker.url,
        prefix="wa",
        influx_url=database.url,
        beds=["1", "2", "3"],
    )
    with config.open("a") as out:
        out.write(bed_tables("onco", ["4"], start=datetime.now(UTC) - timedelta(hours=12)))
    beds = [(WARD, "1"), (WARD, "2"), (WARD, "3"), ("onco", "4")]
    daemon = WarddProcess(config, tmp_path / "wardd.log")
    daemon.start()
    client = connect(broker.url)
    k = 0

    def publish_all() -> None:
        nonlocal k
        k += 1
        for ward, bed in beds:
            payload = vitals_payload(bed, datetime.now(UTC), k, febrile=False)
            client.publish(f"wa/{ward}/bed/{bed}/vitals", payload, qos=1).wait_for_publish(10)

    def outage_lines() -> list[str]:
        publish_all()  # points to write: the database's loss is seen on a write
        return [line for line in status().splitlines() if "STORAGE_UNAVAILABLE [active]" in line]

    def status() -> str:
        return wardd("status", "--config", str(config)).stdout

    try:
        daemon.wait_connected()
        publish_all()
        database.stop()
        poll_until(lambda: len(outage_lines()) >= 2, 60, "the alerts")
        text = status()
        lines = [line.strip() for line in text.splitlines() if "STORAGE_UNAVAILABLE [active]" in line]
        assert len(lines) == 2, text
        assert f"ward {WARD}: open alerts of the ward itself: 1" in text
        assert "ward onco: open alerts of the ward itself: 1" in text
        assert all(line.startswith("LOW    STORAGE_UNAVAILABLE [active] id ward.") for line in lines), lines
        assert text.count("open alerts: none") == 4, "no bed has one of its own"
        database.start()
        poll_until(lambda: not outage_lines(), 60, "the end of the alerts")
        assert daemon.alive
    finally:
        client.loop_stop()
        client.disconnect()
        daemon.terminate()
        daemon.close()
