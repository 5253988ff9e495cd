"""The bed page's charts and the tiles' trends: the protocol's staircase, the series'
memory, the SVG drawn, and the page over HTTP reading a real influxd 1.x, then carrying
on from memory with a note when that database is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from daemon.app import Pipeline, build, vitals_point
from daemon.clinical.dose import BOLUS_SUSPECTED, INFUSION_INTERRUPTED
from daemon.clock import ManualClock
from daemon.config import parse
from daemon.events import Metric, PumpReading, PumpState, VitalSample
from daemon.metrics import Counters
from daemon.points import Point
from daemon.web import bedcharts, charts, i18n
from daemon.web.history import (
    DELIVERED,
    HistoryUnavailableError,
    RecentHistory,
    influxql,
    parse_results,
    trend,
)
from daemon.web.passwords import hash_password
from daemon.web.server import WardPage
from tests.helpers import committing, one_bed_config
from tests.servers import Influxd, free_port

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SVG = "{http://www.w3.org/2000/svg}"


def _svg(markup: str, chart_id: str) -> ET.Element:
    found = re.search(rf'<svg id="{chart_id}".*?</svg>', markup, re.DOTALL)
    assert found is not None, chart_id
    return ET.fromstring(found[0])


def _points(d: str) -> list[tuple[float, float]]:
    """The absolute points of a path drawn with M, l, h and v (``daemon.web.charts``)."""
    out: list[tuple[float, float]] = []
    x = y = 0.0
    for command, args in re.findall(r"([Mlhv])([^Mlhv]*)", d):
        numbers = [float(n) for n in re.findall(r"-?[\d.]+", args)]
        if command == "M":
            x, y = numbers
        elif command == "l":
            x, y = x + numbers[0], y + numbers[1]
        elif command == "h":
            x += numbers[0]
            continue  # a staircase's step: its point comes with the "v" after it
        else:
            y += numbers[0]
        out.append((x, y))
    return out


def _by(svg: ET.Element, tag: str, attribute: str) -> dict[str, ET.Element]:
    return {node.attrib[attribute]: node for node in svg.iter(f"{SVG}{tag}") if attribute in node.attrib}


# --- the protocol's staircase and the journal's marks ------------------------------------------


def test_the_expected_dose_is_the_protocols_staircase_with_the_step_at_day_8() -> None:
    config = one_bed_config(T0)
    pipeline = build(config, clock=ManualClock(T0 + 3 * DAY))
    begin, end, points = bedcharts.course(pipeline.engine, config, config.beds[0], T0 + 3 * DAY)
    assert (begin, end) == (T0, T0 + 14 * DAY)
    start = T0.timestamp()
    # ssc-14d: 9 µg/day for days 1-7, 28 µg/day for days 8-14, then nothing.
    assert points == [(start, 9.0), (start + 7 * 86400, 28.0), (start + 14 * 86400, 0.0)]
    pipeline.writer.close()


def test_interruptions_are_shaded_from_their_start_and_boluses_marked_from_the_journal() -> None:
    def line(seq: int, condition: str, what: str, at: datetime, onset: datetime, **details: Any) -> Any:
        alert = {
            "id": f"{condition}-{seq // 10}",
            "condition": condition,
            "since": onset.isoformat(),
            "details": details,
        }
        return seq, {"at": at.isoformat(), "what": what, "alert": alert}

    stop = T0 + 2 * DAY
    lines = [
        # Raised 15 min after the stop; the shading starts at the stop (details.since).
        line(10, INFUSION_INTERRUPTED, "start", stop + timedelta(minutes=15), stop, since=stop.isoformat()),
        line(11, INFUSION_INTERRUPTED, "escalate", stop + timedelta(hours=4), stop, since=stop.isoformat()),
        line(12, INFUSION_INTERRUPTED, "end", stop + timedelta(hours=5), stop, since=stop.isoformat()),
        line(20, INFUSION_INTERRUPTED, "start", T0 + 3 * DAY, T0 + 3 * DAY, since=(T0 + 3 * DAY).isoformat()),
        line(30, BOLUS_SUSPECTED, "start", T0 + DAY, T0 + DAY),
        line(31, BOLUS_SUSPECTED, "ack", T0 + DAY + timedelta(minutes=2), T0 + DAY),
    ]
    now = T0 + 3 * DAY + timedelta(hours=1)
    bands, marks, found = bedcharts.dose_events(list(reversed(lines)), now)  # newest first, as read
    assert [(b.begin, b.end) for b in bands] == [
        (stop.timestamp(), (stop + timedelta(hours=5)).timestamp()),
        ((T0 + 3 * DAY).timestamp(), now.timestamp()),  # still open: up to now
    ]
    assert [m.at for m in marks] == [(T0 + DAY).timestamp()]
    assert found == {INFUSION_INTERRUPTED: 2, BOLUS_SUSPECTED: 1}


def test_a_bed_not_yet_on_protocol_shows_its_course_ahead_and_unreadable_journal_lines_are_left_out() -> None:
    config = one_bed_config(T0)
    now = T0 - DAY
    pipeline = build(config, clock=ManualClock(now))
    series = bedcharts.Series(
        vitals={}, delivered=[], source="memory", reason="memory_no_database", step_s=120, dose_step_s=120
    )
    broken: list[tuple[int, dict[str, Any]]] = [
        (1, {"at": "yesterday", "what": "end", "alert": {"id": "a", "condition": INFUSION_INTERRUPTED}}),
        (
            2,
            {"at": T0.isoformat(), "what": "start", "alert": {"id": "b", "condition": BOLUS_SUSPECTED}},
        ),  # no onset
        (3, {"what": "start", "alert": "not an alert"}),
    ]
    markup = bedcharts.charts_html(
        config=config,
        engine=pipeline.engine,
        bed=config.beds[0],
        series=series,
        journal=broken,
        now=now,
        span="course",
        language="en",
    )
    pipeline.writer.close()
    dose = _svg(markup, "chart-dose")
    assert _by(dose, "path", "data-series")["expected"].attrib["data-points"] == "3"
    assert _by(dose, "line", "data-mark") == {}  # now is before the course: not drawn
    assert _by(dose, "rect", "data-band") == {}
    assert "No data for this period." in markup
    assert "interruptions (0)" in markup
    assert "suspected boluses (0)" in markup


# --- the memory ----------------------------------------------------------------------------------


def test_the_memory_keeps_bucket_means_takes_late_samples_and_is_bounded() -> None:
    recent = RecentHistory(keep_s=600, bucket_s=60)
    base = T0.timestamp()
    for i in range(30):  # 15 minutes at one sample every 30 s: 15 buckets, 11 kept
        recent.add("b1", "temp_c", T0 + timedelta(seconds=30 * i), 37.0 + (i % 2))
    kept = recent.series("b1", "temp_c", 0, base + 3600)
    assert len(kept) == 11
    assert all(value == pytest.approx(37.5) for _, value in kept)
    assert kept[0][0] == base + 4 * 60 + 30  # the oldest kept bucket, drawn at its middle
    # A late sample joins its bucket; one older than the memory is left out.
    recent.add("b1", "temp_c", T0 + timedelta(minutes=14, seconds=10), 40.0)
    assert recent.series("b1", "temp_c", base + 14 * 60, base + 15 * 60)[0][1] == pytest.approx(
        (37 + 38 + 40) / 3
    )
    recent.add("b1", "temp_c", T0, 45.0)
    assert len(recent.series("b1", "temp_c", 0, base + 3600)) == 11
    assert recent.series("b1", "temp_c", 0, base + 60) == []
    recent.add("b1", "temp_c", T0 + timedelta(hours=1), float("nan"))  # never drawn
    assert recent.series("b2", "temp_c", 0, base + 7200) == []


def test_a_trend_is_quarter_hour_means_over_six_hours_with_none_where_nothing_came() -> None:
    recent = RecentHistory()
    now = T0 + timedelta(hours=6)
    for minute in range(0, 6 * 60, 2):
        if 60 <= minute < 90:
            continue  # a monitor off for half an hour
        recent.add("b1", "hr_per_min", T0 + timedelta(minutes=minute), 80.0 if minute < 300 else 120.0)
    values = trend(recent, "b1", "hr_per_min", now)
    assert len(values) == 24
    assert values[4:6] == [None, None]
    assert values[:4] == [80.0] * 4
    assert values[-4:] == [120.0] * 4
    assert trend(recent, "b2", "hr_per_min", now) == [None] * 24


async def test_without_a_readable_database_the_series_come_from_memory_and_say_why() -> None:
    recent = RecentHistory()
    recent.add("b1", "temp_c", T0, 37.2)
    recent.add("b1", DELIVERED, T0, 9.0)
    bed = one_bed_config(T0).beds[0]
    counters = Counters()
    window = (T0.timestamp() - 3600, T0.timestamp() + 3600)
    for api, reason in (("v2", "memory_v2"), ("none", "memory_no_database")):
        series = await bedcharts.read_series(
            bed=bed,
            api=api,
            influx=None,
            recent=recent,
            counters=counters,
            vitals_window=window,
            dose_window=window,
        )
        assert (series.source, series.reason) == ("memory", reason)
        assert series.vitals["temp_c"] == [(T0.timestamp() + 60, 37.2)]
        assert series.delivered == [(T0.timestamp() + 60, 9.0)]
        assert counters.get("web.history", reason) == 1
    v2 = bedcharts.Series(
        vitals={}, delivered=[], source="memory", reason="memory_v2", step_s=120, dose_step_s=120
    )
    assert "The charts do not read InfluxDB v2 yet:" in bedcharts.note(v2, i18n.texts("en"), "en")


# --- the SVG ------------------------------------------------------------------------------------


def test_a_chart_draws_series_with_gaps_thresholds_at_their_height_and_marks() -> None:
    begin = T0.timestamp()
    samples = [(begin + 60 * i, 37.0 + i / 10) for i in range(10)] + [
        (begin + 3600 + 60 * i, 38.5) for i in range(5)
    ]
    chart = charts.Chart(
        id="c1",
        title="Temperature <°C>",
        begin=begin,
        end=begin + 2 * 3600,
        lines=[charts.Line("temp_c", "T (°C)", samples, gap_s=180)],
        thresholds=[charts.Threshold("fever_c", "fever ≥ 38.0 °C", 38.0)],
        marks=[charts.Mark("now", "now", begin + 5400), charts.Mark("late", "outside", begin + 9000)],
    )
    svg = ET.fromstring(charts.render(chart))
    assert svg.find(f"{SVG}title").text == "Temperature <°C>"  # type: ignore[union-attr]
    path = _by(svg, "path", "data-series")["temp_c"]
    assert path.attrib["data-points"] == "15"
    assert path.attrib["d"].count("M") == 2  # an hour without data is a gap, not a line
    threshold = _by(svg, "line", "data-threshold")["fever_c"]
    assert threshold.attrib["data-value"] == "38"
    # Higher values are higher on the screen: 38.0 lies between the first and the last point.
    drawn = _points(path.attrib["d"])
    assert len(drawn) == 15
    ys = [y for _, y in drawn]
    # The first point at the left edge; the last at 1 h 04 min of the 2 h span.
    assert drawn[0][0] == pytest.approx(46)
    assert drawn[-1][0] == pytest.approx(46 + (64 / 120) * (720 - 68), abs=0.2)
    assert ys[-1] < float(threshold.attrib["y1"]) < ys[0]
    assert set(_by(svg, "line", "data-mark")) == {"now"}  # the mark outside the span is left out
    ticks = [t for t in svg.iter(f"{SVG}text") if "data-at" in t.attrib]
    assert [t.text for t in ticks] == ["08:00", "09:00", "10:00"]
    assert ticks[0].attrib["data-at"] == "2026-03-02T08:00:00Z"


def test_an_empty_chart_says_so_and_a_step_line_is_a_staircase() -> None:
    begin = T0.timestamp()
    empty = ET.fromstring(
        charts.render(charts.Chart(id="e", title="x", begin=begin, end=begin + 60, empty_text="No data"))
    )
    assert [t.text for t in empty.iter(f"{SVG}text") if t.attrib.get("class") == "empty"] == ["No data"]
    stairs = charts.Chart(
        id="s",
        title="dose",
        begin=begin,
        end=begin + 14 * 86400,
        lines=[charts.Line("expected", "expected", [(begin, 9.0), (begin + 7 * 86400, 28.0)], step=True)],
        day_axis_from=begin,
        day_word="J",
        y_floor=0.0,
    )
    svg = ET.fromstring(charts.render(stairs))
    stairs_d = _by(svg, "path", "data-series")["expected"].attrib["d"]
    assert re.fullmatch(r"M[\d.]+ [\d.]+h[\d.]+v-[\d.]+", stairs_d)  # across, then up to 28
    (x0, y0), (x1, y1) = _points(stairs_d)
    assert x1 - x0 == pytest.approx((720 - 68) / 2, abs=0.2)  # the step at day 8 of 14
    assert y1 < y0
    labels = [t.text for t in svg.iter(f"{SVG}text") if t.attrib.get("class") == "tick x"]
    assert labels[:3] == ["J1", "J2", "J3"]
    assert "0" in [t.text for t in svg.iter(f"{SVG}text") if t.attrib.get("class") == "tick y"]


def test_the_thresholds_drawn_are_the_beds_own_from_the_config() -> None:
    config = parse(
        {
            "thresholds": {"vitals": {"fever_c": 38.3, "hypoxia_spo2_pct": 90}},
            "beds": [
                {
                    "ward": "w1",
                    "id": "b1",
                    "patient": "p-1",
                    "weight_kg": 63,
                    "height_cm": 165,
                    "protocol_start": T0.isoformat(),
                    "thresholds": {"vitals": {"fever_c": 38.6}},
                },
            ],
        }
    )
    pipeline = build(config, clock=ManualClock(T0 + DAY))
    series = bedcharts.Series(
        vitals={str(m): [((T0 + DAY).timestamp() - 600, 50.0)] for m in Metric},
        delivered=[],
        source="memory",
        reason="memory_no_database",
        step_s=120,
        dose_step_s=120,
    )
    markup = bedcharts.charts_html(
        config=config,
        engine=pipeline.engine,
        bed=config.beds[0],
        series=series,
        journal=[],
        now=T0 + DAY,
        span="24h",
        language="fr",
    )
    pipeline.writer.close()
    temp = _by(_svg(markup, "chart-temp"), "line", "data-threshold")
    assert temp["fever_c"].attrib["data-value"] == "38.6"
    assert "fièvre ≥ 38,6 °C" in markup
    assert (
        _by(_svg(markup, "chart-spo2"), "line", "data-threshold")["hypoxia_spo2_pct"].attrib["data-value"]
        == "90"
    )
    pressure = _by(_svg(markup, "chart-pressure"), "line", "data-threshold")
    assert set(pressure) == {"hypotension_sbp_mmhg", "hypotension_map_mmhg"}
    assert 'data-reason="memory_no_database"' in markup
    assert "Aucune base de séries temporelles" in markup


# --- InfluxDB's answers ---------------------------------------------------------------------------


def test_an_influxdb_answer_becomes_series_and_its_errors_are_refused() -> None:
    data = {
        "results": [
            {
                "statement_id": 0,
                "series": [
                    {
                        "name": "vitals",
                        "columns": ["time", "temp_c", "hr_per_min"],
                        "values": [[100, 37.5, None], [160, 38.2, 88]],
                    }
                ],
            },
            {"statement_id": 1},
        ]
    }
    odd = {
        "results": [
            {"series": [{"columns": ["time", "temp_c"], "values": [[1, float("nan")], [2, True], [3, 37.0]]}]}
        ]
    }
    assert parse_results(odd) == [{"temp_c": [(3.0, 37.0)]}]
    assert parse_results(data) == [
        {"temp_c": [(100.0, 37.5), (160.0, 38.2)], "hr_per_min": [(160.0, 88.0)]},
        {},
    ]
    bad_answers: list[object] = [
        {"results": [{"series": [{"columns": ["time", "temp_c"], "values": [[None, 37.0]]}]}]},
        {"results": [{"series": [{"columns": ["time", "temp_c"], "values": ["row"]}]}]},
        {"results": [{"series": ["not a series"]}]},
        {"results": ["not a result"]},
        {"error": "boom"},
        {"results": [{"error": "database not found: wardd"}]},
        [],
        {"x": 1},
    ]
    for bad in bad_answers:
        with pytest.raises(HistoryUnavailableError) as caught:
            parse_results(bad)
        assert caught.value.reason == "influx_error"
    query = influxql("vitals", ["temp_c"], "w'1", "b1", 100.5, 200.5, 60)
    assert "\"ward\" = 'w\\'1'" in query
    assert "time >= 100s AND time <= 201s GROUP BY time(60s)" in query


# --- the page over HTTP, with a real influxd ---------------------------------------------------------

PASSWORD = "nurse password"


def _config(tmp_path: Path, influx: dict[str, Any]) -> Any:
    return parse(
        {
            "daemon": {"state_dir": str(tmp_path / "state")},
            "influx": influx,
            "web": {
                "enabled": True,
                "port": 0,
                "users": [
                    {
                        "name": "nurse1",
                        "role": "nurse",
                        "display_name": "Nurse One",
                        "language": "en",
                        "password_hash": hash_password(PASSWORD, log2_n=10),
                    }
                ],
            },
            "beds": [
                {
                    "ward": "w1",
                    "id": "b1",
                    "patient": "p-1",
                    "weight_kg": 63,
                    "height_cm": 165,
                    "protocol_start": T0.isoformat(),
                }
            ],
        }
    )


@contextlib.asynccontextmanager
async def _page(
    tmp_path: Path, influx: dict[str, Any], now: datetime
) -> AsyncIterator[tuple[Pipeline, TestClient[Any, Any]]]:
    pipeline = build(_config(tmp_path, influx), clock=ManualClock(now))
    page = pipeline.services[0]
    assert isinstance(page, WardPage)
    async with committing(pipeline.writer), TestClient(TestServer(page.app())) as client:
        form = await (await client.get("/login")).text()
        token = re.search(r'name="csrf" value="([^"]+)"', form)[1]  # type: ignore[index]
        response = await client.post(
            "/login", data={"csrf": token, "user": "nurse1", "password": PASSWORD}, allow_redirects=False
        )
        assert response.status == 303
        try:
            yield pipeline, client
        finally:
            await page.close_history()
    pipeline.writer.close()


def _samples(hours: int) -> list[VitalSample]:
    """A sample a minute from T0 on: 37 °C, then 38.2 °C from hour 12 (the published case's fever)."""
    return [
        VitalSample(
            "w1",
            "b1",
            "mon-1",
            T0 + timedelta(minutes=m),
            {Metric.TEMP_C: 38.2 if m >= 12 * 60 else 37.0, Metric.HR_PER_MIN: 80.0},
        )
        for m in range(hours * 60)
    ]


def _write(influxd: Influxd, points: list[Point]) -> None:
    body = "\n".join(point.to_line() for point in points).encode()
    request = urllib.request.Request(f"{influxd.url}/write?db=wardd&precision=ns", data=body, method="POST")
    urllib.request.urlopen(request, timeout=10).close()


@pytest.mark.integration  # a private influxd and an HTTP server on loopback
async def test_the_charts_read_influxdb_and_carry_on_from_memory_with_a_note_when_it_stops(
    tmp_path: Path, influx1: Influxd
) -> None:
    influx1.create_database("wardd")
    now = T0 + timedelta(hours=20)
    samples = _samples(20)
    # Twenty hours in the database, of which the page's memory holds only the last two.
    dose = [
        Point(
            "dose",
            {"ward": "w1", "bed": "b1", "protocol": "ssc-14d"},
            {DELIVERED: 9.0},
            T0 + timedelta(minutes=10 * i),
        )
        for i in range(6 * 20)
    ]
    _write(influx1, [vitals_point(s) for s in samples] + dose)
    async with _page(tmp_path, {"api": "v1", "url": influx1.url, "database": "wardd"}, now) as (
        pipeline,
        client,
    ):
        for sample in samples[-120:]:  # the page saw only the last two hours itself
            await pipeline.process(sample)
        page = await (await client.get("/bed/b1")).text()
        assert 'data-source="influx"' in page
        temp = _svg(page, "chart-temp")
        drawn = _by(temp, "path", "data-series")["temp_c"]
        assert int(drawn.attrib["data-points"]) > 200  # the whole day from the database, not two hours
        assert _by(temp, "line", "data-threshold")["fever_c"].attrib["data-value"] == "38"
        dose_svg = _svg(page, "chart-dose")
        # The course's 14 days in 360 intervals of 56 min: 20 hours of doses are 22 points.
        delivered = _by(dose_svg, "path", "data-series")["delivered"]
        assert delivered.attrib["data-points"] == "22"
        # One line: its gaps are judged on the dose's intervals, not the vital signs'.
        assert delivered.attrib["d"].count("M") == 1
        assert "each point is the mean of 4 min (vital signs) or 56 min (dose)" in page
        assert _by(dose_svg, "line", "data-mark")["now"] is not None
        assert pipeline.counters.get("web.history", "influx") == 1

        influx1.stop()
        started = time.monotonic()
        response = await client.get("/bed/b1")
        took_s = time.monotonic() - started
        page = await response.text()
        assert response.status == 200
        assert took_s < 3.0  # the page does not hang on a database that is away
        assert 'data-source="memory"' in page
        assert 'data-reason="influx_unavailable"' in page
        assert "InfluxDB did not answer" in page
        points = int(_by(_svg(page, "chart-temp"), "path", "data-series")["temp_c"].attrib["data-points"])
        assert 25 <= points <= 31  # two hours of memory, in the 24 h span's 4-minute means
        assert pipeline.counters.get("web.history", "influx_unavailable") == 1
        # Asked again at once: the database is left alone for a while, and that is counted too.
        page = await (await client.get("/bed/b1")).text()
        assert 'data-reason="influx_resting"' in page
        assert pipeline.counters.get("web.history", "influx_resting") == 1


@pytest.mark.integration  # an HTTP server on loopback
async def test_without_a_database_the_charts_come_from_memory_and_a_bad_span_is_refused(
    tmp_path: Path,
) -> None:
    now = T0 + timedelta(hours=13)
    async with _page(tmp_path, {"api": "none"}, now) as (pipeline, client):
        for sample in _samples(13):
            await pipeline.process(sample)
        for minute in range(0, 13 * 60, 10):
            await pipeline.process(
                PumpReading(
                    "w1",
                    "b1",
                    "pump-b1",
                    T0 + timedelta(minutes=minute),
                    PumpState.INFUSING,
                    10.0,
                    minute / 6,
                )
            )
        page = await (await client.get("/bed/b1?span=6h")).text()
        assert 'data-reason="memory_no_database"' in page
        assert pipeline.counters.get("web.history", "memory_no_database") == 1
        temp = _by(_svg(page, "chart-temp"), "path", "data-series")["temp_c"]
        assert 170 <= int(temp.attrib["data-points"]) <= 181  # six hours, one point per 2 min
        assert "each point is the mean of 2 min" in page
        assert '<b class="span" aria-current="true">6 h</b>' in page
        dose_svg = _svg(page, "chart-dose")
        expected = _by(dose_svg, "path", "data-series")["expected"]
        assert expected.attrib["data-points"] == "3"  # 9, then 28 at day 8, then 0 at the end
        # The tile's trend: six hours in quarters of an hour, the fever in the last hour.
        [tile] = (await (await client.get("/api/ward")).json())["beds"]
        temp_trend = tile["trend"]["temp_c"]
        assert len(temp_trend) == 24
        assert temp_trend[-4:] == [38.2] * 4
        assert temp_trend[:20] == [37.0] * 20
        assert "dbp_mmhg" not in tile["trend"]  # the tile shows no DBP
        response = await client.get("/bed/b1?span=1y")
        assert response.status == 400
        assert pipeline.counters.get("web.refused", "bad_span") == 1
        # The charts alone, as the page's script fetches them every minute.
        fragment = await (await client.get("/bed/b1/charts?span=6h")).text()
        assert fragment.startswith('<section class="history charts" id="charts">')
        assert '<time datetime="2026-03-02T21:00:00Z">' in fragment  # drawn at the daemon's now
        assert '<b class="span" aria-current="true">6 h</b>' in fragment
        assert _svg(fragment, "chart-temp") is not None
        assert (await client.get("/bed/b9/charts")).status == 404
        assert (await client.get("/bed/b1/charts?span=2h")).status == 400
        assert pipeline.counters.get("web.refused", "bad_span") == 2
        client.session.cookie_jar.clear()
        assert (await client.get("/bed/b1/charts")).status == 401


@pytest.mark.integration  # a private influxd and the page's own server on loopback
async def test_after_a_restart_the_memory_and_trends_come_back_from_influxdb(
    tmp_path: Path, influx1: Influxd
) -> None:
    influx1.create_database("wardd")
    now = T0 + timedelta(hours=20)
    _write(influx1, [vitals_point(s) for s in _samples(20)])
    pipeline = build(
        _config(tmp_path, {"api": "v1", "url": influx1.url, "database": "wardd"}), clock=ManualClock(now)
    )
    page = pipeline.services[0]
    assert isinstance(page, WardPage)
    # One sample arrived live before the page read the database: it is kept as it came.
    page.observe(VitalSample("w1", "b1", "mon-1", now - timedelta(minutes=1), {Metric.TEMP_C: 39.0}))
    task = asyncio.create_task(page.run(), name="test.page")
    try:
        await asyncio.wait_for(page.seeded.wait(), 10)
        kept = page.recent.series("b1", "temp_c", 0, now.timestamp())
        assert len(kept) == 600  # 20 hours of 2-minute buckets
        assert kept[-1][1] == 39.0  # the live bucket, not averaged with the database's
        assert kept[0][1] == 37.0
        # Heart rate: 600 buckets; temperature: 599, its newest bucket being the live one.
        assert pipeline.counters.get("web.history", "seeded") == 599 + 600
        [tile] = page.ward("en")["beds"]
        assert tile["trend"]["temp_c"][-2:] == [38.2, pytest.approx((7 * 38.2 + 39.0) / 8, abs=0.05)]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        pipeline.writer.close()


@pytest.mark.integration  # the page's own server on loopback
async def test_a_database_away_at_start_leaves_the_memory_to_live_data_and_is_counted(tmp_path: Path) -> None:
    silent = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    pipeline = build(
        _config(tmp_path, {"api": "v1", "url": silent}), clock=ManualClock(T0 + timedelta(hours=2))
    )
    page = pipeline.services[0]
    assert isinstance(page, WardPage)
    task = asyncio.create_task(page.run(), name="test.page")
    try:
        await asyncio.wait_for(page.seeded.wait(), 10)
        assert pipeline.counters.get("web.history", "seed_influx_unavailable") == 1
        assert page.recent.oldest("b1") is None
        assert not task.done()  # the page serves on
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        pipeline.writer.close()
