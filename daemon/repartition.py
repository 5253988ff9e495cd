"""``wardd repartition``: the daemon's state moved from one store layout to another.

``daemon.workers = N`` deals the beds over N store files by a hash of ``ward/bed``
(``daemon.partition``); changing N re-deals them, so each bed's rows must move to the
store of its new partition. This module reads every store of the layout in the state
folder and writes each row into the store its bed (or the ward, for a ward's own
subject ``_<ward>``) belongs to under the new count, table by table:

==================  ==================================================================
table               where its rows go
==================  ==================================================================
``rule_state``      its bed's partition (the position ``seq`` restarts at 0 with the log)
``rule_window``     its bed's partition, in the order stored
``alerts``          its bed's partition (the id is kept)
``journal``         its bed's partition, or its alert's bed's; a line of neither goes
                    to partition 0; merged in time order, each store's order kept
``route_state``     an alert's row to its bed's partition; the groups row is split by bed
``delivery_outbox`` the partition of the notice's bed (a digest: its first alert's); the
                    delivery number is kept unless two stores used it (then shifted)
``mqtt_outbox``     the partition of the bed (or ward) its topic names, else partition 0
``point_outbox``    the partition of the point's ``ward``/``bed`` tags, else partition 0
``dead_letters``    as ``point_outbox``
``admissions``      its bed's partition; refused unless the target is one worker (the
                    daemon reads admissions with ``daemon.workers = 1`` only)
``inbound``         must be empty: inputs logged but not processed are refused
``meta``            the next alert number (the highest), the highest delivery number
                    (to every partition: each worker numbers above it), the message
                    digests (to every partition), the failing receivers' beds (split
                    by bed); any other
                    key to partition 0, refused if two stores disagree on it
==================  ==================================================================

A bed's partition is that of the config's ward for it, else the ward its alert rows
name; a bed known to neither goes to partition 0 and is named in the report.

Crash safety: the new stores are written under temporary names while the old layout
stays as it was. Only when every new file is complete is a plan of renames written
(``<store>.repartition-plan.json``); the new files then take their names, and only
after that are the old files moved into an archive folder (never deleted). A crash
during the renames leaves the plan, which the next ``wardd repartition`` finishes and
which ``wardd run`` refuses to start beside. While it works it holds the layout's
lock exclusively, so it never runs beside a daemon (which holds it shared).

The broker (``Sessions``): each layout has its own client ids, so its own persistent
sessions. Before copying, the move makes the broker keep a session for each new worker
with its subscriptions, so what is published before the workers first connect waits
for them (``wardd repartition --prepare`` does only this, beside the running daemon, to
cover the time it is stopped); once the new stores are in place it ends the old ids'
sessions, which would gather messages until the broker expires them.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import itertools
import json
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from daemon import dedup
from daemon.config import Config, MqttConfig
from daemon.errors import LinkDownError, WarddError
from daemon.ids import is_ward_subject, subject_ward, ward_subject
from daemon.links.store import (
    DELIVERY_FLOOR_KEY,
    MIGRATIONS,
    SCHEMA_VERSION,
    Store,
    StoreError,
    last_delivery,
)
from daemon.partition import (
    MAX_WORKERS,
    Partition,
    client_id,
    for_partition,
    layout_lock,
    partition_of,
    repartition_plan,
    store_path,
    subscriptions,
)
from daemon.timefmt import iso

# Meta keys with a rule of their own, and the journal's actor for the daemon. Their owners
# (daemon.links.store, daemon.alerts, daemon.app, daemon.delivery.service,
# daemon.web.server) would make this command load the whole daemon to read five strings;
# a test holds each to its owner's.
PROCESSED_KEY = "processed_seq"
NEXT_SEQ_KEY = "alerts.next_seq"
SEEN_KEY = "inbound.seen"
FAILING_KEY = "delivery.failing"
SESSIONS_KEY = "web.sessions"
SYSTEM_ACTOR = "wardd"

TABLES = (
    "meta",
    "inbound",
    "rule_state",
    "rule_window",
    "alerts",
    "journal",
    "point_outbox",
    "dead_letters",
    "mqtt_outbox",
    "delivery_outbox",
    "route_state",
    "admissions",
)
"""Every table of the store, each with its rule here (a test holds this to the schema)."""

TMP_SUFFIX = ".repartition-tmp"
BATCH_ROWS = 5000


class RepartitionError(WarddError):
    """The move is refused or failed; the message says why and what to do."""


# --- where a row goes (pure) --------------------------------------------------------------------


@dataclass
class Placement:
    """Which new partition a bed's rows go to."""

    count: int
    wards: Mapping[str, str]
    """Bed id → ward: the config's beds, then the wards the stores' alert rows name."""
    unplaced: set[str] = field(default_factory=set)
    """Beds of no known ward, whose rows went to partition 0."""

    def of(self, bed: str | None, ward: str | None = None) -> int:
        """The partition of ``bed`` (its known ward first, ``ward`` otherwise); 0 for none."""
        if not bed:
            return 0 if ward is None else self.of(ward_subject(ward))
        if is_ward_subject(bed):
            return partition_of(subject_ward(bed), bed, self.count)
        known = self.wards.get(bed, ward)
        if known is None:
            self.unplaced.add(bed)
            return 0
        return partition_of(known, bed, self.count)


