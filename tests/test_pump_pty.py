"""The pump driver and source against the NE-1000 simulator on a real pseudo-terminal.

Both sides run in this event loop on short real intervals (50 ms polls); tests await
events, never sleep. Where time itself is the subject (volume, safe-mode timeout,
comm-lost judgement) a ManualClock drives it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import serial_asyncio_fast

from daemon.clock import Clock, ManualClock, SystemClock
from daemon.config import PumpConfig
from daemon.devices.ne1000 import Alarm, RateUnit, ReplyDecoder, encode_command
from daemon.events import Health, PumpState, SourceHealth
from daemon.metrics import Counters
from daemon.pump import (
    FaultHandler,
    LinkClosedError,
    NE1000Driver,
    PumpDriver,
    PumpSource,
    PumpStatus,
    reading_point,
)
from daemon.pump_rules import PumpRule
from simulators.pump import ReplyFault, SimulatedPump
from tests.helpers import WAIT_S, Events

pytestmark = pytest.mark.integration  # real servers, processes or pseudo-terminals

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _config(link: Path, *, safe_s: int = 0, **extra: float) -> PumpConfig:
    values: dict[str, object] = {
        "id": "p1",
        "bed": "b1",
        "url": str(link),
        "address": 3,
        "poll_interval_s": 0.05,
        "comm_lost_after_s": 0.6,
        "reply_timeout_s": 0.15,
        "retries": 1,
        "reconnect_min_s": 0.02,
        "reconnect_max_s": 0.1,
        "safe_mode_timeout_s": safe_s,
    }
    values.update(extra)
    return PumpConfig.model_validate(values)


class Running:
    """A PumpSource running against a simulator."""

    def __init__(self, sim: SimulatedPump, source: PumpSource, counters: Counters, events: Events) -> None:
        self.sim = sim
        self.source = source
        self.counters = counters
        self.events = events

    def faults(self, reason: str) -> int:
        return self.counters.get("pump.p1", reason)


@pytest.fixture
def comm_lost_after_s() -> float:
    """The pump's ``comm_lost_after_s``: short, so that a loss is judged quickly, and
    below the safe-mode timeout (2 s), so that the pump still runs when the link is back."""
    return 0.6


@pytest.fixture(params=[0, 2], ids=["basic", "safe"])
async def running(
    request: pytest.FixtureRequest, tmp_path: Path, comm_lost_after_s: float
) -> AsyncIterator[Running]:
    clock = SystemClock()
    link = tmp_path / "pump"
    counters = Counters()
    events = Events()
    async with SimulatedPump(clock=clock, address=3, link=link, running=True) as sim:
        config = _config(link, safe_s=request.param, comm_lost_after_s=comm_lost_after_s)
        source = PumpSource(config, "w1", clock, counters)
        task = asyncio.create_task(source.run(events.emit))
        try:
            await events.health(Health.CONNECTED)
            yield Running(sim, source, counters, events)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_connects_and_reads(running: Running) -> None:
    reading = await running.events.reading()
    assert (reading.ward, reading.bed, reading.pump) == ("w1", "b1", "p1")
    assert reading.state is PumpState.INFUSING
    assert reading.rate_ml_per_h == pytest.approx(10.0)
    assert reading.volume_infused_ml is not None
    # Safe mode: the driver switched the pump to it; basic mode: the pump was left alone.
    expected_s = 2 if running.source.pump.safe_mode_timeout_s else 0
    assert running.sim.safe_timeout_s == expected_s


@pytest.mark.parametrize(
    ("value", "unit", "ml_per_h"),
    [
        (10.0, RateUnit.ML_PER_H, 10.0),
        (600.0, RateUnit.UL_PER_H, 0.6),
        (0.03, RateUnit.ML_PER_MIN, 1.8),
        (30.0, RateUnit.UL_PER_MIN, 1.8),
    ],
)
async def test_rates_in_every_unit(running: Running, value: float, unit: RateUnit, ml_per_h: float) -> None:
    running.sim.set_rate(value, unit)
    await running.events.reading(lambda r: r.rate_ml_per_h == pytest.approx(ml_per_h))


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (ReplyFault.GARBAGE_BEFORE, "garbage"),
        (ReplyFault.PARTIAL, "truncated"),
        (ReplyFault.WRONG_ADDRESS, "wrong_address"),
        (ReplyFault.BAD_CRC, None),  # bad_crc in safe mode, unknown_status in basic mode
        (ReplyFault.SPLIT, None),  # reassembled: no fault at all
    ],
)
# Three spoiled replies cost their timeouts and retries: well under 2 s, but on a loaded
# machine (two test workers and more) they came near 0.6 s and the link was judged lost.
@pytest.mark.parametrize("comm_lost_after_s", [2.0])
async def test_line_faults_are_counted_and_survived(
    running: Running, fault: ReplyFault, reason: str | None
) -> None:
    await running.events.reading()
    running.sim.spoil(fault, count=3)
    # Three spoiled replies, then good ones again: readings continue, the link stays up.
    await running.events.reading(lambda r: not running.sim._faults)
    await running.events.reading()
    if reason is not None:
        assert running.faults(reason) >= 1
    if fault is ReplyFault.BAD_CRC:
        safe = running.source.pump.safe_mode_timeout_s > 0
        assert running.faults("bad_crc" if safe else "unknown_status") >= 1
    assert not any(isinstance(e, SourceHealth) and e.health is Health.LOST for e in running.events.seen)


async def test_garbage_between_polls(running: Running) -> None:
    await running.events.reading()
    running.sim.inject_garbage(b"\x00\xff\x13noise\x02\x01")
    await running.events.reading()
    await running.events.reading()
    assert running.faults("garbage") + running.faults("bad_length") + running.faults("unsolicited") >= 1


async def test_timeouts_and_slow_replies(running: Running) -> None:
    await running.events.reading()
    running.sim.delay_replies(0.4)  # longer than reply_timeout_s
    await running.events.until(lambda e: running.faults("timeout") >= 2)
    running.sim.delay_replies(0.03)  # slow but in time
    await running.events.reading()
    running.sim.delay_replies(0)
    await running.events.reading()


async def test_comm_loss_then_recovery(running: Running) -> None:
    await running.events.reading()
    running.sim.drop_replies()
    lost = await running.events.health(Health.LOST)
    assert lost.source == "pump[p1]"
    assert running.faults("timeout") >= 1
    running.sim.drop_replies(0)
    await running.events.health(Health.CONNECTED)
    await running.events.reading()


async def test_disconnect_and_reconnect(running: Running) -> None:
    await running.events.reading()
    await running.sim.disconnect()
    await running.events.health(Health.LOST)
    assert running.faults("link_closed") >= 1
    await running.sim.reconnect()
    await running.events.health(Health.CONNECTED)
    await running.events.reading(lambda r: r.state is PumpState.INFUSING)


async def test_pump_alarm_and_its_clearing(running: Running) -> None:
    rule = PumpRule(running.source.pump, "w1")
    state = rule.initial()
    await running.events.reading()
    running.sim.raise_alarm(Alarm.STALL)
    alarm = await running.events.reading(lambda r: r.alarm is not None)
    assert (alarm.state, alarm.alarm) == (PumpState.ALARM, "S")
    state, out = rule.step(state, alarm, alarm.time)
    assert [(c.condition, c.present) for c in out] == [("PUMP_STALL", True)]
    stopped = await running.events.reading()
    assert stopped.state is PumpState.STOPPED  # the poll acknowledged the alarm
    state, out = rule.step(state, stopped, stopped.time)
    assert out == ()
    running.sim.start()
    infusing = await running.events.reading(lambda r: r.state is PumpState.INFUSING)
    state, out = rule.step(state, infusing, infusing.time)
    assert [(c.condition, c.present) for c in out] == [("PUMP_STALL", False)]


async def test_reading_point(running: Running) -> None:
    reading = await running.events.reading()
    point = reading_point(reading)
    assert point.measurement == "infusion"
    assert point.tags == {"ward": "w1", "bed": "b1", "pump": "p1"}
    assert point.fields["state"] == "infusing"
    assert point.fields["rate_ml_per_h"] == pytest.approx(10.0)
    assert "volume_infused_ml" in point.fields
    assert "alarm" not in point.fields


# ---------------------------------------------------------------- driver, with a manual clock for the pump


async def test_volume_infused_advances_with_the_clock(tmp_path: Path) -> None:
    sim_clock = ManualClock(T0)
    link = tmp_path / "pump"
    async with SimulatedPump(clock=sim_clock, address=3, link=link, rate_ml_per_h=10.0, running=True) as sim:
        driver = NE1000Driver(_config(link), SystemClock(), lambda error, raw: None)
        await driver.open()
        try:
            assert (await driver.read()).volume_infused_ml == 0.0
            await sim_clock.advance(3600)
            status = await driver.read()
            assert status.volume_infused_ml == pytest.approx(10.0)
            sim.stop()
            await sim_clock.advance(3600)
            assert (await driver.read()).volume_infused_ml == pytest.approx(10.0)
        finally:
            await driver.close()


class RawHost:
    """A host written straight against the protocol, to test the simulator itself."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = ReplyDecoder()

    async def receive(self) -> list[object]:
        async with asyncio.timeout(WAIT_S):
            while True:
                items = self.decoder.feed(await self.reader.read(256))
                if items:
                    return [i.reply for i in items]

    async def ask(self, command: str, *, safe: bool, address: int | None = 3) -> object:
        self.writer.write(encode_command(command, address, safe=safe))
        (reply,) = await self.receive()
        return reply


