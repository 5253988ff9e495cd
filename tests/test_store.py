"""The durable store: schema, one transaction per unit of work, group commit, retries."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from daemon.links.store import MIGRATIONS, SCHEMA_VERSION, Changes, Store, StoreError, StoreWriter
from tests.helpers import committing


def test_a_new_store_is_at_the_current_schema_in_wal_mode(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    db = sqlite3.connect(tmp_path / "s.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_a_store_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    Store(tmp_path / "s.sqlite").close()
    db = sqlite3.connect(tmp_path / "s.sqlite")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this wardd"):
        Store(tmp_path / "s.sqlite")


def test_a_unit_of_work_is_committed_whole_and_read_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    changes = Changes()
    seq = store.next_id("inbound")
    changes.inbound.append((seq, "2026-03-02T20:00:00Z", "mqtt", "ward/w1/bed/b1/vitals", b"{}"))
    changes.rule_states[("b1", "dose")] = '{"x": 1}'
    changes.points.append((store.next_id("point_outbox"), "m v=1 1"))
    changes.mqtt_out.append((store.next_id("mqtt_outbox"), "t", b"p", 1, True))
    store.apply(changes)
    store.close()

    again = Store(tmp_path / "s.sqlite")
    assert [row.topic for row in again.inbound_after(0)] == ["ward/w1/bed/b1/vitals"]
    assert again.rule_states() == {"b1": {"dose": {"x": 1}}}
    assert again.outbox(0, 10) == [(1, "m v=1 1")]
    [out] = again.mqtt_pending()
    assert (out.topic, out.payload, out.qos, out.retain) == ("t", b"p", 1, True)
    # Ids continue after a reopen: nothing is ever overwritten.
    assert again.next_id("inbound") == seq + 1

    checkpoint = Changes(processed_seq=seq)
    checkpoint.points_done.append(1)
    checkpoint.mqtt_done.append(out.id)
    again.apply(checkpoint)
    assert again.processed_seq() == seq
    assert again.inbound_after(0) == [], "a checkpoint forgets the inputs it covers"
    assert again.outbox(0, 10) == []
    assert again.mqtt_pending() == []


def test_a_failing_unit_changes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    changes = Changes()
    changes.points.append((1, "m v=1 1"))
    changes.points.append((1, "m v=2 2"))  # the same id twice: the transaction fails
    with pytest.raises(StoreError):
        store.apply(changes)
    assert store.outbox(0, 10) == []


async def test_callbacks_run_after_the_commit_that_holds_what_was_staged_before(tmp_path: Path) -> None:
    writer = StoreWriter(Store(tmp_path / "s.sqlite"))
    seen: list[int] = []
    async with committing(writer):
        writer.stage().points.append((writer.store.next_id("point_outbox"), "m v=1 1"))
        writer.after_commit(lambda: seen.append(len(writer.store.outbox(0, 10))))
        await writer.flush()
    assert seen == [1]
    assert writer.commits >= 1


async def test_a_failed_commit_is_retried_with_what_came_after(tmp_path: Path) -> None:
    errors: list[str | None] = []
    writer = StoreWriter(Store(tmp_path / "s.sqlite"), on_error=errors.append)
    writer.RETRY_S = 0.01
    real_apply = writer.store.apply
    failures = [StoreError("disk full")]

    def flaky(changes: Changes) -> None:
        if failures:
            raise failures.pop()
        real_apply(changes)

    writer.store.apply = flaky  # type: ignore[method-assign]
    done: list[str] = []
    async with committing(writer):
        writer.stage().points.append((writer.store.next_id("point_outbox"), "m v=1 1"))
        writer.after_commit(lambda: done.append("first"))
        await asyncio.sleep(0)
        writer.stage().points.append((writer.store.next_id("point_outbox"), "m v=2 2"))
        writer.after_commit(lambda: done.append("second"))
        await writer.flush()
    assert done == ["first", "second"], "callbacks wait for their commit, in order"
    assert [line for _, line in writer.store.outbox(0, 10)] == ["m v=1 1", "m v=2 2"]
    assert errors == ["disk full", None]


def test_inbound_numbers_go_on_above_the_checkpoint_once_the_log_is_empty(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    seq = store.next_id("inbound")
    changes = Changes(processed_seq=seq)
    changes.inbound.append((seq, "2026-03-02T20:00:00Z", "mqtt", "t", b"{}"))
    store.apply(changes)
    store.close()
    again = Store(tmp_path / "s.sqlite")
    assert again.inbound_after(0) == []
    # A number at or below the checkpoint would be skipped by the replay after a crash.
    assert again.next_id("inbound") == seq + 1


def test_a_store_of_schema_2_gains_state_positions_and_keeps_its_states(tmp_path: Path) -> None:
    """Schema 3 adds each state's position (the last input it includes): a state written
    before reads as covered by ``processed_seq`` (0), so no replayed input is skipped for it."""
    db = sqlite3.connect(tmp_path / "s.sqlite", isolation_level=None)
    for target in (1, 2):
        db.executescript(f"BEGIN; {MIGRATIONS[target - 1]} PRAGMA user_version={target}; COMMIT;")
    db.execute("INSERT INTO rule_state VALUES ('b1', 'dose', '{\"x\": 1}')")
    db.execute("INSERT INTO meta VALUES ('processed_seq', '7')")
    db.close()

    store = Store(tmp_path / "s.sqlite")
    assert store.rule_states() == {"b1": {"dose": {"x": 1}}}
    assert store.rule_positions() == {}
    later = Changes()
    later.rule_states[("b1", "vitals")] = "{}"
    later.state_seqs[("b1", "vitals")] = 9
    later.rule_states[("b1", "news2")] = "{}"
    later.state_seqs[("b1", "news2")] = 7  # not after processed_seq: nothing to skip
    store.apply(later)
    assert store.rule_positions() == {("b1", "vitals"): 9}
    store.apply(Changes(processed_seq=9))
    assert store.rule_positions() == {}, "a checkpoint at 9 covers it"
    store.close()


def test_a_state_without_its_own_position_stands_at_the_units_checkpoint(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    changes = Changes(processed_seq=4)
    changes.rule_states[("b1", "dose")] = "{}"
    store.apply(changes)
    store.close()
    db = sqlite3.connect(tmp_path / "s.sqlite")
    assert db.execute("SELECT seq FROM rule_state").fetchall() == [(4,)]
    db.close()
