"""The daemon's own health: retained status with a last will, probes, metrics, systemd notify."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon import __version__
from daemon.config import HealthConfig
from daemon.errors import ListenError
from daemon.health import (
    Gauge,
    Histogram,
    NotifyRelay,
    Readiness,
    Watchdog,
    last_will,
    sd_notify,
    status_payload,
    watchdog_interval_s,
)
from daemon.metrics import Counters
from daemon.web.probes import bind_probes, merged_metrics, metric_name, metrics_text, read_histogram
from tests.helpers import FAST_RECONNECT, http_get, write_ward_config
from tests.mqtt_watch import until, watch
from tests.servers import Mosquitto, free_port
from tests.ward_load import WarddProcess, connect, vitals_payload

# --------------------------------------------------------------------------- pure


def test_the_status_says_online_with_its_heartbeat_time_or_offline_with_why() -> None:
    at = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert json.loads(status_payload("online", "wardd", at=at, heartbeat_s=10.0)) == {
        "state": "online",
        "instance": "wardd",
        "version": __version__,
        "at": "2026-03-02T08:00:00Z",
        "heartbeat_s": 10.0,
    }
    will = last_will(HealthConfig(), "ward/_wardd/wardd/status", "wardd")
    assert (will.topic, will.qos, will.retain) == ("ward/_wardd/wardd/status", 1, True)
    assert json.loads(will.payload) == {
        "state": "offline",
        "instance": "wardd",
        "version": __version__,
        "reason": "connection lost",
    }


@pytest.mark.integration  # binds sockets
def test_the_supervisors_probe_sockets_take_ipv6_and_name_what_they_cannot_take() -> None:
    with _closing(bind_probes(HealthConfig(host="::1", port=0))) as socks:
        assert [(sock.family, sock.getsockname()[0]) for sock in socks] == [(socket.AF_INET6, "::1")]
    with _closing(bind_probes(HealthConfig(host="127.0.0.1", port=0))) as socks:
        assert [sock.family for sock in socks] == [socket.AF_INET]
        taken = socks[0].getsockname()[1]
        with pytest.raises(
            ListenError, match=f"on 127.0.0.1:{taken} .health.host, health.port.: Address already in use"
        ):
            bind_probes(HealthConfig(host="127.0.0.1", port=taken))
    with pytest.raises(ListenError, match=r"on no-such-host\.invalid:0 .*(not known|resolution)"):
        bind_probes(HealthConfig(host="no-such-host.invalid", port=0))


@pytest.mark.integration  # binds sockets
def test_the_supervisors_probes_take_every_address_of_the_host_on_one_port() -> None:
    """An empty host is every interface of both families, as aiohttp's ``TCPSite`` binds it
    for one worker: the supervisor bound the first address only."""
    with _closing(bind_probes(HealthConfig(host="", port=0))) as socks:
        assert sorted(sock.family for sock in socks) == [socket.AF_INET, socket.AF_INET6]
        ports = {sock.getsockname()[1] for sock in socks}
        assert len(ports) == 1, "port 0: the second address takes the port the first was given"
        for host in ("127.0.0.1", "::1"):
            with socket.create_connection((host, *ports), timeout=2):
                pass
        # One of the addresses taken: nothing stays bound, and the error says where.
        port = ports.pop()
    in_use = f"on :{port} .health.host, health.port.: Address already in use"
    with socket.create_server(("::", port), family=socket.AF_INET6), pytest.raises(ListenError, match=in_use):
        bind_probes(HealthConfig(host="", port=port))
    with _closing(bind_probes(HealthConfig(host="127.0.0.1", port=port))):
        pass  # the IPv4 socket bound before the failure was closed


@contextlib.contextmanager
def _closing(socks: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def test_counter_names_become_prometheus_names() -> None:
    assert metric_name("mqtt.rejected") == "wardd_mqtt_rejected"
    assert metric_name("web.logins/refused") == "wardd_web_logins_refused"


def test_metrics_are_in_the_prometheus_text_format() -> None:
    counters = Counters()
    counters.inc("mqtt.rejected", "invalid_json", 3)
    counters.inc("mqtt.accepted", "")
    gauges = [
        Gauge("wardd_work_queue_items", "Inputs waiting", {(): 4}),
        Gauge("wardd_alerts_open", "Open alerts", {("high", "active"): 2}, ("priority", "state")),
        Gauge("wardd_rule_seconds", "Time in rules", {(): 1.5}, counter=True),
    ]
    text = metrics_text(counters, gauges).decode()
    lines = set(text.splitlines())
    assert 'wardd_mqtt_rejected_total{reason="invalid_json"} 3.0' in lines
    assert 'wardd_mqtt_accepted_total{reason="-"} 1.0' in lines
    assert "wardd_work_queue_items 4.0" in lines
    assert 'wardd_alerts_open{priority="high",state="active"} 2.0' in lines
    assert "wardd_rule_seconds_total 1.5" in lines
    assert "# TYPE wardd_rule_seconds_total counter" in lines
    assert "# TYPE wardd_work_queue_items gauge" in lines


def test_a_latency_counts_in_the_bucket_whose_bound_it_does_not_exceed() -> None:
    histogram = Histogram("wardd_alert_latency_seconds", "Alert latency", "stage", (0.001, 0.002))
    histogram.observe("total", 0.001)  # on the bound: counted in it (Prometheus' "le")
    histogram.observe("total", 0.0010001)  # just above: the next one
    histogram.observe("total", 0.002)
    histogram.observe("total", 0.0020001)  # above the last bound: +Inf only
    histogram.observe("waiting", 0.0)
    assert histogram.buckets() == {
        "total": ([("0.001", 1), ("0.002", 3), ("+Inf", 4)], pytest.approx(0.0060002)),
        "waiting": ([("0.001", 1), ("0.002", 1), ("+Inf", 1)], 0.0),
    }
    lines = metrics_text(Counters(), [histogram]).decode().splitlines()
    assert "# TYPE wardd_alert_latency_seconds histogram" in lines
    assert 'wardd_alert_latency_seconds_bucket{le="0.001",stage="total"} 1.0' in lines
    assert 'wardd_alert_latency_seconds_bucket{le="0.002",stage="total"} 3.0' in lines
    assert 'wardd_alert_latency_seconds_bucket{le="+Inf",stage="total"} 4.0' in lines
    assert 'wardd_alert_latency_seconds_count{stage="total"} 4.0' in lines


def test_a_histogram_read_back_adds_up_the_workers() -> None:
    """What the bench and the tests read from /metrics: one worker's histogram as it was
    observed, two workers' (a supervisor's merged text) added up."""
    histogram = Histogram("wardd_alert_latency_seconds", "Alert latency", "stage", (0.001, 0.002))
    histogram.observe("total", 0.0015)
    histogram.observe("total", 0.003)
    text = metrics_text(Counters(), [histogram]).decode()
    one = {"0.001": 0.0, "0.002": 1.0, "+Inf": 2.0, "count": 2.0, "sum": 0.0045}
    read = read_histogram(text, "wardd_alert_latency_seconds", "stage")
    assert read == {"total": pytest.approx(one)}
    merged = merged_metrics({"0": text, "1": text}).decode()
    two = {key: value * 2 for key, value in one.items()}
    assert read_histogram(merged, "wardd_alert_latency_seconds", "stage") == {"total": pytest.approx(two)}
    assert read_histogram(merged, "wardd_queue_items", "stage") == {}


def test_the_workers_metrics_are_merged_under_a_worker_label() -> None:
    """A supervisor's /metrics: each family once, each sample labelled with its worker, and
    a worker that did not answer said so (its own samples absent)."""
    texts: dict[str, str | None] = {}
    for worker, (rejected, rule_s) in {"0/3": (3, 1.5), "1/3": (1, 0.25)}.items():
        counters = Counters()
        counters.inc("mqtt.rejected", "invalid_json", rejected)
        gauges = [
            Gauge("wardd_alerts_open", "Open alerts", {("high", "active"): 2}, ("priority", "state")),
            Gauge("wardd_rule_seconds", "Time in rules", {(): rule_s}, counter=True),
        ]
        texts[worker] = metrics_text(counters, gauges).decode()
    texts["2/3"] = None
    lines = merged_metrics(texts).decode().splitlines()
    assert 'wardd_mqtt_rejected_total{reason="invalid_json",worker="0/3"} 3.0' in lines
    assert 'wardd_mqtt_rejected_total{reason="invalid_json",worker="1/3"} 1.0' in lines
    assert 'wardd_alerts_open{priority="high",state="active",worker="1/3"} 2.0' in lines
    assert 'wardd_rule_seconds_total{worker="0/3"} 1.5' in lines
    assert 'wardd_rule_seconds_total{worker="1/3"} 0.25' in lines
    assert lines.count("# TYPE wardd_rule_seconds_total counter") == 1
    assert lines.count("# TYPE wardd_alerts_open gauge") == 1
    assert [line for line in lines if line.startswith("wardd_worker_answering")] == [
        'wardd_worker_answering{worker="0/3"} 1.0',
        'wardd_worker_answering{worker="1/3"} 1.0',
        'wardd_worker_answering{worker="2/3"} 0.0',
    ]
    assert not any('worker="2/3"' in line for line in lines if not line.startswith("wardd_worker_answering"))


@pytest.mark.parametrize(
    ("environ", "interval_s"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "abc"}, None),
    ],
    ids=["not-asked", "zero", "asked", "another-pid", "not-a-number"],
)
def test_the_watchdog_is_fed_twice_per_period_only_when_systemd_asks_this_process(
    environ: dict[str, str], interval_s: float | None
) -> None:
    assert watchdog_interval_s(environ) == interval_s


def test_without_a_notify_socket_nothing_is_sent() -> None:
    assert sd_notify("READY=1", {}) is False


def test_the_supervisor_tells_systemd_ready_once_every_worker_is() -> None:
    relay = NotifyRelay(2)
    assert relay.heard(0, "READY=1\nSTATUS=watching 3 bed(s)") == []
    assert relay.heard(0, "READY=1") == [], "the same worker twice is not both"
    assert relay.heard(1, "STATUS=starting") == []
    assert relay.heard(1, "READY=1\nSTATUS=watching 2 bed(s)") == ["READY=1\nSTATUS=2 workers ready"]
    assert relay.heard(1, "READY=1") == [], "ready once"


def test_the_supervisor_feeds_the_watchdog_only_when_every_worker_has_since_its_last_ping() -> None:
    relay = NotifyRelay(2)
    assert relay.heard(0, "WATCHDOG=1") == []
    assert relay.heard(0, "WATCHDOG=1") == [], "one worker pinging twice: the other may be stalled"
    assert relay.heard(1, "WATCHDOG=1") == ["WATCHDOG=1"]
    assert relay.heard(1, "WATCHDOG=1") == []
    assert relay.heard(0, "WATCHDOG=1") == ["WATCHDOG=1"]
    # What else a worker says stays with the supervisor.
    assert relay.heard(0, "STOPPING=1") == []
    assert relay.heard(1, "STATUS=x") == []


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A datagram socket where a fake systemd receives sd_notify messages."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.settimeout(0.2)
        yield sock


@pytest.mark.integration  # binds a socket
def test_a_notification_reaches_the_notify_socket(tmp_path: Path, notify_socket: socket.socket) -> None:
    assert sd_notify("READY=1\nSTATUS=x", {"NOTIFY_SOCKET": str(tmp_path / "notify")}) is True
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=x"
    # A socket that is gone: logged, not raised.
    assert sd_notify("WATCHDOG=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


class _Stuck:
    """Probes of a pipeline whose input in processing has been there ``stalled`` seconds."""

    def __init__(self) -> None:
        self.stalled = 0.0

    def readiness(self) -> Readiness:
        raise AssertionError("the watchdog reads only stalled_s")

    def stalled_s(self) -> float:
        return self.stalled

    def gauges(self) -> list[Gauge]:
        return []


@pytest.mark.integration  # binds a socket
async def test_the_watchdog_starves_while_an_input_is_stuck_and_is_fed_again_after(
    tmp_path: Path, notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop that turns while one input never finishes is a hang too: systemd must restart it."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    probes, counters = _Stuck(), Counters()
    task = asyncio.create_task(Watchdog(0.01, probes, 30.0, counters).run(), name="test.watchdog")
    try:
        await asyncio.sleep(0.1)
        assert "WATCHDOG=1" in _messages(notify_socket)
        probes.stalled = 29.999
        await asyncio.sleep(0.05)
        assert "WATCHDOG=1" in _messages(notify_socket), "just under stall_after_s: still fed"
        probes.stalled = 30.0
        await asyncio.sleep(0.05)
        _messages(notify_socket)  # what was sent before the stall was seen
        await asyncio.sleep(0.1)
        assert _messages(notify_socket) == [], "stalled: no ping, so systemd's WatchdogSec runs out"
        assert counters.get("health.stalled", "") == 1, "counted once per stall, not per period"
        probes.stalled = 0.0
        await asyncio.sleep(0.1)
        assert "WATCHDOG=1" in _messages(notify_socket)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --------------------------------------------------------------------------- the daemon


def _config(path: Path, broker: Mosquitto, health_port: int) -> Path:
    return write_ward_config(
        path,
        mqtt_url=broker.url,
        prefix="hw",
        mqtt=f"keepalive_s = 5\n{FAST_RECONNECT}",
        tables=f"""
