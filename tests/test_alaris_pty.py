"""The Alaris simulator and driver over real pseudo-terminals.

First an independent host, infupy 2022.1.11 unmodified in its own process, reads
our simulator; then our driver and source read it and live through a bad line:
garbage, bad checksums, aborted and split replies, missed keep-alives, another pump
on the cable, the cable pulled and put back. Short real intervals (50 ms polls);
tests await events, never sleep.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from infupy.backends.alaris import genCheckSum

from daemon.clock import SystemClock
from daemon.config import PumpConfig
from daemon.devices.alaris import Command, security_code
from daemon.events import Health, PumpReading, PumpState
from daemon.metrics import Counters
from daemon.pump import PumpSource
from simulators.alaris import AlarisFault, RemoteRequest, SimulatedAlaris
from tests import pump_pty
from tests.helpers import WAIT_S, Events

pytestmark = pytest.mark.integration  # real servers, processes or pseudo-terminals

ROOT = Path(__file__).resolve().parent.parent
SERIAL = "8002-51740"
# Fast enough that the volume moves several 1 µL steps between 50 ms polls.
RATE_ML_PER_H = 720.0
HOST_READS = 5
ALLOWED = {
    Command.SERIAL_NUMBER,
    Command.REMOTE_CONTROL,
    Command.REMOTE_CONFIG,
    Command.RATE,
    Command.VOLUME_INFUSED,
    Command.ALARM,
}


async def test_infupy_unmodified_reads_rate_and_volume_from_the_simulator(tmp_path: Path) -> None:
    """An independent host implementation accepts our simulator: code, keep-alive, rate, volume."""
    async with SimulatedAlaris(
        clock=SystemClock(), link=tmp_path / "alaris", serial_number=SERIAL, rate_ml_per_h=12.5, running=True
    ) as sim:
        before_ml = sim.infused_ml
        host = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.infupy_host",
            "alaris",
            sim.device_path,
            str(HOST_READS),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(host.communicate(), 60)
        sim.stop()
        after_ml = sim.infused_ml
    assert host.returncode == 0, err.decode()
    result = json.loads(out.decode().splitlines()[-1])
    # infupy's own code from the serial number our simulator gave it.
    assert result["code"] == genCheckSum(SERIAL.encode()).decode() == security_code(SERIAL)
    # infupy runs its keep-alive in a second thread that shares one LIFO reply queue
    # with the reads, so a read may return the keep-alive's reply ("ENABLED"): only the
    # replies that carry a unit are rates or volumes, and most reads must be.
    rates = [r for r in result["rates"] if r is not None and r.endswith(" ml/h")]
    volumes = [v for v in result["volumes"] if v is not None and v.endswith(" ml")]
    assert len(rates) >= HOST_READS - 2, result
    assert len(volumes) >= HOST_READS - 2, result
    assert set(rates) == {"12.50 ml/h"}
    values_ml = [float(v.split()[0]) for v in volumes]
    assert values_ml == sorted(values_ml)
    assert before_ml <= values_ml[0] <= values_ml[-1] <= after_ml + 0.001
    # Its keep-alive enabled both kinds of remote access with the right code, never a
    # wrong one, and it disabled them when it stopped.
    enables = [r for r in sim.remote_requests if r.enable]
    assert {(r.command, r.code) for r in enables} == {
        (Command.REMOTE_CONTROL, security_code(SERIAL)),
        (Command.REMOTE_CONFIG, security_code(SERIAL)),
    }
    assert all(r.accepted for r in enables)
    assert len(enables) >= 4, "a keep-alive: re-sent every second"
    assert [r.command for r in sim.remote_requests if not r.enable] == [
        Command.REMOTE_CONTROL,
        Command.REMOTE_CONFIG,
    ]


def _config(link: Path, **extra: float) -> PumpConfig:
    values: dict[str, object] = {
        "id": "p1",
        "bed": "b1",
        "driver": "alaris-asena",
        "url": str(link),
        **pump_pty.FAST_LINE,
        "keepalive_interval_s": 0.1,
    }
    values.update(extra)
    return PumpConfig.model_validate(values)


Running = pump_pty.Running[SimulatedAlaris]


@pytest.fixture
def comm_lost_after_s() -> float:
    """The pump's ``comm_lost_after_s`` (``pump_pty.FAST_LINE``'s unless a test says)."""
    return float(pump_pty.FAST_LINE["comm_lost_after_s"])  # type: ignore[arg-type]


@pytest.fixture
async def running(tmp_path: Path, comm_lost_after_s: float) -> AsyncIterator[Running]:
    clock = SystemClock()
    link = tmp_path / "alaris"
    async with (
        SimulatedAlaris(
            clock=clock,
            link=link,
            serial_number=SERIAL,
            rate_ml_per_h=RATE_ML_PER_H,
            running=True,
            remote_timeout_s=0.3,
        ) as sim,
        pump_pty.polling(sim, _config(link, comm_lost_after_s=comm_lost_after_s), clock) as running,
    ):
        yield running
    assert set(sim.commands_seen) <= ALLOWED, "the driver only reads"


async def test_reads_rate_volume_and_whether_it_infuses(running: Running) -> None:
    reading = await running.events.reading(lambda r: r.state is PumpState.INFUSING)
    assert reading.rate_ml_per_h == RATE_ML_PER_H
    assert reading.volume_infused_ml is not None
    assert reading.volume_infused_ml > 0
    assert reading.alarm is None
    running.sim.stop()
    stopped = await running.events.reading(lambda r: r.state is PumpState.STOPPED)
    assert stopped.rate_ml_per_h == RATE_ML_PER_H, "the programmed rate stays; the volume stops"
    running.sim.set_rate(30.0)
    running.sim.start()
    again = await running.events.reading(lambda r: r.state is PumpState.INFUSING)
    assert again.rate_ml_per_h == 30.0
    assert again.volume_infused_ml is not None
    assert stopped.volume_infused_ml is not None
    assert again.volume_infused_ml > stopped.volume_infused_ml
    assert [r.accepted for r in running.sim.remote_requests if r.enable] == [True] * len(
        [r for r in running.sim.remote_requests if r.enable]
    )


async def test_closing_hands_remote_access_back(tmp_path: Path) -> None:
    clock = SystemClock()
    link = tmp_path / "alaris"
    events = Events()
    async with SimulatedAlaris(clock=clock, link=link, serial_number=SERIAL, running=True) as sim:
        source = PumpSource(_config(link), "w1", clock, Counters())
        task = asyncio.create_task(source.run(events.emit))
        await events.health(Health.CONNECTED)
        assert sim.remote_enabled(Command.REMOTE_CONTROL)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sim.remote_requests[-2:] == [
            RemoteRequest(Command.REMOTE_CONTROL, enable=False, code="", accepted=True),
            RemoteRequest(Command.REMOTE_CONFIG, enable=False, code="", accepted=True),
        ]
        assert not sim.remote_enabled(Command.REMOTE_CONTROL)


@pytest.mark.parametrize(
    ("fault", "reasons"),
    [
        (AlarisFault.BAD_CRC, {"bad_crc"}),
        (AlarisFault.ABORTED, {"aborted"}),
        (AlarisFault.GARBAGE_BEFORE, {"garbage"}),
        (AlarisFault.PARTIAL, {"timeout", "truncated"}),
    ],
)
# Three spoiled replies cost their timeouts and retries: well under 2 s, but on a loaded
# machine they came near 0.6 s and the link was judged lost (as in test_pump_pty).
@pytest.mark.parametrize("comm_lost_after_s", [2.0])
async def test_a_spoiled_reply_is_counted_and_polling_goes_on(
    running: Running, fault: AlarisFault, reasons: set[str]
) -> None:
    await pump_pty.spoiled_replies_are_counted(
        running, lambda: running.sim.spoil(fault, 3), reasons, RATE_ML_PER_H
    )


async def test_split_replies_and_noise_between_frames_are_read(running: Running) -> None:
    running.sim.spoil(AlarisFault.SPLIT, 4)
    running.sim.inject_garbage(b"\r\r\x1b\x00zz")
    reading = await running.events.reading(lambda r: r.rate_ml_per_h == RATE_ML_PER_H)
    assert reading.volume_infused_ml is not None
    await running.events.reading(lambda r: r.state is PumpState.INFUSING)
    assert running.faults("garbage") >= 1


async def test_missed_keepalives_lose_the_pump_until_they_get_through(running: Running) -> None:
    # The pump hears no keep-alive: its remote access lapses and it answers no query.
    running.sim.deaf_to_keepalives = True
    lost = await running.events.health(Health.LOST)
    assert lost.detail is not None
    assert "no valid reply" in lost.detail
    assert not running.sim.remote_enabled()
    assert running.faults("timeout") >= 1
    running.sim.deaf_to_keepalives = False
    await running.events.health(Health.CONNECTED)
    await running.events.reading(lambda r: r.state is PumpState.INFUSING)


async def test_another_pump_on_the_cable_is_found_by_its_serial_number(running: Running) -> None:
    await running.events.reading(lambda r: r.state is PumpState.INFUSING)
    running.sim.serial_number = "8002-51733"
    # The old code is refused; the driver asks the serial number again and uses the new one.
    async with asyncio.timeout(WAIT_S):
        while not any(
            r.accepted and r.code == security_code("8002-51733") for r in running.sim.remote_requests
        ):
            await running.events.reading()
    assert running.faults("remote_refused") >= 1
    refused = [r for r in running.sim.remote_requests if not r.accepted]
    assert refused
    assert {r.code for r in refused} == {security_code(SERIAL)}
    await running.events.reading(lambda r: r.state is PumpState.INFUSING)


async def test_the_cable_pulled_and_put_back(running: Running) -> None:
    await pump_pty.cable_pulled_and_put_back(
        running, running.sim.disconnect, running.sim.reconnect, RATE_ML_PER_H
    )


async def test_keepalives_go_on_between_polls_that_come_less_often(tmp_path: Path) -> None:
    """Polls every 0.5 s, keep-alive every 0.1 s: the driver's own task keeps remote access up."""
    clock = SystemClock()
    link = tmp_path / "alaris"
    events = Events()
    async with SimulatedAlaris(
        clock=clock,
        link=link,
        serial_number=SERIAL,
        rate_ml_per_h=RATE_ML_PER_H,
        running=True,
        remote_timeout_s=0.25,
    ) as sim:
        config = _config(link, poll_interval_s=0.5, comm_lost_after_s=2.0)
        source = PumpSource(config, "w1", clock, Counters())
        task = asyncio.create_task(source.run(events.emit))
        try:
            await events.reading(lambda r: r.state is PumpState.INFUSING)
            before = len(sim.remote_requests)
            await events.reading()
            await events.reading()
            # Two polls apart (about 1 s): polls alone would send 2 pairs of enables.
            enables = [r for r in sim.remote_requests[before:] if r.enable]
            assert len(enables) >= 8
            assert all(r.accepted for r in enables)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_an_alarm_is_read_while_it_lasts(running: Running) -> None:
    """The ALARM query each poll: an occlusion stops the pump and is read until it goes."""
    clear = await running.events.reading(lambda r: r.state is PumpState.INFUSING)
    assert clear.alarm is None
    running.sim.raise_alarm("AL_OCCLU")
    alarmed = await running.events.reading(lambda r: r.alarm == "AL_OCCLU")
    stopped = await running.events.reading(lambda r: r.state is PumpState.STOPPED)
    assert stopped.alarm == "AL_OCCLU", "still reported while the pump is stopped"
    assert alarmed.rate_ml_per_h == RATE_ML_PER_H
    running.sim.clear_alarm()
    await running.events.reading(lambda r: r.alarm is None and r.state is PumpState.STOPPED)
    running.sim.start()
    await running.events.reading(lambda r: r.alarm is None and r.state is PumpState.INFUSING)


