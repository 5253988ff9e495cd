"""Shared fixtures: private broker and databases, unique topic prefixes."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

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