[health]
heartbeat_s = 1.0
port = {health_port}
""",
    )


def _messages(sock: socket.socket) -> list[str]:
    out: list[str] = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            return out


@pytest.mark.integration
async def test_status_probes_metrics_and_systemd_follow_the_daemon(
    tmp_path: Path, mosquitto: Mosquitto, notify_socket: socket.socket
) -> None:
    """Online with a heartbeat; ready while the broker is up, not while it is down; READY,
    WATCHDOG and STOPPING to systemd; offline "stopped" at SIGTERM, and "connection lost"
    from the broker (the last will) at kill -9."""
    port = free_port()
    config = _config(tmp_path / "ward.toml", mosquitto, port)
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
    daemon = WarddProcess(config, tmp_path / "wardd.log", env=env)
    async with watch(mosquitto.url, "hw/_wardd/+/status") as status:
        daemon.start()
        try:
            daemon.wait_connected()
            await until(lambda: any(s.get("state") == "online" for s in status), 10, "the online status")
            first = next(s for s in status if s["state"] == "online")
            assert first["instance"] == "wardd-hw"  # the client id
            await until(
                lambda: len({s.get("at") for s in status if s["state"] == "online"}) >= 2, 10, "a heartbeat"
            )
            messages = _messages(notify_socket)
            assert any(m.startswith("READY=1") for m in messages), messages
            assert "WATCHDOG=1" in messages

            assert (await http_get(port, "/healthz"))[0] == 200
            code, body = await http_get(port, "/readyz")
            assert (code, json.loads(body)["ready"]) == (200, True)
            code, text = await http_get(port, "/metrics")
            assert code == 200
            assert "wardd_up 1.0" in text.splitlines()
            assert "wardd_mqtt_connected 1.0" in text.splitlines()
            assert 'wardd_mqtt_connections_total{reason="up"} 1.0' in text.splitlines()
            assert daemon.terminate() == 0
            await until(lambda: status[-1]["state"] == "offline", 10, "the offline status")
        finally:
            daemon.close()
    assert any(m.startswith("STOPPING=1") for m in _messages(notify_socket))
    assert status[-1]["reason"] == "stopped"

    # The broker away: not ready, still alive; back: ready again.
    daemon.start()
    try:
        daemon.wait_connected()
        await until(lambda: daemon.output().count("health probes on") >= 2, 10, "the probes")
        mosquitto.stop()
        code, body = await http_get(port, "/readyz")
        for _ in range(50):
            if code == 503:
                break
            code, body = await http_get(port, "/readyz")
        assert (code, json.loads(body)) == (
            503,
            {"ready": False, "recovered": True, "broker_connected": False, "store_writable": True},
        )
        assert (await http_get(port, "/healthz"))[0] == 200
        mosquitto.start()
        daemon.wait_connected()
        async with watch(mosquitto.url, "hw/_wardd/+/status") as status:
            await until(lambda: any(s.get("state") == "online" for s in status), 10, "online again")
            assert (await http_get(port, "/readyz"))[0] == 200
            daemon.kill()
            await until(lambda: status[-1].get("state") == "offline", 10, "the last will")
        assert status[-1]["reason"] == "connection lost"
    finally:
        daemon.close()


@pytest.mark.integration
async def test_a_hung_daemon_is_seen_as_down_within_seconds_and_back_when_it_runs_again(
    tmp_path: Path, mosquitto: Mosquitto, notify_socket: socket.socket
) -> None:
    """An event loop that stops turning (SIGSTOP: nothing of the process runs) sends no
    heartbeat and no watchdog ping, so systemd restarts it; the broker publishes its last
    will after 1.5 keep-alive periods (``keepalive_s = 5``: 7.5 s), so stations say
    "monitoring down" without the daemon's help. Running again, it says online again."""
    config = _config(tmp_path / "ward.toml", mosquitto, free_port())
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
    daemon = WarddProcess(config, tmp_path / "wardd.log", env=env)
    async with watch(mosquitto.url, "hw/_wardd/+/status") as status:
        daemon.start()
        try:
            daemon.wait_connected()
            await until(lambda: any(s.get("state") == "online" for s in status), 10, "the online status")
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            await asyncio.sleep(0.5)
            _messages(notify_socket)  # anything sent just before the stop
            beats = len(status)
            await until(lambda: status[-1].get("state") == "offline", 15, "the last will")
            print(f"\nhung daemon announced offline {time.monotonic() - stopped:.1f} s after SIGSTOP")
            assert status[-1]["reason"] == "connection lost"
            assert len(status) == beats + 1, "no heartbeat while hung, only the will"
            assert "WATCHDOG=1" not in _messages(notify_socket)
            daemon.proc.send_signal(signal.SIGCONT)
            await until(lambda: status[-1].get("state") == "online", 30, "online again")
            assert "WATCHDOG=1" in _messages(notify_socket)
        finally:
            if daemon.proc is not None:
                daemon.proc.send_signal(signal.SIGCONT)
            daemon.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own, to fill: a disk that runs out under the daemon's store."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; the file that did it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


