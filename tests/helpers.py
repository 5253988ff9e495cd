"""Builders the tests share: a one-bed ward config, a ward's config file for ``wardd run``,
and a loop that feeds a rule."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from daemon.app import Pipeline
from daemon.config import Config, parse
from daemon.events import AlertCandidate, Event, Health, PumpReading, SourceHealth, VitalSample
from daemon.links.store import Changes, Store, StoreWriter
from daemon.rules import Rule

S = TypeVar("S")

WAIT_S = 10.0  # safety net only: every wait ends on an event long before this


def one_bed_config(
    start: datetime,
    *,
    weight_kg: float = 63,
    state_dir: Path | None = None,
    site_steps: Sequence[Mapping[str, Any]] | None = None,
    **thresholds: Mapping[str, Any],
) -> Config:
    """Ward w1 with bed b1 (165 cm, ``weight_kg``) on protocol from ``start``.

    ``thresholds`` are ward threshold sections by name, e.g. ``vitals={"fever_c": 38.5}``.
    ``state_dir``: for a test that builds a pipeline (the default is the service's folder).
    ``site_steps``: the bed is on a site protocol named "site" with these steps (the
    default protocol otherwise).
    """
    site = {} if site_steps is None else {"protocol": "site"}
    return parse(
        {
            **({"daemon": {"state_dir": str(state_dir)}} if state_dir is not None else {}),
            **({} if site_steps is None else {"protocols": {"site": {"steps": list(site_steps)}}}),
            "thresholds": thresholds,
            "beds": [
                {
                    "ward": "w1",
                    "id": "b1",
                    "patient": "p-1",
                    "weight_kg": weight_kg,
                    "height_cm": 165,
                    **site,
                    "protocol_start": start.isoformat(),
                }
            ],
        }
    )


FAST_RECONNECT = "reconnect_min_s = 0.1\nreconnect_max_s = 0.5"
"""Under ``[mqtt]``: a broker back after a restart is found within half a second."""

QUICK_FEVER = """
[thresholds.vitals]
confirm_samples = 2
fever_delay_s = 2.0
telemetry_stale_s = 86400.0
"""
"""FEVER opens 2 s and 2 samples into a fever, so within seconds; telemetry never goes stale
during a test, so the end of its publishing opens no alert while it compares alert views."""


def bed_tables(
    ward: str, beds: Sequence[str] | Mapping[str, str], *, start: datetime, weight_kg: float = 63
) -> str:
    """``[[beds]]`` of ``ward`` (165 cm, ``weight_kg``) on the SSc protocol since ``start``.

    ``beds``: bed ids (the patient of bed ``1`` is ``P-1``), or bed id -> patient.
    """
    patients = beds if isinstance(beds, Mapping) else {bed: f"P-{bed}" for bed in beds}
    return "".join(
        f"""
[[beds]]
ward = "{ward}"
id = "{bed}"
patient = "{patient}"
weight_kg = {weight_kg}
height_cm = 165
protocol = "ssc-14d"
protocol_start = "{start.isoformat()}"
"""
        for bed, patient in patients.items()
    )


def write_ward_config(
    path: Path,
    *,
    mqtt_url: str,
    prefix: str | None = None,
    ward: str = "w1",
    beds: Sequence[str] | Mapping[str, str] | None = None,
    start: datetime | None = None,
    weight_kg: float = 63,
    daemon: str = "",
    mqtt: str = FAST_RECONNECT,
    influx: str = 'api = "none"',
    tables: str = "",
) -> Path:
    """A config file for ``wardd run``, its state in ``state/`` beside it; ``path``.

    ``beds`` of ``ward`` as ``bed_tables`` takes them (default bed ``b1``, patient ``P-1``),
    on the SSc protocol since ``start`` (default 12 h ago). ``prefix`` is the topic prefix
    and names the client ``wardd-<prefix>`` (``None``: the daemon's defaults). ``daemon``,
    ``mqtt`` and ``influx`` are more lines under those tables (``influx`` by default keeps
    points in a file); ``tables``, more tables, written before the beds.
    """
    start = start if start is not None else datetime.now(UTC) - timedelta(hours=12)
    names = f'client_id = "wardd-{prefix}"\ntopic_prefix = "{prefix}"' if prefix is not None else ""
    path.write_text(
        f"""
[daemon]
state_dir = "{path.parent / "state"}"
{daemon}

[mqtt]
url = "{mqtt_url}"
{names}
{mqtt}

[influx]
{influx}
{tables}
{bed_tables(ward, {"b1": "P-1"} if beds is None else beds, start=start, weight_kg=weight_kg)}"""
    )
    return path


def run(rule: Rule[S], events: Iterable[Event], state: S | None = None) -> tuple[S, list[AlertCandidate]]:
    """Feed ``events`` to ``rule`` at their own times; the last state and every candidate."""
    current = rule.initial() if state is None else state
    out: list[AlertCandidate] = []
    for event in events:
        current, candidates = rule.step(current, event, event.time)
        out.extend(candidates)
    return current, out


@contextlib.asynccontextmanager
async def running(pipeline: Pipeline) -> AsyncIterator[Pipeline]:
    """Run ``pipeline`` in a task until the block ends (then stop it and wait for it)."""
    task = asyncio.create_task(pipeline.run(), name="test.pipeline")
    await asyncio.wait_for(pipeline.link.connected.wait(), 10)
    try:
        yield pipeline
    finally:
        pipeline.stop.set()
        await asyncio.wait_for(task, 30)


def wardd(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """``python -m daemon ARGS`` as a real process, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args], check=check, capture_output=True, text=True, timeout=60
    )