def point_place(line: str) -> tuple[str | None, str | None]:
    """``(ward, bed)`` from a line-protocol point's tags, ``None`` where it has none.

    Ward and bed ids never hold a character line protocol escapes, so the tags are
    read up to the first blank; a point whose other tags do (and hide its bed) goes to
    partition 0, which sends it as well as any other.
    """
    head = line.split(" ", 1)[0]
    tags = dict(item.split("=", 1) for item in head.split(",")[1:] if "=" in item)
    return tags.get("ward"), tags.get("bed")


def topic_place(topic: str, prefix: str) -> tuple[str | None, str | None]:
    """``(ward, bed)`` a topic names: ``<prefix>/<ward>/bed/<bed>/...`` or ``<prefix>/<ward>/...``."""
    levels = topic.split("/")
    if len(levels) < 3 or levels[0] != prefix or levels[1].startswith("_"):
        return None, None  # the daemon's own topics, admin replies: no ward
    ward = levels[1]
    if len(levels) >= 4 and levels[2] == "bed":
        return ward, levels[3]
    return ward, None


def notice_place(notice: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(ward, bed)`` of a queued notification: its own bed, else its first alert's."""
    bed = notice.get("bed") or None
    ward = notice.get("ward") or None
    if bed is None:
        alerts = notice.get("alerts") or []
        if alerts and isinstance(alerts[0], Mapping):
            ward, bed = alerts[0].get("ward") or ward, alerts[0].get("bed") or None
    return _text_or_none(ward), _text_or_none(bed)


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def split_groups(
    groups: Sequence[Mapping[str, Any]], placement: Placement
) -> dict[int, list[Mapping[str, Any]]]:
    """The router's groups row (``daemon.delivery.routing``), one list per partition."""
    out: dict[int, list[Mapping[str, Any]]] = {}
    for group in groups:
        out.setdefault(placement.of(group.get("bed"), group.get("ward")), []).append(group)
    return out


def split_failing(
    failing: Mapping[str, Sequence[Sequence[str]]], placement: Placement
) -> dict[int, dict[str, list[list[str]]]]:
    """``delivery.failing`` (receiver → ``[[ward, bed], ...]``), one mapping per partition."""
    out: dict[int, dict[str, list[list[str]]]] = {}
    for receiver, beds in failing.items():
        for ward, bed in beds:
            out.setdefault(placement.of(bed, ward), {}).setdefault(receiver, []).append([ward, bed])
    return {part: {r: sorted(b) for r, b in value.items()} for part, value in out.items()}


def merge_digests(dumps: Iterable[str]) -> str:
    """The stores' recent-message digests (``daemon.dedup``), one after the other.

    A digest cannot be traced to its bed, so every new partition gets them all: a
    message the broker sends again is recognised whichever partition it reaches.
    """
    return dedup.text(b"".join(base64.b64decode(d) for d in dumps))


def delivery_numbers(sources: Sequence[Sequence[int]]) -> list[list[int]]:
    """New delivery numbers for the rows each source gives one new store, in order.

    A number is kept unless an earlier source already gave it here; then that source's
    numbers are all shifted above those taken, so its rows keep their order (a
    receiver is sent its notices in number order).
    """
    taken: set[int] = set()
    out: list[list[int]] = []
    for ids in sources:
        shift = max(taken) if taken and taken.intersection(ids) else 0
        numbers = [i + shift for i in ids]
        taken.update(numbers)
        out.append(numbers)
    return out


def time_key(at: str) -> str:
    """A journal time that sorts as time: ``iso`` leaves out a zero fraction."""
    if at.endswith("Z") and "." not in at:
        return at[:-1] + ".000000Z"
    return at


# --- the layouts in a state folder -------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """The store files of ``count`` workers."""

    count: int
    paths: tuple[Path, ...]


def layout_paths(base: Path, count: int) -> tuple[Path, ...]:
    """The store files of ``count`` workers, in partition order."""
    return tuple(store_path(base, Partition(i, count)) for i in range(count))


def layouts(base: Path) -> dict[int, list[Path]]:
    """The store files beside ``base``, by the number of workers they are for."""
    counts: dict[int, list[Path]] = {}
    if base.exists():
        counts[1] = [base]
    for path in base.parent.glob(f"{base.stem}.p*of*{base.suffix}"):
        part = path.name.removeprefix(f"{base.stem}.").removesuffix(base.suffix)
        try:
            parsed = Partition.parse(part.removeprefix("p").replace("of", "/", 1))
        except ValueError:
            continue
        if parsed.count > 1:
            counts.setdefault(parsed.count, []).append(path)
    return counts


def find_layout(base: Path, to: int) -> Layout:
    """The one complete layout of store files beside ``base`` to move to ``to`` workers;
    ``RepartitionError`` when there is none, several, or the target's files are there."""
    counts = layouts(base)
    if list(counts) == [to]:
        shown = ", ".join(sorted(p.name for p in counts[to]))
        raise RepartitionError(f"the stores are already those of {_workers(to)} ({shown}); nothing to move")
    if to in counts:
        shown = ", ".join(sorted(p.name for p in counts[to]))
        raise RepartitionError(
            f"the target stores already exist ({shown}); move them out of {base.parent} "
            "if no daemon uses them, and repartition again"
        )
    if not counts:
        raise RepartitionError(f"no store to move: neither {base} nor {base.stem}.p*of*{base.suffix} exists")
    if len(counts) > 1:
        shown = "; ".join(
            f"{n} worker(s): {', '.join(sorted(p.name for p in ps))}" for n, ps in sorted(counts.items())
        )
        raise RepartitionError(
            f"the state folder {base.parent} holds stores of several layouts ({shown}); "
            "move the ones no daemon uses out of it first"
        )
    (count,) = counts
    expected = layout_paths(base, count)
    missing = [p.name for p in expected if not p.exists()]
    if missing:
        raise RepartitionError(
            f"the stores of {count} workers are incomplete: {', '.join(missing)} missing "
            "(a partition moved to another machine? copy its store back first)"
        )
    return Layout(count, expected)


# --- the move ------------------------------------------------------------------------------------


@dataclass
class Report:
    """What was moved: rows per table and new partition, and what the reader should know."""

    source: Layout
    target: Layout
    read: Counter[str] = field(default_factory=Counter)
    written: dict[str, Counter[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    archive: Path | None = None
    resumed: bool = False

    def add(self, table: str, part: int, rows: int = 1) -> None:
        """Count ``rows`` rows of ``table`` written to partition ``part``."""
        self.written.setdefault(table, Counter())[part] += rows

    def lines(self) -> list[str]:
        """The report as the command prints it."""
        names = [p.name for p in self.target.paths]
        width = max(len("table"), *(len(t) for t in TABLES))
        cols = [max(len(n), 7) for n in names]
        out = [
            f"moved the stores of {_workers(self.source.count)} to {_workers(self.target.count)}:",
            "  " + "table".ljust(width) + "".join(f"  {n:>{w}}" for n, w in zip(names, cols, strict=True)),
        ]
        for table in TABLES:
            counts = self.written.get(table, Counter())
            if table in ("meta", "inbound"):
                continue
            out.append("  " + table.ljust(width) + "".join(f"  {counts[i]:>{w}}" for i, w in enumerate(cols)))
        out += [f"  note: {note}" for note in self.notes]
        return out


def _workers(count: int) -> str:
    return f"{count} worker" + ("s" if count > 1 else "")


class Sessions(Protocol):
    """The broker's side of a move (``BrokerSessions``; ``None`` leaves the broker alone)."""

    def keep(self, subscriptions: Mapping[str, Sequence[str]]) -> None:
        """Make the broker keep a session per client id with its subscriptions;
        ``RepartitionError`` when it cannot."""

    def end(self, client_ids: Sequence[str]) -> None:
        """Make the broker drop the sessions of ``client_ids``; ``RepartitionError`` when it cannot."""


class BrokerSessions:
    """``Sessions`` on the config's broker, as the daemon logs in (``daemon.links.mqtt``)."""

    def __init__(self, config: MqttConfig) -> None:
        self._config = config

    def keep(self, subscriptions: Mapping[str, Sequence[str]]) -> None:
        """See ``Sessions.keep``."""
        from daemon.links import mqtt  # noqa: PLC0415 -- the broker's client only when it is used

        password = self._config.password.resolve()
        self._run(
            mqtt.keep_session(self._config, password, name, topics) for name, topics in subscriptions.items()
        )

    def end(self, client_ids: Sequence[str]) -> None:
        """See ``Sessions.end``."""
        from daemon.links import mqtt  # noqa: PLC0415

        password = self._config.password.resolve()
        self._run(mqtt.end_session(self._config, password, name) for name in client_ids)

    def _run(self, calls: Iterable[Coroutine[Any, Any, None]]) -> None:
        from daemon.links.mqtt import broker_address  # noqa: PLC0415
        from daemon.links.tls import describe  # noqa: PLC0415

        async def run_all() -> None:
            async with asyncio.TaskGroup() as group:
                for number, call in enumerate(calls):
                    group.create_task(call, name=f"repartition.session[{number}]")

        try:
            asyncio.run(run_all())
        except* LinkDownError as errors:
            host, port, _ = broker_address(self._config.url)
            reason = describe(errors.exceptions[0]) or errors.exceptions[0]
            raise RepartitionError(
                f"the broker at {host}:{port} (mqtt.url) did not answer: {reason}"
            ) from None


def layout_sessions(config: Config, count: int) -> dict[str, list[str]]:
    """The client id and subscriptions of each worker of ``count`` (one: the plain id)."""
    config = config.model_copy(update={"daemon": config.daemon.model_copy(update={"workers": count})})
    if count == 1:
        return {client_id(config, None): subscriptions(config)}
    parts = [Partition(i, count) for i in range(count)]
    return {client_id(config, part): subscriptions(for_partition(config, part)) for part in parts}


def repartition(
    config: Config,
    to: int,
    *,
    now: datetime,
    say: Callable[[str], None],
    sessions: Sessions | None = None,
) -> Report:
    """Move the state folder's stores to ``to`` workers (see the module's docstring), and
    with ``sessions`` the broker's sessions: those of the new workers kept from before
    the copy, so that nothing published meanwhile is lost to them, and the old ones
    ended once the new stores are in place.

    ``RepartitionError`` (nothing changed) when refused; ``LayoutBusyError`` while a daemon runs.
    """
    if not 1 <= to <= MAX_WORKERS:
        raise RepartitionError(f"--to {to}: the number of workers is 1 to {MAX_WORKERS}")
    base = config.daemon.store_path
    with layout_lock(config, exclusive=True):
        plan = repartition_plan(config)
        if plan.exists():
            return _finish(plan, say, sessions)
        source = find_layout(base, to)
        target = Layout(to, layout_paths(base, to))
        for tmp in (_tmp(p) for p in target.paths):
            for leftover in _with_sidecars(tmp):
                # Ours, from a move a crash cut short before its plan: incomplete by definition.
                say(f"removing {leftover}, left by an interrupted repartition")
                leftover.unlink()
        report = Report(source, target)
        new_sessions = layout_sessions(config, to)
        old_ids = list(layout_sessions(config, source.count))
        kept = False

        def keep_sessions() -> None:
            nonlocal kept
            if sessions is None:
                return
            try:
                sessions.keep(new_sessions)
            except RepartitionError as exc:
                raise RepartitionError(
                    f"{exc}; the new workers' sessions could not be kept, so nothing was moved: "
                    "start the broker, or move without it (--without-broker)"
                ) from None
            kept = True

        try:
            _move(config, source, target, report, now=now, before_copy=keep_sessions)
        except Exception as exc:
            if kept and sessions is not None:
                # Nobody will connect under them: they would gather what is published.
                _end_sessions(sessions, list(new_sessions), report)
                say(report.notes[-1])
            if isinstance(exc, sqlite3.Error):
                raise RepartitionError(
                    f"while writing the new stores: {exc}; the old stores are unchanged"
                ) from exc
            raise
        archive = _free_name(
            base.with_name(f"{base.stem}.before-repartition-{now.strftime('%Y%m%dT%H%M%SZ')}")
        )
        renames = [(_tmp(p), p) for p in target.paths]
        renames += [(old, archive / old.name) for p in source.paths for old in _with_sidecars(p)]
        _write_plan(plan, renames, archive, old_ids if sessions is not None else [])
        _rename(plan, renames, archive)
        report.archive = archive
        if sessions is None:
            report.notes.append(
                f"the broker was left alone: the old client ids' sessions ({', '.join(old_ids)}) keep "
                "what is published for them, and the new workers read only what comes after they "
                "first connect"
            )
        else:
            report.notes.append(
                f"the broker has kept for the new client ids ({', '.join(new_sessions)}) what was "
                "published since the move began"
            )
            _end_sessions(sessions, old_ids, report)
        return report


def _end_sessions(sessions: Sessions, client_ids: Sequence[str], report: Report) -> None:
    """End sessions nobody will use (a failure is a note: they expire at the broker)."""
    try:
        sessions.end(client_ids)
        report.notes.append(f"the sessions of {', '.join(client_ids)} at the broker were ended")
    except RepartitionError as exc:
        report.notes.append(
            f"the sessions of {', '.join(client_ids)} could not be ended ({exc}); they stay at the "
            "broker until it expires them"
        )


def _free_name(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3`` ... when it exists: two moves within one second
    (3 workers to 1 right after 1 to 3) must not archive into the same folder."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + TMP_SUFFIX)


def _with_sidecars(path: Path) -> list[Path]:
    """A SQLite file and its ``-wal`` and ``-shm`` files, those that exist."""
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def _move(
    config: Config,
    source: Layout,
    target: Layout,
    report: Report,
    *,
    now: datetime,
    before_copy: Callable[[], None],
) -> None:
    for path in source.paths:
        try:
            # Brings an older store to this wardd's schema, as `wardd run` would at start.
            Store(path).close()
        except StoreError as exc:
            raise RepartitionError(str(exc)) from None
    olds = [sqlite3.connect(p, isolation_level=None) for p in source.paths]
    news: list[sqlite3.Connection] = []
    try:
        _refusals(source, olds, target)
        before_copy()
        placement = Placement(target.count, _wards(config, olds))
        created = [_create(_tmp(p)) for p in target.paths]
        news = [db for db, _ in created]
        for old in olds:
            for table in TABLES:
                report.read[table] += _count(old, table)
        _copy_by_bed(source.paths, olds, news, placement, report)
        for db in news:
            db.execute("BEGIN")
        _copy_journal(olds, news, placement, report)
        _copy_outboxes(olds, news, placement, report, config.mqtt.topic_prefix)
        _copy_routing(olds, news, placement, report)
        _copy_meta(olds, news, placement, source)
        _check_counts(report)
        for index, db in enumerate(news):
            entry = {
                "at": iso(now),
                "who": SYSTEM_ACTOR,
                "what": "repartition",
                "from_workers": source.count,
                "to_workers": target.count,
                "partition": str(Partition(index, target.count)),
                "rows": {t: c[index] for t, c in sorted(report.written.items()) if c[index]},
            }
            db.execute(
                "INSERT INTO journal (at, who, what, alert_id, bed, entry) VALUES (?, ?, ?, NULL, NULL, ?)",
                (entry["at"], SYSTEM_ACTOR, "repartition", _json(entry)),
            )
        for db, indexes in created:
            for sql in indexes:
                db.execute(sql)
            db.execute("COMMIT")
            # WAL from here on, as the daemon keeps it; the file was written without a
            # journal since a crash before the plan discards it anyway.
            db.execute("PRAGMA journal_mode=WAL")
        if placement.unplaced:
            beds = ", ".join(sorted(placement.unplaced))
            report.notes.append(
                f"beds of no known ward (not in the config, no alert names their ward) went to "
                f"partition 0: {beds}"
            )
    finally:
        for db in olds + news:
            db.close()
    for path in target.paths:
        _fsync(_tmp(path))


def _refusals(source: Layout, olds: Sequence[sqlite3.Connection], target: Layout) -> None:
    """Refuse a move that would lose or change something (before anything is written)."""
    for path, db in zip(source.paths, olds, strict=True):
        tables = {
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
        unknown = sorted(tables - set(TABLES))
        if unknown:
            raise RepartitionError(f"{path.name} has table(s) this wardd cannot move: {', '.join(unknown)}")
        logged = _count(db, "inbound")
        if logged:
            raise RepartitionError(
                f"{path.name} holds {logged} logged input(s) not yet processed: start the daemon "
                f"with daemon.workers = {source.count} and stop it with SIGTERM (it processes them "
                "and checkpoints; see daemon.shutdown_timeout_s), then repartition"
            )
        admitted = _count(db, "admissions")
        if admitted and target.count > 1:
            raise RepartitionError(
                f"{path.name} holds {admitted} admission row(s) (beds changed at run time), which "
                "the daemon reads with daemon.workers = 1 only (README, Admissions): moving them to "
                f"{target.count} workers would undo those changes silently; write them into the "
                "config's [[beds]] first, or stay at one worker"
            )
    # A bed's rows are in one store of a layout; rows of one bed in two would collide.
    for what, sql in (
        ("bed {} has rule states", "SELECT DISTINCT bed FROM rule_state"),
        ("bed {} has an admission row", "SELECT bed FROM admissions"),
        ("alert {} is", "SELECT id FROM alerts"),
    ):
        seen: dict[str, str] = {}
        for path, db in zip(source.paths, olds, strict=True):
            for (key,) in db.execute(sql):
                if key in seen:
                    raise RepartitionError(f"{what.format(key)} in both {seen[key]} and {path.name}")
                seen[key] = path.name


def _wards(config: Config, olds: Sequence[sqlite3.Connection]) -> dict[str, str]:
    wards: dict[str, str] = {}
    for db in olds:
        for table in ("admissions", "alerts"):
            for bed, ward in db.execute(f"SELECT DISTINCT bed, ward FROM {table}"):  # noqa: S608 -- fixed names
                wards.setdefault(bed, ward)
    # The config's beds win: a bed's rows follow the ward the daemon will run it under.
    wards.update({bed.id: bed.ward for bed in config.beds})
    return wards


def _create(path: Path) -> tuple[sqlite3.Connection, list[str]]:
    """A new store at this wardd's schema, without its indexes: the statements that make
    them, to run once the rows are in (an index built at the end is a sort, one kept up
    row by row is a random write per row)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")
    db.executescript("".join(MIGRATIONS) + f"PRAGMA user_version={SCHEMA_VERSION};")
    indexes = list(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
    for name, _ in indexes:
        db.execute(f"DROP INDEX {name}")
    return db, [sql for _, sql in indexes]


def _count(db: sqlite3.Connection, table: str) -> int:
    return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608 -- fixed names


def _batches(rows: Iterable[tuple[int, tuple[Any, ...]]]) -> Iterator[list[tuple[int, tuple[Any, ...]]]]:
    iterator = iter(rows)
    while batch := list(itertools.islice(iterator, BATCH_ROWS)):
        yield batch


def _write(
    news: Sequence[sqlite3.Connection],
    report: Report,
    table: str,
    sql: str,
    rows: Iterable[tuple[int, tuple[Any, ...]]],
) -> None:
    """Insert ``(partition, row)`` pairs, batched per partition."""
    for batch in _batches(rows):
        by_part: dict[int, list[tuple[Any, ...]]] = {}
        for part, row in batch:
            by_part.setdefault(part, []).append(row)
        for part, part_rows in by_part.items():
            news[part].executemany(sql, part_rows)
            report.add(table, part, len(part_rows))


BED_TABLES = (
    # (table, columns read, columns written, order): the log restarts empty in each new
    # store, so no state is ahead of its checkpoint (seq 0).
    ("rule_state", "bed, rule, data, 0", "bed, rule, data, seq", "bed, rule"),
    (
        "rule_window",
        "bed, rule, window, time_us, entries, last_us, from_us",
        "bed, rule, window, time_us, entries, last_us, from_us",
        "rowid",
    ),
    ("alerts", "id, ward, bed, open, updated, data", "id, ward, bed, open, updated, data", "rowid"),
    ("admissions", "bed, ward, data", "bed, ward, data", "bed"),
)
"""The tables whose every row names its bed: copied inside SQLite, a bed at a time in no
Python loop (an hour of windows at 1,000 beds is millions of rows)."""


def _copy_by_bed(
    sources: Sequence[Path],
    olds: Sequence[sqlite3.Connection],
    news: Sequence[sqlite3.Connection],
    placement: Placement,
    report: Report,
) -> None:
    for path, old in zip(sources, olds, strict=True):
        beds = {
            bed
            for table, *_ in BED_TABLES
            for (bed,) in old.execute(f"SELECT DISTINCT bed FROM {table}")  # noqa: S608 -- fixed names
        }
        parts: dict[int, list[str]] = {}
        for bed in sorted(beds):
            parts.setdefault(placement.of(bed), []).append(bed)
        for part, mine in parts.items():
            new = news[part]
            new.execute("ATTACH DATABASE ? AS old", (str(path),))
            new.execute("CREATE TEMP TABLE moving (bed TEXT PRIMARY KEY) WITHOUT ROWID")
            new.executemany("INSERT INTO moving VALUES (?)", [(bed,) for bed in mine])
            new.execute("BEGIN")
            for table, read, written, order in BED_TABLES:
                before = new.total_changes
                new.execute(
                    f"INSERT INTO main.{table} ({written}) SELECT {read} FROM old.{table} "  # noqa: S608 -- fixed names
                    f"WHERE bed IN (SELECT bed FROM moving) ORDER BY {order}"
                )
                report.add(table, part, new.total_changes - before)
            new.execute("COMMIT")
            new.execute("DROP TABLE moving")
            new.execute("DETACH DATABASE old")


def _copy_journal(
    olds: Sequence[sqlite3.Connection],
    news: Sequence[sqlite3.Connection],
    placement: Placement,
    report: Report,
) -> None:
    alert_beds: dict[str, tuple[str, str]] = {}
    for old in olds:
        alert_beds.update({i: (w, b) for i, w, b in old.execute("SELECT id, ward, bed FROM alerts")})

    def target(bed: str | None, alert_id: str | None) -> int:
        if bed is None and alert_id is not None and alert_id in alert_beds:
            ward, bed = alert_beds[alert_id]
            return placement.of(bed, ward)
        return placement.of(bed)

    streams = [
        old.execute("SELECT at, who, what, alert_id, bed, entry FROM journal ORDER BY seq") for old in olds
    ]
    # Each store's journal in its own order, the stores' lines interleaved by time.
    merged = heapq.merge(*streams, key=lambda row: time_key(str(row[0])))
    _write(
        news,
        report,
        "journal",
        "INSERT INTO journal (at, who, what, alert_id, bed, entry) VALUES (?, ?, ?, ?, ?, ?)",
        ((target(row[4], row[3]), row) for row in merged),
    )


def _copy_outboxes(
    olds: Sequence[sqlite3.Connection],
    news: Sequence[sqlite3.Connection],
    placement: Placement,
    report: Report,
    prefix: str,
) -> None:
    # Internal ids, renumbered: points and dead letters share one numbering (Store.next_id).
    point_ids = [itertools.count(1) for _ in news]
    mqtt_ids = [itertools.count(1) for _ in news]

    def point(line: str) -> int:
        ward, bed = point_place(line)
        return placement.of(bed, ward) if bed or ward else 0

    def topic(name: str) -> int:
        ward, bed = topic_place(name, prefix)
        return placement.of(bed, ward) if bed or ward else 0

    for old in olds:
        placed = [(point(line), line) for (line,) in old.execute("SELECT line FROM point_outbox ORDER BY id")]
        _write(news, report, "point_outbox", "INSERT INTO point_outbox VALUES (?, ?)",
               ((p, (next(point_ids[p]), line)) for p, line in placed))  # fmt: skip
        letters = old.execute("SELECT at, line, reason FROM dead_letters ORDER BY id")
        _write(news, report, "dead_letters", "INSERT INTO dead_letters VALUES (?, ?, ?, ?)",
               ((p, (next(point_ids[p]), at, line, reason)) for at, line, reason in letters for p in (point(line),)))  # fmt: skip
        messages = old.execute("SELECT topic, payload, qos, retain FROM mqtt_outbox ORDER BY id")
        _write(news, report, "mqtt_outbox", "INSERT INTO mqtt_outbox VALUES (?, ?, ?, ?, ?)",
               ((p, (next(mqtt_ids[p]), *row)) for row in messages for p in (topic(row[0]),)))  # fmt: skip
    _copy_deliveries(olds, news, placement, report)


def _copy_deliveries(
    olds: Sequence[sqlite3.Connection],
    news: Sequence[sqlite3.Connection],
    placement: Placement,
    report: Report,
) -> None:
    # By new partition: each source's rows in number order.
    rows: dict[int, list[list[tuple[Any, ...]]]] = {}
    for index, old in enumerate(olds):
        for row in old.execute(
            "SELECT id, receiver, notice, attempts, next_at, failed FROM delivery_outbox ORDER BY id"
        ):
            ward, bed = notice_place(json.loads(row[2]))
            per_source = rows.setdefault(placement.of(bed, ward), [[] for _ in olds])
            per_source[index].append(row)
    for part, per_source in sorted(rows.items()):
        numbers = delivery_numbers([[int(r[0]) for r in source] for source in per_source])
        shifted = 0
        for source_rows, new_ids in zip(per_source, numbers, strict=True):
            for row, new_id in zip(source_rows, new_ids, strict=True):
                notice = row[2]
                if new_id != row[0]:
                    shifted += 1
                    body = json.loads(notice)
                    body["delivery"] = new_id
                    notice = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
                news[part].execute(
                    "INSERT INTO delivery_outbox VALUES (?, ?, ?, ?, ?, ?)",
                    (new_id, row[1], notice, *row[3:]),
                )
                report.add("delivery_outbox", part)
        if shifted:
            report.notes.append(
                f"{shifted} queued notification(s) of partition {part} took a new delivery number "
                "(two stores had used theirs); a receipt for the old number is not matched"
            )


def _copy_routing(
    olds: Sequence[sqlite3.Connection],
    news: Sequence[sqlite3.Connection],
    placement: Placement,
    report: Report,
) -> None:
    groups: dict[int, list[Mapping[str, Any]]] = {}
    report.read["route_state"] = 0  # counted by alert and by group, as written
    for old in olds:
        for key, data in old.execute("SELECT key, data FROM route_state ORDER BY key"):
            if key == "groups":
                report.read["route_state"] += len(json.loads(data))
                for part, items in split_groups(json.loads(data), placement).items():
                    groups.setdefault(part, []).extend(items)
                continue
            report.read["route_state"] += 1
            alert = json.loads(data).get("alert", {}) if key.startswith("alert:") else {}
            part = placement.of(alert.get("bed"), alert.get("ward")) if alert else 0
            news[part].execute("INSERT INTO route_state VALUES (?, ?)", (key, data))
            report.add("route_state", part)
    for part, items in groups.items():
        news[part].execute("INSERT INTO route_state VALUES (?, ?)", ("groups", _json(items)))
        report.add("route_state", part, len(items))


def _copy_meta(
    olds: Sequence[sqlite3.Connection],
    news: Sequence[sqlite3.Connection],
    placement: Placement,
    source: Layout,
) -> None:
    metas = [
        {key: json.loads(value) for key, value in old.execute("SELECT key, value FROM meta")} for old in olds
    ]
    out: list[dict[str, Any]] = [{PROCESSED_KEY: 0} for _ in news]
    next_alert = max((int(m[NEXT_SEQ_KEY]) for m in metas if NEXT_SEQ_KEY in m), default=None)
    if next_alert is not None:
        # Alert numbers are never reused: above every number any old store gave.
        for meta in out:
            meta[NEXT_SEQ_KEY] = next_alert
    # Every new worker numbers its deliveries above every number any store holds now,
    # those the queues were given here included: none is given twice (``Lane``).
    floor = max(
        [last_delivery(db) for db in (*olds, *news)] + [int(m.get(DELIVERY_FLOOR_KEY, 0)) for m in metas]
    )
    if floor:
        for meta in out:
            meta[DELIVERY_FLOOR_KEY] = floor
    digests = [m[SEEN_KEY] for m in metas if isinstance(m.get(SEEN_KEY), str)]
    if digests:
        for meta in out:
            meta[SEEN_KEY] = merge_digests(digests)
    failing: dict[int, dict[str, list[list[str]]]] = {}
    for meta in metas:
        for part, value in split_failing(meta.get(FAILING_KEY) or {}, placement).items():
            for receiver, beds in value.items():
                failing.setdefault(part, {}).setdefault(receiver, []).extend(beds)
    for part, value in failing.items():
        out[part][FAILING_KEY] = value
    sessions = {k: v for m in metas for k, v in (m.get(SESSIONS_KEY) or {}).items()}
    if sessions:
        out[0][SESSIONS_KEY] = sessions  # the ward page runs with one worker: partition 0's
    handled = {PROCESSED_KEY, NEXT_SEQ_KEY, SEEN_KEY, FAILING_KEY, SESSIONS_KEY, DELIVERY_FLOOR_KEY}
    for key in sorted({k for m in metas for k in m} - handled):
        values = [m[key] for m in metas if key in m]
        if any(v != values[0] for v in values):
            shown = ", ".join(p.name for p, m in zip(source.paths, metas, strict=True) if key in m)
            raise RepartitionError(
                f"meta key {key!r} differs between {shown}; this wardd has no rule to merge it"
            )
        out[0][key] = values[0]
    for part, meta in enumerate(out):
        news[part].executemany(
            "INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()]
        )


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _check_counts(report: Report) -> None:
    """Every row read was written once (route_state's groups counted by group)."""
    for table in TABLES:
        if table in ("meta", "inbound"):
            continue
        written = sum(report.written.get(table, Counter()).values())
        if written != report.read[table]:
            raise RepartitionError(
                f"{table}: read {report.read[table]} rows but wrote {written}; nothing was changed"
            )


# --- the renames -----------------------------------------------------------------------------------


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_plan(
    plan: Path, renames: Sequence[tuple[Path, Path]], archive: Path, old_ids: Sequence[str]
) -> None:
    archive.mkdir()
    tmp = plan.with_name(plan.name + ".tmp")
    data = {
        "archive": str(archive),
        "renames": [[str(a), str(b)] for a, b in renames],
        "end_sessions": old_ids,
    }
    tmp.write_text(json.dumps(data, indent=1))
    _fsync(tmp)
    tmp.rename(plan)
    _fsync(plan.parent)


def _rename(plan: Path, renames: Sequence[tuple[Path, Path]], archive: Path) -> None:
    """Carry out the plan: each rename once (a rerun skips those done), then drop the plan."""
    for src, dst in renames:
        if dst.exists() and not src.exists():
            continue
        if dst.exists():
            raise RepartitionError(
                f"both {src} and {dst} exist: the plan {plan} cannot go on; sort them by hand"
            )
        if not src.exists():
            raise RepartitionError(f"{src} is gone and {dst} is not there: the plan {plan} cannot go on")
        src.rename(dst)
    _fsync(archive)
    _fsync(plan.parent)
    plan.unlink()
    _fsync(plan.parent)


def _finish(plan: Path, say: Callable[[str], None], sessions: Sessions | None) -> Report:
    """Finish the renames of a repartition a crash interrupted, and end the old sessions
    it was to end."""
    try:
        data = json.loads(plan.read_text())
        renames = [(Path(a), Path(b)) for a, b in data["renames"]]
        archive = Path(data["archive"])
        old_ids = [str(name) for name in data.get("end_sessions", [])]
    except (ValueError, KeyError, TypeError) as exc:
        raise RepartitionError(f"{plan} is unreadable ({exc}); sort the state folder by hand") from None
    say(f"finishing the repartition that {plan} describes")
    _rename(plan, renames, archive)
    new = [dst for src, dst in renames if src.name.endswith(TMP_SUFFIX)]
    old = [
        src
        for src, dst in renames
        if not src.name.endswith(TMP_SUFFIX) and not src.name.endswith(("-wal", "-shm"))
    ]
    report = Report(Layout(len(old), tuple(old)), Layout(len(new), tuple(new)), resumed=True)
    report.archive = archive
    if old_ids and sessions is not None:
        _end_sessions(sessions, old_ids, report)
    elif old_ids:
        report.notes.append(f"the sessions of {', '.join(old_ids)} were left at the broker")
    return report