async def test_an_alarm_that_leaves_the_pump_running(running: Running) -> None:
    await running.events.reading(lambda r: r.state is PumpState.INFUSING)
    running.sim.raise_alarm("AL_LWBAT")
    low = await running.events.reading(lambda r: r.alarm == "AL_LWBAT")
    assert low.state is PumpState.INFUSING
    running.sim.clear_alarm()
    await running.events.reading(lambda r: r.alarm is None and r.state is PumpState.INFUSING)


async def test_an_unreadable_alarm_reply_is_no_reading(running: Running) -> None:
    """A spoiled ALARM reply must not read as "no alarm": the poll gives nothing."""
    await running.events.reading(lambda r: r.state is PumpState.INFUSING)
    running.sim.raise_alarm("AL_OCCLU")
    await running.events.reading(lambda r: r.alarm == "AL_OCCLU")
    running.sim.alarm = "al_occlu"  # not a code: the reply is refused
    seen = len(running.events.seen)
    lost = await running.events.health(Health.LOST)
    assert lost.detail is not None
    assert "last fault: bad_data: ALARM reply without an alarm code" in lost.detail
    assert not [e for e in running.events.seen[seen:] if isinstance(e, PumpReading)]
    running.sim.alarm = "AL_OCCLU"
    await running.events.health(Health.CONNECTED)
    await running.events.reading(lambda r: r.alarm == "AL_OCCLU")
