"""Beds spread over worker processes: who owns which bed, and a real supervisor with two workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from daemon.config import Config, load
from daemon.errors import ConfigError
from daemon.partition import Partition, for_partition, foreign_stores, partition_of, store_path, store_paths
from tests.helpers import http_get, wardd, write_ward_config
from tests.mqtt_watch import until, watch
from tests.servers import Mosquitto, free_port
from tests.ward_load import WarddProcess, bed_ids

WARD = "haem"


def _write_config(
    path: Path,
    *,
    beds: int,
    workers: int,
    mqtt_url: str = "mqtt://127.0.0.1:1",
    prefix: str = "w",
    tables: str = "",
) -> Path:
    return write_ward_config(
        path,
        mqtt_url=mqtt_url,
        prefix=prefix,
        ward=WARD,
        beds=bed_ids(beds),
        daemon=f"workers = {workers}\ntick_interval_s = 0.5",
        mqtt="reconnect_min_s = 0.1\nreconnect_max_s = 1.0",
        tables=f"[thresholds.vitals]\nconfirm_samples = 2\nfever_delay_s = 0\n{tables}",
    )


def _config(tmp_path: Path, *, beds: int = 10, workers: int = 2) -> Config:
    return load(_write_config(tmp_path / "ward.toml", beds=beds, workers=workers))


# --- pure ----------------------------------------------------------------------------------------


def test_a_beds_partition_is_a_stable_hash_of_ward_and_bed() -> None:
    # CRC-32 (zlib) of "haem/1" is 0xfe02157c: the same on every machine, in every run,
    # unlike Python's hash() of a string, which changes with each process.
    assert partition_of("haem", "1", 2) == 0xFE02157C % 2
    assert [partition_of("haem", bed, 7) for bed in ("1", "2", "12")] == [4, 0, 6]
    assert partition_of("haem", "1", 1) == 0
    assert {partition_of("haem", str(i), 4) for i in range(100)} == {0, 1, 2, 3}


def test_every_bed_belongs_to_exactly_one_partition(tmp_path: Path) -> None:
    config = _config(tmp_path, beds=25, workers=3)
    parts = [for_partition(config, Partition(i, 3)) for i in range(3)]
    owned = [bed.id for part in parts for bed in part.beds]
    assert sorted(owned, key=int) == [bed.id for bed in config.beds]
    assert all(part.beds for part in parts), "25 beds over 3 partitions leave none empty"
    # Each has its own store and its own MQTT session.
    assert len({part.daemon.store_path for part in parts}) == 3
    assert len({part.mqtt.client_id for part in parts}) == 3
    assert [part.daemon.store_path.name for part in parts] == [
        "wardd.p0of3.sqlite",
        "wardd.p1of3.sqlite",
        "wardd.p2of3.sqlite",
    ]
    assert store_paths(config) == [part.daemon.store_path for part in parts]


def test_a_worker_numbers_its_deliveries_in_its_partitions_lane(tmp_path: Path) -> None:
    from daemon.app import build  # noqa: PLC0415 -- the whole daemon, for this test only

    config = _config(tmp_path, workers=2)
    part = Partition(1, 2)
    pipeline = build(for_partition(config, part), part=part)
    assert [pipeline.store.next_id("delivery_outbox") for _ in range(3)] == [1, 3, 5]
    pipeline.writer.close()


def test_one_worker_keeps_the_plain_store_name(tmp_path: Path) -> None:
    config = _config(tmp_path, workers=1)
    assert store_paths(config) == [config.daemon.store_path]
    assert store_path(Path("x/wardd.sqlite"), Partition(0, 1)) == Path("x/wardd.sqlite")


def test_a_partition_of_another_layout_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, workers=2)
    with pytest.raises(ConfigError):
        for_partition(config, Partition(0, 3))
    for text in ["1", "2/2", "-1/2", "a/b", "0/0", "0/65"]:
        with pytest.raises(ValueError, match="partition"):
            Partition.parse(text)
    assert Partition.parse("1/2") == Partition(1, 2)


def test_stores_of_another_number_of_workers_are_found(tmp_path: Path) -> None:
    config = _config(tmp_path, workers=2)
    state = tmp_path / "state"
    state.mkdir()
    assert foreign_stores(config) == []
    (state / "wardd.p0of2.sqlite").touch()  # this layout's own
    assert foreign_stores(config) == []
    (state / "wardd.sqlite").touch()  # one worker's
    (state / "wardd.p2of3.sqlite").touch()
    assert foreign_stores(config) == [state / "wardd.p2of3.sqlite", state / "wardd.sqlite"]


# --- a real supervisor and two workers ----------------------------------------------------------


def _vitals(ts: datetime, temp_c: float) -> bytes:
    obs = [{"code": "MDC_TEMP_BODY", "value": temp_c, "unit": "Cel"}]
    return json.dumps({"ts": ts.isoformat().replace("+00:00", "Z"), "device": "m-1", "obs": obs}).encode()


@pytest.mark.integration
async def test_two_workers_share_the_beds_and_stop_together(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str
) -> None:
    beds = 6
    config_path = _write_config(
        tmp_path / "ward.toml", beds=beds, workers=2, mqtt_url=mosquitto.url, prefix=prefix
    )
    owners = {str(i): partition_of(WARD, str(i), 2) for i in range(1, beds + 1)}
    assert set(owners.values()) == {0, 1}, "the test needs beds in both partitions"
    daemon = WarddProcess(config_path, tmp_path / "wardd.log")
    daemon.start()
    try:
        await until(lambda: daemon.output().count("MQTT connected") == 2, 30, "both workers' connections")
        now = datetime.now(UTC).replace(microsecond=0)
        host, port = mosquitto.url.removeprefix("mqtt://").split(":")
        async with watch(mosquitto.url, f"{prefix}/{WARD}/bed/+/alerts") as alerts:
            async with aiomqtt.Client(host, int(port)) as client:
                for bed in owners:
                    for k in range(2):
                        topic = f"{prefix}/{WARD}/bed/{bed}/vitals"
                        await client.publish(topic, _vitals(now - timedelta(seconds=2 - k), 38.6), qos=1)
            await until(
                lambda: {a["bed"] for a in alerts if a["condition"] == "FEVER"} == set(owners),
                30,
                "a FEVER alert from every bed",
            )
        status = wardd("status", "--config", str(config_path), check=True)
        for bed in owners:
            assert f"{WARD}/{bed}:" in status.stdout
        assert status.stdout.count("FEVER [active]") == beds
        assert daemon.terminate() == 0
    finally:
        daemon.close()
    state = tmp_path / "state"
    assert sorted(p.name for p in state.glob("*.sqlite")) == ["wardd.p0of2.sqlite", "wardd.p1of2.sqlite"]
    # Both workers shut down in order, and each heard only its own beds: a message for
    # the other's beds would have been refused as unknown_bed.
    assert daemon.output().count("stopped") >= 2
    assert "unknown_bed" not in daemon.output()


async def _connected_workers(daemon: WarddProcess) -> list[int]:
    """The pids of a two-worker daemon's workers, once both have connected."""
    await until(lambda: daemon.output().count("MQTT connected") == 2, 30, "both workers' connections")
    assert daemon.proc is not None
    workers = subprocess.run(
        ["pgrep", "-P", str(daemon.proc.pid)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(workers) == 2
    return [int(pid) for pid in workers]


def _two_workers(
    tmp_path: Path,
    mosquitto: Mosquitto,
    prefix: str,
    *,
    env: dict[str, str] | None = None,
    tables: str = "",
) -> tuple[Path, WarddProcess]:
    """A daemon of two workers over four beds, started; its config file."""
    config_path = _write_config(
        tmp_path / "ward.toml", beds=4, workers=2, mqtt_url=mosquitto.url, prefix=prefix, tables=tables
    )
    daemon = WarddProcess(config_path, tmp_path / "wardd.log", env=env)
    daemon.start()
    return config_path, daemon


@pytest.mark.integration
async def test_a_worker_that_dies_stops_the_daemon(tmp_path: Path, mosquitto: Mosquitto, prefix: str) -> None:
    _, daemon = _two_workers(tmp_path, mosquitto, prefix)
    try:
        workers = await _connected_workers(daemon)
        os.kill(workers[0], signal.SIGKILL)
        # The supervisor stops the other worker and exits 1 for the service manager to restart.
        assert daemon.proc is not None
        assert daemon.proc.wait(timeout=60) == 1
        assert "stopping the others" in daemon.output()
    finally:
        daemon.close()


@pytest.mark.integration
def test_the_daemon_refuses_stores_of_another_number_of_workers(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "wardd.p0of2.sqlite").touch()
    config_path = _write_config(tmp_path / "ward.toml", beds=2, workers=1)
    result = wardd("run", "--config", str(config_path))
    assert result.returncode == 1
    assert "another number of workers" in result.stderr
    assert "wardd.p0of2.sqlite" in result.stderr


@pytest.mark.integration
def test_the_supervisor_has_one_thread_when_it_forks(tmp_path: Path) -> None:
    # A fork copies only the thread that calls it: a lock another thread held would stay
    # held in every worker. So what the supervisor does before forking starts no thread.
    config_path = _write_config(tmp_path / "ward.toml", beds=4, workers=2)
    probe = (
        "import sys, threading\n"
        "from daemon import cli\n"
        "from daemon.app import build\n"
        "config = cli._load(sys.argv[1])\n"
        "cli._check_state_folders(config, sys.argv[1])\n"
        "cli._setup_logging('INFO')\n"
        "cli._redact_secrets(config)\n"
        "from daemon.plausible import review\n"
        "list(review(config))\n"
        "print(threading.active_count())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(config_path)], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "1"


@pytest.mark.integration
async def test_the_workers_keep_the_layout_locked_after_the_supervisor(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str
) -> None:
    config_path, daemon = _two_workers(tmp_path, mosquitto, prefix)
    workers: list[int] = []
    try:
        workers = await _connected_workers(daemon)
        # The forked workers share the supervisor's flock: killed, it leaves them holding it.
        assert daemon.proc is not None
        daemon.proc.kill()
        daemon.proc.wait(timeout=10)
        busy = wardd("repartition", "--config", str(config_path), "--to", "3")
        assert busy.returncode == 1
        assert "a daemon runs over the stores" in busy.stderr
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        daemon.close()


def _worker_pids(daemon: WarddProcess) -> dict[str, int]:
    """Each worker's pid by partition, as the supervisor logged them."""
    line = next(line for line in daemon.output().splitlines() if "supervising 2 workers" in line)
    found = re.findall(r"(\d+/2) \(pid (\d+)\)", line)
    return {part: int(pid) for part, pid in found}


@pytest.mark.integration
async def test_two_workers_answer_the_health_probes_on_one_port(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str
) -> None:
    """The supervisor serves ``health.port`` for the daemon (each worker binding it failed
    the start): alive and ready only if every worker says so in time, and every worker's
    metrics under its own ``worker`` label. An empty host is every interface of both
    families, as with one worker (the supervisor bound the first address only)."""
    port = free_port()
    _, daemon = _two_workers(tmp_path, mosquitto, prefix, tables=f'[health]\nhost = ""\nport = {port}')
    try:
        await _connected_workers(daemon)
        pids = _worker_pids(daemon)
        assert set(pids) == {"0/2", "1/2"}

        async def answer(path: str) -> tuple[int, dict[str, Any]]:
            code, body = await http_get(port, path)
            return code, json.loads(body)

        for _ in range(300):
            if (await answer("/readyz"))[0] == 200:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the workers were not ready in 30 s")
        code, live = await answer("/healthz")
        assert code == 200
        assert live["live"] is True
        assert (await http_get(port, "/healthz", host="::1"))[0] == 200
        assert {worker: said["live"] for worker, said in live["workers"].items()} == {
            "0/2": True,
            "1/2": True,
        }
        code, text = await http_get(port, "/metrics")
        lines = text.splitlines()
        assert code == 200
        for worker in pids:
            assert f'wardd_up{{worker="{worker}"}} 1.0' in lines
            assert f'wardd_worker_answering{{worker="{worker}"}} 1.0' in lines
        beds = [float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("wardd_beds{")]
        assert sum(beds) == 4, "the four beds, each counted by the worker that owns it"
        assert lines.count("# TYPE wardd_beds gauge") == 1

        # A worker whose event loop stands still (SIGSTOP) does not answer: the daemon is
        # not alive, and says which worker is not.
        os.kill(pids["1/2"], signal.SIGSTOP)
        try:
            code, live = await answer("/healthz")
            assert code == 503
            assert live["live"] is False
            assert live["workers"]["0/2"]["live"] is True
            assert live["workers"]["1/2"] == {"live": False, "answer": "none within 2 s"}
            assert (await answer("/readyz"))[0] == 503
            code, text = await http_get(port, "/metrics")
            lines = text.splitlines()
            assert code == 200
            assert 'wardd_worker_answering{worker="1/2"} 0.0' in lines
            assert 'wardd_up{worker="0/2"} 1.0' in lines
            assert not any('worker="1/2"' in line for line in lines if line.startswith("wardd_up"))
        finally:
            os.kill(pids["1/2"], signal.SIGCONT)
        assert (await answer("/healthz"))[0] == 200
        assert daemon.terminate() == 0
    finally:
        daemon.close()


@pytest.mark.integration
def test_a_health_port_in_use_stops_two_workers_before_either_starts(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        tables = f"[health]\nport = {port}"
        config_path = _write_config(tmp_path / "ward.toml", beds=2, workers=2, tables=tables)
        result = wardd("run", "--config", str(config_path))
    assert result.returncode == 1
    assert f"cannot serve the health probes on 127.0.0.1:{port} (health.host, health.port)" in result.stderr
    assert "supervising" not in result.stderr


class _FakeSystemd:
    """A notify socket that, like systemd with ``NotifyAccess=main``, knows who sent what."""

    CREDENTIALS = struct.Struct("3i")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.heard: list[tuple[int, str]] = []  # (sender pid, message)

    def read(self) -> list[tuple[int, str]]:
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(self.CREDENTIALS.size))
            except BlockingIOError:
                return self.heard
            pid = next(self.CREDENTIALS.unpack(body[:12])[0] for _, _, body in ancillary)
            self.heard.append((pid, data.decode()))


@pytest.mark.integration
async def test_under_systemd_the_supervisor_speaks_for_its_workers(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str
) -> None:
    systemd = _FakeSystemd(tmp_path / "notify")
    # systemd asks the main process for a ping every 0.5 s; its pid here is another's,
    # as the workers' are.
    env = {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    _, daemon = _two_workers(tmp_path, mosquitto, prefix, env=env)
    workers: list[int] = []
    try:
        workers = await _connected_workers(daemon)
        assert daemon.proc is not None
        supervisor = daemon.proc.pid
        await until(lambda: sum("WATCHDOG=1" in m for _, m in systemd.read()) >= 3, 30, "watchdog pings")
        heard = systemd.read()
        assert {pid for pid, _ in heard} == {supervisor}, "systemd hears the main process only"
        assert [m for _, m in heard if "READY=1" in m] == ["READY=1\nSTATUS=2 workers ready"]
        # A stalled worker (stopped here) stops the pings: systemd restarts the daemon.
        os.kill(workers[0], signal.SIGSTOP)
        try:
            await asyncio.sleep(1.5)  # a ping that was under way may still come
            before = len(systemd.read())
            # Nor can another process ping for it: the supervisor's sockets are abstract,
            # open to anyone on the machine, and take a worker's own datagrams only.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stranger:
                stranger.sendto(b"WATCHDOG=1", f"\0wardd-notify-{supervisor}-0")
            await asyncio.sleep(2.0)
            assert systemd.read()[before:] == []
            assert "systemd notification from pid" in daemon.output()
        finally:
            os.kill(workers[0], signal.SIGCONT)
        await until(lambda: len(systemd.read()) > before, 10, "pings again once the worker runs")
        assert daemon.terminate() == 0
        assert systemd.read()[-1] == (supervisor, "STOPPING=1")
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        daemon.close()
        systemd.sock.close()
