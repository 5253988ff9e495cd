"""The demo ward: built-in scenarios mixed on one ward, embedded broker when none answers, alerts shown."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.app import Pipeline
from daemon.config import Config, InfluxConfig, MqttConfig
from daemon.demo import _model, demo_mix, demo_scenario, join_offset, joined, run_demo
from simulators.broker import broker_for
from simulators.scenario import (
    PumpAction,
    PumpAlarm,
    PumpModel,
    PumpStep,
    ScenarioRun,
    builtin_names,
    builtin_path,
    can_raise,
    check_expected,
    expected_path,
    load_expected,
    load_scenario,
)
from simulators.secure import secure_broker
from tests.servers import free_port

pytestmark = pytest.mark.integration  # real servers, processes or pseudo-terminals


class Terminal(io.StringIO):
    """Captured output that claims to be a terminal, so the live console draws."""

    def isatty(self) -> bool:
        return True


def _config(tmp_path: Path) -> Path:
    """A config whose broker and database do not answer."""
    path = tmp_path / "ward.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "{tmp_path / "state"}"
[mqtt]
url = "mqtt://127.0.0.1:{free_port()}"
topic_prefix = "demo-test"
[influx]
api = "v1"
url = "http://127.0.0.1:{free_port()}"
"""
    )
    return path


async def test_demo_starts_its_own_broker_and_shows_the_fever(tmp_path: Path) -> None:
    out = Terminal()
    # 180x for 8 s: 24 simulated minutes, past bed 04's fever (15 min after it joins).
    seen = await run_demo(beds=4, speed=180.0, duration_s=8.0, config_path=_config(tmp_path), out=out)
    text = out.getvalue()
    assert "started an embedded one" in text
    assert "keeping points as line protocol" in text  # the configured database does not answer
    assert "demo/01" in text
    assert "published-case" in text  # each bed's story is shown beside it
    assert "dose   9.0 /  9.0 µg/day" in text  # the simulated pump delivers the protocol dose
    assert "MEDIUM FEVER" in text  # bed 04 plays the CRS grade 2 story
    assert seen >= 1


def test_default_ward_mixes_the_builtin_scenarios_with_a_pump_and_bag_per_bed() -> None:
    chosen = demo_mix(6)
    scenario = demo_scenario(chosen, start=datetime.now(UTC), duration=timedelta(hours=1))
    assert len(scenario.beds) == 6
    assert len({story.scenario.name for story in chosen}) == 6
    assert [bed.id for bed in scenario.beds] == ["01", "02", "03", "04", "05", "06"]
    assert len({bed.pump.address for bed in scenario.beds if bed.pump is not None}) == 6
    for bed in scenario.beds:
        assert bed.pump is not None
        first = bed.pump.steps[0]
        assert (first.do, first.at) == (PumpAction.HANG_BAG, timedelta(0))
    models = {bed.pump.model for bed in scenario.beds if bed.pump is not None}
    assert models == set(PumpModel), "the ward mixes vendors"
    # Each pump raises its own vendor's code for the story's alarms: an alarm story plays
    # on an Alaris or a Fresenius base too, and keeps its model only where the turn's
    # vendor has no code for its alarm.
    alarmed = [bed for bed in scenario.beds if bed.pump is not None and _alarms(bed.pump.steps)]
    assert alarmed, "the default ward has a pump alarm story"
    assert {bed.pump.model for bed in alarmed if bed.pump is not None} != {PumpModel.NE1000}
    for bed in scenario.beds:
        assert bed.pump is not None
        assert all(can_raise(bed.pump.model, alarm) for alarm in _alarms(bed.pump.steps))


def _alarms(steps: list[PumpStep]) -> set[PumpAlarm]:
    return {step.alarm for step in steps if step.do is PumpAction.ALARM and step.alarm is not None}


