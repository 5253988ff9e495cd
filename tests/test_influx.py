"""Storage against real servers: influxd 1.x (v1 API) and victoria-metrics (v2 API), and the outbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.clock import SystemClock
from daemon.config import InfluxConfig
from daemon.errors import SinkError, SinkErrorKind
from daemon.events import Health
from daemon.links.influx import InfluxSink, make_writer
from daemon.links.store import StoreWriter
from daemon.metrics import Counters
from daemon.points import Point
from tests.helpers import committing, store_writer
from tests.servers import Influxd, VictoriaMetrics

pytestmark = pytest.mark.integration  # real servers, processes or pseudo-terminals

T0 = datetime(2026, 3, 2, 20, 0, 0, 123456, tzinfo=UTC)


def _points(n: int) -> list[Point]:
    return [
        Point("vitals", {"ward": "h", "bed": "12"}, {"temp_c": 37.0 + i / 100}, T0 + timedelta(seconds=i))
        for i in range(n)
    ]


def _sink(
    config: InfluxConfig,
    writer: StoreWriter,
    counters: Counters,
    health: list[Health] | None = None,
) -> InfluxSink:
    async def on_health(state: Health, detail: str) -> None:
        if health is not None:
            health.append(state)

    return InfluxSink(
        config,
        make_writer(config, None, writer.store.path.parent),
        writer,
        counters=counters,
        clock=SystemClock(),
        on_health=on_health,
    )


async def test_v1_writes_points_with_exact_timestamps(influx1: Influxd, tmp_path: Path) -> None:
    influx1.create_database("wardd")
    config = InfluxConfig(api="v1", url=influx1.url, database="wardd", batch_size=7)
    counters = Counters()
    async with committing(store_writer(tmp_path)) as writer:
        sink = _sink(config, writer, counters)
        for point in _points(20):
            sink.put(point)
        await sink.close()
    rows = influx1.query("wardd", "SELECT temp_c, bed, ward FROM vitals")
    assert len(rows) == 20
    assert rows[0] == {"time": "2026-03-02T20:00:00.123456Z", "temp_c": 37.0, "bed": "12", "ward": "h"}
    assert counters.get("influx.written") == 20
    assert writer.store.outbox_stats() == (0, 0)


async def test_v2_writes_to_victoria_metrics(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    config = InfluxConfig(api="v2", url=victoria.url, org="ward", bucket="wardd")
    counters = Counters()
    async with committing(store_writer(tmp_path)) as writer:
        sink = _sink(config, writer, counters)
        for point in _points(5):
            sink.put(point)
        await sink.close()
    series = victoria.export('{__name__="vitals_temp_c"}')
    assert len(series) == 1
    assert series[0]["metric"]["bed"] == "12"
    assert series[0]["values"] == [37.0, 37.01, 37.02, 37.03, 37.04]
    # victoria-metrics keeps milliseconds.
    assert series[0]["timestamps"][0] == int(T0.timestamp() * 1000)


async def test_database_down_keeps_points_then_sends_them_oldest_first(
    influx1: Influxd, tmp_path: Path
) -> None:
    influx1.create_database("wardd")
    config = InfluxConfig(api="v1", url=influx1.url, database="wardd", batch_size=10, timeout_s=2)
    counters = Counters()
    health: list[Health] = []
    points = _points(30)
    async with committing(store_writer(tmp_path)) as writer:
        sink = _sink(config, writer, counters, health)
        influx1.stop()
        for point in points[:15]:
            sink.put(point)
        await writer.flush()
        assert not await sink.flush()
        assert health == [Health.LOST]
        assert writer.store.outbox_stats()[0] == 15
        influx1.start()
        for point in points[15:]:
            sink.put(point)
        await writer.flush()
        assert await sink.flush()
        await sink.close()
    assert health == [Health.LOST, Health.CONNECTED]
    assert writer.store.outbox_stats() == (0, 0)
    rows = influx1.query("wardd", "SELECT temp_c FROM vitals")
    assert [row["temp_c"] for row in rows] == [p.fields["temp_c"] for p in points]
    assert counters.get("influx.written") == 30


async def test_outbox_survives_a_restart_of_the_sink(influx1: Influxd, tmp_path: Path) -> None:
    influx1.create_database("wardd")
    config = InfluxConfig(api="v1", url=influx1.url, database="wardd", timeout_s=2)
    influx1.stop()
    async with committing(store_writer(tmp_path)) as writer:
        first = _sink(config, writer, Counters())
        for point in _points(4):
            first.put(point)
        await first.close()
    writer.close()
    influx1.start()
    async with committing(store_writer(tmp_path)) as writer:
        second = _sink(config, writer, Counters())
        assert await second.flush()
        await second.close()
    assert len(influx1.query("wardd", "SELECT temp_c FROM vitals")) == 4


async def test_a_refused_point_is_dead_lettered_and_the_good_ones_stored(
    influx1: Influxd, tmp_path: Path
) -> None:
    influx1.create_database("wardd")
    config = InfluxConfig(api="v1", url=influx1.url, database="wardd", batch_size=100)
    counters = Counters()
    points = _points(10)
    # A string where the field is a float: influxd refuses that one point for good.
    bad = Point("vitals", {"ward": "h", "bed": "12"}, {"temp_c": "hot"}, T0 + timedelta(hours=1))
    async with committing(store_writer(tmp_path)) as writer:
        sink = _sink(config, writer, counters)
        for point in [*points[:5], bad, *points[5:]]:
            sink.put(point)
        await sink.close()
    assert len(influx1.query("wardd", "SELECT temp_c FROM vitals")) == 10
    [(_, line, reason)] = writer.store.dead_letters()
    assert 'temp_c="hot"' in line
    assert reason.startswith("refused: ")
    assert "field type conflict" in reason
    assert counters.get("influx.dead_lettered", "refused") == 1
    assert writer.store.outbox_stats() == (0, 0)


async def test_a_missing_database_keeps_every_point_waiting(influx1: Influxd, tmp_path: Path) -> None:
    config = InfluxConfig(api="v1", url=influx1.url, database="not_yet")
    health: list[Health] = []
    async with committing(store_writer(tmp_path)) as writer:
        sink = _sink(config, writer, Counters(), health)
        for point in _points(3):
            sink.put(point)
        await writer.flush()
        assert not await sink.flush()
        assert health == [Health.LOST], "a database that is not there is an outage, not bad data"
        assert writer.store.outbox_stats()[0] == 3
        influx1.create_database("not_yet")
        assert await sink.flush()
        await sink.close()
    assert writer.store.dead_letters() == []
    assert len(influx1.query("not_yet", "SELECT temp_c FROM vitals")) == 3


async def test_api_none_keeps_points_in_the_folder(tmp_path: Path) -> None:
    config = InfluxConfig(api="none", spool_dir=tmp_path / "points")
    async with committing(store_writer(tmp_path)) as writer:
        sink = _sink(config, writer, Counters())
        for point in _points(3):
            sink.put(point)
        await sink.close()
    lines = (tmp_path / "points" / "points.lp").read_text().splitlines()
    # influxdb-client writes a whole float without ".0"; it is still a float (an integer ends in "i").
    assert lines[0] == "vitals,bed=12,ward=h temp_c=37 1772481600123456000"
    assert len(lines) == 3


class _SlowForBigBatches:
    """A database that times out on batches larger than ``limit`` lines."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sizes: list[int] = []

    async def write(self, lines: list[str]) -> None:
        self.sizes.append(len(lines))
        if len(lines) > self.limit:
            raise SinkError("TimeoutError: ", retryable=True, kind=SinkErrorKind.TIMEOUT)

    async def close(self) -> None:
        """Nothing to release."""


async def test_timeouts_shrink_the_batch_until_the_database_keeps_up(tmp_path: Path) -> None:
    config = InfluxConfig(api="v1", batch_size=100)
    slow = _SlowForBigBatches(limit=30)
    counters = Counters()
    async with committing(store_writer(tmp_path)) as writer:
        sink = InfluxSink(config, slow, writer, counters=counters, clock=SystemClock())
        for point in _points(100):
            sink.put(point)
        await writer.flush()
        for _ in range(20):
            if await sink.flush():
                break
        await writer.flush()
    # 100 and 50 time out; 25 goes through, and the batch grows again only by a quarter.
    assert slow.sizes[:4] == [100, 50, 25, 35]
    assert counters.get("influx.written") == 100
    assert counters.get("influx.retries", "timeout") >= 2
    assert writer.store.outbox_stats() == (0, 0)