async def _raw(link: Path) -> RawHost:
    reader, writer = await serial_asyncio_fast.open_serial_connection(url=str(link), baudrate=19200)
    return RawHost(reader, writer)


async def test_simulator_commands_and_modes(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    link = tmp_path / "pump"
    async with SimulatedPump(clock=clock, address=3, link=link) as sim:
        host = await _raw(link)
        try:
            ver = await host.ask("VER", safe=False)
            assert getattr(ver, "data", None) == "NE1000V3.928"
            assert getattr(await host.ask("RAT5.000MH", safe=False), "data", None) == ""
            assert getattr(await host.ask("RAT", safe=False), "data", None) == "5.000MH"
            assert getattr(await host.ask("FOO", safe=False), "error", None) is not None
            # A safe packet is understood in basic mode; SAF2 answers in safe mode.
            reply = await host.ask("SAF2", safe=True)
            assert getattr(reply, "safe", None) is True
            assert sim.safe_timeout_s == 2
            assert getattr(await host.ask("SAF", safe=True), "data", None) == "2"
            sim.start()
            # No packet for longer than the timeout: the pump stops and pushes the alarm.
            await clock.advance(3)
            (pushed,) = await host.receive()
            assert getattr(pushed, "alarm", None) is Alarm.SAFE_MODE_TIMEOUT
            assert sim.status.value == "S"
            # Any valid command acknowledges it; SAF0 returns to basic mode, answered in basic.
            assert getattr(await host.ask("", safe=True), "alarm", None) is Alarm.SAFE_MODE_TIMEOUT
            back = await host.ask("SAF0", safe=True, address=None)
            assert getattr(back, "safe", None) is False
            # 2 s at 5 mL/h before the timeout stopped it (3 s would read 0.004).
            assert getattr(await host.ask("DIS", safe=False), "data", None) == "I0.003W0.000ML"
        finally:
            host.writer.close()


# ---------------------------------------------------------------- source logic, fake driver, manual clock


class DeadDriver:
    """A port that never opens."""

    opens = 0

    def __init__(self, pump: PumpConfig, clock: Clock, on_fault: FaultHandler) -> None:
        pass

    async def open(self) -> None:
        DeadDriver.opens += 1
        raise LinkClosedError("no such port")

    async def read(self) -> PumpStatus:  # pragma: no cover - never opened
        raise AssertionError

    async def close(self) -> None:
        pass


def _dead(pump: PumpConfig, clock: Clock, on_fault: FaultHandler) -> PumpDriver:
    return DeadDriver(pump, clock, on_fault)


async def test_never_reached_pump_is_lost_on_time_and_backoff_is_capped() -> None:
    clock = ManualClock(T0)
    counters = Counters()
    events = Events()
    pump = PumpConfig(id="p1", bed="b1", url="/nonexistent", reconnect_min_s=1, reconnect_max_s=8)
    source = PumpSource(pump, "w1", clock, counters, driver_factory=_dead, rng=random.Random(1))
    DeadDriver.opens = 0
    task = asyncio.create_task(source.run(events.emit))
    await asyncio.sleep(0)
    await clock.advance(29.9)
    assert events.seen == []
    await clock.advance(0.2)
    (lost,) = events.seen
    assert isinstance(lost, SourceHealth)
    assert lost.health is Health.LOST
    # 30 s of 0.5-1, 1-2, 2-4, 4-8, 4-8 ... s delays: a handful of attempts, not hundreds.
    assert 5 <= DeadDriver.opens <= 12
    assert counters.get("pump.p1", "link_closed") == DeadDriver.opens
    delays = [source.backoff_s(n) for n in range(10)]
    assert all(0.5 <= d <= 8 for d in delays)
    assert max(delays[5:]) <= 8
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_open_failure_of_a_real_missing_port_is_a_link_error(tmp_path: Path) -> None:
    async def attempt() -> None:
        driver = NE1000Driver(_config(tmp_path / "absent"), SystemClock(), lambda error, raw: None)
        with pytest.raises(LinkClosedError):
            await driver.open()
        await driver.close()

    asyncio.run(attempt())
