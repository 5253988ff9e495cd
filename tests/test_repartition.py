"""`wardd repartition`: each bed's rows moved to the store of its partition under a new count.

Pure tests of where a row goes; then real store files filled through ``Store.apply``
moved 1 → 3 → 1 (every row where its bed's hash puts it, and the round trip gives the
same rows back); the refusals; a crash while writing and while renaming.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from daemon.config import Config, parse
from daemon.links.store import Changes, DeliveryRow, Store, WindowWrite
from daemon.partition import (
    LayoutBusyError,
    for_partition,
    layout_lock,
    partition_of,
    repartition_plan,
    store_path,
    subscriptions,
)
from daemon.partition import Partition as Part
from daemon.repartition import (
    TABLES,
    Placement,
    RepartitionError,
    delivery_numbers,
    layout_sessions,
    merge_digests,
    notice_place,
    point_place,
    repartition,
    split_failing,
    split_groups,
    time_key,
    topic_place,
)
from tests.helpers import wardd
from tests.mqtt_watch import until, watch
from tests.servers import Mosquitto
from tests.test_partition import WARD, _vitals, _write_config
from tests.ward_load import WarddProcess

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
BEDS = {"haem": [str(i) for i in range(1, 9)], "onc": ["o1", "o2"]}


def _config_toml(state_dir: Path, *, workers: int = 1) -> str:
    beds = "".join(
        f"""
[[beds]]
ward = "{ward}"
id = "{bed}"
patient = "p-{bed}"
weight_kg = 63
height_cm = 165
protocol_start = "2026-03-01T08:00:00+00:00"
"""
        for ward, ids in BEDS.items()
        for bed in ids
    )
    return f"""
[daemon]
state_dir = "{state_dir}"
workers = {workers}

[mqtt]
url = "mqtt://127.0.0.1:1"
topic_prefix = "w"