def test_a_vendor_without_the_storys_alarm_code_leaves_the_story_its_pump() -> None:
    reset = load_scenario("pump-occlusion-comm-loss")
    bed = reset.beds[0]
    assert bed.pump is not None
    steps = [
        s.model_copy(update={"alarm": PumpAlarm.RESET}) if s.do is PumpAction.ALARM else s
        for s in bed.pump.steps
    ]
    pump = bed.pump.model_copy(update={"steps": steps})
    # Bed index 1 is the Alaris's turn: it has no code for an NE-1000 reset.
    assert _model(1, bed.model_copy(update={"pump": pump})) is PumpModel.NE1000
    assert _model(1, bed) is PumpModel.ALARIS_ASENA
    assert _model(2, bed.model_copy(update={"pump": pump})) is PumpModel.FRESENIUS_BASE_A


def test_more_beds_than_stories_wrap_round_with_their_own_ids() -> None:
    stories = len(builtin_names())
    scenario = demo_scenario(demo_mix(stories + 2), start=datetime.now(UTC), duration=timedelta(hours=1))
    beds = scenario.beds
    assert len({bed.id for bed in beds}) == len(beds) == stories + 2
    assert beds[stories].patient == f"{beds[0].patient}-2"
    assert beds[stories].start == beds[0].start


def test_a_bed_joins_its_story_shortly_before_its_first_medium_or_high_alert() -> None:
    expected = [
        {"bed": "04", "condition": "NEURO_CHECK_DUE", "phase": "start", "priority": "low", "at": "0d00h00m"},
        {"bed": "04", "condition": "FEVER", "phase": "start", "priority": "medium", "at": "0d02h15m"},
    ]
    assert join_offset("04", expected) == timedelta(hours=2)
    assert join_offset("05", [{"priority": "high", "at": "6m"}]) == timedelta(0)
    assert join_offset("01", []) == timedelta(0)


def test_joined_story_plays_what_came_before_at_once_and_keeps_the_rest() -> None:
    bed = load_scenario("published-case").beds[0]
    assert joined(bed, timedelta(0)) is bed
    late = joined(bed, timedelta(hours=11, minutes=45))
    assert late.start == bed.start - timedelta(hours=11, minutes=45)
    assert late.pump is not None
    steps = [(s.at, s.do, s.bag_id) for s in late.pump.steps]
    # The first bag and the start happen at once, in order; the next bag keeps its time.
    assert steps[:3] == [
        (timedelta(0), PumpAction.HANG_BAG, "d1-9ug"),
        (timedelta(0), PumpAction.START, None),
        (timedelta(hours=12, minutes=15), PumpAction.HANG_BAG, "d2-9ug"),
    ]
    assert all(s.count == 1 for s in late.pump.steps)
    # The day's handwriting test (at 2h) happens at once; the next one a day later.
    assert [o.at for o in late.observations[:2]] == [timedelta(0), timedelta(hours=14, minutes=15)]
    assert late.monitor is not None
    fever = late.monitor.excursions[0]
    assert (fever.at, fever.ramp, fever.until) == (
        timedelta(0),
        timedelta(minutes=30),
        timedelta(hours=4, minutes=15),
    )
    # Joined in the middle of the rise: the rest of the ramp.
    rising = joined(bed, timedelta(hours=12))
    assert rising.monitor is not None
    assert rising.monitor.excursions[0].ramp == timedelta(minutes=15)