@pytest.mark.integration
async def test_a_full_disk_makes_the_daemon_unready_loses_nothing_and_it_recovers(
    tmp_path: Path, mosquitto: Mosquitto, small_disk: Path
) -> None:
    """The store's disk full: commits fail and are retried, ``/readyz`` says the store is not
    writable and ``/metrics`` shows it, the message is not acknowledged to the broker (so not
    lost); space again: ready, and the message's alert comes."""
    port = free_port()
    config = _config(tmp_path / "ward.toml", mosquitto, port)
    fever_at_once = "\n[thresholds.vitals]\nconfirm_samples = 1\nfever_delay_s = 0.0\n"
    config.write_text(
        config.read_text().replace(
            f'state_dir = "{tmp_path / "state"}"', f'state_dir = "{small_disk / "state"}"'
        )
        + fever_at_once
    )
    daemon = WarddProcess(config, tmp_path / "wardd.log")
    daemon.start()
    try:
        daemon.wait_connected()
        await until(lambda: daemon.output().count("health probes on") >= 1, 10, "the probes")
        assert (await http_get(port, "/readyz"))[0] == 200
        filler = _fill(small_disk)
        async with watch(mosquitto.url, "hw/w1/bed/b1/alerts") as alerts:
            publisher = connect(mosquitto.url)
            try:
                now = datetime.now(UTC)
                for k in range(3):
                    payload = vitals_payload("b1", now + timedelta(seconds=k), k, febrile=True)
                    publisher.publish("hw/w1/bed/b1/vitals", payload, qos=1).wait_for_publish(10)
            finally:
                publisher.loop_stop()
                publisher.disconnect()
            code, body = await http_get(port, "/readyz")
            for _ in range(100):
                if code == 503:
                    break
                await asyncio.sleep(0.1)
                code, body = await http_get(port, "/readyz")
            assert (code, json.loads(body)["store_writable"]) == (503, False)
            assert "wardd_store_writable 0.0" in (await http_get(port, "/metrics"))[1].splitlines()
            assert (await http_get(port, "/healthz"))[0] == 200, "alive: restarting would not free the disk"
            assert not any(a.get("condition") == "FEVER" for a in alerts), (
                "nothing judged before it is durable"
            )
            await asyncio.sleep(1.0)  # so that the wait for space is longer than a second
            filler.unlink()
            await until(lambda: any(a.get("condition") == "FEVER" for a in alerts), 30, "the fever alert")
        assert (await http_get(port, "/readyz"))[0] == 200
        assert "state store writable again" in daemon.output()
        assert daemon.alive
        # The alert's latency says where it waited: for the store, more than a second.
        latency = await _alert_latency(port)
        assert latency["storing"]["+Inf"] >= 1
        assert latency["storing"]["1.0"] < latency["storing"]["+Inf"]
        assert latency["processing"]["1.0"] == latency["processing"]["+Inf"]
    finally:
        daemon.close()


