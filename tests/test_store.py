"""The durable store: schema, one transaction per unit of work, group commit, retries."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.links.store import (
    DELIVERY_FLOOR_KEY,
    MIGRATIONS,
    SCHEMA_VERSION,
    Changes,
    DeliveryRow,
    Lane,
    SentNotice,
    Store,
    StoreError,
    StoreWriter,
    WindowWrite,
    entry_json,
    id_runs,
    json_text,
    sql_statements,
)
from tests.helpers import committing


def _store_of_schema(path: Path, version: int) -> sqlite3.Connection:
    """A new store at schema ``version``, as an older wardd left it (autocommit)."""
    db = sqlite3.connect(path, isolation_level=None)
    for target in range(1, version + 1):
        db.executescript(f"BEGIN; {MIGRATIONS[target - 1]} PRAGMA user_version={target}; COMMIT;")
    return db


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


def test_a_store_another_process_migrates_meanwhile_is_not_migrated_twice(tmp_path: Path) -> None:
    """Two processes open one old store at once (``wardd status`` polled beside a daemon
    that starts): the one that read the old version before the other migrated reads it
    again under the write lock and does not apply a step again ("duplicate column name"
    stopped the daemon)."""
    path = tmp_path / "s.sqlite"
    _store_of_schema(path, SCHEMA_VERSION - 1).close()
    reads: list[int] = []

    class Raced(Store):
        def _version(self) -> int:
            version = super()._version()
            reads.append(version)
            if len(reads) == 1:  # the other process takes it to the last version right after
                Store(path).close()
            return version

    Raced(path).close()
    assert reads == [SCHEMA_VERSION - 1, SCHEMA_VERSION, SCHEMA_VERSION]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def _open_store(path: Path, start: Any, outcome: Any) -> None:
    start.wait()
    try:
        Store(path).close()
    except StoreError as exc:
        outcome.put(str(exc))
    else:
        outcome.put(None)


@pytest.mark.integration  # forks processes
def test_processes_opening_a_new_store_at_once_all_open_it(tmp_path: Path) -> None:
    """Six processes open one new store at the same moment, ten times: each opens it
    (before, most failed with "duplicate column name" or "database is locked")."""
    fork = multiprocessing.get_context("fork")
    for n in range(10):
        path, start, outcome = tmp_path / f"s{n}.sqlite", fork.Barrier(6), fork.Queue()
        openers = [fork.Process(target=_open_store, args=(path, start, outcome)) for _ in range(6)]
        for opener in openers:
            opener.start()
        errors = [outcome.get(timeout=30) for _ in openers]
        for opener in openers:
            opener.join(timeout=30)
        assert errors == [None] * 6
        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_migration_runs_statement_by_statement_as_sqlite_splits_them() -> None:
    script = """
    CREATE TABLE t (a TEXT);
    INSERT INTO t VALUES ('x; y');
    CREATE TRIGGER t_copy AFTER INSERT ON t BEGIN INSERT INTO t VALUES (new.a || ';'); END;
    """
    assert [" ".join(s.split()) for s in sql_statements(script)] == [
        "CREATE TABLE t (a TEXT);",
        "INSERT INTO t VALUES ('x; y');",
        "CREATE TRIGGER t_copy AFTER INSERT ON t BEGIN INSERT INTO t VALUES (new.a || ';'); END;",
    ]
    assert all(sqlite3.complete_statement(s) for s in sql_statements("".join(MIGRATIONS)))


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


async def test_work_ready_when_the_writer_wakes_joins_the_unit_it_takes(tmp_path: Path) -> None:
    """The writer lets ready work run once before it takes the unit: an input staged with
    its processing queued (``Pipeline._log``) commits with what that processing stages."""
    writer = StoreWriter(Store(tmp_path / "s.sqlite"))
    async with committing(writer):
        writer.stage().points.append((writer.store.next_id("point_outbox"), "m v=1 1"))
        asyncio.get_running_loop().call_soon(
            lambda: writer.stage().points.append((writer.store.next_id("point_outbox"), "m v=2 2"))
        )
        await writer.flush()
    assert writer.commits == 1
    assert len(writer.store.outbox(0, 10)) == 2
    writer.close()


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
        while not errors:  # the first unit has failed: the second is staged while it waits
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


def _logged(store: Store, n: int, **fields: Any) -> Changes:
    """A unit logging ``n`` inputs (numbered on from the store's next)."""
    first = store.next_id("inbound")
    changes = Changes(**fields)
    changes.inbound += [(first + i, "2026-03-02T20:00:00Z", "mqtt", "t", b"{}") for i in range(n)]
    for _ in range(n - 1):
        store.next_id("inbound")
    return changes


def _log_seqs(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [seq for (seq,) in db.execute("SELECT seq FROM inbound ORDER BY seq")]


def test_a_periodic_checkpoint_leaves_the_inputs_it_covers_to_later_commits_a_few_at_a_time(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path)
    store.apply(_logged(store, 200))  # seqs 1..200
    store.apply(Changes(processed_seq=150, defer_inbound_delete=True))
    assert store.processed_seq() == 150
    assert _log_seqs(path) == list(range(Store.SWEEP_ROWS + 1, 201))  # that commit swept some too
    store.apply(_logged(store, 3))  # seqs 201..203: 64 + 3 more swept
    assert _log_seqs(path)[0] == 2 * Store.SWEEP_ROWS + 3 + 1
    store.apply(Changes(points=[(1, "p x=1 1")]))
    store.apply(Changes(points=[(2, "p x=1 2")]))
    # Never past what the checkpoint covers, and the replay reads only what it does not.
    assert _log_seqs(path) == [*range(151, 204)]
    assert [row.seq for row in store.inbound_after(store.processed_seq())] == [*range(151, 204)]


def test_a_full_checkpoint_empties_what_it_covers_at_once_even_after_a_deferred_one(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path)
    store.apply(_logged(store, 300))
    store.apply(Changes(processed_seq=280, defer_inbound_delete=True))
    full = Changes(processed_seq=290)  # a full checkpoint that failed to commit once ...
    full.absorb(Changes(processed_seq=295, defer_inbound_delete=True))  # ... then took a round's end
    store.apply(full)
    assert _log_seqs(path) == [*range(296, 301)]


def test_inputs_covered_before_a_restart_are_swept_by_the_commits_after_it(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path)
    store.apply(_logged(store, 200))
    store.apply(Changes(processed_seq=200, defer_inbound_delete=True))
    store.close()
    again = Store(path)
    assert again.inbound_after(again.processed_seq()) == []
    assert _log_seqs(path)[0] == Store.SWEEP_ROWS + 1
    for n in range(3):
        again.apply(Changes(points=[(n, "p x=1 1")]))
    assert _log_seqs(path) == []


def test_a_failed_commit_sweeps_nothing_and_the_next_one_sweeps_from_where_it_was(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path)
    store.apply(_logged(store, 200))
    store.apply(Changes(processed_seq=200, defer_inbound_delete=True))
    with pytest.raises(StoreError):
        store.apply(Changes(journal=[("x",) * 5]))  # type: ignore[list-item]
    assert _log_seqs(path)[0] == Store.SWEEP_ROWS + 1
    store.apply(Changes(points=[(1, "p x=1 1")]))
    assert _log_seqs(path)[0] == 2 * Store.SWEEP_ROWS + 1


def test_a_store_of_schema_2_gains_state_positions_and_keeps_its_states(tmp_path: Path) -> None:
    """Schema 3 adds each state's position (the last input it includes): a state written
    before reads as covered by ``processed_seq`` (0), so no replayed input is skipped for it."""
    db = _store_of_schema(tmp_path / "s.sqlite", 2)
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


def _write(window: str, *, clear: bool, keep_from_us: int | None, rows: list[tuple[int, Any]]) -> WindowWrite:
    return WindowWrite("b1", "vitals", window, clear, keep_from_us, lambda: rows)


def test_window_writes_of_one_unit_keep_their_order_for_the_same_window(tmp_path: Path) -> None:
    """A retried unit absorbs the next one, so a window may be written twice in it: the
    later delete must see the earlier rows."""
    store = Store(tmp_path / "s.sqlite")
    changes = Changes()
    changes.windows.append(_write("FEVER", clear=True, keep_from_us=None, rows=[(1, ["a"]), (2, ["b"])]))
    changes.windows.append(_write("HYPOXIA", clear=True, keep_from_us=None, rows=[(1, ["x"])]))
    changes.windows.append(_write("FEVER", clear=False, keep_from_us=2, rows=[(3, ["c"])]))
    store.apply(changes)
    assert store.rule_windows() == {("b1", "vitals"): {"FEVER": [["b"], ["c"]], "HYPOXIA": [["x"]]}}
    store.close()


def test_windows_of_one_unit_are_each_cleared_pruned_and_appended(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    first = Changes()
    for window in ("A", "B", "C"):
        first.windows.append(_write(window, clear=True, keep_from_us=None, rows=[(1, [1]), (2, [2])]))
    store.apply(first)
    second = Changes()
    second.windows.append(_write("A", clear=True, keep_from_us=None, rows=[(5, [5])]))
    second.windows.append(_write("B", clear=False, keep_from_us=2, rows=[(3, [3])]))
    second.windows.append(_write("C", clear=False, keep_from_us=None, rows=[(2, [22]), (4, [4])]))
    store.apply(second)
    assert store.rule_windows() == {
        ("b1", "vitals"): {"A": [[5]], "B": [[2], [3]], "C": [[1], [2], [22], [4]]}
    }
    store.close()


def test_a_window_write_is_one_row_and_a_cut_inside_a_run_hides_only_its_older_entries(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.sqlite")
    for rows in ([(1, [1]), (2, [2]), (3, [3])], [(4, [4]), (5, [5])], [(6, [6])]):
        changes = Changes()
        changes.windows.append(_write("A", clear=False, keep_from_us=None, rows=rows))
        store.apply(changes)
    assert store._db.execute("SELECT COUNT(*) FROM rule_window").fetchone() == (3,)

    def cut(at_us: int) -> list[Any]:
        changes = Changes()
        changes.windows.append(_write("A", clear=False, keep_from_us=at_us, rows=[]))
        store.apply(changes)
        return store.rule_windows()[("b1", "vitals")]["A"]

    # Inside the first run: the run stays, its entries before the cut do not count.
    assert cut(2) == [[2], [3], [4], [5], [6]]
    assert cut(3) == [[3], [4], [5], [6]]
    # A cut the daemon's clock stepped back to never brings entries back.
    assert cut(2) == [[3], [4], [5], [6]]
    # At the second run's start: the first run, wholly older, goes.
    assert cut(4) == [[4], [5], [6]]
    assert store._db.execute("SELECT COUNT(*) FROM rule_window").fetchone() == (2,)
    assert cut(5) == [[5], [6]]
    # Entries of one time keep the order they were written in, across runs.
    changes = Changes()
    changes.windows.append(_write("A", clear=False, keep_from_us=None, rows=[(6, ["6b"])]))
    store.apply(changes)
    assert store.rule_windows()[("b1", "vitals")]["A"] == [[5], [6], ["6b"]]
    store.close()


def test_a_store_of_schema_5_keeps_its_window_entries_as_runs_of_one(tmp_path: Path) -> None:
    db = _store_of_schema(tmp_path / "s.sqlite", 5)
    db.executemany(
        "INSERT INTO rule_window VALUES (?, ?, ?, ?, ?)",
        [
            ("b1", "vitals", "FEVER", 2, '["2026-03-02T20:00:02Z","normal",36.9]'),
            ("b1", "vitals", "FEVER", 1, '["2026-03-02T20:00:01Z","abnormal",38.2,"temp_c"]'),
            ("b1", "news2", "inputs", 1, '{"time":"2026-03-02T20:00:01Z","values":{"temp_c":38.2}}'),
        ],
    )
    db.close()

    store = Store(tmp_path / "s.sqlite")
    assert store.rule_windows() == {
        ("b1", "vitals"): {
            "FEVER": [
                ["2026-03-02T20:00:01Z", "abnormal", 38.2, "temp_c"],
                ["2026-03-02T20:00:02Z", "normal", 36.9],
            ]
        },
        ("b1", "news2"): {"inputs": [{"time": "2026-03-02T20:00:01Z", "values": {"temp_c": 38.2}}]},
    }
    # Pruned as runs written since: the old rows' times are their runs' bounds.
    changes = Changes()
    changes.windows.append(WindowWrite("b1", "vitals", "FEVER", False, 2, lambda: [(3, ["c"])]))
    store.apply(changes)
    assert store.rule_windows()[("b1", "vitals")]["FEVER"] == [
        ["2026-03-02T20:00:02Z", "normal", 36.9],
        ["c"],
    ]
    store.close()


JournalLine = tuple[str, str, str, str | None, str | None, str]


def _notice_line(delivery: int, receiver: str, alert_ids: list[str], bed: str | None) -> JournalLine:
    """A delivery's journal line, as ``daemon.delivery`` writes it."""
    entry = {"what": "notice", "receiver": receiver, "delivery": delivery, "alerts": alert_ids}
    return ("2026-03-02T20:00:00Z", "wardd", "notice", alert_ids[0], bed, json_text(entry))


def test_a_delivery_is_found_by_its_number_through_its_index(tmp_path: Path) -> None:
    """A receipt names a delivery by number: its notice line is found by the
    ``journal_delivery`` index (the statement read is the one planned), never mistaken for
    another line that holds the same number."""
    store = Store(tmp_path / "s.sqlite")
    changes = Changes()
    changes.journal += [
        _notice_line(1, "nurse", ["w1-b1-1"], "b1"),
        _notice_line(2, "phone", ["w1-b1-1", "w1-b2-2"], None),
        # A delivery attempt's line carries the number too, and is not a notice.
        (
            "2026-03-02T20:00:01Z",
            "wardd",
            "delivery",
            "w1-b1-1",
            "b1",
            json_text({"delivery": 3, "receiver": "x"}),
        ),
    ]
    store.apply(changes)
    read: list[str] = []
    store._db.set_trace_callback(read.append)
    assert store.sent_notice(1) == SentNotice("nurse", ("w1-b1-1",), "b1")
    store._db.set_trace_callback(None)
    assert store.sent_notice(2) == SentNotice("phone", ("w1-b1-1", "w1-b2-2"), None)
    assert store.sent_notice(3) is None
    assert store.sent_notice(4) is None
    # A number journaled twice (an earlier wardd's, renumbering after a restart): the newest.
    again = Changes()
    again.journal.append(_notice_line(1, "nurse", ["w1-b2-9"], "b2"))
    store.apply(again)
    assert store.sent_notice(1) == SentNotice("nurse", ("w1-b2-9",), "b2")
    [statement] = read
    plan = store._db.execute("EXPLAIN QUERY PLAN " + statement.replace("= 1", "= ?"), (1,)).fetchall()
    # SEARCH, not SCAN: the index gives the one line, not every notice to compare.
    assert plan[0][3].startswith("SEARCH journal USING INDEX journal_delivery"), plan
    store.close()


def test_delivery_numbers_go_on_above_every_one_sent_once_the_outbox_is_empty(tmp_path: Path) -> None:
    """A receiver's receipts name its deliveries by number: once every delivery was taken
    (the outbox empty), a restarted daemon still numbers on from the last one sent, not 1."""
    store = Store(tmp_path / "s.sqlite")
    first, second = store.next_id("delivery_outbox"), store.next_id("delivery_outbox")
    changes = Changes()
    changes.deliveries += [
        DeliveryRow(n, "nurse", "{}", 0, "2026-03-02T20:00:00Z", False) for n in (first, second)
    ]
    changes.journal += [_notice_line(n, "nurse", ["w1-b1-1"], "b1") for n in (first, second)]
    store.apply(changes)
    done = Changes()
    done.deliveries_done += [first, second]
    store.apply(done)
    store.close()
    again = Store(tmp_path / "s.sqlite")
    assert again.deliveries_pending() == []
    assert again.next_id("delivery_outbox") == second + 1
    again.close()


def test_workers_number_their_deliveries_in_lanes_above_the_floor_a_move_left(tmp_path: Path) -> None:
    """Each worker numbers its deliveries in its own store: in its lane (``index`` more than
    a multiple of the count), above its own numbers and the floor ``wardd repartition``
    left, so that two workers never give one number."""
    given: list[list[int]] = []
    for index in range(3):
        path = tmp_path / f"s{index}.sqlite"
        store = Store(path, lane=Lane(index, 3))
        floor = Changes()
        floor.meta[DELIVERY_FLOOR_KEY] = 40
        floor.journal.append(_notice_line(41, "nurse", ["w1-b1-1"], "b1"))  # this store's own, higher
        store.apply(floor)
        store.close()
        store = Store(path, lane=Lane(index, 3))
        given.append([store.next_id("delivery_outbox") for _ in range(4)])
        store.close()
    assert given == [[42, 45, 48, 51], [43, 46, 49, 52], [44, 47, 50, 53]]
    one = Store(tmp_path / "one.sqlite")  # one worker: every number
    assert [one.next_id("delivery_outbox") for _ in range(2)] == [1, 2]
    one.close()


def test_a_store_of_schema_6_finds_the_deliveries_it_journaled_before(tmp_path: Path) -> None:
    db = _store_of_schema(tmp_path / "s.sqlite", 6)
    db.executemany(
        "INSERT INTO journal (at, who, what, alert_id, bed, entry) VALUES (?, ?, ?, ?, ?, ?)",
        [_notice_line(n, "nurse", [f"w1-b1-{n}"], "b1") for n in (41, 42)],
    )
    db.close()
    store = Store(tmp_path / "s.sqlite")
    assert store.sent_notice(41) == SentNotice("nurse", ("w1-b1-41",), "b1")
    assert store.next_id("delivery_outbox") == 43
    store.close()


def test_sent_points_are_forgotten_by_runs_of_ids(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    changes = Changes()
    changes.points += [(store.next_id("point_outbox"), f"m v={i} {i}") for i in range(1, 11)]
    store.apply(changes)
    done = Changes()
    done.points_done += [8, 1, 2, 3, 5, 7, 3]
    done.dead_letters.append((10, "2026-03-02T20:00:00Z", "m v=10 10", "refused: bad"))
    store.apply(done)
    assert [i for i, _ in store.outbox(0, 20)] == [4, 6, 9]
    assert [line for _, line, _ in store.dead_letters()] == ["m v=10 10"]
    store.close()


def test_id_runs() -> None:
    assert id_runs([]) == []
    assert id_runs([7]) == [(7, 7)]
    assert id_runs([5, 3, 4, 9, 10, 1, 1]) == [(1, 1), (3, 5), (9, 10)]


@pytest.mark.parametrize(
    "entry",
    [
        ["2026-03-02T20:00:00.123000Z", "abnormal", 39.1, "temp_c"],
        ["2026-03-02T20:00:00Z", None, 0.0],
        {"time": "2026-03-02T20:00:00Z", "values": {"spo2_pct": 97.0, "hr_per_min": 1e16}, "scored": False},
        {"note": 'fièvre\u2028 "quoted" \\ \x00', "n": -(2**63), "f": 5e-324, "t": True},
        [float("nan"), float("inf"), -float("inf")],
        [1.0000000000000002, 0.1, 100.0, 123456789012345678],
    ],
)
def test_window_entries_read_back_as_the_store_wrote_them_before(entry: Any) -> None:
    fast, before = (
        json.loads(entry_json(entry), parse_constant=str),
        json.loads(json_text(entry), parse_constant=str),
    )
    assert fast == before
    assert [type(x) for x in _leaves(fast)] == [type(x) for x in _leaves(before)]


def _leaves(data: Any) -> list[Any]:
    if isinstance(data, dict):
        return [leaf for key in sorted(data) for leaf in _leaves(data[key])]
    if isinstance(data, list):
        return [leaf for item in data for leaf in _leaves(item)]
    return [data]


async def test_a_commit_close_behind_the_last_waits_out_the_gap_and_takes_what_came_meanwhile(
    tmp_path: Path,
) -> None:
    writer = StoreWriter(Store(tmp_path / "s.sqlite"), commit_gap_s=1.0)
    starts: list[float] = []
    real_apply = writer.store.apply

    def timed(changes: Changes) -> None:
        starts.append(time.perf_counter())
        real_apply(changes)

    writer.store.apply = timed  # type: ignore[method-assign]
    async with committing(writer):
        staged = time.perf_counter()
        writer.stage().points.append((writer.store.next_id("point_outbox"), "m v=0 0"))
        await writer.flush()
        # The first commit after a quiet spell does not wait for the gap.
        assert writer.commits == 1
        assert starts[0] - staged < 1.0
        for k in range(1, 6):
            writer.stage().points.append((writer.store.next_id("point_outbox"), f"m v={k} {k}"))
            await asyncio.sleep(0.01)
        await writer.flush()
    # The five units staged inside the gap went in one commit, started after it.
    assert writer.commits == 2
    assert starts[1] - starts[0] >= 1.0
    assert len(writer.store.outbox(0, 10)) == 6
    writer.close()


async def test_a_unit_someone_waits_for_does_not_wait_out_the_gap(tmp_path: Path) -> None:
    writer = StoreWriter(Store(tmp_path / "s.sqlite"), commit_gap_s=5.0)
    done: list[str] = []
    async with committing(writer):
        writer.stage().points.append((writer.store.next_id("point_outbox"), "m v=0 0"))
        await writer.flush()
        # Bookkeeping inside the gap waits; an alert's message staged meanwhile ends the
        # wait, and the bookkeeping goes in the same commit.
        writer.stage().points.append((writer.store.next_id("point_outbox"), "m v=1 1"))
        writer.after_commit(lambda: done.append("ack"), urgent=False)
        await asyncio.sleep(0.2)
        assert done == []
        staged = time.perf_counter()
        writer.after_commit(lambda: done.append("alert"))
        await asyncio.wait_for(writer.flush(), 2.0)
        assert time.perf_counter() - staged < 2.0
    assert done == ["ack", "alert"]
    assert writer.commits == 2
    assert len(writer.store.outbox(0, 10)) == 2
    writer.close()
