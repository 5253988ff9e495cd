"""Storage against real servers: influxd 1.x (v1 API) and victoria-metrics (v2 API), and the spool."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon.clock import SystemClock
from daemon.config import InfluxConfig
from daemon.events import Health
from daemon.influx import InfluxSink, Spool, make_writer
from daemon.metrics import Counters
from daemon.points import Point
from tests.servers import Influxd, VictoriaMetrics

T0 = datetime(2026, 3, 2, 20, 0, 0, 123456, tzinfo=UTC)


def _points(n: int) -> list[Point]:
    return [
        Point("vitals", {"ward": "h", "bed": "12"}, {"temp_c": 37.0 + i / 100}, T0 + timedelta(seconds=i))
        for i in range(n)
    ]


def _sink(
    config: InfluxConfig, tmp_path: Path, counters: Counters, health: list[Health] | None = None
) -> InfluxSink:
    async def on_health(state: Health, detail: str) -> None:
        if health is not None:
            health.append(state)

    return InfluxSink(
        config,
        make_writer(config, None),
        Spool(tmp_path / "spool", 10_000_000),
        counters=counters,
        clock=SystemClock(),
        on_health=on_health,
    )


async def test_v1_writes_points_with_exact_timestamps(influx1: Influxd, tmp_path: Path) -> None:
    influx1.create_database("wardd")
    config = InfluxConfig(api="v1", url=influx1.url, database="wardd", batch_size=7)
    counters = Counters()
    sink = _sink(config, tmp_path, counters)
    for point in _points(20):
        sink.put(point)
    await sink.close()
    rows = influx1.query("wardd", "SELECT temp_c, bed, ward FROM vitals")
    assert len(rows) == 20
    assert rows[0] == {"time": "2026-03-02T20:00:00.123456Z", "temp_c": 37.0, "bed": "12", "ward": "h"}
    assert counters.get("influx.written") == 20


async def test_v2_writes_to_victoria_metrics(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    config = InfluxConfig(api="v2", url=victoria.url, org="ward", bucket="wardd")
    counters = Counters()
    sink = _sink(config, tmp_path, counters)
    for point in _points(5):
        sink.put(point)
    await sink.close()
    series = victoria.export('{__name__="vitals_temp_c"}')
    assert len(series) == 1
    assert series[0]["metric"]["bed"] == "12"
    assert series[0]["values"] == [37.0, 37.01, 37.02, 37.03, 37.04]
    # victoria-metrics keeps milliseconds.
    assert series[0]["timestamps"][0] == int(T0.timestamp() * 1000)


async def test_database_down_spools_then_drains_losing_nothing(influx1: Influxd, tmp_path: Path) -> None:
    influx1.create_database("wardd")
    config = InfluxConfig(api="v1", url=influx1.url, database="wardd", batch_size=10, timeout_s=2)
    counters = Counters()
    health: list[Health] = []
    sink = _sink(config, tmp_path, counters, health)
    points = _points(30)
    influx1.stop()
    for point in points[:15]:
        sink.put(point)
    await sink.flush()
    assert counters.get("influx.spooled") == 15
    assert health == [Health.LOST]
    assert len(list((tmp_path / "spool").glob("*.lp"))) >= 1
    influx1.start()
    for point in points[15:]:
        sink.put(point)
    await sink.flush()
    await sink.close()
    assert health == [Health.LOST, Health.CONNECTED]
    assert list((tmp_path / "spool").glob("*.lp")) == []
    rows = influx1.query("wardd", "SELECT temp_c FROM vitals")
    assert len(rows) == 30
    assert counters.get("influx.written") == 30


async def test_spool_survives_a_restart_of_the_sink(influx1: Influxd, tmp_path: Path) -> None:
    influx1.create_database("wardd")
    config = InfluxConfig(api="v1", url=influx1.url, database="wardd", timeout_s=2)
    influx1.stop()
    first = _sink(config, tmp_path, Counters())
    for point in _points(4):
        first.put(point)
    await first.close()
    influx1.start()
    second = _sink(config, tmp_path, Counters())
    await second.flush()
    await second.close()
    assert len(influx1.query("wardd", "SELECT temp_c FROM vitals")) == 4


async def test_refused_batch_is_kept_aside_not_retried(influx1: Influxd, tmp_path: Path) -> None:
    config = InfluxConfig(api="v1", url=influx1.url, database="no_such_db")
    counters = Counters()
    sink = _sink(config, tmp_path, counters)
    sink.put(_points(1)[0])
    await sink.close()
    assert counters.get("influx.rejected", "refused") == 1
    assert len(list((tmp_path / "spool" / "rejected").glob("*.lp"))) == 1


async def test_api_none_keeps_points_in_the_folder(tmp_path: Path) -> None:
    config = InfluxConfig(api="none")
    sink = _sink(config, tmp_path, Counters())
    for point in _points(3):
        sink.put(point)
    await sink.close()
    lines = [line for f in sorted((tmp_path / "spool").glob("*.lp")) for line in f.read_text().splitlines()]
    # influxdb-client writes a whole float without ".0"; it is still a float (an integer ends in "i").
    assert lines[0] == "vitals,bed=12,ward=h temp_c=37 1772481600123456000"
    assert len(lines) == 3