def store_writer(folder: Path) -> StoreWriter:
    """A store in ``folder`` (reopened if it exists), with a writer that ``commit_staged`` drives."""
    return StoreWriter(Store(folder / "wardd.sqlite"))


def commit_staged(writer: StoreWriter) -> None:
    """Commit what is staged, synchronously (unit tests, where no writer task runs)."""
    changes, writer.changes = writer.changes, Changes()
    writer.store.apply(changes)


@contextlib.asynccontextmanager
async def committing(writer: StoreWriter) -> AsyncIterator[StoreWriter]:
    """``writer`` with its commit task running; everything staged is committed on the way out."""
    task = asyncio.create_task(writer.run(), name="store.commit")
    try:
        yield writer
        await writer.flush()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Counting:
    """A rule that counts the vitals messages it is stepped with: an input replayed to it
    twice shows (the real rules ignore a sample whose time they already have). Its name
    sorts before the real rules'."""

    name = "acount"
    consumes = (VitalSample,)

    def initial(self) -> int:
        return 0

    def step(self, state: int, event: Event, now: datetime) -> tuple[int, Sequence[AlertCandidate]]:
        return state + 1, ()

    def dump(self, state: int) -> Mapping[str, Any]:
        return {"n": state}

    def load(self, data: Mapping[str, Any]) -> int:
        return int(data["n"])


class Events:
    """Collects what a pump source emits; ``until`` awaits the first matching event."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.seen: list[Event] = []

    async def emit(self, event: Event) -> None:
        self.seen.append(event)
        self.queue.put_nowait(event)

    async def until(self, predicate: Callable[[Event], bool]) -> Event:
        async with asyncio.timeout(WAIT_S):
            while True:
                event = await self.queue.get()
                if predicate(event):
                    return event

    async def reading(self, predicate: Callable[[PumpReading], bool] = lambda r: True) -> PumpReading:
        event = await self.until(lambda e: isinstance(e, PumpReading) and predicate(e))
        assert isinstance(event, PumpReading)
        return event

    async def health(self, health: Health) -> SourceHealth:
        event = await self.until(lambda e: isinstance(e, SourceHealth) and e.health is health)
        assert isinstance(event, SourceHealth)
        return event


def assert_window_is_tuple(window: Sequence[Any], model: tuple[Any, ...]) -> None:
    """``window`` (a ``daemon.frozen.ColumnWindow``) behaves as the tuple
    ``model`` of its entries: equality both ways, hash, order, indexing and slices."""
    assert window == model
    assert model == window
    assert hash(window) == hash(model)
    assert list(reversed(window)) == list(reversed(model))
    assert len(window) == len(model)
    assert [window[i] for i in range(-len(model), len(model))] == [*model, *model]
    assert window[::2] == model[::2]


async def http_get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str]:
    """GET ``path`` on a local port (the health probes): the status and the body."""
    shown = f"[{host}]" if ":" in host else host
    async with aiohttp.ClientSession() as session, session.get(f"http://{shown}:{port}{path}") as reply:
        return reply.status, await reply.text()
