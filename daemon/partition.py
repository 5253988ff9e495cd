"""Partitions: the beds of one ward config spread over worker processes.

A partition is the unit of the daemon's state: each bed belongs to exactly one, by a
stable hash of its ward and id (``partition_of``), so adding or removing a bed moves
no other. A partition's worker runs the ordinary pipeline on ``for_partition``'s
config: only its beds and their pumps, its own store file, its own MQTT client id (so
its own persistent session), and subscriptions to its beds' topics only. Nothing is
shared between workers but the broker and the database; no bed's state is ever split.

The same unit spreads a hospital over several machines on a clustered broker: a
partition is moved by stopping its worker, moving its store file, and starting it
elsewhere with the same config and partition (see README, "Scale"); a change of the
number of partitions moves the states with ``wardd repartition`` (``daemon.repartition``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from daemon import topics
from daemon.config import Config
from daemon.errors import ConfigError, ConfigIssue, WarddError
from daemon.ids import ward_subject

MAX_WORKERS = 64


@dataclass(frozen=True, slots=True)
class Partition:
    """Partition ``index`` (from 0) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, text: str) -> Partition:
        """``"i/n"`` as given to ``wardd run --partition``."""
        index, sep, count = text.partition("/")
        if not sep or not index.isdigit() or not count.isdigit():
            raise ValueError(f"partition {text!r} is not of the form i/n")
        part = cls(int(index), int(count))
        if not 1 <= part.count <= MAX_WORKERS or not 0 <= part.index < part.count:
            raise ValueError(f"partition {text!r}: need 0 <= i < n <= {MAX_WORKERS}")
        return part

    def suffix(self) -> str:
        """What names this partition's files and client id: ``p0of2``."""
        return f"p{self.index}of{self.count}"


def partition_of(ward: str, bed: str, count: int) -> int:
    """The partition of a bed among ``count``: stable across restarts, config edits and machines."""
    return zlib.crc32(f"{ward}/{bed}".encode()) % count


def store_path(base: Path, part: Partition | None) -> Path:
    """The store file of a partition (``wardd.sqlite`` → ``wardd.p0of2.sqlite``); ``base`` for none."""
    if part is None or part.count == 1:
        return base
    return base.with_name(f"{base.stem}.{part.suffix()}{base.suffix}")


def store_paths(config: Config) -> list[Path]:
    """Every store file of the config's partitions, in partition order."""
    count = config.daemon.workers
    base = config.daemon.store_path
    return [store_path(base, Partition(i, count)) for i in range(count)]


def for_partition(config: Config, part: Partition) -> Config:
    """The config one worker runs: its beds, their pumps and bags, its store and client id."""
    if part.count != config.daemon.workers:
        raise ConfigError(
            "--partition",
            [ConfigIssue("daemon.workers", f"is {config.daemon.workers}, but the partition is {part}")],
        )
    beds = [b for b in config.beds if partition_of(b.ward, b.id, part.count) == part.index]
    ids = {b.id for b in beds}
    daemon = config.daemon.model_copy(update={"store": store_path(config.daemon.store_path, part)})
    mqtt = config.mqtt.model_copy(update={"client_id": client_id(config, part)})
    # A ward's own alerts (its links lost: daemon.tech_rules) are raised by one
    # partition, chosen like a bed's, whether or not it has beds of that ward: one alert
    # per ward and outage, and alert ids that no other partition can also give.
    wards = [w for w in config.own_wards() if partition_of(w, ward_subject(w), part.count) == part.index]
    return config.model_copy(
        update={
            "daemon": daemon,
            "mqtt": mqtt,
            "beds": beds,
            "pumps": [p for p in config.pumps if p.bed in ids],
            "bags": [b for b in config.bags if b.bed in ids],
        }
    ).owning(wards)


def subscriptions(config: Config) -> list[str]:
    """What a daemon of ``config`` subscribes to: wildcards for one process, a worker's own
    topics (``config`` as ``for_partition`` gives it). The broker keeps them in the
    worker's session, under its client id."""
    prefix = config.mqtt.topic_prefix
    if config.daemon.workers > 1:
        # Its beds' topics only; the other workers take theirs. Sent in a few SUBSCRIBE
        # packets, not one per topic (daemon.links.mqtt).
        names = (topics.vitals, topics.observations, topics.bag)
        return [
            *sorted(name(prefix, bed.ward, bed.id) for bed in config.beds for name in names),
            *(topic for bed in config.beds for topic in topics.ack_filters(prefix, bed.ward, bed.id)),
            *(
                topic
                for ward in config.own_wards()
                for topic in topics.ack_filters(prefix, ward, ward_subject(ward))
            ),
        ]
    # Five wildcard subscriptions, whatever the number of beds. Messages for a bed that
    # is not configured are refused and counted (``unknown_bed``).
    return [
        topics.vitals(prefix, "+", "+"),
        topics.observations(prefix, "+", "+"),
        topics.bag(prefix, "+", "+"),
        *topics.ack_filters(prefix, "+", "+"),
        # Admin commands (README, "Admissions"): with one worker only.
        topics.admissions_by(prefix, "+"),
    ]


def client_id(config: Config, part: Partition | None) -> str:
    """The MQTT client id of a worker (``for_partition``), or of the process of one worker
    (``None``: ``wardd run`` without ``--partition``)."""
    if part is None:
        return config.mqtt.client_id
    return f"{config.mqtt.client_id}-{part.suffix()}"


def foreign_stores(config: Config) -> list[Path]:
    """Store files in the state folder that belong to another number of workers.

    Their beds' states would not be found by this layout: the daemon refuses to start
    over them rather than start those beds afresh; ``wardd repartition`` moves them
    (README, "Scale").
    """
    mine = set(store_paths(config))
    base = config.daemon.store_path
    candidates = [base, *base.parent.glob(f"{base.stem}.p*of*{base.suffix}")]
    return sorted(p for p in candidates if p.exists() and p not in mine)


class LayoutBusyError(WarddError):
    """The store layout is in use: a daemon runs over it, or a repartition moves it."""


def lock_path(config: Config) -> Path:
    """The lock beside the stores (``wardd.sqlite`` → ``wardd.lock``): every worker holds it
    shared while it runs, ``wardd repartition`` exclusively while it moves the states."""
    return config.daemon.store_path.with_suffix(".lock")


@contextlib.contextmanager
def layout_lock(config: Config, *, exclusive: bool) -> Iterator[None]:
    """Hold the layout's lock for the block; ``LayoutBusyError`` at once if the other side has it.

    An ``flock`` on a file of its own, never on a store: closing any descriptor of a
    SQLite file drops the locks SQLite holds on it. The kernel releases it when the
    process ends, however it ends, so a crash leaves no stale lock.
    """
    path = lock_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = (
                "a daemon runs over the stores" if exclusive else "`wardd repartition` is moving the stores"
            )
            raise LayoutBusyError(f"{path} is held: {holder}") from None
        yield
    finally:
        os.close(fd)


def repartition_plan(config: Config) -> Path:
    """Where ``wardd repartition`` writes the renames it is about to make: while it exists,
    the state folder may hold parts of two layouts and no daemon may start."""
    base = config.daemon.store_path
    return base.with_name(f"{base.stem}.repartition-plan.json")
