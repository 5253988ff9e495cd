"""The storage schema in README, the points the code writes, and the Grafana dashboard's
queries agree: every query names a measurement, fields and tags that exist, and runs on a
real influxd holding the daemon's own points."""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.alerts import Alert, AlertState, Phase, alert_point
from daemon.app import build_rules, vitals_point
from daemon.clinical.dose import dose_point
from daemon.events import BagHung, Kind, Metric, Priority, PumpReading, PumpState, Text, VitalSample
from daemon.metrics import Counters
from daemon.points import Point
from daemon.pump import reading_point
from tests.helpers import one_bed_config
from tests.servers import Influxd

ROOT = Path(__file__).parent.parent
DASHBOARD = ROOT / "config" / "grafana" / "dashboards" / "wardd.json"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def readme_schema() -> dict[str, tuple[set[str], set[str]]]:
    """``{measurement: (tags, fields)}`` from the table of README's "Storage" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Storage", 1)[1].split("\n## ", 1)[0]
    schema: dict[str, tuple[set[str], set[str]]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            names = [set(re.findall(r"`([a-z_0-9]+)`", cell)) for cell in cells]
            schema[names[0].pop()] = (names[1], names[2])
    return schema


def code_points() -> list[Point]:
    """One point of each measurement, as the daemon makes them, with every field it can carry."""
    config = one_bed_config(T0 - timedelta(hours=12))
    bed = config.bed("b1")
    values = dict.fromkeys(Metric, 37.0)
    points = [vitals_point(VitalSample("w1", "b1", "m1", T0, values))]
    reading = PumpReading("w1", "b1", "p1", T0, PumpState.INFUSING, 10.0, 2.0, alarm="S")
    points.append(reading_point(reading))
    engine = build_rules(config)
    engine.handle(BagHung("w1", "b1", T0 - timedelta(minutes=5), "bag-1", 0.0375, 270.0), T0)
    for minutes in (0, 10):
        at = T0 + timedelta(minutes=minutes)
        engine.handle(PumpReading("w1", "b1", "p1", at, PumpState.INFUSING, 10.0, minutes / 6, None), at)
    dose = dose_point(engine, bed, T0 + timedelta(minutes=10), config=config)
    assert dose is not None
    points.append(dose)
    alert = Alert(
        id="w1-b1-1",
        condition="FEVER",
        kind=Kind.PHYSIOLOGICAL,
        priority=Priority.MEDIUM,
        state=AlertState.ACKNOWLEDGED,
        phase=Phase.ACK,
        ward="w1",
        bed="b1",
        value=38.4,
        unit="Cel",
        since=T0,
        updated=T0,
        active_since=T0,
        message=Text("Fever.", "Fièvre."),
        acked_by="nurse1",
        acked_name="A. Nurse",
        acked_at=T0,
    )
    points.append(alert_point(alert, T0, "en"))
    counters = Counters()
    counters.inc("mqtt.rejected", "invalid_json")
    points.extend(counters.points(T0, "wardd"))
    return points


def test_the_code_writes_exactly_the_schema_in_readme() -> None:
    schema = readme_schema()
    points = code_points()
    assert {p.measurement for p in points} == set(schema)
    for point in points:
        tags, fields = schema[point.measurement]
        assert set(point.tags) == tags, point.measurement
        assert set(point.fields) == fields, point.measurement


def _targets() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [
        (panel["title"], target["query"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    found += [
        (variable["name"], variable["query"])
        for variable in dashboard["templating"]["list"]
        if variable["type"] == "query"
    ]
    return found


def test_every_dashboard_query_names_what_the_schema_has() -> None:
    schema = readme_schema()
    targets = _targets()
    assert len(targets) >= 15
    for title, query in targets:
        measurements = re.findall(r'FROM "(\w+)"', query)
        assert len(measurements) == 1, (title, query)
        tags, fields = schema[measurements[0]]
        select, _, rest = query.partition(" FROM ")
        selected = set(re.findall(r'"([^"]+)"', select)) - set(re.findall(r'AS "([^"]+)"', select))
        assert selected <= fields, (title, selected - fields)
        after_measurement = rest.split('"', 2)[2]  # WHERE, GROUP BY: tags (or fields)
        named = set(re.findall(r'"([^"]+)"', after_measurement))
        assert named <= tags | fields, (title, named - tags - fields)
        keys = re.findall(r'WITH KEY = "(\w+)"', query)
        assert set(keys) <= tags, (title, keys)


def _concrete(query: str) -> str:
    """A dashboard query with Grafana's variables as Grafana would fill them."""
    return (
        query.replace("$timeFilter", "time > now() - 1d")
        .replace("$__interval", "1m")
        .replace("/^$ward$/", "/^w1$/")
        .replace("/^$bed$/", "/^b1$/")
    )


@pytest.mark.integration
def test_every_dashboard_query_runs_on_influxdb_and_finds_the_daemons_points(influx1: Influxd) -> None:
    influx1.create_database("wardd")
    lines = "\n".join(point.to_line() for point in code_points()).encode()
    with urllib.request.urlopen(f"{influx1.url}/write?db=wardd", data=lines, timeout=10) as reply:
        assert reply.status == 204
    for title, query in _targets():
        url = f"{influx1.url}/query?" + urllib.parse.urlencode({"db": "wardd", "q": _concrete(query)})
        with urllib.request.urlopen(url, timeout=10) as reply:
            body: dict[str, Any] = json.load(reply)
        [result] = body["results"]
        assert "error" not in result, (title, result.get("error"), _concrete(query))
        if "non_negative_difference" not in query:  # a difference needs two minutes of totals
            assert result.get("series"), (title, "no rows", _concrete(query))
