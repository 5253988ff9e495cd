"""The cyclic garbage collector as ``wardd run`` tunes it (``daemon.app.tune_gc``): what
survives a collection is frozen, the dispatcher freezes what its work items leave, and
``collect_frozen`` frees the cycles frozen since."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon import app
from daemon.app import FULL_COLLECTIONS, collect_frozen, tune_gc
from daemon.events import Tick
from daemon.metrics import Counters
from tests.helpers import one_bed_config


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _dropped_cycles(n: int) -> list[weakref.ref[_Node]]:
    """``n`` reference cycles, frozen by a collection while alive, then dropped: only a
    full collection frees them."""
    nodes = [(_Node(), _Node()) for _ in range(n)]
    for a, b in nodes:
        a.other, b.other = b, a
    gc.collect(0)
    return [weakref.ref(a) for a, _ in nodes]


@pytest.fixture
def tuned() -> Iterator[None]:
    """``tune_gc`` for one test, undone after it (the collector is the process's own).
    Automatic collections are off meanwhile: only the test collects."""
    threshold = gc.get_threshold()
    try:
        tune_gc()
        gc.disable()
        yield
    finally:
        gc.enable()
        while app._freeze_survivors in gc.callbacks:
            gc.callbacks.remove(app._freeze_survivors)
        gc.set_threshold(*threshold)
        app._Frozen.blocks = 0
        gc.unfreeze()
        gc.collect()


@pytest.mark.usefixtures("tuned")
def test_what_survives_a_collection_is_frozen() -> None:
    frozen = gc.get_freeze_count()
    kept = [_Node() for _ in range(1000)]
    gc.collect(0)
    assert gc.get_freeze_count() >= frozen + len(kept)
    assert gc.get_count()[0] == 0


@pytest.mark.usefixtures("tuned")
def test_frozen_cycles_are_collected_once_the_allocated_blocks_have_grown_past_the_limit() -> None:
    counters = Counters()
    collect_frozen(counters)  # the first call: the blocks to compare with
    assert app._Frozen.blocks > 0
    assert counters.get(FULL_COLLECTIONS, "") == 0
    cycles = _dropped_cycles(10)
    blocks = sys.getallocatedblocks()
    app._Frozen.blocks = int(blocks / app.GC_THAW_GROWTH) + 1000  # not past the limit
    collect_frozen(counters)
    assert all(ref() is not None for ref in cycles)
    assert counters.get(FULL_COLLECTIONS, "") == 0
    app._Frozen.blocks = int(blocks / app.GC_THAW_GROWTH) - 1000
    collect_frozen(counters)
    assert all(ref() is None for ref in cycles)
    assert counters.get(FULL_COLLECTIONS, "") == 1
    assert 0 < app._Frozen.blocks <= blocks


def test_without_tune_gc_collect_frozen_does_nothing() -> None:
    counters = Counters()
    gc.disable()
    try:
        cycles = _dropped_cycles(1)
        gc.freeze()
        app._Frozen.blocks = 0
        collect_frozen(counters)
        assert cycles[0]() is not None
        assert counters.get(FULL_COLLECTIONS, "") == 0
    finally:
        gc.enable()
        gc.unfreeze()
        gc.collect()


async def test_the_dispatcher_freezes_what_its_work_items_left_every_so_many_items(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``GC_FREEZE_EVERY_ITEMS`` work items, one ``gc.freeze`` and no collection: what
    they left alive is out of the collector's sight without being walked."""
    monkeypatch.setattr(app, "GC_FREEZE_EVERY_ITEMS", 3)
    calls: list[str] = []

    def collect(generation: int = 2) -> int:
        calls.append(f"collect {generation}")
        return 0

    monkeypatch.setattr(gc, "collect", collect)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    pipeline = app.build(one_bed_config(datetime.now(UTC), state_dir=tmp_path))
    dispatch = asyncio.create_task(pipeline._dispatch())
    for _ in range(7):
        pipeline.work.put_nowait(Tick(datetime.now(UTC)))
    await pipeline.work.join()
    dispatch.cancel()
    pipeline.writer.close()
    assert calls == ["freeze", "freeze"]