[influx]
api = "none"
{beds}"""


def _config(state_dir: Path, *, workers: int = 1) -> Config:
    return parse(tomllib.loads(_config_toml(state_dir, workers=workers)))


# --- pure: where a row goes ----------------------------------------------------------------------


def test_a_bed_goes_where_its_ward_and_id_hash_under_the_new_count() -> None:
    placement = Placement(3, {"1": "haem", "o1": "onc"})
    assert placement.of("1") == partition_of("haem", "1", 3)
    # The config's ward wins over the one a row names: the daemon runs the bed under it.
    assert placement.of("1", "elsewhere") == partition_of("haem", "1", 3)
    assert placement.of("gone", "onc") == partition_of("onc", "gone", 3)
    # A ward's own subject is placed as `for_partition` places it.
    assert placement.of("_onc") == partition_of("onc", "_onc", 3)
    assert placement.of(None, "onc") == partition_of("onc", "_onc", 3)
    assert placement.of(None) == 0
    assert placement.unplaced == set()
    assert placement.of("ghost") == 0
    assert placement.unplaced == {"ghost"}


def test_points_topics_and_notices_name_their_bed() -> None:
    assert point_place("vitals,ward=haem,bed=3,device=m-1 temp_c=38.6 1") == ("haem", "3")
    assert point_place("wardd_counters,instance=w,name=x count=1i 1") == (None, None)
    assert point_place("garbage") == (None, None)
    assert topic_place("w/haem/bed/3/alerts/haem.3-FEVER-1", "w") == ("haem", "3")
    assert topic_place("w/haem/bed/_haem/alerts/ward.haem-X-2", "w") == ("haem", "_haem")
    assert topic_place("w/haem/escalations", "w") == ("haem", None)
    assert topic_place("w/_wardd/wardd-p0of2/status", "w") == (None, None)
    assert topic_place("other/haem/bed/3/alerts/x", "w") == (None, None)
    assert notice_place({"ward": "haem", "bed": "3", "alerts": []}) == ("haem", "3")
    digest = {"ward": "haem", "bed": "", "alerts": [{"ward": "onc", "bed": "o1"}]}
    assert notice_place(digest) == ("onc", "o1")
    assert notice_place({"bed": "", "alerts": []}) == (None, None)


def test_delivery_numbers_are_kept_unless_two_stores_used_them() -> None:
    assert delivery_numbers([[3, 5], [7]]) == [[3, 5], [7]]
    # The second store's 5 is taken: all its numbers move above, in their order.
    assert delivery_numbers([[3, 5], [5, 6]]) == [[3, 5], [10, 11]]
    assert delivery_numbers([[], [1]]) == [[], [1]]


def test_groups_failing_beds_and_digests_are_split_or_shared() -> None:
    placement = Placement(2, {"1": "haem", "2": "haem"})
    groups: list[dict[str, Any]] = [
        {"ward": "haem", "bed": b, "route": "r", "opened": "x", "ids": []} for b in ("1", "2")
    ]
    split = split_groups(groups, placement)
    assert sorted(g["bed"] for gs in split.values() for g in gs) == ["1", "2"]
    assert all(placement.of(g["bed"]) == part for part, gs in split.items() for g in gs)
    failing = split_failing({"pager": [["haem", "1"], ["haem", "2"]]}, placement)
    assert {part: beds["pager"] for part, beds in failing.items()} == {
        placement.of("1"): [["haem", "1"]]
        + ([["haem", "2"]] if placement.of("2") == placement.of("1") else []),
        **({placement.of("2"): [["haem", "2"]]} if placement.of("2") != placement.of("1") else {}),
    }
    a, b = base64.b64encode(b"A" * 16).decode(), base64.b64encode(b"B" * 32).decode()
    assert base64.b64decode(merge_digests([a, b])) == b"A" * 16 + b"B" * 32


def test_the_sessions_kept_are_those_the_new_workers_subscribe_with(tmp_path: Path) -> None:
    config = _config(tmp_path)
    three = config.model_copy(update={"daemon": config.daemon.model_copy(update={"workers": 3})})
    sessions = layout_sessions(config, 3)
    assert list(sessions) == [f"wardd-p{i}of3" for i in range(3)]
    for i, topics in enumerate(sessions.values()):
        worker = for_partition(three, Part(i, 3))
        assert topics == subscriptions(worker)
        beds = {topic.split("/")[3] for topic in topics if topic.endswith("/vitals")}
        assert beds == {bed.id for bed in worker.beds}, "its own beds' topics, and no other's"
    # One process: the plain client id and the wildcards.
    assert layout_sessions(three, 1) == {"wardd": subscriptions(config)}
    assert "w/+/bed/+/vitals" in subscriptions(config)


def test_journal_times_sort_as_times() -> None:
    # iso() leaves out a zero fraction: "…:00Z" must still sort before "…:00.5Z".
    assert time_key("2026-03-02T10:00:00Z") < time_key("2026-03-02T10:00:00.500000Z")
    assert time_key("2026-03-02T10:00:00.500000Z") < time_key("2026-03-02T10:00:01Z")


def test_the_meta_keys_are_their_owners() -> None:
    from daemon import alerts, app, repartition  # noqa: PLC0415
    from daemon.delivery import service  # noqa: PLC0415
    from daemon.web import server  # noqa: PLC0415

    assert repartition.NEXT_SEQ_KEY == alerts.NEXT_SEQ_KEY
    assert repartition.SYSTEM_ACTOR == alerts.SYSTEM_ACTOR
    assert repartition.SEEN_KEY == app.SEEN_KEY
    assert repartition.FAILING_KEY == service.FAILING_KEY
    assert repartition.SESSIONS_KEY == server.SESSIONS_KEY


def test_every_table_of_the_store_has_a_rule(tmp_path: Path) -> None:
    Store(tmp_path / "s.sqlite").close()
    db = sqlite3.connect(tmp_path / "s.sqlite")
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert tables == set(TABLES)


# --- real store files ----------------------------------------------------------------------------


def _fill(path: Path, beds: dict[str, list[str]], *, first_alert: int = 1) -> None:
    """Rows of every kind for ``beds`` (and each ward's own subject), as the daemon writes them."""
    store = Store(path)
    changes = Changes(processed_seq=0)
    n = first_alert
    groups: list[dict[str, Any]] = []
    for ward, ids in beds.items():
        for bed in [*ids, f"_{ward}"]:
            changes.rule_states[(bed, "vitals")] = json.dumps({"bed": bed})
            changes.rule_states[(bed, "dose")] = json.dumps({"ml": len(bed)})
            # A tie at time 2: kept in the order stored.
            entries: list[tuple[int, Any]] = [(1, {"i": 0}), (2, {"i": 1}), (2, {"i": 2})]
            changes.windows.append(WindowWrite(bed, "vitals", "FEVER", False, None, entries.copy))
            for state in ("open", "closed"):
                alert_id = f"{ward}.{bed}-FEVER-{n}"
                n += 1
                data = {"id": alert_id, "ward": ward, "bed": bed, "state": state}
                changes.alerts[alert_id] = (
                    ward,
                    bed,
                    state == "open",
                    f"2026-03-02T10:00:0{n % 10}Z",
                    json.dumps(data),
                )
                at = f"2026-03-02T10:{n % 60:02d}:00Z"
                changes.journal.append((at, "wardd", "start", alert_id, bed, json.dumps({"id": alert_id})))
                # A line naming its alert but no bed goes with the alert's bed.
                changes.journal.append((at, "wardd", "notice", alert_id, None, json.dumps({"of": alert_id})))
                changes.route_state[f"alert:{alert_id}"] = json.dumps({"alert": data, "route": "r"})
                number = store.next_id("delivery_outbox")
                body = {"delivery": number, "ward": ward, "bed": bed, "alerts": [data]}
                changes.deliveries.append(DeliveryRow(number, "pager", json.dumps(body), 0, at, False))
                topic = f"w/{ward}/bed/{bed}/alerts/{alert_id}"
                changes.mqtt_out.append((store.next_id("mqtt_outbox"), topic, b"{}", 1, True))
            groups.append(
                {"ward": ward, "bed": bed, "route": "r", "opened": "2026-03-02T10:00:00Z", "ids": []}
            )
            line = f"vitals,ward={ward},bed={bed},device=m temp_c=38.6 1"
            changes.points.append((store.next_id("point_outbox"), line))
    changes.route_state["groups"] = json.dumps(groups)
    changes.points.append((store.next_id("point_outbox"), "wardd_counters,instance=w,name=a count=1i 1"))
    changes.dead_letters.append(
        (store.next_id("point_outbox"), "2026-03-02T10:00:00Z", "bad,ward=haem,bed=1 x=1 1", "no")
    )
    changes.journal.append(("2026-03-02T09:00:00Z", "wardd", "started", None, None, "{}"))
    changes.rule_states[(f"ghost-{path.stem}", "vitals")] = "{}"  # a bed no config or alert places
    changes.meta["alerts.next_seq"] = n
    changes.meta["inbound.seen"] = base64.b64encode(path.name.encode().ljust(16, b"."))
    changes.meta["inbound.seen"] = changes.meta["inbound.seen"].decode()
    changes.meta["delivery.failing"] = {"pager": [[w, b] for w, ids in beds.items() for b in ids[:1]]}
    store.apply(changes)
    store.close()


def _rows(db: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """A store's rows, ids that a move renumbers left out, each table in stored order."""
    out = {
        "rule_state": sorted(db.execute("SELECT bed, rule, data FROM rule_state")),
        "rule_window": list(
            db.execute(
                "SELECT bed, rule, window, time_us, entries, last_us, from_us FROM rule_window ORDER BY rowid"
            )
        ),
        "alerts": sorted(db.execute("SELECT * FROM alerts")),
        "journal": list(
            db.execute(
                "SELECT at, who, what, alert_id, bed, entry FROM journal WHERE what != 'repartition' ORDER BY seq"
            )
        ),
        "point_outbox": list(db.execute("SELECT line FROM point_outbox ORDER BY id")),
        "dead_letters": list(db.execute("SELECT at, line, reason FROM dead_letters ORDER BY id")),
        "mqtt_outbox": list(db.execute("SELECT topic, payload, qos, retain FROM mqtt_outbox ORDER BY id")),
        "delivery_outbox": list(db.execute("SELECT * FROM delivery_outbox ORDER BY id")),
        "route_state": sorted(db.execute("SELECT key, data FROM route_state WHERE key != 'groups'")),
        "groups": sorted(
            json.dumps(g)
            for (data,) in db.execute("SELECT data FROM route_state WHERE key = 'groups'")
            for g in json.loads(data)
        ),
        "meta": sorted(db.execute("SELECT key, value FROM meta")),
    }
    return {k: [tuple(r) if not isinstance(r, str) else (r,) for r in v] for k, v in out.items()}


def _read(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    db = sqlite3.connect(path)
    try:
        return _rows(db)
    finally:
        db.close()


def _bed_of(table: str, row: tuple[Any, ...]) -> tuple[str | None, str | None]:
    """(ward, bed) of a row as ``_rows`` gives it."""
    if table in ("rule_state", "rule_window"):
        return None, row[0]
    if table == "alerts":
        return row[1], row[2]
    if table == "journal":
        return None, row[4] if row[4] else (row[3].split(".", 1)[1].rsplit("-", 2)[0] if row[3] else None)
    if table in ("point_outbox", "dead_letters"):
        return point_place(row[-2] if table == "dead_letters" else row[0])
    if table == "mqtt_outbox":
        return topic_place(row[0], "w")
    if table == "delivery_outbox":
        return notice_place(json.loads(row[2]))
    if table == "route_state":
        alert = json.loads(row[1])["alert"]
        return alert["ward"], alert["bed"]
    if table == "groups":
        group = json.loads(row[0])
        return group["ward"], group["bed"]
    raise AssertionError(table)


def _crash_between_renames(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """A move to 2 workers cut short when the plan is written and the first new file is in
    place, the second not yet (as abrupt as a kill for what is on disk then)."""
    renames = 0
    real = Path.rename

    def rename(self: Path, target: Any) -> Path:
        nonlocal renames
        renames += 1
        if renames == 3:
            raise KeyboardInterrupt
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        repartition(config, 2, now=NOW, say=print)
    monkeypatch.undo()


@pytest.fixture
def filled(tmp_path: Path) -> Config:
    config = _config(tmp_path / "state")
    _fill(config.daemon.store_path, BEDS)
    return config


def test_one_store_is_dealt_over_three_and_gathered_back_whole(filled: Config) -> None:
    base = filled.daemon.store_path
    before = _read(base)
    said: list[str] = []
    report = repartition(filled, 3, now=NOW, say=said.append)
    paths = [store_path(base, Part(i, 3)) for i in range(3)]
    assert [p.exists() for p in paths] == [True, True, True]
    assert not base.exists()
    assert report.archive is not None
    assert (report.archive / "wardd.sqlite").exists(), "the old store is kept"
    assert not repartition_plan(filled).exists()
    assert not list(base.parent.glob("*.repartition-tmp*"))

    placement = Placement(3, {b.id: b.ward for b in filled.beds})
    parts = [_read(p) for p in paths]
    for index, rows in enumerate(parts):
        for table, table_rows in rows.items():
            if table == "meta":
                continue
            for row in table_rows:
                ward, bed = _bed_of(table, row)
                expected = placement.of(bed, ward) if bed or ward else 0
                assert expected == index, f"{table} row of bed {bed} in partition {index}: {row}"
    # Every partition got some beds, and nothing was lost or doubled.
    assert all(rows["rule_state"] for rows in parts)
    for table in before:
        if table in ("meta", "journal", "delivery_outbox"):
            continue
        assert sorted(r for rows in parts for r in rows[table]) == sorted(before[table]), table
    assert sorted(r[:6] for rows in parts for r in rows["delivery_outbox"]) == sorted(
        before["delivery_outbox"]
    )
    # Each bed's journal keeps its order; the new store's position starts afresh.
    for rows in parts:
        bed_lines = [r for r in rows["journal"] if r[4] == "3"]
        assert bed_lines == [r for r in before["journal"] if r[4] == "3"] or not bed_lines
        meta = dict(rows["meta"])
        assert json.loads(meta["processed_seq"]) == 0
        assert meta["alerts.next_seq"] == dict(before["meta"])["alerts.next_seq"]
        assert meta["inbound.seen"] == dict(before["meta"])["inbound.seen"]
    db = sqlite3.connect(paths[0])
    assert {seq for (seq,) in db.execute("SELECT seq FROM rule_state")} == {0}
    [line] = [json.loads(e) for (e,) in db.execute("SELECT entry FROM journal WHERE what = 'repartition'")]
    assert (line["from_workers"], line["to_workers"], line["partition"]) == (1, 3, "0/3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    text = "\n".join(report.lines())
    assert "rule_window" in text
    assert "wardd.p2of3.sqlite" in text
    assert "ghost" in text, "a bed of no known ward is named"

    # The daemon's own reading of a new store: the states, windows and alerts of the beds
    # (and ward subjects) that the worker of that partition runs, and no other.
    config3 = filled.model_copy(update={"daemon": filled.daemon.model_copy(update={"workers": 3})})
    worker = for_partition(config3, Part(1, 3))
    store = Store(paths[1])
    mine = set(store.rule_states())
    assert mine == {b.id for b in worker.beds} | {f"_{w}" for w in worker.own_wards()}
    assert [e["i"] for e in store.rule_windows()[(sorted(mine)[0], "vitals")]["FEVER"]] == [0, 1, 2]
    assert {a.bed for a in store.alerts()} == mine
    store.close()

    # And back to one: the same rows as at the start.
    repartition(config3, 1, now=NOW.replace(minute=1), say=said.append)
    after = _read(base)
    for table in before:
        if table == "meta":
            continue
        assert sorted(after[table]) == sorted(before[table]), table
    for bed in ("1", "_haem", "o2"):
        # A bed's lines (those naming only its alert too) come from one store: their order holds.
        assert [r for r in after["journal"] if _bed_of("journal", r)[1] == bed] == [
            r for r in before["journal"] if _bed_of("journal", r)[1] == bed
        ]
    assert [p.exists() for p in paths] == [False, False, False]
    assert len(list(base.parent.glob("wardd.before-repartition-*"))) == 2


def test_refusals_change_nothing(filled: Config, tmp_path: Path) -> None:
    base = filled.daemon.store_path
    before = _read(base)

    def refused(to: int, match: str, config: Config = filled) -> None:
        with pytest.raises(RepartitionError, match=match):
            repartition(config, to, now=NOW, say=print)
        assert not list(base.parent.glob("*.repartition-tmp*"))
        assert not list(base.parent.glob("*before-repartition*"))

    refused(1, "already those of 1 worker")
    refused(0, "1 to 64")
    store_path(base, Part(0, 2)).touch()
    refused(2, r"target stores already exist \(wardd.p0of2.sqlite\)")
    refused(3, "several layouts")
    store_path(base, Part(0, 2)).unlink()

    store = Store(base)
    store.apply(
        Changes(
            inbound=[(store.next_id("inbound"), "2026-03-02T10:00:00Z", "mqtt", "w/haem/bed/1/vitals", b"{}")]
        )
    )
    store.close()
    refused(2, "1 logged input.* not yet processed: start the daemon with daemon.workers = 1 and stop it")
    db = sqlite3.connect(base)
    db.execute("DELETE FROM inbound")
    db.execute("INSERT INTO admissions VALUES ('1', 'haem', '{}')")
    db.commit()
    db.close()
    refused(2, "1 admission row")

    with layout_lock(filled, exclusive=False), pytest.raises(LayoutBusyError, match="a daemon runs"):
        repartition(filled, 2, now=NOW, say=print)
    empty = _config(tmp_path / "empty")
    refused(2, "no store to move", empty)
    three = _config(tmp_path / "three")
    _fill(store_path(three.daemon.store_path, Part(0, 3)), {"haem": ["1"]})
    refused(1, "stores of 3 workers are incomplete: wardd.p1of3.sqlite, wardd.p2of3.sqlite missing", three)
    db = sqlite3.connect(base)
    db.execute("DELETE FROM admissions")
    db.commit()
    db.close()
    assert dict(_read(base).items()) == before


def test_a_bed_or_an_alert_in_two_stores_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path / "state")
    for i in range(2):
        _fill(store_path(config.daemon.store_path, Part(i, 2)), {"haem": ["1"]}, first_alert=1 + 10 * i)
    with pytest.raises(
        RepartitionError, match=r"bed 1 has rule states in both wardd.p0of2.sqlite and wardd.p1of2.sqlite"
    ):
        repartition(config, 1, now=NOW, say=print)
    db = sqlite3.connect(store_path(config.daemon.store_path, Part(1, 2)))
    db.execute("DELETE FROM rule_state")
    db.execute("UPDATE alerts SET id = 'haem.1-FEVER-1' WHERE id = 'haem.1-FEVER-11'")
    db.commit()
    db.close()
    with pytest.raises(
        RepartitionError, match=r"alert haem.1-FEVER-1 is in both wardd.p0of2.sqlite and wardd.p1of2.sqlite"
    ):
        repartition(config, 1, now=NOW, say=print)


def test_two_stores_are_gathered_into_one_with_every_alert_number_above_both(tmp_path: Path) -> None:
    config = _config(tmp_path / "state", workers=2)
    base = config.daemon.store_path
    # Delivery numbers of two stores collide (the daemon numbers each store from 1).
    _fill(store_path(base, Part(0, 2)), {"haem": ["1", "2"]}, first_alert=1)
    _fill(store_path(base, Part(1, 2)), {"onc": ["o1"]}, first_alert=100)
    report = repartition(config, 1, now=NOW, say=print)
    assert report.archive is not None
    archive = report.archive
    store = Store(base)
    assert store.meta("alerts.next_seq") == max(
        json.loads(dict(_read(archive / p.name)["meta"])["alerts.next_seq"]) for p in report.source.paths
    )
    pending = store.deliveries_pending()
    numbers = [row.id for row in pending]
    assert len(set(numbers)) == len(numbers) == 10
    # The second store's numbers moved above the first's, in their own order.
    assert numbers == list(range(1, 7)) + list(range(7, 11))
    assert all(json.loads(row.notice)["delivery"] == row.id for row in pending)
    assert any("took a new delivery number" in note for note in report.notes)
    # The next delivery goes above every number given, a shifted one included.
    assert store.meta("delivery.floor") == 10
    assert store.next_id("delivery_outbox") == 11
    failing = store.meta("delivery.failing")
    assert sorted(map(tuple, failing["pager"])) == [("haem", "1"), ("onc", "o1")]
    store.close()


def test_a_crash_while_writing_leaves_the_old_layout_and_the_next_run_starts_over(
    filled: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    import daemon.repartition as module  # noqa: PLC0415

    base = filled.daemon.store_path
    before = _read(base)

    def crash(*args: Any) -> None:
        raise KeyboardInterrupt  # as abrupt as a kill for what is on disk at that moment

    monkeypatch.setattr(module, "_copy_journal", crash)
    with pytest.raises(KeyboardInterrupt):
        repartition(filled, 2, now=NOW, say=print)
    monkeypatch.undo()
    assert _read(base) == before
    assert list(base.parent.glob("*.repartition-tmp")), "the half-written files are there"
    said: list[str] = []
    repartition(filled, 2, now=NOW, say=said.append)
    assert any("left by an interrupted repartition" in line for line in said)
    assert store_path(base, Part(1, 2)).exists()
    assert not base.exists()


def test_a_crash_between_the_renames_is_finished_by_the_next_run(
    filled: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = filled.daemon.store_path
    _crash_between_renames(filled, monkeypatch)
    assert repartition_plan(filled).exists()
    assert base.exists()
    assert store_path(base, Part(0, 2)).exists()
    said: list[str] = []
    report = repartition(filled, 2, now=NOW, say=said.append)
    assert report.resumed
    assert not repartition_plan(filled).exists()
    assert not base.exists()
    assert [store_path(base, Part(i, 2)).exists() for i in range(2)] == [True, True]
    assert report.archive is not None
    assert (report.archive / "wardd.sqlite").exists()


# --- a real daemon before and after ---------------------------------------------------------------


def _open_alerts(status: str) -> dict[str, set[str]]:
    """``{bed: {alert id, ...}}`` from `wardd status`."""
    out: dict[str, set[str]] = {}
    bed = ""
    for line in status.splitlines():
        if line.startswith(f"{WARD}/"):
            bed = line.split(":", 1)[0].split("/", 1)[1]
        elif " id " in line:
            out.setdefault(bed, set()).add(line.split(" id ", 1)[1].split()[0])
    return out


def _session_present(url: str, client_id: str) -> bool:
    """Whether the broker holds a session for ``client_id`` (ended again after the look)."""
    host, port = url.removeprefix("mqtt://").split(":")
    present: list[bool] = []
    for clean in (False, True):  # look, then end the session the look made
        connected: list[bool] = []
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        client.on_connect = lambda _c, _u, flags, _rc, _p, seen=connected: seen.append(flags.session_present)
        client.connect(host, int(port))
        while not connected:
            client.loop(timeout=1.0)
        client.disconnect()
        present += connected[:1]
    return present[0]


def _bed_rows(paths: list[Path]) -> dict[str, list[tuple[Any, ...]]]:
    """Each bed's rule states and window entries, across the stores."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for path in paths:
        db = sqlite3.connect(path)
        for bed, *rest in db.execute("SELECT bed, rule, data FROM rule_state"):
            out.setdefault(bed, []).append(("state", *rest))
        for bed, *rest in db.execute(
            "SELECT bed, rule, window, time_us, entries, last_us, from_us FROM rule_window ORDER BY rowid"
        ):
            out.setdefault(bed, []).append(("window", *rest))
        db.close()
    return {bed: sorted(rows) for bed, rows in out.items()}


@pytest.mark.integration
async def test_a_daemon_goes_on_after_its_stores_are_moved_to_two_workers_and_back(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str
) -> None:
    # Four beds with an alert, two whose alert a late sample will complete from the
    # moved window; each set in both new partitions.
    beds = ["1", "2", "4", "6", "3", "5"]
    owners = {bed: partition_of(WARD, bed, 2) for bed in beds}
    assert {owners[b] for b in beds[:4]} == {0, 1}
    assert {owners[b] for b in beds[4:]} == {0, 1}
    state = tmp_path / "state"
    config_path = tmp_path / "ward.toml"

    def configure(workers: int) -> None:
        _write_config(config_path, beds=len(beds), workers=workers, mqtt_url=mosquitto.url, prefix=prefix)

    configure(1)
    daemon = WarddProcess(config_path, tmp_path / "wardd.log")
    host, port = mosquitto.url.removeprefix("mqtt://").split(":")
    now = datetime.now(UTC).replace(microsecond=0)

    async def send(bed_ids: list[str], samples: list[tuple[float, float]]) -> None:
        """``(seconds before now, temperature)`` to each bed."""
        async with aiomqtt.Client(host, int(port)) as client:
            for bed in bed_ids:
                for ago_s, temp_c in samples:
                    payload = _vitals(now - timedelta(seconds=ago_s), temp_c)
                    await client.publish(f"{prefix}/{WARD}/bed/{bed}/vitals", payload, qos=1)

    try:
        daemon.start()
        daemon.wait_connected()
        async with watch(mosquitto.url, f"{prefix}/{WARD}/bed/+/alerts/+") as alerts:
            # Two abnormal samples raise FEVER (confirm_samples = 2); one only starts the count.
            await send(beds[:4], [(10, 38.6), (9, 38.6)])
            # An abnormal sample, then a normal one: no run of two yet.
            await send(beds[4:], [(10, 38.6), (8, 37.0)])
            await until(
                lambda: {a["bed"] for a in alerts if a["condition"] == "FEVER"} == set(beds[:4]),
                30,
                "4 FEVER",
            )
        # Sessions for the two new workers, made beside the running daemon.
        prepared = wardd("repartition", "--config", str(config_path), "--to", "2", "--prepare")
        assert prepared.returncode == 0, prepared.stderr
        assert daemon.terminate() == 0
        # A late abnormal sample between the two first ones completes a run of two, but only
        # with the first still in the window the move carries (README, "Late data"). Sent
        # while no daemon runs and before the move: only the new sessions keep it for later.
        await send(beds[4:], [(9, 38.6)])
        before = _open_alerts(wardd("status", "--config", str(config_path), check=True).stdout)
        assert set(before) == set(beds[:4])
        rows_before = _bed_rows([state / "wardd.sqlite"])
        assert all(any(r[0] == "window" for r in rows_before[b]) for b in beds), "every bed has window rows"

        configure(2)
        moved = wardd("repartition", "--config", str(config_path))
        assert moved.returncode == 0, moved.stderr
        assert "wardd.p1of2.sqlite" in moved.stdout
        two = [state / "wardd.p0of2.sqlite", state / "wardd.p1of2.sqlite"]
        assert _bed_rows(two) == rows_before
        # The one worker's session is gone; the new workers' wait for them.
        assert not _session_present(mosquitto.url, f"wardd-{prefix}")

        async with watch(mosquitto.url, f"{prefix}/{WARD}/bed/+/alerts/+") as alerts:
            daemon.start()
            await until(lambda: daemon.output().count("MQTT connected") == 3, 30, "both workers' connections")
            await until(
                lambda: {a["bed"] for a in alerts if a["condition"] == "FEVER"} >= set(beds), 30, "6 FEVER"
            )
            # The moved alerts are the ones the workers republished, under the same ids.
            republished = {a["id"] for a in alerts if a["bed"] in beds[:4]}
        assert republished == set().union(*before.values())
        # The daemon refuses to be moved under its feet.
        busy = wardd("repartition", "--config", str(config_path), "--to", "3")
        assert busy.returncode == 1
        assert busy.stderr.count("\n") == 1
        assert "a daemon runs over the stores; stop it first" in busy.stderr
        assert daemon.terminate() == 0
        after = _open_alerts(wardd("status", "--config", str(config_path), check=True).stdout)
        assert {bed: after[bed] for bed in beds[:4]} == before
        assert set(after) == set(beds)

        # 2 → 3 → 1, and one worker starts on the gathered store.
        to_three = wardd("repartition", "--config", str(config_path), "--to", "3")
        assert to_three.returncode == 0, to_three.stderr
        configure(1)
        to_one = wardd("repartition", "--config", str(config_path))
        assert to_one.returncode == 0, to_one.stderr
        assert sorted(p.name for p in state.glob("*.sqlite")) == ["wardd.sqlite"]
        daemon.start()
        await until(lambda: daemon.output().count("MQTT connected") == 4, 30, "the one worker's connection")
        assert daemon.terminate() == 0
        assert _open_alerts(wardd("status", "--config", str(config_path), check=True).stdout) == after
    finally:
        daemon.close()
    assert "unknown_bed" not in daemon.output()
    assert daemon.output().count("recovered from") >= 3


@pytest.mark.integration
def test_the_command_says_each_refusal_in_one_line_and_finishes_an_interrupted_move(
    filled: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = filled.daemon.store_path
    config_path = tmp_path / "ward.toml"
    config_path.write_text(_config_toml(base.parent, workers=2))
    store = Store(base)
    store.apply(
        Changes(
            inbound=[(store.next_id("inbound"), "2026-03-02T10:00:00Z", "mqtt", "w/haem/bed/1/vitals", b"{}")]
        )
    )
    store.close()
    refused = wardd("repartition", "--config", str(config_path))
    assert refused.returncode == 1
    assert refused.stderr.startswith(
        "wardd repartition: wardd.sqlite holds 1 logged input(s) not yet processed"
    )
    assert refused.stderr.count("\n") == 1
    assert refused.stdout == ""
    db = sqlite3.connect(base)
    db.execute("DELETE FROM inbound")
    db.commit()
    db.close()

    # A crash after the first rename of the plan: a daemon must not start on the mix.
    _crash_between_renames(filled, monkeypatch)
    with layout_lock(filled, exclusive=True):
        # A move under way: the daemon waits for nothing, it refuses.
        run = wardd("run", "--config", str(config_path))
    assert run.returncode == 1
    assert run.stderr.startswith("wardd run: ")
    assert "wardd.lock is held: `wardd repartition` is moving the stores; nothing was started" in run.stderr
    run = wardd("run", "--config", str(config_path))
    assert run.returncode == 1
    assert "a repartition of the stores was interrupted" in run.stderr
    assert f"run `wardd repartition --config {config_path}` to finish it" in run.stderr
    finished = wardd("repartition", "--config", str(config_path))
    assert finished.returncode == 0, finished.stderr
    assert "finished: " in finished.stdout
    assert sorted(p.name for p in base.parent.glob("*.sqlite")) == [
        "wardd.p0of2.sqlite",
        "wardd.p1of2.sqlite",
    ]

    # No broker answers at the config's URL: the move would lose what is published before
    # the new workers first connect, so it needs to be told to go without.
    unreachable = wardd("repartition", "--config", str(config_path), "--to", "1")
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith(
        "wardd repartition: the broker at 127.0.0.1:1 (mqtt.url) did not answer"
    )
    assert unreachable.stderr.rstrip().endswith("or move without it (--without-broker)")
    assert unreachable.stderr.count("\n") == 1
    assert not list(base.parent.glob("*.repartition-tmp"))
    alone = wardd("repartition", "--config", str(config_path), "--to", "1", "--without-broker")
    assert alone.returncode == 0, alone.stderr
    assert "the broker was left alone" in alone.stdout
    assert "set daemon.workers = 1" in alone.stdout
