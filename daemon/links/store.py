"""The daemon's one durable store: SQLite in WAL mode, for everything that must survive a crash.

One file (``<state_dir>/wardd.sqlite`` by default) holds:

==================  ==============================================================
table               what
==================  ==============================================================
``meta``            key/value: the last inbound seq whose effects are checkpointed,
                    the next alert number, the recent-message digests (dedup)
``inbound``         every input (MQTT message, pump event) logged before it is
                    acknowledged to its sender; replayed after a crash from the
                    checkpoint on, deleted once a checkpoint covers it
``rule_state``      one row per (bed, rule): written only for states that changed,
                    with the inbound seq its effects reach (``seq``: a checkpoint
                    writes its states in slices, each at its own position)
``alerts``          one row per alert, its latest form; ``open`` indexes the live ones
``journal``         the audit journal: every alert transition and service event
                    (a notice's line, found by its delivery number, answers a
                    receiver's receipt for it: ``sent_notice``)
``point_outbox``    line-protocol points waiting for the time-series database
``dead_letters``    points the database refused for good, with its reason
``mqtt_outbox``     outgoing MQTT messages (alerts, retained states) until the broker
                    confirms them
``delivery_outbox`` notifications to receivers (webhook, Apprise) until one takes them
``route_state``     what the router has told whom, per alert (``daemon.delivery``)
==================  ==============================================================

Writes go through ``Changes``, a unit of work committed in one transaction: what a
batch of inputs changed (rule states, alert rows, journal lines, points, outgoing
messages) becomes durable together, so the cost of one commit grows with what
changed, never with the number of beds or open alerts. ``StoreWriter`` group-commits
``Changes`` on one worker thread, off the event loop, and runs callbacks (acknowledge
to the broker, publish, send points) only after the commit.

Schema changes are migrations: ``MIGRATIONS[i]`` takes a database from version ``i``
to ``i + 1`` (``PRAGMA user_version``); a database newer than this code is refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import msgspec

from daemon.errors import WarddError

log = logging.getLogger(__name__)

Synchronous = Literal["full", "normal"]

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
    CREATE TABLE inbound (
        seq INTEGER PRIMARY KEY,
        received_at TEXT NOT NULL,
        source TEXT NOT NULL,          -- 'mqtt' (topic + raw payload) or 'event' (capture JSON)
        topic TEXT NOT NULL,
        payload BLOB NOT NULL
    );
    CREATE TABLE rule_state (
        bed TEXT NOT NULL,
        rule TEXT NOT NULL,
        data TEXT NOT NULL,            -- the rule's dump() as JSON
        PRIMARY KEY (bed, rule)
    ) WITHOUT ROWID;
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        ward TEXT NOT NULL,
        bed TEXT NOT NULL,
        open INTEGER NOT NULL,
        updated TEXT NOT NULL,
        data TEXT NOT NULL             -- Alert.dump() as JSON
    );
    CREATE INDEX alerts_open ON alerts (open) WHERE open = 1;
    CREATE TABLE journal (
        seq INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        who TEXT NOT NULL,
        what TEXT NOT NULL,
        alert_id TEXT,
        bed TEXT,
        entry TEXT NOT NULL            -- the whole entry as JSON
    );
    CREATE INDEX journal_bed ON journal (bed, seq);
    CREATE TABLE point_outbox (id INTEGER PRIMARY KEY, line TEXT NOT NULL);
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        line TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE TABLE mqtt_outbox (
        id INTEGER PRIMARY KEY,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL
    );
    """,
    # 2: late-data windows stored entry by entry (daemon.rules.Windowed), written as
    # they change instead of inside each rule state at every checkpoint.
    """
    CREATE TABLE rule_window (
        bed TEXT NOT NULL,
        rule TEXT NOT NULL,
        window TEXT NOT NULL,
        time_us INTEGER NOT NULL,      -- the entry's time, microseconds since the epoch
        entry TEXT NOT NULL            -- the rule's dump_entry() as JSON
    );
    CREATE INDEX rule_window_key ON rule_window (bed, rule, window, time_us);
    """,
    # 3: each state says which inputs it includes, so that a checkpoint can be committed
    # in slices between inputs (0: no more than ``processed_seq``).
    """
    ALTER TABLE rule_state ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: alert notifications to people (daemon.delivery): each waits in delivery_outbox,
    # in order per receiver, until delivered; route_state is the router's memory.
    """
    CREATE TABLE delivery_outbox (
        id INTEGER PRIMARY KEY,
        receiver TEXT NOT NULL,
        notice TEXT NOT NULL,          -- the notification as JSON (the webhook's body)
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at TEXT NOT NULL,         -- daemon time of the next attempt
        failed INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX delivery_outbox_receiver ON delivery_outbox (receiver, id);
    CREATE TABLE route_state (key TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
    """,
    # 5: beds and patients changed at run time (daemon.admissions): one row per bed that
    # differs from the config file, written with the change's journal line.
    """
    CREATE TABLE admissions (
        bed TEXT PRIMARY KEY,
        ward TEXT NOT NULL,
        data TEXT NOT NULL             -- daemon.admissions.Occupant as JSON
    ) WITHOUT ROWID;
    """,
    # 6: a late-data window's rows are runs of entries, one per window a checkpoint
    # appends to, instead of one row per entry (about eight rows per vitals sample).
    # Each row already there becomes a run of one.
    """
    ALTER TABLE rule_window RENAME COLUMN entry TO entries;
    ALTER TABLE rule_window ADD COLUMN last_us INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE rule_window ADD COLUMN from_us INTEGER;
    UPDATE rule_window SET entries = '[[' || time_us || ',' || entries || ']]', last_us = time_us;
    """,
    # 7: a notice's journal line found by its delivery number (daemon.delivery): a
    # receipt for a delivery made before a restart is answered, and numbering goes on
    # above every number sent, not above the outbox's rows alone (emptied once delivered,
    # it let a restarted daemon number its deliveries from 1 again).
    """
    CREATE INDEX journal_delivery ON journal (json_extract(entry, '$.delivery')) WHERE what = 'notice';
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


BUSY_WAIT_S = 5.0
"""How long the store waits for a lock another connection holds (``busy_timeout``)."""


def _write_ahead_log(db: sqlite3.Connection) -> None:
    """Put ``db`` in WAL mode. Switching a new database takes a lock for which SQLite does
    not wait as ``busy_timeout`` says: another process opening the same new store at that
    moment (``wardd status`` beside a daemon that starts) got "database is locked" at
    once. So it is asked again for as long (``BUSY_WAIT_S``)."""
    deadline = time.monotonic() + BUSY_WAIT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
        else:
            return


def sql_statements(script: str) -> list[str]:
    """The statements of ``script`` one by one, for ``execute`` inside a transaction that
    ``executescript`` would commit first. Split where SQLite says a statement is complete,
    so a ``;`` inside a string or a trigger's body stays where it is."""
    statements, pending = [], ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\n;"):
                statements.append(pending)
            pending = ""
    return statements


class StoreError(WarddError):
    """The store cannot be opened or written (disk, permissions, a newer schema)."""


@dataclass(frozen=True, slots=True)
class InboundRow:
    """One logged input."""

    seq: int
    received_at: str
    source: str
    topic: str
    payload: bytes
    arrived_s: float = 0.0
    """When it was logged, on ``time.monotonic``; 0 for an input read back from the store."""


@dataclass(frozen=True, slots=True)
class OutgoingRow:
    """One queued MQTT message."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One queued notification for one receiver."""

    id: int
    receiver: str
    notice: str
    attempts: int
    next_at: str
    failed: bool


@dataclass(frozen=True, slots=True)
class SentNotice:
    """What a delivery's notice told its receiver, from its journal line (``Store.sent_notice``)."""

    receiver: str
    alert_ids: tuple[str, ...]
    bed: str | None


# The expression of the ``journal_delivery`` index, spelt as it is there: SQLite uses an
# index on an expression only for that same expression (and a partial index only under
# its condition, ``what = 'notice'``).
_DELIVERY = "json_extract(entry, '$.delivery')"

DELIVERY_FLOOR_KEY = "delivery.floor"
"""In ``meta``: the highest delivery number any worker had given when ``wardd repartition``
dealt the stores; numbering goes on above it."""


@dataclass(frozen=True, slots=True)
class Lane:
    """A worker's share of the delivery numbers: those ``index`` more than a multiple of
    ``count``. The workers of one daemon each number their own deliveries, in their own
    stores; their lanes keep them from giving the same number (a receiver may drop a
    repeat by it)."""

    index: int
    count: int

    def first_above(self, number: int) -> int:
        """The lowest number of this lane above ``number``."""
        first = number + 1
        return first + (self.index - first) % self.count


ONE_LANE = Lane(0, 1)
"""Every number: a daemon of one worker."""


def last_delivery(db: sqlite3.Connection) -> int:
    """The highest delivery number a store holds: queued, or journaled with its notice."""
    queued = db.execute("SELECT MAX(id) FROM delivery_outbox").fetchone()[0]
    sent = db.execute(f"SELECT MAX({_DELIVERY}) FROM journal WHERE what = 'notice'").fetchone()[0]  # noqa: S608 -- fixed text
    return max(int(queued or 0), int(sent or 0))


@dataclass(frozen=True, slots=True)
class AlertRow:
    """An alert's latest form, as the alert engine dumped it."""

    id: str
    ward: str
    bed: str
    open: bool
    updated: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class WindowWrite:
    """Rows of one late-data window to change: delete all (``clear``) or those older
    than ``keep_from_us``, then insert what ``rows`` gives (``(time_us, entry)``; called
    on the writer's thread)."""

    bed: str
    rule: str
    window: str
    clear: bool
    keep_from_us: int | None
    rows: Callable[[], list[tuple[int, Any]]]


@dataclass
class Changes:
    """One unit of work: everything here is committed in one transaction, or nothing."""

    inbound: list[tuple[int, str, str, str, bytes]] = field(default_factory=list)
    processed_seq: int | None = None
    defer_inbound_delete: bool = False
    """The logged inputs ``processed_seq`` covers are deleted a few at each later commit
    (``Store.SWEEP_ROWS``) instead of all in this one: a periodic checkpoint's (deleting
    the 5,000 inputs of 5 s at 1,000 msg/s held the commits queued behind it 6 to 12 ms)."""
    rule_states: dict[tuple[str, str], str | Callable[[], str]] = field(default_factory=dict)
    """JSON text, or a function that gives it (called on the writer's thread)."""
    state_seqs: dict[tuple[str, str], int] = field(default_factory=dict)
    """The last inbound seq each of ``rule_states`` includes (default: ``processed_seq``, or 0)."""
    windows: list[WindowWrite] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    """Values as JSON-compatible data, or a function that gives them (called on the
    writer's thread)."""
    alerts: dict[str, tuple[str, str, bool, str, str]] = field(default_factory=dict)
    journal: list[tuple[str, str, str, str | None, str | None, str]] = field(default_factory=list)
    points: list[tuple[int, str]] = field(default_factory=list)
    points_done: list[int] = field(default_factory=list)
    dead_letters: list[tuple[int, str, str, str]] = field(default_factory=list)
    mqtt_out: list[tuple[int, str, bytes, int, bool]] = field(default_factory=list)
    mqtt_done: list[int] = field(default_factory=list)
    deliveries: list[DeliveryRow] = field(default_factory=list)
    """New rows, and rows whose attempts changed (replaced whole)."""
    deliveries_done: list[int] = field(default_factory=list)
    route_state: dict[str, str | None] = field(default_factory=dict)
    """The router's rows by key (``None``: delete)."""
    admissions: dict[str, tuple[str, str] | None] = field(default_factory=dict)
    """Admission rows by bed: ``(ward, data)``, or ``None`` to delete."""
    dropped_beds: list[str] = field(default_factory=list)
    """Beds whose rule states and windows are deleted (a discharge, a transfer's old bed),
    before this unit's ``rule_states`` are written."""

    def __bool__(self) -> bool:
        return bool(
            self.inbound
            or self.processed_seq is not None
            or self.rule_states
            or self.windows
            or self.meta
            or self.alerts
            or self.journal
            or self.points
            or self.points_done
            or self.dead_letters
            or self.mqtt_out
            or self.mqtt_done
            or self.deliveries
            or self.deliveries_done
            or self.route_state
            or self.admissions
            or self.dropped_beds
        )

    def absorb(self, later: Changes) -> None:
        """Fold ``later`` into this unit (after a failed commit: nothing of either is lost)."""
        self.inbound += later.inbound
        if later.dropped_beds:
            # A bed dropped later loses the states staged for it earlier.
            gone = set(later.dropped_beds)
            self.rule_states = {k: v for k, v in self.rule_states.items() if k[0] not in gone}
            self.windows = [w for w in self.windows if w.bed not in gone]
        if later.processed_seq is not None:
            # A unit that deletes all it covers at once still does, absorbed or absorbing.
            deferred = later.defer_inbound_delete and (
                self.processed_seq is None or self.defer_inbound_delete
            )
            self.processed_seq = later.processed_seq
            self.defer_inbound_delete = deferred
        self.rule_states.update(later.rule_states)
        self.state_seqs.update(later.state_seqs)
        self.windows += later.windows
        self.meta.update(later.meta)
        self.alerts.update(later.alerts)
        self.journal += later.journal
        self.points += later.points
        self.points_done += later.points_done
        self.dead_letters += later.dead_letters
        self.mqtt_out += later.mqtt_out
        self.mqtt_done += later.mqtt_done
        self.deliveries += later.deliveries
        self.deliveries_done += later.deliveries_done
        self.route_state.update(later.route_state)
        self.admissions.update(later.admissions)
        self.dropped_beds += later.dropped_beds


class Store:
    """The SQLite database. Not thread-safe: use it from one thread (``StoreWriter``'s)."""

    SWEEP_ROWS = 64
    """Logged inputs that a checkpoint has covered (``Changes.defer_inbound_delete``) deleted
    by each commit, besides as many as it logs: the log never grows faster than it is swept."""

    def __init__(self, path: Path, *, synchronous: Synchronous = "full", lane: Lane = ONE_LANE) -> None:
        """``lane``: this store's share of the delivery numbers, a worker's among the workers."""
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute(f"PRAGMA busy_timeout={round(BUSY_WAIT_S * 1000)}")
            _write_ahead_log(self._db)
            # FULL: a commit survives a power cut; NORMAL: it survives a crash of the
            # daemon (kill -9) but a power cut may lose the last commits.
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"state store {path}: {exc}") from exc
        covered = self.processed_seq()
        self._next_ids = {
            # After a checkpoint has emptied the log, numbering goes on above the checkpoint:
            # a lower number would read as already processed.
            "inbound": max(self._max("inbound", "seq"), covered) + 1,
            "point_outbox": max(self._max("point_outbox", "id"), self._max("dead_letters", "id")) + 1,
            "mqtt_outbox": self._max("mqtt_outbox", "id") + 1,
            # A number a receiver was given is never given again (its receipts and its
            # repeats name it): above every one this store gave, and every one the other
            # workers had given when the stores were last dealt (``wardd repartition``).
            "delivery_outbox": lane.first_above(
                max(last_delivery(self._db), int(self.meta(DELIVERY_FLOOR_KEY, 0)))
            ),
        }
        self._steps = {"delivery_outbox": lane.count}
        # The logged inputs a checkpoint covers, and those of them already deleted: the
        # rest go a few per commit (``Changes.defer_inbound_delete``).
        self._covered_seq = covered
        oldest = self._db.execute("SELECT min(seq) FROM inbound").fetchone()[0]
        self._swept_seq = self._covered_seq if oldest is None else min(int(oldest) - 1, self._covered_seq)

    def _migrate(self) -> None:
        db = self._db
        while self._version() < SCHEMA_VERSION:
            # The version read again under the write lock: another process opening the same
            # store (``wardd status`` polled beside a daemon that starts) may have taken it
            # a step further meanwhile, and a step applied twice fails ("duplicate column
            # name"), which stopped the daemon.
            db.execute("BEGIN IMMEDIATE")
            try:
                target = self._version() + 1
                if target <= SCHEMA_VERSION:
                    for statement in sql_statements(MIGRATIONS[target - 1]):
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version={target}")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            if target <= SCHEMA_VERSION:
                log.info("state store %s migrated to schema version %d", self.path, target)

    def _version(self) -> int:
        """The schema version; ``StoreError`` if it is newer than this code's."""
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"state store {self.path} has schema version {version}, newer than this wardd "
                f"({SCHEMA_VERSION}); upgrade wardd or point it at another state folder"
            )
        return version

    def _max(self, table: str, column: str) -> int:
        row = self._db.execute(f"SELECT MAX({column}) FROM {table}").fetchone()  # noqa: S608 -- fixed names
        return int(row[0] or 0)

    def next_id(self, table: Literal["inbound", "point_outbox", "mqtt_outbox", "delivery_outbox"]) -> int:
        """A fresh id for a row of ``table`` (ids are assigned here, so staging needs no round trip)."""
        value = self._next_ids[table]
        self._next_ids[table] = value + self._steps.get(table, 1)
        return value

    def close(self) -> None:
        """Close the database (a checkpoint of the WAL happens here)."""
        self._db.close()

    # --- reads ---------------------------------------------------------------------------

    def meta(self, key: str, default: Any = None) -> Any:
        """One value of ``meta`` (JSON-decoded)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def processed_seq(self) -> int:
        """The last inbound seq whose effects the rule states include."""
        return int(self.meta("processed_seq", 0))

    def inbound_after(self, seq: int) -> list[InboundRow]:
        """Logged inputs not yet covered by a checkpoint, oldest first."""
        rows = self._db.execute(
            "SELECT seq, received_at, source, topic, payload FROM inbound WHERE seq > ? ORDER BY seq", (seq,)
        )
        return [InboundRow(s, at, source, topic, bytes(payload)) for s, at, source, topic, payload in rows]

    def rule_states(self) -> dict[str, dict[str, Any]]:
        """``{bed: {rule: data}}`` as last checkpointed."""
        out: dict[str, dict[str, Any]] = {}
        for bed, rule, data in self._db.execute("SELECT bed, rule, data FROM rule_state"):
            out.setdefault(bed, {})[rule] = json.loads(data)
        return out

    def rule_positions(self) -> dict[tuple[str, str], int]:
        """``{(bed, rule): seq}`` of the states that include inputs after ``processed_seq``
        (written by a checkpoint that a crash interrupted): the replay skips those inputs
        for them."""
        rows = self._db.execute(
            "SELECT bed, rule, seq FROM rule_state WHERE seq > ?", (self.processed_seq(),)
        )
        return {(bed, rule): int(seq) for bed, rule, seq in rows}

    def rule_windows(self) -> dict[tuple[str, str], dict[str, list[Any]]]:
        """``{(bed, rule): {window: [entry, ...]}}``, each window in time order (ties: as written)."""
        out: dict[tuple[str, str], dict[str, list[Any]]] = {}
        rows = self._db.execute(
            "SELECT bed, rule, window, entries, from_us FROM rule_window"
            " ORDER BY bed, rule, window, time_us, rowid"
        )
        for bed, rule, window, entries, from_us in rows:
            kept = out.setdefault((bed, rule), {}).setdefault(window, [])
            if from_us is None:
                kept.extend(entry for _, entry in json.loads(entries))
            else:
                kept.extend(entry for time_us, entry in json.loads(entries) if time_us >= from_us)
        return out

    def alerts(self, *, open_only: bool = True, bed: str | None = None) -> list[AlertRow]:
        """Alert rows, oldest update first."""
        sql = "SELECT id, ward, bed, open, updated, data FROM alerts WHERE 1=1"
        args: list[Any] = []
        if open_only:
            sql += " AND open = 1"
        if bed is not None:
            sql += " AND bed = ?"
            args.append(bed)
        rows = self._db.execute(sql + " ORDER BY updated, id", args)
        return [AlertRow(i, w, b, bool(o), u, json.loads(d)) for i, w, b, o, u, d in rows]

    def journal(self, *, bed: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Audit journal entries, oldest first (the last ``limit`` of them)."""
        sql = "SELECT entry FROM journal"
        args: list[Any] = []
        if bed is not None:
            sql += " WHERE bed = ?"
            args.append(bed)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        entries = [json.loads(entry) for (entry,) in self._db.execute(sql, args)]
        entries.reverse()
        return entries

    def journal_lines(
        self,
        bed: str,
        *,
        limit: int,
        before_seq: int | None = None,
        conditions: tuple[str, ...] = (),
    ) -> list[tuple[int, dict[str, Any]]]:
        """``(seq, entry)`` of one bed's journal, newest first: at most ``limit`` lines, those
        older than ``before_seq`` when given, of alerts with one of ``conditions`` when given.

        Bounded for a page: the ``journal_bed`` index gives the bed's lines newest first, so
        the cost grows with ``limit`` (and the lines skipped by ``conditions``), not with the
        journal's size.
        """
        sql = "SELECT seq, entry FROM journal WHERE bed = ?"
        args: list[Any] = [bed]
        if before_seq is not None:
            sql += " AND seq < ?"
            args.append(before_seq)
        if conditions:
            sql += f" AND json_extract(entry, '$.alert.condition') IN ({', '.join('?' * len(conditions))})"
            args.extend(conditions)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        return [(int(seq), json.loads(entry)) for seq, entry in self._db.execute(sql, args)]

    def outbox(self, after_id: int, limit: int) -> list[tuple[int, str]]:
        """Points waiting for the database, oldest first, with ids above ``after_id``."""
        rows = self._db.execute(
            "SELECT id, line FROM point_outbox WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        # id is the rowid and line is TEXT (NOT NULL): SQLite gives int and str already.
        return cast(list[tuple[int, str]], rows.fetchall())

    def outbox_stats(self) -> tuple[int, int]:
        """``(points, bytes)`` waiting in the point outbox."""
        count, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(line)), 0) FROM point_outbox"
        ).fetchone()
        return int(count), int(size)

    def dead_letters(self) -> list[tuple[str, str, str]]:
        """``(at, line, reason)`` of every point the database refused for good."""
        return [
            (a, ln, r)
            for a, ln, r in self._db.execute("SELECT at, line, reason FROM dead_letters ORDER BY id")
        ]

    def mqtt_pending(self) -> list[OutgoingRow]:
        """Outgoing messages the broker has not confirmed, in the order they were queued."""
        rows = self._db.execute("SELECT id, topic, payload, qos, retain FROM mqtt_outbox ORDER BY id")
        return [OutgoingRow(i, t, bytes(p), q, bool(r)) for i, t, p, q, r in rows]

    def deliveries_pending(self) -> list[DeliveryRow]:
        """Notifications no receiver has taken yet, in the order they were queued."""
        rows = self._db.execute(
            "SELECT id, receiver, notice, attempts, next_at, failed FROM delivery_outbox ORDER BY id"
        )
        return [DeliveryRow(i, r, n, int(a), t, bool(f)) for i, r, n, a, t, f in rows]

    def sent_notice(self, delivery: int) -> SentNotice | None:
        """The notice that went out as delivery ``delivery``, or ``None``: looked up by the
        ``journal_delivery`` index, so the cost does not grow with the journal.

        The newest, should the journal hold the number twice: a store of an earlier wardd
        numbered from 1 again after a restart that found its outbox empty, and workers
        gathered into one (``wardd repartition``) each numbered their own. The receipt
        that names it is the newest one's more likely than an older one's."""
        row = self._db.execute(
            f"SELECT entry, bed FROM journal WHERE what = 'notice' AND {_DELIVERY} = ?"  # noqa: S608 -- fixed text
            " ORDER BY seq DESC LIMIT 1",
            (delivery,),
        ).fetchone()
        if row is None:
            return None
        entry = json.loads(row[0])
        return SentNotice(str(entry["receiver"]), tuple(str(i) for i in entry["alerts"]), row[1])

    def route_states(self) -> dict[str, str]:
        """The router's rows, by key."""
        return dict(self._db.execute("SELECT key, data FROM route_state"))

    def admissions(self) -> list[dict[str, Any]]:
        """The admission rows (``daemon.admissions.Occupant`` data), by bed."""
        return [json.loads(data) for (data,) in self._db.execute("SELECT data FROM admissions ORDER BY bed")]

    # --- the one write -------------------------------------------------------------------

    def apply(self, changes: Changes) -> None:
        """Commit one unit of work in one transaction (all of it, or none on error)."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            if changes.inbound:
                db.executemany("INSERT INTO inbound VALUES (?, ?, ?, ?, ?)", changes.inbound)
            # Before the rule states: a bed dropped here may get states anew in this unit.
            _drop_beds(db, changes.dropped_beds)
            _write_admissions(db, changes.admissions)
            if changes.rule_states:
                seqs, default_seq = changes.state_seqs, changes.processed_seq or 0
                db.executemany(
                    "INSERT OR REPLACE INTO rule_state (bed, rule, data, seq) VALUES (?, ?, ?, ?)",
                    [
                        (*key, data if isinstance(data, str) else data(), seqs.get(key, default_seq))
                        for key, data in changes.rule_states.items()
                    ],
                )
            _write_windows(db, changes.windows)
            meta = dict(changes.meta)
            if changes.processed_seq is not None:
                meta["processed_seq"] = changes.processed_seq
            covered, swept = self._sweep_inbound(changes)
            if meta:
                db.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [(key, json.dumps(value() if callable(value) else value)) for key, value in meta.items()],
                )
            if changes.alerts:
                db.executemany(
                    "INSERT OR REPLACE INTO alerts VALUES (?, ?, ?, ?, ?, ?)",
                    [(i, w, b, int(o), u, d) for i, (w, b, o, u, d) in changes.alerts.items()],
                )
            if changes.journal:
                db.executemany(
                    "INSERT INTO journal (at, who, what, alert_id, bed, entry) VALUES (?, ?, ?, ?, ?, ?)",
                    changes.journal,
                )
            if changes.points:
                db.executemany("INSERT INTO point_outbox VALUES (?, ?)", changes.points)
            done = changes.points_done + [row[0] for row in changes.dead_letters]
            if done:
                # A sent batch is a run of consecutive ids: one range delete instead of one per point.
                db.executemany("DELETE FROM point_outbox WHERE id BETWEEN ? AND ?", id_runs(done))
            if changes.dead_letters:
                db.executemany("INSERT INTO dead_letters VALUES (?, ?, ?, ?)", changes.dead_letters)
            if changes.mqtt_out:
                db.executemany(
                    "INSERT INTO mqtt_outbox VALUES (?, ?, ?, ?, ?)",
                    [(i, t, p, q, int(r)) for i, t, p, q, r in changes.mqtt_out],
                )
            if changes.mqtt_done:
                db.executemany("DELETE FROM mqtt_outbox WHERE id = ?", [(i,) for i in changes.mqtt_done])
            if changes.deliveries:
                db.executemany(
                    "INSERT OR REPLACE INTO delivery_outbox VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (r.id, r.receiver, r.notice, r.attempts, r.next_at, int(r.failed))
                        for r in changes.deliveries
                    ],
                )
            if changes.deliveries_done:
                db.executemany(
                    "DELETE FROM delivery_outbox WHERE id = ?", [(i,) for i in changes.deliveries_done]
                )
            if changes.route_state:
                gone = [(k,) for k, v in changes.route_state.items() if v is None]
                kept = [(k, v) for k, v in changes.route_state.items() if v is not None]
                db.executemany("DELETE FROM route_state WHERE key = ?", gone)
                db.executemany("INSERT OR REPLACE INTO route_state VALUES (?, ?)", kept)
            db.execute("COMMIT")
            self._covered_seq, self._swept_seq = covered, swept
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreError(f"state store {self.path}: {exc}") from exc

    def _sweep_inbound(self, changes: Changes) -> tuple[int, int]:
        """Delete logged inputs that a checkpoint covers: all of them for a ``processed_seq``
        without ``defer_inbound_delete``, otherwise a few per commit (``SWEEP_ROWS``). The
        seqs covered and deleted up to, once this unit is committed."""
        covered, swept = self._covered_seq, self._swept_seq
        if changes.processed_seq is not None:
            covered = max(covered, changes.processed_seq)
        whole = changes.processed_seq is not None and not changes.defer_inbound_delete
        upto = covered if whole else min(covered, swept + self.SWEEP_ROWS + len(changes.inbound))
        if upto > swept:
            self._db.execute("DELETE FROM inbound WHERE seq > ? AND seq <= ?", (swept, upto))
            swept = upto
        return covered, swept


def _write_windows(db: sqlite3.Connection, windows: list[WindowWrite]) -> None:
    keys = [(w.bed, w.rule, w.window) for w in windows]
    if len(set(keys)) < len(keys):
        # A window twice in one unit (a retried unit absorbed the next one, a full
        # checkpoint followed a slice): written one after the other, in order.
        for write in windows:
            _write_windows_batched(db, [write])
        return
    _write_windows_batched(db, windows)


def _write_windows_batched(db: sqlite3.Connection, windows: list[WindowWrite]) -> None:
    """Windows that are all different: every delete, then every insert, one statement
    each (a checkpoint writes about eight windows per bed, and one ``executemany`` per
    window cost more than its rows).

    A row is a run of entries: those a write appends, as ``[[time_us, entry], ...]``, from
    ``time_us`` to ``last_us``. Pruning deletes the runs wholly older than the cut; a run
    that straddles it stays, and ``from_us`` says from when its entries still count
    (``Store.rule_windows`` leaves the older ones out). One row and one encoding a window
    per checkpoint, where a row per entry made eight inserts per vitals sample.
    """
    cleared = [(w.bed, w.rule, w.window) for w in windows if w.clear]
    pruned = [
        (w.bed, w.rule, w.window, w.keep_from_us)
        for w in windows
        if not w.clear and w.keep_from_us is not None
    ]
    if cleared:
        db.executemany("DELETE FROM rule_window WHERE bed = ? AND rule = ? AND window = ?", cleared)
    if pruned:
        # time_us < the cut first: the index finds the few old runs of the window.
        db.executemany(
            "DELETE FROM rule_window WHERE bed = ?1 AND rule = ?2 AND window = ?3 AND time_us < ?4"
            " AND last_us < ?4",
            pruned,
        )
        db.executemany(
            "UPDATE rule_window SET from_us = max(coalesce(from_us, ?4), ?4)"
            " WHERE bed = ?1 AND rule = ?2 AND window = ?3 AND time_us < ?4",
            pruned,
        )
    runs = []
    for w in windows:
        rows = w.rows()
        if rows:
            runs.append((w.bed, w.rule, w.window, rows[0][0], rows[-1][0], entry_json(rows)))
    db.executemany(
        "INSERT INTO rule_window (bed, rule, window, time_us, last_us, entries) VALUES (?, ?, ?, ?, ?, ?)",
        runs,
    )


def _drop_beds(db: sqlite3.Connection, beds: list[str]) -> None:
    for bed in beds:
        db.execute("DELETE FROM rule_state WHERE bed = ?", (bed,))
        db.execute("DELETE FROM rule_window WHERE bed = ?", (bed,))


def _write_admissions(db: sqlite3.Connection, rows: Mapping[str, tuple[str, str] | None]) -> None:
    db.executemany(
        "DELETE FROM admissions WHERE bed = ?", [(bed,) for bed, row in rows.items() if row is None]
    )
    db.executemany(
        "INSERT OR REPLACE INTO admissions VALUES (?, ?, ?)",
        [(bed, *row) for bed, row in rows.items() if row is not None],
    )


AfterCommit = Callable[[], None]


class StoreWriter:
    """Group commit: callers stage changes into ``changes``; one task commits them off the loop.

    Guarantees: units are committed in the order they were staged; a callback given to
    ``after_commit`` runs on the event loop only once everything staged before it is
    durable; a failed commit is retried (with what was staged meanwhile) until it
    succeeds, never dropped; ``run`` returns only when cancelled.

    ``commit_gap_s``: the least time from the end of one commit to the start of the
    next. A unit staged sooner waits out the rest, and what is staged meanwhile joins
    it; one staged after a quiet spell is committed at once. Under a steady stream of
    inputs this trades a little latency for fewer commits (PostgreSQL's
    ``commit_delay`` makes the same trade), each with its hand-off to the thread, its
    pages written and its ``fsync``. The latency is only the bookkeeping's: a unit that
    someone waits for (an alert's message, a notice, an answer: ``after_commit`` with
    ``urgent``) ends the wait, so an alert never waits out the gap.
    """

    RETRY_S = 1.0

    def __init__(
        self,
        store: Store,
        *,
        on_error: Callable[[str | None], None] | None = None,
        commit_gap_s: float = 0.0,
    ) -> None:
        self.store = store
        self.commit_gap_s = commit_gap_s
        self.changes = Changes()
        self._callbacks: list[AfterCommit] = []
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._on_error = on_error
        self._failing = False
        self.commits = 0
        self.commit_s = 0.0

    def stage(self) -> Changes:
        """The unit being filled now; add to it, then call ``kick`` (or ``after_commit``)."""
        self._idle.clear()
        self._wake.set()
        return self.changes

    def after_commit(self, callback: AfterCommit, *, urgent: bool = True) -> None:
        """Run ``callback`` once what is staged now is committed.

        ``urgent``: someone waits for what it does (a message leaving, an answer), so the
        commit does not wait out ``commit_gap_s``. Bookkeeping that many units carry (an
        input's acknowledgement to the broker, the point outbox's wake-up) passes False.
        """
        self._callbacks.append(callback)
        self._idle.clear()
        self._wake.set()
        if urgent:
            self._urgent.set()

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run a read on the store's thread (serialised with the commits)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    @property
    def failing(self) -> bool:
        """The last commit failed (it is being retried)."""
        return self._failing

    @property
    def idle(self) -> bool:
        """Nothing staged or being committed."""
        return self._idle.is_set()

    async def flush(self) -> None:
        """Wait until everything staged so far is committed."""
        while not self._idle.is_set():
            await self._idle.wait()

    async def run(self) -> None:
        """Commit staged units until cancelled."""
        loop = asyncio.get_running_loop()
        failed: Changes | None = None
        last_end = -math.inf
        while True:
            await self._wake.wait()
            # One turn for the work that is ready before the unit is taken: an input is
            # staged and queued together, and what processing it stages (an alert, its
            # message) then joins the same commit instead of waiting for the next.
            await asyncio.sleep(0)
            wait_s = self.commit_gap_s - (time.perf_counter() - last_end)
            if wait_s > 0 and not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._urgent.wait()
            self._wake.clear()
            self._urgent.clear()
            changes, self.changes = self.changes, Changes()
            callbacks, self._callbacks = self._callbacks, []
            if failed is not None:
                failed.absorb(changes)
                changes, failed = failed, None
            if changes:
                started = time.perf_counter()
                try:
                    await loop.run_in_executor(self._executor, self.store.apply, changes)
                except StoreError as exc:
                    log.error("state store commit failed (retrying in %.0f s): %s", self.RETRY_S, exc)
                    self._failing = True
                    if self._on_error is not None:
                        self._on_error(str(exc))
                    failed = changes
                    self._callbacks[:0] = callbacks
                    await asyncio.sleep(self.RETRY_S)
                    self._wake.set()
                    continue
                if self._failing:
                    self._failing = False
                    log.info("state store writable again")
                    if self._on_error is not None:
                        self._on_error(None)
                self.commits += 1
                last_end = time.perf_counter()
                self.commit_s += last_end - started
            for callback in callbacks:
                callback()
            if not self.changes and not self._callbacks:
                self._idle.set()

    def close(self) -> None:
        """Stop the worker thread and close the database (after the last commit)."""
        self._executor.shutdown(wait=True)
        self.store.close()


# json.dumps with options builds a new encoder at every call: a third of its time on a row.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
_ENTRY_JSON = msgspec.json.Encoder()


def json_text(data: Any) -> str:
    """Compact JSON, as the store keeps it."""
    return _JSON.encode(data)


def entry_json(data: Any) -> str:
    """``json_text(data)`` as it reads back (the same value from ``json.loads``), ten times
    faster: msgspec, for the runs of late-data window entries (a checkpoint writes thousands).

    msgspec writes NaN and infinities as ``null`` where ``json_text`` writes ``NaN``, and
    refuses types that ``json_text`` turns into strings: output holding ``null``, and data
    msgspec refuses, take ``json_text``. Numbers may be spelt differently (``1e16`` for
    ``1e+16``), never valued differently.
    """
    try:
        out = _ENTRY_JSON.encode(data)
    except TypeError:
        return json_text(data)
    return json_text(data) if b"null" in out else out.decode()


def id_runs(ids: Iterable[int]) -> list[tuple[int, int]]:
    """``(first, last)`` of each run of consecutive ids, in order (duplicates merged)."""
    runs: list[tuple[int, int]] = []
    ordered = sorted(set(ids))
    if not ordered:
        return runs
    first = last = ordered[0]
    for i in ordered[1:]:
        if i != last + 1:
            runs.append((first, last))
            first = i
        last = i
    runs.append((first, last))
    return runs