@pytest.mark.integration
def test_the_shipped_unit_file_is_valid_for_systemd(tmp_path: Path) -> None:
    """config/wardd.service, with ExecStart pointed at this environment's wardd, passes
    ``systemd-analyze verify`` (which also checks every directive's spelling), and asks for
    what the daemon implements: notify, a watchdog, restarts, a dedicated user."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    shipped = (Path(__file__).parent.parent / "config" / "wardd.service").read_text()
    wardd_bin = Path(sys.executable).parent / "wardd"
    assert wardd_bin.exists()
    unit = tmp_path / "wardd.service"
    unit.write_text(shipped.replace("/opt/wardd/bin/wardd", str(wardd_bin)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    directives = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in shipped.splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert directives["Type"] == "notify"
    assert directives["WatchdogSec"] == "30"
    assert directives["Restart"] == "on-failure"
    assert directives["User"] == "wardd"
    assert directives["StateDirectory"] == "wardd"


async def _alert_latency(port: int) -> dict[str, dict[str, float]]:
    """``wardd_alert_latency_seconds`` from /metrics: per stage, the cumulative count by
    bucket bound (``le``), and ``sum``."""
    code, text = await http_get(port, "/metrics")
    assert code == 200
    return read_histogram(text, "wardd_alert_latency_seconds", "stage")


@pytest.mark.integration
async def test_an_alerts_latency_is_measured_by_stage(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """From a fever sample's arrival to its alert on the MQTT link: waiting, processing,
    storing, and their total, once per input that published an alert, none for the others."""
    port = free_port()
    config = _config(tmp_path / "ward.toml", mosquitto, port)
    config.write_text(
        config.read_text() + "\n[thresholds.vitals]\nconfirm_samples = 1\nfever_delay_s = 0.0\n"
    )
    daemon = WarddProcess(config, tmp_path / "wardd.log")
    daemon.start()
    try:
        daemon.wait_connected()
        await until(lambda: "health probes on" in daemon.output(), 10, "the probes")
        async with watch(mosquitto.url, "hw/w1/bed/b1/alerts") as alerts:
            publisher = connect(mosquitto.url)
            try:
                now = datetime.now(UTC)
                for k, febrile in enumerate((False, False, True)):
                    payload = vitals_payload("b1", now + timedelta(seconds=k), k, febrile=febrile)
                    publisher.publish("hw/w1/bed/b1/vitals", payload, qos=1).wait_for_publish(10)
            finally:
                publisher.loop_stop()
                publisher.disconnect()
            await until(lambda: any(a.get("condition") == "FEVER" for a in alerts), 30, "the fever alert")
        latency = await _alert_latency(port)
        for _ in range(50):  # the alert arrived: the callback after its commit ran just before
            if latency:
                break
            await asyncio.sleep(0.1)
            latency = await _alert_latency(port)
        assert set(latency) == {"waiting", "processing", "storing", "total"}
        counts = {stage: buckets["+Inf"] for stage, buckets in latency.items()}
        assert counts == dict.fromkeys(latency, 1.0), (
            "the fever sample only: the normal ones published nothing"
        )
        parts = sum(latency[stage]["sum"] for stage in ("waiting", "processing", "storing"))
        assert latency["total"]["sum"] == pytest.approx(parts)
        assert 0 < latency["total"]["sum"] < 10
        assert daemon.terminate() == 0
    finally:
        daemon.close()