async def test_a_scaled_run_ends_early_when_its_daemon_is_told_to_stop(tmp_path: Path) -> None:
    scenario = demo_scenario(demo_mix(2), start=datetime.now(UTC), duration=timedelta(days=14))
    pipelines: list[Pipeline] = []

    def stop_at_the_first_alert(record: Mapping[str, Any]) -> None:
        pipelines[0].stop.set()

    closed = Config(mqtt=MqttConfig(url=f"mqtt://127.0.0.1:{free_port()}"))
    async with broker_for(closed, io.StringIO()) as config:
        run = ScenarioRun(
            scenario,
            workdir=tmp_path,
            fast=False,
            speed=60.0,
            mqtt_url=config.mqtt.url,
            influx=InfluxConfig(api="none", spool_dir=tmp_path / "points"),
            out=io.StringIO(),
            capture=None,
            progress=False,
            on_pipeline=pipelines.append,
            on_alert=stop_at_the_first_alert,
        )
        # 14 simulated days at 60x would take days: the stop ends it at once.
        result = await asyncio.wait_for(run.run(), 20)
    assert len(pipelines) == 1
    assert result.alerts


async def test_the_secure_demo_runs_behind_a_locked_down_broker(tmp_path: Path) -> None:
    out = io.StringIO()
    seen = await run_demo(beds=4, speed=180.0, duration_s=8.0, secure=True, out=out)
    text = out.getvalue()
    assert "demo: locked-down mosquitto on mqtts://127.0.0.1:" in text
    assert "demo: a client without a login: refused ([code:135] Not authorized)" in text
    assert "embedded" not in text
    # The daemon logged in over TLS, the devices' vitals reached it, its alerts the station.
    assert "MEDIUM FEVER start" in text
    assert seen >= 1


async def test_a_scenario_behind_the_locked_down_broker_acknowledges_as_the_station(tmp_path: Path) -> None:
    """The same alerts as on an open broker, and the acknowledgement journaled under the
    station's login with the scenario's person as the display name."""
    name = "interruption-4h"
    scenario = load_scenario(name)
    async with secure_broker(tmp_path / "broker", ward=scenario.ward) as broker:
        run = ScenarioRun(
            scenario,
            workdir=tmp_path,
            fast=True,
            speed=1.0,
            mqtt_url=broker.url,
            influx=InfluxConfig(api="none", spool_dir=tmp_path / "points"),
            out=io.StringIO(),
            capture=None,
            progress=False,
            secure=broker,
        )
        result = await run.run()
    path = builtin_path(name)
    assert path is not None
    problems = check_expected(scenario.start, result.alerts, load_expected(expected_path(path)))
    assert not problems, "\n".join([*problems, *result.timeline])
    with sqlite3.connect(tmp_path / "state" / "wardd.sqlite") as db:
        entries = [json.loads(row[0]) for row in db.execute("SELECT entry FROM journal ORDER BY seq")]
    acks = [(e["who"], e["name"], e["alert"]["condition"]) for e in entries if e["what"] == "ack"]
    assert acks == [("station-demo", "charge-nurse", "INFUSION_INTERRUPTED")]


async def test_the_demo_serves_its_ward_on_the_page(tmp_path: Path) -> None:
    out = io.StringIO()
    demo = asyncio.create_task(
        run_demo(
            beds=3, speed=60.0, duration_s=20.0, config_path=_config(tmp_path), out=out, page_cost_log2_n=10
        )
    )
    try:
        for _ in range(300):
            if "ward page at" in out.getvalue() or demo.done():
                break
            await asyncio.sleep(0.05)
        found = re.search(
            r"ward page at (\S+) \(log in as nurse-demo / (\S+) \(may acknowledge\), viewer-demo / (\S+)",
            out.getvalue(),
        )
        assert found is not None, out.getvalue()
        url, nurse_password, _ = found.groups()
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.get(url + "login") as form:
                token = re.search(r'name="csrf" value="([^"]+)"', await form.text())
            assert token is not None
            login = {"csrf": token[1], "user": "nurse-demo", "password": nurse_password}
            async with browser.post(url + "login", data=login) as page:
                assert page.status == 200
                assert "Demo Nurse" in await page.text()
            async with browser.get(url + "api/ward") as ward:
                beds = (await ward.json())["beds"]
        assert sorted(bed["bed"] for bed in beds) == ["01", "02", "03"]
    finally:
        demo.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await demo
