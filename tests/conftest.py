"""Shared fixtures: private broker and databases, unique topic prefixes."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests import servers


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[servers.Mosquitto]:
    """A private mosquitto for one test (it may stop and restart it)."""
    with servers.mosquitto(tmp_path / "mosquitto") as server:
        yield server


@pytest.fixture
def influx1(tmp_path: Path) -> Iterator[servers.Influxd]:
    """A private influxd 1.x (v1 write API) for one test."""
    with servers.influxd(tmp_path / "influxd") as server:
        yield server


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[servers.VictoriaMetrics]:
    """A private victoria-metrics (InfluxDB v2 write API) for one test."""
    with servers.victoria_metrics(tmp_path / "vm") as server:
        yield server


_prefixes = itertools.count()


@pytest.fixture
def prefix() -> str:
    """A topic prefix no other test uses (aiomqtt's unique_topic idea)."""
    return f"t{os.getpid()}x{next(_prefixes)}"


@pytest.fixture(autouse=True)
def _pure_unless_marked_integration(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked ``integration`` may not start a process, a pseudo-terminal or a server.

    So ``pytest -m "not integration"`` is a fast, pure run, and a test that forgets its
    mark fails with a message that says so instead of slowing that run down.
    """
    if request.node.get_closest_marker("integration") is not None:
        return
    where = request.node.nodeid

    def refuse(*_args: object, **_kwargs: object) -> NoReturn:
        raise RuntimeError(f"{where} starts a process, a pseudo-terminal or a server: mark it integration")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(os, "openpty", refuse)
    monkeypatch.setattr(asyncio.BaseEventLoop, "create_server", refuse)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under mutmut, run a mutant's tests fastest first.

    mutmut runs each mutant's tests with ``-x`` from its ``mutants/`` folder, where it keeps
    every test's duration. The verdict (some test fails, or none) does not depend on the
    order; fastest first finds a killing unit test before the golden cases that take
    seconds each. Outside a mutation run, the order is left alone.
    """
    if "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", ""):
        return
    stats = Path("mutmut-stats.json")
    if not stats.exists():
        return
    durations = json.loads(stats.read_text()).get("duration_by_test", {})
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
